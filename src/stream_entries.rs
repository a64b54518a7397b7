//! Reading Redis stream replies (`XREAD`, `XREVRANGE`) from their raw values, so that
//! one entry that is not what ClawSocket writes (a field name that is not UTF-8, a
//! missing field) is skipped, logged, and read past: it never stops the reading of
//! the other entries, or of the other sessions' streams in the same `XREAD`.

use bytes::Bytes;
use redis::Value;

use crate::cluster::StreamEvent;

/// What one read found in one stream.
#[derive(Debug, Default)]
pub struct StreamRead {
    pub key: String,
    /// The last entry id read, readable or not: where the next read starts.
    pub last_id: Option<String>,
    /// The entries that were events, in order.
    pub events: Vec<StreamEvent>,
}

/// An `XREAD` reply: `[[key, entries], …]` (or a map of them); nil is nothing new.
pub fn parse_xread(reply: Value) -> Vec<StreamRead> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(streams) => streams.into_iter().filter_map(pair).collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(key, entries)| {
            let key = text(key)?;
            let (last_id, events) = parse_entries(entries);
            Some(StreamRead { key, last_id, events })
        })
        .collect()
}

/// An `XRANGE`/`XREVRANGE` reply, or one stream's entries of an `XREAD`: the last id
/// and the readable events, in the reply's order.
pub fn parse_entries(entries: Value) -> (Option<String>, Vec<StreamEvent>) {
    let Value::Array(entries) = entries else { return (None, Vec::new()) };
    let mut last_id = None;
    let mut events = Vec::new();
    for entry in entries {
        let Some((id, fields)) = pair(entry) else { continue };
        let Some(id) = text(id) else { continue };
        match event(&id, fields) {
            Some(event) => events.push(event),
            None => log::warn!("cluster: stream entry {id} is not an event ClawSocket wrote; skipped"),
        }
        last_id = Some(id);
    }
    (last_id, events)
}

/// An entry's fields (`f` the frames, `o` the owner's lease, `x` a connection left out).
fn event(id: &str, fields: Value) -> Option<StreamEvent> {
    let Value::Array(fields) = fields else { return None };
    let (mut frames, mut lease, mut except) = (None, String::new(), None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else { continue };
        // The frames' bytes are taken as they came, not copied.
        match name.as_slice() {
            b"f" => frames = Some(Bytes::from(value)),
            b"o" => lease = String::from_utf8(value).unwrap_or_default(),
            b"x" => except = String::from_utf8(value).ok(),
            _ => {}
        }
    }
    Some(StreamEvent { id: id.to_string(), lease, frames: frames?, except })
}

/// A two-element array as a pair.
fn pair(value: Value) -> Option<(Value, Value)> {
    let Value::Array(items) = value else { return None };
    let mut items = items.into_iter();
    match (items.next(), items.next()) {
        (Some(first), Some(second)) => Some((first, second)),
        _ => None,
    }
}

/// A bulk or simple string as text.
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
#[path = "stream_entries_tests.rs"]
mod tests;
