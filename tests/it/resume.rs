//! Conversations that survive the network: a turn belongs to its session, so a
//! dropped socket loses nothing: rejoin with the last seq seen, or resend the same
//! message, and the answer completes exactly once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::client::last;
use crate::support::fake_agent::{paced_agent, Chunk, FakeAgent, Reply};
use crate::support::server::spawn_server_on_store;
use crate::support::{eventually, WsClient};

fn words(count: usize) -> Vec<String> {
    (1..=count).map(|n| format!("w{n} ")).collect()
}

fn openai(agent: &FakeAgent) -> Vec<(&'static str, clawsocket::config::SettingValue)> {
    vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())]
}

/// Reads `chat.stream` frames of `message_id` until one has `seq >= until`.
async fn read_until_seq(client: &mut WsClient, message_id: &str, until: u64) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["type"] == "chat.stream" && frame["messageId"] == message_id {
            let seq = frame["seq"].as_u64().unwrap();
            seen.push(frame);
            if seq >= until {
                return seen;
            }
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter(|f| f["type"] == "chat.stream").map(|f| f["seq"].as_u64().unwrap()).collect()
}

fn text(frames: &[Value]) -> String {
    frames.iter().filter(|f| f["type"] == "chat.stream").map(|f| f["content"].as_str().unwrap()).collect()
}

