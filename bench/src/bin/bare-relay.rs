//! bare-relay: the physical-limit baseline. A minimal tokio + tokio-tungstenite
//! relay with no sessions, no JSON beyond pulling `content` out of the agent's
//! chunks, no history, no auth logic beyond one optional POST.
//!
//! - On connect it sends the text frame `welcome` (so handshake time is measured the
//!   same way as ClawSocket's welcome frame). With `--auth URL` it first POSTs
//!   `{"token":"<token query param>"}` there (a new HTTP/1.1 connection each time)
//!   and closes with 4401 unless the answer holds `"success":true`.
//! - Default mode: each text frame from a client starts one turn: a POST to the
//!   fake agent over this connection's own keep-alive TCP connection, and each
//!   delta's content is forwarded as one text frame (the frames parsed out of one
//!   read from the agent are written with one flush).
//! - `--fanout-group`: a client that sends `join` joins the one group (answered by
//!   `joined`); any other text frame starts a turn whose deltas go to every member
//!   (a tokio broadcast channel: one shared frame per delta, no copies).
//! - Idle connections are simply held.

use clap::Parser;
use clawsocket_bench::http::{read_response, Reader, SseResponse};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

#[derive(Parser, Debug)]
#[command(about = "Bare WebSocket relay (benchmark baseline)")]
struct Args {
    #[arg(long, default_value_t = 18810)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Fake agent address host:port.
    #[arg(long, default_value = "127.0.0.1:18900")]
    agent: String,
    /// Path of the agent's completion endpoint.
    #[arg(long, default_value = "/v1/chat/completions")]
    agent_path: String,
    /// One broadcast group: `join` subscribes, any other frame starts a group turn.
    #[arg(long)]
    fanout_group: bool,
    /// Broadcast channel capacity (frames a slow member may lag behind).
    #[arg(long, default_value_t = 65536)]
    fanout_capacity: usize,
    /// Auth endpoint (http://host:port/path) to verify the `token` query param.
    #[arg(long)]
    auth: Option<String>,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Shared {
    args: Args,
    group: broadcast::Sender<Utf8Bytes>,
    open: AtomicU64,
    /// Idle keep-alive connections to the auth service.
    auth_pool: Mutex<Vec<(Reader<OwnedReadHalf>, OwnedWriteHalf)>>,
}

fn main() {
    let args = Args::parse();
    let (soft, _) = clawsocket_bench::raise_nofile();
    eprintln!("bare-relay: open-file limit {soft}");
    let rt = clawsocket_bench::runtime(args.threads).expect("runtime");
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = clawsocket_bench::listen(&addr).unwrap_or_else(|e| {
            eprintln!("bare-relay: cannot bind {addr}: {e}");
            std::process::exit(1)
        });
        eprintln!("bare-relay: ws://{addr}/ agent={} fanout={}", args.agent, args.fanout_group);
        let (group, _) = broadcast::channel(args.fanout_capacity);
        let shared = Arc::new(Shared { args, group, open: AtomicU64::new(0), auth_pool: Mutex::new(Vec::new()) });
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => { tokio::spawn(conn(sock, shared.clone())); }
                    Err(e) => {
                        eprintln!("bare-relay: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut ctrl_c => break,
            }
        }
    });
}

fn ws_config() -> WebSocketConfig {
    // Small eager read buffer (idle memory), modest write buffer (batching).
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(8192)
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn conn(sock: TcpStream, sh: Arc<Shared>) {
    let _ = sock.set_nodelay(true);
    let mut token = String::new();
    let cb = |req: &Request, resp: Response| {
        if let Some(q) = req.uri().query() {
            for kv in q.split('&') {
                if let Some(v) = kv.strip_prefix("token=") {
                    token = v.to_string();
                }
            }
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, Some(ws_config())).await else {
        return;
    };
    if let Some(url) = &sh.args.auth {
        if !verify(&sh, url, &token).await {
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Library(4401), reason: "auth failed".into() })).await;
            return;
        }
    }
    if ws.send(Message::text("welcome")).await.is_err() {
        return;
    }
    sh.open.fetch_add(1, Ordering::Relaxed);
    if sh.args.fanout_group {
        fanout_conn(ws, &sh).await;
    } else {
        relay_conn(ws, &sh).await;
    }
    sh.open.fetch_sub(1, Ordering::Relaxed);
}

/// One agent turn: POST, then forward each delta to `emit`.
struct Agent {
    conn: Option<(Reader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf)>,
}

