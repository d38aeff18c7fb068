//! The HTTP/1.1 exchange of the metrics endpoint: one request head in, one response out, then
//! the connection closes. Only `GET` and `HEAD` of `/metrics` are served. Everything here is
//! pure and bounded; the daemon's task reads at most [`MAX_REQUEST_HEAD`] bytes within
//! [`READ_TIMEOUT`] and writes what [`Response::to_bytes`] returns.

use crate::registry::Format;
use std::time::Duration;

/// Largest request head accepted. Scrapers send a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client gets to send its request head (a slow or silent client is cut off).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client gets to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed at once. Prometheus scrapes one at a time.
pub const MAX_CONNECTIONS: usize = 8;

/// The path the metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// The parts of a request head that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target without its query string.
    pub path: String,
    /// All `Accept` headers, joined with commas.
    pub accept: Option<String>,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request head larger than {MAX_REQUEST_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Parses the request head from what has arrived so far. `Ok(None)`: not complete yet, read on.
pub fn parse_request(received: &[u8]) -> Result<Option<Request>, RequestError> {
    let Some(end) = head_end(received) else {
        return if received.len() >= MAX_REQUEST_HEAD {
            Err(RequestError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_REQUEST_HEAD {
        return Err(RequestError::TooLarge);
    }
    let head = std::str::from_utf8(&received[..end])
        .map_err(|_| RequestError::Malformed("request head is not UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("bad method"));
    }
    if !target.starts_with('/') && target != "*" {
        return Err(RequestError::Malformed("target is not an absolute path"));
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(RequestError::Malformed("not HTTP/1.0 or HTTP/1.1"));
    }
    let mut accept: Option<String> = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(RequestError::Malformed("header line without a colon"));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(RequestError::Malformed("bad header name"));
        }
        if name.eq_ignore_ascii_case("accept") {
            let value = value.trim();
            accept = Some(match accept {
                Some(before) => format!("{before},{value}"),
                None => value.to_owned(),
            });
        }
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        accept,
    }))
}

/// Where the head ends (just past the blank line), if it has.
fn head_end(received: &[u8]) -> Option<usize> {
    let crlf = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    // Bare LF line ends are tolerated, as most servers do.
    let lf = received
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A complete response; the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `HEAD`: the headers of the `GET` response, without its body.
    pub head_only: bool,
}

const PLAIN: &str = "text/plain; charset=utf-8";

impl Response {
    fn plain(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: PLAIN,
            body: format!("{body}\n"),
            head_only: false,
        }
    }

    /// The answer to a refused request head.
    pub fn refused(error: &RequestError) -> Self {
        match error {
            RequestError::TooLarge => Self::plain(431, "request head too large"),
            RequestError::Malformed(_) => Self::plain(400, "bad request"),
        }
    }

    /// The answer to a client that sent no complete head in time.
    pub fn timed_out() -> Self {
        Self::plain(408, "request timeout")
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Internal Server Error",
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// Answers a parsed request; `render` encodes the metrics in the negotiated format.
pub fn respond(
    request: &Request,
    render: impl FnOnce(Format) -> Result<String, std::fmt::Error>,
) -> Response {
    if request.path != METRICS_PATH {
        return Response::plain(404, "not found; metrics are at /metrics");
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::plain(405, "method not allowed"),
    };
    let format = Format::negotiate(request.accept.as_deref());
    match render(format) {
        Ok(body) => Response {
            status: 200,
            content_type: format.content_type(),
            body,
            head_only,
        },
        Err(std::fmt::Error) => Response::plain(500, "cannot encode the metrics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(format: Format) -> Result<String, std::fmt::Error> {
        Ok(format!("body in {format:?}\n"))
    }

    fn answer(raw: &[u8]) -> String {
        let response = match parse_request(raw) {
            Ok(Some(request)) => respond(&request, render),
            Ok(None) => Response::timed_out(),
            Err(err) => Response::refused(&err),
        };
        String::from_utf8(response.to_bytes()).unwrap()
    }

    #[test]
    fn a_scrape_gets_the_metrics_in_the_format_it_asked_for() {
        // What Debian's Prometheus 2.42 sends (captured).
        let got = answer(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9586\r\nUser-Agent: Prometheus/2.42.0+ds\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n");
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nbody in OpenMetrics\n"
        );
        let got = answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 13\r\n"),
            "{got}"
        );
        assert!(got.ends_with("\r\n\r\nbody in Text\n"));
    }

    #[test]
    fn head_gets_the_headers_only() {
        let got = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("Content-Length: 13\r\n"));
        assert!(got.ends_with("\r\n\r\n"));
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        assert!(answer(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(answer(b"GET /metricsx HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(answer(b"GET /metrics/ HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn bad_heads_are_answered_400_or_431() {
        for raw in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /m\xff HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(
                answer(raw).starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_HEAD + 10, b'a');
        assert_eq!(parse_request(&huge), Err(RequestError::TooLarge));
        huge.extend_from_slice(b"\r\n\r\n");
        assert!(answer(&huge).starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n"),
            Ok(None)
        );
        assert!(answer(b"GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 408 "));
    }

    #[test]
    fn accept_headers_are_joined_and_bare_lf_is_tolerated() {
        let request = parse_request(
            b"GET /metrics HTTP/1.1\nACCEPT: text/plain\naccept: application/openmetrics-text\n\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            request.accept.as_deref(),
            Some("text/plain,application/openmetrics-text")
        );
        assert_eq!(request.path, "/metrics");
    }

    #[test]
    fn an_encoding_failure_is_a_500() {
        let request = parse_request(b"GET /metrics HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        let response = respond(&request, |_| Err(std::fmt::Error));
        assert_eq!(response.status, 500);
        assert!(
            String::from_utf8(response.to_bytes())
                .unwrap()
                .starts_with("HTTP/1.1 500 Internal Server Error\r\n")
        );
    }

    proptest! {
        /// Whatever arrives, parsing never panics, and every outcome has a well-formed answer.
        #[test]
        fn any_bytes_get_an_answer(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let got = answer(&raw);
            prop_assert!(got.starts_with("HTTP/1.1 "));
            prop_assert!(got.contains("\r\nConnection: close\r\n"));
        }

        /// A valid scrape of /metrics with any extra headers is always served.
        #[test]
        fn any_well_formed_get_of_metrics_is_served(
            headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,40}"), 0..10)
        ) {
            let mut raw = String::from("GET /metrics HTTP/1.1\r\n");
            for (name, value) in &headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            prop_assert!(answer(raw.as_bytes()).starts_with("HTTP/1.1 200 OK\r\n"));
        }
    }
}
