use super::*;

fn params(query: &str, authorization: Option<&str>) -> Option<BTreeMap<String, String>> {
    Credentials::from_request(query, authorization).map(|credentials| credentials.params)
}

fn pairs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn user(id: &str) -> VerifiedUser {
    VerifiedUser { user_id: id.into(), username: id.into(), data: Arc::new(Map::new()) }
}

fn credentials(token: &str) -> Credentials {
    Credentials::from_request(&format!("token={token}"), None).expect("a token is given")
}

#[test]
fn every_query_parameter_is_sent_and_token_type_defaults_to_local() {
    let sent = params("token=abc&senderId=u1&lang=de%20DE", None);
    assert_eq!(sent, Some(pairs(&[("token", "abc"), ("senderId", "u1"), ("lang", "de DE"), ("tokenType", "local")])));
    let sent = params("token=abc&tokenType=jwt", None);
    assert_eq!(sent, Some(pairs(&[("token", "abc"), ("tokenType", "jwt")])));
}

#[test]
fn without_a_token_there_is_nothing_to_verify() {
    assert!(params("senderId=u1", None).is_none());
    assert!(params("token=&senderId=u1", None).is_none());
    assert!(params("", Some("Basic dXNlcjpwYXNz")).is_none());
    assert!(params("", Some("Bearer   ")).is_none());
}

#[test]
fn a_bearer_header_is_sent_as_the_token_unless_the_url_has_one() {
    assert_eq!(
        params("senderId=u1", Some("Bearer xyz")),
        Some(pairs(&[("token", "xyz"), ("senderId", "u1"), ("tokenType", "local")]))
    );
    assert_eq!(params("", Some("bearer  xyz ")), Some(pairs(&[("token", "xyz"), ("tokenType", "local")])));
    assert_eq!(params("token=url", Some("Bearer header")).expect("a token")["token"], "url");
}

