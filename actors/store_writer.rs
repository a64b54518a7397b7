//! `StoreWriter`: the few threads that read and append transcript files.
//!
//! A `SyncArbiter` of `store.threads` threads runs the blocking calls of `store.rs`
//! for every session, so actor threads never block and the file system sees a
//! bounded number of writers. (Measured: with one blocking-pool thread per finishing
//! turn, hundreds of threads creating files in one directory spent a fifth of the
//! broker's CPU contending inside ext4.) It owns no state: each message names its file.

use std::collections::HashSet;
use std::path::PathBuf;

use actix::{Actor, Handler, Message, SyncContext};

use crate::protocol::TranscriptEntry;
use crate::store::{self, StoreError};

/// Read a session's transcript (keeping its last `keep` entries) and, when given,
/// its agent's `AGENTS.md`.
#[derive(Message)]
#[rtype(result = "Result<LoadedSession, StoreError>")]
pub struct LoadSession {
    pub transcript: PathBuf,
    pub agents_md: Option<PathBuf>,
    pub keep: usize,
}

/// What `LoadSession` answers.
pub struct LoadedSession {
    /// The last `keep` entries, oldest first.
    pub recent: Vec<TranscriptEntry>,
    /// How many entries the file holds.
    pub stored: usize,
    /// The message id of every stored answer (for safe retries).
    pub answered: HashSet<String>,
    pub system_prompt: Option<String>,
}

/// The last `limit` entries of a transcript, oldest first (a history request reaching
/// further back than the session keeps in memory).
#[derive(Message)]
#[rtype(result = "Result<Vec<TranscriptEntry>, StoreError>")]
pub struct ReadTail {
    pub transcript: PathBuf,
    pub limit: usize,
}

/// The stored answer to `message_id` (a retry of a turn older than the memory window).
#[derive(Message)]
#[rtype(result = "Result<Option<TranscriptEntry>, StoreError>")]
pub struct FindAnswer {
    pub transcript: PathBuf,
    pub message_id: String,
}

/// Append one completed turn and fsync it; answers the entries back.
#[derive(Message)]
#[rtype(result = "Result<Vec<TranscriptEntry>, StoreError>")]
pub struct AppendTurn {
    pub transcript: PathBuf,
    pub entries: Vec<TranscriptEntry>,
}

/// One store thread.
pub struct StoreWriter;

impl Actor for StoreWriter {
    type Context = SyncContext<Self>;
}

impl Handler<LoadSession> for StoreWriter {
    type Result = Result<LoadedSession, StoreError>;

    fn handle(&mut self, message: LoadSession, _ctx: &mut Self::Context) -> Self::Result {
        let mut transcript = store::load_transcript(&message.transcript)?;
        let stored = transcript.len();
        let answered =
            transcript.iter().filter(|entry| entry.role == "assistant").map(|entry| entry.message_id.clone()).collect();
        let recent = transcript.split_off(stored.saturating_sub(message.keep));
        let system_prompt = match message.agents_md {
            Some(path) => store::read_optional_text(&path)?,
            None => None,
        };
        Ok(LoadedSession { recent, stored, answered, system_prompt })
    }
}

impl Handler<ReadTail> for StoreWriter {
    type Result = Result<Vec<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: ReadTail, _ctx: &mut Self::Context) -> Self::Result {
        let mut transcript = store::load_transcript(&message.transcript)?;
        Ok(transcript.split_off(transcript.len().saturating_sub(message.limit)))
    }
}

impl Handler<FindAnswer> for StoreWriter {
    type Result = Result<Option<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: FindAnswer, _ctx: &mut Self::Context) -> Self::Result {
        let transcript = store::load_transcript(&message.transcript)?;
        Ok(transcript
            .into_iter()
            .rev()
            .find(|entry| entry.role == "assistant" && entry.message_id == message.message_id))
    }
}

impl Handler<AppendTurn> for StoreWriter {
    type Result = Result<Vec<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: AppendTurn, _ctx: &mut Self::Context) -> Self::Result {
        store::append_entries(&message.transcript, &message.entries)?;
        Ok(message.entries)
    }
}
