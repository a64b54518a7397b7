use super::*;

#[test]
fn url_credentials_are_masked_and_the_rest_kept() {
    assert_eq!(url("http://user:s3cret@gw.local:18789/v1?x=1"), "http://***@gw.local:18789/v1?x=1");
    assert_eq!(url("http://u:pa/ss@host/v1"), "http://***@host/v1", "a / in the password");
    assert_eq!(url("bob:s3cret@localhost:18789"), "***@localhost:18789", "no scheme");
    assert_eq!(url("https://gw.local/v1?next=a@b"), "https://gw.local/v1?next=a@b", "an @ in the query");
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

#[test]
fn url_masks_the_user_and_password_of_a_url() {
    let cases = [
        ("http://user:s3cret@127.0.0.1:9/verify", "http://***@127.0.0.1:9/verify"),
        ("https://sk-token@api.example.com/v1?model=x", "https://***@api.example.com/v1?model=x"),
        ("http://user:p@ss@host/", "http://***@host/"),
        // A password with an unencoded '/' is masked too (over-masking beats a leak).
        ("http://user:pa/ss@host/v1", "http://***@host/v1"),
        ("user:s3cret@localhost:11434/v1", "***@localhost:11434/v1"),
        ("http://127.0.0.1:18789", "http://127.0.0.1:18789"),
        ("http://host/verify?email=a@b.example#x@y", "http://host/verify?email=a@b.example#x@y"),
        ("", ""),
    ];
    for (given, redacted) in cases {
        assert_eq!(url(given), redacted, "{given}");
    }
}

#[test]
fn remembered_secrets_are_masked_in_any_words_and_several_credential_words_in_a_row_count() {
    remember(["gw7Qx2pLr9Zk", "short"]);
    for text in ["Invalid bearer token: gw7Qx2pLr9Zk", "Incorrect API key provided: gw7Qx2pLr9Zk.", "x:gw7Qx2pLr9Zk"] {
        assert!(!secrets(text).contains("gw7Qx2pLr9Zk"), "{text} → {}", secrets(text));
    }
    assert_eq!(secrets("bearer token: abc123xyz"), "bearer token: ***");
    assert_eq!(secrets("a short word"), "a short word", "too short to be masked literally");
    assert_eq!(url_password("http://user:pw0rd@host/x"), Some("pw0rd"));
    assert_eq!(url_password("http://host/x"), None);
}
