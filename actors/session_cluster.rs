//! A `SessionActor` in a cluster (SPEC §14): the part of a session that is about
//! which node runs its turns.
//!
//! Every node with a connection in the session has its own `SessionActor` for it,
//! holding its own connections. One of them, the lease holder ("owner"), runs the
//! turns: it delivers to its connections directly and publishes every frame once to
//! the session's Redis stream (a `StreamPublisher` among its subscribers). The others
//! ("followers") relay that stream to their connections, keep the turn in flight for
//! late joiners (`FollowedTurns`), and send `chat.send`/`chat.abort` to the owner;
//! if nobody holds the lease they take it (loading the transcript from Redis) and
//! become the owner. A lease lost (renewal refused) ends this node's turns with an
//! error; an owner gone mid-turn (its lease changed under a followed turn) ends that
//! turn with an error, each node for its own connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::IntCounter;

use super::{SessionActor, Turn};
use crate::actors::agent_bridge::StopTurn;
use crate::actors::outbox::{fan_out, fan_out_all, Outbox, Outgoing};
use crate::actors::stream_publisher::{PublishExcept, StreamPublisher};
use crate::actors::stream_reader::{Follow, StreamEvents, StreamReader, Unfollow};
use crate::cluster::{Claim, Cluster, ClusterError, StreamEvent};
use crate::cluster_inbox::{ForwardedAction, ForwardedCommand, InboxMessage, MAX_HOPS};
use crate::followed_turn::{split_frames, FollowedTurns};
use crate::identity::ConnectionId;
use crate::metrics::ClusterMetrics;
use crate::protocol::{ErrorCode, Frame, Outbound};

/// What a session in a cluster is started with.
#[derive(Clone)]
pub struct ClusterLink {
    pub cluster: Arc<Cluster>,
    pub reader: Addr<StreamReader>,
    /// The agent's directory, for commands forwarded to the owner.
    pub agent_dir: std::path::PathBuf,
}

/// A command from another node, as the session takes it.
pub enum Forwarded {
    Submit(Box<Turn>),
    Abort { message_id: Option<String> },
    Delete { message_id: Option<String> },
}

impl Forwarded {
    /// The message id an error about this command names.
    fn message_id(&self) -> Option<String> {
        match self {
            Forwarded::Submit(turn) => Some(turn.message_id.to_string()),
            Forwarded::Abort { message_id } => message_id.clone(),
            Forwarded::Delete { message_id } => message_id.clone(),
        }
    }
}

/// Whether this node runs the turns.
enum Role {
    Follower,
    Owner {
        lease: Arc<str>,
        publisher: Outbox,
        publisher_address: Addr<StreamPublisher>,
        renewal: SpawnHandle,
        /// Until when this node may be sure no other holds the lease: its last
        /// successful claim or renewal (the time it asked) plus the lease, less a
        /// margin. Past it the node stops running turns, whether Redis refused the
        /// renewal or could not be asked.
        valid_until: Instant,
        expiry: SpawnHandle,
    },
}

/// A session's cluster state.
pub struct ClusterState {
    link: ClusterLink,
    role: Role,
    followed: FollowedTurns,
    following: bool,
    watch: Option<SpawnHandle>,
}

impl ClusterState {
    pub fn new(link: ClusterLink) -> ClusterState {
        ClusterState { link, role: Role::Follower, followed: FollowedTurns::default(), following: false, watch: None }
    }

    pub fn is_owner(&self) -> bool {
        matches!(self.role, Role::Owner { .. })
    }
}

/// Where routing a command through the owner ended.
enum Routed {
    /// This node took the lease (asked for it at that instant).
    Owner(Arc<str>, Instant),
    /// The owner acknowledged it.
    Forwarded,
    /// A node holds the lease but does not acknowledge (it died, is paused or cut off):
    /// its lease did not run out in time either.
    OwnerSilent,
    /// An abort with nobody holding the lease: nothing runs, nothing to do.
    NothingRuns,
}

/// Why a node stops running a session's turns.
enum LeaseEnd {
    /// Redis refused the renewal: another node holds the lease.
    Lost,
    /// It could not be renewed in time (Redis unreachable): another node may hold it.
    RanOut,
}

