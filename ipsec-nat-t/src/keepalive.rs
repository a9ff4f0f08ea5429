//! NAT keepalives (RFC 3948 §2.3, IOS `crypto isakmp nat keepalive <seconds>`).
//!
//! A NAT forgets an idle UDP mapping after a while; if it did, the peer's ESP-in-UDP
//! would no longer reach us. So the side *behind* the NAT sends a one-octet `0xFF` UDP
//! payload to the peer's NAT-T port whenever nothing else was sent to that peer for one
//! interval. Any datagram refreshes the mapping, so real traffic suppresses keepalives:
//! the owner calls [`NatKeepalive::note_sent`] for every datagram it sends to the peer.
//!
//! The side that is not behind a NAT never sends them (its mappings are not at risk), and
//! an interval of zero disables them. One keepalive is due at exactly
//! `last_sent + interval`; [`NatKeepalive::poll_timeout`] reports that instant, so a
//! thousand idle peers cost a thousand deadlines, not a thousand tickers.

use core::net::SocketAddr;

use ipsec_core::{Duration, Instant};

use crate::NatStatus;
use crate::consts::{KEEPALIVE_PAYLOAD, NAT_T_PORT};

/// Keepalive policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeepaliveConfig {
    /// Idle time after which a keepalive is sent; zero disables keepalives. IOS's default
    /// is 20 seconds (`crypto isakmp nat keepalive 20`).
    pub interval: Duration,
}

impl KeepaliveConfig {
    /// The IOS default interval, 20 seconds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

    /// A keepalive after `seconds` of idleness (`crypto isakmp nat keepalive <seconds>`).
    #[must_use]
    pub const fn seconds(seconds: u64) -> Self {
        Self {
            interval: Duration::from_secs(seconds),
        }
    }

    /// No keepalives.
    #[must_use]
    pub const fn disabled() -> Self {
        Self {
            interval: Duration::ZERO,
        }
    }
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
        }
    }
}

/// A keepalive to send: the one octet [`Keepalive::PAYLOAD`] in a UDP datagram from our
/// port `src_port` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// The peer's NAT-T address and port (as translated, if the peer is behind a NAT).
    pub dst: SocketAddr,
    /// Our source port (4500 unless configured otherwise).
    pub src_port: u16,
}

impl Keepalive {
    /// The UDP payload of every keepalive.
    pub const PAYLOAD: [u8; 1] = KEEPALIVE_PAYLOAD;

    /// The UDP payload: `[0xFF]`.
    #[must_use]
    pub const fn payload(&self) -> &'static [u8] {
        &Self::PAYLOAD
    }
}

/// The keepalive timer toward one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatKeepalive {
    config: KeepaliveConfig,
    peer: SocketAddr,
    src_port: u16,
    behind_nat: bool,
    last_sent: Instant,
    due: bool,
    sent: u64,
}

impl NatKeepalive {
    /// A timer toward `peer` (its NAT-T address), for a NAT situation found by NAT-D.
    /// `now` counts as the last transmission (the IKE message that just went out).
    #[must_use]
    pub fn new(now: Instant, config: KeepaliveConfig, peer: SocketAddr, status: NatStatus) -> Self {
        Self {
            config,
            peer,
            src_port: NAT_T_PORT,
            behind_nat: status.local_behind_nat,
            last_sent: now,
            due: false,
            sent: 0,
        }
    }

    /// The same with a source port other than 4500.
    #[must_use]
    pub fn with_src_port(mut self, port: u16) -> Self {
        self.src_port = port;
        self
    }

