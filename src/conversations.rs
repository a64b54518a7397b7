//! Conversations a user can find again (SPEC §11): the index of an identity's (or a
//! group's) conversations, kept beside the transcripts.
//!
//! One entry per conversation (its thread, or the default direct session), updated
//! when a turn is stored: title, last activity, message count. Listing reads the index,
//! never the transcripts' directories. One node alone keeps each owner's conversations
//! in a directory of its own (`{store.dir}/conversations/{direct|group}/{owner}/`, the
//! owner's id always hashed into the name): `index.json`, rewritten in place after
//! each turn, and one small sidecar per conversation beside it (`t-{thread}.json`,
//! `default.json`) naming its session key, transcript file and given title, so that an index deleted or damaged by hand is rebuilt from
//! the owner's own transcripts (never a scan of everyone's). Every file of an owner's
//! directory is written by one store thread. In a cluster the index is a Redis hash
//! beside the transcripts, written in the same script as the turn (`cluster.rs`).
//! Everything here that touches the disk blocks: it runs on the store threads.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::Chat;
use crate::protocol::Role;
use crate::store::{self, StoreError};

/// The longest title kept, in characters (`chat.title`).
pub const MAX_TITLE_CHARS: usize = 200;
/// A default title is the first user message cut to this many characters, on a word.
const DEFAULT_TITLE_CHARS: usize = 80;
/// The most conversations an owner's index keeps: the most recently active ones (a
/// sidebar's worth; an entry is at most about 2 KB, so an index at most about 2 MB).
pub const MAX_INDEXED: usize = 1_000;

/// One conversation as `chat.threads` lists it (and as its index stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSummary {
    pub session_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    pub title: String,
    /// Whether the title was given with `chat.title` (else it is the default one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub titled: bool,
    /// Milliseconds since the Unix epoch of the last stored turn.
    pub last_activity: u64,
    /// Messages in the conversation as `chat.history` shows them (superseded answers
    /// not counted).
    pub message_count: u64,
    /// The message id of the turn running now (never stored: filled in when listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<String>,
}

/// What one stored turn changes in its conversation's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRecord {
    pub session_key: String,
    pub thread_id: Option<String>,
    pub group_id: Option<String>,
    pub ts: u64,
    /// Messages the turn added, net of the answer it superseded (a regeneration adds 0).
    pub added: u64,
    /// The title a new entry gets: the turn's user message, cut ([`default_title`]).
    pub title: String,
    /// The turn's answer id: a turn an entry already counts (a rebuild read it from the
    /// transcript) is not counted again.
    pub answer_id: String,
    /// The transcript file (one node alone), summarized when the conversation has no
    /// entry yet (a transcript from before the index, or a lost update).
    pub transcript: Option<PathBuf>,
}

impl TurnRecord {
    /// The entry a first turn creates.
    pub fn new_entry(&self) -> ThreadSummary {
        ThreadSummary {
            session_key: self.session_key.clone(),
            thread_id: self.thread_id.clone(),
            group_id: self.group_id.clone(),
            title: self.title.clone(),
            titled: false,
            last_activity: self.ts,
            message_count: self.added,
            in_flight: None,
        }
    }
}

/// The default title of a conversation: its first user message on one line, cut at
/// 80 characters on a word (with `…` when cut).
pub fn default_title(message: &str) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() <= DEFAULT_TITLE_CHARS {
        return line;
    }
    let mut title = String::new();
    for word in words {
        let wanted = title.chars().count() + usize::from(!title.is_empty()) + word.chars().count();
        if wanted > DEFAULT_TITLE_CHARS {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    if title.is_empty() {
        // One word longer than the whole title: cut inside it.
        title = line.chars().take(DEFAULT_TITLE_CHARS).collect();
    }
    title.push('…');
    title
}

/// A title given with `chat.title`, on one line; `None` when empty or too long.
pub fn clean_title(title: &str) -> Option<String> {
    let line = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty() && line.chars().count() <= MAX_TITLE_CHARS).then_some(line)
}

/// An entry as one node alone stores it: what is listed, the last answer it counts,
/// and its transcript file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    #[serde(flatten)]
    pub summary: ThreadSummary,
    #[serde(default)]
    pub last_answer: String,
    #[serde(default)]
    pub transcript: Option<PathBuf>,
}

