//! What operators touch: `/metrics` moves as the service works.

use std::collections::HashMap;

use serde_json::json;

use crate::support::client::streams;
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::{eventually, spawn_server, TestServerHandle, WsClient};

/// The value of one series in the Prometheus text (`name{labels} value`).
async fn metric(server: &TestServerHandle, series: &str) -> f64 {
    let mut response = awc::Client::new().get(server.http_url("/metrics")).send().await.expect("/metrics answers");
    assert_eq!(response.status().as_u16(), 200);
    let body = String::from_utf8(response.body().await.expect("metrics body").to_vec()).expect("UTF-8");
    body.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{body}"))
}

#[actix_rt::test]
async fn metrics_follow_connections_turns_deltas_and_errors() {
    let server = spawn_server(&[]);
    assert_eq!(metric(&server, "clawsocket_connections_open").await, 0.0);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    let frames = client.chat("m1", "one two three").await;
    let deltas = streams(&frames).len() as f64;
    client.send_text("{not json").await;
    assert_eq!(client.recv().await["code"], "invalid_json");

    assert_eq!(metric(&server, "clawsocket_connections_open").await, 1.0);
    assert_eq!(metric(&server, r#"clawsocket_connections_total{outcome="accepted"}"#).await, 1.0);
    assert_eq!(metric(&server, "clawsocket_sessions_active").await, 1.0);
    assert_eq!(metric(&server, r#"clawsocket_turns_total{outcome="completed"}"#).await, 1.0);
    assert_eq!(metric(&server, "clawsocket_deltas_total").await, deltas);
    assert_eq!(metric(&server, "clawsocket_turn_duration_seconds_count").await, 1.0);
    assert_eq!(metric(&server, "clawsocket_first_delta_seconds_count").await, 1.0);
    assert_eq!(metric(&server, r#"clawsocket_errors_total{code="invalid_json"}"#).await, 1.0);
    assert_eq!(metric(&server, "clawsocket_dynamic_agents").await, 0.0);

    client.close().await;
    eventually("the gauge follows the close", || async { metric(&server, "clawsocket_connections_open").await == 0.0 })
        .await;
}

#[actix_rt::test]
async fn metrics_count_auth_calls_and_refusals() {
    let auth = FakeAuth::start(AuthScript::new().user("good", json!({"userId": "u1", "username": "U"})));
    let server = spawn_server(&[
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
    ]);
    WsClient::connect_welcomed(&server.ws_url("token=good")).await;
    let mut refused = WsClient::connect(&server.ws_url("token=bad")).await;
    assert_eq!(refused.recv().await["code"], "auth_failed");
    assert_eq!(metric(&server, r#"clawsocket_connections_total{outcome="auth_failed"}"#).await, 1.0);
    assert_eq!(metric(&server, r#"clawsocket_errors_total{code="auth_failed"}"#).await, 1.0);
    assert_eq!(metric(&server, "clawsocket_auth_duration_seconds_count").await, 2.0);
}

#[actix_rt::test]
async fn backend_credentials_never_appear_in_the_log_even_at_trace_level() {
    use crate::support::binary::ChildServer;
    use crate::support::client::last;
    use crate::support::fake_agent::{always, FakeAgent};

    const API_KEY: &str = "sk-never-log-this-4f1d";
    const GATEWAY_TOKEN: &str = "gw-never-log-this-9c2e";
    let agent = FakeAgent::start(always(&["fine"]));
    for (kind, url) in [("openai", agent.url_v1()), ("openclaw", agent.url())] {
        let config = format!(
            "[channels.websocket.auth]\nenabled = false\n[agent]\nkind = \"{kind}\"\nurl = \"{url}\"\napiKey = \"{API_KEY}\"\n[store]\ndir = \"{{store}}\"\n"
        );
        let server = ChildServer::start(&config, &[("OPENCLAW_GATEWAY_TOKEN", GATEWAY_TOKEN)]).await;
        let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
        assert_eq!(last(&client.chat("m1", "hello").await)["content"], "fine");
        let log = server.kill();
        assert!(log.contains("TRACE"), "the log was captured at trace:\n{log}");
        for secret in [API_KEY, GATEWAY_TOKEN] {
            assert!(!log.contains(secret), "{kind}: {secret} appears in the log:\n{log}");
        }
    }
    let authorizations: Vec<String> =
        agent.requests().iter().map(|request| request.headers["authorization"].clone()).collect();
    assert_eq!(authorizations, [format!("Bearer {API_KEY}"), format!("Bearer {GATEWAY_TOKEN}")]);
}

#[actix_rt::test]
async fn message_content_is_logged_only_at_debug() {
    use crate::support::binary::ChildServer;

    const CONTENT: &str = "a-very-private-message-7b3a";
    let config = "[channels.websocket.auth]\nenabled = false\n[agent]\nkind = \"echo\"\nechoDelayMs = 0\n[store]\ndir = \"{store}\"\n";
    let server = ChildServer::start(config, &[("RUST_LOG", "info")]).await;
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.chat("m1", CONTENT).await;
    let log = server.kill();
    assert!(log.contains("turn m1 started") && log.contains("completed in"), "turn lines at info:\n{log}");
    assert!(log.contains("connection") && log.contains("opened"), "connection lines at info:\n{log}");
    assert!(!log.contains(CONTENT), "message content at info:\n{log}");
}

#[actix_rt::test]
async fn metrics_count_rejected_handshakes_and_rate_limits() {
    let server = spawn_server(&[
        ("channels.websocket.allowedOrigins", vec!["https://chat.example.com".to_string()].into()),
        ("limits.messagesPerMinute", 1.into()),
    ]);
    let refused = WsClient::try_connect(&server.ws_url("senderId=u1"), &[("Origin", "https://evil.example")]).await;
    assert_eq!(refused.err().as_deref(), Some("403"));
    assert_eq!(metric(&server, r#"clawsocket_connections_total{outcome="rejected"}"#).await, 1.0);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=u1")).await;
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong");
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["code"], "rate_limited");
    assert_eq!(metric(&server, r#"clawsocket_errors_total{code="rate_limited"}"#).await, 1.0);
}

/// One GET of the web page's files: status, headers by name, body.
async fn page_file(
    server: &TestServerHandle,
    path: &str,
    etag: Option<&str>,
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut request = awc::Client::new().get(server.http_url(path));
    if let Some(etag) = etag {
        request = request.insert_header(("if-none-match", etag));
    }
    let mut response = request.send().await.expect("the page's route answers");
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = response.body().limit(1 << 20).await.expect("body").to_vec();
    (response.status().as_u16(), headers, body)
}

#[actix_rt::test]
async fn the_web_page_and_its_files_are_served_with_types_validators_and_a_same_origin_policy() {
    let server = spawn_server(&[]);
    let host = server.http_url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    let files = [
        ("/", "text/html; charset=utf-8", "web/index.html"),
        ("/assets/app.js", "text/javascript; charset=utf-8", "web/app.js"),
        ("/assets/app.css", "text/css; charset=utf-8", "web/app.css"),
        ("/assets/vendor/marked.js", "text/javascript; charset=utf-8", "web/vendor/marked/marked.umd.js"),
        ("/assets/vendor/purify.js", "text/javascript; charset=utf-8", "web/vendor/dompurify/purify.min.js"),
        ("/favicon.svg", "image/svg+xml", "web/favicon.svg"),
        ("/favicon.ico", "image/svg+xml", "web/favicon.svg"),
    ];
    for (path, content_type, source) in files {
        let (status, headers, body) = page_file(&server, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let policy = &headers["content-security-policy"];
        assert!(policy.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"), "{path}: {policy}");
        assert!(policy.contains(&format!("connect-src 'self' ws://{host} wss://{host};")), "{path}: {policy}");
        assert!(!policy.contains("unsafe-"), "{path}: {policy}");
        if path != "/" {
            assert!(body == std::fs::read(source).expect("the file in the repo"), "{path} is not {source}");
        }
        let (again, _, empty) = page_file(&server, path, Some(&headers["etag"])).await;
        assert_eq!((again, empty.len()), (304, 0), "{path} with its ETag");
    }
}

#[actix_rt::test]
async fn the_page_has_no_inline_script_or_style_and_names_the_configured_websocket_path() {
    let server = spawn_server(&[("channels.websocket.path", "/chat-socket".into())]);
    let (_, _, body) = page_file(&server, "/", None).await;
    let page = String::from_utf8(body).expect("UTF-8");
    assert!(page.contains(r#"<meta name="clawsocket-ws-path" content="/chat-socket">"#), "{page}");
    assert_eq!(page.matches("<script").count(), page.matches("<script src=\"/assets/").count(), "inline script");
    assert!(!page.contains("<style") && !page.contains(" style="), "inline style");
    let handler = |word: &str| word.starts_with("on") && word.contains('=');
    assert!(!page.split_whitespace().any(handler), "an inline event handler");
    let (status, _, _) = page_file(&server, "/assets/nothing.js", None).await;
    assert_eq!(status, 404);
    let head = awc::Client::new().head(server.http_url("/favicon.ico")).send().await.expect("HEAD answers");
    assert_eq!(head.status().as_u16(), 200, "HEAD of a page file");
}
