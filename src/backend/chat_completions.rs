//! The OpenAI-compatible `chat/completions` call both real backends make, with awc.
//!
//! `stream` POSTs the request and turns the answer into a [`DeltaStream`]: an SSE
//! body (`data: {chunk}` … `data: [DONE]`) yields each `choices[0].delta.content` as
//! it arrives; a plain JSON answer (a server that does not stream) yields its whole
//! `message.content` once. The request head must come within `agent.timeoutMs`, each
//! later piece of the body within `agent.idleTimeoutMs`; the whole turn is bounded by
//! the AgentBridge. An answer is complete only with a `finish_reason` (unless
//! `agent.requireFinishReason` is off) and some content: a stream that ends otherwise,
//! `[DONE]` included, is `CutOff`, never passed off as a whole (empty) answer.
//! A request that fails on a kept-alive connection before any byte of an answer (the
//! server closed it meanwhile) is sent once more on a fresh connection.
//! awc clients hold an `Rc`, so each thread keeps its own (and its own pool).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::CONTENT_TYPE;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::Value;

use super::sse::{SseDecoder, SseError};
use super::{AnswerPiece, BackendError, DeltaStream, MediaSource, Usage};
use crate::config::AgentSettings;
use crate::redact;

/// Largest error body read to explain a failure.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Largest non-streamed JSON answer accepted.
const JSON_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How long a readiness probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many already-received body chunks are decoded into one batch.
const MAX_CHUNKS_PER_BATCH: usize = 256;
/// How long the end of a finished answer's body is awaited before its connection is dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A request that fails this soon after it was sent, in a way a closed kept-alive
/// connection explains, is sent once more on a fresh one.
const STALE_FAILURE_WITHIN: Duration = Duration::from_secs(1);
/// Pause between two tries while a new agent is not known to the gateway yet
/// (it hot-applies its agents file in about a second).
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(250);

thread_local! {
    /// One client per thread: awc clients are not `Send`, and a shared one pools
    /// keep-alive connections to the backend. No connection limit: the session
    /// queues and `limits.maxConnections` bound the turns in flight.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_timeout()
        .connector(awc::Connector::new().limit(0))
        .finish();

    /// For the one retry of a request that failed on a kept-alive connection: its
    /// connections are never reused, so the retry cannot meet another stale one.
    static FRESH_CLIENT: awc::Client = awc::Client::builder()
        .disable_timeout()
        .connector(awc::Connector::new().limit(0).conn_keep_alive(Duration::ZERO))
        .finish();
}

fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

fn fresh_client() -> awc::Client {
    FRESH_CLIENT.with(Clone::clone)
}

/// A response whose body is read as it arrives (decompressed if need be).
type StreamingBody = awc::ClientResponse<actix_http::encoding::Decoder<actix_http::Payload>>;

/// One chat-completions call.
pub struct ChatRequest {
    pub url: String,
    /// `Authorization: Bearer …`, when non-empty.
    pub bearer: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub limits: CallLimits,
    /// A new agent: retry while the gateway answers 400 "Unknown agent", this long.
    pub confirm_agent_for: Option<Duration>,
    /// What to do when the server refuses the request as it is (`openai`).
    pub fallbacks: Fallbacks,
}

/// Second tries and stand-ins a backend can offer a call.
#[derive(Default)]
pub struct Fallbacks {
    /// Set (for good) when the server refuses `stream_options`: the call is sent once
    /// more without it, and the backend asks no more.
    pub usage_refused: Option<Arc<AtomicBool>>,
    /// The messages with less history, sent once if the server answers that the
    /// context window is exceeded.
    pub shorter_messages: Option<Vec<Value>>,
    /// The prompt's size in characters: when the server reports no usage, the answer
    /// carries an estimate (marked so).
    pub estimate_prompt_chars: Option<usize>,
}

/// How long a call may take and what makes its answer whole (from `agent.*`).
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// How long to wait for the response head ("first byte"): `agent.timeoutMs`.
    pub first_byte_timeout: Duration,
    /// How long to wait for each later piece of the body: `agent.idleTimeoutMs`.
    pub idle_timeout: Duration,
    /// Whether only a `finish_reason` makes an answer complete: `agent.requireFinishReason`.
    pub require_finish_reason: bool,
    /// `limits.maxAnswerBytes`: no line or event of the stream may hold more (with room
    /// for its JSON around the text).
    pub max_answer_bytes: usize,
}

/// Room for an event's JSON around its text, bytes.
const EVENT_OVERHEAD_BYTES: usize = 64 * 1024;

