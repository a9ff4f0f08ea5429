//! The daemon's configuration file: TOML whose sections mirror Cisco IOS, so that a
//! network engineer recognises `crypto isakmp policy`, `crypto isakmp key`,
//! `crypto ipsec transform-set` and `crypto map` at a glance (see `ports/std/CONFIG.md`).
//!
//! Parsing happens in two steps. Serde (with `deny_unknown_fields`) checks the shape:
//! unknown keys, wrong types, unknown algorithm names (closed enums, so the message lists
//! what is accepted). Then [`Config::parse`] checks meaning: references between sections,
//! overlapping selectors, a pre-shared key for every peer, capacities of the
//! fixed-size library tables. Every value that can be wrong is kept with its byte span
//! ([`toml::Spanned`]), so every error carries a line and a column
//! ([`ConfigError::line`], [`ConfigError::column`]) and says what was expected.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use hal_traits::{AeadAlg, CipherAlg, DhGroup, HashAlg, MacAlg, SecretBytes};
use ipsec_core::Duration;
use ipsec_core::dataplane::Fragmentation;
use ipsec_core::esp::{DfBit, Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_ike::v1::{
    CryptoMapEntry, ExchangeMode, IkeConfig, IsakmpPolicy, MAX_CRYPTO_MAPS, MAX_KEYS, MAX_NAME_LEN,
    MAX_PEERS, MAX_POLICIES, MAX_PSK_LEN, MAX_TRANSFORM_SETS, PresharedKey, TransformSet,
};
use serde::Deserialize;
use toml::Spanned;

/// The control socket used when neither the config nor `--control` names one.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ipsec-rs.sock";

/// A configuration error: where (1-based line and column) and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when read from one.
    pub file: Option<PathBuf>,
    /// 1-based line of the offending value (0 when the error is not tied to a place).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending source line, for the caret display.
    pub source_line: String,
}

impl ConfigError {
    fn at(src: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, column, source_line) = match span {
            Some(r) => locate(src, r.start),
            None => (0, 0, String::new()),
        };
        Self {
            file: None,
            line,
            column,
            message: message.into(),
            source_line,
        }
    }
}

/// 1-based line and column of byte `offset`, and the text of that line.
fn locate(src: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = src.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
    let text = src.get(start..).unwrap_or("").lines().next().unwrap_or("");
    (line, column, text.to_string())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "config".to_string(), |p| p.display().to_string());
        if self.line == 0 {
            return write!(f, "{file}: {}", self.message);
        }
        writeln!(f, "{file}:{}:{}: {}", self.line, self.column, self.message)?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.source_line)?;
        write!(f, "{pad} | {}^", " ".repeat(self.column.saturating_sub(1)))
    }
}

impl std::error::Error for ConfigError {}

// ------------------------------------------------------------------ raw file --

/// `encryption` of an ISAKMP policy (IOS: `encryption des | 3des | aes [128|192|256]`).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum IkeCipher {
    #[serde(rename = "des")]
    Des,
    #[serde(rename = "3des")]
    TripleDes,
    #[serde(rename = "aes", alias = "aes-128", alias = "aes 128")]
    Aes128,
    #[serde(rename = "aes-192", alias = "aes 192")]
    Aes192,
    #[serde(rename = "aes-256", alias = "aes 256")]
    Aes256,
}

/// `hash` of an ISAKMP policy.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum IkeHash {
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "sha", alias = "sha1")]
    Sha1,
    #[serde(rename = "sha256")]
    Sha256,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum IkeAuth {
    #[serde(rename = "pre-share")]
    PreShare,
}

