//! The transport-mode checksum fix-up after decapsulation (RFC 3948 §3.1.2).
//!
//! In transport mode the sender computed its TCP or UDP checksum over a pseudo-header with
//! the addresses *it* knew: its own real address and the address it sent to. A NAT on the
//! way rewrote the outer IP header, which in transport mode is the only IP header, but could
//! not fix a checksum hidden inside ESP. After decryption the checksum therefore no longer
//! matches the header the packet carries. RFC 3948 offers three cures, in order:
//!
//! 1. with the original addresses learnt from NAT-OA in IKE (RFC 3947 §5), update the
//!    checksum incrementally: take out the original addresses, put in the ones in the
//!    header (RFC 1624 eqn. 3, [`ipsec_core::wire::checksum::update`]);
//! 2. recompute the checksum from scratch (not possible for a fragment);
//! 3. for UDP over IPv4, set the checksum to zero ("no checksum").
//!
//! [`fix_transport_checksum`] implements all three; [`FixupMethod::Incremental`] is the
//! first choice whenever NAT-OA is known, [`FixupMethod::Recompute`] the fallback. ESP's
//! integrity check already protected the segment, so nothing is lost by any of them.
//!
//! Which NAT-OA is which: NAT-OAi is the initiator's address as the initiator knew it,
//! NAT-OAr the responder's address as the initiator knew it (RFC 3947 §5.1). For a packet
//! from the initiator, [`OriginalAddrs`] is `{ src: NAT-OAi, dst: NAT-OAr }`. For a packet
//! from the responder, the source is the responder's own address (NAT-OAr if the responder
//! is not behind a NAT) and the destination the initiator's public address, the one the
//! responder sent to.

use core::net::IpAddr;

use ipsec_core::wire::checksum;
use ipsec_core::wire::ipv4::Ipv4Packet;
use ipsec_core::wire::ipv6::Ipv6Packet;
use ipsec_core::wire::{WireError, proto};

use crate::NatTError;

/// The addresses the sender used in its pseudo-header, known from NAT-OA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// No `defmt::Format`: defmt has no impl for `core::net` addresses.
pub struct OriginalAddrs {
    /// The sender's real source address.
    pub src: IpAddr,
    /// The destination address the sender used.
    pub dst: IpAddr,
}

/// How to fix the checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// No `defmt::Format`: defmt has no impl for `core::net` addresses.
pub enum FixupMethod {
    /// RFC 3948 §3.1.2 option 1: the incremental update with NAT-OA.
    Incremental(OriginalAddrs),
    /// Option 2: recompute the checksum over the whole segment.
    Recompute,
    /// Option 3: zero the UDP checksum over IPv4. TCP (and UDP over IPv6, where zero is
    /// not allowed) falls back to [`Recompute`](Self::Recompute).
    ZeroUdp,
}

impl FixupMethod {
    /// Incremental when NAT-OA is known, else recompute: the RFC's order of preference.
    #[must_use]
    pub const fn preferred(original: Option<OriginalAddrs>) -> Self {
        match original {
            Some(o) => Self::Incremental(o),
            None => Self::Recompute,
        }
    }
}

/// What [`fix_transport_checksum`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fixup {
    /// The checksum field changed from `old` to `new` (the same value when the addresses
    /// did not change).
    Updated {
        /// The checksum before.
        old: u16,
        /// The checksum now.
        new: u16,
    },
    /// The UDP checksum was set to zero.
    Zeroed,
    /// Nothing to do: a UDP-over-IPv4 datagram without checksum, or a fragment other than
    /// the first (the checksum is in the first).
    Untouched,
}

/// Where a packet's transport header is.
struct L4 {
    protocol: u8,
    start: usize,
    end: usize,
    is_fragment: bool,
    first_fragment: bool,
    src: IpAddr,
    dst: IpAddr,
}

