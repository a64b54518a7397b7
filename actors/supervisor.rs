//! `Supervisor`: the registries, and the one answer to "which actor owns this session".
//!
//! It knows every open connection (to close them all at shutdown), every live
//! session and every dynamic agent. Connections route their session commands
//! through it: it binds the conversation to an agent (creating a user's agent on
//! demand, off-thread, one creation at a time so the agents files have one writer;
//! commands for that user wait meanwhile, so two first messages create it once),
//! finds or creates the SessionActor (on the arbiter of the connection that asked, so
//! a user's deltas mostly stay on one thread) and forwards the command. Because every command passes here, it can retire an idle
//! session exactly when no command is on its way to it. It is never on the delta
//! path. (actix's own restart helper is also called `Supervisor`; this file imports
//! actix items by name to keep the two apart.) At shutdown (`ShutDown`) it refuses new
//! turns, drains every session (bounded by the grace) and then closes every
//! connection with 1001, in that order, so no answer is cut by its socket's close.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use actix::{
    Actor, ActorFutureExt, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, MessageResult,
    ResponseActFuture, WrapFuture,
};

use super::outbox::{Outbox, Outgoing};
use super::session::{
    drain_sessions, shutting_down_frame, ClusterLink, Drained, Forwarded, Retire, SessionActor, SessionCommand,
    SessionIdle, SessionSetup,
};
use super::store_writer::ConversationIndex;
use super::stream_reader::StreamReader;
use crate::agent_roster::{AgentRoster, Lookup, Wait};
use crate::agents::{self, AgentRecord, AgentRegistry};
use crate::backend::AgentBackend;
use crate::cluster::{AgentReservation, Cluster};
use crate::config::{AgentKind, Settings};
use crate::identity::{Chat, ConnectionId, SessionKey, SessionTarget, GUEST_PREFIX};
use crate::media::MediaStore;
use crate::metrics::Metrics;
use crate::openclaw_agents;
use crate::protocol::{Disconnect, ErrorCode, Outbound, ToolTurn};
use crate::quota::Tenancy;
use crate::store::{self, StoreError};

/// A connection is open (after auth): register it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionOpened {
    pub handle: Outbox,
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

/// Cluster mode: a command from a connection on another node, for a session this
/// node owns (or should take): `reply` reaches that connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteForwarded {
    pub target: SessionTarget,
    pub agent_id: String,
    pub agent_dir: PathBuf,
    pub workspace: Option<PathBuf>,
    pub reply: Outbox,
    pub forwarded: Forwarded,
    pub hops: u8,
}

/// Cluster mode: frames for one of this node's connections, from another node (the
/// answer to a command it forwarded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverToConnection {
    pub connection: ConnectionId,
    pub outgoing: Outgoing,
}

/// Cluster mode: what sessions share with the other nodes.
#[derive(Clone)]
pub struct ClusterWiring {
    pub cluster: Arc<Cluster>,
    pub reader: Addr<StreamReader>,
}

/// Shut down: refuse new turns, let running ones finish within `grace` (then cut them
/// with `shutting_down`), wait for their answers to be stored, close every
/// connection with 1001.
#[derive(Message)]
#[rtype(result = "ShutdownReport")]
pub struct ShutDown {
    pub grace: Duration,
}

/// What `ShutDown` did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub sessions: usize,
    pub drained: Drained,
    pub connections_closed: usize,
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

/// A user's agent has been created (or could not be): bind it and release the
/// commands that waited for it.
#[derive(Message)]
#[rtype(result = "()")]
struct AgentCreated {
    sender_id: String,
    created: Result<Provisioned, StoreError>,
}

/// What a creation (or, in a cluster, a lookup) found.
enum Provisioned {
    Agent(AgentRecord),
    /// The shared registry (cluster mode) is at `maxAgents`.
    AtLimit,
    /// A lookup (cluster mode): no node created an agent for the user yet.
    NoAgent,
}

/// A live session and how many commands were forwarded to it.
struct SessionEntry {
    address: Addr<SessionActor>,
    forwarded: u64,
}

/// Which agent answers a conversation, and where its files are.
struct Binding {
    agent_id: Arc<str>,
    agent_dir: PathBuf,
    workspace: Option<PathBuf>,
}

