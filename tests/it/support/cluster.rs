//! Nodes of one cluster for the tests that need several (SPEC §14): in-process nodes,
//! or the binary where a node must die by SIGKILL, each started on a real Redis and
//! waited for until `/readyz` says it reached it.

use clawsocket::config::SettingValue;

use super::binary::{openai_config, ChildServer};
use super::eventually;
use super::fake_agent::FakeAgent;
use super::redis::RedisServer;
use super::server::{spawn_server, TestServer};

/// An in-process node `id` on `redis` with a 1 s lease, then `extra` settings.
pub fn node(redis: &RedisServer, id: &str, extra: &[(&str, SettingValue)]) -> TestServer {
    node_on(&redis.url(), id, extra)
}

/// As `node`, on the Redis at `url` (a proxy in front of it, say).
pub fn node_on(url: &str, id: &str, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("cluster.redis.url", url.into()), ("cluster.nodeId", id.into()), ("cluster.leaseMs", 1000.into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

/// Starts `ids` as in-process nodes (each with `extra`) and waits until each is ready.
pub async fn ready_nodes(redis: &RedisServer, ids: &[&str], extra: &[(&str, SettingValue)]) -> Vec<TestServer> {
    let nodes: Vec<TestServer> = ids.iter().map(|id| node(redis, id, extra)).collect();
    for node in &nodes {
        wait_for_readyz(&node.http_url("/readyz"), 200).await;
    }
    nodes
}

/// The `[cluster]` sections of a child node `id` on `redis`, with a 1 s lease.
pub fn cluster_toml(redis: &RedisServer, id: &str) -> String {
    format!("[cluster]\nnodeId = \"{id}\"\nleaseMs = 1000\n[cluster.redis]\nurl = \"{}\"\n", redis.url())
}

/// Starts the binary with `config` (which holds its `cluster_toml`) and waits until
/// it is ready.
pub async fn ready_child(config: &str) -> ChildServer {
    let node = ChildServer::start(config, &[]).await;
    wait_for_readyz(&format!("http://{}/readyz", node.addr), 200).await;
    node
}

/// A ready child node `id` on `redis` with a 1 s lease, answering with `agent` (the
/// `[agent]` section's extra `agent_lines`, e.g. `maxHistory = 1`).
pub async fn openai_child(redis: &RedisServer, id: &str, agent: &FakeAgent, agent_lines: &str) -> ChildServer {
    ready_child(&openai_config(&agent.url_v1(), agent_lines, &cluster_toml(redis, id))).await
}

/// Waits until `GET url` answers `status`.
pub async fn wait_for_readyz(url: &str, status: u16) {
    let what = format!("{url} answers {status}");
    eventually(&what, || readyz_is(url.to_string(), status)).await;
}

/// Whether `GET url` answers `status` now.
pub async fn readyz_is(url: String, status: u16) -> bool {
    let answer = awc::Client::new().get(url).send().await;
    answer.is_ok_and(|answer| answer.status().as_u16() == status)
}
