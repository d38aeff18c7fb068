//! The secret parser (flag, file, credential or environment): never a panic, and a secret that
//! parses re-parses from its own URI to the same strength.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgmesh_derive::Secret;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(secret) = Secret::parse(text)
    {
        let uri = secret.expose_uri();
        let again = Secret::parse(&uri)
            .unwrap_or_else(|_| panic!("a parsed secret's own URI does not parse"));
        // assert!, not assert_eq!: a secret is never printed, even a fuzzer's.
        assert!(
            again.expose_uri() == uri,
            "the URI form is not a fixed point"
        );
    }
});
