//! The ESP anti-replay window (RFC 4303 §3.4.3 and Appendix A), as a ring of bitmap blocks
//! in the manner of RFC 6479, with Extended Sequence Numbers (RFC 4303 Appendix A2).
//!
//! # Two phases
//!
//! The receiver must not let an unauthenticated packet move the window (RFC 4303 §3.4.3:
//! "the receive window is updated only if the integrity verification succeeds"), so the
//! window is used in two steps around the ICV check:
//!
//! 1. [`ReplayWindow::check`] takes the 32 bits from the wire, infers the full 64-bit
//!    sequence number (needed anyway for the ESN ICV, RFC 4303 §2.2.1), and rejects a packet
//!    that is too old or already seen. It does not change the window.
//! 2. After the ICV verifies, [`ReplayWindow::update`] marks that 64-bit number and slides
//!    the window forward if it is new. It checks again, so a caller that skips step 1, or
//!    lets two packets with the same number race between the steps, cannot corrupt the
//!    window: the second `update` is refused with [`ReplayError::Replayed`].
//!
//! # Ring layout (RFC 6479)
//!
//! Sequence number `s` lives in bit `s % 64` of block `(s / 64) % WORDS`. A block stands for
//! 64 consecutive numbers, and the `WORDS` blocks form a ring whose "current" block holds
//! the top of the window `T`. When `T` moves forward, the blocks that slide in ahead of the
//! old current block are zeroed whole (at most `WORDS` of them, however far `T` jumps) and
//! nothing is ever shifted bit by bit. One block is kept spare so that the `size` numbers
//! `T - size + 1 ..= T` always lie in `WORDS` distinct blocks even when `T` is at the start
//! of its block: hence the usable window is at most `(WORDS - 1) * 64`. The window size is a
//! run-time setting from 32 to that maximum and need not be a multiple of 64; bits for
//! numbers at or below `T - size` may linger in the oldest block but are never consulted.
//!
//! # Sequence numbers
//!
//! The window keeps 64-bit numbers. Without ESN they are the 32-bit wire value; the first
//! packet an ESP sender emits is 1, so 0 is never valid. With ESN (RFC 4303 Appendix A2.2),
//! the high 32 bits are inferred from the low 32 bits on the wire and the window: see
//! [`ReplayWindow::check`].
//!
//! Outbound sequence counters are not kept here; they belong to the ESP SA.

use core::fmt;

/// Why a packet was refused by the anti-replay window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReplayError {
    /// The sequence number is inside the window and was already received.
    Replayed,
    /// The sequence number is left of (older than) the window.
    TooOld,
    /// The sequence number can never be valid: 0, or more than 32 bits on an SA without ESN.
    InvalidSequence,
    /// A window size (or a restored snapshot) is outside what the window supports.
    InvalidSize,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replayed => "replayed sequence number",
            Self::TooOld => "sequence number left of the replay window",
            Self::InvalidSequence => "invalid sequence number",
            Self::InvalidSize => "unsupported replay window size",
        })
    }
}

impl core::error::Error for ReplayError {}

/// The whole state of a [`ReplayWindow`] as plain data, for high-availability sync.
///
/// Taken with [`ReplayWindow::snapshot`] and loaded with [`ReplayWindow::restore`], which
/// validates it. A snapshot lags the live window; a standby that takes over should expect
/// the peer's numbers to have moved on (the window itself stays safe: it only ever refuses
/// too much, never too little, if `bitmap` and `top` are from the same instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaySnapshot<const WORDS: usize> {
    /// The ring of bitmap blocks, laid out as described in the [module docs](self).
    pub bitmap: [u64; WORDS],
    /// The highest sequence number accepted so far (0 if none).
    pub top: u64,
    /// The window size in packets; 0 means anti-replay is disabled.
    pub size: u32,
    /// Whether the SA uses Extended Sequence Numbers.
    pub esn: bool,
}

/// An anti-replay window of at most `(WORDS - 1) * 64` packets (see the [module docs](self)).
///
/// `ReplayWindow<2>` holds 64 packets (the usual default); `ReplayWindow<65>` holds 4096.
///
/// ```
/// use ipsec_core::replay::{ReplayError, ReplayWindow};
///
/// let mut w = ReplayWindow::<2>::new(64, false)?;
/// let seq = w.check(7)?; // before the ICV check
/// // ... verify the ICV over the packet with `seq` ...
/// w.update(seq)?; // only once it verified
/// assert_eq!(w.check(7), Err(ReplayError::Replayed));
/// # Ok::<(), ReplayError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow<const WORDS: usize> {
    /// Ring of blocks; bit `s % 64` of block `(s / 64) % WORDS` is set once `s` is accepted.
    bitmap: [u64; WORDS],
    /// Highest sequence number accepted so far, 0 if none.
    top: u64,
    /// Window size in packets, 0 when anti-replay is disabled.
    size: u32,
    esn: bool,
}

