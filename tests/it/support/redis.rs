//! Runs a real `redis-server` (Debian's) as a child process for the tests that need
//! Redis: on a free port of 127.0.0.1, with its data in a temp dir and the AOF written
//! and fsynced on every write (`appendfsync always`), so that a test can SIGKILL it and
//! start it again on the same data, as a crashed Redis comes back in production.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::binary::free_port;

/// How long a start (or restart) may take before the test fails (a hang, not a timing claim).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start polls for `+PONG`.
const POLL: Duration = Duration::from_millis(10);

/// A running `redis-server`; dropping it kills the process (its temp dir goes with it).
pub struct RedisServer {
    port: u16,
    /// `None` after `kill`, until `restart`.
    child: Option<Child>,
    /// The `redis-server` binary, and `redis-cli` next to it.
    server_binary: PathBuf,
    cli_binary: PathBuf,
    /// Its `--dir` (the AOF) and its log; kept across restarts.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh Redis on a free port of 127.0.0.1 with an empty temp dir; returns
    /// once it answers `PING`, so tests never race its start.
    pub fn start() -> RedisServer {
        let server_binary = find_redis_server();
        let cli_binary = server_binary.with_file_name("redis-cli");
        let cli_binary = if cli_binary.is_file() { cli_binary } else { PathBuf::from("redis-cli") };
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut server = RedisServer { port: free_port(), child: None, server_binary, cli_binary, dir };
        server.launch(Instant::now());
        server
    }

    /// `redis://127.0.0.1:PORT`, for the code under test.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the process with SIGKILL and waits for it, as a crash would end it: no
    /// shutdown save, only what the AOF already holds survives. Does nothing if it is
    /// not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it if it runs, then starts it again on the same port and dir (it replays
    /// the AOF); returns once it answers `PING`. Retries for up to 10 s if the port is
    /// briefly taken.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(Instant::now());
    }

    /// Runs `redis-cli -p PORT args…` and returns its trimmed stdout, for tests to look
    /// at what the code under test wrote (e.g. `&["GET", "key"]`).
    pub fn command(&self, args: &[&str]) -> String {
        let output = Command::new(&self.cli_binary)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (installed with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Spawns the process and waits for `+PONG`; if it exits first (the port briefly
    /// taken), spawns it again until 10 s after `since`, then fails with its log.
    fn launch(&mut self, since: Instant) {
        loop {
            let mut child = self.spawn();
            match self.wait_for_pong(&mut child, since) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if since.elapsed() >= START_TIMEOUT {
                        panic!(
                            "redis-server on port {} did not answer PING within 10 s ({reason}); its log:\n{}",
                            self.port,
                            self.log()
                        );
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    fn spawn(&self) -> Child {
        let dir = self.dir.path();
        Command::new(&self.server_binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    /// Polls until `PING` gets `+PONG` (Ok), the process exits (Err, to retry) or the
    /// time is up (Err).
    fn wait_for_pong(&self, child: &mut Child, since: Instant) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("it exited: {status}"));
            }
            if answers_pong(address) {
                return Ok(());
            }
            if since.elapsed() >= START_TIMEOUT {
                return Err("no +PONG".to_string());
            }
            std::thread::sleep(POLL);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|error| format!("(no log: {error})"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a raw `PING` on `address` gets `+PONG` (not `-LOADING` while it replays the AOF).
fn answers_pong(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    if stream.set_read_timeout(Some(Duration::from_secs(1))).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match stream.read(&mut reply[read..]) {
            Ok(0) | Err(_) => break,
            Ok(count) => read += count,
        }
    }
    reply[..read].starts_with(b"+PONG")
}

/// `/usr/bin/redis-server`, else `redis-server` on PATH; fails the test with how to
/// install it when there is none.
fn find_redis_server() -> PathBuf {
    let debian = Path::new("/usr/bin/redis-server");
    if debian.is_file() {
        return debian.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path).map(|dir| dir.join("redis-server")).find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!("redis-server is not installed: apt-get install redis-server (the cluster tests need a real Redis)")
        })
}
