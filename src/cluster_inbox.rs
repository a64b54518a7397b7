//! What nodes tell each other through their inboxes (cluster mode, SPEC §14): a
//! command for a session the receiving node owns, or frames for one of its
//! connections (the answer to a command it forwarded). Sent as JSON on the node's
//! pub/sub channel; a node that is not running hears nothing, and the sender learns
//! so from Redis (no listener), never by waiting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, SessionTarget};
use crate::protocol::{SendMessage, ToolTurn};

/// A command is forwarded at most this many times (ownership moving while it
/// travels); then it is answered `agent_unavailable`.
pub const MAX_HOPS: u8 = 3;

/// One inbox message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InboxMessage {
    /// Frames (newline-joined) for connection `connection` of the receiving node.
    Reply { connection: String, frames: String },
    /// A command for a session the receiving node owns.
    Command(Box<ForwardedCommand>),
    /// The receiving node's command `id` reached a running node (which answers it,
    /// or sends it on): the sender stops waiting for it.
    Ack { id: String },
}

/// A session command from a connection on another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedCommand {
    /// Acknowledged (`Ack`) on receipt: an owner that is paused or cut off from Redis
    /// still has its subscription, so "someone listens" is not "someone got it".
    pub id: String,
    pub target: SessionTarget,
    /// The agent the sending node bound the conversation to (so both compute one key).
    pub agent_id: String,
    pub agent_dir: PathBuf,
    pub workspace: Option<PathBuf>,
    /// Where replies go: the node and its connection.
    pub from_node: String,
    pub from_connection: String,
    /// How many times it was forwarded already.
    pub hops: u8,
    pub action: ForwardedAction,
}

/// What the forwarded command does.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum ForwardedAction {
    /// A `chat.send`.
    Submit {
        message_id: String,
        identity: Box<Identity>,
        message: Box<SendMessage>,
        #[serde(default)]
        tools: ToolTurn,
    },
    /// A `chat.abort`.
    Abort { message_id: Option<String> },
    /// A `chat.delete`.
    Delete,
}

impl InboxMessage {
    /// The JSON sent on the channel.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and maps: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
