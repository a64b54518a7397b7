//! Several nodes on one Redis act as one service (SPEC §14): real `redis-server`
//! processes, two or three ClawSocket nodes on loopback (in-process, or the binary
//! where a node must die by SIGKILL), real WebSocket clients on different nodes.

use std::time::Duration;

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::dynamic_agents::dynamic;
use crate::support::binary::ChildServer;
use crate::support::client::{last, streamed_text};
use crate::support::cluster::{node, openai_child, ready_nodes, wait_for_readyz};
use crate::support::fake_agent::{paced_agent, FakeAgent};
use crate::support::redis::RedisServer;
use crate::support::server::TestServer;
use crate::support::{eventually, WsClient};

/// Starts `ids` as nodes answering with `agent` and waits until each is ready.
async fn nodes(redis: &RedisServer, ids: &[&str], agent: &FakeAgent) -> Vec<TestServer> {
    nodes_with(redis, ids, agent, &[]).await
}

/// As `nodes`, with `extra` settings on every node.
async fn nodes_with(
    redis: &RedisServer,
    ids: &[&str],
    agent: &FakeAgent,
    extra: &[(&str, SettingValue)],
) -> Vec<TestServer> {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())];
    settings.extend(extra.iter().cloned());
    ready_nodes(redis, ids, &settings).await
}

fn of_turn<'a>(frames: &'a [Value], message_id: &str) -> Vec<&'a Value> {
    frames.iter().filter(|frame| frame["messageId"] == message_id).collect()
}

fn seqs(frames: &[&Value]) -> Vec<u64> {
    frames.iter().filter(|frame| frame["type"] == "chat.stream").filter_map(|frame| frame["seq"].as_u64()).collect()
}

/// Alice connected at `on_a` and at `on_b`, where she joined her conversation.
async fn alice_on_both(on_a: String, on_b: String) -> (WsClient, WsClient) {
    let tab_a = WsClient::connect_welcomed(&on_a).await.0;
    let mut tab_b = WsClient::connect_welcomed(&on_b).await.0;
    tab_b.join(json!({})).await;
    (tab_a, tab_b)
}

#[actix_rt::test]
async fn two_tabs_on_two_nodes_get_every_delta_of_a_turn_once_in_order() {
    let redis = RedisServer::start();
    let agent = paced_agent(20, Duration::from_millis(5));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let (mut tab_a, mut tab_b) =
        alice_on_both(nodes[0].ws_url("senderId=alice"), nodes[1].ws_url("senderId=alice")).await;

    let on_a = tab_a.chat("m1", "hello").await;
    let on_b = tab_b.turn("m1").await;

    let expected: Vec<u64> = (1..=20).collect();
    for frames in [&on_a, &on_b] {
        let turn = of_turn(frames, "m1");
        assert_eq!(turn[0]["type"], "chat.typing", "{frames:?}");
        assert_eq!(seqs(&turn), expected, "every delta once, in order: {frames:?}");
        assert_eq!(last(frames)["type"], "chat.response");
        assert_eq!(last(frames)["content"], streamed_text(frames));
    }
    assert_eq!(agent.requests().len(), 1, "one turn ran, on one node");
    let (on_a, on_b) = (metrics_of(&nodes[0]).await, metrics_of(&nodes[1]).await);
    assert!(on_a.contains("clawsocket_cluster_redis_up 1"), "{on_a}");
    assert!(on_a.contains("clawsocket_cluster_leases_taken_total 1"), "{on_a}");
    assert!(!on_a.contains("clawsocket_cluster_events_published_total 0"), "{on_a}");
    assert!(!on_b.contains("clawsocket_cluster_events_relayed_total 0"), "{on_b}");
}

async fn metrics_of(node: &TestServer) -> String {
    let mut answer = awc::Client::new().get(node.http_url("/metrics")).send().await.expect("metrics");
    String::from_utf8(answer.body().await.expect("metrics body").to_vec()).expect("text")
}

