//! Diffie-Hellman over the MODP groups 1, 2 (RFC 2409) and 5, 14, 15 (RFC 3526), g = 2.
//!
//! # Private exponent length
//!
//! Fresh private values ([`DiffieHellman::generate`]) are uniformly random with a fixed
//! bit length per group, at least twice the group's estimated security strength (SP
//! 800-56A's rule for short exponents) and far below p - 1:
//!
//! | group | p bits | exponent bits | why |
//! |---|---|---|---|
//! | 1 | 768 | 256 | strength well under 128 bits; one size for the small groups |
//! | 2 | 1024 | 256 | strength about 80 bits |
//! | 5 | 1536 | 256 | RFC 3526 §8 estimates 90-120 bits, so up to 240 |
//! | 14 | 2048 | 320 | RFC 3526 §8 estimates 110-160 bits, so up to 320 |
//! | 15 | 3072 | 420 | RFC 3526 §8 estimates 130-210 bits, so up to 420 |
//!
//! These are RFC 3526 §8's upper estimates doubled, which also covers SP 800-57's
//! lower estimates (128 bits for 3072-bit groups). Short exponents are safe here because
//! all five primes are safe primes (p = 2q + 1), and they make the exponentiation several
//! times cheaper than a full-length exponent, which matters on a microcontroller.
//!
//! The exponentiation is constant-time Montgomery exponentiation from `crypto-bigint`
//! over exactly that many exponent bits; only the (public) bit count shapes its timing.
//! A value given to [`DiffieHellman::from_private`] is used with `8 * len` exponent bits.

use core::fmt;

use crypto_bigint::{
    Odd, U768, U1024, U1536, U2048, U3072, Uint,
    modular::{FixedMontyForm, FixedMontyParams},
};
use hal_traits::{CryptoError, DhGroup, DiffieHellman, MAX_DH_LEN, SecureRng};
use zeroize::Zeroize;

/// Group 1, RFC 2409 §6.1: 2^768 - 2^704 - 1 + 2^64 * ([2^638 pi] + 149686).
const P768: Odd<U768> = Odd::<U768>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF",
));

/// Group 2, RFC 2409 §6.2: 2^1024 - 2^960 - 1 + 2^64 * ([2^894 pi] + 129093).
const P1024: Odd<U1024> = Odd::<U1024>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
));

/// Group 5, RFC 3526 §2: 2^1536 - 2^1472 - 1 + 2^64 * ([2^1406 pi] + 741804).
const P1536: Odd<U1536> = Odd::<U1536>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
));

/// Group 14, RFC 3526 §3: 2^2048 - 2^1984 - 1 + 2^64 * ([2^1918 pi] + 124476).
const P2048: Odd<U2048> = Odd::<U2048>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// Group 15, RFC 3526 §4: 2^3072 - 2^3008 - 1 + 2^64 * ([2^2942 pi] + 1690314).
const P3072: Odd<U3072> = Odd::<U3072>::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
));

/// Bit length of freshly generated private exponents (see the module docs).
const fn exponent_bits(group: DhGroup) -> u32 {
    match group {
        DhGroup::Modp2048 => 320,
        DhGroup::Modp3072 => 420,
        _ => 256,
    }
}

/// Longest generated exponent, in bytes.
const MAX_EXPONENT_BYTES: usize = 64;

/// Attempts at drawing a private value > 1 before blaming the random source.
const GENERATE_ATTEMPTS: usize = 4;

/// `base^exp mod p`, constant time in `exp` for a fixed `exp_bits`.
fn modpow<const L: usize>(
    p: &Odd<Uint<L>>,
    base: &Uint<L>,
    exp: &Uint<L>,
    exp_bits: u32,
) -> Uint<L> {
    // The modulus is public, so the variable-time setup leaks nothing.
    let params = FixedMontyParams::new_vartime(*p);
    FixedMontyForm::new(base, &params)
        .pow_bounded_exp(exp, exp_bits)
        .retrieve()
}

