//! Media (SPEC §12): uploads in, attachments out, on disk under
//! `{media.dir}/{identity}/{mediaId}` (default `media.dir`: `{store.dir}/media`).
//!
//! A [`MediaStore`] takes an upload as a stream (never whole in memory): its bytes go
//! to a hidden temp file beside their final place, counted against
//! `channels.websocket.media.maxBytes` and the owner's `perUserBytes` as they come,
//! the first bytes of an image or a PDF checked against the declared type, then the
//! file is fsynced and renamed into place: a reader sees a whole file or none. Each
//! media has metadata (owner, type, bytes, name, and the sessions, with their group,
//! it was sent or produced in): who may read it, and what `delete_for_session`
//! removes. Where that metadata lives is the seam of `cluster_shared.rs`, chosen once:
//! JSON files beside the bytes on a node alone ([`local`]), Redis in a cluster
//! ([`shared`]), with the bytes on a directory every node mounts.
//!
//! The HTTP routes are [`http`]; what the agent is shown of a `chat.send`'s media is
//! `backend/attachments.rs`.

pub mod http;
pub mod kinds;
mod local;
mod shared;
pub mod sign;
mod slots;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::cluster::{Cluster, ClusterError};
use crate::config::{MediaSettings, Settings};
use crate::identity::SessionKey;
use crate::store::{self, StoreError};
use local::LocalIndex;
use shared::SharedIndex;
use sign::Signer;
pub use slots::UploadSlot;
use slots::UploadSlots;

/// Most sessions one media is recorded in (a user re-sending one upload in many
/// threads): past it, it is not recorded in more (so it stays when those are deleted).
pub const MAX_LINKS: usize = 64;
/// A chunked upload's quota is reserved in steps of this many bytes.
const RESERVE_STEP: u64 = 1024 * 1024;
/// Most bytes of media ids a `chat.send` may name.
pub const MAX_MEDIA_ID_BYTES: usize = 64;

/// What is known of one media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaMeta {
    pub id: String,
    /// The identity that uploaded it (or whose turn the agent produced it in).
    pub owner: String,
    /// Its type (`type/subtype`), as uploaded or as recognized.
    pub media_type: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
    /// The sessions it was sent or produced in, each with its group (if a group's).
    #[serde(default)]
    pub links: BTreeMap<String, Option<String>>,
}

impl MediaMeta {
    /// Whether it was sent to (or produced in) group `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.links.values().any(|linked| linked.as_deref() == Some(group))
    }
}

/// Where an agent's attachment goes: the turn's sender owns it, in its session.
#[derive(Debug, Clone)]
pub struct MediaOrigin {
    pub owner: String,
    pub session: SessionKey,
    pub group: Option<String>,
}

/// Why a media operation failed; the detail is for the log.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("media index: {0}")]
    Cluster(#[from] ClusterError),
    /// An agent's attachment that is not taken (outside the roots, too large…).
    #[error("{0}")]
    Refused(String),
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than channels.websocket.media.maxBytes ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("this user's media would pass channels.websocket.media.perUserBytes ({limit} bytes)")]
    Quota { limit: u64 },
    #[error("the file's first bytes are not those of {declared}")]
    NotThatType { declared: String },
    #[error("the upload is empty")]
    Empty,
    /// The request body broke off (the client went away, or sent a bad chunk).
    #[error("the request body broke off: {0}")]
    Body(String),
    /// No byte of the body came for this long.
    #[error("no byte of the upload came for {0:?}; try again")]
    Stalled(std::time::Duration),
    #[error(transparent)]
    Store(#[from] MediaError),
}

impl From<ClusterError> for UploadError {
    fn from(error: ClusterError) -> Self {
        UploadError::Store(MediaError::Cluster(error))
    }
}

impl From<StoreError> for UploadError {
    fn from(error: StoreError) -> Self {
        UploadError::Store(MediaError::Store(error))
    }
}

/// What an upload is, besides its bytes.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub owner: String,
    /// The declared type's essence (already checked against `allowedTypes`).
    pub media_type: String,
    pub name: Option<String>,
    /// The `Content-Length`, when the body has one.
    pub content_length: Option<u64>,
}

