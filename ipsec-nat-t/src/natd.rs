//! NAT discovery (RFC 3947 §3.2): the NAT-D hashes and what they reveal.
//!
//! Each side sends, in Main Mode messages 3 and 4 (Aggressive Mode 2 and 3), one NAT-D
//! payload per address: first the hash of the *receiver's* address and port as the sender
//! sees them, then the hash of each of the sender's own addresses. The hash is the
//! negotiated hash function, plain (not the HMAC PRF), over `CKY-I | CKY-R | IP | Port`.
//!
//! The receiver recomputes both from the packet as it arrived:
//!
//! * the hash of its own address and port (the packet's destination) against the first
//!   payload. No match ("NAT does not match MINE hash" in IOS debugs) means the address
//!   was rewritten on the way: *we* are behind a NAT;
//! * the hash of the sender's address and port (the packet's source) against the other
//!   payloads. No match means the sender's address was rewritten: *the peer* is behind a
//!   NAT ("NAT does not match HIS hash").
//!
//! The values are public, so the comparison need not be constant time; it is anyway.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{HashAlg, MAX_HASH_LEN, Prf};

use crate::NatTError;

/// The hashed input is at most `8 + 8 + 16 + 2` bytes.
const MAX_INPUT: usize = 34;

/// Writes the NAT-D hash of `addr`:`port` to the start of `out` and returns its length,
/// `alg.output_len()` (RFC 3947 §3.2: `HASH(CKY-I | CKY-R | IP | Port)`, the plain hash).
///
/// # Errors
///
/// [`NatTError::BufferTooSmall`] if `out` is shorter than the hash;
/// [`NatTError::Crypto`] if the provider does not implement `alg`.
pub fn nat_d_hash<P: Prf>(
    alg: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    addr: IpAddr,
    port: u16,
    out: &mut [u8],
) -> Result<usize, NatTError> {
    let needed = alg.output_len();
    let out = out
        .get_mut(..needed)
        .ok_or(NatTError::BufferTooSmall { needed })?;
    let mut ip = [0u8; 16];
    let ip: &[u8] = match addr {
        IpAddr::V4(a) => {
            let (head, _) = ip.split_at_mut(4);
            head.copy_from_slice(&a.octets());
            head
        }
        IpAddr::V6(a) => {
            ip = a.octets();
            &ip
        }
    };
    let port = port.to_be_bytes();
    Ok(P::hash(alg, &[cky_i, cky_r, ip, &port], out)?)
}

/// The exact byte string [`nat_d_hash`] hashes, for logs and tests; returns its length.
///
/// # Errors
///
/// [`NatTError::BufferTooSmall`] if `out` is shorter than 22 (IPv4) or 34 (IPv6) bytes.
pub fn nat_d_input(
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    addr: IpAddr,
    port: u16,
    out: &mut [u8],
) -> Result<usize, NatTError> {
    let mut buf = [0u8; MAX_INPUT];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = buf.get_mut(n..n + bytes.len()) {
            dst.copy_from_slice(bytes);
            n += bytes.len();
        }
    };
    put(cky_i);
    put(cky_r);
    match addr {
        IpAddr::V4(a) => put(&a.octets()),
        IpAddr::V6(a) => put(&a.octets()),
    }
    put(&port.to_be_bytes());
    let dst = out
        .get_mut(..n)
        .ok_or(NatTError::BufferTooSmall { needed: n })?;
    dst.copy_from_slice(buf.get(..n).unwrap_or_default());
    Ok(n)
}

/// A NAT-D hash held by value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NatDHash {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl NatDHash {
    /// The NAT-D hash of `addr` (address and port).
    ///
    /// # Errors
    ///
    /// [`NatTError::Crypto`] if the provider does not implement `alg`.
    pub fn compute<P: Prf>(
        alg: HashAlg,
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
        addr: SocketAddr,
    ) -> Result<Self, NatTError> {
        let mut bytes = [0u8; MAX_HASH_LEN];
        let len = nat_d_hash::<P>(alg, cky_i, cky_r, addr.ip(), addr.port(), &mut bytes)?;
        Ok(Self { bytes, len })
    }

    /// The hash bytes (the NAT-D payload body).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Whether `received` equals this hash (constant time in the common length).
    #[must_use]
    pub fn matches(&self, received: &[u8]) -> bool {
        ct_eq(self.as_bytes(), received)
    }
}

