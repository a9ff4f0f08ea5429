//! NAT-T vendor IDs and the version they announce (RFC 3947 §3.1 and its drafts).
//!
//! Both peers send the vendor IDs of every NAT-T version they implement in the first
//! Main Mode (or Aggressive Mode) messages; [`choose`] picks the best version both sides
//! announced, the RFC whenever both support it. The version decides three things that
//! changed on the way to the RFC: the payload type numbers of NAT-D and NAT-OA, the
//! encapsulation mode numbers in the IPsec SA proposal, and whether IKE floats to port
//! 4500. The treatment of the drafts follows what deployed implementations do (Openswan /
//! libreswan): only the RFC uses the IANA numbers; every draft uses 130/131 and
//! 61443/61444; drafts -00 and -01 do not float and put ESP on port 500 behind an 8-byte
//! non-IKE marker.

use crate::consts::{IKE_PORT, NAT_T_PORT, numbers};

/// A NAT traversal version, as announced by a vendor ID.
///
/// The variants are declared from the oldest to the newest, so `Ord` says which is more
/// recent; [`choose`] prefers the newest common one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NatTVersion {
    /// draft-ietf-ipsec-nat-t-ike-00.
    Draft00,
    /// draft-ietf-ipsec-nat-t-ike-01.
    Draft01,
    /// draft-ietf-ipsec-nat-t-ike-02.
    Draft02,
    /// `draft-ietf-ipsec-nat-t-ike-02\n`: the MD5 of the name with a trailing newline, a
    /// widely deployed typo that became its own vendor ID.
    Draft02n,
    /// draft-ietf-ipsec-nat-t-ike-03.
    Draft03,
    /// draft-ietf-ipsec-nat-t-ike-07 (the last widely announced draft before the RFC).
    Draft07,
    /// RFC 3947.
    Rfc3947,
}

/// Every version, newest first: the order of preference of [`choose`].
pub const PREFERENCE: [NatTVersion; 7] = [
    NatTVersion::Rfc3947,
    NatTVersion::Draft07,
    NatTVersion::Draft03,
    NatTVersion::Draft02n,
    NatTVersion::Draft02,
    NatTVersion::Draft01,
    NatTVersion::Draft00,
];

