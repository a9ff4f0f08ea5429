//! `ipsec pcap decrypt`: Wireshark's ESP SA table, on the command line.
//!
//! Reads a capture (pcap or pcapng; Ethernet with or without VLAN tags, raw IPv4/IPv6,
//! Linux cooked v1 and v2, BSD loopback), finds every ESP packet in it, raw (IP protocol 50),
//! UDP-encapsulated (RFC 3948, on port 4500 unless `--udp-port` says otherwise) or behind AH
//! over IPv4 (AH is skipped, not verified), looks its SPI up in an SA file and prints it
//! decrypted, one line per packet:
//!
//! ```text
//! #3 192.0.2.1 -> 198.51.100.2 ESP spi 0x10000003 seq 10: 10.1.0.1 -> 10.2.0.1 ICMP echo request id 0x4242 seq 1 (len 65)
//! #5 192.0.2.1:4500 -> 198.51.100.2:4500 ESP-in-UDP spi 0x10000005 seq 16: ...
//! #7 10.0.3.1:4500 -> 10.0.3.10:4500 NAT-keepalive
//! #8 10.0.3.1:4500 -> 10.0.3.10:4500 IKE (non-ESP marker): IKEv1 Informational ...
//! ```
//!
//! `#N` is the frame number (1-based, as in Wireshark). After the colon comes a summary of
//! the decrypted packet (the inner packet in tunnel mode, the reconstructed original in
//! transport mode; GRE is opened and its payload summarised too), or with `--hex` its
//! bytes in hex, or why it was not decrypted (`no SA for spi 0x...`, `error: ICV
//! mismatch ...`). Other traffic is skipped. The exit status is non-zero only when the
//! capture or the SA file cannot be read; a capture cut short ends with a
//! `#N capture truncated ...` line and exit status 0.
//!
//! # SA files
//!
//! Two formats, told apart by content: a file whose first entry starts with `"` (or whose
//! name ends in `.uat`) is a Wireshark UAT, anything else is ours. Blank lines and lines
//! starting with `#` are ignored in both; errors name the line.
//!
//! **Ours**: one inbound SA per line, as `key=value` words and flags (`#` starts a comment):
//!
//! ```text
//! # spi (hex)  algorithms and keys as for `ipsec esp open`
//! spi=10000001 enc=aes128-cbc enc-key=HEX auth=hmac-sha1-96 auth-key=HEX
//! spi=0x2000 enc=aes256-gcm16 enc-key=KEY_AND_SALT_HEX mode=tunnel src=192.0.2.1 dst=198.51.100.0/24 esn esn-high=1
//! ```
//!
//! * `spi` (required): hex, with or without `0x`.
//! * `enc` (required): `null`, `des-cbc`, `3des-cbc`, `aes{128,192,256}-cbc`,
//!   `aes{128,192,256}-gcm{8,12,16}`; `enc-key`: hex (AES-GCM: the key then the 4-byte
//!   salt, RFC 4106).
//! * `auth`: `none` (the default; for AES-GCM), `hmac-sha1-96`, `hmac-sha256-128`,
//!   `hmac-md5-96`; `auth-key`: hex.
//! * `mode`: `tunnel`, `transport` or `auto` (the default: tunnel if the next header is
//!   IPv4/IPv6, else transport).
//! * `src`, `dst`: outer addresses the SA is limited to: an address, a prefix
//!   (`198.51.100.0/24`) or `*`. By default any.
//! * `esn`: Extended Sequence Numbers, with the high 32 bits 0 unless `esn-high=N` gives them
//!   (`esn-high` implies `esn`).
//! * `udp-encap`: accepted for symmetry with `ipsec esp`; the capture tells whether a packet
//!   is UDP-encapsulated.
//!
//! **Wireshark's `esp_sa` UAT** (Preferences > Protocols > ESP > ESP SAs, saved as
//! `~/.config/wireshark/esp_sa`): one SA per line, quoted comma-separated fields: protocol,
//! source, destination, SPI, encryption algorithm, encryption key, authentication algorithm,
//! authentication key. Addresses may be `*` or end in `*` octets (`192.168.*.*`), the SPI
//! may be `*`, keys are hex after `0x` or else ASCII. Algorithm names are Wireshark's
//! (`NULL`, `DES-CBC [RFC2405]`, `TripleDES-CBC [RFC2451]`, `AES-CBC [RFC3602]` (the key
//! length picks AES-128/192/256), `AES-GCM with 8|12|16 octet ICV [RFC4106]`,
//! `HMAC-SHA-1-96 [RFC2404]`, `HMAC-SHA-256-128 [RFC4868]`, `HMAC-MD5-96 [RFC2403]`).
//! SAs with other algorithms are loaded with a warning and their packets reported as not
//! decrypted. The mode is always `auto`.
//!
//! Every SA is inbound with anti-replay off, so captures decrypt in any order, repeats
//! included, and without lifetime limits.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use hal_traits::{AeadAlg, CipherAlg, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{
    Direction, Encryption, EspConfig, EspError, EspSa, Mode, Transform, UdpEncap,
};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::replay::ReplaySnapshot;
use ipsec_soft_crypto::SoftCrypto;
use pcap_file::PcapError;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

use super::esp::{AuthName, EncName, parse_hex, parse_hex_u32};

