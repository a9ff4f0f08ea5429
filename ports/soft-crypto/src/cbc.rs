//! DES, 3DES and AES in CBC mode, without padding (ESP and IKEv1 pad themselves).

use core::fmt;

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    KeyInit, inout::InOutBuf, typenum::Unsigned,
};
use des::{Des, TdesEde3};
use hal_traits::{CbcCipher, CipherAlg, CryptoError};

/// The expanded key schedule. Every variant zeroizes itself on drop.
enum Schedule {
    Des(Des),
    TripleDes(TdesEde3),
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

/// A block cipher in CBC mode with an expanded key ([`CbcCipher`]).
///
/// The key schedule is computed once in [`CbcCipher::new`]; `encrypt` and `decrypt` only
/// run the CBC pass. The DES and 3DES cores are not constant time (see the crate docs). The IV is a per-call argument, so one instance serves every packet of
/// an SA. `Debug` shows the algorithm, never the key.
pub struct SoftCbc {
    alg: CipherAlg,
    schedule: Schedule,
}

impl fmt::Debug for SoftCbc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftCbc")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn expand<C: KeyInit>(key: &[u8]) -> Result<C, CryptoError> {
    C::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)
}

/// Checks the lengths before anything is touched: whole blocks and a one-block IV.
fn checked_iv<C: BlockCipherEncrypt>(
    iv: &[u8],
    buf: &[u8],
) -> Result<Array<u8, C::BlockSize>, CryptoError> {
    if buf.len() % C::BlockSize::USIZE != 0 {
        return Err(CryptoError::InvalidLength);
    }
    Array::try_from(iv).map_err(|_| CryptoError::InvalidLength)
}

fn encrypt_with<C: BlockCipherEncrypt>(
    cipher: &C,
    iv: &[u8],
    buf: &mut [u8],
) -> Result<(), CryptoError> {
    let iv = checked_iv::<C>(iv, buf)?;
    let (chunks, _tail) = InOutBuf::from(buf).into_chunks::<C::BlockSize>();
    // `&C` is itself a block cipher, so the mode borrows the schedule instead of copying it.
    cbc::Encryptor::<&C>::inner_iv_init(cipher, &iv).encrypt_blocks_inout(chunks);
    Ok(())
}

fn decrypt_with<C: BlockCipherEncrypt + BlockCipherDecrypt>(
    cipher: &C,
    iv: &[u8],
    buf: &mut [u8],
) -> Result<(), CryptoError> {
    let iv = checked_iv::<C>(iv, buf)?;
    let (chunks, _tail) = InOutBuf::from(buf).into_chunks::<C::BlockSize>();
    cbc::Decryptor::<&C>::inner_iv_init(cipher, &iv).decrypt_blocks_inout(chunks);
    Ok(())
}

impl CbcCipher for SoftCbc {
    fn new(alg: CipherAlg, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let schedule = match alg {
            CipherAlg::DesCbc => Schedule::Des(expand(key)?),
            CipherAlg::TripleDesCbc => Schedule::TripleDes(expand(key)?),
            CipherAlg::Aes128Cbc => Schedule::Aes128(expand(key)?),
            CipherAlg::Aes192Cbc => Schedule::Aes192(expand(key)?),
            CipherAlg::Aes256Cbc => Schedule::Aes256(expand(key)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { alg, schedule })
    }

    fn alg(&self) -> CipherAlg {
        self.alg
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        match &self.schedule {
            Schedule::Des(c) => encrypt_with(c, iv, buf),
            Schedule::TripleDes(c) => encrypt_with(c, iv, buf),
            Schedule::Aes128(c) => encrypt_with(c, iv, buf),
            Schedule::Aes192(c) => encrypt_with(c, iv, buf),
            Schedule::Aes256(c) => encrypt_with(c, iv, buf),
        }
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        match &self.schedule {
            Schedule::Des(c) => decrypt_with(c, iv, buf),
            Schedule::TripleDes(c) => decrypt_with(c, iv, buf),
            Schedule::Aes128(c) => decrypt_with(c, iv, buf),
            Schedule::Aes192(c) => decrypt_with(c, iv, buf),
            Schedule::Aes256(c) => decrypt_with(c, iv, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CipherAlg; 5] = [
        CipherAlg::DesCbc,
        CipherAlg::TripleDesCbc,
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ];

    #[test]
    fn rejects_wrong_key_length() {
        for alg in ALL {
            let key = [7u8; 40];
            for len in [0, alg.key_len() - 1, alg.key_len() + 1] {
                assert_eq!(
                    SoftCbc::new(alg, &key[..len]).err(),
                    Some(CryptoError::InvalidKeyLength)
                );
            }
            assert_eq!(SoftCbc::new(alg, &key[..alg.key_len()]).unwrap().alg(), alg);
        }
    }

    #[test]
    fn rejects_bad_iv_and_partial_block_without_touching_data() {
        for alg in ALL {
            let c = SoftCbc::new(alg, &[1u8; 32][..alg.key_len()]).unwrap();
            let bl = alg.block_len();
            let iv = [0u8; 17];
            let mut buf = [0x5au8; 48];
            for iv_len in [0, bl - 1, bl + 1] {
                assert_eq!(
                    c.encrypt(&iv[..iv_len], &mut buf[..bl]),
                    Err(CryptoError::InvalidLength)
                );
                assert_eq!(
                    c.decrypt(&iv[..iv_len], &mut buf[..bl]),
                    Err(CryptoError::InvalidLength)
                );
            }
            for len in [1, bl - 1, bl + 1, 2 * bl + 3] {
                assert_eq!(
                    c.encrypt(&iv[..bl], &mut buf[..len]),
                    Err(CryptoError::InvalidLength)
                );
                assert_eq!(
                    c.decrypt(&iv[..bl], &mut buf[..len]),
                    Err(CryptoError::InvalidLength)
                );
            }
            assert!(buf.iter().all(|&b| b == 0x5a));
            // An empty buffer is zero whole blocks.
            assert_eq!(c.encrypt(&iv[..bl], &mut []), Ok(()));
        }
    }

    #[test]
    fn round_trip_and_chaining() {
        for alg in ALL {
            let c = SoftCbc::new(alg, &[9u8; 32][..alg.key_len()]).unwrap();
            let bl = alg.block_len();
            let iv = [3u8; 16];
            let mut buf = [0u8; 64];
            c.encrypt(&iv[..bl], &mut buf).unwrap();
            // Equal plaintext blocks give different ciphertext blocks under CBC.
            assert_ne!(buf[..bl], buf[bl..2 * bl]);
            c.decrypt(&iv[..bl], &mut buf).unwrap();
            assert_eq!(buf, [0u8; 64]);
        }
    }

    #[test]
    fn debug_hides_key() {
        extern crate std;
        let c = SoftCbc::new(CipherAlg::Aes128Cbc, &[0xab; 16]).unwrap();
        let d = std::format!("{c:?}");
        assert!(
            d.contains("Aes128Cbc") && !d.to_lowercase().contains("ab,"),
            "{d}"
        );
    }
}