/// Whether 1 < v < p - 1.
fn in_open_range<const L: usize>(v: &Uint<L>, p: &Odd<Uint<L>>) -> bool {
    let p_minus_1 = p.as_ref().wrapping_sub(&Uint::ONE);
    *v > Uint::ONE && *v < p_minus_1
}

/// Decodes up to `Uint::<L>::BYTES` big-endian bytes, zero-extending on the left.
fn decode<const L: usize>(bytes: &[u8]) -> Result<Uint<L>, CryptoError> {
    let n = Uint::<L>::BYTES;
    let start = n
        .checked_sub(bytes.len())
        .ok_or(CryptoError::InvalidKeyLength)?;
    let mut buf = [0u8; MAX_DH_LEN];
    let v = match buf.get_mut(start..n) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            buf.get(..n).map(Uint::<L>::from_be_slice)
        }
        None => None,
    };
    buf.zeroize();
    v.ok_or(CryptoError::InvalidKeyLength)
}

/// Writes `v` big-endian (full width, so left-padded) to the front of `out`.
fn encode<const L: usize>(v: &Uint<L>, out: &mut [u8]) -> Result<usize, CryptoError> {
    let mut enc = v.to_be_bytes();
    let bytes: &[u8] = enc.as_ref();
    let len = bytes.len();
    let res = match out.get_mut(..len) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(len)
        }
        None => Err(CryptoError::InvalidLength),
    };
    enc.zeroize();
    res
}

/// A key pair of one group size: `x` secret, `y = 2^x mod p` public.
struct KeyPair<const L: usize> {
    x: Uint<L>,
    x_bits: u32,
    y: Uint<L>,
}

impl<const L: usize> Drop for KeyPair<L> {
    fn drop(&mut self) {
        self.x.zeroize();
    }
}

impl<const L: usize> KeyPair<L> {
    fn new(p: &Odd<Uint<L>>, x: Uint<L>, x_bits: u32) -> Result<Self, CryptoError> {
        // Built first so that `x` is wiped on every path out of here.
        let mut pair = Self {
            x,
            x_bits,
            y: Uint::ZERO,
        };
        if !in_open_range(&pair.x, p) {
            return Err(CryptoError::InvalidKeyLength);
        }
        pair.y = modpow(p, &Uint::from_u8(2), &pair.x, pair.x_bits);
        Ok(pair)
    }

    fn from_bytes(p: &Odd<Uint<L>>, private: &[u8]) -> Result<Self, CryptoError> {
        if private.is_empty() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let bits = private
            .len()
            .checked_mul(8)
            .and_then(|b| u32::try_from(b).ok())
            .ok_or(CryptoError::InvalidKeyLength)?;
        Self::new(p, decode(private)?, bits)
    }

    fn generate<R: SecureRng>(
        p: &Odd<Uint<L>>,
        bits: u32,
        rng: &mut R,
    ) -> Result<Self, CryptoError> {
        let len = usize::try_from(bits.div_ceil(8)).map_err(|_| CryptoError::Unsupported)?;
        let excess = u32::try_from(len * 8).map_err(|_| CryptoError::Unsupported)? - bits;
        let mut buf = [0u8; MAX_EXPONENT_BYTES];
        for _ in 0..GENERATE_ATTEMPTS {
            let drawn = buf.get_mut(..len).ok_or(CryptoError::Unsupported)?;
            let filled = rng.fill_bytes(drawn);
            if let Some(top) = drawn.first_mut() {
                *top &= 0xff_u8.checked_shr(excess).unwrap_or(0);
            }
            let x = filled.and_then(|()| decode::<L>(drawn));
            buf.zeroize();
            let mut x = x?;
            // Only a broken source draws 0 or 1; any other value is < p - 1 by its size.
            if x > Uint::ONE {
                return Self::new(p, x, bits);
            }
            x.zeroize();
        }
        Err(CryptoError::Rng)
    }

    fn public_key(&self, out: &mut [u8]) -> Result<usize, CryptoError> {
        encode(&self.y, out)
    }