#[derive(Subcommand, Debug)]
pub enum PcapCommand {
    /// Print every ESP packet of a capture decrypted with the SAs of a key file (ours or
    /// Wireshark's esp_sa UAT), one line per packet; NAT keepalives and IKE on the NAT-T
    /// port are shown as such, other traffic is skipped.
    Decrypt(DecryptArgs),
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The SA file: one SA per line, `spi=HEX enc=ALG enc-key=HEX [auth=ALG auth-key=HEX]
    /// [mode=tunnel|transport|auto] [src=IP] [dst=IP] [esn] [esn-high=N]`, or a Wireshark
    /// esp_sa UAT file.
    #[arg(long, value_name = "KEYS")]
    sa_file: PathBuf,
    /// Print each decrypted packet as hex instead of a summary.
    #[arg(long)]
    hex: bool,
    /// UDP port carrying ESP-in-UDP, NAT keepalives and IKE behind the non-ESP marker
    /// (RFC 3948); repeat for several.
    #[arg(long = "udp-port", value_name = "PORT", default_values_t = [4500u16])]
    udp_ports: Vec<u16>,
    /// The capture: pcap or pcapng.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(cmd: PcapCommand) -> Result<(), String> {
    match cmd {
        PcapCommand::Decrypt(a) => decrypt(&a),
    }
}

fn decrypt(a: &DecryptArgs) -> Result<(), String> {
    let table = load_sa_file(&a.sa_file)?;
    for sa in &table {
        if let Err(why) = &sa.keys {
            eprintln!(
                "ipsec: warning: {}: line {}: {why}: its packets will not be decrypted",
                a.sa_file.display(),
                sa.line
            );
        }
    }
    let mut dec = Decryptor {
        table: &table,
        sas: HashMap::new(),
        hex: a.hex,
        udp_ports: a.udp_ports.clone(),
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut write_err: Option<io::Error> = None;
    let end = for_each_frame(&a.file, |n, linktype, data| {
        let Some(line) = dec.frame(n, linktype, data) else {
            return true;
        };
        match writeln!(out, "{line}") {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    })?;
    if write_err.is_none() {
        let tail = match end {
            Some((n, msg)) => writeln!(out, "#{n} {msg}"),
            None => Ok(()),
        };
        write_err = tail.and_then(|()| out.flush()).err();
    }
    match write_err {
        // `ipsec pcap decrypt ... | head`: not an error.
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// SA files
// ---------------------------------------------------------------------------------------

/// Outer addresses an SA applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrMatch {
    Any,
    Prefix(IpAddr, u8),
}

impl AddrMatch {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "*" || s.eq_ignore_ascii_case("any") {
            return Ok(Self::Any);
        }
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
            return Ok(Self::Prefix(ip, len));
        }
        if s.contains('*') {
            // Wireshark style: 192.168.*.* (wildcard octets at the end).
            let parts: Vec<&str> = s.split('.').collect();
            let fixed = parts.iter().take_while(|p| **p != "*").count();
            if parts.len() != 4 || parts.iter().skip(fixed).any(|p| *p != "*") {
                return Err(format!("bad address pattern {s:?}"));
            }
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(&parts[..fixed]) {
                *o = p
                    .parse()
                    .map_err(|_| format!("bad address pattern {s:?}"))?;
            }
            let len = u8::try_from(fixed * 8).unwrap_or(32);
            return Ok(Self::Prefix(IpAddr::V4(Ipv4Addr::from(octets)), len));
        }
        let ip: IpAddr = s.parse().map_err(|_| format!("bad address {s:?}"))?;
        Ok(Self::Prefix(ip, if ip.is_ipv4() { 32 } else { 128 }))
    }

    fn matches(self, a: IpAddr) -> bool {
        match (self, a) {
            (Self::Any, _) => true,
            (Self::Prefix(IpAddr::V4(p), len), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (Self::Prefix(IpAddr::V6(p), len), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What decrypts an SA's packets.
#[derive(Clone, Debug)]
struct Keys {
    transform: Transform,
    enc_key: Vec<u8>,
    auth_key: Vec<u8>,
    /// `None`: decided per packet from the next header.
    mode: Option<Mode>,
    /// `Some(high bits)` for an ESN SA.
    esn_high: Option<u32>,
}

/// One line of an SA file.
#[derive(Clone, Debug)]
struct SaSpec {
    line: usize,
    /// `None`: any SPI (a UAT `*`).
    spi: Option<u32>,
    src: AddrMatch,
    dst: AddrMatch,
    /// `Err`: an algorithm we do not implement (from a UAT), the reason.
    keys: Result<Keys, String>,
}

impl SaSpec {
    fn matches(&self, spi: u32, src: IpAddr, dst: IpAddr) -> bool {
        self.spi.is_none_or(|s| s == spi) && self.src.matches(src) && self.dst.matches(dst)
    }
}

fn load_sa_file(path: &Path) -> Result<Vec<SaSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    let uat = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("uat"))
        || first.is_some_and(|l| l.starts_with('"'));
    let table = parse_sa_text(&text, uat).map_err(|e| format!("{}: {e}", path.display()))?;
    if table.is_empty() {
        return Err(format!("{}: no SA in the file", path.display()));
    }
    Ok(table)
}

fn parse_sa_text(text: &str, uat: bool) -> Result<Vec<SaSpec>, String> {
    let mut table = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let spec = if uat {
            parse_uat_line(l, line)
        } else {
            parse_native_line(l, line)
        };
        table.push(spec.map_err(|e| format!("line {line}: {e}"))?);
    }
    Ok(table)
}

fn value_names<T: ValueEnum>() -> String {
    T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

const NATIVE_KEYS: &str =
    "spi, enc, enc-key, auth, auth-key, mode, src, dst, esn, esn-high, udp-encap";

fn parse_native_line(l: &str, line: usize) -> Result<SaSpec, String> {
    let l = l.split('#').next().unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    let mut spi = None;
    let mut enc = None;
    let mut enc_key = Vec::new();
    let mut auth = AuthName::None;
    let mut auth_key = Vec::new();
    let mut mode = None;
    let mut src = AddrMatch::Any;
    let mut dst = AddrMatch::Any;
    let mut esn = false;
    let mut esn_high = None;
    for word in l.split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if seen.contains(&key) {
            return Err(format!("{key} given twice"));
        }
        seen.push(key);
        let flag = matches!(key, "esn" | "udp-encap");
        let value = match (flag, value) {
            (true, None) => "",
            (true, Some(_)) => return Err(format!("{key} is a flag and takes no value")),
            (false, Some(v)) => v,
            (false, None) if NATIVE_KEYS.split(", ").any(|k| k == key) => {
                return Err(format!("{key} needs a value ({key}=...)"));
            }
            (false, None) => {
                return Err(format!("unknown word {key:?} (expected {NATIVE_KEYS})"));
            }
        };
        match key {
            "spi" => spi = Some(parse_hex_u32(value).map_err(|e| format!("spi: {e}"))?),
            "enc" => {
                enc = Some(EncName::from_str(value, true).map_err(|_| {
                    format!(
                        "unknown encryption {value:?} (one of {})",
                        value_names::<EncName>()
                    )
                })?);
            }
            "enc-key" => enc_key = parse_hex(value).map_err(|e| format!("enc-key: {e}"))?.0,
            "auth" => {
                auth = AuthName::from_str(value, true).map_err(|_| {
                    format!(
                        "unknown integrity algorithm {value:?} (one of {})",
                        value_names::<AuthName>()
                    )
                })?;
            }
            "auth-key" => auth_key = parse_hex(value).map_err(|e| format!("auth-key: {e}"))?.0,
            "mode" => {
                mode = match value.to_ascii_lowercase().as_str() {
                    "tunnel" => Some(Mode::Tunnel),
                    "transport" => Some(Mode::Transport),
                    "auto" => None,
                    _ => return Err(format!("mode: {value:?} is not tunnel, transport or auto")),
                };
            }
            "src" => src = AddrMatch::parse(value).map_err(|e| format!("src: {e}"))?,
            "dst" => dst = AddrMatch::parse(value).map_err(|e| format!("dst: {e}"))?,
            "esn" => esn = true,
            "esn-high" => esn_high = Some(parse_u32(value).map_err(|e| format!("esn-high: {e}"))?),
            "udp-encap" => {}
            _ => return Err(format!("unknown key {key:?} (expected {NATIVE_KEYS})")),
        }
    }
    let spi = spi.ok_or("missing spi=")?;
    let enc = enc.ok_or("missing enc=")?;
    let keys = Keys {
        transform: Transform {
            enc: enc.encryption(),
            auth: auth.mac(),
        },
        enc_key,
        auth_key,
        mode,
        esn_high: if esn || esn_high.is_some() {
            Some(esn_high.unwrap_or(0))
        } else {
            None
        },
    };
    check_keys(&keys)?;
    Ok(SaSpec {
        line,
        spi: Some(spi),
        src,
        dst,
        keys: Ok(keys),
    })
}

fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("not a 32-bit number: {e}"))
}

/// Rejects a transform or key lengths `EspSa::new` would refuse, saying what is expected.
fn check_keys(k: &Keys) -> Result<(), String> {
    k.transform.validate().map_err(|_| match k.transform.enc {
        Encryption::Gcm(_) => "AES-GCM takes no integrity algorithm".to_string(),
        _ => "null encryption needs an integrity algorithm".to_string(),
    })?;
    let mut cfg = EspConfig::transport(1, Direction::Inbound, k.transform);
    cfg.replay_window = 0;
    let probe: Result<EspSa<SoftCrypto>, EspError> =
        EspSa::new(cfg, &k.enc_key, &k.auth_key, Instant::ZERO);
    probe.map(drop).map_err(|_| {
        format!(
            "the encryption key must be {} bytes (got {}) and the integrity key {} (got {})",
            k.transform.enc.keymat_len(),
            k.enc_key.len(),
            k.transform.auth.map_or(0, MacAlg::key_len),
            k.auth_key.len()
        )
    })
}

/// Splits a UAT record: comma-separated fields, each quoted (`"..."`, with `\xHH` and
/// `\c` escapes) or bare.
fn uat_fields(l: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = l.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut f = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('x') => {
                            let h: String = chars.by_ref().take(2).collect();
                            let b = u8::from_str_radix(&h, 16)
                                .map_err(|_| format!("bad escape \\x{h}"))?;
                            f.push(char::from(b));
                        }
                        Some(c) => f.push(c),
                        None => return Err("unterminated quoted field".into()),
                    },
                    Some(c) => f.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                f.push(c);
            }
            f = f.trim().to_string();
        }
        fields.push(f);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(fields),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a field")),
        }
    }
}