/// How much of a lease a node does not count on (clocks, the time a reply travels).
fn lease_margin(lease: Duration) -> Duration {
    lease / 10
}

impl SessionActor {
    /// Bumps one of the cluster counters.
    fn count(&self, which: impl Fn(&ClusterMetrics) -> &IntCounter) {
        if let Some(metrics) = &self.setup.metrics.cluster {
            which(metrics).inc();
        }
    }

    /// The lease this node writes under (cluster owner), if any.
    pub(super) fn lease(&self) -> Option<Arc<str>> {
        match &self.cluster.as_ref()?.role {
            Role::Owner { lease, .. } => Some(lease.clone()),
            Role::Follower => None,
        }
    }

    /// The owner's publisher, an extra subscriber of every frame.
    pub(super) fn publisher(&self) -> Option<&Outbox> {
        match &self.cluster.as_ref()?.role {
            Role::Owner { publisher, .. } => Some(publisher),
            Role::Follower => None,
        }
    }

    /// A group message goes to every other node's connections but its sender.
    pub(super) fn publish_except(&self, frame: &Frame, except: &ConnectionId) {
        if let Some(Role::Owner { publisher_address, .. }) = self.cluster.as_ref().map(|state| &state.role) {
            publisher_address.do_send(PublishExcept { frame: frame.clone(), except: except.clone() });
        }
    }

    /// Whether new turns can be taken: alone always; in a cluster while Redis answers.
    pub(super) fn cluster_refuses(&self, from: &Outbox, message_id: Option<&str>) -> bool {
        let Some(state) = &self.cluster else { return false };
        if state.link.cluster.is_healthy() {
            return false;
        }
        self.setup.metrics.error(ErrorCode::AgentUnavailable);
        from.deliver(&unavailable_frame(message_id));
        true
    }

    /// A command this node cannot run (it does not hold the lease): take the lease
    /// if nobody holds it, else send the command to the node that does.
    pub(super) fn through_owner(&mut self, reply: Outbox, command: Forwarded, hops: u8, ctx: &mut Context<Self>) {
        let message_id = command.message_id();
        let Some(state) = &self.cluster else { return };
        if hops >= MAX_HOPS {
            self.setup.metrics.error(ErrorCode::AgentUnavailable);
            let text = "this conversation is moving between nodes; try again in a moment";
            reply.deliver(&Outbound::error_frame(ErrorCode::AgentUnavailable, text, message_id.as_deref()));
            return;
        }
        if self.cluster_refuses(&reply, message_id.as_deref()) {
            return;
        }
        let cluster = state.link.cluster.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let is_abort = matches!(command, Forwarded::Abort { .. });
        let payload =
            InboxMessage::Command(Box::new(self.forwarded_command(&id, &reply.id, &command, hops + 1))).to_json();
        let key = self.setup.key.clone();
        let route = async move {
            let deadline = Instant::now() + cluster.lease * 2;
            loop {
                let asked = Instant::now();
                let claim = if is_abort { cluster.holder_of(&key).await? } else { Some(cluster.claim(&key).await?) };
                let node = match claim {
                    None => return Ok(Routed::NothingRuns),
                    Some(Claim::Owner(lease)) => return Ok(Routed::Owner(lease, asked)),
                    Some(Claim::HeldBy { node, .. }) => node,
                };
                let ack = cluster.expect_ack(&id);
                if cluster.send_to_node(&node, payload.clone()).await? > 0 && ack.within(cluster.lease / 4).await {
                    return Ok(Routed::Forwarded);
                }
                if Instant::now() > deadline {
                    return Ok(Routed::OwnerSilent);
                }
                tokio::time::sleep(cluster.lease / 4).await;
            }
        };
        // Waiting keeps this node's commands for the session in order.
        ctx.wait(route.into_actor(self).map(move |routed: Result<Routed, ClusterError>, session, ctx| match routed {
            Ok(Routed::Owner(lease, asked)) => session.become_owner(lease, asked, reply, command, ctx),
            Ok(Routed::Forwarded) => session.count(|metrics| &metrics.commands_forwarded),
            Ok(Routed::NothingRuns) => {}
            Ok(Routed::OwnerSilent) => {
                session.setup.metrics.error(ErrorCode::AgentUnavailable);
                let text = "the node running this conversation does not answer; try again in a moment";
                reply.deliver(&Outbound::error_frame(ErrorCode::AgentUnavailable, text, message_id.as_deref()));
            }
            Err(error) => {
                log::warn!("cluster: session {}: {error}", session.setup.key);
                session.setup.metrics.error(ErrorCode::AgentUnavailable);
                reply.deliver(&unavailable_frame(message_id.as_deref()));
            }
        }));
    }

