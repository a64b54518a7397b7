//! `ConnectionActor`: one per WebSocket, the only actor that touches a socket.
//!
//! It decodes inbound frames (a bad one earns a `chat.error`, never a close), fixes
//! the identity a message acts as, and routes every session command through the
//! Supervisor, which owns the question "which SessionActor is that". Outbound it
//! only writes frames it is handed through its `Outbox` (`ToConnection`): it never
//! builds an agent answer. Its mailbox is bounded by `limits.outboundQueue` and the
//! bytes waiting in it by `limits.outboundBytes`: a sender that finds either full
//! evicts the connection (1008 "slow") instead of buffering without end.
//! Inbound, it enforces the per-connection bounds before anything is parsed: a frame
//! or fragmented message over `limits.maxMessageBytes` closes it (1009), and every data
//! message takes a token of its `limits.messagesPerMinute` bucket (`limits.rs`): over
//! it, `chat.error` rate_limited; a client that floods on through its warnings is
//! closed (1008). It holds its `ConnectionSlot` for its whole life, so the server's
//! count of open connections (`limits.maxConnections`) drops only when it is gone.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::web;
use actix_web_actors::ws;
use bytes::BytesMut;

use super::outbox::{Bound, Outbox, Outgoing, ToConnection};
use super::session::{SessionCommand, Turn};
use super::store_writer::ConversationIndex;
use super::supervisor::{ConnectionClosed, ConnectionOpened, Route, Supervisor};
use crate::backend::prompt;
use crate::config::{DmPolicy, GroupPolicy, Settings};
use crate::conversations;
use crate::frame_guard::OversizeSignal;
use crate::groups::{GroupAccess, GroupAction, Verdict as GroupVerdict};
use crate::identity::{Chat, ConnectionId, Identity, SessionTarget};
use crate::limits::{ByteBudget, ConnectionSlot, RateLimiter, UserConnection, Verdict};
use crate::media::{MediaStore, OwnedError};
use crate::metrics::{LimitHit, Metrics};
use crate::protocol::{
    self, Disconnect, ErrorCode, Frame, Inbound, Outbound, RegenerateRequest, SessionSelector, ThreadsRequest,
    TitleRequest, ToolResult, ToolTurn,
};

/// Messages that may wait behind one group verdict; more are refused `rate_limited`.
const MAX_HELD_MESSAGES: usize = 64;

/// A text or binary message arriving in several frames, bounded by `maxMessageBytes`
/// and, with every other connection's, by `maxPendingFragmentBytes`; its bytes are
/// given back to that budget when it is dropped (complete, refused or closed).
struct Continuation {
    buffer: BytesMut,
    text: bool,
    budget: Arc<ByteBudget>,
    /// Counts continuations, so a timer knows whether its message is still pending.
    serial: u64,
}

impl Drop for Continuation {
    fn drop(&mut self) {
        self.budget.release(self.buffer.len());
    }
}

/// One WebSocket connection.
pub struct ConnectionActor {
    id: ConnectionId,
    /// Who this connection speaks for; messages may override it only when unauthenticated.
    identity: Identity,
    settings: Arc<Settings>,
    supervisor: Addr<Supervisor>,
    /// Sessions this connection sent into or joined: the ones it receives, may abort
    /// and may read, and must leave when it closes.
    subscribed: HashSet<SessionTarget>,
    /// A fragmented message being reassembled.
    continuation: Option<Continuation>,
    continuations_started: u64,
    /// Server-wide bytes of unfinished fragmented messages.
    fragments: Arc<ByteBudget>,
    /// Bytes handed to this connection's outbox and not yet to its socket's buffer.
    outbound: Arc<ByteBudget>,
    /// This connection's place under `limits.perUser.maxConnections`.
    _user_connection: UserConnection,
    /// Where a `chat.send`'s `mediaIds` are checked to be the sender's.
    media: Arc<MediaStore>,
    /// Last time the peer showed it is alive (any frame, or a pong).
    last_heartbeat: Instant,
    opened_at: Instant,
    metrics: Arc<Metrics>,
    /// `limits.messagesPerMinute`: owned here, so checking it takes no lock.
    rate: RateLimiter,
    /// Who may use which group (`channels.websocket.groups`): this worker's.
    groups: web::Data<GroupAccess>,
    /// A group verdict is being awaited: inbound messages wait in `held`.
    awaiting_verdict: bool,
    held: VecDeque<Vec<u8>>,
    /// This connection's place under `limits.maxConnections`, freed when the actor is dropped.
    _slot: ConnectionSlot,
    /// Raised by the handshake's `FrameSizeGuard` when a frame header declared more
    /// than `limits.maxMessageBytes`: the inbound stream then ends in an error that
    /// means 1009.
    oversize: OversizeSignal,
    /// Where `chat.threads` and `chat.title` are answered from.
    conversations: ConversationIndex,
}

