//! Sessions as chat rooms: ordered turns, fan-out to every subscriber, groups, join
//! and leave, abort, history, threads, safe retries, the queue bound, no leaks.

use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::client::{last, streamed_text};
use crate::support::fake_agent::{always, slowly, FakeAgent};
use crate::support::{eventually, spawn_server, TestServerHandle, WsClient};

const PAUSE: Duration = Duration::from_millis(40);

/// A fake agent answering `"{content}!"` in three slow deltas.
fn slow_agent() -> FakeAgent {
    FakeAgent::start(Arc::new(|_, call| {
        let content = call.body["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].clone());
        let text = content.and_then(|c| c.as_str().map(String::from)).unwrap_or_default();
        let reply = format!("re: {text}");
        let words: Vec<&str> = reply.split_inclusive(' ').collect();
        slowly(&words, PAUSE)
    }))
}

fn server_for(agent: &FakeAgent, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into()), ("agent.systemPrompt", "".into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn send(content: &str, message_id: &str) -> Value {
    json!({"type": "chat.send", "content": content, "messageId": message_id})
}

/// Reads frames until every id in `ids` has its `chat.response`/`chat.error`; returns
/// those final frames in arrival order.
async fn finals(client: &mut WsClient, ids: &[&str]) -> Vec<Value> {
    let mut finals = Vec::new();
    while finals.len() < ids.len() {
        let frame = client.recv().await;
        let is_final = frame["type"] == "chat.response" || frame["type"] == "chat.error";
        if is_final && ids.iter().any(|id| frame["messageId"] == *id) {
            finals.push(frame);
        }
    }
    finals
}

#[actix_rt::test]
async fn turns_in_one_session_run_one_after_another_in_order() {
    let agent = slow_agent();
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1&senderName=U")).await;
    for (id, content) in [("m1", "one"), ("m2", "two"), ("m3", "three")] {
        client.send_json(send(content, id)).await;
    }
    let answers = finals(&mut client, &["m1", "m2", "m3"]).await;
    let order: Vec<&str> = answers.iter().map(|a| a["messageId"].as_str().unwrap()).collect();
    assert_eq!(order, ["m1", "m2", "m3"]);
    assert_eq!(answers[1]["content"], "re: two");
    assert_eq!(agent.most_at_once(), 1, "one turn at a time in a session");
}

#[actix_rt::test]
async fn turns_in_different_sessions_run_at_the_same_time() {
    let agent = slow_agent();
    let server = server_for(&agent, &[]);
    let (mut alice, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (mut bob, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await;
    alice.send_json(send("hello from alice, a long message", "a1")).await;
    bob.send_json(send("hello from bob, a long message", "b1")).await;
    finals(&mut alice, &["a1"]).await;
    finals(&mut bob, &["b1"]).await;
    assert_eq!(agent.most_at_once(), 2, "different sessions never wait on each other");
}

#[actix_rt::test]
async fn every_tab_of_a_user_sees_the_turn() {
    let server = spawn_server(&[]);
    let (mut first_tab, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    let (mut second_tab, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    second_tab.send_json(json!({"type": "chat.join"})).await;
    assert_eq!(second_tab.recv().await["type"], "chat.joined");
    let sent = first_tab.chat("m1", "hello tabs").await;
    let seen = second_tab.turn("m1").await;
    assert_eq!(seen, sent, "both tabs get the same frames");
    assert_eq!(streamed_text(&seen), "echo: hello tabs");
}

#[actix_rt::test]
async fn a_group_of_three_all_see_the_answer_and_each_others_messages() {
    let server = spawn_server(&[]);
    let mut members = Vec::new();
    for name in ["ann", "ben", "cid"] {
        let (mut member, _) =
            WsClient::connect_welcomed(&server.ws_url(&format!("senderId={name}&senderName={name}"))).await;
        member.send_json(json!({"type": "chat.join", "groupId": "dev"})).await;
        let joined = member.recv().await;
        assert_eq!(
            (joined["type"].as_str(), joined["sessionKey"].as_str()),
            (Some("chat.joined"), Some("agent:main:websocket:group:dev"))
        );
        members.push(member);
    }
    let group_send = json!({"type": "chat.send", "content": "hi all", "chatType": "group", "groupId": "dev",
        "groupSubject": "Dev Team", "messageId": "g1"});
    members[0].send_json(group_send).await;
    let sender_frames = members[0].turn("g1").await;
    assert!(
        sender_frames.iter().all(|frame| frame["type"] != "chat.message"),
        "the sender is not echoed its own message"
    );
    for member in &mut members[1..] {
        let frames = member.turn("g1").await;
        let relayed = frames.iter().find(|frame| frame["type"] == "chat.message").expect("chat.message relayed");
        assert_eq!(relayed["senderId"], "ann");
        assert_eq!(relayed["content"], "hi all");
        assert_eq!(relayed["groupId"], "dev");
        assert_eq!(relayed["groupSubject"], "Dev Team");
        assert_eq!(last(&frames)["content"], "echo: hi all");
    }
}

#[actix_rt::test]
async fn after_leaving_a_group_nothing_more_arrives() {
    let server = spawn_server(&[]);
    let (mut speaker, _) = WsClient::connect_welcomed(&server.ws_url("senderId=s")).await;
    let (mut listener, _) = WsClient::connect_welcomed(&server.ws_url("senderId=l")).await;
    listener.send_json(json!({"type": "chat.join", "groupId": "g"})).await;
    assert_eq!(listener.recv().await["type"], "chat.joined");
    let group =
        |id: &str| json!({"type": "chat.send", "content": "x", "chatType": "group", "groupId": "g", "messageId": id});
    speaker.send_json(group("g1")).await;
    speaker.turn("g1").await;
    listener.turn("g1").await;
    listener.send_json(json!({"type": "chat.leave", "groupId": "g"})).await;
    let left = listener.recv().await;
    assert_eq!(
        (left["type"].as_str(), left["sessionKey"].as_str()),
        (Some("chat.left"), Some("agent:main:websocket:group:g"))
    );
    speaker.send_json(group("g2")).await;
    speaker.turn("g2").await;
    listener.send_json(json!({"type": "ping"})).await;
    assert_eq!(listener.recv().await["type"], "pong", "no frame of g2 reached the connection that left");
}

#[actix_rt::test]
async fn abort_stops_the_running_turn_and_drops_its_request() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            slowly(&["a"; 50], Duration::from_millis(100))
        } else {
            slowly(&["quick"], Duration::ZERO)
        }
    }));
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.send_json(send("long one", "m1")).await;
    assert_eq!(client.recv().await["type"], "chat.typing");
    client.send_json(json!({"type": "chat.abort", "messageId": "m1"})).await;
    let aborted = last(&client.turn("m1").await).clone();
    assert_eq!((aborted["type"].as_str(), aborted["code"].as_str()), (Some("chat.error"), Some("aborted")));
    eventually("the backend request was dropped", || async { agent.cancelled() == 1 }).await;
    assert_eq!(last(&client.chat("m2", "next").await)["content"], "quick");
}

#[actix_rt::test]
async fn abort_removes_a_queued_turn() {
    let agent = slow_agent();
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.send_json(send("first", "m1")).await;
    client.send_json(send("second", "m2")).await;
    client.send_json(json!({"type": "chat.abort", "messageId": "m2"})).await;
    let answers = finals(&mut client, &["m1", "m2"]).await;
    assert_eq!(answers[0]["code"], "aborted", "the queued turn is aborted at once: {answers:?}");
    assert_eq!(answers[0]["messageId"], "m2");
    assert_eq!(answers[1]["type"], "chat.response");
    assert_eq!(agent.requests().len(), 1, "the aborted turn never reached the agent");
    assert_eq!(last(&client.chat("m3", "third").await)["type"], "chat.response");
}

#[actix_rt::test]
async fn a_connection_may_not_abort_or_read_a_session_it_is_not_in() {
    let server = spawn_server(&[]);
    let (mut member, _) = WsClient::connect_welcomed(&server.ws_url("senderId=m")).await;
    let (mut stranger, _) = WsClient::connect_welcomed(&server.ws_url("senderId=s")).await;
    member.send_json(json!({"type": "chat.send", "content": "secret plan", "chatType": "group", "groupId": "g", "messageId": "g1"})).await;
    member.turn("g1").await;
    stranger.send_json(json!({"type": "chat.abort", "groupId": "g", "messageId": "g1"})).await;
    let refused = stranger.recv().await;
    assert_eq!(refused["code"], "forbidden");
    stranger.send_json(json!({"type": "chat.history", "groupId": "g"})).await;
    assert_eq!(stranger.recv().await["code"], "forbidden");
}

#[actix_rt::test]
async fn history_is_the_transcript_oldest_first_with_a_limit() {
    let server = spawn_server(&[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1&senderName=Una")).await;
    client.chat("m1", "first").await;
    client.chat("m2", "second").await;
    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    assert_eq!(history["sessionKey"], "agent:main:websocket:direct:u1");
    let messages = history["messages"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap(), m["messageId"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("user", "first", "m1"),
            ("assistant", "echo: first", "m1"),
            ("user", "second", "m2"),
            ("assistant", "echo: second", "m2")
        ]
    );
    assert_eq!((messages[0]["senderId"].as_str(), messages[0]["senderName"].as_str()), (Some("u1"), Some("Una")));
    assert!(messages[0]["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000));
    client.send_json(json!({"type": "chat.history", "limit": 1})).await;
    let limited = client.recv().await;
    assert_eq!(limited["messages"].as_array().unwrap().len(), 1);
    assert_eq!(limited["messages"][0]["content"], "echo: second");
}

#[actix_rt::test]
async fn two_threads_keep_separate_memories_and_histories() {
    let agent = FakeAgent::start(always(&["noted"]));
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1&senderName=U")).await;
    let in_thread = |thread: &str, content: &str, id: &str| json!({"type": "chat.send", "content": content, "threadId": thread, "messageId": id});
    client.send_json(in_thread("trip", "Plan a trip to Rome", "t1")).await;
    client.turn("t1").await;
    client.send_json(in_thread("work", "Draft the report", "w1")).await;
    client.turn("w1").await;
    client.send_json(in_thread("trip", "How long is the flight?", "t2")).await;
    let frames = client.turn("t2").await;
    assert_eq!(last(&frames)["sessionKey"], "agent:main:websocket:direct:u1:thread:trip");
    let sent = agent.requests()[2].body["messages"].to_string();
    assert!(sent.contains("Plan a trip to Rome") && !sent.contains("Draft the report"), "{sent}");
    client.send_json(json!({"type": "chat.history", "threadId": "work"})).await;
    let history = client.recv().await;
    let contents: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Draft the report", "noted"]);
    client.send_json(json!({"type": "chat.send", "content": "x", "threadId": "bad thread\u{7}"})).await;
    let refused = client.recv().await;
    assert_eq!(refused["code"], "invalid_message");
    assert!(refused["error"].as_str().unwrap().contains("threadId"));
}

#[actix_rt::test]
async fn a_retried_message_id_is_answered_from_the_record() {
    let agent = FakeAgent::start(always(&["the ", "answer"]));
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    let first = client.chat("m1", "question").await;
    let retried = client.chat("m1", "question").await;
    assert_eq!(retried.len(), 1, "only the stored final answer: {retried:?}");
    assert_eq!(retried[0], *last(&first));
    assert_eq!(agent.requests().len(), 1, "no second backend call");
}

#[actix_rt::test]
async fn a_message_id_in_flight_or_queued_is_not_run_twice() {
    let agent = slow_agent();
    let server = server_for(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    for id in ["m1", "m2", "m1", "m2"] {
        client.send_json(send("same again", id)).await;
    }
    let answers = finals(&mut client, &["m1", "m2"]).await;
    assert!(answers.iter().all(|answer| answer["type"] == "chat.response"));
    assert_eq!(agent.requests().len(), 2);
}

#[actix_rt::test]
async fn beyond_the_queue_bound_a_send_is_session_busy() {
    let agent = slow_agent();
    let server = server_for(&agent, &[("limits.sessionQueue", 1.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    for id in ["m1", "m2", "m3"] {
        client.send_json(send("work", id)).await;
    }
    let answers = finals(&mut client, &["m1", "m2", "m3"]).await;
    let outcome = |id: &str| answers.iter().find(|a| a["messageId"] == id).map(|a| a["code"].as_str().unwrap_or("ok"));
    assert_eq!((outcome("m1"), outcome("m2"), outcome("m3")), (Some("ok"), Some("ok"), Some("session_busy")));
}

#[actix_rt::test]
async fn a_disconnect_mid_turn_leaves_no_subscriber_behind() {
    let agent = slow_agent();
    let server = server_for(&agent, &[("limits.sessionIdleMs", 50.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.send_json(send("walk away", "m1")).await;
    assert_eq!(client.recv().await["type"], "chat.typing");
    client.close().await;
    eventually("the turn finished without its subscriber", || async { agent.completed() == 1 }).await;
    eventually("connections and sessions unregistered", || async {
        let counts = server.registries().await;
        counts.connections == 0 && counts.sessions == 0
    })
    .await;
    assert_eq!(agent.cancelled(), 0, "a closed socket does not drop the backend call");
}

#[actix_rt::test]
async fn history_and_retries_reach_past_what_the_session_keeps_in_memory() {
    let server = spawn_server(&[("agent.maxHistory", 4.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    for turn in 0..30 {
        client.chat(&format!("m{turn}"), &format!("turn {turn}")).await;
    }
    // The session keeps the last 50 entries (25 turns) in memory; 60 come from the file.
    client.send_json(json!({"type": "chat.history", "limit": 60})).await;
    let history = client.recv().await;
    let ids: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..30).flat_map(|turn| [format!("m{turn}"), format!("m{turn}")]).collect();
    assert_eq!(ids, expected);
    let retried = client.chat("m0", "turn 0").await;
    assert_eq!(retried.len(), 1, "the oldest answer comes back from the file, not from a new turn: {retried:?}");
    assert_eq!(retried[0]["content"], "echo: turn 0");
}
