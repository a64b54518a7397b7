//! `SessionActor`: one per conversation (a user's direct session, a group, a thread).
//!
//! It owns the session: its subscribers, its queue of turns (one runs at a time, in
//! arrival order, at most `limits.sessionQueue` waiting), its transcript and so the
//! record of completed message ids. The transcript is loaded from the store when the
//! session starts (before any command is handled). A turn's backend call runs in an
//! `AgentBridge` it starts and may stop (abort); the turn ends with `TurnFinished`,
//! after which the turn is appended to the store and fsynced (off this thread), and
//! only then the final `chat.response` goes to every subscriber. Every
//! command arrives through the Supervisor, so the Supervisor can retire an idle
//! session without racing a command on its way. A session never touches a socket:
//! it hands serialized frames to `Outbox`s.
//!
//! At shutdown (`Drain`, from the Supervisor) it takes no new turn (`shutting_down`),
//! answers its queued ones `shutting_down`, lets the running turn finish and be stored,
//! and says so on a oneshot channel; `AbortForShutdown` (the grace is over) stops the
//! running turn with `shutting_down` instead. `drain_sessions` is that sequence for
//! every session, bounded by the grace.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::{join_all, LocalBoxFuture};
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::agent_bridge::{
    AgentBridge, Attach, BridgeReports, DropSubscribers, SetSubscribers, StopTurn, TurnFinished, TurnSetup,
};
use super::outbox::{fan_out, Outbox};
use super::store_writer::{ConversationIndex, TranscriptStore};
use crate::answer::FinishedAnswer;
use crate::backend::prompt::{self, PromptInput};
use crate::backend::{AgentBackend, TurnRequest};
use crate::config::{Events, Settings};
use crate::conversations::{self, TurnRecord};
use crate::identity::{Chat, ConnectionId, Identity, SessionKey, SessionTarget, UserToken};
use crate::media::MediaStore;
use crate::metrics::{Metrics, TurnOutcome};
use crate::protocol::{
    self, AnswerDetails, ErrorCode, Frame, Outbound, Role, SendMessage, ToolResult, ToolTurn, TranscriptEntry,
};
use crate::quota::Tenancy;
use crate::session_memory::{Refusal, SessionMemory};
use crate::store;
use crate::turn_gate::TurnPermit;

#[path = "session_cluster.rs"]
mod cluster;
#[path = "session_tenancy.rs"]
mod tenancy;
use cluster::ClusterState;
pub use cluster::{ClusterLink, Forwarded};
use tenancy::SlotWait;

/// One user message waiting for, or getting, an answer.
pub struct Turn {
    pub message_id: Arc<str>,
    /// Who sent it (already resolved by the connection's identity rules).
    pub identity: Identity,
    pub message: SendMessage,
    /// The connection that sent it: the one told about `session_busy`.
    pub origin: ConnectionId,
    /// A user's message, a tool result, or the model's continuation after them.
    pub tools: ToolTurn,
}

/// To the Supervisor: this session has had no subscriber and no turn for
/// `limits.sessionIdleMs`; it may be retired if no command is on its way.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionIdle {
    pub key: SessionKey,
    pub address: Addr<SessionActor>,
    /// How many commands the session had received when it reported.
    pub commands_received: u64,
}

/// The Supervisor has unregistered this idle session: stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Shutdown: take no new turn, refuse the queued ones, and answer (on the returned
/// channel) once no turn is running or being stored.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Drain;

/// Shutdown, the grace is over: stop the running turn with `shutting_down`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AbortForShutdown;

/// After the grace, a turn already complete still gets this long to be written and
/// fsynced before the shutdown goes on without it (a disk that slow is logged).
const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How a shutdown's wait for the running turns ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every running turn finished within the grace.
    Finished,
    /// The grace ran out: the turns still running were stopped with `shutting_down`.
    CutShort,
}

/// Drains `sessions` (`Drain`), waits up to `grace` for their running turns, then
/// aborts what still runs (`AbortForShutdown`) and waits for the stores to finish.
pub async fn drain_sessions(sessions: Vec<Addr<SessionActor>>, grace: Duration) -> Drained {
    // A session that stopped meanwhile has nothing to drain: its answer is an error, skipped.
    let asked = join_all(sessions.iter().map(|session| session.send(Drain))).await;
    let mut quiet = join_all(asked.into_iter().filter_map(Result::ok));
    if tokio::time::timeout(grace, &mut quiet).await.is_ok() {
        return Drained::Finished;
    }
    for session in &sessions {
        session.do_send(AbortForShutdown);
    }
    if tokio::time::timeout(STORE_FLUSH_TIMEOUT, quiet).await.is_err() {
        log::error!("shutdown: a completed turn was not stored within {STORE_FLUSH_TIMEOUT:?}; going on without it");
    }
    Drained::CutShort
}

/// The commands a connection sends a session, routed by the Supervisor. One message
/// type, one handler: every command is counted once, where it arrives.
#[derive(Message)]
#[rtype(result = "()")]
pub enum SessionCommand {
    /// Run a turn: queue it, or answer it from the record if its messageId completed.
    Submit { from: Outbox, turn: Box<Turn> },
    /// Subscribe `from`; mid-turn, replay the deltas after `after_seq`.
    Join { from: Outbox, after_seq: u64 },
    /// Unsubscribe `from` and acknowledge with `chat.left`.
    Leave { from: Outbox },
    /// Stop the running turn (or remove a queued one, by messageId).
    Abort { from: Outbox, message_id: Option<String> },
    /// Cluster mode: a `chat.send` or `chat.abort` from a connection on another node,
    /// which subscribes nobody here (that node relays the session's stream); `reply`
    /// reaches the sender.
    Forwarded { reply: Outbox, forwarded: Forwarded, hops: u8 },
    /// Send `from` the last `limit` transcript entries.
    History { from: Outbox, limit: usize },
    /// Delete the conversation (a thread): its running turn is aborted first;
    /// `message_id` is the request's, echoed.
    Delete { from: Outbox, message_id: Option<String> },
    /// A connection closed: forget it without acknowledging.
    Unsubscribe { id: ConnectionId },
}

