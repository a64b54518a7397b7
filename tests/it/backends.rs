//! The real backends against a fake OpenAI-compatible server streaming real SSE:
//! relay order, memory, the OpenClaw request shape, and every failure mode ending
//! the turn (never the session).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::client::{last, streamed_text, streams};
use crate::support::fake_agent::{always, answer_with, cut_every, sse_body, sse_deltas_only, Chunk, FakeAgent, Reply};
use crate::support::{spawn_server, TestServerHandle, WsClient};

fn openai(agent: &FakeAgent, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("agent.kind", "openai".into()),
        ("agent.url", agent.url_v1().into()),
        ("agent.apiKey", "sk-test-key".into()),
        ("agent.model", "test-model".into()),
        ("agent.systemPrompt", "Be brief.".into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn openclaw(agent: &FakeAgent, extra: &[(&'static str, SettingValue)]) -> TestServerHandle {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openclaw".into()), ("agent.url", agent.url().into()), ("agent.token", "gw-secret".into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn contents(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|message| (message["role"].as_str().unwrap_or("").to_string(), message["content"].to_string()))
        .collect()
}

#[actix_rt::test]
async fn deltas_cut_anywhere_on_the_wire_arrive_whole_and_in_order() {
    const DELTAS: [&str; 6] = ["Hel", "lo, ", "wörld", " 日本語", "\r\n", "!"];
    let body = sse_body(&DELTAS).iter().flat_map(|byte| [*byte]).collect::<Vec<_>>();
    let crlf = String::from_utf8(body).unwrap().replace("\n\n", "\r\n\r\n").into_bytes();
    let agent = FakeAgent::start(Arc::new(move |_, _| Reply::Stream(cut_every(&crlf, 7))));
    let server = openai(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let frames = client.chat("m1", "hi").await;
    let deltas: Vec<&str> = streams(&frames).iter().map(|frame| frame["content"].as_str().unwrap()).collect();
    assert_eq!(deltas, DELTAS, "each delta relayed once, in order; the role-only chunk is not text");
    let seqs: Vec<u64> = streams(&frames).iter().map(|frame| frame["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(last(&frames)["content"], DELTAS.concat());
    assert_eq!(streamed_text(&frames), DELTAS.concat());
}

#[actix_rt::test]
async fn openai_sends_the_system_prompt_history_and_new_turn() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        answer_with(if index == 0 { &["Nice to meet you, John."] } else { &["Your name is John."] })
    }));
    let server = openai(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    client.chat("m1", "My name is John").await;
    let frames = client.chat("m2", "What is my name?").await;
    assert_eq!(last(&frames)["content"], "Your name is John.");
    let requests = agent.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1];
    assert_eq!(second.path, "/v1/chat/completions");
    assert_eq!(second.headers["authorization"], "Bearer sk-test-key");
    assert_eq!(second.body["model"], "test-model");
    assert_eq!(second.body["stream"], true);
    assert_eq!(
        contents(&second.body["messages"]),
        [
            ("system".into(), "\"Be brief.\"".into()),
            ("user".into(), "\"My name is John\"".into()),
            ("assistant".into(), "\"Nice to meet you, John.\"".into()),
            ("user".into(), "\"What is my name?\"".into()),
        ]
    );
    // The sender is the messages' name (agent.senderStyle auto = name for openai).
    let names: Vec<&Value> = second.body["messages"].as_array().unwrap().iter().map(|m| &m["name"]).collect();
    assert_eq!(names, [&Value::Null, &json!("John"), &Value::Null, &json!("John")]);
}

#[actix_rt::test]
async fn the_envelope_style_tells_the_sender_in_the_text() {
    let agent = FakeAgent::start(always(&["ok"]));
    let server = openai(&agent, &[("agent.senderStyle", "envelope".into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    client.chat("m1", "hello").await;
    let user = agent.requests()[0].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((user["content"].as_str(), user.get("name")), (Some("John: hello"), None));
}

#[actix_rt::test]
async fn openai_history_is_capped_at_max_history() {
    let agent = FakeAgent::start(always(&["ok"]));
    let server = openai(&agent, &[("agent.maxHistory", 2.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    for turn in 0..3 {
        client.chat(&format!("m{turn}"), &format!("turn {turn}")).await;
    }
    let messages = agent.requests()[2].body["messages"].as_array().unwrap().len();
    assert_eq!(messages, 1 + 2 + 1, "system + the last 2 stored messages + the new turn");
}

#[actix_rt::test]
async fn openclaw_gets_its_headers_model_and_only_the_new_turn() {
    let agent = FakeAgent::start(always(&["Hi", " there"]));
    let server = openclaw(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    client.chat("m1", "first").await;
    let frames = client.chat("m2", "second").await;
    assert_eq!(last(&frames)["content"], "Hi there");
    let request = &agent.requests()[1];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], "Bearer gw-secret");
    assert_eq!(request.headers["x-openclaw-agent-id"], "main");
    assert_eq!(request.headers["x-openclaw-session-key"], "agent:main:websocket:direct:user1");
    assert_eq!(request.body["model"], "openclaw:main");
    assert_eq!(request.body["user"], "agent:main:websocket:direct:user1");
    assert_eq!(request.body["stream"], true);
    assert_eq!(contents(&request.body["messages"]), [("user".into(), "\"John: second\"".into())]);
}

#[actix_rt::test]
async fn a_gateway_that_does_not_know_the_agent_gives_agent_error_with_the_status() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Status(
                400,
                json!({"error": {"message": "Unknown agent: main", "type": "invalid_request_error"}}).to_string(),
            )
        } else {
            answer_with(&["back"])
        }
    }));
    let server = openclaw(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let error = last(&client.chat("m1", "hello").await).clone();
    assert_eq!(error["type"], "chat.error");
    assert_eq!(error["code"], "agent_error");
    let sentence = error["error"].as_str().unwrap();
    assert_eq!(sentence, "the agent backend answered HTTP 400", "a fixed sentence, no backend body");
    assert_eq!(last(&client.chat("m2", "again").await)["content"], "back");
}

/// Runs one failing turn then one working turn; returns the failure frame.
async fn fail_then_work(server: &TestServerHandle) -> Value {
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let failed = last(&client.chat("bad", "first").await).clone();
    assert_eq!(failed["type"], "chat.error", "{failed}");
    assert_eq!(failed["messageId"], "bad");
    let worked = client.chat("good", "second").await;
    assert_eq!(last(&worked)["type"], "chat.response", "the session keeps working: {worked:?}");
    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    let stored: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    assert!(!stored.contains(&"bad"), "a failed turn is not stored as if complete: {history}");
    failed
}

#[actix_rt::test]
async fn an_http_error_status_is_agent_error_with_the_status_only() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Status(500, json!({"error": {"message": "model overloaded"}}).to_string())
        } else {
            answer_with(&["fine"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[])).await;
    assert_eq!(failed["code"], "agent_error");
    let sentence = failed["error"].as_str().unwrap();
    assert_eq!(sentence, "the agent backend answered HTTP 500", "the backend's words stay in the log");
}

#[actix_rt::test]
async fn no_first_byte_in_time_is_agent_timeout() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Late(Duration::from_secs(3), Box::new(answer_with(&["too late"])))
        } else {
            answer_with(&["on time"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[("agent.timeoutMs", 200.into())])).await;
    assert_eq!(failed["code"], "agent_timeout");
}

#[actix_rt::test]
async fn a_turn_over_the_turn_timeout_is_agent_timeout() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            let body = sse_deltas_only(&["partial"]);
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, body), Chunk::Bytes(Duration::from_secs(5), sse_body(&[]))])
        } else {
            answer_with(&["quick"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[("limits.turnTimeoutMs", 300.into())])).await;
    assert_eq!(failed["code"], "agent_timeout");
}

