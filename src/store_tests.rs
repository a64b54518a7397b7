use std::io::Write;

use super::*;
use crate::identity::{Chat, SessionTarget};

fn entry(role: &str, content: &str, id: &str) -> TranscriptEntry {
    TranscriptEntry {
        role: role.into(),
        content: content.into(),
        message_id: id.into(),
        sender_id: "u".into(),
        sender_name: "U".into(),
        ts: 1,
    }
}

#[test]
fn appended_turns_load_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let key = SessionTarget { chat: Chat::Direct("u1".into()), thread_id: None }.key("main");
    let path = transcript_path(dir.path(), &key);
    assert!(path.starts_with(dir.path().join("sessions")));
    assert_eq!(load_transcript(&path).unwrap(), []);
    append_entries(&path, &[entry("user", "hi", "m1"), entry("assistant", "hello\nthere", "m1")]).unwrap();
    append_entries(&path, &[entry("user", "again", "m2")]).unwrap();
    let loaded = load_transcript(&path).unwrap();
    assert_eq!(loaded.iter().map(|e| e.content.as_str()).collect::<Vec<_>>(), ["hi", "hello\nthere", "again"]);
}

#[test]
fn a_torn_last_line_is_skipped_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append_entries(&path, &[entry("user", "kept", "m1")]).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(br#"{"role":"assistant","content":"tor"#).unwrap();
    drop(file);
    assert_eq!(load_transcript(&path).unwrap(), [entry("user", "kept", "m1")]);
    append_entries(&path, &[entry("user", "next", "m2")]).unwrap();
    let loaded = load_transcript(&path).unwrap();
    assert_eq!(loaded.iter().map(|e| e.content.as_str()).collect::<Vec<_>>(), ["kept", "next"]);
}

#[test]
fn a_bad_line_in_the_middle_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append_entries(&path, &[entry("user", "one", "m1")]).unwrap();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"garbage\n").unwrap();
    append_entries(&path, &[entry("user", "two", "m2")]).unwrap();
    assert_eq!(load_transcript(&path).unwrap().len(), 2);
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
