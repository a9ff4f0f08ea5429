//! The security association database: a fixed-capacity table of SAs with O(1) expected
//! lookup by SPI (RFC 4301 §4.4.2).
//!
//! # Design
//!
//! Entries live in a fixed array of `N` slots. A slot is named by an [`SaHandle`]: its
//! index plus a generation counter that is bumped each time the slot is emptied, so a
//! handle kept past the removal of its SA never reaches whatever SA reuses the slot.
//!
//! The index is a hash table with separate chaining threaded through the slots: `N`
//! bucket heads, and one "next" link per slot. With as many buckets as slots the load
//! factor never exceeds 1, so a lookup walks one or two links on average however full the
//! table is; insertion and removal touch one chain. Unlike open addressing, there are no
//! tombstones to clean up and no slowdown near capacity. Empty slots are kept on a free
//! list through the same links, so insertion never scans. The cost is 16 bytes per slot
//! beside the entry itself (bucket head, link, cached SPI, generation).
//!
//! The bucket is a keyed mix of the SPI. Inbound SPIs are ours, chosen at random, but
//! outbound SPIs are chosen by peers; a port should pass a random seed to
//! [`Sadb::with_seed`] so that a peer cannot choose SPIs that collide on purpose.
//!
//! Inbound SAs are identified by SPI and destination address (RFC 4301 §4.1), so two SAs
//! may share an SPI if their destinations differ; [`Sadb::lookup`] matches both,
//! [`Sadb::lookup_spi`] (what unicast ESP processing uses) matches the SPI alone.
//!
//! Nothing here allocates: with `Sadb::new` being `const`, a firmware can place a large
//! table in a `static`.

use core::fmt;
use core::net::IpAddr;

/// What the SADB needs to know about an SA.
///
/// `spi()` and `dst()` must not change while the entry is in the table: the index is
/// built from the SPI at insertion.
pub trait SaEntry {
    /// The Security Parameters Index.
    fn spi(&self) -> u32;
    /// The destination address the SA is bound to (for an inbound SA, ours).
    fn dst(&self) -> IpAddr;
}

/// A reference to an SADB slot that cannot outlive the SA it was issued for: once the SA
/// is removed, every operation with the handle finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaHandle {
    index: u32,
    generation: u32,
}

impl SaHandle {
    /// A handle no SADB issues (its index is above every capacity, see `CAPACITY_OK`): a
    /// placeholder for fixed tables that need a value in empty slots.
    pub(crate) const NONE: Self = Self {
        index: NIL,
        generation: 0,
    };

    /// A handle with the given fields, for tests of tables that store handles.
    #[cfg(test)]
    pub(crate) const fn for_test(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The slot index (stable for the SA's life; for tables indexed alongside the SADB).
    #[must_use]
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when the handle was issued.
    #[must_use]
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

/// Why an SA could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SadbError {
    /// All `N` slots are in use.
    Full,
    /// An SA with the same SPI and destination is already installed.
    DuplicateSpi,
}

impl fmt::Display for SadbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "security association database full",
            Self::DuplicateSpi => "duplicate SPI and destination",
        })
    }
}

impl core::error::Error for SadbError {}

/// The end of a chain or of the free list.
const NIL: u32 = u32::MAX;

/// The seed [`Sadb::new`] uses. Fine for SPIs we choose; see [`Sadb::with_seed`].
pub const DEFAULT_SEED: u64 = 0x243f_6a88_85a3_08d3;

const fn ix(i: u32) -> usize {
    // Lossless: the crate supports 32- and 64-bit targets only.
    i as usize
}

/// A fixed-capacity security association database of at most `N` SAs (`N < 2^32 - 1`).
///
/// See the [module documentation](self) for the design.
pub struct Sadb<T: SaEntry, const N: usize> {
    slots: [Option<T>; N],
    /// SPI of the entry in each occupied slot, so chain walks and unlinking never call
    /// into `T`.
    spis: [u32; N],
    generations: [u32; N],
    /// Occupied slot: next slot in its bucket's chain. Free slot: next free slot.
    next: [u32; N],
    /// Head of each bucket's chain.
    buckets: [u32; N],
    free_head: u32,
    /// Slots at or above this index have never been used (so need no free-list setup).
    high_water: u32,
    len: u32,
    seed: u64,
}

