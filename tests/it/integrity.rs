//! Issue 14, from the attacker's side: nothing acknowledged is lost (history reads and
//! retries racing appends, a full disk), nobody is mixed up (guests, groups, dynamic
//! agent ids), and the OpenClaw agents file never drifts from the agent registry.
//! Where it applies, a second, well-behaved user is checked to be unaffected. The two
//! persistence tests mount the filesystem their store lives on (`support::mount`), so
//! they need root.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::SettingValue;
use futures_util::future::{join, join_all};
use serde_json::{json, Value};

use crate::dynamic_agents::dynamic;
use crate::support::client::last;
use crate::support::fake_agent::{answer_with, FakeAgent, Reply};
use crate::support::fake_auth::{dead_endpoint, AuthScript, FakeAuth};
use crate::support::fake_groups::FakeGroups;
use crate::support::mount::Mounted;
use crate::support::server::{spawn_server_on_store, TestServer};
use crate::support::{eventually, spawn_server, WsClient};

// ---------------------------------------------------------------------------------
// Helpers

/// A `chat.send` of `content` as `message_id`, with `extra` fields merged in.
fn send(content: &str, message_id: &str, extra: Value) -> Value {
    let mut message = json!({"type": "chat.send", "content": content, "messageId": message_id});
    if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
        message.extend(extra.clone());
    }
    message
}

/// A `chat.send` into group `group`.
fn group_send(group: &str, content: &str, message_id: &str) -> Value {
    send(content, message_id, json!({"chatType": "group", "groupId": group}))
}

/// Sends `request` and returns the first frame that follows: the answer to it, when
/// nothing else is on its way to `client`.
async fn answer_to(client: &mut WsClient, request: Value) -> Value {
    client.send_json(request).await;
    client.recv().await
}

/// Asserts that `frame` is a `chat.error` with code `forbidden`.
fn assert_forbidden(frame: &Value, what: &str) {
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("chat.error"), Some("forbidden")),
        "{what} must be refused with forbidden, got: {frame}"
    );
}

/// Sends a ping and asserts that the very next frame is its pong: nothing else was
/// queued for this connection before it.
async fn assert_received_nothing(client: &mut WsClient, who: &str) {
    client.send_json(json!({"type": "ping"})).await;
    let next = client.recv().await;
    assert_eq!(next["type"], "pong", "{who} must receive nothing here, got: {next}");
}

/// Connects to `url` and reads the welcome.
async fn welcomed(url: &str) -> (WsClient, Value) {
    WsClient::connect_welcomed(url).await
}

/// Sends `request` (a `chat.send`) and returns the last frame of its turn: the answer
/// or the error.
async fn turn_of(client: &mut WsClient, request: Value) -> Value {
    let message_id = request["messageId"].as_str().expect("a messageId").to_string();
    client.send_json(request).await;
    last(&client.turn(&message_id).await).clone()
}

/// The whole stored history of the session `selector` names (at most 1000 entries).
async fn stored_history(client: &mut WsClient, selector: Value) -> Vec<Value> {
    let mut request = json!({"type": "chat.history", "limit": 1000});
    if let (Some(request), Some(selector)) = (request.as_object_mut(), selector.as_object()) {
        request.extend(selector.clone());
    }
    client.send_json(request).await;
    loop {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "chat.error", "the history read failed: {frame}");
        if frame["type"] == "chat.history" {
            return frame["messages"].as_array().cloned().unwrap_or_default();
        }
    }
}

/// One acknowledged turn: it got its `chat.response`.
#[derive(Clone)]
struct Acknowledged {
    thread: Option<String>,
    message_id: String,
    content: String,
}

/// The acknowledged turns of `turns` whose user or assistant entry is not in `history`
/// exactly as sent and answered (the echo agent answers `echo: {content}`).
fn missing_from<'a>(history: &[Value], turns: impl IntoIterator<Item = &'a Acknowledged>) -> Vec<String> {
    let mut stored: HashMap<(&str, &str), &str> = HashMap::new();
    for entry in history {
        let key = (entry["messageId"].as_str().unwrap_or_default(), entry["role"].as_str().unwrap_or_default());
        stored.insert(key, entry["content"].as_str().unwrap_or_default());
    }
    turns
        .into_iter()
        .filter(|turn| {
            let user = stored.get(&(turn.message_id.as_str(), "user")).copied();
            let assistant = stored.get(&(turn.message_id.as_str(), "assistant")).copied();
            user != Some(turn.content.as_str()) || assistant != Some(format!("echo: {}", turn.content).as_str())
        })
        .map(|turn| turn.message_id.clone())
        .collect()
}

