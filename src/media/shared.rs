//! The media index of a cluster, in Redis (SPEC §14: metadata in Redis, bytes on a
//! directory every node shares). Keys (the `{…}` hash tag as in `cluster.rs`):
//! `cs:media:{id}` (a hash: `owner`, `type`, `bytes`, `name`, `created`, and one field
//! `s:{sessionKey}` per session the media was sent or produced in, whose value is the
//! group id or ""), `cs:media-session:{sessionKey}` (a set of media ids) and
//! `cs:media-bytes:{owner}` (the bytes a user holds). Each change is one Lua script,
//! so two nodes never interleave one. Like the other scripts of this project they name
//! keys of several hash tags: fine on one Redis, not on a Redis Cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redis::{AsyncCommands, Script};

use super::{MediaMeta, MAX_LINKS};
use crate::cluster::{Cluster, ClusterError};

const SESSION_FIELD: &str = "s:";

fn media_key(id: &str) -> String {
    format!("cs:media:{{{id}}}")
}

fn session_key(session: &str) -> String {
    format!("cs:media-session:{{{session}}}")
}

fn bytes_key(owner: &str) -> String {
    format!("cs:media-bytes:{{{owner}}}")
}

/// The index, in Redis.
pub struct SharedIndex {
    cluster: Arc<Cluster>,
    link: Script,
    unlink: Script,
    reserve: Script,
    release: Script,
}

impl SharedIndex {
    pub fn new(cluster: Arc<Cluster>) -> SharedIndex {
        SharedIndex {
            cluster,
            // KEYS: media, session set. ARGV: field, group, max links. 0: no such media.
            link: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
                  local links = 0
                  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
                    if string.sub(field, 1, 2) == 's:' then links = links + 1 end
                  end
                  if links >= tonumber(ARGV[3]) then return 2 end
                  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
                end
                redis.call('SADD', KEYS[2], ARGV[4])
                return 1",
            ),
            // KEYS: media. ARGV: field. The media's fields when it is in no session any
            // more (then deleted), else an empty list.
            unlink: Script::new(
                r"redis.call('HDEL', KEYS[1], ARGV[1])
                for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
                  if string.sub(field, 1, 2) == 's:' then return {} end
                end
                local fields = redis.call('HGETALL', KEYS[1])
                redis.call('DEL', KEYS[1])
                return fields",
            ),
            // KEYS: bytes. ARGV: bytes, limit (0: none). 1 reserved, 0 over the limit.
            reserve: Script::new(
                r"local used = redis.call('INCRBY', KEYS[1], ARGV[1])
                if tonumber(ARGV[2]) > 0 and used > tonumber(ARGV[2]) then
                  redis.call('DECRBY', KEYS[1], ARGV[1])
                  return 0
                end
                return 1",
            ),
            release: Script::new(
                r"local used = redis.call('DECRBY', KEYS[1], ARGV[1])
                if used <= 0 then redis.call('DEL', KEYS[1]) end
                return 1",
            ),
        }
    }

    /// The metadata of `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<MediaMeta>, ClusterError> {
        let fields: HashMap<String, String> = self.cluster.commands().hgetall(media_key(id)).await?;
        Ok(meta_from_fields(id, fields))
    }

    /// Records a new media (and the sessions it already belongs to).
    pub async fn put(&self, meta: &MediaMeta) -> Result<(), ClusterError> {
        let mut fields = vec![
            ("owner".to_string(), meta.owner.clone()),
            ("type".to_string(), meta.media_type.clone()),
            ("bytes".to_string(), meta.bytes.to_string()),
            ("created".to_string(), meta.created.to_string()),
        ];
        if let Some(name) = &meta.name {
            fields.push(("name".to_string(), name.clone()));
        }
        for (session, group) in &meta.links {
            fields.push((format!("{SESSION_FIELD}{session}"), group.clone().unwrap_or_default()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic().hset_multiple(media_key(&meta.id), &fields).ignore();
        for session in meta.links.keys() {
            pipe.sadd(session_key(session), &meta.id).ignore();
        }
        let () = pipe.query_async(&mut self.cluster.commands()).await?;
        Ok(())
    }

    /// Records that `id` was sent in `session` (in `group`); `false` if `id` is unknown.
    pub async fn link(&self, id: &str, session: &str, group: Option<&str>) -> Result<bool, ClusterError> {
        let linked: i64 = self
            .link
            .key(media_key(id))
            .key(session_key(session))
            .arg(format!("{SESSION_FIELD}{session}"))
            .arg(group.unwrap_or_default())
            .arg(MAX_LINKS)
            .arg(id)
            .invoke_async(&mut self.cluster.commands())
            .await?;
        if linked == 2 {
            log::warn!("media {id} is already in {MAX_LINKS} sessions; not recorded in one more");
        }
        Ok(linked != 0)
    }

    /// Forgets `session`'s media; answers those in no session any more (deleted from
    /// Redis; their bytes are the caller's to remove).
    pub async fn unlink_session(&self, session: &str) -> Result<Vec<MediaMeta>, ClusterError> {
        let ids: Vec<String> = self.cluster.commands().smembers(session_key(session)).await?;
        let field = format!("{SESSION_FIELD}{session}");
        let mut orphaned = Vec::new();
        for id in ids {
            let fields: Vec<String> =
                self.unlink.key(media_key(&id)).arg(&field).invoke_async(&mut self.cluster.commands()).await?;
            let map: HashMap<String, String> =
                fields.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            orphaned.extend(meta_from_fields(&id, map));
        }
        let () = self.cluster.commands().del(session_key(session)).await?;
        Ok(orphaned)
    }

    /// Reserves `bytes` more of `owner`'s quota `limit`; `false` when that would pass it.
    pub async fn reserve(&self, owner: &str, bytes: u64, limit: u64) -> Result<bool, ClusterError> {
        let reserved: i64 =
            self.reserve.key(bytes_key(owner)).arg(bytes).arg(limit).invoke_async(&mut self.cluster.commands()).await?;
        Ok(reserved == 1)
    }

    /// Gives `bytes` of `owner`'s quota back.
    pub async fn release(&self, owner: &str, bytes: u64) -> Result<(), ClusterError> {
        let _: i64 = self.release.key(bytes_key(owner)).arg(bytes).invoke_async(&mut self.cluster.commands()).await?;
        Ok(())
    }
}

/// A media's metadata from its hash's fields (`None` for no hash, or one without owner).
fn meta_from_fields(id: &str, fields: HashMap<String, String>) -> Option<MediaMeta> {
    let owner = fields.get("owner")?.clone();
    let links: BTreeMap<String, Option<String>> = fields
        .iter()
        .filter_map(|(field, group)| {
            let session = field.strip_prefix(SESSION_FIELD)?;
            Some((session.to_string(), Some(group.clone()).filter(|group| !group.is_empty())))
        })
        .collect();
    Some(MediaMeta {
        id: id.to_string(),
        owner,
        media_type: fields.get("type").cloned().unwrap_or_else(|| super::kinds::UNKNOWN_TYPE.to_string()),
        bytes: fields.get("bytes").and_then(|bytes| bytes.parse().ok()).unwrap_or(0),
        name: fields.get("name").cloned(),
        created: fields.get("created").and_then(|created| created.parse().ok()).unwrap_or(0),
        links,
    })
}
