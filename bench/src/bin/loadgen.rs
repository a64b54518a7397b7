//! loadgen: WebSocket load generator for ClawSocket and the bare relay.
//!
//! Scenarios: `idle`, `stream`, `fanout`, `connect` (see `--help` and bench/README.md).
//! Prints a human table on stderr and the JSON report on stdout (and to `--json FILE`).
//!
//! Runtime: `--threads 1` (default) is a current-thread tokio runtime, one OS
//! thread, so on the 2-core box the load generator takes at most one core and
//! never competes with the broker for the other; its own CPU time is reported so a
//! reader can see when it was the bottleneck.

use clap::{Parser, ValueEnum};
use clawsocket_bench::procinfo::{cpu_jiffies, cpu_secs, rss_bytes, self_cpu_secs, self_max_rss_bytes};
use clawsocket_bench::{find_stamp, memfind, unix_nanos};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    Idle,
    Stream,
    Fanout,
    Connect,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Target {
    /// ClawSocket's JSON protocol (welcome frame, chat.send, chat.stream, chat.response).
    Clawsocket,
    /// The bare relay: raw delta text frames, `welcome`, `join`/`joined`.
    Bare,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "WebSocket load generator for ClawSocket benchmarks")]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value_t = Target::Clawsocket)]
    target: Target,
    /// WebSocket URL; `senderId` (and `token`) query parameters are appended. Several
    /// comma-separated URLs are the nodes of a cluster: connection i goes to node i mod k
    /// (with --tabs, tab j of user i to node (i + j) mod k; the fanout sender to node G mod k).
    #[arg(long, default_value = "ws://127.0.0.1:18800/ws")]
    url: String,
    /// Connections: idle N, stream users C, fanout members G, connect M.
    #[arg(short = 'n', long, default_value_t = 100)]
    connections: usize,
    /// Turns per user (stream) or sends by the one sender (fanout).
    #[arg(short = 't', long, default_value_t = 1)]
    turns: usize,
    /// Deltas per turn the agent sends. Required for --target bare (ends a turn);
    /// for ClawSocket a turn whose chat.stream count differs is counted as an error.
    #[arg(short = 'd', long)]
    deltas: Option<usize>,
    /// Connection opening rate (connections per second).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// idle: seconds to hold the connections after all are open.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// idle: seconds to wait after the last connection before reading RSS.
    #[arg(long, default_value_t = 1.0)]
    settle_secs: f64,
    /// Broker pid, or comma-separated pids (one per cluster node): RSS and CPU readings
    /// from /proc, summed over the pids.
    #[arg(long, value_delimiter = ',')]
    broker_pid: Vec<u32>,
    /// Port of the cluster's redis-server on 127.0.0.1: its CPU, commands, network bytes
    /// and memory over the measured window, from `INFO` (one extra client, two commands).
    #[arg(long)]
    redis_port: Option<u16>,
    /// stream: connections per user ("tabs"). Tab 0 sends the turns; the others
    /// `chat.join` the user's session before the turns start and read every turn too
    /// (their latency is reported apart: in a cluster they sit on other nodes).
    #[arg(long, default_value_t = 1)]
    tabs: usize,
    /// Fake agent pid: its CPU time.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// Runtime worker threads (1 = current-thread runtime, the default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Source addresses 127.0.0.<base>..<base+k-1> to spread connections over
    /// (0 = automatic: one per 4,000 connections; 1 with base 1 = let the kernel choose).
    #[arg(long, default_value_t = 0)]
    src_ips: usize,
    /// First host byte of the source addresses.
    #[arg(long, default_value_t = 1)]
    src_ip_base: u8,
    /// stream: spread the users' first turns evenly over this many milliseconds
    /// (user i starts i/C of it late) instead of starting all in the same instant;
    /// with a paced agent, one pace period keeps the users' deltas out of phase, as
    /// independent real users would be. 0 = all at once (the worst-case burst).
    #[arg(long, default_value_t = 0.0)]
    start_spread_ms: f64,
    /// Seconds one turn may take before it counts as an error.
    #[arg(long, default_value_t = 60.0)]
    turn_timeout_secs: f64,
    /// Seconds the TCP connect + handshake + welcome may take.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout_secs: f64,
    /// Hard limit on the whole scenario, in seconds.
    #[arg(long, default_value_t = 900.0)]
    max_secs: f64,
    /// connect: send `token=<prefix><i>` (ClawSocket with auth on); empty = no token.
    #[arg(long, default_value = "tok")]
    token_prefix: String,
    /// Add a token to the URL in every scenario (connect always adds one).
    #[arg(long)]
    with_token: bool,
    /// Group id for fanout.
    #[arg(long, default_value = "g1")]
    group: String,
    /// Prefix of the senderIds (u<i> by default) so runs do not share sessions.
    #[arg(long, default_value = "u")]
    sender_prefix: String,
    /// Free-form label copied into the report.
    #[arg(long)]
    label: Option<String>,
    /// Write the JSON report to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Exit with status 1 when any error was counted (and 3 when incomplete).
    #[arg(long)]
    fail_on_error: bool,
    /// Do not print the JSON on stdout (only the table and --json FILE).
    #[arg(long)]
    quiet_json: bool,
}

// ---------------------------------------------------------------- shared state

struct Cfg {
    args: Args,
    run_id: String,
    src: Vec<Ipv4Addr>,
    /// Each node's address and URL with a '?' or '&' ready for more query parameters.
    nodes: Vec<(SocketAddr, String)>,
    errors: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<String>>,
    lat: Shards,
    ttfd: Shards,
    /// stream --tabs: the latency of the deltas the other tabs (not the sender's) got.
    lat_tabs: Shards,
    deltas: AtomicU64,
    /// stream --tabs: deltas the other tabs got (included in `deltas`).
    tab_deltas: AtomicU64,
    out_of_order: AtomicU64,
    no_stamp: AtomicU64,
}

impl Cfg {
    fn error(&self, kind: &str, sample: Option<&str>) {
        *self.errors.lock().unwrap().entry(kind.to_string()).or_insert(0) += 1;
        if let Some(s) = sample {
            let mut v = self.samples.lock().unwrap();
            if v.len() < 8 {
                v.push(format!("{kind}: {}", truncate(s, 400)));
            }
        }
    }
    fn error_total(&self) -> u64 {
        self.errors.lock().unwrap().values().sum()
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    format!("{}…", &s[..i])
}

/// Histograms split in a few mutex-guarded shards (one per worker thread or so);
/// tasks record into a local Vec and flush it once per turn.
struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new(n: usize) -> Self {
        Shards((0..n.max(1)).map(|_| Mutex::new(Histogram::new(3).unwrap())).collect())
    }
    fn flush(&self, key: usize, vals: &mut Vec<u64>) {
        if vals.is_empty() {
            return;
        }
        let mut h = self.0[key % self.0.len()].lock().unwrap();
        for &v in vals.iter() {
            let _ = h.record(v.max(1));
        }
        vals.clear();
    }
    fn merged(&self) -> Histogram<u64> {
        let mut out = Histogram::new(3).unwrap();
        for s in &self.0 {
            let _ = out.add(&*s.lock().unwrap());
        }
        out
    }
}

