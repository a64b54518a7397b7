//! Dynamic agents: one agent per direct-message user, created once where the
//! templates say, bounded by maxAgents across restarts, known to the OpenClaw gateway
//! through the agents file ClawSocket owns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::binary::ChildServer;
use crate::support::client::last;
use crate::support::fake_agent::{always, answer_with, FakeAgent, Reply};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::server::spawn_server_on_store;
use crate::support::WsClient;

/// Settings for dynamic agents whose workspaces and agent dirs live under `root`.
pub(crate) fn dynamic(root: &Path, extra: &[(&'static str, SettingValue)]) -> Vec<(&'static str, SettingValue)> {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("channels.websocket.dynamicAgentCreation.enabled", true.into()),
        (
            "channels.websocket.dynamicAgentCreation.workspaceTemplate",
            format!("{}/workspaces/{{agentId}}", root.display()).into(),
        ),
        (
            "channels.websocket.dynamicAgentCreation.agentDirTemplate",
            format!("{}/agents/{{agentId}}/agent", root.display()).into(),
        ),
    ];
    settings.extend(extra.iter().cloned());
    settings
}

fn registry(store: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(store.join("agents.json")).expect("agents.json written")).unwrap()
}

async fn agent_of(server_url: String) -> (String, String) {
    let (mut client, _) = WsClient::connect_welcomed(&server_url).await;
    let answer = last(&client.chat("m1", "hello").await).clone();
    assert_eq!(answer["type"], "chat.response", "{answer}");
    (answer["agentId"].as_str().unwrap().to_string(), answer["sessionKey"].as_str().unwrap().to_string())
}

#[actix_rt::test]
async fn a_new_user_gets_an_agent_with_dirs_and_profile_where_the_templates_say() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let auth = FakeAuth::start(
        AuthScript::new().user("t-alice", json!({"userId": "alice", "username": "Alice", "plan": "pro"})),
    );
    let server = spawn_server_on_store(
        store.path(),
        &dynamic(
            root.path(),
            &[
                ("channels.websocket.auth.enabled", true.into()),
                ("channels.websocket.auth.endpoint", auth.url.clone().into()),
            ],
        ),
    );
    let (agent, key) = agent_of(server.ws_url("token=t-alice")).await;
    assert_eq!((agent.as_str(), key.as_str()), ("ws-alice", "agent:ws-alice:websocket:direct:alice"));
    let agent_dir = root.path().join("agents/ws-alice/agent");
    assert!(root.path().join("workspaces/ws-alice").is_dir());
    let profile = std::fs::read_to_string(agent_dir.join("user-profile.md")).expect("user-profile.md");
    assert!(profile.contains("- username: Alice") && profile.contains("- plan: pro"), "{profile}");
    let transcripts: Vec<PathBuf> = std::fs::read_dir(agent_dir.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "jsonl"))
        .collect();
    assert_eq!(transcripts.len(), 1, "the transcript lives in the agent's dir");
    assert_eq!(registry(store.path())["agents"]["alice"]["agentId"], "ws-alice");

    let (mut member, _) = WsClient::connect_welcomed(&server.ws_url("token=t-alice")).await;
    member
        .send_json(
            json!({"type": "chat.send", "content": "hi", "chatType": "group", "groupId": "g", "messageId": "g1"}),
        )
        .await;
    assert_eq!(last(&member.turn("g1").await)["agentId"], "main", "group chats stay on the default agent");
}

#[actix_rt::test]
async fn max_agents_sends_later_users_to_the_default_agent_also_after_a_restart() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let settings = dynamic(root.path(), &[("channels.websocket.dynamicAgentCreation.maxAgents", 2.into())]);
    let server = spawn_server_on_store(store.path(), &settings);
    assert_eq!(agent_of(server.ws_url("senderId=a")).await.0, "ws-a");
    assert_eq!(agent_of(server.ws_url("senderId=b")).await.0, "ws-b");
    assert_eq!(agent_of(server.ws_url("senderId=c")).await.0, "main");
    server.stop().await;

    let server = spawn_server_on_store(store.path(), &settings);
    assert_eq!(agent_of(server.ws_url("senderId=d")).await.0, "main", "the limit holds across restarts");
    assert_eq!(agent_of(server.ws_url("senderId=a")).await.0, "ws-a", "existing users keep their agents");
    assert_eq!(registry(store.path())["agents"].as_object().unwrap().len(), 2);
}

