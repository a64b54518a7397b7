//! The typed settings tree, loaded once at start.
//!
//! Layers, lowest first: `settings/default.toml` (embedded in the binary: the only
//! home of a default value), the optional `--config FILE` (TOML, YAML or JSON in the
//! original plugin's shape, `channels.websocket.*` with camelCase keys), then
//! environment variables. Unknown keys are logged and ignored (the original plugin's
//! files carry OpenClaw keys of their own), with the closest known key when one is
//! close, except a near miss of a key under `channels.websocket.auth`, `limits` or
//! `channels.websocket.groups`,
//! which fails; a wrong type or value fails with an error naming the key. Nothing
//! reads the environment after `Settings::load` returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat, Value, ValueKind};

/// A setting value, for `Settings::load_with` overrides (command-line flags, tests).
pub use config::Value as SettingValue;
use serde::Deserialize;

use crate::redact;

/// The embedded defaults; `settings/default.toml` documents every key.
pub const DEFAULTS_TOML: &str = include_str!("../settings/default.toml");

/// The environment variable that sets `admin.token` (as `WS_AUTH_*` set auth's keys).
pub const ADMIN_TOKEN_VARIABLE: &str = "WS_ADMIN_TOKEN";

/// Prefix of the generic environment overrides: `CLAWSOCKET__LIMITS__SESSIONQUEUE=4`.
const ENV_PREFIX: &str = "CLAWSOCKET__";

/// Why the settings could not be loaded; every variant names the key or source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type (config names the key).
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// An environment variable names no known key.
    #[error("environment variable {variable} names no configuration key ({})", did_you_mean(.suggestion.as_deref(), "known keys: see settings/default.toml"))]
    UnknownEnvKey { variable: String, suggestion: Option<String> },
    /// A key that is not known but close to one under `channels.websocket.auth` or
    /// `limits`: ignoring it would silently change security.
    #[error("configuration key `{key}` is not known: did you mean `{suggestion}`? (a misspelt key under channels.websocket.auth, limits or groups stops the start: ignoring it would silently change security)")]
    MisspeltKey { key: String, suggestion: String },
    /// An environment variable's value cannot be used for its key.
    #[error("environment variable {variable}: {reason}")]
    BadEnvValue { variable: String, reason: String },
    /// A value its key does not take (an enum's unknown value, for one).
    #[error("configuration key `{key}`: {reason}")]
    BadValue { key: String, reason: String },
    /// A value that parsed but makes no sense, or a combination that cannot work.
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub channels: Channels,
    pub agent: AgentSettings,
    pub store: StoreSettings,
    pub limits: Limits,
    pub cluster: ClusterSettings,
    pub admin: AdminSettings,
    /// The user's home directory (`HOME`, read with the rest of the environment at
    /// load), for `~` in paths.
    #[serde(skip)]
    pub home: PathBuf,
}

/// `channels.*`: only the websocket channel is ours; other channels are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channels {
    pub websocket: WebSocketSettings,
}

/// `channels.websocket.*`: the original plugin's keys plus ClawSocket's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketSettings {
    pub enabled: bool,
    pub port: u16,
    pub host: String,
    pub path: String,
    pub stream_mode: StreamMode,
    pub dm_policy: DmPolicy,
    pub allow_from: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub auth: AuthSettings,
    pub dynamic_agent_creation: DynamicAgentSettings,
    pub media: MediaSettings,
    pub groups: GroupSettings,
    /// What a turn sends besides text (`reasoning`, `tool`, `usage`); empty: the
    /// original protocol.
    pub events: Vec<EventKind>,
}

/// A kind of answer event a client may be sent (`channels.websocket.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Reasoning,
    Tool,
    Usage,
}

/// Which answer events are sent, as flags (read on every turn, never searched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    pub reasoning: bool,
    pub tool: bool,
    pub usage: bool,
}

impl Events {
    /// The flags of `channels.websocket.events`.
    pub fn from_kinds(kinds: &[EventKind]) -> Events {
        Events {
            reasoning: kinds.contains(&EventKind::Reasoning),
            tool: kinds.contains(&EventKind::Tool),
            usage: kinds.contains(&EventKind::Usage),
        }
    }

