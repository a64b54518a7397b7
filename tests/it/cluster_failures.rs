//! What breaks a cluster (SPEC §14), against a real `redis-server`: an owner cut off
//! from Redis (a TCP proxy that swallows bytes), a dead owner replaced while a third
//! node watches, a bad stream entry, a huge transcript taken over, retired sessions
//! and made-up threads that must leave nothing behind. Each test was written against
//! a defect found in review, and failed before its fix.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::cluster::{node_on, openai_child, wait_for_readyz};
use crate::support::fake_agent::{paced_agent, FakeAgent};
use crate::support::redis::RedisServer;
use crate::support::server::TestServer;
use crate::support::{eventually, WsClient};

/// A ready in-process node `id` on the Redis at `url`, answering with `agent`.
async fn node_at(url: &str, id: &str, agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())];
    settings.extend(extra.iter().cloned());
    let node = node_on(url, id, &settings);
    wait_for_readyz(&node.http_url("/readyz"), 200).await;
    node
}

/// Frames up to the end (`chat.response`/`chat.error`) of `message_id`, or what came
/// before `wait` ran out (`Err`).
async fn turn_within(client: &mut WsClient, message_id: &str, wait: Duration) -> Result<Vec<Value>, Vec<Value>> {
    let deadline = Instant::now() + wait;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = client.recv_within(left).await else { return Err(frames) };
        let ends =
            (frame["type"] == "chat.response" || frame["type"] == "chat.error") && frame["messageId"] == message_id;
        frames.push(frame);
        if ends {
            return Ok(frames);
        }
    }
}

/// What Redis executes during `window`, as `MONITOR` prints it.
async fn monitor(redis: &RedisServer, window: Duration) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "MONITOR"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli MONITOR");
    actix_rt::time::sleep(window).await;
    let _ = child.kill();
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.wait();
    out
}

/// A TCP proxy to `target` on a free port; while `cut` is set it swallows every byte
/// both ways (a network partition that keeps the sockets open).
fn partition_proxy(target: u16, cut: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                let cut = cut.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        let Ok(read) = from.read(&mut buffer) else { return };
                        if read == 0 {
                            return;
                        }
                        if !cut.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    port
}