/// The conversations of one owner (a user's direct ones, or a group's), as one node
/// alone stores them: one entry per thread (`None`: the default session).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Whose index this is, checked when it is read.
    pub owner: Option<Chat>,
    pub sessions: Vec<IndexEntry>,
}

impl Index {
    fn entry_mut(&mut self, thread_id: Option<&str>) -> Option<&mut IndexEntry> {
        self.sessions.iter_mut().find(|entry| entry.summary.thread_id.as_deref() == thread_id)
    }

    /// Applies a stored turn to its thread's entry; whether it changed (a turn the
    /// entry already counts changes nothing). `None` when the thread has no entry.
    pub fn record(&mut self, turn: &TurnRecord) -> Option<bool> {
        let entry = self.entry_mut(turn.thread_id.as_deref())?;
        if entry.last_answer == turn.answer_id {
            return Some(false);
        }
        let summary = &mut entry.summary;
        summary.session_key.clone_from(&turn.session_key);
        summary.last_activity = summary.last_activity.max(turn.ts);
        summary.message_count += turn.added;
        if summary.title.is_empty() {
            summary.title.clone_from(&turn.title);
        }
        entry.last_answer.clone_from(&turn.answer_id);
        if turn.transcript.is_some() {
            entry.transcript.clone_from(&turn.transcript);
        }
        Some(true)
    }

    /// Adds an entry; answers the entries dropped to keep `MAX_INDEXED`.
    pub fn insert(&mut self, entry: IndexEntry) -> Vec<IndexEntry> {
        self.sessions.retain(|kept| kept.summary.thread_id != entry.summary.thread_id);
        self.sessions.push(entry);
        if self.sessions.len() <= MAX_INDEXED {
            return Vec::new();
        }
        self.sessions.sort_by(newest_first);
        self.sessions.split_off(MAX_INDEXED)
    }

    /// Names a thread's conversation; its entry, or `None` when the index has no such
    /// thread.
    pub fn set_title(&mut self, thread_id: Option<&str>, title: &str) -> Option<IndexEntry> {
        let entry = self.entry_mut(thread_id)?;
        entry.summary.title = title.to_string();
        entry.summary.titled = true;
        Some(entry.clone())
    }

    /// Drops a thread's entry; whether there was one.
    pub fn remove(&mut self, thread_id: Option<&str>) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|entry| entry.summary.thread_id.as_deref() != thread_id);
        self.sessions.len() != before
    }

    /// The `limit` most recently active conversations, newest first.
    pub fn newest(&self, limit: usize) -> Vec<ThreadSummary> {
        let mut entries: Vec<&IndexEntry> = self.sessions.iter().collect();
        entries.sort_by(|a, b| newest_first(a, b));
        entries.into_iter().take(limit).map(|entry| entry.summary.clone()).collect()
    }
}

/// Most recent first; on a tie the greater thread id first (the default session, `""`,
/// last), as Redis orders equal scores in a reverse range.
fn newest_first(a: &IndexEntry, b: &IndexEntry) -> std::cmp::Ordering {
    let field = |entry: &IndexEntry| entry.summary.thread_id.clone().unwrap_or_default();
    b.summary.last_activity.cmp(&a.summary.last_activity).then_with(|| field(b).cmp(&field(a)))
}

/// A conversation's sidecar in its owner's directory: its session key, thread,
/// transcript file and given title, so that a lost index is rebuilt from the owner's
/// own transcripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    pub session_key: String,
    pub owner: Chat,
    #[serde(default)]
    pub thread_id: Option<String>,
    pub transcript: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// One owner's conversations on disk (one node alone): its index and sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerDir {
    pub path: PathBuf,
    pub owner: Chat,
}

impl OwnerDir {
    /// `{store_dir}/conversations/{direct|group}/{readable part}-{hash of the id}`:
    /// always hashed, so that no id can name another's directory.
    pub fn of(store_dir: &Path, owner: &Chat) -> OwnerDir {
        let (kind, id) = match owner {
            Chat::Direct(sender) => ("direct", sender),
            Chat::Group(group) => ("group", group),
        };
        let path = store_dir.join("conversations").join(kind).join(hashed_name(id));
        OwnerDir { path, owner: owner.clone() }
    }

