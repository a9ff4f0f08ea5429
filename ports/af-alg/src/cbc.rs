//! DES, 3DES and AES in CBC mode through the kernel's `skcipher` interface.

use std::fmt;

use hal_traits::{CbcCipher, CipherAlg, CryptoError};

use crate::keyed::{Keyed, recv_exact, send_all};
use crate::sys::{AlgType, Control, Direction};

/// Largest request sent to the kernel at once; longer buffers are processed in chunks,
/// chaining the IV by hand. Well under the default 200 KiB socket send buffer.
const CHUNK: usize = 16 * 1024;

/// A CBC cipher keyed in the kernel ([`CbcCipher`]): `cbc(aes)`, `cbc(des3_ede)`,
/// `cbc(des)`.
///
/// [`CbcCipher::new`] returns [`CryptoError::Unsupported`] when the kernel has no such
/// algorithm (or no AF_ALG). The key is copied into the kernel and not kept here.
pub struct AfAlgCbc {
    alg: CipherAlg,
    keyed: Keyed,
}

impl fmt::Debug for AfAlgCbc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfAlgCbc")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The kernel's name for `alg`.
#[must_use]
pub const fn kernel_name(alg: CipherAlg) -> Option<&'static str> {
    match alg {
        CipherAlg::DesCbc => Some("cbc(des)"),
        CipherAlg::TripleDesCbc => Some("cbc(des3_ede)"),
        CipherAlg::Aes128Cbc | CipherAlg::Aes192Cbc | CipherAlg::Aes256Cbc => Some("cbc(aes)"),
        _ => None,
    }
}

impl AfAlgCbc {
    fn run(&self, dir: Direction, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        let block = self.alg.block_len();
        if iv.len() != block || buf.len() % block != 0 {
            return Err(CryptoError::InvalidLength);
        }
        let mut next_iv = [0u8; 16];
        let next_iv = next_iv.get_mut(..block).ok_or(CryptoError::InvalidLength)?;
        next_iv.copy_from_slice(iv);
        // Empty input: nothing to do (and the kernel would wait for data).
        for chunk in buf.chunks_mut(CHUNK) {
            let last = chunk.len() - block;
            let mut saved = [0u8; 16];
            let saved = saved.get_mut(..block).ok_or(CryptoError::InvalidLength)?;
            if dir == Direction::Decrypt {
                // The next IV is this chunk's last ciphertext block, about to be overwritten.
                saved.copy_from_slice(chunk.get(last..).ok_or(CryptoError::InvalidLength)?);
            }
            self.keyed.with_op(|op| {
                let ctl = Control {
                    op: Some(dir),
                    iv: Some(next_iv),
                    assoclen: None,
                };
                send_all(op, &ctl, &[chunk])?;
                recv_exact(op, &mut [chunk])
            })?;
            if dir == Direction::Encrypt {
                saved.copy_from_slice(chunk.get(last..).ok_or(CryptoError::InvalidLength)?);
            }
            next_iv.copy_from_slice(saved);
        }
        Ok(())
    }
}

impl CbcCipher for AfAlgCbc {
    fn new(alg: CipherAlg, key: &[u8]) -> Result<Self, CryptoError> {
        let name = kernel_name(alg).ok_or(CryptoError::Unsupported)?;
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let keyed = Keyed::new(AlgType::Skcipher, name, key, |_| Ok(()))?;
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> CipherAlg {
        self.alg
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.run(Direction::Encrypt, iv, buf)
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.run(Direction::Decrypt, iv, buf)
    }
}
