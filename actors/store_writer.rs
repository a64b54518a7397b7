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
//! the append is durable (fsync; Redis's `appendfsync`). Both keep the conversation's
//! entry in its owner's index (`conversations.rs`) up to date with each turn: one node
//! alone on the index file's own store thread, after the append; a cluster in the
//! same Redis script as the append.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use futures_util::future::{BoxFuture, FutureExt};

use crate::cluster::Cluster;
use crate::conversations::{OwnerDir, ThreadSummary, TurnRecord};
use crate::identity::{Chat, SessionKey, SessionTarget};
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

/// Remove a transcript (`chat.delete`).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct DeleteTranscript {
    pub transcript: PathBuf,
}

/// What to do with an owner's index (each on the owner directory's own store thread,
/// so every change to its files is made one at a time).
pub enum IndexChange {
    /// A turn was stored.
    Record(TurnRecord),
    /// A thread was deleted.
    Remove(Option<String>),
    /// A thread was named; answers its entry.
    Title { thread_id: Option<String>, title: String },
    /// Read the `limit` newest entries.
    List { limit: usize },
}

/// Apply `change` to `index`: loaded (or rebuilt from the transcripts when missing or
/// damaged), changed, rewritten in place. Answers the entries the change concerns.
#[derive(Message)]
#[rtype(result = "Result<Vec<ThreadSummary>, StoreError>")]
pub struct ChangeIndex {
    pub index: OwnerDir,
    pub change: IndexChange,
}

