//! A local user trying to take a daemon's UDP port: `wgmesh-lab udp-bind ADDR...`.
#![expect(clippy::print_stderr, reason = "a lab tool reports on stderr")]

/// Binds each UDP address as a local attacker would, with `SO_REUSEADDR` and `SO_REUSEPORT`,
/// and for each it gets, sends itself a datagram there to see whether it, rather than the
/// daemon holding the port, receives it. One line per address on stderr; an error if any bind
/// succeeded.
pub fn run_udp_bind(args: &[String]) -> Result<(), String> {
    use socket2::{Domain, Socket, Type};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;
    let mut bound = Vec::new();
    for arg in args {
        let addr: SocketAddr = arg.parse().map_err(|e| format!("{arg}: {e}"))?;
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuse_address(true)
            .and_then(|()| socket.set_reuse_port(true))
            .map_err(|e| format!("setsockopt: {e}"))?;
        match socket.bind(&addr.into()) {
            Err(err) => eprintln!("{addr}: refused: {err}"),
            Ok(()) => {
                let socket = UdpSocket::from(socket);
                let received = UdpSocket::bind((addr.ip(), 0))
                    .or_else(|_| UdpSocket::bind("0.0.0.0:0"))
                    .and_then(|probe| probe.send_to(b"wgmesh-lab", addr))
                    .and_then(|_| socket.set_read_timeout(Some(Duration::from_secs(1))))
                    .and_then(|()| socket.recv_from(&mut [0u8; 64]))
                    .is_ok();
                eprintln!("{addr}: bound; own datagram received: {received}");
                bound.push(addr.to_string());
            }
        }
    }
    if bound.is_empty() {
        Ok(())
    } else {
        Err(format!("bound {}", bound.join(", ")))
    }
}
