//! A fake OpenAI-compatible agent: a real HTTP server on 127.0.0.1:0 that records
//! every request and answers as each test scripts it (streamed SSE cut at chosen
//! byte offsets, stalls, error statuses, plain JSON, a dropped connection).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::stream;
use serde_json::{json, Value};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

/// A piece of a scripted body.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Wait, then write these bytes.
    Bytes(Duration, Vec<u8>),
    /// Drop the connection mid-body.
    Abort,
}

/// How the fake answers one call.
#[derive(Debug, Clone)]
pub enum Reply {
    Stream(Vec<Chunk>),
    Json(Value),
    Status(u16, String),
    /// Wait this long before the response head, then reply.
    Late(Duration, Box<Reply>),
}

/// Decides the reply to call number `index` (0-based).
pub type Script = Arc<dyn Fn(usize, &Recorded) -> Reply + Send + Sync>;

/// The running fake; dropping it stops the server.
pub struct FakeAgent {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    activity: Arc<Activity>,
    handle: actix_web::dev::ServerHandle,
}

/// What the fake saw of its calls in flight.
#[derive(Debug, Default)]
pub struct Activity {
    active: AtomicUsize,
    most_at_once: AtomicUsize,
    completed: AtomicUsize,
    /// Calls whose response was dropped by the client before it was complete.
    cancelled: AtomicUsize,
}

/// Held by one call's response until it is fully written (complete) or dropped (cancelled).
struct CallGuard {
    activity: Arc<Activity>,
    complete: bool,
}

impl CallGuard {
    fn new(activity: Arc<Activity>) -> Self {
        let now = activity.active.fetch_add(1, Ordering::SeqCst) + 1;
        activity.most_at_once.fetch_max(now, Ordering::SeqCst);
        CallGuard { activity, complete: false }
    }

