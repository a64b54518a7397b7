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
fn the_admin_token_comes_from_its_variable_and_is_never_printed() {
    let settings = Settings::load(None, &Environment::new()).unwrap();
    assert!(!settings.admin.enabled(), "no token: the /admin routes are off");
    let settings = Settings::load(None, &environment(&[("WS_ADMIN_TOKEN", "adm-secret-1234567")])).unwrap();
    assert_eq!(settings.admin.token, "adm-secret-1234567");
    assert!(settings.admin.enabled());
    assert!(!format!("{settings:?}").contains("adm-secret-1234567"), "Debug hides the token");
}

#[test]
fn per_user_and_guest_limits_default_as_documented() {
    let settings = Settings::load(None, &Environment::new()).unwrap();
    let per_user = settings.limits.per_user;
    assert_eq!(
        (per_user.max_connections, per_user.turns_per_minute, per_user.concurrent_turns, per_user.tokens_per_day),
        (20, 30, 4, 0)
    );
    let guest = settings.limits.guest;
    assert_eq!(
        (guest.max_connections, guest.turns_per_minute, guest.concurrent_turns, guest.tokens_per_day),
        (5, 10, 1, 20000)
    );
    assert_eq!(settings.store.usage_retention_days, 400);
    let error = load_error(None, &[("CLAWSOCKET__STORE__USAGERETENTIONDAYS", "0")]);
    assert!(error.contains("store.usageRetentionDays"), "{error}");
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

/// Loads `text` as a config file named `name` (its extension picks the format).
fn load_text(name: &str, text: &str, pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    Settings::load(Some(&path), &environment(pairs))
}

#[test]
fn a_misspelt_key_under_auth_limits_or_groups_stops_the_start_naming_the_right_key() {
    let cases = [
        (
            "c.toml",
            "[channels.websocket.auth]\nenable = false\n",
            "channels.websocket.auth.enable",
            "channels.websocket.auth.enabled",
        ),
        (
            "c.yaml",
            "channels:\n  websocket:\n    auth:\n      requierd: false\n",
            "channels.websocket.auth.requierd",
            "channels.websocket.auth.required",
        ),
        ("c.toml", "[limits]\nmaxConection = 5\n", "limits.maxConection", "limits.maxConnections"),
        (
            "c.json",
            r#"{"limits":{"heartbeat":{"timeout":100}}}"#,
            "limits.heartbeat.timeout",
            "limits.heartbeat.timeoutMs",
        ),
        (
            "c.json",
            r#"{"limits":{"messages_per_minute":100000}}"#,
            "limits.messages_per_minute",
            "limits.messagesPerMinute",
        ),
        (
            "c.toml",
            "[channels.websocket.Auth]\nenabled = false\n",
            "channels.websocket.Auth",
            "channels.websocket.auth",
        ),
        ("c.toml", "[limit]\nmaxConnections = 5\n", "`limit`", "`limits`"),
        (
            "c.toml",
            "[limits.guest]\nturnsPerMinite = 100\n",
            "limits.guest.turnsPerMinite",
            "limits.guest.turnsPerMinute",
        ),
        (
            "c.toml",
            "[limits.perUser]\ntokensPerday = 0\n",
            "limits.perUser.tokensPerday",
            "limits.perUser.tokensPerDay",
        ),
        (
            "c.toml",
            "[channels.websocket.groups]\npolicyy = \"listed\"\n",
            "channels.websocket.groups.policyy",
            "channels.websocket.groups.policy",
        ),
    ];
    for (name, text, named, suggested) in cases {
        let error = match load_text(name, text, &[]) {
            Ok(_) => panic!("{text:?} should not start"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(named), "{text:?}: should name {named}: {error}");
        assert!(
            error.contains(&format!("did you mean `{}`?", suggested.trim_matches('`'))),
            "{text:?}: should suggest {suggested}: {error}"
        );
    }
}

#[test]
fn unknown_keys_name_the_closest_known_key_and_only_near_auth_or_limits_keys_are_fatal() {
    let known = known_paths(&known_keys(
        &Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml)).build().unwrap(),
    ));
    let near = |key: &str| closest_known_key(key, &known);
    assert_eq!(near("channels.websocket.enable"), Some("channels.websocket.enabled"));
    assert_eq!(near("channels.websocket.stream_mode"), Some("channels.websocket.streamMode"));
    assert_eq!(near("channels.websocket.auth.enable"), Some("channels.websocket.auth.enabled"));
    assert_eq!(near("agent.uri"), Some("agent.url"));
    for far in [
        "channels.telegram",
        "gateway",
        "auth",
        "session",
        "tools",
        "models",
        "channels.websocket.auth.secretSauce",
        "limits.flavour",
    ] {
        assert_eq!(near(far), None, "{far}");
    }
    assert!(is_security_key("channels.websocket.auth.enabled") && is_security_key("limits.heartbeat.timeoutMs"));
    assert!(is_security_key("channels.websocket.auth") && is_security_key("limits"));
    assert!(!is_security_key("channels.websocket.enabled") && !is_security_key("channels.websocket.authors"));
    // Far from every key, under auth too: a warning, the start goes on.
    let settings =
        load_text("c.toml", "[channels.websocket.auth]\nsecretSauce = 1\n[gateway]\nport = 1\n", &[]).unwrap();
    assert!(settings.channels.websocket.auth.enabled);
    // Near a key elsewhere: a warning too.
    let settings = load_text("c.toml", "[channels.websocket]\nenable = false\n", &[]).unwrap();
    assert!(settings.channels.websocket.enabled);
}

