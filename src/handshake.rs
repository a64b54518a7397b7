//! The WebSocket handshake: who a socket is, decided before anything exists for it.
//!
//! With `actors/connection.rs`, the only place that knows actix-web-actors. Cheaper
//! refusals come first, before the auth service is asked anything: an `Origin` outside
//! `allowedOrigins` gets HTTP 403, and a server at `limits.maxConnections` (or shutting
//! down) HTTP 503. Then `auth.rs` decides; a `ConnectionActor`, the only reader of a
//! socket's messages, is started only for an admitted identity. A socket refused by
//! auth gets no actor at all: its whole life is two frames encoded here, the
//! `chat.error` and the 4401 close, and nothing ever reads what it sends. A user over
//! `limits.perUser.maxConnections` (on all nodes, in cluster mode) gets HTTP 429
//! instead of the upgrade.

use std::convert::Infallible;
use std::time::Duration;

use actix_http::ws::{Codec, OpCode, Parser};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::{Bytes, BytesMut};
use futures_util::stream;

use crate::actors::connection::{ConnectionActor, ConnectionSetup};
use crate::auth::{self, Admission, AuthError, Authenticator};
use crate::config::Settings;
use crate::frame_guard::FrameSizeGuard;
use crate::groups::GroupAccess;
use crate::identity::{ConnectionId, Identity};
use crate::limits::SlotRefusal;
use crate::metrics::{ConnectionOutcome, LimitHit, QuotaLimit};
use crate::origin;
use crate::protocol::{Disconnect, ErrorCode, Outbound, CLOSE_AUTH_FAILED};
use crate::server::AppState;

/// Sets TCP_USER_TIMEOUT on every accepted socket: the kernel aborts a connection
/// whose peer has taken no byte for `timeout` (its receive window stays shut). That is
/// the one way to end a client that stopped reading for good: the HTTP/1 dispatcher
/// polls a WebSocket's body, and so runs its actor, only while it holds less than its
/// write buffer (32 KiB) of unsent bytes, so once the kernel's buffers are full the
/// actor can be frozen, heartbeat and 1008 close included. The aborted connection's
/// actor is then dropped, which stops it as usual.
pub fn drop_stuck_peers(timeout: Duration) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) {
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
pub(crate) async fn websocket_handshake(
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
    let identity = match identify(&request, &state.settings, &authenticator, &connection_id).await {
        Ok(identity) => identity,
        Err(error) => {
            state.metrics.connection(ConnectionOutcome::AuthFailed);
            state.metrics.error(error.code());
            return Ok(response.streaming(refusal(&error)));
        }
    };
    let max_connections = state.tenancy.limits_for(&identity).max_connections;
    let Some(user_connection) = state.users.try_acquire(&identity.sender_id, max_connections).await else {
        return Ok(too_many_user_connections(&state, &identity, max_connections));
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
        media: state.media.clone(),
        conversations: state.conversations.clone(),
    });
    let codec = Codec::new().max_size(max_bytes);
    Ok(response.streaming(ws::WebsocketContext::with_codec(actor, inbound, codec)))
}

/// Who a request is, by the WebSocket's rules (SPEC §2, §4): the auth service's user
/// for a good `?token=` or `Authorization: Bearer`; else, where auth allows it, the
/// URL's `senderId` (a `guest:` one when auth is on but not required), else
/// `connection_id`; else the refusal. The handshake and the media routes (`POST
/// /media`, `GET /media/{id}`) take the same credentials through this one function.
pub(crate) async fn identify(
    request: &HttpRequest,
    settings: &Settings,
    authenticator: &Authenticator,
    connection_id: &ConnectionId,
) -> Result<Identity, AuthError> {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match authenticator.admit(connection_id, request.query_string(), authorization).await {
        Admission::Authenticated(user) => {
            let mut identity = Identity::authenticated(user.user_id, user.username, user.data);
            if settings.agent.forward_user_token {
                identity.token = auth::request_token(request.query_string(), authorization);
            }
            Ok(identity)
        }
        Admission::Anonymous => Ok(url_identity(request, connection_id, settings.channels.websocket.auth.enabled)),
        Admission::Refused(error) => Err(error),
    }
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

/// HTTP 429 for a user who already has their `maxConnections` open (SPEC §13; from
/// `limits.perUser`, `limits.guest` or the auth service's `data.limits`): the upgrade
/// is refused, no socket is opened.
fn too_many_user_connections(state: &AppState, identity: &Identity, max: u64) -> HttpResponse {
    log::warn!("connection refused: sender {:?} already has its maxConnections ({max}) open", identity.sender_id);
    state.metrics.connection(ConnectionOutcome::Rejected);
    state.metrics.limit_hit(LimitHit::UserConnections);
    state.metrics.quota_refusal(QuotaLimit::MaxConnections);
    let text =
        format!("this user already has {max} connections open (limits.perUser.maxConnections); close one first\n");
    HttpResponse::TooManyRequests().content_type("text/plain").body(text)
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
