//! ClawSocket: a multi-tenant WebSocket front-end that relays chats to AI agents.
//!
//! It speaks the openclaw-websocket channel protocol (`chat.send` in; `chat.typing`,
//! `chat.stream`, `chat.response`, `chat.error` out). Each socket is a
//! `ConnectionActor`; each conversation a `SessionActor` that runs one turn at a time;
//! each running turn an `AgentBridge` that streams the backend's answer and fans every
//! delta out to the session's subscribers; a `Supervisor` holds the registries.
//! Before any of that, the handshake asks [`auth`] who a socket is: an unauthenticated
//! socket that must authenticate never gets an actor.
//! `server::run` wires them behind actix-web; `main.rs` only parses flags and loads
//! [`config::Settings`]. See ARCHITECTURE.md for the path of one message.

pub mod admin;
pub mod agent_roster;
pub mod agents;
pub mod answer;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod cluster_conversations;
pub mod cluster_inbox;
pub mod cluster_shared;
pub mod cluster_tenancy;
pub mod config;
pub mod conversations;
pub mod error;
pub mod followed_turn;
pub mod frame_guard;
pub mod groups;
mod handshake;
pub mod identity;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod openclaw_agents;
pub mod origin;
pub mod protocol;
pub mod quota;
pub mod redact;
pub mod server;
pub mod session_memory;
pub mod shutdown;
pub mod store;
pub mod stream_entries;
pub mod transcript;
pub mod ttl_cache;
pub mod turn_gate;
pub mod usage;
mod web_page;

// The actors live in the top-level `actors/` folder (the project layout of SPEC §9)
// but belong to this crate: they need `protocol`, `config` and `backend`, and the
// server needs them, so a separate crate would be a dependency cycle.
#[path = "../actors/mod.rs"]
pub mod actors;
