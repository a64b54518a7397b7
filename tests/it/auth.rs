//! Authentication and identity (SPEC §2, §4) against a fake auth service on
//! 127.0.0.1: who a connection is, refusals with their reason and close 4401,
//! anonymous connections, the answer cache, env overrides, tokens absent from the
//! log, and that an authenticated user can never act as another one.

use std::time::Duration;

use clawsocket::config::{Environment, SettingValue};
use serde_json::{json, Value};

use crate::support::binary::ChildServer;
use crate::support::client::{last, Received};
use crate::support::fake_agent::{always, FakeAgent};
use crate::support::fake_auth::{dead_endpoint, Answer, AuthScript, FakeAuth};
use crate::support::server::{spawn_server_from, TestServer};
use crate::support::{spawn_server, WsClient};

/// The close code of a refused connection.
const AUTH_FAILED: u16 = 4401;

/// A fake auth service that knows `tok-alice` (user `u-alice`) and `tok-bob` (`u-bob`).
fn alice_and_bob() -> AuthScript {
    AuthScript::new()
        .user("tok-alice", json!({"userId": "u-alice", "username": "Alice", "plan": "pro"}))
        .user("tok-bob", json!({"userId": "u-bob", "username": "Bob"}))
}

/// A server whose auth (enabled, required unless `extra` says otherwise) asks `endpoint`.
fn server_with_auth(endpoint: &str, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut overrides: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", endpoint.into()),
        ("channels.websocket.auth.timeout", 2000.into()),
    ];
    overrides.extend(extra.iter().cloned());
    spawn_server(&overrides)
}

/// Connects to `url` (with `headers`) and reads the welcome; fails on a refusal.
async fn welcomed(url: &str, headers: &[(&str, &str)]) -> (WsClient, Value) {
    let mut client = WsClient::try_connect(url, headers).await.unwrap_or_else(|error| panic!("connect: {error}"));
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "chat.response", "expected the welcome: {welcome}");
    (client, welcome)
}

/// Connects to `url`, expects a `chat.error` with `code`, then the close; returns the
/// error and the close code.
async fn refused(url: &str, code: &str) -> (Value, Option<u16>) {
    let mut client = WsClient::try_connect(url, &[]).await.expect("the handshake completes");
    let error = client.recv().await;
    assert_eq!(error["type"], "chat.error", "a refusal is a chat.error: {error}");
    assert_eq!(error["code"], code, "{error}");
    let close = client.closed().await;
    (error, close)
}

/// `refused` with `auth_failed`, asserting the reason word and close 4401.
async fn assert_auth_failed(url: &str, reason: &str) {
    let (error, close) = refused(url, "auth_failed").await;
    let sentence = error["error"].as_str().unwrap_or_default();
    assert!(sentence.contains(reason), "the error names the reason {reason}: {error}");
    assert_eq!(close, Some(AUTH_FAILED));
}

#[actix_rt::test]
async fn a_good_token_gives_the_identity_and_session_of_the_auth_service() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    let (mut client, welcome) =
        welcomed(&server.ws_url("token=tok-alice&senderId=mallory&senderName=Mallory&lang=de"), &[]).await;
    assert_eq!(welcome["authenticated"], true);
    assert_eq!(welcome["senderId"], "u-alice");
    assert_eq!(welcome["senderName"], "Alice");
    let frames = client.chat("m1", "hello").await;
    assert_eq!(last(&frames)["sessionKey"], "agent:main:websocket:direct:u-alice");
    let expected = json!({"token": "tok-alice", "senderId": "mallory", "senderName": "Mallory", "lang": "de", "tokenType": "local"});
    assert_eq!(auth.requests(), [expected], "every URL parameter, plus tokenType");
}

