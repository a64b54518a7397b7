//! Tenancy (SPEC §13): each user's limits, the checks a turn passes, and the usage it
//! leaves behind. The one type sessions and the admin routes use is [`Tenancy`]; where
//! its state lives is chosen once, in [`Tenancy::new`]: in this process and
//! `{store.dir}/usage/` for one node alone, in Redis in a cluster
//! (`cluster_tenancy.rs`, the same seam as `cluster_shared.rs`).
//!
//! - **Limits** ([`Tenancy::limits_for`]): `limits.perUser`, or `limits.guest` for a
//!   guest, each field overridden by the auth service's `data.limits` for an
//!   authenticated user (a tier). 0 = no limit.
//! - **A turn's check** ([`Tenancy::check_turn`], on every `chat.send` the session
//!   takes): `tokensPerDay` (the day's tokens have reached it: refused until midnight
//!   UTC), then `turnsPerMinute` (a sliding window of 60 s: the turn that would be one
//!   too many is refused until the oldest leaves it). A refusal is `quota_exceeded`
//!   with `retryAfterMs` and the limit's name.
//! - **Usage** ([`Tenancy::record_turn`], when a turn ends): tokens from the backend's
//!   `usage`, or estimated at 4 bytes a token, counted per user per UTC day.
//! - **`concurrentTurns`** is `turn_gate.rs`: turns wait, they are not refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures_util::future::LocalBoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cluster::Cluster;
use crate::cluster_tenancy::{ClusterTenancy, TurnVerdict};
use crate::config::{PerUserLimits, Settings};
use crate::identity::{Identity, SessionKey};
use crate::metrics::{Metrics, QuotaLimit, TokenKind};
use crate::protocol::{Frame, Outbound};
use crate::store;
use crate::turn_gate::{LocalGate, TurnGate};
use crate::usage::{Day, LocalUsage, SessionUse, UsageCounts};

/// The window of `turnsPerMinute`, ms.
const WINDOW_MS: u64 = 60_000;
/// Bytes a token is estimated at when the backend reports no usage.
pub const BYTES_PER_TOKEN: usize = 4;
/// The field of the auth service's `data` that overrides a user's limits.
pub const LIMITS_FIELD: &str = "limits";

/// Tokens estimated for `bytes` of text.
pub fn estimated_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN) as u64
}

/// `base` with every field the auth service's `data.limits` sets (a non-negative
/// integer) replaced; answers the names of fields it sets to something else (ignored).
pub fn with_overrides(base: PerUserLimits, data: Option<&Map<String, Value>>) -> (PerUserLimits, Vec<String>) {
    let mut limits = base;
    let mut ignored = Vec::new();
    let Some(field) = data.and_then(|data| data.get(LIMITS_FIELD)) else { return (limits, ignored) };
    let Value::Object(overrides) = field else {
        return (limits, vec![LIMITS_FIELD.to_string()]);
    };
    for (name, value) in overrides {
        let slot = match name.as_str() {
            "maxConnections" => &mut limits.max_connections,
            "turnsPerMinute" => &mut limits.turns_per_minute,
            "concurrentTurns" => &mut limits.concurrent_turns,
            "tokensPerDay" => &mut limits.tokens_per_day,
            _ => {
                ignored.push(format!("{LIMITS_FIELD}.{name}"));
                continue;
            }
        };
        match value.as_u64() {
            Some(value) => *slot = value,
            None => ignored.push(format!("{LIMITS_FIELD}.{name}")),
        }
    }
    (limits, ignored)
}

/// The fields of the auth service's `data.limits` that are not usable (not a
/// non-negative integer, or not a limit), for a warning: they are ignored.
pub fn unusable_limit_fields(data: &Map<String, Value>) -> Vec<String> {
    let any = PerUserLimits { max_connections: 0, turns_per_minute: 0, concurrent_turns: 0, tokens_per_day: 0 };
    with_overrides(any, Some(data)).1
}

/// A turn refused by a per-user limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRefusal {
    pub limit: QuotaLimit,
    /// The limit's value for this user.
    pub max: u64,
    /// When trying again can help, ms from now.
    pub retry_after_ms: u64,
}

