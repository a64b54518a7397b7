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

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};
use actix_http::ws::{Codec, OpCode, Parser};
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use futures_util::stream;

use crate::actors::connection::ConnectionActor;
use crate::actors::store_writer::StoreWriter;
use crate::actors::supervisor::{Supervisor, SupervisorSetup};
use crate::agents::AgentRegistry;
use crate::auth::{self, Admission, AnswerCache, AuthError, Authenticator};
use crate::backend::{self, AgentBackend};
use crate::config::Settings;
use crate::error::StartError;
use crate::identity::{ConnectionId, Identity};
use crate::metrics::{ConnectionOutcome, Metrics};
use crate::protocol::{Outbound, CLOSE_AUTH_FAILED};

/// A started service: await `server` to run it; `supervisor` answers registry questions.
pub struct RunningServer {
    pub server: Server,
    pub supervisor: Addr<Supervisor>,
    pub local_addr: SocketAddr,
}

/// What every request handler shares.
struct AppState {
    settings: Arc<Settings>,
    supervisor: Addr<Supervisor>,
    backend: Arc<dyn AgentBackend>,
    metrics: Arc<Metrics>,
}

/// Starts the service on `listener`. Must be called inside an actix system.
pub fn run(listener: TcpListener, settings: Arc<Settings>) -> Result<RunningServer, StartError> {
    let backend = backend::from_settings(&settings.agent);
    let metrics = Arc::new(Metrics::new());
    let agents = AgentRegistry::load(&settings.store.dir).map_err(StartError::Store)?;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let supervisor = Supervisor::new(SupervisorSetup {
        settings: settings.clone(),
        backend: backend.clone(),
        agents,
        home,
        store: SyncArbiter::start(settings.store.threads, || StoreWriter),
        metrics: metrics.clone(),
    })
    .start();
    let local_addr = listener.local_addr()?;
    let websocket = &settings.channels.websocket;
    if websocket.enabled {
        log::info!("ClawSocket listening on ws://{local_addr}{}", websocket.path);
    } else {
        log::warn!("channels.websocket.enabled is false: no WebSocket listener; serving /healthz and /readyz only on {local_addr}");
    }
    log_auth_mode(&settings);
    // One cache for all workers; each worker builds its own Authenticator (awc is per thread).
    let answer_cache = AnswerCache::for_settings(&settings.channels.websocket.auth);
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        supervisor: supervisor.clone(),
        backend,
        metrics: metrics.clone(),
    });
    let grace = Duration::from_millis(settings.limits.shutdown_grace_ms);
    let server = HttpServer::new(move || {
        let enabled = state.settings.channels.websocket.enabled;
        let path = state.settings.channels.websocket.path.clone();
        let authenticator =
            Authenticator::new(&state.settings.channels.websocket.auth, answer_cache.clone(), state.metrics.clone());
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(authenticator))
            // %U: the path without the query string, which may hold a token. The
            // WebSocket path is left out: its "request" lasts the whole connection (the
            // logger would hold its fields that long) and ConnectionActor logs open/close.
            .wrap(
                Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#)
                    .custom_request_replace("method", |request| request.method().to_string())
                    .exclude(path.clone()),
            )
            .route("/", web::get().to(chat_page))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
            .configure(|app| {
                if enabled {
                    app.route(&path, web::get().to(websocket_handshake));
                }
            })
    })
    // Deltas are small frames written as they come: without TCP_NODELAY the kernel
    // holds one back until the client's delayed ACK (~40 ms per turn, measured).
    .tcp_nodelay(true)
    .listen(listener)?
    .shutdown_timeout(grace.as_secs().max(1))
    .run();
    Ok(RunningServer { server, supervisor, local_addr })
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

/// `GET /readyz`: the listener is up and the agent backend answers; 503 with the reason if not.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.backend.probe().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {reason}\n"))
        }
    }
}

/// Says once at start how connections are authenticated (never per connection).
fn log_auth_mode(settings: &Settings) {
    let auth = &settings.channels.websocket.auth;
    if !auth.enabled {
        log::warn!("auth is disabled: every connection is anonymous and names itself");
    } else if auth.required {
        log::info!("auth: every connection must be vouched for by {}", auth.endpoint);
    } else {
        log::info!("auth: tokens are checked with {}; connections without a valid one are anonymous", auth.endpoint);
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

/// `GET {path}`: the WebSocket handshake. A request that is no WebSocket upgrade is
/// answered 400 before the auth service is asked anything.
async fn websocket_handshake(
    request: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    authenticator: web::Data<Authenticator>,
) -> actix_web::Result<HttpResponse> {
    let mut response = ws::handshake(&request)?;
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
        Admission::Anonymous => url_identity(&request, &connection_id),
        Admission::Refused(error) => {
            state.metrics.connection(ConnectionOutcome::AuthFailed);
            state.metrics.error(error.code());
            return Ok(response.streaming(refusal(&error)));
        }
    };
    state.metrics.connection(ConnectionOutcome::Accepted);
    let actor = ConnectionActor::new(
        connection_id,
        identity,
        state.settings.clone(),
        state.supervisor.clone(),
        state.metrics.clone(),
    );
    let codec = Codec::new().max_size(state.settings.limits.max_message_bytes);
    Ok(response.streaming(ws::WebsocketContext::with_codec(actor, stream, codec)))
}

/// The identity an anonymous connection names in its URL (else its connection id).
fn url_identity(request: &HttpRequest, connection_id: &ConnectionId) -> Identity {
    let params: ConnectParams = serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    Identity::anonymous(connection_id, params.sender_id.as_deref(), params.sender_name.as_deref())
}

/// The whole outbound life of a refused socket: `chat.error` with the reason, then
/// close 4401. Encoded here once, with no actor behind it: when the body ends the
/// connection ends, and nothing has read a single frame from the client.
fn refusal(error: &AuthError) -> stream::Once<std::future::Ready<Result<Bytes, Infallible>>> {
    let frame = Outbound::error_frame(error.code(), &error.client_message(), None);
    let mut bytes = BytesMut::new();
    Parser::write_message(&mut bytes, frame.text().as_bytes(), OpCode::Text, true, false);
    let reason = ws::CloseReason { code: CLOSE_AUTH_FAILED.into(), description: Some(error.reason().to_string()) };
    Parser::write_close(&mut bytes, Some(reason), false);
    stream::once(std::future::ready(Ok(bytes.freeze())))
}
