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
use crate::answer::{FinishedAnswer, Replayed, TurnAnswer};
use crate::backend::{AgentBackend, AnswerPiece, BackendError, TurnRequest};
use crate::config::{Events, StreamMode};
use crate::identity::{ConnectionId, SessionKey};
use crate::metrics::{LimitHit, Metrics};
use crate::protocol::{Attachment, Frame, Outbound, StreamFrames};

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
    pub outcome: Result<FinishedAnswer, BackendError>,
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
    /// `channels.websocket.events`: which events besides text are sent.
    pub events: Events,
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
    events: Events,
    turn_timeout: Duration,
    max_answer_bytes: usize,
    subscribers: Arc<[Outbox]>,
    reports: BridgeReports,
    backend: Arc<dyn AgentBackend>,
    /// Taken when the turn starts.
    request: Option<TurnRequest>,
    /// The answer so far, and what each seq was.
    answer: TurnAnswer,
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
            events: setup.events,
            turn_timeout: setup.turn_timeout,
            max_answer_bytes: setup.max_answer_bytes,
            subscribers: setup.subscribers,
            reports: setup.reports,
            backend: setup.backend,
            request: Some(setup.request),
            answer: TurnAnswer::default(),
            reported: false,

            metrics: setup.metrics,
            started: Instant::now(),
        }
    }

    fn seq(&self) -> u64 {
        self.answer.seq()
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

impl StreamHandler<Result<Vec<AnswerPiece>, BackendError>> for AgentBridge {
    fn handle(&mut self, item: Result<Vec<AnswerPiece>, BackendError>, ctx: &mut Self::Context) {
        match item {
            Ok(pieces) if self.fits(&pieces) => self.relay(pieces),
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
        let mut frames = Vec::new();
        self.announce_tool_calls(&mut frames);
        self.send_frames(frames);
        let answer = std::mem::take(&mut self.answer).finish();
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
    /// Whether the answer with `pieces` stays within `limits.maxAnswerBytes`.
    fn fits(&self, pieces: &[AnswerPiece]) -> bool {
        let more: usize = pieces
            .iter()
            .map(|piece| match piece {
                AnswerPiece::Text(text) | AnswerPiece::Reasoning(text) => text.len(),
                AnswerPiece::ToolCall { arguments, name, .. } => arguments.len() + name.as_ref().map_or(0, String::len),
                AnswerPiece::Media { url, .. } => url.len(),
                AnswerPiece::Usage(_) | AnswerPiece::Finish(_) | AnswerPiece::StoreMedia { .. } => 0,
            })
            .sum();
        self.answer.bytes() + more <= self.max_answer_bytes
    }

    /// The hot path: one frame per delta, serialized once; the pieces of one network
    /// read go to each subscriber as one batch whose bytes every subscriber shares.
    fn relay(&mut self, pieces: Vec<AnswerPiece>) {
        let mut frames = Vec::with_capacity(pieces.len());
        let mut relayed = 0;
        let mut cumulative_due = false;
        for piece in pieces {
            match piece {
                AnswerPiece::Text(delta) if !delta.is_empty() => {
                    if relayed == 0 && self.answer.text().is_empty() {
                        self.metrics.first_delta.observe(self.started.elapsed().as_secs_f64());
                    }
                    let seq = self.answer.push_text(&delta);
                    relayed += 1;
                    match self.stream_mode {
                        StreamMode::Delta => frames.push(self.stream_frame(&delta, seq, false)),
                        StreamMode::Cumulative => cumulative_due = true,
                    }
                }
                AnswerPiece::Text(_) => {}
                AnswerPiece::Reasoning(delta) => {
                    self.flush_cumulative(&mut frames, &mut cumulative_due);
                    self.answer.push_reasoning(&delta);
                    if self.events.reasoning && !delta.is_empty() {
                        let frame =
                            Outbound::Reasoning { message_id: &self.message_id, content: &delta, seq: self.seq() + 1 }
                                .to_frame();
                        self.answer.push_frame(frame.clone());
                        frames.push(frame);
                    }
                }
                AnswerPiece::ToolCall { index, id, name, arguments } => {
                    self.answer.push_tool_fragment(index, id, name, &arguments)
                }
                AnswerPiece::Usage(usage) => self.answer.set_usage(usage),
                AnswerPiece::Media { url, media_type, name, media_id } => {
                    self.flush_cumulative(&mut frames, &mut cumulative_due);
                    let frame = Outbound::Media {
                        message_id: &self.message_id,
                        media_id: media_id.as_deref(),
                        url: &url,
                        media_type: media_type.as_deref(),
                        name: name.as_deref(),
                        seq: self.seq() + 1,
                    }
                    .to_frame();
                    self.answer.push_frame(frame.clone());
                    frames.push(frame);
                    self.answer.push_attachment(Attachment { media_id, url, media_type, name });
                }
                // Stored by the backend's stream before it gets here (`attachments::stored`).
                AnswerPiece::StoreMedia { .. } => log::debug!("an attachment that was never stored; dropped"),
                AnswerPiece::Finish(reason) => {
                    self.flush_cumulative(&mut frames, &mut cumulative_due);
                    self.answer.set_finish_reason(reason);
                    self.announce_tool_calls(&mut frames);
                }
            }
        }
        self.flush_cumulative(&mut frames, &mut cumulative_due);
        self.metrics.deltas.inc_by(relayed);
        self.send_frames(frames);
    }

    /// A cumulative frame holds the whole text so far: one per run of text deltas
    /// (a frame per delta would be quadratic), before any other event.
    fn flush_cumulative(&self, frames: &mut Vec<Frame>, due: &mut bool) {
        if std::mem::take(due) {
            frames.push(self.stream_frame(self.answer.text(), self.seq(), false));
        }
    }

    /// Sends one `chat.tool` `call` frame per tool call not announced yet (their
    /// arguments are complete once the model finished).
    fn announce_tool_calls(&mut self, frames: &mut Vec<Frame>) {
        for call in self.answer.take_unannounced_tool_calls() {
            if !self.events.tool {
                continue;
            }
            let frame = Outbound::Tool {
                message_id: &self.message_id,
                tool_call_id: &call.id,
                name: &call.name,
                phase: "call",
                arguments: &call.arguments,
                result: None,
                seq: self.seq() + 1,
            }
            .to_frame();
            self.answer.push_frame(frame.clone());
            frames.push(frame);
        }
    }

    fn send_frames(&mut self, mut frames: Vec<Frame>) {
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

    /// What a joiner that saw up to `after_seq` missed: one frame per event, or, when
    /// it missed only text and more than `REPLAY_FRAME_BYTES` of it, one catch-up
    /// `chat.stream` frame holding all of it.
    fn replay_frames(&self, after_seq: u64) -> Vec<Frame> {
        let seq = self.seq();
        if after_seq >= seq {
            return Vec::new();
        }
        let text = self.answer.text();
        if self.answer.only_text_after(after_seq) {
            let missed = &text[self.answer.text_end_at(after_seq)..];
            if missed.len() > REPLAY_FRAME_BYTES || self.stream_mode == StreamMode::Cumulative {
                let content = match self.stream_mode {
                    StreamMode::Delta => missed,
                    StreamMode::Cumulative => text,
                };
                return vec![self.stream_frame(content, seq, true)];
            }
        }
        self.answer
            .events_after(after_seq)
            .into_iter()
            .map(|event| match event {
                Replayed::Text(delta, seq) => match self.stream_mode {
                    StreamMode::Delta => self.stream_frame(delta, seq, false),
                    StreamMode::Cumulative => self.stream_frame(text, seq, true),
                },
                Replayed::Frame(frame) => frame,
            })
            .collect()
    }

    fn stream_frame(&self, content: &str, seq: u64, catch_up: bool) -> Frame {
        self.stream_frames.frame(content, seq, catch_up)
    }

    fn typing_frame(&self) -> Frame {
        Outbound::Typing { message_id: &self.message_id, session_key: self.session_key.as_str() }.to_frame()
    }

    fn report(&mut self, outcome: Result<FinishedAnswer, BackendError>) {
        if self.reported {
            return;
        }
        self.reported = true;
        self.reports.finished.do_send(TurnFinished { number: self.number, outcome });
    }
}
