//! Relaying, TURN-style (issue 14): the exchange side of a relayed pair, on both ends and on
//! the relay.
//!
//! A member whose second-hand peer did not answer directly in time asks a relay (chosen by
//! [`relay::choose_relay`]) to carry the pair ([`RelayAsk`]). The relay, if it relays and
//! reaches the peer directly, has its shell allocate one UDP port per member of the pair
//! ([`Event::RelayAsked`], answered through [`Membership::relay_allocated`]) and grants the
//! asker its port; it offers the peer the other one, with the asker's gossip entry. Each end then
//! installs the other as its own WireGuard peer (its /32 and /128 only, DESIGN.md §8 item 4)
//! with the relay's port as endpoint, so the WireGuard session runs end to end and the relay
//! forwards ciphertext it cannot read. The other end's proof comes through that tunnel; only
//! then does it become a member with routes. Both ends of a pair normally choose the same relay;
//! if they chose different ones, each takes the offer of the better-ranked relay
//! ([`relay::relay_rank`]), so they meet.

use super::Membership;
use crate::direct;
use crate::event::Event;
use crate::gossip;
use crate::punch::{PUNCH_RETRIES, TUNNEL_RETRIES};
use crate::relay::{self, RELAY_REFRESH, TRIAL_PROBES};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wgmesh_exchange::{
    EXT_PUNCH, EXT_RELAY_ASK, EXT_RELAY_GRANT, EXT_RELAY_REFUSED, Extension, GossipEntry,
    GrantRole, Punch, RefusalReason, RelayAsk, RelayGrant, RelayRefused,
};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberChange};

/// A relay's offer for a member we reach directly is taken once the member has not answered
/// on its direct path for this long (its own end found that path dead, or it would not have
/// asked): one liveness interval.
const DIRECT_QUIET: Duration = crate::liveness::PROBE_INTERVAL;

impl Membership {
    /// A relay extension in gossip from the verified member `sender` (at `from`).
    pub(super) fn on_relay_extension(
        &mut self,
        now: Instant,
        wall_ms: u64,
        sender: PublicKey,
        from: SocketAddr,
        extension: &Extension,
        entries: &[GossipEntry],
    ) {
        match extension.kind {
            EXT_RELAY_ASK => {
                if let Some(ask) = RelayAsk::decode(&extension.value) {
                    self.on_relay_ask(wall_ms, sender, from, ask);
                }
            }
            EXT_RELAY_GRANT => {
                if let Some(grant) = RelayGrant::decode(&extension.value) {
                    self.on_relay_grant(now, wall_ms, sender, from, grant, entries);
                }
            }
            EXT_RELAY_REFUSED => {
                if let Some(refused) = RelayRefused::decode(&extension.value) {
                    self.on_relay_refused(sender, refused);
                }
            }
            EXT_PUNCH => {
                if let Some(punch) = Punch::decode(&extension.value) {
                    self.on_punch(now, wall_ms, sender, punch);
                }
            }
            _ => {}
        }
    }

    // ---- On the relay ----

    /// A member asks us to carry its traffic to `ask.peer`: only if we relay, and only to a
    /// member we reach directly and do not suspect.
    fn on_relay_ask(&mut self, wall_ms: u64, asker: PublicKey, from: SocketAddr, ask: RelayAsk) {
        let refusal = if !self.exchange.record().relay_offered() {
            Some(RefusalReason::NotARelay)
        } else {
            let peer = self.members.get(&ask.peer).filter(|m| {
                m.relay_via.is_none()
                    && m.endpoint.is_some()
                    && !self.liveness.is_suspect(&m.public_key)
            });
            match peer.and_then(|m| m.control_addr) {
                Some(peer_control) if ask.peer != asker => {
                    self.push_event(Event::RelayAsked {
                        asker,
                        asker_ip: from.ip(),
                        peer: ask.peer,
                        peer_ip: peer_control.ip(),
                    });
                    None
                }
                _ => Some(RefusalReason::PeerUnknown),
            }
        };
        if let Some(reason) = refusal {
            let value = RelayRefused {
                peer: ask.peer,
                reason,
            }
            .encode();
            self.send_relay_extension(wall_ms, from, &[], EXT_RELAY_REFUSED, value);
        }
    }

