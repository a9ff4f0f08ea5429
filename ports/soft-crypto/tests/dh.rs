//! Diffie-Hellman: the group 2 known answer of a recorded IKEv1 exchange, agreement in
//! every group, and rejection of invalid peer values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hex_field, load};
use hal_traits::{CryptoError, DhGroup, DiffieHellman, MAX_DH_LEN, SecureRng};
use ipsec_soft_crypto::SoftDh;

const GROUPS: [DhGroup; 5] = [
    DhGroup::Modp768,
    DhGroup::Modp1024,
    DhGroup::Modp1536,
    DhGroup::Modp2048,
    DhGroup::Modp3072,
];

/// SplitMix64, seeded per process from std's randomised hasher. Test-only: not a CSPRNG.
struct TestRng(u64);

impl TestRng {
    fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self(RandomState::new().hash_one(0x5eed_u64))
    }
}

impl SecureRng for TestRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn public(dh: &SoftDh) -> Vec<u8> {
    let mut out = [0u8; MAX_DH_LEN];
    let n = dh.public_key(&mut out).unwrap();
    assert_eq!(n, dh.group().len());
    out[..n].to_vec()
}

fn shared(dh: &SoftDh, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = [0u8; MAX_DH_LEN];
    let n = dh.shared_secret(peer, &mut out)?;
    Ok(out[..n].to_vec())
}

#[test]
fn group2_known_answer_from_recorded_main_mode() {
    let doc = load("ikev1_mainmode_psk_rubnds.json");
    let mm = &doc["main_mode_exchange"];
    assert_eq!(mm["dh_group"], 2);
    assert_eq!(mm["dh_g"], 2);
    let x = hex_field(mm, "dh_private_x_initiator_hex");
    let dh = SoftDh::from_private(DhGroup::Modp1024, &x).unwrap();
    assert_eq!(public(&dh), hex_field(mm, "g_xi"));
    let g_xy = hex_field(mm, "g_xy");
    assert_eq!(
        g_xy[0], 0,
        "the recorded secret has a leading zero byte: padding matters"
    );
    assert_eq!(shared(&dh, &hex_field(mm, "g_xr")).unwrap(), g_xy);
}

#[test]
fn group2_prime_matches_the_recording() {
    // p - 1 is the largest invalid peer value; p - 2 is valid. Both follow from p.
    let doc = load("ikev1_mainmode_psk_rubnds.json");
    let p = hex_field(&doc["main_mode_exchange"], "dh_p_hex");
    let dh = SoftDh::generate(DhGroup::Modp1024, &mut TestRng::new()).unwrap();
    assert_eq!(shared(&dh, &p), Err(CryptoError::InvalidPublicKey));
    let mut pm1 = p.clone();
    *pm1.last_mut().unwrap() -= 1;
    assert_eq!(shared(&dh, &pm1), Err(CryptoError::InvalidPublicKey));
    let mut pm2 = p;
    *pm2.last_mut().unwrap() -= 2;
    assert!(shared(&dh, &pm2).is_ok());
}

#[test]
fn random_pairs_agree_in_every_group() {
    let mut rng = TestRng::new();
    for g in GROUPS {
        let a = SoftDh::generate(g, &mut rng).unwrap();
        let b = SoftDh::generate(g, &mut rng).unwrap();
        assert_eq!(a.group(), g);
        let (pa, pb) = (public(&a), public(&b));
        assert_ne!(pa, pb);
        let (sa, sb) = (shared(&a, &pb).unwrap(), shared(&b, &pa).unwrap());
        assert_eq!(sa, sb, "group {}", g.number());
        assert_eq!(sa.len(), g.len());
        assert_ne!(sa, pa);
    }
}

