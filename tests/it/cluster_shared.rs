//! What nodes share besides sessions (SPEC §14): the auth cache and the per-user
//! connection counts, on a real `redis-server`, with in-process nodes (and the binary
//! where a node must die by SIGKILL). Redis down never stops a user.

use std::time::{Duration, Instant};

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::binary::openai_config;
use crate::support::cluster::{cluster_toml, ready_child, ready_nodes, wait_for_readyz};
use crate::support::fake_agent::{always, FakeAgent};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::redis::RedisServer;
use crate::support::WsClient;

/// `limits.perUser.maxConnections` in the connection-count tests.
const MAX: u64 = 2;

/// A fake auth service that knows `tok-alice` (user `u-alice`) and `tok-bob` (`u-bob`).
fn alice_and_bob() -> FakeAuth {
    FakeAuth::start(
        AuthScript::new()
            .user("tok-alice", json!({"userId": "u-alice", "username": "Alice", "plan": "pro"}))
            .user("tok-bob", json!({"userId": "u-bob", "username": "Bob"})),
    )
}

/// Required auth against `endpoint`, answers cached for a minute.
fn with_auth(endpoint: &str) -> Vec<(&'static str, SettingValue)> {
    vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", endpoint.into()),
        ("channels.websocket.auth.timeout", 2000.into()),
        ("channels.websocket.auth.cacheTtl", 60_000.into()),
    ]
}

fn with_max_connections() -> Vec<(&'static str, SettingValue)> {
    vec![("limits.perUser.maxConnections", MAX.into())]
}

/// Connects to `url` and reads the welcome; fails on a refusal.
async fn welcomed(url: &str) -> (WsClient, Value) {
    let mut client = WsClient::try_connect(url, &[]).await.unwrap_or_else(|error| panic!("connect: {error}"));
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "chat.response", "expected the welcome: {welcome}");
    (client, welcome)
}

/// Asserts that a handshake to `url` is refused with HTTP 429.
async fn assert_too_many(url: &str) {
    let refused = WsClient::try_connect(url, &[]).await.err();
    assert_eq!(refused.as_deref(), Some("429"), "{url}: the handshake is refused with 429");
}

/// Connects to `url` as soon as it is not refused with 429 any more; fails the test
/// after 10 s (a hang, not a timing claim).
async fn connect_once_admitted(url: &str) -> WsClient {
    for _ in 0..1000 {
        match WsClient::try_connect(url, &[]).await {
            Ok(client) => return client,
            Err(status) => assert_eq!(status, "429", "only the limit may refuse it"),
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} was still refused with 429 after 10 s");
}

/// The lines `redis-cli` printed (a list reply is one item a line).
fn lines(reply: &str) -> Vec<String> {
    reply.lines().map(str::to_string).filter(|line| !line.is_empty()).collect()
}

// The auth cache.

#[actix_rt::test]
async fn a_token_verified_on_one_node_is_not_asked_about_again_on_another() {
    let redis = RedisServer::start();
    let auth = alice_and_bob();
    let nodes = ready_nodes(&redis, &["a", "b"], &with_auth(&auth.url)).await;

    let (_on_a, welcome) = welcomed(&nodes[0].ws_url("token=tok-alice")).await;
    assert_eq!(welcome["senderId"], "u-alice");
    assert_eq!(auth.calls(), 1);
    let (_on_b, welcome) = welcomed(&nodes[1].ws_url("token=tok-alice")).await;
    assert_eq!((&welcome["senderId"], &welcome["authenticated"]), (&json!("u-alice"), &json!(true)), "{welcome}");
    assert_eq!(auth.calls(), 1, "node b used node a's answer");

    let keys = lines(&redis.command(&["KEYS", "cs:auth:*"]));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let digest = keys[0].strip_prefix("cs:auth:{").and_then(|rest| rest.strip_suffix('}')).expect("cs:auth:{…}");
    assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "a SHA-256: {digest}");
    let stored: Value = serde_json::from_str(&redis.command(&["GET", &keys[0]])).expect("the answer as JSON");
    assert_eq!(stored, json!({"userId": "u-alice", "username": "Alice", "plan": "pro"}));
    let left: u64 = redis.command(&["PTTL", &keys[0]]).parse().expect("a PTTL");
    assert!(left > 0 && left <= 60_000, "it expires with auth.cacheTtl: {left} ms");
    for key in lines(&redis.command(&["KEYS", "*"])) {
        assert!(!key.contains("tok-"), "no token in a key: {key}");
    }
}

#[actix_rt::test]
async fn refusals_are_not_shared_and_each_node_asks_about_them() {
    let redis = RedisServer::start();
    let auth = alice_and_bob();
    let nodes = ready_nodes(&redis, &["a", "b"], &with_auth(&auth.url)).await;
    for node in &nodes {
        let mut client = WsClient::try_connect(&node.ws_url("token=tok-nobody"), &[]).await.expect("a handshake");
        assert_eq!(client.recv().await["code"], "auth_failed");
    }
    assert_eq!(auth.calls(), 2);
    assert!(lines(&redis.command(&["KEYS", "cs:auth:*"])).is_empty());
}