/// p50/p90/p99/max of a nanosecond histogram, in milliseconds (null when empty).
fn summary_ms(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 1e6 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": ms(h.mean() as u64),
    })
}

// ---------------------------------------------------------------- frames

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

enum Kind {
    Stream { stamp: Option<u64>, seq: Option<u64> },
    Response,
    Error,
    Joined,
    Other,
}

/// Classify a ClawSocket frame. The hot one, chat.stream, is recognized without a
/// full JSON parse (the stamp and `seq` are read from the raw text).
fn classify_claw(text: &str) -> (Kind, Option<String>) {
    let b = text.as_bytes();
    if memfind(b, b"\"type\":\"chat.stream\"").is_some() {
        return (Kind::Stream { stamp: find_stamp(b), seq: raw_u64(b, b"\"seq\":") }, None);
    }
    match serde_json::from_str::<Frame>(text) {
        Ok(f) => match f.ty.as_ref() {
            "chat.stream" => (Kind::Stream { stamp: find_stamp(b), seq: raw_u64(b, b"\"seq\":") }, None),
            "chat.response" => (Kind::Response, None),
            "chat.error" => (Kind::Error, Some(f.code.map(|c| c.into_owned()).unwrap_or_else(|| "none".into()))),
            "chat.joined" => (Kind::Joined, None),
            _ => (Kind::Other, None),
        },
        Err(_) => (Kind::Error, Some("unparsable_frame".into())),
    }
}

