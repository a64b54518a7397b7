//! The `openai` backend: any OpenAI-compatible server (Ollama, vLLM, llama.cpp
//! server, OpenAI). ClawSocket keeps the memory: each call carries the system
//! prompt, the session's last `agent.maxHistory` stored messages (no more than
//! `agent.maxHistoryBytes` of their text) and the new turn. It asks for usage
//! (`stream_options.include_usage`) until a server refuses the field, and estimates
//! it, marked so, when none comes; a context-window error is asked again once with
//! half the history.

use futures_util::future::LocalBoxFuture;
use serde_json::{json, Value};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::attachments;
use super::chat_completions::{self, CallLimits, ChatRequest, Fallbacks};
use super::prompt;
use super::{AgentBackend, DeltaStream, TurnRequest};
use crate::config::{AgentSettings, SenderStyle};
use crate::media::MediaStore;
use crate::protocol::{Role, ToolResult, TranscriptEntry};

/// The OpenAI-compatible backend (cloned for a turn whose uploads are read first).
#[derive(Clone)]
pub struct OpenAiBackend {
    /// `{agent.url}/chat/completions`.
    endpoint: String,
    models_url: String,
    api_key: String,
    model: String,
    system_prompt: String,
    /// `agent.maxHistoryBytes`.
    max_history_bytes: usize,
    /// `agent.maxTokens` (0: not sent).
    max_tokens: u64,
    limits: CallLimits,
    /// The server refused `stream_options` once: it is not asked again.
    usage_refused: Arc<AtomicBool>,
    /// `agent.senderStyle`, resolved: how stored user lines name their sender.
    sender_style: SenderStyle,
    /// A turn's uploads and the answer's attachments.
    media: Arc<MediaStore>,
}

impl OpenAiBackend {
    pub fn new(settings: &AgentSettings, max_answer_bytes: usize, media: Arc<MediaStore>) -> Self {
        let base = settings.url.trim_end_matches('/');
        OpenAiBackend {
            endpoint: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            system_prompt: settings.system_prompt.clone(),
            max_history_bytes: settings.max_history_bytes,
            max_tokens: settings.max_tokens,
            limits: CallLimits::from_settings(settings, max_answer_bytes),
            usage_refused: Arc::default(),
            sender_style: settings.sender_style(),
            media,
        }
    }

    /// The system prompt, the newest `history` that fits `agent.maxHistoryBytes`, the turn.
    fn messages(&self, request: &TurnRequest, history: &[TranscriptEntry]) -> Vec<Value> {
        let system_prompt = request.system_prompt.as_deref().unwrap_or(&self.system_prompt);
        let mut messages = Vec::with_capacity(history.len() + 3);
        if !system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": system_prompt}));
        }
        // A tool result whose call was trimmed away would be refused: the history
        // starts after any such orphans.
        let orphans = history.iter().take_while(|entry| entry.role == Role::Tool).count();
        let history = &history[orphans..];
        for (index, entry) in history.iter().enumerate() {
            let answered = answered_calls(&history[index + 1..], &request.tool_results);
            messages.push(history_message(entry, self.sender_style, &answered));
        }
        if request.tool_results.is_empty() {
            messages.extend(request.prompt.to_messages());
        } else {
            messages
                .extend(request.tool_results.iter().map(|result| tool_message(&result.tool_call_id, &result.content)));
        }
        messages
    }

    fn body(&self, messages: Vec<Value>) -> Value {
        let mut body = json!({"model": self.model, "stream": true, "messages": messages});
        if !self.usage_refused.load(Ordering::Relaxed) {
            body["stream_options"] = json!({"include_usage": true});
        }
        if self.max_tokens > 0 {
            body["max_tokens"] = json!(self.max_tokens);
        }
        body
    }
}

/// The newest entries of `history` whose text fits in `max_bytes` (at least none).
fn within_bytes(history: &[TranscriptEntry], max_bytes: usize) -> &[TranscriptEntry] {
    let mut bytes = 0;
    let kept = history
        .iter()
        .rev()
        .take_while(|entry| {
            bytes += entry.content.len();
            bytes <= max_bytes
        })
        .count();
    &history[history.len() - kept..]
}

/// The characters of every text in `messages` (for a usage estimate).
fn text_chars(messages: &[Value]) -> usize {
    messages.iter().map(|message| content_chars(&message["content"])).sum()
}

