//! `reassembly`: `ipsec_core::reassembly::Reassembler` fed IPv4 fragments and time jumps,
//! against a model.
//!
//! Byte 0: bit 0 picks `Reassembler<4, 4096>` or `Reassembler<2, 65536>` (large enough to
//! reach the 65535-byte limit of an IPv4 datagram); bit 1 a short output buffer (1500
//! bytes) instead of a 70000-byte one; bit 2 a 5 s timeout instead of 30 s. Then
//! operations (opcode modulo 4):
//!
//! | op | arguments | effect |
//! |---|---|---|
//! | 0 | u16 len, bytes | a raw packet (its IPv4 header checksum fixed up when bit 7 of the opcode is set) |
//! | 1 | u8 key, u16 offset/8, u8 flags, u16 len, u8 fill | a fragment built here: key picks one of 4 (src, dst, id, protocol) tuples; flags: bit 0 more fragments, bit 1 a 40-byte header (options), bit 3 `len` taken whole (else modulo 2048; at most 4 such fragments per input); `len` payload bytes, each `fill + index` |
//! | 2 | u16 ms×10 | advance time, `handle_timeout` |
//! | 3 | u8 n | split a datagram of `n`×8+1 bytes (key from `n`) into 8-byte-aligned fragments and push them in an order derived from `n` |
//!
//! Model: every fragment the reassembler accepted since its datagram's slot was (re)opened,
//! per key; a slot is dropped on any error other than a duplicate, on completion, and when
//! its deadline (first fragment + timeout) passes in `handle_timeout`.
//!
//! Invariants: no panic; `Complete(len)` returns a well-formed, unfragmented IPv4 packet of
//! exactly `len` bytes with a valid header checksum whose payload is what the model's
//! fragments say, and only when they cover the datagram; `Incomplete` only when they do
//! not; every push is counted exactly once (fragments + every error counter = pushes,
//! `reassembled` = completions); `in_progress` ≤ slots and matches the model; after
//! `handle_timeout(now)`, `poll_timeout` is after `now`.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipsec_core::reassembly::{Reassembler, Reassembly, ReassemblyCounters, ReassemblyError};
use ipsec_core::wire::checksum;
use ipsec_core::wire::ipv4::Ipv4Packet;
use ipsec_core::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

type Key = (Ipv4Addr, Ipv4Addr, u16, u8);

/// A datagram in progress as the model sees it.
struct Partial {
    deadline: Instant,
    /// (start, payload) of each accepted fragment.
    pieces: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
    header: Option<Vec<u8>>,
}

impl Partial {
    fn complete(&self) -> bool {
        let (Some(t), Some(_)) = (self.total, &self.header) else {
            return false;
        };
        self.pieces.iter().map(|(_, p)| p.len()).sum::<usize>() == t
    }
}

trait Reasm {
    fn push(&mut self, now: Instant, f: &[u8], out: &mut [u8]) -> Result<Reassembly, ReassemblyError>;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn counters(&self) -> ReassemblyCounters;
    fn in_progress(&self) -> usize;
    fn slots(&self) -> usize;
}

impl<const S: usize, const N: usize> Reasm for Reassembler<S, N> {
    fn push(&mut self, now: Instant, f: &[u8], out: &mut [u8]) -> Result<Reassembly, ReassemblyError> {
        Reassembler::push(self, now, f, out)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Reassembler::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Reassembler::poll_timeout(self)
    }
    fn counters(&self) -> ReassemblyCounters {
        *Reassembler::counters(self)
    }
    fn in_progress(&self) -> usize {
        Reassembler::in_progress(self)
    }
    fn slots(&self) -> usize {
        S
    }
}

const KEYS: [Key; 4] = [
    (Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(192, 0, 2, 1), 0x1234, 50),
    (Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(192, 0, 2, 1), 0x1235, 50),
    (Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(192, 0, 2, 1), 0x1234, 17),
    (Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(192, 0, 2, 1), 0x1234, 50),
];

