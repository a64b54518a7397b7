//! Starts the real service in-process on 127.0.0.1:0 with a temp store dir.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use clawsocket::actors::supervisor::{CountRegistries, RegistryCounts, Supervisor};
use clawsocket::config::{Environment, SettingValue, Settings};
use clawsocket::server;

/// A running server; dropping it stops the server and removes its store.
pub struct TestServer {
    pub addr: SocketAddr,
    pub supervisor: actix::Addr<Supervisor>,
    handle: actix_web::dev::ServerHandle,
    /// The temp store this server owns, if it owns one.
    _store: Option<tempfile::TempDir>,
}

impl TestServer {
    /// `ws://127.0.0.1:PORT/ws?{query}`.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until it has stopped (a clean shutdown).
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// The Supervisor's registry sizes.
    pub async fn registries(&self) -> RegistryCounts {
        self.supervisor.send(CountRegistries).await.expect("supervisor is running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Test defaults (echo agent without pauses, auth off), then `overrides`.
pub fn spawn_server(overrides: &[(&str, SettingValue)]) -> TestServer {
    let mut all: Vec<(&str, SettingValue)> = vec![("channels.websocket.auth.enabled", false.into())];
    all.extend(overrides.iter().cloned());
    spawn_server_from(None, &Environment::new(), &all)
}

/// Loads settings as `main` does (defaults, `file`, `environment`), then the echo
/// agent without pauses and a temp store, then `overrides`; starts the server.
pub fn spawn_server_from(
    file: Option<&Path>,
    environment: &Environment,
    overrides: &[(&str, SettingValue)],
) -> TestServer {
    let store = tempfile::tempdir().expect("temp dir");
    let mut server = start(file, environment, store.path(), overrides);
    server._store = Some(store);
    server
}

/// Test defaults (echo agent without pauses, auth off) on a store the test keeps, so a
/// second server can start on it after this one stops (a restart).
pub fn spawn_server_on_store(store: &Path, overrides: &[(&str, SettingValue)]) -> TestServer {
    let mut all: Vec<(&str, SettingValue)> = vec![("channels.websocket.auth.enabled", false.into())];
    all.extend(overrides.iter().cloned());
    start(None, &Environment::new(), store, &all)
}

fn start(
    file: Option<&Path>,
    environment: &Environment,
    store: &Path,
    overrides: &[(&str, SettingValue)],
) -> TestServer {
    let mut all: Vec<(&str, SettingValue)> = vec![
        ("agent.kind", "echo".into()),
        ("agent.echoDelayMs", 0.into()),
        ("store.dir", store.to_string_lossy().to_string().into()),
    ];
    all.extend(overrides.iter().cloned());
    let settings = Settings::load_with(file, environment, &all).expect("test settings load");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let running = server::run(listener, Arc::new(settings)).expect("server starts");
    let handle = running.server.handle();
    actix_rt::spawn(running.server);
    TestServer { addr: running.local_addr, supervisor: running.supervisor, handle, _store: None }
}
