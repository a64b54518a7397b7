//! An attacker's and a careless user's attempts on today's bounds, identity and group
//! rules (review of 56e11c0..0568e11). A test here that fails is a finding: its
//! message says what went wrong. Every test is bounded in time (the client's 10 s
//! receive timeout, `eventually`'s 10 s, explicit deadlines).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::binary::{openai_config, ChildServer};
use crate::support::client::{last, Received};
use crate::support::fake_agent::{answer_with, slowly, Chunk, FakeAgent, Reply};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::{eventually, serve_on_loopback, spawn_server, WsClient};

// ---------------------------------------------------------------------------------
// Helpers

/// A group-access service for `groups.policy = "proxy"` whose verdicts a test can
/// change while it runs, answering after `delay`.
struct MutableGroups {
    url: String,
    allowed: Arc<Mutex<HashSet<(String, String)>>>,
    handle: actix_web::dev::ServerHandle,
}

impl MutableGroups {
    fn start(allowed: &[(&str, &str)], delay: Duration) -> MutableGroups {
        let allowed: Arc<Mutex<HashSet<(String, String)>>> =
            Arc::new(Mutex::new(allowed.iter().map(|(user, group)| (user.to_string(), group.to_string())).collect()));
        let shared = allowed.clone();
        let (address, handle) = serve_on_loopback(move |app| {
            let allowed = shared.clone();
            app.route(
                "/groups",
                web::post().to(move |body: web::Json<Value>| {
                    let allowed = allowed.clone();
                    async move {
                        actix_rt::time::sleep(delay).await;
                        let pair = (
                            body["userId"].as_str().unwrap_or_default().to_string(),
                            body["groupId"].as_str().unwrap_or_default().to_string(),
                        );
                        let verdict = allowed.lock().expect("not poisoned").contains(&pair);
                        HttpResponse::Ok().json(json!({"allowed": verdict}))
                    }
                }),
            );
        });
        let url = format!("http://{address}/groups");
        MutableGroups { url, allowed, handle }
    }

    fn revoke(&self, user: &str, group: &str) {
        self.allowed.lock().expect("not poisoned").remove(&(user.to_string(), group.to_string()));
    }
}

