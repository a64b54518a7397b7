use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn environment(pairs: &[(&str, &str)]) -> Environment {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn load_error(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
    match Settings::load(file, &environment(pairs)) {
        Ok(_) => panic!("expected a configuration error"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn defaults_are_the_original_plugins() {
    let settings = Settings::load(None, &Environment::new()).expect("defaults load");
    let websocket = &settings.channels.websocket;
    assert!(websocket.enabled);
    assert_eq!((websocket.port, websocket.host.as_str(), websocket.path.as_str()), (18800, "0.0.0.0", "/ws"));
    assert!(websocket.auth.enabled && websocket.auth.required);
    assert_eq!(websocket.auth.endpoint, "http://localhost:3000/api/auth/verify");
    assert_eq!(websocket.auth.timeout, 5000);
    assert!(!websocket.dynamic_agent_creation.enabled);
    assert_eq!(websocket.dynamic_agent_creation.workspace_template, "~/.openclaw/workspace-{agentId}");
    assert_eq!(websocket.stream_mode, StreamMode::Delta);
    assert_eq!(settings.agent.kind, AgentKind::Openclaw);
    assert_eq!(settings.agent.url, "http://127.0.0.1:18789");
    assert_eq!(settings.limits.max_message_bytes, 1024 * 1024);
}

#[test]
fn the_seed_readme_examples_load_as_they_are() {
    for name in ["seed-config.json", "seed-config.yaml", "seed-auth.json"] {
        let settings =
            Settings::load(Some(&fixture(name)), &Environment::new()).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(settings.channels.websocket.port, 18800, "{name}");
        assert_eq!(settings.channels.websocket.path, "/ws", "{name}");
    }
    // The dynamic-agents example owns the default agents file beside the gateway's config.
    let path = fixture("seed-dynamic-agents.json");
    let settings = Settings::load(Some(&path), &environment(&[("HOME", "/home/claw")])).unwrap();
    let dynamic = &settings.channels.websocket.dynamic_agent_creation;
    assert!(dynamic.enabled);
    assert_eq!(dynamic.max_agents, 100);
    assert_eq!(dynamic.agent_dir_template, "~/.openclaw/agents/{agentId}/agent");
    assert_eq!(settings.agent.openclaw_config_path, "/home/claw/.openclaw/clawsocket-agents.json");
    let home = environment(&[("HOME", "/home/claw"), ("CLAWSOCKET__AGENT__OPENCLAWCONFIGPATH", "~/gw/agents.json")]);
    let settings = Settings::load(None, &home).unwrap();
    assert_eq!(settings.agent.openclaw_config_path, "/home/claw/gw/agents.json");
}

#[test]
fn toml_files_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawsocket.toml");
    std::fs::write(&path, "[channels.websocket]\nport = 9000\nstreamMode = \"cumulative\"\n").unwrap();
    let settings = Settings::load(Some(&path), &Environment::new()).unwrap();
    assert_eq!(settings.channels.websocket.port, 9000);
    assert_eq!(settings.channels.websocket.stream_mode, StreamMode::Cumulative);
}

#[test]
fn the_original_plugins_env_vars_override_the_file() {
    let path = fixture("seed-auth.json");
    let settings = Settings::load(
        Some(&path),
        &environment(&[("WS_AUTH_ENABLED", "0"), ("WS_AUTH_ENDPOINT", "http://auth:3000/api/auth/verify")]),
    )
    .unwrap();
    assert!(!settings.channels.websocket.auth.enabled);
    assert_eq!(settings.channels.websocket.auth.endpoint, "http://auth:3000/api/auth/verify");
    for truthy in ["true", "TRUE", "1"] {
        let settings = Settings::load(None, &environment(&[("WS_AUTH_ENABLED", truthy)])).unwrap();
        assert!(settings.channels.websocket.auth.enabled);
    }
    let error = load_error(None, &[("WS_AUTH_ENABLED", "yes please")]);
    assert!(error.contains("WS_AUTH_ENABLED"), "{error}");
}

#[test]
fn generic_env_overrides_find_camel_case_keys() {
    let settings = Settings::load(
        None,
        &environment(&[
            ("CLAWSOCKET__LIMITS__MAXMESSAGEBYTES", "2048"),
            ("CLAWSOCKET__channels__WebSocket__STREAMMODE", "cumulative"),
            ("CLAWSOCKET__CHANNELS__WEBSOCKET__ALLOWFROM", "alice, bob"),
            ("CLAWSOCKET__LIMITS__HEARTBEAT__INTERVALMS", "1000"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.limits.max_message_bytes, 2048);
    assert_eq!(settings.channels.websocket.stream_mode, StreamMode::Cumulative);
    assert_eq!(settings.channels.websocket.allow_from, ["alice", "bob"]);
    assert_eq!(settings.limits.heartbeat.interval_ms, 1000);
}

#[test]
fn backend_credentials_fall_back_to_their_customary_variables() {
    let settings = Settings::load(
        None,
        &environment(&[("OPENCLAW_GATEWAY_TOKEN", "gateway-secret"), ("OPENAI_API_KEY", "sk-test")]),
    )
    .unwrap();
    assert_eq!(settings.agent.token, "gateway-secret");
    assert_eq!(settings.agent.api_key, "sk-test");
    let settings = Settings::load(
        None,
        &environment(&[("CLAWSOCKET__AGENT__TOKEN", "from-config"), ("OPENCLAW_GATEWAY_TOKEN", "ignored")]),
    )
    .unwrap();
    assert_eq!(settings.agent.token, "from-config");
}

#[test]
fn bad_values_fail_naming_the_key() {
    let cases: [(&str, &str, &str); 10] = [
        ("WS_AUTH_ENDPOINT", "localhost:3000/verify", "channels.websocket.auth.endpoint"),
        ("WS_AUTH_ENDPOINT", "", "channels.websocket.auth.endpoint"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__AUTH__TIMEOUT", "0", "channels.websocket.auth.timeout"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__PORT", "many", "port"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__STREAMMODE", "sometimes", "streamMode"),
        ("CLAWSOCKET__AGENT__KIND", "skynet", "kind"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__DMPOLICY", "pairing", "dmPolicy"),
        ("CLAWSOCKET__LIMITS__OUTBOUNDQUEUE", "0", "limits.outboundQueue"),
        ("CLAWSOCKET__NO__SUCH__KEY", "1", "CLAWSOCKET__NO__SUCH__KEY"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__ALLOWEDORIGINS", "example.com", "channels.websocket.allowedOrigins"),
    ];
    for (variable, value, named) in cases {
        let error = load_error(None, &[(variable, value)]);
        assert!(error.contains(named), "{variable}={value}: error should name {named}: {error}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"channels":{"websocket":{"auth":{"timeout":"soon"}}}}"#).unwrap();
    let error = load_error(Some(&path), &[]);
    assert!(error.contains("channels.websocket.auth.timeout"), "{error}");
}

#[test]
fn unknown_keys_are_ignored_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openclaw.json");
    std::fs::write(&path, r#"{"channels":{"telegram":{"token":"x"},"websocket":{"port":18801}},"gateway":{"port":1}}"#)
        .unwrap();
    let settings = Settings::load(Some(&path), &Environment::new()).unwrap();
    assert_eq!(settings.channels.websocket.port, 18801);
}

#[test]
fn a_missing_config_file_is_an_error() {
    let error = load_error(Some(Path::new("/nonexistent/clawsocket.toml")), &[]);
    assert!(error.contains("clawsocket.toml"), "{error}");
}

/// Every `(dotted key, TOML literal)` of settings/default.toml, in file order.
fn default_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in DEFAULTS_TOML.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            keys.push((format!("{section}.{}", key.trim()), value.trim().to_string()));
        }
    }
    keys
}

#[test]
fn the_readme_lists_every_key_with_its_default() {
    let readme = include_str!("../README.md");
    let keys = default_keys();
    assert!(keys.len() > 30, "the defaults file was read: {keys:?}");
    for (key, value) in keys {
        let row = format!("| `{key}` | `{value}` |");
        assert!(readme.contains(&row), "README.md's configuration table lacks or disagrees on: {row}");
    }
}

#[test]
fn every_key_in_the_defaults_file_can_be_set_from_the_environment() {
    let known =
        known_keys(&Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml)).build().unwrap());
    assert_eq!(known.len(), default_keys().len());
}
