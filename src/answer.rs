//! One turn's answer as it streams in (SPEC §10): its text, reasoning, tool calls
//! (joined from their fragments), usage and finish reason, and what each `seq` was,
//! so that a late joiner is replayed every kind in order. Owned by the turn's
//! `AgentBridge`; no I/O.
//!
//! `seq` is one counter per turn shared by `chat.stream`, `chat.reasoning` and
//! `chat.tool`. A text delta is remembered as where it ends in the text (the hot
//! path keeps no frame); any other event as the frame it was sent as.

use crate::backend::Usage;
use crate::protocol::{AnswerDetails, Attachment, Frame, ToolCall};

/// What one `seq` was.
#[derive(Debug, Clone)]
enum SeqEntry {
    /// A text delta, ending at this byte of the text.
    Text { end: usize },
    /// Any other event, as it was sent.
    Frame(Frame),
}

/// A tool call being assembled from its fragments.
#[derive(Debug, Clone, Default)]
struct ToolCallParts {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// The answer so far.
#[derive(Debug, Default)]
pub struct TurnAnswer {
    text: String,
    reasoning: String,
    tool_calls: Vec<ToolCallParts>,
    /// How many of `tool_calls` were sent as `chat.tool` frames.
    announced: usize,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    attachments: Vec<Attachment>,
    entries: Vec<SeqEntry>,
}

/// A finished answer: its text and everything else it carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinishedAnswer {
    pub text: String,
    pub details: AnswerDetails,
}

impl TurnAnswer {
    /// The last `seq` given (0 before the first event).
    pub fn seq(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Bytes the answer holds (what `limits.maxAnswerBytes` bounds).
    pub fn bytes(&self) -> usize {
        self.text.len()
            + self.reasoning.len()
            + self.tool_calls.iter().map(|call| call.arguments.len() + call.name.len()).sum::<usize>()
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds a text delta; answers its seq.
    pub fn push_text(&mut self, delta: &str) -> u64 {
        self.text.push_str(delta);
        self.entries.push(SeqEntry::Text { end: self.text.len() });
        self.seq()
    }

    /// Adds a reasoning delta (kept for the answer whether or not it is sent).
    pub fn push_reasoning(&mut self, delta: &str) {
        self.reasoning.push_str(delta);
    }

    /// Records `frame`, sent as seq `self.seq() + 1`.
    pub fn push_frame(&mut self, frame: Frame) {
        self.entries.push(SeqEntry::Frame(frame));
    }

    /// Joins a tool-call fragment to the call of its index.
    pub fn push_tool_fragment(&mut self, index: u32, id: Option<String>, name: Option<String>, arguments: &str) {
        let position = match self.tool_calls.iter().position(|call| call.index == index) {
            Some(position) => position,
            None => {
                self.tool_calls.push(ToolCallParts { index, ..ToolCallParts::default() });
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[position];
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(name) = name.filter(|name| !name.is_empty()) {
            call.name = name;
        }
        call.arguments.push_str(arguments);
    }

    /// Records an attachment (its `chat.media` frame is recorded with `push_frame`).
    pub fn push_attachment(&mut self, attachment: Attachment) {
        self.attachments.push(attachment);
    }

    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn set_finish_reason(&mut self, reason: String) {
        self.finish_reason = Some(reason);
    }

    /// The tool calls not announced yet (now complete: the model finished), marked
    /// announced. A call without an id gets one from its index.
    pub fn take_unannounced_tool_calls(&mut self) -> Vec<ToolCall> {
        let calls = self.tool_calls[self.announced..].iter().map(tool_call).collect();
        self.announced = self.tool_calls.len();
        calls
    }

    /// The whole answer.
    pub fn finish(self) -> FinishedAnswer {
        let details = AnswerDetails {
            reasoning: Some(self.reasoning).filter(|reasoning| !reasoning.is_empty()),
            tool_calls: self.tool_calls.iter().map(tool_call).collect(),
            finish_reason: self.finish_reason,
            usage: self.usage,
            tool_call_id: None,
            attachments: self.attachments,
            media_ids: Vec::new(),
            supersedes: None,
        };
        FinishedAnswer { text: self.text, details }
    }

    /// Whether every event after `after_seq` is a text delta.
    pub fn only_text_after(&self, after_seq: u64) -> bool {
        self.entries.iter().skip(after_seq as usize).all(|entry| matches!(entry, SeqEntry::Text { .. }))
    }

    /// Where the text stood after event `seq`.
    pub fn text_end_at(&self, seq: u64) -> usize {
        self.entries
            .iter()
            .take(seq as usize)
            .rev()
            .find_map(|entry| match entry {
                SeqEntry::Text { end } => Some(*end),
                SeqEntry::Frame(_) => None,
            })
            .unwrap_or(0)
    }

    /// Every event after `after_seq`, in order: text deltas as (text, seq) for the
    /// caller to frame, other events as their frames.
    pub fn events_after(&self, after_seq: u64) -> Vec<Replayed<'_>> {
        let mut start = self.text_end_at(after_seq);
        let mut replayed = Vec::new();
        for (index, entry) in self.entries.iter().enumerate().skip(after_seq as usize) {
            let seq = index as u64 + 1;
            match entry {
                SeqEntry::Text { end } => {
                    replayed.push(Replayed::Text(&self.text[start..*end], seq));
                    start = *end;
                }
                SeqEntry::Frame(frame) => replayed.push(Replayed::Frame(frame.clone())),
            }
        }
        replayed
    }
}

/// One replayed event.
pub enum Replayed<'a> {
    Text(&'a str, u64),
    Frame(Frame),
}

fn tool_call(parts: &ToolCallParts) -> ToolCall {
    let id = if parts.id.is_empty() { format!("call_{}", parts.index) } else { parts.id.clone() };
    ToolCall { id, name: parts.name.clone(), arguments: parts.arguments.clone() }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
