//! Agent backends: what answers a turn, streamed delta by delta.
//!
//! Every backend implements [`AgentBackend`]: given a [`TurnRequest`] it returns a
//! [`DeltaStream`] of [`AnswerPiece`]s (text, reasoning, tool calls, usage, the finish
//! reason) that ends when the answer is complete, or yields a
//! [`BackendError`] that ends the turn (never the session). Streams are polled on
//! the AgentBridge's thread, so they may hold thread-local HTTP clients. Backends
//! never see a socket or a subscriber.

pub mod attachments;
mod chat_completions;
mod echo;
mod media_lines;
mod openai;
mod openclaw;
pub mod prompt;
mod sse;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;

use crate::config::{AgentKind, Settings};
use crate::identity::SessionKey;
use crate::media::MediaStore;
use crate::protocol::{ErrorCode, ToolResult, TranscriptEntry};
use crate::redact;

pub use echo::EchoBackend;
pub use openai::OpenAiBackend;
pub use openclaw::OpenClawBackend;
pub use prompt::Prompt;

/// The pieces of one answer, in order, in batches: each item holds the pieces that
/// arrived together (one network read), so they travel on as one unit.
pub type DeltaStream = LocalBoxStream<'static, Result<Vec<AnswerPiece>, BackendError>>;

/// One piece of an answer as a backend streams it (SPEC §10). Text is by far the
/// most frequent; the others come from models that reason or call tools.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerPiece {
    /// A piece of the answer's text (`delta.content`).
    Text(String),
    /// A piece of the model's reasoning (`delta.reasoning_content` / `delta.reasoning`).
    Reasoning(String),
    /// A fragment of tool call `index`: its id and name come once, its arguments' JSON
    /// text in pieces, joined per index.
    ToolCall { index: u32, id: Option<String>, name: Option<String>, arguments: String },
    /// Token counts, when the backend reports them.
    Usage(Usage),
    /// Why the model stopped (`finish_reason`: `stop`, `length`, `tool_calls`…).
    Finish(String),
    /// An attachment the agent produced, as clients fetch it: an http(s) URL (the
    /// OpenClaw `MEDIA:` directive), or one of the media store (`media_id`).
    Media { url: String, media_type: Option<String>, name: Option<String>, media_id: Option<String> },
    /// An attachment to copy into the media store first (a local file under the media
    /// roots, bytes the answer carried); `attachments::stored` makes it a `Media`.
    StoreMedia { source: MediaSource, media_type: Option<String>, name: Option<String> },
}

/// Where an attachment to store comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaSource {
    /// A local file (its path lexically under `channels.websocket.media.roots`).
    File(std::path::PathBuf),
    /// Bytes the answer carried (a `data:` URL).
    Bytes(bytes::Bytes),
}

/// Token counts of one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// The backend reported no counts: these are estimated from the text (about four
    /// characters a token), and say so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Usage {
    /// Counts estimated from `prompt_chars` and `answer_chars` characters.
    pub fn estimated(prompt_chars: usize, answer_chars: usize) -> Usage {
        let tokens = |chars: usize| chars.div_ceil(4) as u64;
        let (prompt_tokens, completion_tokens) = (tokens(prompt_chars), tokens(answer_chars));
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, estimated: true }
    }
}

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
    /// A continuation after client-side tools: the results of the last answer's tool
    /// calls, which the model is sent instead of a new user message (`openai`).
    pub tool_results: Vec<ToolResult>,
    /// This agent's own system prompt, overriding `agent.systemPrompt` (`openai`).
    pub system_prompt: Option<String>,
    /// The agent was just created: while the gateway still answers "Unknown agent",
    /// retry for this long before giving up (`openclaw`).
    pub confirm_agent_for: Option<Duration>,
    /// Uploads the message carries (`chat.send` `mediaIds`, checked to be the sender's).
    pub media_ids: Vec<String>,
    /// Who owns what the agent attaches (the turn's sender), and the session's group.
    pub owner: String,
    pub group_id: Option<String>,
}

/// One agent backend.
pub trait AgentBackend: Send + Sync {
    /// Starts the turn; the stream ends when the answer is complete.
    fn stream_turn(&self, request: TurnRequest) -> DeltaStream;

