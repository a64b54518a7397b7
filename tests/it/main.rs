//! The one integration-test binary (one link, shared helpers): every test starts the
//! real server in-process on port 0 and talks to it with a real WebSocket client.

mod support;

mod backends;
mod foundation;
mod sessions;
