//! The wiring: the Supervisor, the HTTP server and its routes, on one port.
//!
//! `run` takes an already bound listener (so tests bind port 0 and `main` binds the
//! configured address with [`bind`]), starts the Supervisor and the actix-web server,
//! and returns both. The WebSocket endpoint is `handshake.rs`, the media routes
//! `media/http.rs`; the operator endpoints (`/healthz`, `/readyz`, `/metrics`) are
//! here, the chat page and its files are `web_page.rs`; stopping is `shutdown.rs`.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::cluster_node::ClusterNode;
use crate::actors::store_writer::{ConversationIndex, StoreThreads};
use crate::actors::stream_reader::StreamReader;
use crate::actors::supervisor::{ClusterWiring, Supervisor, SupervisorSetup};
use crate::admin;
use crate::agents::AgentRegistry;
use crate::auth::{AnswerCache, Authenticator};
use crate::backend::{self, AgentBackend};
use crate::cluster::{self, Cluster};
use crate::config::{GroupPolicy, Settings};
use crate::error::StartError;
use crate::groups::{self, GroupAccess};
use crate::handshake;
use crate::limits::{ByteBudget, ConnectionSlots, UserConnections};
use crate::media::{self, MediaStore};
use crate::metrics::Metrics;
use crate::openclaw_agents;
use crate::quota::Tenancy;
use crate::redact;
use crate::shutdown::{self, GracefulShutdown, SOCKET_CLOSE_SECS};
use crate::web_page;

/// A started service: await `server` to run it (or `serve_until_signal`);
/// `supervisor` answers registry questions; `shutdown` stops it gracefully.
pub struct RunningServer {
    pub server: Server,
    pub supervisor: Addr<Supervisor>,
    pub local_addr: SocketAddr,
    pub shutdown: GracefulShutdown,
}

/// What every request handler shares.
pub(crate) struct AppState {
    pub settings: Arc<Settings>,
    pub supervisor: Addr<Supervisor>,
    pub backend: Arc<dyn AgentBackend>,
    pub metrics: Arc<Metrics>,
    /// Open connections under `limits.maxConnections`; closed at shutdown.
    pub slots: Arc<ConnectionSlots>,
    /// Each user's open connections, under `limits.perUser.maxConnections`.
    pub users: UserConnections,
    /// Unfinished fragmented messages, under `limits.maxPendingFragmentBytes`.
    pub fragments: Arc<ByteBudget>,
    /// Cluster mode: Redis (its health is part of readiness).
    pub cluster: Option<Arc<Cluster>>,
    /// Uploads and the agent's attachments (`POST /media`, `GET /media/{id}`).
    pub media: Arc<MediaStore>,
    /// Every owner's conversations (`chat.threads`, `chat.title`).
    pub conversations: ConversationIndex,
    /// Per-user limits and usage (SPEC §13).
    pub tenancy: Arc<Tenancy>,
}

/// Binds the configured address, for `main`. A failure names the address and, for
/// the usual causes, what to do: `could not listen on 127.0.0.1:18800: Address
/// already in use (another process has that port; choose another with --port or
/// channels.websocket.port)`.
pub fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    TcpListener::bind((host, port)).map_err(|error| {
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut reason = error.to_string();
        if let Some(code) = error.raw_os_error() {
            reason.truncate(reason.strip_suffix(&format!(" (os error {code})")).unwrap_or(&reason).len());
        }
        let what_to_do = match error.kind() {
            ErrorKind::AddrInUse => {
                "another process has that port; choose another with --port or channels.websocket.port"
            }
            ErrorKind::PermissionDenied => {
                "this user may not listen on that port; choose another with --port or channels.websocket.port"
            }
            ErrorKind::AddrNotAvailable => {
                "no interface of this machine has that address; choose another with --host or channels.websocket.host"
            }
            _ => return StartError::Listen { address, reason },
        };
        StartError::Listen { address, reason: format!("{reason} ({what_to_do})") }
    })
}

impl RunningServer {
    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn serve_until_signal(self) -> std::io::Result<()> {
        shutdown::serve_until_signal(self.server, self.shutdown).await
    }
}

