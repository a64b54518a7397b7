//! The agent's whole answer (SPEC §10): reasoning, tool calls (their arguments in
//! fragments), usage and the finish reason, streamed by the fake agent as real
//! OpenAI-compatible servers do, reach clients as `chat.reasoning`, `chat.tool` and
//! `chat.response` fields, share one `seq` with `chat.stream` (so resume replays them
//! all in order, on one node and across nodes), are stored and shown by
//! `chat.history`; `channels.websocket.events = []` gives the original protocol.

use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::SettingValue;
use serde_json::{json, Value};

use crate::support::client::last;
use crate::support::cluster::ready_nodes;
use crate::support::fake_agent::{Chunk, FakeAgent, Reply};
use crate::support::redis::RedisServer;
use crate::support::server::{spawn_server, TestServer};
use crate::support::WsClient;

/// One SSE event per delta object, then a chunk with `finish_reason`, then (when
/// given) a usage chunk without choices, then `[DONE]`; each event its own write,
/// `pause` apart.
fn events_reply(deltas: &[Value], finish: &str, usage: Option<Value>, pause: Duration) -> Reply {
    let mut events: Vec<Value> =
        deltas.iter().map(|delta| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})).collect();
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    if let Some(usage) = usage {
        events.push(json!({"choices": [], "usage": usage}));
    }
    let mut chunks: Vec<Chunk> =
        events.iter().map(|event| Chunk::Bytes(pause, format!("data: {event}\n\n").into_bytes())).collect();
    chunks.push(Chunk::Bytes(pause, b"data: [DONE]\n\n".to_vec()));
    Reply::Stream(chunks)
}

/// An agent that always answers with `reply`.
fn agent_answering(reply: Reply) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| reply.clone()))
}

fn node_for(agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn reasoning_then_text() -> Vec<Value> {
    vec![
        json!({"role": "assistant", "content": ""}),
        json!({"reasoning_content": "The user "}),
        json!({"reasoning_content": "greets me."}),
        json!({"content": "Hello"}),
        json!({"content": " there"}),
    ]
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|frame| frame["type"] == kind).collect()
}

/// The `seq` of every event frame, in the order they came.
fn event_seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|frame| frame["seq"].as_u64()).collect()
}

#[actix_rt::test]
async fn reasoning_streams_before_the_text_with_one_seq_and_comes_back_whole() {
    let agent = agent_answering(events_reply(&reasoning_then_text(), "stop", None, Duration::from_millis(1)));
    let server = node_for(&agent, &[]);
    let (mut client, welcome) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    assert_eq!(welcome["protocol"], 2, "{welcome}");
    assert_eq!(
        welcome["features"],
        json!([
            "reasoning",
            "tool",
            "usage",
            "threads",
            "groups",
            "resume",
            "conversations",
            "media",
            "quotas",
            "regenerate"
        ])
    );

    let frames = client.chat("m1", "hi").await;
    let reasoning: Vec<&str> =
        of_type(&frames, "chat.reasoning").iter().map(|f| f["content"].as_str().unwrap()).collect();
    assert_eq!(reasoning, ["The user ", "greets me."]);
    assert_eq!(event_seqs(&frames), [1, 2, 3, 4], "one counter for reasoning and text: {frames:?}");
    let answer = last(&frames);
    assert_eq!(answer["content"], "Hello there");
    assert_eq!(answer["reasoning"], "The user greets me.");
    assert_eq!(answer["finishReason"], "stop");
    assert!(answer.get("toolCalls").is_none(), "{answer}");
    // The fake reports no usage: an estimate (30 characters, about four a token), said so.
    assert_eq!(
        (answer["usage"]["estimated"].as_bool(), answer["usage"]["completionTokens"].as_u64()),
        (Some(true), Some(8))
    );

    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    assert_eq!(history["messages"][1]["reasoning"], "The user greets me.", "{history}");
    assert_eq!(history["messages"][1]["finishReason"], "stop");
}

