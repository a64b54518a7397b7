use super::*;
use crate::protocol::{AnswerDetails, TranscriptEntry};
use crate::transcript;

fn record(thread: Option<&str>, ts: u64, added: u64, title: &str) -> TurnRecord {
    TurnRecord {
        session_key: format!(
            "agent:main:websocket:direct:alice{}",
            thread.map(|t| format!(":thread:{t}")).unwrap_or_default()
        ),
        thread_id: thread.map(String::from),
        group_id: None,
        ts,
        added,
        title: title.to_string(),
    }
}

fn entry(role: Role, id: &str, content: &str, ts: u64, supersedes: Option<&str>) -> TranscriptEntry {
    TranscriptEntry {
        role,
        content: content.to_string(),
        message_id: id.to_string(),
        sender_id: "alice".into(),
        sender_name: "Alice".into(),
        ts,
        answer: AnswerDetails { supersedes: supersedes.map(String::from), ..AnswerDetails::default() },
    }
}

#[test]
fn a_default_title_is_the_first_message_on_one_line_cut_on_a_word() {
    assert_eq!(default_title("  Plan a   trip\nto Rome "), "Plan a trip to Rome");
    let long = "word ".repeat(30);
    let title = default_title(&long);
    assert!(title.ends_with('…'));
    assert_eq!(title.trim_end_matches('…'), "word ".repeat(16).trim_end(), "16 words of 4 make 79 characters");
    let one_word = "x".repeat(200);
    assert_eq!(default_title(&one_word).chars().count(), 81, "80 characters and the ellipsis");
    let exactly = "y".repeat(80);
    assert_eq!(default_title(&exactly), exactly, "80 characters are not cut");
}

#[test]
fn a_given_title_is_one_line_within_its_bound() {
    assert_eq!(clean_title(" My\ttrip \n plans "), Some("My trip plans".into()));
    assert_eq!(clean_title("  \n "), None);
    assert_eq!(clean_title(&"é".repeat(MAX_TITLE_CHARS)).map(|t| t.chars().count()), Some(MAX_TITLE_CHARS));
    assert_eq!(clean_title(&"é".repeat(MAX_TITLE_CHARS + 1)), None);
}

#[test]
fn turns_update_one_entry_per_thread_and_listing_is_newest_first() {
    let mut index = Index::default();
    index.record(&record(None, 10, 2, "hello"));
    index.record(&record(Some("t1"), 20, 2, "trip"));
    index.record(&record(None, 30, 2, "second message"));
    let listed = index.newest(10);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].thread_id, None);
    assert_eq!((listed[0].message_count, listed[0].last_activity), (4, 30));
    assert_eq!(listed[0].title, "hello", "the first message's title stays");
    assert_eq!(listed[1].thread_id.as_deref(), Some("t1"));
    assert_eq!(index.newest(1).len(), 1);
}

#[test]
fn naming_and_removing_touch_only_their_thread() {
    let mut index = Index::default();
    index.record(&record(None, 10, 2, "hello"));
    index.record(&record(Some("t1"), 20, 2, "trip"));
    let named = index.set_title(Some("t1"), "Rome").expect("t1 is indexed");
    assert!(named.titled);
    assert_eq!(index.set_title(Some("t9"), "x"), None);
    index.record(&record(Some("t1"), 40, 2, "later message"));
    assert_eq!(index.newest(1)[0].title, "Rome", "a later turn keeps a given title");
    assert!(index.remove(Some("t1")));
    assert!(!index.remove(Some("t1")));
    assert_eq!(index.newest(10).len(), 1);
}

#[test]
fn an_index_keeps_the_most_recent_conversations_only() {
    let mut index = Index::default();
    for n in 0..(MAX_INDEXED as u64 + 5) {
        index.record(&record(Some(&format!("t{n}")), n, 2, "x"));
    }
    assert_eq!(index.sessions.len(), MAX_INDEXED);
    assert!(index.sessions.iter().all(|entry| entry.last_activity >= 5), "the oldest five were dropped");
}