impl CallLimits {
    pub fn from_settings(settings: &AgentSettings, max_answer_bytes: usize) -> CallLimits {
        CallLimits {
            first_byte_timeout: Duration::from_millis(settings.timeout_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            require_finish_reason: settings.require_finish_reason,
            max_answer_bytes,
        }
    }
}

/// Starts the call; the stream yields the answer's deltas.
pub fn stream(request: ChatRequest) -> DeltaStream {
    let limits = request.limits;
    let state = CallState {
        idle_timeout: limits.idle_timeout,
        answer: Answer {
            require_finish_reason: limits.require_finish_reason,
            estimate_prompt_chars: request.fallbacks.estimate_prompt_chars,
            ..Answer::default()
        },
        decoder: SseDecoder::with_limit(limits.max_answer_bytes.saturating_add(EVENT_OVERHEAD_BYTES)),
        max_answer_bytes: limits.max_answer_bytes,
        phase: Phase::ToSend(request),
    };
    stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
    .boxed_local()
}

impl ChatRequest {
    /// A 400 the request's fallbacks answer: `stream_options` refused (asked without
    /// it, and remembered), or the context window exceeded (asked once with less
    /// history). Whether to send the changed request.
    fn ask_again(&mut self, message: &str) -> bool {
        let lowered = message.to_lowercase();
        if lowered.contains("stream_options") {
            if let (Some(refused), Some(body)) = (&self.fallbacks.usage_refused, self.body.as_object_mut()) {
                if body.remove("stream_options").is_some() {
                    refused.store(true, Ordering::Relaxed);
                    log::info!("the agent backend refuses stream_options.include_usage; asking without it from now on");
                    return true;
                }
            }
        }
        let context_exceeded = lowered.contains("context")
            && ["exceed", "too long", "maximum", "length"].iter().any(|word| lowered.contains(word));
        if context_exceeded {
            if let (Some(body), Some(shorter)) = (self.body.as_object_mut(), self.fallbacks.shorter_messages.take()) {
                log::warn!(
                    "the agent backend says the context window is exceeded; asking once more with half the history"
                );
                body.insert("messages".into(), Value::Array(shorter));
                return true;
            }
        }
        false
    }
}

/// Whether the backend at `url` answers and takes the configured credentials: HTTP
/// 401 or 403 is not ready (every turn would fail so), any other answer is.
pub fn probe(url: String, bearer: String) -> LocalBoxFuture<'static, Result<(), String>> {
    async move {
        let mut request = client().get(&url).timeout(PROBE_TIMEOUT);
        if !bearer.is_empty() {
            request = request.bearer_auth(&bearer);
        }
        let shown = redact::url(&url);
        match request.send().await {
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => Err(format!(
                "agent backend {shown} refused the configured credentials (HTTP {})",
                response.status().as_u16()
            )),
            Ok(_) => Ok(()),
            Err(error) => Err(format!("agent backend {shown} unreachable: {}", redact::secrets(&error.to_string()))),
        }
    }
    .boxed_local()
}

/// Where one call is.
struct CallState {
    phase: Phase,
    decoder: SseDecoder,
    /// What the events decoded so far said.
    answer: Answer,
    idle_timeout: Duration,
    max_answer_bytes: usize,
}

/// The steps of a call, in order.
enum Phase {
    /// The request, not sent yet.
    ToSend(ChatRequest),
    /// The head has come: the body is read as it arrives.
    Reading(StreamingBody),
    /// Nothing more will come (the answer is whole, or the call failed).
    Ended,
}

/// What the stream's events say, updated as each is decoded.
#[derive(Default)]
struct Answer {
    /// Decoded pieces not yet handed out (all those of one read go out together).
    ready: Vec<AnswerPiece>,
    /// Whether `[DONE]` alone may end an answer (`agent.requireFinishReason` off).
    require_finish_reason: bool,
    /// A chunk carried a `finish_reason`: the model finished its answer.
    finish_reason_seen: bool,
    /// Some content came.
    has_content: bool,
    /// `[DONE]` came: read no further.
    done_seen: bool,
    /// The first event that ended the turn with an error.
    failure: Option<BackendError>,
    /// The server reported usage.
    usage_seen: bool,
    /// Characters of text and reasoning so far (for an estimate of the usage).
    answer_chars: usize,
    /// Characters of the prompt, when usage is to be estimated if none comes.
    estimate_prompt_chars: Option<usize>,
}

