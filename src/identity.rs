//! Who is talking, and which session a message belongs to.
//!
//! A connection's [`Identity`] comes from the auth service when authenticated, else
//! from the URL, else from the connection id; a message may change it only on an
//! unauthenticated connection (the original plugin's behaviour). When auth is enabled
//! an unauthenticated connection is a guest: whatever id it claims lives under
//! [`GUEST_PREFIX`], so it can never name a logged-in user (SPEC §2). A [`SessionTarget`]
//! names a conversation independently of the agent; the Supervisor binds it to an
//! agent and so to a [`SessionKey`]. Nothing here does I/O.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The namespace of guests' ids: `guest:alice` is a guest calling itself alice, never
/// the logged-in alice (the auth service may not issue ids of this form).
pub const GUEST_PREFIX: &str = "guest:";

/// A connection's id: a UUID, also the identity of last resort.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// A fresh random id.
    pub fn new() -> Self {
        ConnectionId(Arc::from(uuid::Uuid::new_v4().to_string()))
    }

    /// The id a node named one of its connections by (cluster mode: a reply to a
    /// forwarded command goes back to it).
    pub fn named(id: &str) -> Self {
        ConnectionId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ConnectionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's auth token, kept only when `agent.forwardUserToken` is on. Its `Debug`
/// hides the value, so no log line can show it by accident. (Serialized only to
/// forward a turn to the node that owns its session, through Redis.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken(Arc<str>);

impl UserToken {
    pub fn new(token: &str) -> Self {
        UserToken(Arc::from(token))
    }

    /// The token itself, for the agent's context only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserToken(<redacted>)")
    }
}

/// Who a connection speaks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub sender_id: String,
    pub sender_name: String,
    /// True when the auth service vouched for this identity: then no message may change it.
    pub authenticated: bool,
    /// An unauthenticated connection while auth is enabled: every id it names is a
    /// guest id (`guest:{id}`).
    pub guest: bool,
    /// The auth service's whole `data` object, for the agent's context.
    pub auth_data: Option<Arc<Map<String, Value>>>,
    /// The user's token, only with `agent.forwardUserToken` (for the agent's context).
    pub token: Option<UserToken>,
}

impl Identity {
    /// The identity of a connection when auth is disabled: URL values, else the
    /// connection id, used as they are.
    pub fn anonymous(connection: &ConnectionId, sender_id: Option<&str>, sender_name: Option<&str>) -> Self {
        Self::unauthenticated(connection, sender_id, sender_name, false)
    }

    /// The identity of an unauthenticated connection while auth is enabled: as
    /// `anonymous`, with the id under `guest:`.
    pub fn guest(connection: &ConnectionId, sender_id: Option<&str>, sender_name: Option<&str>) -> Self {
        Self::unauthenticated(connection, sender_id, sender_name, true)
    }

    fn unauthenticated(connection: &ConnectionId, id: Option<&str>, name: Option<&str>, guest: bool) -> Self {
        let claimed = id.filter(|id| crate::protocol::is_valid_id(id)).unwrap_or(connection.as_str());
        Identity {
            sender_id: namespaced(claimed, guest),
            sender_name: name.filter(|name| !name.is_empty()).unwrap_or(claimed).to_string(),
            authenticated: false,
            guest,
            auth_data: None,
            token: None,
        }
    }

    /// The identity the auth service vouched for: no message can change it.
    pub fn authenticated(sender_id: String, sender_name: String, auth_data: Arc<Map<String, Value>>) -> Self {
        Identity { sender_id, sender_name, authenticated: true, guest: false, auth_data: Some(auth_data), token: None }
    }

    /// The identity a message acts as: the message's `senderId`/`senderName` count only
    /// on an unauthenticated connection.
    pub fn for_message(&self, sender_id: Option<&str>, sender_name: Option<&str>) -> Identity {
        if self.authenticated {
            return self.clone();
        }
        let mut identity = self.clone();
        if let Some(id) = sender_id {
            identity.sender_id = namespaced(id, self.guest);
            identity.sender_name = sender_name.unwrap_or(id).to_string();
        } else if let Some(name) = sender_name {
            identity.sender_name = name.to_string();
        }
        identity
    }
}

/// `id` as a guest's id when `guest`, else as it is.
fn namespaced(id: &str, guest: bool) -> String {
    if guest {
        format!("{GUEST_PREFIX}{id}")
    } else {
        id.to_string()
    }
}

/// A conversation, before an agent is bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionTarget {
    pub chat: Chat,
    pub thread_id: Option<String>,
}

/// The two kinds of conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Chat {
    /// One user and the agent; the string is the user's sender id.
    Direct(String),
    /// A group; the string is the group id.
    Group(String),
}

impl SessionTarget {
    /// The session key for this conversation with `agent_id`, as SPEC §2 writes it.
    pub fn key(&self, agent_id: &str) -> SessionKey {
        let (kind, id) = match &self.chat {
            Chat::Direct(sender) => ("direct", sender),
            Chat::Group(group) => ("group", group),
        };
        let mut key = format!("agent:{}:websocket:{kind}:", escape(agent_id));
        // A guest's id keeps its `guest:` readable (`…:direct:guest:alice`); the rest is
        // escaped, and no other id can start with it (auth refuses such user ids).
        match id.strip_prefix(GUEST_PREFIX) {
            Some(claimed) if kind == "direct" => {
                key.push_str(GUEST_PREFIX);
                key.push_str(&escape(claimed));
            }
            _ => key.push_str(&escape(id)),
        }
        if let Some(thread) = &self.thread_id {
            key.push_str(":thread:");
            key.push_str(&escape(thread));
        }
        SessionKey(Arc::from(key))
    }

    /// Whether this is a group conversation.
    pub fn is_group(&self) -> bool {
        matches!(self.chat, Chat::Group(_))
    }
}

/// A session's key: `agent:{agentId}:websocket:{direct|group}:{id}[:thread:{threadId}]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(Arc<str>);

impl SessionKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Percent-escapes `%` and `:` in a key part, so that no id can forge another key
/// (a group id `a:thread:b` must not name thread `b` of group `a`).
fn escape(part: &str) -> std::borrow::Cow<'_, str> {
    if !part.contains([':', '%']) {
        return std::borrow::Cow::Borrowed(part);
    }
    std::borrow::Cow::Owned(part.replace('%', "%25").replace(':', "%3A"))
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
