//! The per-connection and per-server bounds that are plain data: the inbound rate
//! limit (`limits.messagesPerMinute`), the count of open connections
//! (`limits.maxConnections`) and of each user's (`limits.perUser.maxConnections`), and
//! byte budgets (`limits.outboundBytes` per connection, `limits.maxPendingFragmentBytes`
//! per server).
//!
//! Both sit on paths a hostile client can drive as fast as it likes, so neither
//! allocates nor locks: a [`RateLimiter`] is a few integers owned by one
//! `ConnectionActor` (checked on every inbound message, before it is parsed), and
//! [`ConnectionSlots`] is one atomic counter shared by every worker (taken in the
//! handshake, before the auth service is asked anything). Nothing here knows a socket,
//! an actor or the wire format. Each user's count is the exception that may leave the
//! process: in cluster mode it is every node's ([`UserConnections::Cluster`], whose
//! Redis side is `cluster_shared.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::cluster_shared::{ClusterUserConnection, ClusterUserConnections};

/// A token is counted in this many grains, so that refilling `messagesPerMinute`
/// tokens per 60 000 ms is exactly `messagesPerMinute` grains per millisecond: integer
/// arithmetic, no rounding drift.
const GRAINS_PER_TOKEN: u64 = 60_000;

/// How many `rate_limited` warnings a connection gets within [`FLOOD_WINDOW`]; the
/// next refused message closes it with 1008.
pub const FLOOD_WARNINGS: u32 = 10;

/// The window in which refused messages are counted, starting at the first refusal.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(60);

/// A token bucket: `capacity` tokens, refilled at `capacity` per minute.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    grains: u64,
    capacity_grains: u64,
    /// Grains added per whole millisecond (= tokens per minute).
    grains_per_ms: u64,
    /// Refills are counted in whole milliseconds from here, so the fractions of a
    /// millisecond between two close messages are not lost.
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens, refilled at `per_minute` per 60 s.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let capacity_grains = u64::from(per_minute) * GRAINS_PER_TOKEN;
        TokenBucket { grains: capacity_grains, capacity_grains, grains_per_ms: u64::from(per_minute), last_refill: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.grains >= GRAINS_PER_TOKEN {
            self.grains -= GRAINS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms == 0 {
            return;
        }
        self.last_refill = self.last_refill.checked_add(Duration::from_millis(elapsed_ms)).unwrap_or(now);
        let added = elapsed_ms.saturating_mul(self.grains_per_ms);
        self.grains = self.grains.saturating_add(added).min(self.capacity_grains);
    }
}

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Accept,
    /// Over the limit: refuse it with `chat.error` `rate_limited`, route nothing.
    Warn,
    /// Over the limit after [`FLOOD_WARNINGS`] warnings within [`FLOOD_WINDOW`]:
    /// close the connection with 1008.
    Close,
}

/// `limits.messagesPerMinute` for one connection: the bucket, and the count of
/// refusals that turns a client that ignores its warnings into a closed one.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    /// Refusals since `window_start`.
    refused: u32,
    /// When the current flood window began (its first refusal); `None` before any.
    window_start: Option<Instant>,
}

impl RateLimiter {
    /// A limiter allowing bursts of `per_minute` messages and `per_minute` per minute.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        RateLimiter { bucket: TokenBucket::per_minute(per_minute, now), refused: 0, window_start: None }
    }

    /// Counts one inbound message (any data message, whatever it holds).
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            return Verdict::Accept;
        }
        let window_over = self.window_start.is_none_or(|start| now.saturating_duration_since(start) >= FLOOD_WINDOW);
        if window_over {
            self.window_start = Some(now);
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > FLOOD_WARNINGS {
            Verdict::Close
        } else {
            Verdict::Warn
        }
    }
}

/// Why a handshake got no connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    /// `limits.maxConnections` sockets are open.
    Full,
    /// The server is shutting down and takes no new sockets.
    ShuttingDown,
}

/// The open WebSocket connections of the whole server, bounded by
/// `limits.maxConnections`: one atomic counter, no lock.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    max: usize,
    /// Set once at shutdown: every later handshake is refused.
    closed: AtomicBool,
}

impl ConnectionSlots {
    /// Room for `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots { open: AtomicUsize::new(0), max, closed: AtomicBool::new(false) })
    }

    /// Takes a slot for a new connection, or says why there is none. The slot is
    /// given back when the returned guard is dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Result<ConnectionSlot, SlotRefusal> {
        if self.is_closed() {
            return Err(SlotRefusal::ShuttingDown);
        }
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.max).then_some(open + 1))
            .map_err(|_| SlotRefusal::Full)?;
        Ok(ConnectionSlot { slots: self.clone() })
    }

    /// How many slots are taken.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Refuses every new connection from now on (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the server is refusing new connections because it shuts down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// One taken connection slot; dropping it frees the slot. A `ConnectionActor` holds