fn fragment(key: Key, offset_bytes: usize, more: bool, options: bool, payload: &[u8]) -> Vec<u8> {
    let hl = if options { 40 } else { 20 };
    let total = hl + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (hl / 4) as u8;
    p[2..4].copy_from_slice(&(total.min(0xffff) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&key.2.to_be_bytes());
    let units = ((offset_bytes / 8) & 0x1fff) as u16;
    p[6..8].copy_from_slice(&(units | if more { 0x2000 } else { 0 }).to_be_bytes());
    p[8] = 64;
    p[9] = key.3;
    p[12..16].copy_from_slice(&key.0.octets());
    p[16..20].copy_from_slice(&key.1.octets());
    if options {
        p[20..40].fill(1); // NOPs
    }
    let ck = checksum::checksum(&p[..hl]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p[hl..].copy_from_slice(payload);
    p
}

struct Run<'r> {
    r: &'r mut dyn Reasm,
    model: BTreeMap<Key, Partial>,
    timeout: Duration,
    out: Vec<u8>,
    pushes: u64,
    completions: u64,
}

impl Run<'_> {
    fn push(&mut self, now: Instant, f: &[u8]) {
        self.pushes += 1;
        let before = self.r.counters();
        let res = self.r.push(now, f, &mut self.out);
        let after = self.r.counters();
        let ip = Ipv4Packet::new_checked(f).ok().filter(|ip| ip.verify_checksum().is_ok());
        let parsed = ip.as_ref().filter(|ip| ip.is_fragment()).map(|ip| {
            (
                (ip.src_addr(), ip.dst_addr(), ip.ident(), ip.protocol()),
                usize::from(ip.frag_offset_bytes()),
                ip.more_frags(),
                ip.payload().to_vec(),
                ip.header().to_vec(),
            )
        });
        match res {
            Ok(r) => {
                let (key, start, more, payload, header) = parsed.expect("accepted a non-fragment");
                let slots = self.r.slots();
                let timeout = self.timeout;
                let open = self.model.len();
                let part = self.model.entry(key).or_insert_with(|| {
                    assert!(open < slots, "a slot opened beyond {slots}");
                    Partial { deadline: now + timeout, pieces: Vec::new(), total: None, header: None }
                });
                for (s, p) in &part.pieces {
                    assert!(start >= s + p.len() || start + payload.len() <= *s, "overlap accepted");
                }
                if !more {
                    part.total = Some(start + payload.len());
                }
                if start == 0 {
                    part.header = Some(header);
                }
                part.pieces.push((start, payload));
                match r {
                    Reassembly::Incomplete => {
                        assert!(!part.complete(), "complete datagram reported incomplete");
                    }
                    Reassembly::Complete(len) => {
                        assert!(part.complete(), "incomplete datagram reported complete");
                        self.completions += 1;
                        let part = self.model.remove(&key).expect("model");
                        check_datagram(&self.out[..len], &part, key);
                    }
                }
                assert_eq!(after.fragments, before.fragments + 1);
            }
            Err(e) => {
                assert_eq!(after.fragments, before.fragments, "{e:?} counted as a fragment");
                match e {
                    ReassemblyError::Duplicate => {
                        let (key, start, _, payload, _) = parsed.expect("duplicate of a non-fragment");
                        let part = self.model.get(&key).expect("duplicate of an unknown datagram");
                        assert!(
                            part.pieces.iter().any(|(s, p)| *s == start && p.len() == payload.len()),
                            "duplicate of a piece never accepted"
                        );
                    }
                    ReassemblyError::NotFragment
                    | ReassemblyError::Malformed(_)
                    | ReassemblyError::NoSlot => {
                        if e == ReassemblyError::NoSlot {
                            assert_eq!(self.model.len(), self.r.slots(), "NoSlot with a free slot");
                        }
                    }
                    _ => {
                        // The datagram is discarded whole.
                        if let Some((key, ..)) = parsed {
                            self.model.remove(&key);
                        }
                    }
                }
            }
        }
        let c = self.r.counters();
        let errors = c.malformed
            + c.duplicates
            + c.overlaps
            + c.inconsistent
            + c.too_big
            + c.too_many_fragments
            + c.no_slot
            + c.buffer_too_small;
        assert_eq!(c.fragments + errors, self.pushes, "every push counted once: {c:?}");
        assert_eq!(c.reassembled, self.completions);
        assert_eq!(self.r.in_progress(), self.model.len(), "slots in use");
        assert!(self.r.in_progress() <= self.r.slots());
    }

    fn timeout(&mut self, now: Instant) {
        self.r.handle_timeout(now);
        self.model.retain(|_, p| p.deadline > now);
        assert_eq!(self.r.in_progress(), self.model.len(), "slots after timeout");
        if let Some(t) = self.r.poll_timeout() {
            assert!(t > now, "deadline {t:?} not after handle_timeout({now:?})");
        }
        assert_eq!(
            self.r.poll_timeout(),
            self.model.values().map(|p| p.deadline).min(),
            "poll_timeout"
        );
    }
}

