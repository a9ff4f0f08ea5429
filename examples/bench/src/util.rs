//! Helpers: a fast deterministic RNG, the transforms under test, packets, big stacks.

use std::net::{IpAddr, Ipv4Addr};

use hal_traits::{AeadAlg, CipherAlg, CryptoError, MacAlg, SecureRng};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_soft_crypto::SoftCrypto;

/// SplitMix64: deterministic and cheap, so that IVs, nonces and SPIs cost nothing
/// measurable. Never for production (ports use `OsRng` or a TRNG).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl SecureRng for Rng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for c in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        Ok(())
    }
}

/// An ESP transform under test, with the names `openssl speed` knows its parts by.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub transform: Transform,
    /// `openssl speed -evp` cipher name.
    pub openssl_cipher: &'static str,
    /// `openssl speed -hmac` digest name, for the CBC transforms.
    pub openssl_hmac: Option<&'static str>,
}

pub const CASES: [Case; 5] = [
    Case {
        name: "aes128-gcm16",
        transform: Transform {
            enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
            auth: None,
        },
        openssl_cipher: "aes-128-gcm",
        openssl_hmac: None,
    },
    Case {
        name: "aes256-gcm16",
        transform: Transform {
            enc: Encryption::Gcm(AeadAlg::Aes256Gcm16),
            auth: None,
        },
        openssl_cipher: "aes-256-gcm",
        openssl_hmac: None,
    },
    Case {
        name: "aes128-cbc/sha1-96",
        transform: Transform {
            enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
            auth: Some(MacAlg::HmacSha1_96),
        },
        openssl_cipher: "aes-128-cbc",
        openssl_hmac: Some("sha1"),
    },
    Case {
        name: "aes256-cbc/sha256-128",
        transform: Transform {
            enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
            auth: Some(MacAlg::HmacSha256_128),
        },
        openssl_cipher: "aes-256-cbc",
        openssl_hmac: Some("sha256"),
    },
    Case {
        name: "3des-cbc/sha1-96",
        transform: Transform {
            enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
            auth: Some(MacAlg::HmacSha1_96),
        },
        openssl_cipher: "des-ede3-cbc",
        openssl_hmac: Some("sha1"),
    },
];

/// Payload sizes of the throughput tables.
pub const SIZES: [usize; 3] = [64, 512, 1400];

pub const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// Key material of the right lengths for `t`: (encryption key incl. GCM salt, auth key).
/// Its bytes do not matter to the cost.
pub fn keys(t: Transform) -> (Vec<u8>, Vec<u8>) {
    let enc = (0..t.enc.keymat_len()).map(|i| 0x11 ^ i as u8).collect();
    let auth = t
        .auth
        .map(|m| (0..m.key_len()).map(|i| 0x5a ^ i as u8).collect())
        .unwrap_or_default();
    (enc, auth)
}

/// A tunnel-mode SA config between LOCAL and REMOTE with no lifetime limits (so that a
/// long run never hits the IOS default of 4.6 GB) and the given replay window.
pub fn config(spi: u32, dir: Direction, t: Transform, replay_window: u32) -> EspConfig {
    let (l, r) = match dir {
        Direction::Inbound => (REMOTE, LOCAL),
        Direction::Outbound => (LOCAL, REMOTE),
    };
    let mut c = EspConfig::tunnel(spi, dir, t, IpAddr::V4(l), IpAddr::V4(r));
    c.lifetime = LifetimeConfig::UNLIMITED;
    c.replay_window = replay_window;
    c
}

/// An SA of the pair (outbound on one side, inbound on the other) with SPI `spi`.
pub fn sa(spi: u32, dir: Direction, t: Transform, replay_window: u32) -> EspSa<SoftCrypto> {
    let (e, a) = keys(t);
    EspSa::new(
        config(spi, dir, t, replay_window),
        &e,
        &a,
        Instant::from_secs(1),
    )
    .expect("SA")
}

fn checksum(b: &[u8]) -> [u8; 2] {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    (!(s as u16)).to_be_bytes()
}

/// An IPv4/UDP packet of exactly `total` bytes (>= 28) from 10.1.0.5 to 10.2.0.7.
pub fn ipv4_udp(total: usize) -> Vec<u8> {
    assert!((28..=65535).contains(&total));
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]);
    p.extend_from_slice(&[10, 1, 0, 5, 10, 2, 0, 7]);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c);
    p.extend_from_slice(&1234u16.to_be_bytes());
    p.extend_from_slice(&5678u16.to_be_bytes());
    p.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(total, 0xa5);
    p
}

/// Runs `f` on a thread with a 2 GiB stack (only touched pages are committed): the data
/// plane and SADB are single values with fixed arrays, built by value before they are
/// boxed.
pub fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 30)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("bench thread panicked")
}