    /// The index file.
    pub fn index_path(&self) -> PathBuf {
        self.path.join("index.json")
    }

    fn sidecar_path(&self, thread_id: Option<&str>) -> PathBuf {
        let name = thread_id.map_or_else(|| "default".to_string(), |thread| format!("t-{}", hashed_name(thread)));
        self.path.join(format!("{name}.json"))
    }

    /// The owner's index; when it is missing but the owner has conversations, or it is
    /// damaged, rebuilt from the sidecars and transcripts (and written), with a log
    /// line. An owner with no conversation yet has an empty index and no file.
    pub fn load(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        match store::read_json::<Index>(&path) {
            Ok(Some(index)) if index.owner.as_ref() == Some(&self.owner) => return Ok(index),
            Ok(Some(_)) => log::warn!("{}: a conversation index of another owner; rebuilding it", path.display()),
            Ok(None) if !self.path.is_dir() => return Ok(self.empty()),
            Ok(None) => log::warn!("{}: no conversation index; rebuilding it from the transcripts", path.display()),
            Err(StoreError::Json { .. }) => {
                log::warn!("{}: the conversation index is damaged; rebuilding it from the transcripts", path.display())
            }
            Err(error) => return Err(error),
        }
        let index = self.rebuild()?;
        self.save(&index)?;
        Ok(index)
    }

    fn empty(&self) -> Index {
        Index { owner: Some(self.owner.clone()), sessions: Vec::new() }
    }

    /// Writes `index` in place (it is rewritten after every turn), without waiting for
    /// the disk: one a crash or a power loss left damaged is rebuilt.
    pub fn save(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec(index).map_err(|source| StoreError::Json { path: path.clone(), source })?;
        store::overwrite_in_place(&path, &bytes)
    }

    /// Applies a stored turn; whether the index changed. A thread without an entry (a
    /// first turn, a transcript from before the index, an update lost in a crash) gets
    /// one made from its whole transcript, and its sidecar.
    pub fn record(&self, index: &mut Index, turn: &TurnRecord) -> Result<bool, StoreError> {
        if let Some(changed) = index.record(turn) {
            return Ok(changed);
        }
        let mut entry = IndexEntry {
            summary: turn.new_entry(),
            last_answer: turn.answer_id.clone(),
            transcript: turn.transcript.clone(),
        };
        if let Some(summary) = turn.transcript.as_deref().map(summarize).transpose()?.flatten() {
            summary.apply_to(&mut entry);
        }
        self.write_sidecar(&entry)?;
        self.insert(index, entry);
        Ok(true)
    }

    fn insert(&self, index: &mut Index, entry: IndexEntry) {
        for dropped in index.insert(entry) {
            self.remove_sidecar(dropped.summary.thread_id.as_deref());
        }
    }

    /// Names a conversation (in its sidecar too, so a rebuild keeps the title).
    pub fn set_title(&self, index: &mut Index, thread_id: Option<&str>, title: &str) -> Option<ThreadSummary> {
        let entry = index.set_title(thread_id, title)?;
        if let Err(error) = self.write_sidecar(&entry) {
            log::warn!(
                "a conversation's title was not written to its sidecar (a rebuilt index would lose it): {error}"
            );
        }
        Some(entry.summary)
    }

    /// Drops a thread's entry and sidecar; whether there was one.
    pub fn remove(&self, index: &mut Index, thread_id: Option<&str>) -> bool {
        self.remove_sidecar(thread_id);
        index.remove(thread_id)
    }

    fn write_sidecar(&self, entry: &IndexEntry) -> Result<(), StoreError> {
        let Some(transcript) = &entry.transcript else { return Ok(()) };
        let summary = &entry.summary;
        let sidecar = Sidecar {
            session_key: summary.session_key.clone(),
            owner: self.owner.clone(),
            thread_id: summary.thread_id.clone(),
            transcript: transcript.clone(),
            title: summary.titled.then(|| summary.title.clone()),
        };
        let path = self.sidecar_path(summary.thread_id.as_deref());
        let bytes = serde_json::to_vec(&sidecar).map_err(|source| StoreError::Json { path: path.clone(), source })?;
        store::overwrite_in_place(&path, &bytes)
    }

