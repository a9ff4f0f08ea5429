//! `replay_window`: `ReplayWindow<2>` and `ReplayWindow<65>` against a set-based model.
//!
//! Byte 0 configures the window: bit 0 ESN, bit 1 the 65-word bitmap (else 2 words), bits
//! 2-7 the size (0: anti-replay disabled, else a size from 32 to the maximum). Then
//! operations, each a tag byte and its operands (big endian):
//!
//! | tag & 7 | operation |
//! |---|---|
//! | 0, 1, 2 | `check(u32)` |
//! | 3 | `check` of the top plus an `i16` (to hit the window edges) |
//! | 4 | restore a snapshot with top `u64` and an empty bitmap (a jump) |
//! | 5 | snapshot / restore round trip into a new window: equal |
//! | 6 | restore top `u64` with a bitmap expanded from a `u64` seed |
//! | 7 | sweep: `check` the numbers at both edges of the window and 64 inside it |
//!
//! For the `check` operations, tag bit 3 says the ICV verified (then, and only after a
//! `check` that returned `Ok`, `update` is called) and bit 4 calls `update` a second time.
//! `check` (full 64-bit inference with ESN) and `update` must agree with the model, and a
//! refused `restore` must leave the window as it was.
#![no_main]

use std::collections::BTreeSet;

use ipsec_core::replay::{ReplayError, ReplaySnapshot, ReplayWindow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, ops)) = data.split_first() else {
        return;
    };
    let esn = cfg & 1 != 0;
    let size_sel = u32::from(cfg >> 2);
    if cfg & 2 != 0 {
        run::<65>(esn, size_sel, ops);
    } else {
        run::<2>(esn, size_sel, ops);
    }
});

/// The set of accepted numbers and the top, with RFC 4303 §3.4.3's rule written plainly.
struct Model {
    accepted: BTreeSet<u64>,
    top: u64,
    /// 0: disabled.
    size: u64,
    esn: bool,
}

impl Model {
    /// The number ending in `seql` in `[B, B + 2^32)`, `B` the window's bottom clamped at
    /// 0 (a notional window of 2^31 when disabled); past 2^64 it wraps, as on the wire.
    fn infer(&self, seql: u32) -> u64 {
        if !self.esn {
            return u64::from(seql);
        }
        let w = if self.size == 0 { 1 << 31 } else { self.size };
        let b = (i128::from(self.top) - i128::from(w) + 1).max(0);
        let mut x = (b & !0xffff_ffff) | i128::from(seql);
        if x < b {
            x += 1 << 32;
        }
        u64::try_from(x).unwrap_or(u64::from(seql))
    }

    fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if self.size == 0 {
            Ok(())
        } else if seq == 0 {
            Err(ReplayError::InvalidSequence)
        } else if seq > self.top {
            Ok(())
        } else if self.top - seq >= self.size {
            Err(ReplayError::TooOld)
        } else if self.accepted.contains(&seq) {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    fn update(&mut self, seq: u64) -> Result<(), ReplayError> {
        if !self.esn && seq > u64::from(u32::MAX) {
            return Err(ReplayError::InvalidSequence);
        }
        self.check(seq)?;
        self.top = self.top.max(seq);
        if self.size > 0 {
            self.accepted.insert(seq);
            if self.top >= self.size {
                // Forget what fell out of the window.
                self.accepted = self.accepted.split_off(&(self.top - self.size + 1));
            }
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

fn run<const W: usize>(esn: bool, size_sel: u32, ops: &[u8]) {
    let max = ReplayWindow::<W>::MAX_SIZE;
    assert!(ReplayWindow::<W>::new(ReplayWindow::<W>::MIN_SIZE - 1, esn).is_err());
    assert!(ReplayWindow::<W>::new(max + 1, esn).is_err());
    let size = if size_sel == 0 {
        0
    } else {
        32 + ((size_sel - 1) * 67) % (max - 32 + 1)
    };
    let mut w = if size == 0 {
        ReplayWindow::<W>::disabled(esn)
    } else {
        ReplayWindow::<W>::new(size, esn).expect("size in range")
    };
    let mut m = Model {
        accepted: BTreeSet::new(),
        top: 0,
        size: u64::from(size),
        esn,
    };
    let mut r = Reader(ops);
    while let Some([tag]) = r.take::<1>() {
        match tag & 7 {
            0..=2 => {
                let Some(b) = r.take::<4>() else { return };
                check_and_update(&mut w, &mut m, u32::from_be_bytes(b), tag);
            }
            3 => {
                let Some(b) = r.take::<2>() else { return };
                let near = m.top.wrapping_add_signed(i64::from(i16::from_be_bytes(b)));
                #[allow(clippy::cast_possible_truncation)] // the wire carries the low half
                check_and_update(&mut w, &mut m, near as u32, tag);
            }
            4 | 6 => {
                let Some(top) = r.take::<8>().map(u64::from_be_bytes) else {
                    return;
                };
                let mut bitmap = [0u64; W];
                if tag & 7 == 6 {
                    let Some(seed) = r.take::<8>().map(u64::from_be_bytes) else {
                        return;
                    };
                    let mut x = seed;
                    for b in &mut bitmap {
                        x = splitmix(x);
                        *b = x;
                    }
                }
                restore(&mut w, &mut m, top, bitmap);
            }
            5 => {
                let snap = w.snapshot();
                let mut w2 = ReplayWindow::<W>::disabled(!esn);
                w2.restore(&snap).expect("restore of a live snapshot");
                assert_eq!(w2, w, "snapshot round trip");
            }
            _ => {
                // The edges of the window exactly, 64 numbers spread over it: cheap enough
                // for a 4096-packet window.
                let bottom = m.top.saturating_sub(m.size);
                let step = (m.size / 64).max(1);
                let edges = (bottom.saturating_sub(3)..=bottom.saturating_add(3))
                    .chain(m.top.saturating_sub(3)..=m.top.saturating_add(3))
                    .chain((0..64).map(|i| bottom.saturating_add(i * step)));
                for s in edges {
                    #[allow(clippy::cast_possible_truncation)]
                    let low = s as u32;
                    let seq = m.infer(low);
                    assert_eq!(w.check(low), m.check(seq).map(|()| seq), "sweep {s:#x}");
                }
            }
        }
        assert_eq!(w.top(), m.top, "top");
        assert_eq!(u64::from(w.size()), m.size);
        assert_eq!(w.is_esn(), esn);
        assert_eq!(w.is_enabled(), m.size > 0);
    }
}

fn check_and_update<const W: usize>(w: &mut ReplayWindow<W>, m: &mut Model, low: u32, tag: u8) {
    let seq = m.infer(low);
    let got = w.check(low);
    assert_eq!(
        got,
        m.check(seq).map(|()| seq),
        "check({low:#x}) with top {:#x}",
        m.top
    );
    let Ok(seq) = got else { return };
    #[allow(clippy::cast_possible_truncation)]
    let kept = seq as u32;
    assert_eq!(
        kept, low,
        "the inferred number must end in the wire's 32 bits"
    );
    if tag & 8 == 0 {
        return; // the ICV failed: the window must not move
    }
    let r = w.update(seq);
    assert_eq!(r, m.update(seq), "update({seq:#x})");
    assert!(r.is_ok(), "update after a successful check failed: {r:?}");
    if tag & 16 != 0 {
        let before2 = w.clone();
        let r2 = w.update(seq);
        assert_eq!(r2, m.update(seq), "second update({seq:#x})");
        if m.size > 0 {
            assert_eq!(r2, Err(ReplayError::Replayed));
            assert_eq!(*w, before2, "a refused update changed the window");
        }
    }
}

fn restore<const W: usize>(w: &mut ReplayWindow<W>, m: &mut Model, top: u64, bitmap: [u64; W]) {
    #[allow(clippy::cast_possible_truncation)]
    let snap = ReplaySnapshot::<W> {
        bitmap,
        top,
        size: m.size as u32,
        esn: m.esn,
    };
    let before = w.clone();
    let r = w.restore(&snap);
    if !m.esn && top > u64::from(u32::MAX) {
        assert_eq!(r, Err(ReplayError::InvalidSequence));
        assert_eq!(*w, before, "a refused restore changed the window");
        return;
    }
    assert_eq!(r, Ok(()), "restore");
    m.top = top;
    m.accepted.clear();
    if m.size > 0 {
        // The numbers of the window whose bit is set; bits above the top are dropped.
        let lo = top.saturating_sub(m.size - 1).max(1);
        for s in lo..=top {
            let block = bitmap[usize::try_from((s >> 6) % W as u64).expect("slot")];
            if block >> (s & 63) & 1 != 0 {
                m.accepted.insert(s);
            }
        }
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
