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

/// Property tests over `decode` (the short run of the fuzzing; `fuzz/` holds the long
/// one): whatever arrives, decoding returns, and a refusal carries a client code, a
/// bounded sentence and only a usable `messageId`.
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const TYPES: &[&str] =
        &["chat.send", "chat.abort", "chat.history", "chat.join", "chat.leave", "ping", "chat.x", ""];
    const FIELDS: &[&str] = &[
        "content",
        "messageId",
        "senderId",
        "senderName",
        "chatType",
        "groupId",
        "groupSubject",
        "threadId",
        "replyToMessageId",
        "replyToBody",
        "mediaPath",
        "mediaPaths",
        "mediaTypes",
        "customData",
        "limit",
        "afterSeq",
        "type",
    ];

    /// Any JSON value: scalars at the edges of their types, text with control
    /// characters, nested arrays and objects whose keys are mostly protocol fields.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON has no NaN or infinity", |number| number.is_finite()).prop_map(Value::from),
            "\\PC{0,24}".prop_map(Value::from),
            "[\\x00-\\x1f ]{0,4}".prop_map(Value::from),
            prop::sample::select(TYPES).prop_map(Value::from),
            prop::sample::select(&["group", "direct"][..]).prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![3 => prop::sample::select(FIELDS).prop_map(String::from), 1 => "\\PC{0,8}"]
    }

    /// An object with a `type` (mostly a real one) and protocol fields of any shape.
    fn message_shaped() -> impl Strategy<Value = Value> {
        let fields = prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..8);
        (prop::sample::select(TYPES), fields).prop_map(|(kind, fields)| {
            let mut object: Map<String, Value> =
                fields.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
            object.insert("type".into(), Value::from(kind));
            Value::Object(object)
        })
    }

    /// What every decoded frame or refusal must satisfy.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match decode(bytes) {
            Ok(inbound) => check_accepted(&inbound),
            Err(error) => {
                let client_codes = [ErrorCode::InvalidJson, ErrorCode::InvalidMessage, ErrorCode::UnsupportedType];
                prop_assert!(client_codes.contains(&error.code), "{error:?}");
                prop_assert!(!error.message.is_empty());
                prop_assert!(
                    error.message.len() <= MAX_ERROR_TEXT_BYTES + '…'.len_utf8(),
                    "{} bytes",
                    error.message.len()
                );
                if let Some(id) = &error.message_id {
                    prop_assert!(is_valid_id(id));
                }
                Ok(())
            }
        }
    }

    /// What `decode` promises about a message it accepts.
    fn check_accepted(inbound: &Inbound) -> Result<(), TestCaseError> {
        let ids_ok = |ids: &[Option<&String>]| ids.iter().flatten().all(|id| is_valid_id(id));
        match inbound {
            Inbound::Send(send) => {
                prop_assert!(!send.content.trim().is_empty());
                prop_assert!(ids_ok(&[send.message_id.as_ref(), send.sender_id.as_ref(), send.group_id.as_ref()]));
                prop_assert!(ids_ok(&[send.thread_id.as_ref(), send.reply_to_message_id.as_ref()]));
                prop_assert!(send.chat_type != ChatType::Group || send.group_id.is_some());
                prop_assert!(send.media_paths.len() <= 32);
            }
            Inbound::History(history) => {
                prop_assert!(history.limit.is_none_or(|limit| (1..=MAX_HISTORY_LIMIT).contains(&limit)));
            }
            Inbound::Abort(abort) => prop_assert!(ids_ok(&[abort.message_id.as_ref()])),
            Inbound::ToolResult(result) => {
                prop_assert!(is_valid_id(&result.tool_call_id));
                prop_assert!(ids_ok(&[result.message_id.as_ref()]));
            }
            Inbound::Threads(threads) => {
                prop_assert!(threads.limit.is_none_or(|limit| (1..=MAX_THREADS_LIMIT).contains(&limit)));
                prop_assert!(ids_ok(&[threads.group_id.as_ref(), threads.sender_id.as_ref()]));
            }
            Inbound::Title(title) => prop_assert!(crate::conversations::clean_title(&title.title).is_some()),
            Inbound::Regenerate(regenerate) => {
                prop_assert!(ids_ok(&[regenerate.message_id.as_ref(), regenerate.new_message_id.as_ref()]));
            }
            Inbound::Delete(selector) => prop_assert!(ids_ok(&[selector.thread_id.as_ref()])),
            Inbound::Join(_) | Inbound::Leave(_) | Inbound::Ping => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&bytes)?;
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            check(value.to_string().as_bytes())?;
        }

        #[test]
        fn message_shaped_objects_are_valid_or_a_coded_error(value in message_shaped()) {
            check(value.to_string().as_bytes())?;
        }

        #[test]
        fn long_values_are_not_echoed_back_whole(long in "\\PC{300,2000}", field in prop::sample::select(FIELDS)) {
            let frame = json!({"type": "chat.send", "content": "x", "mediaPaths": long.clone(), field: [long]});
            check(frame.to_string().as_bytes())?;
        }
    }

    #[test]
    fn nesting_past_the_recursion_limit_is_invalid_json() {
        for frame in ["[".repeat(100_000), format!("{}{}", "[".repeat(5000), "]".repeat(5000))] {
            let error = decode(frame.as_bytes()).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidJson);
        }
    }
}

#[test]
fn prebuilt_stream_frames_equal_the_serialized_outbound() {
    let writer = StreamFrames::new("msg \"1\"");
    for (content, seq, catch_up) in
        [("Hi", 1, false), ("quote \" and \\ and \n and 日本 and \u{1}", 42, false), ("", 7, true)]
    {
        let expected = Outbound::Stream { message_id: "msg \"1\"", content, done: false, seq, catch_up }.to_frame();
        assert_eq!(writer.frame(content, seq, catch_up), expected);
    }
}

proptest::proptest! {
    /// For any id and content, the prebuilt frame is the serde frame, byte for byte.
    #[test]
    fn prebuilt_stream_frames_match_serde_for_any_text(id in "\\PC{0,40}", content in "(?s).{0,200}", seq in 0u64..u64::MAX) {
        let expected = Outbound::Stream { message_id: &id, content: &content, done: false, seq, catch_up: false }.to_frame();
        proptest::prop_assert_eq!(StreamFrames::new(&id).frame(&content, seq, false), expected);
    }
}

#[test]
fn a_tool_result_needs_its_call_id() {
    let Inbound::ToolResult(result) =
        decoded(r#"{"type":"chat.toolResult","toolCallId":"call_1","content":"42","threadId":"t"}"#)
    else {
        panic!("a tool result")
    };
    assert_eq!((result.tool_call_id.as_str(), result.content.as_str()), ("call_1", "42"));
    assert_eq!(result.session.thread_id.as_deref(), Some("t"));
    let missing = decode(br#"{"type":"chat.toolResult","content":"42"}"#).unwrap_err();
    assert_eq!(missing.code, ErrorCode::InvalidMessage);
}