    fn forwarded_command(&self, id: &str, reply_to: &ConnectionId, command: &Forwarded, hops: u8) -> ForwardedCommand {
        let link = self.cluster.as_ref().map(|state| &state.link);
        let action = match command {
            Forwarded::Submit(turn) => ForwardedAction::Submit {
                message_id: turn.message_id.to_string(),
                identity: Box::new(turn.identity.clone()),
                message: Box::new(turn.message.clone()),
                tools: turn.tools.clone(),
            },
            Forwarded::Abort { message_id } => ForwardedAction::Abort { message_id: message_id.clone() },
            Forwarded::Delete { message_id } => ForwardedAction::Delete { message_id: message_id.clone() },
        };
        ForwardedCommand {
            id: id.to_string(),
            target: self.setup.target.clone(),
            agent_id: self.setup.agent_id.to_string(),
            agent_dir: link.map(|link| link.agent_dir.clone()).unwrap_or_default(),
            workspace: self.setup.workspace.clone(),
            from_node: link.map(|link| link.cluster.node_id.to_string()).unwrap_or_default(),
            from_connection: reply_to.to_string(),
            hops,
            action,
        }
    }

    /// This node took the lease: publish from now on, stop following, load the
    /// transcript, then run `command`.
    fn become_owner(
        &mut self,
        lease: Arc<str>,
        asked: Instant,
        reply: Outbox,
        command: Forwarded,
        ctx: &mut Context<Self>,
    ) {
        self.count(|metrics| &metrics.leases_taken);
        let Some(state) = &mut self.cluster else { return };
        log::info!("cluster: node {} runs session {} ({lease})", state.link.cluster.node_id, self.setup.key);
        let limits = &self.setup.settings.limits;
        let (publisher, publisher_address) = StreamPublisher::start(
            state.link.cluster.clone(),
            self.setup.key.clone(),
            lease.clone(),
            limits.outbound_bytes,
            limits.outbound_queue,
            self.setup.metrics.clone(),
        );
        let length = state.link.cluster.lease;
        let renewal = ctx.run_interval(length / 3, |session, ctx| session.renew_lease(ctx));
        let valid_until = asked + length - lease_margin(length);
        let expiry = ctx.run_later(valid_until.saturating_duration_since(Instant::now()), Self::lease_ran_out);
        state.role = Role::Owner { lease, publisher, publisher_address, renewal, valid_until, expiry };
        let lost = state.followed.forget();
        self.stop_following(ctx);
        if let Some(turn) = lost {
            self.end_lost_turn(&turn.message_id, ctx);
        }
        self.rebuild_snapshot();
        self.load_memory_then(ctx, move |session, loaded, ctx| {
            if !loaded {
                session.give_up_lease(LeaseEnd::RanOut, ctx);
                session.setup.metrics.error(ErrorCode::AgentUnavailable);
                reply.deliver(&unavailable_frame(command.message_id().as_deref()));
                return;
            }
            session.run_forwarded(reply, command, ctx);
        });
    }

