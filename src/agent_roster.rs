//! Who has which dynamic agent, who waits for one, and which creation runs next:
//! pure data, owned by the Supervisor, no I/O.
//!
//! Only a user's `chat.send` provisions an agent ([`AgentRoster::wait`] with a
//! [`Creation`] wanted); anything else a user without an agent sends waits only if a
//! creation is already under way. One creation runs at a time (one writer of the
//! agents files); what waits for it is handed back, in arrival order, when it ends.
//! `maxAgents` counts agents created and being created. An agent created by this
//! process (or written back into the gateway's file at start) is "unconfirmed" until
//! its first session starts: that session's first turn waits for the gateway to know it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::agents::{self, AgentRecord, AgentRegistry};

/// Users told (log, metric) that `maxAgents` sends them to the default agent, at most.
const MAX_TOLD: usize = 10_000;

/// What the roster says about a user.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The user's agent.
    Agent(&'a AgentRecord),
    /// `maxAgents` is reached: the default agent answers; `first_time` says whether to
    /// tell the operator (once per user).
    AtLimit { first_time: bool },
    /// The user has no agent yet.
    Missing,
}

/// How a command without its user's agent waits.
pub enum Wait {
    /// A `chat.send`: it creates the agent, with the auth service's data for its profile.
    Provision { user_data: Option<Arc<Map<String, Value>>> },
    /// Anything else: it waits only behind a creation already under way.
    IfUnderWay,
    /// Anything else, in a cluster: the user may have an agent another node created;
    /// it is looked up in the shared registry (never created).
    Lookup,
}

/// A creation to run: everything the job needs, computed here.
#[derive(Debug, Clone)]
pub struct Creation {
    pub sender_id: String,
    pub agent_id: String,
    /// The auth service's data, for `user-profile.md`.
    pub user_data: Option<Arc<Map<String, Value>>>,
    /// Only find an agent that exists (cluster mode, no `chat.send` waits for it).
    pub lookup_only: bool,
}

/// The dynamic agents and their creations; `W` is what waits for one (a command).
pub struct AgentRoster<W> {
    registry: AgentRegistry,
    /// 0 = no limit.
    max_agents: usize,
    /// Users whose agent is being (or waiting to be) created, with what waits for it.
    waiting: HashMap<String, Vec<W>>,
    queue: VecDeque<Creation>,
    creating: bool,
    unconfirmed: HashSet<String>,
    fallen_back: HashSet<String>,
    /// Users the shared registry (cluster mode) refused an agent: `maxAgents` was
    /// reached on all nodes together.
    refused: HashSet<String>,
}

impl<W> AgentRoster<W> {
    /// The roster of `registry`; the agents in `unconfirmed` (just written into the
    /// gateway's file) wait for the gateway before their first turn.
    pub fn new(registry: AgentRegistry, max_agents: usize, unconfirmed: Vec<String>) -> Self {
        AgentRoster {
            registry,
            max_agents,
            waiting: HashMap::new(),
            queue: VecDeque::new(),
            creating: false,
            unconfirmed: unconfirmed.into_iter().collect(),
            fallen_back: HashSet::new(),
            refused: HashSet::new(),
        }
    }

    /// The user's agent, or why there is none.
    pub fn lookup(&mut self, sender_id: &str) -> Lookup<'_> {
        if let Some(record) = self.registry.agents.get(sender_id) {
            return Lookup::Agent(record);
        }
        if self.waiting.contains_key(sender_id) {
            return Lookup::Missing;
        }
        if self.refused.contains(sender_id) {
            return Lookup::AtLimit { first_time: false };
        }
        let limit = self.max_agents;
        if limit > 0 && self.registry.agents.len() + self.waiting.len() >= limit {
            if self.fallen_back.len() >= MAX_TOLD {
                self.fallen_back.clear(); // told again, rather than remembered without end
            }
            return Lookup::AtLimit { first_time: self.fallen_back.insert(sender_id.to_string()) };
        }
        Lookup::Missing
    }

    /// Holds `item` for the user's agent. A `Wait::Provision` (a `chat.send`) queues a
    /// creation if none is under way; a `Wait::IfUnderWay` waits only behind one, else
    /// it is handed back.
    pub fn wait(&mut self, sender_id: &str, item: W, how: Wait) -> Result<(), W> {
        if let Some(waiting) = self.waiting.get_mut(sender_id) {
            waiting.push(item);
            if let Wait::Provision { user_data } = how {
                // A queued lookup becomes a creation (one that runs already cannot).
                if let Some(queued) = self.queue.iter_mut().find(|queued| queued.sender_id == sender_id) {
                    queued.lookup_only = false;
                    queued.user_data = user_data;
                }
            }
            return Ok(());
        }
        let (user_data, lookup_only) = match how {
            Wait::Provision { user_data } => (user_data, false),
            Wait::Lookup => (None, true),
            Wait::IfUnderWay => return Err(item),
        };
        let agent_id = agents::agent_id_for(sender_id, |id| self.is_taken(id));
        self.waiting.insert(sender_id.to_string(), vec![item]);
        self.queue.push_back(Creation { sender_id: sender_id.to_string(), agent_id, user_data, lookup_only });
        Ok(())
    }

    /// Whether an agent of the registry, or one being created, has `agent_id`
    /// (compared ignoring case, as the OpenClaw gateway does).
    fn is_taken(&self, agent_id: &str) -> bool {
        self.registry.agents.values().any(|record| record.agent_id.eq_ignore_ascii_case(agent_id))
            || self.queue.iter().any(|creation| creation.agent_id.eq_ignore_ascii_case(agent_id))
    }

    /// The next creation to run, if none runs now.
    pub fn next_creation(&mut self) -> Option<Creation> {
        if self.creating {
            return None;
        }
        let creation = self.queue.pop_front()?;
        self.creating = true;
        Some(creation)
    }

    /// The registry file's content once `record` is added (what the creation saves).
    pub fn registry_bytes_with(&self, sender_id: &str, record: &AgentRecord) -> Vec<u8> {
        self.registry.bytes_with(sender_id, record)
    }

    /// A creation ended: with `Some(record)` the user has it; either way what waited
    /// for it is handed back, in arrival order.
    pub fn created(&mut self, sender_id: &str, record: Option<AgentRecord>) -> Vec<W> {
        self.creating = false;
        if let Some(record) = record {
            self.unconfirmed.insert(record.agent_id.clone());
            self.registry.agents.insert(sender_id.to_string(), record);
        }
        self.waiting.remove(sender_id).unwrap_or_default()
    }

    /// A creation ended with the shared registry (cluster mode) at `maxAgents`: the
    /// user keeps the default agent; what waited is handed back.
    pub fn refused(&mut self, sender_id: &str) -> Vec<W> {
        self.creating = false;
        if self.refused.len() >= MAX_TOLD {
            self.refused.clear(); // asked again, rather than remembered without end
        }
        self.refused.insert(sender_id.to_string());
        self.waiting.remove(sender_id).unwrap_or_default()
    }

    /// Whether a session of `agent_id` starting now must confirm the agent with the
    /// gateway first (it was created by this process and no session has started yet).
    pub fn take_unconfirmed(&mut self, agent_id: &str) -> bool {
        self.unconfirmed.remove(agent_id)
    }

    /// How many agents the registry holds.
    pub fn agent_count(&self) -> usize {
        self.registry.agents.len()
    }
}

#[cfg(test)]
#[path = "agent_roster_tests.rs"]
mod tests;