/// A UAT key: hex after `0x`, else the ASCII bytes themselves.
fn uat_key(s: &str) -> Result<Vec<u8>, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => hex::decode(h).map_err(|e| format!("key {s:?} is not hex: {e}")),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// A Wireshark algorithm name without its reference: `AES-CBC [RFC3602]` -> `aes-cbc`.
fn ws_name(s: &str) -> String {
    s.split(" [")
        .next()
        .unwrap_or(s)
        .trim()
        .to_ascii_lowercase()
}

/// Maps Wireshark's encryption algorithm (and, for AES, the key length) to ours.
/// `Ok(Err(reason))`: an algorithm we do not implement.
fn ws_encryption(name: &str, key_len: usize) -> Result<Result<Encryption, String>, String> {
    let aes = |alg: &str, sizes: [usize; 3]| match sizes.iter().position(|&s| s == key_len) {
        Some(i) => Ok(i),
        None => Err(format!(
            "{alg} key must be {}, {} or {} bytes, got {key_len}",
            sizes[0], sizes[1], sizes[2]
        )),
    };
    let gcm = |icv: usize| -> Result<Result<Encryption, String>, String> {
        let i = aes("AES-GCM (key and salt)", [20, 28, 36])?;
        let alg = [
            [
                AeadAlg::Aes128Gcm8,
                AeadAlg::Aes128Gcm12,
                AeadAlg::Aes128Gcm16,
            ],
            [
                AeadAlg::Aes192Gcm8,
                AeadAlg::Aes192Gcm12,
                AeadAlg::Aes192Gcm16,
            ],
            [
                AeadAlg::Aes256Gcm8,
                AeadAlg::Aes256Gcm12,
                AeadAlg::Aes256Gcm16,
            ],
        ];
        let row = alg.get(i).ok_or("AES-GCM key length")?;
        let a = row.get((icv - 8) / 4).ok_or("AES-GCM ICV length")?;
        Ok(Ok(Encryption::Gcm(*a)))
    };
    Ok(Ok(match ws_name(name).as_str() {
        "null" => Encryption::Null,
        "des-cbc" => Encryption::Cbc(CipherAlg::DesCbc),
        "tripledes-cbc" => Encryption::Cbc(CipherAlg::TripleDesCbc),
        "aes-cbc" => {
            let i = aes("AES-CBC", [16, 24, 32])?;
            let algs = [
                CipherAlg::Aes128Cbc,
                CipherAlg::Aes192Cbc,
                CipherAlg::Aes256Cbc,
            ];
            Encryption::Cbc(*algs.get(i).ok_or("AES-CBC key length")?)
        }
        "aes-gcm with 8 octet icv" => return gcm(8),
        "aes-gcm with 12 octet icv" => return gcm(12),
        "aes-gcm with 16 octet icv" => return gcm(16),
        _ => return Ok(Err(format!("unsupported encryption algorithm {name:?}"))),
    }))
}