#[test]
fn an_unknown_environment_key_names_the_variable_it_probably_meant() {
    let error = load_error(None, &[("CLAWSOCKET__CHANNELS__WEBSOCKET__AUTH__ENABLE", "false")]);
    assert!(error.contains("did you mean CLAWSOCKET__CHANNELS__WEBSOCKET__AUTH__ENABLED?"), "{error}");
    // Only keys that take a value are suggested, not sections.
    let error = load_error(None, &[("CLAWSOCKET__LIMITS__HEARTBEA", "1")]);
    assert!(!error.contains("did you mean"), "{error}");
    let error = load_error(None, &[("CLAWSOCKET__NOTHING__LIKE__IT", "1")]);
    assert!(!error.contains("did you mean"), "{error}");
}

#[test]
fn edit_distance_counts_inserts_deletes_substitutions_and_swaps() {
    assert_eq!(edit_distance("enabled", "enabled"), 0);
    assert_eq!(edit_distance("enable", "enabled"), 1);
    assert_eq!(edit_distance("enalbed", "enabled"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "url"), 3);
}

#[test]
fn an_enum_error_names_the_key_and_lists_the_valid_values() {
    let cases = [
        (
            "[channels.websocket]\nstreamMode = \"cumulativ\"\n",
            "channels.websocket.streamMode",
            r#""delta", "cumulative""#,
            Some("cumulative"),
        ),
        (
            "[channels.websocket]\nstreamMode = \"Delta\"\n",
            "channels.websocket.streamMode",
            r#""delta", "cumulative""#,
            Some("delta"),
        ),
        (
            "[channels.websocket]\ndmPolicy = \"everyone\"\n",
            "channels.websocket.dmPolicy",
            r#""open", "allowlist""#,
            None,
        ),
        (
            "[channels.websocket.groups]\npolicy = \"porxy\"\n",
            "channels.websocket.groups.policy",
            r#""open", "listed", "proxy""#,
            Some("proxy"),
        ),
        ("[agent]\nkind = 1\n", "agent.kind", r#""openclaw", "openai", "echo""#, None),
    ];
    for (text, key, values, suggestion) in cases {
        let error = match load_text("c.toml", text, &[]) {
            Ok(_) => panic!("{text:?} should not load"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(&format!("`{key}`")), "{text:?}: should name {key}: {error}");
        assert!(error.contains(&format!("expected one of {values}")), "{text:?}: should list {values}: {error}");
        if let Some(value) = suggestion {
            assert!(error.contains(&format!("did you mean \"{value}\"?")), "{text:?}: should suggest {value}: {error}");
        }
    }
    let error = load_error(None, &[("CLAWSOCKET__AGENT__KIND", "opnai")]);
    assert!(error.contains("`agent.kind`") && error.contains(r#"did you mean "openai"?"#), "{error}");
}

#[test]
fn every_enum_key_of_the_settings_is_found() {
    let (keys, walked) = enum_keys::<Settings>();
    walked.expect("the walk gets through all of Settings");
    let keys: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    for key in [
        "channels.websocket.streamMode",
        "channels.websocket.dmPolicy",
        "channels.websocket.groups.policy",
        "agent.kind",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
}

#[test]
fn every_url_key_is_checked_at_start_saying_what_would_be_right() {
    let cases = [
        ("[agent]\nkind = \"openai\"\nurl = \"localhost:11434/v1\"\n", "agent.url", Some("http://localhost:11434/v1")),
        ("[agent]\nurl = \"127.0.0.1:18789\"\n", "agent.url", Some("http://127.0.0.1:18789")),
        ("[agent]\nurl = \" http://127.0.0.1:18789\"\n", "agent.url", Some("http://127.0.0.1:18789")),
        ("[agent]\nkind = \"openai\"\nurl = \"\"\n", "agent.url", None),
        ("[agent]\nurl = \"ftp://127.0.0.1:18789\"\n", "agent.url", None),
        (
            "[channels.websocket.auth]\nendpoint = \"localhost:3000/api/auth/verify\"\n",
            "channels.websocket.auth.endpoint",
            Some("http://localhost:3000/api/auth/verify"),
        ),
        (
            "[channels.websocket.groups]\npolicy = \"proxy\"\nendpoint = \"groups.internal:8080/check\"\n",
            "channels.websocket.groups.endpoint",
            Some("http://groups.internal:8080/check"),
        ),
    ];
    for (text, key, suggestion) in cases {
        let error = match load_text("c.toml", text, &[]) {
            Ok(_) => panic!("{text:?} should not load"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(&format!("`{key}`: must be an http:// or https:// URL")), "{text:?}: {error}");
        match suggestion {
            Some(url) => assert!(error.contains(&format!("did you mean \"{url}\"?")), "{text:?}: {error}"),
            None => assert!(!error.contains("did you mean"), "{text:?}: {error}"),
        }
    }
    // The echo agent has no URL to check; off, auth and groups have none either.
    let off = "[agent]\nkind = \"echo\"\nurl = \"\"\n[channels.websocket.auth]\nenabled = false\nendpoint = \"x\"\n";
    load_text("c.toml", off, &[]).unwrap();
    // A password in a wrong URL is not shown in the error.
    let error = load_text("c.toml", "[agent]\nurl = \"bob:s3cret@localhost:18789\"\n", &[]).err().unwrap().to_string();
    assert!(error.contains("did you mean \"http://***@localhost:18789\"?") && !error.contains("s3cret"), "{error}");
}

#[test]
fn a_home_path_without_home_is_named_not_written_under_root() {
    let dynamic = [("CLAWSOCKET__CHANNELS__WEBSOCKET__DYNAMICAGENTCREATION__ENABLED", "true")];
    let refused = load_error(None, &dynamic);
    assert!(refused.contains("workspaceTemplate") && refused.contains("HOME is not set"), "{refused}");
    let absolute = [
        dynamic[0],
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__DYNAMICAGENTCREATION__WORKSPACETEMPLATE", "/srv/ws/{agentId}"),
        ("CLAWSOCKET__CHANNELS__WEBSOCKET__DYNAMICAGENTCREATION__AGENTDIRTEMPLATE", "/srv/agents/{agentId}"),
        ("CLAWSOCKET__AGENT__OPENCLAWCONFIGPATH", "/srv/gateway/clawsocket-agents.json"),
    ];
    assert!(Settings::load(None, &environment(&absolute)).is_ok(), "absolute paths need no HOME");
    assert!(Settings::load(None, &Environment::new()).is_ok(), "without dynamic agents HOME is not needed");
}
