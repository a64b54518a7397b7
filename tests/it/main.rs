//! The one integration-test binary (one link, shared helpers): every test starts the
//! real server in-process on port 0 (or, for what only a whole process shows, such as
//! its log, the real binary as a child) and talks to it with a real WebSocket client.

mod support;

mod answer_events;
mod attacks;
mod auth;
mod backends;
mod bounds;
mod cluster;
mod cluster_failures;
mod cluster_shared;
mod config_mistakes;
mod conversations;
mod dynamic_agents;
mod failures;
mod foundation;
mod integrity;
mod media;
mod persistence;
mod redis_harness;
mod resume;
mod robust;
mod sessions;
mod surface;
mod tenancy;