/// The notional window used for ESN inference when anti-replay is disabled: the inferred
/// number is then the one nearest the top, half a subspace either way.
const DISABLED_ESN_WINDOW: u32 = 1 << 31;

impl<const WORDS: usize> ReplayWindow<WORDS> {
    /// The smallest window size accepted by [`new`](Self::new) (RFC 4303 §3.4.3: "a minimum
    /// window size of 32 packets MUST be supported").
    pub const MIN_SIZE: u32 = 32;

    /// The largest window size this instantiation supports: `(WORDS - 1) * 64`, capped at
    /// 2^31 so that ESN inference stays unambiguous.
    pub const MAX_SIZE: u32 = {
        let bits = WORDS.saturating_sub(1).saturating_mul(64);
        if bits >= DISABLED_ESN_WINDOW as usize {
            DISABLED_ESN_WINDOW
        } else {
            // Lossless: `bits` is below 2^31 here.
            #[allow(clippy::cast_possible_truncation)]
            let bits = bits as u32;
            bits
        }
    };

    /// An empty window of `size` packets, with or without Extended Sequence Numbers.
    ///
    /// # Errors
    ///
    /// [`ReplayError::InvalidSize`] unless `MIN_SIZE <= size <= MAX_SIZE`.
    pub const fn new(size: u32, esn: bool) -> Result<Self, ReplayError> {
        if size < Self::MIN_SIZE || size > Self::MAX_SIZE {
            return Err(ReplayError::InvalidSize);
        }
        Ok(Self {
            bitmap: [0; WORDS],
            top: 0,
            size,
            esn,
        })
    }

    /// A window with anti-replay disabled: every packet is accepted, including repeats and
    /// (RFC 4303 §3.4.3 performs no check at all then) sequence number 0. The top is still
    /// tracked so that ESN high bits can be inferred, against a notional window of 2^31.
    #[must_use]
    pub const fn disabled(esn: bool) -> Self {
        Self {
            bitmap: [0; WORDS],
            top: 0,
            size: 0,
            esn,
        }
    }

    /// The highest sequence number accepted so far (through [`update`](Self::update)), 0 if
    /// none.
    #[must_use]
    pub const fn top(&self) -> u64 {
        self.top
    }

    /// The window size in packets, 0 when anti-replay is disabled.
    #[must_use]
    pub const fn size(&self) -> u32 {
        self.size
    }

    /// Whether anti-replay checking is enabled.
    #[must_use]
    pub const fn is_enabled(&self) -> bool {
        self.size != 0
    }

    /// Whether the SA uses Extended Sequence Numbers.
    #[must_use]
    pub const fn is_esn(&self) -> bool {
        self.esn
    }

    /// Checks the sequence number from an ESP header, before the ICV is verified, and
    /// returns the full 64-bit sequence number to authenticate the packet with (its high
    /// half is 0 without ESN). Does not change the window.
    ///
    /// With ESN, the high half `Seqh` is inferred as in RFC 4303 Appendix A2.2. Let `T` be
    /// the top, `Th`/`Tl` its high and low halves, `W` the window size and
    /// `Bl = Tl - W + 1 (mod 2^32)` the low half of the bottom of the window:
    ///
    /// * Case A, `Tl >= W - 1` (the window lies within one subspace): `Seqh = Th` if
    ///   `Seql >= Bl`, else `Th + 1`.
    /// * Case B, `Tl < W - 1` (the window spans two subspaces): `Seqh = Th - 1` if
    ///   `Seql >= Bl`, else `Th`.
    ///
    /// Put otherwise, the result is the only number ending in `seq_low` in
    /// `[B, B + 2^32)`, where `B = T - W + 1` is the bottom of the window (taken as 0 while
    /// `T < W - 1`: there is no subspace below the first). A wrong guess (after a loss of
    /// 2^32 packets, Appendix A3) simply fails the ICV check.
    ///
    /// # Errors
    ///
    /// * [`ReplayError::InvalidSequence`] for sequence number 0 (the 64-bit 0 with ESN).
    /// * [`ReplayError::TooOld`] if it is left of the window.
    /// * [`ReplayError::Replayed`] if it is in the window and already marked.
    ///
    /// A disabled window never fails.
    pub fn check(&self, seq_low: u32) -> Result<u64, ReplayError> {
        let seq = self.infer(seq_low);
        self.check_full(seq)?;
        Ok(seq)
    }

