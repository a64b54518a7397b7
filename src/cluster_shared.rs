//! The small state every node of a cluster shares besides sessions (SPEC §14): the
//! auth service's answers and each user's open connections, on Redis.
//!
//! **The seam.** Each kind of shared state has one type its callers use, an enum with
//! a local variant (the embedded node: the in-process code it always had, no await,
//! no Redis) and a cluster variant holding the type from this file. `server.rs`
//! chooses the variant once, from its `Option<Arc<Cluster>>`; callers never match on
//! it. So far: `auth::AnswerCache` (→ [`SharedAnswers`]) and
//! `limits::UserConnections` (→ [`ClusterUserConnections`]); the media index is the
//! same shape in its own module (`media::Index`, its Redis side `media/shared.rs`,
//! beside the rest of the media code). Adding a kind of shared
//! state is one small change of the same shape: its Redis calls here (a struct
//! holding the `Arc<Cluster>`), one variant on its callers' type, and one
//! `match cluster` where `server.rs` builds it.
//!
//! **Redis down never stops a user.** A shared auth answer that cannot be read is a
//! cache miss (the auth service is asked, as without a cache); a per-user count that
//! cannot be checked falls back to this node's own count (availability over the
//! cluster-wide limit: the limit is a cost bound, and every node's sessions are down
//! with Redis anyway). Each logs one warning when Redis stops answering it and one line
//! when it answers again, not one per connection. A call is skipped at once while the
//! health check (`ClusterNode`, every second) says Redis is down; a Redis that stalls
//! holds a handshake at most the connection manager's response timeout (2 s) until
//! the health check notices.
//!
//! **Crashes never block a user for good.** A node's connection counts are one field
//! per node in the user's hash, and count only while the node's alive key (refreshed
//! by its health tick, [`ALIVE_MS`]) exists: a dead node's fields are dropped by the
//! next admission of that user, and by every live node's heartbeat sweep. A node
//! keeps its own counts in memory as the truth Redis mirrors, and rewrites its fields
//! from it ("resync") at start (a node restarted under the same id forgets its old
//! connections), after Redis was unreachable, and after any write whose outcome is
//! unknown.
//!
//! Keys (the `{…}` hash tag as in `cluster.rs`): `cs:auth:{sha256}` (an answer's data
//! as JSON, `PX` = `auth.cacheTtl`; never the token), `cs:conns:{user}` (hash: node →
//! that node's open connections of the user), `cs:node-users:{node}` (set: the users a
//! node has fields for), `cs:alive:{node}` (`PX` [`ALIVE_MS`]) and `cs:count-nodes`
//! (set: the nodes that may have fields, for the sweep). The scripts build the keys
//! of other nodes and users from these prefixes: fine on one Redis (7.x), not on a
//! Redis Cluster, which this project does not use.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, RedisError, Script};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::cluster::{Cluster, ClusterError};
use crate::limits::UserCounts;

/// How long a node's alive key lives without a refresh, ms: three health ticks, so one
/// late tick does not make a node dead, and a dead node's connections stop counting
/// within about three seconds.
pub const ALIVE_MS: u64 = 3_000;

/// Key prefixes; a key is the prefix, the id, and `}`.
const ANSWER_PREFIX: &str = "cs:auth:{";
const CONNS_PREFIX: &str = "cs:conns:{";
const NODE_USERS_PREFIX: &str = "cs:node-users:{";
const ALIVE_PREFIX: &str = "cs:alive:{";
/// The nodes that may have connection counts in Redis (the sweep looks at each).
const COUNTING_NODES: &str = "cs:count-nodes";

/// `prefix`, `id`, `}`: a key with `id` as its hash tag.
pub(crate) fn tagged(prefix: &str, id: &str) -> String {
    format!("{prefix}{id}}}")
}

/// The key of a shared auth answer: `cs:auth:{digest}`.
pub fn answer_key(digest: &str) -> String {
    tagged(ANSWER_PREFIX, digest)
}

/// The key of a user's connection counts: `cs:conns:{user}`.
pub fn conns_key(user: &str) -> String {
    tagged(CONNS_PREFIX, user)
}

/// The key of the users a node counts connections for: `cs:node-users:{node}`.
pub fn node_users_key(node: &str) -> String {
    tagged(NODE_USERS_PREFIX, node)
}

/// The key that exists while `node` runs: `cs:alive:{node}`.
pub fn alive_key(node: &str) -> String {
    tagged(ALIVE_PREFIX, node)
}