    /// Whether each turn must carry the session's stored history (a backend that keeps
    /// no memory of its own and uses one: `openai`).
    fn wants_history(&self) -> bool;

    /// Whether the backend is reachable now (`/readyz`); `Err` says why not.
    fn probe(&self) -> LocalBoxFuture<'static, Result<(), String>>;
}

/// Why a turn's backend call failed. [`BackendError::client_message`] is the fixed
/// sentence subscribers see (never a backend's own words: an error body may echo a
/// key); `Display` adds the detail, credentials masked, for the log.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// The backend could not be reached at all.
    Unavailable(String),
    /// The gateway still does not know a new agent after `agent.confirmAgentMs`.
    UnknownAgent(String),
    /// No answer in time; names the bound (`agent.timeoutMs`, `agent.idleTimeoutMs`,
    /// `limits.turnTimeoutMs`).
    Timeout(&'static str),
    /// The backend answered with an HTTP error status.
    Status { status: u16, detail: String },
    /// The answer ended before it was complete (no `finish_reason`, nothing in it, or
    /// the connection dropped mid-stream).
    CutOff(String),
    /// The answer grew past `limits.maxAnswerBytes`.
    TooLarge { limit: usize },
    /// The backend reported an error in its stream, or sent what cannot be read.
    Failed(String),
}

impl BackendError {
    /// The `chat.error` code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            BackendError::Unavailable(_) | BackendError::UnknownAgent(_) => ErrorCode::AgentUnavailable,
            BackendError::Timeout(_) => ErrorCode::AgentTimeout,
            BackendError::Status { .. }
            | BackendError::CutOff(_)
            | BackendError::TooLarge { .. }
            | BackendError::Failed(_) => ErrorCode::AgentError,
        }
    }

    /// The fixed sentence subscribers see.
    pub fn client_message(&self) -> String {
        match self {
            BackendError::Unavailable(_) => "the agent backend is unreachable".into(),
            BackendError::UnknownAgent(_) => "the gateway does not know this user's agent: check that the gateway's openclaw.json $includes the agents file (agent.openclawConfigPath)".into(),
            BackendError::Timeout(bound) => format!("the agent did not answer in time ({bound})"),
            BackendError::Status { status, .. } => format!("the agent backend answered HTTP {status}"),
            BackendError::CutOff(_) => "the agent's answer was cut off".into(),
            BackendError::TooLarge { limit } => {
                format!("answer too large: the agent's answer passed limits.maxAnswerBytes ({limit} bytes)")
            }
            BackendError::Failed(_) => "the agent backend reported an error".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            BackendError::Unavailable(detail)
            | BackendError::UnknownAgent(detail)
            | BackendError::Status { detail, .. }
            | BackendError::CutOff(detail)
            | BackendError::Failed(detail) => Some(detail),
            BackendError::Timeout(_) | BackendError::TooLarge { .. } => None,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.client_message())?;
        match self.detail().filter(|detail| !detail.is_empty()) {
            Some(detail) => write!(f, ": {}", redact::secrets(detail)),
            None => Ok(()),
        }
    }
}

impl std::error::Error for BackendError {}

/// Builds the configured backend; `media` is where a turn's uploads are read and the
/// agent's attachments stored.
pub fn from_settings(settings: &Settings, media: Arc<MediaStore>) -> Arc<dyn AgentBackend> {
    let (agent, max_answer_bytes) = (&settings.agent, settings.limits.max_answer_bytes);
    match agent.kind {
        AgentKind::Echo => {
            log::warn!("agent.kind = \"echo\": the built-in DEMO agent answers (it only echoes)");
            Arc::new(EchoBackend::new(agent))
        }
        AgentKind::Openai => Arc::new(OpenAiBackend::new(agent, max_answer_bytes, media)),
        AgentKind::Openclaw => {
            let websocket = &settings.channels.websocket;
            let media_roots = websocket.events().any().then(|| websocket.media.roots.clone());
            Arc::new(OpenClawBackend::new(agent, max_answer_bytes, media_roots, media))
        }
    }
}