/// What the Supervisor is started with (read once at start).
pub struct SupervisorSetup {
    pub settings: Arc<Settings>,
    pub backend: Arc<dyn AgentBackend>,
    /// The dynamic-agent registry as stored.
    pub agents: AgentRegistry,
    /// Agents just written (back) into the gateway's file: their first turn waits for
    /// the gateway to know them.
    pub unconfirmed: Vec<String>,
    /// The home directory, for `~` in the agent templates.
    pub home: PathBuf,
    /// Where sessions store their transcripts and their entries in the conversation
    /// indexes (the store threads, or Redis).
    pub conversations: ConversationIndex,
    pub metrics: Arc<Metrics>,
    /// Cluster mode: Redis and the stream reader; `None` alone.
    pub cluster: Option<ClusterWiring>,
    /// Uploads and attachments, for the sessions.
    pub media: Arc<MediaStore>,
    /// Per-user limits and usage, handed to every session.
    pub tenancy: Arc<Tenancy>,
}

/// The registries.
pub struct Supervisor {
    settings: Arc<Settings>,
    backend: Arc<dyn AgentBackend>,
    home: PathBuf,
    connections: HashMap<ConnectionId, Outbox>,
    sessions: HashMap<SessionKey, SessionEntry>,
    /// Dynamic agents, their creations and the commands waiting for them.
    agents: AgentRoster<Route>,
    conversations: ConversationIndex,
    metrics: Arc<Metrics>,
    cluster: Option<ClusterWiring>,
    media: Arc<MediaStore>,
    tenancy: Arc<Tenancy>,
    /// Set by `ShutDown`: every new turn is answered `shutting_down`.
    shutting_down: bool,
}

impl Supervisor {
    pub fn new(setup: SupervisorSetup) -> Self {
        setup.metrics.dynamic_agents.set(setup.agents.agents.len() as i64);
        let max_agents = setup.settings.channels.websocket.dynamic_agent_creation.max_agents as usize;
        Supervisor {
            settings: setup.settings,
            backend: setup.backend,
            home: setup.home,
            connections: HashMap::new(),
            sessions: HashMap::new(),
            agents: AgentRoster::new(setup.agents, max_agents, setup.unconfirmed),
            conversations: setup.conversations,
            metrics: setup.metrics,
            cluster: setup.cluster,
            media: setup.media,
            tenancy: setup.tenancy,
            shutting_down: false,
        }
    }

    /// The agent of a conversation, or `None` when the user's agent must be created
    /// first. Groups, and users past `maxAgents`, get the default agent.
    fn binding(&mut self, target: &SessionTarget) -> Option<Binding> {
        let Chat::Direct(sender) = &target.chat else { return Some(self.default_binding()) };
        // Guests name themselves anew at will: each would get an agent (disk, registry,
        // the gateway's file). They share the default agent.
        if !self.settings.channels.websocket.dynamic_agent_creation.enabled || sender.starts_with(GUEST_PREFIX) {
            return Some(self.default_binding());
        }
        match self.agents.lookup(sender) {
            Lookup::Agent(record) => Some(Binding {
                agent_id: Arc::from(record.agent_id.as_str()),
                agent_dir: record.agent_dir.clone(),
                workspace: Some(record.workspace.clone()),
            }),
            Lookup::AtLimit { first_time } => {
                if first_time {
                    let limit = self.settings.channels.websocket.dynamic_agent_creation.max_agents;
                    log::warn!(
                        "dynamicAgentCreation.maxAgents ({limit}) reached: sender {sender:?} uses the default agent"
                    );
                    self.metrics.dynamic_agent_fallbacks.inc();
                }
                Some(self.default_binding())
            }
            Lookup::Missing => None,
        }
    }

    fn default_binding(&self) -> Binding {
        let agent_id = self.settings.agent.id.as_str();
        Binding {
            agent_id: Arc::from(agent_id),
            agent_dir: store::default_agent_dir(&self.settings.store.dir, agent_id),
            workspace: None,
        }
    }

    /// During shutdown a new turn is answered `shutting_down` instead of routed (also
    /// one that waited for its user's agent): the sessions being drained are all there are.
    fn refused_by_shutdown(&self, route: &Route) -> bool {
        match (&route.command, self.shutting_down) {
            (SessionCommand::Submit { from, turn }, true)
            | (SessionCommand::Forwarded { reply: from, forwarded: Forwarded::Submit(turn), .. }, true) => {
                from.deliver(&shutting_down_frame(&turn.message_id));
                true
            }
            _ => false,
        }
    }

