//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the ones' complement of the ones' complement sum of 16-bit big-endian
//! words. Work is split in three steps so that a pseudo-header, a header and a payload
//! held in different places can be summed separately:
//!
//! 1. [`sum`] (and [`pseudo_header_v4`] / [`pseudo_header_v6`]) return a *partial sum*, a
//!    `u32` already folded to at most `0xffff`, so that a handful of partial sums can be
//!    added with `+` without overflow ([`combine`] adds any two);
//! 2. [`fold`] reduces a partial sum to 16 bits (the ones' complement sum itself);
//! 3. [`finish`] returns the complement of that, the value that goes on the wire.
//!
//! Only the last chunk of a sum may have an odd length: an odd chunk is padded with one
//! zero byte, which would misalign whatever follows it.
//!
//! A header whose checksum field is included verifies when `fold(sum(header)) == 0xffff`,
//! i.e. when `finish(sum(header)) == 0`.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Fold a 64-bit accumulator into 16 bits, end-around carry included.
fn fold64(mut acc: u64) -> u16 {
    // 2^16 ≡ 1 (mod 0xffff): adding the high part to the low part preserves the sum.
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let [.., hi, lo] = acc.to_be_bytes();
    u16::from_be_bytes([hi, lo])
}

/// The ones' complement sum of `data` as big-endian 16-bit words, as a partial sum.
///
/// An odd trailing byte is treated as the high byte of a word whose low byte is zero. The
/// result is at most `0xffff`.
#[must_use]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    u32::from(fold64(acc))
}

/// Add two partial sums (of even-length chunks, or with the odd one last).
#[must_use]
pub fn combine(a: u32, b: u32) -> u32 {
    u32::from(fold64(u64::from(a) + u64::from(b)))
}

/// The ones' complement sum of a partial sum, folded to 16 bits (not complemented).
#[must_use]
pub fn fold(sum: u32) -> u16 {
    fold64(u64::from(sum))
}

/// The checksum to put on the wire for a partial sum: the complement of [`fold`].
#[must_use]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The Internet checksum of `data` (RFC 1071): `finish(sum(data))`.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// The partial sum of the IPv4 pseudo-header (RFC 768, RFC 793): source, destination, a
/// zero byte, the protocol and the upper-layer length.
#[must_use]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u64::from(u16::from_be_bytes([s[0], s[1]]))
        + u64::from(u16::from_be_bytes([s[2], s[3]]))
        + u64::from(u16::from_be_bytes([d[0], d[1]]))
        + u64::from(u16::from_be_bytes([d[2], d[3]]))
        + u64::from(protocol)
        + u64::from(len);
    u32::from(fold64(acc))
}

/// The partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, the
/// 32-bit upper-layer packet length, three zero bytes and the next header.
#[must_use]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let acc = u64::from(sum(&src.octets()))
        + u64::from(sum(&dst.octets()))
        + u64::from(len >> 16)
        + u64::from(len & 0xffff)
        + u64::from(next_header);
    u32::from(fold64(acc))
}

/// Incrementally update `old_checksum` after a 16-bit word of the covered data changed
/// from `old_word` to `new_word` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// Unlike eqn. 2 of RFC 1624, this gives the same result as recomputing from scratch
/// whenever the covered data is not all zeros (the one case where ones' complement has two
/// zeros: `update(0xffff, 0, 0)` gives 0 where a recomputation gives 0xffff). Real IP, TCP
/// and UDP headers never sum to zero.
#[must_use]
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    let acc = u64::from(!old_checksum) + u64::from(!old_word) + u64::from(new_word);
    !fold64(acc)
}

