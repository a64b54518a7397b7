//! The HTTP surface: the WebSocket endpoint and the operator endpoints, on one port.
//!
//! `run` takes an already bound listener (so tests bind port 0 and `main` binds the
//! configured address), starts the Supervisor and the actix-web server, and returns
//! both. The WebSocket handshake is the only place, with `actors/connection.rs`,
//! that knows actix-web-actors.
//!
//! The handshake authenticates (`auth.rs`) before anything else exists for the socket:
//! a `ConnectionActor`, the only reader of a socket's messages, is started only for an
//! admitted identity. A refused socket gets no actor at all: its whole life is two
//! frames encoded here, the `chat.error` and the 4401 close, and nothing ever reads
//! what it sends, so no message of a refused connection can reach an agent.
//! Cheaper refusals come first, before the auth service is asked anything: an `Origin`
//! outside `allowedOrigins` gets HTTP 403, and a server at `limits.maxConnections` (or
//! shutting down) HTTP 503.
//!
//! Shutdown is ours, not actix-web's (`disable_signals`): on SIGTERM or SIGINT
//! [`GracefulShutdown`] refuses new sockets (503), has the Supervisor drain the
//! sessions within `limits.shutdownGraceMs` and close every socket with 1001, then
//! stops the HTTP server. A second signal stops at once.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_http::ws::{Codec, OpCode, Parser};
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use futures_util::future::{select, Either};
use futures_util::stream;

use crate::actors::connection::{ConnectionActor, ConnectionSetup};
use crate::actors::store_writer::StoreThreads;
use crate::actors::supervisor::{ShutDown, Supervisor, SupervisorSetup};
use crate::agents::AgentRegistry;
use crate::auth::{self, Admission, AnswerCache, AuthError, Authenticator};
use crate::backend::{self, AgentBackend};
use crate::config::{AgentKind, GroupPolicy, Settings};
use crate::error::StartError;
use crate::frame_guard::FrameSizeGuard;
use crate::groups::{GroupAccess, VerdictCache};
use crate::identity::{ConnectionId, Identity};
use crate::limits::{ByteBudget, ConnectionSlots, SlotRefusal, UserConnections};
use crate::metrics::{ConnectionOutcome, LimitHit, Metrics};
use crate::openclaw_agents;
use crate::origin;
use crate::protocol::{Disconnect, ErrorCode, Outbound, CLOSE_AUTH_FAILED};
use crate::redact;

/// Once every socket has been told to close (1001), the HTTP workers give the close
/// frames this long, in seconds, to be written before they drop what is left.
const SOCKET_CLOSE_SECS: u64 = 2;

/// A started service: await `server` to run it (or `serve_until_signal`);
/// `supervisor` answers registry questions; `shutdown` stops it gracefully.
pub struct RunningServer {
    pub server: Server,
    pub supervisor: Addr<Supervisor>,
    pub local_addr: SocketAddr,
    pub shutdown: GracefulShutdown,
}