fn raw_u64(b: &[u8], key: &[u8]) -> Option<u64> {
    let i = memfind(b, key)? + key.len();
    let mut v = 0u64;
    let mut any = false;
    for &c in b[i..].iter().skip_while(|c| **c == b' ') {
        if c.is_ascii_digit() {
            v = v * 10 + (c - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

fn text_of(m: Message) -> Option<String> {
    match m {
        Message::Text(t) => Some(t.as_str().to_string()),
        Message::Binary(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------- connecting

type Ws = WebSocketStream<TcpStream>;

fn ws_config(big: bool) -> WebSocketConfig {
    let rb = if big { 16 * 1024 } else { 4096 };
    WebSocketConfig::default().read_buffer_size(rb).write_buffer_size(0)
}

/// TCP connect (from a spread source address when configured), WebSocket
/// handshake, then wait for the welcome frame. Returns the stream and the time
/// from the start of the TCP connect to the welcome frame.
async fn open(
    cfg: &Cfg,
    i: usize,
    node: usize,
    sender: &str,
    token: bool,
    big: bool,
) -> Result<(Ws, Duration), (String, Option<String>)> {
    let t0 = Instant::now();
    let (addr, url_base) = &cfg.nodes[node % cfg.nodes.len()];
    let fut = async {
        let sock = TcpSocket::new_v4().map_err(|e| (io_kind("socket", &e), Some(e.to_string())))?;
        if !cfg.src.is_empty() {
            let ip = cfg.src[i % cfg.src.len()];
            set_bind_no_port(&sock);
            sock.bind(SocketAddr::new(IpAddr::V4(ip), 0)).map_err(|e| (io_kind("bind", &e), Some(e.to_string())))?;
        }
        let tcp = sock.connect(*addr).await.map_err(|e| (io_kind("tcp_connect", &e), Some(e.to_string())))?;
        let _ = tcp.set_nodelay(true);
        let mut url = format!("{url_base}senderId={sender}");
        if token && !cfg.args.token_prefix.is_empty() {
            url.push_str(&format!("&token={}{}", cfg.args.token_prefix, i));
        }
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config(big)))
            .await
            .map_err(|e| ("ws_handshake".to_string(), Some(e.to_string())))?;
        // Welcome frame.
        loop {
            match ws.next().await {
                Some(Ok(m)) => {
                    let Some(text) = text_of(m) else { continue };
                    match cfg.args.target {
                        Target::Bare => {
                            if text == "welcome" {
                                break;
                            }
                            return Err(("unexpected_welcome".to_string(), Some(text)));
                        }
                        Target::Clawsocket => match classify_claw(&text) {
                            (Kind::Response, _) => break,
                            (Kind::Error, code) => {
                                return Err((format!("welcome_error:{}", code.unwrap_or_default()), Some(text)))
                            }
                            _ => return Err(("unexpected_welcome".to_string(), Some(text))),
                        },
                    }
                }
                Some(Err(e)) => return Err(("closed_before_welcome".to_string(), Some(e.to_string()))),
                None => return Err(("closed_before_welcome".to_string(), None)),
            }
        }
        Ok(ws)
    };
    match tokio::time::timeout(Duration::from_secs_f64(cfg.args.connect_timeout_secs), fut).await {
        Ok(Ok(ws)) => Ok((ws, t0.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(("connect_timeout".to_string(), None)),
    }
}

fn io_kind(what: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => format!("{what}:too_many_open_files"),
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => format!("{what}:no_free_port"),
        Some(libc::ECONNREFUSED) => format!("{what}:refused"),
        Some(libc::ECONNRESET) => format!("{what}:reset"),
        _ => what.to_string(),
    }
}

/// IP_BIND_ADDRESS_NO_PORT: with a bound source address, pick the port at connect
/// time per 4-tuple instead of at bind time (more ports per source address).
fn set_bind_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            24, /* IP_BIND_ADDRESS_NO_PORT */
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Close handshake: send Close (1000), then read until the server's Close reply
/// or the end of the stream (bounded by 2 s). Returns the code of the server's
/// Close frame, if one came.
async fn close(mut ws: Ws) -> Option<u16> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let fut = async {
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.ok()?;
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return Some(f.map(|f| u16::from(f.code)).unwrap_or(1005)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten();
    if std::env::var_os("LOADGEN_DEBUG_CLOSE").is_some() {
        eprintln!("loadgen: server close reply {code:?}");
    }
    code
}

/// Spawn `n` tasks at `rate` per second; `f(i)` builds task i.
async fn ramp<F, Fut, T>(n: usize, rate: f64, mut f: F) -> Vec<tokio::task::JoinHandle<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut handles = Vec::with_capacity(n);
    let start = Instant::now();
    let rate = if rate <= 0.0 { f64::INFINITY } else { rate };
    while handles.len() < n {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(n);
        while handles.len() < due {
            let i = handles.len();
            handles.push(tokio::spawn(f(i)));
        }
        if handles.len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    handles
}

// ---------------------------------------------------------------- readings

#[derive(Clone)]
struct CpuSnap {
    broker: Option<f64>,
    agent: Option<f64>,
    me: f64,
    at: Instant,
    /// (busy, total) jiffies per CPU from /proc/stat.
    cpus: Vec<(u64, u64)>,
    /// The redis-server's `INFO` (cluster targets).
    redis: Option<HashMap<String, String>>,
}

fn cpu_snap(a: &Args) -> CpuSnap {
    CpuSnap {
        broker: sum_over(&a.broker_pid, cpu_secs),
        agent: a.agent_pid.and_then(cpu_secs),
        me: self_cpu_secs(),
        at: Instant::now(),
        cpus: cpu_jiffies(),
        redis: a.redis_port.and_then(redis_info),
    }
}

/// The sum of `read` over `pids` (None without pids or when one cannot be read).
fn sum_over<T: std::iter::Sum<T>>(pids: &[u32], read: fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| read(pid)).sum()
}

/// `INFO all` of the redis-server on 127.0.0.1:`port`, as field → value (None when it
/// does not answer). A plain RESP inline command on a short-lived connection.
fn redis_info(port: u16) -> Option<HashMap<String, String>> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"INFO all\r\n").ok()?;
    // The answer is one bulk string: `$<len>\r\n<body>\r\n`.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (start, len) = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(eol) = memfind(&buf, b"\r\n") {
            let len: usize = std::str::from_utf8(buf.get(1..eol)?).ok()?.parse().ok()?;
            if buf.len() >= eol + 2 + len {
                break (eol + 2, len);
            }
        }
    };
    let body = String::from_utf8_lossy(&buf[start..start + len]);
    Some(
        body.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// A numeric `INFO` field; for `cmdstat_*` lines (`calls=..,usec=..`), their `calls`.
fn info_f64(info: &HashMap<String, String>, field: &str) -> Option<f64> {
    let v = info.get(field)?;
    let v = v.strip_prefix("calls=").map_or(v.as_str(), |rest| rest.split(',').next().unwrap_or(""));
    v.parse().ok()
}

/// What the redis-server did between two snapshots: CPU (its own getrusage, as
/// `INFO` gives it), commands by name (those run inside scripts included), network
/// bytes, each per delta when there were deltas, and its memory at the end.
fn redis_report(r0: &HashMap<String, String>, r1: &HashMap<String, String>, wall: f64, deltas: u64) -> Value {
    let diff = |f: &str| info_f64(r1, f).unwrap_or(0.0) - info_f64(r0, f).unwrap_or(0.0);
    let per_delta = |x: f64| if deltas > 0 { Value::from(round3(x / deltas as f64)) } else { Value::Null };
    let cpu = diff("used_cpu_sys") + diff("used_cpu_user");
    let mut commands = BTreeMap::new();
    for key in r1.keys().filter(|k| k.starts_with("cmdstat_")) {
        let calls = diff(key);
        if calls > 0.0 {
            commands.insert(key["cmdstat_".len()..].to_string(), calls as u64);
        }
    }
    let total_commands = diff("total_commands_processed");
    let (net_in, net_out) = (diff("total_net_input_bytes"), diff("total_net_output_bytes"));
    json!({
        "cpu_s": round3(cpu),
        "cores": round3(cpu / wall),
        "cpu_us_per_delta": per_delta(cpu * 1e6),
        "commands": commands,
        "commands_processed": total_commands as u64,
        "commands_per_delta": per_delta(total_commands),
        "commands_per_sec": round3(total_commands / wall),
        "net_in_bytes": net_in as u64,
        "net_out_bytes": net_out as u64,
        "net_in_bytes_per_delta": per_delta(net_in),
        "net_out_bytes_per_delta": per_delta(net_out),
        "used_memory_bytes": info_f64(r1, "used_memory").map(|v| v as u64),
        "rss_bytes": info_f64(r1, "used_memory_rss").map(|v| v as u64),
    })
}

/// CPU seconds used between two snapshots, per process, with µs per delta and
/// the share of one core.
fn cpu_report(a: &Args, s0: &CpuSnap, s1: &CpuSnap, deltas: u64) -> Value {
    let wall = (s1.at - s0.at).as_secs_f64().max(1e-9);
    let one = |pid: Value, c0: Option<f64>, c1: Option<f64>| -> Value {
        match (c0, c1) {
            (Some(x), Some(y)) => {
                let cpu = y - x;
                json!({
                    "pid": pid,
                    "cpu_s": round3(cpu),
                    "cores": round3(cpu / wall),
                    "cpu_us_per_delta": if deltas > 0 { Value::from(round3(cpu * 1e6 / deltas as f64)) } else { Value::Null },
                })
            }
            _ => Value::Null,
        }
    };
    // The whole machine: how busy each CPU was, and how much of that was neither
    // the broker, the agent nor this load generator (other users of the box).
    let per_cpu: Vec<f64> = s0
        .cpus
        .iter()
        .zip(s1.cpus.iter())
        .map(|(x, y)| {
            let total = y.1.saturating_sub(x.1).max(1) as f64;
            round3(y.0.saturating_sub(x.0) as f64 / total)
        })
        .collect();
    let busy: f64 = per_cpu.iter().sum();
    let redis = match (&s0.redis, &s1.redis) {
        (Some(r0), Some(r1)) => redis_report(r0, r1, wall, deltas),
        _ => Value::Null,
    };
    let redis_cpu = redis["cpu_s"].as_f64().map(|cpu| (cpu, 0.0));
    let ours = [s1.broker.zip(s0.broker), s1.agent.zip(s0.agent), Some((s1.me, s0.me)), redis_cpu]
        .iter()
        .flatten()
        .map(|(y, x)| y - x)
        .sum::<f64>()
        / wall;
    json!({
        "wall_s": round3(wall),
        "machine": {
            "busy_per_cpu": per_cpu,
            "busy_cores": round3(busy),
            "others_cores": round3((busy - ours).max(0.0)),
        },
        "broker": one(json!(a.broker_pid), s0.broker, s1.broker),
        "agent": one(json!(a.agent_pid), s0.agent, s1.agent),
        "loadgen": one(json!(std::process::id()), Some(s0.me), Some(s1.me)),
        "redis": redis,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The brokers' RSS, summed over the nodes.
fn broker_rss(a: &Args) -> Option<u64> {
    sum_over(&a.broker_pid, rss_bytes)
}

/// The redis-server's `used_memory` (cluster targets).
fn redis_memory(a: &Args) -> Option<u64> {
    a.redis_port.and_then(redis_info).and_then(|info| info_f64(&info, "used_memory")).map(|v| v as u64)
}

// ---------------------------------------------------------------- main

fn main() {
    let args = Args::parse();
    if args.target == Target::Bare
        && matches!(args.scenario, Scenario::Stream | Scenario::Fanout)
        && args.deltas.is_none()
    {
        eprintln!("loadgen: --target bare needs --deltas (the relay's frames carry no end-of-turn marker)");
        std::process::exit(2);
    }
    if args.tabs > 1 && (args.target == Target::Bare || args.scenario != Scenario::Stream) {
        eprintln!("loadgen: --tabs is for the stream scenario against ClawSocket (the bare relay has no sessions)");
        std::process::exit(2);
    }
    // File descriptors: one per connection plus a margin.
    let tabs = if args.scenario == Scenario::Stream { args.tabs.max(1) } else { 1 };
    let need = (args.connections * tabs) as u64 + if args.scenario == Scenario::Fanout { 1 } else { 0 } + 64;
    let (soft, hard) = clawsocket_bench::raise_nofile();
    if need > soft {
        eprintln!(
            "loadgen: {} connections need about {need} open files, but this process may hold only {soft} \
             (RLIMIT_NOFILE soft {soft}, hard {hard}; the hard limit cannot be raised here).\n\
             Run several loadgen processes with -n <= {} each (give them distinct --sender-prefix and \
             --src-ip-base so their source ports do not collide).",
            args.connections,
            soft.saturating_sub(64)
        );
        std::process::exit(2);
    }
    let rt = clawsocket_bench::runtime(args.threads).expect("runtime");
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs are supported")?;
    let (hostport, _path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hp = if hostport.starts_with("localhost") {
        hostport.replacen("localhost", "127.0.0.1", 1)
    } else {
        hostport.to_string()
    };
    let addr: SocketAddr =
        hp.parse().map_err(|_| format!("cannot parse host:port {hostport:?} (use a numeric address)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr}: this benchmark only targets loopback addresses"));
    }
    let base = if url.contains('?') { format!("{url}&") } else { format!("{url}?") };
    Ok((addr, base))
}

async fn run(args: Args) -> i32 {
    let nodes = match args.url.split(',').map(parse_url).collect::<Result<Vec<_>, _>>() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return 2;
        }
    };
    // One source address per 4,000 connections: the kernel's search for a free
    // ephemeral port (connect() without bind) slows down sharply as the range fills
    // (measured here: 19.9k connections from 127.0.0.1 alone gave handshake p90 3 s
    // of loadgen system time; spread over 4 addresses, p99 3.6 ms).
    let n_src = if args.src_ips == 0 { args.connections.div_ceil(4_000).clamp(1, 200) } else { args.src_ips };
    let src: Vec<Ipv4Addr> = if n_src <= 1 && args.src_ip_base == 1 {
        Vec::new()
    } else {
        (0..n_src).map(|k| Ipv4Addr::new(127, 0, 0, args.src_ip_base.wrapping_add(k as u8))).collect()
    };
    let shards = args.threads.max(1) * 2;
    let cfg = Arc::new(Cfg {
        run_id: format!("{:x}", unix_nanos()),
        src,
        nodes,
        errors: Mutex::new(BTreeMap::new()),
        samples: Mutex::new(Vec::new()),
        lat: Shards::new(shards),
        ttfd: Shards::new(shards),
        lat_tabs: Shards::new(shards),
        deltas: AtomicU64::new(0),
        tab_deltas: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        no_stamp: AtomicU64::new(0),
        args: args.clone(),
    });
    eprintln!(
        "loadgen: {:?} against {:?} {} n={} turns={} deltas={:?} rate={}/s threads={} src={:?}",
        args.scenario,
        args.target,
        args.url,
        args.connections,
        args.turns,
        args.deltas,
        args.rate,
        args.threads,
        cfg.src
    );
    let started_unix = unix_nanos() / 1_000_000_000;
    let deadline = Duration::from_secs_f64(args.max_secs);
    let body = async {
        match args.scenario {
            Scenario::Idle => idle(cfg.clone()).await,
            Scenario::Stream => stream(cfg.clone()).await,
            Scenario::Fanout => fanout(cfg.clone()).await,
            Scenario::Connect => connect(cfg.clone()).await,
        }
    };
    let (mut report, complete) = match tokio::time::timeout(deadline, body).await {
        Ok(r) => r,
        Err(_) => {
            cfg.error("scenario_deadline", Some(&format!("scenario did not end within --max-secs {}", args.max_secs)));
            (json!({}), false)
        }
    };
    let errors = cfg.error_total();
    let obj = report.as_object_mut().unwrap();
    obj.insert("tool".into(), json!("clawsocket-bench loadgen"));
    obj.insert("scenario".into(), json!(format!("{:?}", args.scenario).to_lowercase()));
    obj.insert("target".into(), json!(format!("{:?}", args.target).to_lowercase()));
    obj.insert("label".into(), json!(args.label));
    obj.insert("url".into(), json!(args.url));
    obj.insert("started_unix".into(), json!(started_unix));
    obj.insert(
        "params".into(),
        json!({
            "connections": args.connections, "turns": args.turns, "deltas": args.deltas,
            "rate": args.rate, "threads": args.threads, "hold_secs": args.hold_secs,
            "nodes": cfg.nodes.len(), "tabs": args.tabs,
            "start_spread_ms": args.start_spread_ms,
            "src_ips": cfg.src.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        }),
    );
    obj.insert("errors".into(), json!(errors));
    obj.insert("error_kinds".into(), json!(*cfg.errors.lock().unwrap()));
    obj.insert("error_samples".into(), json!(*cfg.samples.lock().unwrap()));
    obj.insert("complete".into(), json!(complete));
    obj.insert("loadgen_max_rss_bytes".into(), json!(self_max_rss_bytes()));
    print_table(&report);
    let text = serde_json::to_string_pretty(&report).unwrap();
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    if !args.quiet_json {
        println!("{text}");
    }
    if args.fail_on_error {
        if errors > 0 {
            return 1;
        }
        if !complete {
            return 3;
        }
    }
    0
}

// ---------------------------------------------------------------- idle

async fn idle(cfg: Arc<Cfg>) -> (Value, bool) {
    let a = &cfg.args;
    let rss0 = broker_rss(a);
    let redis0 = redis_memory(a);
    let s0 = cpu_snap(a);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ok = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let hs = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let t_open = Instant::now();
    let handles = ramp(a.connections, a.rate, |i| {
        let cfg = cfg.clone();
        let mut stop = stop_rx.clone();
        let (ok, settled, dropped, hs) = (ok.clone(), settled.clone(), dropped.clone(), hs.clone());
        async move {
            let sender = format!("{}{}", cfg.args.sender_prefix, i);
            let r = open(&cfg, i, i, &sender, cfg.args.with_token, false).await;
            settled.fetch_add(1, Ordering::Relaxed);
            let (mut ws, d) = match r {
                Ok(x) => x,
                Err((k, s)) => {
                    cfg.error(&k, s.as_deref());
                    return;
                }
            };
            let _ = hs.lock().unwrap().record(d.as_nanos() as u64);
            ok.fetch_add(1, Ordering::Relaxed);
            // Hold: keep reading so the server's pings get their pongs.
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => {
                            if !*stop.borrow() {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                cfg.error("dropped_while_idle", None);
                            }
                            return;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            close(ws).await;
        }
    })
    .await;
    while settled.load(Ordering::Relaxed) < a.connections {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_secs = t_open.elapsed().as_secs_f64();
    let n_ok = ok.load(Ordering::Relaxed);
    eprintln!("loadgen: {n_ok}/{} connections open in {open_secs:.1}s; holding {}s", a.connections, a.hold_secs);
    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
    let rss1 = broker_rss(a);
    tokio::time::sleep(Duration::from_secs_f64(a.hold_secs)).await;
    let rss2 = broker_rss(a);
    let redis2 = redis_memory(a);
    let per_node: Vec<Option<u64>> = a.broker_pid.iter().map(|&pid| rss_bytes(pid)).collect();
    let s1 = cpu_snap(a);
    let still = n_ok as u64 - dropped.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let rss3 = broker_rss(a);
    let per = |after: Option<u64>| match (rss0, after) {
        (Some(b), Some(x)) if n_ok > 0 => json!(((x as f64 - b as f64) / n_ok as f64).round()),
        _ => Value::Null,
    };
    let report = json!({
        "connections": {"requested": a.connections, "ok": n_ok, "held_to_end": still, "open_secs": round3(open_secs)},
        "handshake_ms": summary_ms(&hs.lock().unwrap()),
        "broker_rss_bytes": {"before": rss0, "after_connect": rss1, "after_hold": rss2, "after_close": rss3},
        "broker_rss_after_hold_per_node": per_node,
        "redis_used_memory_bytes": {"before": redis0, "after_hold": redis2},
        "bytes_per_connection": per(rss2),
        "bytes_per_connection_after_connect": per(rss1),
        "cpu": cpu_report(a, &s0, &s1, 0),
    });
    (report, n_ok == a.connections && still == n_ok as u64)
}

// ---------------------------------------------------------------- stream

fn send_frame(cfg: &Cfg, i: usize, t: usize, group: bool) -> String {
    match cfg.args.target {
        Target::Bare => "go".to_string(),
        Target::Clawsocket => {
            let mid = format!("{}-{}-{}", cfg.run_id, i, t);
            if group {
                json!({"type":"chat.send","content":"go","chatType":"group","groupId":cfg.args.group,"messageId":mid})
                    .to_string()
            } else {
                json!({"type":"chat.send","content":"go","messageId":mid}).to_string()
            }
        }
    }
}

/// Outcome of reading one turn's frames.
struct TurnOut {
    deltas: u64,
    ok: bool,
}

/// Read frames until the end of one turn. `lat` collects per-delta relay
/// latencies (ns), `arrivals` (when given) the receive times for spread.
async fn read_turn(
    cfg: &Cfg,
    ws: &mut Ws,
    sent: Instant,
    ttfd: Option<&mut Vec<u64>>,
    lat: &mut Vec<u64>,
    mut arrivals: Option<&mut Vec<u64>>,
    count_missing_stamps: bool,
) -> TurnOut {
    let expect = cfg.args.deltas;
    let mut n: u64 = 0;
    let mut last_seq: u64 = 0;
    let mut ttfd = ttfd;
    let fut = async {
        loop {
            let m = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    cfg.error("connection_lost", Some(&e.to_string()));
                    return false;
                }
                None => {
                    cfg.error("connection_lost", None);
                    return false;
                }
            };
            let now_ns = unix_nanos();
            let Some(text) = text_of(m) else { continue };
            let (kind, code) = match cfg.args.target {
                Target::Bare => {
                    if text.starts_with("error") {
                        (Kind::Error, Some("relay_error".to_string()))
                    } else if text == "joined" {
                        (Kind::Joined, None)
                    } else {
                        (Kind::Stream { stamp: find_stamp(text.as_bytes()), seq: None }, None)
                    }
                }
                Target::Clawsocket => classify_claw(&text),
            };
            match kind {
                Kind::Stream { stamp, seq } => {
                    n += 1;
                    if n == 1 {
                        if let Some(v) = ttfd.as_mut() {
                            v.push(sent.elapsed().as_nanos() as u64);
                        }
                    }
                    if let Some(s) = seq {
                        if s != last_seq + 1 {
                            cfg.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        last_seq = s;
                    }
                    match stamp {
                        Some(st) => lat.push(now_ns.saturating_sub(st)),
                        None if count_missing_stamps => {
                            cfg.no_stamp.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {}
                    }
                    if let Some(a) = arrivals.as_mut() {
                        a.push(now_ns);
                    }
                    if cfg.args.target == Target::Bare && Some(n as usize) == expect {
                        return true;
                    }
                }
                Kind::Response => {
                    if let Some(d) = expect {
                        if n as usize != d {
                            cfg.error(
                                "delta_count",
                                Some(&format!("expected {d} chat.stream frames, got {n}; then {text}")),
                            );
                        }
                    }
                    return true;
                }
                Kind::Error => {
                    cfg.error(&format!("chat.error:{}", code.unwrap_or_default()), Some(&text));
                    return false;
                }
                Kind::Joined | Kind::Other => {}
            }
        }
    };
    let ok = match tokio::time::timeout(Duration::from_secs_f64(cfg.args.turn_timeout_secs), fut).await {
        Ok(ok) => ok,
        Err(_) => {
            cfg.error("turn_timeout", Some(&format!("{n} deltas received before the timeout")));
            false
        }
    };
    TurnOut { deltas: n, ok }
}

async fn stream(cfg: Arc<Cfg>) -> (Value, bool) {
    let a = cfg.args.clone();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<bool>();
    let (go_tx, go_rx) = watch::channel(false);
    let hs = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let turns_ok = Arc::new(AtomicU64::new(0));
    let tab_turns_ok = Arc::new(AtomicU64::new(0));
    let rss0 = broker_rss(&a);
    let handles = ramp(a.connections, a.rate, |i| {
        let cfg = cfg.clone();
        let ready = ready_tx.clone();
        let mut go = go_rx.clone();
        let hs = hs.clone();
        let turns_ok = turns_ok.clone();
        let tab_turns_ok = tab_turns_ok.clone();
        async move {
            let sender = format!("{}{}", cfg.args.sender_prefix, i);
            let (mut ws, d) = match open(&cfg, i, i, &sender, cfg.args.with_token, true).await {
                Ok(x) => x,
                Err((k, s)) => {
                    cfg.error(&k, s.as_deref());
                    let _ = ready.send(false);
                    return;
                }
            };
            let _ = hs.lock().unwrap().record(d.as_nanos() as u64);
            // The user's other tabs (on the next nodes), subscribed before any turn.
            let mut tabs = Vec::new();
            for tab in 1..cfg.args.tabs {
                let opened = match open(&cfg, i, i + tab, &sender, cfg.args.with_token, true).await {
                    Ok((mut ws, _)) => join(&cfg, &mut ws, false).await.map(|()| ws),
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(ws) => tabs.push(ws),
                    Err((k, s)) => {
                        cfg.error(&format!("tab_{k}"), s.as_deref());
                        let _ = ready.send(false);
                        return;
                    }
                }
            }
            let _ = ready.send(true);
            while !*go.borrow_and_update() {
                if go.changed().await.is_err() {
                    return;
                }
            }
            if cfg.args.start_spread_ms > 0.0 {
                let late = cfg.args.start_spread_ms * i as f64 / cfg.args.connections as f64;
                tokio::time::sleep(Duration::from_secs_f64(late / 1000.0)).await;
            }
            let sending = async {
                let mut lat = Vec::with_capacity(cfg.args.deltas.unwrap_or(64) + 8);
                let mut ttfd = Vec::with_capacity(1);
                for t in 0..cfg.args.turns {
                    let frame = send_frame(&cfg, i, t, false);
                    let sent = Instant::now();
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        cfg.error("send_failed", Some(&e.to_string()));
                        break;
                    }
                    let out = read_turn(&cfg, &mut ws, sent, Some(&mut ttfd), &mut lat, None, true).await;
                    cfg.deltas.fetch_add(out.deltas, Ordering::Relaxed);
                    cfg.lat.flush(i, &mut lat);
                    cfg.ttfd.flush(i, &mut ttfd);
                    if !out.ok {
                        break;
                    }
                    turns_ok.fetch_add(1, Ordering::Relaxed);
                }
                close(ws).await;
            };
            // The other tabs read every turn, in this same task.
            let following = futures_util::future::join_all(tabs.into_iter().map(|mut ws| {
                let (cfg, tab_turns_ok) = (&cfg, &tab_turns_ok);
                async move {
                    let mut lat = Vec::with_capacity(cfg.args.deltas.unwrap_or(64) + 8);
                    for _ in 0..cfg.args.turns {
                        let out = read_turn(cfg, &mut ws, Instant::now(), None, &mut lat, None, true).await;
                        cfg.deltas.fetch_add(out.deltas, Ordering::Relaxed);
                        cfg.tab_deltas.fetch_add(out.deltas, Ordering::Relaxed);
                        cfg.lat_tabs.flush(i, &mut lat);
                        if !out.ok {
                            break;
                        }
                        tab_turns_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    close(ws).await;
                }
            }));
            tokio::join!(sending, following);
        }
    })
    .await;
    drop(ready_tx);
    let mut n_ok = 0;
    let mut n_seen = 0;
    while n_seen < a.connections {
        match ready_rx.recv().await {
            Some(ok) => {
                n_seen += 1;
                n_ok += ok as usize;
            }
            None => break,
        }
    }
    eprintln!("loadgen: {n_ok}/{} users connected; starting {} turns each", a.connections, a.turns);
    let rss1 = broker_rss(&a);
    let s0 = cpu_snap(&a);
    let t0 = Instant::now();
    let _ = go_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s1 = cpu_snap(&a);
    let rss2 = broker_rss(&a);
    let deltas = cfg.deltas.load(Ordering::Relaxed);
    let tok = turns_ok.load(Ordering::Relaxed);
    let want_turns = (a.connections * a.turns) as u64;
    let (tab_turns, want_tab_turns) = (tab_turns_ok.load(Ordering::Relaxed), want_turns * (a.tabs.max(1) as u64 - 1));
    let sender_lat = cfg.lat.merged();
    let tabs_lat = cfg.lat_tabs.merged();
    let mut lat = sender_lat.clone();
    let _ = lat.add(&tabs_lat);
    let mut report = json!({
        "connections": {"requested": a.connections, "ok": n_ok},
        "handshake_ms": summary_ms(&hs.lock().unwrap()),
        "turns": {"requested": want_turns, "ok": tok},
        "deltas": deltas,
        "duration_s": round3(secs),
        "deltas_per_sec": (deltas as f64 / secs.max(1e-9)).round(),
        "ttfd_ms": summary_ms(&cfg.ttfd.merged()),
        "latency_ms": summary_ms(&lat),
        "latency_note": if lat.is_empty() { json!("n/a: the deltas carried no agent time stamp (e.g. the echo agent)") } else { Value::Null },
        "deltas_without_stamp": cfg.no_stamp.load(Ordering::Relaxed),
        "seq_out_of_order": cfg.out_of_order.load(Ordering::Relaxed),
        "broker_rss_bytes": {"before_connect": rss0, "before_turns": rss1, "after": rss2},
        "cpu": cpu_report(&a, &s0, &s1, deltas),
    });
    if a.tabs > 1 {
        // `deltas` counts every tab's; the agent sent the sender tab's.
        let agent_deltas = deltas - cfg.tab_deltas.load(Ordering::Relaxed);
        let more = json!({
            "tabs": a.tabs,
            "tab_turns": {"requested": want_tab_turns, "ok": tab_turns},
            "agent_deltas": agent_deltas,
            "agent_deltas_per_sec": (agent_deltas as f64 / secs.max(1e-9)).round(),
            "latency_sender_tab_ms": summary_ms(&sender_lat),
            "latency_other_tabs_ms": summary_ms(&tabs_lat),
        });
        if let (Some(r), Some(m)) = (report.as_object_mut(), more.as_object()) {
            r.extend(m.clone());
        }
    }
    (report, tok == want_turns && tab_turns == want_tab_turns)
}

// ---------------------------------------------------------------- fanout

/// Joins the group (`group`) or the connection's own direct session, and waits for
/// the answer.
async fn join(cfg: &Cfg, ws: &mut Ws, group: bool) -> Result<(), (String, Option<String>)> {
    let frame = match cfg.args.target {
        Target::Bare => "join".to_string(),
        Target::Clawsocket if group => json!({"type":"chat.join","groupId":cfg.args.group}).to_string(),
        Target::Clawsocket => json!({"type":"chat.join"}).to_string(),
    };
    ws.send(Message::text(frame)).await.map_err(|e| ("send_failed".to_string(), Some(e.to_string())))?;
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(m)) => {
                    let Some(text) = text_of(m) else { continue };
                    match cfg.args.target {
                        Target::Bare if text == "joined" => return Ok(()),
                        Target::Bare => {}
                        Target::Clawsocket => match classify_claw(&text) {
                            (Kind::Joined, _) => return Ok(()),
                            (Kind::Error, code) => {
                                return Err((format!("join_error:{}", code.unwrap_or_default()), Some(text)))
                            }
                            _ => {}
                        },
                    }
                }
                _ => return Err(("closed_before_joined".to_string(), None)),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs_f64(cfg.args.connect_timeout_secs), fut).await {
        Ok(r) => r,
        Err(_) => Err(("join_timeout".to_string(), None)),
    }
}

struct MemberOut {
    /// (turn, index in turn, receive ns)
    arrivals: Vec<(u32, u32, u64)>,
    turns: usize,
}

async fn fanout(cfg: Arc<Cfg>) -> (Value, bool) {
    let a = cfg.args.clone();
    let g = a.connections;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<bool>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss0 = broker_rss(&a);
    let handles = ramp(g, a.rate, |i| {
        let cfg = cfg.clone();
        let ready = ready_tx.clone();
        let mut stop = stop_rx.clone();
        async move {
            let mut out = MemberOut { arrivals: Vec::new(), turns: 0 };
            let sender = format!("{}m{}", cfg.args.sender_prefix, i);
            let mut ws = match open(&cfg, i, i, &sender, cfg.args.with_token, true).await {
                Ok((ws, _)) => ws,
                Err((k, s)) => {
                    cfg.error(&k, s.as_deref());
                    let _ = ready.send(false);
                    return out;
                }
            };
            if let Err((k, s)) = join(&cfg, &mut ws, true).await {
                cfg.error(&k, s.as_deref());
                let _ = ready.send(false);
                return out;
            }
            let _ = ready.send(true);
            let mut lat = Vec::new();
            let mut arr = Vec::new();
            for t in 0..cfg.args.turns {
                let r = tokio::select! {
                    r = read_turn(&cfg, &mut ws, Instant::now(), None, &mut lat, Some(&mut arr), true) => Some(r),
                    _ = stop.changed() => None,
                };
                for (k, &ns) in arr.iter().enumerate() {
                    out.arrivals.push((t as u32, k as u32, ns));
                }
                arr.clear();
                cfg.lat.flush(i, &mut lat);
                match r {
                    Some(r) => {
                        cfg.deltas.fetch_add(r.deltas, Ordering::Relaxed);
                        if !r.ok {
                            break;
                        }
                        out.turns += 1;
                    }
                    None => {
                        cfg.error("member_incomplete", Some(&format!("member {i} stopped in turn {t}")));
                        break;
                    }
                }
            }
            close(ws).await;
            out
        }
    })
    .await;
    drop(ready_tx);
    let mut n_ok = 0;
    for _ in 0..g {
        match ready_rx.recv().await {
            Some(ok) => n_ok += ok as usize,
            None => break,
        }
    }
    eprintln!("loadgen: {n_ok}/{g} members joined; the sender starts {} turns", a.turns);
    let rss1 = broker_rss(&a);
    // The sender: its own connection, joined too (the bare relay needs it to see
    // the deltas; ClawSocket subscribes a sender anyway).
    let s0 = cpu_snap(&a);
    let t0 = Instant::now();
    let mut sender_ok = 0usize;
    let sender_name = format!("{}sender", a.sender_prefix);
    match open(&cfg, g, g, &sender_name, a.with_token, true).await {
        Ok((mut ws, _)) => {
            if let Err((k, s)) = join(&cfg, &mut ws, true).await {
                cfg.error(&format!("sender_{k}"), s.as_deref());
            } else {
                let mut lat = Vec::new();
                for t in 0..a.turns {
                    let frame = send_frame(&cfg, g, t, true);
                    let sent = Instant::now();
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        cfg.error("send_failed", Some(&e.to_string()));
                        break;
                    }
                    let r = read_turn(&cfg, &mut ws, sent, None, &mut lat, None, false).await;
                    lat.clear();
                    if !r.ok {
                        break;
                    }
                    sender_ok += 1;
                }
            }
            close(ws).await;
        }
        Err((k, s)) => cfg.error(&format!("sender_{k}"), s.as_deref()),
    }
    // Members get a grace period to receive the tail, then are stopped.
    let grace = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(grace);
    let mut outs = Vec::with_capacity(g);
    let mut stopped = false;
    for mut h in handles {
        loop {
            tokio::select! {
                r = &mut h => { if let Ok(o) = r { outs.push(o); } break; }
                _ = &mut grace, if !stopped => { stopped = true; let _ = stop_tx.send(true); }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let s1 = cpu_snap(&a);
    let rss2 = broker_rss(&a);
    // Spread: for each delta (turn, index), last member's receive - first member's.
    let mut first_last: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    let mut members_done = 0;
    for o in &outs {
        if o.turns == a.turns {
            members_done += 1;
        }
        for &(t, k, ns) in &o.arrivals {
            let e = first_last.entry((t, k)).or_insert((ns, ns));
            e.0 = e.0.min(ns);
            e.1 = e.1.max(ns);
        }
    }
    let mut spread = Histogram::<u64>::new(3).unwrap();
    for (f, l) in first_last.values() {
        let _ = spread.record((l - f).max(1));
    }
    let deltas = cfg.deltas.load(Ordering::Relaxed);
    let lat = cfg.lat.merged();
    let report = json!({
        "connections": {"requested": g, "ok": n_ok},
        "members_complete": members_done,
        "sender_turns_ok": sender_ok,
        "turns": {"requested": a.turns, "ok": sender_ok},
        "deltas": deltas,
        "distinct_deltas": first_last.len(),
        "duration_s": round3(secs),
        "deltas_per_sec": (deltas as f64 / secs.max(1e-9)).round(),
        "latency_ms": summary_ms(&lat),
        "latency_note": if lat.is_empty() { json!("n/a: the deltas carried no agent time stamp (e.g. the echo agent)") } else { Value::Null },
        "spread_ms": summary_ms(&spread),
        "deltas_without_stamp": cfg.no_stamp.load(Ordering::Relaxed),
        "seq_out_of_order": cfg.out_of_order.load(Ordering::Relaxed),
        "broker_rss_bytes": {"before_connect": rss0, "before_turns": rss1, "after": rss2},
        "cpu": cpu_report(&a, &s0, &s1, deltas),
    });
    (report, members_done == g && sender_ok == a.turns)
}

// ---------------------------------------------------------------- connect

async fn connect(cfg: Arc<Cfg>) -> (Value, bool) {
    let a = cfg.args.clone();
    let hs = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let ok = Arc::new(AtomicUsize::new(0));
    let s0 = cpu_snap(&a);
    let t0 = Instant::now();
    let handles = ramp(a.connections, a.rate, |i| {
        let cfg = cfg.clone();
        let hs = hs.clone();
        let ok = ok.clone();
        async move {
            let sender = format!("{}c{}", cfg.args.sender_prefix, i);
            match open(&cfg, i, i, &sender, true, false).await {
                Ok((ws, d)) => {
                    let _ = hs.lock().unwrap().record(d.as_nanos() as u64);
                    ok.fetch_add(1, Ordering::Relaxed);
                    close(ws).await;
                }
                Err((k, s)) => cfg.error(&k, s.as_deref()),
            }
        }
    })
    .await;
    let spawn_secs = t0.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s1 = cpu_snap(&a);
    let n_ok = ok.load(Ordering::Relaxed);
    let report = json!({
        "connections": {"requested": a.connections, "ok": n_ok, "failed": a.connections - n_ok},
        "duration_s": round3(secs),
        "offered_rate": round3(a.connections as f64 / spawn_secs.max(1e-9)),
        "connections_per_sec": round3(n_ok as f64 / secs.max(1e-9)),
        "handshake_ms": summary_ms(&hs.lock().unwrap()),
        "cpu": cpu_report(&a, &s0, &s1, 0),
    });
    (report, n_ok == a.connections)
}

// ---------------------------------------------------------------- table

fn print_table(r: &Value) {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
    let s = |v: &Value| -> String {
        match v {
            Value::Null => "n/a".into(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    };
    let pct = |v: &Value| -> String {
        if v.is_null() {
            return "n/a".into();
        }
        format!(
            "p50 {} p90 {} p99 {} max {} ms (n={})",
            s(&v["p50"]),
            s(&v["p90"]),
            s(&v["p99"]),
            s(&v["max"]),
            s(&v["count"])
        )
    };
    add("scenario / target", format!("{} / {}", s(&r["scenario"]), s(&r["target"])));
    add("connections ok", format!("{} of {}", s(&r["connections"]["ok"]), s(&r["connections"]["requested"])));
    if !r["handshake_ms"].is_null() {
        add("handshake", pct(&r["handshake_ms"]));
    }
    if r.get("bytes_per_connection").is_some() {
        add("broker RSS", format!("{}", r["broker_rss_bytes"]));
        add("bytes / connection", s(&r["bytes_per_connection"]));
    }
    if r.get("deltas").is_some() {
        add("turns ok", format!("{} of {}", s(&r["turns"]["ok"]), s(&r["turns"]["requested"])));
        add("deltas", s(&r["deltas"]));
        add("duration s", s(&r["duration_s"]));
        add("deltas / s", s(&r["deltas_per_sec"]));
    }
    if r.get("ttfd_ms").is_some() {
        add("time to first delta", pct(&r["ttfd_ms"]));
    }
    if r.get("latency_ms").is_some() {
        add("relay latency", pct(&r["latency_ms"]));
    }
    if r.get("latency_other_tabs_ms").is_some() {
        add("↳ sender's tab", pct(&r["latency_sender_tab_ms"]));
        add("↳ other tabs", pct(&r["latency_other_tabs_ms"]));
        add("agent deltas / s", s(&r["agent_deltas_per_sec"]));
    }
    if r.get("spread_ms").is_some() {
        add("member spread", pct(&r["spread_ms"]));
    }
    if r.get("connections_per_sec").is_some() {
        add("connections / s", format!("{} (offered {})", s(&r["connections_per_sec"]), s(&r["offered_rate"])));
    }
    for who in ["broker", "agent", "loadgen"] {
        let c = &r["cpu"][who];
        if !c.is_null() {
            add(
                &format!("{who} CPU"),
                format!("{} s ({} cores), {} µs/delta", s(&c["cpu_s"]), s(&c["cores"]), s(&c["cpu_us_per_delta"])),
            );
        }
    }
    let redis = &r["cpu"]["redis"];
    if !redis.is_null() {
        add(
            "redis-server",
            format!(
                "{} s ({} cores), {} µs/delta; {} commands/delta, in {} B/delta, out {} B/delta",
                s(&redis["cpu_s"]),
                s(&redis["cores"]),
                s(&redis["cpu_us_per_delta"]),
                s(&redis["commands_per_delta"]),
                s(&redis["net_in_bytes_per_delta"]),
                s(&redis["net_out_bytes_per_delta"])
            ),
        );
    }
    let m = &r["cpu"]["machine"];
    if !m.is_null() {
        add("machine busy", format!("per CPU {} ; not ours {} cores", m["busy_per_cpu"], s(&m["others_cores"])));
    }
    add("errors", format!("{} {}", s(&r["errors"]), r["error_kinds"]));
    add("complete", s(&r["complete"]));
    let w = lines.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    eprintln!("{}", "-".repeat(72));
    for (k, v) in lines {
        eprintln!("{k:<w$}  {v}");
    }
    if let Some(samples) = r["error_samples"].as_array() {
        for x in samples {
            eprintln!("  sample: {}", s(x));
        }
    }
    eprintln!("{}", "-".repeat(72));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lines: &str) -> HashMap<String, String> {
        lines.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn redis_report_takes_differences_per_delta() {
        let r0 = info("used_cpu_sys:1.5\nused_cpu_user:0.5\ntotal_commands_processed:10\ntotal_net_input_bytes:100\ntotal_net_output_bytes:50\ncmdstat_xadd:calls=4,usec=9,usec_per_call=2.25");
        let r1 = info("used_cpu_sys:2.0\nused_cpu_user:1.0\ntotal_commands_processed:30\ntotal_net_input_bytes:1100\ntotal_net_output_bytes:250\ncmdstat_xadd:calls=14,usec=30,usec_per_call=2.1\ncmdstat_evalsha:calls=10,usec=90,usec_per_call=9\nused_memory:4096");
        let r = redis_report(&r0, &r1, 2.0, 100);
        assert_eq!(r["cpu_s"], json!(1.0));
        assert_eq!(r["cores"], json!(0.5));
        assert_eq!(r["cpu_us_per_delta"], json!(10000.0));
        assert_eq!(r["commands"], json!({"evalsha": 10, "xadd": 10}));
        assert_eq!(r["commands_per_delta"], json!(0.2));
        assert_eq!(r["net_in_bytes_per_delta"], json!(10.0));
        assert_eq!(r["net_out_bytes_per_delta"], json!(2.0));
        assert_eq!(r["used_memory_bytes"], json!(4096));
    }

    #[test]
    fn several_urls_are_several_nodes() {
        let nodes: Vec<_> = "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws".split(',').map(parse_url).collect();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].as_ref().unwrap().0.port(), 2);
        assert_eq!(nodes[1].as_ref().unwrap().1, "ws://127.0.0.1:2/ws?");
        assert!(parse_url("ws://10.0.0.1:1/ws").is_err());
    }
}