#[actix_rt::test]
async fn a_stream_that_ends_early_is_agent_error() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, sse_deltas_only(&["half an", " answer"]))])
        } else {
            answer_with(&["whole"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[])).await;
    assert_eq!(failed["code"], "agent_error");
    assert_eq!(failed["error"], "the agent's answer was cut off", "{failed}");
}

#[actix_rt::test]
async fn a_connection_dropped_mid_stream_is_agent_error() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Stream(vec![
                Chunk::Bytes(Duration::ZERO, sse_deltas_only(&["half"])),
                Chunk::Bytes(Duration::from_millis(100), sse_deltas_only(&[" more"])),
                Chunk::Abort,
            ])
        } else {
            answer_with(&["whole"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[])).await;
    assert_eq!(failed["code"], "agent_error");
}

#[actix_rt::test]
async fn done_without_a_finish_reason_is_a_cut_off_answer_and_not_stored() {
    // llama.cpp's server cuts a running stream this way when a second request comes.
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            let body = [sse_deltas_only(&["half an", " answer"]), b"data: [DONE]\n\n".to_vec()].concat();
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, body)])
        } else {
            answer_with(&["whole"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[])).await;
    assert_eq!(
        (failed["code"].as_str(), failed["error"].as_str()),
        (Some("agent_error"), Some("the agent's answer was cut off"))
    );
}

#[actix_rt::test]
async fn an_empty_answer_is_cut_off_even_with_a_finish_reason() {
    // OpenClaw 2026.2.26 answers a failed model with 200 and [DONE] alone.
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, b"data: [DONE]\n\n".to_vec())])
        } else {
            answer_with(&["whole"])
        }
    }));
    let failed = fail_then_work(&openclaw(&agent, &[])).await;
    assert_eq!(failed["code"], "agent_error");
    let agent =
        FakeAgent::start(Arc::new(|index, _| if index == 0 { answer_with(&[]) } else { answer_with(&["whole"]) }));
    let failed = fail_then_work(&openai(&agent, &[])).await;
    assert_eq!(failed["code"], "agent_error", "finish_reason but no content: {failed}");
}