impl Answer {
    /// Takes in one event's data.
    fn on_event(&mut self, data: &str) {
        if self.done_seen || self.failure.is_some() {
            return; // nothing counts after [DONE] or a failure
        }
        if data.trim() == "[DONE]" {
            self.done_seen = true;
            return;
        }
        let chunk: StreamChunk = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                self.failure = Some(BackendError::Failed("the agent sent an unreadable stream event".into()));
                return;
            }
        };
        if let Some(error) = chunk.error {
            self.failure = Some(BackendError::Failed(error_text(&error)));
            return;
        }
        if let Some(choice) = chunk.choices.0 {
            if let Some(delta) = choice.delta {
                self.on_delta(delta);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason_seen = true;
                self.ready.push(AnswerPiece::Finish(reason));
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage_seen = true;
            self.ready.push(AnswerPiece::Usage(usage.into()));
        }
    }

    /// Takes in a chunk's `delta`: text, reasoning, tool-call fragments.
    fn on_delta(&mut self, delta: Delta) {
        if let Some(reasoning) = delta.reasoning_content.or(delta.reasoning).filter(|text| !text.is_empty()) {
            self.has_content = true;
            self.answer_chars += reasoning.chars().count();
            self.ready.push(AnswerPiece::Reasoning(reasoning));
        }
        if let Some(content) = delta.content.filter(|text| !text.is_empty()) {
            self.has_content = true;
            self.answer_chars += content.chars().count();
            self.ready.push(AnswerPiece::Text(content));
        }
        for url in delta.images.into_iter().filter_map(|image| image.image_url).map(|image| image.url) {
            // A web URL is passed on; a data: URL's bytes are stored and served.
            if url.starts_with("https://") || url.starts_with("http://") {
                self.has_content = true;
                let media_type = crate::media::kinds::by_extension(&url).map(String::from);
                self.ready.push(AnswerPiece::Media { url, media_type, name: None, media_id: None });
            } else if let Some((media_type, bytes)) = super::attachments::decode_data_url(&url) {
                self.has_content = true;
                let source = MediaSource::Bytes(bytes);
                self.ready.push(AnswerPiece::StoreMedia { source, media_type, name: None });
            } else {
                log::warn!("an image in the agent's answer was dropped: not an http(s) or base64 data: URL");
            }
        }
        for call in delta.tool_calls {
            self.has_content = true;
            let function = call.function.unwrap_or_default();
            self.ready.push(AnswerPiece::ToolCall {
                index: call.index,
                id: call.id,
                name: function.name,
                arguments: function.arguments.unwrap_or_default(),
            });
        }
    }
}

impl Answer {
    /// A whole answer without reported usage gets an estimate, when one is wanted.
    fn estimate_usage_if_none(&mut self) {
        if let (false, Some(prompt_chars)) = (self.usage_seen, self.estimate_prompt_chars) {
            self.ready.push(AnswerPiece::Usage(Usage::estimated(prompt_chars, self.answer_chars)));
        }
    }

    /// Why the answer, now that nothing more comes, is not a whole one (if it is not).
    fn incomplete(&self) -> Option<BackendError> {
        // Without a finish_reason only `[DONE]` can end an answer, and only when allowed.
        if !self.finish_reason_seen && (self.require_finish_reason || !self.done_seen) {
            let how = if self.done_seen { "[DONE] without a finish_reason" } else { "no finish_reason before the end" };
            return Some(BackendError::CutOff(format!("the stream ended with {how}")));
        }
        if !self.has_content {
            return Some(BackendError::CutOff("the answer has no content".into()));
        }
        None
    }
}

impl CallState {
    async fn next_item(&mut self) -> Option<Result<Vec<AnswerPiece>, BackendError>> {
        loop {
            if !self.answer.ready.is_empty() {
                return Some(Ok(std::mem::take(&mut self.answer.ready)));
            }
            let step = match std::mem::replace(&mut self.phase, Phase::Ended) {
                Phase::ToSend(request) => self.send(request).await,
                Phase::Reading(response) => self.read_chunk(response).await,
                Phase::Ended => return None,
            };
            if let Err(error) = step {
                self.phase = Phase::Ended;
                self.answer.ready.clear(); // nothing of a failed answer goes out after its error
                return Some(Err(error));
            }
        }
    }