/// Writes a session's transcript and sidecar as the store threads do.
fn store_session(agent_dir: &Path, owner: &Chat, thread: Option<&str>, entries: &[TranscriptEntry]) -> PathBuf {
    let target = SessionTarget { chat: owner.clone(), thread_id: thread.map(String::from) };
    let key = target.key("main");
    let path = store::transcript_path(agent_dir, &key);
    transcript::append(&path, entries).unwrap();
    let meta = TranscriptMeta {
        session_key: key.to_string(),
        owner: owner.clone(),
        thread_id: thread.map(String::from),
        title: None,
    };
    write_meta_if_missing(&path, &meta).unwrap();
    path
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_from_the_transcripts_of_its_owner_only() {
    let store = tempfile::tempdir().unwrap();
    let agent_dir = store.path().join("agents").join("main");
    let dirs = TranscriptDirs { store_dir: store.path().into(), default_agent_dir: agent_dir.clone() };
    let alice = Chat::Direct("alice".into());
    let alice_turn = [
        entry(Role::User, "m1", "Plan a trip to Rome", 100, None),
        entry(Role::Assistant, "m1", "Sure", 101, None),
        entry(Role::Assistant, "r1", "Gladly", 102, Some("m1")),
    ];
    store_session(&agent_dir, &alice, Some("t1"), &alice_turn);
    store_session(&agent_dir, &alice, None, &alice_turn[..2]);
    store_session(&agent_dir, &Chat::Direct("alice2".into()), Some("t1"), &alice_turn[..2]);
    store_session(&agent_dir, &Chat::Direct("bob".into()), None, &alice_turn[..2]);
    let path = index_path(store.path(), &alice);

    let (index, rebuilt) = load_or_rebuild(&path, &alice, &dirs).unwrap();
    assert!(rebuilt);
    let listed = index.newest(10);
    assert_eq!(listed.len(), 2, "alice's two conversations, not alice2's or bob's: {listed:?}");
    assert_eq!(listed[0].thread_id.as_deref(), Some("t1"));
    assert_eq!(listed[0].message_count, 2, "the superseded answer is not counted");
    assert_eq!(listed[0].last_activity, 102);
    assert_eq!(listed[0].title, "Plan a trip to Rome");
    assert!(path.exists(), "the rebuilt index is written");
    assert!(!load_or_rebuild(&path, &alice, &dirs).unwrap().1, "and read next time");

    fs::write(&path, b"{\"sessions\": [tor").unwrap();
    let (damaged, rebuilt) = load_or_rebuild(&path, &alice, &dirs).unwrap();
    assert!(rebuilt);
    assert_eq!(damaged.newest(10), listed);
}

#[test]
fn a_given_title_survives_a_rebuild() {
    let store = tempfile::tempdir().unwrap();
    let agent_dir = store.path().join("agents").join("main");
    let dirs = TranscriptDirs { store_dir: store.path().into(), default_agent_dir: agent_dir.clone() };
    let owner = Chat::Group("team:one".into());
    let turn = [entry(Role::User, "m1", "hello", 1, None), entry(Role::Assistant, "m1", "hi", 2, None)];
    store_session(&agent_dir, &owner, Some("plans"), &turn);
    title_transcript(&dirs, &owner, Some("plans"), "Our plans");
    let (index, _) = load_or_rebuild(&index_path(store.path(), &owner), &owner, &dirs).unwrap();
    let listed = index.newest(10);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].title.as_str(), listed[0].titled), ("Our plans", true));
    assert_eq!(listed[0].group_id.as_deref(), Some("team:one"));
}

#[test]
fn deleting_a_transcript_removes_its_sidecar_and_tolerates_missing_files() {
    let store = tempfile::tempdir().unwrap();
    let owner = Chat::Direct("alice".into());
    let path = store_session(store.path(), &owner, Some("t"), &[entry(Role::User, "m", "x", 1, None)]);
    delete_transcript(&path).unwrap();
    assert!(!path.exists() && !meta_path(&path).exists());
    delete_transcript(&path).unwrap();
}