fn locate(packet: &[u8]) -> Result<L4, NatTError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet)?;
            Ok(L4 {
                protocol: ip.protocol(),
                start: ip.header_len(),
                end: usize::from(ip.total_len()),
                is_fragment: ip.is_fragment(),
                first_fragment: ip.frag_offset_units() == 0,
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
            })
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet)?;
            // `upper_layer` walks extension headers; a fragment header ends the walk.
            let (protocol, start) = ip.upper_layer()?;
            Ok(L4 {
                protocol,
                start,
                end: ip.total_len(),
                is_fragment: protocol == proto::IPV6_FRAG,
                first_fragment: false,
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
            })
        }
        Some(_) => Err(WireError::BadVersion.into()),
        None => Err(WireError::Truncated.into()),
    }
}

fn read_u16(b: &[u8], at: usize) -> Result<u16, NatTError> {
    let w = b.get(at..at + 2).ok_or(WireError::Truncated)?;
    Ok(u16::from_be_bytes([
        w.first().copied().unwrap_or(0),
        w.get(1).copied().unwrap_or(0),
    ]))
}

fn write_u16(b: &mut [u8], at: usize, v: u16) -> Result<(), NatTError> {
    b.get_mut(at..at + 2)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// The 16-bit words of an address, for the incremental update.
fn words(a: IpAddr) -> ([u16; 8], usize) {
    let mut w = [0u16; 8];
    let (bytes, n): ([u8; 16], usize) = match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            if let Some(head) = b.get_mut(..4) {
                head.copy_from_slice(&a.octets());
            }
            (b, 2)
        }
        IpAddr::V6(a) => (a.octets(), 8),
    };
    for (w, c) in w.iter_mut().zip(bytes.chunks_exact(2)) {
        if let [hi, lo] = c {
            *w = u16::from_be_bytes([*hi, *lo]);
        }
    }
    (w, n)
}

/// Incrementally moves `ck` from a pseudo-header with address `from` to one with `to`.
fn swap_addr(ck: u16, from: IpAddr, to: IpAddr) -> u16 {
    let (f, n) = words(from);
    let (t, _) = words(to);
    f.iter()
        .zip(t.iter())
        .take(n)
        .fold(ck, |ck, (o, n)| checksum::update(ck, *o, *n))
}

/// Fixes the TCP or UDP checksum of a decapsulated transport-mode packet (`packet` is the
/// whole IPv4 or IPv6 packet, header as received, payload as decrypted) in place.
///
/// # Errors
///
/// [`NatTError::Wire`] if the packet is malformed or its transport header truncated;
/// [`NatTError::NotTcpOrUdp`] if it carries neither; [`NatTError::AddressFamily`] if the
/// original addresses are not of the packet's family; [`NatTError::Fragmented`] if a
/// recomputation is asked for a fragment.
pub fn fix_transport_checksum(packet: &mut [u8], method: FixupMethod) -> Result<Fixup, NatTError> {
    let l4 = locate(packet)?;
    let ck_off = match l4.protocol {
        proto::UDP => 6,
        proto::TCP => 16,
        proto::IPV6_FRAG => return Ok(Fixup::Untouched),
        _ => return Err(NatTError::NotTcpOrUdp),
    };
    if l4.is_fragment && !l4.first_fragment {
        return Ok(Fixup::Untouched);
    }
    let segment = packet
        .get_mut(l4.start..l4.end)
        .ok_or(WireError::Truncated)?;
    let is_udp = l4.protocol == proto::UDP;
    let v4 = matches!(l4.src, IpAddr::V4(_));
    let old = read_u16(segment, ck_off)?;
    if is_udp && v4 && old == 0 {
        // The sender did not checksum; there is nothing to make consistent.
        return Ok(Fixup::Untouched);
    }
    let udp_zero_ok = is_udp && v4;
    let method = match method {
        FixupMethod::ZeroUdp if !udp_zero_ok => FixupMethod::Recompute,
        m => m,
    };
    let new = match method {
        FixupMethod::ZeroUdp => {
            write_u16(segment, ck_off, 0)?;
            return Ok(Fixup::Zeroed);
        }
        FixupMethod::Incremental(orig) => {
            if orig.src.is_ipv4() != v4 || orig.dst.is_ipv4() != v4 {
                return Err(NatTError::AddressFamily);
            }
            let ck = swap_addr(old, orig.src, l4.src);
            swap_addr(ck, orig.dst, l4.dst)
        }
        FixupMethod::Recompute => {
            if l4.is_fragment {
                return Err(NatTError::Fragmented);
            }
            recompute(segment, ck_off, l4.protocol, l4.src, l4.dst)?
        }
    };
    // RFC 768: a computed zero is sent as all ones, zero meaning "no checksum".
    let new = if is_udp && new == 0 { 0xffff } else { new };
    write_u16(segment, ck_off, new)?;
    Ok(Fixup::Updated { old, new })
}

