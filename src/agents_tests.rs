use serde_json::json;

use super::*;

fn free(_: &str) -> bool {
    false
}

#[test]
fn lowercase_ids_are_kept_and_others_are_cleaned_and_hashed() {
    assert_eq!(agent_id_for("alice", free), "ws-alice");
    assert_eq!(agent_id_for("team-7", free), "ws-team-7");
    let hostile =
        ["../../etc", "a/b", "a\0b", "", ".", "x".repeat(300).as_str(), "日本", "Bob", "-x", "a_b"].map(String::from);
    for id in &hostile {
        let agent_id = agent_id_for(id, free);
        assert!(agent_id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'));
        assert!(agent_id.len() <= 64, "OpenClaw's limit: {agent_id}");
        assert_eq!(agent_id.matches(HASH_SEPARATOR).count(), 1, "{id:?} → {agent_id}");
    }
}

#[test]
fn two_users_never_get_one_agent_id() {
    let pairs = [
        ("bob@example.com", "bob_example_com-5ff860bf1190596c"),
        ("Bob", "bob"),
        ("a/b", "a?b"),
        (&"x".repeat(60), &"x".repeat(61)),
    ];
    for (one, other) in pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())) {
        assert_ne!(agent_id_for(&one, free), agent_id_for(&other, free), "{one} / {other}");
    }
    // A hashed id's form can be claimed as a user id, but the claim is hashed again.
    let hashed = user_slug("bob@example.com");
    assert_ne!(user_slug(&hashed), hashed);
}

#[test]
fn an_id_taken_under_an_older_scheme_sends_a_new_user_to_the_hashed_form() {
    let taken = |id: &str| id.eq_ignore_ascii_case("ws-bob");
    let agent_id = agent_id_for("bob", taken);
    assert!(agent_id.starts_with("ws-bob_"), "{agent_id}");
}

#[test]
fn templates_expand_user_agent_and_home() {
    let home = Path::new("/home/claw");
    let path = expand_template("~/.openclaw/workspace-{agentId}", "alice", "ws-alice", home);
    assert_eq!(path, Path::new("/home/claw/.openclaw/workspace-ws-alice"));
    let path = expand_template("/srv/{userId}/agent", "../evil", "ws-x", home);
    assert!(path.starts_with("/srv/") && !path.to_string_lossy().contains(".."), "{}", path.display());
}

#[test]
fn creating_an_agent_makes_its_dirs_and_profile() {
    let root = tempfile::tempdir().unwrap();
    let data = json!({"userId": "alice", "username": "Alice", "plan": "pro"}).as_object().cloned().unwrap();
    let templates = DynamicAgentSettings {
        enabled: true,
        workspace_template: format!("{}/ws-{{agentId}}", root.path().display()),
        agent_dir_template: format!("{}/agents/{{agentId}}/agent", root.path().display()),
        max_agents: 0,
    };
    let record = plan_agent("alice", "ws-alice".into(), &templates, root.path(), 1);
    assert_eq!(record.workspace, root.path().join("ws-ws-alice"));
    assert!(!record.workspace.exists(), "planning does no I/O");
    create_agent_files(&record, "alice", Some(&data)).unwrap();
    assert!(record.workspace.is_dir());
    let profile = fs::read_to_string(record.agent_dir.join("user-profile.md")).unwrap();
    assert!(profile.contains("- username: Alice") && profile.contains("- plan: pro"), "{profile}");
}

#[test]
fn the_registry_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(AgentRegistry::load(dir.path()).unwrap(), AgentRegistry::default());
    let mut registry = AgentRegistry::default();
    registry.agents.insert(
        "u".into(),
        AgentRecord { agent_id: "ws-u".into(), workspace: "/w".into(), agent_dir: "/a".into(), created: 5 },
    );
    let record = AgentRecord { agent_id: "ws-v".into(), workspace: "/w2".into(), agent_dir: "/a2".into(), created: 6 };
    store::write_atomically(&AgentRegistry::path(dir.path()), &registry.bytes_with("v", &record)).unwrap();
    registry.agents.insert("v".into(), record);
    assert_eq!(AgentRegistry::load(dir.path()).unwrap(), registry);
}