/// [`update`] for a 32-bit aligned field (an IPv4 address, say) that changed from `old` to
/// `new`.
#[must_use]
pub fn update_u32(old_checksum: u16, old: u32, new: u32) -> u16 {
    let [o0, o1, o2, o3] = old.to_be_bytes();
    let [n0, n1, n2, n3] = new.to_be_bytes();
    let c = update(
        old_checksum,
        u16::from_be_bytes([o0, o1]),
        u16::from_be_bytes([n0, n1]),
    );
    update(
        c,
        u16::from_be_bytes([o2, o3]),
        u16::from_be_bytes([n2, n3]),
    )
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    /// A deliberately naive reference: the RFC 1071 definition, one word at a time with
    /// the carry folded back immediately, complemented at the end.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]);
            let lo = if i + 1 < data.len() {
                u32::from(data[i + 1])
            } else {
                0
            };
            s += (hi << 8) | lo;
            if s > 0xffff {
                s -= 0xffff;
            }
            i += 2;
        }
        !(s as u16)
    }

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn rfc1071_worked_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2; the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
        // Byte order independence (RFC 1071 §2(B)): swapping bytes swaps the sum.
        let swapped = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6];
        assert_eq!(fold(sum(&swapped)), 0xf2dd);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn matches_reference_on_many_lengths() {
        // Pseudo-random bytes from a fixed LCG; every length from 0 to 600, odd and even.
        let mut x: u32 = 0x1234_5678;
        let data: Vec<u8> = (0..600)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for n in 0..=data.len() {
            assert_eq!(checksum(&data[..n]), reference(&data[..n]), "len {n}");
        }
        let ones = [0xffu8; 1001];
        assert_eq!(checksum(&ones), reference(&ones));
    }

    #[test]
    fn partial_sums_combine() {
        let data: Vec<u8> = (0u8..=255).collect();
        for split in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(split);
            assert_eq!(finish(combine(sum(a), sum(b))), checksum(&data));
            assert_eq!(finish(sum(a) + sum(b)), checksum(&data));
        }
    }

    #[test]
    fn ipv4_header_checksum_of_real_packets() {
        // Outer IPv4 headers: scapy_esp_vectors.json "des-cbc_hmac-sha1-96_transport" and
        // RFC 3602 case 5 (rfc3602_aes_cbc_esp.json); checksum fields 7e34 and f9a5.
        for (h, ck) in [
            ("450000601001000040327e34c0000201c6336402", 0x7e34),
            ("4500007c08f200004032f9a5c0a87b03c0a87b64", 0xf9a5),
        ] {
            let mut h = hex(h);
            assert_eq!(checksum(&h), 0, "verifies in place");
            h[10] = 0;
            h[11] = 0;
            assert_eq!(checksum(&h), ck);
            assert_eq!(reference(&h), ck);
        }
    }

    #[test]
    fn udp_pseudo_header_v4_real_packet() {
        // ipsec-ikev1-isakmp-main-mode.pcap frame 9 (IKE, 192.168.12.1 -> .2, UDP 500/500,
        // UDP checksum 70a8 as captured).
        let ip = hex(
            "45c00058028d0000ff111ef4c0a80c01c0a80c0201f401f4004470a8e47a591fd057587fa00b8ef0\
             902bb8ec08102001635a2e6a0000003c05750fa41560dbaca0027bdcdfe39a1e8a4890d34f8fd05a\
             fb82064818e96728",
        );
        let src = Ipv4Addr::new(192, 168, 12, 1);
        let dst = Ipv4Addr::new(192, 168, 12, 2);
        let mut udp = ip[20..].to_vec();
        let ph = pseudo_header_v4(src, dst, 17, udp.len() as u16);
        assert_eq!(finish(ph + sum(&udp)), 0);
        udp[6] = 0;
        udp[7] = 0;
        assert_eq!(finish(ph + sum(&udp)), 0x70a8);
        // The same through the naive reference over an explicit pseudo-header.
        let mut explicit = Vec::new();
        explicit.extend_from_slice(&src.octets());
        explicit.extend_from_slice(&dst.octets());
        explicit.extend_from_slice(&[0, 17]);
        explicit.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        explicit.extend_from_slice(&udp);
        assert_eq!(reference(&explicit), 0x70a8);
    }

    #[test]
    fn pseudo_header_v6_matches_explicit() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:ffff:1234:5678:9abc:def0:1".parse().unwrap();
        for len in [0u32, 8, 0x1234, 0xffff, 0x0001_0000, 0x0012_3456] {
            let mut explicit = Vec::new();
            explicit.extend_from_slice(&src.octets());
            explicit.extend_from_slice(&dst.octets());
            explicit.extend_from_slice(&len.to_be_bytes());
            explicit.extend_from_slice(&[0, 0, 0, 17]);
            assert_eq!(
                finish(pseudo_header_v6(src, dst, 17, len)),
                reference(&explicit),
                "len {len}"
            );
        }
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: other octets sum to 0xcd7a, m = 0x5555 -> m' = 0x3285; HC = 0xdd2f,
        // and the new checksum is 0x0000 (eqn. 2 would give 0xffff).
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(finish(0xcd7a + 0x5555), 0xdd2f);
        assert_eq!(finish(0xcd7a + 0x3285), 0x0000);
    }

    #[test]
    fn incremental_matches_recompute() {
        // Decrement the TTL of a real header (RFC 3602 case 7 outer header), then change
        // its source address, each time comparing with a full recomputation.
        let mut h = hex("4500008c090500004032f91ec0a87b03c0a87bc8");
        for _ in 0..60 {
            let old_word = u16::from_be_bytes([h[8], h[9]]);
            let old_ck = u16::from_be_bytes([h[10], h[11]]);
            h[8] -= 1;
            let new_word = u16::from_be_bytes([h[8], h[9]]);
            let ck = update(old_ck, old_word, new_word);
            h[10..12].copy_from_slice(&ck.to_be_bytes());
            assert_eq!(checksum(&h), 0);
            h[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(checksum(&h), ck);
            h[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        let old_ck = u16::from_be_bytes([h[10], h[11]]);
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = u32::from(Ipv4Addr::new(10, 255, 0, 1));
        h[12..16].copy_from_slice(&new.to_be_bytes());
        let ck = update_u32(old_ck, old, new);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(checksum(&h), ck);
    }
}
