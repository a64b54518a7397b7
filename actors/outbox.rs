//! `Outbox`: how frames reach a connection, for whoever holds one (sessions, agent
//! bridges, the Supervisor), without knowing what is behind it.
//!
//! Behind an `Outbox` is any actor that takes [`ToConnection`]: a `ConnectionActor`
//! (its socket), a test's collector, or later a node's relay. So imports run one way
//! (connection → supervisor → session → agent_bridge → outbox) and a session can be
//! run without a socket. Sending never waits and never grows a full queue: a
//! connection whose mailbox (`limits.outboundQueue` messages) or whose bytes waiting
//! (`limits.outboundBytes`) are full is told to close (1008 "slow") and reported
//! dropped, so its sender can forget it. The connection gives the bytes back as it
//! hands its frames to its socket's buffer (actix's, bounded by its write buffer), so
//! what one connection holds is about `outboundBytes` plus that buffer.

use std::sync::Arc;

use actix::prelude::*;

use crate::identity::ConnectionId;
use crate::limits::ByteBudget;
use crate::protocol::{Disconnect, Frame};

/// Serialized frames for one connection: one frame, or a batch of stream frames
/// (every delta of one network read) whose allocation all subscribers share.
#[derive(Clone)]
pub enum Outgoing {
    One(Frame),
    Batch(Arc<[Frame]>),
}

impl Outgoing {
    /// The bytes these frames take on the wire (their text).
    fn byte_len(&self) -> usize {
        match self {
            Outgoing::One(frame) => frame.byte_len(),
            Outgoing::Batch(frames) => frames.iter().map(Frame::byte_len).sum(),
        }
    }
}

/// What a connection is told.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToConnection {
    /// Write these frames (of this many bytes, counted once by the sender) to the
    /// socket, in order.
    Deliver(Outgoing, usize),
    /// It fell too far behind, by this bound: close it (1008 "slow").
    Evict(Bound),
    /// Close the socket as `Disconnect` says (shutdown).
    Close(Disconnect),
}

/// The bound a slow connection filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `limits.outboundQueue`: messages waiting in its mailbox.
    Frames,
    /// `limits.outboundBytes`: bytes waiting.
    Bytes,
}

/// What became of a frame handed to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The connection is gone; drop the subscriber.
    Gone,
    /// The connection was too far behind: it was told to close; drop the subscriber.
    Evicted,
}

/// One connection's way in.
#[derive(Clone)]
pub struct Outbox {
    pub id: ConnectionId,
    recipient: Recipient<ToConnection>,
    /// Bytes handed to this connection and not yet to its socket's buffer.
    waiting: Arc<ByteBudget>,
}

impl Outbox {
    /// The outbox of connection `id`; `waiting` is shared with the connection, which
    /// gives the bytes back as it hands its frames to its socket's buffer.
    pub fn new(id: ConnectionId, recipient: Recipient<ToConnection>, waiting: Arc<ByteBudget>) -> Outbox {
        Outbox { id, recipient, waiting }
    }

    /// Queues `frame`.
    pub fn deliver(&self, frame: &Frame) -> Delivery {
        self.send(Outgoing::One(frame.clone()))
    }

    /// Queues `outgoing` (one mailbox slot, however many frames) without waiting and
    /// without growing a full queue, in messages or in bytes.
    pub fn send(&self, outgoing: Outgoing) -> Delivery {
        let bytes = outgoing.byte_len();
        self.send_counted(outgoing, bytes)
    }

    /// As `send`, for frames whose `bytes` the caller counted once for every outbox.
    fn send_counted(&self, outgoing: Outgoing, bytes: usize) -> Delivery {
        if !self.waiting.try_admit(bytes) {
            return self.evict(Bound::Bytes);
        }
        match self.recipient.try_send(ToConnection::Deliver(outgoing, bytes)) {
            Ok(()) => Delivery::Queued,
            Err(error) => {
                self.waiting.release(bytes);
                match error {
                    SendError::Closed(_) => Delivery::Gone,
                    SendError::Full(_) => self.evict(Bound::Frames),
                }
            }
        }
    }

    /// Tells the connection to close.
    pub fn close(&self, disconnect: Disconnect) {
        self.recipient.do_send(ToConnection::Close(disconnect));
    }

    /// One message past the bound, once: the caller drops this subscriber.
    fn evict(&self, bound: Bound) -> Delivery {
        self.recipient.do_send(ToConnection::Evict(bound));
        Delivery::Evicted
    }
}

/// Hands `frame` to every outbox; returns the ids of those that must be dropped.
pub fn fan_out<'a>(outboxes: impl IntoIterator<Item = &'a Outbox>, frame: &Frame) -> Vec<ConnectionId> {
    fan_out_all(outboxes, &Outgoing::One(frame.clone()))
}

/// Hands `outgoing` to every outbox (a reference-count bump each); returns the ids of
/// those that must be dropped.
pub fn fan_out_all<'a>(outboxes: impl IntoIterator<Item = &'a Outbox>, outgoing: &Outgoing) -> Vec<ConnectionId> {
    let bytes = outgoing.byte_len();
    let mut dropped = Vec::new();
    for outbox in outboxes {
        if outbox.send_counted(outgoing.clone(), bytes) != Delivery::Queued {
            dropped.push(outbox.id.clone());
        }
    }
    dropped
}
