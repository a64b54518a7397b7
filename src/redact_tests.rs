use super::*;

#[test]
fn url_credentials_are_masked_and_the_rest_kept() {
    assert_eq!(url("http://user:s3cret@gw.local:18789/v1?x=1"), "http://***@gw.local:18789/v1?x=1");
    assert_eq!(url("https://gw.local/a@b"), "https://gw.local/a@b", "an @ in the path is no userinfo");
    assert_eq!(url("localhost:11434/v1"), "localhost:11434/v1");
}

#[test]
fn credentials_in_free_text_are_masked() {
    let cases = [
        ("invalid header: Authorization: Bearer live-123456 given", "live-123456"),
        (r#"{"error":{"message":"bad key sk-proj-abcdefgh"}}"#, "abcdefgh"),
        (r#"{"api_key": "k-999-secret", "ok": 1}"#, "k-999-secret"),
        ("password=hunter22&user=x", "hunter22"),
        ("upstream http://admin:pw0rd@10.0.0.1/x failed", "pw0rd"),
        ("token: abc.def.ghi", "abc.def.ghi"),
    ];
    for (text, secret) in cases {
        let masked = secrets(text);
        assert!(!masked.contains(secret) && masked.contains(MASK), "{text} → {masked}");
    }
}

#[test]
fn ordinary_text_is_left_alone() {
    for text in ["model not found", "Unknown agent: ws-alice", "HTTP 500: internal error, try again", ""] {
        assert_eq!(secrets(text), text);
    }
}
