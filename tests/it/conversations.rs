//! Conversations a user can find again (SPEC §11): `chat.threads`, `chat.title`,
//! `chat.regenerate` and `chat.delete`, each with its errors, never reaching another
//! user's conversations; the index rebuilt when deleted by hand; and every answer the
//! same on one node alone and on two nodes sharing a real Redis (the test bodies run
//! against both; in a cluster the second connection of a test is on the other node).

use std::time::Duration;

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::binary::{openai_config, ChildServer};
use crate::support::client::last;
use crate::support::cluster::ready_nodes;
use crate::support::fake_agent::{answer_with, slowly, FakeAgent, Recorded};
use crate::support::redis::RedisServer;
use crate::support::server::{spawn_server_on_store, TestServer};
use crate::support::WsClient;

/// One node alone, or two nodes on one Redis.
enum Mode {
    Alone,
    Cluster,
}

/// A running deployment of either mode, answering with one agent.
struct Deployment {
    nodes: Vec<TestServer>,
    redis: Option<RedisServer>,
    store: tempfile::TempDir,
}

impl Deployment {
    async fn start(mode: Mode, agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> Deployment {
        let store = tempfile::tempdir().unwrap();
        let mut settings: Vec<(&str, SettingValue)> = vec![
            ("agent.kind", "openai".into()),
            ("agent.url", agent.url_v1().into()),
            ("agent.systemPrompt", "".into()),
        ];
        settings.extend(extra.iter().cloned());
        match mode {
            Mode::Alone => {
                Deployment { nodes: vec![spawn_server_on_store(store.path(), &settings)], redis: None, store }
            }
            Mode::Cluster => {
                let redis = RedisServer::start();
                let nodes = ready_nodes(&redis, &["a", "b"], &settings).await;
                Deployment { nodes, redis: Some(redis), store }
            }
        }
    }

    /// The WebSocket URL of node `n` (the one node, alone).
    fn ws(&self, n: usize, query: &str) -> String {
        self.nodes[n % self.nodes.len()].ws_url(query)
    }

    async fn connect(&self, n: usize, query: &str) -> WsClient {
        WsClient::connect_welcomed(&self.ws(n, query)).await.0
    }
}

/// The agent: "answer {n}" for call n, or a slow answer for a message with "slow".
fn numbered_agent() -> FakeAgent {
    FakeAgent::start(std::sync::Arc::new(|index, request: &Recorded| {
        if last_user_content(request).contains("slow") {
            let words: Vec<String> = (1..=40).map(|n| format!("s{n} ")).collect();
            return slowly(&words.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_millis(50));
        }
        answer_with(&[&format!("answer {index}")])
    }))
}

fn last_user_content(request: &Recorded) -> String {
    let messages = request.body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .rev()
        .find(|message| message["role"] == "user")
        .map(|message| message["content"].to_string())
        .unwrap_or_default()
}

/// Sends `frame` and returns the first frame of type `answer` or `chat.error`.
async fn ask(client: &mut WsClient, frame: Value, answer: &str) -> Value {
    client.send_json(frame).await;
    loop {
        let reply = client.recv().await;
        if reply["type"] == answer || reply["type"] == "chat.error" {
            return reply;
        }
    }
}

async fn threads(client: &mut WsClient, request: Value) -> Vec<Value> {
    let mut frame = json!({"type": "chat.threads"});
    frame.as_object_mut().unwrap().extend(request.as_object().cloned().unwrap_or_default());
    let listed = ask(client, frame, "chat.threads").await;
    assert_eq!(listed["type"], "chat.threads", "{listed}");
    listed["sessions"].as_array().cloned().unwrap_or_default()
}

async fn history(client: &mut WsClient, selector: Value) -> Vec<(String, String)> {
    let mut frame = json!({"type": "chat.history"});
    frame.as_object_mut().unwrap().extend(selector.as_object().cloned().unwrap_or_default());
    let read = ask(client, frame, "chat.history").await;
    let messages = read["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| {
            (m["role"].as_str().unwrap_or_default().to_string(), m["content"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

async fn send(client: &mut WsClient, message_id: &str, content: &str, thread: Option<&str>) -> Vec<Value> {
    let mut frame = json!({"type": "chat.send", "messageId": message_id, "content": content});
    if let Some(thread) = thread {
        frame["threadId"] = json!(thread);
    }
    client.send_json(frame).await;
    client.turn(message_id).await
}

fn thread_ids(sessions: &[Value]) -> Vec<Option<String>> {
    sessions.iter().map(|s| s["threadId"].as_str().map(String::from)).collect()
}

async fn lists_own_conversations_newest_first(mode: Mode) {
    let agent = numbered_agent();
    let deployment = Deployment::start(mode, &agent, &[]).await;
    let mut alice = deployment.connect(0, "senderId=alice").await;
    let mut bob = deployment.connect(1, "senderId=bob").await;
    assert!(threads(&mut alice, json!({})).await.is_empty(), "nothing yet");

    let long = "Plan a two week trip through Italy with stops in Rome, Florence, Venice and the lakes up north please";
    send(&mut alice, "m1", long, None).await;
    send(&mut alice, "m2", "Second topic", Some("t1")).await;
    send(&mut bob, "b1", "Bob's own", Some("t1")).await;

    let mut other_tab = deployment.connect(1, "senderId=alice").await;
    let listed = threads(&mut other_tab, json!({})).await;
    assert_eq!(thread_ids(&listed), [Some("t1".to_string()), None], "newest first: {listed:?}");
    assert_eq!(listed[0]["title"], "Second topic");
    assert_eq!(listed[0]["sessionKey"], "agent:main:websocket:direct:alice:thread:t1");
    assert_eq!(listed[0]["messageCount"], 2);
    assert!(listed[0]["lastActivity"].as_u64().unwrap() >= listed[1]["lastActivity"].as_u64().unwrap());
    let title = listed[1]["title"].as_str().unwrap();
    assert_eq!(title, "Plan a two week trip through Italy with stops in Rome, Florence, Venice and the…");
    assert_eq!(listed[1]["sessionKey"], "agent:main:websocket:direct:alice");
    assert!(listed.iter().all(|s| s.get("inFlight").is_none() && s.get("groupId").is_none()));

    let bobs = threads(&mut bob, json!({})).await;
    assert_eq!(bobs.len(), 1, "only bob's own: {bobs:?}");
    assert_eq!(bobs[0]["title"], "Bob's own");
    assert_eq!(threads(&mut alice, json!({"limit": 1})).await.len(), 1);

    // A turn running in t1 is listed as in flight, on any node.
    alice.send_json(json!({"type": "chat.send", "messageId": "m3", "content": "slow please", "threadId": "t1"})).await;
    loop {
        if alice.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    let running = threads(&mut other_tab, json!({})).await;
    assert_eq!(running[0]["inFlight"], "m3", "{running:?}");
    alice.turn("m3").await;
    let done = threads(&mut other_tab, json!({})).await;
    assert!(done[0].get("inFlight").is_none(), "{done:?}");
    assert_eq!(done[0]["messageCount"], 4);

    let refused = ask(&mut alice, json!({"type": "chat.threads", "limit": 0}), "chat.threads").await;
    assert_eq!(refused["code"], "invalid_message");
}

#[actix_rt::test]
async fn threads_lists_ones_own_conversations_newest_first_alone() {
    lists_own_conversations_newest_first(Mode::Alone).await;
}

#[actix_rt::test]
async fn threads_lists_ones_own_conversations_newest_first_on_two_nodes() {
    lists_own_conversations_newest_first(Mode::Cluster).await;
}

async fn names_conversations(mode: Mode) {
    let agent = numbered_agent();
    let deployment = Deployment::start(mode, &agent, &[]).await;
    let mut alice = deployment.connect(0, "senderId=alice").await;
    let mut bob = deployment.connect(1, "senderId=bob").await;
    send(&mut alice, "m1", "hello", Some("t1")).await;

    let named =
        ask(&mut alice, json!({"type": "chat.title", "threadId": "t1", "title": " Rome\n trip "}), "chat.titled").await;
    assert_eq!(named["type"], "chat.titled", "{named}");
    assert_eq!((named["title"].as_str(), named["titled"].as_bool()), (Some("Rome trip"), Some(true)));
    assert_eq!(named["threadId"], "t1");

    let unknown = ask(&mut alice, json!({"type": "chat.title", "threadId": "nope", "title": "x"}), "chat.titled").await;
    assert_eq!(unknown["code"], "not_found");
    let empty = ask(&mut alice, json!({"type": "chat.title", "threadId": "t1", "title": " "}), "chat.titled").await;
    assert_eq!(empty["code"], "invalid_message");
    let long = "x".repeat(201);
    let too_long = ask(&mut alice, json!({"type": "chat.title", "threadId": "t1", "title": long}), "chat.titled").await;
    assert_eq!(too_long["code"], "invalid_message");
    let bobs = ask(&mut bob, json!({"type": "chat.title", "threadId": "t1", "title": "Mine now"}), "chat.titled").await;
    assert_eq!(bobs["code"], "not_found", "bob names only his own threads");

    send(&mut alice, "m2", "another message", Some("t1")).await;
    let listed = threads(&mut alice, json!({})).await;
    assert_eq!(listed[0]["title"], "Rome trip", "a later turn keeps the given title");
}

#[actix_rt::test]
async fn title_names_a_conversation_and_refuses_what_it_cannot_alone() {
    names_conversations(Mode::Alone).await;
}

#[actix_rt::test]
async fn title_names_a_conversation_and_refuses_what_it_cannot_on_two_nodes() {
    names_conversations(Mode::Cluster).await;
}

/// The contents of the messages the agent was sent, without the per-message context
/// (a thread's id) the prompt adds.
fn contents(request: &Recorded) -> Vec<String> {
    let messages = request.body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .filter(|content| !content.starts_with("Context of the next message"))
        .collect()
}

async fn regenerates_the_last_answer(mode: Mode) {
    let agent = numbered_agent();
    let deployment = Deployment::start(mode, &agent, &[]).await;
    let mut alice = deployment.connect(0, "senderId=alice").await;
    let mut other_tab = deployment.connect(1, "senderId=alice").await;
    other_tab.join(json!({"threadId": "t1"})).await;
    let nothing = ask(&mut alice, json!({"type": "chat.regenerate", "threadId": "t1"}), "chat.response").await;
    assert_eq!(nothing["code"], "not_found", "nothing to regenerate yet: {nothing}");

    send(&mut alice, "m1", "hello", Some("t1")).await;
    send(&mut alice, "m2", "how are you", Some("t1")).await;
    let calls = agent.requests().len();

    let frames = {
        alice
            .send_json(json!({"type": "chat.regenerate", "threadId": "t1", "messageId": "m2", "newMessageId": "r1"}))
            .await;
        alice.turn("r1").await
    };
    let answer = last(&frames);
    assert_eq!(answer["type"], "chat.response", "{frames:?}");
    assert_eq!(answer["supersedes"], "m2");
    assert_eq!(answer["content"], format!("answer {calls}"));
    let asked = &agent.requests()[calls];
    assert_eq!(contents(asked), ["hello", "answer 0", "how are you"], "the agent is asked the last message again");
    assert_eq!(asked.body["messages"], agent.requests()[1].body["messages"], "exactly as the first time");
    let seen_elsewhere = other_tab.turn("r1").await;
    assert_eq!(last(&seen_elsewhere)["supersedes"], "m2", "every tab sees the new answer");

    let shown = history(&mut alice, json!({"threadId": "t1"})).await;
    let expected: Vec<(String, String)> = [
        ("user", "hello"),
        ("assistant", "answer 0"),
        ("user", "how are you"),
        ("assistant", format!("answer {calls}").as_str()),
    ]
    .iter()
    .map(|(role, content)| (role.to_string(), content.to_string()))
    .collect();
    assert_eq!(shown, expected, "the new answer replaces the old one in history");
    assert_eq!(threads(&mut alice, json!({})).await[0]["messageCount"], 4, "a regeneration adds no message");

    // A retry of the same regeneration is answered from the store, not run again.
    alice.send_json(json!({"type": "chat.regenerate", "threadId": "t1", "newMessageId": "r1"})).await;
    assert_eq!(last(&alice.turn("r1").await)["content"], answer["content"]);
    assert_eq!(agent.requests().len(), calls + 1);

    let older =
        ask(&mut alice, json!({"type": "chat.regenerate", "threadId": "t1", "messageId": "m1"}), "chat.response").await;
    assert_eq!(older["code"], "invalid_message", "only the last turn: {older}");

    send(&mut alice, "m3", "and now", Some("t1")).await;
    let later = agent.requests().last().cloned().unwrap();
    assert_eq!(
        contents(&later),
        ["hello", "answer 0", "how are you", &format!("answer {calls}"), "and now"],
        "the agent sees the new answer, not the old"
    );
    if let Some(redis) = &deployment.redis {
        let stored = redis.command(&["LRANGE", "cs:tx:{agent:main:websocket:direct:alice:thread:t1}", "0", "-1"]);
        assert!(stored.contains("answer 1") && stored.contains("supersedes"), "the old answer stays, superseded");
    } else {
        let transcript = deployment.store.path().join("agents/main/sessions");
        let file = std::fs::read_dir(&transcript)
            .unwrap()
            .filter_map(Result::ok)
            .find(|entry| {
                entry.file_name().to_string_lossy().starts_with("direct_alice_thread_t1")
                    && entry.file_name().to_string_lossy().ends_with(".jsonl")
            })
            .expect("t1's transcript");
        let stored = std::fs::read_to_string(file.path()).unwrap();
        assert!(stored.contains("\"answer 1\"") && stored.contains("\"supersedes\":\"m2\""), "{stored}");
    }
}

#[actix_rt::test]
async fn regenerate_replaces_the_last_answer_in_history_and_memory_alone() {
    regenerates_the_last_answer(Mode::Alone).await;
}

#[actix_rt::test]
async fn regenerate_replaces_the_last_answer_in_history_and_memory_on_two_nodes() {
    regenerates_the_last_answer(Mode::Cluster).await;
}

async fn deletes_one_thread(mode: Mode) {
    let agent = numbered_agent();
    let deployment = Deployment::start(mode, &agent, &[]).await;
    let mut alice = deployment.connect(0, "senderId=alice").await;
    let mut bob = deployment.connect(1, "senderId=bob").await;
    send(&mut alice, "m0", "default one", None).await;
    send(&mut alice, "m1", "first thread", Some("t1")).await;
    send(&mut alice, "m2", "second thread", Some("t2")).await;
    send(&mut bob, "b1", "bob's t1", Some("t1")).await;

    let no_thread = ask(&mut alice, json!({"type": "chat.delete"}), "chat.deleted").await;
    assert_eq!(no_thread["code"], "invalid_message");
    let unknown = ask(&mut alice, json!({"type": "chat.delete", "threadId": "t9"}), "chat.deleted").await;
    assert_eq!(unknown["code"], "not_found");
    let bobs_try = ask(&mut bob, json!({"type": "chat.delete", "threadId": "t2"}), "chat.deleted").await;
    assert_eq!(bobs_try["code"], "not_found", "bob cannot reach alice's thread");

    // Deleted from the other node while a turn runs in it: the turn is aborted first.
    alice.send_json(json!({"type": "chat.send", "messageId": "m3", "content": "slow one", "threadId": "t1"})).await;
    loop {
        if alice.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    let mut other_tab = deployment.connect(1, "senderId=alice").await;
    let deleted = ask(&mut other_tab, json!({"type": "chat.delete", "threadId": "t1"}), "chat.deleted").await;
    assert_eq!(deleted["type"], "chat.deleted", "{deleted}");
    assert_eq!(deleted["threadId"], "t1");
    assert_eq!(deleted["sessionKey"], "agent:main:websocket:direct:alice:thread:t1");
    let ended = alice.turn("m3").await;
    assert_eq!(last(&ended)["code"], "aborted", "{ended:?}");

    let listed = threads(&mut other_tab, json!({})).await;
    assert_eq!(thread_ids(&listed), [Some("t2".to_string()), None], "t1 gone, the others untouched");
    assert!(history(&mut other_tab, json!({"threadId": "t1"})).await.is_empty());
    assert_eq!(history(&mut other_tab, json!({"threadId": "t2"})).await.len(), 2);
    assert_eq!(history(&mut bob, json!({"threadId": "t1"})).await.len(), 2, "bob's t1 untouched");

    // Its id is free: the same messageId runs again, in a fresh conversation.
    let again = send(&mut alice, "m1", "first thread anew", Some("t1")).await;
    assert_eq!(last(&again)["type"], "chat.response");
    assert_eq!(history(&mut alice, json!({"threadId": "t1"})).await.len(), 2);
    let relisted = threads(&mut alice, json!({})).await;
    assert_eq!(
        (relisted[0]["title"].as_str(), relisted[0]["messageCount"].as_u64()),
        (Some("first thread anew"), Some(2))
    );
}

#[actix_rt::test]
async fn delete_removes_one_thread_aborting_its_turn_and_nothing_else_alone() {
    deletes_one_thread(Mode::Alone).await;
}

#[actix_rt::test]
async fn delete_removes_one_thread_aborting_its_turn_and_nothing_else_on_two_nodes() {
    deletes_one_thread(Mode::Cluster).await;
}

async fn groups_follow_the_group_policy(mode: Mode) {
    use crate::support::fake_auth::{AuthScript, FakeAuth};
    let auth = FakeAuth::start(
        AuthScript::new()
            .user("tok-alice", json!({"userId": "alice", "username": "Alice", "groups": ["team"]}))
            .user("tok-bob", json!({"userId": "bob", "username": "Bob"})),
    );
    let settings: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.as_str().into()),
        ("channels.websocket.groups.policy", "listed".into()),
    ];
    let agent = numbered_agent();
    let deployment = Deployment::start(mode, &agent, &settings).await;
    let mut alice = deployment.connect(0, "token=tok-alice").await;
    let mut bob = deployment.connect(1, "token=tok-bob").await;
    alice
        .send_json(json!({"type": "chat.send", "messageId": "g1", "content": "team plans", "chatType": "group", "groupId": "team", "threadId": "plans"}))
        .await;
    alice.turn("g1").await;

    let listed = threads(&mut alice, json!({"groupId": "team"})).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["groupId"].as_str(), listed[0]["threadId"].as_str()), (Some("team"), Some("plans")));
    assert!(threads(&mut alice, json!({})).await.is_empty(), "a group's threads are not alice's own");

    let refused = ask(&mut bob, json!({"type": "chat.threads", "groupId": "team"}), "chat.threads").await;
    assert_eq!(refused["code"], "forbidden");
    let not_his =
        ask(&mut bob, json!({"type": "chat.delete", "groupId": "team", "threadId": "plans"}), "chat.deleted").await;
    assert_eq!(not_his["code"], "forbidden");
    let not_named = ask(
        &mut bob,
        json!({"type": "chat.title", "groupId": "team", "threadId": "plans", "title": "x"}),
        "chat.titled",
    )
    .await;
    assert_eq!(not_named["code"], "forbidden");
    assert_eq!(threads(&mut alice, json!({"groupId": "team"})).await, listed, "untouched");

    let deleted =
        ask(&mut alice, json!({"type": "chat.delete", "groupId": "team", "threadId": "plans"}), "chat.deleted").await;
    assert_eq!(deleted["groupId"], "team");
    assert!(threads(&mut alice, json!({"groupId": "team"})).await.is_empty());
}

#[actix_rt::test]
async fn a_groups_conversations_follow_the_group_policy_alone() {
    groups_follow_the_group_policy(Mode::Alone).await;
}

#[actix_rt::test]
async fn a_groups_conversations_follow_the_group_policy_on_two_nodes() {
    groups_follow_the_group_policy(Mode::Cluster).await;
}

#[actix_rt::test]
async fn the_index_survives_a_restart_and_is_rebuilt_when_deleted_or_damaged_by_hand() {
    let agent = numbered_agent();
    let dir = tempfile::tempdir().unwrap();
    let config = openai_config(&agent.url_v1(), "systemPrompt = \"\"\n", "");
    let server = ChildServer::start_in(dir.path(), &config, &[]).await;
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    send(&mut alice, "m1", "hello", None).await;
    send(&mut alice, "m2", "trip", Some("t1")).await;
    alice.send_json(json!({"type": "chat.title", "threadId": "t1", "title": "Rome"})).await;
    alice.recv().await;
    let before = threads(&mut alice, json!({})).await;
    drop(alice);
    let index = server.store_dir().join("conversations/direct");
    let index_file = std::fs::read_dir(&index).unwrap().next().unwrap().unwrap().path();
    server.kill();

    let server = ChildServer::start_in(dir.path(), &config, &[]).await;
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert_eq!(threads(&mut alice, json!({})).await, before, "the index survives a restart");
    std::fs::remove_file(&index_file).unwrap();
    assert_eq!(threads(&mut alice, json!({})).await, before, "rebuilt from the transcripts, title kept");
    std::fs::write(&index_file, b"{\"sessions\":[{\"sess").unwrap();
    assert_eq!(threads(&mut alice, json!({})).await, before, "rebuilt when damaged");
    std::fs::remove_file(&index_file).unwrap();
    send(&mut alice, "m3", "more", Some("t1")).await;
    let after = threads(&mut alice, json!({})).await;
    assert_eq!(after[0]["messageCount"], 4, "a turn on a missing index rebuilds it once, not counting twice");
    let log = server.kill();
    assert!(log.contains("no conversation index; rebuilding it from the transcripts"), "{log}");
    assert!(log.contains("the conversation index is damaged; rebuilding it from the transcripts"), "{log}");
}

#[actix_rt::test]
async fn a_damaged_entry_in_redis_is_left_out_and_remade_by_the_next_turn() {
    let agent = numbered_agent();
    let deployment = Deployment::start(Mode::Cluster, &agent, &[]).await;
    let mut alice = deployment.connect(0, "senderId=alice").await;
    send(&mut alice, "m1", "hello", Some("t1")).await;
    send(&mut alice, "m2", "other", Some("t2")).await;
    let redis = deployment.redis.as_ref().unwrap();
    redis.command(&["HSET", "cs:threads:{direct:alice}", "t1", "{not json"]);
    let listed = threads(&mut alice, json!({})).await;
    assert_eq!(thread_ids(&listed), [Some("t2".to_string())], "the damaged entry is left out");
    send(&mut alice, "m3", "again", Some("t1")).await;
    let listed = threads(&mut alice, json!({})).await;
    assert_eq!(thread_ids(&listed), [Some("t1".to_string()), Some("t2".to_string())]);
    assert_eq!(listed[0]["messageCount"], 4, "counted from the transcript");
}
