//! What a session keeps of its transcript in memory: pure data, no I/O.
//!
//! The last `window` entries (what the backend's memory and most history requests
//! need) and the message ids of the last `idempotency_window` answers (so a retried
//! `chat.send` is answered, never run again). Both are bounded; everything older stays
//! in the transcript file, read from its end when asked for.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::protocol::{Role, TranscriptEntry};
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

    /// Records a turn just stored.
    pub fn remember(&mut self, entries: Vec<TranscriptEntry>) {
        for entry in entries {
            if entry.role == Role::Assistant {
                self.answered.insert(Arc::from(entry.message_id.as_str()));
            }
            self.recent.push_back(entry);
        }
        self.trim();
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