/// RFC 3947 §3.1: MD5("RFC 3947").
pub const VID_RFC3947: [u8; 16] = [
    0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-00").
pub const VID_DRAFT00: [u8; 16] = [
    0x44, 0x85, 0x15, 0x2d, 0x18, 0xb6, 0xbb, 0xcd, 0x0b, 0xe8, 0xa8, 0x46, 0x95, 0x79, 0xdd, 0xcc,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-01").
pub const VID_DRAFT01: [u8; 16] = [
    0x16, 0xf6, 0xca, 0x16, 0xe4, 0xa4, 0x06, 0x6d, 0x83, 0x82, 0x1a, 0x0f, 0x0a, 0xea, 0xa8, 0x62,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-02").
pub const VID_DRAFT02: [u8; 16] = [
    0xcd, 0x60, 0x46, 0x43, 0x35, 0xdf, 0x21, 0xf8, 0x7c, 0xfd, 0xb2, 0xfc, 0x68, 0xb6, 0xa4, 0x48,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-02\n").
pub const VID_DRAFT02N: [u8; 16] = [
    0x90, 0xcb, 0x80, 0x91, 0x3e, 0xbb, 0x69, 0x6e, 0x08, 0x63, 0x81, 0xb5, 0xec, 0x42, 0x7b, 0x1f,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-03").
pub const VID_DRAFT03: [u8; 16] = [
    0x7d, 0x94, 0x19, 0xa6, 0x53, 0x10, 0xca, 0x6f, 0x2c, 0x17, 0x9d, 0x92, 0x15, 0x52, 0x9d, 0x56,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-07").
pub const VID_DRAFT07: [u8; 16] = [
    0x43, 0x9b, 0x59, 0xf8, 0xba, 0x67, 0x6c, 0x4c, 0x77, 0x37, 0xae, 0x22, 0xea, 0xb8, 0xf5, 0x82,
];

impl NatTVersion {
    /// The vendor ID announcing this version.
    #[must_use]
    pub const fn vendor_id(self) -> &'static [u8; 16] {
        match self {
            Self::Draft00 => &VID_DRAFT00,
            Self::Draft01 => &VID_DRAFT01,
            Self::Draft02 => &VID_DRAFT02,
            Self::Draft02n => &VID_DRAFT02N,
            Self::Draft03 => &VID_DRAFT03,
            Self::Draft07 => &VID_DRAFT07,
            Self::Rfc3947 => &VID_RFC3947,
        }
    }

    /// The string whose MD5 is the vendor ID (`\n` included for [`Self::Draft02n`]).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Draft00 => "draft-ietf-ipsec-nat-t-ike-00",
            Self::Draft01 => "draft-ietf-ipsec-nat-t-ike-01",
            Self::Draft02 => "draft-ietf-ipsec-nat-t-ike-02",
            Self::Draft02n => "draft-ietf-ipsec-nat-t-ike-02\n",
            Self::Draft03 => "draft-ietf-ipsec-nat-t-ike-03",
            Self::Draft07 => "draft-ietf-ipsec-nat-t-ike-07",
            Self::Rfc3947 => "RFC 3947",
        }
    }

    /// Whether this is the RFC rather than a draft.
    #[must_use]
    pub const fn is_rfc(self) -> bool {
        matches!(self, Self::Rfc3947)
    }

    /// The ISAKMP payload type of NAT-D: 20, or 130 for the drafts.
    #[must_use]
    pub const fn nat_d_payload(self) -> u8 {
        if self.is_rfc() {
            numbers::NAT_D
        } else {
            numbers::NAT_D_DRAFT
        }
    }

    /// The ISAKMP payload type of NAT-OA: 21, or 131 for the drafts.
    #[must_use]
    pub const fn nat_oa_payload(self) -> u8 {
        if self.is_rfc() {
            numbers::NAT_OA
        } else {
            numbers::NAT_OA_DRAFT
        }
    }

    /// The encapsulation mode for UDP-encapsulated tunnel mode: 3, or 61443 for the drafts.
    #[must_use]
    pub const fn encap_tunnel(self) -> u16 {
        if self.is_rfc() {
            numbers::ENCAP_UDP_TUNNEL
        } else {
            numbers::ENCAP_UDP_TUNNEL_DRAFT
        }
    }

    /// The encapsulation mode for UDP-encapsulated transport mode: 4, or 61444 for the
    /// drafts.
    #[must_use]
    pub const fn encap_transport(self) -> u16 {
        if self.is_rfc() {
            numbers::ENCAP_UDP_TRANSPORT
        } else {
            numbers::ENCAP_UDP_TRANSPORT_DRAFT
        }
    }

    /// The encapsulation mode for tunnel (`true`) or transport mode.
    #[must_use]
    pub const fn encap_mode(self, tunnel: bool) -> u16 {
        if tunnel {
            self.encap_tunnel()
        } else {
            self.encap_transport()
        }
    }

    /// Whether IKE moves from port 500 to 4500 (with the non-ESP marker) once NAT-T is
    /// agreed. Drafts -00 and -01 stay on 500.
    #[must_use]
    pub const fn floats(self) -> bool {
        !matches!(self, Self::Draft00 | Self::Draft01)
    }

    /// The UDP port that carries ESP-in-UDP (and IKE, after the float): 4500, or 500 for
    /// drafts -00 and -01.
    #[must_use]
    pub const fn encap_port(self) -> u16 {
        if self.floats() { NAT_T_PORT } else { IKE_PORT }
    }

    /// Whether a NAT keepalive (0xFF on the encapsulation port) is defined: every version
    /// that floats.
    #[must_use]
    pub const fn has_keepalive(self) -> bool {
        self.floats()
    }
}

/// The NAT-T version a vendor ID announces, or `None` for any other vendor ID (DPD,
/// XAUTH, vendor names...).
#[must_use]
pub fn recognise(vid: &[u8]) -> Option<NatTVersion> {
    PREFERENCE
        .into_iter()
        .find(|v| v.vendor_id().as_slice() == vid)
}

/// A set of NAT-T versions, built from the vendor IDs one side sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VersionSet(u8);

impl VersionSet {
    /// No version.
    pub const EMPTY: Self = Self(0);

    /// Every version this crate knows.
    #[must_use]
    pub const fn all() -> Self {
        Self(0x7f)
    }

    const fn bit(v: NatTVersion) -> u8 {
        1 << (v as u8)
    }

    /// The set with `v` added.
    #[must_use]
    pub const fn with(self, v: NatTVersion) -> Self {
        Self(self.0 | Self::bit(v))
    }

    /// Adds `v`.
    pub fn insert(&mut self, v: NatTVersion) {
        *self = self.with(v);
    }

    /// Adds the version `vid` announces, if any, and returns it.
    pub fn insert_vid(&mut self, vid: &[u8]) -> Option<NatTVersion> {
        let v = recognise(vid)?;
        self.insert(v);
        Some(v)
    }

    /// The set of versions announced by a list of vendor IDs; unknown IDs are ignored.
    #[must_use]
    pub fn from_vids<'a>(vids: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut set = Self::EMPTY;
        for vid in vids {
            let _ = set.insert_vid(vid);
        }
        set
    }

    /// Whether `v` is in the set.
    #[must_use]
    pub const fn contains(self, v: NatTVersion) -> bool {
        self.0 & Self::bit(v) != 0
    }

    /// Whether the set is empty (the peer does not do NAT-T).
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The versions in both sets.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The newest version in the set.
    #[must_use]
    pub fn best(self) -> Option<NatTVersion> {
        PREFERENCE.into_iter().find(|v| self.contains(*v))
    }

    /// The versions in the set, newest first.
    pub fn iter(self) -> impl Iterator<Item = NatTVersion> {
        PREFERENCE.into_iter().filter(move |v| self.contains(*v))
    }
}

/// The NAT-T version to use given what we support and what the peer announced: the
/// newest version in both sets, so the RFC whenever both sides support it. `None` means
/// no NAT-T (the peer sent no NAT-T vendor ID we also implement).
#[must_use]
pub fn choose(ours: VersionSet, theirs: VersionSet) -> Option<NatTVersion> {
    ours.intersection(theirs).best()
}

/// [`choose`] over the raw vendor ID lists both sides sent.
#[must_use]
pub fn choose_from_vids<'a, 'b>(
    ours: impl IntoIterator<Item = &'a [u8]>,
    theirs: impl IntoIterator<Item = &'b [u8]>,
) -> Option<NatTVersion> {
    choose(VersionSet::from_vids(ours), VersionSet::from_vids(theirs))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn reference() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/data/natt_dpd_gre_reference.json")).unwrap()
    }

    #[test]
    fn vendor_ids_match_reference_file() {
        let json = reference();
        let mut seen = 0;
        for entry in json["vendor_ids"].as_array().unwrap() {
            let name = entry["name"].as_str().unwrap().replace("\\n", "\n");
            let vid = hex::decode(entry["vendor_id"].as_str().unwrap()).unwrap();
            let expected = PREFERENCE.into_iter().find(|v| v.name() == name);
            assert_eq!(recognise(&vid), expected, "{name:?}");
            if let Some(v) = expected {
                assert_eq!(v.vendor_id().as_slice(), vid.as_slice());
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            PREFERENCE.len(),
            "every version is in the reference file"
        );
    }

    #[test]
    fn not_nat_t_ids() {
        // RFC 3706 DPD, truncated and extended RFC 3947 IDs, empty.
        let dpd = hex::decode("afcad71368a1f1c96b8696fc77570100").unwrap();
        assert_eq!(recognise(&dpd), None);
        assert_eq!(recognise(&VID_RFC3947[..15]), None);
        let mut long = VID_RFC3947.to_vec();
        long.push(0);
        assert_eq!(recognise(&long), None);
        assert_eq!(recognise(&[]), None);
    }

    #[test]
    fn numbers_per_version() {
        let v = NatTVersion::Rfc3947;
        assert_eq!((v.nat_d_payload(), v.nat_oa_payload()), (20, 21));
        assert_eq!((v.encap_tunnel(), v.encap_transport()), (3, 4));
        assert_eq!((v.encap_mode(true), v.encap_mode(false)), (3, 4));
        assert!(v.floats() && v.has_keepalive());
        assert_eq!(v.encap_port(), 4500);
        for v in [
            NatTVersion::Draft02,
            NatTVersion::Draft02n,
            NatTVersion::Draft03,
            NatTVersion::Draft07,
        ] {
            assert_eq!((v.nat_d_payload(), v.nat_oa_payload()), (130, 131), "{v:?}");
            assert_eq!((v.encap_tunnel(), v.encap_transport()), (61443, 61444));
            assert!(v.floats());
            assert_eq!(v.encap_port(), 4500);
        }
        for v in [NatTVersion::Draft00, NatTVersion::Draft01] {
            assert_eq!(v.nat_d_payload(), 130);
            assert!(!v.floats() && !v.has_keepalive());
            assert_eq!(v.encap_port(), 500);
        }
    }

    #[test]
    fn choosing() {
        let all = VersionSet::all();
        // The VIDs the main-mode capture's initiator sent: RFC 3947, -07, -03, -02\n.
        let capture: Vec<&[u8]> =
            std::vec![&VID_RFC3947, &VID_DRAFT07, &VID_DRAFT03, &VID_DRAFT02N];
        let theirs = VersionSet::from_vids(capture.iter().copied());
        assert_eq!(theirs.iter().count(), 4);
        assert_eq!(choose(all, theirs), Some(NatTVersion::Rfc3947));
        // A peer with drafts only.
        let drafts = VersionSet::EMPTY
            .with(NatTVersion::Draft02)
            .with(NatTVersion::Draft03);
        assert_eq!(choose(all, drafts), Some(NatTVersion::Draft03));
        // We do only the RFC; they do only drafts: no NAT-T.
        let rfc_only = VersionSet::EMPTY.with(NatTVersion::Rfc3947);
        assert_eq!(choose(rfc_only, drafts), None);
        assert_eq!(choose(all, VersionSet::EMPTY), None);
        assert!(VersionSet::EMPTY.is_empty());
        // Symmetric, so both sides reach the same answer.
        assert_eq!(choose(drafts, all), choose(all, drafts));
        // Unknown IDs are ignored.
        let dpd = hex::decode("afcad71368a1f1c96b8696fc77570100").unwrap();
        let ours: [&[u8]; 2] = [&VID_RFC3947, &VID_DRAFT02N];
        let theirs: [&[u8]; 3] = [&dpd, &VID_DRAFT02N, &VID_DRAFT02];
        assert_eq!(choose_from_vids(ours, theirs), Some(NatTVersion::Draft02n));
        let mut set = VersionSet::EMPTY;
        assert_eq!(set.insert_vid(&dpd), None);
        assert_eq!(set.insert_vid(&VID_DRAFT00), Some(NatTVersion::Draft00));
        assert_eq!(set.best(), Some(NatTVersion::Draft00));
    }

    #[test]
    fn preference_is_newest_first() {
        for w in PREFERENCE.windows(2) {
            assert!(w[0] > w[1]);
        }
    }
}