    /// Whether anything beyond the original protocol is sent.
    pub fn any(self) -> bool {
        self.reasoning || self.tool || self.usage
    }
}

impl WebSocketSettings {
    /// `events` as flags.
    pub fn events(&self) -> Events {
        Events::from_kinds(&self.events)
    }
}

/// What a `chat.stream` frame's `content` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamMode {
    /// Only the new piece of text.
    Delta,
    /// The whole text so far (the original plugin's wire behaviour).
    Cumulative,
}

/// Who may talk to the agent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DmPolicy {
    /// Anyone who passes auth.
    Open,
    /// Only the sender ids in `allowFrom`.
    Allowlist,
    /// OpenClaw's pairing flow: accepted by the parser so the check can explain it.
    Pairing,
}

/// `channels.websocket.auth.*`, as the original plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSettings {
    pub enabled: bool,
    pub endpoint: String,
    /// Milliseconds.
    pub timeout: u64,
    pub required: bool,
    /// Milliseconds a verified token's answer is reused; 0 = off.
    pub cache_ttl: u64,
}

/// `channels.websocket.groups.*`: who may use a group (see `groups.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSettings {
    pub policy: GroupPolicy,
    /// `proxy`: the service that decides.
    pub endpoint: String,
    /// `proxy`: milliseconds a verdict is reused; 0 = ask every time.
    pub cache_ttl: u64,
    /// `proxy`: milliseconds the service has to answer; then the access is refused.
    pub timeout: u64,
}

/// Group access policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupPolicy {
    /// A group id is a shared secret (the seed's behaviour).
    Open,
    /// Only the groups in the auth service's `data.groups`.
    Listed,
    /// The groups service decides.
    Proxy,
}

/// `channels.websocket.dynamicAgentCreation.*`, as the original plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicAgentSettings {
    pub enabled: bool,
    pub workspace_template: String,
    pub agent_dir_template: String,
    /// 0 = no limit.
    pub max_agents: u32,
}

/// `channels.websocket.media.*`: local media paths, uploads and attachments (SPEC §12).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaSettings {
    /// Local directories a `mediaPath` (or an agent's `MEDIA:` file) may be in.
    pub roots: Vec<PathBuf>,
    /// Where uploads live; empty: `{store.dir}/media` (in a cluster, a directory every
    /// node shares).
    pub dir: String,
    /// Largest upload (and attachment copied into the store), bytes.
    pub max_bytes: u64,
    /// The media types `POST /media` takes (`type/subtype`, or `type/*`).
    pub allowed_types: Vec<String>,
    /// Bytes of media one user may hold; 0 = no limit.
    pub per_user_bytes: u64,
    /// An URL base the agent can reach this server at: images go to it as signed
    /// links instead of `data:` URLs. Empty: `data:` URLs.
    pub public_base_url: String,
}

impl MediaSettings {
    /// Where uploads live: `dir`, or `{store_dir}/media`.
    pub fn directory(&self, store_dir: &Path) -> PathBuf {
        match self.dir.trim() {
            "" => store_dir.join("media"),
            dir => PathBuf::from(dir),
        }
    }
}

/// Which agent backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentKind {
    Openclaw,
    Openai,
    /// The built-in demo agent.
    Echo,
}

/// `agent.*`: the backend and what it is told.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSettings {
    pub kind: AgentKind,
    pub id: String,
    pub url: String,
    pub token: String,
    pub api_key: String,
    pub model: String,
    pub system_prompt: String,
    pub max_history: usize,
    /// The most bytes of stored text sent as history (`openai`).
    pub max_history_bytes: usize,
    /// `max_tokens` per turn; 0 = not sent (`openai`).
    pub max_tokens: u64,
    /// How the agent is told who wrote a message.
    pub sender_style: SenderStyle,
    pub timeout_ms: u64,
    /// Milliseconds a backend may send nothing once its answer has begun.
    pub idle_timeout_ms: u64,
    /// Whether an answer is complete only with a `finish_reason`.
    pub require_finish_reason: bool,
    pub forward_user_token: bool,
    pub openclaw_config_path: String,
    pub confirm_agent_ms: u64,
    pub echo_delay_ms: u64,
}