fn echo_store_settings() -> Vec<(&'static str, SettingValue)> {
    vec![("agent.kind", "echo".into()), ("agent.echoDelayMs", 0.into()), ("store.threads", 8.into())]
}

// ---------------------------------------------------------------------------------
// 1. History reads and retries of old ids never lose an acknowledged turn.

/// Rounds, each in a thread of its own (a fresh transcript file, so every read of it is
/// quick and the readers hit the file many times while the big turn is being appended).
const ROUNDS: usize = 10;
/// Small turns before each round's big one: past 25 turns (50 entries) the session's
/// memory window no longer holds the transcript, so history and retries read the file.
const SMALL_TURNS: usize = 27;
/// Content bytes of each round's last turn: its append (user entry and echo) spans
/// hundreds of pages, each visible to readers as soon as it is written.
const BIG_BYTES: usize = 400_000;
/// Tabs of the same user that keep reading, each with this many requests in flight.
const READERS: usize = 2;
const IN_FLIGHT: usize = 4;

/// What the writer tells the readers, and what they found.
#[derive(Default)]
struct Race {
    /// The thread the writer is sending into now.
    thread: RefCell<String>,
    /// The first turns of that thread: once it is past 25 turns they are older than the
    /// session's memory window, and a retry of one is answered from the file.
    old_turns: RefCell<Vec<Acknowledged>>,
    done: Cell<bool>,
    /// History reads and retries answered.
    answers: Cell<usize>,
    problems: RefCell<Vec<String>>,
}

fn round_thread(round: usize) -> String {
    format!("round-{round}")
}

/// One tab that keeps `IN_FLIGHT` history reads (limit 200) and retries of old message
/// ids in flight on the writer's current thread until the writer is done.
async fn keep_reading(url: String, race: Rc<Race>) {
    let (mut tab, _) = welcomed(&url).await;
    let (mut histories, mut retries): (usize, Vec<(String, String)>) = (0, Vec::new());
    let mut sent = 0usize;
    loop {
        while !race.done.get() && histories + retries.len() < IN_FLIGHT {
            sent += 1;
            let thread = race.thread.borrow().clone();
            let old = race.old_turns.borrow().get(sent % 3).cloned();
            match old.filter(|_| sent % 2 == 0) {
                Some(turn) => {
                    tab.send_json(send(&turn.content, &turn.message_id, json!({"threadId": thread}))).await;
                    retries.push((turn.message_id, format!("echo: {}", turn.content)));
                }
                None => {
                    tab.send_json(json!({"type": "chat.history", "limit": 200, "threadId": thread})).await;
                    histories += 1;
                }
            }
        }
        if race.done.get() && histories + retries.len() == 0 {
            break;
        }
        let Some(frame) = tab.recv_within(Duration::from_secs(5)).await else {
            let ids: Vec<&String> = retries.iter().map(|(id, _)| id).collect();
            let problem = format!("{histories} history reads and the retries of {ids:?} were never answered");
            race.problems.borrow_mut().push(problem);
            break;
        };
        let retried = retries.iter().position(|(id, _)| frame["messageId"] == id.as_str());
        match (frame["type"].as_str(), retried) {
            (Some("chat.history"), _) => {
                histories -= 1;
                race.answers.set(race.answers.get() + 1);
            }
            (Some("chat.error"), None) if frame.get("messageId").is_none() => {
                histories -= 1;
                race.problems.borrow_mut().push(format!("a history read failed: {frame}"));
            }
            (Some("chat.response") | Some("chat.error"), Some(at)) => {
                let (id, answer) = retries.remove(at);
                race.answers.set(race.answers.get() + 1);
                if frame["content"] != answer.as_str() {
                    let shown: String = frame.to_string().chars().take(200).collect();
                    race.problems.borrow_mut().push(format!("the retry of {id} was answered {shown}"));
                }
            }
            _ => {}
        }
    }
    tab.close().await;
}

/// `ROUNDS` rounds of `SMALL_TURNS` small turns and one big turn, one after another,
/// each waiting for its answer; returns the acknowledged ones.
async fn keep_writing(url: String, race: Rc<Race>) -> Vec<Acknowledged> {
    let (mut tab, _) = welcomed(&url).await;
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        let thread = round_thread(round);
        race.thread.replace(thread.clone());
        race.old_turns.borrow_mut().clear();
        for turn in 0..=SMALL_TURNS {
            let content = if turn == SMALL_TURNS {
                format!("round {round} the big one {}", "y".repeat(BIG_BYTES))
            } else {
                format!("round {round} turn {turn} {}", "x".repeat(100))
            };
            let message_id = format!("r{round}-t{turn}");
            let answer = turn_of(&mut tab, send(&content, &message_id, json!({"threadId": thread}))).await;
            assert_eq!(answer["type"], "chat.response", "turn {message_id} was not answered: {answer}");
            let turn_record = Acknowledged { thread: Some(thread.clone()), message_id, content };
            if turn < 2 {
                race.old_turns.borrow_mut().push(turn_record.clone());
            }
            acknowledged.push(turn_record);
        }
    }
    race.done.set(true);
    tab.close().await;
    acknowledged
}