/// The primes as the RFCs print them (RFC 2409 §6.1-6.2, RFC 3526 §2-4), kept apart from
/// the crate's constants so that a typo in either shows up here.
fn prime(g: DhGroup) -> Vec<u8> {
    let hex = match g {
        DhGroup::Modp768 => concat!(
            "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
            "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
            "4fe1356d6d51c245e485b576625e7ec6f44c42e9a63a3620ffffffffffffffff",
        ),
        DhGroup::Modp1024 => concat!(
            "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
            "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
            "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
            "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece65381ffffffffffffffff",
        ),
        DhGroup::Modp1536 => concat!(
            "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
            "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
            "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
            "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
            "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
            "9ed529077096966d670c354e4abc9804f1746c08ca237327ffffffffffffffff",
        ),
        DhGroup::Modp2048 => concat!(
            "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
            "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
            "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
            "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
            "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
            "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b",
            "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718",
            "3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff",
        ),
        DhGroup::Modp3072 => concat!(
            "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74",
            "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437",
            "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed",
            "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05",
            "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb",
            "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b",
            "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718",
            "3995497cea956ae515d2261898fa051015728e5a8aaac42dad33170d04507a33",
            "a85521abdf1cba64ecfb850458dbef0a8aea71575d060c7db3970f85a6e1e4c7",
            "abf5ae8cdb0933d71e8c94e04a25619dcee3d2261ad2ee6bf12ffa06d98a0864",
            "d87602733ec86a64521f2b18177b200cbbe117577a615d6c770988c0bad946e2",
            "08e24fa074e5ab3143db5bfce0fd108e4b82d120a93ad2caffffffffffffffff",
        ),
        _ => unreachable!(),
    };
    let p = hex::decode(hex).unwrap();
    assert_eq!(p.len(), g.len());
    p
}

/// Adds one to a big-endian number (no overflow out of the top byte in these tests).
fn increment(v: &mut [u8]) {
    for b in v.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            return;
        }
    }
    panic!("overflow");
}

fn invalid_values(g: DhGroup) -> Vec<(&'static str, Vec<u8>)> {
    let len = g.len();
    let p = prime(g);
    let mut one = vec![0u8; len];
    one[len - 1] = 1;
    // p ends in 64 one bits, so p - 1 touches only the last byte.
    let mut pm1 = p.clone();
    pm1[len - 1] -= 1;
    let mut pp1 = p.clone();
    increment(&mut pp1);
    vec![
        ("0", vec![0u8; len]),
        ("1", one),
        ("p-1", pm1),
        ("p", p),
        ("p+1", pp1),
        ("2^n-1", vec![0xff; len]),
        ("short", vec![2u8; len - 1]),
        ("long", [&[0u8][..], &vec![2u8; len]].concat()),
        ("empty", vec![]),
    ]
}

#[test]
fn invalid_peer_values_are_rejected_in_every_group() {
    let mut rng = TestRng::new();
    for g in GROUPS {
        let dh = SoftDh::generate(g, &mut rng).unwrap();
        for (what, v) in invalid_values(g) {
            assert_eq!(
                shared(&dh, &v),
                Err(CryptoError::InvalidPublicKey),
                "group {} {what}",
                g.number()
            );
        }
        // The edges of the valid range: 2 and p - 2.
        let mut two = vec![0u8; g.len()];
        two[g.len() - 1] = 2;
        assert!(shared(&dh, &two).is_ok());
        let mut pm2 = prime(g);
        pm2[g.len() - 1] -= 2;
        assert!(shared(&dh, &pm2).is_ok());
    }
}

#[test]
fn public_value_is_2_to_the_x_under_the_rfc_prime() {
    // x = p - 2 gives 2^(p-2) = 2^-1 mod p = (p + 1) / 2 (Fermat), which pins p exactly.
    for g in GROUPS {
        let p = prime(g);
        let mut x = p.clone();
        *x.last_mut().unwrap() -= 2;
        let dh = SoftDh::from_private(g, &x).unwrap();
        // (p + 1) / 2: p is odd, so halve p and add one half, i.e. (p >> 1) + 1.
        let mut half = vec![0u8; p.len()];
        let mut carry = 0u8;
        for (h, b) in half.iter_mut().zip(&p) {
            *h = (b >> 1) | (carry << 7);
            carry = b & 1;
        }
        increment(&mut half);
        assert_eq!(public(&dh), half, "group {}", g.number());
    }
}

#[test]
fn short_output_buffer() {
    let dh = SoftDh::generate(DhGroup::Modp768, &mut TestRng::new()).unwrap();
    let peer = public(&SoftDh::generate(DhGroup::Modp768, &mut TestRng::new()).unwrap());
    let mut out = [0u8; 95];
    assert_eq!(
        dh.shared_secret(&peer, &mut out),
        Err(CryptoError::InvalidLength)
    );
    assert_eq!(dh.public_key(&mut out), Err(CryptoError::InvalidLength));
}

#[cfg(feature = "std")]
#[test]
fn os_rng_pairs_agree() {
    let mut rng = ipsec_soft_crypto::OsRng;
    let a = SoftDh::generate(DhGroup::Modp2048, &mut rng).unwrap();
    let b = SoftDh::generate(DhGroup::Modp2048, &mut rng).unwrap();
    assert_eq!(
        shared(&a, &public(&b)).unwrap(),
        shared(&b, &public(&a)).unwrap()
    );
}