    /// The shell's answer to [`Event::RelayAsked`]: the relay ports it allocated for the pair
    /// (the asker's first), or why not. The asker is granted its port; the peer is offered the
    /// other, with the asker's entry so it knows whom the port leads to.
    pub fn relay_allocated(
        &mut self,
        wall_ms: u64,
        asker: PublicKey,
        peer: PublicKey,
        ports: Result<(u16, u16), RefusalReason>,
    ) {
        let Some(asker_member) = self.members.get(&asker) else {
            return;
        };
        let Some(asker_control) = asker_member.control_addr else {
            return;
        };
        let asker_entry = gossip::gossip_entry(asker_member);
        match ports {
            Ok((asker_port, peer_port)) => {
                let grant = RelayGrant {
                    peer,
                    port: asker_port,
                    role: GrantRole::Answer,
                };
                self.send_relay_extension(
                    wall_ms,
                    asker_control,
                    &[],
                    EXT_RELAY_GRANT,
                    grant.encode(),
                );
                let peer_control = self.members.get(&peer).and_then(|m| m.control_addr);
                if let (Some(peer_control), Some(entry)) = (peer_control, asker_entry) {
                    let offer = RelayGrant {
                        peer: asker,
                        port: peer_port,
                        role: GrantRole::Offer,
                    };
                    self.send_relay_extension(
                        wall_ms,
                        peer_control,
                        &[entry],
                        EXT_RELAY_GRANT,
                        offer.encode(),
                    );
                }
            }
            Err(reason) => {
                let value = RelayRefused { peer, reason }.encode();
                self.send_relay_extension(wall_ms, asker_control, &[], EXT_RELAY_REFUSED, value);
            }
        }
    }

    // ---- On the two ends ----

    /// Asks `relay` to carry our traffic to and from `peer`.
    pub(super) fn ask_relay(
        &mut self,
        now: Instant,
        wall_ms: u64,
        relay: &PublicKey,
        peer: PublicKey,
    ) {
        if let Some(control) = self.members.get(relay).and_then(|m| m.control_addr) {
            let value = RelayAsk { peer }.encode();
            self.send_relay_extension(wall_ms, control, &[], EXT_RELAY_ASK, value);
        }
        self.next_relay_refresh.get_or_insert(now + RELAY_REFRESH);
    }

    /// A relay granted or offered us a port for `grant.peer`.
    fn on_relay_grant(
        &mut self,
        now: Instant,
        wall_ms: u64,
        relay: PublicKey,
        from: SocketAddr,
        grant: RelayGrant,
        entries: &[GossipEntry],
    ) {
        let endpoint = SocketAddr::new(from.ip(), grant.port);
        let peer = grant.peer;
        if peer == *self.exchange.public_key() || peer == relay {
            return;
        }
        // Already a member: directly reached (the grant is moot unless the direct path died:
        // we suspect the member, or the other end asked for this offer and the member has not
        // answered us directly for a while) or relayed (follow the better relay; a re-grant
        // from the same relay may carry a new port, after its restart).
        if let Some(member) = self.members.get(&peer) {
            let direct_quiet = self
                .direct_at
                .get(&peer)
                .is_none_or(|at| now.saturating_duration_since(*at) >= DIRECT_QUIET);
            let path_died = self.liveness.is_suspect(&peer)
                || self.silent_tunnels.contains(&peer)
                || (grant.role == GrantRole::Offer && direct_quiet);
            let falls_back =
                member.relay_via.is_none() && path_died && self.may_relay_through(&relay);
            let current = match member.relay_via {
                Some(current) => current,
                None if falls_back => relay,
                None => return,
            };
            if current != relay && !self.relay_ranks_better(&relay, &current, &peer) {
                return;
            }
            if member.relay_via == Some(relay) && member.relay_endpoint == Some(endpoint) {
                return;
            }
            let mut moved = member.clone();
            moved.relay_via = Some(relay);
            moved.relay_endpoint = Some(endpoint);
            let inside = self.tunnel_addr(moved.mesh_ipv4);
            let change = self.members.upsert(moved);
            if falls_back {
                self.silent_tunnels.remove(&peer);
                self.push_event(Event::DirectPathLost { key: peer, relay });
                // Its answers come through the relayed tunnel now, which clears the suspicion.
                self.punches.schedule_member(now, inside, &TUNNEL_RETRIES);
                self.next_relay_refresh.get_or_insert(now + RELAY_REFRESH);
                if direct::leads(self.exchange.public_key(), &peer) {
                    self.direct.relayed(peer, now);
                }
            }
            if change != MemberChange::Refreshed
                && let Some(member) = self.members.get(&peer)
            {
                let from = member
                    .control_addr
                    .unwrap_or_else(|| self.tunnel_addr(member.mesh_ipv4));
                self.push_event(Event::Member {
                    member: Box::new(member.clone()),
                    change,
                    from,
                });
            }
            return;
        }
        // On trial: the grant gives it the port its proof can come through.
        if let Some(trial) = self.trials.get(&peer) {
            if trial.relay != relay && !self.relay_ranks_better(&relay, &trial.relay, &peer) {
                return;
            }
            if trial.relay == relay && trial.member.relay_endpoint == Some(endpoint) {
                return;
            }
            self.trials.route_through(&peer, relay, endpoint);
            self.trial_installed(now, &peer);
            return;
        }
        // An offer for a pair we have not asked for: the other end found no direct path to us.
        if grant.role != GrantRole::Offer || !self.may_relay_through(&relay) {
            return;
        }
        let Some(entry) = entries.iter().find(|e| e.record.public_key == peer) else {
            return;
        };
        if !self.trials.may_start(&peer, now) || self.second_hand_address_taken(entry) {
            return;
        }
        self.second_hand.answered(&peer);
        let mut member = relay::relayed_member(entry, relay, wall_ms);
        member.relay_endpoint = Some(endpoint);
        self.trials.start(member, relay, now);
        self.trial_installed(now, &peer);
    }