/// Two tabs of one user keep reading the history past the memory window and retrying
/// old message ids while a third sends turns, each waiting for its answer; after a
/// restart every acknowledged turn must be in the history. The store is on an ext4
/// mounted with `data=journal`, where a large append becomes visible page by page, and
/// each round's big turn is appended to a small file that the readers re-read many
/// times a second: a read that treats the half-written append as a torn line and cuts
/// it loses an answered turn. (On the default ext4 the same race loses one or two turns
/// in 240, and sometimes none: not reliable enough for a test.)
#[actix_rt::test]
async fn history_reads_and_old_retries_racing_appends_lose_no_acknowledged_turn() {
    let mounted = Mounted::ext4_data_journal(256);
    let store = mounted.dir("store");
    let mut settings = echo_store_settings();
    settings.push(("limits.messagesPerMinute", 1_000_000.into()));
    // One user writing hundreds of turns a minute on purpose.
    settings.push(("limits.perUser.turnsPerMinute", 0.into()));
    // Room for a few history frames holding a big turn (0.8 MB each) queued for a reader.
    settings.push(("limits.outboundBytes", (64 << 20).into()));
    let server = spawn_server_on_store(&store, &settings);
    let url = server.ws_url("senderId=u1&senderName=U");
    let race = Rc::new(Race { thread: RefCell::new(round_thread(0)), ..Race::default() });

    let readers = join_all((0..READERS).map(|_| keep_reading(url.clone(), race.clone())));
    let (acknowledged, _) = join(keep_writing(url.clone(), race.clone()), readers).await;
    assert!(race.answers.get() > 0, "the readers were answered");
    server.stop().await;
    drop(server);

    let server = spawn_server_on_store(&store, &settings);
    let (mut client, _) = welcomed(&server.ws_url("senderId=u1&senderName=U")).await;
    let mut missing = Vec::new();
    for round in 0..ROUNDS {
        let thread = round_thread(round);
        let history = stored_history(&mut client, json!({"threadId": thread})).await;
        missing
            .extend(missing_from(&history, acknowledged.iter().filter(|turn| turn.thread.as_ref() == Some(&thread))));
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged turns lost an entry after the restart: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    let problems = race.problems.borrow();
    assert!(problems.is_empty(), "the readers saw: {problems:?}");
}

// ---------------------------------------------------------------------------------
// 2. A full disk leaves no torn line behind.

/// Fills the filesystem of `path` with a ballast file until it is full, then frees one
/// page: the next appends fit only partly.
fn fill_but_a_page(path: &Path) {
    use std::io::Write;
    let mut ballast = std::fs::File::create(path).expect("create the ballast");
    let chunk = vec![b'b'; 4096];
    loop {
        match ballast.write(&chunk) {
            Ok(written) if written == chunk.len() => {}
            _ => break,
        }
    }
    let length = ballast.metadata().expect("ballast size").len();
    ballast.set_len((length / 4096).saturating_sub(1) * 4096).expect("free a page");
}

/// The store on a 256 KiB tmpfs that a ballast file fills up to one free page: turns of
/// about 6 KB (question and echo) are sent until one cannot be stored (`internal`); its
/// append wrote part of a line. With the ballast gone, the next turn must be stored on a
/// line of its own: after a restart it is in the history whole, as is every earlier
/// acknowledged turn.
#[actix_rt::test]
async fn a_failed_append_on_a_full_disk_leaves_no_torn_line_for_the_next_turn() {
    let mounted = Mounted::tmpfs("256k");
    let store = mounted.dir("store");
    let settings = echo_store_settings();
    let server = spawn_server_on_store(&store, &settings);
    let (mut client, _) = welcomed(&server.ws_url("senderId=u1&senderName=U")).await;
    let mut acknowledged = Vec::new();
    let answer = turn_of(&mut client, send("before the disk filled up", "m0", json!({}))).await;
    assert_eq!(answer["type"], "chat.response", "{answer}");
    acknowledged.push(Acknowledged {
        thread: None,
        message_id: "m0".into(),
        content: "before the disk filled up".into(),
    });

    let ballast = mounted.path().join("ballast");
    fill_but_a_page(&ballast);
    let mut failed = None;
    for turn in 1..=30 {
        let (message_id, content) = (format!("m{turn}"), format!("turn {turn} {}", "z".repeat(3000)));
        let answer = turn_of(&mut client, send(&content, &message_id, json!({}))).await;
        if answer["type"] == "chat.error" {
            assert_eq!(answer["code"], "internal", "a turn that could not be stored: {answer}");
            failed = Some(message_id);
            break;
        }
        acknowledged.push(Acknowledged { thread: None, message_id, content });
    }
    assert!(failed.is_some(), "some turn must fail to be stored on the full disk");

    std::fs::remove_file(&ballast).expect("remove the ballast");
    let good = "the disk has room again";
    let answer = turn_of(&mut client, send(good, "good", json!({}))).await;
    assert_eq!(answer["type"], "chat.response", "a turn after the disk has room again is answered: {answer}");
    acknowledged.push(Acknowledged { thread: None, message_id: "good".into(), content: good.into() });
    client.close().await;
    server.stop().await;
    drop(server);

    let server = spawn_server_on_store(&store, &settings);
    let (mut client, _) = welcomed(&server.ws_url("senderId=u1&senderName=U")).await;
    let history = stored_history(&mut client, json!({})).await;
    let missing = missing_from(&history, &acknowledged);
    assert!(missing.is_empty(), "acknowledged turns missing an entry after the restart: {missing:?}");
    let last_two: Vec<(&str, &str)> = history[history.len().saturating_sub(2)..]
        .iter()
        .map(|entry| (entry["role"].as_str().unwrap_or_default(), entry["content"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(last_two, [("user", good), ("assistant", "echo: the disk has room again")]);
}

// ---------------------------------------------------------------------------------
// 3. Guests never reach users.

/// Auth on but not required; the auth service knows `t-alice` → alice.
fn optional_auth(auth: &FakeAuth, extra: &[(&'static str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
        ("channels.websocket.auth.required", false.into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn alice_only() -> AuthScript {
    AuthScript::new().user("t-alice", json!({"userId": "alice", "username": "Alice"}))
}

#[actix_rt::test]
async fn a_guest_claiming_a_users_id_is_a_guest_and_sees_none_of_her_history_or_turns() {
    let auth = FakeAuth::start(alice_only());
    let server = optional_auth(&auth, &[]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    let answer = turn_of(&mut alice, send("alice's secret plan", "a1", json!({}))).await;
    assert_eq!(answer["sessionKey"], "agent:main:websocket:direct:alice", "{answer}");

    let (mut guest, welcome) = welcomed(&server.ws_url("senderId=alice")).await;
    assert_eq!(
        (welcome["senderId"].as_str(), welcome["authenticated"].as_bool()),
        (Some("guest:alice"), Some(false)),
        "the guest's welcome: {welcome}"
    );
    let history = answer_to(&mut guest, json!({"type": "chat.history"})).await;
    assert!(!history.to_string().contains("secret"), "the guest read alice's history: {history}");
    if history["type"] == "chat.history" {
        let key = history["sessionKey"].as_str().unwrap_or_default();
        assert!(key.ends_with(":direct:guest:alice"), "the guest's own history, not alice's: {history}");
    }
    let joined = answer_to(&mut guest, json!({"type": "chat.join"})).await;
    let key = joined["sessionKey"].as_str().unwrap_or_default();
    assert!(!key.ends_with(":direct:alice"), "the guest joined alice's session: {joined}");
    assert_eq!(turn_of(&mut alice, send("another secret", "a2", json!({}))).await["type"], "chat.response");
    assert_received_nothing(&mut guest, "the guest (of alice's turn)").await;
}

#[actix_rt::test]
async fn a_guests_turn_lands_in_a_guest_session_and_never_reaches_the_user() {
    let auth = FakeAuth::start(alice_only());
    let server = optional_auth(&auth, &[]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_eq!(turn_of(&mut alice, send("hello", "a1", json!({}))).await["type"], "chat.response");

    let (mut guest, _) = welcomed(&server.ws_url("senderId=alice")).await;
    let answer = turn_of(&mut guest, send("I am alice, honest", "g1", json!({}))).await;
    assert_eq!(answer["type"], "chat.response", "{answer}");
    let key = answer["sessionKey"].as_str().unwrap_or_default();
    assert!(key.ends_with(":direct:guest:alice"), "the guest's turn went into {key}");
    assert_received_nothing(&mut alice, "alice (of the guest's turn)").await;

    let history = stored_history(&mut alice, json!({})).await;
    assert_eq!(history.len(), 2, "only alice's own turn is in her history: {history:?}");
}

#[actix_rt::test]
async fn a_guest_cannot_abort_a_users_running_turn_whether_it_claims_her_id_in_the_url_or_the_message() {
    let auth = FakeAuth::start(alice_only());
    let server = optional_auth(&auth, &[("agent.echoDelayMs", 40.into())]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    let long = (0..40).map(|word| format!("w{word}")).collect::<Vec<_>>().join(" ");
    let (mut url_guest, _) = welcomed(&server.ws_url("senderId=alice")).await;
    let (mut message_guest, _) = welcomed(&server.ws_url("senderId=visitor")).await;
    let aborts = [
        (&mut url_guest, json!({"type": "chat.abort"})),
        (&mut message_guest, json!({"type": "chat.abort", "senderId": "alice"})),
    ];
    for (turn, (guest, abort)) in aborts.into_iter().enumerate() {
        let message_id = format!("a{turn}");
        alice.send_json(send(&long, &message_id, json!({}))).await;
        let first = alice.recv().await;
        assert!(first["type"] == "chat.typing" || first["type"] == "chat.stream", "the turn runs: {first}");
        guest.send_json(abort).await;
        guest.send_json(json!({"type": "ping"})).await;
        while guest.recv().await["type"] != "pong" {}
        let answer = last(&alice.turn(&message_id).await).clone();
        assert_eq!(answer["type"], "chat.response", "a guest aborted alice's turn: {answer}");
        assert_eq!(answer["content"], format!("echo: {long}"));
    }
}

#[actix_rt::test]
async fn a_guest_naming_a_user_in_its_messages_stays_a_guest() {
    let auth = FakeAuth::start(alice_only());
    let server = optional_auth(&auth, &[]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_eq!(turn_of(&mut alice, send("alice's secret plan", "a1", json!({}))).await["type"], "chat.response");

    let (mut guest, _) = welcomed(&server.ws_url("senderId=visitor")).await;
    let answer = turn_of(&mut guest, send("hi", "g1", json!({"senderId": "alice", "senderName": "Alice"}))).await;
    let key = answer["sessionKey"].as_str().unwrap_or_default();
    assert!(key.ends_with(":direct:guest:alice"), "the guest's turn went into {key}: {answer}");
    assert_received_nothing(&mut alice, "alice (of the guest's turn)").await;

    let history = answer_to(&mut guest, json!({"type": "chat.history", "senderId": "alice"})).await;
    assert!(!history.to_string().contains("secret"), "the guest read alice's history: {history}");
    if history["type"] == "chat.history" {
        let key = history["sessionKey"].as_str().unwrap_or_default();
        assert!(key.ends_with(":direct:guest:alice"), "the guest's own history, not alice's: {history}");
    }
}

#[actix_rt::test]
async fn the_dm_allowlist_never_lets_a_guest_pass_as_a_listed_user() {
    let auth = FakeAuth::start(alice_only());
    let allow_from: SettingValue = vec!["alice"].into();
    let server = optional_auth(
        &auth,
        &[("channels.websocket.dmPolicy", "allowlist".into()), ("channels.websocket.allowFrom", allow_from)],
    );
    let (mut url_guest, _) = welcomed(&server.ws_url("senderId=alice")).await;
    let refused = answer_to(&mut url_guest, send("let me in", "g1", json!({}))).await;
    assert_forbidden(&refused, "a guest calling itself alice in the URL");
    let (mut message_guest, _) = welcomed(&server.ws_url("senderId=visitor")).await;
    let refused = answer_to(&mut message_guest, send("let me in", "g2", json!({"senderId": "alice"}))).await;
    assert_forbidden(&refused, "a guest calling itself alice in the message");

    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_eq!(turn_of(&mut alice, send("hi", "a1", json!({}))).await["type"], "chat.response", "alice is listed");
}

// ---------------------------------------------------------------------------------
// 4. Two users never share a dynamic agent.

/// `agents::path_safe("bob@example.com")` on the code this test was written against:
/// a real user can pick it as their id.
const BOB_EMAIL_HASHED: &str = "bob_example_com-5ff860bf1190596c";

fn is_dynamic_agent_id(id: &str) -> bool {
    id.strip_prefix("ws-").is_some_and(|rest| {
        (1..=61).contains(&rest.len())
            && rest
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-')
    })
}

#[actix_rt::test]
async fn users_whose_ids_differ_only_by_escaping_or_case_never_share_an_agent() {
    let users = ["bob@example.com", BOB_EMAIL_HASHED, "Bob", "bob", "alice"];
    let mut script = AuthScript::new();
    for user in users {
        script = script.user(&format!("t-{user}"), json!({"userId": user, "username": format!("name of {user}")}));
    }
    let auth = FakeAuth::start(script);
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let auth_settings = [
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
    ];
    let server = spawn_server_on_store(store.path(), &dynamic(root.path(), &auth_settings));
    let mut agents: Vec<String> = Vec::new();
    for user in users {
        let (mut client, _) = welcomed(&server.ws_url(&format!("token=t-{}", urlencode(user)))).await;
        let answer = turn_of(&mut client, send("hello", "m1", json!({}))).await;
        assert_eq!(answer["type"], "chat.response", "{user}: {answer}");
        agents.push(answer["agentId"].as_str().unwrap_or_default().to_string());
    }
    let by_user: Vec<(&str, &str)> = users.iter().copied().zip(agents.iter().map(String::as_str)).collect();
    let mut distinct = agents.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), users.len(), "two users share an agent: {by_user:?}");
    for (user, agent) in &by_user {
        assert!(is_dynamic_agent_id(agent), "{user}'s agent id {agent:?} is not ^ws-[a-z0-9_-]{{1,61}}$");
    }
    assert_eq!(by_user[4], ("alice", "ws-alice"), "an id already path-safe and lowercase is kept");
    for (user, agent) in &by_user {
        assert!(root.path().join("workspaces").join(agent).is_dir(), "{user}'s workspace");
        let profile = std::fs::read_to_string(root.path().join("agents").join(agent).join("agent/user-profile.md"))
            .unwrap_or_else(|error| panic!("{user}'s user-profile.md: {error}"));
        let names_user =
            profile.lines().any(|line| line.contains("userId") && line.trim_end().ends_with(&format!(": {user}")));
        assert!(names_user, "{user}'s profile names another user:\n{profile}");
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| if byte.is_ascii_alphanumeric() { (byte as char).to_string() } else { format!("%{byte:02X}") })
        .collect()
}

// ---------------------------------------------------------------------------------
// 5. Group access: open (the default), listed, proxy.

/// alice may use team-a and proj-*; bob only team-b.
fn group_members() -> AuthScript {
    AuthScript::new()
        .user("t-alice", json!({"userId": "alice", "username": "Alice", "groups": ["team-a", "proj-*"]}))
        .user("t-bob", json!({"userId": "bob", "username": "Bob", "groups": ["team-b"]}))
}

fn groups_server(auth: &FakeAuth, extra: &[(&'static str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

/// Every way `client` could touch `group` is refused with `forbidden`, one answer each.
async fn assert_every_action_forbidden(client: &mut WsClient, group: &str, who: &str) {
    let attempts = [
        ("chat.send", group_send(group, "let me in", &format!("try-{group}"))),
        ("chat.join", json!({"type": "chat.join", "groupId": group})),
        ("chat.history", json!({"type": "chat.history", "groupId": group})),
        ("chat.abort", json!({"type": "chat.abort", "groupId": group})),
    ];
    for (kind, attempt) in attempts {
        let answer = answer_to(client, attempt).await;
        assert_forbidden(&answer, &format!("{who}'s {kind} in {group}"));
    }
}

#[actix_rt::test]
async fn listed_groups_refuse_a_user_every_action_on_a_group_not_in_his_list() {
    let auth = FakeAuth::start(group_members());
    let server = groups_server(&auth, &[("channels.websocket.groups.policy", "listed".into())]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_eq!(turn_of(&mut alice, group_send("team-a", "team-a's plan", "g1")).await["type"], "chat.response");

    let (mut bob, _) = welcomed(&server.ws_url("token=t-bob")).await;
    assert_every_action_forbidden(&mut bob, "team-a", "bob").await;
    let answer = turn_of(&mut alice, group_send("team-a", "more of team-a's plan", "g2")).await;
    assert_eq!(answer["type"], "chat.response", "alice is not disturbed: {answer}");
    assert_received_nothing(&mut bob, "bob (of team-a)").await;
    assert_eq!(
        turn_of(&mut bob, group_send("team-b", "hi team", "b1")).await["type"],
        "chat.response",
        "his own group"
    );
}

#[actix_rt::test]
async fn listed_groups_admit_a_user_to_her_groups_and_prefix_patterns_only() {
    let auth = FakeAuth::start(group_members());
    let server = groups_server(&auth, &[("channels.websocket.groups.policy", "listed".into())]);
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    for (group, id) in [("team-a", "g1"), ("proj-x", "g2")] {
        let answer = turn_of(&mut alice, group_send(group, "hi", id)).await;
        assert_eq!(answer["type"], "chat.response", "alice may use {group}: {answer}");
    }
    for (group, id) in [("team-c", "g3"), ("team-ab", "g4")] {
        let refused = answer_to(&mut alice, group_send(group, "hi", id)).await;
        assert_forbidden(&refused, &format!("alice's chat.send in {group}"));
    }
}

#[actix_rt::test]
async fn listed_groups_refuse_a_guest_every_group() {
    let auth = FakeAuth::start(group_members());
    let server = groups_server(
        &auth,
        &[("channels.websocket.auth.required", false.into()), ("channels.websocket.groups.policy", "listed".into())],
    );
    let (mut guest, _) = welcomed(&server.ws_url("senderId=alice")).await;
    for group in ["team-a", "proj-x", "lobby"] {
        assert_every_action_forbidden(&mut guest, group, "a guest").await;
    }
    assert_eq!(turn_of(&mut guest, send("hi", "d1", json!({}))).await["type"], "chat.response", "direct chats work");
}

fn proxy(endpoint: &str) -> [(&'static str, SettingValue); 3] {
    [
        ("channels.websocket.groups.policy", "proxy".into()),
        ("channels.websocket.groups.endpoint", endpoint.into()),
        ("channels.websocket.groups.cacheTtl", 60_000.into()),
    ]
}

#[actix_rt::test]
async fn the_groups_proxy_decides_each_access_and_its_answer_is_cached() {
    let auth = FakeAuth::start(group_members());
    let groups = FakeGroups::start(&[("alice", "team-a")]);
    let server = groups_server(&auth, &proxy(&groups.url));
    let (mut bob, _) = welcomed(&server.ws_url("token=t-bob")).await;
    let refused = answer_to(&mut bob, group_send("team-a", "let me in", "b1")).await;
    assert_forbidden(&refused, "bob's chat.send in team-a (the proxy refuses it)");
    assert!(groups.calls_about("bob", "team-a") >= 1, "the proxy was asked: {:?}", groups.requests());

    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_eq!(turn_of(&mut alice, group_send("team-a", "plan", "g1")).await["type"], "chat.response");
    let asked = groups.calls_about("alice", "team-a");
    assert!(asked >= 1, "the proxy was asked about alice: {:?}", groups.requests());
    let request = groups.requests().into_iter().find(|body| body["userId"] == "alice").unwrap();
    assert!(request["action"].is_string(), "the request names the action: {request}");
    assert_eq!(turn_of(&mut alice, group_send("team-a", "more plan", "g2")).await["type"], "chat.response");
    assert_eq!(groups.calls_about("alice", "team-a"), asked, "the second send within the TTL was cached");
    assert_received_nothing(&mut bob, "bob (of team-a)").await;
}

#[actix_rt::test]
async fn with_the_groups_proxy_down_every_group_is_refused_and_direct_chats_work() {
    let auth = FakeAuth::start(group_members());
    let server = groups_server(&auth, &proxy(&dead_endpoint()));
    let (mut alice, _) = welcomed(&server.ws_url("token=t-alice")).await;
    assert_every_action_forbidden(&mut alice, "team-a", "alice (proxy down)").await;
    assert_eq!(turn_of(&mut alice, send("hi", "d1", json!({}))).await["type"], "chat.response", "direct chats work");
}

// ---------------------------------------------------------------------------------
// 6. The OpenClaw agents file and the registry never drift apart.

/// Parses a JSON5-ish agents file as OpenClaw would: `//` and `/* */` comments and
/// trailing commas are allowed.
fn parse_agents_file(text: &str) -> Option<Value> {
    let (mut plain, mut chars) = (String::new(), text.chars().peekable());
    let mut in_string = false;
    while let Some(character) = chars.next() {
        if in_string {
            plain.push(character);
            match character {
                '\\' => plain.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (character, chars.peek()) {
            ('"', _) => {
                in_string = true;
                plain.push(character);
            }
            ('/', Some('/')) => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        plain.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut previous = ' ';
                for skipped in chars.by_ref() {
                    if previous == '*' && skipped == '/' {
                        break;
                    }
                    previous = skipped;
                }
            }
            _ => plain.push(character),
        }
    }
    let mut cleaned = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for (at, character) in plain.char_indices() {
        if in_string {
            in_string = escaped || character != '"';
            escaped = !escaped && character == '\\';
        } else if character == '"' {
            in_string = true;
        } else if character == ',' && plain[at + 1..].trim_start().starts_with(['}', ']']) {
            continue;
        }
        cleaned.push(character);
    }
    serde_json::from_str(&cleaned).ok()
}

/// The agent ids the agents file names (either shape), lowercased as OpenClaw does.
fn agents_named(file: &Path) -> Vec<String> {
    let Some(roster) = std::fs::read_to_string(file).ok().and_then(|text| parse_agents_file(&text)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match (&roster["entries"], &roster["list"]) {
        (Value::Object(entries), _) => entries.keys().cloned().collect(),
        (_, Value::Array(list)) => list.iter().filter_map(|item| item["id"].as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    names.iter_mut().for_each(|name| *name = name.to_lowercase());
    names.sort();
    names
}

/// A fake gateway that knows an agent only while the agents file names it (read as
/// JSON5, ids compared lowercased, as OpenClaw does), and always knows `main`.
fn gateway_reading(file: PathBuf) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, call| {
        let agent = call.headers.get("x-openclaw-agent-id").cloned().unwrap_or_default().to_lowercase();
        if agent == "main" || agents_named(&file).contains(&agent) {
            answer_with(&["hello from ", "the gateway"])
        } else {
            Reply::Status(400, json!({"error": {"message": format!("Unknown agent: {agent}")}}).to_string())
        }
    }))
}

fn openclaw_dynamic(root: &Path, gateway: &FakeAgent, file: &Path) -> Vec<(&'static str, SettingValue)> {
    dynamic(
        root,
        &[
            ("agent.kind", "openclaw".into()),
            ("agent.url", gateway.url().into()),
            ("agent.openclawConfigPath", file.to_string_lossy().to_string().into()),
            ("agent.confirmAgentMs", 5000.into()),
        ],
    )
}

/// `user`'s next turn (as `message_id`) is answered by the gateway through `agent`.
async fn answered_by_own_agent(server: &TestServer, user: &str, message_id: &str, agent: &str) {
    let (mut client, _) = welcomed(&server.ws_url(&format!("senderId={user}"))).await;
    let answer = turn_of(&mut client, send("hi", message_id, json!({}))).await;
    assert_eq!(
        (answer["type"].as_str(), answer["agentId"].as_str(), answer["content"].as_str()),
        (Some("chat.response"), Some(agent), Some("hello from the gateway")),
        "{user} must be answered by {agent}: {answer}"
    );
}

#[actix_rt::test]
async fn a_commented_agents_file_still_gets_the_new_users_agent_which_survives_a_restart() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    let commented = "// ClawSocket's agents; edited by hand\n{\n  // the ops team's agent\n  \"entries\": {\"ops\": {\"workspace\": \"/srv/ops\"}},\n}\n";
    std::fs::write(&file, commented).unwrap();
    let gateway = gateway_reading(file.clone());
    let settings = openclaw_dynamic(root.path(), &gateway, &file);
    let server = spawn_server_on_store(store.path(), &settings);
    answered_by_own_agent(&server, "carol", "c1", "ws-carol").await;
    assert_eq!(agents_named(&file), ["ops", "ws-carol"], "the file keeps ops and names carol's agent");
    server.stop().await;
    drop(server);

    let server = spawn_server_on_store(store.path(), &settings);
    answered_by_own_agent(&server, "carol", "c2", "ws-carol").await;
}

#[actix_rt::test]
async fn an_entry_removed_from_the_agents_file_is_written_back_at_start() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    std::fs::write(&file, r#"{"entries": {"ops": {"workspace": "/srv/ops"}}}"#).unwrap();
    let gateway = gateway_reading(file.clone());
    let settings = openclaw_dynamic(root.path(), &gateway, &file);
    let server = spawn_server_on_store(store.path(), &settings);
    answered_by_own_agent(&server, "alice", "a1", "ws-alice").await;
    server.stop().await;
    drop(server);

    std::fs::write(&file, r#"{"entries": {"ops": {"workspace": "/srv/ops"}}}"#).unwrap();
    let server = spawn_server_on_store(store.path(), &settings);
    eventually("the agents file names ws-alice again, before any message", || {
        let named = agents_named(&file);
        async move { named.contains(&"ws-alice".to_string()) && named.contains(&"ops".to_string()) }
    })
    .await;
    answered_by_own_agent(&server, "alice", "a2", "ws-alice").await;
}

#[actix_rt::test]
async fn an_agents_file_in_the_older_list_shape_stays_a_list() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    std::fs::write(&file, r#"{"list": [{"id": "x", "workspace": "/srv/x"}]}"#).unwrap();
    let gateway = gateway_reading(file.clone());
    let server = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file));
    answered_by_own_agent(&server, "dave", "d1", "ws-dave").await;

    let roster = parse_agents_file(&std::fs::read_to_string(&file).unwrap()).expect("the agents file parses");
    assert!(roster.get("entries").is_none(), "rewritten in the newer shape: {roster}");
    let list = roster["list"].as_array().unwrap_or_else(|| panic!("still a list: {roster}"));
    assert!(list.contains(&json!({"id": "x", "workspace": "/srv/x"})), "x is kept as it was: {roster}");
    let dave = list.iter().find(|item| item["id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case("ws-dave")));
    assert!(dave.is_some_and(|item| item["workspace"].is_string()), "dave's agent is an item of the list: {roster}");
}