/// One word of a transform set (IOS transform names).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum EspWord {
    #[serde(rename = "esp-null")]
    Null,
    #[serde(rename = "esp-des")]
    Des,
    #[serde(rename = "esp-3des")]
    TripleDes,
    #[serde(rename = "esp-aes", alias = "esp-aes-128", alias = "esp-aes 128")]
    Aes128,
    #[serde(rename = "esp-aes-192", alias = "esp-aes 192")]
    Aes192,
    #[serde(rename = "esp-aes-256", alias = "esp-aes 256")]
    Aes256,
    #[serde(rename = "esp-gcm", alias = "esp-gcm-128", alias = "esp-gcm 128")]
    Gcm128,
    #[serde(rename = "esp-gcm-256", alias = "esp-gcm 256")]
    Gcm256,
    #[serde(rename = "esp-md5-hmac")]
    Md5,
    #[serde(rename = "esp-sha-hmac")]
    Sha1,
    #[serde(rename = "esp-sha256-hmac")]
    Sha256,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum RawMode {
    #[default]
    Tunnel,
    Transport,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum RawExchange {
    #[default]
    Main,
    Aggressive,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum RawDf {
    #[default]
    Copy,
    Clear,
    Set,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
enum RawFragmentation {
    BeforeEncryption,
    #[default]
    AfterEncryption,
}

/// `crypto isakmp keepalive <interval> <retry> periodic|on-demand`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeepaliveMode {
    /// R-U-THERE every interval whether or not traffic flows.
    Periodic,
    /// R-U-THERE only when traffic is pending and nothing was received (RFC 3706).
    #[default]
    OnDemand,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawFile {
    hostname: Option<String>,
    #[serde(default)]
    control: RawControl,
    interface: Spanned<RawInterface>,
    #[serde(default)]
    isakmp: RawIsakmp,
    #[serde(default)]
    ipsec: RawIpsec,
    #[serde(default)]
    transform_set: Vec<Spanned<RawTransformSet>>,
    #[serde(default)]
    crypto_map: Vec<Spanned<RawCryptoMap>>,
    #[serde(default)]
    ipsec_profile: Vec<Spanned<RawProfile>>,
    #[serde(default)]
    tunnel: Vec<Spanned<RawTunnel>>,
    redundancy: Option<Spanned<RawRedundancy>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<String>,
    address: Spanned<String>,
    tun: Option<Spanned<String>>,
    mtu: Option<Spanned<u16>>,
    source: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawIsakmp {
    #[serde(default)]
    policy: Vec<Spanned<RawPolicy>>,
    #[serde(default)]
    key: Vec<Spanned<RawKey>>,
    keepalive: Option<Spanned<RawKeepalive>>,
    nat_keepalive: Option<Spanned<u64>>,
    nat_traversal: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    priority: Spanned<u16>,
    encryption: IkeCipher,
    hash: IkeHash,
    group: Spanned<u8>,
    lifetime: Option<Spanned<u32>>,
    authentication: IkeAuth,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: Spanned<String>,
    address: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawKeepalive {
    interval: Spanned<u32>,
    retry: Option<Spanned<u32>>,
    #[serde(default)]
    mode: KeepaliveMode,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawIpsec {
    idle_time: Option<Spanned<u64>>,
    #[serde(default)]
    df_bit: RawDf,
    #[serde(default)]
    fragmentation: RawFragmentation,
    lifetime: Option<Spanned<RawLifetime>>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawLifetime {
    seconds: Option<u64>,
    kilobytes: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTransformSet {
    name: Spanned<String>,
    esp: Spanned<Vec<EspWord>>,
    #[serde(default)]
    mode: RawMode,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    local: Spanned<String>,
    remote: Spanned<String>,
    protocol: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCryptoMap {
    name: Spanned<String>,
    seq: Spanned<u32>,
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    transform_sets: Spanned<Vec<Spanned<String>>>,
    #[serde(rename = "match")]
    match_: Option<Spanned<RawMatch>>,
    pfs: Option<Spanned<String>>,
    lifetime: Option<Spanned<RawLifetime>>,
    #[serde(default)]
    reverse_route: bool,
    #[serde(default)]
    dynamic: bool,
    #[serde(default)]
    exchange: RawExchange,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    transform_sets: Spanned<Vec<Spanned<String>>>,
    pfs: Option<Spanned<String>>,
    lifetime: Option<Spanned<RawLifetime>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawGreKeepalive {
    period: Spanned<u32>,
    retries: Option<Spanned<u32>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: Spanned<String>,
    address: Spanned<String>,
    source: Spanned<String>,
    destination: Spanned<String>,
    protection: Option<Spanned<String>>,
    keepalive: Option<Spanned<RawGreKeepalive>>,
    mtu: Option<Spanned<u16>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRedundancy {
    enabled: Option<Spanned<bool>>,
    virtual_ip: Option<Spanned<String>>,
    group: Option<Spanned<u8>>,
    priority: Option<Spanned<u8>>,
    #[serde(default)]
    preempt: bool,
    preempt_delay: Option<Spanned<u32>>,
    peer: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    advert_interval_ms: Option<Spanned<u32>>,
    sync_key: Option<Spanned<String>>,
    sync_port: Option<Spanned<u16>>,
    replay_interval: Option<Spanned<RawReplayInterval>>,
    seq_margin: Option<Spanned<u32>>,
    window_margin: Option<Spanned<u32>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawReplayInterval {
    inbound: Spanned<u32>,
    outbound: Spanned<u32>,
}

// -------------------------------------------------------------- validated --

/// `[interface]`: the outside interface the crypto map is applied to, and the TUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The outside interface's name (shown by `show crypto ipsec sa`).
    pub name: String,
    /// Its address: IKE (UDP 500/4500) and ESP are sent from it.
    pub address: IpAddr,
    /// The TUN device carrying the protected traffic.
    pub tun: String,
    /// The TUN's MTU.
    pub mtu: u16,
    /// Source address of the routes into the TUN (a local address inside a protected
    /// network), so locally originated traffic gets it.
    pub source: Option<IpAddr>,
}

/// `crypto isakmp keepalive` (DPD, RFC 3706): handed to the IKE control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Seconds between R-U-THERE messages.
    pub interval: u32,
    /// Seconds between retries when unanswered.
    pub retry: u32,
    /// Periodic or on-demand.
    pub mode: KeepaliveMode,
}

/// Extra facts about a crypto map entry the library's [`CryptoMapEntry`] does not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    /// The crypto map's name (`crypto map <name> <seq>`).
    pub name: String,
    /// The entry's sequence number.
    pub seq: u32,
    /// `set reverse-route`: a route follows each SA pair up and down.
    pub reverse_route: bool,
    /// Transform set names, in order.
    pub transform_sets: Vec<String>,
}

/// `crypto ipsec profile` (for GRE tunnel protection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Transform sets, in order (tunnel or transport mode).
    pub transform_sets: Vec<TransformSet>,
    /// PFS group.
    pub pfs: Option<DhGroup>,
    /// `set security-association lifetime seconds`.
    pub lifetime_seconds: u64,
    /// `set security-association lifetime kilobytes`.
    pub lifetime_kilobytes: u64,
}

/// The crypto map entry (and data-plane SA group) of the first `[[tunnel]]`; the
/// others follow. Above the 1-65535 of configured entries, below the dynamic ones.
pub const TUNNEL_SEQ_BASE: u32 = 100_000;

/// A `[[tunnel]]`: a GRE interface protected by IPsec (`interface Tunnel0` with
/// `tunnel protection ipsec profile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// `Tunnel0`.
    pub name: String,
    /// The TUN device: the name in lowercase (`tunnel0`).
    pub device: String,
    /// The crypto map entry generated for its protection ([`TUNNEL_SEQ_BASE`] + index):
    /// selector GRE between source and destination, peer = destination.
    pub seq: u32,
    /// Its address and prefix length.
    pub address: (IpAddr, u8),
    /// `tunnel source`.
    pub source: IpAddr,
    /// `tunnel destination`.
    pub destination: IpAddr,
    /// `tunnel protection ipsec profile <name>`.
    pub protection: Option<String>,
    /// GRE keepalive `(period, retries)`.
    pub keepalive: Option<(u32, u32)>,
    /// Its MTU.
    pub mtu: u16,
}

/// `[redundancy]` when enabled: a VRRP group owning the virtual IP, and the stateful
/// sync channel to the other member (`standby` + `redundancy inter-device` + `crypto
/// map ... redundancy stateful`).
#[derive(Clone, Debug)]
pub struct Redundancy {
    /// The shared address IKE and ESP use; the active member owns it.
    pub virtual_ip: Ipv4Addr,
    /// VRRP virtual router id (HSRP group), 1-255.
    pub group: u8,
    /// VRRP priority, 1-254 (higher wins).
    pub priority: u8,
    /// Take the group over from a lower-priority master.
    pub preempt: bool,
    /// Seconds to wait before preempting (`standby preempt delay minimum`).
    pub preempt_delay: u32,
    /// The other member's address on the same segment: sync channel peer.
    pub peer: Ipv4Addr,
    /// This member's own address there (`[interface] address`).
    pub primary: Ipv4Addr,
    /// The Linux device the virtual IP is added to.
    pub interface: String,
    /// VRRP advertisement interval in milliseconds (a multiple of 10).
    pub advert_interval_ms: u32,
    /// The sync channel's pre-shared key (zeroized on drop, `Debug` shows its length).
    pub sync_key: SecretBytes<64>,
    /// UDP port of the sync channel on both members.
    pub sync_port: u16,
    /// Replay interval `(inbound, outbound)`, in packets.
    pub replay_interval: (u32, u32),
    /// Outbound sequence numbers skipped beyond the interval at takeover.
    pub seq_margin: u32,
    /// Inbound window advance beyond the interval at takeover.
    pub window_margin: u32,
}

/// Default UDP port of the HA sync channel.
pub const DEFAULT_SYNC_PORT: u16 = 4501;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The device's name (prompt-like, for status output).
    pub hostname: String,
    /// The control socket.
    pub control_socket: PathBuf,
    /// `[interface]`.
    pub interface: Interface,
    /// Everything the IKE control plane needs.
    pub ike: IkeConfig,
    /// Per crypto map entry, in sequence order.
    pub maps: Vec<MapInfo>,
    /// `crypto isakmp keepalive` (DPD).
    pub keepalive: Option<Keepalive>,
    /// `crypto isakmp nat keepalive` seconds (0 = off).
    pub nat_keepalive: u64,
    /// `crypto ipsec security-association idle-time`.
    pub idle_time: Option<Duration>,
    /// `crypto ipsec df-bit`.
    pub df_bit: DfBit,
    /// `crypto ipsec fragmentation`.
    pub fragmentation: Fragmentation,
    /// `crypto ipsec profile` entries.
    pub profiles: Vec<Profile>,
    /// GRE tunnels.
    pub tunnels: Vec<Tunnel>,
    /// `[redundancy]`, when enabled.
    pub redundancy: Option<Redundancy>,
}

impl Tunnel {
    /// The subnet of its address.
    #[must_use]
    pub fn subnet(&self) -> AddrRange {
        AddrRange::from_prefix(self.address.0, self.address.1)
            .unwrap_or(AddrRange::host(self.address.0))
    }
}

impl Config {
    /// The tunnel whose protection is crypto map entry (SA group) `seq`.
    #[must_use]
    pub fn tunnel(&self, seq: u32) -> Option<&Tunnel> {
        self.tunnels.iter().find(|t| t.seq == seq)
    }

    /// Reads and validates a file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and column, or the read error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
            source_line: String::new(),
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })
    }

    /// Parses and validates configuration text.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn parse(src: &str) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(src).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            ConfigError::at(src, e.span(), msg)
        })?;
        Validator { src }.validate(raw)
    }

    /// The map info of entry `seq`.
    #[must_use]
    pub fn map(&self, seq: u32) -> Option<&MapInfo> {
        self.maps.iter().find(|m| m.seq == seq)
    }
}

