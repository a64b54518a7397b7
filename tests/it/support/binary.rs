//! Runs the real `clawsocket` binary as a child process, for what only a whole process
//! shows: its log output (env_logger is global per process, so an in-process server
//! cannot have its own log captured), and its answer to signals (SIGTERM).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running `clawsocket` process; its stdout and stderr go to one file.
pub struct ChildServer {
    pub addr: SocketAddr,
    child: Child,
    output: PathBuf,
    /// Where its config, store (`{root}/store`) and log live.
    root: PathBuf,
    /// The temp dir this process owns, if it owns one.
    _dir: Option<tempfile::TempDir>,
}

impl ChildServer {
    /// Starts the binary on a free port of 127.0.0.1 with `config` (TOML text; `{store}`
    /// is replaced by a temp store dir), `RUST_LOG=trace` and only the variables in
    /// `environment`; returns once it accepts connections.
    pub async fn start(config: &str, environment: &[(&str, &str)]) -> ChildServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(dir.path(), config, environment).await;
        server._dir = Some(dir);
        server
    }

    /// As `start`, with the config, store (`{dir}/store`) and log in `dir`, which the
    /// test keeps: a second process can start on the same store after a kill.
    pub async fn start_in(dir: &Path, config: &str, environment: &[(&str, &str)]) -> ChildServer {
        let store = dir.join("store");
        let config_path = dir.join("clawsocket.toml");
        std::fs::write(&config_path, config.replace("{store}", &store.to_string_lossy())).expect("write config");
        let output = dir.join(format!("output-{}.log", uuid::Uuid::new_v4().simple()));
        let log = File::create(&output).expect("create log file");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_clawsocket"))
            .arg("--config")
            .arg(&config_path)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env_clear()
            .env("RUST_LOG", "trace")
            .envs(environment.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("clone log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the clawsocket binary");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = ChildServer { addr, child, output, root: dir.to_path_buf(), _dir: None };
        server.wait_until_listening().await;
        server
    }

    /// Polls the port; fails the test with the child's output if it exits first or
    /// does not listen within 10 s (a hang, not a timing claim).
    async fn wait_until_listening(&mut self) {
        for _ in 0..1000 {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("clawsocket exited ({status}) before listening:\n{}", self.output());
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("clawsocket did not listen on {} within 10 s:\n{}", self.addr, self.output());
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// `ws://127.0.0.1:PORT/ws?{query}`.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    /// The most resident memory the process has had so far, bytes (`VmHWM` of
    /// /proc/PID/status): what a burst cost, even when it was given back since.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc status");
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM line");
        let kib: u64 = line.split_whitespace().nth(1).and_then(|value| value.parse().ok()).expect("VmHWM value");
        kib * 1024
    }

    /// The store dir the process was given (`{store}` in its config).
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Sends SIGTERM, as a service manager or `docker stop` does.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`…): `STOP` freezes the process as a long
    /// pause would (a VM migration, a swap storm), `CONT` thaws it.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.child.id());
    }

    /// Waits for the process to exit by itself and returns its status and output;
    /// fails the test after 30 s (a hang, not a timing claim).
    pub async fn wait_for_exit(&mut self) -> (ExitStatus, String) {
        for _ in 0..3000 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.output());
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("clawsocket did not exit within 30 s:\n{}", self.output());
    }

    /// Kills the process (SIGKILL) and returns everything it wrote to stdout and stderr.
    pub fn kill(mut self) -> String {
        self.stop();
        self.output()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child's TOML config: auth off, the `openai` backend at `agent_url` (with the
/// `[agent]` lines of `agent_lines`, e.g. `apiKey = "…"`), the test's store, then `rest`
/// (whole sections, e.g. `[limits]`).
pub fn openai_config(agent_url: &str, agent_lines: &str, rest: &str) -> String {
    format!(
        "[channels.websocket.auth]\nenabled = false\n[agent]\nkind = \"openai\"\nurl = \"{agent_url}\"\n{agent_lines}\
         [store]\ndir = \"{{store}}\"\n{rest}"
    )
}

/// A port nothing listens on right now (bound, then released); also the Redis helper's.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("bound address").port()
}
