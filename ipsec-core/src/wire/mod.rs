//! Wire formats, one file per protocol, in the smoltcp style: a zero-copy `Packet<T>` view
//! whose `new_checked` validates every length once, after which no accessor can panic, and
//! a `Repr` with `parse` / `buffer_len` / `emit` for building.
//!
//! Wire modules never decide anything; they only read and write fields.
#![allow(clippy::indexing_slicing)] // every index below is guarded by a `check_len`

use core::fmt;

pub mod checksum;
pub mod esp;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

/// IP protocol numbers this library cares about (IANA "Assigned Internet Protocol Numbers").
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IP in IP (tunnel-mode ESP next header for an IPv4 inner packet).
    pub const IPV4: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 in IP (tunnel-mode ESP next header for an IPv6 inner packet).
    pub const IPV6: u8 = 41;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// AH.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// "No next header": an ESP dummy packet (RFC 4303 §2.6).
    pub const NO_NEXT_HEADER: u8 = 59;
}

/// A malformed packet. Wire errors say what is wrong in general terms only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the header or than a length field says.
    Truncated,
    /// A length field is inconsistent (smaller than the header, say).
    BadLength,
    /// A version field is not the expected one.
    BadVersion,
    /// A header checksum does not verify.
    BadChecksum,
    /// A field holds a value the protocol forbids.
    Malformed,
    /// The output buffer is too small for what is to be emitted.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "packet truncated",
            Self::BadLength => "inconsistent length field",
            Self::BadVersion => "wrong IP version",
            Self::BadChecksum => "bad header checksum",
            Self::Malformed => "malformed field",
            Self::BufferTooSmall => "output buffer too small",
        })
    }
}

impl core::error::Error for WireError {}
