//! Conversations a user can find again (SPEC §11): the index of an identity's (or a
//! group's) conversations, kept beside the transcripts.
//!
//! One entry per conversation (its thread, or the default direct session), updated
//! when a turn is stored: title, last activity, message count. Listing reads the index,
//! never the directories. One node alone keeps it as one small JSON file per owner
//! (`{store.dir}/conversations/{direct|group}/{owner}.json`, replaced atomically on its
//! store thread); in a cluster it is a Redis hash beside the transcripts, written in
//! the same script as the turn (`cluster.rs`). Each transcript file has a sidecar
//! ([`TranscriptMeta`]) naming its session, owner and thread, so that an index deleted
//! or damaged by hand is rebuilt from the transcripts themselves. Everything here that
//! touches the disk blocks: it runs on the store threads.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agents::AgentRegistry;
use crate::identity::{Chat, SessionTarget};
use crate::protocol::Role;
use crate::store::{self, StoreError};

/// The longest title kept, in characters (`chat.title`).
pub const MAX_TITLE_CHARS: usize = 200;
/// A default title is the first user message cut to this many characters, on a word.
const DEFAULT_TITLE_CHARS: usize = 80;
/// The most conversations an owner's index keeps: the most recently active ones.
pub const MAX_INDEXED: usize = 10_000;

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

/// The conversations of one owner (a user's direct ones, or a group's), as one node
/// alone stores them: one entry per thread (`None`: the default session).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub sessions: Vec<ThreadSummary>,
}

impl Index {
    /// Applies a stored turn: the entry of its thread is created or brought up to date.
    pub fn record(&mut self, turn: &TurnRecord) {
        match self.sessions.iter_mut().find(|entry| entry.thread_id == turn.thread_id) {
            Some(entry) => {
                entry.session_key.clone_from(&turn.session_key);
                entry.last_activity = entry.last_activity.max(turn.ts);
                entry.message_count += turn.added;
                if entry.title.is_empty() {
                    entry.title.clone_from(&turn.title);
                }
            }
            None => self.sessions.push(turn.new_entry()),
        }
        self.cap();
    }

    /// Names a thread's conversation; `None` when the index has no such thread.
    pub fn set_title(&mut self, thread_id: Option<&str>, title: &str) -> Option<ThreadSummary> {
        let entry = self.sessions.iter_mut().find(|entry| entry.thread_id.as_deref() == thread_id)?;
        entry.title = title.to_string();
        entry.titled = true;
        Some(entry.clone())
    }

    /// Drops a thread's entry; whether there was one.
    pub fn remove(&mut self, thread_id: Option<&str>) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|entry| entry.thread_id.as_deref() != thread_id);
        self.sessions.len() != before
    }

    /// The `limit` most recently active conversations, newest first.
    pub fn newest(&self, limit: usize) -> Vec<ThreadSummary> {
        let mut sessions = self.sessions.clone();
        sessions.sort_by(|a, b| b.last_activity.cmp(&a.last_activity).then_with(|| a.thread_id.cmp(&b.thread_id)));
        sessions.truncate(limit);
        sessions
    }

    /// Keeps the `MAX_INDEXED` most recently active entries.
    fn cap(&mut self) {
        if self.sessions.len() > MAX_INDEXED {
            self.sessions = self.newest(MAX_INDEXED);
        }
    }
}

/// The sidecar of a transcript file (`{name}.meta.json`): which session, owner and
/// thread the file is, so that an index can be rebuilt from the transcripts (a file
/// name is a lossy, path-safe form of the key). Written once, with the first turn, and
/// again when the conversation is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptMeta {
    pub session_key: String,
    pub owner: Chat,
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The title given with `chat.title`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The sidecar's path beside `transcript` (`x.jsonl` → `x.meta.json`).
pub fn meta_path(transcript: &Path) -> PathBuf {
    transcript.with_extension("meta.json")
}

/// Writes the sidecar of `transcript` unless it exists.
pub fn write_meta_if_missing(transcript: &Path, meta: &TranscriptMeta) -> Result<(), StoreError> {
    let path = meta_path(transcript);
    if path.exists() {
        return Ok(());
    }
    write_meta(&path, meta)
}

fn write_meta(path: &Path, meta: &TranscriptMeta) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(meta).map_err(|source| StoreError::Json { path: path.into(), source })?;
    store::write_atomically(path, &bytes)
}

/// Removes a transcript and its sidecar (`chat.delete`); a missing file is no error.
pub fn delete_transcript(transcript: &Path) -> Result<(), StoreError> {
    for path in [transcript.to_path_buf(), meta_path(transcript)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(store::io_error(&path)(error)),
        }
    }
    Ok(())
}

/// Where one node alone keeps the index of `owner`.
pub fn index_path(store_dir: &Path, owner: &Chat) -> PathBuf {
    let (kind, id) = match owner {
        Chat::Direct(sender) => ("direct", sender),
        Chat::Group(group) => ("group", group),
    };
    store_dir.join("conversations").join(kind).join(format!("{}.json", store::path_safe(id)))
}

/// Where the transcripts of `owner`'s conversations may be: the default agent's
/// sessions, and for a user with an agent of its own, that agent's.
pub struct TranscriptDirs {
    pub store_dir: PathBuf,
    pub default_agent_dir: PathBuf,
}

