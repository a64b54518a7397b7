//! `limits.maxMessageBytes` on a WebSocket's raw inbound bytes, decided from each
//! frame's header, before any of its payload is kept.
//!
//! Why not only the codec's `max_size`: actix-http's frame parser (3.x) compares a
//! frame's declared length with `max_size` only once the whole frame has arrived, and
//! actix-web-actors buffers inbound bytes until then. A client that declares a frame
//! of 100 GiB and keeps sending would grow that buffer without bound, hurting every
//! other client of the process. [`FrameSizeGuard`] sits between the request payload
//! and the WebSocket decoder: it passes the bytes through untouched (no copy) while
//! tracking frame boundaries, and the moment a header declares a payload over the
//! limit it ends the stream with an error and raises its [`OversizeSignal`], which the
//! `ConnectionActor` turns into close 1009. Messages that arrived together with the
//! offending frame may be dropped with it: the client broke the limit.
//!
//! It knows only the RFC 6455 header layout: no actor, no socket, no JSON.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_http::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// The longest frame header: 2 bytes, an 8-byte extended length, a 4-byte mask key.
const MAX_HEADER_BYTES: usize = 14;

/// Raised when the guard refused a frame as too large; read by the connection.
#[derive(Debug, Clone, Default)]
pub struct OversizeSignal(Rc<Cell<bool>>);

impl OversizeSignal {
    /// Whether the inbound stream ended because a frame was over the limit.
    pub fn tripped(&self) -> bool {
        self.0.get()
    }
}

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Reading a frame header; `have` of its bytes are in `bytes`.
    Header { bytes: [u8; MAX_HEADER_BYTES], have: usize },
    /// Inside a frame's payload: this many bytes remain.
    Payload { remaining: u64 },
}

/// What one header byte told us.
enum HeaderStep {
    /// More header bytes are needed.
    Incomplete,
    /// The header is complete; its payload has this many bytes.
    Complete { payload: u64 },
    /// The declared payload is over the limit.
    TooBig,
}

/// Passes a WebSocket's inbound bytes through, ending them with
/// `PayloadError::Overflow` at the first frame header declaring more than `max` bytes.
pub struct FrameSizeGuard<S> {
    inner: S,
    max: u64,
    position: Position,
    signal: OversizeSignal,
    /// Set once the limit was crossed: the stream is over.
    ended: bool,
}

impl<S> FrameSizeGuard<S> {
    /// Guards `inner` with a limit of `max` payload bytes per frame.
    pub fn new(inner: S, max: usize) -> (Self, OversizeSignal) {
        let signal = OversizeSignal::default();
        let guard = FrameSizeGuard {
            inner,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            position: Position::Header { bytes: [0; MAX_HEADER_BYTES], have: 0 },
            signal: signal.clone(),
            ended: false,
        };
        (guard, signal)
    }

    /// Follows the frame boundaries through `chunk`; `false` if a frame is too big.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            match &mut self.position {
                Position::Payload { remaining } => {
                    let skipped = usize::try_from(*remaining).unwrap_or(usize::MAX).min(chunk.len());
                    *remaining -= skipped as u64;
                    chunk = &chunk[skipped..];
                    if *remaining == 0 {
                        self.position = Position::Header { bytes: [0; MAX_HEADER_BYTES], have: 0 };
                    }
                }
                Position::Header { bytes, have } => {
                    bytes[*have] = chunk[0];
                    *have += 1;
                    chunk = &chunk[1..];
                    match read_header(&bytes[..*have], self.max) {
                        HeaderStep::Incomplete => {}
                        HeaderStep::TooBig => return false,
                        HeaderStep::Complete { payload: 0 } => {
                            self.position = Position::Header { bytes: [0; MAX_HEADER_BYTES], have: 0 };
                        }
                        HeaderStep::Complete { payload } => self.position = Position::Payload { remaining: payload },
                    }
                }
            }
        }
        true
    }
}

/// Reads the header bytes seen so far: its length is known from the second byte, its
/// payload length as soon as the (extended) length field is complete.
fn read_header(header: &[u8], max: u64) -> HeaderStep {
    let [_, second, rest @ ..] = header else { return HeaderStep::Incomplete };
    let masked = second & 0x80 != 0;
    let short = u64::from(second & 0x7F);
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    if rest.len() < extended {
        return HeaderStep::Incomplete;
    }
    let payload = match extended {
        0 => short,
        _ => rest[..extended].iter().fold(0u64, |length, byte| (length << 8) | u64::from(*byte)),
    };
    if payload > max {
        return HeaderStep::TooBig;
    }
    let mask = if masked { 4 } else { 0 };
    if rest.len() < extended + mask {
        return HeaderStep::Incomplete;
    }
    HeaderStep::Complete { payload }
}

impl<S> Stream for FrameSizeGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.scan(&chunk) {
                    return Poll::Ready(Some(Ok(chunk)));
                }
                self.ended = true;
                self.signal.0.set(true);
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
#[path = "frame_guard_tests.rs"]
mod tests;