/// Starts the service on `listener`. Must be called inside an actix system.
pub fn run(listener: TcpListener, settings: Arc<Settings>) -> Result<RunningServer, StartError> {
    remember_secrets(&settings);
    let metrics = Arc::new(if settings.cluster.enabled() { Metrics::with_cluster() } else { Metrics::new() });
    let agents = AgentRegistry::load(&settings.store.dir).map_err(StartError::Store)?;
    let written_back = openclaw_agents::repair_at_start(&settings, &agents);
    let local_addr = listener.local_addr()?;
    let cluster = join_cluster(&settings, local_addr.port())?;
    // Uploads and attachments: their metadata in Redis in a cluster (the bytes on a
    // directory the nodes share), else beside the bytes.
    let media = MediaStore::new(&settings, cluster.as_ref()).map_err(StartError::Store)?;
    let backend = backend::from_settings(&settings, media.clone());
    let tenancy = Tenancy::new(&settings, cluster.as_ref(), metrics.clone());
    tenancy.start();
    let wiring =
        cluster.clone().map(|cluster| ClusterWiring { reader: StreamReader::new(cluster.clone()).start(), cluster });
    let store = StoreThreads::start(settings.store.threads);
    let conversations = conversation_index(&settings, &store, cluster.as_ref());
    let supervisor = Supervisor::new(SupervisorSetup {
        settings: settings.clone(),
        backend: backend.clone(),
        agents,
        unconfirmed: written_back,
        home: settings.home.clone(),
        conversations: conversations.clone(),
        metrics: metrics.clone(),
        cluster: wiring,
        media: media.clone(),
        tenancy: tenancy.clone(),
    })
    .start();
    // The state nodes share besides sessions, chosen once here: in this process alone,
    // through Redis in a cluster (one more kind: see `cluster_shared.rs`).
    let users = UserConnections::for_settings(cluster.as_ref());
    // One cache for all workers; each worker builds its own Authenticator (awc is per thread).
    let answer_cache = AnswerCache::for_settings(&settings.channels.websocket.auth, cluster.as_ref());
    if let Some(cluster) = &cluster {
        let outbound_bytes = settings.limits.outbound_bytes;
        let node =
            ClusterNode::new(cluster.clone(), supervisor.clone(), outbound_bytes, metrics.clone(), users.clone());
        node.with_tenancy(tenancy.clone()).start();
    }
    let websocket = &settings.channels.websocket;
    if websocket.enabled {
        log::info!("ClawSocket listening on ws://{local_addr}{}", websocket.path);
    } else {
        log::warn!("channels.websocket.enabled is false: no WebSocket and no chat page; serving /healthz, /readyz and /metrics only on {local_addr}");
    }
    log_auth_mode(&settings);
    log_admin_mode(&settings);
    let verdict_cache = groups::verdict_cache(&settings.channels.websocket.groups);
    let slots = ConnectionSlots::new(settings.limits.max_connections);
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        supervisor: supervisor.clone(),
        backend,
        metrics: metrics.clone(),
        slots: slots.clone(),
        users,
        fragments: ByteBudget::new(settings.limits.max_pending_fragment_bytes),
        cluster,
        media,
        conversations,
        tenancy: tenancy.clone(),
    });
    let shutdown_tenancy = tenancy;
    let server = HttpServer::new(move || {
        let enabled = state.settings.channels.websocket.enabled;
        let admin = state.settings.admin.enabled();
        let path = state.settings.channels.websocket.path.clone();
        let authenticator =
            Authenticator::new(&state.settings.channels.websocket.auth, answer_cache.clone(), state.metrics.clone());
        let groups = GroupAccess::new(&state.settings.channels.websocket.groups, verdict_cache.clone());
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(authenticator))
            .app_data(web::Data::new(groups))
            // %U: the path without the query string, which may hold a token. The
            // WebSocket path is left out: its "request" lasts the whole connection (the
            // logger would hold its fields that long) and ConnectionActor logs open/close.
            .wrap(
                Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#)
                    .custom_request_replace("method", |request| request.method().to_string())
                    .exclude(path.clone()),
            )
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
            // The channel switched off: only the health and metrics routes answer (SPEC §7).
            .configure(|app| {
                if enabled {
                    web_page::configure(app, &path);
                    app.route(&path, web::get().to(handshake::websocket_handshake))
                        .route("/media", web::post().to(media::http::upload))
                        .route("/media/{id}", web::get().to(media::http::download));
                }
                // Without an admin token there are no /admin routes at all (404).
                if enabled && admin {
                    admin::routes(app);
                }
            })
    })
    // Deltas are small frames written as they come: without TCP_NODELAY the kernel
    // holds one back until the client's delayed ACK (~40 ms per turn, measured).
    .tcp_nodelay(true)
    .on_connect(handshake::drop_stuck_peers(Duration::from_millis(settings.limits.heartbeat.timeout_ms)))
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(SOCKET_CLOSE_SECS)
    .run();
    let shutdown = GracefulShutdown {
        server: server.handle(),
        supervisor: supervisor.clone(),
        slots,
        grace: Duration::from_millis(settings.limits.shutdown_grace_ms),
        tenancy: shutdown_tenancy,
    };
    Ok(RunningServer { server, supervisor, local_addr, shutdown })
}