impl<T: SaEntry, const N: usize> Sadb<T, N> {
    /// Refuses at compile time a capacity whose indices would not fit the handle.
    const CAPACITY_OK: () = assert!(N < NIL as usize, "Sadb capacity must be below 2^32 - 1");

    /// An empty SADB using [`DEFAULT_SEED`].
    #[must_use]
    pub const fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// An empty SADB whose SPI hash is keyed with `seed`. Ports should pass a random
    /// value, so that peers choosing outbound SPIs cannot lengthen chains on purpose.
    #[must_use]
    pub const fn with_seed(seed: u64) -> Self {
        let () = Self::CAPACITY_OK;
        Self {
            slots: [const { None }; N],
            spis: [0; N],
            generations: [0; N],
            next: [NIL; N],
            buckets: [NIL; N],
            free_head: NIL,
            high_water: 0,
            len: 0,
            seed,
        }
    }

    /// The number of SAs stored.
    #[must_use]
    pub const fn len(&self) -> usize {
        ix(self.len)
    }

    /// Whether no SA is stored.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of SAs, `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The bucket of `spi`: a keyed 64-bit mix (the SplitMix64 finaliser), reduced to
    /// `0..N` by multiply-shift. `None` only when `N == 0`.
    fn bucket(&self, spi: u32) -> Option<usize> {
        let mut z = u64::from(spi) ^ self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let n = u64::try_from(N).ok()?;
        let b = (z >> 32).saturating_mul(n) >> 32;
        if b < n { usize::try_from(b).ok() } else { None }
    }

    fn link(&self, i: u32) -> u32 {
        self.next.get(ix(i)).copied().unwrap_or(NIL)
    }

    fn set_link(&mut self, i: u32, to: u32) {
        if let Some(l) = self.next.get_mut(ix(i)) {
            *l = to;
        }
    }

    fn handle_of(&self, i: u32) -> SaHandle {
        SaHandle {
            index: i,
            generation: self.generations.get(ix(i)).copied().unwrap_or(0),
        }
    }

    /// The slot index of a live handle.
    fn live(&self, handle: SaHandle) -> Option<usize> {
        let i = ix(handle.index);
        let generation = self.generations.get(i).copied()?;
        (generation == handle.generation && self.slots.get(i)?.is_some()).then_some(i)
    }

    /// The first slot in `spi`'s chain whose entry has that SPI and satisfies `pred`.
    fn find(&self, spi: u32, mut pred: impl FnMut(&T) -> bool) -> Option<u32> {
        let mut i = self.buckets.get(self.bucket(spi)?).copied()?;
        // A chain never holds more than N slots; the bound only guards the loop.
        for _ in 0..N {
            if i == NIL {
                return None;
            }
            if self.spis.get(ix(i)) == Some(&spi)
                && self
                    .slots
                    .get(ix(i))
                    .and_then(Option::as_ref)
                    .is_some_and(&mut pred)
            {
                return Some(i);
            }
            i = self.link(i);
        }
        None
    }

