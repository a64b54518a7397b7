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
fn a_cache_ttl_of_zero_keeps_no_verdict() {
    let settings = |cache_ttl| GroupSettings {
        policy: GroupPolicy::Proxy,
        endpoint: "http://127.0.0.1:9/groups".into(),
        cache_ttl,
        timeout: 1000,
    };
    let key = ("u".to_string(), "g".to_string(), GroupAction::Send);
    let now = Instant::now();
    let off = verdict_cache(&settings(0));
    off.put(key.clone(), true, now);
    assert_eq!(off.get(&key, now), None);
    let on = verdict_cache(&settings(60_000));
    on.put(key.clone(), true, now);
    assert_eq!(on.get(&key, now), Some(true));
}
