//! ICMP echo ("ping") packets over IPv4, built and checked by hand: the inner traffic of
//! the tunnel.

use core::net::Ipv4Addr;

use ipsec_core::wire::checksum;

/// ICMP echo request.
pub const ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;

const IP_HDR: usize = 20;
const ICMP_HDR: usize = 8;

/// One echo message, as parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub kind: u8,
    pub id: u16,
    pub seq: u16,
    pub payload_len: usize,
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Writes an IPv4 ICMP echo message with `payload_len` bytes of a counting pattern into
/// `out`; returns its length, or `None` if `out` is too small.
pub fn build(out: &mut [u8], e: &Echo) -> Option<usize> {
    let icmp_len = ICMP_HDR + e.payload_len;
    let total = IP_HDR + icmp_len;
    let p = out.get_mut(..total)?;
    p.fill(0);
    // IPv4 header: version 4, IHL 5, no options, DF clear, TTL 64, protocol 1.
    p.get_mut(..IP_HDR)?.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    put16(p, 2, u16::try_from(total).ok()?)?;
    put16(p, 4, e.seq)?; // identification
    p.get_mut(12..16)?.copy_from_slice(&e.src.octets());
    p.get_mut(16..20)?.copy_from_slice(&e.dst.octets());
    let c = checksum::finish(checksum::sum(p.get(..IP_HDR)?));
    put16(p, 10, c)?;
    // ICMP echo.
    let icmp = p.get_mut(IP_HDR..)?;
    *icmp.first_mut()? = e.kind;
    put16(icmp, 4, e.id)?;
    put16(icmp, 6, e.seq)?;
    let mut v: u8 = 0;
    for b in icmp.get_mut(ICMP_HDR..)? {
        *b = v ^ 0x5a;
        v = v.wrapping_add(1);
    }
    let c = checksum::finish(checksum::sum(icmp));
    put16(icmp, 2, c)?;
    Some(total)
}

/// Parses and validates (both checksums, lengths, pattern) an echo message.
pub fn parse(p: &[u8]) -> Option<Echo> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if *p.first()? >> 4 != 4 || ihl != IP_HDR || *p.get(9)? != 1 {
        return None;
    }
    let total = usize::from(get16(p, 2)?);
    let p = p.get(..total)?;
    if checksum::finish(checksum::sum(p.get(..IP_HDR)?)) != 0 {
        return None;
    }
    let icmp = p.get(IP_HDR..)?;
    if icmp.len() < ICMP_HDR || checksum::finish(checksum::sum(icmp)) != 0 {
        return None;
    }
    let payload = icmp.get(ICMP_HDR..)?;
    let mut v: u8 = 0;
    for b in payload {
        if *b != v ^ 0x5a {
            return None;
        }
        v = v.wrapping_add(1);
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let s = p.get(at..at + 4)?;
        Some(Ipv4Addr::new(
            *s.first()?,
            *s.get(1)?,
            *s.get(2)?,
            *s.get(3)?,
        ))
    };
    Some(Echo {
        src: addr(12)?,
        dst: addr(16)?,
        kind: *icmp.first()?,
        id: get16(icmp, 4)?,
        seq: get16(icmp, 6)?,
        payload_len: payload.len(),
    })
}