#[actix_rt::test]
async fn hostile_sender_ids_stay_inside_the_templates_root() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = spawn_server_on_store(store.path(), &dynamic(root.path(), &[]));
    let hostile = ["../../../../tmp/escape", "a/b", "..", "%2e%2e%2f", &"x".repeat(250), "sp ace"];
    let mut agents = Vec::new();
    for id in hostile {
        let query = format!("senderId={}", urlencode(id));
        let (agent, _) = agent_of(server.ws_url(&query)).await;
        assert!(
            agent.starts_with("ws-") && agent[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{agent}"
        );
        agents.push(agent);
    }
    agents.sort();
    agents.dedup();
    assert_eq!(agents.len(), hostile.len(), "different ids never share an agent");
    let records = registry(store.path())["agents"].as_object().unwrap().clone();
    for record in records.values() {
        for field in ["workspace", "agentDir"] {
            let path = PathBuf::from(record[field].as_str().unwrap());
            assert!(path.starts_with(root.path()) && !path.to_string_lossy().contains(".."), "{}", path.display());
        }
    }
    assert!(!Path::new("/tmp/escape").exists());
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| if byte.is_ascii_alphanumeric() { (byte as char).to_string() } else { format!("%{byte:02X}") })
        .collect()
}

#[actix_rt::test]
async fn agents_md_in_the_workspace_is_the_agents_system_prompt() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let workspace = root.path().join("workspaces/ws-alice");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("AGENTS.md"), "You are Alice's own agent.").unwrap();
    let agent = FakeAgent::start(always(&["ok"]));
    let openai = [("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())];
    let server = spawn_server_on_store(store.path(), &dynamic(root.path(), &openai));
    agent_of(server.ws_url("senderId=alice")).await;
    agent_of(server.ws_url("senderId=bob")).await;
    let requests = agent.requests();
    assert_eq!(requests[0].body["messages"][0], json!({"role": "system", "content": "You are Alice's own agent."}));
    assert_eq!(requests[1].body["messages"][0]["content"], "You are a helpful assistant.", "bob has no AGENTS.md");
}

/// A fake gateway that knows an agent only once the agents file names it, and then
/// only after `delay` (as the real one hot-applies the file in about a second).
fn gateway_reading(file: PathBuf, delay: Duration) -> FakeAgent {
    let first_seen: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    FakeAgent::start(Arc::new(move |_, call| {
        let agent = call.headers.get("x-openclaw-agent-id").cloned().unwrap_or_default();
        let listed = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .is_some_and(|roster| roster["entries"].get(&agent).is_some());
        let known = listed && {
            let mut seen = first_seen.lock().unwrap();
            seen.entry(agent.clone()).or_insert_with(Instant::now).elapsed() >= delay
        };
        if known || agent == "main" {
            answer_with(&["hello from ", "the gateway"])
        } else {
            Reply::Status(400, json!({"error": {"message": format!("Unknown agent: {agent}")}}).to_string())
        }
    }))
}

fn openclaw_dynamic(
    root: &Path,
    gateway: &FakeAgent,
    file: &Path,
    confirm_ms: i64,
) -> Vec<(&'static str, SettingValue)> {
    dynamic(
        root,
        &[
            ("agent.kind", "openclaw".into()),
            ("agent.url", gateway.url().into()),
            ("agent.openclawConfigPath", file.to_string_lossy().to_string().into()),
            ("agent.confirmAgentMs", confirm_ms.into()),
        ],
    )
}

#[actix_rt::test]
async fn the_agents_file_gains_one_entry_per_new_user_even_when_first_messages_race() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    std::fs::write(&file, r#"{"entries": {"ops": {"workspace": "/srv/ops"}}}"#).unwrap();
    let gateway = gateway_reading(file.clone(), Duration::ZERO);
    let server = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file, 5000));
    let (mut tab1, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (mut tab2, _) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    let (mut bob, _) = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await;
    tab1.send_json(json!({"type": "chat.send", "content": "first", "messageId": "a1"})).await;
    tab2.send_json(json!({"type": "chat.send", "content": "also first", "messageId": "a2"})).await;
    bob.send_json(json!({"type": "chat.send", "content": "me too", "messageId": "b1"})).await;
    for (client, id) in [(&mut tab1, "a1"), (&mut tab2, "a2"), (&mut bob, "b1")] {
        let answer = last(&client.turn(id).await).clone();
        assert_eq!(answer["type"], "chat.response", "{answer}");
    }
    let roster: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mut names: Vec<&String> = roster["entries"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["ops", "ws-alice", "ws-bob"], "existing entries kept, one per new user");
    assert_eq!(roster["entries"]["ops"]["workspace"], "/srv/ops");
    assert_eq!(registry(store.path())["agents"].as_object().unwrap().len(), 2);
}