struct Validator<'s> {
    src: &'s str,
}

type R<T> = Result<T, ConfigError>;

fn dh_group(n: u8) -> Option<DhGroup> {
    Some(match n {
        1 => DhGroup::Modp768,
        2 => DhGroup::Modp1024,
        5 => DhGroup::Modp1536,
        14 => DhGroup::Modp2048,
        15 => DhGroup::Modp3072,
        _ => return None,
    })
}

const GROUPS: &str = "1, 2, 5, 14 or 15";

impl Validator<'_> {
    fn err<T>(&self, span: Range<usize>, msg: impl Into<String>) -> R<T> {
        Err(ConfigError::at(self.src, Some(span), msg))
    }

    /// `v` if it lies in `range`, else "`what` V out of range (expected LO to HI`unit`)".
    fn ranged<T: Copy + PartialOrd + fmt::Display>(
        &self,
        v: &Spanned<T>,
        range: RangeInclusive<T>,
        what: &str,
        unit: &str,
    ) -> R<T> {
        let x = *v.get_ref();
        if range.contains(&x) {
            Ok(x)
        } else {
            self.err(
                v.span(),
                format!(
                    "{what} {x} out of range (expected {} to {}{unit})",
                    range.start(),
                    range.end()
                ),
            )
        }
    }

    fn ip(&self, s: &Spanned<String>, what: &str) -> R<IpAddr> {
        s.get_ref().trim().parse().or_else(|_| {
            self.err(
                s.span(),
                format!(
                    "{what}: {:?} is not an IP address (expected e.g. \"203.0.113.2\")",
                    s.get_ref()
                ),
            )
        })
    }

    fn prefix(&self, s: &Spanned<String>, what: &str) -> R<AddrRange> {
        let bad = |v: &Validator<'_>| {
            v.err(
                s.span(),
                format!(
                    "{what}: {:?} is not a prefix (expected ADDRESS/LENGTH, e.g. \"10.0.68.0/24\")",
                    s.get_ref()
                ),
            )
        };
        let text = s.get_ref().trim();
        let (a, l) = match text.split_once('/') {
            Some((a, l)) => (a, l),
            None => (text, if text.contains(':') { "128" } else { "32" }),
        };
        let (Ok(a), Ok(l)) = (a.parse::<IpAddr>(), l.parse::<u8>()) else {
            return bad(self);
        };
        AddrRange::from_prefix(a, l).or_else(|_| bad(self))
    }

    fn pfs(&self, s: &Option<Spanned<String>>) -> R<Option<DhGroup>> {
        let Some(s) = s else { return Ok(None) };
        let g = s
            .get_ref()
            .strip_prefix("group")
            .and_then(|n| n.trim().parse::<u8>().ok())
            .and_then(dh_group);
        match g {
            Some(g) => Ok(Some(g)),
            None => self.err(
                s.span(),
                format!(
                    "pfs: unknown group {:?} (expected \"group1\", \"group2\", \"group5\", \"group14\" or \"group15\")",
                    s.get_ref()
                ),
            ),
        }
    }

    fn lifetime(&self, l: &Spanned<RawLifetime>, secs: &mut u64, kb: &mut u64) -> R<()> {
        let v = l.get_ref();
        if let Some(s) = v.seconds {
            if !(120..=86_400).contains(&s) {
                return self.err(
                    l.span(),
                    format!("lifetime seconds {s} out of range (expected 120 to 86400)"),
                );
            }
            *secs = s;
        }
        if let Some(k) = v.kilobytes {
            if !(2560..=4_294_967_295).contains(&k) {
                return self.err(
                    l.span(),
                    format!("lifetime kilobytes {k} out of range (expected 2560 to 4294967295)"),
                );
            }
            *kb = k;
        }
        Ok(())
    }

    fn transform(&self, ts: &RawTransformSet) -> R<Transform> {
        let span = ts.esp.span();
        let mut enc = None;
        let mut auth = None;
        for w in ts.esp.get_ref() {
            let (e, a) = match w {
                EspWord::Null => (Some(Encryption::Null), None),
                EspWord::Des => (Some(Encryption::Cbc(CipherAlg::DesCbc)), None),
                EspWord::TripleDes => (Some(Encryption::Cbc(CipherAlg::TripleDesCbc)), None),
                EspWord::Aes128 => (Some(Encryption::Cbc(CipherAlg::Aes128Cbc)), None),
                EspWord::Aes192 => (Some(Encryption::Cbc(CipherAlg::Aes192Cbc)), None),
                EspWord::Aes256 => (Some(Encryption::Cbc(CipherAlg::Aes256Cbc)), None),
                EspWord::Gcm128 => (Some(Encryption::Gcm(AeadAlg::Aes128Gcm16)), None),
                EspWord::Gcm256 => (Some(Encryption::Gcm(AeadAlg::Aes256Gcm16)), None),
                EspWord::Md5 => (None, Some(MacAlg::HmacMd5_96)),
                EspWord::Sha1 => (None, Some(MacAlg::HmacSha1_96)),
                EspWord::Sha256 => (None, Some(MacAlg::HmacSha256_128)),
            };
            if e.is_some() {
                if enc.is_some() {
                    return self.err(
                        span,
                        "transform set has two encryption transforms (expected one of esp-null, esp-des, esp-3des, esp-aes, esp-aes-192, esp-aes-256, esp-gcm, esp-gcm-256)",
                    );
                }
                enc = e;
            }
            if a.is_some() {
                if auth.is_some() {
                    return self.err(
                        span,
                        "transform set has two integrity transforms (expected at most one of esp-md5-hmac, esp-sha-hmac, esp-sha256-hmac)",
                    );
                }
                auth = a;
            }
        }
        let Some(enc) = enc else {
            return self.err(
                span,
                "transform set has no encryption transform (expected one of esp-null, esp-des, esp-3des, esp-aes, esp-aes-192, esp-aes-256, esp-gcm, esp-gcm-256)",
            );
        };
        let t = Transform { enc, auth };
        if t.validate().is_err() {
            let msg = if matches!(enc, Encryption::Gcm(_)) {
                "esp-gcm carries its own integrity check: remove the esp-*-hmac transform"
            } else {
                "esp-null needs an integrity transform (expected esp-md5-hmac, esp-sha-hmac or esp-sha256-hmac)"
            };
            return self.err(span, msg);
        }
        Ok(t)
    }

    fn ts_refs(
        &self,
        refs: &Spanned<Vec<Spanned<String>>>,
        sets: &[(String, TransformSet)],
        owner: &str,
    ) -> R<Vec<TransformSet>> {
        if refs.get_ref().is_empty() {
            return self.err(
                refs.span(),
                format!(
                    "{owner}: transform_sets is empty (expected at least one transform set name)"
                ),
            );
        }
        if refs.get_ref().len() > MAX_TRANSFORM_SETS {
            return self.err(
                refs.span(),
                format!("{owner}: at most {MAX_TRANSFORM_SETS} transform sets"),
            );
        }
        let mut out = Vec::new();
        for r in refs.get_ref() {
            match sets.iter().find(|(n, _)| n == r.get_ref()) {
                Some((_, ts)) => out.push(ts.clone()),
                None => {
                    let known: Vec<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
                    return self.err(
                        r.span(),
                        format!(
                            "{owner}: unknown transform set {:?} (expected one of the [[transform_set]] names: {})",
                            r.get_ref(),
                            if known.is_empty() { "none defined".to_string() } else { known.join(", ") }
                        ),
                    );
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_lines)]
    fn validate(&self, raw: RawFile) -> R<Config> {
        let src = self.src;
        // [interface]
        let ifc = raw.interface.get_ref();
        let address = self.ip(&ifc.address, "interface address")?;
        let tun = ifc
            .tun
            .as_ref()
            .map_or_else(|| "ipsec0".to_string(), |t| t.get_ref().clone());
        if tun.is_empty() || tun.len() > 15 || tun.contains(['/', ' ']) {
            let span = ifc.tun.as_ref().map_or(raw.interface.span(), Spanned::span);
            return self.err(span, format!("tun: {tun:?} is not a valid interface name (expected 1 to 15 characters, no '/' or space)"));
        }
        let mtu = match &ifc.mtu {
            Some(m) => self.ranged(m, 576..=9000, "mtu", "")?,
            None => 1400,
        };
        let source = ifc
            .source
            .as_ref()
            .map(|s| self.ip(s, "interface source"))
            .transpose()?;
        let interface = Interface {
            name: ifc.name.clone().unwrap_or_else(|| "outside".into()),
            address,
            tun,
            mtu,
            source,
        };

        let mut ike = IkeConfig::new(address);
        if let Some(n) = raw.isakmp.nat_traversal {
            ike.nat_traversal = n;
        }

        // [[isakmp.policy]]
        if raw.isakmp.policy.len() > MAX_POLICIES {
            let p = &raw.isakmp.policy[MAX_POLICIES];
            return self.err(p.span(), format!("at most {MAX_POLICIES} isakmp policies"));
        }
        for p in &raw.isakmp.policy {
            let v = p.get_ref();
            let prio = *v.priority.get_ref();
            if prio == 0 {
                return self.err(v.priority.span(), "priority 0 (expected 1 to 65535)");
            }
            if ike.policies.iter().any(|q| q.priority == prio) {
                return self.err(
                    v.priority.span(),
                    format!(
                        "duplicate isakmp policy priority {prio} (expected each priority once)"
                    ),
                );
            }
            let Some(group) = dh_group(*v.group.get_ref()) else {
                return self.err(
                    v.group.span(),
                    format!(
                        "unknown Diffie-Hellman group {} (expected {GROUPS})",
                        v.group.get_ref()
                    ),
                );
            };
            let enc = match v.encryption {
                IkeCipher::Des => CipherAlg::DesCbc,
                IkeCipher::TripleDes => CipherAlg::TripleDesCbc,
                IkeCipher::Aes128 => CipherAlg::Aes128Cbc,
                IkeCipher::Aes192 => CipherAlg::Aes192Cbc,
                IkeCipher::Aes256 => CipherAlg::Aes256Cbc,
            };
            let hash = match v.hash {
                IkeHash::Md5 => HashAlg::Md5,
                IkeHash::Sha1 => HashAlg::Sha1,
                IkeHash::Sha256 => HashAlg::Sha256,
            };
            let _ = v.authentication;
            let mut pol = IsakmpPolicy::new(prio, enc, hash, group);
            if let Some(l) = &v.lifetime {
                if !(60..=86_400).contains(l.get_ref()) {
                    return self.err(
                        l.span(),
                        format!(
                            "lifetime {} out of range (expected 60 to 86400 seconds)",
                            l.get_ref()
                        ),
                    );
                }
                pol = pol.with_lifetime(*l.get_ref());
            }
            ike.add_policy(pol)
                .or_else(|e| self.err(p.span(), format!("isakmp policy: {e}")))?;
        }

        // [[isakmp.key]]
        if raw.isakmp.key.len() > MAX_KEYS {
            return self.err(
                raw.isakmp.key[MAX_KEYS].span(),
                format!("at most {MAX_KEYS} isakmp keys"),
            );
        }
        for k in &raw.isakmp.key {
            let v = k.get_ref();
            let secret = v.key.get_ref().as_bytes();
            if secret.is_empty() || secret.len() > MAX_PSK_LEN {
                return self.err(
                    v.key.span(),
                    format!("key: expected 1 to {MAX_PSK_LEN} bytes"),
                );
            }
            let psk = match (&v.address, &v.hostname) {
                (Some(a), None) => PresharedKey::address(self.ip(a, "key address")?, secret),
                (None, Some(h)) => {
                    if h.get_ref().is_empty() || h.get_ref().len() > ipsec_ike::v1::MAX_HOSTNAME_LEN
                    {
                        return self.err(h.span(), "hostname: expected 1 to 64 characters");
                    }
                    PresharedKey::hostname(h.get_ref(), secret)
                }
                _ => {
                    return self.err(k.span(), "isakmp key: expected exactly one of address = \"A.B.C.D\" (\"0.0.0.0\" = any peer) or hostname = \"name\"");
                }
            };
            let psk = psk.or_else(|e| self.err(k.span(), format!("isakmp key: {e}")))?;
            ike.add_key(psk)
                .or_else(|e| self.err(k.span(), format!("isakmp key: {e}")))?;
        }

        // keepalives
        let keepalive = match &raw.isakmp.keepalive {
            None => None,
            Some(k) => {
                let v = k.get_ref();
                let interval =
                    self.ranged(&v.interval, 10..=3600, "keepalive interval", " seconds")?;
                let retry = match &v.retry {
                    Some(r) => self.ranged(r, 2..=60, "keepalive retry", " seconds")?,
                    None => 2,
                };
                Some(Keepalive {
                    interval,
                    retry,
                    mode: v.mode,
                })
            }
        };
        let nat_keepalive = match &raw.isakmp.nat_keepalive {
            None => 20,
            Some(n) if *n.get_ref() != 0 && !(5..=3600).contains(n.get_ref()) => {
                return self.err(
                    n.span(),
                    format!(
                        "nat_keepalive {} out of range (expected 5 to 3600 seconds, or 0 for off)",
                        n.get_ref()
                    ),
                );
            }
            Some(n) => *n.get_ref(),
        };

        // [ipsec]
        let idle_time = match &raw.ipsec.idle_time {
            None => None,
            Some(t) if !(1..=86_400).contains(t.get_ref()) => {
                return self.err(t.span(), format!("idle_time {} out of range (expected 1 to 86400 seconds; IOS accepts 60 and up)", t.get_ref()));
            }
            Some(t) => Some(Duration::from_secs(*t.get_ref())),
        };
        let df_bit = match raw.ipsec.df_bit {
            RawDf::Copy => DfBit::Copy,
            RawDf::Clear => DfBit::Clear,
            RawDf::Set => DfBit::Set,
        };
        let fragmentation = match raw.ipsec.fragmentation {
            RawFragmentation::BeforeEncryption => Fragmentation::BeforeEncryption,
            RawFragmentation::AfterEncryption => Fragmentation::AfterEncryption,
        };
        let (mut def_secs, mut def_kb) = (
            ipsec_core::lifetime::IOS_DEFAULT_SECONDS,
            ipsec_core::lifetime::IOS_DEFAULT_KILOBYTES,
        );
        if let Some(l) = &raw.ipsec.lifetime {
            self.lifetime(l, &mut def_secs, &mut def_kb)?;
        }

        // [[transform_set]]
        let mut sets: Vec<(String, TransformSet)> = Vec::new();
        for ts in &raw.transform_set {
            let v = ts.get_ref();
            let name = v.name.get_ref();
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return self.err(
                    v.name.span(),
                    format!("transform set name {name:?}: expected 1 to {MAX_NAME_LEN} characters"),
                );
            }
            if sets.iter().any(|(n, _)| n == name) {
                return self.err(
                    v.name.span(),
                    format!("duplicate transform set {name:?} (expected unique names)"),
                );
            }
            let t = self.transform(v)?;
            // Transport mode is for GRE tunnel protection only: checked where a crypto
            // map entry references the set.
            let mode = match v.mode {
                RawMode::Tunnel => Mode::Tunnel,
                RawMode::Transport => Mode::Transport,
            };
            let set = TransformSet::new(name, t, mode)
                .or_else(|e| self.err(ts.span(), format!("transform set {name:?}: {e}")))?;
            sets.push((name.clone(), set));
        }

        // [[crypto_map]]
        if raw.crypto_map.len() > MAX_CRYPTO_MAPS {
            return self.err(
                raw.crypto_map[MAX_CRYPTO_MAPS].span(),
                format!("at most {MAX_CRYPTO_MAPS} crypto map entries"),
            );
        }
        let mut maps: Vec<MapInfo> = Vec::new();
        let mut sel_spans: Vec<(u32, Selector, Range<usize>, bool)> = Vec::new();
        let mut map_name: Option<&Spanned<String>> = None;
        for m in &raw.crypto_map {
            let v = m.get_ref();
            let seq = *v.seq.get_ref();
            let owner = format!("crypto map {} {seq}", v.name.get_ref());
            match map_name {
                Some(first) if first.get_ref() != v.name.get_ref() => {
                    return self.err(v.name.span(), format!("crypto map name {:?}: only one crypto map can be applied to the interface (expected {:?}, as on line {})", v.name.get_ref(), first.get_ref(), locate(src, first.span().start).0));
                }
                _ => map_name = Some(&v.name),
            }
            if seq == 0 || seq > 65_535 {
                return self.err(
                    v.seq.span(),
                    format!("seq {seq} out of range (expected 1 to 65535)"),
                );
            }
            if maps.iter().any(|x| x.seq == seq) {
                return self.err(
                    v.seq.span(),
                    format!("duplicate crypto map entry {seq} (expected unique seq numbers)"),
                );
            }
            let selector = match &v.match_ {
                Some(mm) => {
                    let mv = mm.get_ref();
                    let l = self.prefix(&mv.local, "match local")?;
                    let r = self.prefix(&mv.remote, "match remote")?;
                    let mut sel = Selector::new(l, r).or_else(|_| {
                        self.err(
                            mm.span(),
                            "match: local and remote must both be IPv4 or both IPv6",
                        )
                    })?;
                    if let Some(p) = &mv.protocol {
                        let proto = self.protocol(p)?;
                        if proto != 0 {
                            sel = sel.with_protocol(proto);
                        }
                    }
                    sel
                }
                None if v.dynamic => Selector::new(AddrRange::any_v4(), AddrRange::any_v4())
                    .or_else(|_| self.err(m.span(), "internal: selector"))?,
                None => {
                    return self.err(m.span(), format!("{owner}: missing match = {{ local = \"...\", remote = \"...\" }} (expected the traffic to protect, like `match address <acl>`)"));
                }
            };
            if let Some(mm) = &v.match_ {
                for (other, osel, ospan, odyn) in &sel_spans {
                    if !v.dynamic && !*odyn && osel.overlaps(&selector) {
                        return self.err(mm.span(), format!("{owner}: match {} -> {} overlaps crypto map entry {other} (line {}); expected disjoint selectors between entries", selector.local, selector.remote, locate(src, ospan.start).0));
                    }
                }
                sel_spans.push((seq, selector, mm.span(), v.dynamic));
            }
            let mut entry = CryptoMapEntry::new(seq, selector);
            entry.dynamic = v.dynamic;
            entry.exchange = match v.exchange {
                RawExchange::Main => ExchangeMode::Main,
                RawExchange::Aggressive => ExchangeMode::Aggressive,
            };
            if v.peers.len() > MAX_PEERS {
                return self.err(
                    v.peers[MAX_PEERS].span(),
                    format!("{owner}: at most {MAX_PEERS} peers"),
                );
            }
            if v.peers.is_empty() && !v.dynamic {
                return self.err(m.span(), format!("{owner}: no peers (expected peers = [\"A.B.C.D\", ...], or dynamic = true for a responder-only entry)"));
            }
            for p in &v.peers {
                let ip = self.ip(p, "peer")?;
                if ike.psk_for_addr(ip).is_none() {
                    return self.err(p.span(), format!("{owner}: no pre-shared key for peer {ip} (expected an [[isakmp.key]] with address = \"{ip}\" or \"0.0.0.0\")"));
                }
                entry
                    .add_peer(ip)
                    .or_else(|e| self.err(p.span(), format!("{owner}: {e}")))?;
            }
            if v.dynamic && ike.keys.is_empty() {
                return self.err(m.span(), format!("{owner}: dynamic entry but no [[isakmp.key]] at all (expected a key, e.g. address = \"0.0.0.0\")"));
            }
            let sets_of = self.ts_refs(&v.transform_sets, &sets, &owner)?;
            if let Some(ts) = sets_of.iter().find(|t| t.mode == Mode::Transport) {
                return self.err(v.transform_sets.span(), format!("{owner}: transform set {:?} is mode transport, which only GRE tunnel protection uses (expected a mode = \"tunnel\" set here; reference transport sets from an [[ipsec_profile]])", ts.name.as_str()));
            }
            for ts in sets_of {
                entry
                    .add_transform_set(ts)
                    .or_else(|e| self.err(v.transform_sets.span(), format!("{owner}: {e}")))?;
            }
            entry.pfs = self.pfs(&v.pfs)?;
            let (mut secs, mut kb) = (def_secs, def_kb);
            if let Some(l) = &v.lifetime {
                self.lifetime(l, &mut secs, &mut kb)?;
            }
            entry.lifetime_seconds = secs;
            entry.lifetime_kilobytes = kb;
            ike.add_crypto_map(entry)
                .or_else(|e| self.err(m.span(), format!("{owner}: {e}")))?;
            maps.push(MapInfo {
                name: v.name.get_ref().clone(),
                seq,
                reverse_route: v.reverse_route,
                transform_sets: v
                    .transform_sets
                    .get_ref()
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect(),
            });
        }
        maps.sort_by_key(|m| m.seq);

        // [[ipsec_profile]]
        let mut profiles: Vec<Profile> = Vec::new();
        for p in &raw.ipsec_profile {
            let v = p.get_ref();
            let name = v.name.get_ref();
            if profiles.iter().any(|q| &q.name == name) {
                return self.err(v.name.span(), format!("duplicate ipsec profile {name:?}"));
            }
            let owner = format!("ipsec profile {name}");
            let ts = self.ts_refs(&v.transform_sets, &sets, &owner)?;
            let pfs = self.pfs(&v.pfs)?;
            let (mut secs, mut kb) = (def_secs, def_kb);
            if let Some(l) = &v.lifetime {
                self.lifetime(l, &mut secs, &mut kb)?;
            }
            profiles.push(Profile {
                name: name.clone(),
                transform_sets: ts,
                pfs,
                lifetime_seconds: secs,
                lifetime_kilobytes: kb,
            });
        }

        // [[tunnel]]: each protected tunnel becomes a crypto map entry of its own (GRE
        // between tunnel source and destination, peer = destination), numbered after
        // the configurable range so it never collides with a `seq`.
        let mut tunnels: Vec<Tunnel> = Vec::new();
        let mut tunnel_spans: Vec<Range<usize>> = Vec::new();
        for (i, t) in raw.tunnel.iter().enumerate() {
            let v = t.get_ref();
            let name = v.name.get_ref().clone();
            let device = name.to_lowercase();
            if device.is_empty() || device.len() > 15 || device.contains(['/', ' ', ':']) {
                return self.err(v.name.span(), format!("tunnel name {name:?}: the TUN device is named after it in lowercase (expected 1 to 15 characters, no '/', ':' or space, e.g. \"Tunnel0\")"));
            }
            if let Some(j) = tunnels.iter().position(|o| o.device == device) {
                return self.err(v.name.span(), format!("duplicate tunnel {name:?} (line {}); expected unique names (case-insensitive: the TUN is {device:?})", locate(src, tunnel_spans[j].start).0));
            }
            if device == interface.tun {
                return self.err(v.name.span(), format!("tunnel {name}: its TUN {device:?} is the [interface] tun (expected another name)"));
            }
            let pfx = self.prefix(&v.address, "tunnel address")?;
            let address = pfx.as_prefix().unwrap_or((pfx.start(), 32));
            let text_addr: IpAddr = v
                .address
                .get_ref()
                .split('/')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .unwrap_or(address.0);
            if !text_addr.is_ipv4() || address.1 > 30 {
                return self.err(v.address.span(), format!("tunnel {name}: address {:?} (expected an IPv4 address with a prefix of at most /30, e.g. \"172.16.68.1/30\")", v.address.get_ref()));
            }
            for (j, o) in tunnels.iter().enumerate() {
                if o.subnet().overlaps(&pfx) {
                    return self.err(v.address.span(), format!("tunnel {name}: address {}/{} overlaps tunnel {} ({}/{}, line {}); expected disjoint tunnel subnets", text_addr, address.1, o.name, o.address.0, o.address.1, locate(src, tunnel_spans[j].start).0));
                }
            }
            let source = self.ip(&v.source, "tunnel source")?;
            let destination = self.ip(&v.destination, "tunnel destination")?;
            if source != interface.address {
                return self.err(v.source.span(), format!("tunnel {name}: source {source} is not the [interface] address {} (expected it: IKE and ESP are sent from that address)", interface.address));
            }
            if !destination.is_ipv4() || destination == source || destination.is_unspecified() {
                return self.err(v.destination.span(), format!("tunnel {name}: destination {destination} (expected the peer's IPv4 address, not the source)"));
            }
            if let Some(o) = tunnels.iter().find(|o| o.destination == destination) {
                return self.err(v.destination.span(), format!("tunnel {name}: destination {destination} is already tunnel {}'s (expected one tunnel per destination: GRE keys are not supported)", o.name));
            }
            let Some(p) = &v.protection else {
                return self.err(t.span(), format!("tunnel {name}: no protection (expected protection = \"<ipsec_profile name>\": the daemon carries GRE only under IPsec)"));
            };
            let Some(profile) = profiles.iter().find(|q| &q.name == p.get_ref()) else {
                let known: Vec<&str> = profiles.iter().map(|q| q.name.as_str()).collect();
                return self.err(p.span(), format!("tunnel {name}: unknown ipsec profile {:?} (expected one of the [[ipsec_profile]] names: {})", p.get_ref(), if known.is_empty() { "none defined".into() } else { known.join(", ") }));
            };
            if ike.psk_for_addr(destination).is_none() {
                return self.err(v.destination.span(), format!("tunnel {name}: no pre-shared key for destination {destination} (expected an [[isakmp.key]] with address = \"{destination}\" or \"0.0.0.0\")"));
            }
            let keepalive = match &v.keepalive {
                None => None,
                Some(k) => {
                    let kv = k.get_ref();
                    let period =
                        self.ranged(&kv.period, 1..=32_767, "keepalive period", " seconds")?;
                    let retries = match &kv.retries {
                        Some(r) => self.ranged(r, 1..=255, "keepalive retries", "")?,
                        None => 3,
                    };
                    Some((period, retries))
                }
            };
            let tmtu = match &v.mtu {
                Some(m) => self.ranged(m, 576..=9000, "mtu", "")?,
                None => 1400,
            };
            let seq = TUNNEL_SEQ_BASE + u32::try_from(i).unwrap_or(u32::MAX - TUNNEL_SEQ_BASE);
            let selector =
                ipsec_core::gre::ipsec::gre_selector(source, destination).or_else(|_| {
                    self.err(
                        t.span(),
                        format!("tunnel {name}: source and destination must both be IPv4"),
                    )
                })?;
            for (other, osel, ospan, odyn) in &sel_spans {
                if !*odyn && osel.overlaps(&selector) {
                    return self.err(t.span(), format!("tunnel {name}: its GRE traffic {source} -> {destination} matches crypto map entry {other} (line {}); expected the crypto map to leave the tunnel's GRE packets alone", locate(src, ospan.start).0));
                }
            }
            let mut entry = CryptoMapEntry::new(seq, selector);
            entry
                .add_peer(destination)
                .or_else(|e| self.err(t.span(), format!("tunnel {name}: {e}")))?;
            for ts in &profile.transform_sets {
                entry
                    .add_transform_set(ts.clone())
                    .or_else(|e| self.err(p.span(), format!("tunnel {name}: {e}")))?;
            }
            entry.pfs = profile.pfs;
            entry.lifetime_seconds = profile.lifetime_seconds;
            entry.lifetime_kilobytes = profile.lifetime_kilobytes;
            ike.add_crypto_map(entry).or_else(|e| {
                self.err(t.span(), format!("tunnel {name}: {e} (crypto map entries and protected tunnels share {MAX_CRYPTO_MAPS} slots)"))
            })?;
            tunnel_spans.push(t.span());
            tunnels.push(Tunnel {
                name,
                device,
                address: (text_addr, address.1),
                source,
                destination,
                protection: Some(profile.name.clone()),
                keepalive,
                mtu: tmtu,
                seq,
            });
        }

        // [redundancy]
        let redundancy = match &raw.redundancy {
            Some(r) => self.redundancy(r, address)?,
            None => None,
        };
        if let (Some(_), Some(t)) = (&redundancy, raw.tunnel.first()) {
            // As on IOS, stateful failover covers crypto maps, not tunnel protection: a
            // tunnel's source is this box's own address, which does not move.
            return self.err(
                t.span(),
                "GRE tunnels cannot be combined with [redundancy] enabled = true (stateful failover covers crypto map entries only, as on IOS)",
            );
        }

        // crypto isakmp keepalive <interval> <retry> [periodic] -> DPD in the control plane.
        let mut ike = ike;
        if let Some(r) = &redundancy {
            // IKE identities, NAT-D hashes and the ESP outer headers use the virtual IP.
            ike.local_addr = IpAddr::V4(r.virtual_ip);
        }
        ike.keepalive = keepalive.map(|k| {
            let lib = ipsec_ike::v1::Keepalive::new(
                ipsec_core::Duration::from_secs(u64::from(k.interval)),
                ipsec_core::Duration::from_secs(u64::from(k.retry)),
            );
            match k.mode {
                KeepaliveMode::Periodic => lib.periodic(),
                KeepaliveMode::OnDemand => lib,
            }
        });

        Ok(Config {
            hostname: raw.hostname.unwrap_or_else(|| "ipsec-rs".into()),
            control_socket: raw
                .control
                .socket
                .map_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET), PathBuf::from),
            interface,
            ike,
            maps,
            keepalive,
            nat_keepalive,
            idle_time,
            df_bit,
            fragmentation,
            profiles,
            tunnels,
            redundancy,
        })
    }

    #[allow(clippy::too_many_lines)]
    fn redundancy(&self, r: &Spanned<RawRedundancy>, address: IpAddr) -> R<Option<Redundancy>> {
        let v = r.get_ref();
        let v4 = |s: &Spanned<String>, what: &str| -> R<Ipv4Addr> {
            match self.ip(s, what)? {
                IpAddr::V4(a) => Ok(a),
                IpAddr::V6(_) => self.err(
                    s.span(),
                    format!("{what}: expected an IPv4 address (VRRPv3 over IPv6 is not supported)"),
                ),
            }
        };
        let vip = v
            .virtual_ip
            .as_ref()
            .map(|s| v4(s, "redundancy virtual_ip"))
            .transpose()?;
        let peer = v
            .peer
            .as_ref()
            .map(|s| v4(s, "redundancy peer"))
            .transpose()?;
        let group = match &v.group {
            Some(g) if *g.get_ref() == 0 => {
                return self.err(g.span(), "redundancy group 0 (expected 1 to 255)");
            }
            Some(g) => *g.get_ref(),
            None => 1,
        };
        let priority = match &v.priority {
            Some(p) if matches!(*p.get_ref(), 0 | 255) => {
                return self.err(p.span(), format!("redundancy priority {} (expected 1 to 254: 0 means resigning and 255 an address owner, and the virtual IP is nobody's own address)", p.get_ref()));
            }
            Some(p) => *p.get_ref(),
            None => 100,
        };
        let advert_interval_ms = match &v.advert_interval_ms {
            Some(a) if !(10..=40_950).contains(a.get_ref()) || a.get_ref() % 10 != 0 => {
                return self.err(a.span(), format!("advert_interval_ms {} (expected 10 to 40950, a multiple of 10: VRRPv3 counts centiseconds)", a.get_ref()));
            }
            Some(a) => *a.get_ref(),
            None => 1000,
        };
        let sync_port = match &v.sync_port {
            Some(p) if matches!(*p.get_ref(), 0 | 500 | 4500) => {
                return self.err(
                    p.span(),
                    format!(
                        "sync_port {} (expected 1 to 65535, not IKE's 500 or 4500)",
                        p.get_ref()
                    ),
                );
            }
            Some(p) => *p.get_ref(),
            None => DEFAULT_SYNC_PORT,
        };
        let replay_interval = match &v.replay_interval {
            Some(ri) => {
                let ri = ri.get_ref();
                for x in [&ri.inbound, &ri.outbound] {
                    if !(1..=1_000_000).contains(x.get_ref()) {
                        return self.err(
                            x.span(),
                            format!(
                                "replay_interval {} (expected 1 to 1000000 packets)",
                                x.get_ref()
                            ),
                        );
                    }
                }
                (*ri.inbound.get_ref(), *ri.outbound.get_ref())
            }
            None => (100, 1),
        };
        let margin = |m: &Option<Spanned<u32>>, default: u32, what: &str| -> R<u32> {
            match m {
                Some(x) if *x.get_ref() > 1_000_000 => self.err(
                    x.span(),
                    format!("{what} {} (expected 0 to 1000000 packets)", x.get_ref()),
                ),
                Some(x) => Ok(*x.get_ref()),
                None => Ok(default),
            }
        };
        let preempt_delay = match &v.preempt_delay {
            Some(d) if *d.get_ref() > 3600 => {
                return self.err(
                    d.span(),
                    format!("preempt_delay {} (expected 0 to 3600 seconds)", d.get_ref()),
                );
            }
            Some(d) => *d.get_ref(),
            None => 0,
        };
        let seq_margin = margin(&v.seq_margin, 64, "seq_margin")?;
        let window_margin = margin(&v.window_margin, 32, "window_margin")?;
        if let Some(k) = &v.sync_key {
            if !(16..=64).contains(&k.get_ref().len()) {
                return self.err(k.span(), format!("sync_key of {} bytes (expected 16 to 64; 32 random characters recommended)", k.get_ref().len()));
            }
        }
        if let Some(i) = &v.interface {
            let n = i.get_ref();
            if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
                return self.err(i.span(), format!("redundancy interface {n:?} is not a Linux interface name (expected 1 to 15 characters, no '/' or space)"));
            }
        }
        let Some(en) = v.enabled.as_ref().filter(|e| *e.get_ref()) else {
            return Ok(None);
        };
        let missing = |what: &str| {
            self.err(
                en.span(),
                format!("enabled = true needs {what} in [redundancy]"),
            )
        };
        let Some(vip) = vip else {
            return missing("virtual_ip (the address the peers talk to)");
        };
        let Some(peer) = peer else {
            return missing("peer (the other member's address)");
        };
        let Some(interface) = v.interface.as_ref().map(|i| i.get_ref().clone()) else {
            return missing("interface (the Linux device the virtual IP lives on)");
        };
        let Some(key) = &v.sync_key else {
            return missing("sync_key (the sync channel's pre-shared key, same on both members)");
        };
        let Ok(sync_key) = SecretBytes::from_slice(key.get_ref().as_bytes()) else {
            return self.err(key.span(), "sync_key longer than 64 bytes");
        };
        let IpAddr::V4(primary) = address else {
            return self.err(en.span(), "redundancy needs an IPv4 [interface] address");
        };
        if vip == primary {
            let s = v.virtual_ip.as_ref().map_or(en.span(), Spanned::span);
            return self.err(s, "virtual_ip equals the interface address (expected a shared address of its own; [interface] address is this member's own)");
        }
        if peer == primary || peer == vip {
            let s = v.peer.as_ref().map_or(en.span(), Spanned::span);
            return self.err(
                s,
                "peer must be the other member's own address (not ours, not the virtual IP)",
            );
        }
        Ok(Some(Redundancy {
            virtual_ip: vip,
            group,
            priority,
            preempt: v.preempt,
            preempt_delay,
            peer,
            primary,
            interface,
            advert_interval_ms,
            sync_key,
            sync_port,
            replay_interval,
            seq_margin,
            window_margin,
        }))
    }

    fn protocol(&self, p: &Spanned<toml::Value>) -> R<u8> {
        let bad = || {
            self.err(
                p.span(),
                "match protocol: expected \"ip\", \"icmp\", \"tcp\", \"udp\", \"gre\", \"esp\" or a number 0 to 255",
            )
        };
        match p.get_ref() {
            toml::Value::Integer(n) => u8::try_from(*n).or_else(|_| bad()),
            toml::Value::String(s) => match s.as_str() {
                "icmp" => Ok(1),
                "tcp" => Ok(6),
                "udp" => Ok(17),
                "gre" => Ok(47),
                "esp" => Ok(50),
                "ip" => Ok(0),
                _ => bad(),
            },
            _ => bad(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_columns() {
        let (l, c, t) = locate("a = 1\nbb = 2\n", 8);
        assert_eq!((l, c, t.as_str()), (2, 3, "bb = 2"));
    }
}
