//! The wire protocol: every JSON field name the service speaks lives here.
//!
//! Inbound frames are decoded into typed [`Inbound`] messages; a frame that cannot
//! be used becomes a [`DecodeError`] whose code and sentence go back to the client
//! as `chat.error` (the connection stays open). Outbound messages are built as
//! [`Outbound`] values and serialized once into a [`Frame`], whose bytes are shared
//! by every subscriber that receives them. Nothing here touches a socket or an actor.

use std::sync::LazyLock;

use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Close code: authentication failed or a required token is missing (as the original).
pub const CLOSE_AUTH_FAILED: u16 = 4401;

/// Why the server closes a socket: the close code and reason it sends, each named
/// once here (SPEC §1 close codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: &'static str,
}

impl Disconnect {
    /// A frame or fragmented message over `limits.maxMessageBytes`.
    pub const TOO_BIG: Disconnect = Disconnect { code: 1009, reason: "message too big" };
    /// A text message that is not UTF-8 (RFC 6455 §8.1).
    pub const NOT_UTF8: Disconnect = Disconnect { code: 1007, reason: "text message is not UTF-8" };
    /// Frames that break RFC 6455 (a continuation with no message begun, among others).
    pub const PROTOCOL_ERROR: Disconnect = Disconnect { code: 1002, reason: "protocol error" };
    /// Flooding on after the `rate_limited` warnings.
    pub const FLOODING: Disconnect =
        Disconnect { code: 1008, reason: "flooding: too many messages after rate_limited warnings" };
    /// A reader too slow for its frames (`limits.outboundQueue`, `limits.outboundBytes`).
    pub const SLOW: Disconnect = Disconnect { code: 1008, reason: "slow" };
    /// A fragmented message not completed within `limits.fragmentTimeoutMs`.
    pub const FRAGMENT_TIMEOUT: Disconnect =
        Disconnect { code: 1008, reason: "fragmented message not completed in time (limits.fragmentTimeoutMs)" };
    /// The server-wide `limits.maxPendingFragmentBytes` is full.
    pub const FRAGMENT_BUDGET: Disconnect =
        Disconnect { code: 1013, reason: "too many unfinished messages on the server; try again later" };
    /// Shutdown.
    pub const GOING_AWAY: Disconnect = Disconnect { code: 1001, reason: "server shutting down" };
}

/// Longest `chat.error` sentence about a refused frame, in bytes (then cut, with `…`).
pub const MAX_ERROR_TEXT_BYTES: usize = 300;
/// Longest id (message, sender, group, thread) accepted from the network, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Default and largest `limit` of a `chat.history` request.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
const MAX_HISTORY_LIMIT: usize = 1000;
/// Most uploads one `chat.send` may carry (`mediaIds`).
pub const MAX_MEDIA_IDS: usize = 16;
/// Default and largest `limit` of a `chat.threads` request.
pub const DEFAULT_THREADS_LIMIT: usize = 50;
const MAX_THREADS_LIMIT: usize = 1000;