    /// Forwards `route` to its session, creating the session if needed.
    fn forward(&mut self, route: Route, binding: Binding, ctx: &mut Context<Self>) {
        if self.refused_by_shutdown(&route) {
            return;
        }
        let key = route.target.key(&binding.agent_id);
        if matches!(route.command, SessionCommand::Unsubscribe { .. }) && !self.sessions.contains_key(&key) {
            return; // nothing to leave
        }
        let entry = match self.sessions.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let confirm = self.agents.take_unconfirmed(&binding.agent_id);
                let setup = SessionSetup {
                    store: self.conversations.transcript_store(&key, &route.target, &binding.agent_dir),
                    conversations: self.conversations.clone(),
                    cluster: self.cluster.as_ref().map(|wiring| ClusterLink {
                        cluster: wiring.cluster.clone(),
                        reader: wiring.reader.clone(),
                        agent_dir: binding.agent_dir.clone(),
                    }),
                    workspace: binding.workspace,
                    confirm_new_agent: confirm.then(|| Duration::from_millis(self.settings.agent.confirm_agent_ms)),
                    key,
                    agent_id: binding.agent_id,
                    target: route.target,
                    settings: self.settings.clone(),
                    backend: self.backend.clone(),
                    idle: ctx.address().recipient(),
                    metrics: self.metrics.clone(),
                    media: self.media.clone(),
                    tenancy: self.tenancy.clone(),
                };
                let address = SessionActor::start_in_arbiter(&route.arbiter, move |_| SessionActor::new(setup));
                self.metrics.sessions_active.inc();
                vacant.insert(SessionEntry { address, forwarded: 0 })
            }
        };
        entry.forwarded += 1;
        entry.address.do_send(route.command);
    }

    /// Holds `route` until its sender's agent exists. Only a `chat.send` provisions
    /// one; anything else (a tool result or a regeneration too) waits only behind a
    /// creation under way, and is otherwise answered as for a user with no
    /// conversation yet.
    fn wait_for_agent(&mut self, sender_id: &str, route: Route, ctx: &mut Context<Self>) {
        let how = match &route.command {
            SessionCommand::Submit { turn, .. } if turn.tools == ToolTurn::Message => {
                Wait::Provision { user_data: turn.identity.auth_data.clone() }
            }
            _ if self.cluster.is_some() => Wait::Lookup,
            _ => Wait::IfUnderWay,
        };
        match self.agents.wait(sender_id, route, how) {
            Ok(()) => self.create_next_agent(ctx),
            Err(route) => self.answer_unbound(sender_id, route, ctx),
        }
    }

    /// A command of a user without an agent that is not a `chat.send`.
    fn answer_unbound(&mut self, sender_id: &str, route: Route, ctx: &mut Context<Self>) {
        // A user whose agent could not be created talks in the default agent's
        // session: its commands go there.
        let fallback = route.target.key(&self.settings.agent.id);
        if self.sessions.contains_key(&fallback) {
            return self.forward(route, self.default_binding(), ctx);
        }
        // The key the user's first chat.send will give its conversation.
        let key = route.target.key(&agents::agent_id_for(sender_id, |_| false));
        answer_without_agent(route, &key);
    }

    /// Starts the next queued creation, off this thread, if none is running. The
    /// gateway's file first, the registry only after it: a user recorded in the
    /// registry is always known to the gateway (a failed file write records nothing).
    fn create_next_agent(&mut self, ctx: &mut Context<Self>) {
        let Some(creation) = self.agents.next_creation() else { return };
        let dynamic = &self.settings.channels.websocket.dynamic_agent_creation;
        let now = store::now_millis();
        let sender = creation.sender_id.as_str();
        // If the gateway's file already has the plain id (an agent of the operator's
        // own), the user gets the hashed one instead of taking that agent over.
        let plain = agents::plan_agent(sender, creation.agent_id, dynamic, &self.home, now);
        let hashed = agents::plan_agent(sender, agents::hashed_agent_id(sender), dynamic, &self.home, now);
        let files = AgentFiles {
            sender_id: creation.sender_id.clone(),
            user_data: creation.user_data,
            openclaw_file: (self.settings.agent.kind == AgentKind::Openclaw)
                .then(|| PathBuf::from(&self.settings.agent.openclaw_config_path)),
        };
        let job = match &self.cluster {
            None => {
                let registry = (
                    AgentRegistry::path(&self.settings.store.dir),
                    self.agents.registry_bytes_with(sender, &plain),
                    self.agents.registry_bytes_with(sender, &hashed),
                );
                store::off_thread(move || files.create_alone([plain, hashed], registry).map(Provisioned::Agent))
                    .boxed_local()
            }
            Some(wiring) if creation.lookup_only => files.find_shared(wiring.cluster.clone()).boxed_local(),
            Some(wiring) => {
                files.create_shared([plain, hashed], wiring.cluster.clone(), dynamic.max_agents as usize).boxed_local()
            }
        };
        let sender_id = creation.sender_id;
        ctx.spawn(job.into_actor(self).map(move |created, _supervisor, ctx| {
            ctx.notify(AgentCreated { sender_id, created });
        }));
    }
}