/// Where a session's transcript lives: the one interface a session uses for it.
#[derive(Clone)]
pub enum TranscriptStore {
    /// A JSONL file, every operation on its store thread; its owner's index on that
    /// directory's.
    File { writer: Addr<StoreWriter>, path: PathBuf, index: (Addr<StoreWriter>, OwnerDir) },
    /// A Redis list shared by every node (cluster mode), its index a Redis hash.
    Redis { cluster: Arc<Cluster>, key: SessionKey, owner: Chat },
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
            TranscriptStore::File { writer, path, .. } => {
                let load = writer.send(LoadSession { transcript: path, agents_md, keep, answers });
                async move { load.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key, .. } => async move {
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
            TranscriptStore::File { writer, path, .. } => {
                let read = writer.send(ReadTail { transcript: path, limit });
                async move { read.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key, .. } => {
                async move { Ok(cluster.read_tail(&key, limit).await?) }.boxed()
            }
        }
    }

    /// The stored answer to `message_id`.
    pub fn find_answer(&self, message_id: String) -> BoxFuture<'static, Result<Option<TranscriptEntry>, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path, .. } => {
                let find = writer.send(FindAnswer { transcript: path, message_id });
                async move { find.await? }.boxed()
            }
            TranscriptStore::Redis { cluster, key, .. } => {
                async move { Ok(cluster.find_answer(&key, &message_id).await?) }.boxed()
            }
        }
    }

    /// Appends a completed turn durably and records it in the conversation's index
    /// entry; `lease` (cluster mode) fences the write, and the last `answers` answers'
    /// ids are kept apart for a node taking over. (One node alone: the index is
    /// written after the append on its own thread, not waited for: a listing, on that
    /// thread too, comes after it; one that could not be written costs the listing,
    /// not the turn, and is logged.)
    pub fn append(
        &self,
        entries: Vec<TranscriptEntry>,
        lease: Option<Arc<str>>,
        answers: usize,
        record: TurnRecord,
    ) -> BoxFuture<'static, Result<Vec<TranscriptEntry>, StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path, index: (index_writer, index) } => {
                let record = TurnRecord { transcript: Some(path.clone()), ..record };
                let append = writer.send(AppendTurn { transcript: path, entries });
                async move {
                    let entries = append.await??;
                    index_writer.do_send(ChangeIndex { index, change: IndexChange::Record(record) });
                    Ok(entries)
                }
                .boxed()
            }
            TranscriptStore::Redis { cluster, key, owner } => async move {
                let lease = lease.ok_or(crate::cluster::ClusterError::LeaseLost)?;
                cluster.append(&key, &lease, &entries, answers, &owner, &record).await?;
                Ok(entries)
            }
            .boxed(),
        }
    }

    /// Deletes the transcript, its idempotency record and its index entry
    /// (`chat.delete`). Done once the transcript is gone: an index entry that could not
    /// be removed is logged (the listing is wrong until the thread's next turn).
    pub fn delete(&self, lease: Option<Arc<str>>, thread_id: String) -> BoxFuture<'static, Result<(), StoreError>> {
        match self.clone() {
            TranscriptStore::File { writer, path, index: (index_writer, index) } => {
                let delete = writer.send(DeleteTranscript { transcript: path });
                async move {
                    delete.await??;
                    let change = ChangeIndex { index, change: IndexChange::Remove(Some(thread_id)) };
                    if let Err(error) = index_writer.send(change).await.map_err(StoreError::from).and_then(|done| done)
                    {
                        log::warn!("a deleted conversation is still listed in its index: {error}");
                    }
                    Ok(())
                }
                .boxed()
            }
            TranscriptStore::Redis { cluster, key, owner } => async move {
                let lease = lease.ok_or(crate::cluster::ClusterError::LeaseLost)?;
                Ok(cluster.delete_conversation(&key, &lease, &owner, &thread_id).await?)
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

impl Handler<DeleteTranscript> for StoreWriter {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, message: DeleteTranscript, _ctx: &mut Self::Context) -> Self::Result {
        transcript::delete(&message.transcript)
    }
}

impl Handler<ChangeIndex> for StoreWriter {
    type Result = Result<Vec<ThreadSummary>, StoreError>;

    fn handle(&mut self, message: ChangeIndex, _ctx: &mut Self::Context) -> Self::Result {
        let recorded = matches!(message.change, IndexChange::Record(_));
        change_index(message).inspect_err(|error| {
            if recorded {
                log::error!("a turn was stored but not listed in its conversation index: {error}");
            }
        })
    }
}

/// Applies one change to an owner's index: loaded (or rebuilt), changed, written back
/// when it changed. Answers the entries the change concerns.
fn change_index(message: ChangeIndex) -> Result<Vec<ThreadSummary>, StoreError> {
    let owner = &message.index;
    let mut index = owner.load()?;
    let (changed, concerned) = match message.change {
        IndexChange::List { limit } => (false, index.newest(limit)),
        IndexChange::Record(record) => (owner.record(&mut index, &record)?, Vec::new()),
        IndexChange::Remove(thread_id) => (owner.remove(&mut index, thread_id.as_deref()), Vec::new()),
        IndexChange::Title { thread_id, title } => {
            let named = owner.set_title(&mut index, thread_id.as_deref(), &title);
            (named.is_some(), named.into_iter().collect())
        }
    };
    if changed {
        owner.save(&index)?;
    }
    Ok(concerned)
}

/// The conversation indexes as connections and sessions use them (SPEC §11): list an
/// owner's conversations, name one, and say which turn runs where. One node alone:
/// the index files on the store threads, running turns in this process's memory; a
/// cluster: Redis (`cluster_conversations.rs`).
#[derive(Clone)]
pub enum ConversationIndex {
    Local { threads: StoreThreads, store_dir: PathBuf, running: Arc<Mutex<HashMap<String, Arc<str>>>> },
    Redis { cluster: Arc<Cluster> },
}

impl ConversationIndex {
    /// The index of one node alone, under `store_dir`.
    pub fn local(threads: StoreThreads, store_dir: PathBuf) -> ConversationIndex {
        ConversationIndex::Local { threads, store_dir, running: Arc::default() }
    }

    /// Where `owner`'s conversations are and the thread that writes them (one node alone).
    fn file_of(&self, owner: &Chat) -> Option<(Addr<StoreWriter>, OwnerDir)> {
        let ConversationIndex::Local { threads, store_dir, .. } = self else { return None };
        Some(owner_dir(threads, store_dir, owner))
    }

    /// Where the transcript of session `key` (of conversation `target`, with the agent
    /// in `agent_dir`) lives, its index entry beside it: a file, or Redis.
    pub fn transcript_store(&self, key: &SessionKey, target: &SessionTarget, agent_dir: &Path) -> TranscriptStore {
        let owner = target.chat.clone();
        match self {
            ConversationIndex::Local { threads, store_dir, .. } => {
                let index = owner_dir(threads, store_dir, &owner);
                let path = store::transcript_path(agent_dir, key);
                TranscriptStore::File { writer: threads.for_file(&path), path, index }
            }
            ConversationIndex::Redis { cluster } => {
                TranscriptStore::Redis { cluster: cluster.clone(), key: key.clone(), owner }
            }
        }
    }

    /// The `limit` most recently active conversations of `owner`, newest first.
    pub fn list(&self, owner: Chat, limit: usize) -> BoxFuture<'static, Result<Vec<ThreadSummary>, StoreError>> {
        match (self.clone(), self.file_of(&owner)) {
            (ConversationIndex::Local { running, .. }, Some((writer, index))) => {
                let list = writer.send(ChangeIndex { index, change: IndexChange::List { limit } });
                async move {
                    let mut sessions = list.await??;
                    let running = running.lock().unwrap_or_else(PoisonError::into_inner);
                    for session in &mut sessions {
                        session.in_flight = running.get(&session.session_key).map(|id| id.to_string());
                    }
                    Ok(sessions)
                }
                .boxed()
            }
            (ConversationIndex::Redis { cluster }, _) => {
                async move { Ok(cluster.list_conversations(&owner, limit).await?) }.boxed()
            }
            (ConversationIndex::Local { .. }, None) => async { Ok(Vec::new()) }.boxed(),
        }
    }

    /// Names `owner`'s conversation `thread_id`; `None` when it has none such.
    pub fn title(
        &self,
        owner: Chat,
        thread_id: Option<String>,
        title: String,
    ) -> BoxFuture<'static, Result<Option<ThreadSummary>, StoreError>> {
        match (self.clone(), self.file_of(&owner)) {
            (ConversationIndex::Redis { cluster }, _) => {
                async move { Ok(cluster.title_conversation(&owner, thread_id.as_deref(), &title).await?) }.boxed()
            }
            (_, Some((writer, index))) => {
                let change = writer.send(ChangeIndex { index, change: IndexChange::Title { thread_id, title } });
                async move { Ok(change.await??.pop()) }.boxed()
            }
            (ConversationIndex::Local { .. }, None) => async { Ok(None) }.boxed(),
        }
    }

    /// Marks the turn running in `key` (`None`: no turn runs) for listings; a mark in
    /// Redis expires after `ttl` (a node that dies mid-turn cannot clear it).
    pub fn mark_running(
        &self,
        key: &SessionKey,
        message_id: Option<Arc<str>>,
        ttl: Duration,
    ) -> BoxFuture<'static, ()> {
        match self {
            ConversationIndex::Local { running, .. } => {
                let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
                match message_id {
                    Some(id) => running.insert(key.to_string(), id),
                    None => running.remove(key.as_str()),
                };
                async {}.boxed()
            }
            ConversationIndex::Redis { cluster } => {
                let (cluster, key) = (cluster.clone(), key.clone());
                async move {
                    if let Err(error) = cluster.mark_running(&key, message_id.as_deref(), ttl).await {
                        log::warn!("cluster: session {key}: the running turn was not marked for listings: {error}");
                    }
                }
                .boxed()
            }
        }
    }
}

/// `owner`'s conversations (one node alone) and the store thread that writes them.
fn owner_dir(threads: &StoreThreads, store_dir: &Path, owner: &Chat) -> (Addr<StoreWriter>, OwnerDir) {
    let dir = OwnerDir::of(store_dir, owner);
    (threads.for_file(&dir.index_path()), dir)
}