/// How the agent is told who wrote a message (`agent.senderStyle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderStyle {
    /// `name` for `openai`, `envelope` for the others.
    Auto,
    /// The message's `name` field (OpenAI's way); the text is the user's own.
    Name,
    /// The original plugin's `"{senderName}: {content}"`.
    Envelope,
}

impl AgentSettings {
    /// The sender style this backend uses (`auto` resolved).
    pub fn sender_style(&self) -> SenderStyle {
        match (self.sender_style, self.kind) {
            (SenderStyle::Auto, AgentKind::Openai) => SenderStyle::Name,
            (SenderStyle::Auto, _) => SenderStyle::Envelope,
            (style, _) => style,
        }
    }

    /// Whether the agent keeps its own memory of a conversation (the OpenClaw gateway,
    /// by session key): then a regenerated answer could not replace the old one in
    /// what it sees, and regeneration is not offered.
    pub fn keeps_own_memory(&self) -> bool {
        self.kind == AgentKind::Openclaw
    }
}

/// `store.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub threads: usize,
    /// How many of a session's latest answered message ids are remembered for retries.
    pub idempotency_window: usize,
    /// Days each user's daily usage is kept (files under `usage/`; Redis hashes' TTL).
    pub usage_retention_days: u64,
}

/// `admin.*`: the operators' HTTP routes (`/admin/usage`, `/admin/sessions`).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminSettings {
    /// The bearer token the `/admin` routes require; empty: the routes are off (404).
    pub token: String,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.token.is_empty() { "" } else { "<redacted>" };
        formatter.debug_struct("AdminSettings").field("token", &token).finish()
    }
}

impl AdminSettings {
    /// Whether the `/admin` routes are served.
    pub fn enabled(&self) -> bool {
        !self.token.is_empty()
    }
}

/// `cluster.*`: several nodes on one Redis (SPEC §14); off while `redis.url` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    pub redis: RedisSettings,
    /// This node's name in leases and inboxes; empty: hostname and port.
    pub node_id: String,
    pub lease_ms: u64,
    pub stream_max_len: u64,
    pub stream_ttl_ms: u64,
}

/// `cluster.redis.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisSettings {
    pub url: String,
}

impl ClusterSettings {
    /// Whether this node runs in a cluster (a Redis URL is set).
    pub fn enabled(&self) -> bool {
        !self.redis.url.trim().is_empty()
    }
}

/// `limits.*`: every bound the service enforces.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_message_bytes: usize,
    /// Bytes one turn's answer may grow to.
    pub max_answer_bytes: usize,
    /// Bytes of frames that may wait for one slow connection.
    pub outbound_bytes: usize,
    /// Sessions one connection may be subscribed to.
    pub max_subscriptions: usize,
    /// Milliseconds a fragmented message may take to complete.
    pub fragment_timeout_ms: u64,
    /// Bytes of unfinished fragmented messages the whole server holds at most.
    pub max_pending_fragment_bytes: usize,
    pub per_user: PerUserLimits,
    /// What a guest (unauthenticated while auth is enabled) may use, per guest id.
    pub guest: PerUserLimits,
    pub max_connections: usize,
    pub messages_per_minute: u32,
    pub session_queue: usize,
    pub outbound_queue: usize,
    pub turn_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    pub session_idle_ms: u64,
    pub heartbeat: Heartbeat,
}

/// `limits.perUser.*` (and `limits.guest.*`): bounds per user, whatever connections
/// and sessions they use (SPEC §13). 0 = no limit, for each. The auth service may
/// override any of them per user (`data.limits`, see `quota.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerUserLimits {
    /// Open connections per user.
    pub max_connections: u64,
    /// Turns (`chat.send`s taken) per user in any 60 seconds.
    pub turns_per_minute: u64,
    /// Turns of one user running at once, across all of their sessions; more wait.
    pub concurrent_turns: u64,
    /// Tokens (prompt and completion) per user per UTC day.
    pub tokens_per_day: u64,
}