fn recompute(
    segment: &mut [u8],
    ck_off: usize,
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
) -> Result<u16, NatTError> {
    // UDP covers its own length field's bytes; TCP the IP payload length.
    let len = if protocol == proto::UDP {
        let l = usize::from(read_u16(segment, 4)?);
        if l < 8 || l > segment.len() {
            return Err(WireError::BadLength.into());
        }
        l
    } else {
        if segment.len() < 20 {
            return Err(WireError::Truncated.into());
        }
        segment.len()
    };
    write_u16(segment, ck_off, 0)?;
    let body = segment.get(..len).ok_or(WireError::Truncated)?;
    let ph = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let l = u16::try_from(len).map_err(|_| WireError::BadLength)?;
            checksum::pseudo_header_v4(s, d, protocol, l)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let l = u32::try_from(len).map_err(|_| WireError::BadLength)?;
            checksum::pseudo_header_v6(s, d, protocol, l)
        }
        _ => return Err(NatTError::AddressFamily),
    };
    Ok(checksum::finish(checksum::combine(ph, checksum::sum(body))))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use std::vec::Vec;

    /// The independent reference: RFC 1071 over an explicit pseudo-header, byte by byte.
    fn reference(src: IpAddr, dst: IpAddr, protocol: u8, seg: &[u8], ck_off: usize) -> u16 {
        let mut all = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                all.extend_from_slice(&s.octets());
                all.extend_from_slice(&d.octets());
                all.extend_from_slice(&[0, protocol]);
                all.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                all.extend_from_slice(&s.octets());
                all.extend_from_slice(&d.octets());
                all.extend_from_slice(&(seg.len() as u32).to_be_bytes());
                all.extend_from_slice(&[0, 0, 0, protocol]);
            }
            _ => unreachable!(),
        }
        let mut seg = seg.to_vec();
        seg[ck_off] = 0;
        seg[ck_off + 1] = 0;
        all.extend_from_slice(&seg);
        let mut s: u64 = 0;
        for (i, b) in all.iter().enumerate() {
            s += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let ck = !(s as u16);
        if protocol == 17 && ck == 0 {
            0xffff
        } else {
            ck
        }
    }

    /// A pseudo-random transport segment of `len` bytes with a valid-looking header.
    fn segment(protocol: u8, len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        let mut seg: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        if protocol == 17 {
            seg[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        } else {
            seg[12] = 0x50; // data offset 5
        }
        seg
    }

    /// An IPv4 packet carrying `seg`, checksummed for `orig`, then translated to
    /// `src`/`dst` (as the NAT did to the outer header).
    fn v4_packet(
        protocol: u8,
        seg: &[u8],
        orig: OriginalAddrs,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Vec<u8> {
        let ck_off = if protocol == 17 { 6 } else { 16 };
        let mut seg = seg.to_vec();
        let ck = reference(orig.src, orig.dst, protocol, &seg, ck_off);
        seg[ck_off..ck_off + 2].copy_from_slice(&ck.to_be_bytes());
        let mut p = std::vec![0u8; 20];
        p.extend_from_slice(&seg);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + seg.len()) as u16);
        ip.set_ttl(64);
        ip.set_protocol(protocol);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        p
    }

    const PRIV: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const PUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    const RESP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn orig_v4() -> OriginalAddrs {
        // The initiator 10.0.0.5 behind a NAT sent to the responder 192.0.2.1.
        OriginalAddrs {
            src: PRIV.into(),
            dst: RESP.into(),
        }
    }

    #[test]
    fn incremental_and_recompute_match_reference_v4() {
        for protocol in [6u8, 17] {
            for (len, seed) in [(20usize, 1u32), (33, 2), (100, 3), (1001, 4), (8, 5)] {
                if protocol == 6 && len < 20 {
                    continue;
                }
                let ck_off = if protocol == 17 { 6 } else { 16 };
                let seg = segment(protocol, len, seed);
                let p0 = v4_packet(protocol, &seg, orig_v4(), PUB, RESP);
                let expected = reference(PUB.into(), RESP.into(), protocol, &p0[20..], ck_off);
                for method in [FixupMethod::Incremental(orig_v4()), FixupMethod::Recompute] {
                    let mut p = p0.clone();
                    let old = u16::from_be_bytes([p0[20 + ck_off], p0[21 + ck_off]]);
                    assert_eq!(
                        fix_transport_checksum(&mut p, method),
                        Ok(Fixup::Updated { old, new: expected }),
                        "proto {protocol} len {len} {method:?}"
                    );
                    assert_eq!(
                        &p[..20 + ck_off],
                        &p0[..20 + ck_off],
                        "only the checksum changes"
                    );
                    assert_eq!(&p[22 + ck_off..], &p0[22 + ck_off..]);
                }
                if protocol == 17 {
                    let mut p = p0.clone();
                    assert_eq!(
                        fix_transport_checksum(&mut p, FixupMethod::ZeroUdp),
                        Ok(Fixup::Zeroed)
                    );
                    assert_eq!(&p[26..28], &[0, 0]);
                } else {
                    let mut p = p0.clone();
                    assert!(matches!(
                        fix_transport_checksum(&mut p, FixupMethod::ZeroUdp),
                        Ok(Fixup::Updated { new, .. }) if new == expected
                    ));
                }
            }
        }
    }

    #[test]
    fn both_addresses_translated_and_unchanged() {
        let seg = segment(6, 60, 9);
        // The responder side: the initiator's packet arrives with src = PUB and, since the
        // responder is also behind a static NAT, dst = its private 172.16.0.2.
        let me = Ipv4Addr::new(172, 16, 0, 2);
        let p0 = v4_packet(6, &seg, orig_v4(), PUB, me);
        let mut p = p0.clone();
        let Ok(Fixup::Updated { new, .. }) =
            fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4()))
        else {
            panic!()
        };
        assert_eq!(new, reference(PUB.into(), me.into(), 6, &p0[20..], 16));
        // No translation at all: the checksum stays.
        let p0 = v4_packet(6, &seg, orig_v4(), PRIV, RESP);
        let mut p = p0.clone();
        let old = u16::from_be_bytes([p0[36], p0[37]]);
        assert_eq!(
            fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4())),
            Ok(Fixup::Updated { old, new: old })
        );
        assert_eq!(p, p0);
    }

    #[test]
    fn udp_special_values() {
        // A sender that did not checksum (zero over IPv4): untouched by every method.
        let seg = segment(17, 40, 11);
        let mut p = v4_packet(17, &seg, orig_v4(), PUB, RESP);
        p[26..28].fill(0);
        let p0 = p.clone();
        for m in [
            FixupMethod::Incremental(orig_v4()),
            FixupMethod::Recompute,
            FixupMethod::ZeroUdp,
        ] {
            assert_eq!(fix_transport_checksum(&mut p, m), Ok(Fixup::Untouched));
            assert_eq!(p, p0);
        }
        // Find a segment whose translated checksum is zero: it must go out as 0xffff.
        let mut found = false;
        for v in 0..=0xffffu16 {
            let mut seg = segment(17, 12, 12);
            seg[8..10].copy_from_slice(&v.to_be_bytes());
            if reference(PUB.into(), RESP.into(), 17, &seg, 6) != 0xffff {
                continue;
            }
            let p0 = v4_packet(17, &seg, orig_v4(), PUB, RESP);
            for m in [FixupMethod::Incremental(orig_v4()), FixupMethod::Recompute] {
                let mut p = p0.clone();
                assert!(matches!(
                    fix_transport_checksum(&mut p, m),
                    Ok(Fixup::Updated { new: 0xffff, .. })
                ));
            }
            found = true;
            break;
        }
        assert!(found);
    }

    fn v6_packet(
        protocol: u8,
        seg: &[u8],
        orig: OriginalAddrs,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Vec<u8> {
        let ck_off = if protocol == 17 { 6 } else { 16 };
        let mut seg = seg.to_vec();
        let ck = reference(orig.src, orig.dst, protocol, &seg, ck_off);
        seg[ck_off..ck_off + 2].copy_from_slice(&ck.to_be_bytes());
        let mut p = std::vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(seg.len() as u16).to_be_bytes());
        p[6] = protocol;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(&seg);
        p
    }

    #[test]
    fn ipv6() {
        let o_src: Ipv6Addr = "fd00::5".parse().unwrap();
        let o_dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let pub_src: Ipv6Addr = "2001:db8:ffff::9".parse().unwrap();
        let orig = OriginalAddrs {
            src: o_src.into(),
            dst: o_dst.into(),
        };
        for protocol in [6u8, 17] {
            let ck_off = if protocol == 17 { 6 } else { 16 };
            let seg = segment(protocol, 77, 21);
            let p0 = v6_packet(protocol, &seg, orig, pub_src, o_dst);
            let expected = reference(pub_src.into(), o_dst.into(), protocol, &p0[40..], ck_off);
            for m in [
                FixupMethod::Incremental(orig),
                FixupMethod::Recompute,
                FixupMethod::ZeroUdp,
            ] {
                let mut p = p0.clone();
                assert!(
                    matches!(fix_transport_checksum(&mut p, m), Ok(Fixup::Updated { new, .. }) if new == expected),
                    "{protocol} {m:?}"
                );
            }
            let mut p = p0.clone();
            assert_eq!(
                fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4())),
                Err(NatTError::AddressFamily)
            );
        }
    }

    #[test]
    fn fragments_and_errors() {
        let seg = segment(6, 60, 31);
        let p0 = v4_packet(6, &seg, orig_v4(), PUB, RESP);
        // A first fragment (MF set): the incremental update works, recomputation cannot.
        let mut p = p0.clone();
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_more_frags(true);
            ip.fill_checksum();
        }
        let q = p.clone();
        assert!(matches!(
            fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4())),
            Ok(Fixup::Updated { new, .. }) if new == reference(PUB.into(), RESP.into(), 6, &p0[20..], 16)
        ));
        let mut p = q;
        assert_eq!(
            fix_transport_checksum(&mut p, FixupMethod::Recompute),
            Err(NatTError::Fragmented)
        );
        // A later fragment: untouched.
        let mut p = p0.clone();
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_frag_offset_bytes(1480);
            ip.fill_checksum();
        }
        let q = p.clone();
        assert_eq!(
            fix_transport_checksum(&mut p, FixupMethod::Recompute),
            Ok(Fixup::Untouched)
        );
        assert_eq!(p, q);
        // ICMP: not ours.
        let mut p = p0.clone();
        p[9] = 1;
        assert_eq!(
            fix_transport_checksum(&mut p, FixupMethod::Recompute),
            Err(NatTError::NotTcpOrUdp)
        );
        // Truncations never panic.
        for n in 0..p0.len() {
            let mut p = p0[..n].to_vec();
            assert!(fix_transport_checksum(&mut p, FixupMethod::Recompute).is_err());
            let mut p = p0[..n].to_vec();
            let _ = fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4()));
        }
        // A TCP header cut short by the IP length.
        let mut p = p0.clone();
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert!(fix_transport_checksum(&mut p, FixupMethod::Incremental(orig_v4())).is_err());
        // A UDP length field larger than the datagram.
        let seg = segment(17, 30, 41);
        let mut p = v4_packet(17, &seg, orig_v4(), PUB, RESP);
        p[24..26].copy_from_slice(&31u16.to_be_bytes());
        assert_eq!(
            fix_transport_checksum(&mut p, FixupMethod::Recompute),
            Err(NatTError::Wire(WireError::BadLength))
        );
        assert_eq!(FixupMethod::preferred(None), FixupMethod::Recompute);
        assert_eq!(
            FixupMethod::preferred(Some(orig_v4())),
            FixupMethod::Incremental(orig_v4())
        );
    }
}