/// The conversation indexes: files on the store threads alone, Redis in a cluster.
fn conversation_index(settings: &Settings, store: &StoreThreads, cluster: Option<&Arc<Cluster>>) -> ConversationIndex {
    match cluster {
        Some(cluster) => ConversationIndex::Redis { cluster: cluster.clone() },
        None => ConversationIndex::local(store.clone(), settings.store.dir.clone()),
    }
}

/// Cluster mode (a Redis URL set): the handle to Redis, not connected yet (a node
/// that starts while Redis is down is not ready, and does not fail).
fn join_cluster(settings: &Settings, port: u16) -> Result<Option<Arc<Cluster>>, StartError> {
    let config = &settings.cluster;
    if !config.enabled() {
        return Ok(None);
    }
    let node_id = match config.node_id.trim() {
        "" => cluster::default_node_id(port),
        configured => configured.to_string(),
    };
    log::info!("cluster: node {node_id} on Redis {}", redact::url(&config.redis.url));
    Cluster::new(config, node_id).map(Some).map_err(|error| StartError::Cluster(error.to_string()))
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `GET /readyz`: the listener is up, not shutting down, and the agent backend
/// answers; 503 with the reason if not.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.slots.is_closed() {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("not ready: shutting down\n");
    }
    if state.cluster.as_ref().is_some_and(|cluster| !cluster.is_healthy()) {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready: the cluster's Redis cannot be reached\n");
    }
    match state.backend.probe().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {reason}\n"))
        }
    }
}

/// Hands every configured secret to `redact`, so that no backend's echo of one, in
/// whatever words, reaches a log line.
fn remember_secrets(settings: &Settings) {
    let websocket = &settings.channels.websocket;
    let urls = [&settings.agent.url, &websocket.auth.endpoint, &websocket.groups.endpoint, &settings.cluster.redis.url];
    let passwords = urls.into_iter().filter_map(|url| redact::url_password(url));
    let tokens = [settings.agent.token.as_str(), settings.agent.api_key.as_str(), settings.admin.token.as_str()];
    redact::remember(tokens.into_iter().chain(passwords));
}

/// Says once at start how connections are authenticated (never per connection).
fn log_auth_mode(settings: &Settings) {
    let auth = &settings.channels.websocket.auth;
    if settings.channels.websocket.groups.policy == GroupPolicy::Listed && !auth.enabled {
        log::warn!(
            "groups.policy is \"listed\" but auth is disabled: nobody has a data.groups list, so no group can be used"
        );
    }
    if !auth.enabled {
        log::warn!("auth is disabled: every connection is anonymous and names itself");
    } else if auth.required {
        log::info!("auth: every connection must be vouched for by {}", redact::url(&auth.endpoint));
    } else {
        log::info!(
            "auth: tokens are checked with {}; connections without a valid one are guests (ids under guest:)",
            redact::url(&auth.endpoint)
        );
    }
}

/// Says once at start whether the `/admin` routes are on (never the token).
fn log_admin_mode(settings: &Settings) {
    let token = &settings.admin.token;
    if token.is_empty() {
        log::info!("admin: no admin.token: the /admin routes are off");
        return;
    }
    if !settings.channels.websocket.enabled {
        log::warn!("admin: admin.token is set but channels.websocket.enabled is false: the /admin routes are off");
        return;
    }
    log::info!("admin: /admin/usage and /admin/sessions answer requests bearing admin.token");
    if token.len() < MIN_ADMIN_TOKEN_BYTES {
        log::warn!(
            "admin: admin.token is shorter than {MIN_ADMIN_TOKEN_BYTES} bytes; a long random token is safer (e.g. `openssl rand -hex 32`)"
        );
    }
}

/// Below this length `admin.token` earns a warning at start.
const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}
