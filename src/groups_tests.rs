use super::*;

#[test]
fn listed_groups_match_exactly_or_by_prefix() {
    let groups = json!(["team-a", "proj-*"]);
    assert!(listed(Some(&groups), "team-a"));
    assert!(listed(Some(&groups), "proj-x") && listed(Some(&groups), "proj-"));
    assert!(!listed(Some(&groups), "team-ab") && !listed(Some(&groups), "team-c") && !listed(Some(&groups), "proj"));
    assert!(!listed(None, "team-a"), "no data.groups: no group");
    assert!(!listed(Some(&json!("team-a")), "team-a"), "not a list");
    assert!(listed(Some(&json!(["*"])), "anything"), "a lone * lists every group");
}

#[test]
fn cached_verdicts_expire_and_the_cache_is_bounded() {
    let cache = VerdictCache::default();
    let now = Instant::now();
    let key = |n: usize| (format!("u{n}"), "g".to_string(), GroupAction::Send);
    cache.put(key(0), true, now + Duration::from_secs(60), now);
    assert_eq!(cache.get(&key(0), now), Some(true));
    assert_eq!(cache.get(&key(0), now + Duration::from_secs(61)), None);
    for n in 0..CACHE_CAPACITY + 10 {
        cache.put(key(n), false, now + Duration::from_secs(60), now);
    }
    let held = cache.entries.lock().unwrap().verdicts.len();
    assert!(held <= CACHE_CAPACITY, "{held}");
}
