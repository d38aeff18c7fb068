use super::*;
use crate::members::tests::member;
use crate::{Accept, Member, Source};
use proptest::prelude::*;
use std::net::SocketAddr;
use wgmesh_keys::PresharedKey;

fn settings() -> DeviceSettings {
    DeviceSettings {
        private_key: PrivateKey::from_bytes_clamped([1; 32]),
        listen_port: 51820,
        preshared_key: PresharedKey::from_bytes([2; 32]),
        persistent_keepalive: 25,
    }
}

fn t0() -> Now {
    Now {
        wall: UNIX_EPOCH + Duration::from_secs(1_000_000),
        mono: Instant::now(),
    }
}

fn later(now: Now, by: Duration) -> Now {
    Now {
        wall: now.wall + by,
        mono: now.mono + by,
    }
}

fn endpoint(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The members' LAN: peers on it need no keepalive.
fn lan() -> Vec<IpNet> {
    vec!["192.0.2.0/24".parse().unwrap()]
}

struct World {
    settings: DeviceSettings,
    own_key: PublicKey,
    members: MemberTable,
    advertised: Vec<IpNet>,
    prefixes: Vec<IpNet>,
    refresh_endpoints: bool,
    hold_until: Option<Instant>,
    pending: Vec<PendingNudge>,
    policy: RoutePolicy,
}

impl World {
    fn new(members: &[Member]) -> Self {
        let mut table = MemberTable::default();
        for m in members {
            table.upsert(m.clone());
        }
        Self {
            settings: settings(),
            // Smaller than every test key: this end nudges new peers at once.
            own_key: PublicKey::from_bytes([0; 32]),
            members: table,
            advertised: Vec::new(),
            prefixes: vec!["10.1.0.0/16".parse().unwrap()],
            refresh_endpoints: false,
            hold_until: None,
            pending: Vec::new(),
            policy: RoutePolicy {
                accept: Accept::All,
                ..RoutePolicy::default()
            },
        }
    }

    fn state(&self) -> PlanState<'_> {
        PlanState {
            settings: &self.settings,
            own_key: self.own_key,
            members: &self.members,
            route_policy: &self.policy,
            servers: &[],
            mesh_prefixes: &self.prefixes,
            advertised: &self.advertised,
            refresh_endpoints: self.refresh_endpoints,
            hold_removals_until: self.hold_until,
            pending_nudges: &self.pending,
        }
    }

    fn plan(&self, observed: &Observed, now: Now) -> Plan {
        plan(observed, &self.state(), now)
    }
}

/// Applies a plan the way the daemon does: the device write, the end of the nudges, the routes.
fn apply(observed: &mut Observed, plan: &Plan) {
    if let Some(update) = plan.device_update() {
        observed.device.apply(&update);
    }
    if let Some(update) = plan.end_nudges() {
        observed.device.apply(&update);
    }
    if let Some(routes) = &mut observed.routes {
        for change in &plan.routes {
            match change {
                RouteChange::Add(r) => routes.push(*r),
                RouteChange::Remove(r) => routes.retain(|x| x != r),
            }
        }
        routes.sort();
    }
}

/// The device with every member applied and nothing pending: the steady state.
fn steady(world: &World, now: Now) -> Observed {
    let mut observed = Observed {
        routes: Some(Vec::new()),
        connected: lan(),
        gateways: Vec::new(),
        ..Observed::default()
    };
    let first = world.plan(&observed, now);
    apply(&mut observed, &first);
    observed
}

fn peer_of(m: &Member) -> PeerConfig {
    let mut config = PeerConfig {
        preshared_key: Some(PresharedKey::from_bytes([2; 32])),
        endpoint: m.endpoint,
        allowed_ips: vec![
            IpNet::from(std::net::IpAddr::V4(m.mesh_ipv4)),
            IpNet::from(std::net::IpAddr::V6(m.mesh_ipv6)),
        ],
        ..PeerConfig::new(m.public_key)
    };
    config.normalise();
    config
}

#[test]
fn a_steady_mesh_plans_nothing() {
    let world = World::new(&[member(1), member(2)]);
    let now = t0();
    let observed = steady(&world, now);
    assert_eq!(observed.device.peers.len(), 2);
    let again = world.plan(&observed, later(now, Duration::from_secs(5)));
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(again.device_update(), None);
    assert_eq!(again.end_nudges(), None);
}

