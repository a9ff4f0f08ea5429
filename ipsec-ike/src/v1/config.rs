//! Configuration, in the shape of Cisco IOS so that a network engineer recognises it:
//!
//! ```text
//! crypto isakmp policy 10                      -> IsakmpPolicy { priority: 10, .. }
//!  encryption aes 256 / hash sha256 / authentication pre-share / group 14 / lifetime 86400
//! crypto isakmp key cisco address 9.1.1.35     -> PresharedKey::address(..)
//! crypto isakmp key cisco hostname vpn.example -> PresharedKey::hostname(..)
//! crypto ipsec transform-set T esp-aes esp-sha-hmac / mode tunnel -> TransformSet
//! crypto map vpn 10 ipsec-isakmp               -> CryptoMapEntry { seq: 10, .. }
//!  set peer 9.1.1.35 / set peer 9.1.1.36       -> peers (ordered: failover)
//!  set transform-set T / set pfs group2 / set security-association lifetime ...
//!  match address 101                           -> selector (the ACL: proxy identities)
//! crypto dynamic-map dyn 10                    -> CryptoMapEntry { dynamic: true, .. }
//! ```
//!
//! Everything is owned and fixed-capacity (`heapless`); secrets live in
//! [`SecretBytes`]. The `seq` of a crypto map entry is the `sa_group` of the data
//! plane's SPD.

use core::fmt;
use core::net::IpAddr;

use hal_traits::{CipherAlg, DhGroup, HashAlg, SecretBytes};
use ipsec_core::Duration;
use ipsec_core::esp::{Mode, Transform};
use ipsec_core::spd::Selector;

use super::IkeError;

/// Most ISAKMP policies in a configuration.
pub const MAX_POLICIES: usize = 10;
/// Most pre-shared keys in a configuration.
pub const MAX_KEYS: usize = 8;
/// Most crypto map entries in a configuration.
pub const MAX_CRYPTO_MAPS: usize = 8;
/// Most peers of one crypto map entry.
pub const MAX_PEERS: usize = 4;
/// Most transform sets of one crypto map entry.
pub const MAX_TRANSFORM_SETS: usize = 6;
/// Longest pre-shared key.
pub const MAX_PSK_LEN: usize = 64;
/// Longest hostname (FQDN identity).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// Longest transform set name.
pub const MAX_NAME_LEN: usize = 16;

/// A pre-shared key.
pub type Psk = SecretBytes<MAX_PSK_LEN>;
/// A hostname.
pub type Hostname = heapless::String<MAX_HOSTNAME_LEN>;

/// Phase-1 authentication method (`authentication pre-share`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IsakmpAuth {
    /// Pre-shared keys.
    #[default]
    PreShare,
}

/// `crypto isakmp policy <priority>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IsakmpPolicy {
    /// Priority: lower is tried first (and proposed first).
    pub priority: u16,
    /// `encryption des | 3des | aes [128|192|256]`.
    pub encryption: CipherAlg,
    /// `hash md5 | sha | sha256` (the PRF is HMAC of it).
    pub hash: HashAlg,
    /// `authentication pre-share`.
    pub authentication: IsakmpAuth,
    /// `group 1 | 2 | 5 | 14 | 15`.
    pub group: DhGroup,
    /// `lifetime <seconds>` (IOS default 86400).
    pub lifetime_seconds: u32,
}

impl IsakmpPolicy {
    /// The IOS default phase-1 lifetime.
    pub const DEFAULT_LIFETIME: u32 = 86_400;

    /// The policies used when none is configured, in priority order. DES, 3DES, MD5 and
    /// group 1 are legacy: accepted when configured, never in a default.
    pub const DEFAULTS: [Self; 3] = [
        Self::new(
            65_507,
            CipherAlg::Aes256Cbc,
            HashAlg::Sha256,
            DhGroup::Modp2048,
        ),
        Self::new(
            65_508,
            CipherAlg::Aes128Cbc,
            HashAlg::Sha1,
            DhGroup::Modp2048,
        ),
        Self::new(
            65_509,
            CipherAlg::Aes256Cbc,
            HashAlg::Sha1,
            DhGroup::Modp1536,
        ),
    ];