    /// Marks `seq` (as returned by [`check`](Self::check)) as received, once the packet's ICV
    /// has verified, sliding the window forward if `seq` is above the top. The work is
    /// bounded by `WORDS` block writes, however far the window jumps.
    ///
    /// # Errors
    ///
    /// The errors of [`check`](Self::check) for this 64-bit number, and
    /// [`ReplayError::InvalidSequence`] for a number above 32 bits without ESN. On error the
    /// window is unchanged. A disabled window only fails for the latter.
    pub fn update(&mut self, seq: u64) -> Result<(), ReplayError> {
        if !self.esn && seq > u64::from(u32::MAX) {
            return Err(ReplayError::InvalidSequence);
        }
        self.check_full(seq)?;
        if self.size == 0 {
            self.top = self.top.max(seq);
            return Ok(());
        }
        if seq > self.top {
            self.advance(seq);
        }
        if let Some(block) = self.block_mut(seq) {
            *block |= bit(seq);
        }
        Ok(())
    }

    /// The whole state of the window, for high-availability sync.
    #[must_use]
    pub const fn snapshot(&self) -> ReplaySnapshot<WORDS> {
        ReplaySnapshot {
            bitmap: self.bitmap,
            top: self.top,
            size: self.size,
            esn: self.esn,
        }
    }

    /// Replaces the state of the window with a snapshot (typically taken on the active peer
    /// of a high-availability pair). Bits above the top, which a genuine window never holds,
    /// are cleared.
    ///
    /// # Errors
    ///
    /// * [`ReplayError::InvalidSize`] if the size is neither 0 (disabled) nor within
    ///   `MIN_SIZE..=MAX_SIZE`.
    /// * [`ReplayError::InvalidSequence`] if the top is above 32 bits without ESN.
    ///
    /// On error the window is unchanged.
    pub fn restore(&mut self, snapshot: &ReplaySnapshot<WORDS>) -> Result<(), ReplayError> {
        if snapshot.size != 0 && (snapshot.size < Self::MIN_SIZE || snapshot.size > Self::MAX_SIZE)
        {
            return Err(ReplayError::InvalidSize);
        }
        if !snapshot.esn && snapshot.top > u64::from(u32::MAX) {
            return Err(ReplayError::InvalidSequence);
        }
        self.bitmap = snapshot.bitmap;
        self.top = snapshot.top;
        self.size = snapshot.size;
        self.esn = snapshot.esn;
        if self.size == 0 {
            self.bitmap = [0; WORDS];
        } else {
            // Bits above the top in its own block would wrongly flag future packets.
            let top = self.top;
            let keep = u64::MAX >> (63 - (top & 63));
            if let Some(block) = self.block_mut(top) {
                *block &= keep;
            }
        }
        Ok(())
    }

    /// The full 64-bit candidate for `seql` (RFC 4303 Appendix A2.2; see [`Self::check`]).
    fn infer(&self, seql: u32) -> u64 {
        if !self.esn {
            return u64::from(seql);
        }
        let w = if self.size == 0 {
            DISABLED_ESN_WINDOW
        } else {
            self.size
        };
        let (th, tl) = split(self.top);
        let bl = tl.wrapping_sub(w - 1);
        let seqh = if tl >= w - 1 {
            // Case A. At the very end of the 64-bit space `Th + 1` wraps to 0, which makes
            // the candidate fall far left of the window: refused as too old, as it must be.
            if seql >= bl { th } else { th.wrapping_add(1) }
        } else if seql >= bl {
            // Case B, a late packet from the previous subspace. In the first subspace there
            // is none: the number is taken as far ahead instead (and the ICV will judge).
            th.saturating_sub(1)
        } else {
            th
        };
        (u64::from(seqh) << 32) | u64::from(seql)
    }

    /// Acceptance of a full 64-bit number, without side effects.
    fn check_full(&self, seq: u64) -> Result<(), ReplayError> {
        if self.size == 0 {
            return Ok(());
        }
        if seq == 0 {
            return Err(ReplayError::InvalidSequence);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(ReplayError::TooOld);
        }
        match self.block(seq) {
            Some(block) if block & bit(seq) != 0 => Err(ReplayError::Replayed),
            _ => Ok(()),
        }
    }

