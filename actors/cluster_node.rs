//! `ClusterNode`: this node's presence in the cluster (cluster mode only).
//!
//! It checks Redis every `HEALTH_EVERY` (the verdict is `/readyz`'s and decides
//! whether new turns are taken; the same tick keeps this node's alive key, on which
//! its share of the per-user connection counts depends, and its users' running turns
//! counted in Redis), and listens on this node's inbox: commands other
//! nodes forward to the sessions this node owns go to the Supervisor
//! (`RouteForwarded`, with a [`RemoteConnection`] as the way back to the sender),
//! frames for this node's connections go to them (`DeliverToConnection`). The inbox
//! subscription is made again whenever Redis drops it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;

use super::outbox::{Outbox, Outgoing, ToConnection};
use super::session::{Forwarded, Turn};
use super::supervisor::{DeliverToConnection, RouteForwarded, Supervisor};
use crate::cluster::{inbox_channel, Cluster};
use crate::cluster_inbox::{ForwardedAction, ForwardedCommand, InboxMessage};
use crate::followed_turn::split_frames;
use crate::identity::ConnectionId;
use crate::limits::{ByteBudget, UserConnections};
use crate::metrics::Metrics;
use crate::quota::Tenancy;

/// How often Redis is pinged.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// Pause before subscribing again to the inbox after Redis dropped it.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// One inbox message, as it came.
#[derive(Message)]
#[rtype(result = "()")]
struct InboxPayload(String);

/// The node's cluster presence.
pub struct ClusterNode {
    cluster: Arc<Cluster>,
    supervisor: Addr<Supervisor>,
    /// `limits.outboundBytes`: what a reply to another node may hold.
    outbound_bytes: usize,
    metrics: Arc<Metrics>,
    /// The per-user connection counts, told of every health check.
    users: UserConnections,
    /// Per-user limits: this node's running turns are refreshed on every health check.
    tenancy: Option<Arc<Tenancy>>,
}

impl ClusterNode {
    pub fn new(
        cluster: Arc<Cluster>,
        supervisor: Addr<Supervisor>,
        outbound_bytes: usize,
        metrics: Arc<Metrics>,
        users: UserConnections,
    ) -> ClusterNode {
        ClusterNode { cluster, supervisor, outbound_bytes, metrics, users, tenancy: None }
    }

    /// Tells `tenancy` of every health check too.
    pub fn with_tenancy(mut self, tenancy: Arc<Tenancy>) -> ClusterNode {
        self.tenancy = Some(tenancy);
        self
    }

    fn check_health(&self, ctx: &mut Context<Self>) {
        let (cluster, metrics, users) = (self.cluster.clone(), self.metrics.clone(), self.users.clone());
        let tenancy = self.tenancy.clone();
        let check = async move {
            let up = cluster.check_health().await.is_ok();
            if let Some(cluster) = &metrics.cluster {
                cluster.redis_up.set(i64::from(up));
            }
            users.heartbeat(up).await;
            if let Some(tenancy) = tenancy {
                tenancy.heartbeat(up).await;
            }
        };
        ctx.spawn(check.into_actor(self));
    }

