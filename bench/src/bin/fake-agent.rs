//! fake-agent: an OpenAI-compatible streaming server for benchmarks, plus a fake
//! auth service.
//!
//! - `POST /v1/chat/completions` and `POST /chat/completions`: with `"stream":true`
//!   answers `text/event-stream` (chunked, keep-alive) with `--deltas` chunks whose
//!   `delta.content` is `⟦t=<unix_nanos>⟧` padded with 'x' to `--delta-bytes`, then
//!   a chunk with `finish_reason:"stop"` and `data: [DONE]`. Without `stream` it
//!   answers one `chat.completion` JSON holding the same text.
//! - `GET /v1/models` (and `/models`): a model list, the readiness probe target.
//! - `POST /auth/verify` (and `/api/auth/verify`): `{"token":"t"}` ->
//!   `{"success":true,"data":{"userId":"t","username":"t"}}` when `token` is a
//!   non-empty string, else `{"success":false,...}`; `--auth-delay-ms` delays it.
//!
//! Pacing: `--pace-ms 0` writes every delta as fast as the socket takes them
//! (batched into writes of about `--batch-bytes`, the stamp taken when each delta
//! is formatted); `--pace-ms P` sends one delta every P ms, each flushed on its
//! own, with a tokio interval whose MissedTickBehavior is `--missed-tick`:
//! `delay` (default: after a late tick the next one is P ms later, so a
//! CPU-starved agent sends less often rather than in bursts) or `burst` (late ticks
//! fire back to back to catch up with the schedule, as tokio's default). Either
//! way the stamp is taken right before the write, so relay latency stays honest.

use clap::{Parser, ValueEnum};
use clawsocket_bench::http::{push_chunk, read_request, write_response, Reader};
use clawsocket_bench::{unix_nanos, write_stamped};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MissedTick {
    Delay,
    Burst,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Fake OpenAI-compatible SSE agent and auth service for benchmarks")]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18900)]
    port: u16,
    /// Address to bind (loopback only is sensible).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Deltas per turn.
    #[arg(long, default_value_t = 20)]
    deltas: usize,
    /// Bytes of content per delta (the stamp plus 'x' padding).
    #[arg(long, default_value_t = 64)]
    delta_bytes: usize,
    /// Milliseconds between deltas; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// What the pacing interval does after a late tick.
    #[arg(long, value_enum, default_value_t = MissedTick::Delay)]
    missed_tick: MissedTick,
    /// At --pace-ms 0: bytes gathered before a write to the socket.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// Delay of the first delta (time to first token) in ms.
    #[arg(long, default_value_t = 0)]
    first_delay_ms: u64,
    /// Delay of /auth/verify answers in ms.
    #[arg(long, default_value_t = 0)]
    auth_delay_ms: u64,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Model id reported by /v1/models and in chunks.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Print a line per served request type count every N seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    stats_secs: u64,
}

#[derive(Default)]
struct Stats {
    turns: AtomicU64,
    deltas: AtomicU64,
    auth: AtomicU64,
    other: AtomicU64,
}

fn main() {
    let args = Args::parse();
    clawsocket_bench::raise_nofile();
    let rt = clawsocket_bench::runtime(args.threads).expect("runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = match clawsocket_bench::listen(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-agent: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "fake-agent: listening on http://{addr} (deltas={} delta_bytes={} pace_ms={} threads={})",
        args.deltas, args.delta_bytes, args.pace_ms, args.threads
    );
    let args = Arc::new(args);
    let stats = Arc::new(Stats::default());
    if args.stats_secs > 0 {
        let s = stats.clone();
        let every = args.stats_secs;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(every));
            loop {
                t.tick().await;
                eprintln!(
                    "fake-agent: turns={} deltas={} auth={} other={}",
                    s.turns.load(Ordering::Relaxed),
                    s.deltas.load(Ordering::Relaxed),
                    s.auth.load(Ordering::Relaxed),
                    s.other.load(Ordering::Relaxed)
                );
            }
        });
    }
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(conn(sock, args.clone(), stats.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    eprintln!("fake-agent: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut ctrl_c => break,
        }
    }
}