#[actix_rt::test]
async fn a_new_agents_first_turn_waits_until_the_gateway_knows_it() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    let gateway = gateway_reading(file.clone(), Duration::from_millis(600));
    let server = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file, 10_000));
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=carol")).await;
    let answer = last(&client.chat("c1", "hi").await).clone();
    assert_eq!(
        (answer["type"].as_str(), answer["content"].as_str()),
        (Some("chat.response"), Some("hello from the gateway"))
    );
    assert!(gateway.requests().len() > 1, "the first tries met an Unknown agent and were retried");
}

#[actix_rt::test]
async fn an_agent_the_gateway_never_learns_ends_with_agent_unavailable() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    let gateway = gateway_reading(root.path().join("not-the-file-the-gateway-reads.json"), Duration::ZERO);
    let server = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file, 700));
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=dave")).await;
    let failed = last(&client.chat("d1", "hi").await).clone();
    assert_eq!(failed["code"], "agent_unavailable", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("$includes the agents file"), "names the fix: {failed}");
}

/// The seed README's dynamic-agents config (in TOML), auth off so no service is needed.
const SEED_DYNAMIC_AGENTS: &str = r#"
[channels.websocket.auth]
enabled = false
[channels.websocket.dynamicAgentCreation]
enabled = true
workspaceTemplate = "~/.openclaw/workspace-{agentId}"
agentDirTemplate = "~/.openclaw/agents/{agentId}/agent"
maxAgents = 100
[agent]
confirmAgentMs = 200
[store]
dir = "{store}"
"#;

#[actix_rt::test]
async fn the_seeds_dynamic_agents_config_starts_with_the_default_agents_file_and_one_warning() {
    let home = tempfile::tempdir().unwrap();
    let gateway = gateway_reading(home.path().join(".openclaw/clawsocket-agents.json"), Duration::ZERO);
    let gateway_url = format!("confirmAgentMs = 200\nurl = \"{}\"", gateway.url());
    let config = SEED_DYNAMIC_AGENTS.replace("confirmAgentMs = 200", &gateway_url);
    let home_dir = home.path().to_string_lossy().to_string();
    let child = ChildServer::start(&config, &[("HOME", &home_dir)]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=erin")).await;
    let answer = last(&client.chat("e1", "hi").await).clone();
    assert_eq!(answer["agentId"], "ws-erin", "{answer}");
    let file = home.path().join(".openclaw/clawsocket-agents.json");
    let roster: Value = serde_json::from_slice(&std::fs::read(&file).expect("the default agents file")).unwrap();
    assert!(roster["entries"]["ws-erin"].is_object(), "{roster}");
    let output = child.kill();
    let warnings: Vec<&str> = output.lines().filter(|line| line.contains("does not $include")).collect();
    assert_eq!(warnings.len(), 1, "{output}");
    assert!(warnings[0].contains(r#"$include: "./clawsocket-agents.json""#), "{}", warnings[0]);
}

#[actix_rt::test]
async fn no_warning_when_the_gateway_config_includes_the_agents_file() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".openclaw")).unwrap();
    let include = "{\n  agents: { $include: \"./clawsocket-agents.json\", ownership: \"explicit\" },\n}\n";
    std::fs::write(home.path().join(".openclaw/openclaw.json"), include).unwrap();
    let home_dir = home.path().to_string_lossy().to_string();
    let child = ChildServer::start(SEED_DYNAMIC_AGENTS, &[("HOME", &home_dir)]).await;
    let output = child.kill();
    assert!(!output.contains("does not $include"), "{output}");
}

