//! Holding up under load, floods, slow clients, bad frames and shutdown (SPEC §1 close
//! codes, §8 limits): each limit does to the client that crosses it what README
//! ("Limits and behaviour under load") says, and only to that client: a well-behaved
//! client on the same server keeps getting whole answers meanwhile.

use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::Item;
use awc::ws::{Frame, Message};
use clawsocket::config::SettingValue;
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};

use crate::support::binary::ChildServer;
use crate::support::client::{last, streamed_text, streams, Received};
use crate::support::fake_agent::{always, answer_with, slowly, FakeAgent};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::raw::RawClient;
use crate::support::{eventually, spawn_server, TestServerHandle, WsClient};

/// Close codes of SPEC §1, spelled out here so that a changed constant fails a test.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_GOING_AWAY: u16 = 1001;

fn send(content: &str, message_id: &str) -> Value {
    json!({"type": "chat.send", "content": content, "messageId": message_id})
}

/// A server whose agent is `agent` (OpenAI-compatible), with `extra` settings.
fn server_for(agent: &FakeAgent, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into()), ("agent.systemPrompt", "".into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

/// An echo server whose words come 20 ms apart, so a turn is still streaming while
/// another client misbehaves.
fn paced_echo_server(extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> = vec![("agent.echoDelayMs", 20.into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

/// Reads the rest of a turn started by `chat.send` and checks it is the whole echo answer.
async fn assert_whole_echo(client: &mut WsClient, message_id: &str, content: &str) {
    let frames = client.turn(message_id).await;
    let answer = format!("echo: {content}");
    assert_eq!(last(&frames)["type"], "chat.response", "{frames:?}");
    assert_eq!(last(&frames)["content"], answer.as_str());
    assert_eq!(streamed_text(&frames), answer, "every delta arrived");
}

// ---- limits.maxMessageBytes -------------------------------------------------------

#[actix_rt::test]
async fn a_frame_over_max_message_bytes_closes_that_connection_with_1009() {
    let server = paced_echo_server(&[("limits.maxMessageBytes", 4096.into())]);
    let (mut good, _) = WsClient::connect_welcomed(&server.ws_url("senderId=good")).await;
    let (mut big, _) = WsClient::connect_welcomed(&server.ws_url("senderId=big")).await;
    let content = "one two three four five six";
    good.send_json(send(content, "g1")).await;
    assert_eq!(good.recv().await["type"], "chat.typing", "the good turn is under way");
    let oversized = send(&"x".repeat(4096), "b1").to_string();
    big.send_text(&oversized).await;
    assert_eq!(big.closed().await, Some(CLOSE_TOO_BIG));
    assert_whole_echo(&mut good, "g1", content).await;
    assert_eq!(last(&good.chat("g2", "after").await)["content"], "echo: after");
}

#[actix_rt::test]
async fn a_fragmented_message_over_max_message_bytes_closes_with_1009() {
    let server = paced_echo_server(&[("limits.maxMessageBytes", 4096.into())]);
    let (mut good, _) = WsClient::connect_welcomed(&server.ws_url("senderId=good")).await;
    let (mut big, _) = WsClient::connect_welcomed(&server.ws_url("senderId=big")).await;
    let content = "one two three four five six";
    good.send_json(send(content, "g1")).await;
    assert_eq!(good.recv().await["type"], "chat.typing");
    // Each fragment is under the limit; together they are over it.
    let piece = bytes::Bytes::from(vec![b' '; 1500]);
    big.send_message(Message::Continuation(Item::FirstText(piece.clone()))).await;
    big.send_message(Message::Continuation(Item::Continue(piece.clone()))).await;
    big.send_message(Message::Continuation(Item::Continue(piece))).await;
    assert_eq!(big.closed().await, Some(CLOSE_TOO_BIG));
    assert_whole_echo(&mut good, "g1", content).await;
}

#[actix_rt::test]
async fn a_frame_declaring_a_huge_length_is_refused_from_its_header() {
    let server = spawn_server(&[("limits.maxMessageBytes", 4096.into())]);
    let mut raw = RawClient::connect(server.addr, "senderId=huge", 64 * 1024).await;
    assert_eq!(raw.recv_json().await["type"], "chat.response");
    // A masked text frame declaring 100 GiB (FIN + text; mask bit + 64-bit length; mask key).
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(100u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_raw(&header).await.expect("send the header");
    // Some payload, far less than declared and than maxMessageBytes × 100; the server
    // may close while it is being written.
    for _ in 0..16 {
        if raw.write_raw(&[b'a'; 32 * 1024]).await.is_err() {
            break;
        }
    }
    loop {
        match raw.next_frame().await {
            Some(Frame::Close(reason)) => {
                assert_eq!(reason.map(|reason| u16::from(reason.code)), Some(CLOSE_TOO_BIG));
                break;
            }
            Some(Frame::Ping(_)) => {}
            other => panic!("expected close 1009 without waiting for the declared payload: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_fragmented_message_within_the_limit_is_one_message() {
    let server = spawn_server(&[("limits.maxMessageBytes", 4096.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let whole = send("in pieces", "f1").to_string();
    let (first, rest) = whole.split_at(10);
    let (middle, end) = rest.split_at(10);
    client.send_message(Message::Continuation(Item::FirstText(first.to_string().into()))).await;
    client.send_message(Message::Continuation(Item::Continue(middle.to_string().into()))).await;
    client.send_message(Message::Continuation(Item::Last(end.to_string().into()))).await;
    assert_eq!(last(&client.turn("f1").await)["content"], "echo: in pieces");
}

// ---- limits.messagesPerMinute -----------------------------------------------------

#[actix_rt::test]
async fn over_messages_per_minute_a_client_is_warned_then_closed_with_1008() {
    let agent = FakeAgent::start(always(&["ok"]));
    // 3 per minute: no token comes back during the test (one every 20 s).
    let server = server_for(&agent, &[("limits.messagesPerMinute", 3.into())]);
    let (mut flooder, _) = WsClient::connect_welcomed(&server.ws_url("senderId=flooder")).await;
    let (mut other, _) = WsClient::connect_welcomed(&server.ws_url("senderId=other")).await;
    for n in 1..=3 {
        let id = format!("ok{n}");
        assert_eq!(last(&flooder.chat(&id, "hello").await)["type"], "chat.response", "within the limit");
    }
    // Ten refusals are warnings; nothing is routed for them.
    for n in 1..=10 {
        flooder.send_json(send("more", &format!("over{n}"))).await;
        let warning = flooder.recv().await;
        assert_eq!((warning["type"].as_str(), warning["code"].as_str()), (Some("chat.error"), Some("rate_limited")));
    }
    assert_eq!(agent.requests().len(), 3, "refused messages never reach the agent");
    // The other connection has a bucket of its own.
    assert_eq!(last(&other.chat("o1", "hi").await)["content"], "ok");
    flooder.send_json(send("still more", "over11")).await;
    assert_eq!(flooder.closed().await, Some(CLOSE_POLICY), "flooding on after ten warnings closes");
    assert_eq!(last(&other.chat("o2", "hi again").await)["content"], "ok");
    assert_eq!(agent.requests().len(), 5);
}

// ---- limits.outboundQueue: a slow consumer ----------------------------------------

/// Deltas of the slow-reader test: together far more than a socket's kernel buffers
/// plus the outbound queue can hold for a client that does not read.
const BIG_DELTAS: usize = 1024;
const BIG_DELTA_BYTES: usize = 16 * 1024;
/// `limits.maxAnswerBytes` for those tests: the whole 16 MiB answer is allowed.
const BIG_ANSWER: i64 = 32 * 1024 * 1024;

/// An agent whose first answer is `BIG_DELTAS` deltas of `BIG_DELTA_BYTES`, written
/// fast (1 ms apart), and whose later answers are "short".
fn big_answer_agent() -> FakeAgent {
    let delta = "x".repeat(BIG_DELTA_BYTES);
    FakeAgent::start(Arc::new(move |call, _| match call {
        0 => slowly(&vec![delta.as_str(); BIG_DELTAS], Duration::from_millis(1)),
        _ => answer_with(&["short"]),
    }))
}

/// Two tabs of one user: a well-behaved one that joined, and a raw one with a small
/// receive buffer that sends the big turn and from then on reads nothing.
async fn good_and_slow_tabs(server: &TestServerHandle) -> (WsClient, RawClient) {
    let (mut good, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    good.send_json(json!({"type": "chat.join"})).await;
    assert_eq!(good.recv().await["type"], "chat.joined");
    let mut slow = RawClient::connect(server.addr, "senderId=user1", 4096).await;
    assert_eq!(slow.recv_json().await["type"], "chat.response", "the welcome");
    slow.send_json(send("a very long answer, please", "m1")).await;
    (good, slow)
}

/// The good tab gets every delta and the whole answer, and the backend was read to its
/// end: the slow tab never held the turn back.
async fn assert_good_tab_gets_everything(good: &mut WsClient, agent: &FakeAgent) {
    let frames = good.turn("m1").await;
    let answer = last(&frames);
    assert_eq!(answer["type"], "chat.response", "the good tab gets the answer");
    assert_eq!(answer["content"].as_str().map(str::len), Some(BIG_DELTAS * BIG_DELTA_BYTES));
    let deltas = streams(&frames);
    assert_eq!(deltas.len(), BIG_DELTAS, "and every delta");
    assert!(deltas.iter().enumerate().all(|(index, delta)| delta["seq"] == index as u64 + 1));
    eventually("the fake agent wrote its whole answer", || async { agent.completed() == 1 }).await;
}

#[actix_rt::test]
async fn a_client_that_does_not_read_is_dropped_while_another_tab_gets_every_delta() {
    let agent = big_answer_agent();
    // No history to the agent: the next request does not carry the 16 MiB answer.
    let server = server_for(
        &agent,
        &[
            ("limits.outboundQueue", 16.into()),
            ("agent.maxHistory", 0.into()),
            ("limits.maxAnswerBytes", BIG_ANSWER.into()),
        ],
    );
    let (mut good, mut slow) = good_and_slow_tabs(&server).await;
    assert_good_tab_gets_everything(&mut good, &agent).await;

    // Now the slow tab reads: a bounded prefix of the deltas, no answer, then 1008.
    let mut received = 0;
    let close = loop {
        match slow.next_frame().await {
            Some(Frame::Text(bytes)) => {
                let frame: Value = serde_json::from_slice(&bytes).expect("JSON");
                match frame["type"].as_str() {
                    Some("chat.typing") => {}
                    Some("chat.stream") => {
                        received += 1;
                        assert_eq!(frame["seq"], received, "a prefix, in order");
                    }
                    _ => panic!("after being dropped the slow tab gets nothing else: {frame}"),
                }
            }
            Some(Frame::Close(reason)) => break reason.map(|reason| u16::from(reason.code)),
            Some(Frame::Ping(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!("the slow reader got {received} of {BIG_DELTAS} deltas before it was closed");
    assert!(received < BIG_DELTAS as u64, "the server stopped sending to the slow tab");
    assert_eq!(close, Some(CLOSE_POLICY));
    eventually("the slow tab left the registry", || async { server.registries().await.connections == 1 }).await;
    assert_eq!(last(&good.chat("m2", "and now?").await)["content"], "short", "the session carries on");
}

#[actix_rt::test]
async fn a_slow_reader_is_closed_by_its_bytes_waiting_even_with_room_in_frames() {
    // The frame bound alone would let 10,000 frames (160 MiB here) wait for it.
    let agent = big_answer_agent();
    let server = server_for(
        &agent,
        &[
            ("limits.outboundQueue", 10_000.into()),
            ("limits.outboundBytes", (256 * 1024).into()),
            ("agent.maxHistory", 0.into()),
            ("limits.maxAnswerBytes", BIG_ANSWER.into()),
        ],
    );
    let (mut good, mut slow) = good_and_slow_tabs(&server).await;
    assert_good_tab_gets_everything(&mut good, &agent).await;
    let close = loop {
        match slow.next_frame().await {
            Some(Frame::Close(reason)) => break reason,
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    };
    let close = close.expect("a close reason");
    assert_eq!((u16::from(close.code), close.description.as_deref()), (CLOSE_POLICY, Some("slow")));
    eventually("the slow tab left the registry", || async { server.registries().await.connections == 1 }).await;
    let metrics = awc::Client::new().get(server.http_url("/metrics")).send().await.unwrap().body().await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("clawsocket_limit_hits_total{limit=\"outbound_bytes\"} 1"), "{metrics}");
}

/// A client that never reads again may not even be told 1008: with the kernel's buffers
/// full, actix can stop running its actor (heartbeat included). TCP_USER_TIMEOUT
/// (`heartbeat.timeoutMs`) has the kernel drop it, which frees its place. (Without it,
/// this test fails: the stuck connection stays.)
#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn a_client_that_never_reads_again_is_dropped_after_the_heartbeat_timeout() {
    let agent = big_answer_agent();
    let server = server_for(
        &agent,
        &[
            ("limits.maxAnswerBytes", BIG_ANSWER.into()),
            ("limits.outboundQueue", 16.into()),
            ("limits.heartbeat.intervalMs", 50.into()),
            ("limits.heartbeat.timeoutMs", 2000.into()),
        ],
    );
    let (mut good, _slow) = good_and_slow_tabs(&server).await;
    assert_good_tab_gets_everything(&mut good, &agent).await;
    // The good tab leaves (an idle tab that does not read would not answer pings either).
    good.close().await;
    eventually("the stuck tab was dropped without reading", || async { server.registries().await.connections == 0 })
        .await;
}

// ---- limits.maxConnections --------------------------------------------------------

fn three_users() -> AuthScript {
    AuthScript::new()
        .user("tok-a", json!({"userId": "a", "username": "A"}))
        .user("tok-b", json!({"userId": "b", "username": "B"}))
        .user("tok-c", json!({"userId": "c", "username": "C"}))
}

fn server_with_auth(auth: &FakeAuth, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.as_str().into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

#[actix_rt::test]
async fn beyond_max_connections_a_handshake_gets_503_before_any_auth_call() {
    let auth = FakeAuth::start(three_users());
    let server = server_with_auth(&auth, &[("limits.maxConnections", 2.into())]);
    let (mut a, _) = WsClient::connect_welcomed(&server.ws_url("token=tok-a")).await;
    let (b, _) = WsClient::connect_welcomed(&server.ws_url("token=tok-b")).await;
    assert_eq!(auth.calls(), 2);
    let refused = WsClient::try_connect(&server.ws_url("token=tok-c"), &[]).await.err();
    assert_eq!(refused.as_deref(), Some("503"));
    assert_eq!(auth.calls(), 2, "the auth service was not asked about the refused handshake");
    assert_eq!(last(&a.chat("a1", "still served").await)["content"], "echo: still served");
    b.close().await;
    // Once b's actor is gone its place is free again.
    let mut c = None;
    for _ in 0..1000 {
        match WsClient::try_connect(&server.ws_url("token=tok-c"), &[]).await {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err(status) => assert_eq!(status, "503"),
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = c.expect("a freed place is given to the next handshake");
    assert_eq!(c.recv().await["senderId"], "c");
}

// ---- channels.websocket.allowedOrigins --------------------------------------------

#[actix_rt::test]
async fn a_handshake_from_a_disallowed_origin_gets_403_and_never_reaches_auth() {
    let auth = FakeAuth::start(three_users());
    let origins: SettingValue = vec!["https://chat.example.com", "https://*.example.org"].into();
    let server = server_with_auth(&auth, &[("channels.websocket.allowedOrigins", origins)]);
    for origin in ["https://evil.example.net", "https://example.org", "http://chat.example.com"] {
        let refused = WsClient::try_connect(&server.ws_url("token=tok-a"), &[("Origin", origin)]).await.err();
        assert_eq!(refused.as_deref(), Some("403"), "{origin}");
    }
    assert_eq!(auth.calls(), 0, "a refused origin never reaches the auth service");
    for (origin, token) in [("https://chat.example.com", "tok-a"), ("https://app.example.org", "tok-b")] {
        let mut client = WsClient::try_connect(&server.ws_url(&format!("token={token}")), &[("Origin", origin)])
            .await
            .unwrap_or_else(|error| panic!("{origin} is allowed: {error}"));
        assert_eq!(client.recv().await["authenticated"], true);
    }
    // No Origin header: not a browser, not affected.
    let (mut client, welcome) = WsClient::connect_welcomed(&server.ws_url("token=tok-c")).await;
    assert_eq!(welcome["senderId"], "c");
    assert_eq!(last(&client.chat("c1", "no origin").await)["content"], "echo: no origin");
    assert_eq!(auth.calls(), 3);
}

// ---- limits.heartbeat -------------------------------------------------------------

/// A server that pings every 50 ms and drops a peer silent for `timeout_ms`.
fn heartbeat_server(timeout_ms: u64) -> TestServerHandle {
    spawn_server(&[("limits.heartbeat.intervalMs", 50.into()), ("limits.heartbeat.timeoutMs", timeout_ms.into())])
}

#[actix_rt::test]
async fn the_server_pings_and_drops_a_peer_that_never_answers() {
    let server = heartbeat_server(200);
    let mut silent = RawClient::connect(server.addr, "senderId=silent", 64 * 1024).await;
    assert_eq!(silent.recv_json().await["type"], "chat.response");
    let mut pings = 0;
    loop {
        match silent.next_frame().await {
            Some(Frame::Ping(_)) => pings += 1,
            None | Some(Frame::Close(_)) => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "pinged every intervalMs before being dropped ({pings} pings)");
    eventually("the dropped peer left the registry", || async { server.registries().await.connections == 0 }).await;
}

#[actix_rt::test]
async fn a_peer_that_answers_pings_is_kept_past_the_timeout() {
    // A generous timeout, so that a busy test machine does not make the answers late.
    let server = heartbeat_server(500);
    let mut alive = RawClient::connect(server.addr, "senderId=alive", 64 * 1024).await;
    assert_eq!(alive.recv_json().await["type"], "chat.response");
    let mut pings = 0;
    // 25 pings 50 ms apart span more than twice the timeout.
    while pings < 25 {
        match alive.next_frame().await {
            Some(Frame::Ping(payload)) => {
                pings += 1;
                alive.send_message(Message::Pong(payload)).await;
            }
            other => panic!("a peer that answers is not dropped: {other:?}"),
        }
    }
    alive.send_json(json!({"type": "ping"})).await;
    loop {
        match alive.next_frame().await {
            Some(Frame::Ping(payload)) => alive.send_message(Message::Pong(payload)).await,
            Some(Frame::Text(bytes)) => {
                assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON")["type"], "pong");
                break;
            }
            other => panic!("expected the pong: {other:?}"),
        }
    }
}

// ---- garbage ----------------------------------------------------------------------

/// The seed of the garbage test: change it to explore, keep it to reproduce.
const GARBAGE_SEED: [u8; 32] = *b"clawsocket garbage frames seed 1";
const GARBAGE_FRAMES: usize = 1000;

fn below(rng: &mut TestRng, bound: usize) -> usize {
    (rng.next_u64() % bound as u64) as usize
}

fn pick<'a>(rng: &mut TestRng, items: &[&'a str]) -> &'a str {
    items[below(rng, items.len())]
}

/// A random JSON value up to `depth` levels deep, never an object with a `type` key.
fn random_json(rng: &mut TestRng, depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match below(rng, kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.next_u32() % 2 == 0),
        2 => json!(rng.next_u64() as i64),
        3 => json!(f64::from(rng.next_u32()) / 7.0),
        4 => Value::String(random_text(rng, 40)),
        5 => Value::Array((0..below(rng, 6)).map(|_| random_json(rng, depth - 1)).collect()),
        _ => {
            let keys = ["content", "messageId", "groupId", "limit", "afterSeq", "", "\u{0}", "ключ", "x"];
            let fields = (0..below(rng, 6)).map(|_| (pick(rng, &keys).to_string(), random_json(rng, depth - 1)));
            Value::Object(fields.collect())
        }
    }
}

/// Random text of up to `max` characters, control characters and non-ASCII included.
fn random_text(rng: &mut TestRng, max: usize) -> String {
    (0..below(rng, max + 1))
        .map(|_| match below(rng, 4) {
            0 => char::from(below(rng, 32) as u8),
            1 => char::from_u32(0x80 + below(rng, 0xD000) as u32).unwrap_or('?'),
            _ => char::from(32 + below(rng, 95) as u8),
        })
        .collect()
}

/// A number no field can hold.
fn huge_number(rng: &mut TestRng) -> String {
    match below(rng, 5) {
        0 => "1e400".to_string(),
        1 => "-1e400".to_string(),
        2 => "18446744073709551616".to_string(),
        3 => (0..40 + below(rng, 400)).map(|_| char::from(b'1' + below(rng, 9) as u8)).collect(),
        _ => format!("-{}", rng.next_u64()),
    }
}

/// A frame of a known type whose field has the wrong type or value.
fn wrong_field(rng: &mut TestRng) -> String {
    let huge = huge_number(rng);
    let cases = [
        r#"{"type":"chat.send","content":42}"#.to_string(),
        r#"{"type":"chat.send","content":["a"]}"#.to_string(),
        r#"{"type":"chat.send","content":{"text":"a"}}"#.to_string(),
        r#"{"type":"chat.send","content":null}"#.to_string(),
        r#"{"type":"chat.send","content":"   "}"#.to_string(),
        r#"{"type":"chat.send","content":"x","mediaPaths":"one"}"#.to_string(),
        r#"{"type":"chat.send","content":"x","customData":[1]}"#.to_string(),
        r#"{"type":"chat.send","content":"x","chatType":"party"}"#.to_string(),
        r#"{"type":"chat.send","content":"x","chatType":"group"}"#.to_string(),
        r#"{"type":"chat.send","content":"x","messageId":5}"#.to_string(),
        format!(r#"{{"type":"chat.send","content":"x","threadId":"{}"}}"#, "t".repeat(300)),
        r#"{"type":"chat.abort","messageId":[]}"#.to_string(),
        r#"{"type":"chat.history","limit":"ten"}"#.to_string(),
        format!(r#"{{"type":"chat.history","limit":{huge}}}"#),
        format!(r#"{{"type":"chat.join","afterSeq":{huge}}}"#),
        r#"{"type":"chat.leave","groupId":""}"#.to_string(),
        format!(r#"{{"type":{huge}}}"#),
        r#"{"type":["chat.send"],"content":"x"}"#.to_string(),
    ];
    cases[below(rng, cases.len())].clone()
}

/// Nesting far past the parser's recursion limit (up to 100 000 levels).
fn deeply_nested(rng: &mut TestRng) -> String {
    let depth = 129 + below(rng, 100_000 - 129);
    match below(rng, 3) {
        0 => "[".repeat(depth),
        1 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        _ => format!(r#"{{"type":"chat.send","content":{}"#, r#"{"a":"#.repeat(depth)),
    }
}

/// One garbage frame; every kind must be answered by exactly one `chat.error`.
fn garbage(rng: &mut TestRng) -> Message {
    match below(rng, 8) {
        0 => {
            let mut bytes = vec![0u8; 1 + below(rng, 2048)];
            rng.fill_bytes(&mut bytes);
            bytes[0] = 0xFF; // never valid UTF-8, never JSON
            Message::Binary(bytes.into())
        }
        1 => Message::Text(format!("not json {}", random_text(rng, 200)).into()),
        2 => Message::Text(random_json(rng, 5).to_string().into()),
        3 => Message::Text(deeply_nested(rng).into()),
        4 => Message::Text(huge_number(rng).into()),
        5 => Message::Text(wrong_field(rng).into()),
        6 => Message::Binary(wrong_field(rng).into_bytes().into()),
        _ => Message::Text(json!({"type": format!("chat.x-{}", random_text(rng, 30))}).to_string().into()),
    }
}

fn describe(message: &Message) -> String {
    let bytes: &[u8] = match message {
        Message::Text(text) => text.as_bytes(),
        Message::Binary(bytes) => bytes,
        _ => b"",
    };
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

#[actix_rt::test]
async fn a_thousand_garbage_frames_get_errors_not_a_crash_and_a_turn_still_works() {
    let server = spawn_server(&[("limits.messagesPerMinute", 1_000_000.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=fuzzer")).await;
    let (mut bystander, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bystander")).await;
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &GARBAGE_SEED);
    for n in 0..GARBAGE_FRAMES {
        let message = garbage(&mut rng);
        let shown = describe(&message);
        client.send_message(message).await;
        match client.next().await {
            Received::Json(error) => {
                assert_eq!(error["type"], "chat.error", "frame {n} ({shown}) → {error}");
                let code = error["code"].as_str().unwrap_or_default();
                assert!(
                    ["invalid_json", "invalid_message", "unsupported_type"].contains(&code),
                    "frame {n} ({shown}) → {error}"
                );
            }
            Received::Closed(code) => panic!("frame {n} ({shown}) closed the connection ({code:?})"),
        }
    }
    assert_eq!(last(&client.chat("after", "still alive").await)["content"], "echo: still alive");
    assert_eq!(last(&bystander.chat("b1", "unaffected").await)["content"], "echo: unaffected");
}

// ---- graceful shutdown (the real binary) ------------------------------------------

/// The config of a child server whose agent is `agent` and whose grace is `grace_ms`.
fn child_config(agent: &FakeAgent, grace_ms: u64) -> String {
    format!(
        "[channels.websocket.auth]\nenabled = false\n\n[agent]\nkind = \"openai\"\nurl = \"{}\"\nsystemPrompt = \"\"\n\n\
         [store]\ndir = \"{{store}}\"\n\n[limits]\nshutdownGraceMs = {grace_ms}\n",
        agent.url_v1()
    )
}

/// An agent answering "w1 w2 … w10 " one word every `pause`.
fn ten_slow_words(pause: Duration) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| {
        let words: Vec<String> = (1..=10).map(|n| format!("w{n} ")).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        slowly(&words, pause)
    }))
}

const TEN_WORDS: &str = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 ";

/// Tries new handshakes until one is refused with 503 (the signal has been handled).
async fn assert_new_sockets_refused(child: &ChildServer) {
    for _ in 0..500 {
        match WsClient::try_connect(&child.ws_url("senderId=late"), &[]).await {
            Err(status) if status == "503" => return,
            Err(other) => panic!("expected 503 while draining, got {other}"),
            Ok(_) => actix_rt::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("new sockets were never refused after SIGTERM");
}

/// Every transcript line the child stored, as text.
fn stored_transcripts(child: &ChildServer) -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|extension| extension == "jsonl") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(&child.store_dir(), &mut out);
    out
}

#[actix_rt::test]
async fn sigterm_lets_a_streaming_turn_finish_then_closes_1001_and_exits_0() {
    let agent = ten_slow_words(Duration::from_millis(100));
    let mut child = ChildServer::start(&child_config(&agent, 10_000), &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=user1")).await;
    client.send_json(send("tell me ten words", "m1")).await;
    client.send_json(send("and then more", "m2")).await;
    assert_eq!(client.recv().await["type"], "chat.typing");
    let first = client.recv().await;
    assert_eq!(first["type"], "chat.stream", "{first}");

    child.terminate();
    assert_new_sockets_refused(&child).await;

    let frames = client.turn("m1").await;
    let answer = last(&frames);
    assert_eq!(answer["type"], "chat.response", "the turn in flight finished: {frames:?}");
    assert_eq!(answer["content"], TEN_WORDS);
    assert_eq!(format!("{}{}", first["content"].as_str().unwrap_or_default(), streamed_text(&frames)), TEN_WORDS);
    let queued = frames.iter().find(|frame| frame["messageId"] == "m2").expect("the queued turn was answered");
    assert_eq!(queued["code"], "shutting_down", "a queued turn does not start during shutdown");
    assert_eq!(client.closed().await, Some(CLOSE_GOING_AWAY));

    let (status, output) = child.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(stored_transcripts(&child).contains(TEN_WORDS), "the finished turn was stored before exit");
}

#[actix_rt::test]
async fn sigterm_with_a_grace_shorter_than_the_turn_ends_it_with_shutting_down_then_1001() {
    let agent = ten_slow_words(Duration::from_millis(300));
    let mut child = ChildServer::start(&child_config(&agent, 200), &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=user1")).await;
    client.send_json(send("tell me ten words slowly", "m1")).await;
    assert_eq!(client.recv().await["type"], "chat.typing");
    assert_eq!(client.recv().await["type"], "chat.stream");

    child.terminate();

    let frames = client.turn("m1").await;
    let end = last(&frames);
    assert_eq!((end["type"].as_str(), end["code"].as_str()), (Some("chat.error"), Some("shutting_down")), "{end}");
    assert_eq!(client.closed().await, Some(CLOSE_GOING_AWAY));
    let (status, output) = child.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!stored_transcripts(&child).contains("w10"), "a cut turn is not stored as answered");
}
