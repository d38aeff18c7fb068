//! `--metrics-listen` as an operator uses it: a real Prometheus (Debian's `prometheus`) scrapes a
//! daemon in a two-node lab and is queried through its HTTP API; `promtool check metrics`
//! accepts a scraped body; a taken address stops `up` with an error naming it.
//! The lab needs root; run with `--features root-tests` (scripts/test.sh does).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, Node, wait_until};
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const FORMATION: Duration = Duration::from_secs(60);

/// Where node 1 serves metrics, and where Prometheus listens, both on the loopback of node 1's
/// namespace (fresh per lab, so fixed ports never collide with another lab or the host).
const METRICS: &str = "127.0.0.1:9586";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// `curl` inside a node's namespace: (status line and headers, body).
fn curl(node: &Node, url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["-sS", "--max-time", "5", "-D", "/dev/stderr", "-o", "-"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = node.exec("curl", &args);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One instant query through the Prometheus HTTP API; the `data.result` array.
fn query(node: &Node, promql: &str) -> Option<Vec<Value>> {
    let out = node.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-G",
            &format!("http://{PROMETHEUS}/api/v1/query"),
            "--data-urlencode",
            &format!("query={promql}"),
        ],
    );
    let json: Value = serde_json::from_slice(&out.stdout).ok()?;
    (json["status"] == "success").then(|| json["data"]["result"].as_array().cloned())?
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

/// Prometheus in a node's namespace; killed (by its own pid) when dropped.
struct Prometheus(Child);

impl Prometheus {
    fn start(node: &Node, dir: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: wgmesh\n    static_configs:\n      - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let data = dir.join("tsdb");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn prometheus_scrapes_a_mesh_node_and_promtool_accepts_the_metrics() {
    let mut lab = Lab::new(3);
    lab.nodes[0].start(&["--metrics-listen", METRICS]);
    let lan_metrics = format!("{}:9586", lab.nodes[1].lan_ip);
    lab.nodes[1].start(&["--metrics-listen", &lan_metrics, "--dht-bootstrap", "none"]);
    lab.nodes[2].start(&[]);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all nodes to ping each other", || {
        lab.all_pairs_ping()
    });
    let (node1, node2, node3) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let key = |node: &Node| node.status_ok()["public_key"].as_str().unwrap().to_owned();
    let (key2, key3) = (key(node2), key(node3));
    let (prefix2, prefix3) = (&key2[..8], &key3[..8]);
    // Per-peer labels: the key prefix, and the name as node 1's status shows it (the lab's
    // nodes share the host name, so all but the first verified carry their key prefix).
    let peers = node1.status_ok()["peers"].as_array().unwrap().clone();
    let labels = |key: &str| {
        let peer = peers.iter().find(|p| p["public_key"] == key).unwrap();
        match peer["name"].as_str() {
            Some(name) => format!("{{peer=\"{}\",name=\"{name}\"}}", &key[..8]),
            None => format!("{{peer=\"{}\"}}", &key[..8]),
        }
    };
    let (labels2, labels3) = (labels(&key2), labels(&key3));

    // Off by default: the node without the flag listens on no TCP port at all.
    let listening = node3.exec("ss", &["-Hltn"]);
    assert!(listening.status.success());
    assert_eq!(String::from_utf8_lossy(&listening.stdout).trim(), "");
    // Served on a LAN address when asked, with a warning that names it.
    assert!(
        node2.log().contains(&format!(
            "metrics served on {lan_metrics}, which is not a loopback address"
        )),
        "{}",
        node2.log()
    );
    let (head, body) = curl(node1, &format!("http://{lan_metrics}/metrics"), &[]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(body.contains("\nwgmesh_members 2\n"), "{body}");
    // DHT metrics only where the DHT runs (node 1 has one, with no bootstrap node reachable).
    assert!(!body.contains("wgmesh_dht_"), "{body}");

    // A plain client gets the Prometheus text format, which promtool accepts.
    let url = format!("http://{METRICS}/metrics");
    // Per-peer values come from the last reconcile pass (timer: 5 s) that saw the handshake.
    let took = wait_until(
        Duration::from_secs(15),
        "a pass that saw both handshakes",
        || {
            let body = curl(node1, &url, &[]).1;
            [&labels2, &labels3]
                .iter()
                .all(|labels| body.contains(&format!("wgmesh_peer_handshake_age_seconds{labels} ")))
        },
    );
    eprintln!("handshake age exposed {took:?} after the first ping");
    let (head, body) = curl(node1, &url, &[]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    eprintln!("scraped (text format 0.0.4):\n{body}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    for line in [
        format!("wgmesh_build_info{{version=\"{version}\"}} 1"),
        "wgmesh_members 2".to_owned(),
        "wgmesh_relayed_peers 0".to_owned(),
        "wgmesh_relay_offered 0".to_owned(),
        "wgmesh_exchange_drops_total{reason=\"bad_aead\"} 0".to_owned(),
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
    for prefix in [
        format!("wgmesh_peer_handshake_age_seconds{labels3} "),
        format!("wgmesh_peer_rx_bytes_total{labels2} "),
        format!("wgmesh_peer_tx_bytes_total{labels3} "),
        "wgmesh_exchange_aead_opens_total ".to_owned(),
        "wgmesh_reconcile_duration_seconds_count ".to_owned(),
        "wgmesh_reconcile_device_writes_total ".to_owned(),
        "wgmesh_reconcile_route_writes_total ".to_owned(),
        "wgmesh_dht_lookups_total ".to_owned(),
        "wgmesh_dht_announces_total{result=\"ok\"} ".to_owned(),
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(&prefix)),
            "no {prefix:?} in:\n{body}"
        );
    }
    // No secret material: the only key text is the 8-character prefix status prints.
    assert!(!body.contains(&key2[..12]) && !body.contains(&key3[..12]));
    // The reconcile totals are the ones `status --json` shows (equal once the mesh is steady).
    wait_until(
        Duration::from_secs(15),
        "metrics and status to agree",
        || {
            let reconcile = node1.status_ok()["reconcile"].clone();
            let body = curl(node1, &url, &[]).1;
            [
                ("device_writes", "wgmesh_reconcile_device_writes_total"),
                ("route_writes", "wgmesh_reconcile_route_writes_total"),
            ]
            .iter()
            .all(|(field, metric)| {
                body.lines()
                    .any(|l| l == format!("{metric} {}", reconcile[*field]))
            })
        },
    );

    // Prometheus asks for OpenMetrics and gets it.
    let (head, body) = curl(
        node1,
        &url,
        &["-H", "Accept: application/openmetrics-text;version=1.0.0"],
    );
    assert!(
        head.contains(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"));

    // Anything but /metrics is a 404; a malformed request a 400; neither stops the server.
    let (head, _) = curl(node1, &format!("http://{METRICS}/"), &[]);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    let (head, _) = curl(node1, &url, &["-X", "POST"]);
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    let garbage = node1.exec(
        "bash",
        &[
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9586; printf 'BREW /pot HTCPCP/1.0\\r\\n\\r\\n' >&3; head -c 12 <&3",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&garbage.stdout), "HTTP/1.1 400");

    // A real Prometheus scrapes it; its HTTP API answers queries.
    let prometheus = Prometheus::start(node1, lab.dir.path());
    let took = wait_until(
        Duration::from_secs(60),
        "Prometheus to see wgmesh_members 2",
        || query(node1, "wgmesh_members").is_some_and(|r| r.len() == 1 && value(&r[0]) == 2.0),
    );
    eprintln!("Prometheus had its first wgmesh_members sample after {took:?}");
    let raw = node1.exec(
        "curl",
        &[
            "-sS",
            &format!("http://{PROMETHEUS}/api/v1/query?query=wgmesh_members"),
        ],
    );
    eprintln!(
        "GET /api/v1/query?query=wgmesh_members -> {}",
        String::from_utf8_lossy(&raw.stdout)
    );
    let members = query(node1, "wgmesh_members").unwrap();
    assert_eq!(members[0]["metric"]["job"], "wgmesh");
    assert_eq!(members[0]["metric"]["instance"], METRICS);

    let build = query(node1, "wgmesh_build_info").unwrap();
    eprintln!("wgmesh_build_info -> {}", Value::from(build.clone()));
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0]["metric"]["version"], version);
    assert_eq!(value(&build[0]), 1.0);

    let peers = |series: &[Value]| {
        let mut labels: Vec<String> = series
            .iter()
            .map(|s| s["metric"]["peer"].as_str().unwrap().to_owned())
            .collect();
        labels.sort();
        labels
    };
    let mut expected = vec![prefix2.to_owned(), prefix3.to_owned()];
    expected.sort();
    let rx = query(node1, "wgmesh_peer_rx_bytes_total").unwrap();
    eprintln!("wgmesh_peer_rx_bytes_total -> {}", Value::from(rx.clone()));
    assert_eq!(peers(&rx), expected, "{rx:?}");
    assert!(rx.iter().all(|s| value(s) > 0.0), "{rx:?}");
    let age = query(node1, "wgmesh_peer_handshake_age_seconds").unwrap();
    assert_eq!(peers(&age), expected, "{age:?}");
    assert!(
        age.iter().all(|s| (0.0..180.0).contains(&value(s))),
        "{age:?}"
    );
    let passes = query(node1, "wgmesh_reconcile_duration_seconds_count").unwrap();
    assert!(value(&passes[0]) >= 1.0, "{passes:?}");
    let up = query(node1, "up{job=\"wgmesh\"}").unwrap();
    assert_eq!(value(&up[0]), 1.0, "{up:?}");
    drop(prometheus);
}

/// No root needed: the address is refused before `up` touches the interface.
#[test]
fn a_taken_metrics_address_stops_up_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let out = Command::new(common::wgmesh_bin())
        .arg("secret")
        .output()
        .unwrap();
    std::fs::write(&secret, out.stdout).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Held for the whole test, on every address, so the daemon cannot have it.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let addr = format!("0.0.0.0:{}", taken.local_addr().unwrap().port());
    let interface = format!("wgmt{}", std::process::id() % 100_000);
    let out = Command::new(common::wgmesh_bin())
        .args(["up", "--secret-file"])
        .arg(&secret)
        .args(["--interface", &interface, "--metrics-listen", &addr])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .env_remove("WGMESH_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    // Not loopback: warned about, by address, before the bind was tried.
    assert!(
        stderr.contains(&format!(
            "metrics served on {addr}, which is not a loopback address"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing was set up.
    let link = Command::new("ip")
        .args(["link", "show", &interface])
        .output()
        .unwrap();
    assert!(!link.status.success(), "interface {interface} was created");
    drop(taken);
}