    /// Moves the top to `seq > top`, zeroing the blocks that slide into the ring.
    fn advance(&mut self, seq: u64) {
        let current = self.top >> 6;
        let target = seq >> 6;
        // Past `WORDS` blocks every slot of the ring has been cleared once; stop there.
        let steps = (target - current).min(WORDS as u64);
        for i in 1..=steps {
            if let Some(block) = self.block_mut((current + i) << 6) {
                *block = 0;
            }
        }
        self.top = seq;
    }

    fn block(&self, seq: u64) -> Option<u64> {
        self.bitmap.get(slot::<WORDS>(seq)?).copied()
    }

    fn block_mut(&mut self, seq: u64) -> Option<&mut u64> {
        self.bitmap.get_mut(slot::<WORDS>(seq)?)
    }
}

/// The ring slot of the block holding `seq`; `None` only for an empty ring (`WORDS == 0`).
fn slot<const WORDS: usize>(seq: u64) -> Option<usize> {
    let slot = (seq >> 6).checked_rem(WORDS as u64)?;
    usize::try_from(slot).ok()
}

/// The bit of `seq` within its block.
const fn bit(seq: u64) -> u64 {
    1 << (seq & 63)
}

/// High and low halves of a 64-bit sequence number.
#[allow(clippy::cast_possible_truncation)] // the truncation is the point
const fn split(seq: u64) -> (u32, u32) {
    ((seq >> 32) as u32, seq as u32)
}

#[cfg(test)]
mod tests {
    // Tests take the low half of 64-bit numbers on purpose, as the wire does.
    #![allow(clippy::cast_possible_truncation)]

    extern crate std;

    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// xorshift64*: small, deterministic, good enough to shuffle packets.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// The naive model: the set of accepted numbers and the top, with the acceptance rule
    /// of RFC 4303 §3.4.3 written in signed arithmetic.
    struct Model {
        accepted: BTreeSet<u64>,
        top: u64,
        size: u64,
        esn: bool,
    }

    impl Model {
        fn new(size: u32, esn: bool) -> Self {
            Self {
                accepted: BTreeSet::new(),
                top: 0,
                size: u64::from(size),
                esn,
            }
        }
        fn check(&self, seq: u64) -> Result<(), ReplayError> {
            if seq == 0 {
                Err(ReplayError::InvalidSequence)
            } else if i128::from(seq) <= i128::from(self.top) - i128::from(self.size) {
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
            self.accepted.insert(seq);
            self.top = self.top.max(seq);
            Ok(())
        }
        /// ESN inference, the declarative way: the number ending in `seql` within
        /// `[B, B + 2^32)`, `B` the bottom of the window clamped at 0.
        fn infer(&self, seql: u32) -> u64 {
            if !self.esn {
                return u64::from(seql);
            }
            infer_model(self.top, self.size, seql)
        }
    }

    fn infer_model(top: u64, w: u64, seql: u32) -> u64 {
        let b = (i128::from(top) - i128::from(w) + 1).max(0);
        let base = b & !0xffff_ffff;
        let mut x = base | i128::from(seql);
        if x < b {
            x += 1 << 32;
        }
        // At the end of the 64-bit space the window code wraps; mirror it.
        u64::try_from(x).unwrap_or(u64::from(seql))
    }

    /// Compares `check` for every number around the window.
    fn sweep<const W: usize>(w: &ReplayWindow<W>, m: &Model) {
        let lo = m.top.saturating_sub(m.size + 3);
        for s in lo..=m.top + 3 {
            let low = s as u32;
            let expect = m.check(m.infer(low)).map(|()| m.infer(low));
            assert_eq!(w.check(low), expect, "sweep seq {s:#x} top {:#x}", m.top);
        }
    }

    /// A next packet number: in order, reordered within or beyond the window, a duplicate,
    /// a jump (small, past the window, past 2^31), zero, or the window edges.
    fn pick(rng: &mut Rng, m: &Model, recent: &[u64], esn: bool) -> u64 {
        let top = m.top;
        let size = m.size;
        let s = match rng.below(100) {
            0..=29 => top + 1 + rng.below(3),
            30..=49 => top.saturating_sub(rng.below(size)),
            50..=57 => top.saturating_sub(size + rng.below(size)),
            58..=61 => top.saturating_sub(size),
            62..=65 => top.saturating_sub(size - 1),
            66..=79 => {
                if recent.is_empty() {
                    top
                } else {
                    recent[rng.below(recent.len() as u64) as usize]
                }
            }
            80..=85 => top + size + rng.below(3 * size),
            86..=87 => top + (1 << 31) + rng.below(1 << 20),
            88..=88 => top + (1 << 20) + rng.below(1 << 30),
            89..=90 => 0,
            91..=93 => top.saturating_sub(1 << 31),
            _ => top + rng.below(2 * size),
        };
        let fits = |s: u64| esn || s <= u64::from(u32::MAX);
        if fits(s) {
            s
        } else if fits(top + 1) {
            // Without ESN the wire cannot say more: keep going in order instead.
            top + 1 + rng.below(2).min(u64::from(u32::MAX) - top - 1)
        } else {
            rng.below(1 << 16)
        }
    }