impl TranscriptDirs {
    /// The directories `owner`'s transcripts may be in.
    pub fn for_owner(&self, owner: &Chat) -> Vec<PathBuf> {
        let mut dirs = vec![self.default_agent_dir.join("sessions")];
        if let Chat::Direct(sender) = owner {
            match AgentRegistry::load(&self.store_dir) {
                Ok(registry) => {
                    dirs.extend(registry.agents.get(sender).map(|record| record.agent_dir.join("sessions")));
                }
                Err(error) => log::warn!("rebuilding a conversation index without the agents registry: {error}"),
            }
        }
        dirs
    }
}

/// The index of `owner` at `path`; when it is missing or damaged, rebuilt from the
/// transcripts (and written), with a log line. Answers whether it was rebuilt.
pub fn load_or_rebuild(path: &Path, owner: &Chat, dirs: &TranscriptDirs) -> Result<(Index, bool), StoreError> {
    match store::read_json::<Index>(path) {
        Ok(Some(index)) => return Ok((index, false)),
        Ok(None) => log::info!("{}: no conversation index; rebuilding it from the transcripts", path.display()),
        Err(StoreError::Json { .. }) => {
            log::warn!("{}: the conversation index is damaged; rebuilding it from the transcripts", path.display())
        }
        Err(error) => return Err(error),
    }
    let index = rebuild(owner, &dirs.for_owner(owner))?;
    save(path, &index)?;
    Ok((index, true))
}

/// Writes `index` atomically.
pub fn save(path: &Path, index: &Index) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(index).map_err(|source| StoreError::Json { path: path.into(), source })?;
    store::write_atomically(path, &bytes)
}

/// Names a conversation in its sidecar too, so a rebuilt index keeps the title.
pub fn title_transcript(dirs: &TranscriptDirs, owner: &Chat, thread_id: Option<&str>, title: &str) {
    for dir in dirs.for_owner(owner) {
        for (meta_file, mut meta) in metas_of(&dir, owner) {
            if meta.thread_id.as_deref() == thread_id {
                meta.title = Some(title.to_string());
                if let Err(error) = write_meta(&meta_file, &meta) {
                    log::warn!("a conversation's title was not written beside its transcript: {error}");
                }
            }
        }
    }
}

/// The index of `owner` as its transcripts say: every sidecar naming the owner whose
/// transcript exists, summarized.
fn rebuild(owner: &Chat, dirs: &[PathBuf]) -> Result<Index, StoreError> {
    let mut index = Index::default();
    for dir in dirs {
        for (meta_file, meta) in metas_of(dir, owner) {
            let transcript = meta_file.with_file_name(
                meta_file
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or_default()
                    .replace(".meta.json", ".jsonl"),
            );
            let Some(summary) = summarize(&transcript)? else { continue };
            let group_id = match owner {
                Chat::Group(group) => Some(group.clone()),
                Chat::Direct(_) => None,
            };
            let record = TurnRecord {
                session_key: meta.session_key.clone(),
                thread_id: meta.thread_id.clone(),
                group_id,
                ts: summary.last_activity,
                added: summary.messages,
                title: summary.first_message.as_deref().map(default_title).unwrap_or_default(),
            };
            index.record(&record);
            if let Some(title) = &meta.title {
                index.set_title(meta.thread_id.as_deref(), title);
            }
        }
    }
    Ok(index)
}

/// The sidecars in `dir` that name `owner` (their file names are filtered first, by
/// the path-safe form of the owner's part of the key).
fn metas_of(dir: &Path, owner: &Chat) -> Vec<(PathBuf, TranscriptMeta)> {
    let prefix = file_prefix(owner);
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".meta.json"))
        })
        .filter_map(|path| match store::read_json::<TranscriptMeta>(&path) {
            Ok(Some(meta)) if meta.owner == *owner => Some((path, meta)),
            Ok(_) => None,
            Err(error) => {
                log::warn!("a transcript's sidecar is unreadable; its conversation is not indexed: {error}");
                None
            }
        })
        .collect()
}

/// What every transcript file name of `owner`'s sessions starts with.
fn file_prefix(owner: &Chat) -> String {
    let key = SessionTarget { chat: owner.clone(), thread_id: None }.key("-");
    let path = store::transcript_path(Path::new(""), &key);
    let name = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or_default();
    // The key part has a `:`, so its name always ends with `-` and a hash: the
    // readable part before it starts the names of all the owner's threads too.
    name.rsplit_once('-').map_or(name, |(readable, _)| readable).to_string()
}

/// What a rebuild needs of a transcript.
struct TranscriptSummary {
    messages: u64,
    last_activity: u64,
    first_message: Option<String>,
}

/// Just the fields of a line a summary needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SummaryLine {
    role: Role,
    #[serde(default)]
    content: String,
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    supersedes: Option<String>,
}

/// Counts a transcript's messages (a superseding answer hides the one it replaces),
/// its last activity and first user message; `None` when it does not exist. Reads the
/// whole file: only a rebuild does.
fn summarize(transcript: &Path) -> Result<Option<TranscriptSummary>, StoreError> {
    let file = match File::open(transcript) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(store::io_error(transcript)(error)),
    };
    let mut summary = TranscriptSummary { messages: 0, last_activity: 0, first_message: None };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(store::io_error(transcript))?;
        let Ok(entry) = serde_json::from_slice::<SummaryLine>(&line) else { continue };
        if entry.supersedes.is_none() {
            summary.messages += 1;
        }
        summary.last_activity = summary.last_activity.max(entry.ts);
        if entry.role == Role::User && summary.first_message.is_none() {
            summary.first_message = Some(entry.content);
        }
    }
    Ok((summary.messages > 0).then_some(summary))
}

#[cfg(test)]
#[path = "conversations_tests.rs"]
mod tests;
