//! The media index of a node alone: one JSON file per media id
//! (`{dir}/.meta/{id}.json`), one per session listing the media sent or produced in
//! it (`{dir}/.sessions/{session}.json`), each replaced atomically; and each user's
//! bytes, counted from their directory the first time they are needed, then kept in
//! memory. One lock orders every change (uploads are rare next to reads). Blocking:
//! called on the blocking pool only.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{MediaMeta, MAX_LINKS};
use crate::store::{self, StoreError};

/// Hidden directories of the media directory (names `path_safe` never produces, so no
/// user's directory can be one of them).
const META_DIR: &str = ".meta";
const SESSIONS_DIR: &str = ".sessions";

/// The index, on the local disk.
pub struct LocalIndex {
    dir: PathBuf,
    /// Each user's bytes (as far as counted); the lock is also the one writer's.
    usage: Mutex<HashMap<String, u64>>,
}

impl LocalIndex {
    pub fn new(dir: &Path) -> LocalIndex {
        LocalIndex { dir: dir.to_path_buf(), usage: Mutex::default() }
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(META_DIR).join(format!("{id}.json"))
    }

    fn session_path(&self, session: &str) -> PathBuf {
        self.dir.join(SESSIONS_DIR).join(format!("{}.json", store::path_safe(session)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metadata of `id` (a checked id), if it exists.
    pub fn get(&self, id: &str) -> Result<Option<MediaMeta>, StoreError> {
        store::read_json(&self.meta_path(id))
    }

    /// Records a new media (and the sessions it already belongs to).
    pub fn put(&self, meta: &MediaMeta) -> Result<(), StoreError> {
        let _writer = self.lock();
        self.write_meta(meta)?;
        for session in meta.links.keys() {
            self.add_to_session(session, &meta.id)?;
        }
        Ok(())
    }

    /// Records that `id` was sent in `session` (in `group`); `false` if `id` is unknown.
    pub fn link(&self, id: &str, session: &str, group: Option<&str>) -> Result<bool, StoreError> {
        let _writer = self.lock();
        let Some(mut meta) = self.get(id)? else { return Ok(false) };
        if !meta.links.contains_key(session) {
            if meta.links.len() >= MAX_LINKS {
                log::warn!("media {id} is already in {MAX_LINKS} sessions; not recorded in one more");
                return Ok(true);
            }
            meta.links.insert(session.to_string(), group.map(String::from));
            self.write_meta(&meta)?;
        }
        self.add_to_session(session, id)?;
        Ok(true)
    }

    /// Forgets `session`'s media: each leaves the session, and those in no session any
    /// more lose their metadata and are answered (their bytes are the caller's to remove).
    pub fn unlink_session(&self, session: &str) -> Result<Vec<MediaMeta>, StoreError> {
        let _writer = self.lock();
        let path = self.session_path(session);
        let ids: Vec<String> = store::read_json(&path)?.unwrap_or_default();
        let mut orphaned = Vec::new();
        for id in ids {
            let Some(mut meta) = self.get(&id)? else { continue };
            meta.links.remove(session);
            if meta.links.is_empty() {
                remove_if_present(&self.meta_path(&id))?;
                orphaned.push(meta);
            } else {
                self.write_meta(&meta)?;
            }
        }
        remove_if_present(&path)?;
        Ok(orphaned)
    }

    /// Reserves `bytes` more of `owner`'s quota `limit` (their directory `owner_dir`
    /// counted first if need be); `false` when that would pass it.
    pub fn reserve(&self, owner: &str, owner_dir: &Path, bytes: u64, limit: u64) -> Result<bool, StoreError> {
        let mut usage = self.lock();
        let used = match usage.get(owner) {
            Some(used) => *used,
            None => directory_bytes(owner_dir)?,
        };
        let fits = used.saturating_add(bytes) <= limit;
        usage.insert(owner.to_string(), if fits { used + bytes } else { used });
        Ok(fits)
    }

    /// Gives `bytes` of `owner`'s quota back.
    pub fn release(&self, owner: &str, bytes: u64) {
        if let Some(used) = self.lock().get_mut(owner) {
            *used = used.saturating_sub(bytes);
        }
    }

    fn write_meta(&self, meta: &MediaMeta) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(meta).map_err(|source| StoreError::Json { path: self.meta_path(&meta.id), source })?;
        store::write_atomically(&self.meta_path(&meta.id), &bytes)
    }

    fn add_to_session(&self, session: &str, id: &str) -> Result<(), StoreError> {
        let path = self.session_path(session);
        let mut ids: Vec<String> = store::read_json(&path)?.unwrap_or_default();
        if ids.iter().any(|known| known == id) {
            return Ok(());
        }
        ids.push(id.to_string());
        let bytes = serde_json::to_vec(&ids).map_err(|source| StoreError::Json { path: path.clone(), source })?;
        store::write_atomically(&path, &bytes)
    }
}

/// The bytes of the finished files in `dir` (not the hidden ones: uploads in progress).
fn directory_bytes(dir: &Path) -> Result<u64, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(store::io_error(dir)(error)),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry.map_err(store::io_error(dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Ok(metadata) = entry.metadata() {
            if metadata.is_file() {
                total = total.saturating_add(metadata.len());
            }
        }
    }
    Ok(total)
}

/// Removes a file; one that is not there is fine.
pub fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(store::io_error(path)(error)),
    }
}