/// Defines [`ErrorCode`] from one list: each variant with its wire word, and `ALL`.
macro_rules! error_codes {
    ($($variant:ident => $word:literal,)+) => {
        /// The machine word of a `chat.error`: what went wrong, for programs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order of SPEC §1 (metrics resolve one series each).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The word as it appears on the wire (also the metrics label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $word,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json",
    InvalidMessage => "invalid_message",
    UnsupportedType => "unsupported_type",
    AuthFailed => "auth_failed",
    TokenRequired => "token_required",
    RateLimited => "rate_limited",
    SessionBusy => "session_busy",
    PayloadTooLarge => "payload_too_large",
    AgentUnavailable => "agent_unavailable",
    AgentTimeout => "agent_timeout",
    AgentError => "agent_error",
    Aborted => "aborted",
    MediaForbidden => "media_forbidden",
    Forbidden => "forbidden",
    ShuttingDown => "shutting_down",
    Internal => "internal",
    QuotaExceeded => "quota_exceeded",
    NotFound => "not_found",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A direct conversation or a group chat (`chatType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChatType {
    #[default]
    Direct,
    Group,
}

/// `chat.send`: one agent turn. Every field of the original plugin, plus `threadId`.
/// (Serialized only to forward a turn to the node that owns its session.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    pub content: String,
    pub message_id: Option<String>,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    #[serde(default)]
    pub chat_type: ChatType,
    pub group_id: Option<String>,
    pub group_subject: Option<String>,
    pub thread_id: Option<String>,
    pub reply_to_message_id: Option<String>,
    pub reply_to_body: Option<String>,
    pub media_path: Option<String>,
    pub media_type: Option<String>,
    #[serde(default)]
    pub media_paths: Vec<String>,
    #[serde(default)]
    pub media_types: Vec<String>,
    /// Uploads of the sender's own (`POST /media`) the message carries (SPEC §12).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_ids: Vec<String>,
    pub custom_data: Option<Map<String, Value>>,
}

/// Which session a control message (`chat.abort`, `chat.history`, `chat.join`,
/// `chat.leave`) is about: the caller's own direct session unless `groupId` is given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSelector {
    pub group_id: Option<String>,
    pub thread_id: Option<String>,
    /// Honoured only on unauthenticated connections, as in `chat.send`.
    pub sender_id: Option<String>,
}

/// `chat.abort`: cancel the running turn, or the queued turn with this `messageId`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRequest {
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// `chat.history`: the session's stored transcript, oldest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRequest {
    pub limit: Option<usize>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// `chat.join`: subscribe to a session; mid-turn, replay deltas after `afterSeq`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    #[serde(default)]
    pub after_seq: u64,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// `chat.toolResult`: the result of one tool call of the session's last answer (a
/// client-side tool); once every call has one, the model continues.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultMessage {
    pub tool_call_id: String,
    pub content: String,
    /// The continuation turn's id (idempotency, as a `chat.send`'s); else derived.
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// One tool call's result, as a client gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_call_id: String,
    pub content: String,
}

/// What kind of turn a queued turn is (client-side tools, SPEC §10; regeneration,
/// SPEC §11).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolTurn {
    /// A user's message.
    #[default]
    Message,
    /// A `chat.toolResult`: kept until every call of the last answer has one.
    Result(ToolResult),
    /// The model's continuation, given every result.
    Continuation(Vec<ToolResult>),
    /// A `chat.regenerate`: the last user message again, its new answer superseding
    /// the last one; names the message the client meant (else the last answered).
    Regenerate(Option<String>),
}

/// `chat.threads`: the caller's conversations, or a group's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadsRequest {
    /// Echoed in the answer (and an error), to match it to the request.
    pub message_id: Option<String>,
    pub group_id: Option<String>,
    pub limit: Option<usize>,
    /// Honoured only on unauthenticated connections, as in `chat.send`.
    pub sender_id: Option<String>,
}

/// `chat.title`: names a conversation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TitleRequest {
    pub title: String,
    /// Echoed in the answer (and an error), to match it to the request.
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// `chat.regenerate`: the last turn again, as a new turn.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegenerateRequest {
    /// The answered message to regenerate; it must be the last (default: the last).
    pub message_id: Option<String>,
    /// The new turn's own id (a retry with the same id gets its answer, not a third
    /// one); else one is made up.
    pub new_message_id: Option<String>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// `chat.delete`: deletes a thread (`threadId` required).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRequest {
    /// Echoed in the answer (and an error), to match it to the request.
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub session: SessionSelector,
}

/// A decoded, validated client message.
#[derive(Debug, Clone)]
pub enum Inbound {
    Send(Box<SendMessage>),
    ToolResult(Box<ToolResultMessage>),
    Abort(AbortRequest),
    History(HistoryRequest),
    Join(JoinRequest),
    Leave(SessionSelector),
    Threads(ThreadsRequest),
    Title(TitleRequest),
    Regenerate(RegenerateRequest),
    Delete(DeleteRequest),
    Ping,
}

/// Why a frame was refused: sent back as `chat.error`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `messageId`, when it had a usable one, so the client can correlate.
    pub message_id: Option<String>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>, message_id: Option<String>) -> Self {
        DecodeError { code, message: bounded_text(message.into()), message_id }
    }
}

/// A parser's sentence can quote the offending value whole (a 1 MiB string, say):
/// it is cut at `MAX_ERROR_TEXT_BYTES`, so an error is never an echo of the input.
fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT_BYTES {
        let mut end = MAX_ERROR_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Decodes one text (or binary, UTF-8) frame.
pub fn decode(bytes: &[u8]) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| DecodeError::new(ErrorCode::InvalidJson, format!("frame is not valid JSON: {error}"), None))?;
    let Value::Object(object) = value else {
        return Err(DecodeError::new(ErrorCode::InvalidMessage, "frame must be a JSON object", None));
    };
    let message_id = object.get("messageId").and_then(Value::as_str).filter(|id| is_valid_id(id)).map(String::from);
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(DecodeError::new(ErrorCode::InvalidMessage, "field `type` must be a string", message_id))
        }
        None => return Err(DecodeError::new(ErrorCode::InvalidMessage, "field `type` is required", message_id)),
    };
    let fail = |message: String| DecodeError::new(ErrorCode::InvalidMessage, message, message_id.clone());
    let object = Value::Object(object);
    let inbound = match kind.as_str() {
        "chat.send" => Inbound::Send(Box::new(fields::<SendMessage>(object).map_err(&fail)?)),
        "chat.toolResult" => Inbound::ToolResult(Box::new(fields(object).map_err(&fail)?)),
        "chat.abort" => Inbound::Abort(fields(object).map_err(&fail)?),
        "chat.history" => Inbound::History(fields(object).map_err(&fail)?),
        "chat.join" => Inbound::Join(fields(object).map_err(&fail)?),
        "chat.leave" => Inbound::Leave(fields(object).map_err(&fail)?),
        "chat.threads" => Inbound::Threads(fields(object).map_err(&fail)?),
        "chat.title" => Inbound::Title(fields(object).map_err(&fail)?),
        "chat.regenerate" => Inbound::Regenerate(fields(object).map_err(&fail)?),
        "chat.delete" => Inbound::Delete(fields(object).map_err(&fail)?),
        "ping" => Inbound::Ping,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(DecodeError::new(
                ErrorCode::UnsupportedType,
                format!("unsupported message type `{shown}` (expected chat.send, chat.toolResult, chat.abort, chat.history, chat.join, chat.leave, chat.threads, chat.title, chat.regenerate, chat.delete or ping)"),
                message_id,
            ));
        }
    };
    validate(&inbound).map_err(fail)?;
    Ok(inbound)
}

/// Deserializes the typed fields, naming the first bad field in the error.
fn fields<T: DeserializeOwned>(object: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(object).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            format!("{inner}")
        } else {
            format!("field `{path}`: {inner}")
        }
    })
}

/// Checks what the types cannot: required content, id shapes, group needs groupId.
fn validate(inbound: &Inbound) -> Result<(), String> {
    match inbound {
        Inbound::Send(send) => validate_send(send),
        Inbound::ToolResult(result) => {
            check_id("toolCallId", Some(&result.tool_call_id))?;
            check_id("messageId", result.message_id.as_deref())?;
            validate_selector(&result.session)
        }
        Inbound::Abort(abort) => {
            check_id("messageId", abort.message_id.as_deref())?;
            validate_selector(&abort.session)
        }
        Inbound::History(history) => {
            if let Some(limit) = history.limit {
                if limit == 0 || limit > MAX_HISTORY_LIMIT {
                    return Err(format!("field `limit` must be between 1 and {MAX_HISTORY_LIMIT}"));
                }
            }
            validate_selector(&history.session)
        }
        Inbound::Join(join) => validate_selector(&join.session),
        Inbound::Leave(selector) => validate_selector(selector),
        Inbound::Threads(threads) => {
            if threads.limit.is_some_and(|limit| limit == 0 || limit > MAX_THREADS_LIMIT) {
                return Err(format!("field `limit` must be between 1 and {MAX_THREADS_LIMIT}"));
            }
            check_id("messageId", threads.message_id.as_deref())?;
            check_id("groupId", threads.group_id.as_deref())?;
            check_id("senderId", threads.sender_id.as_deref())
        }
        Inbound::Title(title) => {
            if crate::conversations::clean_title(&title.title).is_none() {
                let most = crate::conversations::MAX_TITLE_CHARS;
                return Err(format!("field `title` must be 1 to {most} characters"));
            }
            check_id("messageId", title.message_id.as_deref())?;
            validate_selector(&title.session)
        }
        Inbound::Regenerate(regenerate) => {
            check_id("messageId", regenerate.message_id.as_deref())?;
            check_id("newMessageId", regenerate.new_message_id.as_deref())?;
            validate_selector(&regenerate.session)
        }
        Inbound::Delete(delete) => {
            if delete.session.thread_id.is_none() {
                return Err("field `threadId` is required: only a thread can be deleted".into());
            }
            check_id("messageId", delete.message_id.as_deref())?;
            validate_selector(&delete.session)
        }
        Inbound::Ping => Ok(()),
    }
}

fn validate_send(send: &SendMessage) -> Result<(), String> {
    // A message that carries media may have no words.
    if send.content.trim().is_empty() && send.media_ids.is_empty() {
        return Err("field `content` must be a non-empty string".into());
    }
    if send.media_ids.len() > MAX_MEDIA_IDS {
        return Err(format!("field `mediaIds` holds more than {MAX_MEDIA_IDS} entries"));
    }
    if send.media_ids.iter().any(|id| !crate::media::is_media_id(id)) {
        return Err("field `mediaIds` must hold media ids (as POST /media answered them)".into());
    }
    check_id("messageId", send.message_id.as_deref())?;
    check_id("senderId", send.sender_id.as_deref())?;
    check_id("groupId", send.group_id.as_deref())?;
    check_id("threadId", send.thread_id.as_deref())?;
    check_id("replyToMessageId", send.reply_to_message_id.as_deref())?;
    if send.chat_type == ChatType::Group && send.group_id.is_none() {
        return Err("field `groupId` is required when `chatType` is \"group\"".into());
    }
    if send.media_paths.len() > 32 {
        return Err("field `mediaPaths` holds more than 32 entries".into());
    }
    Ok(())
}

fn validate_selector(selector: &SessionSelector) -> Result<(), String> {
    check_id("groupId", selector.group_id.as_deref())?;
    check_id("threadId", selector.thread_id.as_deref())?;
    check_id("senderId", selector.sender_id.as_deref())
}

fn check_id(field: &str, id: Option<&str>) -> Result<(), String> {
    match id {
        Some(id) if !is_valid_id(id) => {
            Err(format!("field `{field}` must be 1 to {MAX_ID_BYTES} bytes without control characters"))
        }
        _ => Ok(()),
    }
}

/// An id from the network: non-empty, bounded, printable.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

/// The history `limit` a request asked for, or the default.
pub fn history_limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(DEFAULT_HISTORY_LIMIT)
}

/// Who wrote a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// A tool call's result (`chat.toolResult`).
    Tool,
}

/// One stored message of a session's transcript, as `chat.history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry {
    pub role: Role,
    pub content: String,
    pub message_id: String,
    pub sender_id: String,
    pub sender_name: String,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// An answer's reasoning, tool calls, finish reason and usage (SPEC §10), when
    /// there were any: absent from a plain answer's line, as before.
    #[serde(flatten, default)]
    pub answer: AnswerDetails,
}

/// What an answer carried besides its text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::backend::Usage>,
    /// A tool result's call (role `tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Attachments the agent produced (`chat.media`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// A user message's uploads (`chat.send` `mediaIds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_ids: Vec<String>,
    /// A regenerated answer: the message id of the answer it replaces (which stays in
    /// the file, hidden from history and from what the agent sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// An attachment an answer carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Its id in the media store, when it was stored there (a local file, inline bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A tool call the model made: the whole arguments JSON text once complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A server → client message. Field names follow the original plugin; fields it did
/// not have are extras old clients can ignore.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Outbound<'a> {
    /// The first frame of every connection, as the original plugin sent it.
    #[serde(rename = "chat.response")]
    Welcome {
        content: &'static str,
        connection_id: &'a str,
        sender_id: &'a str,
        sender_name: &'a str,
        authenticated: bool,
        /// `2` when anything beyond the original protocol is on (SPEC §10).
        #[serde(skip_serializing_if = "Option::is_none")]
        protocol: Option<u8>,
        /// What this server sends and accepts beyond the original protocol.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        features: &'a [&'static str],
    },
    #[serde(rename = "chat.typing")]
    Typing { message_id: &'a str, session_key: &'a str },
    #[serde(rename = "chat.stream")]
    Stream {
        message_id: &'a str,
        content: &'a str,
        done: bool,
        seq: u64,
        /// True when `content` is the whole text so far, sent once to a late joiner.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        catch_up: bool,
    },
    #[serde(rename = "chat.response")]
    Response {
        message_id: &'a str,
        content: &'a str,
        done: bool,
        session_key: &'a str,
        agent_id: &'a str,
        /// `finishReason`, `usage`, `toolCalls`, `reasoning`, as `channels.websocket.events`
        /// allows (none of them with `[]`).
        #[serde(flatten)]
        details: &'a AnswerDetails,
    },
    /// An attachment the agent produced; `seq` shared with `chat.stream`.
    #[serde(rename = "chat.media")]
    Media {
        message_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        media_id: Option<&'a str>,
        url: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        media_type: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        seq: u64,
    },
    /// A piece of the model's reasoning; `seq` shared with `chat.stream`.
    #[serde(rename = "chat.reasoning")]
    Reasoning { message_id: &'a str, content: &'a str, seq: u64 },
    /// A tool call (`phase` `call`, with its whole arguments), or its result.
    #[serde(rename = "chat.tool")]
    Tool {
        message_id: &'a str,
        tool_call_id: &'a str,
        name: &'a str,
        phase: &'a str,
        arguments: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a str>,
        seq: u64,
    },
    #[serde(rename = "chat.error")]
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        error: &'a str,
        code: ErrorCode,
        /// `quota_exceeded`: the limit that refused (its key, e.g. `turnsPerMinute`).
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<&'a str>,
        /// `quota_exceeded`: when trying again can help, ms from now.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A group member's message, relayed to the other subscribers of the group.
    #[serde(rename = "chat.message")]
    Message {
        message_id: &'a str,
        sender_id: &'a str,
        sender_name: &'a str,
        content: &'a str,
        group_id: Option<&'a str>,
        group_subject: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to_message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to_body: Option<&'a str>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        media_ids: &'a [String],
    },
    #[serde(rename = "chat.history")]
    History { session_key: &'a str, messages: &'a [TranscriptEntry] },
    #[serde(rename = "chat.joined")]
    Joined {
        session_key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        in_flight: Option<&'a str>,
    },
    #[serde(rename = "chat.left")]
    Left { session_key: &'a str },
    /// The caller's (or a group's) conversations, newest first.
    #[serde(rename = "chat.threads")]
    Threads {
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_id: Option<&'a str>,
        sessions: &'a [crate::conversations::ThreadSummary],
    },
    /// A conversation was named (`chat.title`).
    #[serde(rename = "chat.titled")]
    Titled {
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        #[serde(flatten)]
        session: &'a crate::conversations::ThreadSummary,
    },
    /// A thread was deleted (`chat.delete`).
    #[serde(rename = "chat.deleted")]
    Deleted {
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        session_key: &'a str,
        thread_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_id: Option<&'a str>,
    },
    #[serde(rename = "pong")]
    Pong,
}

/// What the welcome frame lists as `features` for these `events` (nothing with `[]`:
/// the original protocol), and the `protocol` it names; `regenerate` unless the agent
/// keeps its own memory.
pub fn features(events: crate::config::Events, regenerate: bool) -> (Option<u8>, Vec<&'static str>) {
    if !events.any() {
        return (None, Vec::new());
    }
    let kinds = [(events.reasoning, "reasoning"), (events.tool, "tool"), (events.usage, "usage")];
    let mut features: Vec<&'static str> = kinds.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
    features.extend(["threads", "groups", "resume", "conversations", "media", "quotas"]);
    if regenerate {
        features.push("regenerate");
    }
    (Some(2), features)
}

/// The text of the welcome frame (the original plugin's words).
pub const WELCOME_TEXT: &str = "Connected to WebSocket chat server";

impl Outbound<'_> {
    /// Serializes once; the frame's bytes are then shared, never copied.
    pub fn to_frame(&self) -> Frame {
        match serde_json::to_string(self) {
            Ok(text) => Frame(ByteString::from(text)),
            // Serializing these plain structs cannot fail; keep the socket useful anyway.
            Err(error) => {
                log::error!("could not serialize an outbound frame: {error}");
                Frame(ByteString::from_static(r#"{"type":"chat.error","error":"internal error","code":"internal"}"#))
            }
        }
    }

    /// A `chat.error` frame.
    pub fn error_frame(code: ErrorCode, error: &str, message_id: Option<&str>) -> Frame {
        Outbound::Error { message_id, error, code, limit: None, retry_after_ms: None }.to_frame()
    }

    /// A `chat.error` `quota_exceeded` naming the `limit` that refused, and when
    /// trying again can help (SPEC §13).
    pub fn quota_frame(error: &str, limit: &str, retry_after_ms: Option<u64>, message_id: Option<&str>) -> Frame {
        let code = ErrorCode::QuotaExceeded;
        Outbound::Error { message_id, error, code, limit: Some(limit), retry_after_ms }.to_frame()
    }
}

/// The `chat.error` every message over `limits.messagesPerMinute` gets. It carries no
/// `messageId`: a refused frame is not even parsed.
pub fn rate_limited_frame() -> Frame {
    // Built once and shared: a flood must not cost an allocation per refused frame.
    static FRAME: LazyLock<Frame> = LazyLock::new(|| {
        let text = "too many messages: slow down (limits.messagesPerMinute); nothing was done with this one";
        Outbound::error_frame(ErrorCode::RateLimited, text, None)
    });
    FRAME.clone()
}

/// Builds the `chat.stream` frames of one turn: the part every delta's frame shares
/// (`{"type":"chat.stream","messageId":"…","content":`) is serialized once per turn,
/// and each delta only adds its escaped content and its `seq`, into a buffer sized
/// once. Byte for byte the same JSON as `Outbound::Stream` (a unit test checks it).
pub struct StreamFrames {
    /// `{"type":"chat.stream","messageId":"<escaped id>","content":`
    prefix: String,
}

impl StreamFrames {
    pub fn new(message_id: &str) -> Self {
        let mut prefix = String::from(r#"{"type":"chat.stream","messageId":"#);
        push_json_string(&mut prefix, message_id);
        prefix.push_str(r#","content":"#);
        StreamFrames { prefix }
    }

    /// The `chat.stream` frame of delta `seq` (or of a catch-up).
    pub fn frame(&self, content: &str, seq: u64, catch_up: bool) -> Frame {
        // Escaping grows plain text little: prefix + content + 2 quotes + the tail.
        let mut text = String::with_capacity(self.prefix.len() + content.len() + content.len() / 8 + 48);
        text.push_str(&self.prefix);
        push_json_string(&mut text, content);
        text.push_str(r#","done":false,"seq":"#);
        text.push_str(itoa::Buffer::new().format(seq));
        if catch_up {
            text.push_str(r#","catchUp":true"#);
        }
        text.push('}');
        Frame(ByteString::from(text))
    }
}

/// Appends `value` as a JSON string literal, exactly as serde_json writes it: text
/// without control characters, `"` or `\\` (nearly every delta) is copied as it is;
/// anything else goes through serde_json's escaping.
fn push_json_string(out: &mut String, value: &str) {
    if !value.bytes().any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else if let Ok(escaped) = serde_json::to_string(value) {
        out.push_str(&escaped);
    }
}

/// One serialized outbound message. Cloning bumps a reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(ByteString);

impl Frame {
    /// The frame's text, for the socket.
    pub fn text(&self) -> ByteString {
        self.0.clone()
    }

    /// Its size on the wire, bytes (for the outbound byte bound).
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }

    /// A frame another node serialized and published (cluster mode): relayed as it
    /// came, never serialized again.
    pub fn relayed(text: ByteString) -> Frame {
        Frame(text)
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
