//! IPv4 fragmentation (RFC 791 §3.2), for the two places the ESP path fragments:
//!
//! * after encryption: an outer ESP packet larger than the path MTU, DF clear, is cut into
//!   fragments that the peer reassembles before decryption (RFC 4303 §3.3.5, the RFC
//!   default);
//! * before encryption (`crypto ipsec fragmentation before-encryption`, "look-ahead"): an
//!   inner IPv4 packet whose ESP packet would exceed the MTU is cut first, so that each
//!   fragment becomes its own ESP packet and the peer needs no reassembly; the inner
//!   destination reassembles.
//!
//! [`Ipv4Fragmenter`] is an iterator-like cursor: each call writes the next fragment into
//! a caller buffer, so nothing is allocated and each fragment can be sent before the next
//! is built. A packet that is itself a fragment is fragmented further with offsets
//! relative to the original datagram, and options are handled as RFC 791 says: all of
//! them in the first fragment, only those with the "copied" flag in the others.

use core::fmt;

use crate::wire::WireError;
use crate::wire::ipv4::{self, Ipv4Packet};

/// Why a packet cannot be fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FragmentError {
    /// The packet has Don't Fragment set.
    DontFragment,
    /// The MTU cannot hold the header plus 8 bytes of payload.
    MtuTooSmall,
    /// The packet (or its options) is malformed.
    Malformed(WireError),
    /// The output buffer cannot hold the fragment; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes the fragment needs.
        needed: usize,
    },
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DontFragment => f.write_str("don't fragment set"),
            Self::MtuTooSmall => f.write_str("MTU too small to fragment"),
            Self::Malformed(e) => write!(f, "cannot fragment: {e}"),
            Self::BufferTooSmall { needed } => {
                write!(f, "buffer too small for fragment ({needed} bytes needed)")
            }
        }
    }
}

impl core::error::Error for FragmentError {}

impl From<WireError> for FragmentError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

/// Cuts one IPv4 packet into fragments of at most `mtu` bytes. See the module docs.
#[derive(Debug, Clone)]
pub struct Ipv4Fragmenter<'a> {
    /// The original header, options included.
    header: &'a [u8],
    /// The options copied into every fragment after the first, padded to 4 bytes.
    copied: [u8; ipv4::MAX_HEADER_LEN - ipv4::HEADER_LEN],
    copied_len: usize,
    payload: &'a [u8],
    /// Offset of the payload in the original datagram (non-zero for a fragment).
    base_offset: usize,
    /// The original More Fragments flag, kept on the last piece.
    more_after: bool,
    mtu: usize,
    pos: usize,
    done: bool,
}

impl<'a> Ipv4Fragmenter<'a> {
    /// Prepares to fragment `packet` (a whole IPv4 packet, trailing bytes past its total
    /// length ignored) into fragments of at most `mtu` bytes. A packet that already fits
    /// yields itself once (with a recomputed header).
    ///
    /// # Errors
    ///
    /// [`FragmentError::Malformed`] for a bad header; [`FragmentError::DontFragment`] if
    /// DF is set and the packet does not fit; [`FragmentError::MtuTooSmall`] if a
    /// fragment could not carry 8 bytes.
    pub fn new(packet: &'a [u8], mtu: usize) -> Result<Self, FragmentError> {
        let ip = Ipv4Packet::new_checked(packet)?;
        let hlen = ip.header_len();
        let total = usize::from(ip.total_len());
        let header = packet.get(..hlen).ok_or(WireError::Truncated)?;
        let payload = packet.get(hlen..total).ok_or(WireError::Truncated)?;
        if total > mtu && ip.dont_frag() {
            return Err(FragmentError::DontFragment);
        }
        let mut copied = [0u8; ipv4::MAX_HEADER_LEN - ipv4::HEADER_LEN];
        let copied_len = copied_options(ip.options(), &mut copied)?;
        let later_hlen = ipv4::HEADER_LEN + copied_len;
        if total > mtu && (mtu < hlen + 8 || mtu < later_hlen + 8) {
            return Err(FragmentError::MtuTooSmall);
        }
        Ok(Self {
            header,
            copied,
            copied_len,
            payload,
            base_offset: usize::from(ip.frag_offset_bytes()),
            more_after: ip.more_frags(),
            mtu,
            pos: 0,
            done: false,
        })
    }