#[test]
fn a_new_member_is_added_with_its_addresses_and_nudged_from_the_smaller_key() {
    let a = member(1);
    let world = World::new(std::slice::from_ref(&a));
    let observed = Observed {
        device: DeviceState {
            private_key: Some(settings().private_key),
            listen_port: 51820,
            peers: vec![],
        },
        routes: Some(vec![]),
        connected: lan(),
        gateways: Vec::new(),
    };
    let now = t0();
    let plan = world.plan(&observed, now);
    assert_eq!(
        plan.peers,
        [PeerDiff {
            public_key: a.public_key,
            old: None,
            new: Some(peer_of(&a)),
            endpoint: None,
            nudge: true,
            restart: false,
        }]
    );
    assert_eq!(plan.private_key, None);
    assert_eq!(plan.listen_port, None);
    let update = plan.device_update().unwrap();
    assert_eq!(
        update.peers[0],
        PeerUpdate {
            preshared_key: Some(PresharedKey::from_bytes([2; 32])),
            endpoint: a.endpoint,
            persistent_keepalive: Some(NUDGE_KEEPALIVE_SECS),
            replace_allowed_ips: true,
            allowed_ips: peer_of(&a).allowed_ips,
            ..PeerUpdate::new(a.public_key)
        }
    );
    assert_eq!(
        plan.end_nudges().unwrap().peers,
        [PeerUpdate {
            persistent_keepalive: Some(0),
            ..PeerUpdate::new(a.public_key)
        }]
    );
    // Again later, should that handshake not complete.
    assert_eq!(
        plan.pending_nudges,
        [PendingNudge {
            peer: a.public_key,
            due: now.mono + NUDGE_RETRY,
            retries_left: NUDGE_RETRIES,
        }]
    );
}

/// Crossed initiations leave both ends without a handshake, and WireGuard's own retry is skipped
/// (see [`NUDGE_RETRY`]): the smaller key restarts the handshake while none completes, re-creating
/// the peer each time, at growing intervals, a bounded number of times.
#[test]
fn the_smaller_key_restarts_the_handshake_while_none_completes_and_then_gives_up() {
    let a = member(1);
    let mut world = World::new(std::slice::from_ref(&a));
    let start = t0();
    let mut observed = Observed {
        connected: lan(),
        gateways: Vec::new(),
        ..Observed::default()
    };
    let first = world.plan(&observed, start);
    assert!(first.peers[0].nudge && !first.peers[0].restart);
    apply(&mut observed, &first);
    world.pending = first.pending_nudges.clone();
    let added = observed.device.peers[0].config.clone();
    let mut restarts_at = Vec::new();
    for step in 1..=80 {
        let now = later(start, Duration::from_secs(step));
        let plan = world.plan(&observed, now);
        if let Some(diff) = plan.peers.first() {
            assert_eq!(plan.peers.len(), 1);
            assert!(diff.nudge && diff.restart, "{diff:?}");
            // Removed, then added exactly as before with the nudge keepalive; then the
            // keepalive off again.
            let update = plan.device_update().unwrap();
            assert_eq!(update.peers.len(), 2);
            assert_eq!(update.peers[0], PeerUpdate::remove(a.public_key));
            assert_eq!(
                update.peers[1],
                PeerUpdate {
                    preshared_key: added.preshared_key.clone(),
                    endpoint: added.endpoint,
                    persistent_keepalive: Some(NUDGE_KEEPALIVE_SECS),
                    replace_allowed_ips: true,
                    allowed_ips: added.allowed_ips.clone(),
                    ..PeerUpdate::new(a.public_key)
                }
            );
            assert_eq!(plan.end_nudges().unwrap().peers.len(), 1);
            restarts_at.push(step);
        }
        apply(&mut observed, &plan);
        assert_eq!(observed.device.peers[0].config, added);
        world.pending = plan.pending_nudges.clone();
    }
    assert_eq!(restarts_at, [2, 6, 14, 30, 62]);
    assert!(world.pending.is_empty(), "{:?}", world.pending);

    // A handshake between two retries ends them.
    let mut world = World::new(std::slice::from_ref(&a));
    let mut observed = Observed {
        connected: lan(),
        gateways: Vec::new(),
        ..Observed::default()
    };
    let first = world.plan(&observed, start);
    apply(&mut observed, &first);
    observed.device.peers[0].last_handshake = Some(later(start, Duration::from_secs(3)).wall);
    world.pending = first.pending_nudges.clone();
    let plan = world.plan(&observed, later(start, NUDGE_RETRY));
    assert!(
        plan.is_empty() && plan.pending_nudges.is_empty(),
        "{plan:?}"
    );
}

