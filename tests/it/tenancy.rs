//! Tenancy (SPEC §13): per-user limits (`turnsPerMinute`, `tokensPerDay`,
//! `concurrentTurns`, `maxConnections`), each refusing exactly past its value while
//! another user is unaffected; tiers from the auth service's `data.limits`; guests'
//! own limits; usage per user per UTC day that survives a restart; the `/admin`
//! routes behind `admin.token`; and the same results on two nodes on one Redis.

use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::SettingValue;
use clawsocket::usage::Day;
use serde_json::{json, Value};

use crate::support::binary::{openai_config, ChildServer};
use crate::support::client::last;
use crate::support::cluster::{cluster_toml, ready_child, ready_nodes};
use crate::support::fake_agent::{answer_with, answer_with_usage, paced_agent, slowly, FakeAgent, Reply};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::redis::RedisServer;
use crate::support::server::{spawn_server, spawn_server_on_store, TestServer};
use crate::support::{eventually, WsClient};

const ADMIN_TOKEN: &str = "adm-7Hq2Lp9Xz4Rt8Wv1";

/// `GET {base}{path}` with `authorization` (a whole header value), answering the
/// status and the JSON body (`Null` when the body is not JSON).
async fn get(base: &str, path: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = awc::Client::new().get(format!("{base}{path}"));
    if let Some(value) = authorization {
        request = request.insert_header(("Authorization", value));
    }
    let mut response = request.send().await.expect("the server answers");
    let body = response.body().await.expect("a body");
    (response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `GET {path}` on `server` with the admin token.
async fn admin(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(&server.http_url(""), path, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Today's usage of `user` as `/admin/usage` shows it (its total).
async fn usage_today(server: &TestServer, user: &str) -> Value {
    admin(server, &format!("/admin/usage?userId={user}")).await["total"].clone()
}

/// Sends a `chat.send` of `content` as `id`, in thread `thread` when given.
async fn send(client: &mut WsClient, id: &str, thread: Option<&str>) {
    let mut message = json!({"type": "chat.send", "content": "hello there", "messageId": id});
    if let Some(thread) = thread {
        message["threadId"] = json!(thread);
    }
    client.send_json(message).await;
}

/// Asserts a frame is the `quota_exceeded` refusal of `limit`; answers its `retryAfterMs`.
fn refused_by(frame: &Value, limit: &str) -> u64 {
    assert_eq!(frame["type"], "chat.error", "{frame}");
    assert_eq!(frame["code"], "quota_exceeded", "{frame}");
    assert_eq!(frame["limit"], limit, "{frame}");
    let retry = frame["retryAfterMs"].as_u64().unwrap_or_else(|| panic!("retryAfterMs: {frame}"));
    assert!(retry > 0, "{frame}");
    retry
}

fn answered(frames: &[Value]) -> bool {
    last(frames)["type"] == "chat.response"
}

async fn metrics_of(server: &TestServer) -> String {
    let mut response = awc::Client::new().get(server.http_url("/metrics")).send().await.expect("metrics");
    String::from_utf8(response.body().await.expect("body").to_vec()).expect("text")
}

/// An agent reporting 10 prompt and 5 completion tokens for every answer.
fn agent_of_15_tokens(pause: Duration) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| answer_with_usage(&["Hello", " there"], 10, 5, pause)))
}

fn openai(agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> Vec<(&'static str, SettingValue)> {
    let mut settings: Vec<(&'static str, SettingValue)> = vec![
        ("agent.kind", "openai".into()),
        ("agent.url", agent.url_v1().into()),
        ("admin.token", ADMIN_TOKEN.into()),
    ];
    settings.extend(extra.iter().map(|(key, value)| (leak(key), value.clone())));
    settings
}

fn leak(key: &str) -> &'static str {
    Box::leak(key.to_string().into_boxed_str())
}

#[actix_rt::test]
async fn turns_per_minute_refuses_the_turn_past_it_and_no_other_users() {
    let server = spawn_server(&[("limits.perUser.turnsPerMinute", 3.into())]);
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    for n in 1..=3 {
        assert!(answered(&alice.chat(&format!("m{n}"), "hi").await), "turn {n} of 3");
    }
    let retry = refused_by(last(&alice.chat("m4", "one more").await), "turnsPerMinute");
    assert!(retry <= 60_000 && retry > 30_000, "the first turn leaves the window within the minute: {retry}");
    assert!(answered(&alice.chat("m2", "hi").await), "a retried answered message is no new turn");
    // Per user, not per connection: another tab of alice is refused too.
    let mut alice_again = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    refused_by(last(&alice_again.chat("m5", "hi").await), "turnsPerMinute");
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    for n in 1..=3 {
        assert!(answered(&bob.chat(&format!("b{n}"), "hi").await), "another user is not affected");
    }
    let metrics = metrics_of(&server).await;
    assert!(metrics.contains(r#"clawsocket_quota_refusals_total{limit="turnsPerMinute"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"clawsocket_errors_total{code="quota_exceeded"} 2"#), "{metrics}");
}

#[actix_rt::test]
async fn tokens_per_day_refuses_once_the_days_tokens_are_spent() {
    let agent = agent_of_15_tokens(Duration::ZERO);
    let server = spawn_server(&openai(&agent, &[("limits.perUser.tokensPerDay", 30.into())]));
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let first = alice.chat("m1", "hi").await;
    assert_eq!(last(&first)["usage"], json!({"promptTokens": 10, "completionTokens": 5, "totalTokens": 15}));
    assert!(answered(&alice.chat("m2", "hi").await), "15 of 30 used: one more");
    let retry = refused_by(last(&alice.chat("m3", "hi").await), "tokensPerDay");
    assert!(retry <= 86_400_000, "until midnight UTC: {retry}");
    assert_eq!(agent.requests().len(), 2, "the refused turn never reached the agent");
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    assert!(answered(&bob.chat("b1", "hi").await), "another user is not affected");

    let total = usage_today(&server, "alice").await;
    assert_eq!(
        total,
        json!({"turns": 2, "promptTokens": 20, "completionTokens": 10, "totalTokens": 30, "estimatedTokens": 0})
    );
    let metrics = metrics_of(&server).await;
    assert!(metrics.contains(r#"clawsocket_tokens_total{kind="prompt"} 30"#), "{metrics}");
    assert!(metrics.contains(r#"clawsocket_tokens_total{kind="completion"} 15"#), "{metrics}");
    assert!(metrics.contains(r#"clawsocket_quota_refusals_total{limit="tokensPerDay"} 1"#), "{metrics}");
    assert!(!metrics.contains("alice"), "no per-user labels: {metrics}");
}

#[actix_rt::test]
async fn usage_a_backend_does_not_report_is_estimated_and_counted() {
    // The echo agent reports no usage: 4 bytes a token.
    let server = spawn_server(&[("admin.token", ADMIN_TOKEN.into())]);
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let answer = last(&alice.chat("m1", "hello there").await).clone();
    assert_eq!(answer["usage"]["estimated"], true, "{answer}");
    let completion = answer["content"].as_str().unwrap().len().div_ceil(4) as u64;
    assert_eq!(answer["usage"]["completionTokens"], completion, "{answer}");
    let total = usage_today(&server, "alice").await;
    assert_eq!(total["turns"], 1);
    assert_eq!(total["completionTokens"], completion);
    assert!(total["promptTokens"].as_u64().unwrap() > 0, "{total}");
    assert_eq!(total["estimatedTokens"], total["totalTokens"], "{total}");
}

#[actix_rt::test]
async fn a_turn_past_concurrent_turns_waits_then_completes_and_others_run_meanwhile() {
    let agent = paced_agent(8, Duration::from_millis(40));
    let server = spawn_server(&openai(&agent, &[("limits.perUser.concurrentTurns", 2.into())]));
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    for (id, thread) in [("m1", "t1"), ("m2", "t2"), ("m3", "t3")] {
        send(&mut alice, id, Some(thread)).await;
    }
    send(&mut bob, "b1", None).await;

    let mut frames = Vec::new();
    let mut responses = 0;
    while responses < 3 {
        let frame = alice.recv().await;
        assert_ne!(frame["type"], "chat.error", "a waiting turn is never refused: {frame}");
        responses += usize::from(frame["type"] == "chat.response");
        frames.push(frame);
    }
    assert!(answered(&bob.turn("b1").await));
    // A turn's place is free once the agent's answer ended (its last delta), while
    // the answer is being stored.
    // (The three sessions are different actors: which of the turns waits is not known.)
    let last_delta =
        |id: &str| frames.iter().rposition(|frame| frame["type"] == "chat.stream" && frame["messageId"] == id);
    let typing = |id: &str| frames.iter().position(|frame| frame["type"] == "chat.typing" && frame["messageId"] == id);
    let mut ids = ["m1", "m2", "m3"];
    ids.sort_by_key(|id| typing(id));
    let first_end = [last_delta(ids[0]), last_delta(ids[1])].into_iter().flatten().min();
    assert!(typing(ids[2]) > first_end, "the third turn started after one of the first two ended: {frames:?}");
    assert_eq!(agent.requests().len(), 4);
    assert_eq!(agent.most_at_once(), 3, "two of alice's turns and bob's ran at once, never three of alice's");
}

/// A turn's place comes back however it ends: aborted, or failed.
#[actix_rt::test]
async fn an_aborted_or_failed_turn_gives_its_place_to_a_waiting_one() {
    let words: Vec<String> = (1..=200).map(|n| format!("w{n} ")).collect();
    let agent = FakeAgent::start(Arc::new(move |index, _| match index {
        0 => slowly(&words.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_millis(50)),
        1 => Reply::Status(500, "{}".into()),
        _ => answer_with(&["done"]),
    }));
    let server = spawn_server(&openai(&agent, &[("limits.perUser.concurrentTurns", 1.into())]));
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    send(&mut alice, "m1", Some("t1")).await;
    while alice.recv().await["type"] != "chat.stream" {}
    send(&mut alice, "m2", Some("t2")).await;
    send(&mut alice, "m3", Some("t3")).await;
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while let Some(frame) = alice.recv_within(deadline.saturating_duration_since(std::time::Instant::now())).await {
        assert_eq!(frame["messageId"], "m1", "m2 and m3 wait while m1 runs: {frame}");
    }
    alice.send_json(json!({"type": "chat.abort", "threadId": "t1"})).await;
    let (mut ends, mut starts) = (Vec::new(), 0);
    while ends.len() < 3 {
        let frame = alice.recv().await;
        if frame["type"] == "chat.typing" {
            starts += 1;
            assert!(starts <= ends.len(), "each waiting turn started once the one before ended: {frame}");
        }
        if frame["type"] == "chat.response" || frame["type"] == "chat.error" {
            ends.push((frame["messageId"].as_str().unwrap().to_string(), frame["code"].as_str().map(String::from)));
        }
    }
    ends.sort();
    let codes: Vec<Option<&str>> = ends.iter().map(|(_, code)| code.as_deref()).collect();
    assert_eq!(ends[0].0, "m1");
    assert_eq!(codes[0], Some("aborted"));
    let mut rest = codes[1..].to_vec();
    rest.sort();
    assert_eq!(rest, [None, Some("agent_error")], "one failed, then the other ran: {ends:?}");
    // (The agent may see two calls at once for a moment: an aborted call's connection
    // closes after its turn has ended, and its place with it.)
    assert_eq!(agent.requests().len(), 3);
}

#[actix_rt::test]
async fn the_auth_services_limits_override_the_configured_ones_per_user() {
    let auth = FakeAuth::start(
        AuthScript::new()
            .user(
                "tok-gold",
                json!({"userId": "gold", "username": "Gold", "limits": {"turnsPerMinute": 4, "maxConnections": 1}}),
            )
            .user("tok-free", json!({"userId": "free", "username": "Free"})),
    );
    let server = spawn_server(&[
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.as_str().into()),
        ("limits.perUser.turnsPerMinute", 2.into()),
    ]);
    let mut gold = WsClient::connect_welcomed(&server.ws_url("token=tok-gold")).await.0;
    for n in 1..=4 {
        assert!(answered(&gold.chat(&format!("g{n}"), "hi").await), "gold turn {n} of 4");
    }
    refused_by(last(&gold.chat("g5", "hi").await), "turnsPerMinute");
    let second = WsClient::try_connect(&server.ws_url("token=tok-gold"), &[]).await;
    assert_eq!(second.err().as_deref(), Some("429"), "gold's tier allows one connection");

    let mut free = WsClient::connect_welcomed(&server.ws_url("token=tok-free")).await.0;
    let _free_again = WsClient::connect_welcomed(&server.ws_url("token=tok-free")).await.0;
    for n in 1..=2 {
        assert!(answered(&free.chat(&format!("f{n}"), "hi").await), "free turn {n} of 2");
    }
    refused_by(last(&free.chat("f3", "hi").await), "turnsPerMinute");
}

#[actix_rt::test]
async fn guests_get_the_guest_limits_and_users_keep_theirs() {
    let auth = FakeAuth::start(AuthScript::new().user("tok-alice", json!({"userId": "alice", "username": "Alice"})));
    let server = spawn_server(&[
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.required", false.into()),
        ("channels.websocket.auth.endpoint", auth.url.as_str().into()),
        ("limits.guest.turnsPerMinute", 1.into()),
        ("limits.guest.maxConnections", 1.into()),
    ]);
    let (mut guest, welcome) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    assert_eq!(welcome["senderId"], "guest:alice");
    assert!(answered(&guest.chat("m1", "hi").await));
    refused_by(last(&guest.chat("m2", "hi").await), "turnsPerMinute");
    let second = WsClient::try_connect(&server.ws_url("senderId=alice"), &[]).await;
    assert_eq!(second.err().as_deref(), Some("429"), "a guest id gets limits.guest.maxConnections");

    let mut user = WsClient::connect_welcomed(&server.ws_url("token=tok-alice")).await.0;
    let _tab = WsClient::connect_welcomed(&server.ws_url("token=tok-alice")).await.0;
    for n in 1..=3 {
        assert!(answered(&user.chat(&format!("u{n}"), "hi").await), "the logged-in alice is no guest");
    }
}

#[actix_rt::test]
async fn the_days_usage_survives_a_restart_and_still_limits() {
    let store = tempfile::tempdir().unwrap();
    let agent = agent_of_15_tokens(Duration::ZERO);
    let first = spawn_server_on_store(store.path(), &openai(&agent, &[]));
    let mut alice = WsClient::connect_welcomed(&first.ws_url("senderId=alice")).await.0;
    for n in 1..=2 {
        assert!(answered(&alice.chat(&format!("m{n}"), "hi").await));
    }
    let before = usage_today(&first, "alice").await;
    assert_eq!(before["totalTokens"], 30);
    alice.close().await;
    first.stop().await;
    drop(first);

    let second = spawn_server_on_store(store.path(), &openai(&agent, &[("limits.perUser.tokensPerDay", 30.into())]));
    let usage = |server: &TestServer| {
        let url = server.http_url("");
        async move {
            let (_, body) = get(&url, "/admin/usage?userId=alice", Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
            body["total"].clone()
        }
    };
    eventually("the usage written before the restart is read after it", || {
        let expected = before.clone();
        let read = usage(&second);
        async move { read.await == expected }
    })
    .await;
    let body = admin(&second, "/admin/usage?userId=alice").await;
    assert_eq!(body["days"].as_array().map(Vec::len), Some(1), "{body}");
    let mut alice = WsClient::connect_welcomed(&second.ws_url("senderId=alice")).await.0;
    refused_by(last(&alice.chat("m3", "hi").await), "tokensPerDay");
    let sessions = admin(&second, "/admin/sessions?userId=alice").await;
    assert_eq!(sessions["sessions"][0]["turns"], 2, "{sessions}");
}

#[actix_rt::test]
async fn the_admin_routes_want_the_right_bearer_token_and_are_off_without_one() {
    let server = spawn_server(&[("admin.token", ADMIN_TOKEN.into())]);
    let base = server.http_url("");
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert!(answered(&alice.chat("m1", "hi").await));
    send(&mut alice, "m2", Some("t1")).await;
    assert!(answered(&alice.turn("m2").await));

    for path in ["/admin/usage?userId=alice", "/admin/sessions?userId=alice"] {
        let right = format!("Bearer {ADMIN_TOKEN}");
        let wrong = format!("Bearer {ADMIN_TOKEN}x");
        let prefix = format!("Bearer {}", &ADMIN_TOKEN[..10]);
        let basic = format!("Basic {ADMIN_TOKEN}");
        for (authorization, status) in
            [(Some(right.as_str()), 200), (None, 401), (Some(&wrong), 401), (Some(&prefix), 401), (Some(&basic), 401)]
        {
            assert_eq!(get(&base, path, authorization).await.0, status, "{path} with {authorization:?}");
        }
        let in_query = format!("{path}&token={ADMIN_TOKEN}");
        assert_eq!(get(&base, &in_query, None).await.0, 401, "the token is not taken from the query");
    }
    let usage = admin(&server, "/admin/usage?userId=alice").await;
    assert_eq!(usage["total"]["turns"], 2, "{usage}");
    let today = usage["from"].as_str().unwrap().to_string();
    assert_eq!(usage["days"][0]["day"], today);
    let sessions = admin(&server, "/admin/sessions?userId=alice").await;
    let keys: Vec<&str> =
        sessions["sessions"].as_array().unwrap().iter().filter_map(|s| s["sessionKey"].as_str()).collect();
    assert_eq!(keys.len(), 2, "{sessions}");
    assert!(keys.contains(&"agent:main:websocket:direct:alice:thread:t1"), "{sessions}");
    assert!(sessions["sessions"].as_array().unwrap().iter().all(|s| s["running"] == false && s["turns"] == 1));
    assert_eq!(admin(&server, "/admin/sessions?userId=nobody").await["sessions"], json!([]));

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for (path, why) in [
        ("/admin/usage", "userId is required"),
        ("/admin/usage?userId=alice&from=2024-02-30", "from must be a date"),
        ("/admin/usage?userId=alice&from=2024-03-02&to=2024-03-01", "from is after to"),
        ("/admin/usage?userId=alice&from=2020-01-01&to=2024-01-01", "more than 366 days"),
        ("/admin/sessions", "userId is required"),
    ] {
        let (status, body) = get(&base, path, Some(&bearer)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{path}: {body}");
    }
    let long_ago = Day(Day::parse(&today).unwrap().0 - 365);
    let range = admin(&server, &format!("/admin/usage?userId=alice&from={long_ago}&to={today}")).await;
    assert_eq!((range["from"].as_str(), &range["total"]["turns"]), (Some(long_ago.to_string().as_str()), &json!(2)));
    let before = Day(long_ago.0 - 1);
    let (status, _) = get(&base, &format!("/admin/usage?userId=alice&from={before}&to={today}"), Some(&bearer)).await;
    assert_eq!(status, 400, "367 days are too many");

    let without = spawn_server(&[]);
    for path in ["/admin/usage?userId=alice", "/admin/sessions?userId=alice"] {
        let (status, _) = get(&without.http_url(""), path, Some(&bearer)).await;
        assert_eq!(status, 404, "no admin.token: no {path}");
    }
}

/// The admin token from `WS_ADMIN_TOKEN` works, and never reaches the log, even at
/// trace, whether it is presented right or wrong.
#[actix_rt::test]
async fn the_admin_token_comes_from_the_environment_and_never_reaches_the_log() {
    let config = "[agent]\nkind = \"echo\"\nechoDelayMs = 0\n[channels.websocket.auth]\nenabled = false\n[store]\ndir = \"{store}\"\n";
    let child = ChildServer::start(config, &[("WS_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let base = format!("http://{}", child.addr);
    let (mut alice, _) = WsClient::connect_welcomed(&child.ws_url("senderId=alice")).await;
    assert!(answered(&alice.chat("m1", "hi").await));
    let (status, body) = get(&base, "/admin/usage?userId=alice", Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!((status, &body["total"]["turns"]), (200, &json!(1)), "{body}");
    let (status, _) = get(&base, "/admin/usage?userId=alice", Some(&format!("Bearer {ADMIN_TOKEN}x"))).await;
    assert_eq!(status, 401);
    let log = child.kill();
    assert!(log.contains("TRACE"), "the log was captured at trace");
    let leaks: Vec<&str> = log.lines().filter(|line| line.contains(&ADMIN_TOKEN[4..])).collect();
    assert!(leaks.is_empty(), "the admin token reached the log:\n{}", leaks.join("\n"));
}

// ---------------------------------------------------------------------------------
// Two nodes on one Redis

/// Nodes `a` and `b` on `redis`, answering with `agent`, with `extra` settings.
async fn two_nodes(redis: &RedisServer, agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> Vec<TestServer> {
    ready_nodes(redis, &["a", "b"], &openai(agent, extra)).await
}

#[actix_rt::test]
async fn two_nodes_share_turns_per_minute_tokens_per_day_and_the_usage() {
    let redis = RedisServer::start();
    let agent = agent_of_15_tokens(Duration::ZERO);
    let limits = [("limits.perUser.turnsPerMinute", SettingValue::from(3)), ("limits.perUser.tokensPerDay", 60.into())];
    let nodes = two_nodes(&redis, &agent, &limits).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    // Three turns, in two sessions, through both nodes: the fourth is refused anywhere.
    assert!(answered(&on_a.chat("m1", "hi").await));
    send(&mut on_b, "m2", Some("t1")).await;
    assert!(answered(&on_b.turn("m2").await));
    assert!(answered(&on_a.chat("m3", "hi").await));
    refused_by(last(&on_b.chat("m4", "hi").await), "turnsPerMinute");
    send(&mut on_a, "m5", Some("t2")).await;
    refused_by(last(&on_a.turn("m5").await), "turnsPerMinute");
    let mut bob = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=bob")).await.0;
    assert!(answered(&bob.chat("b1", "hi").await), "another user is not affected");

    // Both nodes read the same usage: 3 turns of 15 tokens.
    let expected =
        json!({"turns": 3, "promptTokens": 30, "completionTokens": 15, "totalTokens": 45, "estimatedTokens": 0});
    for node in &nodes {
        assert_eq!(usage_today(node, "alice").await, expected);
    }
    let sessions = admin(&nodes[1], "/admin/sessions?userId=alice").await;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(2), "{sessions}");

    // tokensPerDay across nodes: carol spends 60 tokens on a and b, then is refused on both.
    let limits = [("limits.perUser.tokensPerDay", SettingValue::from(60))];
    drop(nodes);
    let nodes = two_nodes(&redis, &agent, &limits).await;
    let mut carol_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=carol")).await.0;
    let mut carol_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=carol")).await.0;
    for n in 0..2 {
        assert!(answered(&carol_a.chat(&format!("a{n}"), "hi").await));
        send(&mut carol_b, &format!("b{n}"), Some("t")).await;
        assert!(answered(&carol_b.turn(&format!("b{n}")).await));
    }
    refused_by(last(&carol_a.chat("a9", "hi").await), "tokensPerDay");
    send(&mut carol_b, "b9", Some("t")).await;
    refused_by(last(&carol_b.turn("b9").await), "tokensPerDay");
    assert_eq!(usage_today(&nodes[0], "carol").await["totalTokens"], 60);
    let keys = redis.command(&["KEYS", "cs:usage:*"]);
    assert!(keys.contains("cs:usage:{carol}:"), "{keys}");
    let ttl: i64 = redis.command(&["TTL", keys.lines().find(|key| key.contains("carol")).unwrap()]).parse().unwrap();
    assert!(ttl > 300 * 86_400, "the usage expires after store.usageRetentionDays: {ttl}");
}

#[actix_rt::test]
async fn two_nodes_share_concurrent_turns_and_a_waiting_turn_completes() {
    let redis = RedisServer::start();
    let agent = paced_agent(8, Duration::from_millis(50));
    let nodes = two_nodes(&redis, &agent, &[("limits.perUser.concurrentTurns", 2.into())]).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    send(&mut on_a, "m1", Some("t1")).await;
    send(&mut on_b, "m2", Some("t2")).await;
    send(&mut on_a, "m3", Some("t3")).await;
    send(&mut on_b, "m4", Some("t4")).await;
    for (client, ids) in [(&mut on_a, ["m1", "m3"]), (&mut on_b, ["m2", "m4"])] {
        for id in ids {
            let frames = client.turn(id).await;
            assert!(answered(&frames), "a waiting turn is never refused: {frames:?}");
        }
    }
    assert_eq!(agent.requests().len(), 4);
    assert_eq!(agent.most_at_once(), 2, "never more than two of alice's turns at once, on both nodes together");
    eventually("every running turn was given back in Redis", || {
        let running = redis.command(&["ZCARD", "cs:running:{alice}"]);
        async move { running.trim() == "0" }
    })
    .await;
}

/// A node that dies (SIGKILL) holding one of alice's places under concurrentTurns
/// gives it back: its running turn expires in Redis, and alice's waiting turn on the
/// other node starts.
#[actix_rt::test]
async fn a_dead_nodes_running_turn_stops_counting_under_concurrent_turns() {
    let redis = RedisServer::start();
    let words: Vec<String> = (1..=200).map(|n| format!("w{n} ")).collect();
    let agent = FakeAgent::start(Arc::new(move |index, _| {
        if index == 0 {
            slowly(&words.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_millis(100))
        } else {
            answer_with(&["done"])
        }
    }));
    let limits = "[limits.perUser]\nconcurrentTurns = 1\n";
    let doomed =
        ready_child(&openai_config(&agent.url_v1(), "", &format!("{}{limits}", cluster_toml(&redis, "doomed")))).await;
    let survivor = ready_nodes(&redis, &["b"], &openai(&agent, &[("limits.perUser.concurrentTurns", 1.into())])).await;
    let mut on_doomed = WsClient::connect_welcomed(&doomed.ws_url("senderId=alice")).await.0;
    send(&mut on_doomed, "m1", Some("t1")).await;
    loop {
        if on_doomed.recv().await["type"] == "chat.stream" {
            break; // alice's one place is taken, on the doomed node
        }
    }
    let mut on_b = WsClient::connect_welcomed(&survivor[0].ws_url("senderId=alice")).await.0;
    send(&mut on_b, "m2", Some("t2")).await;
    assert_eq!(on_b.recv_within(Duration::from_millis(700)).await, None, "m2 waits for alice's place");
    drop(doomed.kill());
    let frames = on_b.turn("m2").await;
    assert!(answered(&frames), "the waiting turn ran once the dead node's place expired: {frames:?}");
}

/// The real process: usage written by a SIGTERM'd node is there when it starts again
/// (the shutdown waits for the last turn's usage to be written).
#[actix_rt::test]
async fn a_node_stopped_by_sigterm_keeps_the_days_usage() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[agent]\nkind = \"echo\"\nechoDelayMs = 0\n[channels.websocket.auth]\nenabled = false\n[store]\ndir = \"{store}\"\n";
    let environment = [("WS_ADMIN_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "info")];
    let mut first = ChildServer::start_in(dir.path(), config, &environment).await;
    let (mut alice, _) = WsClient::connect_welcomed(&first.ws_url("senderId=alice")).await;
    assert!(answered(&alice.chat("m1", "hi").await));
    first.terminate();
    let (status, _) = first.wait_for_exit().await;
    assert!(status.success(), "{status}");
    let second = ChildServer::start_in(dir.path(), config, &environment).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = get(&format!("http://{}", second.addr), "/admin/usage?userId=alice", Some(&bearer)).await;
    assert_eq!((status, &body["total"]["turns"]), (200, &json!(1)), "{body}");
}

/// Sends `chat.regenerate` with `new_id` and returns the frames of that turn.
async fn regenerate(client: &mut WsClient, new_id: &str) -> Vec<Value> {
    client.send_json(json!({"type": "chat.regenerate", "newMessageId": new_id})).await;
    client.turn(new_id).await
}

#[actix_rt::test]
async fn a_regeneration_is_a_turn_and_spends_the_days_tokens() {
    let agent = agent_of_15_tokens(Duration::ZERO);
    let limits = [("limits.perUser.turnsPerMinute", 3.into()), ("limits.perUser.tokensPerDay", 45.into())];
    let server = spawn_server(&openai(&agent, &limits));
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert!(answered(&alice.chat("m1", "hi").await));
    assert!(answered(&regenerate(&mut alice, "r1").await), "turn 2 of 3, tokens 30 of 45");
    assert!(answered(&regenerate(&mut alice, "r2").await), "turn 3 of 3, tokens 45 of 45");
    let refused = last(&regenerate(&mut alice, "r3").await).clone();
    assert_eq!(refused["code"], "quota_exceeded", "{refused}");
    assert_eq!(agent.requests().len(), 3, "the refused regeneration never reached the agent");
    assert_eq!(usage_today(&server, "alice").await["turns"], 3);

    // Over the day's tokens only, a regeneration is refused for them too.
    let server = spawn_server(&openai(&agent, &[("limits.perUser.tokensPerDay", 15.into())]));
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    assert!(answered(&bob.chat("b1", "hi").await));
    refused_by(last(&regenerate(&mut bob, "rb").await), "tokensPerDay");
}

#[actix_rt::test]
async fn a_turn_cut_by_its_threads_deletion_is_counted_as_a_turn() {
    let agent = paced_agent(40, Duration::from_millis(50));
    let server = spawn_server(&openai(&agent, &[]));
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert!(answered(&alice.chat("m0", "first").await));
    send(&mut alice, "m1", Some("t")).await;
    let mut other_tab = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    // The turn in `t` is streaming when its thread is deleted.
    loop {
        if alice.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    assert_eq!(send_delete(&mut other_tab, "t").await["type"], "chat.deleted");
    assert_eq!(last(&alice.turn("m1").await)["code"], "aborted");
    eventually("the cut turn counted", || async { usage_today(&server, "alice").await["turns"] == 2 }).await;
}

async fn send_delete(client: &mut WsClient, thread: &str) -> Value {
    client.send_json(json!({"type": "chat.delete", "threadId": thread})).await;
    loop {
        let frame = client.recv().await;
        if frame["type"] == "chat.deleted" || frame["type"] == "chat.error" {
            return frame;
        }
    }
}

/// A running turn whose entry vanished from Redis (Redis slow past its expiry) is put
/// back by its node's next refresh: it still runs, so it still counts.
#[actix_rt::test]
async fn a_running_turn_lost_from_redis_is_put_back_and_still_counts() {
    let redis = RedisServer::start();
    let agent = paced_agent(60, Duration::from_millis(50));
    let nodes = two_nodes(&redis, &agent, &[("limits.perUser.concurrentTurns", 1.into())]).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    send(&mut on_a, "m1", Some("t1")).await;
    loop {
        if on_a.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    redis.command(&["DEL", "cs:running:{alice}"]);
    eventually("the running turn put back in Redis", || {
        let running = redis.command(&["ZCARD", "cs:running:{alice}"]);
        async move { running.trim() == "1" }
    })
    .await;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    send(&mut on_b, "m2", Some("t2")).await;
    assert!(answered(&on_b.turn("m2").await));
    assert_eq!(agent.most_at_once(), 1, "the second turn waited for the first");
}
