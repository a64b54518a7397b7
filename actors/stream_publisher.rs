//! `StreamPublisher`: the owner's side of a session's fan-out across nodes (cluster
//! mode). It is one more `Outbox` in the session's subscribers: every frame the
//! session's connections get, it writes once to the session's Redis stream, where
//! every other node's followers read it (SPEC §14).
//!
//! Frames are written in the order they came, one script call at a time (the calls
//! of one batch go in one round trip, fenced by the lease: a paused old owner writes
//! nothing). What waits for Redis is bounded in bytes like a connection's queue
//! (`limits.outboundBytes`, times `PUBLISH_BYTES_FACTOR`: one publisher serves every
//! node); past it the session's stream misses those frames, logged.

use std::sync::Arc;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};

use super::outbox::{Outbox, Outgoing, ToConnection};
use crate::cluster::Cluster;
use crate::identity::{ConnectionId, SessionKey};
use crate::limits::ByteBudget;
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// The publisher may hold this many times a connection's `limits.outboundBytes`.
const PUBLISH_BYTES_FACTOR: usize = 8;
/// At most this many events go in one script call.
const EVENTS_PER_CALL: usize = 256;

/// Publish `frame` to every node's followers but not to connection `except` (the
/// sender of a group message, who has it already).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishExcept {
    pub frame: Frame,
    pub except: ConnectionId,
}

/// One session's writer to its event stream.
pub struct StreamPublisher {
    cluster: Arc<Cluster>,
    key: SessionKey,
    lease: Arc<str>,
    waiting: Arc<ByteBudget>,
    /// Events not yet written, with the bytes each holds of `waiting`.
    queue: Vec<(Bytes, Option<String>, usize)>,
    writing: bool,
    mailbox: usize,
    /// The last write failed (logged once per run of failures).
    failing: bool,
    metrics: Arc<Metrics>,
}

impl StreamPublisher {
    /// Starts the publisher of `key` (owned under `lease`) and answers the `Outbox`
    /// the session adds to its subscribers, and the address for `PublishExcept`.
    pub fn start(
        cluster: Arc<Cluster>,
        key: SessionKey,
        lease: Arc<str>,
        outbound_bytes: usize,
        mailbox: usize,
        metrics: Arc<Metrics>,
    ) -> (Outbox, Addr<StreamPublisher>) {
        let waiting = ByteBudget::new(outbound_bytes.saturating_mul(PUBLISH_BYTES_FACTOR));
        let publisher = StreamPublisher {
            cluster,
            key,
            lease,
            waiting: waiting.clone(),
            queue: Vec::new(),
            writing: false,
            mailbox,
            failing: false,
            metrics,
        }
        .start();
        (Outbox::new(ConnectionId::new(), publisher.clone().recipient(), waiting), publisher)
    }

    fn enqueue(&mut self, frames: Bytes, except: Option<String>, bytes: usize, ctx: &mut Context<Self>) {
        self.queue.push((frames, except, bytes));
        self.write_next(ctx);
    }

    /// Writes what is queued, one call at a time, in order.
    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.queue.is_empty() {
            return;
        }
        self.writing = true;
        let take = self.queue.len().min(EVENTS_PER_CALL);
        let batch: Vec<(Bytes, Option<String>, usize)> = self.queue.drain(..take).collect();
        let bytes: usize = batch.iter().map(|(_, _, bytes)| bytes).sum();
        let count = batch.len();
        let events: Vec<(Bytes, Option<String>)> =
            batch.into_iter().map(|(frames, except, _)| (frames, except)).collect();
        let (cluster, key, lease) = (self.cluster.clone(), self.key.clone(), self.lease.clone());
        let write = async move { cluster.publish(&key, &lease, &events).await };
        ctx.spawn(write.into_actor(self).map(move |written, publisher, ctx| {
            publisher.waiting.release(bytes);
            publisher.writing = false;
            match written {
                Err(error) if !publisher.failing => {
                    log::warn!("cluster: session {}: events not published to other nodes: {error}", publisher.key);
                    publisher.failing = true;
                }
                Err(_) => {}
                Ok(_) => {
                    publisher.failing = false;
                    if let Some(metrics) = &publisher.metrics.cluster {
                        metrics.events_published.inc_by(count as u64);
                    }
                }
            }
            publisher.write_next(ctx);
        }));
    }
}

/// The frames of `outgoing`, newline-joined (JSON text holds no raw newline).
fn joined(outgoing: &Outgoing) -> Bytes {
    match outgoing {
        Outgoing::One(frame) => frame.text().into_bytes(),
        Outgoing::Batch(frames) => {
            let size = frames.iter().map(|frame| frame.byte_len() + 1).sum();
            let mut out = BytesMut::with_capacity(size);
            for (index, frame) in frames.iter().enumerate() {
                if index > 0 {
                    out.extend_from_slice(b"\n");
                }
                out.extend_from_slice(frame.text().as_bytes());
            }
            out.freeze()
        }
    }
}

impl Actor for StreamPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<ToConnection> for StreamPublisher {
    type Result = ();

    fn handle(&mut self, message: ToConnection, ctx: &mut Self::Context) {
        match message {
            ToConnection::Deliver(outgoing, bytes) => self.enqueue(joined(&outgoing), None, bytes, ctx),
            // Logged once per run of failures, like a failed write.
            ToConnection::Evict(bound) if !self.failing => {
                log::warn!("cluster: session {}: Redis fell behind ({bound:?}); other nodes miss events", self.key);
                self.failing = true;
            }
            ToConnection::Evict(_) => {}
            ToConnection::Close(_) => {}
        }
    }
}

impl Handler<PublishExcept> for StreamPublisher {
    type Result = ();

    fn handle(&mut self, message: PublishExcept, ctx: &mut Self::Context) {
        let bytes = message.frame.byte_len();
        if self.waiting.try_admit(bytes) {
            self.enqueue(message.frame.text().into_bytes(), Some(message.except.to_string()), bytes, ctx);
        }
    }
}
