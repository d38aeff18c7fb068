//! The metrics endpoint's request head (`--metrics-listen`): whatever a client sends, parsing
//! never panics, a head only waits for more bytes while it is under the size bound, and every
//! outcome has a complete HTTP response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgmesh_metrics::http::{MAX_REQUEST_HEAD, METRICS_PATH, Response, parse_request, respond};

fuzz_target!(|data: &[u8]| {
    let response = match parse_request(data) {
        Ok(Some(request)) => {
            assert!(!request.path.contains('?'));
            let response = respond(&request, |format| Ok(format.content_type().to_owned()));
            let served = request.path == METRICS_PATH
                && (request.method == "GET" || request.method == "HEAD");
            assert_eq!(response.status == 200, served);
            response
        }
        Ok(None) => {
            assert!(data.len() < MAX_REQUEST_HEAD);
            Response::timed_out()
        }
        Err(err) => Response::refused(&err),
    };
    let bytes = response.to_bytes();
    assert!(bytes.starts_with(b"HTTP/1.1 "));
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&bytes[..head_end]).expect("an ASCII head");
    assert!(head.contains("\r\nConnection: close"));
});