/// Maps Wireshark's authentication algorithm to ours (`Ok(None)` for NULL).
fn ws_auth(name: &str) -> Result<Option<MacAlg>, String> {
    match ws_name(name).as_str() {
        "null" | "" => Ok(None),
        "hmac-sha-1-96" => Ok(Some(MacAlg::HmacSha1_96)),
        "hmac-sha-256-128" => Ok(Some(MacAlg::HmacSha256_128)),
        "hmac-md5-96" => Ok(Some(MacAlg::HmacMd5_96)),
        _ => Err(format!("unsupported authentication algorithm {name:?}")),
    }
}

fn parse_uat_line(l: &str, line: usize) -> Result<SaSpec, String> {
    let f = uat_fields(l)?;
    let [_proto, src, dst, spi, enc, enc_key, auth, auth_key, ..] = f.as_slice() else {
        return Err(format!(
            "expected 8 fields (protocol, src, dst, spi, encryption, key, authentication, \
             key), found {}",
            f.len()
        ));
    };
    let src = AddrMatch::parse(src).map_err(|e| format!("source: {e}"))?;
    let dst = AddrMatch::parse(dst).map_err(|e| format!("destination: {e}"))?;
    let spi = match spi.trim() {
        "*" => None,
        s => Some(parse_hex_u32(s).map_err(|e| format!("spi: {e}"))?),
    };
    let enc_key = uat_key(enc_key)?;
    let auth_key = uat_key(auth_key)?;
    let keys = match (ws_encryption(enc, enc_key.len())?, ws_auth(auth)) {
        (Ok(enc), Ok(auth)) => {
            let k = Keys {
                transform: Transform { enc, auth },
                enc_key,
                auth_key,
                mode: None,
                esn_high: None,
            };
            check_keys(&k)?;
            Ok(k)
        }
        (Err(why), _) | (_, Err(why)) => Err(why),
    };
    Ok(SaSpec {
        line,
        spi,
        src,
        dst,
        keys,
    })
}

// ---------------------------------------------------------------------------------------
// Captures
// ---------------------------------------------------------------------------------------

/// Link types we take IP out of.
const LINKTYPES: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

