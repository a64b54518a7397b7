//! The `clawsocket` binary: flags, logging, settings, then `server::run`. Nothing else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clawsocket::config::{self, Settings};
use clawsocket::error::StartError;
use clawsocket::server;

const USAGE: &str = "\
clawsocket: a WebSocket front-end that relays chats to AI agents

USAGE: clawsocket [--config FILE] [--port PORT] [--host HOST]

  --config FILE   TOML, YAML or JSON settings layered over settings/default.toml
  --port PORT     overrides channels.websocket.port
  --host HOST     overrides channels.websocket.host
  --help          this text;  --version  the version

Environment: RUST_LOG (log filter, default info), WS_AUTH_ENABLED, WS_AUTH_ENDPOINT,
OPENCLAW_GATEWAY_TOKEN, OPENAI_API_KEY, CLAWSOCKET__SECTION__KEY=value (any key).";

/// The command line, parsed.
struct Arguments {
    config: Option<PathBuf>,
    port: Option<u16>,
    host: Option<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let arguments = match parse_arguments(std::env::args().skip(1)) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("clawsocket: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match start(arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clawsocket: {error}");
            ExitCode::FAILURE
        }
    }
}

fn start(arguments: Arguments) -> Result<(), StartError> {
    let mut overrides = Vec::new();
    if let Some(port) = arguments.port {
        overrides.push(("channels.websocket.port", config::SettingValue::from(port)));
    }
    if let Some(host) = arguments.host {
        overrides.push(("channels.websocket.host", config::SettingValue::from(host)));
    }
    let settings = Settings::load_with(arguments.config.as_deref(), &config::process_environment(), &overrides)?;
    let websocket = &settings.channels.websocket;
    let listener = server::bind(&websocket.host, websocket.port)?;
    let settings = Arc::new(settings);
    actix_web::rt::System::new().block_on(async move {
        let running = server::run(listener, settings)?;
        running.serve_until_signal().await?;
        Ok(())
    })
}

/// `Ok(None)` when the command was `--help` or `--version` (already answered).
fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Option<Arguments>, String> {
    let mut parsed = Arguments { config: None, port: None, host: None };
    while let Some(argument) = arguments.next() {
        let (flag, inline) = match argument.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (argument.clone(), None),
        };
        let mut value = |name: &str| inline.clone().or_else(|| arguments.next()).ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--config" | "-c" => parsed.config = Some(PathBuf::from(value("--config")?)),
            "--port" | "-p" => {
                let raw = value("--port")?;
                parsed.port = Some(raw.parse().map_err(|_| format!("--port: {raw:?} is not a port number"))?);
            }
            "--host" => parsed.host = Some(value("--host")?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--version" | "-V" => {
                println!("clawsocket {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}
