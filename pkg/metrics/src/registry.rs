//! The registry and the two exposition formats.

use crate::snapshot::{MeshSnapshot, PeerSample};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt;
use std::time::Duration;

/// Where a scrape's snapshot comes from. Called on every scrape, on the serving task: it must
/// only copy values (short locks, no IO), so a scrape never waits for a reconcile pass.
pub trait SnapshotSource: Send + Sync + fmt::Debug + 'static {
    fn snapshot(&self) -> MeshSnapshot;
}

/// Bucket bounds of `wgmesh_reconcile_duration_seconds`. A pass is a few netlink or UAPI round
/// trips (milliseconds); the upper buckets catch a wireguard-go that is slow to answer.
pub const RECONCILE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The exposition formats a scraper can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: the default for any other client (curl, promtool).
    Text,
}

impl Format {
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// Content negotiation on the `Accept` header: OpenMetrics if the client lists it with a
    /// non-zero quality, the Prometheus text format otherwise (as the Go client library does).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let zero_quality = parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !zero_quality
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// The daemon's metrics: one collector, so the families come out in a fixed order.
#[derive(Debug)]
pub struct MeshMetrics {
    registry: Registry,
    reconcile_duration: Histogram,
}

impl MeshMetrics {
    /// `version` goes into `wgmesh_build_info`; `source` is asked for a snapshot per scrape.
    pub fn new(version: &str, source: impl SnapshotSource) -> Self {
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MeshCollector {
            version: version.to_owned(),
            source: Box::new(source),
            reconcile_duration: reconcile_duration.clone(),
        }));
        Self {
            registry,
            reconcile_duration,
        }
    }

    /// Records how long one reconcile pass took.
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// The exposition of a fresh snapshot.
    pub fn encode(&self, format: Format) -> Result<String, fmt::Error> {
        let mut text = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
            }
        }
        Ok(text)
    }
}

#[derive(Debug)]
struct MeshCollector {
    version: String,
    source: Box<dyn SnapshotSource>,
    reconcile_duration: Histogram,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One sample of a per-item family.
enum Sample {
    Count(u64),
    Value(f64),
}

/// A family with one sample per item; `value` gives the item's sample, or none.
fn per_item<T, L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    items: &[T],
    labels: impl Fn(&T) -> L,
    value: impl Fn(&T) -> Option<Sample>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for item in items {
        let Some(value) = value(item) else {
            continue;
        };
        let labels = labels(item);
        let metric = family.encode_family(&labels)?;
        match value {
            Sample::Count(count) => ConstCounter::new(count).encode(metric)?,
            Sample::Value(value) => ConstGauge::new(value).encode(metric)?,
        }
    }
    Ok(())
}

