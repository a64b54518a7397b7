use super::*;
use crate::protocol::{ErrorCode, Outbound, StreamFrames};

fn typing(message_id: &str) -> Frame {
    Outbound::Typing { message_id, session_key: "agent:main:websocket:direct:alice" }.to_frame()
}

#[test]
fn a_turn_is_followed_from_typing_to_its_answer() {
    let mut turns = FollowedTurns::new(1 << 20);
    turns.observe(&typing("m1"), "a 1");
    let stream = StreamFrames::new("m1");
    for seq in 1..=3 {
        turns.observe(&stream.frame(&format!("d{seq} \"seq\":9"), seq, false), "a 1");
    }
    let turn = turns.in_flight().expect("in flight");
    assert_eq!((&*turn.message_id, turn.lease.as_str()), ("m1", "a 1"));
    let replayed: Vec<String> = turns.replay(1).iter().map(|frame| frame.text().to_string()).collect();
    assert_eq!(replayed.len(), 3, "typing, then seq 2 and 3: {replayed:?}");
    assert!(replayed[0].starts_with(r#"{"type":"chat.typing""#));
    assert!(replayed[1].contains("d2") && replayed[2].contains("d3"));
    // Another turn's answer does not end it; its own error does.
    turns.observe(&Outbound::error_frame(ErrorCode::Aborted, "x", Some("other")), "a 1");
    assert!(turns.in_flight().is_some());
    turns.observe(&Outbound::error_frame(ErrorCode::Aborted, "x", Some("m1")), "a 1");
    assert!(turns.in_flight().is_none());
    assert!(turns.replay(0).is_empty());
}

#[test]
fn a_turn_keeps_at_most_its_byte_bound() {
    let mut turns = FollowedTurns::new(300);
    turns.observe(&typing("m1"), "a 1");
    let stream = StreamFrames::new("m1");
    for seq in 1..=100 {
        turns.observe(&stream.frame("0123456789", seq, false), "a 1");
    }
    let kept: usize = turns.replay(0).iter().map(Frame::byte_len).sum();
    assert!(kept <= 300, "kept {kept} bytes");
}

#[test]
fn joined_frames_split_back_without_empty_pieces() {
    let joined = bytes::Bytes::from_static(b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
    let frames: Vec<String> = split_frames(joined).iter().map(|frame| frame.text().to_string()).collect();
    assert_eq!(frames, vec![r#"{"a":1}"#.to_string(), r#"{"b":"x\ny"}"#.to_string()]);
}

#[test]
fn a_new_turn_while_another_is_in_flight_hands_the_old_one_back() {
    let mut turns = FollowedTurns::new(1 << 20);
    assert!(turns.observe(&typing("m1"), "a 1").is_none());
    assert!(turns.observe(&typing("m1"), "a 1").is_none(), "the same turn again replaces nothing");
    let lost = turns.observe(&typing("m2"), "b 2").expect("m1 never ended");
    assert_eq!((&*lost.message_id, lost.lease.as_str()), ("m1", "a 1"));
    assert_eq!(&*turns.in_flight().unwrap().message_id, "m2");
}
