//! `AgentBridge`: one per running turn, started by its SessionActor on the same thread.
//!
//! It runs the backend call, and for each streamed delta builds one `chat.stream`
//! frame, serializes it once and hands the same bytes to every subscriber of the
//! session (the hot path: no per-subscriber copy, no lock, no await). It keeps the
//! answer so far and where each delta ends in it, so a connection that joins
//! mid-turn is replayed what it missed before it gets live deltas. When the stream
//! ends, fails or times out it reports `TurnFinished` to the session, which records
//! the answer and sends the final `chat.response`. Stopping the bridge (abort) drops
//! the backend stream and with it the HTTP request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::outbox::{fan_out_all, Outbox, Outgoing};
use crate::backend::{AgentBackend, BackendError, TurnRequest};
use crate::config::StreamMode;
use crate::identity::{ConnectionId, SessionKey};
use crate::metrics::{LimitHit, Metrics};
use crate::protocol::{Frame, Outbound, StreamFrames};

/// Replaying more than this many bytes to a late joiner is done as one catch-up
/// `chat.stream` frame holding all the missed text, instead of one frame per delta.
pub const REPLAY_FRAME_BYTES: usize = 64 * 1024;

/// The session's subscribers changed: deliver to these from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSubscribers {
    pub subscribers: Arc<[Outbox]>,
}

/// A connection joined mid-turn: replay to it what came after `after_seq`, then
/// deliver to `subscribers` (which include it) from the next delta on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub from: Outbox,
    pub after_seq: u64,
    pub subscribers: Arc<[Outbox]>,
}

/// Abort: stop now, report nothing (the session has already told the subscribers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopTurn;

/// To the session: turn `number` ended with the whole answer, or why not.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TurnFinished {
    pub number: u64,
    pub outcome: Result<String, BackendError>,
}

/// To the session: these subscribers could not be delivered to (gone, or evicted as
/// slow); drop them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropSubscribers {
    pub ids: Vec<ConnectionId>,
}

/// Where a bridge reports: its session.
pub struct BridgeReports {
    pub finished: Recipient<TurnFinished>,
    pub dropped: Recipient<DropSubscribers>,
}

/// What a bridge is started with.
pub struct TurnSetup {
    /// The session's turn counter, echoed in `TurnFinished` so a stale report is ignored.
    pub number: u64,
    pub message_id: Arc<str>,
    pub session_key: SessionKey,
    pub stream_mode: StreamMode,
    pub turn_timeout: Duration,
    /// `limits.maxAnswerBytes`: past it the turn ends `agent_error`, nothing stored.
    pub max_answer_bytes: usize,
    pub subscribers: Arc<[Outbox]>,
    pub reports: BridgeReports,
    pub backend: Arc<dyn AgentBackend>,
    pub metrics: Arc<Metrics>,
    pub request: TurnRequest,
}

/// One turn's relay.
pub struct AgentBridge {
    number: u64,
    message_id: Arc<str>,
    session_key: SessionKey,
    stream_mode: StreamMode,
    turn_timeout: Duration,
    max_answer_bytes: usize,
    subscribers: Arc<[Outbox]>,
    reports: BridgeReports,
    backend: Arc<dyn AgentBackend>,
    /// Taken when the turn starts.
    request: Option<TurnRequest>,
    /// The answer so far.
    text: String,
    /// Where delta `n` (seq n) ends in `text`: `delta_ends[n - 1]`.
    delta_ends: Vec<usize>,
    /// Set once `TurnFinished` is sent, so it is sent once.
    reported: bool,
    /// This turn's `chat.stream` frames, their shared prefix serialized once.
    stream_frames: StreamFrames,
    metrics: Arc<Metrics>,
    started: Instant,
}

impl AgentBridge {
    pub fn new(setup: TurnSetup) -> Self {
        AgentBridge {
            stream_frames: StreamFrames::new(&setup.message_id),
            number: setup.number,
            message_id: setup.message_id,
            session_key: setup.session_key,
            stream_mode: setup.stream_mode,
            turn_timeout: setup.turn_timeout,
            max_answer_bytes: setup.max_answer_bytes,
            subscribers: setup.subscribers,
            reports: setup.reports,
            backend: setup.backend,
            request: Some(setup.request),
            text: String::new(),
            delta_ends: Vec::new(),
            reported: false,

            metrics: setup.metrics,
            started: Instant::now(),
        }
    }

    fn seq(&self) -> u64 {
        self.delta_ends.len() as u64
    }
}

impl Actor for AgentBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.send_to_all(Outgoing::One(self.typing_frame()));
        if let Some(request) = self.request.take() {
            ctx.add_stream(self.backend.stream_turn(request));
        }
        ctx.run_later(self.turn_timeout, |bridge, ctx| {
            bridge.report(Err(BackendError::Timeout("limits.turnTimeoutMs")));
            ctx.stop();
        });
    }
}

