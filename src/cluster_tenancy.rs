//! Per-user limits and usage shared by every node of a cluster (SPEC §13, §14): the
//! Redis side of `quota.rs` and `turn_gate.rs`, one Lua script per check-and-write so
//! that each is atomic whatever the other nodes do. Times are Redis's own (`TIME`), so
//! the nodes' clocks need not agree.
//!
//! Keys (the `{…}` hash tag as in `cluster.rs`; every one expires):
//! - `cs:turns:{user}`: sorted set, one member per turn taken in the last 60 s (score:
//!   its time, ms): `turnsPerMinute` as a sliding window (`PX` 60 s).
//! - `cs:usage:{user}:YYYY-MM-DD`: hash `turns`, `promptTokens`, `completionTokens`,
//!   `estimatedTokens`, counted with `HINCRBY` (atomic across nodes); it expires
//!   `store.usageRetentionDays` after its last write. `tokensPerDay` reads it.
//! - `cs:user-sessions:{user}` (sorted set: session key by last activity) and
//!   `cs:user-session-use:{user}` (hash: `turns\n{key}`, `tokens\n{key}`): the sessions
//!   the user ran turns in, at most `usage::MAX_SESSIONS_PER_USER` (the least recently
//!   used dropped), expiring with the usage.
//! - `cs:running:{user}`: sorted set of the user's running turns (`concurrentTurns`),
//!   member `{uuid}\n{session key}`, score the time it expires unless its node refreshes
//!   it (every second, on the health tick): a dead node's turns stop counting within
//!   [`PERMIT_TTL_MS`].
//!
//! Redis unreachable: a turn check fails open (the session's own turn goes through its
//! cluster checks, which refuse it while Redis is down), usage of a turn is logged as
//! lost, and the gate counts this node's turns only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use actix::Recipient;
use redis::{RedisError, Script};

use crate::cluster::{Cluster, ClusterError};
use crate::cluster_shared::{tagged, Outage, HEALTH_CHECK_FAILED};
use crate::identity::SessionKey;
use crate::turn_gate::{LocalGate, SlotFreed, TurnPermit};
use crate::usage::{trim_sessions, Day, SessionUse, UsageCounts, MAX_SESSIONS_PER_USER};

/// How long a running turn counts in Redis without its node refreshing it, ms.
pub const PERMIT_TTL_MS: u64 = 5_000;

const TURNS_PREFIX: &str = "cs:turns:{";
const USAGE_PREFIX: &str = "cs:usage:{";
const SESSIONS_PREFIX: &str = "cs:user-sessions:{";
const SESSION_USE_PREFIX: &str = "cs:user-session-use:{";
const RUNNING_PREFIX: &str = "cs:running:{";

/// `cs:usage:{user}:YYYY-MM-DD`.
pub fn usage_key(user: &str, day: Day) -> String {
    format!("{USAGE_PREFIX}{user}}}:{day}")
}

/// The sessions by last activity, their turns and tokens, the running members.
type SessionsReply = (Vec<(String, u64)>, HashMap<String, u64>, Vec<String>);

/// What the turn check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnVerdict {
    Allowed,
    /// `turnsPerMinute` turns were taken in the last 60 s; the oldest leaves the
    /// window in this many ms.
    TooManyTurns {
        retry_after_ms: u64,
    },
    /// The day's tokens reached `tokensPerDay`.
    NoTokensLeft,
}