    /// Subscribes to the inbox, and again each time the subscription ends, while
    /// this actor runs.
    fn listen(&self, ctx: &mut Context<Self>) {
        let client = self.cluster.client().clone();
        let channel = inbox_channel(&self.cluster.node_id);
        let node = ctx.address().downgrade();
        actix::spawn(async move {
            while node.upgrade().is_some() {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            let mut messages = pubsub.into_on_message();
                            while let Some(message) = messages.next().await {
                                let Some(node) = node.upgrade() else { return };
                                match message.get_payload::<String>() {
                                    Ok(payload) => node.do_send(InboxPayload(payload)),
                                    Err(error) => log::warn!("cluster: an inbox message is not text: {error}"),
                                }
                            }
                        }
                        Err(error) => log::warn!("cluster: cannot subscribe to the inbox: {error}"),
                    },
                    Err(error) => log::debug!("cluster: inbox not reachable yet: {error}"),
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }

    /// Tells the sender of `command` that it arrived (without waiting).
    fn acknowledge(&self, command: &ForwardedCommand) {
        let (cluster, node) = (self.cluster.clone(), command.from_node.clone());
        let ack = InboxMessage::Ack { id: command.id.clone() }.to_json();
        actix::spawn(async move {
            if let Err(error) = cluster.send_to_node(&node, ack).await {
                log::debug!("cluster: an acknowledgement to node {node} was lost: {error}");
            }
        });
    }

    fn take_command(&self, command: ForwardedCommand) {
        let reply = RemoteConnection::start(
            self.cluster.clone(),
            command.from_node,
            ConnectionId::named(&command.from_connection),
            self.outbound_bytes,
        );
        let forwarded = match command.action {
            ForwardedAction::Submit { message_id, identity, message, tools } => Forwarded::Submit(Box::new(Turn {
                message_id: Arc::from(message_id),
                identity: *identity,
                message: *message,
                origin: reply.id.clone(),
                tools,
            })),
            ForwardedAction::Abort { message_id } => Forwarded::Abort { message_id },
            ForwardedAction::Delete { message_id } => Forwarded::Delete { message_id },
        };
        self.supervisor.do_send(RouteForwarded {
            target: command.target,
            agent_id: command.agent_id,
            agent_dir: command.agent_dir,
            workspace: command.workspace,
            reply,
            forwarded,
            hops: command.hops,
        });
    }
}

impl Actor for ClusterNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::info!("cluster: node {} joins through Redis", self.cluster.node_id);
        self.check_health(ctx);
        ctx.run_interval(HEALTH_EVERY, |node, ctx| node.check_health(ctx));
        self.listen(ctx);
    }
}

impl Handler<InboxPayload> for ClusterNode {
    type Result = ();

    fn handle(&mut self, message: InboxPayload, _ctx: &mut Self::Context) {
        match serde_json::from_str::<InboxMessage>(&message.0) {
            Ok(InboxMessage::Command(command)) => {
                self.acknowledge(&command);
                self.take_command(*command);
            }
            Ok(InboxMessage::Ack { id }) => self.cluster.acknowledged(&id),
            Ok(InboxMessage::Reply { connection, frames }) => {
                let mut frames = split_frames(bytes::Bytes::from(frames));
                let outgoing = match frames.len() {
                    0 => return,
                    1 => Outgoing::One(frames.remove(0)),
                    _ => Outgoing::Batch(frames.into()),
                };
                let connection = ConnectionId::named(&connection);
                self.supervisor.do_send(DeliverToConnection { connection, outgoing });
            }
            Err(error) => log::warn!("cluster: an inbox message is not understood; dropped: {error}"),
        }
    }
}

/// A connection on another node, as an `Outbox`: what a session answers a forwarded
/// command goes back to that node's inbox, in order.
pub struct RemoteConnection {
    cluster: Arc<Cluster>,
    node: String,
    connection: ConnectionId,
    waiting: Arc<ByteBudget>,
}

impl RemoteConnection {
    /// The outbox of `connection` on `node`.
    pub fn start(cluster: Arc<Cluster>, node: String, connection: ConnectionId, outbound_bytes: usize) -> Outbox {
        let waiting = ByteBudget::new(outbound_bytes);
        let id = connection.clone();
        let remote = RemoteConnection { cluster, node, connection, waiting: waiting.clone() }.start();
        Outbox::new(id, remote.recipient(), waiting)
    }
}

impl Actor for RemoteConnection {
    type Context = Context<Self>;
}

impl Handler<ToConnection> for RemoteConnection {
    type Result = ();

    fn handle(&mut self, message: ToConnection, ctx: &mut Self::Context) {
        let ToConnection::Deliver(outgoing, bytes) = message else { return };
        let frames = match &outgoing {
            Outgoing::One(frame) => frame.text().to_string(),
            Outgoing::Batch(frames) => {
                frames.iter().map(|frame| frame.text().to_string()).collect::<Vec<_>>().join("\n")
            }
        };
        let payload = InboxMessage::Reply { connection: self.connection.to_string(), frames }.to_json();
        let (cluster, node) = (self.cluster.clone(), self.node.clone());
        let send = async move { cluster.send_to_node(&node, payload).await };
        // Waiting keeps the replies to one connection in order.
        ctx.wait(send.into_actor(self).map(move |sent, remote, _ctx| {
            remote.waiting.release(bytes);
            if let Err(error) = sent {
                log::warn!("cluster: a reply to node {} was lost: {error}", remote.node);
            }
        }));
    }
}