#[actix_rt::test]
async fn a_dropped_client_rejoins_after_its_last_seq_and_misses_nothing() {
    let store = tempfile::tempdir().unwrap();
    let agent = paced_agent(20, Duration::from_millis(25));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut phone, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    phone.send_json(json!({"type": "chat.send", "content": "tell me", "messageId": "m1"})).await;
    let before = read_until_seq(&mut phone, "m1", 5).await;
    phone.close().await; // the train enters a tunnel

    let (mut again, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    again.send_json(json!({"type": "chat.join", "afterSeq": 5})).await;
    let joined = again.recv().await;
    assert_eq!((joined["type"].as_str(), joined["inFlight"].as_str()), (Some("chat.joined"), Some("m1")));
    let after = again.turn("m1").await;
    assert_eq!(after[0]["type"], "chat.typing", "a joiner first learns the turn is running");
    let mut all = seqs(&before);
    all.extend(seqs(&after));
    assert_eq!(all, (1..=20).collect::<Vec<u64>>(), "every delta exactly once, in order");
    let answer = last(&after)["content"].as_str().unwrap().to_string();
    assert_eq!(format!("{}{}", text(&before), text(&after)), answer);
    assert_eq!(answer, words(20).concat());
    assert_eq!(agent.requests().len(), 1);
}

#[actix_rt::test]
async fn a_join_without_after_seq_gets_the_whole_turn_so_far() {
    let store = tempfile::tempdir().unwrap();
    let agent = paced_agent(12, Duration::from_millis(25));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut first_tab, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    first_tab.send_json(json!({"type": "chat.send", "content": "go", "messageId": "m1"})).await;
    read_until_seq(&mut first_tab, "m1", 4).await;
    let (mut second_tab, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    second_tab.send_json(json!({"type": "chat.join"})).await;
    assert_eq!(second_tab.recv().await["type"], "chat.joined");
    let frames = second_tab.turn("m1").await;
    assert_eq!(seqs(&frames), (1..=12).collect::<Vec<u64>>());
    assert_eq!(text(&frames), last(&frames)["content"].as_str().unwrap());
}

#[actix_rt::test]
async fn a_turn_whose_only_subscriber_left_completes_and_is_stored_across_a_restart() {
    let store = tempfile::tempdir().unwrap();
    let agent = paced_agent(8, Duration::from_millis(25));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.send_json(json!({"type": "chat.send", "content": "work while I sleep", "messageId": "m1"})).await;
    read_until_seq(&mut client, "m1", 1).await;
    client.close().await;
    eventually("the agent streamed the whole answer to nobody", || async { agent.completed() == 1 }).await;
    assert_eq!(agent.cancelled(), 0);

    let history_of = |url: String| async move {
        let (mut client, _) = WsClient::connect_welcomed(&url).await;
        client.send_json(json!({"type": "chat.history"})).await;
        client.recv().await["messages"].as_array().cloned().unwrap_or_default()
    };
    eventually("the answer is stored", || {
        let url = server.ws_url("senderId=u1");
        async move { history_of(url).await.len() == 2 }
    })
    .await;
    server.stop().await;
    let restarted = spawn_server_on_store(store.path(), &openai(&agent));
    let stored = history_of(restarted.ws_url("senderId=u1")).await;
    assert_eq!(stored[1]["content"], words(8).concat());
    assert_eq!(stored[1]["messageId"], "m1");
}

#[actix_rt::test]
async fn resending_the_same_message_on_a_new_connection_attaches_to_the_running_turn() {
    let store = tempfile::tempdir().unwrap();
    let agent = paced_agent(10, Duration::from_millis(25));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let send = json!({"type": "chat.send", "content": "once please", "messageId": "m1"});
    let (mut lost, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    lost.send_json(send.clone()).await;
    read_until_seq(&mut lost, "m1", 3).await;
    lost.close().await;

    let (mut retry, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    retry.send_json(send).await;
    let frames = retry.turn("m1").await;
    assert_eq!(frames[0]["type"], "chat.typing");
    assert_eq!(seqs(&frames), (1..=10).collect::<Vec<u64>>(), "the retry is replayed the turn from its start");
    assert_eq!(last(&frames)["content"], words(10).concat());
    assert_eq!(agent.requests().len(), 1, "no second backend request");
}

#[actix_rt::test]
async fn a_late_joiner_of_a_very_long_answer_gets_one_catch_up_frame_then_live_deltas() {
    let store = tempfile::tempdir().unwrap();
    let block = "x".repeat(1024);
    let burst: Vec<&str> = std::iter::repeat_n(block.as_str(), 80).collect();
    let tail = ["tail-1 ", "tail-2 ", "tail-3"];
    let first = String::from_utf8(crate::support::fake_agent::sse_deltas_only(&burst)).unwrap();
    let rest = String::from_utf8(crate::support::fake_agent::sse_body(&tail)).unwrap();
    let agent = FakeAgent::start(Arc::new(move |_, _| {
        Reply::Stream(vec![
            Chunk::Bytes(Duration::ZERO, first.clone().into_bytes()),
            Chunk::Bytes(Duration::from_millis(400), rest.clone().into_bytes()),
        ])
    }));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut sender, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    sender.send_json(json!({"type": "chat.send", "content": "long", "messageId": "m1"})).await;
    read_until_seq(&mut sender, "m1", 80).await;

    let (mut late, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    late.send_json(json!({"type": "chat.join", "afterSeq": 10})).await;
    assert_eq!(late.recv().await["type"], "chat.joined");
    let frames = late.turn("m1").await;
    let streams: Vec<&Value> = frames.iter().filter(|f| f["type"] == "chat.stream").collect();
    assert_eq!(streams[0]["catchUp"], true, "over 64 KiB missed: one catch-up frame");
    assert_eq!(streams[0]["seq"], 80);
    assert_eq!(streams[0]["content"].as_str().unwrap().len(), 70 * 1024, "exactly what came after seq 10");
    assert_eq!(seqs(&frames)[1..], [81, 82, 83]);
    let answer = last(&frames)["content"].as_str().unwrap().to_string();
    assert_eq!(format!("{}{}", block.repeat(10), text(&frames)), answer, "the seen part + the rest = the answer");
}

#[actix_rt::test]
async fn a_rejoin_after_the_turn_ended_gets_the_stored_answer() {
    let store = tempfile::tempdir().unwrap();
    let agent = paced_agent(6, Duration::from_millis(20));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut lost, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    lost.send_json(json!({"type": "chat.send", "content": "go", "messageId": "m1"})).await;
    read_until_seq(&mut lost, "m1", 2).await;
    lost.close().await;
    eventually("the turn ended without anyone", || async { agent.completed() == 1 }).await;
    // Whether the answer is still being stored or already is, the joiner gets it once.
    let (mut back, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    back.send_json(json!({"type": "chat.join", "afterSeq": 2})).await;
    assert_eq!(back.recv().await["type"], "chat.joined");
    let answer = back.recv().await;
    assert_eq!((answer["type"].as_str(), answer["messageId"].as_str()), (Some("chat.response"), Some("m1")));
    assert_eq!(answer["content"], words(6).concat());
}

#[actix_rt::test]
async fn a_joiner_that_missed_more_deltas_than_the_outbound_queue_holds_is_replayed_not_dropped() {
    let store = tempfile::tempdir().unwrap();
    // 1500 short deltas: a replay of 1400 frames is more than `limits.outboundQueue`
    // (256) messages, though far less than one catch-up frame's 64 KiB of text.
    let agent = paced_agent(1500, Duration::from_millis(1));
    let server = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut phone, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    phone.send_json(json!({"type": "chat.send", "content": "a long one", "messageId": "m1"})).await;
    read_until_seq(&mut phone, "m1", 1200).await;
    let (mut laptop, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    laptop.send_json(json!({"type": "chat.join", "afterSeq": 100})).await;
    assert_eq!(laptop.recv().await["inFlight"], "m1");
    let rest = laptop.turn("m1").await;
    assert_eq!(seqs(&rest), (101..=1500).collect::<Vec<u64>>());
}