/// Lowercase hex SHA-256 of `parts`, each length-prefixed (so no two different lists
/// of parts hash the same text), after a `context` that names what is hashed.
pub fn sha256_hex(context: &[u8], parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(context);
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Says once that a kind of shared state lost Redis, and once that it has it again,
/// instead of once per connection.
pub(crate) struct Outage {
    /// What users notice while Redis is down, for the warning.
    consequence: &'static str,
    down: AtomicBool,
}

impl Outage {
    pub(crate) const fn new(consequence: &'static str) -> Outage {
        Outage { consequence, down: AtomicBool::new(false) }
    }

    /// Records a failed call: a warning for the first of an outage, debug after.
    pub(crate) fn failed(&self, node: &str, reason: &dyn Display) {
        if self.begins() {
            log::warn!("cluster: node {node} cannot use Redis ({reason}); {}", self.consequence);
        } else {
            log::debug!("cluster: node {node} still cannot use Redis: {reason}");
        }
    }

    /// Records a call that reached Redis: one line when that ends an outage.
    pub(crate) fn recovered(&self, node: &str) {
        if self.ends() {
            log::info!("cluster: node {node} reaches Redis again; {} no more", self.consequence);
        }
    }

    /// Whether this failure starts an outage.
    fn begins(&self) -> bool {
        !self.down.swap(true, Ordering::Relaxed)
    }

    /// Whether this success ends an outage (a plain load while none is on).
    fn ends(&self) -> bool {
        self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed)
    }
}

/// `UserCounts::try_add`'s `max` for a connection Redis has already admitted.
const NO_LIMIT: usize = 0;

/// Why a call was not even tried.
pub(crate) const HEALTH_CHECK_FAILED: &str = "its health check fails";

/// The auth service's answers as every node sees them (cluster mode): a token verified
/// on one node is not asked about again on another while its answer lives.
pub struct SharedAnswers {
    cluster: Arc<Cluster>,
    /// `auth.cacheTtl`: each answer's `PX`.
    ttl_ms: u64,
    outage: Outage,
}

impl SharedAnswers {
    /// The shared answers of `cluster`'s nodes, each kept for `ttl` (`auth.cacheTtl`).
    pub fn new(cluster: Arc<Cluster>, ttl: Duration) -> SharedAnswers {
        SharedAnswers {
            cluster,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            outage: Outage::new("each node asks the auth service about tokens other nodes verified"),
        }
    }

    /// The answer a node stored under `digest` and how long it has left; `None` when
    /// there is none or Redis cannot be asked (the caller asks the auth service).
    pub async fn get(&self, digest: &str) -> Option<(String, Duration)> {
        if !self.cluster.is_healthy() {
            self.outage.failed(&self.cluster.node_id, &HEALTH_CHECK_FAILED);
            return None;
        }
        let key = answer_key(digest);
        let found: Result<(Option<String>, i64), RedisError> =
            redis::pipe().get(&key).pttl(&key).query_async(&mut self.cluster.commands()).await;
        match found {
            Ok((answer, left_ms)) => {
                self.outage.recovered(&self.cluster.node_id);
                let left = u64::try_from(left_ms).ok().filter(|left| *left > 0)?;
                answer.map(|answer| (answer, Duration::from_millis(left)))
            }
            Err(error) => {
                self.outage.failed(&self.cluster.node_id, &ClusterError::from(error));
                None
            }
        }
    }

    /// Stores `answer` under `digest` for `auth.cacheTtl`; a failure only logs (the
    /// other nodes ask the auth service themselves).
    pub async fn put(&self, digest: &str, answer: String) {
        if !self.cluster.is_healthy() {
            self.outage.failed(&self.cluster.node_id, &HEALTH_CHECK_FAILED);
            return;
        }
        let stored: Result<(), RedisError> =
            self.cluster.commands().pset_ex(answer_key(digest), answer, self.ttl_ms).await;
        match stored {
            Ok(()) => self.outage.recovered(&self.cluster.node_id),
            Err(error) => self.outage.failed(&self.cluster.node_id, &ClusterError::from(error)),
        }
    }
}

/// The Lua scripts of the connection counts: each check-and-write is atomic in Redis.
struct CountScripts {
    admit: Script,
    release: Script,
    heartbeat: Script,
    resync: Script,
}