    fn shared_secret(
        &self,
        p: &Odd<Uint<L>>,
        peer: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if out.len() < Uint::<L>::BYTES {
            return Err(CryptoError::InvalidLength);
        }
        if peer.len() != Uint::<L>::BYTES {
            return Err(CryptoError::InvalidPublicKey);
        }
        let y = decode::<L>(peer).map_err(|_| CryptoError::InvalidPublicKey)?;
        // 0, 1 and p - 1 would force the secret into {0, 1, p - 1}; >= p is not an element.
        if !in_open_range(&y, p) {
            return Err(CryptoError::InvalidPublicKey);
        }
        let mut z = modpow(p, &y, &self.x, self.x_bits);
        let res = encode(&z, out);
        z.zeroize();
        res
    }
}

/// One variant per group; the integer width follows the prime.
// Without an allocator there is nothing to box into; a deployment that enables group 15
// budgets its size anyway.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Modp768(KeyPair<{ U768::LIMBS }>),
    Modp1024(KeyPair<{ U1024::LIMBS }>),
    Modp1536(KeyPair<{ U1536::LIMBS }>),
    Modp2048(KeyPair<{ U2048::LIMBS }>),
    Modp3072(KeyPair<{ U3072::LIMBS }>),
}

/// A MODP Diffie-Hellman key pair ([`DiffieHellman`]).
///
/// The public value is computed once, when the pair is made. The private value is wiped
/// on drop and never printed: `Debug` shows only the group. Peer values are checked to be
/// exactly `group.len()` bytes and 1 < y < p - 1.
pub struct SoftDh {
    group: DhGroup,
    inner: Inner,
}

