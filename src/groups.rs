//! Who may use a group (SPEC §2, `channels.websocket.groups`).
//!
//! `open` (the seed's behaviour): a group id is a shared secret; anyone who knows it
//! may send, join, read and abort. `listed`: only groups named in the auth service's
//! `data.groups` (an entry `prefix*` matches every group id starting with `prefix`).
//! `proxy`: the operator's service decides: POST `{userId, groupId, action}` to
//! `groups.endpoint` answers `{"allowed": bool}`, kept for `groups.cacheTtl` ms; a
//! service that is down, slow or answers anything else refuses. A refusal is
//! `forbidden`, decided before anything reaches the group's session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{GroupPolicy, GroupSettings};
use crate::identity::Identity;
use crate::ttl_cache::TtlCache;

/// Largest answer read from the groups service, bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Most verdicts the cache holds; past it the oldest go first.
const CACHE_CAPACITY: usize = 10_000;

/// What a connection wants to do in a group (sent to the `proxy` service as `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupAction {
    Send,
    Join,
    History,
    Abort,
    /// `chat.delete` of a group's thread.
    Delete,
}

impl GroupAction {
    fn as_str(self) -> &'static str {
        match self {
            GroupAction::Send => "send",
            GroupAction::Join => "join",
            GroupAction::History => "history",
            GroupAction::Abort => "abort",
            GroupAction::Delete => "delete",
        }
    }
}

/// A decision, now or after asking the groups service.
pub enum Verdict {
    Allowed,
    Refused,
    /// Ask the service: the future answers whether the action is allowed.
    Ask(LocalBoxFuture<'static, bool>),
}

/// The `proxy` service's verdicts, per user, group and action, for all workers.
pub type VerdictCache = TtlCache<(String, String, GroupAction), bool>;

/// The verdict cache `groups.cacheTtl` asks for (0: nothing is kept).
pub fn verdict_cache(settings: &GroupSettings) -> Arc<VerdictCache> {
    let capacity = if settings.cache_ttl == 0 { 0 } else { CACHE_CAPACITY };
    Arc::new(TtlCache::new(Duration::from_millis(settings.cache_ttl), capacity))
}

/// Decides group access. One per server worker (awc's client is bound to its thread);
/// the verdict cache is shared.
pub struct GroupAccess {
    settings: GroupSettings,
    http: awc::Client,
    cache: Arc<VerdictCache>,
}

#[derive(Deserialize)]
struct ProxyAnswer {
    allowed: bool,
}

impl GroupAccess {
    pub fn new(settings: &GroupSettings, cache: Arc<VerdictCache>) -> GroupAccess {
        let timeout = Duration::from_millis(settings.timeout);
        let http = awc::Client::builder().connector(awc::Connector::new().timeout(timeout)).timeout(timeout).finish();
        GroupAccess { settings: settings.clone(), http, cache }
    }

    /// May `identity` do `action` in `group`?
    pub fn check(&self, identity: &Identity, group: &str, action: GroupAction) -> Verdict {
        match self.settings.policy {
            GroupPolicy::Open => Verdict::Allowed,
            GroupPolicy::Listed => match listed(identity.auth_data.as_ref().and_then(|data| data.get("groups")), group)
            {
                true => Verdict::Allowed,
                false => Verdict::Refused,
            },
            GroupPolicy::Proxy => self.ask_proxy(identity, group, action),
        }
    }

    fn ask_proxy(&self, identity: &Identity, group: &str, action: GroupAction) -> Verdict {
        let key = (identity.sender_id.clone(), group.to_string(), action);
        match self.cache.get(&key, Instant::now()) {
            Some(true) => return Verdict::Allowed,
            Some(false) => return Verdict::Refused,
            None => {}
        }
        let request = self
            .http
            .post(&self.settings.endpoint)
            .send_json(&json!({"userId": key.0, "groupId": key.1, "action": action.as_str()}));
        let (cache, timeout) = (self.cache.clone(), Duration::from_millis(self.settings.timeout));
        Verdict::Ask(Box::pin(async move {
            let exchange = async {
                let mut response = request.await.map_err(|error| format!("no answer: {error}"))?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status().as_u16()));
                }
                let body = response.body().limit(MAX_RESPONSE_BYTES).await.map_err(|error| error.to_string())?;
                serde_json::from_slice::<ProxyAnswer>(&body)
                    .map(|answer| answer.allowed)
                    .map_err(|_| "not {\"allowed\": bool}".to_string())
            };
            let answer = actix_rt::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(format!("no answer within {timeout:?}")));
            match answer {
                Ok(allowed) => {
                    cache.put(key, allowed, Instant::now());
                    allowed
                }
                Err(detail) => {
                    log::warn!("groups service: {detail}; group {:?} refused to {:?}", key.1, key.0);
                    false
                }
            }
        }))
    }
}

/// Whether the auth service's `data.groups` names `group` (exactly, or by a `prefix*`).
fn listed(groups: Option<&Value>, group: &str) -> bool {
    let Some(Value::Array(entries)) = groups else { return false };
    entries.iter().filter_map(Value::as_str).any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => group.starts_with(prefix),
        None => entry == group,
    })
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod tests;
