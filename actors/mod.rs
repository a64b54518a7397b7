//! The actors of the design card (SPEC §9), one file each with the messages it handles.
//!
//! `connection` (one per socket) → `supervisor` (registries; finds the session) →
//! `session` (one per conversation; orders turns) → `agent_bridge` (one per running
//! turn; streams from the backend and fans deltas out to the session's connections)
//! → `outbox` (how frames reach a connection). Imports run in that direction only:
//! what an actor reports back (to its session, to the Supervisor) goes through a
//! `Recipient` of a message the reporter defines. In cluster mode `cluster_node`
//! (the node's inbox and health) sits beside `connection`, above the Supervisor;
//! `stream_reader` and `stream_publisher` sit below `session`.

pub mod agent_bridge;
pub mod cluster_node;
pub mod connection;
pub mod outbox;
pub mod session;
pub mod store_writer;
pub mod stream_publisher;
pub mod stream_reader;
pub mod supervisor;