impl StreamHandler<Result<Vec<String>, BackendError>> for AgentBridge {
    fn handle(&mut self, item: Result<Vec<String>, BackendError>, ctx: &mut Self::Context) {
        match item {
            Ok(deltas) if self.fits(&deltas) => self.relay(&deltas),
            Ok(_) => {
                self.metrics.limit_hit(LimitHit::AnswerBytes);
                self.report(Err(BackendError::TooLarge { limit: self.max_answer_bytes }));
                ctx.stop();
            }
            Err(error) => {
                self.report(Err(error));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        let answer = std::mem::take(&mut self.text);
        self.report(Ok(answer));
        ctx.stop();
    }
}

impl Handler<SetSubscribers> for AgentBridge {
    type Result = ();

    fn handle(&mut self, message: SetSubscribers, _ctx: &mut Self::Context) {
        self.subscribers = message.subscribers;
    }
}

impl Handler<Attach> for AgentBridge {
    type Result = ();

    fn handle(&mut self, message: Attach, _ctx: &mut Self::Context) {
        self.subscribers = message.subscribers;
        // One batch (one mailbox slot): a replay of many deltas must not look like a
        // reader too slow for `limits.outboundQueue`.
        let mut frames = vec![self.typing_frame()];
        frames.extend(self.replay_frames(message.after_seq));
        message.from.send(Outgoing::Batch(frames.into()));
    }
}

impl Handler<StopTurn> for AgentBridge {
    type Result = ();

    fn handle(&mut self, _: StopTurn, ctx: &mut Self::Context) {
        self.reported = true;
        ctx.stop();
    }
}

impl AgentBridge {
    /// Whether the answer with `deltas` stays within `limits.maxAnswerBytes`.
    fn fits(&self, deltas: &[String]) -> bool {
        let more: usize = deltas.iter().map(String::len).sum();
        self.text.len() + more <= self.max_answer_bytes
    }

    /// The hot path: one frame per delta, serialized once; the deltas of one network
    /// read go to each subscriber as one batch whose bytes every subscriber shares.
    fn relay(&mut self, deltas: &[String]) {
        let mut frames = Vec::with_capacity(deltas.len());
        let mut relayed = 0;
        for delta in deltas.iter().filter(|delta| !delta.is_empty()) {
            if self.delta_ends.is_empty() {
                self.metrics.first_delta.observe(self.started.elapsed().as_secs_f64());
            }
            self.text.push_str(delta);
            self.delta_ends.push(self.text.len());
            relayed += 1;
            if self.stream_mode == StreamMode::Delta {
                frames.push(self.stream_frame(delta, self.seq(), false));
            }
        }
        if self.stream_mode == StreamMode::Cumulative && relayed > 0 {
            // A cumulative frame holds the whole text so far: one per batch, the last,
            // says what all the others would (a frame per delta would be quadratic).
            frames.push(self.stream_frame(&self.text, self.seq(), false));
        }
        self.metrics.deltas.inc_by(relayed);
        match frames.len() {
            0 => {}
            1 => self.send_to_all(Outgoing::One(frames.remove(0))),
            _ => self.send_to_all(Outgoing::Batch(frames.into())),
        }
    }

    fn send_to_all(&mut self, outgoing: Outgoing) {
        let dropped = fan_out_all(self.subscribers.iter(), &outgoing);
        if !dropped.is_empty() {
            self.subscribers =
                self.subscribers.iter().filter(|handle| !dropped.contains(&handle.id)).cloned().collect();
            self.reports.dropped.do_send(DropSubscribers { ids: dropped });
        }
    }

    /// What a joiner that saw up to `after_seq` missed: one frame per delta, or one
    /// catch-up frame when that is more than `REPLAY_FRAME_BYTES` of text.
    fn replay_frames(&self, after_seq: u64) -> Vec<Frame> {
        let seq = self.seq();
        if after_seq >= seq {
            return Vec::new();
        }
        let from = self.delta_end(after_seq);
        let missed = &self.text[from..];
        if missed.len() > REPLAY_FRAME_BYTES || self.stream_mode == StreamMode::Cumulative {
            let content = match self.stream_mode {
                StreamMode::Delta => missed,
                StreamMode::Cumulative => &self.text,
            };
            return vec![self.stream_frame(content, seq, true)];
        }
        (after_seq + 1..=seq)
            .map(|n| self.stream_frame(&self.text[self.delta_end(n - 1)..self.delta_end(n)], n, false))
            .collect()
    }

    /// Byte offset in `text` where delta `seq` ends (0 for seq 0).
    fn delta_end(&self, seq: u64) -> usize {
        match seq {
            0 => 0,
            n => self.delta_ends.get(n as usize - 1).copied().unwrap_or(self.text.len()),
        }
    }

    fn stream_frame(&self, content: &str, seq: u64, catch_up: bool) -> Frame {
        self.stream_frames.frame(content, seq, catch_up)
    }

    fn typing_frame(&self) -> Frame {
        Outbound::Typing { message_id: &self.message_id, session_key: self.session_key.as_str() }.to_frame()
    }

    fn report(&mut self, outcome: Result<String, BackendError>) {
        if self.reported {
            return;
        }
        self.reported = true;
        self.reports.finished.do_send(TurnFinished { number: self.number, outcome });
    }
}
