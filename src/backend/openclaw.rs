//! The `openclaw` backend: the OpenClaw Gateway's OpenAI-compatible endpoint.
//!
//! The gateway keeps the memory, keyed by the session key we send
//! (`x-openclaw-session-key`, `user`), so each call carries only the new turn:
//! history sent in `messages` would be folded into the prompt and duplicated.
//! The agent is named twice, as the gateway expects: `model: "openclaw:{agentId}"`
//! and `x-openclaw-agent-id`. A gateway that does not know the agent answers 400
//! "Unknown agent": the user gets `agent_error` "the agent backend answered HTTP 400"
//! (or, for a new agent the gateway never learns, `agent_unavailable` naming the fix).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use super::attachments;
use super::chat_completions::{self, CallLimits, ChatRequest};
use super::media_lines::MediaLines;
use super::{AgentBackend, AnswerPiece, DeltaStream, TurnRequest};
use crate::config::AgentSettings;
use crate::media::MediaStore;

/// The OpenClaw Gateway backend (cloned for a turn whose uploads are read first).
#[derive(Clone)]
pub struct OpenClawBackend {
    /// `{agent.url}/v1/chat/completions`.
    endpoint: String,
    models_url: String,
    token: String,
    limits: CallLimits,
    /// `MEDIA:` lines become attachments (with any `channels.websocket.events` on; with
    /// `[]` they stay text, as the original plugin showed them), local files only
    /// under these roots.
    media_roots: Option<Vec<PathBuf>>,
    /// A turn's uploads, and where a `MEDIA:` file is copied to be served.
    media: Arc<MediaStore>,
}

impl OpenClawBackend {
    pub fn new(
        settings: &AgentSettings,
        max_answer_bytes: usize,
        media_roots: Option<Vec<PathBuf>>,
        media: Arc<MediaStore>,
    ) -> Self {
        let base = settings.url.trim_end_matches('/');
        OpenClawBackend {
            endpoint: format!("{base}/v1/chat/completions"),
            models_url: format!("{base}/v1/models"),
            token: settings.token.clone(),
            limits: CallLimits::from_settings(settings, max_answer_bytes),
            media_roots,
            media,
        }
    }
}

/// `stream` with its `MEDIA:` lines turned into attachments.
fn with_attachments(stream: DeltaStream, roots: Vec<PathBuf>) -> DeltaStream {
    let mut lines = MediaLines::new(roots);
    stream
        .map_ok(move |pieces| {
            let mut out = Vec::with_capacity(pieces.len());
            for piece in pieces {
                match piece {
                    AnswerPiece::Text(text) => lines.feed(&text, &mut out),
                    AnswerPiece::Finish(reason) => {
                        lines.finish(&mut out);
                        out.push(AnswerPiece::Finish(reason));
                    }
                    other => out.push(other),
                }
            }
            out
        })
        .boxed_local()
}

impl AgentBackend for OpenClawBackend {
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream {
        let backend = self.clone();
        attachments::with_media(request, &self.media, move |request| backend.call(request))
    }

    fn wants_history(&self) -> bool {
        false
    }

    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        chat_completions::probe(self.models_url.clone(), self.token.clone())
    }
}

impl OpenClawBackend {
    /// The call, the turn's uploads already in its prompt; `MEDIA:` lines become
    /// attachments (a local file to store first).
    fn call(&self, request: TurnRequest) -> DeltaStream {
        let body = json!({
            "model": format!("openclaw:{}", request.agent_id),
            "stream": true,
            "user": request.session_key.as_str(),
            "messages": request.prompt.to_messages(),
        });
        let stream = chat_completions::stream(ChatRequest {
            url: self.endpoint.clone(),
            bearer: self.token.clone(),
            headers: vec![
                ("x-openclaw-agent-id", request.agent_id.to_string()),
                ("x-openclaw-session-key", request.session_key.to_string()),
            ],
            body,
            limits: self.limits,
            fallbacks: Default::default(),
            confirm_agent_for: request.confirm_agent_for,
        });
        match &self.media_roots {
            Some(roots) => with_attachments(stream, roots.clone()),
            None => stream,
        }
    }
}
