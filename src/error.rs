//! Why the service could not start. Errors that happen while serving are not here:
//! they become `chat.error` frames (see `protocol::ErrorCode`) or log lines.

/// A start-up failure; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The configured address could not be bound; `reason` says why and what to do.
    #[error("could not listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("could not listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store cannot be read: {0}")]
    Store(crate::store::StoreError),
    #[error("cluster.redis.url: {0}")]
    Cluster(String),
}