    /// The answer was written whole.
    fn finish(mut self) {
        self.complete = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.activity.active.fetch_sub(1, Ordering::SeqCst);
        let counter = if self.complete { &self.activity.completed } else { &self.activity.cancelled };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

impl FakeAgent {
    /// Starts on a fresh port.
    pub fn start(script: Script) -> FakeAgent {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind fake agent"), script)
    }

    /// Starts on `listener` (a test that needs a known port binds it first).
    pub fn start_on(listener: TcpListener, script: Script) -> FakeAgent {
        let addr = listener.local_addr().expect("fake agent address");
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let activity: Arc<Activity> = Arc::default();
        let (shared, shared_activity) = (recorded.clone(), activity.clone());
        let server = HttpServer::new(move || {
            let recorded = shared.clone();
            let activity = shared_activity.clone();
            let script = script.clone();
            App::new()
                .route("/v1/models", web::get().to(|| async { HttpResponse::Ok().json(json!({"data": []})) }))
                .route("/models", web::get().to(|| async { HttpResponse::Ok().json(json!({"data": []})) }))
                .default_service(web::to(move |request: HttpRequest, body: Bytes| {
                    let recorded = recorded.clone();
                    let script = script.clone();
                    let guard = CallGuard::new(activity.clone());
                    async move { answer(request, body, recorded, script, guard).await }
                }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("fake agent listens")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeAgent { addr, recorded, activity, handle }
    }

    /// The most calls that were in flight at the same moment.
    pub fn most_at_once(&self) -> usize {
        self.activity.most_at_once.load(Ordering::SeqCst)
    }

    /// Calls whose answer the client dropped before it was complete (aborts).
    pub fn cancelled(&self) -> usize {
        self.activity.cancelled.load(Ordering::SeqCst)
    }

    /// Calls answered to the end.
    pub fn completed(&self) -> usize {
        self.activity.completed.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT` (the openclaw gateway URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1` (an OpenAI-compatible base URL).
    pub fn url_v1(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every chat request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("fake agent lock").clone()
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn answer(
    request: HttpRequest,
    body: Bytes,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Script,
    mut guard: CallGuard,
) -> HttpResponse {
    let call = Recorded {
        path: request.path().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_lowercase(), value.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let index = {
        let mut recorded = recorded.lock().expect("fake agent lock");
        recorded.push(call.clone());
        recorded.len() - 1
    };
    let mut reply = script(index, &call);
    while let Reply::Late(delay, inner) = reply {
        actix_rt::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Json(value) => {
            guard.complete = true;
            HttpResponse::Ok().json(value)
        }
        Reply::Status(status, body) => {
            guard.complete = true;
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
                .content_type("application/json")
                .body(body)
        }
        Reply::Stream(chunks) => {
            HttpResponse::Ok().content_type("text/event-stream").streaming(stream_chunks(chunks, guard))
        }
        Reply::Late(..) => unreachable!("unwrapped above"),
    }
}

/// Writes the chunks in order; the guard learns whether the stream was written whole.
fn stream_chunks(
    chunks: Vec<Chunk>,
    guard: CallGuard,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    stream::unfold((chunks.into_iter(), guard), |(mut chunks, guard)| async move {
        match chunks.next() {
            Some(Chunk::Bytes(delay, bytes)) => {
                if !delay.is_zero() {
                    actix_rt::time::sleep(delay).await;
                }
                Some((Ok(Bytes::from(bytes)), (chunks, guard)))
            }
            Some(Chunk::Abort) => Some((Err(actix_web::error::ErrorInternalServerError("cut")), (chunks, guard))),
            None => {
                guard.finish();
                None
            }
        }
    })
}

/// A complete SSE answer: a role-only first chunk, one chunk per delta, a
/// `finish_reason` chunk and `[DONE]`.
pub fn sse_body(deltas: &[&str]) -> Vec<u8> {
    let mut body = String::new();
    let mut event = |value: Value| body.push_str(&format!("data: {value}\n\n"));
    event(
        json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]}),
    );
    for delta in deltas {
        event(
            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": null}]}),
        );
    }
    event(
        json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    );
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// Only the delta events, no finish and no `[DONE]`: a stream cut short.
pub fn sse_deltas_only(deltas: &[&str]) -> Vec<u8> {
    deltas
        .iter()
        .map(|delta| format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": delta}}]})))
        .collect::<String>()
        .into_bytes()
}

/// `body` cut every `every` bytes (splitting lines, `data:` and UTF-8 characters),
/// each piece written after a short pause so the pieces travel separately.
pub fn cut_every(body: &[u8], every: usize) -> Vec<Chunk> {
    body.chunks(every).map(|piece| Chunk::Bytes(Duration::from_millis(1), piece.to_vec())).collect()
}

/// A stream that answers `deltas` in one write.
pub fn answer_with(deltas: &[&str]) -> Reply {
    Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, sse_body(deltas))])
}

/// `deltas` as separate writes, `pause` apart: a slow, LLM-paced answer.
pub fn slowly(deltas: &[&str], pause: Duration) -> Reply {
    let body = sse_body(deltas);
    let text = String::from_utf8(body).expect("SSE text");
    let events: Vec<Chunk> =
        text.split_inclusive("\n\n").map(|event| Chunk::Bytes(pause, event.as_bytes().to_vec())).collect();
    Reply::Stream(events)
}

/// A script that always answers `deltas`.
pub fn always(deltas: &'static [&'static str]) -> Script {
    Arc::new(move |_, _| answer_with(deltas))
}

/// An agent answering `count` words (`w1 `, `w2 `…), `pause` apart.
pub fn paced_agent(count: usize, pause: Duration) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| {
        let words: Vec<String> = (1..=count).map(|n| format!("w{n} ")).collect();
        slowly(&words.iter().map(String::as_str).collect::<Vec<_>>(), pause)
    }))
}

/// A stream answering `deltas`, `pause` apart, then reporting `prompt` and
/// `completion` tokens in a usage chunk (as `stream_options.include_usage` asks).
pub fn answer_with_usage(deltas: &[&str], prompt: u64, completion: u64, pause: Duration) -> Reply {
    let mut events: Vec<Value> = deltas
        .iter()
        .map(|delta| json!({"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": null}]}))
        .collect();
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    events.push(json!({"choices": [], "usage": usage}));
    let mut chunks: Vec<Chunk> =
        events.iter().map(|event| Chunk::Bytes(pause, format!("data: {event}\n\n").into_bytes())).collect();
    chunks.push(Chunk::Bytes(pause, b"data: [DONE]\n\n".to_vec()));
    Reply::Stream(chunks)
}
