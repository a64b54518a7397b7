//! `StoreWriter`: the few threads that read and append transcript files.
//!
//! A `SyncArbiter` of `store.threads` threads runs the blocking calls of `store.rs`
//! for every session, so actor threads never block and the file system sees a
//! bounded number of writers. (Measured: with one blocking-pool thread per finishing
//! turn, hundreds of threads creating files in one directory spent a fifth of the
//! broker's CPU contending inside ext4.) It owns no state: each message names its file.

use std::path::PathBuf;

use actix::{Actor, Handler, Message, SyncContext};

use crate::protocol::TranscriptEntry;
use crate::store::{self, StoreError};

/// Read a session's transcript and, when given, its agent's `AGENTS.md`.
#[derive(Message)]
#[rtype(result = "Result<LoadedSession, StoreError>")]
pub struct LoadSession {
    pub transcript: PathBuf,
    pub agents_md: Option<PathBuf>,
}

/// What `LoadSession` answers.
pub struct LoadedSession {
    pub transcript: Vec<TranscriptEntry>,
    pub system_prompt: Option<String>,
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
        let transcript = store::load_transcript(&message.transcript)?;
        let system_prompt = match message.agents_md {
            Some(path) => store::read_optional_text(&path)?,
            None => None,
        };
        Ok(LoadedSession { transcript, system_prompt })
    }
}

impl Handler<AppendTurn> for StoreWriter {
    type Result = Result<Vec<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: AppendTurn, _ctx: &mut Self::Context) -> Self::Result {
        store::append_entries(&message.transcript, &message.entries)?;
        Ok(message.entries)
    }
}