#[actix_rt::test]
async fn the_auth_services_user_data_reaches_the_agent_but_the_token_does_not() {
    let auth = FakeAuth::start(alice_and_bob());
    let agent = FakeAgent::start(always(&["noted"]));
    let server = server_with_auth(
        &auth.url,
        &[("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into()), ("agent.model", "test-model".into())],
    );
    let (mut client, _) = welcomed(&server.ws_url("token=tok-alice"), &[]).await;
    assert_eq!(last(&client.chat("m1", "hello").await)["content"], "noted");
    let body = agent.requests()[0].body.to_string();
    assert!(body.contains(r#"\"plan\":\"pro\""#), "the auth data is context: {body}");
    // The openai backend names the sender in the message's name field (senderStyle auto).
    let user = &agent.requests()[0].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((user["content"].as_str(), user["name"].as_str()), (Some("hello"), Some("Alice")), "{body}");
    assert!(!body.contains("tok-alice"), "agent.forwardUserToken is off: {body}");
}

#[actix_rt::test]
async fn with_forward_user_token_the_agent_gets_the_token_as_context() {
    let auth = FakeAuth::start(alice_and_bob());
    let agent = FakeAgent::start(always(&["noted"]));
    let server = server_with_auth(
        &auth.url,
        &[
            ("agent.kind", "openai".into()),
            ("agent.url", agent.url_v1().into()),
            ("agent.forwardUserToken", true.into()),
        ],
    );
    let (mut client, _) = welcomed(&server.ws_url(""), &[("Authorization", "Bearer tok-alice")]).await;
    assert_eq!(last(&client.chat("m1", "hello").await)["content"], "noted");
    let body = agent.requests()[0].body.to_string();
    assert!(body.contains(r#"\"userToken\":\"tok-alice\""#), "the token is forwarded as context: {body}");
}

#[actix_rt::test]
async fn a_given_token_type_is_passed_as_it_is() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    welcomed(&server.ws_url("token=tok-bob&tokenType=jwt"), &[]).await;
    assert_eq!(auth.requests(), [json!({"token": "tok-bob", "tokenType": "jwt"})]);
}

#[actix_rt::test]
async fn a_missing_token_is_refused_with_token_required_then_4401() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    let (error, close) = refused(&server.ws_url("senderId=u-alice"), "token_required").await;
    assert!(error["error"].as_str().is_some_and(|sentence| sentence.contains("token")), "{error}");
    assert_eq!(close, Some(AUTH_FAILED));
    assert_eq!(auth.calls(), 0, "nothing to verify without a token");
}

#[actix_rt::test]
async fn a_bad_token_is_refused_with_invalid_token_then_4401() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    assert_auth_failed(&server.ws_url("token=tok-nobody&senderId=u-alice"), "invalid_token").await;
}

#[actix_rt::test]
async fn a_refused_connection_never_reaches_an_agent() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    let mut client = WsClient::try_connect(&server.ws_url("token=tok-nobody"), &[]).await.expect("handshake");
    client.send_json(json!({"type": "chat.send", "content": "let me in", "messageId": "m1"})).await;
    let error = client.recv().await;
    assert_eq!(error["code"], "auth_failed", "the refusal, and no agent frame: {error}");
    assert_eq!(client.closed().await, Some(AUTH_FAILED));
    let counts = server.registries().await;
    assert_eq!((counts.connections, counts.sessions), (0, 0), "no connection actor, no session");
}

#[actix_rt::test]
async fn a_slow_auth_service_fails_within_the_timeout() {
    let auth = FakeAuth::start(alice_and_bob().delay(Duration::from_secs(2)));
    let server = server_with_auth(&auth.url, &[("channels.websocket.auth.timeout", 200.into())]);
    assert_auth_failed(&server.ws_url("token=tok-alice"), "timeout").await;
}

#[actix_rt::test]
async fn an_unreachable_auth_service_is_service_unavailable() {
    let server = server_with_auth(&dead_endpoint(), &[]);
    assert_auth_failed(&server.ws_url("token=tok-alice"), "service_unavailable").await;
}

#[actix_rt::test]
async fn a_non_2xx_or_non_json_answer_is_a_bad_response() {
    for answer in [Answer::Status(500), Answer::NotJson] {
        let auth = FakeAuth::start(alice_and_bob().answer(answer));
        let server = server_with_auth(&auth.url, &[]);
        assert_auth_failed(&server.ws_url("token=tok-alice"), "bad_response").await;
    }
}

#[actix_rt::test]
async fn a_401_answer_is_an_invalid_token() {
    let auth = FakeAuth::start(alice_and_bob().answer(Answer::Status(401)));
    let server = server_with_auth(&auth.url, &[]);
    assert_auth_failed(&server.ws_url("token=tok-alice"), "invalid_token").await;
}

#[actix_rt::test]
async fn when_auth_is_not_required_a_missing_or_bad_token_is_a_guest() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[("channels.websocket.auth.required", false.into())]);
    for query in ["senderId=visitor&senderName=Guest", "senderId=visitor&senderName=Guest&token=tok-nobody"] {
        let (mut client, welcome) = welcomed(&server.ws_url(query), &[]).await;
        assert_eq!(welcome["authenticated"], false, "{query}");
        assert_eq!(welcome["senderId"], "guest:visitor", "a guest's id lives under guest:");
        let frames = client.chat("m1", "hi").await;
        assert_eq!(last(&frames)["content"], "echo: hi", "a guest's turn completes");
        assert_eq!(last(&frames)["sessionKey"], "agent:main:websocket:direct:guest:visitor");
    }
    let (_client, welcome) = welcomed(&server.ws_url("senderId=visitor&token=tok-bob"), &[]).await;
    assert_eq!((welcome["authenticated"].clone(), welcome["senderId"].clone()), (json!(true), json!("u-bob")));
}

