use super::*;
use crate::identity::SessionTarget;
use crate::protocol::{AnswerDetails, TranscriptEntry};
use crate::transcript;

fn record(thread: Option<&str>, ts: u64, added: u64, title: &str, answer: &str) -> TurnRecord {
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
        answer_id: answer.to_string(),
        transcript: None,
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

/// An owner's directory in a temp store, with no index yet.
fn alice_dir(store: &Path) -> OwnerDir {
    OwnerDir::of(store, &Chat::Direct("alice".into()))
}

#[test]
fn turns_update_one_entry_per_thread_once_and_listing_is_newest_first() {
    let store = tempfile::tempdir().unwrap();
    let owner = alice_dir(store.path());
    let mut index = owner.load().unwrap();
    assert!(index.sessions.is_empty() && !owner.index_path().exists(), "no conversation, no file");
    owner.record(&mut index, &record(None, 10, 2, "hello", "m1")).unwrap();
    owner.record(&mut index, &record(Some("t1"), 20, 2, "trip", "m2")).unwrap();
    owner.record(&mut index, &record(None, 30, 2, "second message", "m3")).unwrap();
    assert!(!owner.record(&mut index, &record(None, 30, 2, "second message", "m3")).unwrap(), "counted once");
    let listed = index.newest(10);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].thread_id, None);
    assert_eq!((listed[0].message_count, listed[0].last_activity), (4, 30));
    assert_eq!(listed[0].title, "hello", "the first message's title stays");
    assert_eq!(listed[1].thread_id.as_deref(), Some("t1"));
    assert_eq!(index.newest(1).len(), 1);
}

#[test]
fn equal_activity_lists_the_greater_thread_first_and_the_default_last_as_redis_does() {
    let mut index = Index::default();
    for thread in [None, Some("a"), Some("b")] {
        let turn = record(thread, 5, 2, "x", "m");
        index.insert(IndexEntry { summary: turn.new_entry(), last_answer: String::new(), transcript: None });
    }
    let order: Vec<Option<String>> = index.newest(3).into_iter().map(|s| s.thread_id).collect();
    assert_eq!(order, [Some("b".to_string()), Some("a".to_string()), None]);
}

#[test]
fn naming_and_removing_touch_only_their_thread() {
    let store = tempfile::tempdir().unwrap();
    let owner = alice_dir(store.path());
    let mut index = owner.load().unwrap();
    owner.record(&mut index, &record(None, 10, 2, "hello", "m1")).unwrap();
    owner.record(&mut index, &record(Some("t1"), 20, 2, "trip", "m2")).unwrap();
    let named = owner.set_title(&mut index, Some("t1"), "Rome").expect("t1 is indexed");
    assert!(named.titled);
    assert_eq!(owner.set_title(&mut index, Some("t9"), "x"), None);
    owner.record(&mut index, &record(Some("t1"), 40, 2, "later message", "m4")).unwrap();
    assert_eq!(index.newest(1)[0].title, "Rome", "a later turn keeps a given title");
    assert!(owner.remove(&mut index, Some("t1")));
    assert!(!owner.remove(&mut index, Some("t1")));
    assert_eq!(index.newest(10).len(), 1);
}

#[test]
fn an_index_keeps_the_most_recent_conversations_only() {
    let mut index = Index::default();
    for n in 0..(MAX_INDEXED as u64 + 5) {
        let turn = record(Some(&format!("t{n}")), n, 2, "x", "m");
        index.insert(IndexEntry { summary: turn.new_entry(), last_answer: String::new(), transcript: None });
    }
    assert_eq!(index.sessions.len(), MAX_INDEXED);
    assert!(index.sessions.iter().all(|entry| entry.summary.last_activity >= 5), "the oldest five were dropped");
}

#[test]
fn owners_never_share_a_directory_whatever_their_ids() {
    let store = Path::new("/store");
    let plain = OwnerDir::of(store, &Chat::Group("Team Rome".into()));
    let forged = format!("Team_Rome-{}", store::short_hash("Team Rome"));
    assert_ne!(plain.path, OwnerDir::of(store, &Chat::Group(forged)).path);
    assert_ne!(plain.path, OwnerDir::of(store, &Chat::Direct("Team Rome".into())).path);
    assert_ne!(
        OwnerDir::of(store, &Chat::Direct("a".into())).path,
        OwnerDir::of(store, &Chat::Direct("A".into())).path,
        "ids are compared exactly"
    );
}