async fn conn(sock: TcpStream, args: Arc<Args>, stats: Arc<Stats>) {
    let (rd, mut wr) = sock.into_split();
    let mut r = Reader::new(rd);
    let mut seq: u64 = 0;
    loop {
        let (head, body) = match read_request(&mut r).await {
            Ok(Some(x)) => x,
            _ => return,
        };
        let path = head.second.split('?').next().unwrap_or("");
        let close = head.close;
        let res = match (head.first.as_str(), path) {
            ("POST", "/v1/chat/completions" | "/chat/completions") => {
                stats.turns.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                completion(&mut wr, &args, &body, seq, close, &stats).await
            }
            ("GET", "/v1/models" | "/models") => {
                stats.other.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({
                    "object": "list",
                    "data": [{"id": args.model, "object": "model", "created": 0, "owned_by": "clawsocket-bench"}]
                });
                write_response(&mut wr, "200 OK", "application/json", body.to_string().as_bytes(), close).await
            }
            ("POST", "/auth/verify" | "/api/auth/verify") => {
                stats.auth.fetch_add(1, Ordering::Relaxed);
                if args.auth_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(args.auth_delay_ms)).await;
                }
                let token = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_string))
                    .unwrap_or_default();
                let out = if token.is_empty() {
                    serde_json::json!({"success": false, "error": "token required"})
                } else {
                    serde_json::json!({"success": true, "data": {"userId": token, "username": token}})
                };
                write_response(&mut wr, "200 OK", "application/json", out.to_string().as_bytes(), close).await
            }
            ("GET", "/healthz" | "/") => write_response(&mut wr, "200 OK", "text/plain", b"ok\n", close).await,
            _ => {
                stats.other.fetch_add(1, Ordering::Relaxed);
                write_response(&mut wr, "404 Not Found", "text/plain", b"not found\n", close).await
            }
        };
        if res.is_err() || close {
            return;
        }
    }
}

fn chunk_json(out: &mut String, id: &str, model: &str, created: u64, content: Option<&str>, first: bool) {
    // Hand-written so the agent's CPU per delta stays small; the content never
    // needs escaping (ASCII 'x', digits and the two bracket characters).
    use std::fmt::Write;
    let _ = write!(
        out,
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":"
    );
    match content {
        Some(c) if first => {
            let _ = write!(out, "{{\"role\":\"assistant\",\"content\":\"{c}\"}},\"finish_reason\":null}}]}}\n\n");
        }
        Some(c) => {
            let _ = write!(out, "{{\"content\":\"{c}\"}},\"finish_reason\":null}}]}}\n\n");
        }
        None => {
            out.push_str("{},\"finish_reason\":\"stop\"}]}\n\n");
        }
    }
}

async fn completion<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    args: &Args,
    body: &[u8],
    seq: u64,
    close: bool,
    stats: &Stats,
) -> std::io::Result<()> {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let model = req.get("model").and_then(|v| v.as_str()).unwrap_or(&args.model).replace(['"', '\\'], "");
    let id = format!("chatcmpl-{}-{seq}", std::process::id());
    let created = unix_nanos() / 1_000_000_000;
    if args.first_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.first_delay_ms)).await;
    }
    if !stream {
        let mut text = String::new();
        for _ in 0..args.deltas {
            write_stamped(&mut text, unix_nanos(), args.delta_bytes);
        }
        let out = serde_json::json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": args.deltas, "total_tokens": args.deltas + 1}
        });
        stats.deltas.fetch_add(args.deltas as u64, Ordering::Relaxed);
        return write_response(wr, "200 OK", "application/json", out.to_string().as_bytes(), close).await;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
        if close { "close" } else { "keep-alive" }
    );
    let mut out: Vec<u8> = Vec::with_capacity(args.batch_bytes + 1024);
    out.extend_from_slice(head.as_bytes());
    let mut event = String::with_capacity(256 + args.delta_bytes);
    let mut content = String::with_capacity(args.delta_bytes + 32);
    let mut ticker = if args.pace_ms > 0 {
        let mut t = tokio::time::interval(Duration::from_millis(args.pace_ms));
        t.set_missed_tick_behavior(match args.missed_tick {
            MissedTick::Delay => MissedTickBehavior::Delay,
            MissedTick::Burst => MissedTickBehavior::Burst,
        });
        // The first tick completes at once: the first delta goes out without waiting.
        Some(t)
    } else {
        None
    };
    for i in 0..args.deltas {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        content.clear();
        write_stamped(&mut content, unix_nanos(), args.delta_bytes);
        event.clear();
        chunk_json(&mut event, &id, &model, created, Some(&content), i == 0);
        push_chunk(&mut out, event.as_bytes());
        if ticker.is_some() || out.len() >= args.batch_bytes {
            wr.write_all(&out).await?;
            out.clear();
        }
    }
    stats.deltas.fetch_add(args.deltas as u64, Ordering::Relaxed);
    event.clear();
    chunk_json(&mut event, &id, &model, created, None, false);
    event.push_str("data: [DONE]\n\n");
    push_chunk(&mut out, event.as_bytes());
    out.extend_from_slice(b"0\r\n\r\n");
    wr.write_all(&out).await?;
    wr.flush().await
}