    /// Whether every fragment has been produced.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many fragments the packet makes in total.
    #[must_use]
    pub fn fragment_count(&self) -> usize {
        let mut n = 0;
        let mut pos = 0;
        loop {
            let (_, chunk) = self.piece(pos);
            n += 1;
            pos += chunk;
            if pos >= self.payload.len() {
                return n;
            }
        }
    }

    /// Header length and payload chunk length of the fragment starting at `pos`.
    fn piece(&self, pos: usize) -> (usize, usize) {
        let hlen = if pos == 0 {
            self.header.len()
        } else {
            ipv4::HEADER_LEN + self.copied_len
        };
        let left = self.payload.len().saturating_sub(pos);
        let room = self.mtu.saturating_sub(hlen);
        if left <= room {
            (hlen, left)
        } else {
            (hlen, room & !7)
        }
    }

    /// Writes the next fragment into `out` and returns its length, or `None` when done.
    ///
    /// # Errors
    ///
    /// [`FragmentError::BufferTooSmall`] (the cursor does not advance, so the call can be
    /// repeated with a larger buffer); [`FragmentError::Malformed`] if an offset would
    /// overflow the 13-bit field.
    pub fn next_fragment(&mut self, out: &mut [u8]) -> Option<Result<usize, FragmentError>> {
        if self.is_done() {
            return None;
        }
        Some(self.write_next(out))
    }

    fn write_next(&mut self, out: &mut [u8]) -> Result<usize, FragmentError> {
        let pos = self.pos;
        let (hlen, chunk) = self.piece(pos);
        let len = hlen + chunk;
        let last = pos + chunk >= self.payload.len();
        let offset = self.base_offset + pos;
        let offset = u16::try_from(offset)
            .ok()
            .filter(|o| o % 8 == 0 && usize::from(*o) + chunk <= 0xffff)
            .ok_or(FragmentError::Malformed(WireError::BadLength))?;
        let dst = out
            .get_mut(..len)
            .ok_or(FragmentError::BufferTooSmall { needed: len })?;
        let (h, body) = dst.split_at_mut(hlen);
        if pos == 0 {
            h.copy_from_slice(self.header);
        } else {
            let fixed = self
                .header
                .get(..ipv4::HEADER_LEN)
                .ok_or(WireError::Truncated)?;
            let opts = self
                .copied
                .get(..self.copied_len)
                .ok_or(WireError::Truncated)?;
            let (hf, ho) = h.split_at_mut(ipv4::HEADER_LEN);
            hf.copy_from_slice(fixed);
            ho.copy_from_slice(opts);
        }
        body.copy_from_slice(
            self.payload
                .get(pos..pos + chunk)
                .ok_or(WireError::Truncated)?,
        );
        let mut ip = Ipv4Packet::new_unchecked(dst);
        let ihl = u8::try_from(hlen).map_err(|_| WireError::BadLength)?;
        ip.set_header_len(ihl);
        ip.set_total_len(u16::try_from(len).map_err(|_| WireError::BadLength)?);
        ip.set_more_frags(!last || self.more_after);
        ip.set_frag_offset_bytes(offset);
        ip.fill_checksum();
        self.pos = pos + chunk;
        self.done = last;
        Ok(len)
    }
}

