//! Durable memory: a restart (clean, or a SIGKILL) loses no completed turn; the
//! openai backend's memory, history and idempotency read from the store.

use clawsocket::identity::{Chat, SessionTarget};
use serde_json::{json, Value};

use crate::support::binary::{openai_config, ChildServer};
use crate::support::client::last;
use crate::support::fake_agent::{always, FakeAgent};
use crate::support::server::spawn_server_on_store;
use crate::support::WsClient;

fn openai(agent: &FakeAgent) -> Vec<(&'static str, clawsocket::config::SettingValue)> {
    vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into()), ("agent.systemPrompt", "".into())]
}

async fn history(client: &mut WsClient) -> Vec<Value> {
    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    assert_eq!(history["type"], "chat.history");
    history["messages"].as_array().cloned().unwrap_or_default()
}

#[actix_rt::test]
async fn a_turn_survives_a_restart_in_history_memory_and_idempotency() {
    let store = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(always(&["Nice to meet you, John."]));
    let first = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut client, _) = WsClient::connect_welcomed(&first.ws_url("senderId=u1&senderName=John")).await;
    let answered = client.chat("m1", "My name is John").await;
    client.close().await;
    first.stop().await;

    let second = spawn_server_on_store(store.path(), &openai(&agent));
    let (mut client, _) = WsClient::connect_welcomed(&second.ws_url("senderId=u1&senderName=John")).await;
    let stored = history(&mut client).await;
    let contents: Vec<&str> = stored.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["My name is John", "Nice to meet you, John."]);
    let retried = client.chat("m1", "My name is John").await;
    assert_eq!(retried, [last(&answered).clone()], "a retry after the restart is answered from the store");
    client.chat("m2", "What is my name?").await;
    let requests = agent.requests();
    assert_eq!(requests.len(), 2, "the retry made no backend call");
    let sent = requests[1].body["messages"].to_string();
    assert!(sent.contains(r#""content":"My name is John","name":"John""#), "{sent}");
    assert!(sent.contains("Nice to meet you, John."), "{sent}");
}

#[actix_rt::test]
async fn a_killed_process_loses_no_completed_turn() {
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(always(&["stored ", "for good"]));
    let config = openai_config(&agent.url_v1(), "", "");
    let child = ChildServer::start_in(dir.path(), &config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=u1")).await;
    for turn in 1..=3 {
        let frames = client.chat(&format!("m{turn}"), &format!("turn {turn}")).await;
        assert_eq!(last(&frames)["type"], "chat.response");
    }
    child.kill(); // SIGKILL: no shutdown, no flush beyond what each answer already waited for

    let child = ChildServer::start_in(dir.path(), &config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=u1")).await;
    let stored = history(&mut client).await;
    let ids: Vec<&str> = stored.iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "m1", "m2", "m2", "m3", "m3"]);
}

#[actix_rt::test]
async fn a_torn_last_line_is_skipped() {
    let store = tempfile::tempdir().unwrap();
    let key = SessionTarget { chat: Chat::Direct("u1".into()), thread_id: None }.key("main");
    let path = clawsocket::store::transcript_path(&clawsocket::store::default_agent_dir(store.path(), "main"), &key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let good =
        json!({"role": "user", "content": "kept", "messageId": "m0", "senderId": "u1", "senderName": "u1", "ts": 1});
    std::fs::write(&path, format!("{good}\n{{\"role\":\"assistant\",\"content\":\"cut mid-wr")).unwrap();
    let server = spawn_server_on_store(store.path(), &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    let stored = history(&mut client).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["content"], "kept");
    client.chat("m1", "after the crash").await;
    let stored = history(&mut client).await;
    let contents: Vec<&str> = stored.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["kept", "after the crash", "echo: after the crash"]);
}

#[actix_rt::test]
async fn the_idempotency_record_keeps_the_last_window_of_answers_across_a_restart() {
    let store = tempfile::tempdir().unwrap();
    let settings = [("store.idempotencyWindow", 3.into())];
    let first = spawn_server_on_store(store.path(), &settings);
    let (mut client, _) = WsClient::connect_welcomed(&first.ws_url("senderId=u1")).await;
    for n in 1..=5 {
        assert_eq!(last(&client.chat(&format!("m{n}"), &format!("turn {n}")).await)["type"], "chat.response");
    }
    client.close().await;
    first.stop().await;
    let second = spawn_server_on_store(store.path(), &settings);
    let (mut client, _) = WsClient::connect_welcomed(&second.ws_url("senderId=u1")).await;
    let retried = client.chat("m3", "turn 3").await;
    assert_eq!(retried.len(), 1, "m3 is among the last 3 answers: answered from the store, not run");
    assert_eq!(last(&retried)["content"], "echo: turn 3");
    let rerun = client.chat("m2", "turn 2 again").await;
    assert_eq!(last(&rerun)["content"], "echo: turn 2 again", "m2 fell out of the window: a new turn");
}