/// `limits.heartbeat.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Limits {
    /// The turn timeout as a `Duration`.
    pub fn turn_timeout(&self) -> Duration {
        Duration::from_millis(self.turn_timeout_ms)
    }
}

/// Where a setting may come from besides the files: the process environment, or a
/// test's own map (so tests never touch the real environment).
pub type Environment = BTreeMap<String, String>;

impl Settings {
    /// Loads defaults, then `file` if given, then `environment`; validates the result.
    pub fn load(file: Option<&Path>, environment: &Environment) -> Result<Settings, ConfigError> {
        Self::load_with(file, environment, &[])
    }

    /// As `load`, with extra `(key, value)` overrides applied last (command-line flags,
    /// tests). Keys are dotted paths as in default.toml.
    pub fn load_with(
        file: Option<&Path>,
        environment: &Environment,
        overrides: &[(&str, Value)],
    ) -> Result<Settings, ConfigError> {
        let defaults = Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml)).build()?;
        let known = known_keys(&defaults);
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).required(true));
        }
        for (key, value) in environment_overrides(environment, &known)? {
            builder = builder.set_override(key, value)?;
        }
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone())?;
        }
        let merged = builder.build()?;
        check_enum_values(&merged)?;
        let mut unknown = Vec::new();
        let mut settings: Settings = serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()))?;
        check_unknown_keys(&unknown, &known_paths(&known))?;
        apply_credential_fallbacks(&mut settings, environment);
        settings.home = match environment.get("HOME") {
            Some(home) => PathBuf::from(home),
            None => no_home(&settings)?,
        };
        settings.agent.openclaw_config_path =
            openclaw_agents_file(&settings.agent.openclaw_config_path, &settings.home);
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-checks that the types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let websocket = &self.channels.websocket;
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        if !websocket.path.starts_with('/') {
            return invalid("channels.websocket.path", "must start with '/'");
        }
        if websocket.dm_policy == DmPolicy::Pairing {
            return invalid(
                "channels.websocket.dmPolicy",
                "\"pairing\" is not supported by ClawSocket; use \"open\" or \"allowlist\" with allowFrom",
            );
        }
        if websocket.auth.enabled {
            check_url("channels.websocket.auth.endpoint", &websocket.auth.endpoint, " when auth is enabled")?;
        }
        if let Some(bad) = websocket.allowed_origins.iter().find(|pattern| !crate::origin::is_valid_pattern(pattern)) {
            return invalid(
                "channels.websocket.allowedOrigins",
                &format!("{bad:?} is not an origin: use \"scheme://host[:port]\" (a host label may be \"*\"), \"*\" or \"null\""),
            );
        }
        if websocket.groups.policy == GroupPolicy::Proxy {
            check_url(
                "channels.websocket.groups.endpoint",
                &websocket.groups.endpoint,
                " when groups.policy is \"proxy\"",
            )?;
        }
        if self.agent.kind != AgentKind::Echo {
            check_url("agent.url", &self.agent.url, "")?;
        }
        let media = &websocket.media;
        if !media.public_base_url.is_empty() {
            check_url("channels.websocket.media.publicBaseUrl", &media.public_base_url, " (or empty)")?;
        }
        if let Some(bad) = media.allowed_types.iter().find(|kind| !crate::media::kinds::is_type_pattern(kind)) {
            return invalid(
                "channels.websocket.media.allowedTypes",
                &format!(
                    "{bad:?} is not a media type: use \"type/subtype\" or \"type/*\", lowercase (e.g. \"image/png\")"
                ),
            );
        }
        if self.cluster.enabled() {
            check_redis_url(&self.cluster.redis.url)?;
        }
        if self.cluster.node_id.contains(char::is_whitespace) {
            return invalid("cluster.nodeId", "must not contain spaces");
        }
        if self.cluster.lease_ms < 100 {
            return invalid("cluster.leaseMs", "must be at least 100 (it is renewed every third of it)");
        }
        let limits = &self.limits;
        let positive: [(&'static str, u64); 20] = [
            ("channels.websocket.media.maxBytes", media.max_bytes),
            ("cluster.streamMaxLen", self.cluster.stream_max_len),
            ("cluster.streamTtlMs", self.cluster.stream_ttl_ms),
            ("channels.websocket.auth.timeout", websocket.auth.timeout),
            ("channels.websocket.groups.timeout", websocket.groups.timeout),
            ("limits.maxMessageBytes", limits.max_message_bytes as u64),
            ("limits.maxAnswerBytes", limits.max_answer_bytes as u64),
            ("limits.outboundBytes", limits.outbound_bytes as u64),
            ("limits.maxSubscriptions", limits.max_subscriptions as u64),
            ("limits.fragmentTimeoutMs", limits.fragment_timeout_ms),
            ("limits.maxPendingFragmentBytes", limits.max_pending_fragment_bytes as u64),
            ("limits.maxConnections", limits.max_connections as u64),
            ("limits.messagesPerMinute", u64::from(limits.messages_per_minute)),
            ("limits.outboundQueue", limits.outbound_queue as u64),
            ("limits.turnTimeoutMs", limits.turn_timeout_ms),
            ("limits.heartbeat.intervalMs", limits.heartbeat.interval_ms),
            ("agent.timeoutMs", self.agent.timeout_ms),
            ("agent.idleTimeoutMs", self.agent.idle_timeout_ms),
            ("store.threads", self.store.threads as u64),
            ("store.usageRetentionDays", self.store.usage_retention_days),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(key, "must be greater than 0");
        }
        if limits.heartbeat.timeout_ms <= limits.heartbeat.interval_ms {
            return invalid("limits.heartbeat.timeoutMs", "must be greater than limits.heartbeat.intervalMs");
        }
        Ok(())
    }
}

