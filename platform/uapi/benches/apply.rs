//! The daemon's reconcile at scale (BENCHMARKS.md): 1,000 members turned into a device and
//! applied, through an in-memory Fake backend (the daemon's own cost: member table, route
//! filter, desired device, diff, and the write) and through wireguard-go over its UAPI socket;
//! then the steady-state tick with nothing changing.
//!
//! `cargo bench -p wgmesh-uapi --bench apply`. The wireguard-go part needs root and
//! /usr/bin/wireguard-go and is skipped otherwise. `WGMESH_BENCH_REPS` (default 5) repetitions;
//! rows go to `$WGMESH_BENCH_APPLY_OUT` (default `target/bench/apply.json`), which
//! `scripts/bench-report.py` reads.
#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a bench reports on stdout and aborts on any failure"
)]

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wgmesh_device::{DeviceState, FakeBackend, WireguardBackend, diff_device};
use wgmesh_keys::{PresharedKey, PrivateKey};
use wgmesh_mesh::{
    DeviceSettings, LocalView, Member, MemberTable, Source, accept_routes, desired_device,
};
use wgmesh_uapi::{
    ChildOutput, UserspaceBackend, UserspaceConfig, render_set_request, userspace_available,
};

const MEMBERS: u16 = 1_000;
const STEADY_TICKS: u32 = 20;

