//! Safe wrappers over the AF_ALG socket calls. Every `unsafe` block of the crate is here.
//!
//! The kernel interface (Documentation/crypto/userspace-if.rst):
//!
//! 1. `socket(AF_ALG, SOCK_SEQPACKET)` and `bind` to `{type, name}`, e.g.
//!    `{"skcipher", "cbc(aes)"}`: the *transform* (tfm) socket. `setsockopt(SOL_ALG,
//!    ALG_SET_KEY)` keys it; `ALG_SET_AEAD_AUTHSIZE` fixes an AEAD's tag length.
//! 2. `accept` on it gives an *operation* socket that shares the key.
//! 3. `sendmsg` on the operation socket carries the input, with control messages for the
//!    direction (`ALG_SET_OP`), the IV (`ALG_SET_IV`) and the AEAD's AAD length
//!    (`ALG_SET_AEAD_ASSOCLEN`); `recvmsg` returns the output. Without `MSG_MORE` the
//!    request is complete and the socket is ready for the next one.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Most iovec entries one call passes; longer lists are split by the callers.
pub const MAX_IOV: usize = 8;

/// What the kernel's crypto types are called in `sockaddr_alg.salg_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgType {
    /// Symmetric ciphers with a mode (`cbc(aes)`).
    Skcipher,
    /// Hashes and keyed hashes (`hmac(sha1)`).
    Hash,
    /// AEADs (`gcm(aes)`).
    Aead,
}

impl AlgType {
    fn name(self) -> &'static [u8] {
        match self {
            Self::Skcipher => b"skcipher",
            Self::Hash => b"hash",
            Self::Aead => b"aead",
        }
    }
}

/// The direction of a cipher or AEAD request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `ALG_OP_ENCRYPT`.
    Encrypt,
    /// `ALG_OP_DECRYPT`.
    Decrypt,
}

/// The control messages of one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Control<'c> {
    /// `ALG_SET_OP`.
    pub op: Option<Direction>,
    /// `ALG_SET_IV` (public, travels in the packet).
    pub iv: Option<&'c [u8]>,
    /// `ALG_SET_AEAD_ASSOCLEN`.
    pub assoclen: Option<u32>,
}

/// A bound, possibly keyed, transform socket. Closing it frees the kernel's key copy.
#[derive(Debug)]
pub struct TfmSocket {
    fd: OwnedFd,
}

