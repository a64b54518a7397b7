use super::*;

#[test]
fn safe_ids_are_kept_and_others_are_cleaned_and_hashed() {
    assert_eq!(path_safe("alice_01-x"), "alice_01-x");
    let hostile = ["../../etc", "a/b", "a\0b", "", ".", "x".repeat(300).as_str(), "日本"].map(String::from);
    for id in &hostile {
        let safe = path_safe(id);
        assert!(safe.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{id:?} → {safe}");
        assert!(safe.len() <= MAX_SAFE_PREFIX + 17, "{safe}");
        assert_ne!(safe, *id);
    }
    assert_ne!(path_safe("a/b"), path_safe("a?b"), "different ids never share an agent");
    assert_eq!(agent_id_for("alice"), "ws-alice");
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
    let record = create_agent(&NewAgent {
        sender_id: "alice",
        workspace_template: &format!("{}/ws-{{agentId}}", root.path().display()),
        agent_dir_template: &format!("{}/agents/{{agentId}}/agent", root.path().display()),
        home: root.path(),
        user_data: Some(&data),
        now_ms: 1,
    })
    .unwrap();
    assert_eq!(record.agent_id, "ws-alice");
    assert!(record.workspace.is_dir());
    let profile = fs::read_to_string(record.agent_dir.join("user-profile.md")).unwrap();
    assert!(profile.contains("- username: Alice") && profile.contains("- plan: pro"), "{profile}");
}

#[test]
fn the_openclaw_agents_file_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawsocket-agents.json");
    fs::write(&path, r#"{"list":[{"id":"ops","workspace":"/srv/ops","model":"x"}]}"#).unwrap();
    let mut registry = AgentRegistry::default();
    let record = |id: &str| AgentRecord {
        agent_id: id.into(),
        workspace: PathBuf::from(format!("/w/{id}")),
        agent_dir: PathBuf::from("/a"),
        created: 0,
    };
    registry.agents.insert("alice".into(), record("ws-alice"));
    write_openclaw_agents(&path, &registry).unwrap();
    registry.agents.insert("bob".into(), record("ws-bob"));
    write_openclaw_agents(&path, &registry).unwrap();
    let written: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let entries = written["entries"].as_object().unwrap();
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["ops", "ws-alice", "ws-bob"]);
    assert_eq!(entries["ops"]["model"], "x");
    assert_eq!(entries["ws-bob"]["workspace"], "/w/ws-bob");
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
    registry.save(dir.path()).unwrap();
    assert_eq!(AgentRegistry::load(dir.path()).unwrap(), registry);
}