#[actix_rt::test]
async fn an_unreachable_auth_service_leaves_an_optional_auth_a_guest() {
    let server = server_with_auth(&dead_endpoint(), &[("channels.websocket.auth.required", false.into())]);
    let (mut client, welcome) = welcomed(&server.ws_url("senderId=visitor&token=tok-alice"), &[]).await;
    assert_eq!((welcome["authenticated"].clone(), welcome["senderId"].clone()), (json!(false), json!("guest:visitor")));
    assert_eq!(last(&client.chat("m1", "hi").await)["type"], "chat.response");
}

#[actix_rt::test]
async fn the_auth_env_vars_beat_the_config_file() {
    let auth = FakeAuth::start(alice_and_bob());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("clawsocket.json");
    let config =
        json!({"channels": {"websocket": {"auth": {"enabled": false, "endpoint": dead_endpoint(), "timeout": 2000}}}});
    std::fs::write(&file, config.to_string()).expect("write config");
    let environment: Environment =
        [("WS_AUTH_ENABLED", "1"), ("WS_AUTH_ENDPOINT", auth.url.as_str())].map(|(k, v)| (k.into(), v.into())).into();
    let server = spawn_server_from(Some(&file), &environment, &[]);
    let (_client, welcome) = welcomed(&server.ws_url("token=tok-alice"), &[]).await;
    assert_eq!(welcome["authenticated"], true, "WS_AUTH_ENABLED and WS_AUTH_ENDPOINT won: {welcome}");
    assert_eq!(auth.calls(), 1);
    let (_, close) = refused(&server.ws_url("senderId=guest"), "token_required").await;
    assert_eq!(close, Some(AUTH_FAILED));

    let config =
        json!({"channels": {"websocket": {"auth": {"enabled": true, "endpoint": auth.url, "required": true}}}});
    std::fs::write(&file, config.to_string()).expect("write config");
    let environment: Environment = [("WS_AUTH_ENABLED".to_string(), "false".to_string())].into();
    let server = spawn_server_from(Some(&file), &environment, &[]);
    let (_client, welcome) = welcomed(&server.ws_url("senderId=guest"), &[]).await;
    assert_eq!(welcome["authenticated"], false, "WS_AUTH_ENABLED=false switched auth off: {welcome}");
    assert_eq!(auth.calls(), 1, "auth off asks nobody");
}

#[actix_rt::test]
async fn an_authorization_bearer_header_works_like_the_token_parameter() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    let (mut client, welcome) = welcomed(&server.ws_url("senderId=x"), &[("Authorization", "Bearer tok-bob")]).await;
    assert_eq!((welcome["authenticated"].clone(), welcome["senderId"].clone()), (json!(true), json!("u-bob")));
    assert_eq!(last(&client.chat("m1", "hi").await)["sessionKey"], "agent:main:websocket:direct:u-bob");
    assert_eq!(auth.requests(), [json!({"token": "tok-bob", "senderId": "x", "tokenType": "local"})]);
    let mut client = WsClient::try_connect(&server.ws_url(""), &[("Authorization", "Bearer tok-nobody")])
        .await
        .expect("the handshake completes");
    assert_eq!(client.recv().await["code"], "auth_failed");
    assert_eq!(client.closed().await, Some(AUTH_FAILED));
}

#[actix_rt::test]
async fn without_a_cache_every_connection_asks_the_auth_service() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[("channels.websocket.auth.cacheTtl", 0.into())]);
    for _ in 0..2 {
        welcomed(&server.ws_url("token=tok-alice"), &[]).await;
    }
    assert_eq!(auth.calls(), 2);
}

#[actix_rt::test]
async fn with_a_cache_a_verified_token_is_asked_about_once() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[("channels.websocket.auth.cacheTtl", 60_000.into())]);
    for _ in 0..3 {
        let (_client, welcome) = welcomed(&server.ws_url("token=tok-alice"), &[]).await;
        assert_eq!(welcome["senderId"], "u-alice");
    }
    assert_eq!(auth.calls(), 1, "the answer was reused");
    welcomed(&server.ws_url("token=tok-bob"), &[]).await;
    assert_eq!(auth.calls(), 2, "another token is asked about");
    for _ in 0..2 {
        refused(&server.ws_url("token=tok-nobody"), "auth_failed").await;
    }
    assert_eq!(auth.calls(), 4, "refusals are not cached");
}

