//! IPv4 reassembly with fixed buffers, for ESP fragmented after encryption (RFC 4303
//! §3.4.1: reassembly happens before the SA is even looked up).
//!
//! [`Reassembler<SLOTS, SIZE>`] holds at most `SLOTS` datagrams in progress, each up to
//! `SIZE` bytes of payload, in fixed arrays: no heap, and the memory bound is known at
//! build time. Fragments are keyed by (source, destination, protocol, identification) as
//! RFC 791 says.
//!
//! It is written to be fed hostile input:
//!
//! * overlapping fragments discard the whole datagram, as RFC 5722 requires for IPv6 (and
//!   as is prudent for IPv4, since overlaps only serve to evade inspection); an exact
//!   duplicate is merely dropped, as RFC 5722 allows;
//! * a fragment reaching past `SIZE`, a second "last fragment" with another length, data
//!   past the end, more than [`MAX_FRAGMENTS`] pieces: the datagram is discarded;
//! * when every slot is busy, new datagrams are refused (the ones in progress are not
//!   evicted, so a flood cannot flush legitimate reassemblies; it can only delay new
//!   ones until the timeout frees slots);
//! * each datagram has a deadline (first fragment + timeout, default 30 s); the owner
//!   arms one timer for [`Reassembler::poll_timeout`], which costs O(SLOTS).
//!
//! Every rejection is a [`ReassemblyError`] and a counter in [`ReassemblyCounters`];
//! nothing panics.

use core::fmt;
use core::net::Ipv4Addr;

use crate::time::{Duration, Instant};
use crate::wire::WireError;
use crate::wire::ipv4::{self, Ipv4Packet};

/// The default reassembly timeout (Linux's `ipfrag_time`; RFC 791 suggests 15 s at least).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most fragments one datagram may have (a 64 KB datagram over a 1500-byte MTU has
/// 45; ESP over a sane path has 2 or 3).
pub const MAX_FRAGMENTS: usize = 64;

/// Why a fragment was not accepted. Each has a counter in [`ReassemblyCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The packet is not an IPv4 fragment.
    NotFragment,
    /// A malformed fragment (bad header, empty, or a non-final length not a multiple of 8).
    Malformed(WireError),
    /// An exact duplicate of a fragment already held: dropped, the datagram is kept.
    Duplicate,
    /// The fragment overlaps another: the whole datagram was discarded (RFC 5722).
    Overlap,
    /// The fragment contradicts the datagram's length (a second last fragment, data past
    /// the end): the datagram was discarded.
    Inconsistent,
    /// The datagram would exceed the slot size or 65535 bytes: discarded.
    TooBig,
    /// The datagram has more than [`MAX_FRAGMENTS`] fragments: discarded.
    TooManyFragments,
    /// Every reassembly slot is in use: the fragment was refused.
    NoSlot,
    /// The output buffer cannot hold the datagram (`needed` bytes): discarded.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFragment => f.write_str("not a fragment"),
            Self::Malformed(e) => write!(f, "malformed fragment: {e}"),
            Self::Duplicate => f.write_str("duplicate fragment"),
            Self::Overlap => f.write_str("overlapping fragment, datagram discarded"),
            Self::Inconsistent => f.write_str("inconsistent fragment, datagram discarded"),
            Self::TooBig => f.write_str("reassembled datagram too large"),
            Self::TooManyFragments => f.write_str("too many fragments"),
            Self::NoSlot => f.write_str("all reassembly slots busy"),
            Self::BufferTooSmall { needed } => {
                write!(f, "buffer too small for datagram ({needed} bytes needed)")
            }
        }
    }
}

impl core::error::Error for ReassemblyError {}

impl From<WireError> for ReassemblyError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

/// Reassembly counters (`show ip traffic`'s "Frags:" line, with every drop named).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReassemblyCounters {
    /// Fragments accepted into a slot.
    pub fragments: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Malformed fragments.
    pub malformed: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Datagrams discarded for overlapping fragments.
    pub overlaps: u64,
    /// Datagrams discarded as inconsistent.
    pub inconsistent: u64,
    /// Datagrams discarded as too big.
    pub too_big: u64,
    /// Datagrams discarded for too many fragments.
    pub too_many_fragments: u64,
    /// Fragments refused because every slot was busy.
    pub no_slot: u64,
    /// Datagrams discarded because the output buffer was too small.
    pub buffer_too_small: u64,
    /// Datagrams discarded by the timeout.
    pub timed_out: u64,
}