#[actix_rt::test]
async fn only_a_chat_send_creates_a_users_agent() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = spawn_server_on_store(store.path(), &dynamic(root.path(), &[]));
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=frank")).await;
    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    assert_eq!(history["type"], "chat.history");
    assert_eq!(history["messages"], json!([]));
    for request in [json!({"type": "chat.leave"}), json!({"type": "chat.abort"}), json!({"type": "chat.join"})] {
        client.send_json(request).await;
    }
    assert_eq!(client.recv().await["type"], "chat.left");
    assert_eq!(client.recv().await["type"], "chat.joined");
    assert!(!store.path().join("agents.json").exists(), "no agent for reads, leaves, aborts or joins");
    assert!(!root.path().join("workspaces").exists());
    let answer = last(&client.chat("f1", "hi").await).clone();
    assert_eq!(answer["agentId"], "ws-frank", "the first chat.send creates it");
}

#[actix_rt::test]
async fn an_agent_written_back_at_start_is_confirmed_before_its_first_turn() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    let gateway = gateway_reading(file.clone(), Duration::ZERO);
    let first = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file, 5000));
    assert_eq!(agent_of(first.ws_url("senderId=alice")).await.0, "ws-alice");
    first.stop().await;
    // Someone removes her entry; the restarted ClawSocket writes it back, and the
    // gateway needs a moment to apply the file again (the real one about a second).
    std::fs::write(&file, r#"{"entries": {}}"#).unwrap();
    let slow_gateway = gateway_reading(file.clone(), Duration::from_millis(600));
    let second = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &slow_gateway, &file, 5000));
    let (mut client, _) = WsClient::connect_welcomed(&second.ws_url("senderId=alice")).await;
    let answer = last(&client.chat("m2", "back again").await).clone();
    assert_eq!(
        (answer["type"].as_str(), answer["agentId"].as_str()),
        (Some("chat.response"), Some("ws-alice")),
        "{answer}"
    );
}

#[actix_rt::test]
async fn guests_share_the_default_agent_instead_of_creating_one_each() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let auth = FakeAuth::start(AuthScript::new().user("t-alice", json!({"userId": "alice"})));
    let server = spawn_server_on_store(
        store.path(),
        &dynamic(
            root.path(),
            &[
                ("channels.websocket.auth.enabled", true.into()),
                ("channels.websocket.auth.required", false.into()),
                ("channels.websocket.auth.endpoint", auth.url.clone().into()),
            ],
        ),
    );
    for n in 0..3 {
        let (agent, key) = agent_of(server.ws_url(&format!("senderId=visitor{n}"))).await;
        assert_eq!(agent, "main", "{key}");
    }
    assert!(!store.path().join("agents.json").exists(), "no guest got an agent");
    assert_eq!(agent_of(server.ws_url("token=t-alice")).await.0, "ws-alice", "a user still does");
}

#[actix_rt::test]
async fn a_user_never_takes_over_an_agent_the_operator_put_in_the_gateways_file() {
    let (root, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = root.path().join("clawsocket-agents.json");
    std::fs::write(&file, r#"{"entries": {"ws-bob": {"workspace": "/srv/the-operators-bob"}}}"#).unwrap();
    let gateway = gateway_reading(file.clone(), Duration::ZERO);
    let server = spawn_server_on_store(store.path(), &openclaw_dynamic(root.path(), &gateway, &file, 5000));
    let (agent, _) = agent_of(server.ws_url("senderId=bob")).await;
    assert!(agent.starts_with("ws-bob_"), "the user bob gets an agent of his own: {agent}");
    let roster: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(roster["entries"]["ws-bob"]["workspace"], "/srv/the-operators-bob", "the operator's entry is untouched");
    assert!(roster["entries"][agent.as_str()].is_object());
}
