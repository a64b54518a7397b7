//! Where conversations and registries live on disk: the blocking side of persistence.
//!
//! A session's transcript is an append-only JSONL file under its agent's dir
//! (`{agentDir}/sessions/{session}.jsonl`), one `TranscriptEntry` per line. A completed
//! turn's lines are appended and fsynced in one write before its answer is sent, so a
//! crash loses at most the turn in flight. A torn last line (a crash mid-write) is
//! skipped with a warning on load and cut off, so the next append starts clean.
//! Registries are whole JSON files replaced atomically (temp file, fsync, rename).
//! Every function here blocks: sessions call them through the `StoreWriter` threads
//! (`actors/store_writer.rs`), the Supervisor through [`off_thread`]; never on an
//! actor's own thread. This module is the seam a shared (Redis) store would replace.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::agents::path_safe;
use crate::identity::SessionKey;
use crate::protocol::TranscriptEntry;

/// Why a store operation failed; the detail is for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("the store worker stopped")]
    WorkerGone,
}

impl From<actix::MailboxError> for StoreError {
    fn from(_: actix::MailboxError) -> Self {
        StoreError::WorkerGone
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Milliseconds since the Unix epoch: the `ts` of stored records.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs blocking store work on the blocking pool, off every actor thread.
pub async fn off_thread<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    actix_web::rt::task::spawn_blocking(work).await.map_err(|_| StoreError::WorkerGone)?
}

/// The default agent dir of a configured agent: `{store.dir}/agents/{agentId}`.
pub fn default_agent_dir(store_dir: &Path, agent_id: &str) -> PathBuf {
    store_dir.join("agents").join(path_safe(agent_id))
}

/// The transcript file of a session: `{agentDir}/sessions/{path-safe key tail}.jsonl`.
pub fn transcript_path(agent_dir: &Path, key: &SessionKey) -> PathBuf {
    let tail = key.as_str().split_once(":websocket:").map(|(_, tail)| tail).unwrap_or(key.as_str());
    agent_dir.join("sessions").join(format!("{}.jsonl", path_safe(tail)))
}

/// Reads a transcript; a missing file is an empty one. Unreadable lines are skipped
/// with a warning; a torn last line is also cut off the file.
pub fn load_transcript(path: &Path) -> Result<Vec<TranscriptEntry>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path)(error)),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut line = Vec::new();
    let mut good_end = 0u64;
    let mut offset = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io_error(path))?;
        if read == 0 {
            break;
        }
        offset += read as u64;
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<TranscriptEntry>(&line) {
            Ok(entry) if complete => {
                entries.push(entry);
                good_end = offset;
            }
            _ if !complete => {
                log::warn!("{}: torn last line ({read} bytes) skipped and cut off", path.display());
                cut_at(path, good_end)?;
                break;
            }
            _ => {
                log::warn!("{}: unreadable line at byte {} skipped", path.display(), offset - read as u64);
                good_end = offset;
            }
        }
    }
    Ok(entries)
}

fn cut_at(path: &Path, length: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
    file.set_len(length).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Appends `entries` (one turn) in one write and fsyncs before returning.
pub fn append_entries(path: &Path, entries: &[TranscriptEntry]) -> Result<(), StoreError> {
    let mut buffer = Vec::with_capacity(256 * entries.len());
    for entry in entries {
        serde_json::to_writer(&mut buffer, entry).map_err(|source| StoreError::Json { path: path.into(), source })?;
        buffer.push(b'\n');
    }
    let open = || OpenOptions::new().create(true).append(true).open(path);
    let mut file = match open() {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(parent).map_err(io_error(parent))?;
            open()
        }
        opened => opened,
    }
    .map_err(io_error(path))?;
    file.write_all(&buffer).map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))
}

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let name = path.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
    let temp = parent.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(bytes).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    fs::rename(&temp, path).map_err(io_error(path))?;
    if let Ok(directory) = File::open(parent) {
        let _ = directory.sync_all(); // make the rename itself durable where the OS allows
    }
    Ok(())
}

/// Reads a whole JSON file; a missing file is `None`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|source| StoreError::Json { path: path.into(), source })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// Reads a small text file if it exists (an agent's `AGENTS.md`).
pub fn read_optional_text(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