#[actix_rt::test]
async fn with_redis_down_logins_still_work_by_asking_the_auth_service() {
    let mut redis = RedisServer::start();
    let auth = alice_and_bob();
    let nodes = ready_nodes(&redis, &["a", "b"], &with_auth(&auth.url)).await;
    welcomed(&nodes[0].ws_url("token=tok-alice")).await;

    redis.kill();
    wait_for_readyz(&nodes[1].http_url("/readyz"), 503).await;
    let (_bob, welcome) = welcomed(&nodes[1].ws_url("token=tok-bob")).await;
    assert_eq!(welcome["senderId"], "u-bob", "the cache being down fails no login");
    let (_alice, welcome) = welcomed(&nodes[1].ws_url("token=tok-alice")).await;
    assert_eq!(welcome["senderId"], "u-alice");
    assert_eq!(auth.calls(), 3, "both asked the auth service");
    welcomed(&nodes[0].ws_url("token=tok-alice")).await;
    assert_eq!(auth.calls(), 3, "node a's own answer still serves it");

    redis.restart();
    wait_for_readyz(&nodes[0].http_url("/readyz"), 200).await;
    welcomed(&nodes[0].ws_url("token=tok-bob")).await;
    assert_eq!(auth.calls(), 4, "node b could not share its answer while Redis was down");
    welcomed(&nodes[1].ws_url("token=tok-bob")).await;
    assert_eq!(auth.calls(), 4, "node b keeps its own");
}

// The per-user connection counts.

#[actix_rt::test]
async fn a_users_connections_on_every_node_count_against_max_connections() {
    let redis = RedisServer::start();
    let nodes = ready_nodes(&redis, &["a", "b"], &with_max_connections()).await;
    let (on_a, on_b) = (nodes[0].ws_url("senderId=alice"), nodes[1].ws_url("senderId=alice"));
    let (first, _) = welcomed(&on_a).await;
    let (_second, _) = welcomed(&on_b).await;
    assert_too_many(&on_a).await;
    assert_too_many(&on_b).await;
    welcomed(&nodes[1].ws_url("senderId=bob")).await;

    first.close().await;
    let _third = connect_once_admitted(&on_b).await;
    assert_eq!(redis.command(&["HGET", "cs:conns:{alice}", "b"]), "2");
    assert_too_many(&on_a).await;
}

#[actix_rt::test]
async fn a_killed_node_stops_counting_its_users_connections_within_seconds() {
    let redis = RedisServer::start();
    let agent = FakeAgent::start(always(&["ok"]));
    let rest = format!("[limits.perUser]\nmaxConnections = {MAX}\n{}", cluster_toml(&redis, "doomed"));
    let doomed = ready_child(&openai_config(&agent.url_v1(), "", &rest)).await;
    let nodes = ready_nodes(&redis, &["b"], &with_max_connections()).await;
    let survivor = &nodes[0];
    let _held: Vec<WsClient> =
        vec![welcomed(&doomed.ws_url("senderId=alice")).await.0, welcomed(&doomed.ws_url("senderId=alice")).await.0];
    assert_too_many(&survivor.ws_url("senderId=alice")).await;

    doomed.kill();
    let killed = Instant::now();
    let _first = connect_once_admitted(&survivor.ws_url("senderId=alice")).await;
    let freed_after = killed.elapsed();
    let _second = welcomed(&survivor.ws_url("senderId=alice")).await;
    assert_eq!(redis.command(&["HGETALL", "cs:conns:{alice}"]), "b\n2", "the dead node's field is gone");
    eprintln!("the killed node's connections stopped counting after {freed_after:?}");
}

#[actix_rt::test]
async fn a_node_restarted_under_the_same_id_forgets_the_connections_of_its_past_life() {
    let redis = RedisServer::start();
    // What a node that crashed a moment ago left: two connections, and its alive key
    // (which the restarted node keeps alive from now on).
    redis.command(&["HSET", "cs:conns:{alice}", "a", "2"]);
    redis.command(&["SADD", "cs:node-users:{a}", "alice"]);
    redis.command(&["SET", "cs:alive:{a}", "1", "PX", "60000"]);
    let nodes = ready_nodes(&redis, &["a", "b"], &with_max_connections()).await;
    let _on_b = connect_once_admitted(&nodes[1].ws_url("senderId=alice")).await;
    let _on_a = welcomed(&nodes[0].ws_url("senderId=alice")).await;
    assert_too_many(&nodes[1].ws_url("senderId=alice")).await;
    let mut fields = lines(&redis.command(&["HGETALL", "cs:conns:{alice}"]));
    fields.sort();
    assert_eq!(fields, ["1", "1", "a", "b"], "one each, the old two forgotten");
}

#[actix_rt::test]
async fn with_redis_down_a_handshake_counts_this_nodes_connections_and_redis_catches_up() {
    let mut redis = RedisServer::start();
    let nodes = ready_nodes(&redis, &["a", "b"], &with_max_connections()).await;
    let (on_a, on_b) = (nodes[0].ws_url("senderId=alice"), nodes[1].ws_url("senderId=alice"));
    let _before = welcomed(&on_a).await;

    redis.kill();
    for node in &nodes {
        wait_for_readyz(&node.http_url("/readyz"), 503).await;
    }
    let _while_down = welcomed(&on_a).await;
    assert_too_many(&on_a).await;
    let (on_b_while_down, _) = welcomed(&on_b).await;

    redis.restart();
    for node in &nodes {
        wait_for_readyz(&node.http_url("/readyz"), 200).await;
    }
    let counted = |node: &str| redis.command(&["HGET", "cs:conns:{alice}", node]);
    crate::support::eventually("both nodes wrote their counts again", || {
        let caught_up = counted("a") == "2" && counted("b") == "1";
        async move { caught_up }
    })
    .await;
    assert_too_many(&on_b).await;
    on_b_while_down.close().await;
    crate::support::eventually("b gave its place back", || {
        let gone = counted("b").is_empty();
        async move { gone }
    })
    .await;
    assert_too_many(&on_b).await;
}
