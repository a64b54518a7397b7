use super::*;

fn entry(role: Role, id: &str) -> TranscriptEntry {
    TranscriptEntry {
        role,
        content: format!("{role:?} {id}"),
        message_id: id.into(),
        sender_id: "u".into(),
        sender_name: "U".into(),
        ts: 1,
        answer: Default::default(),
    }
}

fn turn(id: &str) -> Vec<TranscriptEntry> {
    vec![entry(Role::User, id), entry(Role::Assistant, id)]
}

#[test]
fn the_window_keeps_the_last_entries_and_knows_the_file_has_more() {
    let mut memory = SessionMemory::new(4, 100);
    memory.remember(turn("m1"));
    memory.remember(turn("m2"));
    assert_eq!(memory.history(10).map(|h| h.len()), Some(4), "all of it is in memory");
    memory.remember(turn("m3"));
    assert_eq!(memory.last(10).iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["m2", "m2", "m3", "m3"]);
    assert_eq!(memory.history(4).map(|h| h.len()), Some(4));
    assert_eq!(memory.history(5), None, "older entries are only on disk");
    assert!(memory.recent_answer("m1").is_none() && memory.is_answered("m1"));
    assert_eq!(memory.last_answer().unwrap().message_id, "m3");
}

#[test]
fn the_idempotency_record_forgets_the_oldest_past_its_window() {
    let mut memory = SessionMemory::new(2, 3);
    for n in 0..5 {
        memory.remember(turn(&format!("m{n}")));
    }
    let known: Vec<bool> = (0..5).map(|n| memory.is_answered(&format!("m{n}"))).collect();
    assert_eq!(known, [false, false, true, true, true]);
}

#[test]
fn a_loaded_tail_becomes_the_memory() {
    let tail = Tail { recent: turn("m9"), more_on_disk: true, answered: vec!["m8".into(), "m9".into()] };
    let memory = SessionMemory::loaded(tail, 10, 10);
    assert!(memory.is_answered("m8") && memory.is_answered("m9"));
    assert_eq!(memory.history(2).map(|h| h.len()), Some(2));
    assert_eq!(memory.history(3), None);
}

fn regenerated(id: &str, replaces: &str) -> TranscriptEntry {
    let mut answer = entry(Role::Assistant, id);
    answer.answer.supersedes = Some(replaces.into());
    answer
}

#[test]
fn a_regeneration_asks_the_last_user_message_again_and_its_answer_takes_the_old_ones_place() {
    let mut memory = SessionMemory::new(10, 10);
    assert_eq!(
        memory.regeneration(None).map(|_| ()),
        Err((ErrorCode::NotFound, "this conversation has no answer to regenerate"))
    );
    memory.remember(turn("m1"));
    memory.remember(turn("m2"));
    let again = memory.regeneration(Some("m2")).expect("the last turn");
    assert_eq!((again.asked.message_id.as_str(), again.replaces.as_str()), ("m2", "m2"));
    assert_eq!(memory.regeneration(Some("m1")).map(|_| ()).unwrap_err().0, ErrorCode::InvalidMessage);
    assert_eq!(memory.before_last_message(10).len(), 2, "what the agent saw before m2");

    memory.remember(vec![regenerated("r1", "m2")]);
    let kept = memory.last(10);
    let ids: Vec<&str> = kept.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m1", "m2", "r1"], "the old answer is gone from memory");
    assert!(memory.is_answered("m2") && memory.is_answered("r1"));
    let twice = memory.regeneration(Some("r1")).expect("a regenerated answer is the last one");
    assert_eq!((twice.asked.message_id.as_str(), twice.replaces.as_str()), ("m2", "r1"));
    assert!(memory.regeneration(Some("m2")).is_ok(), "the user message names the turn too");
}

#[test]
fn an_answer_to_tool_results_is_not_regenerated() {
    let mut memory = SessionMemory::new(10, 10);
    memory.remember(turn("m1"));
    memory.remember(vec![entry(Role::Tool, "c1"), entry(Role::Assistant, "c1")]);
    assert_eq!(memory.regeneration(None).map(|_| ()).unwrap_err().0, ErrorCode::InvalidMessage);
}