impl Agent {
    async fn request(&mut self, sh: &Shared) -> std::io::Result<()> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&sh.args.agent).await?;
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            self.conn = Some((Reader::new(r), w));
        }
        let body = br#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"go"}]}"#;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n",
            sh.args.agent_path,
            sh.args.agent,
            body.len()
        );
        let (_, w) = self.conn.as_mut().unwrap();
        let mut buf = req.into_bytes();
        buf.extend_from_slice(body);
        w.write_all(&buf).await
    }
}

async fn relay_conn(mut ws: WebSocketStream<TcpStream>, sh: &Shared) {
    let mut agent = Agent { conn: None };
    let mut batch: Vec<String> = Vec::with_capacity(64);
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(_)) | Ok(Message::Binary(_)) => {}
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => continue,
        }
        // One turn. A failed agent call drops the agent connection and sends `error`.
        let ok = async {
            agent.request(sh).await?;
            let (r, _) = agent.conn.as_mut().unwrap();
            let mut sse = SseResponse::start(r).await?;
            while sse.next_batch(r, &mut batch).await? {
                for c in batch.drain(..) {
                    ws.feed(Message::text(c)).await.map_err(std::io::Error::other)?;
                }
                ws.flush().await.map_err(std::io::Error::other)?;
            }
            if sse.close {
                agent.conn = None;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = ok {
            agent.conn = None;
            batch.clear();
            if ws.send(Message::text(format!("error: {e}"))).await.is_err() {
                return;
            }
        }
    }
}

async fn fanout_conn(mut ws: WebSocketStream<TcpStream>, sh: &Arc<Shared>) {
    let mut rx: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                if text.as_str() == "join" {
                    rx = Some(sh.group.subscribe());
                    if ws.send(Message::text("joined")).await.is_err() { return; }
                } else {
                    // Group turn in its own task: deltas go to every member.
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        let mut agent = Agent { conn: None };
                        let mut batch = Vec::with_capacity(64);
                        let r = async {
                            agent.request(&sh).await?;
                            let (r, _) = agent.conn.as_mut().unwrap();
                            let mut sse = SseResponse::start(r).await?;
                            while sse.next_batch(r, &mut batch).await? {
                                for c in batch.drain(..) {
                                    let _ = sh.group.send(Utf8Bytes::from(c));
                                }
                            }
                            Ok::<_, std::io::Error>(())
                        }.await;
                        if let Err(e) = r {
                            let _ = sh.group.send(Utf8Bytes::from(format!("error: {e}")));
                        }
                    });
                }
            }
            d = async { rx.as_mut().unwrap().recv().await }, if rx.is_some() => {
                match d {
                    Ok(first) => {
                        if ws.feed(Message::Text(first)).await.is_err() { return; }
                        // Batch whatever else is already waiting, then one flush.
                        let r = rx.as_mut().unwrap();
                        let mut n = 0;
                        while n < 256 {
                            match r.try_recv() {
                                Ok(t) => { if ws.feed(Message::Text(t)).await.is_err() { return; } n += 1; }
                                Err(broadcast::error::TryRecvError::Lagged(k)) => {
                                    eprintln!("bare-relay: member lagged {k} frames");
                                }
                                Err(_) => break,
                            }
                        }
                        if ws.flush().await.is_err() { return; }
                    }
                    Err(broadcast::error::RecvError::Lagged(k)) => eprintln!("bare-relay: member lagged {k} frames"),
                    Err(_) => return,
                }
            }
        }
    }
}

/// POST {"token": ...} to the auth endpoint over a pooled keep-alive connection
/// (a new one when none is idle; one retry on a fresh connection when a pooled one
/// turns out to be closed).
async fn verify(sh: &Shared, url: &str, token: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let body = serde_json::json!({ "token": token, "tokenType": "local" }).to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for attempt in 0..2 {
        let pooled = if attempt == 0 { sh.auth_pool.lock().unwrap().pop() } else { None };
        let was_pooled = pooled.is_some();
        let r = async {
            let (mut rd, mut wr) = match pooled {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect(hostport).await?;
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    (Reader::new(r), w)
                }
            };
            wr.write_all(req.as_bytes()).await?;
            let (head, body) = read_response(&mut rd).await?;
            if !head.close {
                sh.auth_pool.lock().unwrap().push((rd, wr));
            }
            Ok::<_, std::io::Error>(body)
        };
        match tokio::time::timeout(Duration::from_secs(5), r).await {
            Ok(Ok(out)) => return clawsocket_bench::memfind(&out, b"\"success\":true").is_some(),
            Ok(Err(_)) if was_pooled => continue,
            _ => return false,
        }
    }
    false
}