/// Collects the options whose "copied" flag (bit 7 of the type) is set, padded with
/// End-of-Options to a multiple of 4. Returns their length.
fn copied_options(opts: &[u8], out: &mut [u8; 40]) -> Result<usize, WireError> {
    let mut i = 0;
    let mut n = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1).ok_or(WireError::Malformed)?);
                let opt = opts.get(i..i + len).ok_or(WireError::Malformed)?;
                if len < 2 {
                    return Err(WireError::Malformed);
                }
                if kind & 0x80 != 0 {
                    out.get_mut(n..n + len)
                        .ok_or(WireError::Malformed)?
                        .copy_from_slice(opt);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = (n + 3) & !3;
    if let Some(pad) = out.get_mut(n..padded) {
        pad.fill(0);
    }
    Ok(padded)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use core::net::Ipv4Addr;

    use super::*;
    use crate::wire::ipv4::Ipv4Repr;

    fn packet(payload_len: usize, df: bool) -> Vec<u8> {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            protocol: 50,
            payload_len,
            ttl: 64,
            tos: 0,
            ident: 0x4242,
            dont_frag: df,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v).unwrap();
        for (i, b) in v[20..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        v
    }

    fn all(f: &mut Ipv4Fragmenter<'_>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2000];
        while let Some(r) = f.next_fragment(&mut buf) {
            let n = r.unwrap();
            out.push(buf[..n].to_vec());
        }
        out
    }

    #[test]
    fn splits_on_8_byte_boundaries_within_mtu() {
        let p = packet(1480 + 100, false);
        let mut f = Ipv4Fragmenter::new(&p, 1500).unwrap();
        assert_eq!(f.fragment_count(), 2);
        let frags = all(&mut f);
        assert_eq!(frags.len(), 2);
        let a = Ipv4Packet::new_checked(&frags[0][..]).unwrap();
        let b = Ipv4Packet::new_checked(&frags[1][..]).unwrap();
        assert_eq!(
            (a.total_len(), a.more_frags(), a.frag_offset_bytes()),
            (1500, true, 0)
        );
        assert_eq!(
            (b.total_len(), b.more_frags(), b.frag_offset_bytes()),
            (120, false, 1480)
        );
        assert!(a.header_checksum_ok() && b.header_checksum_ok());
        assert_eq!(a.ident(), 0x4242);
        let mut joined = a.payload().to_vec();
        joined.extend_from_slice(b.payload());
        assert_eq!(joined, &p[20..]);
        // An odd MTU: chunks are rounded down to 8 bytes.
        let frags = all(&mut Ipv4Fragmenter::new(&p, 1001).unwrap());
        assert!(frags.iter().all(|f| f.len() <= 1001));
        assert_eq!(
            Ipv4Packet::new_checked(&frags[0][..])
                .unwrap()
                .payload()
                .len(),
            976
        );
    }

    #[test]
    fn fitting_packet_is_one_fragment_and_df_refuses() {
        let p = packet(100, true);
        assert_eq!(
            all(&mut Ipv4Fragmenter::new(&p, 1500).unwrap()),
            vec![p.clone()]
        );
        let big = packet(2000, true);
        assert_eq!(
            Ipv4Fragmenter::new(&big, 1500).unwrap_err(),
            FragmentError::DontFragment
        );
        assert_eq!(
            Ipv4Fragmenter::new(&packet(100, false), 27).unwrap_err(),
            FragmentError::MtuTooSmall
        );
        let empty = packet(0, false);
        assert_eq!(all(&mut Ipv4Fragmenter::new(&empty, 576).unwrap()).len(), 1);
    }

    #[test]
    fn refragmenting_a_fragment_keeps_offsets_and_mf() {
        let mut p = packet(800, false);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_more_frags(true);
            ip.set_frag_offset_bytes(1480);
            ip.fill_checksum();
        }
        let frags = all(&mut Ipv4Fragmenter::new(&p, 500).unwrap());
        let offs: Vec<(u16, bool)> = frags
            .iter()
            .map(|f| {
                let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
                (ip.frag_offset_bytes(), ip.more_frags())
            })
            .collect();
        assert_eq!(offs, vec![(1480, true), (1960, true)]);
    }

    #[test]
    fn only_copied_options_follow_the_first_fragment() {
        // Options: NOP, record route (7, not copied, len 7), security (130, copied, len 4).
        let mut p = packet(600, false);
        let opts = [1u8, 7, 7, 4, 0, 0, 0, 0, 130, 4, 0xab, 0xcd];
        p.splice(20..20, opts);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_header_len(32);
            ip.set_total_len(632);
            ip.fill_checksum();
        }
        let frags = all(&mut Ipv4Fragmenter::new(&p, 300).unwrap());
        let first = Ipv4Packet::new_checked(&frags[0][..]).unwrap();
        assert_eq!(first.options(), &opts);
        for f in &frags[1..] {
            let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert_eq!(ip.options(), &[130, 4, 0xab, 0xcd]);
            assert!(ip.header_checksum_ok());
        }
        let mut joined = Vec::new();
        for f in &frags {
            joined.extend_from_slice(Ipv4Packet::new_checked(&f[..]).unwrap().payload());
        }
        assert_eq!(joined, &p[32..]);
    }

    #[test]
    fn small_buffer_does_not_advance() {
        let p = packet(3000, false);
        let mut f = Ipv4Fragmenter::new(&p, 1500).unwrap();
        let mut small = [0u8; 100];
        assert_eq!(
            f.next_fragment(&mut small),
            Some(Err(FragmentError::BufferTooSmall { needed: 1500 }))
        );
        assert_eq!(all(&mut f).len(), 3);
    }
}