#[actix_rt::test]
async fn a_body_that_just_ends_is_cut_off_even_when_finish_reasons_are_not_required() {
    let agent = FakeAgent::start(Arc::new(|index, _| {
        if index == 0 {
            Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, sse_deltas_only(&["half an", " answer"]))])
        } else {
            answer_with(&["whole"])
        }
    }));
    let failed = fail_then_work(&openai(&agent, &[("agent.requireFinishReason", false.into())])).await;
    assert_eq!(failed["error"], "the agent's answer was cut off", "no [DONE] and no finish_reason: {failed}");
}

#[actix_rt::test]
async fn done_without_a_finish_reason_completes_when_the_server_is_known_to_omit_it() {
    let body = [sse_deltas_only(&["OpenClaw ", "2026.2"]), b"data: [DONE]\n\n".to_vec()].concat();
    let agent = FakeAgent::start(Arc::new(move |_, _| Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, body.clone())])));
    let server = openclaw(&agent, &[("agent.requireFinishReason", false.into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    assert_eq!(last(&client.chat("m1", "hi").await)["content"], "OpenClaw 2026.2");
}

#[actix_rt::test]
async fn an_unreachable_backend_is_agent_unavailable_until_it_comes_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = spawn_server(&[("agent.kind", "openai".into()), ("agent.url", format!("http://{addr}/v1").into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let failed = last(&client.chat("bad", "anyone?").await).clone();
    assert_eq!(failed["code"], "agent_unavailable");
    let _agent = FakeAgent::start_on(TcpListener::bind(addr).expect("the port is free again"), always(&["here now"]));
    assert_eq!(last(&client.chat("good", "now?").await)["content"], "here now");
}

#[actix_rt::test]
async fn a_plain_json_answer_works_too() {
    let agent = FakeAgent::start(Arc::new(|_, _| {
        Reply::Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Not streamed."}}]}))
    }));
    let server = openai(&agent, &[]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    let frames = client.chat("m1", "hi").await;
    assert_eq!(streamed_text(&frames), "Not streamed.");
    assert_eq!(last(&frames)["content"], "Not streamed.");
}

#[actix_rt::test]
async fn media_quotes_and_custom_data_reach_the_agent() {
    let agent = FakeAgent::start(always(&["seen"]));
    let server = openai(&agent, &[("channels.websocket.media.roots", vec!["/srv/media".to_string()].into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1&senderName=John")).await;
    client
        .send_json(json!({"type": "chat.send", "messageId": "m1", "content": "What is this?", "replyToBody": "earlier",
            "mediaPath": "https://cdn.test/cat.png", "mediaType": "image/png",
            "mediaPaths": ["/srv/media/report.pdf"], "mediaTypes": ["application/pdf"],
            "customData": {"priority": "high", "source": "api"}}))
        .await;
    assert_eq!(last(&client.turn("m1").await)["type"], "chat.response");
    let messages = agent.requests()[0].body["messages"].as_array().unwrap().clone();
    let user = messages.last().unwrap();
    assert_eq!(
        user["content"][0]["text"],
        "[Replying to: \"earlier\"]\nWhat is this?\n[media: /srv/media/report.pdf (application/pdf)]"
    );
    assert_eq!(user["content"][1]["image_url"]["url"], "https://cdn.test/cat.png");
    let context = messages[messages.len() - 2]["content"].as_str().unwrap();
    assert!(context.contains("\"priority\":\"high\"") && context.contains("\"source\":\"api\""), "{context}");
}

#[actix_rt::test]
async fn a_local_media_path_outside_the_roots_is_refused_before_the_agent() {
    let agent = FakeAgent::start(always(&["never"]));
    let server = openai(&agent, &[("channels.websocket.media.roots", vec!["/srv/media".to_string()].into())]);
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("senderId=user1")).await;
    client.send_json(json!({"type": "chat.send", "messageId": "m1", "content": "x", "mediaPath": "/etc/passwd"})).await;
    let refused = client.recv().await;
    assert_eq!((refused["code"].as_str(), refused["messageId"].as_str()), (Some("media_forbidden"), Some("m1")));
    assert_eq!(last(&client.chat("m2", "fine").await)["content"], "never");
    assert_eq!(agent.requests().len(), 1, "only the allowed turn reached the agent");
}

#[actix_rt::test]
async fn readyz_follows_the_backend() {
    let agent = FakeAgent::start(always(&["x"]));
    let server = openai(&agent, &[]);
    let http = awc::Client::new();
    let ready = http.get(server.http_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    agent.stop().await;
    let mut not_ready = http.get(server.http_url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status().as_u16(), 503);
    let reason = not_ready.body().await.unwrap();
    assert!(String::from_utf8_lossy(&reason).contains("unreachable"));
}
