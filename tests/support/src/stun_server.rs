//! A STUN responder for test labs: `wgmesh-lab stun-server --bind ADDR [--bind ADDR ...]`.
//!
//! Blocking std sockets, one thread per bound address; answers every Binding request with a
//! success response carrying XOR-MAPPED-ADDRESS of the request's source and ignores everything
//! else. Binding one host on two ports (or two hosts) lets a client detect endpoint-dependent
//! mapping. Not for production: no rate limiting, no RFC 5780 CHANGE-REQUEST.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wgmesh_nat::{binding_success_response, parse_binding_request};

const USAGE: &str = "usage: wgmesh-lab stun-server --bind ADDR:PORT [--bind ADDR:PORT ...]";

/// How often a serving thread wakes to check for [`StunServer::stop`]; the CLI never stops.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Larger than any STUN message we answer; longer datagrams are truncated and then fail framing.
const RECV_BUFFER: usize = 1500;

/// Entry point of `wgmesh-lab stun-server`: bind, print `READY`, serve until killed.
pub fn run_stun_server(args: &[String]) -> Result<(), String> {
    let binds = parse_args(args)?;
    let server = StunServer::bind(&binds)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "READY")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing READY: {e}"))?;
    drop(stdout);
    server.join();
    Ok(())
}

/// The `--bind` addresses from the command line (at least one).
fn parse_args(args: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut binds = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--bind" => args
                .next()
                .ok_or_else(|| format!("--bind needs a value\n{USAGE}"))?
                .as_str(),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => match other.strip_prefix("--bind=") {
                Some(value) => value,
                None => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
            },
        };
        let addr = value
            .parse()
            .map_err(|e| format!("--bind {value:?}: {e}\n{USAGE}"))?;
        binds.push(addr);
    }
    if binds.is_empty() {
        return Err(format!("at least one --bind is required\n{USAGE}"));
    }
    Ok(binds)
}

/// A running responder; threads stop on [`StunServer::stop`] or drop.
#[derive(Debug)]
pub struct StunServer {
    local_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StunServer {
    /// Bind every address (port 0 picks a free port; see [`StunServer::local_addrs`]) and start
    /// one serving thread per socket. Fails without serving if any bind fails.
    pub fn bind(addrs: &[SocketAddr]) -> Result<StunServer, String> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let socket = UdpSocket::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
            socket
                .set_read_timeout(Some(STOP_POLL))
                .map_err(|e| format!("setting read timeout on {addr}: {e}"))?;
            let local = socket
                .local_addr()
                .map_err(|e| format!("local address of {addr}: {e}"))?;
            sockets.push((local, socket));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut local_addrs = Vec::with_capacity(sockets.len());
        let mut threads = Vec::with_capacity(sockets.len());
        for (local, socket) in sockets {
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name(format!("stun {local}"))
                .spawn(move || serve(&socket, &stop))
                .map_err(|e| format!("spawning responder for {local}: {e}"))?;
            local_addrs.push(local);
            threads.push(thread);
        }
        Ok(StunServer {
            local_addrs,
            stop,
            threads,
        })
    }

    /// The bound addresses, in the order given to [`StunServer::bind`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Ask the threads to stop and wait for them (at most about 200 ms).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Serve until the threads end, which without [`StunServer::stop`] is never.
    fn join(mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Answer Binding requests on `socket` until `stop` is set.
fn serve(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; RECV_BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            // Timeouts let us poll `stop`; other errors (e.g. ICMP-induced ECONNREFUSED) are
            // per-datagram and must not end the server.
            Err(_) => continue,
        };
        let Some(transaction_id) = buf.get(..len).and_then(parse_binding_request) else {
            continue;
        };
        let response = binding_success_response(transaction_id, from);
        // A failed send is a lost datagram; the client retries.
        let _ = socket.send_to(&response, from);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_binds() {
        let got = parse_args(&args(&[
            "--bind",
            "10.200.0.1:3478",
            "--bind=10.200.0.1:3479",
        ]))
        .expect("valid");
        assert_eq!(
            got,
            vec![
                "10.200.0.1:3478".parse().expect("addr"),
                "10.200.0.1:3479".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn rejects_bad_args() {
        assert!(parse_args(&[]).is_err());
        assert!(parse_args(&args(&["--bind"])).is_err());
        assert!(parse_args(&args(&["--bind", "nonsense"])).is_err());
        assert!(parse_args(&args(&["--port", "1"])).is_err());
    }
}