impl fmt::Debug for SoftDh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftDh")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DiffieHellman for SoftDh {
    fn generate<R: SecureRng>(group: DhGroup, rng: &mut R) -> Result<Self, CryptoError> {
        let bits = exponent_bits(group);
        let inner = match group {
            DhGroup::Modp768 => Inner::Modp768(KeyPair::generate(&P768, bits, rng)?),
            DhGroup::Modp1024 => Inner::Modp1024(KeyPair::generate(&P1024, bits, rng)?),
            DhGroup::Modp1536 => Inner::Modp1536(KeyPair::generate(&P1536, bits, rng)?),
            DhGroup::Modp2048 => Inner::Modp2048(KeyPair::generate(&P2048, bits, rng)?),
            DhGroup::Modp3072 => Inner::Modp3072(KeyPair::generate(&P3072, bits, rng)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { group, inner })
    }

    /// Accepts 1 to `group.len()` bytes encoding x with 1 < x < p - 1.
    fn from_private(group: DhGroup, private: &[u8]) -> Result<Self, CryptoError> {
        let inner = match group {
            DhGroup::Modp768 => Inner::Modp768(KeyPair::from_bytes(&P768, private)?),
            DhGroup::Modp1024 => Inner::Modp1024(KeyPair::from_bytes(&P1024, private)?),
            DhGroup::Modp1536 => Inner::Modp1536(KeyPair::from_bytes(&P1536, private)?),
            DhGroup::Modp2048 => Inner::Modp2048(KeyPair::from_bytes(&P2048, private)?),
            DhGroup::Modp3072 => Inner::Modp3072(KeyPair::from_bytes(&P3072, private)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { group, inner })
    }

    fn group(&self) -> DhGroup {
        self.group
    }

    fn public_key(&self, out: &mut [u8]) -> Result<usize, CryptoError> {
        match &self.inner {
            Inner::Modp768(k) => k.public_key(out),
            Inner::Modp1024(k) => k.public_key(out),
            Inner::Modp1536(k) => k.public_key(out),
            Inner::Modp2048(k) => k.public_key(out),
            Inner::Modp3072(k) => k.public_key(out),
        }
    }

    fn shared_secret(&self, peer_public: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        match &self.inner {
            Inner::Modp768(k) => k.shared_secret(&P768, peer_public, out),
            Inner::Modp1024(k) => k.shared_secret(&P1024, peer_public, out),
            Inner::Modp1536(k) => k.shared_secret(&P1536, peer_public, out),
            Inner::Modp2048(k) => k.shared_secret(&P2048, peer_public, out),
            Inner::Modp3072(k) => k.shared_secret(&P3072, peer_public, out),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The first 768 hex digits of the fractional part of pi (computed independently with
    /// Machin's formula; it starts 243F6A88 85A308D3 like the Blowfish P-array).
    const PI_FRACTION: &str = concat!(
        "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
        "452821E638D01377BE5466CF34E90C6CC0AC29B7C97C50DD3F84D5B5B5470917",
        "9216D5D98979FB1BD1310BA698DFB5AC2FFD72DBD01ADFB7B8E1AFED6A267E96",
        "BA7C9045F12C7F9924A19947B3916CF70801F2E2858EFC16636920D871574E69",
        "A458FEA3F4933D7E0D95748F728EB658718BCD5882154AEE7B54A41DC25A59B5",
        "9C30D5392AF26013C5D1B023286085F0CA417918B8DB38EF8E79DCB0603A180E",
        "6C9E0E8BB01E8A3ED71577C1BD314B2778AF2FDA55605C60E65525F3AA55AB94",
        "5748986263E8144055CA396A2AAB10B6B4CC5C341141E8CEA15486AF7C72E993",
        "B3EE1411636FBC2A2BA9C55D741831F6CE5C3E169B87931EAFD6BA336C24CF5C",
        "7A325381289586773B8F48986B4BB9AFC4BFE81B6628219361D809CCFB21A991",
        "487CAC605DEC8032EF845D5DE98575B1DC262302EB651B8823893E81D396ACC5",
        "0F6D6FF383F442392E0B4482A484200469C8F04A9E1F9B5E21C66842F6E96C9A",
    );

    /// Checks `p` against the construction the RFCs state for it,
    /// `p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + k)`, with pi taken from
    /// [`PI_FRACTION`] rather than from the RFC text, plus the stated all-ones 64-bit ends.
    fn check_prime<const L: usize>(p: &Odd<Uint<L>>, k: u32) {
        let n = Uint::<L>::BITS;
        assert!(n <= U3072::BITS);
        let p3072: U3072 = p.as_ref().resize();
        let ones64 = U3072::from_u64(u64::MAX);
        assert_eq!(p3072.bitand(&ones64), ones64, "low 64 bits are ones");
        assert_eq!(p3072.shr_vartime(n - 64), ones64, "high 64 bits are ones");

        let m = n - 130;
        let frac = U3072::from_be_hex(PI_FRACTION).shr_vartime(U3072::BITS - m);
        let floor_pi = U3072::from_u8(3).shl_vartime(m).wrapping_add(&frac);
        let all_n = U3072::MAX.shr_vartime(U3072::BITS - n);
        let expected = all_n
            .wrapping_sub(&U3072::ONE.shl_vartime(n - 64))
            .wrapping_add(&floor_pi.wrapping_add(&U3072::from_u32(k)).shl_vartime(64));
        assert_eq!(p3072, expected, "{n}-bit prime");

        // Fermat: 2^(p-1) = 1 (mod p). Cheap insurance against a mistyped constant.
        let params = FixedMontyParams::new_vartime(*p);
        let pm1 = p.as_ref().wrapping_sub(&Uint::ONE);
        let r = FixedMontyForm::new(&Uint::from_u8(2), &params)
            .pow_vartime(&pm1)
            .retrieve();
        assert_eq!(r, Uint::ONE);
    }

    #[test]
    fn primes_match_their_construction() {
        check_prime(&P768, 149_686);
        check_prime(&P1024, 129_093);
        check_prime(&P1536, 741_804);
        check_prime(&P2048, 124_476);
        check_prime(&P3072, 1_690_314);
    }

    #[test]
    fn prime_byte_lengths_match_groups() {
        assert_eq!(U768::BYTES, DhGroup::Modp768.len());
        assert_eq!(U1024::BYTES, DhGroup::Modp1024.len());
        assert_eq!(U1536::BYTES, DhGroup::Modp1536.len());
        assert_eq!(U2048::BYTES, DhGroup::Modp2048.len());
        assert_eq!(U3072::BYTES, DhGroup::Modp3072.len());
    }

    #[test]
    fn small_private_gives_known_public() {
        // 2^10 = 1024: left-padded, big-endian.
        let dh = SoftDh::from_private(DhGroup::Modp768, &[0x0a]).unwrap();
        let mut out = [0xffu8; 100];
        assert_eq!(dh.public_key(&mut out), Ok(96));
        assert!(out[..94].iter().all(|&b| b == 0));
        assert_eq!(out[94..96], [0x04, 0x00]);
        assert_eq!(out[96..], [0xff; 4]);
        assert_eq!(
            dh.public_key(&mut out[..95]),
            Err(CryptoError::InvalidLength)
        );
    }

    #[test]
    fn from_private_rejects_degenerate_values() {
        let g = DhGroup::Modp768;
        for bad in [&[][..], &[0], &[0, 0], &[1], &[0; 97]] {
            assert_eq!(
                SoftDh::from_private(g, bad).err(),
                Some(CryptoError::InvalidKeyLength)
            );
        }
        let p = P768.as_ref().to_be_bytes();
        assert_eq!(
            SoftDh::from_private(g, &p).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        let pm1 = P768.as_ref().wrapping_sub(&Uint::ONE).to_be_bytes();
        assert_eq!(
            SoftDh::from_private(g, &pm1).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        let pm2 = P768.as_ref().wrapping_sub(&Uint::from_u8(2)).to_be_bytes();
        assert!(SoftDh::from_private(g, &pm2).is_ok());
    }

    struct Counter(u8);
    impl SecureRng for Counter {
        fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
            for b in dest {
                self.0 = self.0.wrapping_mul(101).wrapping_add(13);
                *b = self.0;
            }
            Ok(())
        }
    }

    struct Zeros;
    impl SecureRng for Zeros {
        fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
            dest.fill(0);
            Ok(())
        }
    }

    struct Broken;
    impl SecureRng for Broken {
        fn fill_bytes(&mut self, _: &mut [u8]) -> Result<(), CryptoError> {
            Err(CryptoError::Rng)
        }
    }

    #[test]
    fn generate_uses_the_documented_exponent_width() {
        for (g, bits) in [
            (DhGroup::Modp1024, 256),
            (DhGroup::Modp2048, 320),
            (DhGroup::Modp3072, 420),
        ] {
            assert_eq!(exponent_bits(g), bits);
            let dh = SoftDh::generate(g, &mut Counter(1)).unwrap();
            // Same draw, replayed through from_private, gives the same public value.
            let mut x = [0u8; 53];
            let len = (bits as usize).div_ceil(8);
            Counter(1).fill_bytes(&mut x[..len]).unwrap();
            x[0] &= 0xff >> (len * 8 - bits as usize);
            let known = SoftDh::from_private(g, &x[..len]).unwrap();
            let (mut a, mut b) = ([0u8; 384], [0u8; 384]);
            dh.public_key(&mut a).unwrap();
            known.public_key(&mut b).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(
            SoftDh::generate(DhGroup::Modp768, &mut Zeros).err(),
            Some(CryptoError::Rng)
        );
        assert_eq!(
            SoftDh::generate(DhGroup::Modp768, &mut Broken).err(),
            Some(CryptoError::Rng)
        );
    }

    #[test]
    fn debug_shows_group_only() {
        let dh = SoftDh::from_private(DhGroup::Modp768, &[0xab; 32]).unwrap();
        let d = std::format!("{dh:?}");
        assert!(d.contains("Modp768") && !d.contains("171") && !d.to_lowercase().contains("ab"));
    }
}
