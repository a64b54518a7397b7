use super::tokens_match;

#[test]
fn tokens_match_only_when_equal() {
    assert!(tokens_match(b"s3cret-token", b"s3cret-token"));
    assert!(!tokens_match(b"s3cret-tokeN", b"s3cret-token"));
    assert!(!tokens_match(b"s3cret", b"s3cret-token"));
    assert!(!tokens_match(b"", b"s3cret-token"));
}