/// What a session is created with.
pub struct SessionSetup {
    pub key: SessionKey,
    pub agent_id: Arc<str>,
    pub target: SessionTarget,

    /// The agent's workspace, whose `AGENTS.md` is its system prompt (`openai`).
    pub workspace: Option<PathBuf>,
    /// A just-created dynamic agent: its first turn waits this long for the gateway
    /// to know it.
    pub confirm_new_agent: Option<Duration>,
    pub settings: Arc<Settings>,
    pub backend: Arc<dyn AgentBackend>,
    /// Where an idle session says so (the Supervisor).
    pub idle: Recipient<SessionIdle>,
    /// Where its transcript lives: a file on its store thread, or Redis.
    pub store: TranscriptStore,
    /// Where its running turn is marked for conversation listings.
    pub conversations: ConversationIndex,
    pub metrics: Arc<Metrics>,
    /// Cluster mode: how to reach Redis, the stream reader and the owner.
    pub cluster: Option<ClusterLink>,
    /// Uploads: those a turn carries are recorded as this session's.
    pub media: Arc<MediaStore>,
    /// Per-user limits (checked when a turn is taken, and before it starts) and usage
    /// (counted when it ends).
    pub tenancy: Arc<Tenancy>,
}

/// The turn being answered.
struct RunningTurn {
    number: u64,
    turn: Box<Turn>,
    bridge: Addr<AgentBridge>,
    started: Instant,
    /// The turn's place under its user's `concurrentTurns`, given back when the turn
    /// is dropped (however it ends).
    _permit: TurnPermit,
    /// Bytes of what the backend is sent (for a usage estimate).
    prompt_bytes: usize,
}

/// One conversation.
pub struct SessionActor {
    setup: SessionSetup,
    subscribers: HashMap<ConnectionId, Outbox>,
    /// The subscribers as the AgentBridge sees them: rebuilt on every change (rare),
    /// shared by reference count on every delta (often).
    snapshot: Arc<[Outbox]>,
    queue: VecDeque<Box<Turn>>,
    running: Option<RunningTurn>,
    /// The end of the transcript and the recent answers' ids; the rest stays in the file.
    memory: SessionMemory,
    /// The agent's own system prompt (`AGENTS.md`), when it has one.
    system_prompt: Option<String>,
    /// The message id of a completed turn being written to the store: no other turn
    /// starts until its answer is durable and sent.
    persisting: Option<Arc<str>>,
    turns_started: u64,
    /// Commands received, compared by the Supervisor with commands it forwarded before
    /// it retires this session: equal means none is on its way.
    commands_received: u64,
    idle_timer: Option<SpawnHandle>,
    /// Shutting down: no new turn starts.
    draining: bool,
    /// The transcript could not be loaded: no turn is taken.
    load_failed: bool,
    /// Told when, draining, no turn is running or being stored any more.
    drained: Option<oneshot::Sender<()>>,
    /// Cluster mode: whether this node runs the turns, and what it follows if not.
    cluster: Option<ClusterState>,
    /// The tool results given so far for the last answer's calls (by its message id).
    tool_results: (Option<Arc<str>>, Vec<ToolResult>),
    /// A `chat.delete` (its sender and request id) waiting for the turn being stored;
    /// then it runs before any turn.
    pending_delete: Option<(Outbox, Option<String>)>,
    /// The conversation is being deleted: no turn starts until it is.
    deleting: bool,
    /// Whether a running turn is marked for listings (`ConversationIndex`).
    marked_running: bool,
    /// The head of the queue and its user's `concurrentTurns`.
    slot: SlotWait,
}

impl SessionActor {
    pub fn new(setup: SessionSetup) -> Self {
        SessionActor {
            subscribers: HashMap::new(),
            snapshot: Arc::from(Vec::new()),
            queue: VecDeque::new(),
            running: None,
            memory: SessionMemory::default(),
            system_prompt: None,
            persisting: None,
            turns_started: 0,
            commands_received: 0,
            idle_timer: None,
            draining: false,
            load_failed: false,
            drained: None,
            cluster: setup.cluster.clone().map(ClusterState::new),
            tool_results: (None, Vec::new()),
            pending_delete: None,
            deleting: false,
            marked_running: false,
            slot: SlotWait::Idle,
            setup,
        }
    }