struct Scripts {
    check_turn: Script,
    record: Script,
    acquire: Script,
    refresh: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            // KEYS: turns window, today's usage. ARGV: turnsPerMinute (0: none),
            // tokensPerDay (0: none), a unique id. {0} allowed (the turn counted),
            // {1, retry ms} too many turns, {2, 0} no tokens left.
            check_turn: Script::new(
                r"local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                local tokens = tonumber(ARGV[2])
                if tokens > 0 then
                  local used = tonumber(redis.call('HGET', KEYS[2], 'promptTokens') or '0')
                    + tonumber(redis.call('HGET', KEYS[2], 'completionTokens') or '0')
                  if used >= tokens then return {2, 0} end
                end
                local turns = tonumber(ARGV[1])
                if turns > 0 then
                  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
                  if redis.call('ZCARD', KEYS[1]) >= turns then
                    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
                    local wait = tonumber(oldest[2]) + 60000 - now
                    if wait < 1 then wait = 1 end
                    return {1, wait}
                  end
                  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
                  redis.call('PEXPIRE', KEYS[1], 60000)
                end
                return {0, 0}",
            ),
            // KEYS: the day's usage, user sessions, session use. ARGV: turns, prompt,
            // completion, estimated, retention seconds, session key, max sessions.
            record: Script::new(
                r"redis.call('HINCRBY', KEYS[1], 'turns', ARGV[1])
                redis.call('HINCRBY', KEYS[1], 'promptTokens', ARGV[2])
                redis.call('HINCRBY', KEYS[1], 'completionTokens', ARGV[3])
                redis.call('HINCRBY', KEYS[1], 'estimatedTokens', ARGV[4])
                redis.call('EXPIRE', KEYS[1], ARGV[5])
                local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                redis.call('ZADD', KEYS[2], now, ARGV[6])
                redis.call('HINCRBY', KEYS[3], 'turns\n' .. ARGV[6], ARGV[1])
                redis.call('HINCRBY', KEYS[3], 'tokens\n' .. ARGV[6], tonumber(ARGV[2]) + tonumber(ARGV[3]))
                local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
                if extra > 0 then
                  for _, gone in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do
                    redis.call('HDEL', KEYS[3], 'turns\n' .. gone, 'tokens\n' .. gone)
                  end
                  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
                end
                redis.call('EXPIRE', KEYS[2], ARGV[5])
                redis.call('EXPIRE', KEYS[3], ARGV[5])
                return 1",
            ),
            // KEYS: running. ARGV: max (0: none), ttl ms, member. 1 = taken.
            acquire: Script::new(
                r"local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
                local max = tonumber(ARGV[1])
                if max > 0 and redis.call('ZCARD', KEYS[1]) >= max then return 0 end
                redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
                redis.call('PEXPIRE', KEYS[1], ARGV[2])
                return 1",
            ),
            // ARGV: ttl ms, running prefix, then (user, member) pairs: each member lives
            // another ttl, and one that expired meanwhile (Redis slow past the ttl) is
            // added back: its turn still runs, this node's list is the truth.
            refresh: Script::new(
                r"local t = redis.call('TIME')
                local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                local ttl = tonumber(ARGV[1])
                for i = 3, #ARGV, 2 do
                  local key = ARGV[2] .. ARGV[i] .. '}'
                  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
                  redis.call('PEXPIRE', key, ttl)
                end
                return 1",
            ),
        }
    }
}

/// The cluster's per-user limits and usage.
pub struct ClusterTenancy {
    cluster: Arc<Cluster>,
    /// `store.usageRetentionDays`, in seconds: the usage keys' TTL.
    retention_secs: u64,
    scripts: Scripts,
    /// This node's running turns in Redis: member → user (refreshed every tick).
    held: Mutex<HashMap<String, String>>,
    checks: Outage,
    records: Outage,
    gate: Outage,
}

impl ClusterTenancy {
    pub fn new(cluster: Arc<Cluster>, retention_days: u64) -> Arc<ClusterTenancy> {
        Arc::new(ClusterTenancy {
            cluster,
            retention_secs: retention_days.saturating_mul(86_400),
            scripts: Scripts::new(),
            held: Mutex::default(),
            checks: Outage::new("turnsPerMinute and tokensPerDay are not checked"),
            records: Outage::new("the usage of finished turns is not counted"),
            gate: Outage::new("concurrentTurns counts this node's turns only"),
        })
    }

    fn node(&self) -> &str {
        &self.cluster.node_id
    }

