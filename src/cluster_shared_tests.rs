use super::*;

#[test]
fn keys_carry_their_id_as_the_hash_tag() {
    assert_eq!(answer_key("ab12"), "cs:auth:{ab12}");
    assert_eq!(conns_key("alice"), "cs:conns:{alice}");
    assert_eq!(node_users_key("a"), "cs:node-users:{a}");
    assert_eq!(alive_key("host:8080"), "cs:alive:{host:8080}");
}

#[test]
fn the_scripts_build_the_same_keys_from_the_prefixes() {
    // The Lua side writes `prefix .. id .. '}'`.
    assert_eq!(format!("{CONNS_PREFIX}alice}}"), conns_key("alice"));
    assert_eq!(format!("{NODE_USERS_PREFIX}a}}"), node_users_key("a"));
    assert_eq!(format!("{ALIVE_PREFIX}a}}"), alive_key("a"));
}

#[test]
fn sha256_hex_is_the_digest_of_the_length_prefixed_parts() {
    let empty = sha256_hex(b"", &[]);
    assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_ne!(sha256_hex(b"", &[b"ab", b"c"]), sha256_hex(b"", &[b"a", b"bc"]));
    assert_ne!(sha256_hex(b"one", &[b"x"]), sha256_hex(b"two", &[b"x"]));
    assert_eq!(sha256_hex(b"c", &[b"x", b"y"]), sha256_hex(b"c", &[b"x", b"y"]));
}

#[test]
fn an_outage_is_reported_once_when_it_begins_and_once_when_it_ends() {
    let outage = Outage::new("test");
    assert!(!outage.ends(), "no outage to end");
    assert!(outage.begins());
    assert!(!outage.begins(), "the second failure is the same outage");
    assert!(outage.ends());
    assert!(!outage.ends());
    assert!(outage.begins(), "a new outage");
}
