//! STUN on the shared control socket: anyone on the internet can send these.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgmesh_nat::{is_stun, parse_binding_request, parse_binding_response};

fuzz_target!(|data: &[u8]| {
    let framed = is_stun(data);
    let _ = parse_binding_response(data);
    if parse_binding_request(data).is_some() {
        // The demultiplexer must send every request the server accepts to the STUN side.
        assert!(
            framed,
            "a parsed Binding request was not recognised by is_stun"
        );
    }
});
