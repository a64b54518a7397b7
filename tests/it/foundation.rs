//! The foundation: welcome, one streamed turn in both modes, identity and session
//! keys, and bad input answered with errors on a connection that stays open.

use serde_json::{json, Value};

use crate::support::client::{last, streamed_text, streams};
use crate::support::{spawn_server, WsClient};

/// Typing first, then deltas with seq 1, 2, 3…, `done:false`, then one `done:true` answer.
fn assert_well_formed_turn(frames: &[Value], message_id: &str) {
    assert_eq!(frames[0]["type"], "chat.typing", "{frames:?}");
    assert_eq!(frames[0]["messageId"], message_id);
    let deltas = streams(frames);
    assert!(deltas.len() >= 2, "the echo agent streams word by word: {frames:?}");
    for (index, delta) in deltas.iter().enumerate() {
        assert_eq!(delta["seq"], index as u64 + 1, "seq counts 1, 2, 3…: {frames:?}");
        assert_eq!(delta["done"], false);
        assert_eq!(delta["messageId"], message_id);
    }
    let answer = last(frames);
    assert_eq!(answer["type"], "chat.response");
    assert_eq!(answer["done"], true);
    assert_eq!(answer["messageId"], message_id);
}

#[actix_rt::test]
async fn welcome_frame_names_the_connection_and_sender() {
    let server = spawn_server(&[]);
    let (_client, welcome) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    assert_eq!(welcome["content"], "Connected to WebSocket chat server");
    assert_eq!(welcome["senderId"], "user1");
    assert_eq!(welcome["senderName"], "John");
    assert_eq!(welcome["authenticated"], false);
    assert!(welcome["connectionId"].as_str().is_some_and(|id| !id.is_empty()));
}

#[actix_rt::test]
async fn without_sender_id_the_connection_id_is_the_identity() {
    let server = spawn_server(&[]);
    let (_client, welcome) = WsClient::connect_welcomed(&server.ws_url("")).await;
    assert_eq!(welcome["senderId"], welcome["connectionId"]);
}

#[actix_rt::test]
async fn a_message_streams_deltas_that_concatenate_to_the_answer() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    let frames = client.chat("m1", "Hello, how are you?").await;
    assert_well_formed_turn(&frames, "m1");
    assert_eq!(streamed_text(&frames), "echo: Hello, how are you?");
    let answer = last(&frames);
    assert_eq!(answer["content"], "echo: Hello, how are you?");
    assert_eq!(answer["sessionKey"], "agent:main:websocket:direct:user1");
    assert_eq!(answer["agentId"], "main");
    assert_eq!(frames[0]["sessionKey"], "agent:main:websocket:direct:user1");
}

#[actix_rt::test]
async fn cumulative_mode_sends_the_whole_text_so_far() {
    let server = spawn_server(&[("channels.websocket.streamMode", "cumulative".into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let frames = client.chat("m1", "one two three").await;
    assert_well_formed_turn(&frames, "m1");
    let texts: Vec<&str> = streams(&frames).iter().map(|frame| frame["content"].as_str().unwrap_or("")).collect();
    assert_eq!(texts, ["echo:", "echo: one", "echo: one two", "echo: one two three"]);
    assert_eq!(last(&frames)["content"], "echo: one two three");
}

#[actix_rt::test]
async fn a_message_id_is_generated_when_absent() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client.send_json(json!({"type": "chat.send", "content": "Hello!"})).await;
    let typing = client.recv().await;
    let message_id = typing["messageId"].as_str().expect("typing carries the generated id").to_string();
    assert!(!message_id.is_empty());
    let frames = client.turn(&message_id).await;
    assert_eq!(last(&frames)["content"], "echo: Hello!");
}

#[actix_rt::test]
async fn a_custom_sender_on_an_anonymous_connection_gets_its_own_session() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client
        .send_json(json!({"type": "chat.send", "content": "Hi there!", "senderId": "user_123", "senderName": "Alice", "messageId": "m1"}))
        .await;
    let frames = client.turn("m1").await;
    assert_eq!(last(&frames)["sessionKey"], "agent:main:websocket:direct:user_123");
}

#[actix_rt::test]
async fn a_group_message_uses_the_group_session() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client
        .send_json(json!({"type": "chat.send", "content": "Hello everyone!", "chatType": "group", "groupId": "dev-team", "groupSubject": "Dev Team", "messageId": "g1"}))
        .await;
    let frames = client.turn("g1").await;
    assert_eq!(last(&frames)["sessionKey"], "agent:main:websocket:group:dev-team");
    assert_eq!(last(&frames)["content"], "echo: Hello everyone!");
}