/// Finding: `StreamReader` forgets a followed stream only when an event arrives for a
/// session that is gone (`dispatch`), and a retiring session never sends `Unfollow`.
/// Every session a node ever followed stays in its blocking `XREAD` for good: one
/// client joining many threads grows every later read (and the reader's map) without
/// bound.
#[actix_rt::test]
async fn a_retired_follower_is_no_longer_read_from_redis() {
    let redis = RedisServer::start();
    let agent = paced_agent(2, Duration::from_millis(1));
    let idle = [("limits.sessionIdleMs", SettingValue::from(200))];
    let node = node_at(&redis.url(), "a", &agent, &idle).await;
    let mut client = WsClient::connect_welcomed(&node.ws_url("senderId=alice")).await.0;
    for thread in 0..20 {
        client.join(json!({"threadId": format!("t{thread}")})).await;
    }
    client.close().await;
    eventually("every session retired", || {
        let registries = node.registries();
        async move { registries.await.sessions == 0 }
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    let seen = monitor(&redis, Duration::from_millis(600)).await;
    let reads: Vec<&str> = seen.lines().filter(|line| line.contains("\"XREAD\"")).collect();
    let still_read = reads.last().map_or(0, |read| read.matches(":thread:t").count());
    assert_eq!(
        still_read,
        0,
        "{} XREADs in 600 ms with no session left; the last still names {still_read} retired streams: {:?}",
        reads.len(),
        reads.last()
    );
}

/// Finding: a `chat.abort` on a follower claims the lease (`through_owner`), and every
/// claim `INCR`s `cs:fence:{session}`, a key with no expiry. A client aborting nothing
/// in N made-up threads leaves N permanent keys in Redis (no turn, no transcript).
#[actix_rt::test]
async fn aborts_in_unused_threads_leave_no_permanent_keys_in_redis() {
    let redis = RedisServer::start();
    let agent = paced_agent(2, Duration::from_millis(1));
    let node = node_at(&redis.url(), "a", &agent, &[]).await;
    let mut client = WsClient::connect_welcomed(&node.ws_url("senderId=mallory")).await.0;
    for thread in 0..30 {
        client.send_json(json!({"type": "chat.abort", "threadId": format!("x{thread}")})).await;
    }
    client.send_json(json!({"type": "ping"})).await;
    loop {
        if client.recv().await["type"] == "pong" {
            break;
        }
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    let keys = redis.command(&["KEYS", "cs:*"]);
    // Per-node keys (the connection counts' bookkeeping) are a few per node; none may
    // be left per thread a client names.
    let permanent: Vec<&str> =
        keys.lines().filter(|key| key.contains(":thread:") && redis.command(&["PTTL", key]) == "-1").collect();
    assert!(
        permanent.is_empty(),
        "{} keys without expiry after 30 aborts of nothing, e.g. {:?}",
        permanent.len(),
        permanent.first()
    );
}

/// Finding: `StreamReadReply` parses field names as `String`; one entry with a non-UTF-8
/// field name in one followed stream makes every `XREAD` of the node fail, and the
/// reader retries from the same ids forever: every session this node follows goes
/// silent (here bob's, whose stream is clean).
#[actix_rt::test]
async fn one_bad_stream_entry_does_not_silence_the_other_sessions_of_a_node() {
    let redis = RedisServer::start();
    let agent = paced_agent(5, Duration::from_millis(5));
    let a = node_at(&redis.url(), "a", &agent, &[]).await;
    let b = node_at(&redis.url(), "b", &agent, &[]).await;
    let mut alice_b = WsClient::connect_welcomed(&b.ws_url("senderId=alice")).await.0;
    alice_b.join(json!({})).await;
    let mut bob_a = WsClient::connect_welcomed(&a.ws_url("senderId=bob")).await.0;
    let mut bob_b = WsClient::connect_welcomed(&b.ws_url("senderId=bob")).await.0;
    bob_b.join(json!({})).await;

    let poison = "redis.call('XADD', KEYS[1], '*', string.char(255), 'x') return 1";
    redis.command(&["EVAL", poison, "1", "cs:ev:{agent:main:websocket:direct:alice}"]);

    let on_a = bob_a.chat("b1", "hello").await;
    assert_eq!(on_a.last().unwrap()["type"], "chat.response");
    let on_b = turn_within(&mut bob_b, "b1", Duration::from_secs(5)).await;
    assert!(on_b.is_ok(), "bob's tab on b got nothing of his turn after a bad entry in alice's stream: {on_b:?}");
}

/// Finding: `Cluster::load_tail` fetches and fully parses the last
/// `max(keep, 2 × store.idempotencyWindow)` entries (20,000 by default) each time a
/// node takes a session, where the file store keeps `keep` entries and only the ids
/// of older answers. A conversation with long answers costs its whole size in memory
/// on every takeover.
#[actix_rt::test]
async fn taking_a_session_over_does_not_load_its_whole_transcript_into_memory() {
    let redis = RedisServer::start();
    let agent = paced_agent(2, Duration::from_millis(1));
    // 1,000 entries of 64 KiB: a 62.5 MiB conversation (the node keeps 50 in memory).
    let seed = "for i = 1, 1000 do
          local role = 'user'
          if i % 2 == 0 then role = 'assistant' end
          redis.call('RPUSH', KEYS[1], cjson.encode({role = role, content = string.rep('x', 65536),
            messageId = 'old' .. math.floor((i + 1) / 2), senderId = 'alice', senderName = 'alice', ts = 1}))
        end
        return redis.call('LLEN', KEYS[1])";
    assert_eq!(redis.command(&["EVAL", seed, "1", "cs:tx:{agent:main:websocket:direct:alice}"]), "1000");
    // The backend is sent one stored message: the request stays small.
    let node = openai_child(&redis, "a", &agent, "maxHistory = 1\n").await;
    let mut client = WsClient::connect_welcomed(&node.ws_url("senderId=alice")).await.0;
    client.send_json(json!({"type": "ping"})).await;
    client.recv().await;
    let before = node.peak_rss_bytes();

    let answer = client.chat("new", "hello").await;
    assert_eq!(answer.last().unwrap()["type"], "chat.response", "{:?}", answer.last());
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 24 << 20, "taking over a 62.5 MiB conversation grew the node's peak memory by {} MiB", grown >> 20);
}

/// Finding: a follower ends a turn whose owner died only from `watch_owner`, every
/// half lease. When the new owner starts the next turn before that tick, the new
/// `chat.typing` replaces the followed turn (`FollowedTurns::observe`) and the dead
/// turn never ends on that node: its clients wait for m1 forever. Three sessions, so
/// that the race is lost on at least one of them.
#[actix_rt::test]
async fn a_third_node_ends_the_dead_owners_turn_even_when_the_next_turn_starts_quickly() {
    let redis = RedisServer::start();
    let agent = paced_agent(300, Duration::from_millis(20));
    let owner = openai_child(&redis, "a", &agent, "").await;
    let b = node_at(&redis.url(), "b", &agent, &[]).await;
    let c = node_at(&redis.url(), "c", &agent, &[]).await;
    let users = ["u1", "u2", "u3"];
    let mut on_b = Vec::new();
    let mut on_c = Vec::new();
    let mut on_a = Vec::new();
    for user in users {
        let query = format!("senderId={user}");
        let mut tab_b = WsClient::connect_welcomed(&b.ws_url(&query)).await.0;
        tab_b.join(json!({})).await;
        let mut tab_c = WsClient::connect_welcomed(&c.ws_url(&query)).await.0;
        tab_c.join(json!({})).await;
        let mut tab_a = WsClient::connect_welcomed(&owner.ws_url(&query)).await.0;
        tab_a.send_json(json!({"type": "chat.send", "content": "long", "messageId": "m1"})).await;
        loop {
            let frame = tab_c.recv().await;
            if frame["type"] == "chat.stream" {
                break;
            }
        }
        on_a.push(tab_a);
        on_b.push(tab_b);
        on_c.push(tab_c);
    }
    drop(owner.kill());
    for tab in &mut on_b {
        tab.send_json(json!({"type": "chat.send", "content": "next", "messageId": "m2"})).await;
    }
    let mut missed = Vec::new();
    for (user, tab) in users.iter().zip(&mut on_c) {
        let frames = turn_within(tab, "m2", Duration::from_secs(10)).await.expect("m2 reaches c");
        let m1_ended = frames.iter().any(|frame| frame["messageId"] == "m1" && frame["type"] == "chat.error");
        if !m1_ended {
            missed.push(*user);
        }
    }
    assert!(missed.is_empty(), "on node c, m1 never ended (no chat.error) for {missed:?}: it was replaced by m2");
}

/// Node a (owner of alice's session, mid-turn m1) and node b; then a's way to Redis
/// is cut (its sockets stay open, its bytes are swallowed).
struct CutOff {
    on_b: WsClient,
    _on_a: WsClient,
    _nodes: [TestServer; 2],
}

async fn owner_cut_off_mid_turn(redis: &RedisServer, agent: &FakeAgent) -> CutOff {
    let cut = Arc::new(AtomicBool::new(false));
    let proxy = partition_proxy(redis.port(), cut.clone());
    let a = node_at(&format!("redis://127.0.0.1:{proxy}"), "a", agent, &[]).await;
    let b = node_at(&redis.url(), "b", agent, &[]).await;
    let mut on_a = WsClient::connect_welcomed(&a.ws_url("senderId=alice")).await.0;
    let on_b = WsClient::connect_welcomed(&b.ws_url("senderId=alice")).await.0;
    on_a.send_json(json!({"type": "chat.send", "content": "long", "messageId": "m1"})).await;
    loop {
        if on_a.recv().await["type"] == "chat.stream" {
            break;
        }
    }
    cut.store(true, Ordering::SeqCst);
    CutOff { on_b, _on_a: on_a, _nodes: [a, b] }
}

/// Finding: `renew_lease` treats a Redis error as nothing (`log::debug!`): an owner cut
/// off from Redis keeps running its turn past its lease while another node takes the
/// session and runs the next turn, so two nodes call the agent for one session at
/// once (only the writes are fenced; an `openclaw` gateway's own memory is not).
#[actix_rt::test]
async fn an_owner_cut_off_from_redis_stops_its_turn_before_another_node_runs_the_next() {
    let redis = RedisServer::start();
    let agent = paced_agent(250, Duration::from_millis(20));
    let CutOff { mut on_b, _on_a, _nodes } = owner_cut_off_mid_turn(&redis, &agent).await;
    actix_rt::time::sleep(Duration::from_millis(1600)).await; // a's 1 s lease ran out

    on_b.send_json(json!({"type": "chat.send", "content": "next", "messageId": "m2"})).await;
    let m2 = turn_within(&mut on_b, "m2", Duration::from_secs(10)).await;
    assert!(m2.is_ok(), "{m2:?}");
    assert_eq!(agent.most_at_once(), 1, "two nodes ran alice's turns at the agent at once");
}

/// Finding: `through_owner` counts a command as delivered when Redis has a listener on
/// the owner's inbox (`PUBLISH` > 0). An owner that is paused or cut off keeps its
/// subscription open at Redis, so the command goes into a socket nobody reads, and
/// nothing answers the client, not even after the owner's lease ran out (README:
/// "waits for it (up to twice `cluster.leaseMs`), then is answered `agent_unavailable`").
#[actix_rt::test]
async fn a_command_forwarded_to_an_owner_cut_off_from_redis_is_answered() {
    let redis = RedisServer::start();
    let agent = paced_agent(250, Duration::from_millis(20));
    let CutOff { mut on_b, _on_a, _nodes } = owner_cut_off_mid_turn(&redis, &agent).await;

    on_b.send_json(json!({"type": "chat.send", "content": "next", "messageId": "m2"})).await;
    // Its 250 deltas take 5 s once it runs, after a's lease (1 s) ran out.
    let m2 = turn_within(&mut on_b, "m2", Duration::from_secs(15)).await;
    assert!(m2.is_ok(), "m2 was neither answered nor refused: {m2:?}");
}
