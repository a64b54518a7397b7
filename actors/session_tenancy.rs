//! A `SessionActor` and its users' limits (SPEC §13): the part of a session that asks
//! `quota.rs` and `turn_gate.rs` (through the server's `Tenancy`).
//!
//! - A user's `chat.send` passes their `turnsPerMinute` and `tokensPerDay` when the
//!   session takes it (after the retry and duplicate checks: an answered or queued
//!   `messageId` is no new turn); refused, the sender gets `quota_exceeded` and the
//!   turn is not queued. A check that must read a file or ask Redis holds the
//!   session's other commands meanwhile, so their order is kept.
//! - The head of the queue starts only with a place under its user's
//!   `concurrentTurns` ([`TurnPermit`], held by the running turn and given back when it
//!   is dropped, however the turn ends); without one it waits, woken by [`SlotFreed`]
//!   (in a cluster also by a timer), and the session keeps taking commands.
//! - When a turn ends its usage is counted: the backend's, else estimated at 4 bytes a
//!   token (kept in the answer, marked estimated); an aborted or cut turn counts its
//!   prompt (estimated), a failed one counts as a turn without tokens.

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use super::{RunningTurn, SessionActor, Turn};
use crate::actors::outbox::Outbox;
use crate::answer::FinishedAnswer;
use crate::backend::{TurnRequest, Usage};
use crate::identity::Identity;
use crate::protocol::{ErrorCode, ToolTurn};
use crate::quota::{self, Check, QuotaRefusal};
use crate::turn_gate::{Acquire, SlotFreed};
use crate::usage::UsageCounts;

/// Where the head of the queue stands with its user's `concurrentTurns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotWait {
    /// Nothing asked.
    Idle,
    /// A place is being asked for (cluster mode: a Redis call).
    Asking,
    /// The user's places are taken: woken by `SlotFreed` (or, in a cluster, a timer).
    Waiting,
}

impl SessionActor {
    /// Queues `turn` if its user may start it (a user's message and a regeneration
    /// pass their turnsPerMinute and tokensPerDay; a tool-result continuation, which
    /// finishes an exchange already counted as a turn, their tokensPerDay); else tells
    /// `from` why not.
    pub(super) fn check_quota_then_queue(&mut self, from: Outbox, turn: Box<Turn>, ctx: &mut Context<Self>) {
        let new_turn = matches!(turn.tools, ToolTurn::Message | ToolTurn::Regenerate(_));
        match self.setup.tenancy.check_turn(&turn.identity, new_turn) {
            Check::Now(Ok(())) => self.queue_turn(turn, ctx),
            Check::Now(Err(refusal)) => self.refuse_quota(&from, &refusal, &turn.message_id),
            Check::Later(check) => {
                // Waiting keeps the session's commands in order meanwhile.
                ctx.wait(check.into_actor(self).map(move |verdict, session, ctx| match verdict {
                    Ok(()) => session.queue_turn(turn, ctx),
                    Err(refusal) => session.refuse_quota(&from, &refusal, &turn.message_id),
                }));
            }
        }
    }

    /// Tells the sender that its user's `limit` refuses the turn (`quota_exceeded`).
    fn refuse_quota(&self, from: &Outbox, refusal: &QuotaRefusal, message_id: &str) {
        log::info!(
            "turn {message_id} in session {} refused: its user reached {} ({})",
            self.setup.key,
            refusal.limit.as_str(),
            refusal.max
        );
        self.setup.metrics.error(ErrorCode::QuotaExceeded);
        from.deliver(&refusal.frame(Some(message_id)));
    }