/// Where media metadata lives: chosen once, from whether the node is in a cluster.
enum Index {
    Local(LocalIndex),
    Shared(SharedIndex),
}

/// The media of this node (or cluster).
pub struct MediaStore {
    dir: PathBuf,
    settings: MediaSettings,
    index: Index,
    /// Signs the links the agent is given (only with `publicBaseUrl`).
    signer: Option<Signer>,
    /// The uploads running now, a few per user.
    uploads: Arc<UploadSlots>,
    /// An upload whose body sends nothing for this long ends (`limits.heartbeat.timeoutMs`).
    stall: std::time::Duration,
}

/// Whether `id` has the shape of a media id (so it can name a file): 1 to 64 of
/// `[A-Za-z0-9-]`.
pub fn is_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MEDIA_ID_BYTES
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

impl MediaStore {
    /// The store for `settings`: metadata in Redis when `cluster` is given. Creates
    /// the media directory (and, with `publicBaseUrl`, the link key in it).
    pub fn new(settings: &Settings, cluster: Option<&Arc<Cluster>>) -> Result<Arc<MediaStore>, StoreError> {
        let media = settings.channels.websocket.media.clone();
        let dir = media.directory(&settings.store.dir);
        fs::create_dir_all(&dir).map_err(store::io_error(&dir))?;
        let signer = match media.public_base_url.is_empty() {
            true => None,
            false => Some(Signer::load_or_create(&dir).map_err(store::io_error(&dir))?),
        };
        let index = match cluster {
            None => Index::Local(LocalIndex::new(&dir)),
            Some(cluster) => {
                if media.dir.trim().is_empty() {
                    log::warn!(
                        "cluster mode: channels.websocket.media.dir is not set, so uploads live in {} on this node only; set it to a directory every node mounts, or an upload made on one node is not found on another",
                        dir.display()
                    );
                }
                Index::Shared(SharedIndex::new(cluster.clone()))
            }
        };
        let stall = std::time::Duration::from_millis(settings.limits.heartbeat.timeout_ms);
        Ok(Arc::new(MediaStore { dir, settings: media, index, signer, uploads: Arc::default(), stall }))
    }

    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// A place for an upload of `owner` (held until dropped), unless they or the server
    /// run the most uploads at once already.
    pub fn admit_upload(&self, owner: &str) -> Option<UploadSlot> {
        self.uploads.admit(owner)
    }

    /// The directory of `owner`'s files.
    fn owner_dir(&self, owner: &str) -> PathBuf {
        self.dir.join(store::path_safe(owner))
    }

    /// Where a media's bytes are.
    pub fn file_path(&self, meta: &MediaMeta) -> PathBuf {
        self.owner_dir(&meta.owner).join(&meta.id)
    }

    /// The URL a client fetches `id` at (with its credentials): `/media/{id}` under
    /// `publicBaseUrl` (else relative), with `?groupId=` for a group's member.
    pub fn url(&self, id: &str, group: Option<&str>) -> String {
        let base = self.settings.public_base_url.trim_end_matches('/');
        match group {
            None => format!("{base}/media/{id}"),
            Some(group) => {
                let query = serde_urlencoded::to_string([("groupId", group)]).unwrap_or_default();
                format!("{base}/media/{id}?{query}")
            }
        }
    }