/// Calls `f(frame number, link type, bytes)` for every frame of a pcap or pcapng file
/// until it returns false. `Ok(Some((n, why)))`: the file could not be read past frame
/// `n - 1`.
fn for_each_frame(
    path: &Path,
    mut f: impl FnMut(u64, u32, &[u8]) -> bool,
) -> Result<Option<(u64, String)>, String> {
    let name = path.display();
    let mut file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| format!("{name}: not a pcap or pcapng file (too short)"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("{name}: {e}"))?;
    let mut n: u64 = 0;
    let stopped = |n: u64, e: &PcapError| {
        let why = match e {
            PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                "capture truncated: the file ends in the middle of a packet".to_string()
            }
            e => format!("capture truncated: unreadable from here on ({e})"),
        };
        Some((n + 1, why))
    };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(file)
            .map_err(|e| format!("{name}: not a readable pcapng file: {e}"))?;
        let mut ifaces: Vec<u32> = r
            .interfaces()
            .iter()
            .map(|i| u32::from(i.linktype))
            .collect();
        while let Some(block) = r.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(e) => return Ok(stopped(n, &e)),
            };
            let (iface, data) = match &block {
                Block::SectionHeader(_) => {
                    ifaces.clear();
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    let lt = u32::from(idb.linktype);
                    if !LINKTYPES.contains(&lt) {
                        eprintln!(
                            "ipsec: warning: {name}: interface {} has link type {lt}, \
                             which is not supported: its packets are skipped",
                            ifaces.len()
                        );
                    }
                    ifaces.push(lt);
                    continue;
                }
                Block::EnhancedPacket(p) => (p.interface_id, &p.data),
                Block::SimplePacket(p) => (0, &p.data),
                Block::Packet(p) => (u32::from(p.interface_id), &p.data),
                _ => continue,
            };
            n += 1;
            let lt = usize::try_from(iface)
                .ok()
                .and_then(|i| ifaces.get(i))
                .copied()
                .unwrap_or(u32::MAX);
            if !f(n, lt, data) {
                return Ok(None);
            }
        }
    } else {
        let mut r =
            PcapReader::new(file).map_err(|e| format!("{name}: not a pcap or pcapng file: {e}"))?;
        let lt = u32::from(r.header().datalink);
        if !LINKTYPES.contains(&lt) {
            return Err(format!(
                "{name}: link type {lt} is not supported (Ethernet, raw IP, Linux cooked and \
                 BSD loopback are)"
            ));
        }
        // Raw packets: the validated ones refuse frames longer than the snap length.
        while let Some(p) = r.next_raw_packet() {
            let p = match p {
                Ok(p) => p,
                Err(e) => return Ok(stopped(n, &e)),
            };
            n += 1;
            if !f(n, lt, &p.data) {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// The IP packet in a frame, or `None` for anything else.
fn link_payload(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    match linktype {
        // BSD loopback: the address family, host order (0) or network order (108).
        0 | 108 => {
            let fam = frame.get(..4)?;
            let fam = u32::from_le_bytes(fam.try_into().ok()?)
                .min(u32::from_be_bytes(fam.try_into().ok()?));
            matches!(fam, 2 | 24 | 28 | 30).then_some(frame.get(4..)?)
        }
        1 => ethernet(frame),
        12 | 14 | 101 | 228 | 229 => Some(frame),
        113 => ethertype(be16(frame, 14)?, frame.get(16..)?),
        276 => ethertype(be16(frame, 0)?, frame.get(20..)?),
        _ => None,
    }
}

fn ethernet(frame: &[u8]) -> Option<&[u8]> {
    let mut off = 12;
    let mut et = be16(frame, off)?;
    // 802.1Q, 802.1ad and the old QinQ tag.
    for _ in 0..4 {
        if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            break;
        }
        off += 4;
        et = be16(frame, off)?;
    }
    ethertype(et, frame.get(off + 2..)?)
}

fn ethertype(et: u16, payload: &[u8]) -> Option<&[u8]> {
    matches!(et, 0x0800 | 0x86dd).then_some(payload)
}

const ESP: u8 = 50;
const UDP: u8 = 17;
const AH: u8 = 51;

/// The fields of an IP header we print and dispatch on.
struct IpView {
    src: IpAddr,
    dst: IpAddr,
    /// The upper protocol (after IPv6 extension headers).
    proto: u8,
    /// Where the upper protocol starts.
    l4: usize,
    /// The length the header declares.
    total: usize,
    /// What the capture holds of it: `min(total, captured)`.
    avail: usize,
    /// Fragment offset in bytes, and the More Fragments flag.
    frag_offset: usize,
    more_frags: bool,
}

impl IpView {
    fn is_fragment(&self) -> bool {
        self.frag_offset != 0 || self.more_frags
    }
}

/// Parses an IPv4 or IPv6 header (and IPv6 extension headers), tolerating a packet cut
/// short by the capture.
fn parse_ip(p: &[u8]) -> Option<IpView> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            let total = usize::from(be16(p, 2)?);
            if ihl < 20 || p.len() < ihl || total < ihl {
                return None;
            }
            let ff = be16(p, 6)?;
            let addr = |at: usize| -> Option<IpAddr> {
                let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            };
            Some(IpView {
                src: addr(12)?,
                dst: addr(16)?,
                proto: *p.get(9)?,
                l4: ihl,
                total,
                avail: total.min(p.len()),
                frag_offset: usize::from(ff & 0x1fff) * 8,
                more_frags: ff & 0x2000 != 0,
            })
        }
        6 => {
            let plen = usize::from(be16(p, 4)?);
            // A jumbogram (payload length 0) takes what there is.
            let total = if plen == 0 { p.len() } else { 40 + plen };
            let avail = total.min(p.len());
            let addr = |at: usize| -> Option<IpAddr> {
                let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            };
            let (src, dst) = (addr(8)?, addr(24)?);
            let mut nh = *p.get(6)?;
            let mut off = 40;
            let (mut frag_offset, mut more_frags) = (0, false);
            for _ in 0..8 {
                match nh {
                    // Hop-by-hop, routing, destination options.
                    0 | 43 | 60 => {
                        let len = (usize::from(*p.get(off + 1)?) + 1) * 8;
                        nh = *p.get(off)?;
                        off += len;
                    }
                    44 => {
                        let fo = be16(p, off + 2)?;
                        frag_offset = usize::from(fo & 0xfff8);
                        more_frags = fo & 1 != 0;
                        nh = *p.get(off)?;
                        off += 8;
                    }
                    _ => break,
                }
            }
            if off > avail {
                return None;
            }
            Some(IpView {
                src,
                dst,
                proto: nh,
                l4: off,
                total,
                avail,
                frag_offset,
                more_frags,
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Decryption
// ---------------------------------------------------------------------------------------

/// `(SA file entry, SPI, mode, UDP encapsulation ports)`.
type SaKey = (usize, u32, Mode, Option<(u16, u16)>);

struct Decryptor<'t> {
    table: &'t [SaSpec],
    /// SAs made on first use (a UAT entry with SPI `*` serves many SPIs; the mode and the
    /// UDP ports are part of the core's configuration).
    sas: HashMap<SaKey, EspSa<SoftCrypto>>,
    hex: bool,
    udp_ports: Vec<u16>,
}

impl Decryptor<'_> {
    /// The line for one frame, `None` when it is neither ESP nor on a NAT-T port.
    fn frame(&mut self, n: u64, linktype: u32, frame: &[u8]) -> Option<String> {
        let ip = link_payload(linktype, frame)?;
        let v = parse_ip(ip)?;
        let (src, dst) = (v.src, v.dst);
        let l4 = ip.get(v.l4..v.avail)?;
        match v.proto {
            ESP => {
                if v.is_fragment() {
                    return Some(format!(
                        "#{n} {src} -> {dst} ESP fragment (offset {}): not reassembled",
                        v.frag_offset
                    ));
                }
                let (Some(spi), Some(seq)) = (be32(l4, 0), be32(l4, 4)) else {
                    return Some(format!("#{n} {src} -> {dst} ESP: truncated header"));
                };
                let head = format!("#{n} {src} -> {dst} ESP spi 0x{spi:08x} seq {seq}");
                let body = if v.avail < v.total {
                    truncated(&v)
                } else {
                    self.open(ip.get(..v.avail)?, &v, (spi, seq), None)
                };
                Some(format!("{head}: {body}"))
            }
            UDP => {
                if v.frag_offset != 0 {
                    return None;
                }
                let (sport, dport) = (be16(l4, 0)?, be16(l4, 2)?);
                if !self.udp_ports.iter().any(|p| *p == sport || *p == dport) {
                    return None;
                }
                let from = SocketAddr::new(src, sport);
                let to = SocketAddr::new(dst, dport);
                if v.more_frags {
                    return Some(format!(
                        "#{n} {from} -> {to} UDP first fragment: not reassembled"
                    ));
                }
                let udp_len = usize::from(be16(l4, 4)?).max(8);
                let payload = l4.get(8..udp_len.min(l4.len()))?;
                let head = format!("#{n} {from} -> {to}");
                if payload == [0xff] {
                    return Some(format!("{head} NAT-keepalive"));
                }
                if payload.get(..4) == Some(&[0, 0, 0, 0]) {
                    let ike = payload.get(4..).unwrap_or_default();
                    return Some(format!("{head} IKE (non-ESP marker){}", ike_summary(ike)));
                }
                let (Some(spi), Some(seq)) = (be32(payload, 0), be32(payload, 4)) else {
                    return Some(format!(
                        "{head} UDP payload of {} bytes: neither ESP, IKE nor a keepalive",
                        payload.len()
                    ));
                };
                let head = format!("{head} ESP-in-UDP spi 0x{spi:08x} seq {seq}");
                let body = if v.avail < v.total || l4.len() < udp_len {
                    truncated(&v)
                } else {
                    self.open(ip.get(..v.avail)?, &v, (spi, seq), Some((dport, sport)))
                };
                Some(format!("{head}: {body}"))
            }
            AH => {
                // ESP behind AH (RFC 4302), as some old tunnels send it: AH is skipped, its
                // ICV not checked, and the packet opened as if it had come without it.
                let (Some(&nh), Some(&plen), Some(ah_spi)) = (l4.first(), l4.get(1), be32(l4, 4))
                else {
                    return None;
                };
                if nh != ESP || v.is_fragment() {
                    return None;
                }
                let ah_len = (usize::from(plen) + 2) * 4;
                let esp = l4.get(ah_len..).unwrap_or_default();
                let (Some(spi), Some(seq)) = (be32(esp, 0), be32(esp, 4)) else {
                    return Some(format!(
                        "#{n} {src} -> {dst} AH spi 0x{ah_spi:08x} ESP: truncated header"
                    ));
                };
                let head = format!(
                    "#{n} {src} -> {dst} AH spi 0x{ah_spi:08x} (not verified) ESP spi \
                     0x{spi:08x} seq {seq}"
                );
                let body = if v.avail < v.total {
                    truncated(&v)
                } else {
                    match strip_ah_v4(ip, &v, ah_len) {
                        Some(pkt) => self.open(&pkt, &v, (spi, seq), None),
                        None => "not decrypted: ESP behind AH over IPv6 is not supported".into(),
                    }
                };
                Some(format!("{head}: {body}"))
            }
            _ => None,
        }
    }

    /// Decrypts one ESP packet (the whole outer IP packet), returning what to print after
    /// the colon.
    fn open(
        &mut self,
        ip: &[u8],
        v: &IpView,
        (spi, seq): (u32, u32),
        encap: Option<(u16, u16)>,
    ) -> String {
        let Some(idx) = self.table.iter().position(|s| s.matches(spi, v.src, v.dst)) else {
            return format!("no SA for spi 0x{spi:08x}");
        };
        let Some(spec) = self.table.get(idx) else {
            return format!("no SA for spi 0x{spi:08x}");
        };
        let keys = match &spec.keys {
            Ok(k) => k,
            Err(why) => return format!("not decrypted: the SA on line {} has an {why}", spec.line),
        };
        let modes: &[Mode] = match keys.mode {
            Some(Mode::Tunnel) => &[Mode::Tunnel],
            Some(Mode::Transport) => &[Mode::Transport],
            None => &[Mode::Tunnel, Mode::Transport],
        };
        let hex = self.hex;
        let mut result = String::new();
        for (i, &mode) in modes.iter().enumerate() {
            let key = (idx, spi, mode, encap);
            let sa = match self.sas.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    match make_sa(keys, spi, mode, encap) {
                        Ok(sa) => slot.insert(sa),
                        Err(e) => return format!("error: {e}"),
                    }
                }
            };
            let mut buf = ip.to_vec();
            if let Some(hi) = keys.esn_high {
                // The high bits as given, whatever came before (captures are not in order).
                let snap = ReplaySnapshot {
                    bitmap: [0; 2],
                    top: (u64::from(hi) << 32) | u64::from(seq),
                    size: 0,
                    esn: true,
                };
                if let Err(e) = sa.restore_replay(&snap) {
                    return format!("error: {e}");
                }
            }
            match sa.decapsulate(Instant::ZERO, &mut buf) {
                Ok(d) if hex => return hex::encode(&*d.packet),
                Ok(d) => return summarize(d.packet, 0),
                Err(EspError::BadNextHeader) if i + 1 < modes.len() => {}
                Err(e) => {
                    result = format!("error: {e}");
                    if e == EspError::IcvMismatch {
                        result.push_str(" (wrong key or algorithm?)");
                    }
                    break;
                }
            }
        }
        result
    }
}

