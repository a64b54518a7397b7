//! `StreamReader`: one per node (cluster mode), the reader of every session stream
//! this node follows.
//!
//! A session on this node that has subscribers but does not run the turns (another
//! node owns it) asks for its stream with [`Follow`]; the reader reads all followed
//! streams with one blocking `XREAD` on a connection of its own (a blocked command
//! would stall the shared one), and hands each session its events in order. A new
//! stream is read from the next call on (within `BLOCK_MS`), from the id the session
//! gave, so nothing is missed. Redis gone: the reader retries every `RETRY`, from the
//! ids it had.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::cluster::{self, Cluster, ClusterError, StreamEvent};
use crate::identity::SessionKey;
use crate::stream_entries::{self, StreamRead};

/// How long one read waits for new events, milliseconds (also how long a newly
/// followed stream may wait to be included).
const BLOCK_MS: u64 = 100;
/// Events read per stream per call.
const EVENTS_PER_READ: usize = 512;
/// Pause after a failed read.
const RETRY: Duration = Duration::from_millis(500);
/// Pause after a read that found events, so that the next one gathers more of them:
/// each read names every followed stream, so at a language model's pace (a delta per
/// stream every 20 ms or so) reading at once after each event would cost Redis one
/// call of that size per event. Adds at most this much to a follower's latency.
const GATHER: Duration = Duration::from_millis(2);

/// A session's stream events, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamEvents(pub Vec<StreamEvent>);

/// Read `key`'s stream after `after` (an entry id) and send its events to `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Follow {
    pub key: SessionKey,
    pub after: String,
    pub to: Recipient<StreamEvents>,
}

/// Stop reading `key`'s stream for `to`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unfollow {
    pub key: SessionKey,
    pub to: Recipient<StreamEvents>,
}

/// One followed stream.
struct Followed {
    last_id: String,
    to: Recipient<StreamEvents>,
}

/// The node's stream reader.
pub struct StreamReader {
    cluster: Arc<Cluster>,
    connection: Option<MultiplexedConnection>,
    /// By stream key.
    streams: HashMap<String, Followed>,
    reading: bool,
    /// The last read failed (logged once per run of failures).
    failing: bool,
}

impl StreamReader {
    pub fn new(cluster: Arc<Cluster>) -> StreamReader {
        StreamReader { cluster, connection: None, streams: HashMap::new(), reading: false, failing: false }
    }

    /// Starts the next read unless one is running or nothing is followed.
    fn read_next(&mut self, ctx: &mut Context<Self>) {
        // A session that stopped (retired) is read no more.
        self.streams.retain(|_, followed| followed.to.connected());
        if self.reading || self.streams.is_empty() {
            return;
        }
        self.reading = true;
        let keys: Vec<String> = self.streams.keys().cloned().collect();
        let ids: Vec<String> = keys.iter().map(|key| self.streams[key].last_id.clone()).collect();
        let client = self.cluster.client().clone();
        let connection = self.connection.take();
        let read = async move {
            let mut connection = match connection {
                Some(connection) => connection,
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(1)))
                        .set_response_timeout(Some(Duration::from_millis(BLOCK_MS) + Duration::from_secs(2)));
                    client.get_multiplexed_async_connection_with_config(&config).await?
                }
            };
            let reply: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(EVENTS_PER_READ)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys)
                .arg(&ids)
                .query_async(&mut connection)
                .await?;
            Ok::<_, ClusterError>((connection, reply))
        };
        ctx.spawn(read.into_actor(self).map(|result, reader, ctx| {
            reader.reading = false;
            match result {
                Ok((connection, reply)) => {
                    reader.connection = Some(connection);
                    reader.failing = false;
                    let reads = stream_entries::parse_xread(reply);
                    if reads.iter().any(|read| !read.events.is_empty()) {
                        reader.dispatch(reads);
                        ctx.run_later(GATHER, |reader, ctx| reader.read_next(ctx));
                    } else {
                        reader.dispatch(reads);
                        reader.read_next(ctx);
                    }
                }
                Err(error) => {
                    if !std::mem::replace(&mut reader.failing, true) {
                        log::warn!("cluster: reading session streams failed; retrying every {RETRY:?}: {error}");
                    }
                    ctx.run_later(RETRY, |reader, ctx| reader.read_next(ctx));
                }
            }
        }));
    }

    fn dispatch(&mut self, reads: Vec<StreamRead>) {
        for read in reads {
            let Some(followed) = self.streams.get_mut(&read.key) else { continue };
            if let Some(last_id) = read.last_id {
                followed.last_id = last_id;
            }
            if !read.events.is_empty() {
                // Not bounded by the session's mailbox: one read's events at a time.
                followed.to.do_send(StreamEvents(read.events));
            }
        }
    }
}

impl Actor for StreamReader {
    type Context = Context<Self>;
}

impl Handler<Follow> for StreamReader {
    type Result = ();

    fn handle(&mut self, message: Follow, ctx: &mut Self::Context) {
        let key = cluster::stream_key(&message.key);
        self.streams.insert(key, Followed { last_id: message.after, to: message.to });
        self.read_next(ctx);
    }
}

impl Handler<Unfollow> for StreamReader {
    type Result = ();

    fn handle(&mut self, message: Unfollow, _ctx: &mut Self::Context) {
        let key = cluster::stream_key(&message.key);
        if self.streams.get(&key).is_some_and(|followed| followed.to == message.to) {
            self.streams.remove(&key);
        }
    }
}