/// Without `HOME`, a dynamic-agent path that needs it is a mistake to name, not a
/// reason to write under `/`; without such a path `/` stands in (it is never used).
fn no_home(settings: &Settings) -> Result<PathBuf, ConfigError> {
    let dynamic = &settings.channels.websocket.dynamic_agent_creation;
    let agents_file = &settings.agent.openclaw_config_path;
    let needs_home = [
        ("channels.websocket.dynamicAgentCreation.workspaceTemplate", dynamic.workspace_template.starts_with('~')),
        ("channels.websocket.dynamicAgentCreation.agentDirTemplate", dynamic.agent_dir_template.starts_with('~')),
        (
            "agent.openclawConfigPath",
            settings.agent.kind == AgentKind::Openclaw && (agents_file.is_empty() || agents_file.starts_with('~')),
        ),
    ];
    match needs_home.iter().find(|(_, needs)| dynamic.enabled && *needs) {
        Some((key, _)) => Err(ConfigError::Invalid {
            key,
            reason: "is under ~ (the home directory), but HOME is not set: set HOME or give an absolute path".into(),
        }),
        None => Ok(PathBuf::from("/")),
    }
}

/// The agents file ClawSocket owns for the gateway: the configured one (a leading `~/`
/// expanded), else `~/.openclaw/clawsocket-agents.json`, beside the gateway's default
/// `openclaw.json`, so the seed's dynamic-agents config works as it is (SPEC §5).
fn openclaw_agents_file(configured: &str, home: &Path) -> String {
    let path = match configured.strip_prefix("~/") {
        _ if configured.is_empty() => home.join(".openclaw").join(DEFAULT_OPENCLAW_AGENTS_FILE),
        Some(rest) => home.join(rest),
        None => PathBuf::from(configured),
    };
    path.to_string_lossy().into_owned()
}

/// The file name of the default agents file (see `openclaw_agents_file`).
pub const DEFAULT_OPENCLAW_AGENTS_FILE: &str = "clawsocket-agents.json";

