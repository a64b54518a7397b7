//! Who a connection is, according to the external auth service (SPEC §4).
//!
//! On connect, the URL's query parameters (all of them; `tokenType` defaults to
//! `"local"`; a token from an `Authorization: Bearer` header goes in as `token` when the
//! URL has none) are POSTed as one JSON object to `channels.websocket.auth.endpoint`,
//! within `auth.timeout` ms. `{"success":true,"data":{"userId","username",…}}` vouches
//! for the user. [`Authenticator::admit`] turns that into an [`Admission`] that the
//! handshake (`server.rs`) acts on before any actor exists for the socket.
//!
//! Every failure is an [`AuthError`]: a reason word and a fixed sentence for the client,
//! a detail for the log. The token never reaches a log line: [`Credentials`] has no
//! `Debug`, errors never carry a request or response body, and the answer cache keys
//! on a keyed hash of the parameters, not on the token itself (in Redis, in cluster
//! mode, on their SHA-256).

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::error::{ConnectError, SendRequestError};
use serde_json::{Map, Value};

use crate::cluster::Cluster;
use crate::cluster_shared::{self, SharedAnswers};
use crate::config::AuthSettings;
use crate::identity::{ConnectionId, UserToken, GUEST_PREFIX};
use crate::metrics::Metrics;
use crate::protocol::{self, ErrorCode};
use crate::ttl_cache::TtlCache;

/// The query parameter (and JSON field) that carries the token.
const TOKEN_PARAM: &str = "token";
/// The query parameter (and JSON field) naming the kind of token.
const TOKEN_TYPE_PARAM: &str = "tokenType";
/// `tokenType` when the URL gives none, as the original plugin sent it.
const DEFAULT_TOKEN_TYPE: &str = "local";
/// Largest auth-service answer read, bytes: an answer is a small JSON object, and a
/// misbehaving service must not make the handshake buffer without bound.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most answers the cache holds; past it the oldest go first (a reconnect storm of
/// distinct tokens cannot grow it without bound).
const CACHE_CAPACITY: usize = 10_000;
/// What the digest naming a shared answer in Redis is of (changing how answers are
/// stored changes this, so that nodes of two versions never read each other's).
const SHARED_ANSWER_CONTEXT: &[u8] = b"clawsocket auth answer v1";

/// Why a connection could not be authenticated. The client sees [`AuthError::code`] and
/// [`AuthError::client_message`] (which holds [`AuthError::reason`]); the `Display`
/// text, with the detail, is for the log only and never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Neither a `token` query parameter nor an `Authorization: Bearer` header.
    #[error("no token was given")]
    MissingToken,
    /// The auth service answered `success:false` (or HTTP 401/403).
    #[error("the auth service refused the token")]
    InvalidToken,
    /// No complete answer within `auth.timeout`.
    #[error("the auth service did not answer within {0:?}")]
    Timeout(Duration),
    /// The auth service could not be reached (refused, unresolvable, connection lost).
    #[error("the auth service is unreachable: {0}")]
    ServiceUnavailable(String),
    /// An answer that is not a 2xx JSON verdict with a usable `data.userId`.
    #[error("the auth service's answer is unusable: {0}")]
    BadResponse(String),
}

impl AuthError {
    /// The `chat.error` code: `token_required` for a missing token, else `auth_failed`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingToken => ErrorCode::TokenRequired,
            _ => ErrorCode::AuthFailed,
        }
    }

    /// The short reason word the client sees.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "token_required",
            AuthError::InvalidToken => "invalid_token",
            AuthError::Timeout(_) => "timeout",
            AuthError::ServiceUnavailable(_) => "service_unavailable",
            AuthError::BadResponse(_) => "bad_response",
        }
    }

    /// The `chat.error` sentence: fixed words and the reason, never a detail.
    pub fn client_message(&self) -> String {
        match self {
            AuthError::MissingToken => {
                "a token is required (token_required): pass ?token=… or an Authorization: Bearer header".into()
            }
            _ => format!("authentication failed: {}", self.reason()),
        }
    }

    /// Whether the auth service, not the client, is at fault: worth a warning (and,
    /// on an HTTP route, a 503 rather than a 401).
    pub fn is_service_fault(&self) -> bool {
        matches!(self, AuthError::Timeout(_) | AuthError::ServiceUnavailable(_) | AuthError::BadResponse(_))
    }
}