    async fn send(&mut self, mut request: ChatRequest) -> Result<(), BackendError> {
        let deadline = request.confirm_agent_for.map(|window| Instant::now() + window);
        let mut response = loop {
            let mut response = post_with_retry(&request).await?;
            let status = response.status();
            if status.is_success() {
                break response;
            }
            let read = response.body().limit(ERROR_BODY_LIMIT);
            let body = actix_rt::time::timeout(request.limits.idle_timeout, read).await.ok().and_then(Result::ok);
            let body = body.unwrap_or_default();
            let message = error_message(&body);
            if status.as_u16() == 400 && request.ask_again(&message) {
                continue;
            }
            let unknown_agent = status.as_u16() == 400 && message.contains("Unknown agent");
            match deadline {
                Some(deadline) if unknown_agent && Instant::now() < deadline => {
                    actix_rt::time::sleep(CONFIRM_RETRY_PAUSE).await;
                }
                Some(_) if unknown_agent => return Err(BackendError::UnknownAgent(message)),
                _ => return Err(BackendError::Status { status: status.as_u16(), detail: message }),
            }
        };
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        if is_json {
            let read = actix_rt::time::timeout(self.idle_timeout, response.body().limit(JSON_BODY_LIMIT));
            let body = read.await.map_err(|_| BackendError::Timeout("agent.idleTimeoutMs"))?.map_err(payload_error)?;
            let answer = whole_answer(&body)?;
            if answer.is_empty() {
                return Err(BackendError::CutOff("the JSON answer has no content".into()));
            }
            self.answer.ready.push(AnswerPiece::Text(answer));
        } else {
            self.phase = Phase::Reading(response);
        }
        Ok(())
    }

    /// Waits for the next body chunk, then also takes every chunk already received
    /// (servers send each event as its own HTTP chunk): the deltas of one network read
    /// become one batch. Events are parsed as they are decoded, without a copy.
    async fn read_chunk(&mut self, mut response: StreamingBody) -> Result<(), BackendError> {
        let (decoder, answer) = (&mut self.decoder, &mut self.answer);
        let first = actix_rt::time::timeout(self.idle_timeout, response.next()).await;
        let mut next = Some(first.map_err(|_| BackendError::Timeout("agent.idleTimeoutMs"))?);
        let (mut taken, mut body_ended) = (0, false);
        while let Some(item) = next.take() {
            match item {
                Some(Ok(chunk)) => decoder.feed(&chunk, |event| answer.on_event(event)),
                Some(Err(error)) => return Err(payload_error(error)),
                None => {
                    body_ended = true;
                    decoder.finish(|event| answer.on_event(event))
                }
            }
            .map_err(|error| match error {
                SseError::TooLong => BackendError::TooLarge { limit: self.max_answer_bytes },
                other => BackendError::Failed(other.to_string()),
            })?;
            taken += 1;
            if !body_ended && !answer.done_seen && taken < MAX_CHUNKS_PER_BATCH {
                next = response.next().now_or_never();
            }
        }
        if let Some(failure) = self.answer.failure.take() {
            return Err(failure);
        }
        if !body_ended && !self.answer.done_seen {
            self.phase = Phase::Reading(response);
            return Ok(());
        }
        if self.answer.done_seen {
            drain_for_reuse(response);
        }
        if let Some(incomplete) = self.answer.incomplete() {
            return Err(incomplete);
        }
        self.answer.estimate_usage_if_none();
        Ok(())
    }
}

/// The answer is whole at `[DONE]`; the few bytes that may follow (the chunked body's
/// end) are read in the background so the connection goes back to the pool instead
/// of being closed, and the next turn needs no new TCP connection.
fn drain_for_reuse(mut response: StreamingBody) {
    actix_rt::spawn(async move {
        let drain = async { while let Some(Ok(_)) = response.next().await {} };
        let _ = actix_rt::time::timeout(DRAIN_TIMEOUT, drain).await;
    });
}

/// Sends the request; when it fails before any byte of an answer in a way a stale
/// kept-alive connection explains, sends it once more on a fresh connection.
async fn post_with_retry(request: &ChatRequest) -> Result<StreamingBody, BackendError> {
    let sent = Instant::now();
    match post(client(), request).await {
        // Quick, as a closed kept-alive connection fails: a server that took the
        // request and then failed slowly may have acted on it, so it is not sent again.
        Err(error) if stale_connection(&error) && sent.elapsed() < STALE_FAILURE_WITHIN => {
            log::debug!("agent request failed before an answer ({error}); retrying once on a fresh connection");
            post(fresh_client(), request).await.map_err(send_error)
        }
        sent => sent.map_err(send_error),
    }
}