    /// Whether keepalives are being sent at all (we are behind a NAT and the interval is
    /// not zero).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.behind_nat && self.config.interval != Duration::ZERO
    }

    /// Updates the NAT situation (after a new NAT-D exchange, say).
    pub fn set_status(&mut self, status: NatStatus) {
        self.behind_nat = status.local_behind_nat;
        if !self.is_active() {
            self.due = false;
        }
    }

    /// Updates the peer's address (the peer's NAT changed its mapping).
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    /// The peer's address keepalives go to.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Records that a datagram (IKE, ESP, anything) was sent to the peer at `now`: the
    /// next keepalive is due one interval later.
    pub fn note_sent(&mut self, now: Instant) {
        if now > self.last_sent {
            self.last_sent = now;
        }
        self.due = false;
    }

    /// The number of keepalives handed out by [`poll_transmit`](Self::poll_transmit).
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn deadline(&self) -> Option<Instant> {
        self.is_active()
            .then(|| self.last_sent.saturating_add(self.config.interval))
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called; `None` when
    /// inactive.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.due {
            // Already due: the owner should poll_transmit now.
            return Some(self.last_sent);
        }
        self.deadline()
    }

    /// Advances the timer to `now`. Early or repeated calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| now >= d) {
            self.due = true;
        }
    }

    /// A keepalive to send now, if one is due. Sending it counts as traffic.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Keepalive> {
        self.handle_timeout(now);
        if !self.due {
            return None;
        }
        self.due = false;
        self.last_sent = now;
        self.sent = self.sent.saturating_add(1);
        Some(Keepalive {
            dst: self.peer,
            src_port: self.src_port,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const BEHIND: NatStatus = NatStatus {
        local_behind_nat: true,
        remote_behind_nat: false,
    };

    fn peer() -> SocketAddr {
        "198.51.100.7:4500".parse().unwrap()
    }

    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    /// Runs the timer on a virtual clock until `end`, jumping from deadline to deadline,
    /// with outbound traffic at `traffic`; returns when keepalives were sent.
    fn run(k: &mut NatKeepalive, end: u64, traffic: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut traffic = traffic.iter().copied().peekable();
        loop {
            let next_timer = k.poll_timeout().map(Instant::as_millis);
            let next_traffic = traffic.peek().copied();
            let now = match (next_timer, next_traffic) {
                (Some(t), Some(d)) if d < t => d,
                (Some(t), _) => t,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if now > end {
                break;
            }
            if next_traffic == Some(now) {
                traffic.next();
                k.note_sent(ms(now));
            }
            k.handle_timeout(ms(now));
            while let Some(ka) = k.poll_transmit(ms(now)) {
                assert_eq!(ka.dst, peer());
                assert_eq!(ka.src_port, 4500);
                assert_eq!(ka.payload(), &[0xff]);
                out.push(now);
            }
        }
        out
    }

    #[test]
    fn default_interval_exact_times() {
        let mut k = NatKeepalive::new(ms(1_000), KeepaliveConfig::default(), peer(), BEHIND);
        assert!(k.is_active());
        assert_eq!(k.poll_timeout(), Some(ms(21_000)));
        assert_eq!(run(&mut k, 100_000, &[]), [21_000, 41_000, 61_000, 81_000]);
        assert_eq!(k.sent(), 4);
    }

    #[test]
    fn configured_interval_and_one_ms_early() {
        let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::seconds(60), peer(), BEHIND);
        k.handle_timeout(ms(59_999));
        assert_eq!(k.poll_transmit(ms(59_999)), None);
        k.handle_timeout(ms(60_000));
        assert_eq!(
            k.poll_transmit(ms(60_000)),
            Some(Keepalive {
                dst: peer(),
                src_port: 4500
            })
        );
        // Exactly one per interval, even if the owner polls twice.
        assert_eq!(k.poll_transmit(ms(60_000)), None);
        assert_eq!(k.poll_timeout(), Some(ms(120_000)));
    }

    #[test]
    fn traffic_suppresses_keepalives() {
        let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::default(), peer(), BEHIND);
        // Traffic every 15 s until 60 s: no keepalive; then silence.
        let sent = run(&mut k, 120_000, &[15_000, 30_000, 45_000, 60_000]);
        assert_eq!(sent, [80_000, 100_000, 120_000]);
        // Traffic at 19.999 s, just before the first keepalive, pushes it to 39.999 s.
        let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::default(), peer(), BEHIND);
        assert_eq!(run(&mut k, 50_000, &[19_999]), [39_999]);
    }

    #[test]
    fn not_sent_when_not_behind_nat() {
        for status in [
            NatStatus::NONE,
            NatStatus {
                local_behind_nat: false,
                remote_behind_nat: true,
            },
        ] {
            let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::default(), peer(), status);
            assert!(!k.is_active());
            assert_eq!(k.poll_timeout(), None);
            k.handle_timeout(ms(1_000_000));
            assert_eq!(k.poll_transmit(ms(1_000_000)), None);
        }
        let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::disabled(), peer(), BEHIND);
        assert_eq!(k.poll_timeout(), None);
        assert_eq!(k.poll_transmit(ms(1_000_000)), None);
    }

    #[test]
    fn status_and_peer_changes() {
        let mut k = NatKeepalive::new(ms(0), KeepaliveConfig::default(), peer(), BEHIND)
            .with_src_port(4501);
        k.handle_timeout(ms(20_000));
        assert_eq!(k.poll_timeout(), Some(ms(0)), "due now");
        // The NAT went away before the owner polled: nothing is sent.
        k.set_status(NatStatus::NONE);
        assert_eq!(k.poll_transmit(ms(20_000)), None);
        k.set_status(BEHIND);
        let new_peer: SocketAddr = "198.51.100.7:1024".parse().unwrap();
        k.set_peer(new_peer);
        assert_eq!(k.peer(), new_peer);
        let ka = k.poll_transmit(ms(25_000)).unwrap();
        assert_eq!((ka.dst, ka.src_port), (new_peer, 4501));
        // Time going backwards in note_sent does not move the deadline back.
        k.note_sent(ms(10));
        assert_eq!(k.poll_timeout(), Some(ms(45_000)));
    }
}