impl QuotaRefusal {
    /// The `chat.error` `quota_exceeded` a refused turn gets.
    pub fn frame(&self, message_id: Option<&str>) -> Frame {
        let text = match self.limit {
            QuotaLimit::TurnsPerMinute => format!(
                "this user has started {} turns in the last minute (limits.perUser.turnsPerMinute); try again in {} s",
                self.max,
                self.retry_after_ms.div_ceil(1000)
            ),
            QuotaLimit::TokensPerDay => format!(
                "this user has used the {} tokens of the day (limits.perUser.tokensPerDay); more after midnight UTC",
                self.max
            ),
            QuotaLimit::MaxConnections => {
                format!("this user already has {} connections open (limits.perUser.maxConnections)", self.max)
            }
        };
        Outbound::quota_frame(&text, self.limit.as_str(), Some(self.retry_after_ms), message_id)
    }
}

/// A check's verdict: at once, or after a file read or a Redis call.
pub enum Check {
    Now(Result<(), QuotaRefusal>),
    Later(LocalBoxFuture<'static, Result<(), QuotaRefusal>>),
}

/// One of a user's sessions, for `GET /admin/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionReport {
    pub session_key: String,
    /// When the user's last turn in it ended (ms since the Unix epoch), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<u64>,
    pub turns: u64,
    pub total_tokens: u64,
    /// A turn of the user runs in it now (on any node).
    pub running: bool,
}

/// Where the counts live.
enum Backing {
    /// This process and `{store.dir}/usage/`.
    Local { windows: Arc<Mutex<TurnWindows>>, usage: Arc<LocalUsage> },
    /// Redis, for every node.
    Cluster(Arc<ClusterTenancy>),
}

/// Per-user limits, checks and usage; one per server, shared by every session.
pub struct Tenancy {
    per_user: PerUserLimits,
    guest: PerUserLimits,
    backing: Backing,
    gate: TurnGate,
    metrics: Arc<Metrics>,
}

impl Tenancy {
    /// The tenancy of a node: alone, or in `cluster`.
    pub fn new(settings: &Settings, cluster: Option<&Arc<Cluster>>, metrics: Arc<Metrics>) -> Arc<Tenancy> {
        let retention = settings.store.usage_retention_days;
        let (backing, gate) = match cluster {
            None => {
                let usage = LocalUsage::new(&settings.store.dir, retention);
                (Backing::Local { windows: Arc::default(), usage }, TurnGate::Local(LocalGate::new()))
            }
            Some(cluster) => {
                let shared = ClusterTenancy::new(cluster.clone(), retention);
                (Backing::Cluster(shared.clone()), TurnGate::Cluster { local: LocalGate::new(), shared })
            }
        };
        Arc::new(Tenancy { per_user: settings.limits.per_user, guest: settings.limits.guest, backing, gate, metrics })
    }

    /// Starts the background work: deleting old usage files daily (one node alone).
    /// Must be called inside an actix system.
    pub fn start(&self) {
        if let Backing::Local { usage, .. } = &self.backing {
            usage.prune_daily();
        }
    }

    /// The limits of whoever `identity` is: a guest's, else `limits.perUser` with the
    /// auth service's `data.limits` over it.
    pub fn limits_for(&self, identity: &Identity) -> PerUserLimits {
        if identity.guest {
            return self.guest;
        }
        with_overrides(self.per_user, identity.auth_data.as_deref()).0
    }

    /// The `concurrentTurns` gate.
    pub fn gate(&self) -> &TurnGate {
        &self.gate
    }