    /// A pre-shared-key policy with the default lifetime.
    #[must_use]
    pub const fn new(priority: u16, encryption: CipherAlg, hash: HashAlg, group: DhGroup) -> Self {
        Self {
            priority,
            encryption,
            hash,
            authentication: IsakmpAuth::PreShare,
            group,
            lifetime_seconds: Self::DEFAULT_LIFETIME,
        }
    }

    /// The same policy with `lifetime <seconds>`.
    #[must_use]
    pub const fn with_lifetime(mut self, seconds: u32) -> Self {
        self.lifetime_seconds = seconds;
        self
    }
}

/// Whom a pre-shared key is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPeer {
    /// `address A` (0.0.0.0 or :: is the wildcard: any peer).
    Address(IpAddr),
    /// `hostname H`: matched against an ID_FQDN (Aggressive Mode).
    Hostname(Hostname),
}

/// `crypto isakmp key <key> address <A> | hostname <H>`.
#[derive(Clone, Debug)]
pub struct PresharedKey {
    /// Whom the key is for.
    pub peer: KeyPeer,
    key: Psk,
}

impl PresharedKey {
    /// A key for a peer address (0.0.0.0 = any peer).
    ///
    /// # Errors
    /// [`IkeError::InvalidConfig`] for an empty key or one longer than [`MAX_PSK_LEN`].
    pub fn address(addr: IpAddr, key: &[u8]) -> Result<Self, IkeError> {
        Ok(Self {
            peer: KeyPeer::Address(addr),
            key: Self::secret(key)?,
        })
    }

    /// A key for a peer hostname (its ID_FQDN).
    ///
    /// # Errors
    /// [`IkeError::InvalidConfig`] for a bad key or a hostname longer than
    /// [`MAX_HOSTNAME_LEN`].
    pub fn hostname(name: &str, key: &[u8]) -> Result<Self, IkeError> {
        Ok(Self {
            peer: KeyPeer::Hostname(Hostname::try_from(name).map_err(|_| IkeError::InvalidConfig)?),
            key: Self::secret(key)?,
        })
    }

    fn secret(key: &[u8]) -> Result<Psk, IkeError> {
        if key.is_empty() {
            return Err(IkeError::InvalidConfig);
        }
        Psk::from_slice(key).map_err(|_| IkeError::InvalidConfig)
    }

    /// The key (hand it only to the PRF).
    #[must_use]
    pub fn key(&self) -> &Psk {
        &self.key
    }
}

/// `crypto ipsec transform-set <name> <esp-...> / mode tunnel | transport`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransformSet {
    /// The name (`show crypto ipsec sa` prints it).
    pub name: heapless::String<MAX_NAME_LEN>,
    /// ESP algorithms.
    pub transform: Transform,
    /// Tunnel or transport mode.
    pub mode: Mode,
}

impl TransformSet {
    /// A transform set.
    ///
    /// # Errors
    /// [`IkeError::InvalidConfig`] for a name longer than [`MAX_NAME_LEN`] or an invalid
    /// transform (integrity with GCM, none with NULL).
    pub fn new(name: &str, transform: Transform, mode: Mode) -> Result<Self, IkeError> {
        transform.validate().map_err(|_| IkeError::InvalidConfig)?;
        Ok(Self {
            name: heapless::String::try_from(name).map_err(|_| IkeError::InvalidConfig)?,
            transform,
            mode,
        })
    }
}

/// Phase-1 exchange mode (`set aggressive-mode ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExchangeMode {
    /// Main Mode (identity protection, 6 messages).
    #[default]
    Main,
    /// Aggressive Mode (3 messages; identities in the clear).
    Aggressive,
}

