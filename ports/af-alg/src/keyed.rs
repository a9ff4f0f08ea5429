//! One keyed transform plus the operation socket its requests go through.

use std::io;
use std::sync::{Mutex, TryLockError};

use hal_traits::CryptoError;

use crate::sys::{AlgType, OpSocket, TfmSocket};

/// A transform socket keyed at construction and a cached operation socket.
///
/// Requests reuse one accepted operation socket (an `accept` + `close` per request costs
/// more than the crypto for ESP-sized packets; see the benchmark). The cache is behind a
/// `Mutex` so the owning type stays `Sync`: a second thread that finds it busy accepts a
/// socket of its own for that request instead of waiting. After a failed request (other
/// than a tag mismatch) the cached socket is dropped, since the kernel may still hold part
/// of that request.
#[derive(Debug)]
pub(crate) struct Keyed {
    tfm: TfmSocket,
    op: Mutex<Option<OpSocket>>,
}

/// The opaque crypto error for a failed kernel call: a tag mismatch is
/// [`CryptoError::AuthenticationFailed`], a length the kernel refused
/// [`CryptoError::InvalidLength`]; anything else (no such algorithm, no AF_ALG, out of
/// sockets or memory) means the engine cannot serve the request:
/// [`CryptoError::Unsupported`].
pub(crate) fn to_crypto(e: &io::Error) -> CryptoError {
    match e.raw_os_error() {
        Some(libc::EBADMSG) => CryptoError::AuthenticationFailed,
        Some(libc::EINVAL) => CryptoError::InvalidLength,
        _ => CryptoError::Unsupported,
    }
}

impl Keyed {
    /// Binds `name`, sets `key`, runs `configure` (AEAD tag size) and accepts the first
    /// operation socket, so that every failure shows here rather than on a packet.
    pub(crate) fn new(
        kind: AlgType,
        name: &str,
        key: &[u8],
        configure: impl FnOnce(&TfmSocket) -> io::Result<()>,
    ) -> Result<Self, CryptoError> {
        let tfm = TfmSocket::bind(kind, name).map_err(|_| CryptoError::Unsupported)?;
        tfm.set_key(key).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => CryptoError::InvalidKeyLength,
            _ => CryptoError::Unsupported,
        })?;
        configure(&tfm).map_err(|e| to_crypto(&e))?;
        let op = tfm.accept().map_err(|e| to_crypto(&e))?;
        Ok(Self {
            tfm,
            op: Mutex::new(Some(op)),
        })
    }

    /// Runs one complete request on an operation socket.
    pub(crate) fn with_op<T>(
        &self,
        f: impl FnOnce(&OpSocket) -> io::Result<T>,
    ) -> Result<T, CryptoError> {
        match self.op.try_lock() {
            Ok(mut cached) => {
                let op = match cached.take() {
                    Some(op) => op,
                    None => self.tfm.accept().map_err(|e| to_crypto(&e))?,
                };
                let r = f(&op);
                // A tag mismatch is a complete, normal answer: the socket stays usable.
                let clean = match &r {
                    Ok(_) => true,
                    Err(e) => e.raw_os_error() == Some(libc::EBADMSG),
                };
                if clean {
                    *cached = Some(op);
                }
                r.map_err(|e| to_crypto(&e))
            }
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => {
                let op = self.tfm.accept().map_err(|e| to_crypto(&e))?;
                f(&op).map_err(|e| to_crypto(&e))
            }
        }
    }
}

/// A request the kernel took only part of (send buffer full) or answered short.
pub(crate) fn short() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Receives exactly `want` bytes over `bufs`, or fails.
pub(crate) fn recv_exact(op: &OpSocket, bufs: &mut [&mut [u8]]) -> io::Result<()> {
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    if op.recv(bufs)? == want {
        Ok(())
    } else {
        Err(short())
    }
}

/// Sends a complete request and checks the kernel took all of it.
pub(crate) fn send_all(
    op: &OpSocket,
    ctl: &crate::sys::Control<'_>,
    data: &[&[u8]],
) -> io::Result<()> {
    let want: usize = data.iter().map(|d| d.len()).sum();
    if op.send(ctl, data, false)? == want {
        Ok(())
    } else {
        Err(short())
    }
}
