//! Everything a client can make the server hold has a bound (SPEC §8), and crossing
//! it costs only that client: subscriptions per connection, unfinished fragmented
//! messages (in time, and in bytes server-wide), connections per user, and text that
//! is not UTF-8 (1007).

use std::time::Duration;

use actix_http::ws::Item;
use awc::ws::Message;
use bytes::Bytes;
use serde_json::json;

use crate::support::client::last;
use crate::support::{eventually, spawn_server, WsClient};

const CLOSE_INVALID_UTF8: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

fn thread_send(thread: &str, id: &str) -> serde_json::Value {
    json!({"type": "chat.send", "content": "hi", "threadId": thread, "messageId": id})
}

#[actix_rt::test]
async fn a_connection_holds_at_most_max_subscriptions_sessions() {
    let server = spawn_server(&[("limits.maxSubscriptions", 3.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    for thread in ["t1", "t2", "t3"] {
        client.send_json(thread_send(thread, thread)).await;
        assert_eq!(last(&client.turn(thread).await)["type"], "chat.response");
    }
    client.send_json(thread_send("t4", "m4")).await;
    let refused = client.recv().await;
    assert_eq!((refused["code"].as_str(), refused["messageId"].as_str()), (Some("quota_exceeded"), Some("m4")));
    assert!(refused["error"].as_str().unwrap().contains("limits.maxSubscriptions"), "{refused}");
    client.send_json(json!({"type": "chat.join", "threadId": "t5"})).await;
    assert_eq!(client.recv().await["code"], "quota_exceeded", "a join subscribes too");
    client.send_json(thread_send("t1", "again")).await;
    assert_eq!(last(&client.turn("again").await)["type"], "chat.response", "a session it holds is no new one");
    client.send_json(json!({"type": "chat.leave", "threadId": "t2"})).await;
    assert_eq!(client.recv().await["type"], "chat.left");
    client.send_json(thread_send("t4", "m4b")).await;
    assert_eq!(last(&client.turn("m4b").await)["type"], "chat.response", "leaving frees a place");
    let (mut other, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u2")).await;
    assert_eq!(last(&other.chat("o1", "hello").await)["type"], "chat.response", "other connections unaffected");
}

#[actix_rt::test]
async fn a_fragmented_message_left_unfinished_is_closed_after_fragment_timeout_ms() {
    let server = spawn_server(&[("limits.fragmentTimeoutMs", 300.into())]);
    let (mut parked, _) = WsClient::connect_welcomed(&server.ws_url("senderId=parker")).await;
    let (mut good, _) = WsClient::connect_welcomed(&server.ws_url("senderId=good")).await;
    parked.send_message(Message::Continuation(Item::FirstText(Bytes::from_static(b"{\"type\":")))).await;
    // Pings keep the connection alive; they must not keep the half message alive.
    for _ in 0..5 {
        parked.send_message(Message::Ping(Bytes::new())).await;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(parked.closed().await, Some(CLOSE_POLICY));
    assert_eq!(last(&good.chat("g1", "still here").await)["content"], "echo: still here");
}

#[actix_rt::test]
async fn unfinished_fragments_share_one_server_wide_byte_budget() {
    let server = spawn_server(&[
        ("limits.maxPendingFragmentBytes", (64 * 1024).into()),
        ("limits.fragmentTimeoutMs", 60_000.into()),
    ]);
    let piece = Bytes::from(vec![b' '; 40 * 1024]);
    let (mut first, _) = WsClient::connect_welcomed(&server.ws_url("senderId=a")).await;
    let (mut second, _) = WsClient::connect_welcomed(&server.ws_url("senderId=b")).await;
    first.send_message(Message::Continuation(Item::FirstText(piece.clone()))).await;
    first.round_trip().await; // the server has taken the first fragment
    second.send_message(Message::Continuation(Item::FirstText(piece.clone()))).await;
    assert_eq!(second.closed().await, Some(CLOSE_TRY_AGAIN_LATER));
    let whole = json!({"type": "chat.send", "content": "done", "messageId": "f1"}).to_string();
    first.send_message(Message::Continuation(Item::Last(Bytes::from(whole)))).await;
    // The fragments and the JSON together are one message: leading spaces are JSON whitespace.
    let frames = first.turn("f1").await;
    assert_eq!(last(&frames)["content"], "echo: done");
    let (mut third, _) = WsClient::connect_welcomed(&server.ws_url("senderId=c")).await;
    third.send_message(Message::Continuation(Item::FirstText(piece))).await;
    third.send_message(Message::Continuation(Item::Last(Bytes::from_static(b"{\"type\":\"ping\"}")))).await;
    assert_eq!(third.recv().await["type"], "pong", "the budget was given back");
}

#[actix_rt::test]
async fn text_that_is_not_utf8_closes_with_1007_and_nobody_else() {
    let server = spawn_server(&[]);
    let (mut bad, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bad")).await;
    let (mut good, _) = WsClient::connect_welcomed(&server.ws_url("senderId=good")).await;
    bad.send_message(Message::Text(unsafe_text(b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}"))).await;
    assert_eq!(bad.closed().await, Some(CLOSE_INVALID_UTF8));
    let (mut fragmented, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bad2")).await;
    fragmented
        .send_message(Message::Continuation(Item::FirstText(Bytes::from_static(b"{\"type\":\"ping\",\"x\":\"\xc3"))))
        .await;
    fragmented.send_message(Message::Continuation(Item::Last(Bytes::from_static(b"\"}")))).await;
    assert_eq!(fragmented.closed().await, Some(CLOSE_INVALID_UTF8));
    assert_eq!(last(&good.chat("g1", "fine").await)["content"], "echo: fine");
}

/// A text payload that is not UTF-8: the client codec writes whatever bytes it is given.
fn unsafe_text(bytes: &'static [u8]) -> bytestring::ByteString {
    // SAFETY: the bytes are never used as a str by this process; the codec copies them
    // to the socket as they are, which is the point of the test.
    unsafe { bytestring::ByteString::from_bytes_unchecked(Bytes::from_static(bytes)) }
}

#[actix_rt::test]
async fn a_user_has_at_most_per_user_max_connections() {
    let server = spawn_server(&[("limits.perUser.maxConnections", 2.into())]);
    let (first, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (_second, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let refused = WsClient::try_connect(&server.ws_url("senderId=alice"), &[]).await.err();
    assert_eq!(refused.as_deref(), Some("429"), "the third handshake is refused");
    let (mut bob, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await;
    assert_eq!(last(&bob.chat("b1", "hi").await)["type"], "chat.response", "another user is not affected");
    first.close().await;
    eventually("alice's closed tab gave its place back", || async {
        WsClient::try_connect(&server.ws_url("senderId=alice"), &[]).await.is_ok()
    })
    .await;
}

#[actix_rt::test]
async fn big_turns_to_many_threads_hold_no_more_than_max_subscriptions_sessions() {
    use crate::support::binary::{openai_config, ChildServer};
    use crate::support::fake_agent::{answer_with, FakeAgent, Reply};
    // An agent that holds every turn for a minute: each accepted turn stays in memory.
    let agent = FakeAgent::start(std::sync::Arc::new(|_, _| {
        Reply::Late(Duration::from_secs(60), Box::new(answer_with(&["late"])))
    }));
    let config = openai_config(&agent.url_v1(), "", "[limits]\nmaxSubscriptions = 8\nturnTimeoutMs = 120000\n");
    let child = ChildServer::start(&config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=hoarder")).await;
    let before = child.peak_rss_bytes();
    let content = "z".repeat(900 * 1024);
    for n in 0..110 {
        let id = format!("m{n}");
        client
            .send_json(json!({"type": "chat.send", "content": content, "threadId": format!("t{n}"), "messageId": id}))
            .await;
    }
    let mut refused = 0;
    while refused < 102 {
        let frame = client.recv().await;
        if frame["code"] == "quota_exceeded" {
            refused += 1;
        }
    }
    let grown = child.peak_rss_bytes().saturating_sub(before);
    eprintln!("110 turns of 900 KB to 110 threads, 8 held: peak RSS grew {grown} bytes");
    // 110 turns of 900 KB were sent (99 MB); 8 are held, in a few copies each. (With
    // maxSubscriptions = 1000 it grew 110 MB, measured.)
    assert!(grown < 60 * 1024 * 1024, "peak RSS grew {grown} bytes");
}