/// Fails unless `url` is an http(s) URL, showing it (credentials masked) and, when
/// adding `http://` (or trimming spaces) would make one, that URL.
fn check_url(key: &'static str, url: &str, when: &str) -> Result<(), ConfigError> {
    if is_http_url(url) {
        return Ok(());
    }
    let trimmed = url.trim();
    let fixed = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    let suggestion = if !trimmed.is_empty() && is_http_url(&fixed) {
        format!("; did you mean {:?}?", redact::url(&fixed))
    } else {
        String::new()
    };
    Err(ConfigError::Invalid {
        key,
        reason: format!("must be an http:// or https:// URL{when}, got {:?}{suggestion}", redact::url(url)),
    })
}

/// Fails unless `url` is a `redis://` URL the Redis client accepts (credentials masked
/// in the message).
fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    let accepted = url.starts_with("redis://") && redis::Client::open(url).is_ok();
    if accepted {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "cluster.redis.url",
        reason: format!("must be a redis://host:port URL, got {:?}", redact::url(url)),
    })
}

/// Whether `url` is an absolute http(s) URL with a host (what the auth client can POST to).
fn is_http_url(url: &str) -> bool {
    url.parse::<awc::http::Uri>()
        .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some())
}

/// The process environment, for `Settings::load` in `main`.
pub fn process_environment() -> Environment {
    std::env::vars().collect()
}

