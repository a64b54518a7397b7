//! Backend failures that must say so, from the careless operator's or the hostile
//! backend's side: answers cut off or without end, backends silent after their head,
//! connections closed under a kept-alive pool, error bodies echoing credentials, and a
//! readiness probe that checks the credentials it will use.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::binary::{openai_config, ChildServer};
use crate::support::client::last;
use crate::support::fake_agent::{answer_with, sse_body, sse_deltas_only, Chunk, FakeAgent, Reply};
use crate::support::{serve_on_loopback, spawn_server, TestServerHandle, WsClient};

fn openai_at(url: String, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("agent.kind", "openai".into()),
        ("agent.url", url.into()),
        ("agent.apiKey", "sk-test-key".into()),
        ("agent.systemPrompt", "".into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

/// One failing turn, then a working one in the same session; the failure frame.
async fn fail_then_work(server: &TestServerHandle) -> Value {
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let failed = last(&client.chat("bad", "first").await).clone();
    assert_eq!(failed["type"], "chat.error", "{failed}");
    let worked = last(&client.chat("good", "second").await).clone();
    assert_eq!(worked["type"], "chat.response", "the session keeps working: {worked}");
    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    assert!(!history.to_string().contains("\"bad\""), "a failed turn is not stored: {history}");
    failed
}

#[actix_rt::test]
async fn a_backend_that_sends_its_head_then_nothing_ends_at_the_idle_timeout() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            // The head goes out at once; the first byte of the body comes a minute later.
            Reply::Stream(vec![Chunk::Bytes(Duration::from_secs(60), sse_body(&["too late"]))])
        } else {
            answer_with(&["on time"])
        }
    }));
    let extra = [("agent.idleTimeoutMs", 300.into()), ("limits.turnTimeoutMs", 120_000.into())];
    let failed = fail_then_work(&openai_at(agent.url_v1(), &extra)).await;
    assert_eq!(failed["code"], "agent_timeout");
    assert_eq!(failed["error"], "the agent did not answer in time (agent.idleTimeoutMs)");
}

#[actix_rt::test]
async fn a_backend_that_goes_quiet_mid_answer_ends_at_the_idle_timeout() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            let late = Chunk::Bytes(Duration::from_secs(60), sse_body(&[]));
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, sse_deltas_only(&["half"])), late])
        } else {
            answer_with(&["whole"])
        }
    }));
    let extra = [("agent.idleTimeoutMs", 300.into()), ("limits.turnTimeoutMs", 120_000.into())];
    assert_eq!(fail_then_work(&openai_at(agent.url_v1(), &extra)).await["code"], "agent_timeout");
}

#[actix_rt::test]
async fn an_answer_past_max_answer_bytes_ends_and_is_not_stored() {
    let big = "x".repeat(16 * 1024);
    let agent = FakeAgent::start(Arc::new(move |index, _| {
        if index == 0 {
            let deltas: Vec<&str> = (0..200).map(|_| big.as_str()).collect();
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, sse_body(&deltas))])
        } else {
            answer_with(&["small"])
        }
    }));
    let failed = fail_then_work(&openai_at(agent.url_v1(), &[("limits.maxAnswerBytes", (256 * 1024).into())])).await;
    assert_eq!(failed["code"], "agent_error");
    assert_eq!(failed["error"], "answer too large: the agent's answer passed limits.maxAnswerBytes (262144 bytes)");
}

#[actix_rt::test]
async fn an_agent_streaming_without_end_does_not_grow_the_servers_memory() {
    // 48 MiB of answer in 64 KiB deltas; the server keeps at most limits.maxAnswerBytes (1 MiB).
    let delta = "y".repeat(64 * 1024);
    let agent = FakeAgent::start(Arc::new(move |_, _| {
        let chunks = (0..768).map(|_| Chunk::Bytes(Duration::ZERO, sse_deltas_only(&[delta.as_str()]))).collect();
        Reply::Stream(chunks)
    }));
    let config = openai_config(&agent.url_v1(), "", "[limits]\nmaxAnswerBytes = 1048576\n");
    let child = ChildServer::start(&config, &[]).await;
    let (mut client, _) = WsClient::connect_welcomed(&child.ws_url("senderId=u")).await;
    let before = child.peak_rss_bytes();
    let failed = last(&client.chat("m1", "talk forever").await).clone();
    let after = child.peak_rss_bytes();
    assert_eq!(failed["code"], "agent_error", "{failed}");
    let grown = after.saturating_sub(before);
    assert!(grown < 24 * 1024 * 1024, "peak RSS grew {grown} bytes for a 48 MiB stream cut at 1 MiB");
}

