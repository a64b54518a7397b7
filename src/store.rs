//! Where conversations and registries live on disk: the blocking side of persistence.
//!
//! A session's transcript is an append-only JSONL file under its agent's dir
//! (`{agentDir}/sessions/{session}.jsonl`); `transcript.rs` reads and appends it.
//! Registries are whole JSON files replaced atomically (temp file, fsync, rename).
//! Every function here blocks: sessions call them through the `StoreWriter` threads
//! (`actors/store_writer.rs`), the Supervisor through [`off_thread`]; never on an
//! actor's own thread. This module is the seam a shared (Redis) store would replace.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::identity::SessionKey;

/// Why a store operation failed; the detail is for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("the store worker stopped")]
    WorkerGone,
    /// The cluster's store (Redis) failed, or this node lost the session's lease.
    #[error("cluster store: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl From<actix::MailboxError> for StoreError {
    fn from(_: actix::MailboxError) -> Self {
        StoreError::WorkerGone
    }
}

/// Maps an `io::Error` on `path` to a `StoreError` naming the file.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
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

/// Longest readable part of a file name made by [`path_safe`] before its hash.
const MAX_SAFE_PREFIX: usize = 48;

/// `id` as a file name: only `[A-Za-z0-9_-]`; when anything had to change, a hash of
/// the original is appended so that different ids stay different. (Transcript names
/// and configured agents' dirs; it must stay as it is, or stored files are not found.)
pub fn path_safe(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(MAX_SAFE_PREFIX)
        .collect();
    if cleaned == id && !id.is_empty() {
        return cleaned;
    }
    format!("{cleaned}-{}", short_hash(id))
}

/// 16 hex digits of `id`'s SHA-256: what keeps names made from different ids apart.
pub fn short_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes()).iter().take(8).map(|byte| format!("{byte:02x}")).collect()
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

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let name = path.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
    let temp = parent.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = File::create(&temp).map_err(io_error(&temp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(error) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(io_error(path)(error));
    }
    if let Ok(directory) = File::open(parent) {
        let _ = directory.sync_all(); // make the rename itself durable where the OS allows
    }
    Ok(())
}

/// Rewrites the small JSON record at `path` in place: one positioned write from its
/// start, padded with spaces to the file's old length (JSON ignores trailing blanks),
/// so the file keeps its inode. For records rewritten after every turn (a conversation
/// index, usage counts): creating a file and renaming it over the old one, thousands of
/// times a second, made ext4 scan its recently freed inodes for every new one (measured:
/// half the broker's CPU). A process killed during a write larger than a page may leave
/// a record that does not parse; its readers rebuild or recount it.
pub fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))?;
    let old_length = file.metadata().map_err(io_error(path))?.len() as usize;
    let mut padded = bytes.to_vec();
    padded.resize(old_length.max(bytes.len()), b' ');
    file.write_all_at(&padded, 0).map_err(io_error(path))
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

/// Reads a small text file if it exists (an agent's `AGENTS.md`), at most
/// `max_bytes` of it.
pub fn read_optional_text(path: &Path, max_bytes: u64) -> Result<Option<String>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(file, max_bytes), &mut text).map_err(io_error(path))?;
    Ok(Some(text))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
