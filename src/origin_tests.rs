use super::*;

fn list(patterns: &[&str]) -> Vec<String> {
    patterns.iter().map(|pattern| pattern.to_string()).collect()
}

#[test]
fn an_empty_list_allows_every_origin() {
    assert!(origin_allowed("https://evil.example", &[]));
    assert!(origin_allowed("null", &[]));
}

#[test]
fn exact_origins_match_scheme_host_and_port_ignoring_case() {
    let allowed = list(&["https://chat.example.com", "http://localhost:3000"]);
    assert!(origin_allowed("https://chat.example.com", &allowed));
    assert!(origin_allowed("HTTPS://Chat.Example.COM", &allowed));
    assert!(origin_allowed("http://localhost:3000", &allowed));
    for refused in [
        "http://chat.example.com",
        "https://chat.example.com:8443",
        "https://chat.example.com.evil.net",
        "https://evilchat.example.com",
        "http://localhost",
        "http://localhost:3001",
        "null",
        "",
    ] {
        assert!(!origin_allowed(refused, &allowed), "{refused:?} must be refused");
    }
}

#[test]
fn a_star_stands_for_exactly_one_host_label() {
    let allowed = list(&["https://*.example.com"]);
    assert!(origin_allowed("https://app.example.com", &allowed));
    assert!(origin_allowed("https://my-app2.example.com", &allowed));
    for refused in [
        "https://example.com",
        "https://a.b.example.com",
        "https://.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.net",
        "https://app:1@x.example.com",
        "https://evil.net/.example.com",
    ] {
        assert!(!origin_allowed(refused, &allowed), "{refused:?} must be refused");
    }
}

#[test]
fn a_lone_star_allows_all_and_null_is_matched_only_when_listed() {
    assert!(origin_allowed("https://anything.example", &list(&["*"])));
    assert!(origin_allowed("null", &list(&["https://a.example", "null"])));
    assert!(!origin_allowed("null", &list(&["https://a.example"])));
}

#[test]
fn patterns_are_checked_for_shape() {
    for good in ["*", "null", "https://a.example.com", "https://*.example.com", "http://127.0.0.1:8080", "app://x"] {
        assert!(is_valid_pattern(good), "{good:?}");
    }
    for bad in ["", "example.com", "https://", "https://a..b", "https://a.example.com/", "https://a/b", "://a"] {
        assert!(!is_valid_pattern(bad), "{bad:?}");
    }
}
