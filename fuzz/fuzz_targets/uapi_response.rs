//! wireguard-go's `get=1` answer on the UAPI socket. The socket is root-only, but a crashed or
//! foreign wireguard-go can send anything; the parser must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wgmesh_uapi::parse_get_response(text);
        let _ = wgmesh_uapi::parse_errno(text);
    }
});
