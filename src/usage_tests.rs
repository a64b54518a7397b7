use super::*;

#[test]
fn days_read_and_print_as_utc_dates() {
    assert_eq!(Day::parse("1970-01-01"), Some(Day(0)));
    assert_eq!(Day::of_millis(DAY_MS - 1), Day(0));
    assert_eq!(Day::of_millis(DAY_MS), Day(1));
    for text in ["2000-02-29", "2024-12-31", "2025-01-01", "1999-03-01", "2100-02-28"] {
        let day = Day::parse(text).expect(text);
        assert_eq!(day.to_string(), text);
        assert_eq!(Day::parse(&Day(day.0 + 1).to_string()), Some(Day(day.0 + 1)));
    }
    // 2024-03-15T12:00:00Z
    assert_eq!(Day::of_millis(1_710_504_000_000).to_string(), "2024-03-15");
    for bad in [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "2024-1-01",
        "24-01-01",
        "2024-01-01x",
        "2024/01/01",
        "",
        "+024-01-01",
    ] {
        assert_eq!(Day::parse(bad), None, "{bad}");
    }
    assert_eq!(Day::millis_until_next(DAY_MS * 3 + 1000), DAY_MS - 1000);
    assert_eq!(Day::millis_until_next(DAY_MS * 3), DAY_MS);
}

#[test]
fn every_day_for_centuries_round_trips() {
    for days in -1000..200_000 {
        let day = Day(days);
        assert_eq!(Day::parse(&day.to_string()), Some(day), "{day}");
    }
}

#[test]
fn user_directory_names_are_path_safe_and_distinct() {
    assert_eq!(user_dir_name("alice"), "alice");
    assert_eq!(user_dir_name("guest:al/ice"), "guest%3Aal%2Fice");
    assert_eq!(user_dir_name(".."), "%2E%2E");
    assert_ne!(user_dir_name("a b"), user_dir_name("a_b"));
    let long = "é".repeat(100);
    let name = user_dir_name(&long);
    assert!(name.starts_with('~') && name.len() == 65, "{name}");
    for name in [user_dir_name("x/../y"), name] {
        assert!(!name.contains('/') && !name.contains('.'), "{name}");
    }
}

#[test]
fn sessions_beyond_the_bound_drop_the_least_recently_used() {
    let mut sessions = BTreeMap::new();
    for n in 0..(MAX_SESSIONS_PER_USER as u64 + 5) {
        sessions.insert(format!("s{n}"), SessionUse { turns: 1, total_tokens: 1, last_activity: 1000 + n });
    }
    trim_sessions(&mut sessions);
    assert_eq!(sessions.len(), MAX_SESSIONS_PER_USER);
    assert!(!sessions.contains_key("s0") && !sessions.contains_key("s4") && sessions.contains_key("s5"));
}

#[actix_rt::test]
async fn recorded_turns_are_in_files_a_new_book_reads() {
    let dir = tempfile::tempdir().unwrap();
    let usage = LocalUsage::new(dir.path(), 30);
    let now = 1_710_504_000_000;
    let day = Day::of_millis(now);
    usage.record("alice", "k1", UsageCounts::of_turn(10, 5, false), now);
    assert_eq!(usage.cached_tokens("alice", day), None, "the day's file is not read yet");
    assert_eq!(usage.clone().tokens("alice".into(), day).await, 15, "a recorded turn counts at once");
    usage.record("alice", "k2", UsageCounts::of_turn(4, 4, true), now + 1);
    usage.record("bob", "k3", UsageCounts::of_turn(1, 1, false), now);
    assert_eq!(usage.cached_tokens("alice", day), Some(23));
    written(&usage).await;

    let again = LocalUsage::new(dir.path(), 30);
    assert_eq!(again.cached_tokens("alice", day), None);
    assert_eq!(again.clone().tokens("alice".into(), day).await, 23);
    let days = again.clone().range("alice".into(), Day(day.0 - 3), day).await.unwrap();
    let expected = UsageCounts { turns: 2, prompt_tokens: 14, completion_tokens: 9, estimated_tokens: 8 };
    assert_eq!(days, vec![(day, expected)]);
    let sessions = again.clone().sessions("alice".into()).await;
    assert_eq!(sessions.keys().collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!(sessions["k2"], SessionUse { turns: 1, total_tokens: 8, last_activity: now + 1 });

    // Old days go; the current one stays.
    let old = Day(day.0 - 40);
    usage.record("alice", "k1", UsageCounts::of_turn(1, 0, false), old.0 as u64 * DAY_MS);
    written(&usage).await;
    assert!(dir.path().join("usage/alice").join(format!("{old}.json")).exists());
    assert_eq!(usage.prune(day).unwrap(), 1);
    assert!(!dir.path().join("usage/alice").join(format!("{old}.json")).exists());
    assert!(dir.path().join("usage/alice").join(format!("{day}.json")).exists());
}

/// Waits until every user's files are written.
async fn written(usage: &LocalUsage) {
    for _ in 0..500 {
        if usage.lock().values().all(|book| !book.has_unwritten()) {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the usage files were never written");
}

#[actix_rt::test]
async fn a_turn_recorded_before_the_file_is_read_is_added_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_710_504_000_000;
    let day = Day::of_millis(now);
    let first = LocalUsage::new(dir.path(), 30);
    first.record("alice", "k1", UsageCounts::of_turn(10, 0, false), now);
    written(&first).await;
    let second = LocalUsage::new(dir.path(), 30);
    second.record("alice", "k1", UsageCounts::of_turn(5, 0, false), now);
    assert_eq!(second.clone().tokens("alice".into(), day).await, 15);
    written(&second).await;
    let third = LocalUsage::new(dir.path(), 30);
    assert_eq!(third.clone().tokens("alice".into(), day).await, 15);
    assert_eq!(third.clone().sessions("alice".into()).await["k1"].turns, 2);
}
