//! The lab responder and the client state machine over real loopback sockets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use wgmesh_lab_support::stun_server::StunServer;
use wgmesh_nat::{NatType, StunProbe, is_stun};

#[test]
fn loopback_client_sees_itself_and_is_open() {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    // One host on two ports: enough for the probe to compare mappings.
    let server = StunServer::bind(&[any, any]).expect("bind lab server");
    let servers = server.local_addrs().to_vec();
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(|s| s.port() != 0));

    let client = UdpSocket::bind(any).expect("bind client");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let local = client.local_addr().expect("local addr");
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut probe = StunProbe::new(servers).with_local_ips(vec![loopback]);

    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut next_id = 0u8;
    let mut rng = move || {
        next_id = next_id.wrapping_add(1);
        [next_id; 12]
    };
    let mut buf = [0u8; 1500];
    'rounds: for _ in 0..wgmesh_nat::MAX_ATTEMPTS_PER_ROUND {
        for (to, request) in probe.requests(now_ms(), &mut rng) {
            client.send_to(&request, to).expect("send");
        }
        // An unrelated datagram on the same socket must not confuse anything.
        let deadline = Instant::now() + Duration::from_millis(wgmesh_nat::RETRY_INTERVAL_MS);
        while Instant::now() < deadline {
            let Ok((len, from)) = client.recv_from(&mut buf) else {
                continue;
            };
            let datagram = &buf[..len];
            assert!(is_stun(datagram));
            if let Some(observation) = probe.on_datagram(from, datagram, now_ms()) {
                assert_eq!(observation.mapped, local);
            }
            if probe.all_answered() {
                break 'rounds;
            }
        }
    }

    assert!(probe.all_answered(), "both lab ports answered");
    assert_eq!(probe.nat_type(local.port()), NatType::Open);
    assert_eq!(probe.public_endpoint(), Some(local));
    server.stop();
}

#[test]
fn lab_server_ignores_non_stun() {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = StunServer::bind(&[any]).expect("bind lab server");
    let to = server.local_addrs()[0];
    let client = UdpSocket::bind(any).expect("bind client");
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    client.send_to(b"WGM1 not stun", to).expect("send");
    let mut buf = [0u8; 64];
    assert!(client.recv_from(&mut buf).is_err(), "no answer to non-STUN");
    // But a request still works afterwards.
    client
        .send_to(&wgmesh_nat::binding_request([7; 12]), to)
        .expect("send");
    let (len, _) = client.recv_from(&mut buf).expect("answer");
    let response = wgmesh_nat::parse_binding_response(&buf[..len]).expect("response");
    assert_eq!(response.transaction_id, [7; 12]);
    assert_eq!(response.mapped, client.local_addr().expect("local"));
}