/// What creating a user's agent writes on this node: its directories and profile,
/// and its entry in the gateway's agents file.
struct AgentFiles {
    sender_id: String,
    user_data: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    openclaw_file: Option<PathBuf>,
}

impl AgentFiles {
    /// Which plan the gateway's file leaves free: the plain id, unless the file names it.
    fn choose(&self, [plain, hashed]: [AgentRecord; 2]) -> Result<(AgentRecord, AgentRecord), StoreError> {
        match &self.openclaw_file {
            Some(path) if openclaw_agents::names_agent(path, &plain.agent_id)? => Ok((hashed.clone(), hashed)),
            _ => Ok((plain, hashed)),
        }
    }

    /// Writes `record`'s files: directories and profile, then the gateway's file.
    fn write(&self, record: &AgentRecord) -> Result<(), StoreError> {
        agents::create_agent_files(record, &self.sender_id, self.user_data.as_deref())?;
        if let Some(path) = &self.openclaw_file {
            openclaw_agents::ensure_agents(path, [record])?;
        }
        Ok(())
    }

    /// One node alone: the files, then the registry file (with the chosen plan's bytes).
    fn create_alone(
        &self,
        plans: [AgentRecord; 2],
        (registry_path, plain_bytes, hashed_bytes): (PathBuf, Vec<u8>, Vec<u8>),
    ) -> Result<AgentRecord, StoreError> {
        let plain_id = plans[0].agent_id.clone();
        let (record, _) = self.choose(plans)?;
        let bytes = if record.agent_id == plain_id { plain_bytes } else { hashed_bytes };
        self.write(&record)?;
        store::write_atomically(&registry_path, &bytes)?;
        Ok(record)
    }

    /// Cluster mode: the shared registry decides (the user's agent from any node, or
    /// none past `maxAgents` on all nodes together), then this node writes the files
    /// (again, harmlessly, for an agent another node created). `None`: at the limit.
    async fn create_shared(
        self,
        plans: [AgentRecord; 2],
        cluster: Arc<Cluster>,
        max_agents: usize,
    ) -> Result<Provisioned, StoreError> {
        let files = Arc::new(self);
        let chooser = files.clone();
        let (planned, fallback) = store::off_thread(move || chooser.choose(plans)).await?;
        let record = match cluster.reserve_agent(&files.sender_id, &planned, &fallback, max_agents).await? {
            AgentReservation::Agent(record) => record,
            AgentReservation::AtLimit => return Ok(Provisioned::AtLimit),
        };
        store::off_thread(move || files.write(&record).map(|()| Provisioned::Agent(record))).await
    }

    /// Cluster mode, a command other than `chat.send`: the user's agent if another
    /// node created it (its files written here too), else none.
    async fn find_shared(self, cluster: Arc<Cluster>) -> Result<Provisioned, StoreError> {
        let Some(record) = cluster.find_agent(&self.sender_id).await? else { return Ok(Provisioned::NoAgent) };
        store::off_thread(move || self.write(&record).map(|()| Provisioned::Agent(record))).await
    }
}

/// A command other than `chat.send` from a user who has no agent (and so no
/// conversation) yet: an empty history, a join acknowledged, nothing to leave or abort.
fn answer_without_agent(route: Route, key: &SessionKey) {
    let session_key = key.as_str();
    match route.command {
        SessionCommand::History { from, .. } => {
            from.deliver(&Outbound::History { session_key, messages: &[] }.to_frame());
        }
        SessionCommand::Join { from, .. } => {
            from.deliver(&Outbound::Joined { session_key, in_flight: None }.to_frame());
        }
        SessionCommand::Leave { from } => {
            from.deliver(&Outbound::Left { session_key }.to_frame());
        }
        SessionCommand::Delete { from, message_id } => {
            from.deliver(&Outbound::error_frame(ErrorCode::NotFound, "no such thread", message_id.as_deref()));
        }
        SessionCommand::Submit { from, turn } => {
            let (code, text) = match turn.tools {
                ToolTurn::Regenerate(_) => (ErrorCode::NotFound, "this conversation has no answer to regenerate"),
                _ => (ErrorCode::InvalidMessage, "no tool call of this conversation is waiting for a result"),
            };
            from.deliver(&Outbound::error_frame(code, text, Some(&turn.message_id)));
        }
        SessionCommand::Abort { .. } | SessionCommand::Unsubscribe { .. } | SessionCommand::Forwarded { .. } => {}
    }
}