    /// Counts a turn of `user` unless it is over `turns_per_minute` or `tokens_per_day`
    /// (0 = no limit); allowed when Redis cannot be asked (logged once per outage).
    pub async fn check_turn(&self, user: &str, turns_per_minute: u64, tokens_per_day: u64) -> TurnVerdict {
        if !self.cluster.is_healthy() {
            self.checks.failed(self.node(), &HEALTH_CHECK_FAILED);
            return TurnVerdict::Allowed;
        }
        let mut invocation = self.scripts.check_turn.key(tagged(TURNS_PREFIX, user));
        invocation
            .key(usage_key(user, Day::today()))
            .arg(turns_per_minute)
            .arg(tokens_per_day)
            .arg(uuid::Uuid::new_v4().simple().to_string());
        let answer: Result<(i64, i64), RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        match answer {
            Ok((code, wait)) => {
                self.checks.recovered(self.node());
                match code {
                    1 => TurnVerdict::TooManyTurns { retry_after_ms: wait.max(1) as u64 },
                    2 => TurnVerdict::NoTokensLeft,
                    _ => TurnVerdict::Allowed,
                }
            }
            Err(error) => {
                self.checks.failed(self.node(), &ClusterError::from(error));
                TurnVerdict::Allowed
            }
        }
    }

    /// Adds one ended turn of `user` in `session` to today's counts.
    pub async fn record(&self, user: &str, session: &str, counts: UsageCounts) {
        let mut invocation = self.scripts.record.key(usage_key(user, Day::today()));
        invocation
            .key(tagged(SESSIONS_PREFIX, user))
            .key(tagged(SESSION_USE_PREFIX, user))
            .arg(counts.turns)
            .arg(counts.prompt_tokens)
            .arg(counts.completion_tokens)
            .arg(counts.estimated_tokens)
            .arg(self.retention_secs.max(1))
            .arg(session)
            .arg(MAX_SESSIONS_PER_USER);
        let recorded: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        match recorded {
            Ok(_) => self.records.recovered(self.node()),
            Err(error) => {
                log::warn!(
                    "cluster: the usage of a turn of user {user:?} ({} tokens) was not counted: {}",
                    counts.total_tokens(),
                    ClusterError::from(error)
                );
            }
        }
    }

