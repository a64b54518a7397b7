//! The agents file the OpenClaw gateway `$include`s (`agent.openclawConfigPath`).
//!
//! ClawSocket owns it alone: the gateway's `openclaw.json` pulls it in with
//! `agents: { $include: "./clawsocket-agents.json", … }` and hot-applies every change.
//! It is read as JSON5, as the gateway reads it (a user may have added comments), and
//! written back in the shape it had: `{"entries": {"ws-alice": {…}}}` (the gateway's
//! current shape, also for a new file) or `{"list": [{"id": "ws-alice", …}]}` (gateways
//! before `entries`, which refuse the other shape). Every entry already there is kept,
//! with its fields; other top-level keys are kept too. Comments are not: the rewrite is
//! plain JSON, and the log says so once per rewrite of a file that had JSON5 syntax.
//! The gateway lowercases agent ids, so presence is checked ignoring case.
//! Writes are atomic (temp file and rename). Every function here blocks.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::agents::{AgentRecord, AgentRegistry};
use crate::config::{AgentKind, Settings};
use crate::store::{self, StoreError};

/// The most of the file read (a file cut there fails to parse and is left alone).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The two shapes of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Entries,
    List,
}

/// Makes the file name every agent of `records` (adding only the missing ones and
/// keeping everything else); returns the ids it had to add. The file is not written
/// when nothing is missing.
pub fn ensure_agents<'a>(
    path: &Path,
    records: impl IntoIterator<Item = &'a AgentRecord>,
) -> Result<Vec<String>, StoreError> {
    let (mut document, plain_json) = read(path)?;
    let shape = shape_of(&document);
    let mut added = Vec::new();
    for record in records {
        if !names(&document, shape, &record.agent_id) {
            add(&mut document, shape, record);
            added.push(record.agent_id.clone());
        }
    }
    if added.is_empty() {
        return Ok(added);
    }
    if !plain_json {
        log::warn!("{}: rewritten as plain JSON; its comments and JSON5 syntax are not kept", path.display());
    }
    let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
    store::write_atomically(path, &bytes)?;
    Ok(added)
}

/// Whether the file already names `agent_id` (ignoring case): an entry of the
/// operator's own, for instance, which a new user's agent must not take over.
pub fn names_agent(path: &Path, agent_id: &str) -> Result<bool, StoreError> {
    let (document, _) = read(path)?;
    Ok(names(&document, shape_of(&document), agent_id))
}

/// The file's document (an empty `entries` one when it does not exist) and whether it
/// was plain JSON.
fn read(path: &Path) -> Result<(Map<String, Value>, bool), StoreError> {
    let Some(text) = store::read_optional_text(path, MAX_FILE_BYTES)? else {
        return Ok((Map::from_iter([("entries".to_string(), json!({}))]), true));
    };
    if text.trim().is_empty() {
        return Ok((Map::from_iter([("entries".to_string(), json!({}))]), true));
    }
    let plain_json = serde_json::from_str::<Value>(&text).is_ok();
    let parsed: Value = json5::from_str(&text).map_err(|error| StoreError::Parse {
        path: path.into(),
        detail: format!("not JSON5 (the gateway could not read it either): {error}"),
    })?;
    match parsed {
        Value::Object(document) if document.get("entries").is_none_or(Value::is_object) => Ok((document, plain_json)),
        Value::Object(_) => Err(StoreError::Parse { path: path.into(), detail: "`entries` is not an object".into() }),
        _ => Err(StoreError::Parse { path: path.into(), detail: "not a JSON object".into() }),
    }
}

fn shape_of(document: &Map<String, Value>) -> Shape {
    match (document.get("entries"), document.get("list")) {
        (None, Some(Value::Array(_))) => Shape::List,
        _ => Shape::Entries,
    }
}

/// Whether the document names `agent_id` (ignoring case, as the gateway does).
fn names(document: &Map<String, Value>, shape: Shape, agent_id: &str) -> bool {
    match shape {
        Shape::Entries => document
            .get("entries")
            .and_then(Value::as_object)
            .is_some_and(|entries| entries.keys().any(|id| id.eq_ignore_ascii_case(agent_id))),
        Shape::List => document.get("list").and_then(Value::as_array).is_some_and(|list| {
            list.iter()
                .any(|item| item.get("id").and_then(Value::as_str).is_some_and(|id| id.eq_ignore_ascii_case(agent_id)))
        }),
    }
}

fn add(document: &mut Map<String, Value>, shape: Shape, record: &AgentRecord) {
    let workspace = record.workspace.to_string_lossy();
    match shape {
        Shape::Entries => {
            if let Value::Object(entries) = document.entry("entries").or_insert_with(|| json!({})) {
                entries.insert(record.agent_id.clone(), json!({ "workspace": workspace }));
            }
        }
        Shape::List => {
            if let Some(Value::Array(list)) = document.get_mut("list") {
                list.push(json!({ "id": record.agent_id, "workspace": workspace }));
            }
        }
    }
}

/// Brings the gateway's agents file in line with the registry at start: an agent the
/// registry knows but the file lost (edited by hand, restored from a backup) is
/// written back, with a log line each, so its user is not refused "Unknown agent".
/// Returns the ids written back: the gateway needs a moment to apply them, so their
/// first turns wait for it as a new agent's does.
pub fn repair_at_start(settings: &Settings, registry: &AgentRegistry) -> Vec<String> {
    let path = Path::new(&settings.agent.openclaw_config_path);
    let owned =
        settings.channels.websocket.dynamic_agent_creation.enabled && settings.agent.kind == AgentKind::Openclaw;
    if !owned {
        return Vec::new();
    }
    warn_unless_included(path);
    match ensure_agents(path, registry.agents.values()) {
        Ok(added) => {
            for agent_id in &added {
                log::warn!("{}: agent {agent_id} was missing (the registry has it); written back", path.display());
            }
            added
        }
        Err(error) => {
            log::error!("the OpenClaw agents file could not be brought in line with the registry: {error}");
            Vec::new()
        }
    }
}

/// One clear warning when the gateway's `openclaw.json` beside the agents file does not
/// `$include` it: the gateway would then answer "Unknown agent" to every new user.
fn warn_unless_included(agents_file: &Path) {
    let name = agents_file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let gateway_config = agents_file.with_file_name("openclaw.json");
    let included = std::fs::read_to_string(&gateway_config)
        .is_ok_and(|text| text.lines().any(|line| line.contains("$include") && line.contains(name.as_str())));
    if !included {
        log::warn!(
            "dynamic agents: {} does not $include {}; the gateway will not know the users' agents. Add to its \"agents\" section: agents: {{ $include: \"./{name}\", ownership: \"explicit\" }} (see README, Dynamic agents)",
            gateway_config.display(),
            agents_file.display()
        );
    }
}

#[cfg(test)]
#[path = "openclaw_agents_tests.rs"]
mod tests;