fn main() {
    let reps: usize = std::env::var("WGMESH_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rows = Rows::default();
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();

    // Beyond one machine: the daemon's own per-member cost at 1,000 and 10,000 members (Fake
    // backend, so the WireGuard implementation's share is excluded), for docs/scaling.md.
    for count in [10_000u16, 1_000] {
        let mut tick = Vec::new();
        let mut memory = Vec::new();
        for rep in 0..reps {
            let before = rss_kib("self");
            let mesh = Mesh::with_members(&mut urandom, 0, count);
            let (_, _, per_tick) = fake_backend(&mesh);
            // Member table + desired device + the backend's copy, as the daemon holds them.
            let held = rss_kib("self").saturating_sub(before);
            tick.push(ms(per_tick));
            // Only the first build measures growth: later ones reuse the freed heap.
            if rep == 0 && count == 10_000 {
                memory.push(held as f64 * 1024.0 / f64::from(count));
            }
        }
        rows.push(
            &format!("scale_tick_{count}"),
            "scaling",
            &format!("{count} members, Fake backend: one steady tick's CPU"),
            "ms",
            &tick,
        );
        if memory.is_empty() {
            continue;
        }
        rows.push(
            &format!("scale_bytes_{count}"),
            "scaling",
            &format!(
                "{count} members: resident bytes per member (table, device, copy; first build)"
            ),
            "B",
            &memory,
        );
    }

    let mut fake_apply = Vec::new();
    let mut fake_cpu = Vec::new();
    let mut fake_tick = Vec::new();
    for _ in 0..reps {
        let mesh = Mesh::new(&mut urandom, 0);
        let (wall, cpu, tick) = fake_backend(&mesh);
        fake_apply.push(ms(wall));
        fake_cpu.push(ms(cpu));
        fake_tick.push(ms(tick));
    }
    rows.push(
        "apply_fake",
        "bulk apply",
        "1,000 new members to a Fake backend: table, route filter, device, diff, write",
        "ms",
        &fake_apply,
    );
    rows.push(
        "apply_fake_cpu",
        "bulk apply",
        "the same, CPU time of the daemon's thread",
        "ms",
        &fake_cpu,
    );
    rows.push(
        "tick_fake",
        "steady-state reconcile",
        "1,000 peers, Fake backend: one tick's CPU (read, route filter, device, diff)",
        "ms",
        &fake_tick,
    );

    match userspace_ready() {
        Err(reason) => println!("wireguard-go part skipped: {reason}"),
        Ok(()) => {
            for keepalive in [0u16, 25] {
                let mut apply = Vec::new();
                let mut tick_wall = Vec::new();
                let mut tick_cpu = Vec::new();
                let mut tick_wg_cpu = Vec::new();
                let mut writes = Vec::new();
                let mut wg_rss = Vec::new();
                for rep in 0..reps {
                    let mesh = Mesh::new(&mut urandom, keepalive);
                    let run = userspace(&mesh, rep);
                    apply.push(ms(run.apply));
                    tick_wall.push(ms(run.tick_wall));
                    tick_cpu.push(ms(run.tick_cpu));
                    tick_wg_cpu.push(ms(run.tick_wireguard_go_cpu));
                    writes.push(run.steady_writes as f64);
                    wg_rss.push(run.wireguard_go_rss_kib as f64 / 1024.0);
                }
                if keepalive == 0 {
                    rows.push(
                        "apply_userspace",
                        "bulk apply",
                        "1,000 new peers through wireguard-go (one set=1), keepalive off",
                        "ms",
                        &apply,
                    );
                    rows.push(
                        "tick_wall",
                        "steady-state reconcile",
                        "1,000 peers, wireguard-go: one tick, wall time (get=1 and all of the above)",
                        "ms",
                        &tick_wall,
                    );
                    rows.push(
                        "tick_cpu",
                        "steady-state reconcile",
                        "1,000 peers, wireguard-go: one tick, CPU of the daemon's thread",
                        "ms",
                        &tick_cpu,
                    );
                    rows.push(
                        "tick_wg_cpu",
                        "steady-state reconcile",
                        "1,000 peers, wireguard-go: one tick, CPU of wireguard-go answering get=1",
                        "ms",
                        &tick_wg_cpu,
                    );
                    rows.push(
                        "scale_wg_rss_1000",
                        "scaling",
                        "wireguard-go with 1,000 peers: RSS",
                        "MiB",
                        &wg_rss,
                    );
                    rows.push(
                        "tick_writes",
                        "steady-state reconcile",
                        &format!("1,000 peers: device writes in {STEADY_TICKS} steady ticks"),
                        "writes",
                        &writes,
                    );
                } else {
                    rows.push(
                        "apply_userspace_keepalive",
                        "bulk apply",
                        "1,000 new peers through wireguard-go, keepalive 25 s (NAT peers)",
                        "ms",
                        &apply,
                    );
                }
            }
        }
    }
    let out = std::env::var_os("WGMESH_BENCH_APPLY_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/apply.json"),
        PathBuf::from,
    );
    rows.write(&out);
    println!("wrote {}", out.display());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// 1,000 members as the daemon holds them after discovery: each with its mesh addresses, an
/// endpoint, and one advertised /24.
struct Mesh {
    members: MemberTable,
    settings: DeviceSettings,
    view: LocalView,
}

impl Mesh {
    fn new(urandom: &mut std::fs::File, keepalive: u16) -> Self {
        Self::with_members(urandom, keepalive, MEMBERS)
    }

    fn with_members(urandom: &mut std::fs::File, keepalive: u16, count: u16) -> Self {
        let mut random_key = || {
            let mut out = [0u8; 32];
            urandom.read_exact(&mut out).unwrap();
            out
        };
        let mut members = MemberTable::default();
        for n in 0..count {
            let [hi, lo] = n.to_be_bytes();
            members.upsert(Member {
                public_key: PrivateKey::from_bytes_clamped(random_key()).public_key(),
                mesh_ipv4: Ipv4Addr::new(10, 88, hi, lo.max(1)),
                mesh_ipv6: Ipv6Addr::new(0xfd88, 0, 0, 0, 0, 0, 0, n + 1),
                collision_counter: 0,
                // Loopback: wireguard-go sends a handshake initiation from inside the set for
                // every peer whose keepalive turns on, and this VM's egress makes sendmsg to
                // outside addresses block (see README). Loopback measures wireguard-go and us.
                endpoint: Some(SocketAddr::from(([127, 0, hi, lo], 20_000 + n))),
                control_addr: None,
                routes: vec![format!("10.{}.{}.0/24", 100 + hi, lo).parse().unwrap()],
                source: Source::Lan,
                relay_offered: false,
                last_seen_ms: 1,
                moved_at_ms: 0,
                relay_via: None,
                relay_endpoint: None,
                name: None,
                version: None,
                name_claim: 0,
            });
        }
        let settings = DeviceSettings {
            private_key: PrivateKey::from_bytes_clamped(random_key()),
            listen_port: 0,
            preshared_key: PresharedKey::from_bytes(random_key()),
            persistent_keepalive: keepalive,
        };
        let view = LocalView {
            policy: wgmesh_mesh::RoutePolicy {
                accept: wgmesh_mesh::Accept::All,
                ..wgmesh_mesh::RoutePolicy::default()
            },
            mesh_prefixes: vec![
                "10.88.0.0/16".parse().unwrap(),
                "fd88::/64".parse().unwrap(),
            ],
            // Nothing is "on link", so every peer gets the keepalive setting.
            connected: Vec::new(),
            own_routes: Vec::new(),
            protected: Vec::new(),
        };
        Self {
            members,
            settings,
            view,
        }
    }

    /// What one reconcile computes before touching the device.
    fn desired(&self) -> wgmesh_device::DesiredDevice {
        let accepted = accept_routes(&self.view, &self.members);
        assert!(accepted.rejected.is_empty(), "{:?}", accepted.rejected);
        desired_device(
            &self.settings,
            &self.members,
            &accepted,
            &self.view.connected,
        )
    }
}

/// Bulk apply and one steady tick against the in-memory backend.
fn fake_backend(mesh: &Mesh) -> (Duration, Duration, Duration) {
    let mut backend = FakeBackend::new("fake0");
    backend.ensure_device().unwrap();
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let observed = backend.read().unwrap();
    let update = diff_device(&observed, &mesh.desired(), SystemTime::now());
    backend.apply(&update).unwrap();
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    assert_eq!(
        backend.state.as_ref().unwrap().peers.len(),
        mesh.members.len()
    );

    let writes = backend.writes;
    let started = thread_cpu();
    for _ in 0..STEADY_TICKS {
        let observed = backend.read().unwrap();
        let update = diff_device(&observed, &mesh.desired(), SystemTime::now());
        assert!(update.is_empty(), "a steady mesh makes no writes");
    }
    assert_eq!(backend.writes, writes);
    (wall, cpu, (thread_cpu() - started) / STEADY_TICKS)
}

fn userspace_ready() -> Result<(), String> {
    userspace_available(Path::new("/usr/bin/wireguard-go")).map_err(|e| e.to_string())?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root".into());
    }
    Ok(())
}

