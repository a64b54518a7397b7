use super::*;
use crate::protocol::Outbound;

fn other_frame(content: &str, seq: u64) -> Frame {
    Outbound::Reasoning { message_id: "m1", content, seq }.to_frame()
}

#[test]
fn tool_call_fragments_join_per_index_and_are_announced_once() {
    let mut answer = TurnAnswer::default();
    answer.push_tool_fragment(0, Some("call_a".into()), Some("weather".into()), "{\"ci");
    answer.push_tool_fragment(1, Some("call_b".into()), Some("time".into()), "{}");
    answer.push_tool_fragment(0, None, None, "ty\":\"Oslo\"}");
    let calls = answer.take_unannounced_tool_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()),
        ("call_a", "weather", "{\"city\":\"Oslo\"}")
    );
    assert_eq!(calls[1].name, "time");
    assert!(answer.take_unannounced_tool_calls().is_empty(), "announced once");
    let finished = answer.finish();
    assert_eq!(finished.details.tool_calls.len(), 2);
}

#[test]
fn seq_is_shared_and_replay_gives_every_kind_in_order() {
    let mut answer = TurnAnswer::default();
    answer.push_reasoning("think");
    answer.push_frame(other_frame("think", 1));
    assert_eq!(answer.push_text("Hel"), 2);
    assert_eq!(answer.push_text("lo"), 3);
    answer.push_frame(other_frame("more", 4));
    assert_eq!(answer.push_text("!"), 5);
    let replayed: Vec<String> = answer
        .events_after(1)
        .into_iter()
        .map(|event| match event {
            Replayed::Text(text, seq) => format!("text {text} {seq}"),
            Replayed::Frame(frame) => frame.text().to_string(),
        })
        .collect();
    assert_eq!(replayed[0], "text Hel 2");
    assert_eq!(replayed[1], "text lo 3");
    assert!(replayed[2].contains("\"more\""));
    assert_eq!(replayed[3], "text ! 5");
    assert!(!answer.only_text_after(3) && answer.only_text_after(4));
    assert_eq!(answer.text_end_at(4), 5);
    let finished = answer.finish();
    assert_eq!((finished.text.as_str(), finished.details.reasoning.as_deref()), ("Hello!", Some("think")));
}