/// What every request handler shares.
struct AppState {
    settings: Arc<Settings>,
    supervisor: Addr<Supervisor>,
    backend: Arc<dyn AgentBackend>,
    metrics: Arc<Metrics>,
    /// Open connections under `limits.maxConnections`; closed at shutdown.
    slots: Arc<ConnectionSlots>,
    /// Each user's open connections, under `limits.perUser.maxConnections`.
    users: Arc<UserConnections>,
    /// Unfinished fragmented messages, under `limits.maxPendingFragmentBytes`.
    fragments: Arc<ByteBudget>,
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

/// Starts the service on `listener`. Must be called inside an actix system.
pub fn run(listener: TcpListener, settings: Arc<Settings>) -> Result<RunningServer, StartError> {
    let backend = backend::from_settings(&settings.agent);
    let metrics = Arc::new(Metrics::new());
    let agents = AgentRegistry::load(&settings.store.dir).map_err(StartError::Store)?;
    repair_openclaw_agents(&settings, &agents);
    let supervisor = Supervisor::new(SupervisorSetup {
        settings: settings.clone(),
        backend: backend.clone(),
        agents,
        home: settings.home.clone(),
        store: StoreThreads::start(settings.store.threads),
        metrics: metrics.clone(),
    })
    .start();
    let local_addr = listener.local_addr()?;
    let websocket = &settings.channels.websocket;
    if websocket.enabled {
        log::info!("ClawSocket listening on ws://{local_addr}{}", websocket.path);
    } else {
        log::warn!("channels.websocket.enabled is false: no WebSocket and no chat page; serving /healthz, /readyz and /metrics only on {local_addr}");
    }
    log_auth_mode(&settings);
    // One cache for all workers; each worker builds its own Authenticator (awc is per thread).
    let answer_cache = AnswerCache::for_settings(&settings.channels.websocket.auth);
    let verdict_cache = Arc::new(VerdictCache::default());
    let slots = ConnectionSlots::new(settings.limits.max_connections);
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        supervisor: supervisor.clone(),
        backend,
        metrics: metrics.clone(),
        slots: slots.clone(),
        users: UserConnections::new(settings.limits.per_user.max_connections),
        fragments: ByteBudget::new(settings.limits.max_pending_fragment_bytes),
    });
    let server = HttpServer::new(move || {
        let enabled = state.settings.channels.websocket.enabled;
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
                    app.route("/", web::get().to(chat_page)).route(&path, web::get().to(websocket_handshake));
                }
            })
    })
    // Deltas are small frames written as they come: without TCP_NODELAY the kernel
    // holds one back until the client's delayed ACK (~40 ms per turn, measured).
    .tcp_nodelay(true)
    .on_connect(drop_stuck_peers(Duration::from_millis(settings.limits.heartbeat.timeout_ms)))
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(SOCKET_CLOSE_SECS)
    .run();
    let shutdown = GracefulShutdown {
        server: server.handle(),
        supervisor: supervisor.clone(),
        slots,
        grace: Duration::from_millis(settings.limits.shutdown_grace_ms),
    };
    Ok(RunningServer { server, supervisor, local_addr, shutdown })
}

impl RunningServer {
    /// Serves until SIGTERM or SIGINT, then shuts down gracefully (a second signal
    /// stops at once); returns when the server has stopped.
    pub async fn serve_until_signal(self) -> std::io::Result<()> {
        // Registered before serving, so a signal that comes early is not missed.
        let mut signals = Signals::register()?;
        let shutdown = self.shutdown;
        actix_web::rt::spawn(async move {
            let first = signals.next().await;
            log::info!("{first}: shutting down gracefully (send it again to stop at once)");
            let graceful = std::pin::pin!(shutdown.run());
            let second = std::pin::pin!(signals.next());
            if let Either::Right((second, _)) = select(graceful, second).await {
                log::warn!("{second} again: stopping now");
                shutdown.server.stop(false).await;
            }
        });
        self.server.await
    }
}

/// Stops the service in order: refuse new sockets, drain the sessions (running
/// turns finish within the grace, or end with `shutting_down`; their answers are
/// stored), close every socket with 1001, stop the HTTP server.
#[derive(Clone)]
pub struct GracefulShutdown {
    server: ServerHandle,
    supervisor: Addr<Supervisor>,
    slots: Arc<ConnectionSlots>,
    grace: Duration,
}

impl GracefulShutdown {
    /// Runs the whole sequence; returns when the HTTP server has stopped.
    pub async fn run(&self) {
        self.slots.close();
        log::info!("shutdown: new connections are refused; turns in flight have {:?} to finish", self.grace);
        match self.supervisor.send(ShutDown { grace: self.grace }).await {
            Ok(report) => log::info!(
                "shutdown: {} sessions drained ({:?}); {} connections closed (1001)",
                report.sessions,
                report.drained,
                report.connections_closed
            ),
            Err(error) => log::error!("shutdown: the supervisor did not answer ({error}); stopping anyway"),
        }
        self.server.stop(true).await;
        log::info!("shutdown complete");
    }
}

/// The signals that stop the service: SIGTERM (service managers, `docker stop`) and
/// SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        let terminate = std::pin::pin!(self.terminate.recv());
        let interrupt = std::pin::pin!(self.interrupt.recv());
        match select(terminate, interrupt).await {
            Either::Left(_) => "SIGTERM",
            Either::Right(_) => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Sets TCP_USER_TIMEOUT on every accepted socket: the kernel aborts a connection
/// whose peer has taken no byte for `timeout` (its receive window stays shut). That is
/// the one way to end a client that stopped reading for good: the HTTP/1 dispatcher
/// polls a WebSocket's body, and so runs its actor, only while it holds less than its
/// write buffer (32 KiB) of unsent bytes, so once the kernel's buffers are full the
/// actor can be frozen, heartbeat and 1008 close included. The aborted connection's
/// actor is then dropped, which stops it as usual.
fn drop_stuck_peers(timeout: Duration) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) {
    move |connection, _| {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
                log::debug!("could not set TCP_USER_TIMEOUT on a connection: {error}");
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
        let _ = (connection, timeout);
    }
}

