//! `Supervisor`: the registries, and the one answer to "which actor owns this session".
//!
//! It knows every open connection (to close them all at shutdown) and every live
//! session. Connections route their session commands through it: it binds the
//! conversation to an agent, finds or creates the SessionActor (on the arbiter of
//! the connection that asked, so a user's deltas mostly stay on one thread) and
//! forwards the command. Because every command passes here, it can retire an idle
//! session exactly when no command is on its way to it. It is never on the delta
//! path. (actix's own restart helper is also called `Supervisor`; this file imports
//! actix items by name to keep the two apart.)

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, MessageResult};

use super::connection::{CloseWith, ConnectionHandle};
use super::session::{Retire, SessionActor, SessionCommand, SessionSetup, Unsubscribe};
use crate::backend::AgentBackend;
use crate::config::Settings;
use crate::identity::{ConnectionId, SessionKey, SessionTarget};
use crate::protocol::Frame;

/// A connection is open (after auth): register it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionOpened {
    pub handle: ConnectionHandle,
}

/// A connection closed: unregister it and unsubscribe it from its sessions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    pub id: ConnectionId,
    pub subscribed: Vec<SessionTarget>,
}

/// Deliver `command` to the session of `target`, creating it (on `arbiter`) if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    pub target: SessionTarget,
    pub arbiter: ArbiterHandle,
    pub command: SessionCommand,
}

/// A session has had no subscriber and no turn for `limits.sessionIdleMs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionIdle {
    pub key: SessionKey,
    pub address: Addr<SessionActor>,
    /// How many commands the session had received when it reported.
    pub commands_received: u64,
}

/// Close every connection with `code` after `last_frame` (shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub code: u16,
    pub reason: &'static str,
    pub last_frame: Option<Frame>,
}

/// Registry sizes, for readiness and tests.
#[derive(Message)]
#[rtype(result = "RegistryCounts")]
pub struct CountRegistries;

/// What `CountRegistries` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryCounts {
    pub connections: usize,
    pub sessions: usize,
}

/// A live session and how many commands were forwarded to it.
struct SessionEntry {
    address: Addr<SessionActor>,
    forwarded: u64,
}

/// The registries.
pub struct Supervisor {
    settings: Arc<Settings>,
    backend: Arc<dyn AgentBackend>,
    connections: HashMap<ConnectionId, ConnectionHandle>,
    sessions: HashMap<SessionKey, SessionEntry>,
}

impl Supervisor {
    pub fn new(settings: Arc<Settings>, backend: Arc<dyn AgentBackend>) -> Self {
        Supervisor { settings, backend, connections: HashMap::new(), sessions: HashMap::new() }
    }

    /// The agent that answers in this conversation.
    fn agent_for(&self, _target: &SessionTarget) -> Arc<str> {
        Arc::from(self.settings.agent.id.as_str())
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every connection and every command passes here; the bound is elsewhere
        // (maxConnections, messagesPerMinute), so the mailbox must not refuse them.
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

impl Handler<ConnectionOpened> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ConnectionOpened, _ctx: &mut Self::Context) {
        self.connections.insert(message.handle.id.clone(), message.handle);
    }
}

impl Handler<ConnectionClosed> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ConnectionClosed, _ctx: &mut Self::Context) {
        self.connections.remove(&message.id);
        for target in message.subscribed {
            let key = target.key(&self.agent_for(&target));
            if let Some(entry) = self.sessions.get_mut(&key) {
                entry.forwarded += 1;
                entry.address.do_send(Unsubscribe { id: message.id.clone() });
            }
        }
    }
}

impl Handler<Route> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: Route, ctx: &mut Self::Context) {
        let agent_id = self.agent_for(&message.target);
        let key = message.target.key(&agent_id);
        let entry = self.sessions.entry(key.clone()).or_insert_with(|| {
            let setup = SessionSetup {
                key,
                agent_id,
                target: message.target,
                settings: self.settings.clone(),
                backend: self.backend.clone(),
                supervisor: ctx.address(),
            };
            let address = SessionActor::start_in_arbiter(&message.arbiter, move |_| SessionActor::new(setup));
            SessionEntry { address, forwarded: 0 }
        });
        entry.forwarded += 1;
        message.command.send_to(&entry.address);
    }
}

impl Handler<SessionIdle> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: SessionIdle, _ctx: &mut Self::Context) {
        let quiet = self
            .sessions
            .get(&message.key)
            .is_some_and(|entry| entry.address == message.address && entry.forwarded == message.commands_received);
        if quiet {
            self.sessions.remove(&message.key);
            message.address.do_send(Retire);
        }
    }
}

impl Handler<CloseAll> for Supervisor {
    type Result = usize;

    fn handle(&mut self, message: CloseAll, _ctx: &mut Self::Context) -> usize {
        for handle in self.connections.values() {
            handle.address.do_send(CloseWith {
                code: message.code,
                reason: message.reason,
                last_frame: message.last_frame.clone(),
            });
        }
        self.connections.len()
    }
}

impl Handler<CountRegistries> for Supervisor {
    type Result = MessageResult<CountRegistries>;

    fn handle(&mut self, _: CountRegistries, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(RegistryCounts { connections: self.connections.len(), sessions: self.sessions.len() })
    }
}
