//! `status`, `peers`, `reload` and `down`: talking to the running daemon.

use crate::cli::QueryArgs;
use crate::control::{self, ClientError, PeerReport, Request, Response, StatusReport};
use crate::daemon::{self, mark_kept_interface, process_alive, read_pid};
use crate::{CliError, exit, output};
use anyhow::anyhow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(5);

fn client_error(err: ClientError) -> CliError {
    let code = if matches!(err, ClientError::NotRunning { .. }) {
        exit::NOT_RUNNING
    } else {
        exit::FAILURE
    };
    CliError {
        code,
        error: err.into(),
    }
}

fn fetch_status(args: &QueryArgs) -> Result<StatusReport, CliError> {
    let socket = args.location.socket_path();
    match control::call(&socket, &args.location.interface, &Request::Status, TIMEOUT)
        .map_err(client_error)?
    {
        Response::Status(report) => Ok(*report),
        Response::Error { error } => Err(anyhow!("daemon: {error}").into()),
        Response::Reload(_) | Response::Stopping { .. } => {
            Err(anyhow!("daemon answered status with something else").into())
        }
    }
}

pub fn status(args: &QueryArgs) -> Result<(), CliError> {
    let report = fetch_status(args)?;
    if args.json {
        output::json(&serde_json::to_value(&report).map_err(anyhow::Error::from)?);
        return Ok(());
    }
    output::line(format!(
        "interface:   {} ({} backend, pid {})",
        report.interface, report.backend, report.pid
    ));
    output::line(format!("public key:  {}", report.public_key));
    output::line(format!(
        "name:        {}",
        report.name.as_deref().unwrap_or("-")
    ));
    output::line(format!(
        "version:     {}",
        report.version.as_deref().unwrap_or("unknown")
    ));
    output::line(format!(
        "mesh:        {}  {}",
        report.mesh_ipv4, report.mesh_ipv6
    ));
    output::line(format!(
        "ports:       wireguard {}, control {}",
        report.listen_port, report.control_port
    ));
    let advertised = if report.advertised_routes.is_empty() {
        "-".to_owned()
    } else {
        report.advertised_routes.join(", ")
    };
    output::line(format!("advertising: {advertised}"));
    if let Some(policy) = &report.accept_routes {
        output::line(format!("accepting:   {policy}"));
    }
    for refused in &report.refused_routes {
        let key: String = refused.public_key.chars().take(8).collect();
        output::line(format!(
            "refused:     {} from {key}: {}",
            refused.route, refused.detail
        ));
    }
    for pair in &report.relay_pairs {
        let [a, b] = &pair.members;
        let short = |key: &str| key.chars().take(8).collect::<String>();
        output::line(format!(
            "relaying:    {} (port {}) <-> {} (port {}), {} datagrams, idle {} s",
            short(&a.public_key),
            a.port,
            short(&b.public_key),
            b.port,
            a.datagrams + b.datagrams,
            pair.idle_secs
        ));
    }
    output::line(format!("peers:       {}", report.peers.len()));
    if !report.peers.is_empty() {
        output::line("");
        print_peers(&report.peers);
    }
    Ok(())
}

pub fn peers(args: &QueryArgs) -> Result<(), CliError> {
    let report = fetch_status(args)?;
    if args.json {
        output::json(&serde_json::to_value(&report.peers).map_err(anyhow::Error::from)?);
    } else {
        print_peers(&report.peers);
    }
    Ok(())
}

fn ago(unix: Option<u64>) -> String {
    let Some(then) = unix else {
        return "never".to_owned();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(then);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn print_peers(peers: &[PeerReport]) {
    output::line(format!(
        "{:<10} {:<16} {:<10} {:<15} {:<21} {:<10} {:>10} {:>10} {:<7} ROUTES",
        "PEER", "NAME", "VERSION", "MESH IPV4", "ENDPOINT", "HANDSHAKE", "RX", "TX", "SOURCE"
    ));
    for peer in peers {
        let routes = if peer.routes.is_empty() {
            "-".to_owned()
        } else {
            peer.routes.join(",")
        };
        output::line(format!(
            "{:<10} {:<16} {:<10} {:<15} {:<21} {:<10} {:>10} {:>10} {:<7} {}",
            &peer.public_key[..8.min(peer.public_key.len())],
            peer.name.as_deref().unwrap_or("-"),
            peer.version.as_deref().unwrap_or("-"),
            peer.mesh_ipv4,
            peer.endpoint.as_deref().unwrap_or("-"),
            ago(peer.last_handshake_unix),
            bytes(peer.rx_bytes),
            bytes(peer.tx_bytes),
            match &peer.relayed_via {
                Some(via) => format!("{} via {}", peer.source, &via[..8.min(via.len())]),
                None => peer.source.clone(),
            },
            routes,
        ));
    }
}

/// `wgmesh hosts`: one `/etc/hosts` line per mesh address of every named member, this host
/// first. A contested name is printed only as `name~<key prefix>` (never bare), members that
/// announce no name (older releases) are left out.
pub fn hosts(args: &QueryArgs) -> Result<(), CliError> {
    let report = fetch_status(args)?;
    let entries = host_entries(&report);
    if args.json {
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "name_contested": e.contested,
                    "mesh_ipv4": e.ipv4,
                    "mesh_ipv6": e.ipv6,
                    "public_key": e.public_key,
                    "self": e.own,
                })
            })
            .collect();
        output::json(&serde_json::Value::Array(list));
        return Ok(());
    }
    output::line(format!(
        "# wgmesh {} mesh hosts ({} {})",
        report.interface, report.mesh_ipv4, report.mesh_ipv6
    ));
    for entry in &entries {
        output::line(format!("{}\t{}", entry.ipv4, entry.name));
        output::line(format!("{}\t{}", entry.ipv6, entry.name));
    }
    Ok(())
}