    /// A link the agent can fetch `id` at without credentials, valid for
    /// [`sign::LINK_SECS`]; only with `publicBaseUrl`.
    pub fn agent_link(&self, id: &str) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let expires = store::now_millis() / 1000 + sign::LINK_SECS;
        let base = self.settings.public_base_url.trim_end_matches('/');
        Some(format!("{base}/media/{id}?expires={expires}&signature={}", signer.signature(id, expires)))
    }

    /// Whether `signature` signs `id`'s link expiring at `expires`, not expired.
    pub fn link_is_valid(&self, id: &str, expires: u64, signature: &str) -> bool {
        let now = store::now_millis() / 1000;
        self.signer.as_ref().is_some_and(|signer| signer.verify(id, expires, signature, now))
    }

    /// The metadata of `id` (`None` for an unknown id, or one of no media's shape).
    pub async fn get(self: &Arc<Self>, id: &str) -> Result<Option<MediaMeta>, MediaError> {
        if !is_media_id(id) {
            return Ok(None);
        }
        match &self.index {
            Index::Local(_) => {
                let (this, id) = (self.clone(), id.to_string());
                Ok(store::off_thread(move || this.local().get(&id)).await?)
            }
            Index::Shared(shared) => Ok(shared.get(id).await?),
        }
    }

    /// The media `ids` name, each owned by `owner`; else the first id that is not
    /// (unknown, or someone else's: the caller cannot tell which).
    pub async fn owned_by(self: &Arc<Self>, ids: &[String], owner: &str) -> Result<Vec<MediaMeta>, OwnedError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(id).await.map_err(OwnedError::Store)? {
                Some(meta) if meta.owner == owner => found.push(meta),
                _ => return Err(OwnedError::NotOwned(id.clone())),
            }
        }
        Ok(found)
    }

    /// Records that `ids` were sent in `session` (in `group`): its group's members may
    /// read them, and they go when the session is deleted.
    pub async fn attach(
        self: &Arc<Self>,
        ids: &[String],
        session: &SessionKey,
        group: Option<&str>,
    ) -> Result<(), MediaError> {
        for id in ids.iter().filter(|id| is_media_id(id)) {
            match &self.index {
                Index::Local(_) => {
                    let (this, id, session, group) =
                        (self.clone(), id.clone(), session.to_string(), group.map(String::from));
                    store::off_thread(move || this.local().link(&id, &session, group.as_deref())).await?;
                }
                Index::Shared(shared) => {
                    shared.link(id, session.as_str(), group).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the media of `session` (a thread being deleted): each leaves the
    /// session, and one in no other session any more is removed, bytes and metadata,
    /// its bytes given back to its owner's quota. Answers how many were removed.
    pub async fn delete_for_session(self: &Arc<Self>, session: &SessionKey) -> Result<usize, MediaError> {
        let orphaned = match &self.index {
            Index::Local(_) => {
                let (this, session) = (self.clone(), session.to_string());
                store::off_thread(move || this.local().unlink_session(&session)).await?
            }
            Index::Shared(shared) => shared.unlink_session(session.as_str()).await?,
        };
        let removed = orphaned.len();
        for meta in orphaned {
            let path = self.file_path(&meta);
            store::off_thread(move || local::remove_if_present(&path)).await?;
            self.release(&meta.owner, meta.bytes).await;
        }
        if removed > 0 {
            log::info!("session {session}: {removed} media deleted with it");
        }
        Ok(removed)
    }

    /// The whole bytes of a media (for a `data:` URL; at most `maxBytes`).
    pub async fn read_all(self: &Arc<Self>, meta: &MediaMeta) -> Result<Vec<u8>, MediaError> {
        let path = self.file_path(meta);
        let limit = self.settings.max_bytes;
        Ok(store::off_thread(move || {
            let mut bytes = Vec::new();
            let file = fs::File::open(&path).map_err(store::io_error(&path))?;
            file.take(limit).read_to_end(&mut bytes).map_err(store::io_error(&path))?;
            Ok(bytes)
        })
        .await?)
    }

    fn local(&self) -> &LocalIndex {
        match &self.index {
            Index::Local(local) => local,
            Index::Shared(_) => unreachable!("the local index of a cluster node"),
        }
    }

    /// Reserves `bytes` of `owner`'s quota (always granted without a quota, or with
    /// `force`, which still counts them: an agent's attachment is not refused).
    async fn reserve(self: &Arc<Self>, owner: &str, bytes: u64, force: bool) -> Result<bool, UploadError> {
        let limit = match (self.settings.per_user_bytes, force) {
            (0, _) => return Ok(true),
            (_, true) => u64::MAX / 2,
            (limit, false) => limit,
        };
        match &self.index {
            Index::Local(_) => {
                let (this, owner) = (self.clone(), owner.to_string());
                let dir = self.owner_dir(&owner);
                Ok(store::off_thread(move || this.local().reserve(&owner, &dir, bytes, limit)).await?)
            }
            Index::Shared(shared) => Ok(shared.reserve(owner, bytes, limit).await?),
        }
    }

    /// Gives `bytes` of `owner`'s quota back (a failure is logged: the count is then
    /// high, never low).
    async fn release(self: &Arc<Self>, owner: &str, bytes: u64) {
        if self.settings.per_user_bytes == 0 || bytes == 0 {
            return;
        }
        match &self.index {
            Index::Local(local) => local.release(owner, bytes),
            Index::Shared(shared) => {
                if let Err(error) = shared.release(owner, bytes).await {
                    log::warn!("media: {bytes} bytes of a user's quota not given back: {error}");
                }
            }
        }
    }

    async fn put(self: &Arc<Self>, meta: &MediaMeta) -> Result<(), MediaError> {
        match &self.index {
            Index::Local(_) => {
                let (this, meta) = (self.clone(), meta.clone());
                Ok(store::off_thread(move || this.local().put(&meta)).await?)
            }
            Index::Shared(shared) => Ok(shared.put(meta).await?),
        }
    }

    /// Takes an upload: streams `body` into place (see the module's text) and records
    /// it. The type of images and PDF is checked against the first bytes.
    pub async fn upload<S, E>(self: &Arc<Self>, request: UploadRequest, mut body: S) -> Result<MediaMeta, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.settings.max_bytes;
        match request.content_length {
            Some(length) if length > limit => return Err(UploadError::TooLarge { limit }),
            Some(0) => return Err(UploadError::Empty),
            _ => {}
        }
        let mut quota = Reservation { store: self.clone(), owner: request.owner.clone(), reserved: 0 };
        if let Some(length) = request.content_length {
            quota.reserve_up_to(length).await?;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let owner_dir = self.owner_dir(&request.owner);
        tokio::fs::create_dir_all(&owner_dir).await.map_err(store::io_error(&owner_dir))?;
        let temp = TempFile(Some(owner_dir.join(format!(".{id}.part"))));
        let temp_path = temp.path().to_path_buf();
        let mut file = tokio::fs::File::create(&temp_path).await.map_err(store::io_error(&temp_path))?;
        let mut sniffer = Sniffer::new(&request.media_type);
        let mut total = 0u64;
        loop {
            let next = tokio::time::timeout(self.stall, body.next()).await;
            let Some(chunk) = next.map_err(|_| UploadError::Stalled(self.stall))? else { break };
            let chunk = chunk.map_err(|error| UploadError::Body(error.to_string()))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(UploadError::TooLarge { limit });
            }
            quota.reserve_up_to(total).await?;
            sniffer.feed(&chunk)?;
            file.write_all(&chunk).await.map_err(store::io_error(&temp_path))?;
        }
        if total == 0 {
            return Err(UploadError::Empty);
        }
        sniffer.finish()?;
        file.flush().await.map_err(store::io_error(&temp_path))?;
        file.sync_all().await.map_err(store::io_error(&temp_path))?;
        drop(file);
        let meta = MediaMeta {
            id,
            owner: request.owner,
            media_type: request.media_type,
            bytes: total,
            name: request.name,
            created: store::now_millis(),
            links: BTreeMap::new(),
        };
        self.place(temp, &meta).await?;
        quota.settle(total).await;
        log::info!("media {} uploaded: {} bytes of {} by {:?}", meta.id, meta.bytes, meta.media_type, meta.owner);
        Ok(meta)
    }

    /// Renames a finished temp file into place (durably), then records its metadata;
    /// a failure to record removes the file again.
    async fn place(self: &Arc<Self>, temp: TempFile, meta: &MediaMeta) -> Result<(), MediaError> {
        let path = self.file_path(meta);
        let placed = path.clone();
        let temp_path = temp.path().to_path_buf();
        store::off_thread(move || {
            fs::rename(&temp_path, &placed).map_err(store::io_error(&placed))?;
            if let Some(parent) = placed.parent().and_then(|parent| fs::File::open(parent).ok()) {
                let _ = parent.sync_all();
            }
            Ok(())
        })
        .await?;
        temp.disarm();
        if let Err(error) = self.put(meta).await {
            let _ = store::off_thread(move || local::remove_if_present(&path)).await;
            return Err(error);
        }
        Ok(())
    }

    /// Copies an agent's attachment, a local file, into the store (owned by the
    /// turn's sender, in its session). Only a regular file whose real path (symlinks
    /// resolved) is under `channels.websocket.media.roots`, of at most `maxBytes`.
    pub async fn import_file(
        self: &Arc<Self>,
        path: PathBuf,
        name: Option<String>,
        origin: MediaOrigin,
    ) -> Result<MediaMeta, MediaError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let owner_dir = self.owner_dir(&origin.owner);
        let temp = TempFile(Some(owner_dir.join(format!(".{id}.part"))));
        let (roots, limit, temp_path) =
            (self.settings.roots.clone(), self.settings.max_bytes, temp.path().to_path_buf());
        let (bytes, first) =
            store::off_thread(move || copy_from_roots(&path, &roots, limit, &owner_dir, &temp_path)).await?;
        let name = name.and_then(|name| kinds::clean_name(&name));
        let media_type = kinds::of_file(&first, name.as_deref());
        self.record_import(temp, id, media_type, bytes, name, origin).await
    }

    /// Stores an attachment the agent sent inline (an image in its answer).
    pub async fn import_bytes(
        self: &Arc<Self>,
        content: Bytes,
        media_type: Option<String>,
        origin: MediaOrigin,
    ) -> Result<MediaMeta, MediaError> {
        if content.len() as u64 > self.settings.max_bytes {
            return Err(MediaError::Refused(format!(
                "an inline attachment of {} bytes is larger than channels.websocket.media.maxBytes",
                content.len()
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let owner_dir = self.owner_dir(&origin.owner);
        let temp = TempFile(Some(owner_dir.join(format!(".{id}.part"))));
        let temp_path = temp.path().to_path_buf();
        let bytes = content.len() as u64;
        let sniffed = kinds::of_file(&content[..content.len().min(kinds::SNIFF_BYTES)], None);
        let media_type = match sniffed.as_str() {
            kinds::UNKNOWN_TYPE => media_type.and_then(|kind| kinds::essence(&kind)).unwrap_or(sniffed),
            _ => sniffed,
        };
        store::off_thread(move || {
            fs::create_dir_all(&owner_dir).map_err(store::io_error(&owner_dir))?;
            let mut file = fs::File::create(&temp_path).map_err(store::io_error(&temp_path))?;
            file.write_all(&content).map_err(store::io_error(&temp_path))?;
            file.sync_all().map_err(store::io_error(&temp_path))
        })
        .await?;
        self.record_import(temp, id, media_type, bytes, None, origin).await
    }

    async fn record_import(
        self: &Arc<Self>,
        temp: TempFile,
        id: String,
        media_type: String,
        bytes: u64,
        name: Option<String>,
        origin: MediaOrigin,
    ) -> Result<MediaMeta, MediaError> {
        let mut links = BTreeMap::new();
        links.insert(origin.session.to_string(), origin.group.clone());
        let meta = MediaMeta { id, owner: origin.owner, media_type, bytes, name, created: store::now_millis(), links };
        // An agent's attachment is counted, never refused for the quota.
        if let Err(error) = self.reserve(&meta.owner, bytes, true).await {
            log::warn!("media {}: not counted in its owner's quota: {error}", meta.id);
        }
        if let Err(error) = self.place(temp, &meta).await {
            self.release(&meta.owner, bytes).await;
            return Err(error);
        }
        log::info!("media {}: the agent's {} ({} bytes) stored for {:?}", meta.id, meta.media_type, bytes, meta.owner);
        Ok(meta)
    }
}

/// Why `owned_by` refused.
#[derive(Debug)]
pub enum OwnedError {
    /// This id is unknown or someone else's.
    NotOwned(String),
    Store(MediaError),
}

/// Copies `path` (an agent's file) to `temp` in `owner_dir` when its real path is
/// under one of `roots`; answers its size and first bytes.
fn copy_from_roots(
    path: &Path,
    roots: &[PathBuf],
    limit: u64,
    owner_dir: &Path,
    temp: &Path,
) -> Result<(u64, Vec<u8>), StoreError> {
    let refused = |why: &str| StoreError::Parse { path: path.to_path_buf(), detail: why.to_string() };
    let real = fs::canonicalize(path).map_err(store::io_error(path))?;
    let inside = roots.iter().filter_map(|root| fs::canonicalize(root).ok()).any(|root| real.starts_with(root));
    if !inside {
        return Err(refused("its real path is not under channels.websocket.media.roots"));
    }
    // Opening a FIFO or a device blocks (or reads without end): only a regular file
    // is opened, and checked again once open.
    if !fs::metadata(&real).map_err(store::io_error(&real))?.is_file() {
        return Err(refused("not a regular file"));
    }
    let mut source = fs::File::open(&real).map_err(store::io_error(&real))?;
    let metadata = source.metadata().map_err(store::io_error(&real))?;
    if !metadata.is_file() {
        return Err(refused("not a regular file"));
    }
    if metadata.len() > limit {
        return Err(refused("larger than channels.websocket.media.maxBytes"));
    }
    fs::create_dir_all(owner_dir).map_err(store::io_error(owner_dir))?;
    let mut target = fs::File::create(temp).map_err(store::io_error(temp))?;
    let mut first = vec![0u8; kinds::SNIFF_BYTES];
    let mut head = 0;
    while head < first.len() {
        match source.read(&mut first[head..]).map_err(store::io_error(&real))? {
            0 => break,
            read => head += read,
        }
    }
    first.truncate(head);
    target.write_all(&first).map_err(store::io_error(temp))?;
    // `limit` bounds a file that grows while it is copied.
    let rest = io::copy(&mut (&mut source).take((limit + 1).saturating_sub(head as u64)), &mut target)
        .map_err(store::io_error(temp))?;
    let bytes = head as u64 + rest;
    if bytes > limit {
        return Err(refused("larger than channels.websocket.media.maxBytes"));
    }
    target.sync_all().map_err(store::io_error(temp))?;
    Ok((bytes, first))
}

/// A temp file removed when dropped, unless disarmed (renamed into place).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // A small unlink; done here so that a dropped upload (its client gone)
            // leaves nothing behind.
            let _ = fs::remove_file(path);
        }
    }
}

/// An upload's bytes reserved under its owner's quota; what is not settled is given
/// back when it is dropped (a refused or broken-off upload).
struct Reservation {
    store: Arc<MediaStore>,
    owner: String,
    reserved: u64,
}

impl Reservation {
    /// Makes sure `total` bytes are reserved: a whole [`RESERVE_STEP`] when it fits
    /// (a chunked body then costs few reservations), else exactly what is missing.
    async fn reserve_up_to(&mut self, total: u64) -> Result<(), UploadError> {
        if total <= self.reserved || self.store.settings.per_user_bytes == 0 {
            return Ok(());
        }
        let needed = total - self.reserved;
        let step = needed.max(RESERVE_STEP);
        if step > needed && self.store.reserve(&self.owner, step, false).await? {
            self.reserved += step;
            return Ok(());
        }
        if self.store.reserve(&self.owner, needed, false).await? {
            self.reserved += needed;
            return Ok(());
        }
        Err(UploadError::Quota { limit: self.store.settings.per_user_bytes })
    }

    /// The upload is stored with `bytes`: what was reserved beyond them is given back.
    async fn settle(mut self, bytes: u64) {
        let excess = self.reserved.saturating_sub(bytes);
        self.reserved = 0;
        self.store.release(&self.owner, excess).await;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.reserved == 0 {
            return;
        }
        let (store, owner, bytes) = (self.store.clone(), std::mem::take(&mut self.owner), self.reserved);
        match &store.index {
            Index::Local(local) => local.release(&owner, bytes),
            Index::Shared(_) => {
                actix_rt::spawn(async move { store.release(&owner, bytes).await });
            }
        }
    }
}

/// Checks an upload's first bytes against its declared type, as they come.
struct Sniffer {
    declared: String,
    /// The first bytes, while the check is pending.
    head: Option<Vec<u8>>,
}

impl Sniffer {
    fn new(declared: &str) -> Sniffer {
        let head = kinds::needs_magic(declared).then(|| Vec::with_capacity(kinds::SNIFF_BYTES));
        Sniffer { declared: declared.to_string(), head }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        let Some(head) = self.head.as_mut() else { return Ok(()) };
        let wanted = kinds::SNIFF_BYTES - head.len();
        head.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
        if head.len() >= kinds::SNIFF_BYTES {
            return self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), UploadError> {
        match self.head.take() {
            Some(head) if !kinds::matches_bytes(&self.declared, &head) => {
                Err(UploadError::NotThatType { declared: self.declared.clone() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod tests;
