//! Fuzz target: any bytes a client can put in a text or binary frame, through the one
//! function that turns them into a message. It must return (never panic, never hang,
//! never allocate without bound), and a refusal must carry a client error code, a
//! bounded sentence and only a usable `messageId` (what the connection sends back).

#![no_main]

use clawsocket::protocol::{decode, is_valid_id, ErrorCode, MAX_ERROR_TEXT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(error) = decode(bytes) {
        assert!(matches!(error.code, ErrorCode::InvalidJson | ErrorCode::InvalidMessage | ErrorCode::UnsupportedType));
        assert!(!error.message.is_empty() && error.message.len() <= MAX_ERROR_TEXT_BYTES + '…'.len_utf8());
        assert!(error.message_id.as_deref().is_none_or(is_valid_id));
    }
});