/// it for its whole life; a handshake that fails later (auth) drops it at once.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<ConnectionSlots>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes that may be held at once against one bound, shared by whoever holds them.
/// Lock-free: a reservation is one compare-and-swap.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget { used: AtomicUsize::new(0), limit })
    }

    /// Takes `bytes` if they fit under the limit.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes` if what is held now is under the limit: the one message that
    /// crosses it still goes (a single message larger than the whole budget must not
    /// be refused on an empty queue), the next one does not.
    pub fn try_admit(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit).then(|| used.saturating_add(bytes))
            })
            .is_ok()
    }

    /// Gives back `bytes` taken earlier.
    pub fn release(&self, bytes: usize) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Open connections per user, under each user's `maxConnections` (`limits.perUser`,
/// `limits.guest`, or the auth service's `data.limits`; 0 = no limit). Taken in the
/// handshake once the user is known, held by the connection. The one type the
/// handshake uses; where the counts live is chosen once, in `server.rs` (see
/// `cluster_shared.rs` for the seam).
#[derive(Clone)]
pub enum UserConnections {
    /// This node's connections only (the embedded node): one map, one lock, no await.
    Local(Arc<LocalUserConnections>),
    /// Every node's connections, counted in Redis (cluster mode).
    Cluster(Arc<ClusterUserConnections>),
}

impl UserConnections {
    /// Counts in Redis when the node is in a cluster (any user may have a limit: a
    /// guest, or a tier from the auth service); in this process otherwise.
    pub fn for_settings(cluster: Option<&Arc<Cluster>>) -> UserConnections {
        match cluster {
            Some(cluster) => UserConnections::Cluster(ClusterUserConnections::new(cluster.clone())),
            None => UserConnections::Local(LocalUserConnections::new()),
        }
    }

    /// Takes one of `user`'s connections, or `None` when the user has `max` open (0 =
    /// no limit).
    pub async fn try_acquire(&self, user: &str, max: u64) -> Option<UserConnection> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        match self {
            UserConnections::Local(users) => users.try_acquire(user, max).map(UserConnection::Local),
            UserConnections::Cluster(users) => users.try_acquire(user, max).await.map(UserConnection::Cluster),
        }
    }

    /// One cluster health tick (see `ClusterUserConnections::heartbeat`); nothing to
    /// do for local counts.
    pub async fn heartbeat(&self, redis_answered: bool) {
        if let UserConnections::Cluster(users) = self {
            users.heartbeat(redis_answered).await;
        }
    }
}

/// One of a user's open connections; dropping it gives the place back.
#[derive(Debug)]
pub enum UserConnection {
    /// Counted in this process.
    Local(LocalUserConnection),
    /// Counted in Redis too; given back there on a task.
    Cluster(ClusterUserConnection),
}

/// Each user's open connections on this node: one map behind one lock, held for one
/// map operation. The embedded limit, and cluster mode's local truth.
#[derive(Debug, Default)]
pub struct UserCounts {
    open: Mutex<HashMap<String, usize>>,
}

impl UserCounts {
    /// Counts one more of `user`'s connections unless the user has `max` (0: no limit).
    pub fn try_add(&self, user: &str, max: usize) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(user.to_string()).or_insert(0);
        if max > 0 && *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// Counts one of `user`'s connections less.
    pub fn remove(&self, user: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                open.remove(user);
            }
        }
    }

    /// Every user with connections, and how many.
    pub fn snapshot(&self) -> Vec<(String, usize)> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.iter().map(|(user, count)| (user.clone(), *count)).collect()
    }
}

/// Open connections per user on this node alone: the embedded limit, unchanged by
/// cluster mode (one lock, no await).
#[derive(Debug, Default)]
pub struct LocalUserConnections {
    counts: UserCounts,
}

impl LocalUserConnections {
    pub fn new() -> Arc<Self> {
        Arc::new(LocalUserConnections::default())
    }

    /// Takes one of `user`'s connections, or `None` when the user has `max` open (0 =
    /// no limit).
    pub fn try_acquire(self: &Arc<Self>, user: &str, max: usize) -> Option<LocalUserConnection> {
        self.counts.try_add(user, max).then(|| LocalUserConnection { users: self.clone(), user: user.to_string() })
    }
}

/// One of a user's open connections on this node; dropping it gives the place back.
#[derive(Debug)]
pub struct LocalUserConnection {
    users: Arc<LocalUserConnections>,
    user: String,
}

impl Drop for LocalUserConnection {
    fn drop(&mut self) {
        self.users.counts.remove(&self.user);
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
