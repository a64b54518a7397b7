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

#[test]
fn a_record_overwritten_in_place_keeps_its_inode_and_reads_back_whole() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep").join("record.json");
    overwrite_in_place(&path, br#"{"turns":12345,"note":"a long first version"}"#).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    overwrite_in_place(&path, br#"{"turns":1}"#).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "no new file");
    let read: Option<serde_json::Value> = read_json(&path).unwrap();
    assert_eq!(read, Some(serde_json::json!({"turns": 1})), "the shorter version, padded with blanks");
}