    /// Takes a turn of `identity`'s user, unless the day's tokens are spent or the
    /// user started `turnsPerMinute` turns in the last 60 s.
    pub fn check_turn(&self, identity: &Identity, new_turn: bool) -> Check {
        let mut limits = self.limits_for(identity);
        if !new_turn {
            limits.turns_per_minute = 0; // a continuation spends tokens, not a turn
        }
        if limits.turns_per_minute == 0 && limits.tokens_per_day == 0 {
            return Check::Now(Ok(()));
        }
        let user = identity.sender_id.clone();
        let metrics = self.metrics.clone();
        match &self.backing {
            Backing::Local { windows, usage } => {
                let now = store::now_millis();
                let day = Day::of_millis(now);
                if limits.tokens_per_day == 0 {
                    return Check::Now(counted(&metrics, take_turn(windows, &user, limits)));
                }
                if let Some(used) = usage.cached_tokens(&user, day) {
                    let verdict = tokens_left(used, limits, now).and_then(|()| take_turn(windows, &user, limits));
                    return Check::Now(counted(&metrics, verdict));
                }
                // The day's count is read from its file first (then held).
                let (usage, windows) = (usage.clone(), windows.clone());
                Check::Later(Box::pin(async move {
                    let used = usage.tokens(user.clone(), day).await;
                    let verdict = tokens_left(used, limits, store::now_millis())
                        .and_then(|()| take_turn(&windows, &user, limits));
                    counted(&metrics, verdict)
                }))
            }
            Backing::Cluster(shared) => {
                let shared = shared.clone();
                Check::Later(Box::pin(async move {
                    let verdict = match shared.check_turn(&user, limits.turns_per_minute, limits.tokens_per_day).await {
                        TurnVerdict::Allowed => Ok(()),
                        TurnVerdict::TooManyTurns { retry_after_ms } => Err(QuotaRefusal {
                            limit: QuotaLimit::TurnsPerMinute,
                            max: limits.turns_per_minute,
                            retry_after_ms,
                        }),
                        TurnVerdict::NoTokensLeft => Err(QuotaRefusal {
                            limit: QuotaLimit::TokensPerDay,
                            max: limits.tokens_per_day,
                            retry_after_ms: Day::millis_until_next(store::now_millis()),
                        }),
                    };
                    counted(&metrics, verdict)
                }))
            }
        }
    }

    /// Counts an ended turn of `identity`'s user in `session`: the returned future
    /// ends once the next check sees it (one node alone, at once: the files are
    /// written later, off this thread; in a cluster, when Redis has it). A failure is
    /// logged, never the turn's.
    pub fn record_turn(
        &self,
        identity: &Identity,
        session: &SessionKey,
        counts: UsageCounts,
    ) -> LocalBoxFuture<'static, ()> {
        self.metrics.tokens(TokenKind::Prompt, counts.prompt_tokens);
        self.metrics.tokens(TokenKind::Completion, counts.completion_tokens);
        let (user, session) = (identity.sender_id.clone(), session.to_string());
        match &self.backing {
            Backing::Local { usage, .. } => {
                usage.record(&user, &session, counts, store::now_millis());
                Box::pin(std::future::ready(()))
            }
            Backing::Cluster(shared) => {
                let shared = shared.clone();
                Box::pin(async move { shared.record(&user, &session, counts).await })
            }
        }
    }

    /// As `record_turn`, without waiting for it.
    pub fn record_turn_later(&self, identity: &Identity, session: &SessionKey, counts: UsageCounts) {
        actix_rt::spawn(self.record_turn(identity, session, counts));
    }

    /// `user`'s counts for each day from `from` to `to` that has any, oldest first.
    pub async fn usage_range(&self, user: &str, from: Day, to: Day) -> Result<Vec<(Day, UsageCounts)>, String> {
        match &self.backing {
            Backing::Local { usage, .. } => {
                usage.clone().range(user.to_string(), from, to).await.map_err(|error| error.to_string())
            }
            Backing::Cluster(shared) => shared.range(user, from, to).await.map_err(|error| error.to_string()),
        }
    }

    /// The sessions `user` ran turns in (at most `usage::MAX_SESSIONS_PER_USER`) and
    /// those where one of their turns runs now; most recent first, running ones first.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionReport>, String> {
        let (used, running): (std::collections::BTreeMap<String, SessionUse>, Vec<String>) = match &self.backing {
            Backing::Local { usage, .. } => {
                let running = self.gate.running_here(user).iter().map(ToString::to_string).collect();
                (usage.clone().sessions(user.to_string()).await, running)
            }
            Backing::Cluster(shared) => shared.sessions(user).await.map_err(|error| error.to_string())?,
        };
        let mut reports: Vec<SessionReport> = used
            .iter()
            .map(|(key, session)| SessionReport {
                session_key: key.clone(),
                last_activity: Some(session.last_activity),
                turns: session.turns,
                total_tokens: session.total_tokens,
                running: running.contains(key),
            })
            .collect();
        for key in running.iter().filter(|key| !used.contains_key(*key)) {
            if !reports.iter().any(|report| &report.session_key == key) {
                reports.push(SessionReport {
                    session_key: key.clone(),
                    last_activity: None,
                    turns: 0,
                    total_tokens: 0,
                    running: true,
                });
            }
        }
        reports.sort_by(|a, b| b.running.cmp(&a.running).then(b.last_activity.cmp(&a.last_activity)));
        Ok(reports)
    }

    /// Shutdown: waits (at most `within`) until the usage of every ended turn is
    /// written (one node alone; in a cluster it is in Redis already).
    pub async fn flush(&self, within: std::time::Duration) {
        if let Backing::Local { usage, .. } = &self.backing {
            if !usage.flush(within).await {
                log::error!("shutdown: the usage of some turns was not written within {within:?}; it is lost");
            }
        }
    }

    /// One cluster health tick: this node's running turns stay counted in Redis.
    pub async fn heartbeat(&self, redis_answered: bool) {
        if let Backing::Cluster(shared) = &self.backing {
            shared.heartbeat(redis_answered).await;
        }
    }
}