/// Errors a pooled connection the server had closed produces: the request could not
/// be written, or the answer ended before its head.
fn stale_connection(error: &SendRequestError) -> bool {
    matches!(
        error,
        SendRequestError::Send(_)
            | SendRequestError::Response(_)
            | SendRequestError::H2(_)
            | SendRequestError::Connect(ConnectError::Disconnected)
    )
}

async fn post(client: awc::Client, request: &ChatRequest) -> Result<StreamingBody, SendRequestError> {
    let mut call = client.post(&request.url).timeout(request.limits.first_byte_timeout);
    if !request.bearer.is_empty() {
        call = call.bearer_auth(&request.bearer);
    }
    for (name, value) in &request.headers {
        call = call.insert_header((*name, value.as_str()));
    }
    call.send_json(&request.body).await
}

/// One `data:` event of a streamed answer.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: FirstChoice,
    error: Option<Value>,
    /// The last chunk's token counts (`stream_options.include_usage`).
    usage: Option<WireUsage>,
}

/// `usage` as OpenAI-compatible servers send it.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        let total =
            if usage.total_tokens > 0 { usage.total_tokens } else { usage.prompt_tokens + usage.completion_tokens };
        Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: total,
            estimated: false,
        }
    }
}

/// `choices[0]`, read without collecting the array (one allocation less per delta).
#[derive(Default)]
struct FirstChoice(Option<StreamChoice>);

impl<'de> Deserialize<'de> for FirstChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor;
        impl<'de> serde::de::Visitor<'de> for FirstVisitor {
            type Value = FirstChoice;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<FirstChoice, A::Error> {
                let first = items.next_element()?;
                while items.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<FirstChoice, E> {
                Ok(FirstChoice(None))
            }
        }
        deserializer.deserialize_any(FirstVisitor)
    }
}

#[derive(Deserialize)]
struct StreamChoice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

/// A chunk's `delta`: what a model adds to its answer.
#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    /// DeepSeek, vLLM, llama.cpp.
    reasoning_content: Option<String>,
    /// Ollama, OpenRouter.
    reasoning: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<ToolCallDelta>,
    /// Images the model made (OpenRouter's `delta.images`: `image_url` parts).
    #[serde(default, deserialize_with = "null_as_empty")]
    images: Vec<ImageDelta>,
}

/// An image of the answer: `{"type": "image_url", "image_url": {"url": …}}`.
#[derive(Deserialize)]
struct ImageDelta {
    image_url: Option<ImageUrl>,
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

/// One fragment of a tool call.
#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

/// `null` read as an empty list (some servers send `"tool_calls": null`).
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct MessageText {
    content: Option<String>,
}

/// A non-streamed answer: `choices[0].message.content`.
fn whole_answer(body: &[u8]) -> Result<String, BackendError> {
    #[derive(Deserialize)]
    struct Answer {
        choices: Vec<AnswerChoice>,
    }
    #[derive(Deserialize)]
    struct AnswerChoice {
        message: MessageText,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| BackendError::Failed("the agent's JSON answer has no choices[0].message".into()))?;
    answer
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.message.content)
        .ok_or_else(|| BackendError::CutOff("the JSON answer has no content".into()))
}

/// The backend's own explanation from an error body: `{"error":{"message"}}`,
/// `{"error":"…"}`, `{"message":"…"}`, or the text itself.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => match value.get("error") {
            Some(error) => error_text(error),
            None => value.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| value.to_string()),
        },
        Err(_) => String::from_utf8_lossy(body).chars().take(500).collect::<String>().trim().to_string(),
    }
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        other => other.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| other.to_string()),
    }
}

fn send_error(error: SendRequestError) -> BackendError {
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            BackendError::Timeout("agent.timeoutMs")
        }
        SendRequestError::Connect(error) => BackendError::Unavailable(error.to_string()),
        SendRequestError::Send(error) => BackendError::Unavailable(error.to_string()),
        SendRequestError::Response(error) => BackendError::CutOff(format!("no answer head: {error}")),
        other => BackendError::Failed(other.to_string()),
    }
}

fn payload_error(error: PayloadError) -> BackendError {
    BackendError::CutOff(format!("the body broke off: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_explain_themselves() {
        assert_eq!(error_message(br#"{"error":{"message":"Unknown agent: ws-x"}}"#), "Unknown agent: ws-x");
        assert_eq!(error_message(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(error_message(b"Bad Gateway\n"), "Bad Gateway");
    }

    #[test]
    fn a_whole_json_answer_is_read() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"}}]}"#;
        assert_eq!(whole_answer(body).unwrap(), "Hi!");
        assert!(whole_answer(b"{}").is_err());
    }
}