impl core::fmt::Debug for NatDHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NatDHash(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The NAT-D payload bodies to send, in order: first the peer's address (`remote`, the
/// destination of the message), then our own (`local`, its source).
///
/// # Errors
///
/// [`NatTError::Crypto`] if the provider does not implement `alg`.
pub fn outgoing<P: Prf>(
    alg: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<[NatDHash; 2], NatTError> {
    Ok([
        NatDHash::compute::<P>(alg, cky_i, cky_r, remote)?,
        NatDHash::compute::<P>(alg, cky_i, cky_r, local)?,
    ])
}

/// Which ends of the IKE SA are behind a NAT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NatStatus {
    /// Our address was translated: we send NAT keepalives and float our port.
    pub local_behind_nat: bool,
    /// The peer's address was translated.
    pub remote_behind_nat: bool,
}

impl NatStatus {
    /// No NAT on the path.
    pub const NONE: Self = Self {
        local_behind_nat: false,
        remote_behind_nat: false,
    };

    /// Whether any NAT is on the path, so ESP must be UDP-encapsulated (RFC 3947 §4).
    #[must_use]
    pub const fn nat_detected(self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }

    /// IOS's debug line for the check of the first NAT-D payload.
    #[must_use]
    pub const fn mine_message(self) -> &'static str {
        if self.local_behind_nat {
            "NAT does not match MINE hash"
        } else {
            "NAT match MINE hash"
        }
    }

    /// IOS's debug line for the check of the other NAT-D payloads.
    #[must_use]
    pub const fn his_message(self) -> &'static str {
        if self.remote_behind_nat {
            "NAT does not match HIS hash"
        } else {
            "NAT match HIS hash"
        }
    }

    /// IOS's summary debug line.
    #[must_use]
    pub const fn summary(self) -> &'static str {
        match (self.local_behind_nat, self.remote_behind_nat) {
            (true, _) => "NAT found, the node inside NAT",
            (false, true) => "NAT found, the node outside NAT",
            (false, false) => "No NAT Found for self or peer",
        }
    }
}

/// Decides the [`NatStatus`] from precomputed hashes: `mine` is the hash of our address
/// and port as the packet arrived (its destination), `his` the hash of the sender's (its
/// source); `received` are the NAT-D payload bodies in the order they came.
///
/// # Errors
///
/// [`NatTError::NoNatD`] if `received` is empty.
pub fn detect_hashes(mine: &[u8], his: &[u8], received: &[&[u8]]) -> Result<NatStatus, NatTError> {
    let (first, rest) = received.split_first().ok_or(NatTError::NoNatD)?;
    // A peer that sent only one payload gave no hash of itself: it cannot be proven to be
    // outside a NAT, so it is treated as behind one (encapsulation is the safe choice).
    let his_matched = rest.iter().fold(false, |m, r| m | ct_eq(his, r));
    Ok(NatStatus {
        local_behind_nat: !ct_eq(mine, first),
        remote_behind_nat: !his_matched,
    })
}

