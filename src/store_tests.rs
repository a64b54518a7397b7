use super::*;
use crate::identity::{Chat, SessionTarget};

#[test]
fn a_transcript_lives_under_its_agent_dir() {
    let dir = tempfile::tempdir().unwrap();
    let key = SessionTarget { chat: Chat::Direct("u1".into()), thread_id: None }.key("main");
    assert!(transcript_path(dir.path(), &key).starts_with(dir.path().join("sessions")));
}

#[test]
fn atomic_writes_replace_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/registry.json");
    write_atomically(&path, b"{\"a\":1}").unwrap();
    write_atomically(&path, b"{\"a\":2}").unwrap();
    assert_eq!(read_json::<serde_json::Value>(&path).unwrap().unwrap()["a"], 2);
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp file left behind");
}