#[test]
fn the_greater_key_nudges_only_if_no_handshake_happened_within_the_fallback() {
    let a = member(1);
    let mut world = World::new(std::slice::from_ref(&a));
    world.own_key = PublicKey::from_bytes([0xff; 32]);
    let now = t0();
    let mut observed = Observed {
        connected: lan(),
        gateways: Vec::new(),
        ..Observed::default()
    };
    let first = world.plan(&observed, now);
    assert!(!first.peers[0].nudge);
    let due = now.mono + NUDGE_FALLBACK;
    assert_eq!(
        first.pending_nudges,
        [PendingNudge {
            peer: a.public_key,
            due,
            retries_left: 0,
        }]
    );
    assert_eq!(first.next_wakeup(), Some(due));
    apply(&mut observed, &first);
    world.pending = first.pending_nudges.clone();

    // Not yet due: nothing.
    let early = world.plan(&observed, later(now, Duration::from_millis(100)));
    assert!(early.is_empty());
    assert_eq!(early.pending_nudges, world.pending);

    // Due, still no handshake: this end starts one, and only that is written.
    let fallback = world.plan(&observed, later(now, NUDGE_FALLBACK));
    let config = observed.device.peers[0].config.clone();
    assert_eq!(
        fallback.peers,
        [PeerDiff {
            public_key: a.public_key,
            old: Some(config.clone()),
            new: Some(config),
            endpoint: None,
            nudge: true,
            restart: false,
        }]
    );
    assert_eq!(
        fallback.device_update().unwrap().peers,
        [PeerUpdate {
            persistent_keepalive: Some(NUDGE_KEEPALIVE_SECS),
            ..PeerUpdate::new(a.public_key)
        }]
    );
    assert!(fallback.pending_nudges.is_empty() && !fallback.peers[0].restart);

    // Due, but the other end's initiation arrived (this end answered it): nothing, lest a
    // second initiation cross the handshake in progress.
    observed.device.peers[0].rx_bytes = 148;
    let answering = world.plan(&observed, later(now, NUDGE_FALLBACK));
    assert!(answering.is_empty() && answering.pending_nudges.is_empty());
    observed.device.peers[0].rx_bytes = 0;

    // Due, but the other end's handshake arrived: nothing.
    observed.device.peers[0].last_handshake = Some(now.wall);
    let answered = world.plan(&observed, later(now, NUDGE_FALLBACK));
    assert!(answered.is_empty() && answered.pending_nudges.is_empty());
}

#[test]
fn a_peer_that_needs_keepalive_is_not_nudged() {
    let mut far = member(1);
    far.endpoint = Some(endpoint("203.0.113.1:51820"));
    let world = World::new(&[far]);
    let plan = world.plan(
        &Observed {
            connected: lan(),
            gateways: Vec::new(),
            ..Observed::default()
        },
        t0(),
    );
    assert!(!plan.peers[0].nudge);
    assert!(plan.pending_nudges.is_empty());
    assert_eq!(plan.peers[0].update().persistent_keepalive, Some(25));
    assert_eq!(plan.end_nudges(), None);
}

#[test]
fn a_member_that_left_is_removed_with_its_old_config() {
    let (a, b) = (member(1), member(2));
    let mut world = World::new(&[a.clone(), b.clone()]);
    let now = t0();
    let observed = steady(&world, now);
    world.members.remove(&b.public_key);
    let plan = world.plan(&observed, now);
    assert_eq!(
        plan.peers,
        [PeerDiff {
            public_key: b.public_key,
            old: Some(peer_of(&b)),
            new: None,
            endpoint: None,
            nudge: false,
            restart: false,
        }]
    );
    assert_eq!(
        plan.device_update().unwrap().peers,
        [PeerUpdate::remove(b.public_key)]
    );
}

