//! What a session keeps of its transcript in memory: pure data, no I/O.
//!
//! The last `window` entries (what the backend's memory and most history requests
//! need) and the message ids of the last `idempotency_window` answers (so a retried
//! `chat.send` is answered, never run again). Both are bounded; everything older stays
//! in the transcript file, read from its end when asked for.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::protocol::{ErrorCode, Role, TranscriptEntry};
use crate::transcript::Tail;

/// A session's memory of its transcript.
#[derive(Debug, Default)]
pub struct SessionMemory {
    /// The last entries, oldest first.
    recent: VecDeque<TranscriptEntry>,
    window: usize,
    /// Whether the file holds entries older than `recent`.
    more_on_disk: bool,
    answered: RecentIds,
}

impl SessionMemory {
    /// An empty memory keeping `window` entries and `idempotency_window` answer ids.
    pub fn new(window: usize, idempotency_window: usize) -> SessionMemory {
        SessionMemory { window, answered: RecentIds::new(idempotency_window), ..SessionMemory::default() }
    }

    /// The memory of a transcript whose end was just loaded.
    pub fn loaded(tail: Tail, window: usize, idempotency_window: usize) -> SessionMemory {
        let mut memory = SessionMemory::new(window, idempotency_window);
        for id in tail.answered {
            memory.answered.insert(Arc::from(id));
        }
        memory.more_on_disk = tail.more_on_disk;
        memory.recent = tail.recent.into();
        memory.trim();
        memory
    }

    /// Records a turn just stored (a regenerated answer takes the place of the one it
    /// supersedes).
    pub fn remember(&mut self, entries: Vec<TranscriptEntry>) {
        for entry in entries {
            if entry.role == Role::Assistant {
                self.answered.insert(Arc::from(entry.message_id.as_str()));
            }
            if let Some(replaced) = &entry.answer.supersedes {
                self.recent.retain(|kept| kept.role != Role::Assistant || kept.message_id != *replaced);
            }
            self.recent.push_back(entry);
        }
        self.trim();
    }

    /// What regenerating the last answer runs again (`chat.regenerate`): `requested`,
    /// when given, must name the last answer or the user message it answers.
    pub fn regeneration(&self, requested: Option<&str>) -> Result<Regeneration, Refusal> {
        let position = self
            .recent
            .iter()
            .rposition(|entry| entry.role == Role::Assistant)
            .ok_or((ErrorCode::NotFound, "this conversation has no answer to regenerate"))?;
        let answer = &self.recent[position];
        let asked = self.recent.range(..position).next_back().filter(|entry| entry.role == Role::User).ok_or((
            ErrorCode::InvalidMessage,
            "the last answer follows tool results; only an answer to a user message can be regenerated",
        ))?;
        if requested.is_some_and(|id| id != answer.message_id && id != asked.message_id) {
            return Err((ErrorCode::InvalidMessage, "only the last turn can be regenerated"));
        }
        Ok(Regeneration { asked: asked.clone(), replaces: answer.message_id.clone() })
    }

    /// The last `count` entries before the last user message (what the agent sees of
    /// the conversation when that message is regenerated).
    pub fn before_last_message(&self, count: usize) -> Vec<TranscriptEntry> {
        let end = self.recent.iter().rposition(|entry| entry.role == Role::User).unwrap_or(self.recent.len());
        let start = end.saturating_sub(count);
        self.recent.range(start..end).cloned().collect()
    }

    /// Whether nothing of the conversation is known (no entry in memory or on disk).
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty() && !self.more_on_disk
    }

    fn trim(&mut self) {
        while self.recent.len() > self.window {
            self.recent.pop_front();
            self.more_on_disk = true;
        }
    }

    /// Whether `message_id` has a stored answer (within the idempotency window).
    pub fn is_answered(&self, message_id: &str) -> bool {
        self.answered.contains(message_id)
    }

    /// The answer to `message_id`, when it is still in memory.
    pub fn recent_answer(&self, message_id: &str) -> Option<&TranscriptEntry> {
        self.recent.iter().rev().find(|entry| entry.role == Role::Assistant && entry.message_id == message_id)
    }

    /// The latest answer, if any is in memory.
    pub fn last_answer(&self) -> Option<&TranscriptEntry> {
        self.recent.iter().rev().find(|entry| entry.role == Role::Assistant)
    }

    /// The last `limit` entries when memory has them all; `None` when the file must be read.
    pub fn history(&self, limit: usize) -> Option<Vec<TranscriptEntry>> {
        if limit > self.recent.len() && self.more_on_disk {
            return None;
        }
        Some(self.last(limit))
    }

    /// The last `count` entries in memory, oldest first.
    pub fn last(&self, count: usize) -> Vec<TranscriptEntry> {
        let start = self.recent.len().saturating_sub(count);
        self.recent.range(start..).cloned().collect()
    }
}

/// Why a regeneration cannot run: the code and sentence of its `chat.error`.
pub type Refusal = (ErrorCode, &'static str);

/// The last turn, to be run again.
#[derive(Debug, Clone, PartialEq)]
pub struct Regeneration {
    /// The user message answered.
    pub asked: TranscriptEntry,
    /// The answer the new one supersedes.
    pub replaces: String,
}

/// The last `capacity` ids inserted, as a set: the oldest go first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> RecentIds {
        RecentIds { capacity, ..RecentIds::default() }
    }

    fn insert(&mut self, id: Arc<str>) {
        if self.capacity == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
}

#[cfg(test)]
#[path = "session_memory_tests.rs"]
mod tests;
