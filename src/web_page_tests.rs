use actix_web::test::TestRequest;

use super::*;

#[test]
fn the_page_gets_the_configured_websocket_path_escaped() {
    assert!(INDEX_HTML.contains(WS_PATH_MARKER), "index.html lost its clawsocket-ws-path meta");
    let page = index_html("/chat\"><script>");
    assert!(page.contains(r#"name="clawsocket-ws-path" content="/chat&quot;&gt;&lt;script&gt;""#), "{page}");
    assert!(!page.contains(WS_PATH_MARKER));
}

#[test]
fn the_policy_names_the_websocket_of_the_host_asked_for() {
    let request = TestRequest::default().insert_header(("host", "chat.example.com:8443")).to_http_request();
    let policy = content_security_policy(&request);
    let policy = policy.to_str().expect("ASCII");
    assert!(policy.contains("connect-src 'self' ws://chat.example.com:8443 wss://chat.example.com:8443;"), "{policy}");
    assert!(policy.starts_with("default-src 'self'; script-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
}

#[test]
fn a_crafted_host_does_not_widen_the_policy() {
    for host in ["evil.com *", "a.com; script-src *", "x'unsafe-eval'"] {
        let request = TestRequest::default().insert_header(("host", host)).to_http_request();
        assert_eq!(websocket_sources(&request), "", "{host}");
    }
}
