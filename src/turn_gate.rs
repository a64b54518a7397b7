//! `limits.perUser.concurrentTurns`: how many turns of one user run at once, across
//! all of their sessions (SPEC §13). A session asks the gate before it starts a turn
//! and holds the [`TurnPermit`] while the turn runs; dropping the permit (the turn
//! ended, however: answered, failed, timed out, aborted, cut by the shutdown or by a
//! lost lease, or the session stopped) gives the place back. A turn that finds the
//! user's places taken is not refused: it waits at the head of its session's queue,
//! and the session is woken ([`SlotFreed`]) when one of the user's turns ends here (in
//! a cluster it also asks again every [`CLUSTER_RETRY`]: a place freed on another node
//! wakes no one here).
//!
//! One node alone the count is one map behind one lock ([`LocalGate`]), held for one
//! map operation. In a cluster it is a Redis sorted set per user whose members expire
//! unless their node refreshes them (`cluster_tenancy.rs`), so a dead node's places
//! come back within [`crate::cluster_tenancy::PERMIT_TTL_MS`]; this node's own count is
//! kept here too, as the limit while Redis cannot be asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Message, Recipient};
use futures_util::future::LocalBoxFuture;

use crate::cluster_tenancy::ClusterTenancy;
use crate::identity::SessionKey;

/// How often, in a cluster, a waiting session asks the gate again.
pub const CLUSTER_RETRY: Duration = Duration::from_millis(200);

/// To a waiting session: one of its user's turns ended; ask again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlotFreed;

/// What asking the gate gave: a permit, or `None` (the session was registered to be
/// woken); at once, or after a Redis call.
pub enum Acquire {
    Now(Option<TurnPermit>),
    Later(LocalBoxFuture<'static, Option<TurnPermit>>),
}

/// The gate, one per server.
#[derive(Clone)]
pub enum TurnGate {
    Local(Arc<LocalGate>),
    Cluster { local: Arc<LocalGate>, shared: Arc<ClusterTenancy> },
}

impl TurnGate {
    /// Takes one of `user`'s `max` places (0 = no limit) for a turn of `session`, or
    /// registers `waiter` to be woken when one of the user's turns ends.
    pub fn acquire(&self, user: &str, max: u64, session: &SessionKey, waiter: Recipient<SlotFreed>) -> Acquire {
        match self {
            TurnGate::Local(local) => {
                Acquire::Now(local.try_take(user, max, session, Some(waiter)).map(|id| TurnPermit {
                    local: local.clone(),
                    user: user.to_string(),
                    id,
                    shared: None,
                }))
            }
            TurnGate::Cluster { local, shared } => {
                let (local, shared, user, session) = (local.clone(), shared.clone(), user.to_string(), session.clone());
                Acquire::Later(Box::pin(async move { shared.acquire_turn(&local, &user, max, &session, waiter).await }))
            }
        }
    }

    /// How long a session that was told to wait waits before asking again by itself
    /// (`None`: it is woken).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TurnGate::Local(_) => None,
            TurnGate::Cluster { .. } => Some(CLUSTER_RETRY),
        }
    }

    /// The sessions in which `user` has a turn running on this node.
    pub fn running_here(&self, user: &str) -> Vec<SessionKey> {
        let local = match self {
            TurnGate::Local(local) | TurnGate::Cluster { local, .. } => local,
        };
        local.running(user)
    }
}

/// Each user's running turns (and waiting sessions) on this node.
#[derive(Default)]
pub struct LocalGate {
    users: Mutex<HashMap<String, UserTurns>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct UserTurns {
    running: Vec<(u64, SessionKey)>,
    /// Sessions to wake when a turn ends, one entry per session.
    waiters: Vec<(SessionKey, Recipient<SlotFreed>)>,
}

impl LocalGate {
    pub fn new() -> Arc<LocalGate> {
        Arc::new(LocalGate::default())
    }

    /// Takes a place (its id) if `user` runs fewer than `max` turns here (0 = no
    /// limit); else registers `waiter` (when given) for `session`.
    pub fn try_take(
        &self,
        user: &str,
        max: u64,
        session: &SessionKey,
        waiter: Option<Recipient<SlotFreed>>,
    ) -> Option<u64> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let turns = users.entry(user.to_string()).or_default();
        if max == 0 || (turns.running.len() as u64) < max {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            turns.running.push((id, session.clone()));
            turns.waiters.retain(|(waiting, _)| waiting != session);
            return Some(id);
        }
        if let Some(waiter) = waiter {
            if !turns.waiters.iter().any(|(waiting, _)| waiting == session) {
                turns.waiters.push((session.clone(), waiter));
            }
        }
        None
    }

    /// Registers `waiter` for `session` (cluster mode: Redis said the user is full).
    pub fn wait(&self, user: &str, session: &SessionKey, waiter: Recipient<SlotFreed>) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let turns = users.entry(user.to_string()).or_default();
        if !turns.waiters.iter().any(|(waiting, _)| waiting == session) {
            turns.waiters.push((session.clone(), waiter));
        }
    }

    /// Gives place `id` back; answers the sessions to wake (all of the user's
    /// waiters: each asks again, the ones that lose wait again).
    pub fn give_back(&self, user: &str, id: u64) -> Vec<Recipient<SlotFreed>> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(turns) = users.get_mut(user) else { return Vec::new() };
        turns.running.retain(|(running, _)| *running != id);
        let waiters: Vec<_> = turns.waiters.drain(..).map(|(_, waiter)| waiter).collect();
        if turns.running.is_empty() {
            users.remove(user);
        }
        waiters
    }

    /// The sessions in which `user` has a turn running.
    pub fn running(&self, user: &str) -> Vec<SessionKey> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users
            .get(user)
            .map(|turns| turns.running.iter().map(|(_, session)| session.clone()).collect())
            .unwrap_or_default()
    }
}

/// Wakes `waiters` (a stopped session's wake is dropped).
pub fn wake(waiters: Vec<Recipient<SlotFreed>>) {
    for waiter in waiters {
        waiter.do_send(SlotFreed);
    }
}

/// One running turn's place; dropping it gives the place back and wakes the user's
/// waiting sessions (in a cluster, once Redis has it back).
pub struct TurnPermit {
    local: Arc<LocalGate>,
    user: String,
    id: u64,
    /// Cluster mode: the Redis side, and this permit's member there.
    shared: Option<(Arc<ClusterTenancy>, String)>,
}

impl TurnPermit {
    /// A permit counted here (and, with `shared`, in Redis).
    pub fn new(local: Arc<LocalGate>, user: String, id: u64, shared: Option<(Arc<ClusterTenancy>, String)>) -> Self {
        TurnPermit { local, user, id, shared }
    }

    /// Whose turn it is for.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl std::fmt::Debug for TurnPermit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TurnPermit").field("user", &self.user).field("id", &self.id).finish_non_exhaustive()
    }
}

impl Drop for TurnPermit {
    fn drop(&mut self) {
        let waiters = self.local.give_back(&self.user, self.id);
        let Some((shared, member)) = self.shared.take() else { return wake(waiters) };
        shared.forget_turn(&member);
        let user = std::mem::take(&mut self.user);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                shared.release_turn(&user, &member).await;
                wake(waiters);
            })),
            // No runtime left (the process is stopping): the member expires in Redis.
            Err(_) => wake(waiters),
        }
    }
}

#[cfg(test)]
#[path = "turn_gate_tests.rs"]
mod tests;