impl ReassemblyCounters {
    fn count(&mut self, e: ReassemblyError) {
        let c = match e {
            ReassemblyError::NotFragment | ReassemblyError::Malformed(_) => &mut self.malformed,
            ReassemblyError::Duplicate => &mut self.duplicates,
            ReassemblyError::Overlap => &mut self.overlaps,
            ReassemblyError::Inconsistent => &mut self.inconsistent,
            ReassemblyError::TooBig => &mut self.too_big,
            ReassemblyError::TooManyFragments => &mut self.too_many_fragments,
            ReassemblyError::NoSlot => &mut self.no_slot,
            ReassemblyError::BufferTooSmall { .. } => &mut self.buffer_too_small,
        };
        *c = c.saturating_add(1);
    }
}

/// The outcome of a fragment that was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reassembly {
    /// Held; the datagram is not complete yet.
    Incomplete,
    /// The datagram is complete: `out[..len]` holds it, with a fresh header (MF clear,
    /// offset 0, total length and checksum fixed).
    Complete(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    protocol: u8,
}

struct Slot<const SIZE: usize> {
    key: Option<Key>,
    deadline: Instant,
    header: [u8; ipv4::MAX_HEADER_LEN],
    /// Length of the first fragment's header; 0 until the offset-0 fragment arrives.
    header_len: usize,
    /// The payload length, once the last fragment (MF clear) has arrived.
    total: Option<usize>,
    /// Payload bytes held (no overlaps, so this is also the coverage).
    held: usize,
    ranges: [(u16, u16); MAX_FRAGMENTS],
    count: usize,
    data: [u8; SIZE],
}

impl<const SIZE: usize> Slot<SIZE> {
    const EMPTY: Self = Self {
        key: None,
        deadline: Instant::ZERO,
        header: [0; ipv4::MAX_HEADER_LEN],
        header_len: 0,
        total: None,
        held: 0,
        ranges: [(0, 0); MAX_FRAGMENTS],
        count: 0,
        data: [0; SIZE],
    };

    fn reset(&mut self) {
        self.key = None;
        self.header_len = 0;
        self.total = None;
        self.held = 0;
        self.count = 0;
    }
}

/// Reassembles IPv4 datagrams: at most `SLOTS` at a time, each at most `SIZE` bytes of
/// payload. See the [module documentation](self).
pub struct Reassembler<const SLOTS: usize, const SIZE: usize> {
    slots: [Slot<SIZE>; SLOTS],
    timeout: Duration,
    counters: ReassemblyCounters,
}

impl<const SLOTS: usize, const SIZE: usize> Default for Reassembler<SLOTS, SIZE> {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

impl<const SLOTS: usize, const SIZE: usize> Reassembler<SLOTS, SIZE> {
    /// An empty reassembler whose datagrams expire `timeout` after their first fragment.
    #[must_use]
    pub const fn new(timeout: Duration) -> Self {
        Self {
            slots: [const { Slot::EMPTY }; SLOTS],
            timeout,
            counters: ReassemblyCounters {
                fragments: 0,
                reassembled: 0,
                malformed: 0,
                duplicates: 0,
                overlaps: 0,
                inconsistent: 0,
                too_big: 0,
                too_many_fragments: 0,
                no_slot: 0,
                buffer_too_small: 0,
                timed_out: 0,
            },
        }
    }

    /// Changes the timeout for datagrams started from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &ReassemblyCounters {
        &self.counters
    }

    /// Datagrams in progress.
    #[must_use]
    pub fn in_progress(&self) -> usize {
        self.slots.iter().filter(|s| s.key.is_some()).count()
    }

