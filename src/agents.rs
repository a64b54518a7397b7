//! Dynamic agents: one agent per direct-message user, created on demand.
//!
//! A user's agent id is `ws-{user_slug(senderId)}` ([`user_slug`]: lowercase
//! `[a-z0-9-]` kept, anything else cleaned and hashed), so no id reaches outside its
//! template's root and two users never share an agent, a workspace or a profile, in
//! ClawSocket or in the gateway (which lowercases ids). Its workspace and agent dir
//! come from the templates; `user-profile.md` is written from the auth data. The
//! [`AgentRegistry`] (owned by the Supervisor, persisted as `{store.dir}/agents.json`)
//! remembers every binding, so `maxAgents` holds across restarts and an id given
//! under an older scheme keeps working. For the OpenClaw gateway the agent must also be
//! in the agents file the gateway `$include`s (`openclaw_agents.rs`). Everything here
//! that touches the disk blocks: the Supervisor runs it off-thread.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::DynamicAgentSettings;
use crate::store::{self, StoreError};

/// Longest user id kept as it is in an agent id (`ws-` + 48 fits OpenClaw's 64).
const MAX_PLAIN_ID: usize = 48;
/// Longest readable part kept of an id that had to change, before its hash.
const MAX_CLEANED_PREFIX: usize = 40;
/// Separates a changed id from its hash. Ids kept as they are never contain it, so an
/// unchanged id can never have the form of a hashed one (SPEC §5).
const HASH_SEPARATOR: char = '_';

/// A user id as it appears in agent ids and `{userId}` paths: kept when it is already
/// lowercase `[a-z0-9-]` (starting with a letter or digit, at most 48 bytes); anything
/// else is lowercased, cleaned to `[a-z0-9-]`, cut to 40 bytes and given `_` and 16 hex
/// digits of the original's SHA-256. The OpenClaw gateway lowercases agent ids, so
/// `Bob` and `bob` must not both become `bob`.
pub fn user_slug(id: &str) -> String {
    let plain = id.len() <= MAX_PLAIN_ID
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if plain {
        return id.to_string();
    }
    hashed_slug(id)
}

fn hashed_slug(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(MAX_CLEANED_PREFIX)
        .collect();
    format!("{cleaned}{HASH_SEPARATOR}{}", store::short_hash(id))
}

/// The agent id a new direct-message user gets: `ws-{user_slug}`, or the hashed form
/// when `taken` says an agent of another user already has the plain one (a registry
/// written before this scheme may hold such ids; OpenClaw compares them lowercased).
pub fn agent_id_for(sender_id: &str, taken: impl Fn(&str) -> bool) -> String {
    let agent_id = format!("ws-{}", user_slug(sender_id));
    if taken(&agent_id) {
        return hashed_agent_id(sender_id);
    }
    agent_id
}

/// The hashed form of a user's agent id, which no other user's id can take.
pub fn hashed_agent_id(sender_id: &str) -> String {
    format!("ws-{}", hashed_slug(sender_id))
}

/// One dynamic agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub agent_id: String,
    pub workspace: PathBuf,
    pub agent_dir: PathBuf,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
}

/// Every dynamic agent, by the sender id it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRegistry {
    pub agents: BTreeMap<String, AgentRecord>,
}

impl AgentRegistry {
    /// The registry file: `{store.dir}/agents.json`.
    pub fn path(store_dir: &Path) -> PathBuf {
        store_dir.join("agents.json")
    }

    /// Loads the registry (empty when the file does not exist yet).
    pub fn load(store_dir: &Path) -> Result<AgentRegistry, StoreError> {
        Ok(store::read_json(&Self::path(store_dir))?.unwrap_or_default())
    }

    /// The registry's file content with `record` added for `sender_id` (the registry
    /// itself is not copied).
    pub fn bytes_with(&self, sender_id: &str, record: &AgentRecord) -> Vec<u8> {
        #[derive(Serialize)]
        struct Registry<'a> {
            agents: BTreeMap<&'a str, &'a AgentRecord>,
        }
        let mut agents: BTreeMap<&str, &AgentRecord> =
            self.agents.iter().map(|(sender, record)| (sender.as_str(), record)).collect();
        agents.insert(sender_id, record);
        serde_json::to_vec_pretty(&Registry { agents }).unwrap_or_default()
    }
}

/// Expands a path template: `{userId}`, `{agentId}` and a leading `~`.
pub fn expand_template(template: &str, user_id: &str, agent_id: &str, home: &Path) -> PathBuf {
    let expanded = template.replace("{userId}", &user_slug(user_id)).replace("{agentId}", agent_id);
    match expanded.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if expanded == "~" => home.to_path_buf(),
        None => PathBuf::from(expanded),
    }
}

/// Where a new user's agent will live: its record, from the templates (no I/O).
pub fn plan_agent(
    sender_id: &str,
    agent_id: String,
    templates: &DynamicAgentSettings,
    home: &Path,
    now_ms: u64,
) -> AgentRecord {
    let workspace = expand_template(&templates.workspace_template, sender_id, &agent_id, home);
    let agent_dir = expand_template(&templates.agent_dir_template, sender_id, &agent_id, home);
    AgentRecord { agent_id, workspace, agent_dir, created: now_ms }
}

/// Creates a planned agent's directories and, with the auth service's data, its
/// `user-profile.md`.
pub fn create_agent_files(
    record: &AgentRecord,
    sender_id: &str,
    user_data: Option<&Map<String, Value>>,
) -> Result<(), StoreError> {
    for directory in [&record.workspace, &record.agent_dir] {
        fs::create_dir_all(directory).map_err(|source| StoreError::Io { path: directory.clone(), source })?;
    }
    if let Some(data) = user_data {
        let profile = user_profile(sender_id, data);
        store::write_atomically(&record.agent_dir.join("user-profile.md"), profile.as_bytes())?;
    }
    Ok(())
}

/// `user-profile.md`: who this agent works for, from the auth service's data.
fn user_profile(sender_id: &str, data: &Map<String, Value>) -> String {
    let mut profile = String::from("# User profile\n\n");
    profile.push_str(&format!("- userId: {sender_id}\n"));
    for (key, value) in data {
        if key == "userId" {
            continue;
        }
        let shown = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        profile.push_str(&format!("- {key}: {shown}\n"));
    }
    profile
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