/// An IPv4 packet with ESP behind AH, rebuilt without the AH header.
fn strip_ah_v4(ip: &[u8], v: &IpView, ah_len: usize) -> Option<Vec<u8>> {
    if !v.src.is_ipv4() {
        return None;
    }
    let mut out = ip.get(..v.l4)?.to_vec();
    out.extend_from_slice(ip.get(v.l4 + ah_len..v.avail)?);
    let len = u16::try_from(out.len()).ok()?;
    out.get_mut(2..4)?.copy_from_slice(&len.to_be_bytes());
    *out.get_mut(9)? = ESP;
    out.get_mut(10..12)?.copy_from_slice(&[0, 0]);
    let sum = out
        .get(..v.l4)?
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .fold(0u32, |a, w| {
            let a = a + w;
            (a & 0xffff) + (a >> 16)
        });
    let sum = u16::try_from(sum & 0xffff).unwrap_or(0);
    out.get_mut(10..12)?.copy_from_slice(&(!sum).to_be_bytes());
    Some(out)
}

fn truncated(v: &IpView) -> String {
    format!(
        "packet cut short by the capture ({} of {} bytes): not decrypted",
        v.avail, v.total
    )
}

fn make_sa(
    k: &Keys,
    spi: u32,
    mode: Mode,
    encap: Option<(u16, u16)>,
) -> Result<EspSa<SoftCrypto>, EspError> {
    let mut cfg = match mode {
        Mode::Tunnel => {
            let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            EspConfig::tunnel(spi, Direction::Inbound, k.transform, any, any)
        }
        Mode::Transport => EspConfig::transport(spi, Direction::Inbound, k.transform),
    };
    cfg.replay_window = 0;
    cfg.esn = k.esn_high.is_some();
    cfg.lifetime = LifetimeConfig::UNLIMITED;
    cfg.udp_encap = encap.map(|(local_port, remote_port)| UdpEncap {
        local_port,
        remote_port,
    });
    EspSa::new(cfg, &k.enc_key, &k.auth_key, Instant::ZERO)
}