/// `crypto map <name> <seq> ipsec-isakmp` (or a `crypto dynamic-map` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoMapEntry {
    /// Sequence number: the order of entries and the data plane's `sa_group`.
    pub seq: u32,
    /// `set peer`: tried in order; the next one after a failure, wrapping around.
    pub peers: heapless::Vec<IpAddr, MAX_PEERS>,
    /// `set transform-set`: proposed (and, as responder, chosen) in this order.
    pub transform_sets: heapless::Vec<TransformSet, MAX_TRANSFORM_SETS>,
    /// `set pfs groupN`.
    pub pfs: Option<DhGroup>,
    /// `set security-association lifetime seconds` (IOS default 3600).
    pub lifetime_seconds: u64,
    /// `set security-association lifetime kilobytes` (IOS default 4608000).
    pub lifetime_kilobytes: u64,
    /// `match address`: the traffic, from our side (local = source). It gives the proxy
    /// identities IDci / IDcr.
    pub selector: Selector,
    /// Phase-1 mode used when initiating for this entry.
    pub exchange: ExchangeMode,
    /// A dynamic map entry: responder only, any peer, accepts the initiator's proxy
    /// identities.
    pub dynamic: bool,
}

impl CryptoMapEntry {
    /// An entry with IOS defaults (3600 s / 4608000 KB, no PFS, Main Mode) and no peers
    /// or transform sets yet.
    #[must_use]
    pub const fn new(seq: u32, selector: Selector) -> Self {
        Self {
            seq,
            peers: heapless::Vec::new(),
            transform_sets: heapless::Vec::new(),
            pfs: None,
            lifetime_seconds: ipsec_core::lifetime::IOS_DEFAULT_SECONDS,
            lifetime_kilobytes: ipsec_core::lifetime::IOS_DEFAULT_KILOBYTES,
            selector,
            exchange: ExchangeMode::Main,
            dynamic: false,
        }
    }

    /// `set peer A` (appended: the first one is tried first).
    ///
    /// # Errors
    /// [`IkeError::CapacityExceeded`].
    pub fn add_peer(&mut self, peer: IpAddr) -> Result<&mut Self, IkeError> {
        self.peers
            .push(peer)
            .map_err(|_| IkeError::CapacityExceeded)?;
        Ok(self)
    }

    /// `set transform-set T` (appended).
    ///
    /// # Errors
    /// [`IkeError::CapacityExceeded`].
    pub fn add_transform_set(&mut self, ts: TransformSet) -> Result<&mut Self, IkeError> {
        self.transform_sets
            .push(ts)
            .map_err(|_| IkeError::CapacityExceeded)?;
        Ok(self)
    }
}

/// Retransmission of requests, strongSwan-like: the n-th retransmission is sent
/// `timeout * base^n` after the previous one; after `tries` retransmissions and one
/// more timeout the exchange fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Retransmit {
    /// The first timeout (strongSwan: 4 s).
    pub timeout: Duration,
    /// The backoff base in thousandths (strongSwan: 1.8 = 1800).
    pub base_permille: u32,
    /// Retransmissions before giving up (strongSwan: 5).
    pub tries: u8,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(4),
            base_permille: 1800,
            tries: 5,
        }
    }
}

impl Retransmit {
    /// The timeout after the `n`-th transmission (0 = the first).
    #[must_use]
    pub fn timeout_after(&self, n: u8) -> Duration {
        let mut t = self.timeout.as_millis();
        for _ in 0..n {
            t = t.saturating_mul(u64::from(self.base_permille)) / 1000;
        }
        Duration::from_millis(t)
    }

    /// Time from the first transmission until the exchange is given up.
    #[must_use]
    pub fn total(&self) -> Duration {
        let mut sum = Duration::ZERO;
        for n in 0..=self.tries {
            sum = sum + self.timeout_after(n);
        }
        sum
    }
}

/// When R-U-THEREs are sent (`crypto isakmp keepalive ... [on-demand | periodic]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeepaliveMode {
    /// Dead Peer Detection proper (RFC 3706, the IOS default): an R-U-THERE only when
    /// nothing was received from the peer for the interval *and* there is traffic to
    /// send to it. An idle tunnel costs no message and no timer.
    #[default]
    OnDemand,
    /// IKE keepalives: an R-U-THERE every interval, traffic or not.
    Periodic,
}