struct UserspaceRun {
    apply: Duration,
    tick_wall: Duration,
    tick_cpu: Duration,
    tick_wireguard_go_cpu: Duration,
    steady_writes: usize,
    wireguard_go_rss_kib: u64,
}

fn userspace(mesh: &Mesh, rep: usize) -> UserspaceRun {
    let keepalive = mesh.settings.persistent_keepalive;
    let interface = format!("wgb{}k{keepalive}r{rep}", std::process::id() % 10_000);
    let mut backend = UserspaceBackend::new(UserspaceConfig {
        output: ChildOutput::Null,
        io_timeout: Duration::from_secs(600),
        ..UserspaceConfig::new(&interface)
    });
    backend.ensure_device().unwrap();
    let mut settings = mesh.settings.clone();
    settings.listen_port = backend.read().unwrap().listen_port;
    let mesh = Mesh {
        members: mesh.members.clone(),
        settings,
        view: mesh.view.clone(),
    };

    let started = Instant::now();
    let observed = backend.read().unwrap();
    let update = diff_device(&observed, &mesh.desired(), SystemTime::now());
    backend.apply(&update).unwrap();
    let apply = started.elapsed();
    let request_bytes = render_set_request(&update).len();

    let pid = backend.child_pid().unwrap();
    let wireguard_go_rss_kib = rss_kib(&pid.to_string());
    let mut writes = 0;
    let (wall, cpu, wg_cpu) = (Instant::now(), thread_cpu(), process_cpu(pid));
    let mut observed = DeviceState::default();
    for _ in 0..STEADY_TICKS {
        observed = backend.read().unwrap();
        let update = diff_device(&observed, &mesh.desired(), SystemTime::now());
        if !update.is_empty() {
            backend.apply(&update).unwrap();
            writes += 1;
        }
    }
    let run = UserspaceRun {
        apply,
        tick_wall: wall.elapsed() / STEADY_TICKS,
        tick_cpu: (thread_cpu() - cpu) / STEADY_TICKS,
        tick_wireguard_go_cpu: (process_cpu(pid) - wg_cpu) / STEADY_TICKS,
        steady_writes: writes,
        wireguard_go_rss_kib,
    };
    assert_eq!(observed.peers.len(), usize::from(MEMBERS));
    println!(
        "keepalive {keepalive}: set=1 of {request_bytes} bytes in {apply:?}; steady tick {:?} wall, {:?} ours, {:?} wireguard-go; {writes} writes",
        run.tick_wall, run.tick_cpu, run.tick_wireguard_go_cpu
    );
    backend.remove_device().unwrap();
    run
}

/// The resident set of a process (`"self"` or a pid).
fn rss_kib(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, from /proc (clock ticks of 10 ms).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

#[derive(Default)]
struct Rows(Vec<String>);

impl Rows {
    fn push(&mut self, id: &str, scenario: &str, case: &str, unit: &str, samples: &[f64]) {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{scenario:<24} {case:<80} min {:>9.3} median {mid:>9.3} max {:>9.3} {unit}",
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        let samples: Vec<String> = samples.iter().map(|s| format!("{s:.4}")).collect();
        let mut row = String::new();
        write!(
            row,
            "{{\"id\": \"{id}\", \"scenario\": \"{scenario}\", \"case\": \"{}\", \"unit\": \"{unit}\", \"samples\": [{}]}}",
            case.replace('"', "'"),
            samples.join(", ")
        )
        .unwrap();
        self.0.push(row);
    }

    fn write(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!("{{\"rows\": [\n{}\n]}}\n", self.0.join(",\n")),
        )
        .unwrap();
    }
}