#[test]
fn the_removal_hold_keeps_peers_and_routes_until_it_ends() {
    let mut a = member(1);
    a.routes = vec!["172.16.5.0/24".parse().unwrap()];
    let mut world = World::new(std::slice::from_ref(&a));
    let now = t0();
    let observed = steady(&world, now);
    assert_eq!(
        observed.routes,
        Some(vec!["172.16.5.0/24".parse().unwrap()])
    );
    world.members.remove(&a.public_key);
    world.hold_until = Some(now.mono + Duration::from_secs(30));
    let held = world.plan(&observed, later(now, Duration::from_secs(29)));
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(held.held_removals, 2);
    let after = world.plan(&observed, later(now, Duration::from_secs(30)));
    assert_eq!(after.held_removals, 0);
    assert_eq!(after.peers.len(), 1);
    assert!(after.peers[0].new.is_none());
    assert_eq!(
        after.routes,
        [RouteChange::Remove("172.16.5.0/24".parse().unwrap())]
    );
}

#[test]
fn a_recent_handshake_keeps_the_roamed_endpoint_until_the_session_is_stale() {
    let a = member(1);
    let world = World::new(std::slice::from_ref(&a));
    let now = t0();
    let mut observed = steady(&world, now);
    let roamed = endpoint("198.51.100.7:40000");
    observed.device.peers[0].config.endpoint = Some(roamed);
    observed.device.peers[0].last_handshake = Some(now.wall - Duration::from_secs(30));
    let held = world.plan(&observed, now);
    assert!(held.is_empty());
    // The pass that may write it is due when the handshake ages past the grace, not at the
    // next safety pass.
    assert_eq!(
        held.next_wakeup(),
        Some(now.mono + ROAMING_GRACE - Duration::from_secs(30))
    );

    observed.device.peers[0].last_handshake = Some(now.wall - ROAMING_GRACE);
    let plan = world.plan(&observed, now);
    let mut old = peer_of(&a);
    old.endpoint = Some(roamed);
    assert_eq!(
        plan.peers,
        [PeerDiff {
            public_key: a.public_key,
            old: Some(old),
            new: Some(peer_of(&a)),
            endpoint: Some(EndpointWrite::NoRecentHandshake),
            nudge: false,
            restart: false,
        }]
    );
    assert_eq!(
        plan.device_update().unwrap().peers,
        [PeerUpdate {
            endpoint: a.endpoint,
            ..PeerUpdate::new(a.public_key)
        }]
    );
}

#[test]
fn a_member_verified_from_a_new_address_after_the_handshake_is_followed() {
    let mut a = member(1);
    let mut world = World::new(std::slice::from_ref(&a));
    let now = t0();
    let mut observed = steady(&world, now);
    let handshake = now.wall - Duration::from_secs(10);
    observed.device.peers[0].last_handshake = Some(handshake);
    let handshake_ms = 1_000_000_000 - 10_000;

    // It moved before that handshake: the handshake vouches for the current endpoint.
    a.endpoint = Some(endpoint("192.0.2.99:51820"));
    a.moved_at_ms = handshake_ms - 1;
    world.members = MemberTable::default();
    world.members.upsert(a.clone());
    assert!(world.plan(&observed, now).is_empty());

    // It moved after it (e.g. a relayed member whose direct path answered): follow it.
    world.members = MemberTable::default();
    a.moved_at_ms = handshake_ms + 1;
    world.members.upsert(a.clone());
    let plan = world.plan(&observed, now);
    assert_eq!(plan.peers.len(), 1);
    assert_eq!(plan.peers[0].endpoint, Some(EndpointWrite::Moved));
    assert_eq!(
        plan.peers[0].new.as_ref().and_then(|p| p.endpoint),
        a.endpoint
    );
}