/// `crypto isakmp keepalive <interval> [<retry>] [periodic | on-demand]`: Dead Peer
/// Detection (RFC 3706) and IKE keepalives.
///
/// Timing: the first R-U-THERE of a round is sent at `t1` (on demand: the first
/// outbound packet reported after `interval` without proof of life; periodic:
/// `interval` after the previous round started, or after phase 1 came up). While it is
/// unanswered a new R-U-THERE (next sequence number) is sent every `retry`, `retries`
/// R-U-THEREs in all, and the peer is declared dead at `t1 + retries × retry`
/// ([`Keepalive::dead_after`]). With `keepalive 60 3` and the default 5: R-U-THEREs at
/// 60, 63, 66, 69 and 72 s after the last proof of life, dead at 75 s. Any proof of life
/// (the matching R-U-THERE-ACK, any authenticated IKE message, inbound IPsec traffic
/// reported by [`Ike::note_inbound`](super::Ike::note_inbound)) ends the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Keepalive {
    /// Idle time before a peer is probed (IOS: 10..=3600 s).
    pub interval: Duration,
    /// Time between R-U-THEREs while unanswered (IOS: 2..=60 s, default 2).
    pub retry: Duration,
    /// R-U-THEREs sent in a round before the peer is declared dead (default 5, as IOS).
    pub retries: u8,
    /// On demand (DPD) or periodic (keepalives).
    pub mode: KeepaliveMode,
    /// Probe peers that did not send the DPD vendor ID too (they are known to answer).
    /// Off: such peers are never probed (RFC 3706 §5.1).
    pub without_peer_vid: bool,
}

impl Keepalive {
    /// IOS default number of R-U-THEREs before a peer is declared dead.
    pub const DEFAULT_RETRIES: u8 = 5;

    /// `crypto isakmp keepalive <interval_secs> <retry_secs>`: on demand, 5 R-U-THEREs.
    #[must_use]
    pub const fn new(interval: Duration, retry: Duration) -> Self {
        Self {
            interval,
            retry,
            retries: Self::DEFAULT_RETRIES,
            mode: KeepaliveMode::OnDemand,
            without_peer_vid: false,
        }
    }

    /// The same, `periodic`.
    #[must_use]
    pub const fn periodic(mut self) -> Self {
        self.mode = KeepaliveMode::Periodic;
        self
    }

    /// The same with `retries` R-U-THEREs per round (at least 1 is used).
    #[must_use]
    pub const fn with_retries(mut self, retries: u8) -> Self {
        self.retries = retries;
        self
    }

    /// Time from the first unanswered R-U-THERE until the peer is declared dead:
    /// `retries × retry`.
    #[must_use]
    pub fn dead_after(&self) -> Duration {
        Duration::from_millis(
            self.retry_ms()
                .saturating_mul(u64::from(self.retries.max(1))),
        )
    }

    /// The interval in milliseconds, at least 1 (a zero interval would spin).
    pub(crate) fn interval_ms(&self) -> u64 {
        self.interval.as_millis().max(1)
    }

    /// The retry interval in milliseconds, at least 1.
    pub(crate) fn retry_ms(&self) -> u64 {
        self.retry.as_millis().max(1)
    }
}

/// `crypto isakmp identity address | hostname`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LocalIdentity {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR of the local address (the default).
    #[default]
    Address,
    /// ID_FQDN.
    Hostname(Hostname),
}

