//! Test support: start the real server (in-process, or the binary as a child
//! process), fake the services around it, talk to it over a real WebSocket.

pub mod binary;
pub mod client;
pub mod fake_agent;
pub mod fake_auth;
pub mod fake_groups;
pub mod mount;
pub mod raw;
pub mod server;

use std::future::Future;
use std::time::Duration;

pub use client::WsClient;
pub use server::{spawn_server, TestServer as TestServerHandle};

/// Polls `condition` until it holds; fails the test after 10 s (a hang, not a timing claim).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