/// What the handshake hands a new connection.
pub struct ConnectionSetup {
    pub id: ConnectionId,
    pub identity: Identity,
    pub settings: Arc<Settings>,
    pub supervisor: Addr<Supervisor>,
    pub metrics: Arc<Metrics>,
    /// This worker's group access decider.
    pub groups: web::Data<GroupAccess>,
    /// Its place under `limits.maxConnections`.
    pub slot: ConnectionSlot,
    /// The signal of its inbound bytes' `FrameSizeGuard`.
    pub oversize: OversizeSignal,
    /// The server's budget of unfinished fragmented messages.
    pub fragments: Arc<ByteBudget>,
    /// Its place under `limits.perUser.maxConnections`.
    pub user_connection: UserConnection,
    /// Uploads (`mediaIds` are checked against it).
    pub media: Arc<MediaStore>,
    /// Where `chat.threads` and `chat.title` are answered from.
    pub conversations: ConversationIndex,
}

impl ConnectionActor {
    /// A connection admitted by the handshake.
    pub fn new(setup: ConnectionSetup) -> Self {
        let now = Instant::now();
        let rate = RateLimiter::per_minute(setup.settings.limits.messages_per_minute, now);
        let outbound = ByteBudget::new(setup.settings.limits.outbound_bytes);
        ConnectionActor {
            id: setup.id,
            identity: setup.identity,
            settings: setup.settings,
            supervisor: setup.supervisor,
            subscribed: HashSet::new(),
            continuation: None,
            continuations_started: 0,
            fragments: setup.fragments,
            outbound,
            _user_connection: setup.user_connection,
            media: setup.media,
            last_heartbeat: now,
            opened_at: now,
            metrics: setup.metrics,
            rate,
            groups: setup.groups,
            awaiting_verdict: false,
            held: VecDeque::new(),
            _slot: setup.slot,
            oversize: setup.oversize,
            conversations: setup.conversations,
        }
    }
}

impl Actor for ConnectionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.limits.outbound_queue);
        self.metrics.connections_open.inc();
        self.start_heartbeat(ctx);
        self.start_group_rechecks(ctx);
        let handle = self.own_handle(ctx);
        self.supervisor.do_send(ConnectionOpened { handle });
        log::info!(
            "connection {} opened: sender {:?} ({})",
            self.id,
            self.identity.sender_id,
            if self.identity.authenticated { "authenticated" } else { "anonymous" }
        );
        let regenerate = !self.settings.agent.keeps_own_memory();
        let (version, features) = protocol::features(self.settings.channels.websocket.events(), regenerate);
        let welcome = Outbound::Welcome {
            content: protocol::WELCOME_TEXT,
            connection_id: self.id.as_str(),
            sender_id: &self.identity.sender_id,
            sender_name: &self.identity.sender_name,
            authenticated: self.identity.authenticated,
            protocol: version,
            features: &features,
        };
        ctx.text(welcome.to_frame().text());
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.metrics.connections_open.dec();
        let subscribed = self.subscribed.drain().collect();
        self.supervisor.do_send(ConnectionClosed { id: self.id.clone(), subscribed });
        log::info!("connection {} closed after {:.1?}", self.id, self.opened_at.elapsed());
        Running::Stop
    }
}