    fn alloc(&mut self) -> Option<u32> {
        if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.link(i);
            return Some(i);
        }
        let i = self.high_water;
        if ix(i) < N {
            self.high_water = i.saturating_add(1);
            Some(i)
        } else {
            None
        }
    }

    /// Stores `entry` and returns its handle.
    ///
    /// # Errors
    ///
    /// [`SadbError::DuplicateSpi`] if an SA with the same SPI and destination is stored,
    /// [`SadbError::Full`] if all `N` slots are in use. `entry` is dropped in both cases.
    pub fn insert(&mut self, entry: T) -> Result<SaHandle, SadbError> {
        let spi = entry.spi();
        let dst = entry.dst();
        if self.find(spi, |e| e.dst() == dst).is_some() {
            return Err(SadbError::DuplicateSpi);
        }
        let bucket = self.bucket(spi).ok_or(SadbError::Full)?;
        let i = self.alloc().ok_or(SadbError::Full)?;
        let head = self.buckets.get(bucket).copied().unwrap_or(NIL);
        match (
            self.slots.get_mut(ix(i)),
            self.spis.get_mut(ix(i)),
            self.buckets.get_mut(bucket),
        ) {
            (Some(slot), Some(s), Some(b)) => {
                *slot = Some(entry);
                *s = spi;
                *b = i;
            }
            _ => return Err(SadbError::Full),
        }
        self.set_link(i, head);
        self.len = self.len.saturating_add(1);
        Ok(self.handle_of(i))
    }

    /// The SA behind `handle`, if it is still stored.
    #[must_use]
    pub fn get(&self, handle: SaHandle) -> Option<&T> {
        self.slots.get(self.live(handle)?)?.as_ref()
    }

    /// The SA behind `handle`, mutably, if it is still stored. Its SPI and destination
    /// must not be changed.
    #[must_use]
    pub fn get_mut(&mut self, handle: SaHandle) -> Option<&mut T> {
        let i = self.live(handle)?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Whether `handle` still refers to a stored SA.
    #[must_use]
    pub fn contains(&self, handle: SaHandle) -> bool {
        self.live(handle).is_some()
    }

    /// The SA with this SPI and destination (RFC 4301 §4.1).
    #[must_use]
    pub fn lookup(&self, spi: u32, dst: IpAddr) -> Option<SaHandle> {
        self.find(spi, |e| e.dst() == dst)
            .map(|i| self.handle_of(i))
    }

    /// An SA with this SPI, whatever its destination (unicast inbound ESP processing).
    /// If several SAs share the SPI, the most recently inserted one.
    #[must_use]
    pub fn lookup_spi(&self, spi: u32) -> Option<SaHandle> {
        self.find(spi, |_| true).map(|i| self.handle_of(i))
    }

    /// Removes the SA behind `handle` and returns it; `None` if the handle is stale.
    pub fn remove(&mut self, handle: SaHandle) -> Option<T> {
        self.live(handle)?;
        self.remove_index(handle.index)
    }

    fn remove_index(&mut self, i: u32) -> Option<T> {
        let spi = self.spis.get(ix(i)).copied()?;
        let bucket = self.bucket(spi)?;
        let after = self.link(i);
        let mut prev = NIL;
        let mut cur = self.buckets.get(bucket).copied()?;
        for _ in 0..N {
            if cur == NIL {
                break;
            }
            if cur == i {
                if prev == NIL {
                    if let Some(b) = self.buckets.get_mut(bucket) {
                        *b = after;
                    }
                } else {
                    self.set_link(prev, after);
                }
                break;
            }
            prev = cur;
            cur = self.link(cur);
        }
        let entry = self.slots.get_mut(ix(i))?.take()?;
        if let Some(g) = self.generations.get_mut(ix(i)) {
            *g = g.wrapping_add(1);
        }
        self.set_link(i, self.free_head);
        self.free_head = i;
        self.len = self.len.saturating_sub(1);
        Some(entry)
    }

    /// Keeps only the SAs for which `keep` returns `true`; the others are removed (and
    /// dropped) after `keep` has seen them, so it can record what goes.
    pub fn retain(&mut self, mut keep: impl FnMut(SaHandle, &mut T) -> bool) {
        for i in 0..self.high_water {
            let handle = self.handle_of(i);
            let drop_it = match self.slots.get_mut(ix(i)) {
                Some(Some(entry)) => !keep(handle, entry),
                _ => false,
            };
            if drop_it {
                let _ = self.remove_index(i);
            }
        }
    }

    /// Removes every SA. Outstanding handles all become stale.
    pub fn clear(&mut self) {
        self.retain(|_, _| false);
    }

    /// Every stored SA with its handle, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (SaHandle, &T)> + '_ {
        self.slots
            .iter()
            .zip(self.generations.iter())
            .take(ix(self.high_water))
            .enumerate()
            .filter_map(|(i, (slot, &generation))| {
                let index = u32::try_from(i).ok()?;
                Some((SaHandle { index, generation }, slot.as_ref()?))
            })
    }

    /// Every stored SA, mutably, with its handle, in slot order. SPIs and destinations
    /// must not be changed.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SaHandle, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .zip(self.generations.iter())
            .take(ix(self.high_water))
            .enumerate()
            .filter_map(|(i, (slot, &generation))| {
                let index = u32::try_from(i).ok()?;
                Some((SaHandle { index, generation }, slot.as_mut()?))
            })
    }
}

