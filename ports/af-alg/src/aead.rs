//! AES-GCM (RFC 4106 use: 12-byte nonce, 8/12/16-byte tag) through the kernel's `aead`
//! interface.

use std::fmt;

use hal_traits::{Aead, AeadAlg, CryptoError};

use crate::keyed::{Keyed, recv_exact, send_all, short};
use crate::sys::{AlgType, Control, Direction};

/// Longest AAD handled without allocating (ESP's is 8 or 12 bytes).
const AAD_STACK: usize = 64;
/// Longest message sent in one request: an AEAD request cannot be split, and must fit the
/// socket send buffer (200 KiB by default). Every ESP packet fits.
const MAX_MESSAGE: usize = 64 * 1024;

/// AES-GCM keyed in the kernel ([`Aead`]): `gcm(aes)` with `ALG_SET_AEAD_AUTHSIZE` set to
/// the ICV length.
///
/// The ESP layer builds the nonce (salt | explicit IV), so this uses the plain `gcm(aes)`
/// template, not `rfc4106(gcm(aes))` (which wants the salt in the key and the IV in the
/// AAD). The kernel verifies the tag before it releases plaintext and reports a mismatch
/// as `EBADMSG`, which becomes [`CryptoError::AuthenticationFailed`]. Messages are limited
/// to 64 KiB. [`Aead::new`] returns [`CryptoError::Unsupported`] when the kernel has no
/// `gcm(aes)` and cannot build one. The key is copied into the kernel and not kept here.
pub struct AfAlgAead {
    alg: AeadAlg,
    keyed: Keyed,
}

impl fmt::Debug for AfAlgAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfAlgAead")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The kernel's name for every [`AeadAlg`].
pub const KERNEL_NAME: &str = "gcm(aes)";

impl AfAlgAead {
    fn run(
        &self,
        dir: Direction,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag_in: &[u8],
        tag_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if buf.len() > MAX_MESSAGE || aad.len() > MAX_MESSAGE {
            return Err(CryptoError::InvalidLength);
        }
        let assoclen = u32::try_from(aad.len()).map_err(|_| CryptoError::InvalidLength)?;
        // The kernel writes the AAD back in front of the output: give it a scratch copy.
        let mut stack = [0u8; AAD_STACK];
        let mut heap = Vec::new();
        let aad_out: &mut [u8] = if let Some(s) = stack.get_mut(..aad.len()) {
            s
        } else {
            heap.resize(aad.len(), 0);
            &mut heap
        };
        self.keyed.with_op(|op| {
            let ctl = Control {
                op: Some(dir),
                iv: Some(nonce),
                assoclen: Some(assoclen),
            };
            // Encrypt: in AAD | plaintext, out AAD | ciphertext | tag.
            // Decrypt: in AAD | ciphertext | tag, out AAD | plaintext.
            send_all(op, &ctl, &[aad, buf, tag_in])?;
            if aad_out.is_empty() && buf.is_empty() && tag_out.is_empty() {
                // Opening an empty message: its output is empty, and the kernel processes
                // a request only while the read has room left (`aead_recvmsg` loops on
                // `msg_data_left`). A zero-length read would return 0 with the tag never
                // checked. Offer one spare byte: the kernel verifies, writes nothing and
                // returns 0, or fails with EBADMSG.
                let mut spare = [0u8; 1];
                return match op.recv(&mut [&mut spare])? {
                    0 => Ok(()),
                    _ => Err(short()),
                };
            }
            recv_exact(op, &mut [aad_out, buf, tag_out])
        })
    }
}

impl Aead for AfAlgAead {
    fn new(alg: AeadAlg, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let keyed = Keyed::new(AlgType::Aead, KERNEL_NAME, key, |tfm| {
            tfm.set_aead_authsize(alg.icv_len())
        })?;
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> AeadAlg {
        self.alg
    }

    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), CryptoError> {
        if tag.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        self.run(Direction::Encrypt, nonce, aad, buf, &[], tag)
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        if tag.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        self.run(Direction::Decrypt, nonce, aad, buf, tag, &mut [])
    }
}