/// An operation socket accepted from a [`TfmSocket`]: one request at a time.
#[derive(Debug)]
pub struct OpSocket {
    fd: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Whether this kernel has AF_ALG at all (`CONFIG_CRYPTO_USER_API`). A kernel without it
/// answers `socket(AF_ALG, ...)` with `EAFNOSUPPORT`.
#[must_use]
pub fn af_alg_available() -> bool {
    // SAFETY: plain syscall with constant arguments; the returned fd, if any, is owned
    // (and closed) by the `OwnedFd` immediately.
    let fd = unsafe { libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    true
}

impl TfmSocket {
    /// Creates an AF_ALG socket and binds it to the algorithm `name` of `kind`. The kernel
    /// instantiates templates (`gcm(aes)`) on demand, loading modules if it may.
    ///
    /// # Errors
    /// `ENOENT` if the kernel has no such algorithm, `EAFNOSUPPORT` without AF_ALG,
    /// `InvalidInput` for a name longer than `sockaddr_alg` holds.
    pub fn bind(kind: AlgType, name: &str) -> io::Result<Self> {
        // SAFETY: `sockaddr_alg` is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_alg = unsafe { zeroed() };
        sa.salg_family = libc::AF_ALG as libc::sa_family_t;
        let ty = kind.name();
        let too_long = || io::Error::from(io::ErrorKind::InvalidInput);
        // Leave at least one NUL at the end of each field.
        if ty.len() >= sa.salg_type.len() || name.len() >= sa.salg_name.len() {
            return Err(too_long());
        }
        for (d, &s) in sa.salg_type.iter_mut().zip(ty) {
            *d = s;
        }
        for (d, &s) in sa.salg_name.iter_mut().zip(name.as_bytes()) {
            *d = s;
        }
        // SAFETY: plain syscall with constant arguments.
        let fd = cvt(unsafe {
            libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `sa` is a fully initialised `sockaddr_alg` that lives across the call, and
        // the length passed is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_alg>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd })
    }

    fn setsockopt(
        &self,
        name: libc::c_int,
        value: *const libc::c_void,
        len: usize,
    ) -> io::Result<()> {
        let len = libc::socklen_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `value` points to `len` readable bytes (or is null with len 0, which
        // ALG_SET_AEAD_AUTHSIZE expects), borrowed for the duration of the call; the kernel
        // copies what it needs.
        cvt(unsafe { libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_ALG, name, value, len) })?;
        Ok(())
    }

    /// `ALG_SET_KEY`: the kernel copies the key into the transform.
    ///
    /// # Errors
    /// `EINVAL` for a key length the algorithm refuses.
    pub fn set_key(&self, key: &[u8]) -> io::Result<()> {
        self.setsockopt(libc::ALG_SET_KEY, key.as_ptr().cast(), key.len())
    }

    /// `ALG_SET_AEAD_AUTHSIZE`: the tag length, passed (oddly) as the option length.
    ///
    /// # Errors
    /// `EINVAL` for a tag length the AEAD refuses.
    pub fn set_aead_authsize(&self, tag_len: usize) -> io::Result<()> {
        self.setsockopt(libc::ALG_SET_AEAD_AUTHSIZE, std::ptr::null(), tag_len)
    }

    /// `accept`: a new operation socket sharing this transform's key.
    ///
    /// # Errors
    /// The OS error (`EMFILE`, `ENOMEM`, `ENOKEY` for a keyed algorithm without a key).
    pub fn accept(&self) -> io::Result<OpSocket> {
        let fd = retry(|| {
            // SAFETY: AF_ALG's accept ignores the peer address; null pointers are allowed.
            cvt(unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            })
        })?;
        // SAFETY: `fd` was just returned by accept4() and is owned by nobody else.
        Ok(OpSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// Room for `ALG_SET_OP`, `ALG_SET_IV` (up to 16 bytes) and `ALG_SET_AEAD_ASSOCLEN`,
/// aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

/// Appends one control message of `SOL_ALG` type `ty` at `buf[used..]` (`used` a multiple
/// of the cmsg alignment). Returns the new used length.
fn push_cmsg(buf: &mut CmsgBuf, used: usize, ty: libc::c_int, data: &[&[u8]]) -> io::Result<usize> {
    let data_len: usize = data.iter().map(|d| d.len()).sum();
    let data_len_u32 = u32::try_from(data_len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: CMSG_SPACE / CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe { (libc::CMSG_SPACE(data_len_u32), libc::CMSG_LEN(data_len_u32)) };
    let (space, len) = (space as usize, len as usize);
    let end = used.checked_add(space).filter(|&e| e <= buf.0.len());
    let Some(end) = end else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let hdr = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: libc::SOL_ALG,
        cmsg_type: ty,
    };
    let region = buf
        .0
        .get_mut(used..end)
        .ok_or(io::ErrorKind::InvalidInput)?;
    region.fill(0);
    // Header first, then the data at CMSG_DATA, which is the header size rounded up to the
    // cmsg alignment (CMSG_LEN(0)).
    let hdr_len = len - data_len;
    let hdr_bytes = region.as_mut_ptr();
    // SAFETY: `region` is at least `space >= size_of::<cmsghdr>()` bytes and starts at an
    // 8-aligned offset of an 8-aligned buffer (CMSG_SPACE keeps alignment), so an aligned
    // write of the header is in bounds.
    unsafe { hdr_bytes.cast::<libc::cmsghdr>().write(hdr) };
    let mut at = hdr_len;
    for d in data {
        let dst = region
            .get_mut(at..at + d.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(d);
        at += d.len();
    }
    Ok(end)
}

impl OpSocket {
    /// Sends (part of) a request: `data` gathered in order, with the control messages.
    /// `more` sets `MSG_MORE`: the request continues in the next send.
    ///
    /// Returns the bytes the kernel took, which for skcipher and AEAD may be less than
    /// offered when the socket's send buffer (`SO_SNDBUF`, 200 KiB by default) is full;
    /// callers bound their requests and treat a short count as a failure.
    ///
    /// # Errors
    /// `InvalidInput` for more than [`MAX_IOV`] parts or an IV over 16 bytes; the OS error.
    pub fn send(&self, ctl: &Control<'_>, data: &[&[u8]], more: bool) -> io::Result<usize> {
        if data.len() > MAX_IOV {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        for (v, d) in iov.iter_mut().zip(data) {
            // The kernel only reads from a send iovec; the `*mut` is the C type's.
            v.iov_base = d.as_ptr().cast_mut().cast();
            v.iov_len = d.len();
        }
        let mut cbuf = CmsgBuf([0; 128]);
        let mut used = 0;
        if let Some(op) = ctl.op {
            let v = match op {
                Direction::Encrypt => libc::ALG_OP_ENCRYPT,
                Direction::Decrypt => libc::ALG_OP_DECRYPT,
            } as u32;
            used = push_cmsg(&mut cbuf, used, libc::ALG_SET_OP, &[&v.to_ne_bytes()])?;
        }
        if let Some(iv) = ctl.iv {
            if iv.len() > 16 {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            // struct af_alg_iv { __u32 ivlen; __u8 iv[]; }
            let ivlen = u32::try_from(iv.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
            used = push_cmsg(
                &mut cbuf,
                used,
                libc::ALG_SET_IV,
                &[&ivlen.to_ne_bytes(), iv],
            )?;
        }
        if let Some(n) = ctl.assoclen {
            used = push_cmsg(
                &mut cbuf,
                used,
                libc::ALG_SET_AEAD_ASSOCLEN,
                &[&n.to_ne_bytes()],
            )?;
        }
        // SAFETY: `msghdr` is plain old data; all-zero is a valid (empty) message.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = data.len() as _;
        if used > 0 {
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = used as _;
        }
        // Never block on a full send buffer: nothing would drain it, since this thread is
        // the one that reads the output. A short count tells the caller instead.
        let flags = libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
        // SAFETY: `msg` points to `data.len()` iovecs describing live, readable slices
        // borrowed for the call, and to `used` bytes of well-formed control messages in
        // `cbuf`; the kernel does not keep the pointers after returning.
        retry(|| cvt_size(unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, flags) }))
    }

    /// Receives the output of the pending request, scattered over `bufs` in order.
    /// Returns the number of bytes written.
    ///
    /// # Errors
    /// `EBADMSG` when an AEAD tag does not verify; `InvalidInput` for more than
    /// [`MAX_IOV`] buffers; the OS error.
    pub fn recv(&self, bufs: &mut [&mut [u8]]) -> io::Result<usize> {
        if bufs.len() > MAX_IOV {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        for (v, b) in iov.iter_mut().zip(bufs.iter_mut()) {
            v.iov_base = b.as_mut_ptr().cast();
            v.iov_len = b.len();
        }
        // SAFETY: `msghdr` is plain old data; all-zero is a valid (empty) message.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = bufs.len() as _;
        // MSG_DONTWAIT: a read with no request pending would otherwise wait forever. It
        // does not cut a request short: the kernel still waits for the crypto it started.
        // SAFETY: `msg` points to `bufs.len()` iovecs describing live, writable slices that
        // are exclusively borrowed for the call; no control buffer is passed.
        retry(|| {
            cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) })
        })
    }
}
