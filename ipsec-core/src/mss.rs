//! TCP MSS clamping (`ip tcp adjust-mss 1360`).
//!
//! TCP endpoints announce their maximum segment size in the SYN and SYN-ACK. Behind an
//! IPsec tunnel, the MSS they derive from their own interface MTU (1460 on Ethernet) makes
//! segments that no longer fit once ESP is added, so every full-size segment is either
//! fragmented or bounced with ICMP. Lowering the MSS option of SYNs crossing the tunnel,
//! in both directions, makes both ends send segments that fit, with no fragmentation and
//! no reliance on ICMP getting through.
//!
//! Only the MSS option of segments with SYN set is touched, only ever downwards, and the
//! TCP checksum is updated incrementally (RFC 1624), so the rest of the segment is neither
//! read nor verified. Anything else (non-SYN segments, SYNs without an MSS option, non-TCP,
//! non-first fragments) is left alone.

use crate::wire::checksum;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::{WireError, proto};

/// TCP header length without options.
const TCP_HEADER_LEN: usize = 20;
/// TCP option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const SYN: u8 = 0x02;

/// What [`clamp_mss`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MssOutcome {
    /// The MSS option was lowered.
    Clamped {
        /// The MSS the sender announced.
        from: u16,
        /// The MSS now in the packet.
        to: u16,
    },
    /// A SYN whose MSS was already at or below the limit.
    Unchanged {
        /// The MSS announced.
        mss: u16,
    },
    /// A SYN without an MSS option (the peer assumes 536, RFC 9293 §3.7.1).
    NoMssOption,
    /// A TCP segment without SYN.
    NotSyn,
    /// Not TCP, or a fragment that does not hold the TCP header.
    NotTcp,
}

/// The MSS that makes a TCP segment fill a packet of `mtu` bytes exactly: `mtu` minus
/// the IP header (20 or 40 bytes) and the TCP header (20 bytes), saturating at 0 and 65535.
#[must_use]
pub const fn mss_for_mtu(mtu: usize, ipv6: bool) -> u16 {
    let ip = if ipv6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let mss = mtu.saturating_sub(ip + TCP_HEADER_LEN);
    if mss > u16::MAX as usize {
        u16::MAX
    } else {
        #[allow(clippy::cast_possible_truncation)] // checked just above
        {
            mss as u16
        }
    }
}

/// Lowers the MSS option of a TCP SYN in the IPv4 or IPv6 `packet` to `max`, updating
/// the TCP checksum incrementally.
///
/// # Errors
///
/// [`WireError`] for an unparsable IP header, TCP header or option list; the packet is
/// then unchanged.
pub fn clamp_mss(packet: &mut [u8], max: u16) -> Result<MssOutcome, WireError> {
    let Some(seg) = tcp_segment(packet)? else {
        return Ok(MssOutcome::NotTcp);
    };
    clamp_segment(seg, max)
}

/// The TCP segment of `packet`, or `None` if it carries no (complete) TCP header.
fn tcp_segment(packet: &mut [u8]) -> Result<Option<&mut [u8]>, WireError> {
    let (proto_, start, end) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(&*packet)?;
            if ip.frag_offset_units() != 0 {
                return Ok(None);
            }
            (ip.protocol(), ip.header_len(), usize::from(ip.total_len()))
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(&*packet)?;
            let (nh, off) = ip.upper_layer()?;
            (nh, off, ip.total_len())
        }
        Some(_) => return Err(WireError::BadVersion),
        None => return Err(WireError::Truncated),
    };
    if proto_ != proto::TCP {
        return Ok(None);
    }
    let seg = packet.get_mut(start..end).ok_or(WireError::Truncated)?;
    if seg.len() < TCP_HEADER_LEN {
        // A first fragment too short for the TCP header: leave it (and it is odd anyway).
        return Ok(None);
    }
    Ok(Some(seg))
}

fn clamp_segment(seg: &mut [u8], max: u16) -> Result<MssOutcome, WireError> {
    let byte = |s: &[u8], i: usize| s.get(i).copied().ok_or(WireError::Truncated);
    let flags = byte(seg, 13)?;
    if flags & SYN == 0 {
        return Ok(MssOutcome::NotSyn);
    }
    let data_off = usize::from(byte(seg, 12)? >> 4) * 4;
    if data_off < TCP_HEADER_LEN || data_off > seg.len() {
        return Err(WireError::BadLength);
    }
    let mut i = TCP_HEADER_LEN;
    while i < data_off {
        match byte(seg, i)? {
            OPT_END => break,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(byte(seg, i + 1)?);
                if len < 2 || i + len > data_off {
                    return Err(WireError::Malformed);
                }
                if kind == OPT_MSS {
                    if len != 4 {
                        return Err(WireError::Malformed);
                    }
                    return rewrite_mss(seg, i + 2, max);
                }
                i += len;
            }
        }
    }
    Ok(MssOutcome::NoMssOption)
}

