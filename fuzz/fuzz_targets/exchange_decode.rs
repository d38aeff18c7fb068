//! The plaintext codec inside the AEAD: what a holder of the secret (any member, or anyone the
//! secret leaked to) can make us decode. Must return an error, never panic, on any input; and
//! whatever decodes must encode back to the same bytes (the format has one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgmesh_exchange::{decode_message, decode_record_exact, encode_message, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_message(data) {
        // Canonical form: a decoded message re-encodes to exactly the input.
        if let Ok(bytes) = encode_message(&message) {
            assert_eq!(bytes, data, "decode/encode round trip changed the bytes");
        }
    }
    if let Ok(record) = decode_record_exact(data) {
        let mut out = Vec::new();
        if encode_record(&record, &mut out).is_ok() {
            assert_eq!(
                out, data,
                "record decode/encode round trip changed the bytes"
            );
        }
    }
});