/// Stores a turn of `owner` as a session does: the transcript, then its index record.
fn store_turn(store: &Path, owner: &Chat, thread: Option<&str>, entries: &[TranscriptEntry]) {
    let target = SessionTarget { chat: owner.clone(), thread_id: thread.map(String::from) };
    let key = target.key("main");
    let path = store::transcript_path(&store.join("agents/main"), &key);
    transcript::append(&path, entries).unwrap();
    let dir = OwnerDir::of(store, owner);
    let mut index = dir.load().unwrap();
    let answer = entries.iter().rev().find(|e| e.role == Role::Assistant).unwrap();
    let turn = TurnRecord {
        session_key: key.to_string(),
        thread_id: thread.map(String::from),
        group_id: None,
        ts: answer.ts,
        added: entries.iter().filter(|e| e.answer.supersedes.is_none()).count() as u64,
        title: "ignored: the transcript's first message wins".into(),
        answer_id: answer.message_id.clone(),
        transcript: Some(path),
    };
    dir.record(&mut index, &turn).unwrap();
    dir.save(&index).unwrap();
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_from_the_owners_transcripts() {
    let store = tempfile::tempdir().unwrap();
    let alice = Chat::Direct("alice".into());
    store_turn(
        store.path(),
        &alice,
        Some("t1"),
        &[entry(Role::User, "m1", "Plan a trip to Rome", 100, None), entry(Role::Assistant, "m1", "Sure", 101, None)],
    );
    store_turn(store.path(), &alice, Some("t1"), &[entry(Role::Assistant, "r1", "Gladly", 102, Some("m1"))]);
    store_turn(
        store.path(),
        &alice,
        None,
        &[entry(Role::User, "d1", "hello", 50, None), entry(Role::Assistant, "d1", "hi", 51, None)],
    );
    store_turn(
        store.path(),
        &Chat::Direct("bob".into()),
        None,
        &[entry(Role::User, "b1", "bob", 60, None), entry(Role::Assistant, "b1", "hi", 61, None)],
    );
    let owner = OwnerDir::of(store.path(), &alice);
    let listed = owner.load().unwrap().newest(10);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].message_count, 2, "the superseded answer is not counted");
    assert_eq!(listed[0].title, "Plan a trip to Rome", "from the transcript's first message");

    fs::remove_file(owner.index_path()).unwrap();
    let rebuilt = owner.load().unwrap();
    assert_eq!(rebuilt.newest(10), listed, "rebuilt from alice's transcripts only");
    assert!(owner.index_path().exists(), "and written");
    fs::write(owner.index_path(), b"{\"sessions\": [tor").unwrap();
    assert_eq!(owner.load().unwrap().newest(10), listed, "a damaged index too");

    // A turn already in the transcript when the index was rebuilt is not counted twice.
    fs::remove_file(owner.index_path()).unwrap();
    let mut index = owner.load().unwrap();
    let again = TurnRecord { answer_id: "r1".into(), ..record(Some("t1"), 102, 1, "", "r1") };
    assert!(!owner.record(&mut index, &again).unwrap());
    assert_eq!(index.newest(1)[0].message_count, 2);
}

#[test]
fn a_given_title_survives_a_rebuild_and_an_entry_made_late_counts_the_whole_transcript() {
    let store = tempfile::tempdir().unwrap();
    let team = Chat::Group("team:one".into());
    let first = [entry(Role::User, "m1", "hello", 1, None), entry(Role::Assistant, "m1", "hi", 2, None)];
    let key = SessionTarget { chat: team.clone(), thread_id: Some("plans".into()) }.key("main");
    let path = store::transcript_path(&store.path().join("agents/main"), &key);
    transcript::append(&path, &first).unwrap();
    // The index learns of the conversation only at its second turn (a transcript from
    // before the index, or a record lost in a crash): the whole transcript is counted.
    transcript::append(&path, &[entry(Role::User, "m2", "more", 3, None), entry(Role::Assistant, "m2", "ok", 4, None)])
        .unwrap();
    let owner = OwnerDir::of(store.path(), &team);
    let mut index = owner.load().unwrap();
    let turn = TurnRecord {
        group_id: Some("team:one".into()),
        transcript: Some(path),
        session_key: key.to_string(),
        ..record(Some("plans"), 4, 2, "more", "m2")
    };
    owner.record(&mut index, &turn).unwrap();
    owner.set_title(&mut index, Some("plans"), "Our plans");
    owner.save(&index).unwrap();
    assert_eq!(index.newest(1)[0].message_count, 4);
    assert_eq!(index.newest(1)[0].title, "Our plans");

    fs::remove_file(owner.index_path()).unwrap();
    let listed = owner.load().unwrap().newest(10);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].title.as_str(), listed[0].titled, listed[0].message_count), ("Our plans", true, 4));
    assert_eq!(listed[0].group_id.as_deref(), Some("team:one"));
}
