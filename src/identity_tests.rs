use super::*;

fn authenticated(sender_id: &str) -> Identity {
    Identity {
        sender_id: sender_id.into(),
        sender_name: "Real".into(),
        authenticated: true,
        guest: false,
        auth_data: None,
        token: None,
    }
}

#[test]
fn a_message_overrides_the_identity_only_when_unauthenticated() {
    let connection = ConnectionId::new();
    let anonymous = Identity::anonymous(&connection, Some("user1"), Some("John"));
    let acting = anonymous.for_message(Some("user_123"), Some("Alice"));
    assert_eq!((acting.sender_id.as_str(), acting.sender_name.as_str()), ("user_123", "Alice"));
    let acting = authenticated("alice").for_message(Some("bob"), Some("Bob"));
    assert_eq!((acting.sender_id.as_str(), acting.sender_name.as_str()), ("alice", "Real"));
}

#[test]
fn a_guest_lives_under_guest_whatever_it_claims() {
    let connection = ConnectionId::new();
    let guest = Identity::guest(&connection, Some("alice"), None);
    assert_eq!((guest.sender_id.as_str(), guest.sender_name.as_str()), ("guest:alice", "alice"));
    assert_eq!(guest.for_message(Some("bob"), None).sender_id, "guest:bob");
    let key = SessionTarget { chat: Chat::Direct(guest.sender_id.clone()), thread_id: None }.key("main");
    assert_eq!(key.as_str(), "agent:main:websocket:direct:guest:alice");
    let user = SessionTarget { chat: Chat::Direct("alice".into()), thread_id: None }.key("main");
    assert_ne!(key, user);
    let nameless = Identity::guest(&connection, None, None);
    assert_eq!(nameless.sender_id, format!("guest:{connection}"));
}

#[test]
fn the_connection_id_is_the_identity_of_last_resort() {
    let connection = ConnectionId::new();
    let identity = Identity::anonymous(&connection, None, None);
    assert_eq!(identity.sender_id, connection.as_str());
    assert_eq!(identity.sender_name, connection.as_str());
}

#[test]
fn session_keys_follow_the_spec_and_cannot_collide() {
    let direct = SessionTarget { chat: Chat::Direct("user1".into()), thread_id: None };
    assert_eq!(direct.key("main").as_str(), "agent:main:websocket:direct:user1");
    let group = SessionTarget { chat: Chat::Group("dev-team".into()), thread_id: Some("t1".into()) };
    assert_eq!(group.key("main").as_str(), "agent:main:websocket:group:dev-team:thread:t1");
    let forged = SessionTarget { chat: Chat::Group("dev-team:thread:t1".into()), thread_id: None };
    assert_ne!(forged.key("main"), group.key("main"));
    let percent = SessionTarget { chat: Chat::Group("a%3Ab".into()), thread_id: None };
    let colon = SessionTarget { chat: Chat::Group("a:b".into()), thread_id: None };
    assert_ne!(percent.key("main"), colon.key("main"));
}