impl Collector for MeshCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.source.snapshot();
        let enc = &mut encoder;
        let build = [("version", self.version.as_str())];
        {
            let mut family = enc.encode_descriptor(
                "wgmesh_build_info",
                "The wgmesh version running; always 1",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1).encode(family.encode_family(&build)?)?;
        }
        gauge(
            enc,
            "wgmesh_members",
            "Verified members in the member table",
            snapshot.members,
        )?;
        let mut peers: Vec<&PeerSample> = snapshot.peers.iter().collect();
        peers.sort_by(|a, b| (&a.peer, &a.name).cmp(&(&b.peer, &b.name)));
        per_item(
            enc,
            (
                "wgmesh_peer_handshake_age_seconds",
                "Seconds since the last WireGuard handshake with the peer (no sample before the first)",
                MetricType::Gauge,
            ),
            &peers,
            |p| p.labels(),
            |p| p.handshake_age_seconds.map(Sample::Value),
        )?;
        per_item(
            enc,
            (
                "wgmesh_peer_rx_bytes",
                "Bytes received from the peer, as WireGuard counts them",
                MetricType::Counter,
            ),
            &peers,
            |p| p.labels(),
            |p| Some(Sample::Count(p.rx_bytes)),
        )?;
        per_item(
            enc,
            (
                "wgmesh_peer_tx_bytes",
                "Bytes sent to the peer, as WireGuard counts them",
                MetricType::Counter,
            ),
            &peers,
            |p| p.labels(),
            |p| Some(Sample::Count(p.tx_bytes)),
        )?;
        per_item(
            enc,
            (
                "wgmesh_exchange_drops",
                "Control-port datagrams dropped, by reason",
                MetricType::Counter,
            ),
            &snapshot.exchange_drops,
            |(reason, _)| [("reason", *reason)],
            |(_, count)| Some(Sample::Count(*count)),
        )?;
        counter(
            enc,
            "wgmesh_exchange_aead_opens",
            "Control-port datagrams that passed the rate limit and header checks and cost an AEAD open",
            snapshot.exchange_aead_opens,
        )?;
        {
            let metric = enc.encode_descriptor(
                "wgmesh_reconcile_duration_seconds",
                "Duration of reconcile passes (observe, diff, apply)",
                None,
                MetricType::Histogram,
            )?;
            self.reconcile_duration.encode(metric)?;
        }
        counter(
            enc,
            "wgmesh_reconcile_device_writes",
            "Writes to the WireGuard device by reconcile passes",
            snapshot.reconcile.device_writes,
        )?;
        counter(
            enc,
            "wgmesh_reconcile_route_writes",
            "Routes added or removed by reconcile passes",
            snapshot.reconcile.route_writes,
        )?;
        if let Some(dht) = snapshot.dht {
            counter(
                enc,
                "wgmesh_dht_lookups",
                "DHT lookup rounds completed (three hourly infohashes each)",
                dht.lookups,
            )?;
            let announces = [("ok", dht.announces_ok), ("failed", dht.announces_failed)];
            per_item(
                enc,
                (
                    "wgmesh_dht_announces",
                    "DHT announces of the control port, by result (ok: reached at least one node)",
                    MetricType::Counter,
                ),
                &announces,
                |(result, _)| [("result", *result)],
                |(_, count)| Some(Sample::Count(*count)),
            )?;
        }
        gauge(
            enc,
            "wgmesh_relayed_peers",
            "Members whose traffic goes through a relaying member",
            snapshot.relayed_peers,
        )?;
        gauge(
            enc,
            "wgmesh_relay_offered",
            "1 if this node offers to relay for other members (--relay), else 0",
            u64::from(snapshot.relay_offered),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{DhtTotals, ReconcileTotals};

    #[derive(Debug)]
    struct Fixed(MeshSnapshot);

    impl SnapshotSource for Fixed {
        fn snapshot(&self) -> MeshSnapshot {
            self.0.clone()
        }
    }

    fn sample() -> MeshSnapshot {
        MeshSnapshot {
            members: 2,
            peers: vec![
                PeerSample {
                    peer: "zYx+/abc".to_owned(),
                    name: None,
                    handshake_age_seconds: None,
                    rx_bytes: 0,
                    tx_bytes: 148,
                },
                PeerSample {
                    peer: "AbC+/def".to_owned(),
                    name: Some("db \"1\"\n".to_owned()),
                    handshake_age_seconds: Some(12.0),
                    rx_bytes: 1_234,
                    tx_bytes: 5_678,
                },
            ],
            exchange_drops: vec![("rate_limited", 0), ("bad_aead", 3)],
            exchange_aead_opens: 42,
            reconcile: ReconcileTotals {
                device_writes: 4,
                route_writes: 1,
            },
            dht: Some(DhtTotals {
                lookups: 7,
                announces_ok: 2,
                announces_failed: 1,
            }),
            relayed_peers: 1,
            relay_offered: true,
        }
    }

    fn metrics(snapshot: MeshSnapshot) -> MeshMetrics {
        MeshMetrics::new("1.2.3", Fixed(snapshot))
    }

    #[test]
    fn the_text_format_has_every_metric_with_its_labels() {
        let m = metrics(sample());
        m.observe_reconcile(Duration::from_millis(3));
        m.observe_reconcile(Duration::from_millis(700));
        let text = m.encode(Format::Text).unwrap();
        for line in [
            "# TYPE wgmesh_build_info gauge",
            "wgmesh_build_info{version=\"1.2.3\"} 1",
            "# TYPE wgmesh_members gauge",
            "wgmesh_members 2",
            "# TYPE wgmesh_peer_handshake_age_seconds gauge",
            "wgmesh_peer_handshake_age_seconds{peer=\"AbC+/def\",name=\"db \\\"1\\\"\\n\"} 12.0",
            "# TYPE wgmesh_peer_rx_bytes_total counter",
            "wgmesh_peer_rx_bytes_total{peer=\"AbC+/def\",name=\"db \\\"1\\\"\\n\"} 1234",
            "wgmesh_peer_rx_bytes_total{peer=\"zYx+/abc\"} 0",
            "wgmesh_peer_tx_bytes_total{peer=\"zYx+/abc\"} 148",
            "# TYPE wgmesh_exchange_drops_total counter",
            "wgmesh_exchange_drops_total{reason=\"rate_limited\"} 0",
            "wgmesh_exchange_drops_total{reason=\"bad_aead\"} 3",
            "wgmesh_exchange_aead_opens_total 42",
            "# TYPE wgmesh_reconcile_duration_seconds histogram",
            "wgmesh_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
            "wgmesh_reconcile_duration_seconds_bucket{le=\"1\"} 2",
            "wgmesh_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "wgmesh_reconcile_duration_seconds_count 2",
            "wgmesh_reconcile_device_writes_total 4",
            "wgmesh_reconcile_route_writes_total 1",
            "wgmesh_dht_lookups_total 7",
            "wgmesh_dht_announces_total{result=\"ok\"} 2",
            "wgmesh_dht_announces_total{result=\"failed\"} 1",
            "wgmesh_relayed_peers 1",
            "wgmesh_relay_offered 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // A peer without a handshake has no age sample (rather than a made-up 0).
        assert!(!text.contains("wgmesh_peer_handshake_age_seconds{peer=\"zYx+/abc\""));
        // Peers come out sorted by label, whatever order the daemon listed them in.
        let first = text.find("peer=\"AbC+/def\"").unwrap();
        assert!(first < text.find("peer=\"zYx+/abc\"").unwrap());
        assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
    }

    #[test]
    fn openmetrics_names_families_without_the_total_suffix_and_ends_with_eof() {
        let text = metrics(sample()).encode(Format::OpenMetrics).unwrap();
        assert!(
            text.contains("# TYPE wgmesh_peer_rx_bytes counter\n"),
            "{text}"
        );
        assert!(text.contains("\nwgmesh_peer_rx_bytes_total{peer=\"zYx+/abc\"} 0\n"));
        assert!(text.contains("wgmesh_build_info{version=\"1.2.3\"} 1\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn without_a_dht_there_are_no_dht_metrics() {
        let text = metrics(MeshSnapshot::default())
            .encode(Format::Text)
            .unwrap();
        assert!(!text.contains("wgmesh_dht"), "{text}");
        assert!(text.contains("\nwgmesh_members 0\n"));
        assert!(text.contains("\nwgmesh_relay_offered 0\n"));
        assert!(text.contains("\nwgmesh_reconcile_duration_seconds_count 0\n"));
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = metrics(sample()).encode(Format::Text).unwrap();
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let helps: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        assert_eq!(types.len(), 14, "{text}");
        assert_eq!(types.len(), helps.len());
        for (t, h) in types.iter().zip(&helps) {
            let name = t.split(' ').next().unwrap();
            assert!(h.starts_with(name), "{t} / {h}");
            assert!(name.starts_with("wgmesh_"));
        }
    }

    #[test]
    fn content_negotiation_follows_the_accept_header() {
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; q=0.3")),
            Format::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("application/openmetrics-text;q=0"),
            Some(""),
            Some(";;,,;q=x"),
        ] {
            assert_eq!(Format::negotiate(accept), Format::Text, "{accept:?}");
        }
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            Format::OpenMetrics
                .content_type()
                .starts_with("application/openmetrics-text; version=1.0.0")
        );
    }
}
