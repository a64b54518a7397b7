use std::io::Write;

use super::*;

fn entry(role: Role, content: &str, id: &str) -> TranscriptEntry {
    TranscriptEntry {
        role,
        content: content.into(),
        message_id: id.into(),
        sender_id: "u".into(),
        sender_name: "U".into(),
        ts: 1,
        answer: Default::default(),
    }
}

fn turn(id: &str, content: &str) -> [TranscriptEntry; 2] {
    [entry(Role::User, content, id), entry(Role::Assistant, &format!("re: {content}"), id)]
}

fn contents(entries: &[TranscriptEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.content.as_str()).collect()
}

fn append_raw(path: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

#[test]
fn appended_turns_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions/s.jsonl");
    assert_eq!(load_tail(&path, 10, 10).unwrap(), Tail::default());
    append(&path, &turn("m1", "hi")).unwrap();
    append(&path, &turn("m2", "multi\nline")).unwrap();
    let tail = load_tail(&path, 10, 10).unwrap();
    assert_eq!(contents(&tail.recent), ["hi", "re: hi", "multi\nline", "re: multi\nline"]);
    assert_eq!(tail.answered, ["m1", "m2"]);
    assert!(!tail.more_on_disk);
    assert_eq!(contents(&read_tail(&path, 3).unwrap()), ["re: hi", "multi\nline", "re: multi\nline"]);
}

#[test]
fn the_load_keeps_a_window_and_more_answer_ids_than_it_keeps_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    for n in 0..10 {
        append(&path, &turn(&format!("m{n}"), &format!("q{n}"))).unwrap();
    }
    let tail = load_tail(&path, 4, 6).unwrap();
    assert_eq!(contents(&tail.recent), ["q8", "re: q8", "q9", "re: q9"]);
    assert!(tail.more_on_disk);
    assert_eq!(tail.answered, ["m4", "m5", "m6", "m7", "m8", "m9"], "the last 6 answers, oldest first");
}

#[test]
fn lines_longer_than_a_read_block_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    let long = "x".repeat(3 * BLOCK as usize + 17);
    append(&path, &turn("m1", &long)).unwrap();
    append(&path, &turn("m2", "short")).unwrap();
    let all = read_tail(&path, 100).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].content, long);
    assert_eq!(find_answer(&path, "m1").unwrap().unwrap().content, format!("re: {long}"));
}

#[test]
fn only_the_load_cuts_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append(&path, &turn("m1", "kept")).unwrap();
    append_raw(&path, br#"{"role":"assistant","content":"tor"#);
    let size = fs::metadata(&path).unwrap().len();
    assert_eq!(contents(&read_tail(&path, 10).unwrap()), ["kept", "re: kept"]);
    assert_eq!(find_answer(&path, "m1").unwrap().unwrap().content, "re: kept");
    assert_eq!(fs::metadata(&path).unwrap().len(), size, "reads never change the file");
    let tail = load_tail(&path, 10, 10).unwrap();
    assert_eq!(contents(&tail.recent), ["kept", "re: kept"]);
    append(&path, &turn("m2", "next")).unwrap();
    assert_eq!(contents(&read_tail(&path, 10).unwrap()), ["kept", "re: kept", "next", "re: next"]);
}

#[test]
fn a_file_that_is_only_a_torn_line_loads_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    fs::write(&path, br#"{"role":"us"#).unwrap();
    assert_eq!(load_tail(&path, 10, 10).unwrap(), Tail::default());
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn a_bad_line_in_the_middle_is_skipped_by_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append(&path, &turn("m1", "one")).unwrap();
    append_raw(&path, b"garbage\n");
    append(&path, &turn("m2", "two")).unwrap();
    assert_eq!(load_tail(&path, 10, 10).unwrap().recent.len(), 4);
    assert_eq!(read_tail(&path, 10).unwrap().len(), 4);
    assert_eq!(find_answer(&path, "m1").unwrap().unwrap().content, "re: one");
    assert_eq!(find_answer(&path, "nope").unwrap(), None);
}

#[test]
fn a_turn_after_a_partial_line_starts_on_a_line_of_its_own() {
    // What a cut-back that failed too leaves: the next turn must not be glued onto it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append(&path, &turn("m1", "one")).unwrap();
    append_raw(&path, br#"{"role":"user","content":"half"#);
    append(&path, &turn("m2", "two")).unwrap();
    assert_eq!(contents(&read_tail(&path, 10).unwrap()), ["one", "re: one", "two", "re: two"]);
}

#[test]
fn a_damaged_line_longer_than_any_turn_is_skipped_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    append(&path, &turn("m1", "before")).unwrap();
    append_raw(&path, &vec![b'#'; MAX_LINE_BYTES + 10]);
    append_raw(&path, b"\n");
    append(&path, &turn("m2", "after")).unwrap();
    assert_eq!(contents(&read_tail(&path, 10).unwrap()), ["before", "re: before", "after", "re: after"]);
    append_raw(&path, &vec![b'#'; MAX_LINE_BYTES + 10]);
    let tail = load_tail(&path, 10, 10).unwrap();
    assert_eq!(tail.recent.len(), 4, "a torn tail of any length is cut");
    assert_eq!(fs::read(&path).unwrap().last(), Some(&b'\n'));
}

#[test]
fn reads_leave_out_superseded_answers_but_the_file_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    append(&path, &turn("m1", "first")).unwrap();
    let mut again = entry(Role::Assistant, "second try", "r1");
    again.answer.supersedes = Some("m1".into());
    append(&path, &[again.clone()]).unwrap();
    let mut third = entry(Role::Assistant, "third try", "r2");
    third.answer.supersedes = Some("r1".into());
    append(&path, &[third]).unwrap();

    assert_eq!(contents(&read_tail(&path, 10).unwrap()), ["first", "third try"]);
    assert_eq!(contents(&read_tail(&path, 1).unwrap()), ["third try"]);
    let tail = load_tail(&path, 10, 10).unwrap();
    assert_eq!(contents(&tail.recent), ["first", "third try"]);
    assert_eq!(tail.answered, ["m1", "r1", "r2"], "every answered id stays answered");
    assert_eq!(find_answer(&path, "m1").unwrap().map(|e| e.content), Some("re: first".into()));
    let everything = std::fs::read_to_string(&path).unwrap();
    assert!(everything.contains("second try") && everything.contains("re: first"), "the file keeps them");
    assert_eq!(
        contents(&visible(vec![entry(Role::User, "q", "m1"), entry(Role::Assistant, "a", "m1"), again])),
        ["q", "second try"]
    );
}
