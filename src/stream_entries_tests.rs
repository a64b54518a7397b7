use super::*;

fn bulk(text: &[u8]) -> Value {
    Value::BulkString(text.to_vec())
}

fn entry(id: &str, fields: &[(&[u8], &[u8])]) -> Value {
    let fields = fields.iter().flat_map(|(name, value)| [bulk(name), bulk(value)]).collect();
    Value::Array(vec![bulk(id.as_bytes()), Value::Array(fields)])
}

#[test]
fn a_bad_entry_is_skipped_and_read_past_and_the_other_streams_are_read() {
    let alice =
        Value::Array(vec![entry("1-0", &[(b"o", b"a 1"), (b"f", b"{\"x\":1}")]), entry("2-0", &[(b"\xff", b"x")])]);
    let bob = Value::Array(vec![entry("3-0", &[(b"o", b"b 2"), (b"f", b"{}"), (b"x", b"c1")])]);
    let reply = Value::Array(vec![
        Value::Array(vec![bulk(b"cs:ev:{alice}"), alice]),
        Value::Array(vec![bulk(b"cs:ev:{bob}"), bob]),
    ]);
    let reads = parse_xread(reply);
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0].last_id.as_deref(), Some("2-0"), "read on past the bad entry");
    assert_eq!(reads[0].events.len(), 1);
    assert_eq!((reads[0].events[0].lease.as_str(), &reads[0].events[0].frames[..]), ("a 1", &b"{\"x\":1}"[..]));
    assert_eq!(reads[1].events[0].except.as_deref(), Some("c1"));
}

#[test]
fn nothing_new_and_garbage_are_no_streams() {
    assert!(parse_xread(Value::Nil).is_empty());
    assert!(parse_xread(Value::Int(3)).is_empty());
    assert_eq!(parse_entries(Value::Array(vec![Value::Int(1)])).1.len(), 0);
}
