use std::fs;
use std::path::PathBuf;

use super::*;

fn record(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        workspace: PathBuf::from(format!("/w/{id}")),
        agent_dir: PathBuf::from("/a"),
        created: 0,
    }
}

fn written(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_new_file_gets_the_entries_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawsocket-agents.json");
    assert_eq!(ensure_agents(&path, &[record("ws-alice")]).unwrap(), ["ws-alice"]);
    assert_eq!(written(&path), json!({"entries": {"ws-alice": {"workspace": "/w/ws-alice"}}}));
}

#[test]
fn every_entry_and_field_already_there_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    fs::write(&path, r#"{"entries":{"ops":{"workspace":"/srv/ops","model":"x"}},"note":"mine"}"#).unwrap();
    ensure_agents(&path, &[record("ws-alice")]).unwrap();
    ensure_agents(&path, &[record("ws-alice"), record("ws-bob")]).unwrap();
    let document = written(&path);
    let entries = document["entries"].as_object().unwrap();
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["ops", "ws-alice", "ws-bob"]);
    assert_eq!((entries["ops"]["model"].clone(), document["note"].clone()), (json!("x"), json!("mine")));
}

#[test]
fn a_file_with_comments_is_read_as_json5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    fs::write(&path, "// the gateway's agents\n{ entries: { ops: { workspace: '/srv/ops', }, }, }\n").unwrap();
    assert_eq!(ensure_agents(&path, &[record("ws-alice")]).unwrap(), ["ws-alice"]);
    assert_eq!(written(&path)["entries"]["ops"]["workspace"], "/srv/ops");
}

#[test]
fn the_older_list_shape_stays_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    fs::write(&path, r#"{"list":[{"id":"x","workspace":"/srv/x"}]}"#).unwrap();
    ensure_agents(&path, &[record("ws-alice")]).unwrap();
    assert_eq!(
        written(&path),
        json!({"list": [{"id": "x", "workspace": "/srv/x"}, {"id": "ws-alice", "workspace": "/w/ws-alice"}]})
    );
}

#[test]
fn nothing_is_written_when_every_agent_is_named_ignoring_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    let text = "// kept as it is\n{\"entries\": {\"WS-Alice\": {}}}";
    fs::write(&path, text).unwrap();
    assert!(ensure_agents(&path, &[record("ws-alice")]).unwrap().is_empty());
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_file_that_is_not_json5_is_an_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    fs::write(&path, "{ entries: ").unwrap();
    let error = ensure_agents(&path, &[record("ws-alice")]).unwrap_err();
    assert!(error.to_string().contains("not JSON5"), "{error}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "{ entries: ");
}