#[actix_rt::test]
async fn a_group_spans_three_nodes() {
    let redis = RedisServer::start();
    let agent = paced_agent(5, Duration::from_millis(5));
    let nodes = nodes(&redis, &["a", "b", "c"], &agent).await;
    let mut members = Vec::new();
    for (node, user) in nodes.iter().zip(["u1", "u2", "u3"]) {
        let mut member = WsClient::connect_welcomed(&node.ws_url(&format!("senderId={user}"))).await.0;
        let joined = member.join(json!({"groupId": "dev"})).await;
        assert_eq!(joined["sessionKey"], "agent:main:websocket:group:dev");
        members.push(member);
    }
    let send = json!({"type": "chat.send", "content": "hi all", "chatType": "group", "groupId": "dev",
        "messageId": "g1"});
    members[0].send_json(send).await;
    let sender = members[0].turn("g1").await;
    assert!(!sender.iter().any(|frame| frame["type"] == "chat.message"), "the sender is not echoed: {sender:?}");
    for member in &mut members[1..] {
        let frames = member.turn("g1").await;
        let relayed: Vec<&Value> = frames.iter().filter(|frame| frame["type"] == "chat.message").collect();
        assert_eq!(relayed.len(), 1, "{frames:?}");
        assert_eq!((&relayed[0]["senderId"], &relayed[0]["content"]), (&json!("u1"), &json!("hi all")));
        assert_eq!(seqs(&of_turn(&frames, "g1")), (1..=5).collect::<Vec<_>>());
        assert_eq!(last(&frames)["content"], "w1 w2 w3 w4 w5 ");
    }
}

#[actix_rt::test]
async fn quick_sends_from_three_nodes_run_one_at_a_time_in_one_order() {
    let redis = RedisServer::start();
    let agent = paced_agent(5, Duration::from_millis(10));
    let nodes = nodes(&redis, &["a", "b", "c"], &agent).await;
    let mut tabs = Vec::new();
    for node in &nodes {
        let mut tab = WsClient::connect_welcomed(&node.ws_url("senderId=alice")).await.0;
        tab.join(json!({})).await;
        tabs.push(tab);
    }
    for (index, tab) in tabs.iter_mut().enumerate() {
        tab.send_json(json!({"type": "chat.send", "content": format!("q{index}"), "messageId": format!("m{index}")}))
            .await;
    }
    let mut orders = Vec::new();
    for tab in &mut tabs {
        let mut answered = Vec::new();
        while answered.len() < 3 {
            let frame = tab.recv().await;
            assert_ne!(frame["type"], "chat.error", "{frame}");
            if frame["type"] == "chat.response" {
                answered.push(frame["messageId"].as_str().unwrap().to_string());
            }
        }
        orders.push(answered);
    }
    assert_eq!(agent.most_at_once(), 1, "turns of one session never overlap at the agent");
    assert_eq!(agent.requests().len(), 3);
    assert!(orders.iter().all(|order| order == &orders[0]), "every tab saw one order: {orders:?}");
    let mut sorted = orders[0].clone();
    sorted.sort();
    assert_eq!(sorted, ["m0", "m1", "m2"]);
}

#[actix_rt::test]
async fn a_retry_on_another_node_is_answered_from_the_record() {
    let redis = RedisServer::start();
    let agent = paced_agent(3, Duration::from_millis(1));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let first = on_a.chat("m1", "hello").await;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    let retry = on_b.chat("m1", "hello").await;
    assert_eq!(last(&retry)["type"], "chat.response", "{retry:?}");
    assert_eq!(last(&retry)["content"], last(&first)["content"]);
    assert_eq!(agent.requests().len(), 1, "the retry did not run again");
}

#[actix_rt::test]
async fn history_written_on_one_node_is_read_on_another() {
    let redis = RedisServer::start();
    let agent = paced_agent(2, Duration::from_millis(1));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    on_a.chat("m1", "first question").await;
    on_a.chat("m2", "second question").await;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    on_b.send_json(json!({"type": "chat.history"})).await;
    let history = on_b.recv().await;
    assert_eq!(history["type"], "chat.history", "{history}");
    let contents: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["first question", "w1 w2 ", "second question", "w1 w2 "]);
}

#[actix_rt::test]
async fn a_late_joiner_on_another_node_resumes_after_its_last_seq() {
    let redis = RedisServer::start();
    let agent = paced_agent(30, Duration::from_millis(20));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let mut phone = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    phone.send_json(json!({"type": "chat.send", "content": "tell me", "messageId": "m1"})).await;
    loop {
        let frame = phone.recv().await;
        if frame["type"] == "chat.stream" && frame["seq"].as_u64() >= Some(5) {
            break;
        }
    }
    let mut laptop = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    let joined = laptop.join(json!({"afterSeq": 5})).await;
    assert_eq!(joined["inFlight"], "m1", "{joined}");
    let rest = laptop.turn("m1").await;
    let turn = of_turn(&rest, "m1");
    assert_eq!(turn[0]["type"], "chat.typing");
    assert_eq!(seqs(&turn), (6..=30).collect::<Vec<_>>(), "the rest, once, in order");
    assert_eq!(last(&rest)["content"], (1..=30).map(|n| format!("w{n} ")).collect::<String>());
}