/// Everything the IKE control plane of one node needs.
#[derive(Clone, Debug)]
pub struct IkeConfig {
    /// The address we initiate from (and whose ID we send by default).
    pub local_addr: IpAddr,
    /// The IKE port (500).
    pub ike_port: u16,
    /// The NAT-T port (4500): IKE on it carries the non-ESP marker.
    pub natt_port: u16,
    /// Our phase-1 identity.
    pub identity: LocalIdentity,
    /// Announce and negotiate NAT traversal (RFC 3947 and drafts). Default on.
    pub nat_traversal: bool,
    /// Retransmission of requests.
    pub retransmit: Retransmit,
    /// How long a half-open phase-1 SA (responder) or an unanswered Quick Mode may live.
    pub half_open_timeout: Duration,
    /// Most half-open phase-1 SAs per peer address (responder side).
    pub max_half_open_per_peer: u16,
    /// Most half-open phase-1 SAs in total (responder side; our own initiations are
    /// bounded by the SA table).
    pub max_half_open: u16,
    /// The phase-1 initiator re-establishes the IKE SA at this percentage of its
    /// lifetime (default 90).
    pub phase1_rekey_percent: u8,
    /// Soft lifetime of the child SAs' data plane config, percent of the hard one.
    pub child_soft_percent: u8,
    /// Send INITIAL-CONTACT when we have no other SA with the peer (default on).
    pub initial_contact: bool,
    /// Anti-replay window of the inbound child SAs.
    pub replay_window: u32,
    /// `crypto isakmp keepalive`: Dead Peer Detection / IKE keepalives (default off; a
    /// peer's R-U-THERE is answered either way).
    pub keepalive: Option<Keepalive>,
    /// `crypto isakmp policy` entries (empty: [`IsakmpPolicy::DEFAULTS`]).
    pub policies: heapless::Vec<IsakmpPolicy, MAX_POLICIES>,
    /// `crypto isakmp key` entries.
    pub keys: heapless::Vec<PresharedKey, MAX_KEYS>,
    /// `crypto map` entries, kept in sequence order.
    pub crypto_maps: heapless::Vec<CryptoMapEntry, MAX_CRYPTO_MAPS>,
}

impl IkeConfig {
    /// Defaults: ports 500/4500, address identity, NAT-T on, strongSwan retransmission,
    /// half-open limits 4 per peer / 8 in total, rekey at 90 %, INITIAL-CONTACT on,
    /// 64-packet replay window, no keepalives; no policies (so the defaults), keys or
    /// crypto maps.
    #[must_use]
    pub fn new(local_addr: IpAddr) -> Self {
        Self {
            local_addr,
            ike_port: 500,
            natt_port: 4500,
            identity: LocalIdentity::Address,
            nat_traversal: true,
            retransmit: Retransmit::default(),
            half_open_timeout: Duration::from_secs(165),
            max_half_open_per_peer: 4,
            max_half_open: 8,
            phase1_rekey_percent: 90,
            child_soft_percent: ipsec_core::lifetime::DEFAULT_SOFT_PERCENT,
            initial_contact: true,
            replay_window: 64,
            keepalive: None,
            policies: heapless::Vec::new(),
            keys: heapless::Vec::new(),
            crypto_maps: heapless::Vec::new(),
        }
    }

    /// Adds a policy, keeping them in priority order.
    ///
    /// # Errors
    /// [`IkeError::CapacityExceeded`]; [`IkeError::InvalidConfig`] for a duplicate
    /// priority or a zero lifetime.
    pub fn add_policy(&mut self, p: IsakmpPolicy) -> Result<&mut Self, IkeError> {
        if p.lifetime_seconds == 0 || self.policies.iter().any(|q| q.priority == p.priority) {
            return Err(IkeError::InvalidConfig);
        }
        let at = self
            .policies
            .iter()
            .position(|q| q.priority > p.priority)
            .unwrap_or(self.policies.len());
        self.policies
            .insert(at, p)
            .map_err(|_| IkeError::CapacityExceeded)?;
        Ok(self)
    }

    /// Adds a pre-shared key.
    ///
    /// # Errors
    /// [`IkeError::CapacityExceeded`].
    pub fn add_key(&mut self, k: PresharedKey) -> Result<&mut Self, IkeError> {
        self.keys.push(k).map_err(|_| IkeError::CapacityExceeded)?;
        Ok(self)
    }

    /// Adds a crypto map entry, keeping them in sequence order.
    ///
    /// # Errors
    /// [`IkeError::CapacityExceeded`]; [`IkeError::InvalidConfig`] for a duplicate
    /// sequence number, an entry without transform sets, or a static entry without
    /// peers.
    pub fn add_crypto_map(&mut self, e: CryptoMapEntry) -> Result<&mut Self, IkeError> {
        if self.crypto_maps.iter().any(|m| m.seq == e.seq)
            || e.transform_sets.is_empty()
            || (!e.dynamic && e.peers.is_empty())
        {
            return Err(IkeError::InvalidConfig);
        }
        let at = self
            .crypto_maps
            .iter()
            .position(|m| m.seq > e.seq)
            .unwrap_or(self.crypto_maps.len());
        self.crypto_maps
            .insert(at, e)
            .map_err(|_| IkeError::CapacityExceeded)?;
        Ok(self)
    }

