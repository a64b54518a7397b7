//! The Prometheus metrics of one server, served as text at `GET /metrics`.
//!
//! Each server has its own [`Metrics`] (its own registry, shared by `Arc`), so tests
//! that start several servers in one process see only their own figures. Every
//! labelled series the code touches is resolved once here, at start: the hot path
//! (a delta) only bumps an atomic, with no label lookup and no lock.

use std::time::Duration;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::protocol::ErrorCode;

/// Defines a label enum from one list: each variant with its label, and `ALL` in
/// declaration order (so a variant's `as usize` is its series' index).
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub enum $name {
            $($(#[$doc])* $variant,)+
        }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant,)+];

            fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

labels! {
    /// A bound a client or backend ran into (`clawsocket_limit_hits_total{limit}`).
    LimitHit {
        /// `limits.outboundBytes`: a slow connection closed 1008.
        OutboundBytes => "outbound_bytes",
        /// `limits.maxSubscriptions`: a subscription refused `quota_exceeded`.
        Subscriptions => "max_subscriptions",
        /// `limits.fragmentTimeoutMs`: a fragmented message not completed in time.
        FragmentTimeout => "fragment_timeout",
        /// `limits.maxPendingFragmentBytes`: the server-wide fragment budget was full.
        PendingFragmentBytes => "pending_fragment_bytes",
        /// `limits.perUser.maxConnections`: a user's connection refused.
        UserConnections => "per_user_connections",
        /// `limits.maxAnswerBytes`: an answer cut.
        AnswerBytes => "answer_bytes",
    }
}

labels! {
    /// A per-user limit that refused something (`clawsocket_quota_refusals_total{limit}`;
    /// the label is the limit's key under `limits.perUser`, as `chat.error` names it).
    #[derive(PartialEq, Eq)]
    QuotaLimit {
        /// A handshake refused with HTTP 429.
        MaxConnections => "maxConnections",
        /// A `chat.send` refused `quota_exceeded`.
        TurnsPerMinute => "turnsPerMinute",
        /// A `chat.send` refused `quota_exceeded`.
        TokensPerDay => "tokensPerDay",
    }
}

impl QuotaLimit {
    /// The limit's key under `limits.perUser` (the label, and `chat.error`'s `limit`).
    pub fn as_str(self) -> &'static str {
        self.label()
    }
}

labels! {
    /// Which tokens of a turn (`clawsocket_tokens_total{kind}`).
    TokenKind {
        Prompt => "prompt",
        Completion => "completion",
    }
}

labels! {
    /// How a connection attempt ended (`clawsocket_connections_total{outcome}`).
    ConnectionOutcome {
        Accepted => "accepted",
        AuthFailed => "auth_failed",
        /// Refused before auth (a disallowed Origin, over capacity) or after it (a
        /// user over `limits.perUser.maxConnections`).
        Rejected => "rejected",
    }
}

labels! {
    /// How a turn ended (`clawsocket_turns_total{outcome}`).
    TurnOutcome {
        Completed => "completed",
        Failed => "failed",
        Aborted => "aborted",
    }
}

/// One counter per label of `labels`, in their order.
fn series<T: Copy>(vec: &IntCounterVec, labels: &[T], label: fn(T) -> &'static str) -> Vec<IntCounter> {
    labels.iter().map(|value| vec.with_label_values(&[label(*value)])).collect()
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    connections: Vec<IntCounter>,
    pub sessions_active: IntGauge,
    turns: Vec<IntCounter>,
    pub deltas: IntCounter,
    errors: Vec<IntCounter>,
    pub turn_duration: Histogram,
    pub first_delta: Histogram,
    pub auth_duration: Histogram,
    pub dynamic_agents: IntGauge,
    /// Users who got the default agent because `maxAgents` was reached.
    pub dynamic_agent_fallbacks: IntCounter,
    limit_hits: Vec<IntCounter>,
    quota_refusals: Vec<IntCounter>,
    tokens: Vec<IntCounter>,
    /// Cluster mode only: registered by [`Metrics::with_cluster`].
    pub cluster: Option<ClusterMetrics>,
}

/// What a node in a cluster counts (SPEC §14), beside the single node's series.
pub struct ClusterMetrics {
    /// 1 while the last health check reached Redis.
    pub redis_up: IntGauge,
    /// Commands sent to the node that owns their session.
    pub commands_forwarded: IntCounter,
    /// Session leases this node took (a new owner, or a takeover).
    pub leases_taken: IntCounter,
    /// Events this node published to session streams (one per frame or batch).
    pub events_published: IntCounter,
    /// Events this node read from session streams and relayed to its connections.
    pub events_relayed: IntCounter,
}