    /// Whether this node runs the session's turns: always alone, as the lease holder
    /// in a cluster.
    fn runs_turns(&self) -> bool {
        self.cluster.as_ref().is_none_or(ClusterState::is_owner)
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    // Everything reaches a session by `do_send`, which does not wait on the mailbox
    // bound: the bounds that matter are the turn queue and the senders' rate limits.
    fn started(&mut self, ctx: &mut Self::Context) {
        // In a cluster the memory is loaded when this node takes the lease.
        if self.cluster.is_none() {
            self.load_memory(ctx);
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.mark_running(None);
        self.stop_following(ctx);
        self.release_lease();
        log::debug!("session {} retired", self.setup.key);
    }
}

impl SessionActor {
    /// Loads the end of the transcript (and the agent's `AGENTS.md`) before any other
    /// command is handled; then runs `then`.
    fn load_memory_then(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, bool, &mut Context<Self>) + 'static,
    ) {
        let agents_md = self.setup.workspace.as_ref().map(|workspace| workspace.join("AGENTS.md"));
        let load = self.setup.store.load(agents_md, self.memory_window(), self.setup.settings.store.idempotency_window);
        // Waiting here holds every command until the memory is loaded.
        ctx.wait(load.into_actor(self).map(|loaded, session, ctx| {
            let ok = match loaded {
                Ok(loaded) => {
                    let (window, answers) = (session.memory_window(), session.setup.settings.store.idempotency_window);
                    session.memory = SessionMemory::loaded(loaded.tail, window, answers);
                    session.system_prompt = loaded.system_prompt.filter(|prompt| !prompt.trim().is_empty());
                    true
                }
                Err(error) => {
                    log::error!("session {}: could not load its transcript: {error}", session.setup.key);
                    false
                }
            };
            then(session, ok, ctx);
        }));
    }

    /// Alone: the memory is loaded once, at start. Without it a session could run a
    /// retried turn again: it takes none, and retires when idle so that the next
    /// command loads it anew.
    fn load_memory(&mut self, ctx: &mut Context<Self>) {
        self.load_memory_then(ctx, |session, ok, _ctx| session.load_failed = !ok);
    }
}

/// The commands, one method each (counted by the one `Handler<SessionCommand>`).
impl SessionActor {
    /// Takes a turn (this node runs the session's turns); `subscribe`: its sender is
    /// one of this node's connections, subscribed by sending.
    fn submit(&mut self, from: Outbox, mut turn: Box<Turn>, subscribe: bool, ctx: &mut Context<Self>) {
        if self.cluster_refuses(&from, Some(&turn.message_id)) {
            return;
        }
        if self.load_failed {
            let text = "this conversation could not be read from the store; try again later";
            self.setup.metrics.error(ErrorCode::Internal);
            from.deliver(&Outbound::error_frame(ErrorCode::Internal, text, Some(&turn.message_id)));
            return;
        }
        if subscribe {
            self.subscribe(from.clone(), ctx);
        }
        if let ToolTurn::Regenerate(requested) = &mut turn.tools {
            if let Err((code, text)) = self.pin_regeneration(requested, &turn.message_id, &turn.identity.sender_id) {
                self.setup.metrics.error(code);
                from.deliver(&Outbound::error_frame(code, text, Some(&turn.message_id)));
                return;
            }
        }
        // A retried message (or last tool result, by its messageId) gets its stored answer.
        if self.memory.is_answered(&turn.message_id) {
            return self.answer_again(&turn.message_id, from, ctx);
        }
        if let ToolTurn::Result(result) = &turn.tools {
            let result = result.clone();
            return self.take_tool_result(from, turn, result, subscribe, ctx);
        }
        if let Some(running) = &self.running {
            if running.turn.message_id == turn.message_id {
                // A sender on another node follows the turn on the stream there.
                if subscribe {
                    running.bridge.do_send(Attach { from, after_seq: 0, subscribers: self.snapshot.clone() });
                }
                return;
            }
        }
        if self.queue.iter().any(|queued| queued.message_id == turn.message_id)
            || self.persisting.as_ref() == Some(&turn.message_id)
        {
            return;
        }
        if self.draining {
            from.deliver(&shutting_down_frame(&turn.message_id));
            return;
        }
        if self.running.is_some() && self.queue.len() >= self.setup.settings.limits.session_queue {
            let text = "this conversation already has the most turns waiting; try again when an answer arrives";
            self.setup.metrics.error(ErrorCode::SessionBusy);
            from.deliver(&Outbound::error_frame(ErrorCode::SessionBusy, text, Some(&turn.message_id)));
            return;
        }
        // The user's turnsPerMinute and tokensPerDay (`session_tenancy.rs`).
        self.check_quota_then_queue(from, turn, ctx);
    }

    /// Queues a turn that passed every check, and starts it if nothing runs.
    fn queue_turn(&mut self, turn: Box<Turn>, ctx: &mut Context<Self>) {
        if self.setup.target.is_group() && turn.tools == ToolTurn::Message {
            self.relay_group_message(&turn, ctx);
        }
        self.attach_media(&turn);
        self.queue.push_back(turn);
        self.start_next_turn(ctx);
    }

    /// A regeneration, as it arrives: refused where the agent keeps its own memory or
    /// its new id names another answer; without a `messageId` it is pinned to the
    /// answer that is last now (or will be, after the turns ahead of it), so a turn
    /// from another tab cannot change what it regenerates.
    fn pin_regeneration(&self, requested: &mut Option<String>, new_id: &str, requester: &str) -> Result<(), Refusal> {
        if self.setup.settings.agent.keeps_own_memory() {
            return Err((
                ErrorCode::InvalidMessage,
                "this agent keeps its own memory of the conversation (agent.kind openclaw): an answer cannot be regenerated",
            ));
        }
        if self.memory.recent_answer(new_id).is_some_and(|answer| answer.answer.supersedes.is_none()) {
            return Err((ErrorCode::InvalidMessage, "newMessageId names a message that was already answered"));
        }
        if self.memory.is_answered(new_id) {
            return Ok(()); // a retry: answered from the store
        }
        if self.running.is_none() && self.queue.is_empty() {
            // Nothing runs before it: refused now, to its sender alone.
            self.memory.regeneration(requested.as_deref(), requester)?;
        }
        if requested.is_none() {
            let ahead = self.queue.back().map(|turn| &turn.message_id);
            let last = ahead.or(self.running.as_ref().map(|running| &running.turn.message_id)).map(|id| id.to_string());
            *requested = last.or_else(|| self.memory.last_answer().map(|answer| answer.message_id.clone()));
        }
        Ok(())
    }

    fn join(&mut self, from: Outbox, after_seq: u64, ctx: &mut Context<Self>) {
        if !self.runs_turns() {
            return self.join_following(from, after_seq, ctx);
        }
        let in_flight = self.running.as_ref().map(|running| running.turn.message_id.clone());
        let joined = Outbound::Joined { session_key: self.setup.key.as_str(), in_flight: in_flight.as_deref() };
        from.deliver(&joined.to_frame());
        match self.running.as_ref().map(|running| running.bridge.clone()) {
            Some(bridge) => {
                self.subscribers.insert(from.id.clone(), from.clone());
                self.rebuild_snapshot();
                bridge.do_send(Attach { from, after_seq, subscribers: self.snapshot.clone() });
            }
            None => {
                if after_seq > 0 {
                    self.send_last_answer(&from);
                }
                self.subscribe(from, ctx);
            }
        }
        self.cancel_idle_timer(ctx);
    }