#[test]
fn a_relayed_member_whose_direct_path_answered_leaves_the_relay_port_at_once() {
    let mut relay = member(1);
    relay.relay_offered = true;
    let mut far = member(2);
    far.relay_via = Some(relay.public_key);
    far.relay_endpoint = Some(endpoint("192.0.2.1:40001"));
    let mut world = World::new(&[relay.clone(), far.clone()]);
    let now = t0();
    let mut observed = steady(&world, now);
    // Relayed: its own peer behind the relay's port; the relay's peer holds its own addresses.
    let mut via_port = peer_of(&far);
    via_port.endpoint = far.relay_endpoint;
    via_port.persistent_keepalive = Some(25);
    assert_eq!(
        observed
            .device
            .peers
            .iter()
            .map(|p| p.config.clone())
            .collect::<Vec<_>>(),
        [peer_of(&relay), via_port.clone()]
    );
    // The pair handshook through the relay a moment ago.
    for peer in &mut observed.device.peers {
        peer.last_handshake = Some(now.wall - Duration::from_secs(5));
    }

    // The first direct exchange ends the relaying: a new path, so the endpoint moves although
    // the relayed session is fresh (issue 14's one exception to "never rewrite a recently
    // handshaken endpoint": the direct path has just answered).
    far.relay_via = None;
    far.relay_endpoint = None;
    far.last_seen_ms = 1_000_000_000;
    world.members.upsert(far.clone());
    let plan = world.plan(&observed, now);
    assert_eq!(plan.peers.len(), 1, "{:?}", plan.peers);
    assert_eq!(plan.peers[0].public_key, far.public_key);
    assert_eq!(plan.peers[0].endpoint, Some(EndpointWrite::Moved));
    assert_eq!(
        plan.peers[0].new.as_ref().and_then(|p| p.endpoint),
        far.endpoint
    );
}

#[test]
fn changed_host_addresses_rewrite_every_kept_endpoint_unchanged() {
    let (a, b) = (member(1), member(2));
    let mut world = World::new(&[a.clone(), b.clone()]);
    let now = t0();
    let observed = steady(&world, now);
    world.refresh_endpoints = true;
    let plan = world.plan(&observed, now);
    assert_eq!(plan.peers.len(), 2);
    for (diff, m) in plan.peers.iter().zip([&a, &b]) {
        assert_eq!(diff.old, diff.new);
        assert_eq!(diff.endpoint, Some(EndpointWrite::Refresh));
        assert_eq!(
            diff.update(),
            PeerUpdate {
                endpoint: m.endpoint,
                ..PeerUpdate::new(m.public_key)
            }
        );
    }
}

#[test]
fn accepted_routes_become_allowed_ips_and_routes() {
    let mut a = member(1);
    let world = World::new(std::slice::from_ref(&a));
    let now = t0();
    let observed = steady(&world, now);
    a.routes = vec![
        "172.16.5.0/24".parse().unwrap(),
        "0.0.0.0/0".parse().unwrap(),
    ];
    let mut world = World::new(std::slice::from_ref(&a));
    world.pending.clear();
    let plan = world.plan(&observed, now);
    let mut new = peer_of(&a);
    new.allowed_ips.push("172.16.5.0/24".parse().unwrap());
    new.normalise();
    assert_eq!(plan.peers.len(), 1);
    assert_eq!(plan.peers[0].old, Some(peer_of(&a)));
    assert_eq!(plan.peers[0].new, Some(new.clone()));
    assert_eq!(plan.peers[0].endpoint, None);
    assert_eq!(
        plan.peers[0].update(),
        PeerUpdate {
            replace_allowed_ips: true,
            allowed_ips: new.allowed_ips,
            ..PeerUpdate::new(a.public_key)
        }
    );
    assert_eq!(
        plan.routes,
        [RouteChange::Add("172.16.5.0/24".parse().unwrap())]
    );
    assert_eq!(plan.accepted.rejected.len(), 1);
}

#[test]
fn unreadable_routes_plan_no_route_change() {
    let mut a = member(1);
    a.routes = vec!["172.16.5.0/24".parse().unwrap()];
    let world = World::new(&[a]);
    let plan = world.plan(
        &Observed {
            routes: None,
            ..Observed::default()
        },
        t0(),
    );
    assert!(plan.routes.is_empty());
    assert_eq!(plan.peers.len(), 1);
}

#[test]
fn a_new_key_or_port_is_written_and_then_left_alone() {
    let world = World::new(&[]);
    let now = t0();
    let mut observed = Observed::default();
    let plan = world.plan(&observed, now);
    assert_eq!(plan.private_key, Some(settings().private_key));
    assert_eq!(plan.listen_port, Some(51820));
    apply(&mut observed, &plan);
    assert!(world.plan(&observed, now).is_empty());
}