    /// Drives a window and the model with the same random packets. Each accepted packet
    /// "verifies its ICV" most of the time; sometimes `update` is also fed a refused number.
    fn run<const W: usize>(size: u32, esn: bool, seed: u64, steps: usize) {
        let mut rng = Rng::new(seed);
        let mut w = ReplayWindow::<W>::new(size, esn).unwrap();
        let mut m = Model::new(size, esn);
        let mut recent: Vec<u64> = Vec::new();
        for step in 0..steps {
            let truth = pick(&mut rng, &m, &recent, esn);
            let low = truth as u32;
            let inferred = m.infer(low);
            let expect = m.check(inferred);
            let got = w.check(low);
            assert_eq!(got, expect.map(|()| inferred), "step {step} seq {truth:#x}");
            // When the true number is inside the inference range, ESN recovers it.
            let b = m.top.saturating_sub(m.size - 1);
            if esn && truth >= b && truth - b < 1 << 32 {
                assert_eq!(inferred, truth, "step {step}");
            }
            // The ICV verifies only if the inferred number is the sender's, and then not
            // always (corruption); a wrong guess verifies only rarely (a forgery, say),
            // and `update` is sometimes handed a refused packet's true number directly.
            let feed = match got {
                Ok(seq) if seq == truth && rng.chance(85) => Some(seq),
                Ok(seq) if seq != truth && rng.chance(3) => Some(seq),
                Ok(seq) if seq != truth && rng.chance(20) => Some(truth),
                Ok(_) => None, // the ICV failed: the window must not move
                Err(_) if rng.chance(20) => Some(truth),
                Err(_) => None,
            };
            if let Some(seq) = feed {
                let before = w.clone();
                let r = w.update(seq);
                assert_eq!(r, m.update(seq), "update step {step} seq {seq:#x}");
                if r.is_err() {
                    assert_eq!(w, before);
                } else {
                    recent.push(seq);
                    if recent.len() > 64 {
                        recent.remove(0);
                    }
                }
                // A second update of the same number is always a replay.
                if r.is_ok() {
                    assert_eq!(w.update(seq), Err(ReplayError::Replayed));
                }
            }
            assert_eq!(w.top(), m.top);
            if step % 97 == 0 {
                sweep(&w, &m);
            }
        }
        sweep(&w, &m);
    }

    fn run_all<const W: usize>(size: u32) {
        for seed in 1..=6 {
            run::<W>(size, false, seed, 3000);
            run::<W>(size, true, seed + 100, 3000);
        }
    }

    #[test]
    fn replay_model_32() {
        run_all::<2>(32);
    }

    #[test]
    fn replay_model_64() {
        run_all::<2>(64);
    }

    #[test]
    fn replay_model_100() {
        run_all::<3>(100);
    }

    #[test]
    fn replay_model_128() {
        run_all::<3>(128);
    }

    #[test]
    fn replay_model_1000() {
        run_all::<17>(1000);
    }

    #[test]
    fn replay_model_4096() {
        run_all::<65>(4096);
    }

    #[test]
    fn replay_model_odd_sizes_in_roomy_rings() {
        // A ring larger than needed must behave exactly like a tight one.
        run_all::<8>(33);
        run_all::<8>(65);
        run_all::<8>(447);
        run_all::<8>(448);
    }

    #[test]
    fn replay_in_order_then_every_late_packet() {
        let mut w = ReplayWindow::<3>::new(100, false).unwrap();
        let mut m = Model::new(100, false);
        for s in (1..=500u32).step_by(2) {
            w.update(w.check(s).unwrap()).unwrap();
            m.update(u64::from(s)).unwrap();
        }
        sweep(&w, &m);
        for s in (2..=500u32).step_by(2) {
            let r = w.check(s);
            assert_eq!(r, m.check(u64::from(s)).map(|()| u64::from(s)));
            if let Ok(seq) = r {
                w.update(seq).unwrap();
                m.update(seq).unwrap();
            }
        }
        sweep(&w, &m);
    }