/// Two child nodes, alice on each; alice's turn m1 (sent on a, so a owns the
/// session) has streamed its first deltas to b.
struct OwnerMidTurn {
    owner: ChildServer,
    survivor: ChildServer,
    on_a: WsClient,
    on_b: WsClient,
}

async fn owner_mid_turn(redis: &RedisServer, agent: &FakeAgent) -> OwnerMidTurn {
    let owner = openai_child(redis, "a", agent, "").await;
    let survivor = openai_child(redis, "b", agent, "").await;
    let (mut on_a, mut on_b) = alice_on_both(owner.ws_url("senderId=alice"), survivor.ws_url("senderId=alice")).await;
    on_a.send_json(json!({"type": "chat.send", "content": "a long one", "messageId": "m1"})).await;
    loop {
        let frame = on_b.recv().await;
        if frame["type"] == "chat.stream" && frame["seq"].as_u64() >= Some(3) {
            return OwnerMidTurn { owner, survivor, on_a, on_b };
        }
    }
}

#[actix_rt::test]
async fn the_owner_killed_mid_turn_ends_the_turn_and_another_node_takes_over() {
    let redis = RedisServer::start();
    let agent = paced_agent(200, Duration::from_millis(20));
    let OwnerMidTurn { owner, mut on_b, survivor: _survivor, .. } = owner_mid_turn(&redis, &agent).await;
    owner.kill();

    let ended = on_b.turn("m1").await;
    let end = last(&ended);
    assert_eq!((&end["type"], &end["code"]), (&json!("chat.error"), &json!("agent_unavailable")), "{end}");
    let next = on_b.chat("m2", "still there?").await;
    assert_eq!(last(&next)["type"], "chat.response", "{next:?}");
    assert_eq!(of_turn(&next, "m2").iter().filter(|frame| frame["type"] == "chat.stream").count(), 200);
}

#[actix_rt::test]
async fn redis_killed_and_restarted_is_survived_without_restarting_nodes() {
    let mut redis = RedisServer::start();
    let agent = paced_agent(3, Duration::from_millis(1));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=bob")).await.0;
    assert_eq!(last(&on_a.chat("m1", "before").await)["type"], "chat.response");

    redis.kill();
    for node in &nodes {
        wait_for_readyz(&node.http_url("/readyz"), 503).await;
    }
    let refused = on_b.chat("b1", "while Redis is down").await;
    let error = last(&refused);
    assert_eq!((&error["type"], &error["code"]), (&json!("chat.error"), &json!("agent_unavailable")), "{error}");
    assert!(error["error"].as_str().unwrap().contains("Redis"), "{error}");

    redis.restart();
    for node in &nodes {
        wait_for_readyz(&node.http_url("/readyz"), 200).await;
    }
    assert_eq!(last(&on_b.chat("b2", "after").await)["type"], "chat.response");
    let after = on_a.chat("m2", "after").await;
    assert_eq!(last(&after)["type"], "chat.response", "{after:?}");
    on_a.send_json(json!({"type": "chat.history"})).await;
    let history = on_a.recv().await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 4, "the turn before survived: {history}");
}

