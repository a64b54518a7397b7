//! Test support: start the real server (in-process, or the binary as a child
//! process), fake the services around it, talk to it over a real WebSocket; run a
//! real Redis for the tests that need one.

pub mod binary;
pub mod client;
pub mod cluster;
pub mod fake_agent;
pub mod fake_auth;
pub mod fake_groups;
pub mod http;
pub mod mount;
pub mod raw;
pub mod redis;
pub mod server;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

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

/// Runs a fake HTTP service on a free port of 127.0.0.1 (one worker, no signal
/// handling): `configure` adds its routes and data. Must run inside an actix system.
pub fn serve_on_loopback<F>(configure: F) -> (SocketAddr, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let address = listener.local_addr().expect("bound address");
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (address, handle)
}
