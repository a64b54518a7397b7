use actix_http::ws::{OpCode, Parser};
use bytes::BytesMut;
use futures_util::stream;
use proptest::prelude::*;

use super::*;

/// Runs `chunks` through a guard of `max` bytes: what came out, and whether it tripped.
fn guard(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<Result<Bytes, PayloadError>>, bool) {
    let inner = stream::iter(chunks.into_iter().map(|chunk| Ok(Bytes::from(chunk))));
    let (mut guard, signal) = FrameSizeGuard::new(inner, max);
    let mut context = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    while let Poll::Ready(Some(item)) = Pin::new(&mut guard).poll_next(&mut context) {
        out.push(item);
    }
    (out, signal.tripped())
}

/// A client frame (masked, as clients send them) with `payload_len` bytes.
fn client_frame(payload_len: usize, opcode: OpCode, fin: bool) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    Parser::write_message(&mut buffer, vec![b'a'; payload_len], opcode, fin, true);
    buffer.to_vec()
}

/// A frame header declaring `length` payload bytes (64-bit length field, masked).
fn declared(length: u64) -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header
}

fn passed_bytes(out: &[Result<Bytes, PayloadError>]) -> Vec<u8> {
    out.iter().filter_map(|item| item.as_ref().ok()).flat_map(|bytes| bytes.to_vec()).collect()
}

#[test]
fn frames_within_the_limit_pass_through_untouched() {
    let frames: Vec<u8> = [
        client_frame(0, OpCode::Text, true),
        client_frame(125, OpCode::Text, true),
        client_frame(126, OpCode::Binary, true),
        client_frame(1000, OpCode::Text, false),
        client_frame(1000, OpCode::Continue, true),
        client_frame(4, OpCode::Ping, true),
    ]
    .concat();
    let (out, tripped) = guard(vec![frames.clone()], 1000);
    assert!(!tripped);
    assert_eq!(passed_bytes(&out), frames);
}

#[test]
fn a_header_over_the_limit_ends_the_stream_before_its_payload_comes() {
    for (header, max) in [(declared(100 << 30), 4096), (client_frame(200, OpCode::Text, true)[..4].to_vec(), 199)] {
        let (out, tripped) = guard(vec![client_frame(10, OpCode::Text, true), header], max);
        assert!(tripped);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].is_ok(), "the frame before passed");
        assert!(matches!(out[1], Err(PayloadError::Overflow)));
    }
}

#[test]
fn nothing_more_passes_once_tripped() {
    let (out, tripped) = guard(vec![declared(1 << 20), vec![b'a'; 1 << 16], vec![b'a'; 1 << 16]], 1024);
    assert!(tripped);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_header_split_byte_by_byte_is_read_whole() {
    let frame = client_frame(300, OpCode::Text, true);
    let bytes: Vec<Vec<u8>> = frame.iter().map(|byte| vec![*byte]).collect();
    let (out, tripped) = guard(bytes.clone(), 300);
    assert!(!tripped);
    assert_eq!(passed_bytes(&out), frame);
    let (_, tripped) = guard(bytes, 299);
    assert!(tripped);
}

proptest! {
    #[test]
    fn any_cutting_of_valid_frames_passes_them_all(
        sizes in prop::collection::vec(0usize..70_000, 1..6),
        cuts in prop::collection::vec(1usize..20_000, 1..40),
    ) {
        let frames: Vec<u8> = sizes.iter().map(|size| client_frame(*size, OpCode::Binary, true)).collect::<Vec<_>>().concat();
        let mut chunks = Vec::new();
        let mut rest = frames.as_slice();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let (out, tripped) = guard(chunks.clone(), largest);
        prop_assert!(!tripped);
        prop_assert_eq!(passed_bytes(&out), frames);
        if largest > 0 {
            let (_, tripped) = guard(chunks, largest - 1);
            prop_assert!(tripped, "a frame one byte over the limit is caught");
        }
    }
}
