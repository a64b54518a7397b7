//! `StoreWriter`: the few threads that read and append transcript files.
//!
//! [`StoreThreads`] runs `store.threads` of them, each its own one-thread
//! `SyncArbiter`, so actor threads never block and the file system sees a bounded
//! number of writers. (Measured: with one blocking-pool thread per finishing turn,
//! hundreds of threads creating files in one directory spent a fifth of the broker's
//! CPU contending inside ext4.) A file always goes to the same thread, chosen by a
//! hash of its path: every operation on one session's transcript runs in the order it
//! was sent, never beside another (SPEC §6). A writer owns no state: each message
//! names its file.
//!
//! [`TranscriptStore`] is the seam a session sees: its transcript as a file on these
//! threads (one node alone), or as a Redis list written under the session's lease
//! (cluster mode). Both keep the promise of SPEC §6: the answer goes out only after
//! the append is durable (fsync; Redis's `appendfsync`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use futures_util::future::{BoxFuture, FutureExt};

use crate::cluster::Cluster;
use crate::identity::SessionKey;
use crate::protocol::TranscriptEntry;
use crate::store::{self, StoreError};
use crate::transcript;

/// The most of an agent's `AGENTS.md` read as its system prompt, bytes.
const MAX_AGENTS_MD_BYTES: u64 = 256 * 1024;

/// The store threads, one file to one thread.
#[derive(Clone)]
pub struct StoreThreads {
    writers: Vec<Addr<StoreWriter>>,
}

impl StoreThreads {
    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> StoreThreads {
        StoreThreads { writers: (0..count.max(1)).map(|_| SyncArbiter::start(1, || StoreWriter)).collect() }
    }

    /// The thread that runs every operation on `file`.
    pub fn for_file(&self, file: &Path) -> Addr<StoreWriter> {
        let mut hasher = DefaultHasher::new();
        file.hash(&mut hasher);
        self.writers[(hasher.finish() % self.writers.len() as u64) as usize].clone()
    }
}

/// Read the end of a session's transcript (cutting a torn last line: the one repair,
/// made only here) and, when given, its agent's `AGENTS.md`.
#[derive(Message)]
#[rtype(result = "Result<LoadedSession, StoreError>")]
pub struct LoadSession {
    pub transcript: PathBuf,
    pub agents_md: Option<PathBuf>,
    /// How many of the last entries to keep in memory.
    pub keep: usize,
    /// How many of the last answers' message ids to remember (`store.idempotencyWindow`).
    pub answers: usize,
}

/// What `LoadSession` answers.
pub struct LoadedSession {
    pub tail: transcript::Tail,
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

/// Where a session's transcript lives: the one interface a session uses for it.
#[derive(Clone)]
pub enum TranscriptStore {
    /// A JSONL file, every operation on its store thread.
    File { writer: Addr<StoreWriter>, path: PathBuf },
    /// A Redis list shared by every node (cluster mode).
    Redis { cluster: Arc<Cluster>, key: SessionKey },
}

impl TranscriptStore {
    /// The end of the transcript and the agent's `AGENTS.md` (when given).
    pub fn load(
        &self,
        agents_md: Option<PathBuf>,
        keep: usize,
        answers: usize,
    ) -> BoxFuture<'static, Result<LoadedSession, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path } => {
                let load = writer.send(LoadSession { transcript: path, agents_md, keep, answers });
                async move { load.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key } => async move {
                let tail = cluster.load_tail(&key, keep, answers).await?;
                let system_prompt = match agents_md {
                    Some(path) => store::off_thread(move || Ok(read_agents_md(path))).await?,
                    None => None,
                };
                Ok(LoadedSession { tail, system_prompt })
            }
            .boxed(),
        }
    }

    /// The last `limit` entries, oldest first.
    pub fn read_tail(&self, limit: usize) -> BoxFuture<'static, Result<Vec<TranscriptEntry>, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path } => {
                let read = writer.send(ReadTail { transcript: path, limit });
                async move { read.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key } => async move { Ok(cluster.read_tail(&key, limit).await?) }.boxed(),
        }
    }

    /// The stored answer to `message_id`.
    pub fn find_answer(&self, message_id: String) -> BoxFuture<'static, Result<Option<TranscriptEntry>, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path } => {
                let find = writer.send(FindAnswer { transcript: path, message_id });
                async move { find.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key } => {
                async move { Ok(cluster.find_answer(&key, &message_id).await?) }.boxed()
            }
        }
    }

    /// Appends a completed turn durably; `lease` (cluster mode) fences the write, and
    /// the last `answers` answers' ids are kept apart for a node taking over.
    pub fn append(
        &self,
        entries: Vec<TranscriptEntry>,
        lease: Option<Arc<str>>,
        answers: usize,
    ) -> BoxFuture<'static, Result<Vec<TranscriptEntry>, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path } => {
                let append = writer.send(AppendTurn { transcript: path, entries });
                async move { append.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key } => async move {
                let lease = lease.ok_or(crate::cluster::ClusterError::LeaseLost)?;
                cluster.append(&key, &lease, &entries, answers).await?;
                Ok(entries)
            }
            .boxed(),
        }
    }
}

/// An agent's `AGENTS.md`: an unreadable one costs the agent its own prompt, not the
/// conversation.
fn read_agents_md(path: PathBuf) -> Option<String> {
    store::read_optional_text(&path, MAX_AGENTS_MD_BYTES)
        .inspect_err(|error| log::warn!("{error}; the agent's default system prompt is used"))
        .ok()
        .flatten()
}

/// One store thread.
pub struct StoreWriter;

impl Actor for StoreWriter {
    type Context = SyncContext<Self>;
}

impl Handler<LoadSession> for StoreWriter {
    type Result = Result<LoadedSession, StoreError>;

    fn handle(&mut self, message: LoadSession, _ctx: &mut Self::Context) -> Self::Result {
        let tail = transcript::load_tail(&message.transcript, message.keep, message.answers)?;
        let system_prompt = message.agents_md.and_then(read_agents_md);
        Ok(LoadedSession { tail, system_prompt })
    }
}

impl Handler<ReadTail> for StoreWriter {
    type Result = Result<Vec<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: ReadTail, _ctx: &mut Self::Context) -> Self::Result {
        transcript::read_tail(&message.transcript, message.limit)
    }
}

impl Handler<FindAnswer> for StoreWriter {
    type Result = Result<Option<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: FindAnswer, _ctx: &mut Self::Context) -> Self::Result {
        transcript::find_answer(&message.transcript, &message.message_id)
    }
}

impl Handler<AppendTurn> for StoreWriter {
    type Result = Result<Vec<TranscriptEntry>, StoreError>;

    fn handle(&mut self, message: AppendTurn, _ctx: &mut Self::Context) -> Self::Result {
        transcript::append(&message.transcript, &message.entries)?;
        Ok(message.entries)
    }
}