/// Every leaf key of the defaults, lowercased → its real dotted path, so that env
/// names (which config-rs would lowercase) find the camelCase key they mean.
fn known_keys(defaults: &Config) -> BTreeMap<String, (String, bool)> {
    fn walk(prefix: &str, table: &config::Map<String, Value>, out: &mut BTreeMap<String, (String, bool)>) {
        for (name, value) in table {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            match &value.kind {
                ValueKind::Table(inner) => walk(&path, inner, out),
                ValueKind::Array(_) => {
                    out.insert(path.to_lowercase(), (path, true));
                }
                _ => {
                    out.insert(path.to_lowercase(), (path, false));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(root) = defaults.clone().try_deserialize::<config::Map<String, Value>>() {
        walk("", &root, &mut out);
    }
    out
}

/// Every known dotted key (`known_keys`), sections included (`limits`,
/// `limits.heartbeat`, …).
fn known_paths(known: &BTreeMap<String, (String, bool)>) -> Vec<String> {
    let mut paths = std::collections::BTreeSet::new();
    for (leaf, _) in known.values().cloned() {
        let mut end = 0;
        while let Some(dot) = leaf[end..].find('.') {
            end += dot;
            paths.insert(leaf[..end].to_string());
            end += 1;
        }
        paths.insert(leaf);
    }
    paths.into_iter().collect()
}

/// Warns about each key ClawSocket does not use, naming the closest known key when
/// one is close; fails on the first that is close to a key under
/// `channels.websocket.auth`, `limits` or `channels.websocket.groups` (SPEC §8).
fn check_unknown_keys(unknown: &[String], known: &[String]) -> Result<(), ConfigError> {
    let mut misspelt = None;
    for key in unknown {
        match closest_known_key(key, known) {
            Some(suggestion) if is_security_key(suggestion) => {
                misspelt.get_or_insert_with(|| ConfigError::MisspeltKey {
                    key: key.clone(),
                    suggestion: suggestion.to_string(),
                });
            }
            suggestion => log::warn!(
                "configuration key `{key}` is not used by ClawSocket; ignored ({})",
                did_you_mean(suggestion.map(|key| format!("`{key}`")).as_deref(), "not close to any known key")
            ),
        }
    }
    misspelt.map_or(Ok(()), Err)
}

/// "did you mean X?", or `otherwise` when there is nothing to suggest.
fn did_you_mean(suggestion: Option<&str>, otherwise: &str) -> String {
    suggestion.map_or_else(|| otherwise.to_string(), |suggestion| format!("did you mean {suggestion}?"))
}

/// The known key beside `key` (same section) whose name is closest to `key`'s, if it
/// is close (see `closest`).
fn closest_known_key<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let split = |key: &'a str| key.rsplit_once('.').unwrap_or(("", key));
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let siblings =
        known.iter().map(String::as_str).filter(|candidate| normalized(split(candidate).0) == normalized(section));
    closest(name, siblings, |candidate| split(candidate).1)
}

/// The candidate whose name is closest to `name`, if it is close: compared without
/// case, `_` or `-`, within one edit per three letters of the candidate's name (at
/// least one, at most three).
fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
    name_of: impl Fn(&'a str) -> &'a str,
) -> Option<&'a str> {
    let name = normalized(name);
    candidates
        .filter_map(|candidate| {
            let candidate_name = normalized(name_of(candidate));
            let allowed = (candidate_name.chars().count() / 3).clamp(1, 3);
            let distance = edit_distance(&name, &candidate_name);
            (distance <= allowed).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `name` lowercased, without `_` or `-`: how a careless spelling is compared.
fn normalized(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '-')).flat_map(char::to_lowercase).collect()
}

/// Whether ignoring a misspelling of `key` would silently change security: the auth
/// and limits keys (SPEC §8), and the group policy (a misspelt `policy` would leave
/// every group open).
fn is_security_key(key: &str) -> bool {
    ["channels.websocket.auth", "limits", "channels.websocket.groups"]
        .iter()
        .any(|section| key.strip_prefix(section).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')))
}

/// Edits (insert, delete, substitute, or swap two neighbours) that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows: Vec<Vec<usize>> = (0..=a.len()).map(|i| (0..=b.len()).map(|j| i.max(j)).collect()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitute = rows[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitute.min(rows[i - 1][j] + 1).min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Fails on the first enum-valued key whose value is none of its values, listing
/// them (config-rs would only say "enum X does not have variant constructor y").
/// The keys and values come from `Settings` itself, so every enum is covered.
fn check_enum_values(merged: &Config) -> Result<(), ConfigError> {
    for (key, values) in enum_keys::<Settings>().0 {
        let Ok(value) = merged.get::<Value>(&key) else { continue };
        if matches!(value.kind, ValueKind::Table(_) | ValueKind::Array(_)) {
            continue;
        }
        let Ok(value) = value.into_string() else { continue };
        if values.contains(&value.as_str()) {
            continue;
        }
        let listed = values.iter().map(|value| format!("{value:?}")).collect::<Vec<_>>().join(", ");
        let suggestion = closest(&value, values.iter().copied(), |value| value)
            .map(|value| format!(" (did you mean {value:?}?)"))
            .unwrap_or_default();
        return Err(ConfigError::BadValue {
            key,
            reason: format!("{value:?} is not a value it takes; expected one of {listed}{suggestion}"),
        });
    }
    Ok(())
}

/// Every enum-valued key of `T` (dotted, as in the files) with its values, found by
/// walking `T`'s `Deserialize` once over placeholder values; the `Result` says
/// whether the walk got through all of `T` (a test checks it does for `Settings`).
fn enum_keys<T: serde::de::DeserializeOwned>() -> EnumKeys {
    let found = std::cell::RefCell::new(Vec::new());
    let walked = T::deserialize(walker::Walker { path: String::new(), found: &found }).map(drop);
    (found.into_inner(), walked)
}

/// The enum keys of a type, and whether the walk that found them completed.
type EnumKeys = (Vec<(String, &'static [&'static str])>, Result<(), serde::de::value::Error>);

/// A `Deserializer` that feeds a type placeholder values (zeros, empty strings and
/// lists, every struct field, each enum's first value) and notes the path and values
/// of every enum on the way.
mod walker {
    use std::cell::RefCell;

    use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
    use serde::de::{DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

    pub(super) type Found = RefCell<Vec<(String, &'static [&'static str])>>;

    pub(super) struct Walker<'a> {
        pub path: String,
        pub found: &'a Found,
    }

    impl<'de> Deserializer<'de> for Walker<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_u64(0)
        }

        fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_bool(false)
        }

        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_str("")
        }

        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_str("")
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_none()
        }

        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_seq(SeqDeserializer::new(std::iter::empty::<u8>()))
        }

        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_map(MapDeserializer::new(std::iter::empty::<(u8, u8)>()))
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_map(Fields { fields: fields.iter(), field: "", path: self.path, found: self.found })
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.found.borrow_mut().push((self.path, variants));
            let first = variants.first().copied().unwrap_or_default();
            visitor.visit_enum(first.into_deserializer())
        }

        serde::forward_to_deserialize_any! {
            i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
            tuple tuple_struct identifier ignored_any
        }
    }

    /// A struct's fields, each walked under its own path.
    struct Fields<'a> {
        fields: std::slice::Iter<'static, &'static str>,
        field: &'static str,
        path: String,
        found: &'a Found,
    }

    impl<'de> MapAccess<'de> for Fields<'_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
            let Some(field) = self.fields.next() else { return Ok(None) };
            self.field = field;
            seed.deserialize(field.into_deserializer()).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let path =
                if self.path.is_empty() { self.field.to_string() } else { format!("{}.{}", self.path, self.field) };
            seed.deserialize(Walker { path, found: self.found })
        }
    }
}