impl Handler<ToConnection> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, message: ToConnection, ctx: &mut Self::Context) {
        match message {
            ToConnection::Deliver(outgoing, bytes) => {
                self.outbound.release(bytes);
                match outgoing {
                    Outgoing::One(frame) => ctx.text(frame.text()),
                    Outgoing::Batch(frames) => frames.iter().for_each(|frame| ctx.text(frame.text())),
                }
            }
            ToConnection::Evict(bound) => {
                let limit = match bound {
                    Bound::Frames => "limits.outboundQueue",
                    Bound::Bytes => {
                        self.metrics.limit_hit(LimitHit::OutboundBytes);
                        "limits.outboundBytes"
                    }
                };
                log::warn!("connection {} is too slow to read its frames ({limit} reached); closing (1008)", self.id);
                close(ctx, Disconnect::SLOW);
            }
            ToConnection::Close(disconnect) => close(ctx, disconnect),
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for ConnectionActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heartbeat = Instant::now();
        let message = match item {
            Ok(message) => message,
            Err(ws::ProtocolError::Overflow) => return self.too_big(ctx),
            Err(_) if self.oversize.tripped() => return self.too_big(ctx),
            Err(error) if is_invalid_utf8(&error) => return self.not_utf8(ctx),
            Err(error) => {
                log::info!("connection {}: protocol error, closing: {error}", self.id);
                return close(ctx, Disconnect::PROTOCOL_ERROR);
            }
        };
        match message {
            ws::Message::Text(text) => self.on_message(text.as_bytes(), ctx),
            ws::Message::Binary(bytes) => self.on_message(&bytes, ctx),
            ws::Message::Continuation(item) => self.on_continuation(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
        }
    }
}

impl ConnectionActor {
    fn start_heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let heartbeat = &self.settings.limits.heartbeat;
        let interval = Duration::from_millis(heartbeat.interval_ms);
        let timeout = Duration::from_millis(heartbeat.timeout_ms);
        ctx.run_interval(interval, move |actor, ctx| {
            if actor.last_heartbeat.elapsed() > timeout {
                log::info!("connection {}: no sign of life for {timeout:?}; dropping", actor.id);
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }

    fn too_big(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let limit = self.settings.limits.max_message_bytes;
        log::info!("connection {}: message over {limit} bytes; closing (1009)", self.id);
        close(ctx, Disconnect::TOO_BIG);
    }

    fn not_utf8(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        log::info!("connection {}: a text message is not UTF-8; closing (1007)", self.id);
        close(ctx, Disconnect::NOT_UTF8);
    }

    fn on_continuation(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (chunk, last) = match item {
            Item::FirstText(chunk) => {
                self.start_continuation(true, ctx);
                (chunk, false)
            }
            Item::FirstBinary(chunk) => {
                self.start_continuation(false, ctx);
                (chunk, false)
            }
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let Some(continuation) = self.continuation.as_mut() else {
            return close(ctx, Disconnect::PROTOCOL_ERROR);
        };
        if continuation.buffer.len() + chunk.len() > self.settings.limits.max_message_bytes {
            self.continuation = None;
            return self.too_big(ctx);
        }
        if !continuation.budget.try_reserve(chunk.len()) {
            self.continuation = None;
            self.metrics.limit_hit(LimitHit::PendingFragmentBytes);
            log::warn!(
                "connection {}: limits.maxPendingFragmentBytes ({} bytes) of unfinished fragmented messages are held server-wide; closing (1013)",
                self.id,
                self.fragments.limit()
            );
            return close(ctx, Disconnect::FRAGMENT_BUDGET);
        }
        continuation.buffer.extend_from_slice(&chunk);
        if last {
            if let Some(whole) = self.continuation.take() {
                if whole.text && std::str::from_utf8(&whole.buffer).is_err() {
                    return self.not_utf8(ctx);
                }
                self.on_message(&whole.buffer, ctx);
            }
        }
    }

    /// A fragmented message begins: it must be complete within `fragmentTimeoutMs`.
    fn start_continuation(&mut self, text: bool, ctx: &mut ws::WebsocketContext<Self>) {
        self.continuations_started += 1;
        let serial = self.continuations_started;
        let budget = self.fragments.clone();
        self.continuation = Some(Continuation { buffer: BytesMut::new(), text, budget, serial });
        let timeout = Duration::from_millis(self.settings.limits.fragment_timeout_ms);
        ctx.run_later(timeout, move |actor, ctx| {
            if actor.continuation.as_ref().is_some_and(|pending| pending.serial == serial) {
                actor.continuation = None;
                actor.metrics.limit_hit(LimitHit::FragmentTimeout);
                log::info!(
                    "connection {}: a fragmented message was not completed within {timeout:?}; closing (1008)",
                    actor.id
                );
                close(ctx, Disconnect::FRAGMENT_TIMEOUT);
            }
        });
    }

    /// One whole data message (a text or binary frame, or a reassembled fragmented one).
    fn on_message(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        match self.rate.check(Instant::now()) {
            Verdict::Accept => {}
            Verdict::Warn => {
                self.metrics.error(ErrorCode::RateLimited);
                return reply(ctx, protocol::rate_limited_frame());
            }
            Verdict::Close => {
                log::warn!("connection {} kept flooding after its rate_limited warnings; closing (1008)", self.id);
                return close(ctx, Disconnect::FLOODING);
            }
        }
        if self.awaiting_verdict {
            return self.hold(bytes, ctx);
        }
        self.decode_and_dispatch(bytes, ctx);
    }

    fn decode_and_dispatch(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        match protocol::decode(bytes) {
            Ok(inbound) => self.dispatch(inbound, ctx),
            Err(error) => {
                log::debug!("connection {}: refused a frame: {}", self.id, error.message);
                self.refuse(ctx, error.code, &error.message, error.message_id.as_deref());
            }
        }
    }

    /// A message that came while a group verdict is awaited waits behind it (order is
    /// kept), up to `MAX_HELD_MESSAGES`; more are refused `rate_limited`.
    fn hold(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        if self.held.len() >= MAX_HELD_MESSAGES {
            self.metrics.error(ErrorCode::RateLimited);
            return reply(ctx, protocol::rate_limited_frame());
        }
        self.held.push_back(bytes.to_vec());
    }

    /// The verdict came: handle what waited for it, until another verdict is awaited.
    fn release_held(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        while !self.awaiting_verdict {
            let Some(bytes) = self.held.pop_front() else { return };
            self.decode_and_dispatch(&bytes, ctx);
        }
    }

    fn dispatch(&mut self, inbound: Inbound, ctx: &mut ws::WebsocketContext<Self>) {
        match inbound {
            Inbound::Send(message) => self.submit(*message, ctx),
            Inbound::ToolResult(result) => self.submit_tool_result(*result, ctx),
            Inbound::Join(request) => {
                let target = self.target_of(&request.session);
                if !self.has_room_for(&target, None, ctx) {
                    return;
                }
                let user = self.identity.clone();
                self.gated(&user, target, GroupAction::Join, None, ctx, move |actor, target, ctx| {
                    actor.subscribed.insert(target.clone());
                    let from = actor.own_handle(ctx);
                    actor.route(target, SessionCommand::Join { from, after_seq: request.after_seq });
                });
            }
            Inbound::Leave(selector) => {
                let target = self.target_of(&selector);
                self.subscribed.remove(&target);
                let from = self.own_handle(ctx);
                self.route(target, SessionCommand::Leave { from });
            }
            Inbound::Abort(request) => {
                let (target, id) = (self.target_of(&request.session), request.message_id.clone());
                let abort = |from| SessionCommand::Abort { from, message_id: request.message_id };
                self.control(target, GroupAction::Abort, id, abort, ctx);
            }
            Inbound::History(request) => {
                let limit = protocol::history_limit(request.limit);
                let target = self.target_of(&request.session);
                self.control(
                    target,
                    GroupAction::History,
                    None,
                    move |from| SessionCommand::History { from, limit },
                    ctx,
                );
            }
            Inbound::Threads(request) => self.list_threads(request, ctx),
            Inbound::Title(request) => self.name_thread(request, ctx),
            Inbound::Regenerate(request) => self.regenerate(request, ctx),
            Inbound::Delete(request) => {
                let (target, id) = (self.target_of(&request.session), request.message_id.clone());
                let delete = |from| SessionCommand::Delete { from, message_id: request.message_id };
                self.control(target, GroupAction::Delete, id, delete, ctx);
            }
            Inbound::Ping => reply(ctx, Outbound::Pong.to_frame()),
        }
    }

    /// Routes the command `make` builds to `target`, when this connection may control
    /// it (`may_control`) and the group policy allows `action`; else `forbidden`,
    /// naming `message_id`.
    fn control(
        &mut self,
        target: SessionTarget,
        action: GroupAction,
        message_id: Option<String>,
        make: impl FnOnce(Outbox) -> SessionCommand + 'static,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if !self.may_control(&target, ctx, message_id.as_deref()) {
            return;
        }
        let user = self.identity.clone();
        self.gated(&user, target, action, message_id, ctx, move |actor, target, ctx| {
            let from = actor.own_handle(ctx);
            actor.route(target, make(from));
        });
    }

    /// `chat.threads`: the caller's conversations (or a group's, when the group
    /// policy lets the caller read it), from the index. An unauthenticated connection
    /// may name another `senderId` only once it has sent as that identity.
    fn list_threads(&mut self, request: ThreadsRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = self.identity.for_message(request.sender_id.as_deref(), None);
        let message_id = request.message_id.clone();
        let chat = match &request.group_id {
            Some(group) => Chat::Group(group.clone()),
            None => Chat::Direct(identity.sender_id.clone()),
        };
        if !self.speaks_as(&chat) {
            let text = "this connection has not sent as that senderId";
            return self.refuse(ctx, ErrorCode::Forbidden, text, message_id.as_deref());
        }
        let limit = request.limit.unwrap_or(protocol::DEFAULT_THREADS_LIMIT);
        let target = SessionTarget { chat, thread_id: None };
        self.gated(&identity, target, GroupAction::History, message_id, ctx, move |actor, target, ctx| {
            let list = actor.conversations.list(target.chat, limit);
            ctx.spawn(list.into_actor(actor).map(move |listed, actor, ctx| {
                let message_id = request.message_id.as_deref();
                match listed {
                    Ok(sessions) => {
                        let group_id = request.group_id.as_deref();
                        reply(ctx, Outbound::Threads { message_id, group_id, sessions: &sessions }.to_frame());
                    }
                    Err(error) => {
                        log::error!("connection {}: conversations not listed: {error}", actor.id);
                        let text = "the conversations could not be read; try again";
                        actor.refuse(ctx, ErrorCode::Internal, text, message_id);
                    }
                }
            }));
        });
    }

    /// Whether this connection may list `chat`'s conversations as its own: a group
    /// (the group policy decides), its own identity, or one it has sent as.
    fn speaks_as(&self, chat: &Chat) -> bool {
        match chat {
            Chat::Group(_) => true,
            Chat::Direct(sender) => {
                *sender == self.identity.sender_id || self.subscribed.iter().any(|target| target.chat == *chat)
            }
        }
    }

    /// `chat.title`: names one of the caller's conversations (or a group's it joined
    /// or sent into).
    fn name_thread(&mut self, request: TitleRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let target = self.target_of(&request.session);
        let message_id = request.message_id;
        if !self.may_control(&target, ctx, message_id.as_deref()) {
            return;
        }
        let title = conversations::clean_title(&request.title).unwrap_or_default();
        let user = self.identity.clone();
        let refusal_id = message_id.clone();
        self.gated(&user, target, GroupAction::Send, refusal_id, ctx, move |actor, target, ctx| {
            let named = actor.conversations.title(target.chat, target.thread_id, title);
            ctx.spawn(named.into_actor(actor).map(move |named, actor, ctx| {
                let message_id = message_id.as_deref();
                match named {
                    Ok(Some(session)) => reply(ctx, Outbound::Titled { message_id, session: &session }.to_frame()),
                    Ok(None) => actor.refuse(ctx, ErrorCode::NotFound, "no such conversation", message_id),
                    Err(error) => {
                        log::error!("connection {}: conversation not named: {error}", actor.id);
                        let text = "the conversation could not be named; try again";
                        actor.refuse(ctx, ErrorCode::Internal, text, message_id);
                    }
                }
            }));
        });
    }

    /// `chat.regenerate`: a turn of its own (through the session's queue), running the
    /// last user message again.
    fn regenerate(&mut self, request: RegenerateRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = self.identity.for_message(request.session.sender_id.as_deref(), None);
        let message_id = request.new_message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let target = self.target_of(&request.session);
        let turn = Turn {
            message_id: Arc::from(message_id.as_str()),
            identity,
            message: protocol::SendMessage::default(),
            origin: self.id.clone(),
            tools: ToolTurn::Regenerate(request.message_id),
        };
        self.submit_turn(target, turn, Some(message_id), ctx);
    }

    fn submit(&mut self, message: protocol::SendMessage, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = self.identity.for_message(message.sender_id.as_deref(), message.sender_name.as_deref());
        let message_id = message.message_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let websocket = &self.settings.channels.websocket;
        if websocket.dm_policy == DmPolicy::Allowlist && !websocket.allow_from.contains(&identity.sender_id) {
            let text = "this sender is not allowed to talk to the agent (dmPolicy allowlist)";
            return self.refuse(ctx, ErrorCode::Forbidden, text, Some(&message_id));
        }
        if let Err(reason) = prompt::check_media(&message, &websocket.media.roots) {
            return self.refuse(ctx, ErrorCode::MediaForbidden, &reason, Some(&message_id));
        }
        let chat = match &message.group_id {
            Some(group) if message.chat_type == protocol::ChatType::Group => Chat::Group(group.clone()),
            _ => Chat::Direct(identity.sender_id.clone()),
        };
        let target = SessionTarget { chat, thread_id: message.thread_id.clone() };
        let turn = Turn {
            message_id: Arc::from(message_id.as_str()),
            identity,
            message,
            origin: self.id.clone(),
            tools: ToolTurn::Message,
        };
        self.submit_turn(target, turn, Some(message_id), ctx);
    }

    /// Sends `turn` to its session, subscribing this connection to it, when the
    /// connection has room for one more session and the group policy allows.
    fn submit_turn(
        &mut self,
        target: SessionTarget,
        turn: Turn,
        refusal_id: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if !self.has_room_for(&target, refusal_id.as_deref(), ctx) {
            return;
        }
        let (user, media_ids) = (turn.identity.clone(), turn.message.media_ids.clone());
        let owner = turn.identity.sender_id.clone();
        let media_refusal_id = refusal_id.clone();
        let send = move |actor: &mut Self, ctx: &mut ws::WebsocketContext<Self>| {
            actor.gated(&user, target, GroupAction::Send, refusal_id, ctx, move |actor, target, ctx| {
                actor.subscribed.insert(target.clone());
                let from = actor.own_handle(ctx);
                actor.route(target, SessionCommand::Submit { from, turn: Box::new(turn) });
            });
        };
        match media_ids.is_empty() {
            true => send(self, ctx),
            false => self.check_media_then(media_ids, owner, media_refusal_id, ctx, send),
        }
    }

    /// Runs `then` once every one of `ids` is an upload of `owner`'s (read from the
    /// media index: this connection's next messages wait meanwhile, as for a group
    /// verdict); else answers `media_forbidden`, the same for an unknown id as for
    /// someone else's (ids are not confirmed to outsiders).
    fn check_media_then(
        &mut self,
        ids: Vec<String>,
        owner: String,
        message_id: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
        then: impl FnOnce(&mut Self, &mut ws::WebsocketContext<Self>) + 'static,
    ) {
        let media = self.media.clone();
        self.awaiting_verdict = true;
        let check = async move { media.owned_by(&ids, &owner).await };
        ctx.spawn(check.into_actor(self).map(move |checked, actor, ctx| {
            actor.awaiting_verdict = false;
            match checked {
                Ok(_) => then(actor, ctx),
                Err(OwnedError::NotOwned(id)) => {
                    let text = format!("mediaIds: {id:?} is not an upload of this sender's (POST /media)");
                    actor.refuse(ctx, ErrorCode::MediaForbidden, &text, message_id.as_deref());
                }
                Err(OwnedError::Store(error)) => {
                    log::error!("connection {}: the media index could not be read: {error}", actor.id);
                    let text = "the media of this message could not be checked; try again later";
                    actor.refuse(ctx, ErrorCode::Internal, text, message_id.as_deref());
                }
            }
            actor.release_held(ctx);
        }));
    }

    /// A `chat.toolResult` goes to its session like a `chat.send` (same identity, group
    /// and subscription rules), as a tool-result turn the session keeps until every
    /// call of its last answer has a result.
    fn submit_tool_result(&mut self, result: protocol::ToolResultMessage, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = self.identity.for_message(result.session.sender_id.as_deref(), None);
        let target = self.target_of(&result.session);
        let turn = Turn {
            message_id: Arc::from(result.message_id.unwrap_or_default()),
            identity,
            message: protocol::SendMessage::default(),
            origin: self.id.clone(),
            tools: ToolTurn::Result(ToolResult { tool_call_id: result.tool_call_id, content: result.content }),
        };
        self.submit_turn(target, turn, None, ctx);
    }

    /// Whether this connection may subscribe to `target` (it already is, or it holds
    /// fewer than `limits.maxSubscriptions`); else answers `quota_exceeded`.
    fn has_room_for(
        &self,
        target: &SessionTarget,
        message_id: Option<&str>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> bool {
        let max = self.settings.limits.max_subscriptions;
        if self.subscribed.contains(target) || self.subscribed.len() < max {
            return true;
        }
        self.metrics.limit_hit(LimitHit::Subscriptions);
        let text = format!(
            "this connection is already subscribed to {max} sessions (limits.maxSubscriptions); leave one first (chat.leave)"
        );
        self.refuse(ctx, ErrorCode::QuotaExceeded, &text, message_id);
        false
    }

    /// Runs `then` when `target` is no group, or `user` may do `action` in it
    /// (`groups.policy`); else answers `forbidden`. A verdict the groups service must
    /// give holds this connection's next messages until it comes, so order is kept.
    fn gated(
        &mut self,
        user: &Identity,
        target: SessionTarget,
        action: GroupAction,
        message_id: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
        then: impl FnOnce(&mut Self, SessionTarget, &mut ws::WebsocketContext<Self>) + 'static,
    ) {
        let Chat::Group(group) = &target.chat else { return then(self, target, ctx) };
        match self.groups.check(user, group, action) {
            GroupVerdict::Allowed => then(self, target, ctx),
            GroupVerdict::Refused => self.refuse_group(ctx, message_id.as_deref()),
            GroupVerdict::Ask(answer) => {
                // Not `ctx.wait`: frames for this connection keep flowing meanwhile;
                // only its own later messages wait (`hold`).
                self.awaiting_verdict = true;
                ctx.spawn(answer.into_actor(self).map(move |allowed, actor, ctx| {
                    actor.awaiting_verdict = false;
                    if allowed {
                        then(actor, target, ctx)
                    } else {
                        actor.refuse_group(ctx, message_id.as_deref())
                    }
                    actor.release_held(ctx);
                }));
            }
        }
    }

    /// With `groups.policy = "proxy"`, every `groups.cacheTtl` (at least 100 ms; the
    /// service's timeout when nothing is cached) each group this connection holds is
    /// asked about again: a member the service no longer allows is unsubscribed, so
    /// nothing more of the group reaches it.
    fn start_group_rechecks(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let groups = &self.settings.channels.websocket.groups;
        if groups.policy != GroupPolicy::Proxy {
            return;
        }
        let every = if groups.cache_ttl == 0 { groups.timeout } else { groups.cache_ttl };
        ctx.run_interval(Duration::from_millis(every.max(100)), |actor, ctx| {
            let held: Vec<SessionTarget> =
                actor.subscribed.iter().filter(|target| target.is_group()).cloned().collect();
            for target in held {
                actor.recheck_group(target, ctx);
            }
        });
    }

    fn recheck_group(&mut self, target: SessionTarget, ctx: &mut ws::WebsocketContext<Self>) {
        let Chat::Group(group) = &target.chat else { return };
        match self.groups.check(&self.identity, group, GroupAction::Join) {
            GroupVerdict::Allowed => {}
            GroupVerdict::Refused => self.withdraw(target),
            GroupVerdict::Ask(answer) => {
                ctx.spawn(answer.into_actor(self).map(move |allowed, actor, _ctx| {
                    if !allowed {
                        actor.withdraw(target);
                    }
                }));
            }
        }
    }

    /// The groups service no longer allows this connection into `target`.
    fn withdraw(&mut self, target: SessionTarget) {
        if self.subscribed.remove(&target) {
            log::info!("connection {}: the groups service withdrew a group; unsubscribed", self.id);
            self.route(target, SessionCommand::Unsubscribe { id: self.id.clone() });
        }
    }

    fn refuse_group(&self, ctx: &mut ws::WebsocketContext<Self>, message_id: Option<&str>) {
        let text = "this user may not use that group (channels.websocket.groups.policy)";
        self.refuse(ctx, ErrorCode::Forbidden, text, message_id);
    }

    /// The session a control message names: a group, or the caller's direct session.
    fn target_of(&self, selector: &SessionSelector) -> SessionTarget {
        let chat = match &selector.group_id {
            Some(group) => Chat::Group(group.clone()),
            None => Chat::Direct(self.identity.for_message(selector.sender_id.as_deref(), None).sender_id),
        };
        SessionTarget { chat, thread_id: selector.thread_id.clone() }
    }

    /// Abort and history are for the caller's own direct sessions and the sessions it
    /// sent into or joined (SPEC §2); anything else is answered `forbidden`.
    fn may_control(
        &self,
        target: &SessionTarget,
        ctx: &mut ws::WebsocketContext<Self>,
        message_id: Option<&str>,
    ) -> bool {
        let own_direct = matches!(&target.chat, Chat::Direct(sender) if *sender == self.identity.sender_id);
        if own_direct || self.subscribed.contains(target) {
            return true;
        }
        let text = "this connection has not joined or sent into that session";
        self.refuse(ctx, ErrorCode::Forbidden, text, message_id);
        false
    }

    /// Answers this connection only with a `chat.error` (counted in the metrics).
    fn refuse(&self, ctx: &mut ws::WebsocketContext<Self>, code: ErrorCode, text: &str, message_id: Option<&str>) {
        self.metrics.error(code);
        reply(ctx, Outbound::error_frame(code, text, message_id));
    }

    fn own_handle(&self, ctx: &ws::WebsocketContext<Self>) -> Outbox {
        Outbox::new(self.id.clone(), ctx.address().recipient(), self.outbound.clone())
    }

    fn route(&self, target: SessionTarget, command: SessionCommand) {
        self.supervisor.do_send(Route { target, arbiter: Arbiter::current(), command });
    }
}

/// Writes a frame meant for this connection only.
fn reply(ctx: &mut ws::WebsocketContext<ConnectionActor>, frame: Frame) {
    ctx.text(frame.text());
}

/// Whether a protocol error is a text frame that is not UTF-8: actix-web-actors
/// reports it as an I/O error carrying the `Utf8Error`'s text, its only trace.
fn is_invalid_utf8(error: &ws::ProtocolError) -> bool {
    matches!(error, ws::ProtocolError::Io(io) if io.to_string().contains("utf-8"))
}

fn close(ctx: &mut ws::WebsocketContext<ConnectionActor>, disconnect: Disconnect) {
    let description = Some(disconnect.reason.to_string());
    ctx.close(Some(ws::CloseReason { code: ws::CloseCode::from(disconnect.code), description }));
    ctx.stop();
}