/// What the auth service vouched for.
#[derive(Debug, Clone)]
pub struct VerifiedUser {
    /// `data.userId` (a JSON number is taken as its decimal text).
    pub user_id: String,
    /// `data.username`, else the user id.
    pub username: String,
    /// The whole `data` object, for the agent's context and dynamic agents.
    pub data: Arc<Map<String, Value>>,
}

/// What the handshake does with a connection.
#[derive(Debug)]
pub enum Admission {
    /// The auth service vouched for this user.
    Authenticated(VerifiedUser),
    /// Auth is off, or not required and missing or failed: the URL's identity.
    Anonymous,
    /// Auth is required and missing or failed: `chat.error`, then close 4401.
    Refused(AuthError),
}

/// The JSON object POSTed to the auth service: every query parameter, the token among
/// them. Deliberately without `Debug`: its values must never be printed.
struct Credentials {
    params: BTreeMap<String, String>,
}

impl Credentials {
    /// The credentials of a connection request, or `None` when it carries no token.
    /// A `token` query parameter wins over an `Authorization: Bearer` header.
    fn from_request(query: &str, authorization: Option<&str>) -> Option<Credentials> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let mut params: BTreeMap<String, String> = pairs.into_iter().collect();
        if params.get(TOKEN_PARAM).is_none_or(String::is_empty) {
            let token = authorization.and_then(bearer_token)?;
            params.insert(TOKEN_PARAM.to_string(), token.to_string());
        }
        if params.get(TOKEN_TYPE_PARAM).is_none_or(String::is_empty) {
            params.insert(TOKEN_TYPE_PARAM.to_string(), DEFAULT_TOKEN_TYPE.to_string());
        }
        Some(Credentials { params })
    }
}

/// The token a connection request carries (query `token`, else `Authorization:
/// Bearer`), for `agent.forwardUserToken`. Never logged.
pub fn request_token(query: &str, authorization: Option<&str>) -> Option<UserToken> {
    let credentials = Credentials::from_request(query, authorization)?;
    credentials.params.get(TOKEN_PARAM).filter(|token| !token.is_empty()).map(|token| UserToken::new(token))
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verified answers, reused for `auth.cacheTtl` so that a reconnect storm does not
/// flatten the auth service: one cache for all workers, and the one type the
/// [`Authenticator`] uses. Where answers are found is chosen once, in `server.rs` (see
/// `cluster_shared.rs` for the seam). Only successes are cached.
pub enum AnswerCache {
    /// This process's answers only: the embedded node.
    Local(LocalAnswers),
    /// This process's answers first, then those every node stored in Redis, each for
    /// the rest of its `auth.cacheTtl` (cluster mode). Redis unreachable is a miss.
    Cluster { local: LocalAnswers, shared: SharedAnswers },
}

impl AnswerCache {
    /// The cache `auth.cacheTtl` asks for, or `None` when it is 0 (off); shared through
    /// Redis when the node is in a cluster.
    pub fn for_settings(settings: &AuthSettings, cluster: Option<&Arc<Cluster>>) -> Option<Arc<AnswerCache>> {
        if settings.cache_ttl == 0 {
            return None;
        }
        let ttl = Duration::from_millis(settings.cache_ttl);
        let local = LocalAnswers::new(ttl);
        Some(Arc::new(match cluster {
            None => AnswerCache::Local(local),
            Some(cluster) => AnswerCache::Cluster { local, shared: SharedAnswers::new(cluster.clone(), ttl) },
        }))
    }

    fn local(&self) -> &LocalAnswers {
        match self {
            AnswerCache::Local(local) | AnswerCache::Cluster { local, .. } => local,
        }
    }

    /// A fresh answer for `credentials` (whose local key is `key`): this process's,
    /// else (cluster mode) one another node stored, kept here for the rest of its life.
    async fn get(&self, key: &CacheKey, credentials: &Credentials) -> Option<VerifiedUser> {
        let local = self.local();
        if let Some(user) = local.answers.get(key, Instant::now()) {
            return Some(user);
        }
        let AnswerCache::Cluster { shared, .. } = self else {
            return None;
        };
        let (stored, life) = shared.get(&shared_digest(credentials)).await?;
        let user = stored_answer(&stored)?;
        local.answers.put_for(*key, user.clone(), Instant::now(), life);
        Some(user)
    }

    /// Keeps the auth service's answer here and (cluster mode) for every node.
    async fn put(&self, key: CacheKey, credentials: &Credentials, user: &VerifiedUser) {
        self.local().answers.put(key, user.clone(), Instant::now());
        if let AnswerCache::Cluster { shared, .. } = self {
            match serde_json::to_string(&*user.data) {
                Ok(stored) => shared.put(&shared_digest(credentials), stored).await,
                Err(error) => log::warn!("an auth answer could not be shared with the cluster: {error}"),
            }
        }
    }
}

/// This process's answers. Keys are 128 bits of SipHash, keyed with this process's
/// random keys, over the parameters: the token itself is never stored, and a
/// collision cannot be searched for offline.
pub struct LocalAnswers {
    hasher: RandomState,
    answers: TtlCache<CacheKey, VerifiedUser>,
}

/// A cache key: two independent 64-bit hashes of the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey([u64; 2]);

impl LocalAnswers {
    fn new(ttl: Duration) -> LocalAnswers {
        LocalAnswers { hasher: RandomState::new(), answers: TtlCache::new(ttl, CACHE_CAPACITY) }
    }

    fn key(&self, credentials: &Credentials) -> CacheKey {
        let half = |salt: u8| {
            let mut hasher = self.hasher.build_hasher();
            salt.hash(&mut hasher);
            credentials.params.hash(&mut hasher);
            hasher.finish()
        };
        CacheKey([half(0), half(1)])
    }
}

/// The name of `credentials`' answer in Redis: the SHA-256 (hex) of every parameter,
/// the token among them, so that every node computes the same one (the local key is
/// keyed per process) and no key holds the token.
fn shared_digest(credentials: &Credentials) -> String {
    let parts: Vec<&[u8]> =
        credentials.params.iter().flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()]).collect();
    cluster_shared::sha256_hex(SHARED_ANSWER_CONTEXT, &parts)
}