    /// The policies in force (configured, or the defaults).
    #[must_use]
    pub fn effective_policies(&self) -> &[IsakmpPolicy] {
        if self.policies.is_empty() {
            &IsakmpPolicy::DEFAULTS
        } else {
            &self.policies
        }
    }

    /// The crypto map entry `seq`.
    #[must_use]
    pub fn crypto_map(&self, seq: u32) -> Option<&CryptoMapEntry> {
        self.crypto_maps.iter().find(|m| m.seq == seq)
    }

    /// The pre-shared key for a peer address: an exact match, else the wildcard.
    #[must_use]
    pub fn psk_for_addr(&self, addr: IpAddr) -> Option<&Psk> {
        let by = |want: &dyn Fn(&IpAddr) -> bool| {
            self.keys.iter().find_map(|k| match &k.peer {
                KeyPeer::Address(a) if want(a) => Some(&k.key),
                _ => None,
            })
        };
        by(&|a| *a == addr).or_else(|| by(&|a| a.is_unspecified()))
    }

    /// The pre-shared key for an FQDN identity (case-insensitive).
    #[must_use]
    pub fn psk_for_hostname(&self, name: &[u8]) -> Option<&Psk> {
        self.keys.iter().find_map(|k| match &k.peer {
            KeyPeer::Hostname(h) if h.as_bytes().eq_ignore_ascii_case(name) => Some(&k.key),
            _ => None,
        })
    }
}

impl fmt::Display for IsakmpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy {}: {:?} {:?} pre-share group {} lifetime {}",
            self.priority,
            self.encryption,
            self.hash,
            self.group.number(),
            self.lifetime_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn psk_lookup_and_debug() {
        let mut c = IkeConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        c.add_key(PresharedKey::address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), b"any").unwrap())
            .unwrap();
        c.add_key(PresharedKey::address(IpAddr::V4(Ipv4Addr::new(9, 1, 1, 35)), b"cisco").unwrap())
            .unwrap();
        c.add_key(PresharedKey::hostname("vpn.example", b"host").unwrap())
            .unwrap();
        let k = |a| c.psk_for_addr(IpAddr::V4(a)).unwrap().expose();
        assert_eq!(k(Ipv4Addr::new(9, 1, 1, 35)), b"cisco");
        assert_eq!(k(Ipv4Addr::new(9, 1, 1, 36)), b"any");
        assert_eq!(
            c.psk_for_hostname(b"VPN.example").unwrap().expose(),
            b"host"
        );
        let d = std::format!("{c:?}");
        assert!(!d.contains("cisco") && d.contains("redacted"), "{d}");
    }

    #[test]
    fn policies_sorted_and_retransmit() {
        let mut c = IkeConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.effective_policies().len(), 3);
        for p in [20, 10, 30] {
            c.add_policy(IsakmpPolicy::new(
                p,
                CipherAlg::Aes128Cbc,
                HashAlg::Sha1,
                DhGroup::Modp1024,
            ))
            .unwrap();
        }
        let order: std::vec::Vec<_> = c.policies.iter().map(|p| p.priority).collect();
        assert_eq!(order, [10, 20, 30]);
        assert!(
            c.add_policy(IsakmpPolicy::new(
                10,
                CipherAlg::DesCbc,
                HashAlg::Md5,
                DhGroup::Modp768
            ))
            .is_err()
        );
        let r = Retransmit::default();
        assert_eq!(r.timeout_after(0), Duration::from_secs(4));
        assert_eq!(r.timeout_after(1), Duration::from_millis(7200));
        assert!(r.total() > Duration::from_secs(130) && r.total() < Duration::from_secs(170));
    }
}