    /// Runs a command as the owner.
    pub(super) fn run_forwarded(&mut self, reply: Outbox, command: Forwarded, ctx: &mut Context<Self>) {
        match command {
            Forwarded::Submit(turn) => {
                let subscribe = self.subscribers.contains_key(&reply.id);
                self.submit(reply, turn, subscribe, ctx);
            }
            Forwarded::Abort { message_id } => self.abort(message_id, ctx),
            Forwarded::Delete { message_id } => self.delete(reply, message_id, ctx),
        }
    }

    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let (Some(state), Some(lease)) = (&self.cluster, self.lease()) else { return };
        let (cluster, key) = (state.link.cluster.clone(), self.setup.key.clone());
        let asked = Instant::now();
        let renew = async move { cluster.renew(&key, &lease).await };
        ctx.spawn(renew.into_actor(self).map(move |renewed, session, ctx| match renewed {
            Ok(true) => session.lease_renewed(asked, ctx),
            Ok(false) => {
                log::warn!("cluster: session {}: this node lost its lease; its turns end", session.setup.key);
                session.give_up_lease(LeaseEnd::Lost, ctx);
            }
            // Redis unreachable: the turn in flight goes on while the lease surely
            // holds (`lease_ran_out` ends it then: another node may take over).
            Err(error) => log::debug!("cluster: session {}: lease not renewed: {error}", session.setup.key),
        }));
    }

    /// The lease holds until `asked` + its length (less the margin): reschedule the end.
    fn lease_renewed(&mut self, asked: Instant, ctx: &mut Context<Self>) {
        let Some(state) = &mut self.cluster else { return };
        let length = state.link.cluster.lease;
        let Role::Owner { valid_until, expiry, .. } = &mut state.role else { return };
        *valid_until = asked + length - lease_margin(length);
        ctx.cancel_future(*expiry);
        *expiry = ctx.run_later(valid_until.saturating_duration_since(Instant::now()), Self::lease_ran_out);
    }

    /// The lease could not be renewed in time: this node can no longer be sure it is
    /// the only one running the session's turns.
    fn lease_ran_out(&mut self, ctx: &mut Context<Self>) {
        if self.lease_expired() {
            log::warn!("cluster: session {}: the lease could not be renewed in time; its turns end", self.setup.key);
            self.give_up_lease(LeaseEnd::RanOut, ctx);
        }
    }

    /// Whether this node owns the session on a lease it can no longer count on
    /// (checked before every command: a node thawed after a pause learns it here).
    pub(super) fn lease_expired(&self) -> bool {
        match self.cluster.as_ref().map(|state| &state.role) {
            Some(Role::Owner { valid_until, .. }) => Instant::now() >= *valid_until,
            _ => false,
        }
    }

    /// Gives the lease up if it ran out (before a command is handled).
    pub(super) fn check_lease(&mut self, ctx: &mut Context<Self>) {
        if self.lease_expired() {
            self.give_up_lease(LeaseEnd::RanOut, ctx);
        }
    }

    /// Stops being the owner: the running and queued turns end with an error for this
    /// node's connections, and the session follows the stream again.
    fn give_up_lease(&mut self, why: LeaseEnd, ctx: &mut Context<Self>) {
        let Some(state) = &mut self.cluster else { return };
        if let Role::Owner { renewal, expiry, .. } = std::mem::replace(&mut state.role, Role::Follower) {
            ctx.cancel_future(renewal);
            ctx.cancel_future(expiry);
        }
        self.rebuild_snapshot();
        let text = match why {
            LeaseEnd::Lost => "this conversation moved to another node; send the message again",
            LeaseEnd::RanOut => "this node lost touch with the cluster's shared store (Redis); send the message again",
        };
        let mut ended: Vec<Arc<str>> = self.queue.drain(..).map(|turn| turn.message_id.clone()).collect();
        if let Some(running) = self.running.take() {
            running.bridge.do_send(StopTurn);
            self.count_cut_turn(&running);
            ended.insert(0, running.turn.message_id.clone());
        }
        for message_id in ended {
            self.setup.metrics.error(ErrorCode::AgentUnavailable);
            self.broadcast(&Outbound::error_frame(ErrorCode::AgentUnavailable, text, Some(&message_id)), ctx);
        }
        self.memory = Default::default();
        self.follow(ctx);
    }

    /// Gives the lease back (a retired session), without waiting.
    pub(super) fn release_lease(&mut self) {
        let (Some(state), Some(lease)) = (&self.cluster, self.lease()) else { return };
        let (cluster, key) = (state.link.cluster.clone(), self.setup.key.clone());
        actix::spawn(async move {
            if let Err(error) = cluster.release(&key, &lease).await {
                log::debug!("cluster: lease of {key} not released (it runs out): {error}");
            }
        });
    }

    /// Starts relaying the session's stream to this node's connections (a follower
    /// with connections), after reading where the turn in flight started.
    pub(super) fn follow(&mut self, ctx: &mut Context<Self>) {
        self.follow_then(ctx, |_, _| {});
    }

    /// As `follow`, then runs `then` (at once if nothing is to be read). actix runs
    /// the futures a context waits for last-in first-out, so what must come after
    /// the read is chained to it, not waited for separately.
    pub(super) fn follow_then(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let needed = self.cluster.as_ref().is_some_and(|state| !state.following && !state.is_owner())
            && !self.subscribers.is_empty();
        let Some(state) = self.cluster.as_mut().filter(|_| needed) else { return then(self, ctx) };
        state.following = true;
        let (cluster, key) = (state.link.cluster.clone(), self.setup.key.clone());
        let max_bytes = self.followed_bytes();
        let latest = async move { cluster.latest_turn_events(&key, max_bytes).await };
        ctx.wait(latest.into_actor(self).map(move |latest, session, ctx| {
            match latest {
                Ok(events) => session.start_following(events, ctx),
                Err(error) => {
                    log::warn!("cluster: session {}: cannot follow its stream yet: {error}", session.setup.key);
                    if let Some(state) = &mut session.cluster {
                        state.following = false;
                    }
                    ctx.run_later(Duration::from_secs(1), |session, ctx| session.follow(ctx));
                }
            }
            then(session, ctx);
        }));
    }

    /// Takes in the newest events (newest first) and reads the stream after them.
    fn start_following(&mut self, events: Vec<StreamEvent>, ctx: &mut Context<Self>) {
        let max_bytes = self.followed_bytes();
        let Some(state) = &mut self.cluster else { return };
        state.followed = FollowedTurns::new(max_bytes);
        let after = events.first().map_or_else(|| "0-0".to_string(), |event| event.id.clone());
        for event in events.iter().rev() {
            for frame in split_frames(event.frames.clone()) {
                state.followed.observe(&frame, &event.lease);
            }
        }
        let to = ctx.address().recipient();
        state.link.reader.do_send(Follow { key: self.setup.key.clone(), after, to });
        let every = state.link.cluster.lease / 2;
        state.watch = Some(ctx.run_interval(every, |session, ctx| session.watch_owner(ctx)));
    }

    /// The most of a turn's frames a follower keeps: twice the largest answer (a
    /// frame's JSON around its text) and some.
    fn followed_bytes(&self) -> usize {
        self.setup.settings.limits.max_answer_bytes.saturating_mul(2) + 64 * 1024
    }

    /// Stops reading the session's stream (an owner now, or retired).
    pub(super) fn stop_following(&mut self, ctx: &mut Context<Self>) {
        let Some(state) = &mut self.cluster else { return };
        if let Some(watch) = state.watch.take() {
            ctx.cancel_future(watch);
        }
        if std::mem::take(&mut state.following) {
            state.link.reader.do_send(Unfollow { key: self.setup.key.clone(), to: ctx.address().recipient() });
        }
    }

    /// A follower with a turn in flight checks that its owner still holds the lease;
    /// if not, the turn will never end by itself: it is ended here with an error.
    fn watch_owner(&mut self, ctx: &mut Context<Self>) {
        let Some(state) = &self.cluster else { return };
        let Some(turn) = state.followed.in_flight() else { return };
        let (cluster, key, lease) = (state.link.cluster.clone(), self.setup.key.clone(), turn.lease.clone());
        let check = async move { cluster.lease_holder(&key).await };
        ctx.spawn(check.into_actor(self).map(move |holder, session, ctx| {
            let Ok(holder) = holder else { return };
            if holder.as_deref() == Some(lease.as_str()) {
                return;
            }
            let Some(state) = &mut session.cluster else { return };
            if let Some(turn) = state.followed.forget().filter(|turn| turn.lease == lease) {
                log::warn!("cluster: session {}: the node running turn {} is gone", session.setup.key, turn.message_id);
                session.end_lost_turn(&turn.message_id, ctx);
            }
        }));
    }

    /// Ends, for this node's connections only, a turn whose node stopped.
    fn end_lost_turn(&mut self, message_id: &str, ctx: &mut Context<Self>) {
        self.setup.metrics.error(ErrorCode::AgentUnavailable);
        let frame = lost_turn_frame(message_id);
        let dropped = fan_out(self.subscribers.values(), &frame);
        if !dropped.is_empty() {
            self.unsubscribe(&dropped, ctx);
        }
    }

    /// What a follower tells a connection joining on this node: `chat.joined` with
    /// the turn in flight, then what it missed of it after `after_seq`.
    pub(super) fn join_following(&mut self, from: Outbox, after_seq: u64, ctx: &mut Context<Self>) {
        self.subscribe(from.clone(), ctx);
        // After `follow`'s read, before any stream event.
        self.follow_then(ctx, move |session, ctx| {
            let followed = session.cluster.as_ref().and_then(|state| state.followed.in_flight());
            let in_flight = followed.map(|turn| turn.message_id.clone());
            let joined = Outbound::Joined { session_key: session.setup.key.as_str(), in_flight: in_flight.as_deref() };
            from.deliver(&joined.to_frame());
            match &session.cluster {
                // One batch: one mailbox slot however many deltas were missed.
                Some(state) if in_flight.is_some() => {
                    from.send(Outgoing::Batch(state.followed.replay(after_seq).into()));
                }
                _ if after_seq > 0 => session.send_last_stored_answer(from, ctx),
                _ => {}
            }
        });
    }

    /// The last answer, read from the shared transcript (a follower keeps none).
    fn send_last_stored_answer(&mut self, to: Outbox, ctx: &mut Context<Self>) {
        let read = self.setup.store.read_tail(1);
        ctx.spawn(read.into_actor(self).map(move |read, session, _ctx| {
            if let Some(entry) = read.ok().and_then(|entries| entries.into_iter().last()) {
                if entry.role == crate::protocol::Role::Assistant {
                    to.deliver(&session.response_frame(&entry));
                }
            }
        }));
    }
}

