//! The bindings from crypto-map entries (SPD `sa_group`s) to their current outbound SA,
//! with O(1) expected lookup by group.
//!
//! The table is an [`Sadb`] keyed by the group number in place of an SPI: the same
//! chained hash with as many buckets as slots, so a lookup walks one or two links however
//! many groups are bound. 32 bytes per slot (the 16-byte entry and the SADB's 16 bytes of
//! index), against 12 for the linear map it replaced, which was scanned on every packet.

use core::net::{IpAddr, Ipv4Addr};

use crate::sadb::{SaEntry, SaHandle, Sadb, SadbError};

/// One binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Binding {
    group: u32,
    sa: SaHandle,
}

impl SaEntry for Binding {
    fn spi(&self) -> u32 {
        self.group
    }

    fn dst(&self) -> IpAddr {
        // Groups are unique on their own: one "destination" for all.
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// At most `N` bindings, one per group.
pub(super) struct Bindings<const N: usize> {
    table: Sadb<Binding, N>,
}

impl<const N: usize> Bindings<N> {
    pub(super) const fn new() -> Self {
        Self { table: Sadb::new() }
    }

    /// The SA bound to `group`.
    pub(super) fn get(&self, group: u32) -> Option<SaHandle> {
        let b = self.table.lookup_spi(group)?;
        self.table.get(b).map(|b| b.sa)
    }

    /// Binds `group` to `sa`, replacing any previous binding of the group.
    ///
    /// # Errors
    /// [`SadbError::Full`] if `N` other groups are bound.
    pub(super) fn bind(&mut self, group: u32, sa: SaHandle) -> Result<(), SadbError> {
        if let Some(b) = self
            .table
            .lookup_spi(group)
            .and_then(|b| self.table.get_mut(b))
        {
            b.sa = sa;
            return Ok(());
        }
        self.table.insert(Binding { group, sa }).map(|_| ())
    }

    /// Removes the binding to `sa`, if there is one, and returns its group.
    ///
    /// A scan of the table: SA removal is control-plane work (a delete, an expiry, an
    /// idle timeout), not per packet.
    pub(super) fn unbind_sa(&mut self, sa: SaHandle) -> Option<u32> {
        let (b, group) = self
            .table
            .iter()
            .find(|(_, b)| b.sa == sa)
            .map(|(h, b)| (h, b.group))?;
        self.table.remove(b);
        Some(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rebind_unbind() {
        let mut t = Bindings::<3>::new();
        let (a, b, c) = (
            SaHandle::for_test(0, 1),
            SaHandle::for_test(1, 1),
            SaHandle::for_test(2, 1),
        );
        assert_eq!(t.get(10), None);
        t.bind(10, a).unwrap();
        t.bind(20, b).unwrap();
        assert_eq!((t.get(10), t.get(20)), (Some(a), Some(b)));
        // A rekey: the group moves to the new SA and keeps its slot.
        t.bind(10, c).unwrap();
        assert_eq!(t.get(10), Some(c));
        t.bind(30, a).unwrap();
        assert_eq!(t.bind(40, a), Err(SadbError::Full));
        // The old SA of group 10 is bound to nothing (only to 30 now).
        assert_eq!(t.unbind_sa(b), Some(20));
        assert_eq!(t.get(20), None);
        assert_eq!(t.unbind_sa(b), None);
        assert_eq!(t.unbind_sa(c), Some(10));
        assert_eq!((t.get(10), t.get(30)), (None, Some(a)));
        t.bind(40, b).unwrap();
        assert_eq!(t.get(40), Some(b));
    }

    #[test]
    fn many_groups() {
        let mut t = Bindings::<1000>::new();
        for g in 0..1000u32 {
            t.bind(g * 10, SaHandle::for_test(g, 0)).unwrap();
        }
        for g in 0..1000u32 {
            assert_eq!(t.get(g * 10), Some(SaHandle::for_test(g, 0)));
            assert_eq!(t.get(g * 10 + 1), None);
        }
    }
}