    fn leave(&mut self, from: Outbox, ctx: &mut Context<Self>) {
        self.unsubscribe(std::slice::from_ref(&from.id), ctx);
        from.deliver(&Outbound::Left { session_key: self.setup.key.as_str() }.to_frame());
    }

    fn abort(&mut self, message_id: Option<String>, ctx: &mut Context<Self>) {
        let wanted = message_id.as_deref();
        let aborts_running =
            self.running.as_ref().is_some_and(|running| wanted.is_none_or(|id| id == &*running.turn.message_id));
        if aborts_running {
            self.abort_running(ctx);
            self.start_next_turn(ctx);
            return;
        }
        if let Some(position) = self.queue.iter().position(|queued| Some(&*queued.message_id) == wanted) {
            if let Some(removed) = self.queue.remove(position) {
                self.setup.metrics.error(ErrorCode::Aborted);
                self.broadcast(&aborted_frame(&removed.message_id), ctx);
            }
        }
    }

    /// Stops the running turn, if any: counted as cut (its prompt), `aborted` to every
    /// subscriber.
    fn abort_running(&mut self, ctx: &mut Context<Self>) {
        let Some(running) = self.running.take() else { return };
        running.bridge.do_send(StopTurn);
        self.count_cut_turn(&running);
        self.setup.metrics.turn(TurnOutcome::Aborted, running.started.elapsed());
        self.setup.metrics.error(ErrorCode::Aborted);
        log::info!("turn {} in session {} aborted", running.turn.message_id, self.setup.key);
        self.broadcast(&aborted_frame(&running.turn.message_id), ctx);
    }

    fn read_history(&mut self, from: Outbox, limit: usize, ctx: &mut Context<Self>) {
        // A follower has no memory: the shared transcript is read as it is.
        if let Some(recent) = self.memory.history(limit).filter(|_| self.runs_turns()) {
            from.deliver(&self.history_frame(&recent));
            return;
        }
        let read = self.setup.store.read_tail(limit);
        ctx.spawn(read.into_actor(self).map(move |read, session, _ctx| match read {
            Ok(entries) => {
                from.deliver(&session.history_frame(&entries));
            }
            Err(error) => {
                log::error!("session {}: history not read: {error}", session.setup.key);
                from.deliver(&Outbound::error_frame(ErrorCode::Internal, "the history could not be read", None));
            }
        }));
    }
}

impl SessionActor {
    /// `chat.delete`: the running and queued turns are aborted, then (once a turn being
    /// stored is stored) the transcript, its idempotency record and its index entry
    /// are deleted; the thread starts anew with the next message.
    fn delete(&mut self, from: Outbox, message_id: Option<String>, ctx: &mut Context<Self>) {
        if self.cluster_refuses(&from, message_id.as_deref()) {
            return;
        }
        let unknown = self.memory.is_empty()
            && self.running.is_none()
            && self.queue.is_empty()
            && self.persisting.is_none()
            && !self.deleting;
        if self.load_failed || unknown {
            let (code, text) = match self.load_failed {
                true => (ErrorCode::Internal, "this conversation could not be read from the store; try again later"),
                false => (ErrorCode::NotFound, "no such thread"),
            };
            self.setup.metrics.error(code);
            from.deliver(&Outbound::error_frame(code, text, message_id.as_deref()));
            return;
        }
        self.abort_running(ctx);
        for queued in std::mem::take(&mut self.queue) {
            self.setup.metrics.error(ErrorCode::Aborted);
            self.broadcast(&aborted_frame(&queued.message_id), ctx);
        }
        self.tool_results = (None, Vec::new());
        self.pending_delete = Some((from, message_id));
        self.start_next_turn(ctx);
    }

    fn delete_now(&mut self, from: Outbox, message_id: Option<String>, ctx: &mut Context<Self>) {
        self.deleting = true;
        self.mark_running(None);
        let thread_id = self.setup.target.thread_id.clone().unwrap_or_default();
        let delete = self.setup.store.delete(self.lease(), thread_id);
        ctx.spawn(delete.into_actor(self).map(move |deleted, session, ctx| {
            session.deleting = false;
            match deleted {
                Ok(()) => {
                    log::info!("session {} deleted", session.setup.key);
                    session.delete_media();
                    let answers = session.setup.settings.store.idempotency_window;
                    session.memory = SessionMemory::new(session.memory_window(), answers);
                    let target = &session.setup.target;
                    let frame = Outbound::Deleted {
                        message_id: message_id.as_deref(),
                        session_key: session.setup.key.as_str(),
                        thread_id: target.thread_id.as_deref().unwrap_or_default(),
                        group_id: match &target.chat {
                            Chat::Group(group) => Some(group.as_str()),
                            Chat::Direct(_) => None,
                        },
                    }
                    .to_frame();
                    from.deliver(&frame);
                    session.broadcast_except(&frame, &from.id, ctx);
                }
                Err(error) => {
                    log::error!("session {}: not deleted: {error}", session.setup.key);
                    session.setup.metrics.error(ErrorCode::Internal);
                    let text = "the conversation could not be deleted; try again";
                    from.deliver(&Outbound::error_frame(ErrorCode::Internal, text, message_id.as_deref()));
                }
            }
            session.start_next_turn(ctx);
        }));
    }
}

impl Handler<SessionCommand> for SessionActor {
    type Result = ();