fn check_datagram(d: &[u8], part: &Partial, key: Key) {
    let ip = Ipv4Packet::new_checked(d).expect("reassembled datagram parses");
    assert_eq!(usize::from(ip.total_len()), d.len(), "total length");
    assert!(ip.verify_checksum().is_ok(), "header checksum");
    assert!(!ip.more_frags() && ip.frag_offset_bytes() == 0, "still a fragment");
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ident(), ip.protocol()), key);
    let header = part.header.as_ref().expect("first fragment");
    assert_eq!(ip.header_len(), header.len(), "header of the first fragment");
    let total = part.total.expect("total");
    assert_eq!(d.len(), header.len() + total);
    let payload = ip.payload();
    for (s, p) in &part.pieces {
        assert_eq!(&payload[*s..s + p.len()], &p[..], "payload at {s}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let conf = c.u8();
    let timeout = if conf & 4 != 0 { Duration::from_secs(5) } else { Duration::from_secs(30) };
    // The reassemblers are large: reuse the allocations across inputs (a fresh value is
    // written into them), which keeps the allocator out of the way.
    let (small, big, out) = POOL.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
        (
            Box::new(Reassembler::new(timeout)),
            Box::new(Reassembler::new(timeout)),
            vec![0u8; 70_000],
        )
    });
    let (mut small, mut big, mut out) = (small, big, out);
    *small = Reassembler::new(timeout);
    *big = Reassembler::new(timeout);
    out.resize(if conf & 2 != 0 { 1500 } else { 70_000 }, 0);
    let r: &mut dyn Reasm = if conf & 1 == 0 { &mut *small } else { &mut *big };
    let mut run = Run { r, model: BTreeMap::new(), timeout, out, pushes: 0, completions: 0 };
    let mut now = Instant::from_millis(1000);
    let mut ops = 0;
    let mut big_left = 4usize;
    while !c.0.is_empty() && ops < 200 {
        ops += 1;
        let op = c.u8();
        match op % 4 {
            0 => {
                let len = usize::from(c.u16());
                let mut p = c.bytes(len).to_vec();
                if op & 0x80 != 0 && p.len() >= 20 {
                    let hl = (usize::from(p[0] & 0xf) * 4).clamp(20, p.len());
                    p[10] = 0;
                    p[11] = 0;
                    let ck = checksum::checksum(&p[..hl]);
                    p[10..12].copy_from_slice(&ck.to_be_bytes());
                }
                run.push(now, &p);
            }
            1 => {
                let key = KEYS[usize::from(c.u8()) % KEYS.len()];
                let off = usize::from(c.u16()) * 8;
                let flags = c.u8();
                // Bit 3: any length up to 65535; otherwise up to 2047 (keeps runs fast).
                // At most 4 of them per input (they are slow under ASan).
                let big = flags & 8 != 0 && big_left > 0;
                big_left -= usize::from(big);
                let len = usize::from(c.u16()) % if big { 65_536 } else { 2048 };
                let fill = c.u8();
                let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let f = fragment(key, off, flags & 1 != 0, flags & 2 != 0, &payload);
                run.push(now, &f);
            }
            2 => {
                now = now + Duration::from_millis(u64::from(c.u16()) * 10);
                run.timeout(now);
            }
            _ => {
                let n = c.u8();
                let key = KEYS[usize::from(n) % KEYS.len()];
                let total = usize::from(n) * 8 + 1;
                let payload: Vec<u8> = (0..total).map(|i| (i * 7) as u8).collect();
                let mut starts: Vec<usize> = (0..total).step_by(64).collect();
                let k = starts.len();
                starts.rotate_left(usize::from(n) % k);
                for s in starts {
                    let e = (s + 64).min(total);
                    let f = fragment(key, s, e < total, false, &payload[s..e]);
                    run.push(now, &f);
                }
            }
        }
    }
    let out = run.out;
    POOL.with(|p| *p.borrow_mut() = Some((small, big, out)));
});

type Pool = (Box<Reassembler<4, 4096>>, Box<Reassembler<2, 65536>>, Vec<u8>);

thread_local! {
    static POOL: std::cell::RefCell<Option<Pool>> = const { std::cell::RefCell::new(None) };
}