#[test]
fn a_verdict_with_a_user_id_authenticates_and_keeps_the_whole_data() {
    let body = br#"{"success":true,"data":{"userId":"user_123","username":"John","plan":"pro"}}"#;
    let user = interpret(200, body).expect("a good answer");
    assert_eq!((user.user_id.as_str(), user.username.as_str()), ("user_123", "John"));
    assert_eq!(user.data["plan"], "pro");
    let user = interpret(200, br#"{"success":true,"data":{"userId":42}}"#).expect("a numeric id");
    assert_eq!((user.user_id.as_str(), user.username.as_str()), ("42", "42"));
}

#[test]
fn refusals_and_unusable_answers_get_their_reason() {
    let reason = |status, body: &str| interpret(status, body.as_bytes()).map(|_| ()).unwrap_err().reason();
    assert_eq!(reason(200, r#"{"success":false,"error":"expired"}"#), "invalid_token");
    assert_eq!(reason(401, ""), "invalid_token");
    assert_eq!(reason(403, r#"{"success":false}"#), "invalid_token");
    assert_eq!(reason(500, r#"{"success":true,"data":{"userId":"u"}}"#), "bad_response");
    assert_eq!(reason(200, "<html>"), "bad_response");
    assert_eq!(reason(200, r#"{"success":true}"#), "bad_response");
    assert_eq!(reason(200, r#"{"success":true,"data":{"username":"no id"}}"#), "bad_response");
    assert_eq!(reason(200, r#"{"success":true,"data":{"userId":""}}"#), "bad_response");
    assert_eq!(reason(200, r#"{"ok":true}"#), "bad_response");
    assert_eq!(reason(200, r#"{"success":true,"data":{"userId":"guest:alice"}}"#), "bad_response");
}

#[test]
fn error_texts_never_repeat_what_the_service_sent() {
    for body in [r#"{"success":"tok-SECRET"}"#, r#"{"success":true,"data":{"userId":["tok-SECRET"]}}"#, "tok-SECRET"] {
        let error = interpret(200, body.as_bytes()).map(|_| ()).unwrap_err();
        assert!(!error.to_string().contains("tok-SECRET"), "{error}");
        assert!(!error.client_message().contains("tok-SECRET"));
    }
}

#[test]
fn codes_and_client_sentences() {
    assert_eq!(AuthError::MissingToken.code(), ErrorCode::TokenRequired);
    assert!(AuthError::MissingToken.client_message().contains("token_required"));
    let failures = [
        AuthError::InvalidToken,
        AuthError::Timeout(Duration::from_millis(200)),
        AuthError::ServiceUnavailable("connection refused".into()),
        AuthError::BadResponse("HTTP 500".into()),
    ];
    for error in failures {
        assert_eq!(error.code(), ErrorCode::AuthFailed);
        assert_eq!(error.client_message(), format!("authentication failed: {}", error.reason()));
    }
}

#[test]
fn the_cache_answers_the_same_parameters_until_the_ttl() {
    let cache = LocalAnswers::new(Duration::from_secs(60));
    let now = Instant::now();
    let key = cache.key(&credentials("a"));
    assert_eq!(key, cache.key(&credentials("a")));
    assert_ne!(key, cache.key(&credentials("b")));
    assert_ne!(key, cache.key(&Credentials::from_request("token=a&tokenType=jwt", None).expect("a token")));
    assert!(cache.answers.get(&key, now).is_none());
    cache.answers.put(key, user("alice"), now);
    assert_eq!(cache.answers.get(&key, now + Duration::from_secs(59)).map(|user| user.user_id), Some("alice".into()));
    assert!(cache.answers.get(&key, now + Duration::from_secs(60)).is_none());
}

#[test]
fn the_cache_is_off_at_zero_and_bounded_otherwise() {
    let settings = |cache_ttl| AuthSettings {
        enabled: true,
        endpoint: "http://127.0.0.1:1/verify".into(),
        timeout: 1000,
        required: true,
        cache_ttl,
    };
    assert!(AnswerCache::for_settings(&settings(0), None).is_none());
    let cache = AnswerCache::for_settings(&settings(60_000), None).expect("a cache");
    assert!(matches!(*cache, AnswerCache::Local(_)), "no cluster: this process's answers only");
    let cache = cache.local();
    let now = Instant::now();
    for index in 0..CACHE_CAPACITY + 10 {
        cache.answers.put(cache.key(&credentials(&index.to_string())), user("u"), now);
    }
    assert_eq!(cache.answers.count(), CACHE_CAPACITY);
    assert!(cache.answers.get(&cache.key(&credentials("0")), now).is_none(), "the oldest went first");
    assert!(cache.answers.get(&cache.key(&credentials(&CACHE_CAPACITY.to_string())), now).is_some());
}

#[test]
fn expired_answers_leave_the_cache_and_a_renewed_one_stays() {
    let cache = LocalAnswers::new(Duration::from_secs(1));
    let start = Instant::now();
    let (a, b) = (cache.key(&credentials("a")), cache.key(&credentials("b")));
    cache.answers.put(a, user("alice"), start);
    cache.answers.put(a, user("alice"), start + Duration::from_millis(500));
    cache.answers.put(b, user("bob"), start + Duration::from_millis(1200));
    assert_eq!(cache.answers.count(), 2, "a's first expiry must not remove its renewed answer");
    assert!(cache.answers.get(&a, start + Duration::from_millis(1400)).is_some());
    cache.answers.put(b, user("bob"), start + Duration::from_millis(1600));
    assert_eq!(cache.answers.count(), 1, "a has expired");
}

#[test]
fn the_shared_name_of_an_answer_is_the_same_on_every_node_and_holds_no_token() {
    let digest = shared_digest(&credentials("secret-token-1"));
    assert_eq!(digest, shared_digest(&credentials("secret-token-1")), "no per-process key");
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{digest}");
    assert!(!digest.contains("secret"));
    assert_ne!(digest, shared_digest(&credentials("secret-token-2")));
    let typed = Credentials::from_request("token=secret-token-1&tokenType=jwt", None).expect("a token");
    assert_ne!(digest, shared_digest(&typed), "every parameter counts");
    let shifted = Credentials::from_request("token=secret-token-&tokenType=1local", None).expect("a token");
    assert_ne!(digest, shared_digest(&shifted), "parameters do not run into each other");
}

#[test]
fn a_stored_answer_is_checked_like_the_auth_service_s() {
    let user = stored_answer(r#"{"userId": 42, "username": "Alice", "plan": "pro"}"#).expect("usable");
    assert_eq!((user.user_id.as_str(), user.username.as_str()), ("42", "Alice"));
    assert_eq!(user.data["plan"], "pro");
    let stored = serde_json::to_string(&*user.data).expect("JSON");
    assert_eq!(stored_answer(&stored).map(|again| again.user_id), Some("42".to_string()), "it round-trips");
    assert!(stored_answer(r#"{"userId": "guest:x"}"#).is_none(), "never a guest");
    assert!(stored_answer(r#"{"username": "no id"}"#).is_none());
    assert!(stored_answer("not json").is_none());
}

#[test]
fn an_answer_from_another_node_is_kept_only_for_the_rest_of_its_life() {
    let cache = LocalAnswers::new(Duration::from_secs(60));
    let now = Instant::now();
    let key = cache.key(&credentials("a"));
    cache.answers.put_for(key, user("alice"), now, Duration::from_secs(5));
    assert!(cache.answers.get(&key, now + Duration::from_millis(4999)).is_some());
    assert!(cache.answers.get(&key, now + Duration::from_secs(5)).is_none());
    cache.answers.put_for(key, user("alice"), now, Duration::from_secs(600));
    assert!(cache.answers.get(&key, now + Duration::from_secs(60)).is_none(), "never past the TTL");
}