#[actix_rt::test]
async fn two_tool_calls_in_fragments_become_two_whole_calls() {
    let deltas = vec![
        json!({"role": "assistant"}),
        json!({"content": "Let me check."}),
        json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
        json!({"tool_calls": [{"index": 1, "id": "call_t", "type": "function", "function": {"name": "time", "arguments": "{\"tz\""}}]}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
        json!({"tool_calls": [{"index": 1, "function": {"arguments": ":\"CET\"}"}}]}),
    ];
    let usage = json!({"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43});
    let agent = agent_answering(events_reply(&deltas, "tool_calls", Some(usage), Duration::from_millis(1)));
    let server = node_for(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;

    let frames = client.chat("m1", "weather and time?").await;
    let tools = of_type(&frames, "chat.tool");
    assert_eq!(tools.len(), 2, "{frames:?}");
    let seen: Vec<(&str, &str, &str, &str)> = tools
        .iter()
        .map(|t| {
            let field = |name: &str| t[name].as_str().unwrap();
            (field("toolCallId"), field("name"), field("phase"), field("arguments"))
        })
        .collect();
    assert_eq!(
        seen,
        [("call_w", "weather", "call", "{\"city\":\"Oslo\"}"), ("call_t", "time", "call", "{\"tz\":\"CET\"}")]
    );
    assert_eq!(event_seqs(&frames), [1, 2, 3], "the text, then each call: {frames:?}");
    let answer = last(&frames);
    assert_eq!(answer["finishReason"], "tool_calls");
    assert_eq!(answer["toolCalls"][1], json!({"id": "call_t", "name": "time", "arguments": "{\"tz\":\"CET\"}"}));
    assert_eq!(answer["usage"], json!({"promptTokens": 31, "completionTokens": 12, "totalTokens": 43}));
}

#[actix_rt::test]
async fn an_answer_cut_by_the_token_limit_says_so() {
    let deltas = vec![json!({"content": "Once upon a"})];
    let agent = agent_answering(events_reply(&deltas, "length", None, Duration::ZERO));
    let server = node_for(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let answer = last(&client.chat("m1", "a story").await).clone();
    assert_eq!((answer["content"].as_str(), answer["finishReason"].as_str()), (Some("Once upon a"), Some("length")));
}

#[actix_rt::test]
async fn with_no_events_the_original_protocol_is_all_a_client_sees() {
    let deltas = reasoning_then_text();
    let agent = agent_answering(events_reply(&deltas, "stop", Some(json!({"total_tokens": 5})), Duration::ZERO));
    let server = node_for(&agent, &[("channels.websocket.events", SettingValue::from(Vec::<String>::new()))]);
    let (mut client, welcome) = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await;
    assert!(welcome.get("protocol").is_none() && welcome.get("features").is_none(), "{welcome}");
    let frames = client.chat("m1", "hi").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["chat.typing", "chat.stream", "chat.stream", "chat.response"]);
    let answer = last(&frames).as_object().unwrap();
    let mut fields: Vec<&str> = answer.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["agentId", "content", "done", "messageId", "sessionKey", "type"]);
}

/// A reply of `count` reasoning deltas, then `count` text deltas, `pause` apart.
fn long_thought(count: usize, pause: Duration) -> Reply {
    let reasoning = (1..=count).map(|n| json!({"reasoning_content": format!("r{n} ")}));
    let text = (1..=count).map(|n| json!({"content": format!("t{n} ")}));
    events_reply(&reasoning.chain(text).collect::<Vec<_>>(), "stop", None, pause)
}

/// Reads until the first event frame with `seq >= until`.
async fn read_until_seq(client: &mut WsClient, until: u64) {
    loop {
        let frame = client.recv().await;
        if frame["seq"].as_u64().is_some_and(|seq| seq >= until) {
            return;
        }
    }
}

#[actix_rt::test]
async fn a_late_joiner_is_replayed_reasoning_and_text_in_seq_order() {
    let agent = agent_answering(long_thought(15, Duration::from_millis(15)));
    let server = node_for(&agent, &[]);
    let mut phone = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    phone.send_json(json!({"type": "chat.send", "content": "think", "messageId": "m1"})).await;
    read_until_seq(&mut phone, 20).await;
    let mut laptop = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert_eq!(laptop.join(json!({"afterSeq": 10})).await["inFlight"], "m1");
    let rest = laptop.turn("m1").await;
    assert_eq!(event_seqs(&rest), (11..=30).collect::<Vec<_>>(), "every kind after seq 10, once, in order");
    assert_eq!(of_type(&rest, "chat.reasoning").len(), 5);
}

#[actix_rt::test]
async fn reasoning_crosses_nodes_and_resumes_there() {
    let redis = RedisServer::start();
    let agent = agent_answering(long_thought(15, Duration::from_millis(15)));
    let openai = [("agent.kind", SettingValue::from("openai")), ("agent.url", agent.url_v1().into())];
    let nodes = ready_nodes(&redis, &["a", "b"], &openai).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    on_b.join(json!({})).await;
    on_a.send_json(json!({"type": "chat.send", "content": "think", "messageId": "m1"})).await;
    read_until_seq(&mut on_a, 20).await;
    let mut late = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    assert_eq!(late.join(json!({"afterSeq": 10})).await["inFlight"], "m1");

    let whole = on_b.turn("m1").await;
    assert_eq!(event_seqs(&whole), (1..=30).collect::<Vec<_>>());
    assert_eq!(last(&whole)["reasoning"], (1..=15).map(|n| format!("r{n} ")).collect::<String>());
    let rest = late.turn("m1").await;
    assert_eq!(event_seqs(&rest), (11..=30).collect::<Vec<_>>(), "replayed on the other node in seq order");
}

/// The fake's 400 with OpenAI's error shape.
fn bad_request(message: &str) -> Reply {
    Reply::Status(400, json!({"error": {"message": message, "type": "invalid_request_error"}}).to_string())
}

fn hello() -> Reply {
    events_reply(&[json!({"content": "hello"})], "stop", None, Duration::ZERO)
}

#[actix_rt::test]
async fn a_server_that_refuses_stream_options_is_asked_without_them_from_then_on() {
    let agent = FakeAgent::start(Arc::new(|_, request| {
        if request.body.get("stream_options").is_some() {
            bad_request("Unrecognized request argument supplied: stream_options")
        } else {
            hello()
        }
    }));
    let server = node_for(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert_eq!(last(&client.chat("m1", "one").await)["content"], "hello");
    assert_eq!(last(&client.chat("m2", "two").await)["content"], "hello");
    let asked: Vec<bool> = agent.requests().iter().map(|r| r.body.get("stream_options").is_some()).collect();
    assert_eq!(asked, [true, false, false], "refused once, asked without, remembered");
}

#[actix_rt::test]
async fn a_context_window_error_is_retried_once_with_half_the_history() {
    let agent = FakeAgent::start(Arc::new(|_, request| {
        let messages = request.body["messages"].as_array().map_or(0, Vec::len);
        if messages > 6 {
            bad_request("This model's maximum context length is 2048 tokens; your messages exceed it")
        } else {
            hello()
        }
    }));
    let server = node_for(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    for turn in 1..=4 {
        let answer = last(&client.chat(&format!("m{turn}"), "again").await).clone();
        assert_eq!(answer["type"], "chat.response", "turn {turn}: {answer}");
    }
    let sizes: Vec<usize> = agent.requests().iter().map(|r| r.body["messages"].as_array().unwrap().len()).collect();
    // system + history + user: 2, 4, 6, then 8 refused and 5 (half of the 6 stored) taken.
    assert_eq!(sizes, [2, 4, 6, 8, 5]);
}

#[actix_rt::test]
async fn history_is_trimmed_to_its_byte_budget_and_max_tokens_is_sent() {
    let long = "x".repeat(5000);
    let agent = FakeAgent::start(Arc::new(move |index, _| match index {
        0 => events_reply(&[json!({"content": long.clone()})], "length", None, Duration::ZERO),
        _ => hello(),
    }));
    let limits = [("agent.maxHistoryBytes", SettingValue::from(4096)), ("agent.maxTokens", SettingValue::from(256))];
    let server = node_for(&agent, &limits);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    assert_eq!(last(&client.chat("m1", "a long one").await)["finishReason"], "length");
    client.chat("m2", "and now?").await;
    let second = &agent.requests()[1].body;
    assert_eq!(second["max_tokens"], 256);
    let contents: Vec<&str> =
        second["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(contents.iter().all(|text| text.len() < 5000), "the 5,000-byte answer was left out: {contents:?}");
}

/// An agent that asks for two client-side tools, then answers once it has their results.
fn tool_using_agent() -> FakeAgent {
    FakeAgent::start(Arc::new(|index, _| match index {
        0 => events_reply(
            &[
                json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_t", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}),
            ],
            "tool_calls",
            None,
            Duration::ZERO,
        ),
        _ => events_reply(&[json!({"content": "Sunny, and it is noon."})], "stop", None, Duration::ZERO),
    }))
}

fn tool_result(id: &str, content: &str) -> Value {
    json!({"type": "chat.toolResult", "toolCallId": id, "content": content})
}

#[actix_rt::test]
async fn client_side_tools_round_trip_through_chat_tool_result() {
    let agent = tool_using_agent();
    let server = node_for(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;

    let mut early = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    early.send_json(tool_result("call_w", "sunny")).await;
    assert_eq!(early.recv().await["code"], "invalid_message", "nothing waits for a result yet");

    let asked = last(&client.chat("m1", "weather and time in Oslo?").await).clone();
    assert_eq!(asked["finishReason"], "tool_calls");
    client.send_json(tool_result("call_x", "??")).await;
    let unknown = client.recv().await;
    assert_eq!((&unknown["type"], &unknown["code"]), (&json!("chat.error"), &json!("invalid_message")), "{unknown}");

    client.send_json(tool_result("call_w", "sunny, 21 C")).await;
    let mut last_result = tool_result("call_t", "12:00");
    last_result["messageId"] = json!("m1-tools");
    client.send_json(last_result).await;
    let continued = client.turn("m1-tools").await;
    assert_eq!(last(&continued)["content"], "Sunny, and it is noon.", "{continued:?}");
    assert_eq!(agent.requests().len(), 2, "one continuation, once every call had its result");
    let mut retried = tool_result("call_t", "12:00");
    retried["messageId"] = json!("m1-tools");
    client.send_json(retried).await;
    let again = client.recv().await;
    assert_eq!((&again["type"], &again["content"]), (&json!("chat.response"), &json!("Sunny, and it is noon.")));
    assert_eq!(agent.requests().len(), 2, "a retried last result is answered from the record, not run again");

    let messages = agent.requests()[1].body["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"], "no new user message: {messages:?}");
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!((&messages[3]["tool_call_id"], &messages[3]["content"]), (&json!("call_w"), &json!("sunny, 21 C")));

    client.send_json(json!({"type": "chat.history"})).await;
    let history = client.recv().await;
    let stored: Vec<(&str, &str)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["messageId"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stored,
        [("user", "m1"), ("assistant", "m1"), ("tool", "m1-tools"), ("tool", "m1-tools"), ("assistant", "m1-tools")]
    );
    assert_eq!(history["messages"][3]["toolCallId"], "call_t");
}

fn openclaw_node(agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openclaw".into()), ("agent.url", agent.url().into()), ("agent.token", "gw".into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn answer_with_attachment() -> Reply {
    let deltas = [
        json!({"content": "Here is the chart:\nMED"}),
        json!({"content": "IA: https://cdn.test/chart.png\nAnything else?"}),
    ];
    events_reply(&deltas, "stop", None, Duration::from_millis(1))
}

#[actix_rt::test]
async fn an_openclaw_media_line_becomes_a_chat_media_frame_not_text() {
    let agent = agent_answering(answer_with_attachment());
    let server = openclaw_node(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let frames = client.chat("m1", "a chart please").await;
    let media = of_type(&frames, "chat.media");
    assert_eq!(media.len(), 1, "{frames:?}");
    assert_eq!(
        (&media[0]["url"], &media[0]["mediaType"], &media[0]["name"]),
        (&json!("https://cdn.test/chart.png"), &json!("image/png"), &json!("chart.png"))
    );
    let answer = last(&frames);
    assert_eq!(answer["content"], "Here is the chart:\nAnything else?");
    assert_eq!(answer["attachments"][0]["url"], "https://cdn.test/chart.png");
    let streamed: String = of_type(&frames, "chat.stream").iter().map(|f| f["content"].as_str().unwrap()).collect();
    assert!(!streamed.contains("MEDIA"), "{streamed}");
    assert_eq!(event_seqs(&frames).len(), of_type(&frames, "chat.stream").len() + 1, "the attachment has a seq too");
}

#[actix_rt::test]
async fn with_no_events_a_media_line_stays_text_as_the_original_plugin_showed_it() {
    let agent = agent_answering(answer_with_attachment());
    let server = openclaw_node(&agent, &[("channels.websocket.events", SettingValue::from(Vec::<String>::new()))]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let frames = client.chat("m1", "a chart please").await;
    assert!(of_type(&frames, "chat.media").is_empty());
    assert_eq!(last(&frames)["content"], "Here is the chart:\nMEDIA: https://cdn.test/chart.png\nAnything else?");
}

#[actix_rt::test]
async fn tool_results_sent_on_another_node_reach_the_owner_and_the_continuation_reaches_both() {
    let redis = RedisServer::start();
    let agent = tool_using_agent();
    let openai = [("agent.kind", SettingValue::from("openai")), ("agent.url", agent.url_v1().into())];
    let nodes = ready_nodes(&redis, &["a", "b"], &openai).await;
    let mut on_a = WsClient::connect_welcomed(&nodes[0].ws_url("senderId=alice")).await.0;
    let mut on_b = WsClient::connect_welcomed(&nodes[1].ws_url("senderId=alice")).await.0;
    on_b.join(json!({})).await;
    assert_eq!(last(&on_a.chat("m1", "weather and time?").await)["finishReason"], "tool_calls");
    on_b.turn("m1").await;

    // Both results from the other node: forwarded to the owner, which continues.
    on_b.send_json(tool_result("call_w", "sunny")).await;
    let mut last_result = tool_result("call_t", "noon");
    last_result["messageId"] = json!("m1-tools");
    on_b.send_json(last_result).await;
    for client in [&mut on_a, &mut on_b] {
        let continued = client.turn("m1-tools").await;
        assert_eq!(last(&continued)["content"], "Sunny, and it is noon.", "{continued:?}");
    }
    assert_eq!(agent.requests().len(), 2);
    let roles: Vec<String> = agent.requests()[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
}