/// Writes `max` at `at` if the value there is larger, fixing the checksum (bytes 16..18).
fn rewrite_mss(seg: &mut [u8], at: usize, max: u16) -> Result<MssOutcome, WireError> {
    let word = |s: &[u8], w: usize| -> Result<u16, WireError> {
        s.get(w..)
            .and_then(<[u8]>::first_chunk::<2>)
            .map(|b| u16::from_be_bytes(*b))
            .ok_or(WireError::Truncated)
    };
    let from = word(seg, at)?;
    if from <= max {
        return Ok(MssOutcome::Unchanged { mss: from });
    }
    // The checksum sums 16-bit words at even offsets of the segment; an MSS option after
    // an odd number of NOPs straddles two words, so update every word the value touches.
    let first = at & !1;
    let last = (at + 1) & !1;
    let old_words = [word(seg, first)?, word(seg, last)?];
    seg.get_mut(at..at + 2)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(&max.to_be_bytes());
    let new_words = [word(seg, first)?, word(seg, last)?];
    let mut ck = word(seg, 16)?;
    ck = checksum::update(ck, old_words[0], new_words[0]);
    if last != first {
        ck = checksum::update(ck, old_words[1], new_words[1]);
    }
    seg.get_mut(16..18)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(&ck.to_be_bytes());
    Ok(MssOutcome::Clamped { from, to: max })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::ipv4::Ipv4Repr;
    use crate::wire::ipv6::Ipv6Repr;

    /// An independent full TCP checksum over an explicit pseudo-header, one word at a time
    /// (the RFC 1071 definition, not the crate's `checksum` module).
    fn tcp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6]);
        bytes.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        bytes.extend_from_slice(seg);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut s: u32 = 0;
        for w in bytes.chunks(2) {
            s += u32::from(w[0]) << 8 | u32::from(w[1]);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn tcp_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, seg: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 6]);
        bytes.extend_from_slice(seg);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut s: u32 = 0;
        for w in bytes.chunks(2) {
            s += u32::from(w[0]) << 8 | u32::from(w[1]);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 68, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 7);

    /// A TCP segment with the given flags and options, its checksum valid for SRC -> DST.
    fn segment(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let doff = 20 + options.len();
        let mut s = Vec::new();
        s.extend_from_slice(&[0xc3, 0x50, 0x00, 0x50]); // ports 50000 -> 80
        s.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        s.extend_from_slice(&0u32.to_be_bytes());
        s.push(((doff / 4) as u8) << 4);
        s.push(flags);
        s.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
        s.extend_from_slice(options);
        s.extend_from_slice(payload);
        s
    }

    fn ipv4(seg: &[u8]) -> Vec<u8> {
        let mut seg = seg.to_vec();
        if seg.len() >= 20 {
            let ck = tcp_checksum_v4(SRC, DST, &seg);
            seg[16..18].copy_from_slice(&ck.to_be_bytes());
        }
        let r = Ipv4Repr {
            src: SRC,
            dst: DST,
            protocol: proto::TCP,
            payload_len: seg.len(),
            ttl: 64,
            tos: 0,
            ident: 9,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut p = std::vec![0u8; 20];
        r.emit(&mut p).unwrap();
        p.extend_from_slice(&seg);
        p
    }

    fn valid_v4(p: &[u8]) -> bool {
        tcp_checksum_v4(SRC, DST, &p[20..]) == 0
    }

    /// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    const LINUX_SYN_OPTS: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0x0a, 0x4b, 0x3c, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn syn_mss_1460_becomes_1360_with_valid_checksum() {
        let mut p = ipv4(&segment(SYN, &LINUX_SYN_OPTS, &[]));
        assert!(valid_v4(&p));
        let before = p.clone();
        assert_eq!(
            clamp_mss(&mut p, 1360),
            Ok(MssOutcome::Clamped {
                from: 1460,
                to: 1360
            })
        );
        assert_eq!(&p[40..44], &[2, 4, 0x05, 0x50]);
        assert!(valid_v4(&p), "checksum verified by a full recomputation");
        // Nothing else moved: only the MSS and the checksum.
        let changed: Vec<usize> = (0..p.len()).filter(|&i| p[i] != before[i]).collect();
        assert!(
            changed
                .iter()
                .all(|&i| (36..38).contains(&i) || (42..44).contains(&i))
        );
        // The SYN-ACK the other way gets the same treatment, and a second pass is a no-op.
        let mut again = p.clone();
        assert_eq!(
            clamp_mss(&mut again, 1360),
            Ok(MssOutcome::Unchanged { mss: 1360 })
        );
        assert_eq!(again, p);
        let mut synack = ipv4(&segment(SYN | 0x10, &LINUX_SYN_OPTS, &[]));
        assert!(matches!(
            clamp_mss(&mut synack, 1360),
            Ok(MssOutcome::Clamped { .. })
        ));
        assert!(valid_v4(&synack));
    }

    #[test]
    fn odd_aligned_mss_option_and_many_values() {
        // NOP, MSS, NOP, NOP, NOP: the MSS value sits at an odd offset.
        for mss in [536u16, 1000, 1361, 1460, 8960, 65535] {
            for max in [536u16, 1200, 1360, 1460] {
                let [h, l] = mss.to_be_bytes();
                let mut p = ipv4(&segment(SYN, &[1, 2, 4, h, l, 1, 1, 1], b"odd"));
                let r = clamp_mss(&mut p, max).unwrap();
                let now = u16::from_be_bytes([p[43], p[44]]);
                assert_eq!(now, mss.min(max));
                assert_eq!(r == (MssOutcome::Unchanged { mss }), mss <= max);
                assert!(valid_v4(&p), "mss {mss} max {max}");
            }
        }
    }

    #[test]
    fn non_syn_and_optionless_syn_are_untouched() {
        let mut ack = ipv4(&segment(0x10, &LINUX_SYN_OPTS, b"data"));
        let before = ack.clone();
        assert_eq!(clamp_mss(&mut ack, 1360), Ok(MssOutcome::NotSyn));
        assert_eq!(ack, before);
        let mut bare = ipv4(&segment(SYN, &[1, 1, 1, 0], &[]));
        let before = bare.clone();
        assert_eq!(clamp_mss(&mut bare, 1360), Ok(MssOutcome::NoMssOption));
        assert_eq!(bare, before);
        let mut nothing = ipv4(&segment(SYN, &[], &[]));
        assert_eq!(clamp_mss(&mut nothing, 1360), Ok(MssOutcome::NoMssOption));
        let mut udp = ipv4(&[0u8; 8]);
        udp[9] = proto::UDP;
        assert_eq!(clamp_mss(&mut udp, 1360), Ok(MssOutcome::NotTcp));
    }

    #[test]
    fn ipv6_syn() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::5".parse().unwrap(),
            "2001:db8:1::7".parse().unwrap(),
        );
        let mut seg = segment(SYN, &LINUX_SYN_OPTS, &[]);
        let ck = tcp_checksum_v6(s, d, &seg);
        seg[16..18].copy_from_slice(&ck.to_be_bytes());
        let r = Ipv6Repr {
            src: s,
            dst: d,
            next_header: proto::TCP,
            payload_len: seg.len(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut p = std::vec![0u8; 40];
        r.emit(&mut p).unwrap();
        p.extend_from_slice(&seg);
        assert_eq!(
            clamp_mss(&mut p, 1340),
            Ok(MssOutcome::Clamped {
                from: 1460,
                to: 1340
            })
        );
        assert_eq!(tcp_checksum_v6(s, d, &p[40..]), 0);
    }

    #[test]
    fn malformed_options_are_errors_and_never_panic() {
        let mut bad_len = ipv4(&segment(SYN, &[2, 1, 0, 0], &[]));
        assert_eq!(clamp_mss(&mut bad_len, 1360), Err(WireError::Malformed));
        let mut overrun = ipv4(&segment(SYN, &[1, 1, 2, 4], &[]));
        assert_eq!(clamp_mss(&mut overrun, 1360), Err(WireError::Malformed));
        // Every truncation and every byte value of the option area: no panic.
        let base = ipv4(&segment(SYN, &LINUX_SYN_OPTS, &[]));
        for cut in 0..base.len() {
            let mut p = base[..cut].to_vec();
            let _ = clamp_mss(&mut p, 1360);
        }
        for at in 32..base.len() {
            for v in [0u8, 1, 2, 3, 4, 0x50, 0xf0, 0xff] {
                let mut p = base.clone();
                p[at] = v;
                let _ = clamp_mss(&mut p, 1360);
            }
        }
    }

    #[test]
    fn mss_for_mtu_values() {
        assert_eq!(mss_for_mtu(1500, false), 1460);
        assert_eq!(mss_for_mtu(1400, false), 1360);
        assert_eq!(mss_for_mtu(1500, true), 1440);
        assert_eq!(mss_for_mtu(10, false), 0);
        assert_eq!(mss_for_mtu(usize::MAX, false), u16::MAX);
    }
}