/// The web chat page, embedded so that running it needs no build step.
const CHAT_PAGE: &str = include_str!("../web/index.html");

/// `GET /`: a small web chat that speaks the protocol.
async fn chat_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(CHAT_PAGE)
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
    match state.backend.probe().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {reason}\n"))
        }
    }
}

/// Brings the gateway's agents file in line with the registry at start: an agent the
/// registry knows but the file lost (edited by hand, restored from a backup) is
/// written back, with a log line each, so its user is not refused "Unknown agent".
fn repair_openclaw_agents(settings: &Settings, registry: &AgentRegistry) {
    let path = Path::new(&settings.agent.openclaw_config_path);
    let owned =
        settings.channels.websocket.dynamic_agent_creation.enabled && settings.agent.kind == AgentKind::Openclaw;
    if !owned {
        return;
    }
    warn_unless_included(path);
    match openclaw_agents::ensure_agents(path, registry.agents.values()) {
        Ok(added) => {
            for agent_id in added {
                log::warn!("{}: agent {agent_id} was missing (the registry has it); written back", path.display());
            }
        }
        Err(error) => log::error!("the OpenClaw agents file could not be brought in line with the registry: {error}"),
    }
}

/// One clear warning when the gateway's `openclaw.json` beside the agents file does not
/// `$include` it: the gateway would then answer "Unknown agent" to every new user.
fn warn_unless_included(agents_file: &Path) {
    let name = agents_file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let gateway_config = agents_file.with_file_name("openclaw.json");
    let included = std::fs::read_to_string(&gateway_config)
        .is_ok_and(|text| text.lines().any(|line| line.contains("$include") && line.contains(name.as_str())));
    if !included {
        log::warn!(
            "dynamic agents: {} does not $include {}; the gateway will not know the users' agents. Add to its \"agents\" section: agents: {{ $include: \"./{name}\", ownership: \"explicit\" }} (see README, Dynamic agents)",
            gateway_config.display(),
            agents_file.display()
        );
    }
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

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

/// The query parameters of the WebSocket URL the identity of an anonymous connection is taken from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams {
    sender_id: Option<String>,
    sender_name: Option<String>,
}

/// `GET {path}`: the WebSocket handshake. Before the auth service is asked anything,
/// a request that is no WebSocket upgrade is answered 400, a browser `Origin` outside
/// `allowedOrigins` 403, and a handshake beyond `limits.maxConnections` (or during
/// shutdown) 503.
async fn websocket_handshake(
    request: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    authenticator: web::Data<Authenticator>,
    groups: web::Data<GroupAccess>,
) -> actix_web::Result<HttpResponse> {
    let mut response = ws::handshake(&request)?;
    if let Some(refused) = refuse_origin(&request, &state.settings.channels.websocket.allowed_origins) {
        state.metrics.connection(ConnectionOutcome::Rejected);
        return Ok(refused);
    }
    let slot = match state.slots.try_acquire() {
        Ok(slot) => slot,
        Err(refusal) => {
            state.metrics.connection(ConnectionOutcome::Rejected);
            return Ok(unavailable(refusal, state.settings.limits.max_connections));
        }
    };
    let connection_id = ConnectionId::new();
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let identity = match authenticator.admit(&connection_id, request.query_string(), authorization).await {
        Admission::Authenticated(user) => {
            let mut identity = Identity::authenticated(user.user_id, user.username, user.data);
            if state.settings.agent.forward_user_token {
                identity.token = auth::request_token(request.query_string(), authorization);
            }
            identity
        }
        Admission::Anonymous => url_identity(&request, &connection_id, state.settings.channels.websocket.auth.enabled),
        Admission::Refused(error) => {
            state.metrics.connection(ConnectionOutcome::AuthFailed);
            state.metrics.error(error.code());
            return Ok(response.streaming(refusal(&error)));
        }
    };
    let Some(user_connection) = state.users.try_acquire(&identity.sender_id) else {
        return Ok(response.streaming(too_many_user_connections(&state, &identity)));
    };
    let max_bytes = state.settings.limits.max_message_bytes;
    // The guard refuses an oversized frame from its header; the codec's own check
    // comes only after the whole frame was buffered (see `frame_guard.rs`).
    let (inbound, oversize) = FrameSizeGuard::new(stream, max_bytes);
    state.metrics.connection(ConnectionOutcome::Accepted);
    let actor = ConnectionActor::new(ConnectionSetup {
        id: connection_id,
        identity,
        settings: state.settings.clone(),
        supervisor: state.supervisor.clone(),
        metrics: state.metrics.clone(),
        groups,
        slot,
        oversize,
        fragments: state.fragments.clone(),
        user_connection,
    });
    let codec = Codec::new().max_size(max_bytes);
    Ok(response.streaming(ws::WebsocketContext::with_codec(actor, inbound, codec)))
}