    fn handle(&mut self, command: SessionCommand, ctx: &mut Self::Context) {
        self.commands_received += 1;
        self.check_lease(ctx);
        match command {
            SessionCommand::Submit { from, turn } if self.runs_turns() => self.submit(from, turn, true, ctx),
            SessionCommand::Submit { from, turn } => {
                // Following first: the sender must not miss the start of its own turn.
                self.subscribe(from.clone(), ctx);
                self.follow_then(ctx, |session, ctx| session.through_owner(from, Forwarded::Submit(turn), 0, ctx));
            }
            SessionCommand::Join { from, after_seq } => self.join(from, after_seq, ctx),
            SessionCommand::Leave { from } => self.leave(from, ctx),
            SessionCommand::Abort { message_id, .. } if self.runs_turns() => self.abort(message_id, ctx),
            SessionCommand::Abort { from, message_id } => {
                self.through_owner(from, Forwarded::Abort { message_id }, 0, ctx)
            }
            SessionCommand::Forwarded { reply, forwarded, .. } if self.runs_turns() => {
                self.run_forwarded(reply, forwarded, ctx)
            }
            SessionCommand::Forwarded { reply, forwarded, hops } => self.through_owner(reply, forwarded, hops, ctx),
            SessionCommand::History { from, limit } => self.read_history(from, limit, ctx),
            SessionCommand::Delete { from, message_id } if self.runs_turns() => self.delete(from, message_id, ctx),
            SessionCommand::Delete { from, message_id } => {
                self.through_owner(from, Forwarded::Delete { message_id }, 0, ctx)
            }
            SessionCommand::Unsubscribe { id } => self.unsubscribe(&[id], ctx),
        }
        // A command that left nothing behind (a history read, an abort of nothing, in a
        // session nobody is subscribed to) must not keep the session alive.
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Retire> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<TurnFinished> for SessionActor {
    type Result = ();

    fn handle(&mut self, message: TurnFinished, ctx: &mut Self::Context) {
        let Some(running) = self.running.take_if(|running| running.number == message.number) else {
            return; // an aborted turn's late word
        };
        let message_id = running.turn.message_id.clone();
        let elapsed = running.started.elapsed();
        match message.outcome {
            Ok(mut answer) => {
                log::info!("turn {message_id} in session {} completed in {elapsed:.1?}", self.setup.key);
                self.setup.metrics.turn(TurnOutcome::Completed, elapsed);
                let counted = self.count_answered_turn(&running, &mut answer);
                let turn = running.turn;
                // The turn's place under concurrentTurns is free from here on.
                drop(running._permit);
                return self.persist_turn(turn, answer, counted, ctx);
            }
            Err(error) => {
                self.count_failed_turn(&running);
                log::warn!("turn {message_id} in session {} failed after {elapsed:.1?}: {error}", self.setup.key);
                self.setup.metrics.turn(TurnOutcome::Failed, elapsed);
                self.setup.metrics.error(error.code());
                let frame = Outbound::error_frame(error.code(), &error.client_message(), Some(&message_id));
                self.broadcast(&frame, ctx);
            }
        }
        self.start_next_turn(ctx);
    }
}

impl Handler<DropSubscribers> for SessionActor {
    type Result = ();

    fn handle(&mut self, message: DropSubscribers, ctx: &mut Self::Context) {
        self.unsubscribe(&message.ids, ctx);
    }
}

impl Handler<Drain> for SessionActor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        let (sender, receiver) = oneshot::channel();
        self.draining = true;
        self.drained = Some(sender);
        for queued in std::mem::take(&mut self.queue) {
            self.broadcast(&shutting_down_frame(&queued.message_id), ctx);
        }
        self.start_next_turn(ctx);
        MessageResult(receiver)
    }
}

impl Handler<AbortForShutdown> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: AbortForShutdown, ctx: &mut Self::Context) {
        if let Some(running) = self.running.take() {
            running.bridge.do_send(StopTurn);
            self.count_cut_turn(&running);
            log::warn!("turn {} in session {} cut short by the shutdown", running.turn.message_id, self.setup.key);
            self.broadcast(&shutting_down_frame(&running.turn.message_id), ctx);
        }
        self.start_next_turn(ctx);
    }
}

impl SessionActor {
    fn subscribe(&mut self, from: Outbox, ctx: &mut Context<Self>) {
        self.cancel_idle_timer(ctx);
        if self.subscribers.insert(from.id.clone(), from).is_none() {
            self.rebuild_snapshot();
            self.push_snapshot();
        }
    }

    fn unsubscribe(&mut self, ids: &[ConnectionId], ctx: &mut Context<Self>) {
        let before = self.subscribers.len();
        for id in ids {
            self.subscribers.remove(id);
        }
        if self.subscribers.len() != before {
            self.rebuild_snapshot();
            self.push_snapshot();
        }
        self.schedule_idle_check(ctx);
    }

    fn rebuild_snapshot(&mut self) {
        self.snapshot = self.subscribers.values().chain(self.publisher()).cloned().collect();
    }

    fn push_snapshot(&self) {
        if let Some(running) = &self.running {
            running.bridge.do_send(SetSubscribers { subscribers: self.snapshot.clone() });
        }
    }

    /// Sends `frame` to every subscriber, dropping those that are gone or too slow.
    fn broadcast(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        let dropped = fan_out(self.snapshot.iter(), frame);
        if !dropped.is_empty() {
            self.unsubscribe(&dropped, ctx);
        }
    }

    fn relay_group_message(&mut self, turn: &Turn, ctx: &mut Context<Self>) {
        let message = &turn.message;
        let frame = Outbound::Message {
            message_id: &turn.message_id,
            sender_id: &turn.identity.sender_id,
            sender_name: &turn.identity.sender_name,
            content: &message.content,
            group_id: message.group_id.as_deref(),
            group_subject: message.group_subject.as_deref(),
            thread_id: message.thread_id.as_deref(),
            reply_to_message_id: message.reply_to_message_id.as_deref(),
            reply_to_body: message.reply_to_body.as_deref(),
            media_ids: &message.media_ids,
        }
        .to_frame();
        self.broadcast_except(&frame, &turn.origin, ctx);
    }