    /// `user`'s counts for every day from `from` to `to` that has any, oldest first.
    pub async fn range(&self, user: &str, from: Day, to: Day) -> Result<Vec<(Day, UsageCounts)>, ClusterError> {
        let days: Vec<Day> = (from.0..=to.0).map(Day).collect();
        let mut pipe = redis::pipe();
        for day in &days {
            pipe.hgetall(usage_key(user, *day));
        }
        let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut self.cluster.commands()).await?;
        Ok(days
            .into_iter()
            .zip(hashes)
            .filter(|(_, hash)| !hash.is_empty())
            .map(|(day, hash)| {
                let field = |name: &str| hash.get(name).copied().unwrap_or(0);
                let counts = UsageCounts {
                    turns: field("turns"),
                    prompt_tokens: field("promptTokens"),
                    completion_tokens: field("completionTokens"),
                    estimated_tokens: field("estimatedTokens"),
                };
                (day, counts)
            })
            .collect())
    }

    /// The sessions `user` ran turns in, and those with a turn running on any node.
    pub async fn sessions(&self, user: &str) -> Result<(BTreeMap<String, SessionUse>, Vec<String>), ClusterError> {
        let running_key = tagged(RUNNING_PREFIX, user);
        let time: (u64, u64) = redis::cmd("TIME").query_async(&mut self.cluster.commands()).await?;
        let now = time.0 * 1000 + time.1 / 1000;
        let (recent, uses, running): SessionsReply = redis::pipe()
            .zrevrange_withscores(tagged(SESSIONS_PREFIX, user), 0, MAX_SESSIONS_PER_USER as isize - 1)
            .hgetall(tagged(SESSION_USE_PREFIX, user))
            .zrangebyscore(&running_key, now, "+inf")
            .query_async(&mut self.cluster.commands())
            .await?;
        let mut sessions: BTreeMap<String, SessionUse> = recent
            .into_iter()
            .map(|(key, last_activity)| {
                let turns = uses.get(&format!("turns\n{key}")).copied().unwrap_or(0);
                let total_tokens = uses.get(&format!("tokens\n{key}")).copied().unwrap_or(0);
                (key, SessionUse { turns, total_tokens, last_activity })
            })
            .collect();
        trim_sessions(&mut sessions);
        let running =
            running.into_iter().filter_map(|member| member.split_once('\n').map(|(_, key)| key.to_string())).collect();
        Ok((sessions, running))
    }

    /// `concurrentTurns` across the cluster: a permit if `user` runs fewer than `max`
    /// turns on all nodes (0 = no limit); else `waiter` is woken by this node's next
    /// end of one of the user's turns (the session also asks again by itself). While
    /// Redis cannot be asked, this node's own count decides.
    pub async fn acquire_turn(
        self: Arc<Self>,
        local: &Arc<LocalGate>,
        user: &str,
        max: u64,
        session: &SessionKey,
        waiter: Recipient<SlotFreed>,
    ) -> Option<TurnPermit> {
        let member = format!("{}\n{session}", uuid::Uuid::new_v4().simple());
        let taken = if self.cluster.is_healthy() {
            let mut invocation = self.scripts.acquire.key(tagged(RUNNING_PREFIX, user));
            invocation.arg(max).arg(PERMIT_TTL_MS).arg(&member);
            let answer: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
            answer.map(|taken| taken == 1).map_err(|error| ClusterError::from(error).to_string())
        } else {
            Err(HEALTH_CHECK_FAILED.to_string())
        };
        match taken {
            Ok(true) => {
                self.gate.recovered(self.node());
                // Redis decided for the whole cluster: counted here without a limit.
                let id = local.try_take(user, 0, session, None)?;
                self.held.lock().unwrap_or_else(PoisonError::into_inner).insert(member.clone(), user.to_string());
                Some(TurnPermit::new(local.clone(), user.to_string(), id, Some((self, member))))
            }
            Ok(false) => {
                self.gate.recovered(self.node());
                local.wait(user, session, waiter);
                None
            }
            Err(reason) => {
                self.gate.failed(self.node(), &reason);
                let id = local.try_take(user, max, session, Some(waiter))?;
                Some(TurnPermit::new(local.clone(), user.to_string(), id, None))
            }
        }
    }

    /// Gives a running turn's place back in Redis (it expires there if this fails).
    pub async fn release_turn(&self, user: &str, member: &str) {
        self.forget_turn(member);
        let released: Result<i64, RedisError> = redis::cmd("ZREM")
            .arg(tagged(RUNNING_PREFIX, user))
            .arg(member)
            .query_async(&mut self.cluster.commands())
            .await;
        if let Err(error) = released {
            log::debug!(
                "cluster: a running turn of {user:?} was not released (it expires): {}",
                ClusterError::from(error)
            );
        }
    }

    /// Stops refreshing `member` (its turn ended): at once, so that a release that never
    /// runs (a runtime stopping) cannot leave it refreshed for good.
    pub fn forget_turn(&self, member: &str) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(member);
    }

    /// One health tick: this node's running turns live another [`PERMIT_TTL_MS`].
    pub async fn heartbeat(&self, redis_answered: bool) {
        let held: Vec<(String, String)> = {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.iter().map(|(member, user)| (user.clone(), member.clone())).collect()
        };
        if !redis_answered || held.is_empty() {
            return;
        }
        let mut invocation = self.scripts.refresh.prepare_invoke();
        invocation.arg(PERMIT_TTL_MS).arg(RUNNING_PREFIX);
        for (user, member) in &held {
            invocation.arg(user).arg(member);
        }
        let refreshed: Result<i64, RedisError> = invocation.invoke_async(&mut self.cluster.commands()).await;
        if let Err(error) = refreshed {
            log::debug!("cluster: running turns not refreshed: {}", ClusterError::from(error));
        }
    }
}
