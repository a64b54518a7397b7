//! Agent backends: what answers a turn, streamed delta by delta.
//!
//! Every backend implements [`AgentBackend`]: given a [`TurnRequest`] it returns a
//! [`DeltaStream`] of text pieces that ends when the answer is complete, or yields a
//! [`BackendError`] that ends the turn (never the session). Streams are polled on
//! the AgentBridge's thread, so they may hold thread-local HTTP clients. Backends
//! never see a socket or a subscriber.

mod chat_completions;
mod echo;
mod openai;
mod openclaw;
pub mod prompt;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;

use crate::config::{AgentKind, AgentSettings};
use crate::identity::SessionKey;
use crate::protocol::{ErrorCode, TranscriptEntry};

pub use echo::EchoBackend;
pub use openai::OpenAiBackend;
pub use openclaw::OpenClawBackend;
pub use prompt::Prompt;

/// The text pieces of one answer, in order, in batches: each item holds the deltas
/// that arrived together (one network read), so they travel on as one unit.
pub type DeltaStream = LocalBoxStream<'static, Result<Vec<String>, BackendError>>;

/// What a backend needs to answer one turn.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// The session the turn belongs to (the gateway's memory key for `openclaw`).
    pub session_key: SessionKey,
    /// The agent that answers.
    pub agent_id: Arc<str>,
    /// The user's message as they typed it.
    pub content: String,
    /// The message as the agent is told it (envelope, media, context).
    pub prompt: Prompt,
    /// The session's earlier messages, oldest first, for backends that need memory sent.
    pub history: Vec<TranscriptEntry>,
    /// This agent's own system prompt, overriding `agent.systemPrompt` (`openai`).
    pub system_prompt: Option<String>,
    /// The agent was just created: while the gateway still answers "Unknown agent",
    /// retry for this long before giving up (`openclaw`).
    pub confirm_agent_for: Option<Duration>,
}

/// One agent backend.
pub trait AgentBackend: Send + Sync {
    /// Starts the turn; the stream ends when the answer is complete.
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream;

    /// Whether the backend keeps the conversation itself (then no history is sent).
    fn keeps_memory(&self) -> bool;

    /// Whether the backend is reachable now (`/readyz`); `Err` says why not.
    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>>;
}

/// Why a turn's backend call failed; `code()` is what subscribers see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached at all.
    #[error("the agent backend is unreachable: {0}")]
    Unavailable(String),
    /// No answer in time (first byte, or the whole turn).
    #[error("the agent did not answer in time ({0})")]
    Timeout(&'static str),
    /// The backend answered with an error.
    #[error("the agent backend failed: {0}")]
    Failed(String),
}

impl BackendError {
    /// The `chat.error` code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            BackendError::Unavailable(_) => ErrorCode::AgentUnavailable,
            BackendError::Timeout(_) => ErrorCode::AgentTimeout,
            BackendError::Failed(_) => ErrorCode::AgentError,
        }
    }
}

/// Builds the configured backend.
pub fn from_settings(settings: &AgentSettings) -> Arc<dyn AgentBackend> {
    match settings.kind {
        AgentKind::Echo => {
            log::warn!("agent.kind = \"echo\": the built-in DEMO agent answers (it only echoes)");
            Arc::new(EchoBackend::new(settings))
        }
        AgentKind::Openai => Arc::new(OpenAiBackend::new(settings)),
        AgentKind::Openclaw => Arc::new(OpenClawBackend::new(settings)),
    }
}
