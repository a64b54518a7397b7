//! A careless user's config mistakes (SPEC §8): each is named, with what would be
//! right, and those that would silently change security stop the start.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::binary::ChildServer;

/// Runs the real binary with `config` (TOML; `{store}` is a temp store dir) and
/// `RUST_LOG=trace` on `port` of 127.0.0.1, expecting it to refuse to start; returns
/// everything it wrote. Fails the test if it listens instead, or runs 10 s.
async fn refused_start(config: &str, port: u16) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("clawsocket.toml");
    std::fs::write(&config_path, config.replace("{store}", &dir.path().join("store").to_string_lossy()))
        .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawsocket"))
        .arg("--config")
        .arg(&config_path)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env_clear()
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the clawsocket binary");
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().expect("wait for clawsocket") {
            let output = child.wait_with_output().expect("clawsocket output");
            let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
            assert!(!status.success(), "clawsocket exited 0 on a bad config:\n{text}");
            return text;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("clawsocket output");
    panic!("clawsocket is still running on a bad config:\n{}", String::from_utf8_lossy(&output.stderr));
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("bound address").port()
}

#[actix_rt::test]
async fn a_misspelt_auth_key_stops_the_start_naming_the_key_and_the_right_one() {
    let config = "[channels.websocket.auth]\nenable = false\n[agent]\nkind = \"echo\"\n[store]\ndir = \"{store}\"\n";
    let port = free_port();
    let output = refused_start(config, port).await;
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens");
    assert!(
        output.contains("`channels.websocket.auth.enable`")
            && output.contains("did you mean `channels.websocket.auth.enabled`?"),
        "{output}"
    );
}

#[actix_rt::test]
async fn a_near_miss_elsewhere_is_a_warning_with_did_you_mean_and_the_start_goes_on() {
    let config = concat!(
        "[channels.websocket]\nenable = true\nstream_mode = \"cumulative\"\n",
        "[channels.telegram]\ntoken = \"x\"\n",
        "[channels.websocket.auth]\nenabled = false\n[agent]\nkind = \"echo\"\n[store]\ndir = \"{store}\"\n",
    );
    let log = ChildServer::start(config, &[]).await.kill();
    let warning = |key: &str| log.lines().find(|line| line.contains("WARN") && line.contains(key)).unwrap_or("");
    assert!(warning("`channels.websocket.enable`").contains("did you mean `channels.websocket.enabled`?"), "{log}");
    assert!(
        warning("`channels.websocket.stream_mode`").contains("did you mean `channels.websocket.streamMode`?"),
        "{log}"
    );
    let far = warning("`channels.telegram`");
    assert!(far.contains("ignored") && !far.contains("did you mean"), "{log}");
}

#[actix_rt::test]
async fn an_enum_mistake_stops_the_start_listing_the_valid_values() {
    let config =
        "[channels.websocket]\nstreamMode = \"cumulativ\"\n[agent]\nkind = \"echo\"\n[store]\ndir = \"{store}\"\n";
    let output = refused_start(config, free_port()).await;
    assert!(
        output.contains("`channels.websocket.streamMode`")
            && output.contains(r#"expected one of "delta", "cumulative" (did you mean "cumulative"?)"#),
        "{output}"
    );
    assert!(!output.contains("variant constructor"), "{output}");
}

#[actix_rt::test]
async fn credentials_in_configured_urls_never_reach_the_log_even_at_trace() {
    use crate::support::WsClient;

    let config = concat!(
        "[channels.websocket.auth]\nenabled = true\nrequired = false\n",
        "endpoint = \"http://user:s3cret@127.0.0.1:9/verify\"\n",
        "[agent]\nkind = \"openai\"\nurl = \"http://bob:s3cret-too@127.0.0.1:9/v1\"\n",
        "[store]\ndir = \"{store}\"\n",
    );
    let server = ChildServer::start(config, &[]).await;
    // The auth service and the agent are both asked (and both unreachable).
    let (mut client, _) = WsClient::connect_welcomed(&server.ws_url("token=abc&senderId=u1")).await;
    let frames = client.chat("m1", "hello").await;
    assert_eq!(frames.last().map(|frame| frame["type"].clone()), Some("chat.error".into()), "{frames:?}");
    let log = server.kill();
    assert!(log.contains("TRACE"), "the log was captured at trace:\n{log}");
    assert!(log.contains("http://***@127.0.0.1:9/verify"), "the auth endpoint is named, masked:\n{log}");
    assert!(!log.contains("s3cret"), "a URL's password is in the log:\n{log}");
}

#[actix_rt::test]
async fn an_agent_url_without_a_scheme_stops_the_start_suggesting_http() {
    let config = concat!(
        "[channels.websocket.auth]\nenabled = false\n",
        "[agent]\nkind = \"openai\"\nurl = \"localhost:11434/v1\"\n[store]\ndir = \"{store}\"\n",
    );
    let output = refused_start(config, free_port()).await;
    assert!(
        output.contains("`agent.url`: must be an http:// or https:// URL")
            && output.contains(r#"did you mean "http://localhost:11434/v1"?"#),
        "{output}"
    );
}

#[actix_rt::test]
async fn a_port_in_use_names_the_address_and_how_to_choose_another() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = held.local_addr().expect("bound address").port();
    let config = "[channels.websocket.auth]\nenabled = false\n[agent]\nkind = \"echo\"\n[store]\ndir = \"{store}\"\n";
    let output = refused_start(config, port).await;
    let expected = format!(
        "could not listen on 127.0.0.1:{port}: Address already in use (another process has that port; choose another with --port or channels.websocket.port)"
    );
    assert!(output.contains(&expected), "{output}");
}

#[actix_rt::test]
async fn a_disabled_channel_serves_no_chat_page_only_health_and_metrics() {
    use crate::support::spawn_server;

    async fn status(url: String) -> u16 {
        awc::Client::new().get(url).send().await.expect("the server answers").status().as_u16()
    }
    let enabled = spawn_server(&[]);
    assert_eq!(status(enabled.http_url("/")).await, 200);
    let disabled = spawn_server(&[("channels.websocket.enabled", false.into())]);
    assert_eq!(status(disabled.http_url("/")).await, 404, "GET / with channels.websocket.enabled = false");
    assert_eq!(status(disabled.http_url("/ws")).await, 404);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(disabled.http_url(path)).await, 200, "{path}");
    }
}