    /// A trial has its relay port: the shell installs it, and its proof is asked for through
    /// the tunnel.
    fn trial_installed(&mut self, now: Instant, peer: &PublicKey) {
        let Some(trial) = self.trials.get(peer) else {
            return;
        };
        let (member, relay) = (trial.member.clone(), trial.relay);
        let inside = self.tunnel_addr(member.mesh_ipv4);
        self.push_event(Event::Relayed {
            member: Box::new(member),
            relay,
        });
        self.next_relay_refresh.get_or_insert(now + RELAY_REFRESH);
        self.punches.schedule(now, inside, &TRIAL_PROBES);
        if direct::leads(self.exchange.public_key(), peer) {
            self.direct.relayed(*peer, now);
        }
    }

    fn on_relay_refused(&mut self, relay: PublicKey, refused: RelayRefused) {
        let waiting = self
            .trials
            .get(&refused.peer)
            .is_some_and(|t| t.relay == relay && t.member.relay_endpoint.is_none());
        if waiting {
            self.trials.end(&refused.peer);
            self.push_event(Event::Unreachable { key: refused.peer });
        }
    }

    /// Whether `candidate` ranks better than `current` for the pair of us and `peer`, and may
    /// relay for us.
    fn relay_ranks_better(
        &self,
        candidate: &PublicKey,
        current: &PublicKey,
        peer: &PublicKey,
    ) -> bool {
        let own = self.exchange.public_key();
        let key = &self.config.relay_tiebreak_key;
        self.may_relay_through(candidate)
            && relay::relay_rank(key, own, peer, candidate)
                < relay::relay_rank(key, own, peer, current)
    }

    /// Whether `relay` may carry our traffic: a member we reach directly, that offers to relay,
    /// passes the operator's allow-list and is not suspected.
    fn may_relay_through(&self, relay: &PublicKey) -> bool {
        self.members
            .get(relay)
            .is_some_and(|m| m.relay_offered && m.relay_via.is_none() && m.endpoint.is_some())
            && self
                .config
                .relays
                .as_ref()
                .is_none_or(|list| list.allows(relay))
            && !self.liveness.is_suspect(relay)
    }

    /// Asks again, once per [`RELAY_REFRESH`], for every pair we have through a relay: it
    /// keeps the allocation alive, and after a relay's restart it brings the new ports. Plans
    /// the direct attempts we lead for relayed members ([`crate::direct`]).
    pub(super) fn refresh_relays(&mut self, now: Instant, wall_ms: u64) {
        if self.next_relay_refresh.is_none_or(|at| at > now) {
            return;
        }
        let relayed: Vec<(PublicKey, PublicKey)> = self
            .members
            .iter()
            .filter_map(|m| m.relay_via.map(|relay| (relay, m.public_key)))
            .collect();
        let mut pairs = relayed.clone();
        pairs.extend(self.trials.pairs());
        self.next_relay_refresh = None;
        let own = *self.exchange.public_key();
        self.direct
            .retain(|key| pairs.iter().any(|(_, peer)| peer == key));
        for (relay, peer) in pairs {
            self.ask_relay(now, wall_ms, &relay, peer);
            if direct::leads(&own, &peer) {
                self.direct.relayed(peer, now);
            }
        }
    }