/// The agent id a user's first `chat.send` on `node` is answered by.
async fn agent_on(node: &TestServer, user: &str) -> String {
    let mut client = WsClient::connect_welcomed(&node.ws_url(&format!("senderId={user}"))).await.0;
    let answer = last(&client.chat(&format!("{user}-1"), "hello").await).clone();
    assert_eq!(answer["type"], "chat.response", "{answer}");
    answer["agentId"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn max_agents_holds_across_nodes_and_a_user_keeps_one_agent_everywhere() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let agent = paced_agent(2, Duration::from_millis(1));
    let limit = [("channels.websocket.dynamicAgentCreation.maxAgents", SettingValue::from(2))];
    let nodes = nodes_with(&redis, &["a", "b"], &agent, &dynamic(root.path(), &limit)).await;

    assert_eq!(agent_on(&nodes[0], "u1").await, "ws-u1");
    assert_eq!(agent_on(&nodes[1], "u2").await, "ws-u2");
    assert_eq!(agent_on(&nodes[0], "u3").await, "main", "the third user across the cluster gets the default");
    assert_eq!(agent_on(&nodes[1], "u4").await, "main");
    assert_eq!(redis.command(&["HLEN", "cs:{agents}"]), "2");

    // u1's agent, created on a, answers u1 on b; its history there is a's.
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=u1")).await.0;
    on_b.send_json(json!({"type": "chat.history"})).await;
    let history = on_b.recv().await;
    assert_eq!(history["sessionKey"], "agent:ws-u1:websocket:direct:u1", "{history}");
    assert_eq!(history["messages"].as_array().unwrap().len(), 2, "{history}");
    let answer = last(&on_b.chat("u1-2", "again").await).clone();
    assert_eq!(answer["agentId"], "ws-u1", "{answer}");
}

#[actix_rt::test]
async fn a_node_started_while_redis_is_down_is_not_ready_then_works_when_redis_comes() {
    let mut redis = RedisServer::start();
    redis.kill();
    let agent = paced_agent(2, Duration::from_millis(1));
    let node = node(&redis, "a", &[("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())]);
    let url = node.http_url("/readyz");
    wait_for_readyz(&url, 503).await;
    let mut client = WsClient::connect_welcomed(&node.ws_url("senderId=alice")).await.0;
    let refused = client.chat("m1", "anyone?").await;
    assert_eq!(last(&refused)["code"], "agent_unavailable", "{refused:?}");

    redis.restart();
    wait_for_readyz(&url, 200).await;
    assert_eq!(last(&client.chat("m2", "now?").await)["type"], "chat.response");
}

#[actix_rt::test]
async fn an_abort_from_another_node_stops_the_turn_on_the_owner() {
    let redis = RedisServer::start();
    let agent = paced_agent(500, Duration::from_millis(10));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let (mut on_a, mut on_b) =
        alice_on_both(nodes[0].ws_url("senderId=alice"), nodes[1].ws_url("senderId=alice")).await;
    on_a.send_json(json!({"type": "chat.send", "content": "go on and on", "messageId": "m1"})).await;
    loop {
        let frame = on_b.recv().await;
        if frame["type"] == "chat.stream" {
            break;
        }
    }
    on_b.send_json(json!({"type": "chat.abort", "messageId": "m1"})).await;
    for client in [&mut on_a, &mut on_b] {
        let frames = client.turn("m1").await;
        assert_eq!(last(&frames)["code"], "aborted", "{:?}", last(&frames));
    }
    eventually("the agent call was dropped", || {
        let cancelled = agent.cancelled();
        async move { cancelled == 1 }
    })
    .await;
}

#[actix_rt::test]
async fn a_late_joiner_resumes_a_turn_longer_than_a_page_of_events() {
    let redis = RedisServer::start();
    let agent = paced_agent(1500, Duration::from_millis(1));
    let nodes = nodes(&redis, &["a", "b"], &agent).await;
    let mut phone = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    phone.send_json(json!({"type": "chat.send", "content": "a long one", "messageId": "m1"})).await;
    let mut seen = 0;
    while seen < 1200 {
        let frame = phone.recv().await;
        if frame["type"] == "chat.stream" {
            seen = frame["seq"].as_u64().unwrap();
        }
    }
    let mut laptop = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    let joined = laptop.join(json!({"afterSeq": 100})).await;
    assert_eq!(joined["inFlight"], "m1", "the turn's start was found however far back: {joined}");
    let rest = laptop.turn("m1").await;
    assert_eq!(seqs(&of_turn(&rest, "m1")), (101..=1500).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn an_owner_paused_past_its_lease_cannot_write_after_another_node_took_over() {
    let redis = RedisServer::start();
    let agent = paced_agent(100, Duration::from_millis(20));
    let OwnerMidTurn { owner: paused, mut on_a, mut on_b, survivor: _survivor } = owner_mid_turn(&redis, &agent).await;
    paused.signal("STOP");
    actix_rt::time::sleep(Duration::from_millis(1500)).await; // past the 1 s lease

    let lost = on_b.turn("m1").await;
    assert_eq!(last(&lost)["code"], "agent_unavailable", "{:?}", last(&lost));
    let taken_over = on_b.chat("m2", "are you there?").await;
    assert_eq!(last(&taken_over)["type"], "chat.response", "{taken_over:?}");

    paused.signal("CONT");
    // The old owner's turn goes on streaming to its own client, then cannot be stored.
    let refused = on_a.turn("m1").await;
    let end = last(&refused);
    assert_eq!(end["type"], "chat.error", "{end}");
    assert!(["internal", "agent_unavailable"].contains(&end["code"].as_str().unwrap()), "{end}");
    // Nothing of m1 reached b after the takeover, and the transcript holds m2 only.
    assert!(on_b.recv_within(Duration::from_millis(300)).await.is_none());
    on_b.send_json(json!({"type": "chat.history"})).await;
    let history = on_b.recv().await;
    let ids: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m2", "m2"], "{history}");
}
