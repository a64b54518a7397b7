use proptest::prelude::*;

use super::*;

fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<String>, SseError> {
    let mut decoder = SseDecoder::default();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, |event| events.push(event.to_string()))?;
    }
    decoder.finish(|event| events.push(event.to_string()))?;
    Ok(events)
}

const STREAM: &str = ": keep-alive\n\ndata: {\"a\":\"héllo 日本\"}\n\ndata: one\r\ndata: two\r\n\r\nevent: x\nid: 3\ndata:tight\n\n\n\ndata: [DONE]\n\n";

#[test]
fn reads_data_events_and_skips_comments_and_other_fields() {
    let events = decode_chunks(&[STREAM.as_bytes()]).unwrap();
    assert_eq!(events, ["{\"a\":\"héllo 日本\"}", "one\ntwo", "tight", "[DONE]"]);
}

#[test]
fn a_lone_carriage_return_ends_a_line_even_across_chunks() {
    let events = decode_chunks(&[b"data: a\r", b"\r", b"data: b\r", b"\n\r\n"]).unwrap();
    assert_eq!(events, ["a", "b"]);
}

#[test]
fn a_last_event_without_its_blank_line_counts() {
    assert_eq!(decode_chunks(&[b"data: [DONE]"]).unwrap(), ["[DONE]"]);
}

#[test]
fn invalid_utf8_is_an_error_not_a_growing_buffer() {
    assert_eq!(decode_chunks(&[b"data: \xff\xfe\n\n"]), Err(SseError::NotUtf8));
}

#[test]
fn an_endless_line_is_refused() {
    let mut decoder = SseDecoder::default();
    let block = vec![b'x'; 1024 * 1024];
    let mut result = Ok(());
    for _ in 0..9 {
        result = decoder.feed(&block, |_| {});
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SseError::TooLong));
}

#[test]
fn an_endless_event_of_data_lines_is_refused() {
    let mut decoder = SseDecoder::with_limit(4096);
    let line = format!("data: {}\n", "y".repeat(1000));
    let mut result = Ok(());
    for _ in 0..10 {
        result = decoder.feed(line.as_bytes(), |_| panic!("no blank line: no event"));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SseError::TooLong));
}

proptest! {
    /// However the network cuts the body, even inside a UTF-8 character or a `\r\n`,
    /// the same events come out.
    #[test]
    fn any_chunking_decodes_the_same(cuts in proptest::collection::vec(0..STREAM.len(), 0..12)) {
        let bytes = STREAM.as_bytes();
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&bytes[start..cut]);
            start = cut;
        }
        chunks.push(&bytes[start..]);
        prop_assert_eq!(decode_chunks(&chunks).unwrap(), decode_chunks(&[bytes]).unwrap());
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let _ = decode_chunks(&slices);
    }
}
