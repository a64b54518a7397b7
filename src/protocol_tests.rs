use super::*;

fn decoded(frame: &str) -> Inbound {
    decode(frame.as_bytes()).unwrap_or_else(|error| panic!("{frame}: {error:?}"))
}

#[test]
fn every_field_of_the_seed_send_table_is_read() {
    let frame = r#"{"type":"chat.send","content":"Your message here","messageId":"msg_001","senderId":"user_123",
        "senderName":"John Doe","chatType":"group","groupId":"group_001","groupSubject":"Tech Discussion",
        "replyToMessageId":"msg_000","replyToBody":"Original","mediaPath":"/path/to/file.png","mediaType":"image/png",
        "mediaPaths":["a.png"],"mediaTypes":["image/png"],"customData":{"key":"value"},"threadId":"t1"}"#;
    let Inbound::Send(send) = decoded(frame) else { panic!("not a send") };
    assert_eq!(send.content, "Your message here");
    assert_eq!(send.message_id.as_deref(), Some("msg_001"));
    assert_eq!(send.chat_type, ChatType::Group);
    assert_eq!(send.group_subject.as_deref(), Some("Tech Discussion"));
    assert_eq!(send.reply_to_body.as_deref(), Some("Original"));
    assert_eq!(send.media_paths, ["a.png"]);
    assert_eq!(send.custom_data.as_ref().and_then(|data| data.get("key")), Some(&Value::from("value")));
    assert_eq!(send.thread_id.as_deref(), Some("t1"));
}

#[test]
fn control_messages_decode() {
    assert!(matches!(decoded(r#"{"type":"ping"}"#), Inbound::Ping));
    let Inbound::Join(join) = decoded(r#"{"type":"chat.join","groupId":"g","afterSeq":7}"#) else { panic!() };
    assert_eq!((join.session.group_id.as_deref(), join.after_seq), (Some("g"), 7));
    let Inbound::History(history) = decoded(r#"{"type":"chat.history","limit":5,"threadId":"t"}"#) else { panic!() };
    assert_eq!((history.limit, history.session.thread_id.as_deref()), (Some(5), Some("t")));
    let Inbound::Abort(abort) = decoded(r#"{"type":"chat.abort","messageId":"m"}"#) else { panic!() };
    assert_eq!(abort.message_id.as_deref(), Some("m"));
    assert!(matches!(decoded(r#"{"type":"chat.leave"}"#), Inbound::Leave(_)));
}

#[test]
fn errors_name_the_field_and_keep_the_message_id() {
    let error = decode(br#"{"type":"chat.send","content":"x","messageId":"m9","mediaPaths":"one"}"#).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidMessage);
    assert!(error.message.contains("mediaPaths"), "{}", error.message);
    assert_eq!(error.message_id.as_deref(), Some("m9"));
    let error = decode(br#"{"type":"chat.history","limit":0}"#).unwrap_err();
    assert!(error.message.contains("limit"));
    let error = decode(br#"{"type":"chat.join","afterSeq":-1}"#).unwrap_err();
    assert!(error.message.contains("afterSeq"), "{}", error.message);
}

#[test]
fn ids_are_bounded_and_printable() {
    let long = "x".repeat(MAX_ID_BYTES + 1);
    for (field, value) in [("threadId", long.as_str()), ("groupId", ""), ("senderId", "a\u{0}b"), ("messageId", "a\nb")]
    {
        let frame = serde_json::json!({"type": "chat.send", "content": "x", field: value}).to_string();
        let error = decode(frame.as_bytes()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidMessage);
        assert!(error.message.contains(field), "{field}: {}", error.message);
    }
}

#[test]
fn outbound_frames_use_the_wire_names() {
    let frame = Outbound::Stream { message_id: "m", content: "Hi", done: false, seq: 3, catch_up: false }.to_frame();
    let value: Value = serde_json::from_str(&frame.text()).unwrap();
    assert_eq!(value, serde_json::json!({"type":"chat.stream","messageId":"m","content":"Hi","done":false,"seq":3}));
    let frame = Outbound::error_frame(ErrorCode::SessionBusy, "busy", None);
    let value: Value = serde_json::from_str(&frame.text()).unwrap();
    assert_eq!(value, serde_json::json!({"type":"chat.error","error":"busy","code":"session_busy"}));
    for code in [ErrorCode::InvalidJson, ErrorCode::AgentTimeout, ErrorCode::MediaForbidden] {
        assert_eq!(serde_json::to_value(code).unwrap(), Value::from(code.as_str()));
    }
}