    /// Sends `frame` to every subscriber but `except`, on every node.
    fn broadcast_except(&mut self, frame: &Frame, except: &ConnectionId, ctx: &mut Context<Self>) {
        let others = self.subscribers.values().filter(|subscriber| subscriber.id != *except);
        let dropped = fan_out(others, frame);
        self.publish_except(frame, except);
        if !dropped.is_empty() {
            self.unsubscribe(&dropped, ctx);
        }
    }

    /// Records a taken turn's uploads as this session's (its group's members may read
    /// them; they go when it is deleted), off this thread; a failure is logged.
    fn attach_media(&self, turn: &Turn) {
        if turn.message.media_ids.is_empty() {
            return;
        }
        let (media, ids, key) = (self.setup.media.clone(), turn.message.media_ids.clone(), self.setup.key.clone());
        let group = self.group_id().map(String::from);
        actix::spawn(async move {
            if let Err(error) = media.attach(&ids, &key, group.as_deref()).await {
                log::error!("session {key}: its media {ids:?} not recorded: {error}");
            }
        });
    }

    /// Deletes the media sent or produced in this (deleted) session, off this thread:
    /// those no other session holds go, bytes and metadata (SPEC §12). A failure is
    /// logged; the media then stay until their owner's other sessions go.
    fn delete_media(&self) {
        let (media, key) = (self.setup.media.clone(), self.setup.key.clone());
        actix::spawn(async move {
            if let Err(error) = media.delete_for_session(&key).await {
                log::error!("session {key}: its media were not deleted with it: {error}");
            }
        });
    }

    /// The group this session is of, if it is a group's.
    fn group_id(&self) -> Option<&str> {
        match &self.setup.target.chat {
            Chat::Group(group) => Some(group),
            Chat::Direct(_) => None,
        }
    }

    fn start_next_turn(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() || self.persisting.is_some() || self.deleting {
            return;
        }
        if let Some((from, message_id)) = self.pending_delete.take() {
            return self.delete_now(from, message_id, ctx);
        }
        if self.draining {
            if let Some(drained) = self.drained.take() {
                let _ = drained.send(());
            }
            self.mark_running(None);
            return;
        }
        self.mark_running(None);
        let Some(next) = self.queue.front() else {
            self.schedule_idle_check(ctx);
            return;
        };
        // A place under the user's concurrentTurns first (`session_tenancy.rs`): then
        // `start_turn`, at once or once one of the user's turns ends.
        let user = next.identity.clone();
        self.ask_for_slot(&user, ctx);
    }

    /// Starts the head of the queue with `permit`, if it is still the turn the permit
    /// was asked for (the queue may have changed meanwhile); else gives it back.
    fn start_turn(&mut self, permit: TurnPermit, ctx: &mut Context<Self>) {
        let fits = self.running.is_none()
            && self.persisting.is_none()
            && !self.draining
            && !self.deleting
            && self.queue.front().is_some_and(|next| next.identity.sender_id == permit.user());
        if !fits {
            drop(permit);
            return self.start_next_turn(ctx);
        }
        let Some(mut turn) = self.queue.pop_front() else { return };
        if let ToolTurn::Regenerate(requested) = &turn.tools {
            match self.memory.regeneration(requested.as_deref(), &turn.identity.sender_id) {
                Ok(regeneration) => ask_again(&mut turn, regeneration.asked, &self.setup.target),
                Err((code, text)) => {
                    drop(permit);
                    self.setup.metrics.error(code);
                    self.broadcast(&Outbound::error_frame(code, text, Some(&turn.message_id)), ctx);
                    return self.start_next_turn(ctx);
                }
            }
        }
        self.mark_running(Some(turn.message_id.clone()));
        self.turns_started += 1;
        let number = self.turns_started;
        let request = self.turn_request(&turn);
        let prompt_bytes = tenancy::prompt_bytes(&request);
        log::info!("turn {} started in session {} (agent {})", turn.message_id, self.setup.key, self.setup.agent_id);
        let bridge = AgentBridge::new(TurnSetup {
            number,
            message_id: turn.message_id.clone(),
            session_key: self.setup.key.clone(),
            stream_mode: self.setup.settings.channels.websocket.stream_mode,
            events: self.setup.settings.channels.websocket.events(),
            turn_timeout: self.setup.settings.limits.turn_timeout(),
            max_answer_bytes: self.setup.settings.limits.max_answer_bytes,
            subscribers: self.snapshot.clone(),
            reports: BridgeReports { finished: ctx.address().recipient(), dropped: ctx.address().recipient() },
            backend: self.setup.backend.clone(),
            metrics: self.setup.metrics.clone(),
            request,
        })
        .start();
        self.running =
            Some(RunningTurn { number, turn, bridge, started: Instant::now(), _permit: permit, prompt_bytes });
    }

    fn turn_request(&self, turn: &Turn) -> TurnRequest {
        let prompt = prompt::build(&PromptInput {
            sender_id: &turn.identity.sender_id,
            sender_name: &turn.identity.sender_name,
            message: &turn.message,
            user_data: turn.identity.auth_data.as_deref(),
            user_token: turn.identity.token.as_ref().map(UserToken::expose),
            style: self.setup.settings.agent.sender_style(),
        });
        let tool_results = match &turn.tools {
            ToolTurn::Continuation(results) => results.clone(),
            ToolTurn::Message | ToolTurn::Result(_) | ToolTurn::Regenerate(_) => Vec::new(),
        };
        TurnRequest {
            session_key: self.setup.key.clone(),
            agent_id: self.setup.agent_id.clone(),
            content: turn.message.content.clone(),
            prompt,
            tool_results,
            history: self.history_for_backend(turn),
            system_prompt: self.system_prompt.clone(),
            confirm_agent_for: self.setup.confirm_new_agent.filter(|_| self.turns_started == 1),
            media_ids: turn.message.media_ids.clone(),
            owner: turn.identity.sender_id.clone(),
            group_id: self.group_id().map(String::from),
        }
    }