/// Maps the environment onto configuration keys: the original plugin's variables,
/// the backends' customary ones (only where the config leaves them empty), then
/// `CLAWSOCKET__SECTION__KEY` for any key.
fn environment_overrides(
    environment: &Environment,
    known: &BTreeMap<String, (String, bool)>,
) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut overrides = Vec::new();
    if let Some(raw) = environment.get("WS_AUTH_ENABLED") {
        let enabled = parse_bool(raw).ok_or_else(|| ConfigError::BadEnvValue {
            variable: "WS_AUTH_ENABLED".into(),
            reason: format!("expected true, false, 1 or 0, got {raw:?}"),
        })?;
        overrides.push(("channels.websocket.auth.enabled".to_string(), Value::from(enabled)));
    }
    if let Some(endpoint) = environment.get("WS_AUTH_ENDPOINT") {
        overrides.push(("channels.websocket.auth.endpoint".to_string(), Value::from(endpoint.as_str())));
    }
    if let Some(token) = environment.get(ADMIN_TOKEN_VARIABLE) {
        overrides.push(("admin.token".to_string(), Value::from(token.as_str())));
    }
    for (variable, value) in environment {
        let Some(rest) = variable.strip_prefix(ENV_PREFIX) else { continue };
        let wanted = rest.split("__").collect::<Vec<_>>().join(".").to_lowercase();
        let (path, is_list) = known.get(&wanted).ok_or_else(|| ConfigError::UnknownEnvKey {
            variable: variable.clone(),
            suggestion: closest_known_key(&wanted, &known.values().map(|(path, _)| path.clone()).collect::<Vec<_>>())
                .map(|key| format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())),
        })?;
        let value = if *is_list { parse_list(variable, value)? } else { Value::from(value.as_str()) };
        overrides.push((path.clone(), value));
    }
    Ok(overrides)
}

/// Fills the backend credentials from their customary variables when the layered
/// config left them empty.
fn apply_credential_fallbacks(settings: &mut Settings, environment: &Environment) {
    if settings.agent.token.is_empty() {
        if let Some(token) = environment.get("OPENCLAW_GATEWAY_TOKEN") {
            settings.agent.token = token.clone();
        }
    }
    if settings.agent.api_key.is_empty() {
        if let Some(key) = environment.get("OPENAI_API_KEY") {
            settings.agent.api_key = key.clone();
        }
    }
}

/// `true/false/1/0` (any case), as the original plugin read `WS_AUTH_ENABLED`.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A list from the environment: a JSON array, or comma-separated words.
fn parse_list(variable: &str, raw: &str) -> Result<Value, ConfigError> {
    let items: Vec<String> = if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).map_err(|error| ConfigError::BadEnvValue {
            variable: variable.to_string(),
            reason: format!("expected a JSON array of strings: {error}"),
        })?
    } else {
        raw.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect()
    };
    Ok(Value::from(items))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