/// An answer another node stored (the auth service's `data`, as JSON), checked as the
/// auth service's own; `None` (a miss, logged) when it does not pass.
fn stored_answer(stored: &str) -> Option<VerifiedUser> {
    let data = serde_json::from_str::<Map<String, Value>>(stored).map_err(|error| error.to_string());
    data.and_then(|data| verified_user(data).map_err(|error| error.to_string()))
        .inspect_err(|error| {
            log::warn!("a shared auth answer in Redis is not usable ({error}); asking the auth service")
        })
        .ok()
}

/// Verifies connections against the auth service. One per server worker: awc's
/// `Client` is bound to its thread (an `Rc`), and keeps its own pool of kept-alive
/// connections to the auth service. The answer cache is shared by all workers.
pub struct Authenticator {
    enabled: bool,
    required: bool,
    endpoint: String,
    timeout: Duration,
    http: awc::Client,
    cache: Option<Arc<AnswerCache>>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// An authenticator for `settings`, sharing `cache` (see [`AnswerCache::for_settings`]).
    pub fn new(settings: &AuthSettings, cache: Option<Arc<AnswerCache>>, metrics: Arc<Metrics>) -> Authenticator {
        let timeout = Duration::from_millis(settings.timeout);
        // awc's own limits (5 s to connect, 5 s to the answer's head) would otherwise
        // cut a longer configured timeout short.
        let http = awc::Client::builder().connector(awc::Connector::new().timeout(timeout)).timeout(timeout).finish();
        Authenticator {
            enabled: settings.enabled,
            required: settings.required,
            endpoint: settings.endpoint.clone(),
            timeout,
            http,
            cache,
            metrics,
        }
    }

    /// Decides about one connection request from its query string and `Authorization`
    /// header. Logs the outcome at info (warn when the auth service is at fault),
    /// without the token.
    pub async fn admit(&self, connection: &ConnectionId, query: &str, authorization: Option<&str>) -> Admission {
        if !self.enabled {
            return Admission::Anonymous;
        }
        let Some(credentials) = Credentials::from_request(query, authorization) else {
            return self.without_user(connection, AuthError::MissingToken);
        };
        let started = Instant::now();
        let verified = self.verify(&credentials).await;
        self.metrics.auth_duration.observe(started.elapsed().as_secs_f64());
        match verified {
            Ok(user) => {
                log::debug!("connection {connection}: vouched for as {:?} in {:.1?}", user.user_id, started.elapsed());
                Admission::Authenticated(user)
            }
            Err(error) => self.without_user(connection, error),
        }
    }