/// What an image part counts for in an estimate, characters (about 250 tokens): a
/// model is not given its base64 as text.
const IMAGE_PART_CHARS: usize = 1000;

fn content_chars(content: &Value) -> usize {
    let chars = |text: &str| text.chars().count();
    match content {
        Value::String(text) => chars(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => part["text"].as_str().map_or(0, chars),
                Some("image_url") => IMAGE_PART_CHARS,
                _ => chars(&part.to_string()),
            })
            .sum(),
        other => chars(&other.to_string()),
    }
}

/// The tool call ids that have a result after an entry: in the entries after it, up
/// to the next answer, or among this turn's results.
fn answered_calls<'a>(after: &'a [TranscriptEntry], now: &'a [ToolResult]) -> Vec<&'a str> {
    let stored = after.iter().take_while(|entry| entry.role == Role::Tool);
    let mut ids: Vec<&str> = stored.filter_map(|entry| entry.answer.tool_call_id.as_deref()).collect();
    if after.iter().all(|entry| entry.role == Role::Tool) {
        ids.extend(now.iter().map(|result| result.tool_call_id.as_str()));
    }
    ids
}

/// A tool result as OpenAI's `tool` message.
fn tool_message(tool_call_id: &str, content: &str) -> Value {
    json!({"role": "tool", "tool_call_id": tool_call_id, "content": content})
}

/// A stored message as the model sees it again: user lines with their sender as
/// `style` says (the message's name, or the envelope); an answer with its tool calls
/// in OpenAI's shape when every call has its result after it (a strict server refuses
/// calls without results); a tool result as a `tool` message.
fn history_message(entry: &TranscriptEntry, style: SenderStyle, answered: &[&str]) -> Value {
    if entry.role == Role::Tool {
        return tool_message(entry.answer.tool_call_id.as_deref().unwrap_or_default(), &entry.content);
    }
    if entry.role == Role::Assistant {
        let calls = &entry.answer.tool_calls;
        if calls.is_empty() || !calls.iter().all(|call| answered.contains(&call.id.as_str())) {
            return json!({"role": "assistant", "content": entry.content});
        }
        let calls: Vec<Value> = calls
            .iter()
            .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
            .collect();
        return json!({"role": "assistant", "content": entry.content, "tool_calls": calls});
    }
    let content = with_media_references(entry);
    match style {
        SenderStyle::Name => {
            let mut message = json!({"role": "user", "content": content});
            if let Some(name) = prompt::openai_name(&entry.sender_name) {
                message["name"] = json!(name);
            }
            message
        }
        SenderStyle::Envelope | SenderStyle::Auto => {
            json!({"role": "user", "content": format!("{}: {content}", entry.sender_name)})
        }
    }
}

/// A stored user message's text, with a line per upload it carried (an earlier turn's
/// images are not sent again: the model is told they were there).
fn with_media_references(entry: &TranscriptEntry) -> std::borrow::Cow<'_, str> {
    if entry.answer.media_ids.is_empty() {
        return std::borrow::Cow::Borrowed(&entry.content);
    }
    let mut content = entry.content.clone();
    for id in &entry.answer.media_ids {
        content.push_str(&format!("\n[media: {id} (sent earlier)]"));
    }
    std::borrow::Cow::Owned(content)
}

impl AgentBackend for OpenAiBackend {
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream {
        let backend = self.clone();
        attachments::with_media(request, &self.media, move |request| backend.call(request))
    }

    fn wants_history(&self) -> bool {
        true
    }

    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        chat_completions::probe(self.models_url.clone(), self.api_key.clone())
    }
}

impl OpenAiBackend {
    /// The call, the turn's uploads already in its prompt.
    fn call(&self, request: TurnRequest) -> DeltaStream {
        let history = within_bytes(&request.history, self.max_history_bytes);
        let messages = self.messages(&request, history);
        let shorter = self.messages(&request, &history[history.len() / 2..]);
        let fallbacks = Fallbacks {
            usage_refused: Some(self.usage_refused.clone()),
            shorter_messages: (!history.is_empty()).then_some(shorter),
            estimate_prompt_chars: Some(text_chars(&messages)),
        };
        let body = self.body(messages);
        chat_completions::stream(ChatRequest {
            fallbacks,
            url: self.endpoint.clone(),
            bearer: self.api_key.clone(),
            headers: Vec::new(),
            body,
            limits: self.limits,
            confirm_agent_for: None,
        })
    }
}
