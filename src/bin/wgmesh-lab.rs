//! `wgmesh-lab`: helpers for test labs and benchmarks, not for production hosts.
//!
//! - `wgmesh-lab dht-testnet ARGS...`: a local mainline DHT for NAT labs.
//! - `wgmesh-lab stun-server ARGS...`: a minimal RFC 5389 STUN responder.
//! - `wgmesh-lab wan-delay --latency-ms MS NEAR FAR`: a WAN cable with latency (two TAP devices).
//! - `wgmesh-lab udp-bind ADDR...`: a local user trying to take a UDP port
//!   (`wgmesh_lab_support::udp_bind`).
#![expect(clippy::print_stderr, reason = "a lab tool reports errors on stderr")]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("usage: wgmesh-lab dht-testnet|stun-server|wan-delay|udp-bind ARGS...");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "dht-testnet" => wgmesh_lab_support::dht_testnet::run_testnet(rest),
        "stun-server" => wgmesh_lab_support::stun_server::run_stun_server(rest),
        "wan-delay" => wgmesh_lab_support::wan_delay::run_wan_delay(rest),
        "udp-bind" => wgmesh_lab_support::udp_bind::run_udp_bind(rest),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wgmesh-lab: {err}");
            ExitCode::from(1)
        }
    }
}