    #[test]
    fn replay_esn_infer_matches_rfc_model() {
        let mut rng = Rng::new(7);
        for &size in &[32u32, 64, 100, 1000, 4096] {
            for i in 0..20_000u64 {
                let top = match i % 4 {
                    0 => rng.next(),
                    1 => (rng.below(5) << 32) | (rng.below(2 * u64::from(size))),
                    2 => (rng.below(5) << 32) | (0xffff_ffff - rng.below(2 * u64::from(size))),
                    _ => rng.below(3 * u64::from(size)),
                };
                let seql = match rng.below(4) {
                    0 => rng.next() as u32,
                    1 => (top as u32)
                        .wrapping_sub(size)
                        .wrapping_add(rng.below(3) as u32),
                    2 => (top as u32).wrapping_add(rng.below(3) as u32),
                    _ => rng.below(u64::from(size)) as u32,
                };
                let snap = ReplaySnapshot::<65> {
                    bitmap: [0; 65],
                    top,
                    size,
                    esn: true,
                };
                let mut w = ReplayWindow::<65>::disabled(true);
                w.restore(&snap).unwrap();
                let want = infer_model(top, u64::from(size), seql);
                assert_eq!(
                    w.infer(seql),
                    want,
                    "top {top:#x} size {size} seql {seql:#x}"
                );
            }
        }
    }

    #[test]
    fn replay_esn_wrap() {
        let mut w = ReplayWindow::<2>::new(64, true).unwrap();
        let mut m = Model::new(64, true);
        let mut accept = |w: &mut ReplayWindow<2>, truth: u64| {
            let seq = w.check(truth as u32).unwrap();
            assert_eq!(seq, truth);
            assert_eq!(m.check(seq), Ok(()));
            w.update(seq).unwrap();
            m.update(seq).unwrap();
        };
        accept(&mut w, 0xffff_ff00);
        for s in 0xffff_ff01..=0xffff_ffe0u64 {
            accept(&mut w, s);
        }
        // Skip a few before the wrap, then cross it.
        for s in 0x1_0000_0000..=0x1_0000_0010u64 {
            accept(&mut w, s);
        }
        assert_eq!(w.top(), 0x1_0000_0010);
        // The skipped ones, from before the wrap, are late but in the window: high half 0.
        for s in 0xffff_ffe1..=0xffff_ffffu64 {
            accept(&mut w, s);
        }
        // Everything around the wrap is now a replay or too old.
        assert_eq!(w.check(0xffff_ffff), Err(ReplayError::Replayed));
        assert_eq!(w.check(0), Err(ReplayError::Replayed));
        // 0x1_0000_0010 - 64 = 0xffff_ffd0 is the first number left of the window.
        assert_eq!(w.check(0xffff_ffd1), Err(ReplayError::Replayed));
        // Low values above the top infer high half 1.
        assert_eq!(w.check(0x11), Ok(0x1_0000_0011));
        assert_eq!(w.check(0x8000_0000), Ok(0x1_8000_0000));
        // Below the window's bottom, the number is taken as the next subspace.
        assert_eq!(w.check(0xffff_ffd0), Ok(0x1_ffff_ffd0));
        sweep(&w, &m);
    }

    #[test]
    fn replay_esn_late_packets_across_wrap_in_random_order() {
        let mut rng = Rng::new(99);
        for round in 0..200u64 {
            let mut w = ReplayWindow::<17>::new(1000, true).unwrap();
            let mut m = Model::new(1000, true);
            let start = 0xffff_fc00 + rng.below(0x300) + ((round % 3) << 32);
            let mut order: Vec<u64> = (start..start + 1500).collect();
            // Reorder locally, by up to ~1200 positions.
            for i in 0..order.len() {
                let j = (i + rng.below(1200) as usize).min(order.len() - 1);
                order.swap(i, j);
            }
            w.restore(&ReplaySnapshot {
                bitmap: [0; 17],
                top: start - 1,
                size: 1000,
                esn: true,
            })
            .unwrap();
            m.top = start - 1;
            for truth in order {
                let inferred = m.infer(truth as u32);
                let got = w.check(truth as u32);
                assert_eq!(got, m.check(inferred).map(|()| inferred));
                let bottom = m.top.saturating_sub(m.size - 1);
                if truth >= bottom {
                    assert_eq!(inferred, truth);
                } else {
                    // Dropped out of the window: taken as the next subspace, where the
                    // ICV would fail. It must not be accepted as itself.
                    assert_eq!(inferred, truth + (1 << 32));
                    continue;
                }
                if let Ok(seq) = got {
                    w.update(seq).unwrap();
                    m.update(seq).unwrap();
                }
            }
            sweep(&w, &m);
        }
    }