    /// Asks for a place under `user`'s concurrentTurns for the head of the queue:
    /// `start_turn` runs with it, at once or when one of the user's turns ends; never
    /// a refusal.
    pub(super) fn ask_for_slot(&mut self, user: &Identity, ctx: &mut Context<Self>) {
        if self.slot != SlotWait::Idle {
            return; // a place is being asked for, or waited for
        }
        let max = self.setup.tenancy.limits_for(user).concurrent_turns;
        let waiter = ctx.address().recipient();
        match self.setup.tenancy.gate().acquire(&user.sender_id, max, &self.setup.key, waiter) {
            Acquire::Now(Some(permit)) => self.start_turn(permit, ctx),
            Acquire::Now(None) => self.wait_for_slot(ctx),
            Acquire::Later(asking) => {
                self.slot = SlotWait::Asking;
                ctx.spawn(asking.into_actor(self).map(|permit, session, ctx| {
                    session.slot = SlotWait::Idle;
                    match permit {
                        Some(permit) => session.start_turn(permit, ctx),
                        None => session.wait_for_slot(ctx),
                    }
                }));
            }
        }
    }

    /// The head of the queue waits for one of its user's turns to end.
    fn wait_for_slot(&mut self, ctx: &mut Context<Self>) {
        self.slot = SlotWait::Waiting;
        if let Some(next) = self.queue.front() {
            log::debug!(
                "turn {} in session {} waits: its user runs their concurrentTurns already",
                next.message_id,
                self.setup.key
            );
        }
        if let Some(after) = self.setup.tenancy.gate().retry_after() {
            ctx.run_later(after, |session, ctx| session.wake_for_slot(ctx));
        }
    }

    /// A place may be free: the waiting head of the queue asks again.
    fn wake_for_slot(&mut self, ctx: &mut Context<Self>) {
        if self.slot == SlotWait::Waiting {
            self.slot = SlotWait::Idle;
            self.start_next_turn(ctx);
        }
    }

    /// Counts an answered turn's usage: the backend's, else estimated at 4 bytes a
    /// token (and then kept in the answer, marked estimated). The future ends once the
    /// next check sees it.
    pub(super) fn count_answered_turn(
        &self,
        running: &RunningTurn,
        answer: &mut FinishedAnswer,
    ) -> LocalBoxFuture<'static, ()> {
        let details = &answer.details;
        let answer_bytes = answer.text.len()
            + details.reasoning.as_ref().map_or(0, String::len)
            + details.tool_calls.iter().map(|call| call.name.len() + call.arguments.len()).sum::<usize>();
        let usage = *answer.details.usage.get_or_insert_with(|| {
            let prompt = quota::estimated_tokens(running.prompt_bytes);
            let completion = quota::estimated_tokens(answer_bytes);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                estimated: true,
            }
        });
        let counts = UsageCounts::of_turn(usage.prompt_tokens, usage.completion_tokens, usage.estimated);
        self.setup.tenancy.record_turn(&running.turn.identity, &self.setup.key, counts)
    }

    /// Counts a turn stopped before its answer (abort, shutdown, a lost lease): the
    /// backend read its prompt (estimated); what it answered is not known.
    pub(super) fn count_cut_turn(&self, running: &RunningTurn) {
        let counts = UsageCounts::of_turn(quota::estimated_tokens(running.prompt_bytes), 0, true);
        self.setup.tenancy.record_turn_later(&running.turn.identity, &self.setup.key, counts);
    }

    /// Counts a failed turn: a turn; what it cost is not known (the backend may not
    /// even have been reached).
    pub(super) fn count_failed_turn(&self, running: &RunningTurn) {
        let counts = UsageCounts { turns: 1, ..UsageCounts::default() };
        self.setup.tenancy.record_turn_later(&running.turn.identity, &self.setup.key, counts);
    }
}

impl Handler<SlotFreed> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: SlotFreed, ctx: &mut Self::Context) {
        self.wake_for_slot(ctx);
    }
}

/// Bytes of what the backend is sent for a turn: the prompt, the history, the system
/// prompt and tool results (for a usage estimate).
pub(super) fn prompt_bytes(request: &TurnRequest) -> usize {
    request.prompt.text.len()
        + request.history.iter().map(|entry| entry.content.len()).sum::<usize>()
        + request.system_prompt.as_ref().map_or(0, String::len)
        + request.tool_results.iter().map(|result| result.content.len()).sum::<usize>()
}