impl Handler<StreamEvents> for SessionActor {
    type Result = ();

    fn handle(&mut self, message: StreamEvents, ctx: &mut Self::Context) {
        let Some(state) = &mut self.cluster else { return };
        if state.is_owner() {
            return;
        }
        let mut dropped = Vec::new();
        if let Some(metrics) = &self.setup.metrics.cluster {
            metrics.events_relayed.inc_by(message.0.len() as u64);
        }
        for event in message.0 {
            let mut frames = Vec::new();
            for frame in split_frames(event.frames) {
                if let Some(lost) = state.followed.observe(&frame, &event.lease) {
                    self.setup.metrics.error(ErrorCode::AgentUnavailable);
                    frames.push(lost_turn_frame(&lost.message_id));
                }
                frames.push(frame);
            }
            let outgoing = match frames.len() {
                0 => continue,
                1 => Outgoing::One(frames.remove(0)),
                _ => Outgoing::Batch(frames.into()),
            };
            let except = event.except.as_deref();
            let to = self.subscribers.values().filter(|outbox| Some(outbox.id.as_str()) != except);
            dropped.extend(fan_out_all(to, &outgoing));
        }
        if !dropped.is_empty() {
            self.unsubscribe(&dropped, ctx);
        }
    }
}

/// The end of a turn whose node stopped before it ended it.
fn lost_turn_frame(message_id: &str) -> Frame {
    let text = "the node running this turn stopped; send the message again";
    Outbound::error_frame(ErrorCode::AgentUnavailable, text, Some(message_id))
}

/// The answer to a command while Redis cannot be reached.
fn unavailable_frame(message_id: Option<&str>) -> Frame {
    let text = "the cluster's shared store (Redis) cannot be reached; try again in a moment";
    Outbound::error_frame(ErrorCode::AgentUnavailable, text, message_id)
}