/// HTTP 403 for a handshake whose `Origin` header is present and not allowed; `None`
/// lets it through (no header: not a browser; an empty list: any origin).
fn refuse_origin(request: &HttpRequest, allowed: &[String]) -> Option<HttpResponse> {
    let value = request.headers().get(header::ORIGIN)?;
    let allowed_here = match value.to_str() {
        Ok(origin) => origin::origin_allowed(origin, allowed),
        // Not even text: it matches no pattern, so only an empty list lets it through.
        Err(_) => allowed.is_empty(),
    };
    if allowed_here {
        return None;
    }
    log::debug!("handshake from origin {value:?} refused: not in channels.websocket.allowedOrigins");
    Some(HttpResponse::Forbidden().content_type("text/plain").body("origin not allowed\n"))
}

/// HTTP 503 for a handshake that gets no connection slot.
fn unavailable(refusal: SlotRefusal, max_connections: usize) -> HttpResponse {
    let body = match refusal {
        SlotRefusal::Full => {
            log::warn!("handshake refused: limits.maxConnections ({max_connections}) connections are open");
            "too many connections; try again later\n"
        }
        SlotRefusal::ShuttingDown => "the server is shutting down\n",
    };
    HttpResponse::ServiceUnavailable().content_type("text/plain").body(body)
}

/// The identity an unauthenticated connection names in its URL (else its connection
/// id): a guest's when auth is enabled (SPEC §2), used as it is when auth is off.
fn url_identity(request: &HttpRequest, connection_id: &ConnectionId, auth_enabled: bool) -> Identity {
    let params: ConnectParams = serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    let (id, name) = (params.sender_id.as_deref(), params.sender_name.as_deref());
    if auth_enabled {
        Identity::guest(connection_id, id, name)
    } else {
        Identity::anonymous(connection_id, id, name)
    }
}

/// The refusal of a user who already has `limits.perUser.maxConnections` open.
fn too_many_user_connections(state: &AppState, identity: &Identity) -> RefusalBody {
    let max = state.users.max();
    log::warn!(
        "connection refused: sender {:?} already has limits.perUser.maxConnections ({max}) open",
        identity.sender_id
    );
    state.metrics.connection(ConnectionOutcome::Rejected);
    state.metrics.limit_hit(LimitHit::UserConnections);
    state.metrics.error(ErrorCode::QuotaExceeded);
    let text = format!("this user already has {max} connections open (limits.perUser.maxConnections); close one first");
    refusal_body(ErrorCode::QuotaExceeded, &text, Disconnect::USER_CONNECTIONS)
}

/// The whole outbound life of a socket refused after its handshake: one frame.
type RefusalBody = stream::Once<std::future::Ready<Result<Bytes, Infallible>>>;

/// An auth refusal: `chat.error` with the reason, then close 4401.
fn refusal(error: &AuthError) -> RefusalBody {
    refusal_body(error.code(), &error.client_message(), Disconnect { code: CLOSE_AUTH_FAILED, reason: error.reason() })
}

/// `chat.error`, then close `close_code`: encoded here once, with no actor behind it.
/// When the body ends the connection ends, and nothing has read a single frame from
/// the client.
fn refusal_body(code: ErrorCode, text: &str, disconnect: Disconnect) -> RefusalBody {
    let frame = Outbound::error_frame(code, text, None);
    let mut bytes = BytesMut::new();
    Parser::write_message(&mut bytes, frame.text().as_bytes(), OpCode::Text, true, false);
    let reason = ws::CloseReason { code: disconnect.code.into(), description: Some(disconnect.reason.to_string()) };
    Parser::write_close(&mut bytes, Some(reason), false);
    stream::once(std::future::ready(Ok(bytes.freeze())))
}