impl Drop for MutableGroups {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn group_send(group: &str, content: &str, message_id: &str) -> Value {
    json!({"type": "chat.send", "content": content, "messageId": message_id, "chatType": "group", "groupId": group})
}

/// Auth required; alice, bob and carol are users.
fn three_users() -> AuthScript {
    AuthScript::new()
        .user("t-alice", json!({"userId": "alice", "username": "Alice"}))
        .user("t-bob", json!({"userId": "bob", "username": "Bob"}))
        .user("t-carol", json!({"userId": "carol", "username": "Carol"}))
}

fn with_proxy(
    auth: &FakeAuth,
    groups: &MutableGroups,
    extra: &[(&'static str, SettingValue)],
) -> Vec<(&'static str, SettingValue)> {
    let mut settings: Vec<(&'static str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
        ("channels.websocket.groups.policy", "proxy".into()),
        ("channels.websocket.groups.endpoint", groups.url.clone().into()),
    ];
    settings.extend(extra.iter().cloned());
    settings
}

// ---------------------------------------------------------------------------------
// Findings

/// chat.history and chat.abort of the caller's own direct session in a new thread pass
/// `may_control` (own direct, any threadId) and need no subscription place, so they
/// create a SessionActor; neither path ever schedules the idle check (only an
/// unsubscribe or the end of a turn does), so the session is never retired.
#[actix_rt::test]
async fn history_and_abort_of_fresh_threads_leave_sessions_that_are_never_retired() {
    let server = spawn_server(&[("limits.sessionIdleMs", 100.into()), ("limits.maxSubscriptions", 4.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=hoarder")).await;
    for n in 0..20 {
        client.send_json(json!({"type": "chat.history", "threadId": format!("h{n}")})).await;
        assert_eq!(client.recv().await["type"], "chat.history");
        client.send_json(json!({"type": "chat.abort", "threadId": format!("a{n}")})).await;
    }
    client.round_trip().await;
    client.close().await;
    eventually("the connection is gone", || async { server.registries().await.connections == 0 }).await;
    // Ten times sessionIdleMs: an idle session is long gone by then (a chat.leave's is).
    actix_rt::time::sleep(Duration::from_millis(1000)).await;
    let held = server.registries().await.sessions;
    assert_eq!(
        held, 0,
        "{held} sessions created by chat.history/chat.abort of new threads (past limits.maxSubscriptions = 4) \
         are still held 10x limits.sessionIdleMs after their connection closed"
    );
}

/// The SSE decoder bounds one line (8 MiB) but not the `data:` lines of one event:
/// a backend that sends `data:` lines and never the blank line that ends the event
/// grows `SseDecoder::data` without bound; limits.maxAnswerBytes applies only to
/// decoded deltas, so it never trips (only limits.turnTimeoutMs, 5 min, ends it).
#[actix_rt::test]
async fn data_lines_without_a_blank_line_grow_memory_past_max_answer_bytes() {
    let line = format!("data: {}\n", "y".repeat(64 * 1024 - 7));
    let agent = FakeAgent::start(Arc::new(move |_, _| {
        let chunks = (0..768).map(|_| Chunk::Bytes(Duration::ZERO, line.clone().into_bytes())).collect();
        Reply::Stream(chunks)
    }));
    let config = openai_config(&agent.url_v1(), "", "[limits]\nmaxAnswerBytes = 1048576\n");
    let child = ChildServer::start(&config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=u")).await;
    let before = child.peak_rss_bytes();
    let failed = last(&client.chat("m1", "talk forever").await).clone();
    let grown = child.peak_rss_bytes().saturating_sub(before);
    assert_eq!(failed["code"], "agent_error", "{failed}");
    assert!(
        grown < 24 * 1024 * 1024,
        "peak RSS grew {grown} bytes: 48 MiB of `data:` lines without a blank line were all buffered \
         (limits.maxAnswerBytes = 1 MiB); the turn ended only when the body did: {failed}"
    );
}

/// A proxy verdict is awaited with `ctx.wait`, which stops the connection actor from
/// handling its mailbox too: the frames of the connection's other sessions pile up
/// there, and at limits.outboundQueue the connection is evicted as a slow reader
/// (1008), though the client reads everything at once. A slow (not even timed-out)
/// groups service closes well-behaved connections that are receiving a stream.
#[actix_rt::test]
async fn a_slow_groups_verdict_gets_a_streaming_reader_closed_as_slow() {
    let auth = FakeAuth::start(three_users());
    let groups = MutableGroups::start(&[("alice", "g")], Duration::from_millis(2500));
    let words: Vec<String> = (0..600).map(|n| format!("w{n} ")).collect();
    let agent = FakeAgent::start(Arc::new(move |_, _| {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        slowly(&words, Duration::from_millis(3))
    }));
    let server = spawn_server(&with_proxy(
        &auth,
        &groups,
        &[("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())],
    ));
    let (mut alice, _) = WsClient::connect_welcomed(&server.ws_url("token=t-alice")).await;
    alice.send_json(json!({"type": "chat.send", "content": "tell me a long story", "messageId": "m1"})).await;
    loop {
        if alice.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    // While her story streams, she opens her team's group: the groups service takes 2.5 s.
    alice.send_json(json!({"type": "chat.join", "groupId": "g"})).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut answered, mut joined) = (false, false);
    while !(answered && joined) {
        assert!(Instant::now() < deadline, "no answer and join within 15 s");
        match alice.next().await {
            Received::Json(frame) => {
                answered |= frame["type"] == "chat.response" && frame["messageId"] == "m1";
                joined |= frame["type"] == "chat.joined";
                assert_ne!(frame["type"], "chat.error", "{frame}");
            }
            Received::Closed(code) => panic!(
                "alice's connection was closed ({code:?}) while she read every frame at once: \
                 the 2.5 s groups verdict held her mailbox and her story's deltas filled limits.outboundQueue"
            ),
        }
    }
}

/// Group access is decided only when a connection sends, joins, reads or aborts; a
/// subscription, once made, is never checked again. A member the proxy has since
/// refused keeps receiving the group's messages, streams and answers long after the
/// verdict expired (settings/default.toml: "A membership revoked meanwhile still
/// works until its verdict expires"), while her own chat.history there is refused.
#[actix_rt::test]
async fn a_member_the_groups_proxy_revoked_keeps_receiving_the_group() {
    let auth = FakeAuth::start(three_users());
    let groups = MutableGroups::start(&[("alice", "g"), ("carol", "g")], Duration::ZERO);
    let server = spawn_server(&with_proxy(&auth, &groups, &[("channels.websocket.groups.cacheTtl", 100.into())]));
    let (mut carol, _) = WsClient::connect_welcomed(&server.ws_url("token=t-carol")).await;
    carol.send_json(json!({"type": "chat.join", "groupId": "g"})).await;
    assert_eq!(carol.recv().await["type"], "chat.joined");

    groups.revoke("carol", "g");
    actix_rt::time::sleep(Duration::from_millis(500)).await; // 5x the verdict's TTL
    carol.send_json(json!({"type": "chat.history", "groupId": "g"})).await;
    let refused = carol.recv().await;
    assert_eq!(refused["code"], "forbidden", "the proxy now refuses carol: {refused}");

    let (mut alice, _) = WsClient::connect_welcomed(&server.ws_url("token=t-alice")).await;
    alice.send_json(group_send("g", "the plan carol must not see", "p1")).await;
    assert_eq!(last(&alice.turn("p1").await)["type"], "chat.response");
    carol.send_json(json!({"type": "ping"})).await;
    let next = carol.recv().await;
    assert_eq!(
        next["type"], "pong",
        "carol, refused by the proxy for 500 ms (cacheTtl 100 ms), still got group g's frames: {next}"
    );
}

/// The credential mask is a list of words and key prefixes, not the configured
/// secrets: a backend error body that echoes the configured key after phrasings real
/// gateways use ("Invalid bearer token: …", "API key provided: …", "x-api-key: …")
/// puts the key in the log (RUST_LOG at any level from warn).
#[actix_rt::test]
async fn a_backend_echoing_the_configured_key_in_common_phrasings_puts_it_in_the_log() {
    const KEY: &str = "gw7Qx2pLr9Zk";
    let bodies = [
        format!(r#"{{"error":{{"message":"Invalid bearer token: {KEY}"}}}}"#),
        format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}."}}}}"#),
        format!(r#"{{"error":"missing scope for x-api-key: {KEY}"}}"#),
    ];
    let agent = FakeAgent::start(Arc::new(move |index, _| Reply::Status(401, bodies[index % 3].clone())));
    let config = openai_config(&agent.url_v1(), &format!("apiKey = \"{KEY}\"\n"), "");
    let child = ChildServer::start(&config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=alice")).await;
    for n in 0..3 {
        let failed = last(&client.chat(&format!("m{n}"), "hi").await).clone();
        assert_eq!(failed["error"], "the agent backend answered HTTP 401", "{failed}");
    }
    let log = child.kill();
    let leaks: Vec<&str> = log.lines().filter(|line| line.contains(KEY)).collect();
    assert!(leaks.is_empty(), "the configured agent.apiKey reached the log:\n{}", leaks.join("\n"));
}

/// In cumulative stream mode every delta's frame holds the whole answer so far, and
/// the deltas of one network read travel as one `Outgoing::Batch`, admitted whole
/// (the one message that crosses limits.outboundBytes "still goes"). A 512 KiB
/// answer followed by 300 one-byte deltas in one read makes the server build and
/// queue ~150 MiB for one connection, 150x limits.outboundBytes.
#[actix_rt::test]
async fn cumulative_mode_builds_a_batch_far_past_outbound_bytes() {
    let big = "c".repeat(512 * 1024);
    let agent = FakeAgent::start(Arc::new(move |_, _| {
        let mut deltas: Vec<&str> = vec![big.as_str()];
        deltas.extend(std::iter::repeat_n("x", 300));
        answer_with(&deltas)
    }));
    let config = format!(
        "[channels.websocket]\nstreamMode = \"cumulative\"\n[channels.websocket.auth]\nenabled = false\n\
         [agent]\nkind = \"openai\"\nurl = \"{}\"\n[store]\ndir = \"{{store}}\"\n",
        agent.url_v1()
    );
    let child = ChildServer::start(&config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=u")).await;
    let before = child.peak_rss_bytes();
    // The client asks and then reads nothing: what the server holds is all its own.
    client.send_json(json!({"type": "chat.send", "content": "go", "messageId": "m1"})).await;
    eventually("the agent answered", || async { agent.completed() == 1 }).await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let grown = child.peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "peak RSS grew {grown} bytes for one connection of a 0.8 MiB answer (limits.outboundBytes = 1 MiB)"
    );
}

// ---------------------------------------------------------------------------------
// Attempts that held (kept for the coverage they add)

/// Every configured credential (URL passwords of the auth, groups and agent endpoints,
/// the agent key, a user's token forwarded to the agent) stays out of a RUST_LOG=trace
/// log through a whole session: handshake, proxy verdict, turn, group turn.
#[actix_rt::test]
async fn no_configured_credential_or_user_token_reaches_the_trace_log() {
    let auth = FakeAuth::start(three_users().user("tok-9Qw3Zr7Lm2", json!({"userId": "dave", "username": "Dave"})));
    let groups = MutableGroups::start(&[("dave", "g")], Duration::ZERO);
    let agent = FakeAgent::start(Arc::new(|_, _| answer_with(&["fine"])));
    let with_password = |url: &str| url.replace("http://", "http://admin:pw9Hq4Xs1@");
    let config = format!(
        "[channels.websocket.auth]\nenabled = true\nendpoint = \"{}\"\n\
         [channels.websocket.groups]\npolicy = \"proxy\"\nendpoint = \"{}\"\n\
         [agent]\nkind = \"openai\"\nurl = \"{}\"\napiKey = \"key8Jd2Vn5Qp\"\nforwardUserToken = true\n\
         [store]\ndir = \"{{store}}\"\n",
        with_password(&auth.url),
        with_password(&groups.url),
        with_password(&agent.url_v1())
    );
    let child = ChildServer::start(&config, &[]).await;
    let (mut dave, _) = WsClient::connect_welcomed(&child.ws_url("token=tok-9Qw3Zr7Lm2")).await;
    assert_eq!(last(&dave.chat("m1", "hi").await)["type"], "chat.response");
    dave.send_json(group_send("g", "hi team", "g1")).await;
    assert_eq!(last(&dave.turn("g1").await)["type"], "chat.response");
    let forwarded = agent.requests().iter().any(|call| call.body.to_string().contains("tok-9Qw3Zr7Lm2"));
    assert!(forwarded, "the user's token reached the agent (forwardUserToken): {:?}", agent.requests());
    let log = child.kill();
    for secret in ["pw9Hq4Xs1", "key8Jd2Vn5Qp", "tok-9Qw3Zr7Lm2"] {
        let leaks: Vec<&str> = log.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} reached the log:\n{}", leaks.join("\n"));
    }
}