/// Decides the [`NatStatus`] from the NAT-D payloads of a received message: `local` is the
/// message's destination (our address and port as it reached us), `remote` its source
/// (the peer's address and port as we see them).
///
/// # Errors
///
/// [`NatTError::NoNatD`] if `received` is empty; [`NatTError::Crypto`] if the provider
/// does not implement `alg`.
pub fn detect<P: Prf>(
    alg: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    local: SocketAddr,
    remote: SocketAddr,
    received: &[&[u8]],
) -> Result<NatStatus, NatTError> {
    if received.is_empty() {
        return Err(NatTError::NoNatD);
    }
    let mine = NatDHash::compute::<P>(alg, cky_i, cky_r, local)?;
    let his = NatDHash::compute::<P>(alg, cky_i, cky_r, remote)?;
    detect_hashes(mine.as_bytes(), his.as_bytes(), received)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use ipsec_soft_crypto::SoftPrf;
    use std::string::String;
    use std::vec::Vec;

    fn reference() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/data/natt_dpd_gre_reference.json")).unwrap()
    }

    fn alg(name: &str) -> HashAlg {
        match name {
            "md5" => HashAlg::Md5,
            "sha256" => HashAlg::Sha256,
            n if n.starts_with("sha1") => HashAlg::Sha1,
            n => panic!("hash {n}"),
        }
    }

    fn cky(v: &serde_json::Value) -> [u8; 8] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn hash(alg: HashAlg, i: &[u8; 8], r: &[u8; 8], a: SocketAddr) -> Vec<u8> {
        NatDHash::compute::<SoftPrf>(alg, i, r, a)
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn synthetic_examples() {
        let json = reference();
        let examples = json["nat_d"]["synthetic_examples"].as_array().unwrap();
        assert_eq!(examples.len(), 12);
        for e in examples {
            let alg = alg(e["hash"].as_str().unwrap());
            let (i, r) = (cky(&e["cky_i"]), cky(&e["cky_r"]));
            let ip: IpAddr = e["ip"].as_str().unwrap().parse().unwrap();
            let port = u16::try_from(e["port"].as_u64().unwrap()).unwrap();
            let mut input = [0u8; 40];
            let n = nat_d_input(&i, &r, ip, port, &mut input).unwrap();
            assert_eq!(hex::encode(&input[..n]), e["input_hex"].as_str().unwrap());
            let mut out = [0u8; 64];
            let n = nat_d_hash::<SoftPrf>(alg, &i, &r, ip, port, &mut out).unwrap();
            assert_eq!(n, alg.output_len());
            assert_eq!(hex::encode(&out[..n]), e["nat_d"].as_str().unwrap(), "{e}");
        }
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn real_examples() {
        let json = reference();
        let examples = json["nat_d"]["real_examples"].as_array().unwrap();
        assert_eq!(examples.len(), 8);
        for e in examples {
            let alg = alg(e["hash"].as_str().unwrap());
            let (i, r) = (cky(&e["cky_i"]), cky(&e["cky_r"]));
            let addr = sock(e["hashed_address"].as_str().unwrap());
            assert_eq!(
                hex::encode(hash(alg, &i, &r, addr)),
                e["nat_d"].as_str().unwrap()
            );
        }
        // Each captured message (a pair of payloads, remote first) seen by its receiver:
        // no NAT on these paths.
        for pair in examples.chunks(2) {
            let packet = pair[0]["packet"].as_str().unwrap();
            let (src, dst) = packet.split_once(" -> ").unwrap();
            let (src, dst) = (sock(src), sock(dst));
            assert_eq!(
                pair[0]["role"].as_str().unwrap(),
                "remote (destination) address"
            );
            assert_eq!(sock(pair[0]["hashed_address"].as_str().unwrap()), dst);
            assert_eq!(sock(pair[1]["hashed_address"].as_str().unwrap()), src);
            let (i, r) = (cky(&pair[0]["cky_i"]), cky(&pair[0]["cky_r"]));
            let received: Vec<Vec<u8>> = pair
                .iter()
                .map(|p| hex::decode(p["nat_d"].as_str().unwrap()).unwrap())
                .collect();
            let received: Vec<&[u8]> = received.iter().map(Vec::as_slice).collect();
            let status = detect::<SoftPrf>(HashAlg::Sha1, &i, &r, dst, src, &received).unwrap();
            assert_eq!(status, NatStatus::NONE);
            assert_eq!(status.summary(), "No NAT Found for self or peer");
            // The same message, as if a NAT had rewritten the destination (we are
            // behind a static NAT) or the source (the peer is behind PAT).
            let natted_dst = sock("10.9.9.9:500");
            let s = detect::<SoftPrf>(HashAlg::Sha1, &i, &r, natted_dst, src, &received).unwrap();
            assert!(s.local_behind_nat && !s.remote_behind_nat);
            assert_eq!(s.mine_message(), "NAT does not match MINE hash");
            assert_eq!(s.his_message(), "NAT match HIS hash");
            assert_eq!(s.summary(), "NAT found, the node inside NAT");
            let natted_src = SocketAddr::new(src.ip(), 1024);
            let s = detect::<SoftPrf>(HashAlg::Sha1, &i, &r, dst, natted_src, &received).unwrap();
            assert!(!s.local_behind_nat && s.remote_behind_nat);
            assert_eq!(s.his_message(), "NAT does not match HIS hash");
            assert_eq!(s.summary(), "NAT found, the node outside NAT");
            assert!(s.nat_detected());
        }
    }

    #[test]
    fn behind_pat_end_to_end() {
        // The initiator 10.0.0.2:500 is behind PAT as 203.0.113.5:4099; the responder is
        // 198.51.100.7:500. Both compute what they send; each detects from what it gets.
        let (i, r) = (
            *b"\x01\x02\x03\x04\x05\x06\x07\x08",
            *b"\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7",
        );
        let init_local = sock("10.0.0.2:500");
        let init_public = sock("203.0.113.5:4099");
        let resp = sock("198.51.100.7:500");
        let alg = HashAlg::Sha256;
        let sent_by_i = outgoing::<SoftPrf>(alg, &i, &r, init_local, resp).unwrap();
        let recv: [&[u8]; 2] = [sent_by_i[0].as_bytes(), sent_by_i[1].as_bytes()];
        let at_r = detect::<SoftPrf>(alg, &i, &r, resp, init_public, &recv).unwrap();
        assert_eq!(
            at_r,
            NatStatus {
                local_behind_nat: false,
                remote_behind_nat: true
            }
        );
        let sent_by_r = outgoing::<SoftPrf>(alg, &i, &r, resp, init_public).unwrap();
        let recv: [&[u8]; 2] = [sent_by_r[0].as_bytes(), sent_by_r[1].as_bytes()];
        let at_i = detect::<SoftPrf>(alg, &i, &r, init_local, resp, &recv).unwrap();
        assert_eq!(
            at_i,
            NatStatus {
                local_behind_nat: true,
                remote_behind_nat: false
            }
        );
        // A multihomed sender: the matching hash may be any of the later payloads.
        let other = NatDHash::compute::<SoftPrf>(alg, &i, &r, sock("192.0.2.99:500")).unwrap();
        let recv: [&[u8]; 3] = [
            sent_by_r[0].as_bytes(),
            other.as_bytes(),
            sent_by_r[1].as_bytes(),
        ];
        assert_eq!(
            detect::<SoftPrf>(alg, &i, &r, init_local, resp, &recv).unwrap(),
            at_i
        );
        let dbg = std::format!("{:?}", sent_by_r[0]);
        assert!(dbg.starts_with("NatDHash(") && dbg.len() == 9 + 64 + 1);
    }

    #[test]
    fn edge_cases() {
        let h = [1u8; 20];
        assert_eq!(detect_hashes(&h, &h, &[]), Err(NatTError::NoNatD));
        // Only one payload: nothing vouches for the peer.
        assert_eq!(
            detect_hashes(&h, &h, &[&h]),
            Ok(NatStatus {
                local_behind_nat: false,
                remote_behind_nat: true
            })
        );
        // Truncated hashes never match.
        assert_eq!(
            detect_hashes(&h, &h, &[&h[..19], &h[..19]]),
            Ok(NatStatus {
                local_behind_nat: true,
                remote_behind_nat: true
            })
        );
        let (i, r) = ([0u8; 8], [0u8; 8]);
        let mut short = [0u8; 19];
        assert_eq!(
            nat_d_hash::<SoftPrf>(
                HashAlg::Sha1,
                &i,
                &r,
                IpAddr::from([1, 2, 3, 4]),
                1,
                &mut short
            ),
            Err(NatTError::BufferTooSmall { needed: 20 })
        );
        assert_eq!(
            nat_d_input(&i, &r, IpAddr::from([0u16; 8]), 1, &mut short),
            Err(NatTError::BufferTooSmall { needed: 34 })
        );
        let _: String = std::format!("{}", NatTError::NoNatD);
    }
}