/// A raw HTTP/1.1 server that answers one request per connection (the first with a
/// 500, later ones with a streamed answer) as a keep-alive response, and then closes
/// the connection when a second request comes on it, without answering: what a
/// client sees when it reuses a connection the server closed (llama.cpp's server
/// closes its connection after a failed call; the client reused it 1 ms later).
fn closing_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let _ = read_request(&mut stream);
            let index = count.fetch_add(1, Ordering::SeqCst);
            let (status, kind, body) = if index == 0 {
                ("500 Internal Server Error", "application/json", br#"{"error":{"message":"boom"}}"#.to_vec())
            } else {
                ("200 OK", "text/event-stream", sse_body(&["fresh ", "answer"]))
            };
            let head = format!("HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            let _ = stream.flush();
            let _ = read_request(&mut stream); // a reuse of the connection: closed unanswered
            drop(stream);
        }
    });
    (url, served)
}

fn read_request(stream: &mut std::net::TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|value| value.parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

#[actix_rt::test]
async fn a_request_on_a_connection_the_server_closed_is_sent_again_on_a_fresh_one() {
    let (url, served) = closing_server();
    let server = openai_at(url, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let failed = last(&client.chat("m1", "first").await).clone();
    assert_eq!(failed["error"], "the agent backend answered HTTP 500", "{failed}");
    let answer = last(&client.chat("m2", "second").await).clone();
    assert_eq!(answer["content"], "fresh answer", "the turn after a failed call works: {answer}");
    assert!(served.load(Ordering::SeqCst) >= 2);
}

#[actix_rt::test]
async fn a_backend_error_body_never_reaches_a_client_or_the_log() {
    let echoed =
        r#"{"error":{"message":"invalid request: header Authorization: Bearer sk-live-4f9a8b7c6d5e was rejected"}}"#;
    let agent = FakeAgent::start(Arc::new(move |_, _| Reply::Status(400, echoed.to_string())));
    let config = openai_config(&agent.url_v1(), "apiKey = \"sk-live-4f9a8b7c6d5e\"\n", "");
    let child = ChildServer::start(&config, &[]).await;
    let (mut member, _) = WsClient::connect_welcomed(&child.ws_url("senderId=alice")).await;
    let (mut other, _) = WsClient::connect_welcomed(&child.ws_url("senderId=bob")).await;
    let group =
        |id: &str| json!({"type": "chat.send", "content": "hi", "chatType": "group", "groupId": "g", "messageId": id});
    other.send_json(json!({"type": "chat.join", "groupId": "g"})).await;
    assert_eq!(other.recv().await["type"], "chat.joined");
    member.send_json(group("m1")).await;
    let failed = last(&member.turn("m1").await).clone();
    let seen_by_other = last(&other.turn("m1").await).clone();
    for frame in [&failed, &seen_by_other] {
        assert_eq!(frame["error"], "the agent backend answered HTTP 400", "{frame}");
        assert!(!frame.to_string().contains("4f9a8b7c6d5e"), "{frame}");
    }
    let log = child.kill();
    assert!(log.contains("the agent backend answered HTTP 400"), "the failure is logged: {log}");
    assert!(!log.contains("4f9a8b7c6d5e"), "the key stays out of the log:\n{log}");
}

/// A backend whose models endpoint takes only `Bearer right-key`.
fn strict_backend() -> String {
    let (address, _handle) = serve_on_loopback(|app| {
        app.route(
            "/v1/models",
            web::get().to(|request: HttpRequest| async move {
                let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
                match authorization {
                    Some("Bearer right-key") => HttpResponse::Ok().json(json!({"data": []})),
                    _ => HttpResponse::Unauthorized().json(json!({"error": "bad key"})),
                }
            }),
        );
    });
    format!("http://{address}/v1")
}

#[actix_rt::test]
async fn readyz_checks_the_configured_credentials_and_never_shows_url_passwords() {
    let url = strict_backend();
    let http = awc::Client::new();
    let wrong = openai_at(url.clone(), &[("agent.apiKey", "wrong-key".into())]);
    let mut answer = http.get(wrong.http_url("/readyz")).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let reason = String::from_utf8_lossy(&answer.body().await.unwrap()).to_string();
    assert!(reason.contains("refused the configured credentials (HTTP 401)"), "{reason}");
    let right = openai_at(url.clone(), &[("agent.apiKey", "right-key".into())]);
    assert_eq!(http.get(right.http_url("/readyz")).send().await.unwrap().status().as_u16(), 200);
    let with_password = url.replace("http://", "http://admin:pw0rd-secret@");
    let shown = openai_at(with_password, &[("agent.apiKey", "wrong-key".into())]);
    let mut answer = http.get(shown.http_url("/readyz")).send().await.unwrap();
    let reason = String::from_utf8_lossy(&answer.body().await.unwrap()).to_string();
    assert!(!reason.contains("pw0rd-secret") && reason.contains("***@"), "{reason}");
}