impl<T: SaEntry, const N: usize> Default for Sadb<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: SaEntry, const N: usize> fmt::Debug for Sadb<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sadb")
            .field("len", &self.len)
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::net::Ipv4Addr;
    use std::boxed::Box;
    use std::collections::HashMap;
    use std::vec::Vec;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Sa {
        spi: u32,
        dst: IpAddr,
        tag: u64,
    }

    impl SaEntry for Sa {
        fn spi(&self) -> u32 {
            self.spi
        }
        fn dst(&self) -> IpAddr {
            self.dst
        }
    }

    fn dst(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    fn sa(spi: u32, d: u8, tag: u64) -> Sa {
        Sa {
            spi,
            dst: dst(d),
            tag,
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    impl<T: SaEntry, const N: usize> Sadb<T, N> {
        fn chain_len(&self, bucket: usize) -> usize {
            let mut n = 0;
            let mut i = self.buckets[bucket];
            while i != NIL {
                n += 1;
                i = self.next[ix(i)];
            }
            n
        }

        /// Every structural invariant: chains hold exactly the occupied slots, each in the
        /// bucket of its SPI; the free list plus the occupied slots are all used slots.
        fn check_invariants(&self) {
            let mut seen = std::vec![false; N];
            let mut total = 0;
            for b in 0..N {
                let mut i = self.buckets[b];
                while i != NIL {
                    let e = self.slots[ix(i)].as_ref().expect("chained slot occupied");
                    assert_eq!(e.spi(), self.spis[ix(i)]);
                    assert_eq!(self.bucket(e.spi()), Some(b));
                    assert!(!seen[ix(i)], "slot in two chains");
                    seen[ix(i)] = true;
                    total += 1;
                    i = self.next[ix(i)];
                }
            }
            assert_eq!(total, self.len());
            let mut i = self.free_head;
            let mut free = 0;
            while i != NIL {
                assert!(self.slots[ix(i)].is_none());
                assert!(!seen[ix(i)]);
                seen[ix(i)] = true;
                free += 1;
                i = self.next[ix(i)];
            }
            assert_eq!(total + free, ix(self.high_water));
        }
    }

    /// SPIs that all fall into bucket 0 of a table with this seed and capacity.
    fn colliding<const N: usize>(count: usize) -> Vec<u32> {
        let db: Sadb<Sa, N> = Sadb::new();
        (1..)
            .filter(|&s| db.bucket(s) == Some(0))
            .take(count)
            .collect()
    }

    #[test]
    fn insert_lookup_remove() {
        let mut db: Sadb<Sa, 8> = Sadb::new();
        assert!(db.is_empty());
        assert_eq!(db.capacity(), 8);
        let h1 = db.insert(sa(0x1000, 1, 1)).unwrap();
        let h2 = db.insert(sa(0x2000, 1, 2)).unwrap();
        assert_eq!(db.len(), 2);
        assert_eq!(db.lookup(0x1000, dst(1)), Some(h1));
        assert_eq!(db.lookup(0x1000, dst(2)), None);
        assert_eq!(db.lookup_spi(0x2000), Some(h2));
        assert_eq!(db.lookup_spi(0x3000), None);
        assert_eq!(db.get(h1).map(|e| e.tag), Some(1));
        db.get_mut(h2).unwrap().tag = 20;
        assert_eq!(db.get(h2).map(|e| e.tag), Some(20));
        assert_eq!(db.remove(h1), Some(sa(0x1000, 1, 1)));
        assert_eq!(db.remove(h1), None);
        assert_eq!(db.lookup_spi(0x1000), None);
        assert_eq!(db.len(), 1);
        assert!(db.contains(h2) && !db.contains(h1));
        db.check_invariants();
        assert_eq!(std::format!("{db:?}"), "Sadb { len: 1, capacity: 8, .. }");
    }

    #[test]
    fn duplicates_and_shared_spis() {
        let mut db: Sadb<Sa, 8> = Sadb::new();
        let a = db.insert(sa(7, 1, 1)).unwrap();
        assert_eq!(db.insert(sa(7, 1, 2)), Err(SadbError::DuplicateSpi));
        // Same SPI towards another destination is a different SA (RFC 4301 §4.1).
        let b = db.insert(sa(7, 2, 3)).unwrap();
        assert_eq!(db.lookup(7, dst(1)), Some(a));
        assert_eq!(db.lookup(7, dst(2)), Some(b));
        assert_eq!(db.lookup_spi(7), Some(b), "most recent first");
        db.remove(b).unwrap();
        assert_eq!(db.lookup_spi(7), Some(a));
        assert_eq!(db.len(), 1);
        db.check_invariants();
    }

    #[test]
    fn collisions_in_one_chain() {
        const N: usize = 8;
        let spis = colliding::<N>(6);
        let mut db: Sadb<Sa, N> = Sadb::new();
        let handles: Vec<_> = spis
            .iter()
            .enumerate()
            .map(|(i, &s)| db.insert(sa(s, 1, i as u64)).unwrap())
            .collect();
        assert_eq!(db.chain_len(0), 6);
        db.check_invariants();
        for (i, &s) in spis.iter().enumerate() {
            assert_eq!(db.lookup(s, dst(1)), Some(handles[i]));
        }
        // Remove from the middle, the head (last inserted) and the tail (first inserted).
        for k in [2, 5, 0] {
            assert_eq!(db.remove(handles[k]).map(|e| e.spi), Some(spis[k]));
            db.check_invariants();
            for (i, &s) in spis.iter().enumerate() {
                let removed =
                    [2, 5, 0][..=[2, 5, 0].iter().position(|&x| x == k).unwrap()].contains(&i);
                assert_eq!(db.lookup_spi(s).is_some(), !removed, "spi {s}");
            }
        }
        assert_eq!(db.chain_len(0), 3);
    }

    #[test]
    fn full_table_and_slot_reuse() {
        let mut db: Sadb<Sa, 3> = Sadb::new();
        let h: Vec<_> = (0..3)
            .map(|i| db.insert(sa(100 + i, 1, 0)).unwrap())
            .collect();
        assert_eq!(db.insert(sa(200, 1, 0)), Err(SadbError::Full));
        // A duplicate in a full table is reported as a duplicate.
        assert_eq!(db.insert(sa(100, 1, 0)), Err(SadbError::DuplicateSpi));
        let old = h[1];
        db.remove(old).unwrap();
        let new = db.insert(sa(200, 1, 9)).unwrap();
        assert_eq!(new.index(), old.index(), "the freed slot is reused");
        assert_ne!(new.generation(), old.generation());
        // The stale handle reaches nothing, even though its slot is occupied again.
        assert_eq!(db.get(old), None);
        assert!(db.get_mut(old).is_none());
        assert_eq!(db.remove(old), None);
        assert_eq!(db.get(new).map(|e| e.tag), Some(9));
        assert_eq!(db.insert(sa(300, 1, 0)), Err(SadbError::Full));
        db.check_invariants();
    }

    #[test]
    fn zero_capacity() {
        let mut db: Sadb<Sa, 0> = Sadb::new();
        assert_eq!(db.insert(sa(1, 1, 0)), Err(SadbError::Full));
        assert_eq!(db.lookup_spi(1), None);
        assert_eq!(db.iter().count(), 0);
        let bogus = SaHandle {
            index: 0,
            generation: 0,
        };
        assert_eq!(db.get(bogus), None);
        assert_eq!(db.remove(bogus), None);
    }

    #[test]
    fn forged_handles_are_harmless() {
        let mut db: Sadb<Sa, 4> = Sadb::new();
        let h = db.insert(sa(1, 1, 0)).unwrap();
        for index in [1, 3, 4, 1000, u32::MAX] {
            let f = SaHandle {
                index,
                generation: 0,
            };
            assert_eq!(db.get(f), None);
            assert_eq!(db.remove(f), None);
        }
        let f = SaHandle {
            index: h.index(),
            generation: h.generation() + 1,
        };
        assert_eq!(db.remove(f), None);
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn iter_retain_clear() {
        let mut db: Sadb<Sa, 16> = Sadb::new();
        let handles: Vec<_> = (0..10)
            .map(|i| db.insert(sa(i, 1, u64::from(i))).unwrap())
            .collect();
        db.remove(handles[3]).unwrap();
        let seen: Vec<_> = db.iter().map(|(h, e)| (h, e.spi)).collect();
        assert_eq!(seen.len(), 9);
        for (h, spi) in &seen {
            assert_eq!(db.get(*h).map(|e| e.spi), Some(*spi));
        }
        for (_, e) in db.iter_mut() {
            e.tag += 100;
        }
        assert!(db.iter().all(|(_, e)| e.tag >= 100));
        let mut gone = Vec::new();
        db.retain(|h, e| {
            let keep = e.spi % 2 == 0;
            if !keep {
                gone.push(h);
            }
            keep
        });
        assert_eq!(db.len(), 5);
        assert_eq!(gone.len(), 4);
        assert!(gone.iter().all(|h| db.get(*h).is_none()));
        db.check_invariants();
        db.clear();
        assert!(db.is_empty());
        assert!(handles.iter().all(|h| db.get(*h).is_none()));
        db.check_invariants();
        // Everything can be inserted again after a clear.
        for i in 0..16 {
            db.insert(sa(i, 1, 0)).unwrap();
        }
        db.check_invariants();
    }

    #[test]
    fn matches_hashmap_model() {
        const N: usize = 64;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut db: Sadb<Sa, N> = Sadb::with_seed(42);
        let mut model: HashMap<(u32, IpAddr), (SaHandle, u64)> = HashMap::new();
        let mut stale: Vec<SaHandle> = Vec::new();
        for step in 0..60_000u64 {
            // A small SPI space forces duplicates, shared SPIs and long chains.
            let spi = u32::try_from(rng.below(96)).unwrap();
            let d = dst(u8::try_from(rng.below(2)).unwrap());
            match rng.below(10) {
                0..=4 => {
                    let res = db.insert(Sa {
                        spi,
                        dst: d,
                        tag: step,
                    });
                    if model.contains_key(&(spi, d)) {
                        assert_eq!(res, Err(SadbError::DuplicateSpi));
                    } else if model.len() == N {
                        assert_eq!(res, Err(SadbError::Full));
                    } else {
                        model.insert((spi, d), (res.unwrap(), step));
                    }
                }
                5..=7 => {
                    if let Some((h, _)) = model.remove(&(spi, d)) {
                        let e = db.remove(h).unwrap();
                        assert_eq!((e.spi, e.dst), (spi, d));
                        stale.push(h);
                    } else {
                        assert_eq!(db.lookup(spi, d), None);
                    }
                }
                8 => {
                    if let Some(&h) = stale.get(usize::try_from(rng.below(64)).unwrap()) {
                        assert_eq!(db.get(h), None);
                        assert_eq!(db.remove(h), None);
                    }
                }
                _ => {
                    let got = db.lookup_spi(spi);
                    let any = model.keys().any(|(s, _)| *s == spi);
                    assert_eq!(got.is_some(), any);
                    if let Some(h) = got {
                        assert_eq!(db.get(h).map(|e| e.spi), Some(spi));
                    }
                }
            }
            assert_eq!(db.len(), model.len());
            if step % 1000 == 0 {
                db.check_invariants();
                for (&(s, d), &(h, tag)) in &model {
                    assert_eq!(db.lookup(s, d), Some(h));
                    assert_eq!(db.get(h).map(|e| e.tag), Some(tag));
                }
                assert_eq!(db.iter().count(), model.len());
            }
        }
        db.check_invariants();
    }

    #[test]
    fn large_table_in_a_box() {
        const N: usize = 16_384;
        // Debug builds may build the table on the stack before boxing it: give the thread
        // room. A firmware would use a `static` (`Sadb::new` is `const`).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                let mut db: Box<Sadb<Sa, N>> = Box::new(Sadb::with_seed(7));
                let mut rng = Rng(99);
                let mut spis = Vec::with_capacity(N);
                while spis.len() < N {
                    let spi = u32::try_from(rng.next() >> 32).unwrap();
                    if db.insert(sa(spi, 1, 0)).is_ok() {
                        spis.push(spi);
                    }
                }
                assert_eq!(db.insert(sa(0, 2, 0)), Err(SadbError::Full));
                // Chains stay short at load factor 1 (balls into bins: ~ln N / ln ln N).
                let longest = (0..N).map(|b| db.chain_len(b)).max().unwrap();
                assert!(longest <= 12, "longest chain {longest}");
                for &s in &spis {
                    let h = db.lookup(s, dst(1)).unwrap();
                    assert_eq!(db.get(h).map(|e| e.spi), Some(s));
                }
                for &s in spis.iter().step_by(2) {
                    let h = db.lookup_spi(s).unwrap();
                    db.remove(h).unwrap();
                }
                assert_eq!(db.len(), N / 2);
                db.check_invariants();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn sequential_spis_spread_evenly() {
        const N: usize = 1024;
        let mut db: Sadb<Sa, N> = Sadb::new();
        for spi in 0x100..0x100 + u32::try_from(N).unwrap() {
            db.insert(sa(spi, 1, 0)).unwrap();
        }
        let longest = (0..N).map(|b| db.chain_len(b)).max().unwrap();
        assert!(longest <= 10, "longest chain {longest}");
    }

    #[test]
    fn error_display() {
        use std::string::ToString;
        assert_eq!(
            SadbError::Full.to_string(),
            "security association database full"
        );
        assert_eq!(
            SadbError::DuplicateSpi.to_string(),
            "duplicate SPI and destination"
        );
    }
}