// ---------------------------------------------------------------------------------------
// Summaries
// ---------------------------------------------------------------------------------------

/// An IKE message after the non-ESP marker: version, exchange, SPI, message ID.
fn ike_summary(m: &[u8]) -> String {
    let (Some(ispi), Some(&ver), Some(&exch), Some(msgid), Some(len)) =
        (m.get(..8), m.get(17), m.get(18), be32(m, 20), be32(m, 24))
    else {
        return format!(": {} bytes, too short for an IKE header", m.len());
    };
    let major = ver >> 4;
    let name = match (major, exch) {
        (1, 1) => "Base".to_string(),
        (1, 2) => "Main Mode".to_string(),
        (1, 4) => "Aggressive Mode".to_string(),
        (1, 5) => "Informational".to_string(),
        (1, 32) => "Quick Mode".to_string(),
        (1, 33) => "New Group Mode".to_string(),
        (2, 34) => "IKE_SA_INIT".to_string(),
        (2, 35) => "IKE_AUTH".to_string(),
        (2, 36) => "CREATE_CHILD_SA".to_string(),
        (2, 37) => "INFORMATIONAL".to_string(),
        (_, e) => format!("exchange {e}"),
    };
    format!(
        ": IKEv{major} {name} i_spi {} msgid 0x{msgid:08x} (len {len})",
        hex::encode(ispi)
    )
}

/// One line about an IP packet: addresses, protocol details, length, and for tunnels
/// (GRE, IP in IP) the inner packet after a colon.
fn summarize(p: &[u8], depth: u8) -> String {
    let Some(v) = parse_ip(p) else {
        return format!(
            "not an IP packet ({} bytes): {}",
            p.len(),
            hex::encode(p.get(..32).unwrap_or(p))
        );
    };
    let l4 = p.get(v.l4..v.avail).unwrap_or_default();
    let (head, inner) = if v.frag_offset != 0 {
        (
            format!("{} fragment offset {}", proto_name(v.proto), v.frag_offset),
            None,
        )
    } else {
        l4_summary(v.proto, l4, depth)
    };
    let mut s = format!("{} -> {} {head} (len {})", v.src, v.dst, v.total);
    if v.avail < v.total {
        let _ = write!(s, " [only {} bytes]", v.avail);
    }
    if let Some(inner) = inner {
        let _ = write!(s, ": {inner}");
    }
    s
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        4 => "IPv4-in-IP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        41 => "IPv6-in-IP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        51 => "AH".into(),
        58 => "ICMPv6".into(),
        59 => "no next header".into(),
        132 => "SCTP".into(),
        p => format!("IP proto {p}"),
    }
}