    /// The stored messages a memory-less backend must be sent, oldest first (for a
    /// regeneration, those before the message asked again).
    fn history_for_backend(&self, turn: &Turn) -> Vec<TranscriptEntry> {
        if !self.setup.backend.wants_history() {
            return Vec::new();
        }
        let count = self.setup.settings.agent.max_history;
        match turn.tools {
            ToolTurn::Regenerate(_) => self.memory.before_last_message(count),
            _ => self.memory.last(count),
        }
    }

    /// Marks (or unmarks) the running turn for conversation listings, once per change.
    fn mark_running(&mut self, message_id: Option<Arc<str>>) {
        if !self.marked_running && message_id.is_none() {
            return;
        }
        self.marked_running = message_id.is_some();
        let ttl = self.setup.settings.limits.turn_timeout() + STORE_FLUSH_TIMEOUT;
        actix::spawn(self.setup.conversations.mark_running(&self.setup.key, message_id, ttl));
    }

    /// Appends the completed turn to the store (fsynced, off this thread), then
    /// records it, sends the answer and starts the next turn. The answer also waits for
    /// `counted` (its usage counted), so the next turn's quota check sees it.
    fn persist_turn(
        &mut self,
        turn: Box<Turn>,
        answer: FinishedAnswer,
        counted: LocalBoxFuture<'static, ()>,
        ctx: &mut Context<Self>,
    ) {
        let ts = store::now_millis();
        let mut entries = self.asked_entries(&turn, ts);
        let mut details = answer.details;
        if let ToolTurn::Regenerate(_) = turn.tools {
            details.supersedes = self.memory.last_answer().map(|replaced| replaced.message_id.clone());
        }
        entries.push(TranscriptEntry {
            role: Role::Assistant,
            content: answer.text,
            message_id: turn.message_id.to_string(),
            sender_id: self.setup.agent_id.to_string(),
            sender_name: self.setup.agent_id.to_string(),
            ts,
            answer: details,
        });
        self.persisting = Some(turn.message_id.clone());
        let record = self.turn_record(&turn, &entries, ts);
        let window = self.setup.settings.store.idempotency_window;
        let write = self.setup.store.append(entries, self.lease(), window, record);
        let write = futures_util::future::join(write, counted).map(|(written, ())| written);
        ctx.spawn(write.into_actor(self).map(move |written, session, ctx| {
            session.persisting = None;
            let entries = match written {
                Ok(entries) => entries,
                Err(error) => {
                    log::error!("session {}: turn {} not stored: {error}", session.setup.key, turn.message_id);
                    let text = "the answer could not be stored; it may be missing from the history";
                    session.setup.metrics.error(ErrorCode::Internal);
                    session.broadcast(&Outbound::error_frame(ErrorCode::Internal, text, Some(&turn.message_id)), ctx);
                    session.start_next_turn(ctx);
                    return;
                }
            };
            // The answer is the last entry (after the user's message or the tool results).
            let frame = entries.last().map(|answer| session.response_frame(answer));
            session.memory.remember(entries);
            if let Some(frame) = frame {
                session.broadcast(&frame, ctx);
            }
            session.start_next_turn(ctx);
        }));
    }

    /// What a turn stores before its answer: the user's message, or the tool results
    /// a continuation was given.
    fn asked_entries(&self, turn: &Turn, ts: u64) -> Vec<TranscriptEntry> {
        let entry = |role, content: &str, tool_call_id: Option<&str>| TranscriptEntry {
            role,
            content: content.to_string(),
            message_id: turn.message_id.to_string(),
            sender_id: turn.identity.sender_id.clone(),
            sender_name: turn.identity.sender_name.clone(),
            ts,
            answer: AnswerDetails {
                tool_call_id: tool_call_id.map(String::from),
                media_ids: if role == Role::User { turn.message.media_ids.clone() } else { Vec::new() },
                ..AnswerDetails::default()
            },
        };
        match &turn.tools {
            ToolTurn::Continuation(results) => {
                results.iter().map(|result| entry(Role::Tool, &result.content, Some(&result.tool_call_id))).collect()
            }
            ToolTurn::Message | ToolTurn::Result(_) => vec![entry(Role::User, &turn.message.content, None)],
            // The message asked again is stored already.
            ToolTurn::Regenerate(_) => Vec::new(),
        }
    }

    /// What a stored turn changes in the conversation's index entry.
    fn turn_record(&self, turn: &Turn, entries: &[TranscriptEntry], ts: u64) -> TurnRecord {
        let superseding = entries.iter().filter(|entry| entry.answer.supersedes.is_some()).count();
        let target = &self.setup.target;
        TurnRecord {
            answer_id: turn.message_id.to_string(),
            transcript: None,
            session_key: self.setup.key.to_string(),
            thread_id: target.thread_id.clone(),
            group_id: match &target.chat {
                Chat::Group(group) => Some(group.clone()),
                Chat::Direct(_) => None,
            },
            ts,
            added: (entries.len() - superseding) as u64,
            title: match turn.tools {
                ToolTurn::Message => conversations::default_title(&turn.message.content),
                _ => String::new(),
            },
        }
    }