#[actix_rt::test]
async fn a_thread_and_a_colon_in_an_id_cannot_forge_another_key() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client.send_json(json!({"type": "chat.send", "content": "a", "threadId": "t1", "messageId": "m1"})).await;
    assert_eq!(last(&client.turn("m1").await)["sessionKey"], "agent:main:websocket:direct:user1:thread:t1");
    client
        .send_json(json!({"type": "chat.send", "content": "b", "chatType": "group", "groupId": "g:thread:t1", "messageId": "m2"}))
        .await;
    assert_eq!(last(&client.turn("m2").await)["sessionKey"], "agent:main:websocket:group:g%3Athread%3At1");
}

#[actix_rt::test]
async fn two_users_have_separate_sessions_and_histories() {
    let server = spawn_server(&[]);
    let (mut alice, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (mut bob, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await;
    let alice_turn = alice.chat("a1", "I am Alice").await;
    let bob_turn = bob.chat("b1", "I am Bob").await;
    assert_eq!(last(&alice_turn)["sessionKey"], "agent:main:websocket:direct:alice");
    assert_eq!(last(&bob_turn)["sessionKey"], "agent:main:websocket:direct:bob");
    alice.send_json(json!({"type": "chat.history"})).await;
    let history = alice.recv().await;
    assert_eq!(history["type"], "chat.history");
    let contents: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["I am Alice", "echo: I am Alice"]);
}

#[actix_rt::test]
async fn a_binary_frame_holding_json_is_accepted() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client.send_binary(br#"{"type":"chat.send","content":"binary hello","messageId":"b1"}"#.to_vec()).await;
    assert_eq!(last(&client.turn("b1").await)["content"], "echo: binary hello");
}

#[actix_rt::test]
async fn bad_input_gets_a_coded_error_and_the_connection_stays_open() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let cases: [(&str, &str, &str); 9] = [
        ("not json at all", "invalid_json", "JSON"),
        ("[1,2,3]", "invalid_message", "object"),
        (r#"{"content":"no type"}"#, "invalid_message", "`type`"),
        (r#"{"type":7}"#, "invalid_message", "`type`"),
        (r#"{"type":"chat.dance"}"#, "unsupported_type", "chat.dance"),
        (r#"{"type":"chat.send"}"#, "invalid_message", "content"),
        (r#"{"type":"chat.send","content":""}"#, "invalid_message", "content"),
        (r#"{"type":"chat.send","content":42}"#, "invalid_message", "content"),
        (r#"{"type":"chat.send","content":"x","chatType":"group"}"#, "invalid_message", "groupId"),
    ];
    for (frame, code, named) in cases {
        client.send_text(frame).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "chat.error", "{frame} → {error}");
        assert_eq!(error["code"], code, "{frame} → {error}");
        let sentence = error["error"].as_str().unwrap_or_default();
        assert!(sentence.contains(named), "{frame}: the error names {named}: {sentence}");
    }
    client.send_text(r#"{"type":"chat.send","content":"x","messageId":"m1","customData":"nope"}"#).await;
    let error = client.recv().await;
    assert_eq!((error["code"].as_str(), error["messageId"].as_str()), (Some("invalid_message"), Some("m1")));
    assert!(error["error"].as_str().unwrap_or_default().contains("customData"));
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong");
    let frames = client.chat("ok", "still here").await;
    assert_eq!(last(&frames)["content"], "echo: still here");
}

#[actix_rt::test]
async fn closed_connections_and_idle_sessions_leave_the_registries() {
    let server = spawn_server(&[("limits.sessionIdleMs", 50.into())]);
    let (mut alice, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (mut bob, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await;
    alice.chat("a1", "hello").await;
    bob.chat("b1", "hello").await;
    let counts = server.registries().await;
    assert_eq!((counts.connections, counts.sessions), (2, 2));
    alice.close().await;
    bob.close().await;
    crate::support::eventually("registries empty", || async {
        let counts = server.registries().await;
        counts.connections == 0 && counts.sessions == 0
    })
    .await;
}

#[actix_rt::test]
async fn a_client_close_is_answered_with_a_close() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client.send_text(r#"{"type":"chat.send","content":"x","messageId":"m1"}"#).await;
    client.turn("m1").await;
    client.send_close().await;
    assert_eq!(client.closed().await, Some(1000));
}

#[actix_rt::test]
async fn a_disabled_channel_serves_no_websocket_but_stays_healthy() {
    let server = spawn_server(&[("channels.websocket.enabled", false.into())]);
    let refused = WsClient::try_connect(&server.ws_url("senderId=user1"), &[]).await.err();
    assert_eq!(refused.as_deref(), Some("404"));
    let health = awc::Client::new().get(server.http_url("/healthz")).send().await.expect("healthz answers");
    assert_eq!(health.status().as_u16(), 200);
}