    #[test]
    fn replay_zero_rejected() {
        let w = ReplayWindow::<2>::new(64, false).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::InvalidSequence));
        let mut w = ReplayWindow::<2>::new(64, true).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::InvalidSequence));
        assert_eq!(w.update(0), Err(ReplayError::InvalidSequence));
        assert_eq!(w.top(), 0);
    }

    #[test]
    fn replay_first_packet() {
        let mut w = ReplayWindow::<2>::new(64, false).unwrap();
        assert_eq!(w.top(), 0);
        assert_eq!(w.check(1), Ok(1));
        assert_eq!(w.check(u32::MAX), Ok(u64::from(u32::MAX)));
        w.update(40).unwrap();
        assert_eq!(w.top(), 40);
        // Numbers below the first packet are still acceptable within the window.
        for s in 1..40 {
            assert_eq!(w.check(s), Ok(u64::from(s)));
        }
        assert_eq!(w.check(40), Err(ReplayError::Replayed));
    }

    #[test]
    fn replay_window_edges() {
        for &size in &[32u32, 64, 65, 100, 127, 128] {
            let mut w = ReplayWindow::<3>::new(size, false).unwrap();
            w.update(1000).unwrap();
            let edge = 1000 - size;
            assert_eq!(w.check(edge + 1), Ok(u64::from(edge + 1)), "size {size}");
            assert_eq!(w.check(edge), Err(ReplayError::TooOld), "size {size}");
            w.update(u64::from(edge + 1)).unwrap();
            assert_eq!(w.check(edge + 1), Err(ReplayError::Replayed));
            // One more step and the oldest drops out.
            w.update(1001).unwrap();
            assert_eq!(w.check(edge + 1), Err(ReplayError::TooOld));
            assert_eq!(w.check(edge + 2), Ok(u64::from(edge + 2)));
        }
    }

    #[test]
    fn replay_huge_jumps() {
        let mut w = ReplayWindow::<65>::new(4096, true).unwrap();
        for s in 1..=5000 {
            w.update(s).unwrap();
        }
        w.update(1 << 40).unwrap();
        assert_eq!(w.top(), 1 << 40);
        let (_, tl) = split(1 << 40);
        assert_eq!(w.check(tl), Err(ReplayError::Replayed));
        // The whole window behind the jump is fresh.
        for back in 1..4096u64 {
            let s = (1u64 << 40) - back;
            assert_eq!(w.check(s as u32), Ok(s));
        }
        assert_eq!(w.update(4999), Err(ReplayError::TooOld));
        // And a jump to the very end of the space.
        w.update(u64::MAX).unwrap();
        assert_eq!(w.check(u32::MAX), Err(ReplayError::Replayed));
        assert_eq!(w.check(u32::MAX - 1), Ok(u64::MAX - 1));
        // Past the end, inference wraps to 0: far left of the window.
        w.update(u64::MAX - 4094).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::InvalidSequence));
        assert_eq!(w.check(5), Err(ReplayError::TooOld));

        let mut w = ReplayWindow::<2>::new(64, false).unwrap();
        w.update(3).unwrap();
        w.update(0x8000_0010).unwrap();
        assert_eq!(w.check(3), Err(ReplayError::TooOld));
        assert_eq!(w.check(0x8000_000f), Ok(0x8000_000f));
        w.update(u64::from(u32::MAX)).unwrap();
        assert_eq!(w.check(u32::MAX), Err(ReplayError::Replayed));
        assert_eq!(w.update(1 << 32), Err(ReplayError::InvalidSequence));
    }

    #[test]
    fn replay_disabled_accepts_everything() {
        for esn in [false, true] {
            let mut w = ReplayWindow::<2>::disabled(esn);
            assert!(!w.is_enabled());
            assert_eq!(w.size(), 0);
            assert_eq!(w.is_esn(), esn);
            for s in [0u32, 1, 1, 5, 5, 100_000, 3, 0] {
                let seq = w.check(s).unwrap();
                assert_eq!(seq, u64::from(s));
                w.update(seq).unwrap();
                w.update(seq).unwrap();
            }
            assert_eq!(w.top(), 100_000);
            assert_eq!(w.snapshot().bitmap, [0; 2]);
        }
        // With ESN the top still drives inference (nearest to the top).
        let mut w = ReplayWindow::<0>::disabled(true);
        w.update(0xffff_fff0).unwrap();
        assert_eq!(w.check(5), Ok(0x1_0000_0005));
        w.update(0x1_0000_0005).unwrap();
        assert_eq!(w.check(0xffff_fff1), Ok(0xffff_fff1));
        assert_eq!(w.check(0x7fff_0000), Ok(0x1_7fff_0000));
        assert_eq!(w.check(0x9000_0000), Ok(0x9000_0000));
    }

    #[test]
    fn replay_check_is_pure() {
        let mut w = ReplayWindow::<3>::new(100, true).unwrap();
        for s in [5u64, 9, 200, 150] {
            w.update(s).unwrap();
        }
        let before = w.clone();
        for _ in 0..3 {
            for s in 0..400u32 {
                let _ = w.check(s);
            }
        }
        assert_eq!(w, before);
        // A packet that is checked but whose ICV fails leaves no trace.
        assert_eq!(w.check(300), Ok(300));
        assert_eq!(w.check(300), Ok(300));
        assert_eq!(w.top(), 200);
        assert_eq!(w.check(160), Ok(160));
        w.update(160).unwrap();
        assert_eq!(w.check(160), Err(ReplayError::Replayed));
    }

    #[test]
    fn replay_sizes() {
        assert_eq!(ReplayWindow::<2>::MAX_SIZE, 64);
        assert_eq!(ReplayWindow::<3>::MAX_SIZE, 128);
        assert_eq!(ReplayWindow::<65>::MAX_SIZE, 4096);
        assert_eq!(ReplayWindow::<1>::MAX_SIZE, 0);
        assert_eq!(ReplayWindow::<0>::MAX_SIZE, 0);
        assert_eq!(
            ReplayWindow::<2>::new(31, false),
            Err(ReplayError::InvalidSize)
        );
        assert_eq!(
            ReplayWindow::<2>::new(65, false),
            Err(ReplayError::InvalidSize)
        );
        assert_eq!(
            ReplayWindow::<2>::new(0, false),
            Err(ReplayError::InvalidSize)
        );
        assert_eq!(
            ReplayWindow::<1>::new(32, false),
            Err(ReplayError::InvalidSize)
        );
        assert_eq!(
            ReplayWindow::<65>::new(4097, true),
            Err(ReplayError::InvalidSize)
        );
        let w = ReplayWindow::<65>::new(4096, true).unwrap();
        assert_eq!((w.size(), w.is_esn(), w.is_enabled()), (4096, true, true));
        assert!(ReplayWindow::<2>::new(32, false).is_ok());
        const W: Result<ReplayWindow<2>, ReplayError> = ReplayWindow::new(64, false);
        assert!(W.is_ok());
    }

    #[test]
    fn replay_snapshot_roundtrip() {
        let mut a = ReplayWindow::<3>::new(100, true).unwrap();
        for s in [1u64, 2, 7, 300, 250, 299] {
            a.update(s).unwrap();
        }
        let snap = a.snapshot();
        let mut b = ReplayWindow::<3>::disabled(false);
        b.restore(&snap).unwrap();
        assert_eq!(a, b);
        for s in 150..320u32 {
            assert_eq!(a.check(s), b.check(s));
        }

        let mut bad = snap;
        bad.size = 129;
        assert_eq!(b.restore(&bad), Err(ReplayError::InvalidSize));
        bad.size = 31;
        assert_eq!(b.restore(&bad), Err(ReplayError::InvalidSize));
        let mut bad = snap;
        bad.esn = false;
        bad.top = 1 << 32;
        assert_eq!(b.restore(&bad), Err(ReplayError::InvalidSequence));
        assert_eq!(a, b);

        // Bits above the top are dropped rather than blocking future packets.
        let mut dirty = ReplaySnapshot::<3> {
            bitmap: [u64::MAX; 3],
            top: 130,
            size: 64,
            esn: false,
        };
        b.restore(&dirty).unwrap();
        assert_eq!(b.check(130), Err(ReplayError::Replayed));
        assert_eq!(b.check(131), Ok(131));
        b.update(140).unwrap();
        assert_eq!(b.check(135), Ok(135));
        dirty.size = 0;
        b.restore(&dirty).unwrap();
        assert_eq!(b.check(130), Ok(130));
    }

    #[test]
    fn replay_error_display() {
        use std::string::ToString;
        for e in [
            ReplayError::Replayed,
            ReplayError::TooOld,
            ReplayError::InvalidSequence,
            ReplayError::InvalidSize,
        ] {
            assert!(!e.to_string().is_empty());
            let _: &dyn core::error::Error = &e;
        }
    }
}