    fn remove_sidecar(&self, thread_id: Option<&str>) {
        let path = self.sidecar_path(thread_id);
        if let Err(error) = fs::remove_file(&path) {
            if error.kind() != io::ErrorKind::NotFound {
                log::warn!("{}: a deleted conversation's sidecar was not removed: {error}", path.display());
            }
        }
    }

    /// The index as the owner's sidecars and their transcripts say.
    fn rebuild(&self) -> Result<Index, StoreError> {
        let mut index = self.empty();
        let group_id = match &self.owner {
            Chat::Group(group) => Some(group.clone()),
            Chat::Direct(_) => None,
        };
        for sidecar in self.sidecars() {
            let Some(summary) = summarize(&sidecar.transcript)? else { continue };
            let record = TurnRecord {
                session_key: sidecar.session_key,
                thread_id: sidecar.thread_id,
                group_id: group_id.clone(),
                ts: 0,
                added: 0,
                title: String::new(),
                answer_id: String::new(),
                transcript: Some(sidecar.transcript.clone()),
            };
            let mut entry =
                IndexEntry { summary: record.new_entry(), last_answer: String::new(), transcript: record.transcript };
            summary.apply_to(&mut entry);
            if let Some(title) = sidecar.title {
                entry.summary.title = title;
                entry.summary.titled = true;
            }
            self.insert(&mut index, entry);
        }
        Ok(index)
    }

    /// The owner's sidecars (an unreadable one is logged and left out).
    fn sidecars(&self) -> Vec<Sidecar> {
        let Ok(files) = fs::read_dir(&self.path) else { return Vec::new() };
        files
            .filter_map(Result::ok)
            .map(|file| file.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "json") && *path != self.index_path())
            .filter_map(|path| match store::read_json::<Sidecar>(&path) {
                Ok(Some(sidecar)) if sidecar.owner == self.owner => Some(sidecar),
                Ok(_) => None,
                Err(error) => {
                    log::warn!("a conversation's sidecar is unreadable; it is not indexed: {error}");
                    None
                }
            })
            .collect()
    }
}

/// `id` as a file name no other id has: its readable part and a hash of the whole.
fn hashed_name(id: &str) -> String {
    let readable: String =
        id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').take(32).collect();
    format!("{readable}-{}", store::short_hash(id))
}

/// What a rebuild needs of a transcript.
struct TranscriptSummary {
    messages: u64,
    last_activity: u64,
    first_message: Option<String>,
    last_answer: String,
}

impl TranscriptSummary {
    fn apply_to(self, entry: &mut IndexEntry) {
        let summary = &mut entry.summary;
        summary.message_count = self.messages;
        summary.last_activity = self.last_activity;
        if let Some(first) = self.first_message {
            summary.title = default_title(&first);
        }
        entry.last_answer = self.last_answer;
    }
}

/// Just the fields of a line a summary needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SummaryLine {
    role: Role,
    #[serde(default)]
    content: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    supersedes: Option<String>,
}

/// Counts a transcript's messages (a superseding answer hides the one it replaces),
/// its last activity, first user message and last answer; `None` when it does not
/// exist or holds nothing. Reads the whole file, read-only (a line being appended
/// meanwhile is skipped): only a rebuild, or a conversation's first entry, does.
fn summarize(transcript: &Path) -> Result<Option<TranscriptSummary>, StoreError> {
    let file = match File::open(transcript) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(store::io_error(transcript)(error)),
    };
    let mut summary =
        TranscriptSummary { messages: 0, last_activity: 0, first_message: None, last_answer: String::new() };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(store::io_error(transcript))?;
        let Ok(entry) = serde_json::from_slice::<SummaryLine>(&line) else { continue };
        if entry.supersedes.is_none() {
            summary.messages += 1;
        }
        summary.last_activity = summary.last_activity.max(entry.ts);
        match entry.role {
            Role::User if summary.first_message.is_none() => summary.first_message = Some(entry.content),
            Role::Assistant => summary.last_answer = entry.message_id,
            _ => {}
        }
    }
    Ok((summary.messages > 0).then_some(summary))
}

#[cfg(test)]
#[path = "conversations_tests.rs"]
mod tests;