/// Counts a refusal in the metrics.
fn counted(metrics: &Metrics, verdict: Result<(), QuotaRefusal>) -> Result<(), QuotaRefusal> {
    if let Err(refusal) = &verdict {
        metrics.quota_refusal(refusal.limit);
    }
    verdict
}

/// Whether `used` tokens leave any of the day's `tokensPerDay` (at `now` ms).
fn tokens_left(used: u64, limits: PerUserLimits, now: u64) -> Result<(), QuotaRefusal> {
    if limits.tokens_per_day > 0 && used >= limits.tokens_per_day {
        return Err(QuotaRefusal {
            limit: QuotaLimit::TokensPerDay,
            max: limits.tokens_per_day,
            retry_after_ms: Day::millis_until_next(now),
        });
    }
    Ok(())
}

/// Takes one of `user`'s turns of the minute.
fn take_turn(windows: &Mutex<TurnWindows>, user: &str, limits: PerUserLimits) -> Result<(), QuotaRefusal> {
    let mut windows = windows.lock().unwrap_or_else(PoisonError::into_inner);
    let now = windows.now();
    windows.take(user, limits.turns_per_minute, now).map_err(|retry_after_ms| QuotaRefusal {
        limit: QuotaLimit::TurnsPerMinute,
        max: limits.turns_per_minute,
        retry_after_ms,
    })
}

/// Each user's turns of the last minute (one node alone): when each was taken, ms on
/// a monotonic clock, at most `turnsPerMinute` of them per user. Users with no turn
/// in the window are forgotten as the map grows.
pub struct TurnWindows {
    started: Instant,
    users: HashMap<String, VecDeque<u64>>,
    /// The map's size after its last sweep: the next sweep comes at twice it.
    swept_at: usize,
}

impl Default for TurnWindows {
    fn default() -> Self {
        TurnWindows { started: Instant::now(), users: HashMap::new(), swept_at: 0 }
    }
}

impl TurnWindows {
    /// Now on this map's clock, ms.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + WINDOW_MS
    }

    /// Takes a turn of `user` at `now` unless `max` were taken in the 60 s before (0 =
    /// no limit); `Err`: ms until the oldest of them leaves the window.
    pub fn take(&mut self, user: &str, max: u64, now: u64) -> Result<(), u64> {
        if max == 0 {
            return Ok(());
        }
        let window = self.users.entry(user.to_string()).or_default();
        while window.front().is_some_and(|taken| taken + WINDOW_MS <= now) {
            window.pop_front();
        }
        if window.len() as u64 >= max {
            let oldest = window.front().copied().unwrap_or(now);
            return Err((oldest + WINDOW_MS).saturating_sub(now).max(1));
        }
        window.push_back(now);
        if self.users.len() > (self.swept_at * 2).max(1024) {
            self.users.retain(|_, window| window.back().is_some_and(|taken| taken + WINDOW_MS > now));
            self.swept_at = self.users.len();
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