struct HostEntry<'a> {
    name: &'a str,
    contested: bool,
    ipv4: &'a str,
    ipv6: &'a str,
    public_key: &'a str,
    own: bool,
}

fn host_entries(report: &StatusReport) -> Vec<HostEntry<'_>> {
    let own = report.name.as_deref().map(|name| HostEntry {
        name,
        contested: false,
        ipv4: &report.mesh_ipv4,
        ipv6: &report.mesh_ipv6,
        public_key: &report.public_key,
        own: true,
    });
    let peers = report.peers.iter().filter_map(|peer| {
        let name = peer.name.as_deref()?;
        // The daemon shows a contested name with its key suffix; a daemon that did not (or a
        // corrupted answer) must still never put a contested name bare into a hosts file.
        if peer.name_contested && !name.contains('~') {
            return None;
        }
        Some(HostEntry {
            name,
            contested: peer.name_contested,
            ipv4: &peer.mesh_ipv4,
            ipv6: &peer.mesh_ipv6,
            public_key: &peer.public_key,
            own: false,
        })
    });
    own.into_iter().chain(peers).collect()
}

fn daemon_pid(args: &QueryArgs) -> Result<i32, CliError> {
    let report = fetch_status(args)?;
    i32::try_from(report.pid).map_err(|_| anyhow!("daemon reported an invalid pid").into())
}

pub fn reload(args: &QueryArgs) -> Result<(), CliError> {
    let before = fetch_status(args)?;
    let pid = i32::try_from(before.pid).map_err(|_| anyhow!("daemon reported an invalid pid"))?;
    crate::platform::send_signal(pid, crate::platform::Signal::Reload)
        .map_err(|err| anyhow!("cannot signal the daemon (pid {pid}): {err}"))?;
    let request = Request::WaitReload {
        after: before.reload.generation,
    };
    let report = match control::call(
        &args.location.socket_path(),
        &args.location.interface,
        &request,
        Duration::from_secs(20),
    )
    .map_err(client_error)?
    {
        Response::Reload(report) => report,
        Response::Error { error } => return Err(anyhow!("daemon: {error}").into()),
        Response::Status(_) | Response::Stopping { .. } => {
            return Err(anyhow!("daemon answered a reload with something else").into());
        }
    };
    if args.json {
        output::json(&serde_json::to_value(&report).map_err(anyhow::Error::from)?);
    } else if report.ok {
        for message in &report.messages {
            output::warn(message);
        }
        output::line("reload applied");
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError {
            code: exit::FAILURE,
            error: anyhow!("reload rejected: {}", report.messages.join("; ")),
        })
    }
}

/// Stops the daemon and removes the interface, `--keep-interface` or not: the daemon is asked
/// over the control socket (a daemon of an older release, which does not know the request, gets
/// SIGTERM). With no daemon running, an interface a `--keep-interface` daemon left behind (after
/// `systemctl stop`) is removed.
pub fn down(args: &QueryArgs) -> Result<(), CliError> {
    let socket = args.location.socket_path();
    let asked = control::call(&socket, &args.location.interface, &Request::Down, TIMEOUT);
    let pid = match asked {
        Ok(Response::Stopping { stopping_pid }) => i32::try_from(stopping_pid)
            .map_err(|_| anyhow!("daemon reported an invalid pid {stopping_pid}"))?,
        Ok(_) => terminate(daemon_pid(args)?)?,
        Err(err) => {
            let err = client_error(err);
            if err.code != exit::NOT_RUNNING {
                return Err(err);
            }
            // The socket is gone but a pid file may still name a live daemon (stuck at start).
            match read_pid(&args.location.pid_path()).filter(|p| process_alive(*p)) {
                Some(pid) => terminate(pid)?,
                None => return remove_kept_interface(args, err),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while process_alive(pid) && !crate::platform::process_is_zombie(pid) {
        if Instant::now() > deadline {
            return Err(anyhow!("daemon (pid {pid}) did not stop within 15 s").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if args.json {
        output::json(&serde_json::json!({ "stopped": true, "pid": pid }));
    } else {
        output::line(format!("wgmesh on {} stopped", args.location.interface));
    }
    Ok(())
}

fn terminate(pid: i32) -> Result<i32, CliError> {
    crate::platform::send_signal(pid, crate::platform::Signal::Stop)
        .map_err(|err| anyhow!("cannot signal the daemon (pid {pid}): {err}"))?;
    Ok(pid)
}

/// No daemon runs: remove the interface only if a `--keep-interface` daemon recorded leaving it.
fn remove_kept_interface(args: &QueryArgs, not_running: CliError) -> Result<(), CliError> {
    let record = args.location.kept_path();
    if !record.exists() {
        return Err(not_running);
    }
    let interface = &args.location.interface;
    let removed = daemon::remove_kept_interface(interface)?;
    mark_kept_interface(&record, false);
    if args.json {
        output::json(&serde_json::json!({ "stopped": false, "removed_interface": removed }));
    } else if removed {
        output::line(format!(
            "no daemon was running; removed interface {interface} (left up by --keep-interface)"
        ));
    } else {
        output::line(format!(
            "no daemon was running and interface {interface} is already gone"
        ));
    }
    Ok(())
}
