//! What a node that does not run a session's turns knows of them (cluster mode):
//! the turn in flight, read from the session's event stream, kept so that a
//! connection joining on this node resumes it with `afterSeq`.
//!
//! The owner publishes the frames its subscribers get, already serialized; this
//! tells them apart by their first bytes (every frame starts `{"type":"chat.…"`, as
//! `protocol.rs` writes them) and parses only the rare ones it must (a turn's first
//! and last frame), never a delta. Nothing here does I/O.

use std::sync::Arc;

use bytestring::ByteString;
use serde::Deserialize;

use crate::protocol::Frame;

const TYPING: &[u8] = br#"{"type":"chat.typing""#;
const STREAM: &[u8] = br#"{"type":"chat.stream""#;
const REASONING: &[u8] = br#"{"type":"chat.reasoning""#;
const TOOL: &[u8] = br#"{"type":"chat.tool""#;
const RESPONSE: &[u8] = br#"{"type":"chat.response""#;
const ERROR: &[u8] = br#"{"type":"chat.error""#;

/// The turn in flight, as the stream told it.
#[derive(Debug, Clone)]
pub struct FollowedTurn {
    pub message_id: Arc<str>,
    /// The owner's lease value when it started the turn: if the lease is no longer
    /// that, the owner is gone and the turn will not end by itself.
    pub lease: String,
    /// Its `chat.typing` frame, then its `chat.stream`, `chat.reasoning` and
    /// `chat.tool` frames so far (one `seq` counter for all three).
    frames: Vec<Frame>,
    bytes: usize,
}

/// A session's turns as a follower sees them.
#[derive(Debug, Default)]
pub struct FollowedTurns {
    turn: Option<FollowedTurn>,
    /// Most bytes of a turn's frames kept for late joiners; past it the rest is not
    /// kept (the owner ends such a turn at `limits.maxAnswerBytes` anyway).
    max_bytes: usize,
}

/// Just the message id of a frame.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIdOf {
    message_id: Option<String>,
}

impl FollowedTurns {
    pub fn new(max_bytes: usize) -> FollowedTurns {
        FollowedTurns { turn: None, max_bytes }
    }

    /// Takes in one frame the owner published under `lease`. Answers the turn it
    /// replaces if that never ended: a new turn began while another was in flight
    /// (the end of that one was lost with the node that ran it).
    pub fn observe(&mut self, frame: &Frame, lease: &str) -> Option<FollowedTurn> {
        let text = frame.text();
        let bytes = text.as_bytes();
        if bytes.starts_with(TYPING) {
            let message_id = message_id_of(&text)?;
            let size = frame.byte_len();
            let started = FollowedTurn {
                message_id: Arc::from(message_id),
                lease: lease.to_string(),
                frames: vec![frame.clone()],
                bytes: size,
            };
            let replaced = self.turn.replace(started);
            return replaced.filter(|old| self.turn.as_ref().is_some_and(|new| new.message_id != old.message_id));
        } else if [STREAM, REASONING, TOOL].iter().any(|kind| bytes.starts_with(kind)) {
            if let Some(turn) = &mut self.turn {
                if turn.bytes + frame.byte_len() <= self.max_bytes {
                    turn.bytes += frame.byte_len();
                    turn.frames.push(frame.clone());
                }
            }
        } else if bytes.starts_with(RESPONSE) || bytes.starts_with(ERROR) {
            let ends =
                self.turn.as_ref().is_some_and(|turn| message_id_of(&text).as_deref() == Some(&*turn.message_id));
            if ends {
                self.turn = None;
            }
        }
        None
    }

    /// The turn in flight, if any.
    pub fn in_flight(&self) -> Option<&FollowedTurn> {
        self.turn.as_ref()
    }

    /// Forgets the turn in flight (its owner is gone; it was ended with an error).
    pub fn forget(&mut self) -> Option<FollowedTurn> {
        self.turn.take()
    }

    /// What a joiner that saw events up to `after_seq` needs: the turn's
    /// `chat.typing`, then every event frame after that seq.
    pub fn replay(&self, after_seq: u64) -> Vec<Frame> {
        let Some(turn) = &self.turn else { return Vec::new() };
        let mut frames = turn.frames.iter();
        let typing = frames.next().cloned();
        typing
            .into_iter()
            .chain(frames.filter(|frame| seq_of(frame).is_none_or(|seq| seq > after_seq)).cloned())
            .collect()
    }
}

/// Whether a stream event's frames begin a turn (its `chat.typing`).
pub fn starts_turn(frames: &[u8]) -> bool {
    frames.starts_with(TYPING)
}

/// Splits a stream event's newline-joined frames back into frames (no copy).
pub fn split_frames(joined: bytes::Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = joined;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', &rest).unwrap_or(rest.len());
        let piece = rest.split_to(end);
        if !rest.is_empty() {
            let _newline = rest.split_to(1);
        }
        match ByteString::try_from(piece) {
            Ok(text) if !text.is_empty() => frames.push(Frame::relayed(text)),
            Ok(_) => {}
            Err(_) => log::warn!("cluster: an event frame is not UTF-8; skipped"),
        }
    }
    frames
}

/// The `messageId` of a frame's JSON.
fn message_id_of(text: &str) -> Option<String> {
    serde_json::from_str::<MessageIdOf>(text).ok().and_then(|parsed| parsed.message_id)
}

/// The `seq` a `chat.stream` frame ends with (`…,"seq":N}` or `…,"seq":N,"catchUp":true}`).
/// A quote inside the content is escaped, so the last `"seq":` is the field.
fn seq_of(frame: &Frame) -> Option<u64> {
    let text = frame.text();
    let at = memchr::memmem::rfind(text.as_bytes(), br#""seq":"#)? + 6;
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
#[path = "followed_turn_tests.rs"]
mod tests;
