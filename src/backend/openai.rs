//! The `openai` backend: any OpenAI-compatible server (Ollama, vLLM, llama.cpp
//! server, OpenAI). ClawSocket keeps the memory: each call carries the system
//! prompt, the session's last `agent.maxHistory` stored messages and the new turn.

use futures_util::future::LocalBoxFuture;
use serde_json::{json, Value};

use super::chat_completions::{self, CallLimits, ChatRequest};
use super::{AgentBackend, DeltaStream, TurnRequest};
use crate::config::AgentSettings;
use crate::protocol::{Role, TranscriptEntry};

/// The OpenAI-compatible backend.
pub struct OpenAiBackend {
    /// `{agent.url}/chat/completions`.
    endpoint: String,
    models_url: String,
    api_key: String,
    model: String,
    system_prompt: String,
    limits: CallLimits,
}

impl OpenAiBackend {
    pub fn new(settings: &AgentSettings, max_answer_bytes: usize) -> Self {
        let base = settings.url.trim_end_matches('/');
        OpenAiBackend {
            endpoint: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            system_prompt: settings.system_prompt.clone(),
            limits: CallLimits::from_settings(settings, max_answer_bytes),
        }
    }

    fn messages(&self, request: &TurnRequest) -> Vec<Value> {
        let system_prompt = request.system_prompt.as_deref().unwrap_or(&self.system_prompt);
        let mut messages = Vec::with_capacity(request.history.len() + 3);
        if !system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": system_prompt}));
        }
        messages.extend(request.history.iter().map(history_message));
        messages.extend(request.prompt.to_messages());
        messages
    }
}

/// A stored message as the model sees it again: user lines keep their envelope.
fn history_message(entry: &TranscriptEntry) -> Value {
    if entry.role == Role::Assistant {
        json!({"role": "assistant", "content": entry.content})
    } else {
        json!({"role": "user", "content": format!("{}: {}", entry.sender_name, entry.content)})
    }
}

impl AgentBackend for OpenAiBackend {
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream {
        let body = json!({"model": self.model, "stream": true, "messages": self.messages(&request)});
        chat_completions::stream(ChatRequest {
            url: self.endpoint.clone(),
            bearer: self.api_key.clone(),
            headers: Vec::new(),
            body,
            limits: self.limits,
            confirm_agent_for: None,
        })
    }

    fn wants_history(&self) -> bool {
        true
    }

    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        chat_completions::probe(self.models_url.clone(), self.api_key.clone())
    }
}