    /// The auth service's verdict on `credentials`, from the cache when fresh there.
    async fn verify(&self, credentials: &Credentials) -> Result<VerifiedUser, AuthError> {
        let Some(cache) = &self.cache else {
            return self.ask(credentials).await;
        };
        let key = cache.local().key(credentials);
        if let Some(user) = cache.get(&key, credentials).await {
            log::debug!("auth answer for user {:?} reused from the cache", user.user_id);
            return Ok(user);
        }
        let user = self.ask(credentials).await?;
        cache.put(key, credentials, &user).await;
        Ok(user)
    }

    /// One POST to the auth service, bounded as a whole by `auth.timeout`.
    async fn ask(&self, credentials: &Credentials) -> Result<VerifiedUser, AuthError> {
        let exchange = async {
            let mut response = self
                .http
                .post(&self.endpoint)
                .send_json(&credentials.params)
                .await
                .map_err(|error| classify(error, self.timeout))?;
            let body = response
                .body()
                .limit(MAX_RESPONSE_BYTES)
                .await
                .map_err(|error| AuthError::BadResponse(format!("reading the answer: {error}")))?;
            interpret(response.status().as_u16(), &body)
        };
        actix_rt::time::timeout(self.timeout, exchange).await.unwrap_or(Err(AuthError::Timeout(self.timeout)))
    }

    /// A connection without a verified user: refused when auth is required, else anonymous.
    fn without_user(&self, connection: &ConnectionId, error: AuthError) -> Admission {
        let level = if error.is_service_fault() { log::Level::Warn } else { log::Level::Info };
        if self.required {
            log::log!(level, "connection {connection} refused ({}): {error}", error.reason());
            Admission::Refused(error)
        } else {
            log::log!(
                level,
                "connection {connection} is anonymous ({}): {error}; auth.required is false",
                error.reason()
            );
            Admission::Anonymous
        }
    }
}

/// The `AuthError` for a request that got no answer. Only awc's own descriptions are
/// kept: they name the endpoint's host, never the request body.
fn classify(error: SendRequestError, timeout: Duration) -> AuthError {
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => AuthError::Timeout(timeout),
        SendRequestError::Connect(error) => AuthError::ServiceUnavailable(error.to_string()),
        SendRequestError::Send(error) => AuthError::ServiceUnavailable(format!("connection lost: {error}")),
        SendRequestError::Response(error) => AuthError::BadResponse(format!("not HTTP: {error}")),
        _ => AuthError::ServiceUnavailable("the request could not be sent".into()),
    }
}

/// Reads the auth service's answer. HTTP 401/403 and `success:false` refuse the token;
/// anything else that is not a 2xx `{"success":true,"data":{"userId":…}}` is unusable.
/// Error details name fields, never values (an answer may echo the token).
fn interpret(status: u16, body: &[u8]) -> Result<VerifiedUser, AuthError> {
    let bad = |detail: &str| AuthError::BadResponse(detail.to_string());
    if status == 401 || status == 403 {
        return Err(AuthError::InvalidToken);
    }
    if !(200..300).contains(&status) {
        return Err(AuthError::BadResponse(format!("HTTP {status}")));
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("not a JSON object"));
    };
    match answer.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(AuthError::InvalidToken),
        _ => return Err(bad("no boolean `success`")),
    }
    let Some(Value::Object(data)) = answer.remove("data") else {
        return Err(bad("`success` without a `data` object"));
    };
    verified_user(data)
}

/// The user a `data` object vouches for: a usable `data.userId` outside `guest:`.
fn verified_user(data: Map<String, Value>) -> Result<VerifiedUser, AuthError> {
    let bad = |detail: &str| AuthError::BadResponse(detail.to_string());
    let user_id = match data.get("userId") {
        Some(Value::String(id)) if protocol::is_valid_id(id) => id.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err(bad("`data.userId` is missing or not a usable id")),
    };
    if user_id.starts_with(GUEST_PREFIX) {
        return Err(bad("`data.userId` starts with \"guest:\", the namespace of unauthenticated guests"));
    }
    let unusable = crate::quota::unusable_limit_fields(&data);
    if !unusable.is_empty() {
        log::warn!(
            "the auth service's answer for user {user_id:?} has unusable limits ({}: each must be a non-negative integer, one of maxConnections, turnsPerMinute, concurrentTurns, tokensPerDay); the configured ones apply instead",
            unusable.join(", ")
        );
    }
    let username = match data.get("username") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        _ => user_id.clone(),
    };
    Ok(VerifiedUser { user_id, username, data: Arc::new(data) })
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