    /// A `chat.toolResult`: kept until every tool call of the last answer has a
    /// result, then the model's continuation is queued (as a turn of its own: its
    /// message id is the last result's `messageId`, else the answer's + `:tools`).
    fn take_tool_result(
        &mut self,
        from: Outbox,
        turn: Box<Turn>,
        result: ToolResult,
        subscribe: bool,
        ctx: &mut Context<Self>,
    ) {
        let waiting = self.memory.last_answer().filter(|answer| {
            answer.answer.finish_reason.as_deref() == Some("tool_calls") && !answer.answer.tool_calls.is_empty()
        });
        let Some(answer) = waiting.cloned() else {
            return refuse_tool_result(
                &from,
                "no tool call of this conversation is waiting for a result",
                &self.setup.metrics,
            );
        };
        if !answer.answer.tool_calls.iter().any(|call| call.id == result.tool_call_id) {
            let text = format!("toolCallId {:?} is not a tool call of the last answer", result.tool_call_id);
            return refuse_tool_result(&from, &text, &self.setup.metrics);
        }
        if self.tool_results.0.as_deref() != Some(answer.message_id.as_str()) {
            self.tool_results = (Some(Arc::from(answer.message_id.as_str())), Vec::new());
        }
        let results = &mut self.tool_results.1;
        results.retain(|kept| kept.tool_call_id != result.tool_call_id);
        results.push(result);
        let ordered: Option<Vec<ToolResult>> = answer
            .answer
            .tool_calls
            .iter()
            .map(|call| results.iter().find(|kept| kept.tool_call_id == call.id).cloned())
            .collect();
        let Some(ordered) = ordered else { return }; // more results to come
        self.tool_results = (None, Vec::new());
        let message_id = match &*turn.message_id {
            "" => format!("{}:tools", answer.message_id),
            given => given.to_string(),
        };
        let continuation = Turn {
            message_id: Arc::from(message_id),
            identity: turn.identity,
            message: SendMessage::default(),
            origin: turn.origin,
            tools: ToolTurn::Continuation(ordered),
        };
        self.submit(from, Box::new(continuation), subscribe, ctx);
    }

    /// How many of the latest transcript entries stay in memory: enough for the
    /// backend's memory and a default history request.
    fn memory_window(&self) -> usize {
        self.setup.settings.agent.max_history.max(protocol::DEFAULT_HISTORY_LIMIT)
    }

    /// Sends `to` the stored answer of an already answered `message_id`: from memory
    /// when it is recent, else read from the transcript file on the store threads.
    fn answer_again(&mut self, message_id: &Arc<str>, to: Outbox, ctx: &mut Context<Self>) {
        if let Some(entry) = self.memory.recent_answer(message_id) {
            to.deliver(&self.response_frame(entry));
            return;
        }
        let find = self.setup.store.find_answer(message_id.to_string());
        let message_id = message_id.clone();
        ctx.spawn(find.into_actor(self).map(move |found, session, _ctx| match found {
            Ok(Some(entry)) => {
                to.deliver(&session.response_frame(&entry));
            }
            Ok(None) | Err(_) => log::error!("session {}: answer {message_id} not found", session.setup.key),
        }));
    }

    fn history_frame(&self, messages: &[TranscriptEntry]) -> Frame {
        Outbound::History { session_key: self.setup.key.as_str(), messages }.to_frame()
    }

    fn send_last_answer(&self, to: &Outbox) {
        if let Some(entry) = self.memory.last_answer() {
            to.deliver(&self.response_frame(entry));
        }
    }

    /// The `chat.response` of a stored answer, with what `channels.websocket.events`
    /// lets clients see of its details.
    pub(super) fn response_frame(&self, answer: &TranscriptEntry) -> Frame {
        let details = shown_details(&answer.answer, self.setup.settings.channels.websocket.events());
        Outbound::Response {
            message_id: &answer.message_id,
            content: &answer.content,
            done: true,
            session_key: self.setup.key.as_str(),
            agent_id: &self.setup.agent_id,
            details: &details,
        }
        .to_frame()
    }

    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.running.is_none()
            && self.persisting.is_none()
            && self.queue.is_empty()
            && !self.deleting
            && self.pending_delete.is_none()
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        if !self.is_idle() || self.idle_timer.is_some() {
            return;
        }
        let after = Duration::from_millis(self.setup.settings.limits.session_idle_ms);
        self.idle_timer = Some(ctx.run_later(after, |session, ctx| {
            session.idle_timer = None;
            if session.is_idle() {
                let idle = SessionIdle {
                    key: session.setup.key.clone(),
                    address: ctx.address(),
                    commands_received: session.commands_received,
                };
                session.setup.idle.do_send(idle);
            }
        }));
    }

    fn cancel_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_future(timer);
        }
    }
}

/// Makes a regeneration the message it asks again: the stored user message, sent again
/// by the one who asked it (only they may regenerate it), in this conversation.
fn ask_again(turn: &mut Turn, asked: TranscriptEntry, target: &SessionTarget) {
    turn.message.content = asked.content;
    turn.message.media_ids = asked.answer.media_ids;
    turn.message.thread_id.clone_from(&target.thread_id);
    if let Chat::Group(group) = &target.chat {
        turn.message.group_id = Some(group.clone());
        turn.message.chat_type = protocol::ChatType::Group;
    }
}

/// An answer's details as `events` shows them: none of them with `[]` (the original
/// protocol), the finish reason with any kind on.
fn shown_details(details: &AnswerDetails, events: Events) -> AnswerDetails {
    AnswerDetails {
        reasoning: details.reasoning.clone().filter(|_| events.reasoning),
        tool_calls: if events.tool { details.tool_calls.clone() } else { Vec::new() },
        finish_reason: details.finish_reason.clone().filter(|_| events.any()),
        usage: details.usage.filter(|_| events.usage),
        tool_call_id: None,
        attachments: if events.any() { details.attachments.clone() } else { Vec::new() },
        media_ids: Vec::new(),
        // Not an event kind: only a client that regenerated meets it (SPEC §11).
        supersedes: details.supersedes.clone(),
    }
}

/// A `chat.toolResult` that answers nothing: `invalid_message`.
fn refuse_tool_result(from: &Outbox, text: &str, metrics: &Metrics) {
    metrics.error(ErrorCode::InvalidMessage);
    from.deliver(&Outbound::error_frame(ErrorCode::InvalidMessage, text, None));
}

fn aborted_frame(message_id: &str) -> Frame {
    Outbound::error_frame(ErrorCode::Aborted, "the turn was aborted", Some(message_id))
}

/// The answer to a turn the shutdown refused or cut short.
pub fn shutting_down_frame(message_id: &str) -> Frame {
    let text = "the server is shutting down; send this message again when it is back";
    Outbound::error_frame(ErrorCode::ShuttingDown, text, Some(message_id))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