#[actix_rt::test]
async fn an_authenticated_user_cannot_act_as_another_sender() {
    let auth = FakeAuth::start(alice_and_bob());
    let server = server_with_auth(&auth.url, &[]);
    let (mut bob, _) = welcomed(&server.ws_url("token=tok-bob"), &[]).await;
    bob.chat("b1", "bob's secret").await;
    let (mut alice, _) = welcomed(&server.ws_url("token=tok-alice"), &[]).await;

    alice
        .send_json(
            json!({"type": "chat.send", "content": "hi", "messageId": "a1", "senderId": "u-bob", "senderName": "Bob"}),
        )
        .await;
    let answer = last(&alice.turn("a1").await).clone();
    assert_eq!(answer["sessionKey"], "agent:main:websocket:direct:u-alice", "a message's senderId is ignored");

    alice.send_json(json!({"type": "chat.history", "senderId": "u-bob"})).await;
    let history = alice.recv().await;
    assert_eq!(history["type"], "chat.history");
    assert_eq!(history["sessionKey"], "agent:main:websocket:direct:u-alice");
    assert!(!history.to_string().contains("secret"), "bob's conversation stays his: {history}");
    let user_turn = &history["messages"][0];
    assert_eq!((user_turn["senderId"].clone(), user_turn["senderName"].clone()), (json!("u-alice"), json!("Alice")));

    for kind in ["chat.join", "chat.leave"] {
        alice.send_json(json!({"type": kind, "senderId": "u-bob"})).await;
        assert_eq!(alice.recv().await["sessionKey"], "agent:main:websocket:direct:u-alice", "{kind}");
    }
    alice.send_json(json!({"type": "chat.abort", "senderId": "u-bob"})).await;
    bob.chat("b2", "still mine").await;
    alice.send_json(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await["type"], "pong", "alice received nothing of bob's turn");

    bob.send_json(json!({"type": "chat.history"})).await;
    let history = bob.recv().await;
    assert_eq!(history["sessionKey"], "agent:main:websocket:direct:u-bob");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(4), "bob's two turns, unaborted: {history}");
}

#[actix_rt::test]
async fn the_dm_allowlist_lets_listed_senders_talk_and_forbids_others() {
    let auth = FakeAuth::start(alice_and_bob());
    let allow_from: SettingValue = vec!["u-alice"].into();
    let server = server_with_auth(
        &auth.url,
        &[("channels.websocket.dmPolicy", "allowlist".into()), ("channels.websocket.allowFrom", allow_from)],
    );
    let (mut alice, _) = welcomed(&server.ws_url("token=tok-alice"), &[]).await;
    assert_eq!(last(&alice.chat("a1", "hi").await)["type"], "chat.response");
    let (mut bob, _) = welcomed(&server.ws_url("token=tok-bob"), &[]).await;
    bob.send_json(json!({"type": "chat.send", "content": "hi", "messageId": "b1", "senderId": "u-alice"})).await;
    let refused = bob.recv().await;
    assert_eq!((refused["type"].clone(), refused["code"].clone()), (json!("chat.error"), json!("forbidden")));
    assert_eq!(refused["messageId"], "b1");
}

/// Tokens that must never reach a log line: distinctive, so a match is no accident.
const GOOD_TOKEN: &str = "Tok3n-good-7f9c2e";
const HEADER_TOKEN: &str = "Tok3n-header-5a1d8b";
const BAD_TOKEN: &str = "Tok3n-bad-c04e61";
const SECRET_PARAM: &str = "Param-value-9b3f27";

#[actix_rt::test]
async fn tokens_never_appear_in_the_log_even_at_trace_level() {
    let auth = FakeAuth::start(
        AuthScript::new()
            .user(GOOD_TOKEN, json!({"userId": "u-good", "username": "Good"}))
            .user(HEADER_TOKEN, json!({"userId": "u-header", "username": "Header"})),
    );
    let config = format!(
        "[channels.websocket.auth]\nenabled = true\nendpoint = \"{}\"\ntimeout = 2000\nrequired = true\n\
         [agent]\nkind = \"echo\"\nechoDelayMs = 0\n[store]\ndir = \"{{store}}\"\n",
        auth.url
    );
    let server = ChildServer::start(&config, &[]).await;
    let (mut client, _) = welcomed(&server.ws_url(&format!("token={GOOD_TOKEN}&extra={SECRET_PARAM}")), &[]).await;
    assert_eq!(last(&client.chat("m1", "hello").await)["type"], "chat.response");
    client.close().await;
    let bearer = format!("Bearer {HEADER_TOKEN}");
    let (mut client, _) = welcomed(&server.ws_url("senderId=x"), &[("Authorization", &bearer)]).await;
    assert_eq!(last(&client.chat("m2", "hello").await)["type"], "chat.response");
    let mut refused_client =
        WsClient::try_connect(&server.ws_url(&format!("token={BAD_TOKEN}")), &[]).await.expect("handshake");
    assert!(matches!(refused_client.next().await, Received::Json(error) if error["code"] == "auth_failed"));
    assert_eq!(auth.calls(), 3);

    let log = server.kill();
    assert!(log.contains("TRACE") && log.contains("refused (invalid_token)"), "the log was captured:\n{log}");
    for secret in [GOOD_TOKEN, HEADER_TOKEN, BAD_TOKEN, SECRET_PARAM] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}
