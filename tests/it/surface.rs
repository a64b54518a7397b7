//! What operators touch: `/metrics` moves as the service works.

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