    /// The earliest reassembly deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.key.is_some())
            .map(|s| s.deadline)
            .min()
    }

    /// Discards the datagrams whose deadline has passed. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in &mut self.slots {
            if s.key.is_some() && s.deadline <= now {
                s.reset();
                self.counters.timed_out = self.counters.timed_out.saturating_add(1);
            }
        }
    }

    /// Adds an IPv4 fragment. When it completes its datagram, the datagram is written to
    /// `out` (whose length must be at least header + payload) and its slot freed.
    ///
    /// # Errors
    ///
    /// See [`ReassemblyError`]; each error is counted.
    pub fn push(
        &mut self,
        now: Instant,
        fragment: &[u8],
        out: &mut [u8],
    ) -> Result<Reassembly, ReassemblyError> {
        let r = self.push_inner(now, fragment, out);
        match r {
            Ok(Reassembly::Complete(_)) => {
                self.counters.fragments = self.counters.fragments.saturating_add(1);
                self.counters.reassembled = self.counters.reassembled.saturating_add(1);
            }
            Ok(Reassembly::Incomplete) => {
                self.counters.fragments = self.counters.fragments.saturating_add(1);
            }
            Err(e) => self.counters.count(e),
        }
        r
    }

    fn push_inner(
        &mut self,
        now: Instant,
        fragment: &[u8],
        out: &mut [u8],
    ) -> Result<Reassembly, ReassemblyError> {
        let ip = Ipv4Packet::new_checked(fragment)?;
        ip.verify_checksum()?;
        if !ip.is_fragment() {
            return Err(ReassemblyError::NotFragment);
        }
        let key = Key {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ident: ip.ident(),
            protocol: ip.protocol(),
        };
        let payload = ip.payload();
        let start = usize::from(ip.frag_offset_bytes());
        let end = start + payload.len();
        let more = ip.more_frags();
        if payload.is_empty() || (more && payload.len() % 8 != 0) {
            return Err(WireError::BadLength.into());
        }
        let index = match self.slots.iter().position(|s| s.key == Some(key)) {
            Some(i) => i,
            None => {
                let i = self
                    .slots
                    .iter()
                    .position(|s| s.key.is_none())
                    .ok_or(ReassemblyError::NoSlot)?;
                let s = self.slots.get_mut(i).ok_or(ReassemblyError::NoSlot)?;
                s.reset();
                s.key = Some(key);
                s.deadline = now + self.timeout;
                i
            }
        };
        let slot = self.slots.get_mut(index).ok_or(ReassemblyError::NoSlot)?;
        let r = Self::add(slot, &ip, start, end, more, out);
        if let Err(e) = r {
            if e != ReassemblyError::Duplicate {
                // RFC 5722 and friends: a datagram with a bad fragment is dropped whole.
                slot.reset();
            }
        }
        r
    }

    fn add(
        slot: &mut Slot<SIZE>,
        ip: &Ipv4Packet<&[u8]>,
        start: usize,
        end: usize,
        more: bool,
        out: &mut [u8],
    ) -> Result<Reassembly, ReassemblyError> {
        let ranges = slot.ranges.get(..slot.count).unwrap_or(&[]);
        for &(a, b) in ranges {
            let (a, b) = (usize::from(a), usize::from(b));
            if a == start && b == end {
                return Err(ReassemblyError::Duplicate);
            }
            if start < b && a < end {
                return Err(ReassemblyError::Overlap);
            }
        }
        let hlen_first = if start == 0 {
            ip.header_len()
        } else {
            slot.header_len
        };
        if end > SIZE || hlen_first + end > usize::from(u16::MAX) {
            return Err(ReassemblyError::TooBig);
        }
        match (more, slot.total) {
            (false, Some(t)) if t != end => return Err(ReassemblyError::Inconsistent),
            (false, _) if ranges.iter().any(|&(_, b)| usize::from(b) > end) => {
                return Err(ReassemblyError::Inconsistent);
            }
            (true, Some(t)) if end > t => return Err(ReassemblyError::Inconsistent),
            _ => {}
        }
        let (Ok(s16), Ok(e16)) = (u16::try_from(start), u16::try_from(end)) else {
            return Err(ReassemblyError::TooBig);
        };
        let range = slot
            .ranges
            .get_mut(slot.count)
            .ok_or(ReassemblyError::TooManyFragments)?;
        *range = (s16, e16);
        slot.count += 1;
        slot.data
            .get_mut(start..end)
            .ok_or(ReassemblyError::TooBig)?
            .copy_from_slice(ip.payload());
        slot.held += end - start;
        if !more {
            slot.total = Some(end);
        }
        if start == 0 {
            let h = ip.header();
            slot.header
                .get_mut(..h.len())
                .ok_or(ReassemblyError::Malformed(WireError::BadLength))?
                .copy_from_slice(h);
            slot.header_len = h.len();
        }
        match slot.total {
            Some(t) if slot.held == t && slot.header_len != 0 => {
                let len = Self::emit(slot, t, out)?;
                slot.reset();
                Ok(Reassembly::Complete(len))
            }
            _ => Ok(Reassembly::Incomplete),
        }
    }

    fn emit(slot: &Slot<SIZE>, total: usize, out: &mut [u8]) -> Result<usize, ReassemblyError> {
        let hlen = slot.header_len;
        let len = hlen + total;
        let dst = out
            .get_mut(..len)
            .ok_or(ReassemblyError::BufferTooSmall { needed: len })?;
        let (h, body) = dst.split_at_mut(hlen);
        h.copy_from_slice(slot.header.get(..hlen).ok_or(WireError::BadLength)?);
        body.copy_from_slice(slot.data.get(..total).ok_or(WireError::BadLength)?);
        let mut ip = Ipv4Packet::new_unchecked(dst);
        ip.set_total_len(u16::try_from(len).map_err(|_| ReassemblyError::TooBig)?);
        ip.set_more_frags(false);
        ip.set_frag_offset_bytes(0);
        ip.fill_checksum();
        Ok(len)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::fragment::Ipv4Fragmenter;
    use crate::wire::ipv4::Ipv4Repr;

    type R = Reassembler<4, 4096>;

    fn datagram(ident: u16, payload_len: usize) -> Vec<u8> {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(198, 51, 100, 2),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            protocol: 50,
            payload_len,
            ttl: 61,
            tos: 0,
            ident,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v).unwrap();
        for (i, b) in v[20..].iter_mut().enumerate() {
            *b = (i * 13 + usize::from(ident)) as u8;
        }
        v
    }

    fn fragments(p: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut f = Ipv4Fragmenter::new(p, mtu).unwrap();
        let mut v = Vec::new();
        let mut buf = [0u8; 1500];
        while let Some(n) = f.next_fragment(&mut buf) {
            v.push(buf[..n.unwrap()].to_vec());
        }
        v
    }

    /// A fragment with arbitrary offset, length and MF (payload bytes from the datagram).
    fn frag(ident: u16, off: usize, len: usize, mf: bool) -> Vec<u8> {
        let d = datagram(ident, off + len);
        let r = Ipv4Repr {
            src: Ipv4Addr::new(198, 51, 100, 2),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            protocol: 50,
            payload_len: len,
            ttl: 61,
            tos: 0,
            ident,
            dont_frag: false,
            more_frags: mf,
            frag_offset: off as u16,
        };
        let mut v = vec![0u8; 20];
        r.emit(&mut v).unwrap();
        v.extend_from_slice(&d[20 + off..20 + off + len]);
        v
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let p = datagram(7, 3000);
        let fr = fragments(&p, 1000);
        assert_eq!(fr.len(), 4);
        let mut r = R::default();
        let mut out = [0u8; 4096];
        for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]] {
            let mut done = None;
            for (k, &i) in order.iter().enumerate() {
                if k == 1 {
                    // A duplicate of the first fragment pushed: dropped, datagram kept.
                    let first = order[0];
                    assert_eq!(
                        r.push(Instant::ZERO, &fr[first], &mut out),
                        Err(ReassemblyError::Duplicate)
                    );
                }
                match r.push(Instant::ZERO, &fr[i], &mut out).unwrap() {
                    Reassembly::Complete(n) => done = Some(n),
                    Reassembly::Incomplete => assert!(k < 3),
                }
            }
            let n = done.unwrap();
            assert_eq!(&out[..n], &p[..]);
            assert_eq!(r.in_progress(), 0);
        }
        assert_eq!(r.counters().reassembled, 3);
        assert_eq!(r.counters().duplicates, 3);
    }

    #[test]
    fn overlap_discards_the_datagram() {
        let mut r = R::default();
        let mut out = [0u8; 4096];
        assert_eq!(
            r.push(Instant::ZERO, &frag(1, 0, 800, true), &mut out),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(
            r.push(Instant::ZERO, &frag(1, 792, 16, true), &mut out),
            Err(ReassemblyError::Overlap)
        );
        assert_eq!(r.in_progress(), 0);
        // The rest arrives: it starts a new datagram that never completes.
        assert_eq!(
            r.push(Instant::ZERO, &frag(1, 800, 100, false), &mut out),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(r.counters().overlaps, 1);
    }

    #[test]
    fn inconsistent_too_big_and_malformed() {
        let mut r = R::default();
        let mut out = [0u8; 8192];
        r.push(Instant::ZERO, &frag(2, 0, 800, true), &mut out)
            .unwrap();
        r.push(Instant::ZERO, &frag(2, 1600, 100, false), &mut out)
            .unwrap();
        assert_eq!(
            r.push(Instant::ZERO, &frag(2, 2000, 8, true), &mut out),
            Err(ReassemblyError::Inconsistent)
        );
        r.push(Instant::ZERO, &frag(3, 800, 800, true), &mut out)
            .unwrap();
        assert_eq!(
            r.push(Instant::ZERO, &frag(3, 4000, 200, false), &mut out),
            Err(ReassemblyError::TooBig)
        );
        assert_eq!(
            r.push(Instant::ZERO, &frag(4, 0, 13, true), &mut out),
            Err(ReassemblyError::Malformed(WireError::BadLength))
        );
        assert_eq!(
            r.push(Instant::ZERO, &datagram(5, 100), &mut out),
            Err(ReassemblyError::NotFragment)
        );
        let mut bad = frag(6, 0, 8, true);
        bad[10] ^= 0xff;
        assert!(matches!(
            r.push(Instant::ZERO, &bad, &mut out),
            Err(ReassemblyError::Malformed(_))
        ));
        let c = r.counters();
        assert_eq!((c.inconsistent, c.too_big, c.malformed), (1, 1, 3));
        assert_eq!(r.in_progress(), 0);
        // Output buffer too small: counted, datagram dropped.
        r.push(Instant::ZERO, &frag(7, 0, 800, true), &mut out)
            .unwrap();
        assert_eq!(
            r.push(Instant::ZERO, &frag(7, 800, 8, false), &mut out[..100]),
            Err(ReassemblyError::BufferTooSmall { needed: 828 })
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn slots_limit_and_timeout() {
        let mut r = R::new(Duration::from_secs(30));
        let mut out = [0u8; 4096];
        for id in 0..4u16 {
            r.push(
                Instant::from_secs(u64::from(id)),
                &frag(id, 0, 8, true),
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(
            r.push(Instant::ZERO, &frag(9, 0, 8, true), &mut out),
            Err(ReassemblyError::NoSlot)
        );
        assert_eq!(r.poll_timeout(), Some(Instant::from_secs(30)));
        r.handle_timeout(Instant::from_millis(29_999));
        assert_eq!(r.in_progress(), 4);
        r.handle_timeout(Instant::from_secs(31));
        assert_eq!(r.in_progress(), 2);
        assert_eq!(r.counters().timed_out, 2);
        assert_eq!(r.poll_timeout(), Some(Instant::from_secs(32)));
        // A late fragment of a timed-out datagram starts afresh.
        assert_eq!(
            r.push(Instant::from_secs(31), &frag(0, 8, 8, false), &mut out),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(r.counters().no_slot, 1);
    }

    #[test]
    fn too_many_fragments() {
        let mut r = Reassembler::<1, 4096>::default();
        let mut out = [0u8; 4096];
        for i in 0..MAX_FRAGMENTS {
            r.push(Instant::ZERO, &frag(1, i * 8, 8, true), &mut out)
                .unwrap();
        }
        assert_eq!(
            r.push(
                Instant::ZERO,
                &frag(1, MAX_FRAGMENTS * 8, 8, true),
                &mut out
            ),
            Err(ReassemblyError::TooManyFragments)
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn random_fragments_never_panic() {
        // A fixed LCG drives offsets, lengths, flags, idents, corruption and time.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % m
        };
        let mut r = Reassembler::<3, 2048>::default();
        let mut out = [0u8; 2100];
        let mut now = Instant::ZERO;
        for _ in 0..20_000 {
            let id = next(4) as u16;
            let off = (next(300) * 8) as usize;
            let len = 1 + next(700) as usize;
            let mut f = frag(id, off.min(8000), len, next(3) != 0);
            if next(10) == 0 {
                let at = next(f.len() as u64) as usize;
                f[at] = next(256) as u8;
            }
            if next(20) == 0 {
                f.truncate(next(f.len() as u64) as usize);
            }
            let _ = r.push(now, &f, &mut out[..next(2100) as usize]);
            if next(50) == 0 {
                now = now + Duration::from_secs(next(40));
                r.handle_timeout(now);
            }
        }
        assert!(r.in_progress() <= 3);
    }
}