impl Metrics {
    /// As `new`, with the cluster series (`clawsocket_cluster_*`).
    pub fn with_cluster() -> Metrics {
        let mut metrics = Metrics::new();
        let registry = &metrics.registry;
        metrics.cluster = Some(ClusterMetrics {
            redis_up: gauge(registry, "clawsocket_cluster_redis_up", "1 while this node reaches Redis"),
            commands_forwarded: counter(
                registry,
                "clawsocket_cluster_commands_forwarded_total",
                "Commands sent to the node that runs their session",
            ),
            leases_taken: counter(registry, "clawsocket_cluster_leases_taken_total", "Session leases this node took"),
            events_published: counter(
                registry,
                "clawsocket_cluster_events_published_total",
                "Events published to session streams",
            ),
            events_relayed: counter(
                registry,
                "clawsocket_cluster_events_relayed_total",
                "Stream events relayed to this node's connections",
            ),
        });
        metrics
    }

    /// A fresh registry with every series registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let connections_vec =
            counter_vec(&registry, "clawsocket_connections_total", "Connection attempts by outcome", "outcome");
        let turns_vec = counter_vec(&registry, "clawsocket_turns_total", "Agent turns by outcome", "outcome");
        let errors_vec = counter_vec(&registry, "clawsocket_errors_total", "chat.error frames sent, by code", "code");
        let limits_vec =
            counter_vec(&registry, "clawsocket_limit_hits_total", "Times a client or backend hit a bound", "limit");
        let quota_vec = counter_vec(
            &registry,
            "clawsocket_quota_refusals_total",
            "Handshakes and turns refused by a per-user limit",
            "limit",
        );
        let tokens_vec =
            counter_vec(&registry, "clawsocket_tokens_total", "Tokens of ended turns (reported or estimated)", "kind");
        Metrics {
            connections_open: gauge(&registry, "clawsocket_connections_open", "Open WebSocket connections"),
            connections: series(&connections_vec, ConnectionOutcome::ALL, ConnectionOutcome::label),
            sessions_active: gauge(&registry, "clawsocket_sessions_active", "Sessions held in memory"),
            turns: series(&turns_vec, TurnOutcome::ALL, TurnOutcome::label),
            deltas: counter(&registry, "clawsocket_deltas_total", "Deltas relayed from agents to sessions"),
            errors: series(&errors_vec, ErrorCode::ALL, ErrorCode::as_str),
            turn_duration: histogram(
                &registry,
                "clawsocket_turn_duration_seconds",
                "Turn duration, start to end",
                LONG,
            ),
            first_delta: histogram(&registry, "clawsocket_first_delta_seconds", "Turn start to its first delta", SHORT),
            auth_duration: histogram(
                &registry,
                "clawsocket_auth_duration_seconds",
                "Auth service call duration",
                SHORT,
            ),
            dynamic_agents: gauge(&registry, "clawsocket_dynamic_agents", "Dynamic agents in the registry"),
            dynamic_agent_fallbacks: counter(
                &registry,
                "clawsocket_dynamic_agent_fallbacks_total",
                "Users sent to the default agent because maxAgents was reached",
            ),
            limit_hits: series(&limits_vec, LimitHit::ALL, LimitHit::label),
            quota_refusals: series(&quota_vec, QuotaLimit::ALL, QuotaLimit::label),
            tokens: series(&tokens_vec, TokenKind::ALL, TokenKind::label),
            cluster: None,
            registry,
        }
    }

    pub fn connection(&self, outcome: ConnectionOutcome) {
        self.connections[outcome as usize].inc();
    }

    pub fn turn(&self, outcome: TurnOutcome, duration: Duration) {
        self.turns[outcome as usize].inc();
        self.turn_duration.observe(duration.as_secs_f64());
    }

    /// One `chat.error` with `code` sent (to one connection, or to a session's subscribers).
    pub fn error(&self, code: ErrorCode) {
        self.errors[code as usize].inc();
    }

    /// A client or backend ran into `limit`.
    pub fn limit_hit(&self, limit: LimitHit) {
        self.limit_hits[limit as usize].inc();
    }

    /// A per-user `limit` refused a handshake or a turn.
    pub fn quota_refusal(&self, limit: QuotaLimit) {
        self.quota_refusals[limit as usize].inc();
    }

    /// Tokens of an ended turn.
    pub fn tokens(&self, kind: TokenKind, count: u64) {
        self.tokens[kind as usize].inc_by(count);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            log::error!("could not encode the metrics: {error}");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets for waits measured in milliseconds to seconds (first delta, auth).
const SHORT: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets for whole turns (seconds to minutes).
const LONG: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

// Registration only fails for a duplicate or malformed name: the names above are
// fixed and distinct, so these `expect`s state an invariant, not a runtime risk.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric name");
    registry.register(Box::new(gauge.clone())).expect("metric registered once");
    gauge
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric name");
    registry.register(Box::new(counter.clone())).expect("metric registered once");
    counter
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric name");
    registry.register(Box::new(vec.clone())).expect("metric registered once");
    vec
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let histogram =
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric");
    registry.register(Box::new(histogram.clone())).expect("metric registered once");
    histogram
}