impl CountScripts {
    fn new() -> CountScripts {
        CountScripts {
            // KEYS: conns:{user}, node-users:{node}. ARGV: node, max (0: none), user,
            // alive prefix.
            // Counts the fields of live nodes (this one always), drops the others';
            // 1 = admitted and counted, 0 = the user has max open.
            admit: Script::new(
                r"local fields = redis.call('HGETALL', KEYS[1])
                local total = 0
                for i = 1, #fields, 2 do
                  local node = fields[i]
                  if node == ARGV[1] or redis.call('EXISTS', ARGV[4] .. node .. '}') == 1 then
                    total = total + (tonumber(fields[i + 1]) or 0)
                  else
                    redis.call('HDEL', KEYS[1], node)
                  end
                end
                if tonumber(ARGV[2]) > 0 and total >= tonumber(ARGV[2]) then return 0 end
                redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
                redis.call('SADD', KEYS[2], ARGV[3])
                return 1",
            ),
            // KEYS: conns:{user}, node-users:{node}. ARGV: node, user.
            release: Script::new(
                r"local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                if left <= 0 then
                  redis.call('HDEL', KEYS[1], ARGV[1])
                  redis.call('SREM', KEYS[2], ARGV[2])
                end
                return left",
            ),
            // KEYS: alive:{node}, count-nodes. ARGV: node, alive ms, alive prefix,
            // node-users prefix, conns prefix. Refreshes this node's alive key, then
            // sweeps every node whose key is gone: its fields, its set, its entry.
            // 1 = the key was still there, 0 = it had lapsed (or this node starts).
            heartbeat: Script::new(
                r"local was = redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'GET')
                redis.call('SADD', KEYS[2], ARGV[1])
                for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
                  if redis.call('EXISTS', ARGV[3] .. node .. '}') == 0 then
                    local users = ARGV[4] .. node .. '}'
                    for _, user in ipairs(redis.call('SMEMBERS', users)) do
                      redis.call('HDEL', ARGV[5] .. user .. '}', node)
                    end
                    redis.call('DEL', users)
                    redis.call('SREM', KEYS[2], node)
                  end
                end
                if was then return 1 end
                return 0",
            ),
            // KEYS: node-users:{node}. ARGV: node, conns prefix, then (user, count)
            // pairs: this node's fields become exactly these.
            resync: Script::new(
                r"local counts = {}
                for i = 3, #ARGV, 2 do counts[ARGV[i]] = ARGV[i + 1] end
                for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
                  if not counts[user] then redis.call('HDEL', ARGV[2] .. user .. '}', ARGV[1]) end
                end
                redis.call('DEL', KEYS[1])
                for user, count in pairs(counts) do
                  redis.call('HSET', ARGV[2] .. user .. '}', ARGV[1], count)
                  redis.call('SADD', KEYS[1], user)
                end
                return 1",
            ),
        }
    }
}

/// Each user's open connections on every node (cluster mode), under each user's
/// `maxConnections` (0: counted, never refused).
pub struct ClusterUserConnections {
    cluster: Arc<Cluster>,
    /// This node's connections per user: the truth this node's Redis fields mirror,
    /// and the limit while Redis cannot be asked.
    local: UserCounts,
    /// Held shared by every admission and release (each a Redis call and a local
    /// change), exclusively by a resync: a resync never sees one of them half done.
    sync: RwLock<()>,
    /// Redis may not hold this node's counts as they are (the node starts, Redis was
    /// unreachable, a write's outcome is unknown, the alive key lapsed): resync.
    dirty: AtomicBool,
    outage: Outage,
    scripts: CountScripts,
}

impl ClusterUserConnections {
    /// The counts of a node that has just started (its old fields, if any, are
    /// cleared by the first resync).
    pub fn new(cluster: Arc<Cluster>) -> Arc<ClusterUserConnections> {
        Arc::new(ClusterUserConnections {
            cluster,
            local: UserCounts::default(),
            sync: RwLock::new(()),
            dirty: AtomicBool::new(true),
            outage: Outage::new("per-user maxConnections counts this node's connections only"),
            scripts: CountScripts::new(),
        })
    }

    /// Takes one of `user`'s connections unless the user has `max` open on all nodes
    /// together (on this node alone while Redis cannot be asked; 0 = no limit).
    pub async fn try_acquire(self: &Arc<Self>, user: &str, max: usize) -> Option<ClusterUserConnection> {
        let (users, user) = (self.clone(), user.to_string());
        // On its own task: a handshake dropped during the Redis call (the client left)
        // must not leave a count nobody holds; the task's unclaimed guard gives it back.
        match tokio::spawn(users.admit(user, max)).await {
            Ok(admitted) => admitted,
            Err(error) => {
                log::error!("cluster: a per-user connection check failed ({error}); the connection is refused");
                None
            }
        }
    }

