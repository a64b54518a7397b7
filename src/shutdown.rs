//! Shutdown is ours, not actix-web's (`disable_signals`): actix-web's graceful stop
//! waits for connections to end, which WebSockets never do. On SIGTERM or SIGINT
//! [`GracefulShutdown`] refuses new sockets (503), has the Supervisor drain the
//! sessions within `limits.shutdownGraceMs` and close every socket with 1001, writes
//! the last turns' usage, then stops the HTTP server. A second signal stops at once.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::ServerHandle;
use futures_util::future::{select, Either};

use crate::actors::supervisor::{ShutDown, Supervisor};
use crate::limits::ConnectionSlots;
use crate::quota::Tenancy;

/// Once every socket has been told to close (1001), the HTTP workers give the close
/// frames this long, in seconds, to be written before they drop what is left.
pub const SOCKET_CLOSE_SECS: u64 = 2;

/// Serves `server` until SIGTERM or SIGINT, then runs `shutdown` (a second signal
/// stops at once); returns when the server has stopped.
pub async fn serve_until_signal(server: actix_web::dev::Server, shutdown: GracefulShutdown) -> std::io::Result<()> {
    // Registered before serving, so a signal that comes early is not missed.
    let mut signals = Signals::register()?;
    actix_web::rt::spawn(async move {
        let first = signals.next().await;
        log::info!("{first}: shutting down gracefully (send it again to stop at once)");
        let graceful = std::pin::pin!(shutdown.run());
        let second = std::pin::pin!(signals.next());
        if let Either::Right((second, _)) = select(graceful, second).await {
            log::warn!("{second} again: stopping now");
            shutdown.server.stop(false).await;
        }
    });
    server.await
}

/// Stops the service in order: refuse new sockets, drain the sessions (running
/// turns finish within the grace, or end with `shutting_down`; their answers are
/// stored), close every socket with 1001, stop the HTTP server.
#[derive(Clone)]
pub struct GracefulShutdown {
    pub server: ServerHandle,
    pub supervisor: Addr<Supervisor>,
    pub slots: Arc<ConnectionSlots>,
    pub grace: Duration,
    /// Per-user usage: written out before the server stops.
    pub tenancy: Arc<Tenancy>,
}

impl GracefulShutdown {
    /// Runs the whole sequence; returns when the HTTP server has stopped.
    pub async fn run(&self) {
        self.slots.close();
        log::info!("shutdown: new connections are refused; turns in flight have {:?} to finish", self.grace);
        match self.supervisor.send(ShutDown { grace: self.grace }).await {
            Ok(report) => log::info!(
                "shutdown: {} sessions drained ({:?}); {} connections closed (1001)",
                report.sessions,
                report.drained,
                report.connections_closed
            ),
            Err(error) => log::error!("shutdown: the supervisor did not answer ({error}); stopping anyway"),
        }
        self.tenancy.flush(USAGE_FLUSH_TIMEOUT).await;
        self.server.stop(true).await;
        log::info!("shutdown complete");
    }
}

/// How long the shutdown waits for the last turns' usage to be written.
const USAGE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The signals that stop the service: SIGTERM (service managers, `docker stop`) and
/// SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        let terminate = std::pin::pin!(self.terminate.recv());
        let interrupt = std::pin::pin!(self.interrupt.recv());
        match select(terminate, interrupt).await {
            Either::Left(_) => "SIGTERM",
            Either::Right(_) => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
