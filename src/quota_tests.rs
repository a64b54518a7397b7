use serde_json::json;

use super::*;

fn base() -> PerUserLimits {
    PerUserLimits { max_connections: 20, turns_per_minute: 30, concurrent_turns: 4, tokens_per_day: 0 }
}

fn data(value: serde_json::Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

#[test]
fn the_auth_services_limits_override_each_field_they_set() {
    let (limits, ignored) = with_overrides(
        base(),
        Some(&data(json!({"userId": "a", "limits": {"turnsPerMinute": 100, "tokensPerDay": 5000}}))),
    );
    assert_eq!(limits, PerUserLimits { turns_per_minute: 100, tokens_per_day: 5000, ..base() });
    assert!(ignored.is_empty());
    let (limits, _) =
        with_overrides(base(), Some(&data(json!({"limits": {"maxConnections": 0, "concurrentTurns": 1}}))));
    assert_eq!(limits, PerUserLimits { max_connections: 0, concurrent_turns: 1, ..base() });
    assert_eq!(with_overrides(base(), None).0, base());
    assert_eq!(with_overrides(base(), Some(&data(json!({"userId": "a"})))).0, base());
}

#[test]
fn unusable_overrides_are_ignored_and_named() {
    let answer = data(
        json!({"limits": {"turnsPerMinute": -1, "tokensPerDay": "lots", "concurrentTurns": 2.5, "colour": 1, "maxConnections": 3}}),
    );
    let (limits, mut ignored) = with_overrides(base(), Some(&answer));
    assert_eq!(limits, PerUserLimits { max_connections: 3, ..base() });
    ignored.sort();
    assert_eq!(ignored, ["limits.colour", "limits.concurrentTurns", "limits.tokensPerDay", "limits.turnsPerMinute"]);
    assert_eq!(unusable_limit_fields(&data(json!({"limits": 7}))), ["limits"]);
    assert!(unusable_limit_fields(&data(json!({"limits": {}}))).is_empty());
}

#[test]
fn a_window_takes_max_turns_a_minute_and_says_when_the_next_fits() {
    let mut windows = TurnWindows::default();
    let start = 1_000_000;
    for n in 0..3 {
        assert_eq!(windows.take("alice", 3, start + n * 1000), Ok(()));
    }
    assert_eq!(windows.take("alice", 3, start + 5000), Err(55_000), "the oldest leaves at start + 60 s");
    assert_eq!(windows.take("bob", 3, start + 5000), Ok(()), "another user is not affected");
    assert_eq!(windows.take("alice", 3, start + 59_999), Err(1));
    assert_eq!(windows.take("alice", 3, start + 60_000), Ok(()), "one left the window: one fits");
    assert_eq!(windows.take("alice", 3, start + 60_001), Err(999));
    for _ in 0..100 {
        assert_eq!(windows.take("carol", 0, start), Ok(()), "0 is no limit");
    }
}

#[test]
fn a_growing_map_forgets_users_without_turns_in_the_window() {
    let mut windows = TurnWindows::default();
    for n in 0..3000 {
        windows.take(&format!("user{n}"), 5, 1_000_000).unwrap();
    }
    for n in 0..1200 {
        windows.take(&format!("late{n}"), 5, 1_000_000 + 61_000).unwrap();
    }
    assert!(windows.users.len() <= 1200, "{} users kept", windows.users.len());
    assert!(windows.users.contains_key("late1199"));
}

#[test]
fn a_refusal_names_its_limit_and_when_to_retry() {
    let refusal = QuotaRefusal { limit: QuotaLimit::TurnsPerMinute, max: 3, retry_after_ms: 1500 };
    let frame: Value = serde_json::from_str(&refusal.frame(Some("m4")).text()).unwrap();
    assert_eq!(frame["type"], "chat.error");
    assert_eq!(frame["code"], "quota_exceeded");
    assert_eq!(frame["limit"], "turnsPerMinute");
    assert_eq!(frame["retryAfterMs"], 1500);
    assert_eq!(frame["messageId"], "m4");
    assert!(frame["error"].as_str().unwrap().contains("turnsPerMinute"), "{frame}");
}

#[test]
fn estimates_are_four_bytes_a_token_rounded_up() {
    assert_eq!(estimated_tokens(0), 0);
    assert_eq!(estimated_tokens(1), 1);
    assert_eq!(estimated_tokens(8), 2);
    assert_eq!(estimated_tokens(9), 3);
}