    async fn admit(self: Arc<Self>, user: String, max: usize) -> Option<ClusterUserConnection> {
        if self.dirty.load(Ordering::Acquire) && self.cluster.is_healthy() {
            self.resync().await;
        }
        let admitted = {
            let _admitting = self.sync.read().await;
            match self.admit_in_redis(&user, max).await {
                Ok(admitted) => {
                    self.outage.recovered(&self.cluster.node_id);
                    // Redis decided for the whole cluster: counted here without a limit.
                    admitted && self.local.try_add(&user, NO_LIMIT)
                }
                Err(reason) => {
                    self.dirty.store(true, Ordering::Release);
                    self.outage.failed(&self.cluster.node_id, &reason);
                    self.local.try_add(&user, max)
                }
            }
        };
        admitted.then(|| ClusterUserConnection { users: self, user })
    }

    /// The admission script's verdict; `Err` when Redis cannot be asked or did not
    /// answer (then whether it counted the connection is unknown: the node is dirty).
    async fn admit_in_redis(&self, user: &str, max: usize) -> Result<bool, String> {
        if !self.cluster.is_healthy() {
            return Err(HEALTH_CHECK_FAILED.to_string());
        }
        let node = &*self.cluster.node_id;
        let mut invocation = self.scripts.admit.key(conns_key(user));
        invocation.key(node_users_key(node)).arg(node).arg(max).arg(user).arg(ALIVE_PREFIX);
        let admitted: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        admitted.map(|admitted| admitted == 1).map_err(|error| ClusterError::from(error).to_string())
    }

    /// Gives back one of `user`'s connections, here and in Redis.
    async fn release(&self, user: &str) {
        let _releasing = self.sync.read().await;
        self.local.remove(user);
        if !self.cluster.is_healthy() {
            self.dirty.store(true, Ordering::Release);
            return;
        }
        let node = &*self.cluster.node_id;
        let mut invocation = self.scripts.release.key(conns_key(user));
        invocation.key(node_users_key(node)).arg(node).arg(user);
        let released: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        match released {
            Ok(_) => self.outage.recovered(node),
            Err(error) => {
                self.dirty.store(true, Ordering::Release);
                self.outage.failed(node, &ClusterError::from(error));
            }
        }
    }

    /// One health tick (`ClusterNode`, every second): refreshes this node's alive
    /// key, sweeps dead nodes' counts, and resyncs when Redis may be behind. A tick
    /// whose health check failed (`redis_answered` false) only marks the node dirty.
    pub async fn heartbeat(&self, redis_answered: bool) {
        if !redis_answered {
            self.dirty.store(true, Ordering::Release);
            return;
        }
        let node = &*self.cluster.node_id;
        let mut invocation = self.scripts.heartbeat.key(alive_key(node));
        invocation
            .key(COUNTING_NODES)
            .arg(node)
            .arg(ALIVE_MS)
            .arg(ALIVE_PREFIX)
            .arg(NODE_USERS_PREFIX)
            .arg(CONNS_PREFIX);
        let was_alive: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        match was_alive {
            Ok(1) => {}
            Ok(_) => self.dirty.store(true, Ordering::Release),
            Err(error) => {
                self.dirty.store(true, Ordering::Release);
                log::debug!("cluster: node {node} could not refresh its alive key: {}", ClusterError::from(error));
                return;
            }
        }
        if self.dirty.load(Ordering::Acquire) {
            self.resync().await;
        }
    }

    /// Rewrites this node's fields in Redis from its own counts, with no admission or
    /// release under way; stays dirty if Redis does not take it.
    async fn resync(&self) {
        let _exclusive = self.sync.write().await;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let node = &*self.cluster.node_id;
        let counts = self.local.snapshot();
        let mut invocation = self.scripts.resync.key(node_users_key(node));
        invocation.arg(node).arg(CONNS_PREFIX);
        for (user, count) in &counts {
            invocation.arg(user).arg(*count);
        }
        let written: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        match written {
            Ok(_) => log::info!(
                "cluster: node {node} wrote its connection counts to Redis ({} users with connections here)",
                counts.len()
            ),
            Err(error) => {
                self.dirty.store(true, Ordering::Release);
                log::warn!("cluster: node {node} could not write its connection counts: {}", ClusterError::from(error));
            }
        }
    }
}

/// One of a user's open connections in cluster mode; dropping it gives the place back
/// (on a task: Redis is a network call).
pub struct ClusterUserConnection {
    users: Arc<ClusterUserConnections>,
    user: String,
}

impl std::fmt::Debug for ClusterUserConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClusterUserConnection").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Drop for ClusterUserConnection {
    fn drop(&mut self) {
        let (users, user) = (self.users.clone(), std::mem::take(&mut self.user));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { users.release(&user).await })),
            // No runtime left (the process is stopping): count it here; Redis is
            // corrected by the next resync, or forgets this node when it is gone.
            Err(_) => {
                users.local.remove(&user);
                users.dirty.store(true, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
#[path = "cluster_shared_tests.rs"]
mod tests;