    /// Starts the direct attempts that are due: ping the relayed member through the tunnel, to
    /// time the relayed path ([`Self::on_punch`] goes on with the pong).
    pub(super) fn attempt_direct(&mut self, now: Instant, wall_ms: u64) {
        if self.direct.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        for peer in self.direct.take_due(now) {
            let Some(member) = self.members.get(&peer).filter(|m| m.relay_via.is_some()) else {
                continue;
            };
            let inside = self.tunnel_addr(member.mesh_ipv4);
            let nonce = self.entropy.next_u64();
            self.direct.pinged(peer, nonce, now);
            let value = Punch::Ping(nonce).encode();
            self.send_relay_extension(wall_ms, inside, &[], EXT_PUNCH, value);
        }
    }

    /// "Call me maybe" through the relayed tunnel from the relayed member `sender`: answer a
    /// ping at once; on the pong to ours, say "go" and probe half the round trip later; on
    /// "go", probe at once. Both ends' probes then leave together.
    fn on_punch(&mut self, now: Instant, wall_ms: u64, sender: PublicKey, punch: Punch) {
        let Some(member) = self.members.get(&sender).filter(|m| m.relay_via.is_some()) else {
            return;
        };
        let inside = self.tunnel_addr(member.mesh_ipv4);
        match punch {
            Punch::Ping(nonce) => {
                let value = Punch::Pong(nonce).encode();
                self.send_relay_extension(wall_ms, inside, &[], EXT_PUNCH, value);
            }
            Punch::Pong(nonce) => {
                if let Some(lead) = self.direct.ponged(&sender, nonce, now) {
                    self.send_relay_extension(wall_ms, inside, &[], EXT_PUNCH, Vec::new());
                    self.try_direct(now, wall_ms, &sender, lead);
                }
            }
            Punch::Go => self.try_direct(now, wall_ms, &sender, Duration::ZERO),
        }
    }

    /// A relayed member's direct addresses: the control address we know it by, and the control
    /// port on that address's host (a NAT that keeps ports maps it there; the address the relay
    /// saw may be a mapping towards the relay only).
    pub(super) fn direct_targets(&self, member: &Member) -> Vec<SocketAddr> {
        let Some(control) = member.control_addr else {
            return Vec::new();
        };
        let guessed = SocketAddr::new(control.ip(), self.config.control_port);
        let mut targets = vec![control];
        if guessed != control {
            targets.push(guessed);
        }
        targets.retain(|addr| !self.is_mesh_address(addr.ip()));
        targets
    }

    /// Probes a relayed member's direct addresses after `lead`, and again on the punch schedule
    /// (a first datagram may still meet a NAT that has not sent yet). A Hello back from either
    /// ends the relaying ([`crate::Event::DirectPath`]).
    fn try_direct(&mut self, now: Instant, wall_ms: u64, peer: &PublicKey, lead: Duration) {
        let Some(member) = self.members.get(peer) else {
            return;
        };
        let lead_ms = u64::try_from(lead.as_millis()).unwrap_or(u64::MAX);
        for addr in self.direct_targets(member) {
            if lead_ms == 0 {
                self.probe(wall_ms, addr, None);
                self.punches.schedule_member(now, addr, &PUNCH_RETRIES);
            } else {
                let mut delays = vec![lead_ms];
                delays.extend(PUNCH_RETRIES.iter().map(|ms| lead_ms.saturating_add(*ms)));
                self.punches.schedule_member(now, addr, &delays);
            }
        }
    }

    fn send_relay_extension(
        &mut self,
        wall_ms: u64,
        to: SocketAddr,
        entries: &[GossipEntry],
        kind: u8,
        value: Vec<u8>,
    ) {
        let entropy = self.entropy.next_entropy();
        let datagram =
            self.exchange
                .gossip_with(entries, vec![Extension { kind, value }], wall_ms, entropy);
        self.send(to, datagram);
    }
}
