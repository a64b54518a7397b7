use std::path::PathBuf;

use super::*;

fn record(agent_id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: agent_id.into(),
        workspace: PathBuf::from("/w"),
        agent_dir: PathBuf::from("/a"),
        created: 0,
    }
}

#[test]
fn only_a_send_provisions_and_what_waits_comes_back_in_order() {
    let mut roster: AgentRoster<&str> = AgentRoster::new(AgentRegistry::default(), 0, Vec::new());
    assert!(matches!(roster.lookup("alice"), Lookup::Missing));
    assert_eq!(roster.wait("alice", "history", Wait::IfUnderWay), Err("history"), "no creation for a history read");
    assert_eq!(roster.wait("alice", "send 1", Wait::Provision { user_data: None }), Ok(()));
    assert_eq!(roster.wait("alice", "leave", Wait::IfUnderWay), Ok(()), "behind a creation under way, anything waits");
    assert_eq!(roster.wait("alice", "send 2", Wait::Provision { user_data: None }), Ok(()));
    let creation = roster.next_creation().expect("one creation");
    assert_eq!((creation.sender_id.as_str(), creation.agent_id.as_str()), ("alice", "ws-alice"));
    assert!(roster.next_creation().is_none(), "queued once");
    assert_eq!(roster.created("alice", Some(record("ws-alice"))), ["send 1", "leave", "send 2"]);
    assert!(matches!(roster.lookup("alice"), Lookup::Agent(found) if found.agent_id == "ws-alice"));
    assert!(roster.take_unconfirmed("ws-alice") && !roster.take_unconfirmed("ws-alice"));
}

#[test]
fn one_creation_runs_at_a_time() {
    let mut roster: AgentRoster<u8> = AgentRoster::new(AgentRegistry::default(), 0, Vec::new());
    roster.wait("a", 1, Wait::Provision { user_data: None }).unwrap();
    roster.wait("b", 2, Wait::Provision { user_data: None }).unwrap();
    assert_eq!(roster.next_creation().map(|c| c.sender_id), Some("a".into()));
    assert!(roster.next_creation().is_none(), "b waits for a");
    assert_eq!(roster.created("a", None), [1], "a failed creation hands back what waited");
    assert!(matches!(roster.lookup("a"), Lookup::Missing));
    assert_eq!(roster.next_creation().map(|c| c.sender_id), Some("b".into()));
}

#[test]
fn max_agents_counts_agents_being_created_and_tells_once() {
    let mut roster: AgentRoster<u8> = AgentRoster::new(AgentRegistry::default(), 1, Vec::new());
    roster.wait("a", 1, Wait::Provision { user_data: None }).unwrap();
    assert!(matches!(roster.lookup("b"), Lookup::AtLimit { first_time: true }));
    assert!(matches!(roster.lookup("b"), Lookup::AtLimit { first_time: false }));
    assert!(matches!(roster.lookup("a"), Lookup::Missing), "a's creation is under way");
}

#[test]
fn an_agent_id_being_created_is_not_given_twice() {
    let mut roster: AgentRoster<u8> = AgentRoster::new(AgentRegistry::default(), 0, Vec::new());
    let mut registry = AgentRegistry::default();
    registry.agents.insert("Bob-old".into(), record("ws-bob"));
    let mut roster_with_old: AgentRoster<u8> = AgentRoster::new(registry, 0, vec!["ws-bob".into()]);
    roster_with_old.wait("bob", 1, Wait::Provision { user_data: None }).unwrap();
    let creation = roster_with_old.next_creation().unwrap();
    assert!(creation.agent_id.starts_with("ws-bob_"), "ws-bob is taken: {}", creation.agent_id);
    assert!(roster_with_old.take_unconfirmed("ws-bob"), "written back at start: confirmed before its first turn");
    roster.wait("x", 1, Wait::Provision { user_data: None }).unwrap();
    assert_eq!(roster.next_creation().unwrap().agent_id, "ws-x");
}

#[test]
fn in_a_cluster_a_lookup_queued_becomes_a_creation_when_a_send_comes() {
    let mut roster: AgentRoster<&str> = AgentRoster::new(AgentRegistry::default(), 0, Vec::new());
    assert_eq!(roster.wait("bob", "history", Wait::Lookup), Ok(()), "the shared registry is asked");
    assert_eq!(roster.wait("bob", "send", Wait::Provision { user_data: None }), Ok(()));
    let creation = roster.next_creation().expect("one creation");
    assert!(!creation.lookup_only, "the send made it a creation");
    assert_eq!(roster.refused("bob"), ["history", "send"]);
    assert!(matches!(roster.lookup("bob"), Lookup::AtLimit { first_time: false }), "refused across the cluster");
}