// --- properties ---------------------------------------------------------------------------

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn arb_endpoint() -> impl Strategy<Value = SocketAddr> {
    (
        prop_oneof![Just([192u8, 0, 2]), Just([203u8, 0, 113])],
        1u8..4,
    )
        .prop_map(|(net, host)| SocketAddr::from(([net[0], net[1], net[2], host], 51820)))
}

fn arb_route() -> impl Strategy<Value = IpNet> {
    (0u8..4, prop_oneof![Just(16u8), Just(24)])
        .prop_map(|(n, len)| IpNet::new([172, 16, n, 0].into(), len).unwrap().trunc())
}

/// A member with key `n` (1..=6): endpoint, routes, a move time, maybe relayed.
fn arb_member(n: u8) -> impl Strategy<Value = Member> {
    (
        proptest::option::of(arb_endpoint()),
        proptest::collection::vec(arb_route(), 0..3),
        prop_oneof![Just(0u64), 999_000_000u64..1_000_001_000],
        proptest::option::weighted(0.2, 1u8..=6),
        any::<bool>(),
    )
        .prop_map(
            move |(endpoint, routes, moved_at_ms, relay, relay_offered)| {
                let mut m = member(n);
                m.endpoint = endpoint;
                m.routes = routes;
                m.moved_at_ms = moved_at_ms;
                m.relay_via = relay.filter(|r| *r != n).map(key);
                m.relay_offered = relay_offered;
                m.source = Source::Lan;
                m
            },
        )
}

fn arb_members() -> impl Strategy<Value = Vec<Member>> {
    proptest::collection::vec(any::<bool>(), 6).prop_flat_map(|present| {
        present
            .into_iter()
            .enumerate()
            .filter(|(_, p)| *p)
            .map(|(i, _)| arb_member(i as u8 + 1))
            .collect::<Vec<_>>()
    })
}

/// A device peer with key `n` (1..=7; 7 is never a member), and its handshake age in seconds.
fn arb_device_peer() -> impl Strategy<Value = (PeerState, Option<u64>)> {
    (
        1u8..=7,
        proptest::option::of(arb_endpoint()),
        proptest::collection::vec(arb_route(), 0..3),
        proptest::option::of(1u16..60),
        any::<bool>(),
        proptest::option::of(0u64..400),
    )
        .prop_map(|(n, endpoint, allowed_ips, keepalive, psk, age)| {
            let config = PeerConfig {
                preshared_key: psk.then(|| PresharedKey::from_bytes([2; 32])),
                endpoint,
                allowed_ips,
                persistent_keepalive: keepalive,
                ..PeerConfig::new(key(n))
            };
            (PeerState::new(config), age)
        })
}

