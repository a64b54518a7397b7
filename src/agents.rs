//! Dynamic agents: one agent per direct-message user, created on demand.
//!
//! A user's agent id is `ws-{senderId}` with the sender id made path-safe (only
//! `[A-Za-z0-9_-]`; anything else replaced and a hash of the original appended, so no
//! id reaches outside its template's root and two ids never share an agent). Its
//! workspace and agent dir come from the templates; `user-profile.md` is written from
//! the auth data. The [`AgentRegistry`] (owned by the Supervisor, persisted as
//! `{store.dir}/agents.json`) remembers every binding so `maxAgents` holds across
//! restarts. For the OpenClaw gateway the agent must also be in the agents file the
//! gateway `$include`s; [`write_openclaw_agents`] rewrites it keeping every entry.
//! Everything here that touches the disk blocks: the Supervisor runs it off-thread.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{self, StoreError};

/// Longest readable part kept of an id before its hash.
const MAX_SAFE_PREFIX: usize = 48;

/// `id` with only `[A-Za-z0-9_-]`; when anything had to change, a hash of the
/// original is appended so that different ids stay different.
pub fn path_safe(id: &str) -> String {
    let cleaned: String =
        id.chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() || character == '_' || character == '-' {
                    character
                } else {
                    '_'
                }
            })
            .take(MAX_SAFE_PREFIX)
            .collect();
    if cleaned == id && !id.is_empty() {
        return cleaned;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("{cleaned}-{hash}")
}

/// The agent id a direct-message user gets.
pub fn agent_id_for(sender_id: &str) -> String {
    format!("ws-{}", path_safe(sender_id))
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

    /// Writes the registry atomically.
    pub fn save(&self, store_dir: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        store::write_atomically(&Self::path(store_dir), &bytes)
    }
}

/// Expands a path template: `{userId}`, `{agentId}` and a leading `~`.
pub fn expand_template(template: &str, user_id: &str, agent_id: &str, home: &Path) -> PathBuf {
    let expanded = template.replace("{userId}", &path_safe(user_id)).replace("{agentId}", agent_id);
    match expanded.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if expanded == "~" => home.to_path_buf(),
        None => PathBuf::from(expanded),
    }
}

/// What creating one agent needs.
pub struct NewAgent<'a> {
    pub sender_id: &'a str,
    pub workspace_template: &'a str,
    pub agent_dir_template: &'a str,
    pub home: &'a Path,
    /// The auth service's data, when the user is authenticated.
    pub user_data: Option<&'a Map<String, Value>>,
    pub now_ms: u64,
}

/// Creates the agent's directories and profile; returns its record.
pub fn create_agent(new: &NewAgent<'_>) -> Result<AgentRecord, StoreError> {
    let agent_id = agent_id_for(new.sender_id);
    let workspace = expand_template(new.workspace_template, new.sender_id, &agent_id, new.home);
    let agent_dir = expand_template(new.agent_dir_template, new.sender_id, &agent_id, new.home);
    for directory in [&workspace, &agent_dir] {
        fs::create_dir_all(directory).map_err(|source| StoreError::Io { path: directory.clone(), source })?;
    }
    if let Some(data) = new.user_data {
        store::write_atomically(&agent_dir.join("user-profile.md"), user_profile(new.sender_id, data).as_bytes())?;
    }
    Ok(AgentRecord { agent_id, workspace, agent_dir, created: new.now_ms })
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

/// Rewrites the OpenClaw agents file so it names every agent of `registry`, keeping
/// every entry already there (the older `{"list": [...]}` shape is read, with a
/// warning, and written back in the current `{"entries": {...}}` shape).
pub fn write_openclaw_agents(path: &Path, registry: &AgentRegistry) -> Result<(), StoreError> {
    let mut entries = match store::read_json::<Value>(path)? {
        Some(existing) => existing_entries(path, existing),
        None => Map::new(),
    };
    for record in registry.agents.values() {
        let entry = entries.entry(record.agent_id.clone()).or_insert_with(|| json!({}));
        if let Value::Object(fields) = entry {
            fields.insert("workspace".into(), json!(record.workspace));
        }
    }
    let bytes = serde_json::to_vec_pretty(&json!({ "entries": entries })).unwrap_or_default();
    store::write_atomically(path, &bytes)
}

fn existing_entries(path: &Path, existing: Value) -> Map<String, Value> {
    if let Some(Value::Object(entries)) = existing.get("entries") {
        return entries.clone();
    }
    if let Some(Value::Array(list)) = existing.get("list") {
        log::warn!("{}: the older {{\"list\": [...]}} shape; rewriting it as {{\"entries\": {{...}}}}", path.display());
        return list
            .iter()
            .filter_map(|item| {
                let id = item.get("id")?.as_str()?.to_string();
                let mut fields = item.as_object()?.clone();
                fields.remove("id");
                Some((id, Value::Object(fields)))
            })
            .collect();
    }
    Map::new()
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