/// The upper-layer part of a summary, and the summary of a tunnelled packet inside.
fn l4_summary(proto: u8, l4: &[u8], depth: u8) -> (String, Option<String>) {
    let name = proto_name(proto);
    let trunc = || (format!("{name} (truncated)"), None);
    match proto {
        1 | 58 => {
            let (Some(&t), Some(&c)) = (l4.first(), l4.get(1)) else {
                return trunc();
            };
            let echo = |what: &str| match (be16(l4, 4), be16(l4, 6)) {
                (Some(id), Some(seq)) => format!("{name} {what} id 0x{id:04x} seq {seq}"),
                _ => format!("{name} {what}"),
            };
            let s = match (proto, t) {
                (1, 8) | (58, 128) => echo("echo request"),
                (1, 0) | (58, 129) => echo("echo reply"),
                (1, 3) | (58, 1) => format!("{name} destination unreachable code {c}"),
                (1, 11) | (58, 3) => format!("{name} time exceeded code {c}"),
                (1, 5) | (58, 137) => format!("{name} redirect"),
                (58, 2) => match be32(l4, 4) {
                    Some(mtu) => format!("{name} packet too big mtu {mtu}"),
                    None => format!("{name} packet too big"),
                },
                (58, 133) => format!("{name} router solicitation"),
                (58, 134) => format!("{name} router advertisement"),
                (58, 135) => format!("{name} neighbor solicitation"),
                (58, 136) => format!("{name} neighbor advertisement"),
                _ => format!("{name} type {t} code {c}"),
            };
            (s, None)
        }
        6 => {
            let (Some(sp), Some(dp), Some(seq), Some(&flags)) =
                (be16(l4, 0), be16(l4, 2), be32(l4, 4), l4.get(13))
            else {
                return trunc();
            };
            let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
            let set: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| flags & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            (
                format!("TCP {sp} -> {dp} [{}] seq {seq}", set.join(",")),
                None,
            )
        }
        17 => match (be16(l4, 0), be16(l4, 2)) {
            (Some(sp), Some(dp)) => (format!("UDP {sp} -> {dp}"), None),
            _ => trunc(),
        },
        50 => match (be32(l4, 0), be32(l4, 4)) {
            (Some(spi), Some(seq)) => (format!("ESP spi 0x{spi:08x} seq {seq}"), None),
            _ => trunc(),
        },
        51 => match be32(l4, 4) {
            Some(spi) => (format!("AH spi 0x{spi:08x}"), None),
            None => trunc(),
        },
        4 | 41 => (name, Some(nested(l4, depth))),
        47 => gre_summary(l4, depth),
        _ => (name, None),
    }
}

/// A tunnelled packet, to a bounded depth.
fn nested(p: &[u8], depth: u8) -> String {
    if depth >= 4 {
        format!("{} bytes (nested too deep)", p.len())
    } else {
        summarize(p, depth + 1)
    }
}

/// GRE (RFC 2784, with the RFC 2890 key and sequence number; version 1 is PPTP's,
/// RFC 2637): flags and version, protocol type, then the optional fields.
fn gre_summary(g: &[u8], depth: u8) -> (String, Option<String>) {
    let (Some(flags), Some(ptype)) = (be16(g, 0), be16(g, 2)) else {
        return ("GRE (truncated)".into(), None);
    };
    let version = flags & 0x7;
    let pname = match ptype {
        0x0800 => " (IPv4)",
        0x86dd => " (IPv6)",
        0x6558 => " (Ethernet)",
        0x880b => " (PPP)",
        0x8847 => " (MPLS)",
        0x0000 => " (none)",
        _ => "",
    };
    let mut s = format!("GRE proto 0x{ptype:04x}{pname}");
    if version != 0 {
        let _ = write!(s, " version {version}");
        if version == 1 {
            s.push_str(" (PPTP)");
        }
        return (s, None);
    }
    let mut off = 4;
    if flags & 0x8000 != 0 {
        match be16(g, off) {
            Some(ck) => {
                let _ = write!(s, " checksum 0x{ck:04x}");
            }
            None => return (format!("{s} (truncated)"), None),
        }
        off += 4;
    }
    if flags & 0x2000 != 0 {
        match be32(g, off) {
            Some(key) => {
                let _ = write!(s, " key 0x{key:08x}");
            }
            None => return (format!("{s} (truncated)"), None),
        }
        off += 4;
    }
    if flags & 0x1000 != 0 {
        match be32(g, off) {
            Some(seq) => {
                let _ = write!(s, " seq {seq}");
            }
            None => return (format!("{s} (truncated)"), None),
        }
        off += 4;
    }
    let payload = g.get(off..).unwrap_or_default();
    let inner = match ptype {
        _ if payload.is_empty() => None,
        0x0800 | 0x86dd => Some(nested(payload, depth)),
        0x6558 => Some(match ethernet(payload) {
            Some(ip) => nested(ip, depth),
            None => format!("Ethernet frame, {} bytes, not IP", payload.len()),
        }),
        _ => Some(format!("{} bytes", payload.len())),
    };
    (s, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_patterns() {
        let a = |s: &str| AddrMatch::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(a("*").matches(ip("10.0.0.1")));
        assert!(a("192.168.*.*").matches(ip("192.168.7.9")));
        assert!(!a("192.168.*.*").matches(ip("192.169.0.1")));
        assert!(a("10.0.0.0/8").matches(ip("10.200.0.1")));
        assert!(a("2001:db8::/32").matches(ip("2001:db8:1::1")));
        assert!(!a("2001:db8::/32").matches(ip("10.0.0.1")));
        assert!(a("0.0.0.0/0").matches(ip("1.2.3.4")));
        assert!(AddrMatch::parse("10.*.1.*").is_err());
        assert!(AddrMatch::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn uat_records() {
        let f = uat_fields(
            r#""IPv4","*","10.0.0.1","0x1","NULL","","HMAC-SHA-1-96 [RFC2404]","a\x22b""#,
        )
        .unwrap();
        assert_eq!(f.len(), 8);
        assert_eq!(f[7], "a\"b");
        assert!(uat_fields(r#""IPv4","unterminated"#).is_err());
    }

    #[test]
    fn gre_with_key_and_seq() {
        // Flags K and S, IPv4 inside: an ICMP echo request.
        let mut g = vec![0x30, 0x00, 0x08, 0x00, 0, 0, 0x12, 0x34, 0, 0, 0, 2];
        let inner = [
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 8, 0, 0, 0, 0, 7, 0,
            3,
        ];
        g.extend_from_slice(&inner);
        let (head, inner) = gre_summary(&g, 0);
        assert_eq!(head, "GRE proto 0x0800 (IPv4) key 0x00001234 seq 2");
        assert_eq!(
            inner.unwrap(),
            "10.0.0.1 -> 10.0.0.2 ICMP echo request id 0x0007 seq 3 (len 28)"
        );
    }
}
