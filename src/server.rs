//! The HTTP surface: the WebSocket endpoint and the operator endpoints, on one port.
//!
//! `run` takes an already bound listener (so tests bind port 0 and `main` binds the
//! configured address), starts the Supervisor and the actix-web server, and returns
//! both. The WebSocket handshake is the only place, with `actors/connection.rs`,
//! that knows actix-web-actors.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;

use crate::actors::connection::ConnectionActor;
use crate::actors::supervisor::{Supervisor, SupervisorSetup};
use crate::agents::AgentRegistry;
use crate::backend::{self, AgentBackend};
use crate::config::Settings;
use crate::error::StartError;
use crate::identity::{ConnectionId, Identity};

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
}

/// Starts the service on `listener`. Must be called inside an actix system.
pub fn run(listener: TcpListener, settings: Arc<Settings>) -> Result<RunningServer, StartError> {
    let backend = backend::from_settings(&settings.agent);
    let agents = AgentRegistry::load(&settings.store.dir).map_err(StartError::Store)?;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let supervisor =
        Supervisor::new(SupervisorSetup { settings: settings.clone(), backend: backend.clone(), agents, home }).start();
    let local_addr = listener.local_addr()?;
    let websocket = &settings.channels.websocket;
    if websocket.enabled {
        log::info!("ClawSocket listening on ws://{local_addr}{}", websocket.path);
    } else {
        log::warn!("channels.websocket.enabled is false: no WebSocket listener; serving /healthz and /readyz only on {local_addr}");
    }
    let state = web::Data::new(AppState { settings: settings.clone(), supervisor: supervisor.clone(), backend });
    let grace = Duration::from_millis(settings.limits.shutdown_grace_ms);
    let server = HttpServer::new(move || {
        let enabled = state.settings.channels.websocket.enabled;
        let path = state.settings.channels.websocket.path.clone();
        App::new()
            .app_data(state.clone())
            // %U: the path without the query string, which may hold a token.
            .wrap(
                Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#)
                    .custom_request_replace("method", |request| request.method().to_string()),
            )
            .route("/", web::get().to(chat_page))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .configure(|app| {
                if enabled {
                    app.route(&path, web::get().to(websocket_handshake));
                }
            })
    })
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

/// The query parameters of the WebSocket URL the identity is taken from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams {
    sender_id: Option<String>,
    sender_name: Option<String>,
}

/// `GET {path}`: the WebSocket handshake.
async fn websocket_handshake(
    request: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let params: ConnectParams = serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    let connection_id = ConnectionId::new();
    let identity = Identity::anonymous(&connection_id, params.sender_id.as_deref(), params.sender_name.as_deref());
    let actor = ConnectionActor::new(connection_id, identity, state.settings.clone(), state.supervisor.clone());
    ws::WsResponseBuilder::new(actor, &request, stream).frame_size(state.settings.limits.max_message_bytes).start()
}