// Every connection and command reaches the Supervisor by `do_send`, which does not
// wait on the mailbox bound; the bounds are maxConnections and messagesPerMinute.
impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<ConnectionOpened> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ConnectionOpened, _ctx: &mut Self::Context) {
        self.connections.insert(message.handle.id.clone(), message.handle);
    }
}

impl Handler<ConnectionClosed> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ConnectionClosed, ctx: &mut Self::Context) {
        self.connections.remove(&message.id);
        for target in message.subscribed {
            let command = SessionCommand::Unsubscribe { id: message.id.clone() };
            let route = Route { target, arbiter: actix::Arbiter::current(), command };
            self.handle(route, ctx);
        }
    }
}

impl Handler<Route> for Supervisor {
    type Result = ();

    fn handle(&mut self, route: Route, ctx: &mut Self::Context) {
        if self.refused_by_shutdown(&route) {
            return;
        }
        match (self.binding(&route.target), &route.target.chat) {
            (Some(binding), _) => self.forward(route, binding, ctx),
            (None, Chat::Direct(sender)) => {
                let sender = sender.clone();
                self.wait_for_agent(&sender, route, ctx)
            }
            (None, Chat::Group(_)) => self.forward(route, self.default_binding(), ctx),
        }
    }
}

impl Handler<RouteForwarded> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: RouteForwarded, ctx: &mut Self::Context) {
        let binding = Binding {
            agent_id: Arc::from(message.agent_id.as_str()),
            agent_dir: message.agent_dir,
            workspace: message.workspace,
        };
        let command =
            SessionCommand::Forwarded { reply: message.reply, forwarded: message.forwarded, hops: message.hops };
        let route = Route { target: message.target, arbiter: actix::Arbiter::current(), command };
        self.forward(route, binding, ctx);
    }
}

impl Handler<DeliverToConnection> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: DeliverToConnection, _ctx: &mut Self::Context) {
        if let Some(outbox) = self.connections.get(&message.connection) {
            outbox.send(message.outgoing);
        }
    }
}

impl Handler<AgentCreated> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: AgentCreated, ctx: &mut Self::Context) {
        let sender = message.sender_id.as_str();
        let waiting = match message.created {
            Ok(Provisioned::Agent(record)) => {
                log::info!("dynamic agent {} created for sender {sender:?}", record.agent_id);
                self.agents.created(sender, Some(record))
            }
            Ok(Provisioned::NoAgent) => {
                // A chat.send that came meanwhile provisions anew; the rest is answered.
                for route in self.agents.created(sender, None) {
                    match route.command {
                        SessionCommand::Submit { .. } => self.handle(route, ctx),
                        _ => self.answer_unbound(sender, route, ctx),
                    }
                }
                return self.create_next_agent(ctx);
            }
            Ok(Provisioned::AtLimit) => {
                let limit = self.settings.channels.websocket.dynamic_agent_creation.max_agents;
                log::warn!("dynamicAgentCreation.maxAgents ({limit}) reached across the cluster: sender {sender:?} uses the default agent");
                self.metrics.dynamic_agent_fallbacks.inc();
                self.agents.refused(sender)
            }
            Err(error) => {
                log::error!(
                    "could not create the agent of sender {sender:?}; it uses the default agent this time: {error}"
                );
                self.agents.created(sender, None)
            }
        };
        self.metrics.dynamic_agents.set(self.agents.agent_count() as i64);
        for route in waiting {
            let binding = self.binding(&route.target).unwrap_or_else(|| self.default_binding());
            self.forward(route, binding, ctx);
        }
        self.create_next_agent(ctx);
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
            self.metrics.sessions_active.dec();
            message.address.do_send(Retire);
        }
    }
}

impl Handler<ShutDown> for Supervisor {
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, message: ShutDown, _ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let sessions: Vec<Addr<SessionActor>> = self.sessions.values().map(|entry| entry.address.clone()).collect();
        let count = sessions.len();
        // Spawned, not waited on: connections keep closing and routing meanwhile.
        Box::pin(drain_sessions(sessions, message.grace).into_actor(self).map(move |drained, supervisor, _ctx| {
            let connections_closed = supervisor.close_all();
            ShutdownReport { sessions: count, drained, connections_closed }
        }))
    }
}

impl Supervisor {
    /// Tells every registered connection to close (1001); returns how many.
    fn close_all(&self) -> usize {
        for outbox in self.connections.values() {
            outbox.close(Disconnect::GOING_AWAY);
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