fn arb_observed() -> impl Strategy<Value = Observed> {
    (
        proptest::collection::vec(arb_device_peer(), 0..7),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(arb_route(), 0..3)),
    )
        .prop_map(|(peers, right_key, routes)| {
            let now = t0();
            let mut device = DeviceState {
                private_key: right_key.then(|| settings().private_key),
                listen_port: if right_key { 51820 } else { 1 },
                peers: Vec::new(),
            };
            for (mut peer, age) in peers {
                if device.peer(&peer.config.public_key).is_some() {
                    continue;
                }
                peer.last_handshake = age.map(|s| now.wall - Duration::from_secs(s));
                device.peers.push(peer);
            }
            device.normalise();
            Observed {
                device,
                routes: routes.map(|mut r| {
                    r.sort();
                    r.dedup();
                    r
                }),
                connected: lan(),
                gateways: Vec::new(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Applying the plan reaches the desired device (with the documented exceptions), a second
    /// plan is empty, a recently handshaken peer's endpoint only changes for a member that
    /// moved after that handshake, and the removal hold removes nothing.
    #[test]
    fn a_plan_reaches_the_desired_state_and_a_second_plan_is_empty(
        members in arb_members(),
        observed in arb_observed(),
        own in any::<u8>(),
        refresh in any::<bool>(),
        hold in any::<bool>(),
        pending_age in proptest::collection::vec(proptest::option::of(0u64..1000), 7),
    ) {
        let now = t0();
        let mut world = World::new(&members);
        world.own_key = PublicKey::from_bytes([own; 32]);
        world.refresh_endpoints = refresh;
        world.hold_until = hold.then(|| now.mono + Duration::from_secs(1));
        // Some peers were nudge candidates in an earlier pass (due or not).
        world.pending = pending_age
            .iter()
            .enumerate()
            .filter_map(|(i, age)| {
                let age = Duration::from_millis((*age)?);
                Some(PendingNudge {
                    peer: key(i as u8 + 1),
                    due: now.mono + NUDGE_FALLBACK - age,
                    retries_left: (i % 2) as u8,
                })
            })
            .collect();
        let first = world.plan(&observed, now);
        let mut after = observed.clone();
        apply(&mut after, &first);

        // What each changed peer holds afterwards is exactly the diff's `new`.
        for diff in &first.peers {
            prop_assert_eq!(
                after.device.peer(&diff.public_key).map(|p| p.config.clone()),
                diff.new.clone()
            );
        }

        // The desired device, with the documented exceptions.
        let view = crate::plan::local_view(&observed, &world.state());
        let accepted = accept_routes(&view, &world.members);
        let desired = desired_device(&world.settings, &world.members, &accepted, &view.connected);
        prop_assert_eq!(after.device.private_key.as_ref(), Some(&desired.private_key));
        prop_assert_eq!(after.device.listen_port, desired.listen_port);
        for want in &desired.peers {
            let got = after.device.peer(&want.public_key).map(|p| p.config.clone());
            prop_assert!(got.is_some(), "desired peer missing");
            let got = got.unwrap_or_else(|| PeerConfig::new(want.public_key));
            prop_assert_eq!(&got.allowed_ips, &want.allowed_ips);
            prop_assert_eq!(got.persistent_keepalive, want.persistent_keepalive);
            prop_assert_eq!(&got.preshared_key, &want.preshared_key);
            let before = observed.device.peer(&want.public_key);
            let recent = before
                .and_then(|p| p.last_handshake)
                .filter(|at| now.wall.duration_since(*at).is_ok_and(|a| a < ROAMING_GRACE));
            match (want.endpoint, recent) {
                (None, _) => prop_assert_eq!(got.endpoint, before.and_then(|p| p.config.endpoint)),
                (Some(e), None) => prop_assert_eq!(got.endpoint, Some(e)),
                (Some(e), Some(at)) => {
                    let moved = moved_since(&world.members, &want.public_key, at);
                    let kept = before.and_then(|p| p.config.endpoint);
                    prop_assert_eq!(got.endpoint, if moved { Some(e) } else { kept });
                }
            }
        }
        let wanted: HashSet<PublicKey> = desired.peers.iter().map(|p| p.public_key).collect();
        for peer in &after.device.peers {
            prop_assert!(hold || wanted.contains(&peer.config.public_key), "undesired peer kept");
        }
        if hold {
            // Nothing removed: every observed peer is still there, and every owned route.
            for peer in &observed.device.peers {
                prop_assert!(after.device.peer(&peer.config.public_key).is_some());
            }
            prop_assert!(first.routes.iter().all(|c| matches!(c, RouteChange::Add(_))));
        }
        if let (Some(routes), Some(_)) = (&after.routes, &observed.routes) {
            let mut want = accepted.all();
            want.sort();
            want.dedup();
            if !hold {
                prop_assert_eq!(routes, &want);
            }
        }

        // Endpoints of recently handshaken peers: only rewritten to follow a moved member, or
        // re-written unchanged.
        for diff in &first.peers {
            let (Some(old), Some(new)) = (&diff.old, &diff.new) else { continue };
            let Some(at) = observed.device.peer(&diff.public_key).and_then(|p| p.last_handshake)
            else { continue };
            if now.wall.duration_since(at).is_ok_and(|a| a < ROAMING_GRACE) && old.endpoint != new.endpoint {
                prop_assert_eq!(diff.endpoint, Some(EndpointWrite::Moved));
                prop_assert!(moved_since(&world.members, &diff.public_key, at));
            }
        }

        // A second plan, with the flag taken and the nudges carried over, is empty.
        world.refresh_endpoints = false;
        world.pending = first.pending_nudges.clone();
        let second = world.plan(&after, now);
        prop_assert!(second.is_empty(), "second plan: {:?}", second);
        prop_assert_eq!(second.pending_nudges, first.pending_nudges);
    }
}
