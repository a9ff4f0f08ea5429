//! Proposals (writing ours, choosing from the peer's), proxy identities, NAT-D hashes.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{CryptoError, HashAlg, MAX_HASH_LEN, Prf};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, PortRange, Selector};

use super::IkeError;
use super::config::{CryptoMapEntry, IsakmpPolicy};
use super::sa::Writer;
use crate::wire::ike_attr::{Phase1Transform, auth_method};
use crate::wire::ipsec_attr::{EncapsulationMode, EspCipher, EspTransform};
use crate::wire::{
    AttributeRepr, IdRepr, Identity, ProposalRepr, SaRepr, TransformRepr, doi, payload_type,
    protocol_id, situation,
};

/// KEY_IKE, the only phase-1 transform ID.
const KEY_IKE: u8 = 1;

fn sa_header(w: &mut Writer<'_>) -> Result<(), IkeError> {
    w.u32(doi::IPSEC)?;
    w.u32(situation::IDENTITY_ONLY)
}

/// Writes a transform payload (generic header included).
fn write_transform(
    w: &mut Writer<'_>,
    last: bool,
    number: u8,
    id: u8,
    attrs: &[AttributeRepr<'_>],
) -> Result<(), IkeError> {
    let start = w.pos();
    w.u8(if last { 0 } else { payload_type::TRANSFORM })?;
    w.u8(0)?;
    w.u16(0)?;
    w.u8(number)?;
    w.u8(id)?;
    w.u16(0)?;
    for a in attrs {
        let n = a.buffer_len();
        a.emit(w.rest())?;
        w.skip(n)?;
    }
    let len = u16::try_from(w.pos() - start).map_err(|_| IkeError::TooLarge)?;
    w.patch_u16(start + 2, len)
}

/// Starts a proposal payload; returns its start offset for [`end_proposal`].
fn begin_proposal(
    w: &mut Writer<'_>,
    last: bool,
    number: u8,
    protocol: u8,
    spi: &[u8],
    transforms: u8,
) -> Result<usize, IkeError> {
    let start = w.pos();
    w.u8(if last { 0 } else { payload_type::PROPOSAL })?;
    w.u8(0)?;
    w.u16(0)?;
    w.u8(number)?;
    w.u8(protocol)?;
    w.u8(u8::try_from(spi.len()).map_err(|_| IkeError::TooLarge)?)?;
    w.u8(transforms)?;
    w.bytes(spi)?;
    Ok(start)
}

fn end_proposal(w: &mut Writer<'_>, start: usize) -> Result<(), IkeError> {
    let len = u16::try_from(w.pos() - start).map_err(|_| IkeError::TooLarge)?;
    w.patch_u16(start + 2, len)
}

/// The phase-1 transform a policy proposes.
#[must_use]
pub fn policy_transform(p: &IsakmpPolicy) -> Phase1Transform {
    Phase1Transform {
        cipher: p.encryption,
        hash: p.hash,
        auth_method: auth_method::PRE_SHARED_KEY,
        group: p.group,
        life_seconds: Some(u64::from(p.lifetime_seconds)),
        life_kilobytes: None,
    }
}

/// Writes our phase-1 SA body: one ISAKMP proposal with one transform per policy, in
/// priority order. Returns the length.
pub fn write_phase1_sa<'p>(
    out: &mut [u8],
    policies: impl Iterator<Item = &'p IsakmpPolicy> + Clone,
) -> Result<usize, IkeError> {
    let n = u8::try_from(policies.clone().count()).map_err(|_| IkeError::TooLarge)?;
    if n == 0 {
        return Err(IkeError::InvalidConfig);
    }
    let mut w = Writer::new(out);
    sa_header(&mut w)?;
    let start = begin_proposal(&mut w, true, 1, protocol_id::ISAKMP, &[], n)?;
    for (i, p) in policies.enumerate() {
        let mut store = [AttributeRepr::basic(0, 0); 9];
        let attrs = policy_transform(p).to_attributes(&mut store)?;
        let num = u8::try_from(i + 1).map_err(|_| IkeError::TooLarge)?;
        write_transform(&mut w, num == n, num, KEY_IKE, attrs)?;
    }
    end_proposal(&mut w, start)?;
    Ok(w.pos())
}

/// Writes an SA body that accepts exactly one of the peer's transforms: the proposal's
/// number and protocol, our `spi`, and the transform as received.
pub fn write_sa_reply(
    out: &mut [u8],
    proposal: &ProposalRepr<'_>,
    spi: &[u8],
    transform: &TransformRepr<'_>,
) -> Result<usize, IkeError> {
    let mut w = Writer::new(out);
    sa_header(&mut w)?;
    let start = begin_proposal(&mut w, true, proposal.number, proposal.protocol_id, spi, 1)?;
    let tstart = w.pos();
    w.u8(0)?;
    w.u8(0)?;
    w.u16(0)?;
    let n = transform.buffer_len();
    transform.emit(w.rest())?;
    w.skip(n)?;
    let tlen = u16::try_from(w.pos() - tstart).map_err(|_| IkeError::TooLarge)?;
    w.patch_u16(tstart + 2, tlen)?;
    end_proposal(&mut w, start)?;
    Ok(w.pos())
}

/// Whether a decoded phase-1 transform is what `p` allows (lifetime aside).
fn phase1_matches(t: &Phase1Transform, p: &IsakmpPolicy) -> bool {
    t.cipher == p.encryption
        && t.hash == p.hash
        && t.group == p.group
        && t.auth_method == auth_method::PRE_SHARED_KEY
}

/// A phase-1 proposal we accept.
pub struct Phase1Choice<'a> {
    pub proposal: ProposalRepr<'a>,
    pub transform: TransformRepr<'a>,
    /// Decoded, with the lifetime we will use.
    pub chosen: Phase1Transform,
}

/// The lifetime to use: the peer's if it is not longer than ours, else ours.
fn pick_life(theirs: Option<u64>, ours: u64) -> u64 {
    match theirs {
        Some(t) if t > 0 && t <= ours => t,
        _ => ours,
    }
}

/// Responder: walks OUR policies in priority order against every transform of every
/// ISAKMP proposal of the initiator; the first match wins. With `group`, only that
/// group (Aggressive Mode: the KE is already sent).
pub fn choose_phase1<'a>(
    policies: &[IsakmpPolicy],
    sa: &SaRepr<'a>,
    group: Option<hal_traits::DhGroup>,
) -> Option<Phase1Choice<'a>> {
    for p in policies {
        if group.is_some_and(|g| g != p.group) {
            continue;
        }
        for prop in sa.proposals.iter() {
            if prop.protocol_id != protocol_id::ISAKMP {
                continue;
            }
            for t in prop.transforms.iter() {
                if t.transform_id != KEY_IKE {
                    continue;
                }
                let Ok(mut d) = Phase1Transform::from_attributes(&t.attributes) else {
                    continue;
                };
                if phase1_matches(&d, p) {
                    d.life_seconds = Some(pick_life(d.life_seconds, u64::from(p.lifetime_seconds)));
                    return Some(Phase1Choice {
                        proposal: prop,
                        transform: t,
                        chosen: d,
                    });
                }
            }
        }
    }
    None
}

/// Initiator: checks the responder's answer (one proposal, one transform) against the
/// policies we proposed; returns it with the lifetime we will use.
pub fn check_phase1_reply<'p>(
    policies: impl Iterator<Item = &'p IsakmpPolicy>,
    sa: &SaRepr<'_>,
) -> Option<Phase1Transform> {
    let mut props = sa.proposals.iter();
    let prop = props.next()?;
    if props.next().is_some() || prop.protocol_id != protocol_id::ISAKMP {
        return None;
    }
    let mut ts = prop.transforms.iter();
    let t = ts.next()?;
    if ts.next().is_some() || t.transform_id != KEY_IKE {
        return None;
    }
    let mut d = Phase1Transform::from_attributes(&t.attributes).ok()?;
    for p in policies {
        if phase1_matches(&d, p) {
            d.life_seconds = Some(pick_life(d.life_seconds, u64::from(p.lifetime_seconds)));
            return Some(d);
        }
    }
    None
}

/// The IPsec DOI cipher of a data plane encryption.
#[must_use]
pub const fn esp_cipher(e: Encryption) -> EspCipher {
    match e {
        Encryption::Null => EspCipher::Null,
        Encryption::Cbc(c) => EspCipher::Cbc(c),
        Encryption::Gcm(a) => EspCipher::Aead(a),
    }
}

/// The data plane transform of a negotiated ESP transform.
#[must_use]
pub const fn core_transform(t: &EspTransform) -> Transform {
    Transform {
        enc: match t.cipher {
            EspCipher::Null => Encryption::Null,
            EspCipher::Cbc(c) => Encryption::Cbc(c),
            EspCipher::Aead(a) => Encryption::Gcm(a),
        },
        auth: t.mac,
    }
}

/// The encapsulation mode for `mode`, in UDP when NAT-T is active.
#[must_use]
pub const fn encapsulation(mode: Mode, udp: bool) -> EncapsulationMode {
    match (mode, udp) {
        (Mode::Tunnel, false) => EncapsulationMode::Tunnel,
        (Mode::Transport, false) => EncapsulationMode::Transport,
        (Mode::Tunnel, true) => EncapsulationMode::UdpTunnel,
        (Mode::Transport, true) => EncapsulationMode::UdpTransport,
    }
}

/// Writes our Quick Mode SA body: one ESP proposal per transform set, each with one
/// transform, all with our SPI. `udp`: `Some(draft)` when NAT-T is active.
pub fn write_phase2_sa(
    out: &mut [u8],
    entry: &CryptoMapEntry,
    spi: u32,
    udp: Option<bool>,
) -> Result<usize, IkeError> {
    let n = entry.transform_sets.len();
    if n == 0 {
        return Err(IkeError::NoPeer);
    }
    let mut w = Writer::new(out);
    sa_header(&mut w)?;
    for (i, ts) in entry.transform_sets.iter().enumerate() {
        let esp = EspTransform {
            cipher: esp_cipher(ts.transform.enc),
            mac: ts.transform.auth,
            mode: encapsulation(ts.mode, udp.is_some()),
            group: entry.pfs,
            life_seconds: Some(entry.lifetime_seconds),
            life_kilobytes: Some(entry.lifetime_kilobytes),
        };
        let mut store = [AttributeRepr::basic(0, 0); 9];
        let (id, attrs) = esp.to_attributes(udp.unwrap_or(false), &mut store)?;
        let num = u8::try_from(i + 1).map_err(|_| IkeError::TooLarge)?;
        let start = begin_proposal(
            &mut w,
            i + 1 == n,
            num,
            protocol_id::ESP,
            &spi.to_be_bytes(),
            1,
        )?;
        write_transform(&mut w, true, 1, id, attrs)?;
        end_proposal(&mut w, start)?;
    }
    Ok(w.pos())
}

/// A Quick Mode proposal we accept.
pub struct Phase2Choice<'a> {
    pub proposal: ProposalRepr<'a>,
    pub transform: TransformRepr<'a>,
    /// Decoded, with the lifetimes we will use.
    pub esp: EspTransform,
    /// Index of our transform set.
    pub ts_index: usize,
}

fn esp_matches(
    t: &EspTransform,
    ts: &super::config::TransformSet,
    pfs: Option<hal_traits::DhGroup>,
) -> bool {
    esp_cipher(ts.transform.enc) == t.cipher
        && ts.transform.auth == t.mac
        && (matches!(ts.mode, Mode::Tunnel) == t.mode.is_tunnel())
        && (pfs.is_none() || pfs == t.group)
}

/// Whether a proposal stands alone (no AH/IPComp bundle with the same number).
fn single(sa: &SaRepr<'_>, number: u8) -> bool {
    sa.proposals.iter().filter(|p| p.number == number).count() == 1
}

/// Responder: walks OUR transform sets in order against the initiator's ESP proposals.
pub fn choose_phase2<'a>(entry: &CryptoMapEntry, sa: &SaRepr<'a>) -> Option<Phase2Choice<'a>> {
    for (ts_index, ts) in entry.transform_sets.iter().enumerate() {
        for prop in sa.proposals.iter() {
            if prop.protocol_id != protocol_id::ESP
                || prop.spi.len() != 4
                || !single(sa, prop.number)
            {
                continue;
            }
            for t in prop.transforms.iter() {
                let Ok(mut esp) = EspTransform::from_attributes(t.transform_id, &t.attributes)
                else {
                    continue;
                };
                if esp_matches(&esp, ts, entry.pfs) {
                    esp.life_seconds = Some(pick_life(esp.life_seconds, entry.lifetime_seconds));
                    esp.life_kilobytes =
                        Some(pick_life(esp.life_kilobytes, entry.lifetime_kilobytes));
                    return Some(Phase2Choice {
                        proposal: prop,
                        transform: t,
                        esp,
                        ts_index,
                    });
                }
            }
        }
    }
    None
}

/// Initiator: checks the responder's Quick Mode answer against what we proposed;
/// returns it with our lifetimes applied, the transform set index and the peer's SPI.
pub fn check_phase2_reply(
    entry: &CryptoMapEntry,
    sa: &SaRepr<'_>,
) -> Option<(EspTransform, usize, u32)> {
    let mut props = sa.proposals.iter();
    let prop = props.next()?;
    if props.next().is_some() || prop.protocol_id != protocol_id::ESP {
        return None;
    }
    let spi = u32::from_be_bytes(<[u8; 4]>::try_from(prop.spi).ok()?);
    let mut ts = prop.transforms.iter();
    let t = ts.next()?;
    if ts.next().is_some() {
        return None;
    }
    let mut esp = EspTransform::from_attributes(t.transform_id, &t.attributes).ok()?;
    let i = entry.transform_sets.iter().position(|ts| {
        esp_matches(&esp, ts, entry.pfs) && (entry.pfs.is_some() || esp.group.is_none())
    })?;
    esp.life_seconds = Some(pick_life(esp.life_seconds, entry.lifetime_seconds));
    esp.life_kilobytes = Some(pick_life(esp.life_kilobytes, entry.lifetime_kilobytes));
    Some((esp, i, spi))
}

/// The client identity (IDci or IDcr) for one side of a selector: a host address, a
/// subnet, or a range; protocol 0 = any; port 0 = any (a port range other than a single
/// port or any cannot be expressed and is sent as any).
#[must_use]
pub fn id_for(range: &AddrRange, protocol: Option<u8>, ports: &PortRange) -> IdRepr<'static> {
    let identity = match (range.start(), range.end()) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s == e => Identity::Ipv4Addr(s),
        (IpAddr::V6(s), IpAddr::V6(e)) if s == e => Identity::Ipv6Addr(s),
        _ => match (range.as_subnet(), range.start(), range.end()) {
            (Some((IpAddr::V4(a), IpAddr::V4(m))), _, _) => {
                Identity::Ipv4Subnet { addr: a, mask: m }
            }
            (Some((IpAddr::V6(a), IpAddr::V6(m))), _, _) => {
                Identity::Ipv6Subnet { addr: a, mask: m }
            }
            (_, IpAddr::V4(s), IpAddr::V4(e)) => Identity::Ipv4Range { start: s, end: e },
            (_, IpAddr::V6(s), IpAddr::V6(e)) => Identity::Ipv6Range { start: s, end: e },
            // Mixed families cannot occur in an AddrRange.
            (_, s, _) => match s {
                IpAddr::V4(a) => Identity::Ipv4Addr(a),
                IpAddr::V6(a) => Identity::Ipv6Addr(a),
            },
        },
    };
    let port = if ports.start() == ports.end() {
        ports.start()
    } else {
        0
    };
    IdRepr {
        protocol_id: protocol.unwrap_or(0),
        port,
        identity,
    }
}

/// The address range, protocol and ports of a client identity.
#[must_use]
pub fn range_of(id: &IdRepr<'_>) -> Option<(AddrRange, Option<u8>, PortRange)> {
    let range = match id.identity {
        Identity::Ipv4Addr(a) => AddrRange::host(IpAddr::V4(a)),
        Identity::Ipv6Addr(a) => AddrRange::host(IpAddr::V6(a)),
        Identity::Ipv4Subnet { addr, mask } => {
            AddrRange::from_netmask(IpAddr::V4(addr), IpAddr::V4(mask)).ok()?
        }
        Identity::Ipv6Subnet { addr, mask } => {
            AddrRange::from_netmask(IpAddr::V6(addr), IpAddr::V6(mask)).ok()?
        }
        Identity::Ipv4Range { start, end } => {
            AddrRange::new(IpAddr::V4(start), IpAddr::V4(end)).ok()?
        }
        Identity::Ipv6Range { start, end } => {
            AddrRange::new(IpAddr::V6(start), IpAddr::V6(end)).ok()?
        }
        _ => return None,
    };
    let protocol = (id.protocol_id != 0).then_some(id.protocol_id);
    let ports = if id.port == 0 {
        PortRange::ANY
    } else {
        PortRange::single(id.port)
    };
    Some((range, protocol, ports))
}

/// A selector from our view, given the local and remote client identities.
#[must_use]
pub fn selector_of(local: &IdRepr<'_>, remote: &IdRepr<'_>) -> Option<Selector> {
    let (l, lp, lports) = range_of(local)?;
    let (r, rp, rports) = range_of(remote)?;
    if lp != rp {
        return None;
    }
    let mut s = Selector::new(l, r).ok()?;
    s.protocol = lp;
    s.local_ports = lports;
    s.remote_ports = rports;
    Some(s)
}

/// The phase-1 identity of an address.
#[must_use]
pub const fn address_identity(a: IpAddr) -> Identity<'static> {
    match a {
        IpAddr::V4(a) => Identity::Ipv4Addr(a),
        IpAddr::V6(a) => Identity::Ipv6Addr(a),
    }
}

/// NAT-D: `hash(CKY-I | CKY-R | IP | port)` with the negotiated hash (RFC 3947 §3.2).
pub fn natd_hash<P: Prf>(
    hash: HashAlg,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    addr: SocketAddr,
) -> Result<([u8; MAX_HASH_LEN], usize), CryptoError> {
    let mut out = [0u8; MAX_HASH_LEN];
    let port = addr.port().to_be_bytes();
    let n = match addr.ip() {
        IpAddr::V4(a) => P::hash(hash, &[cky_i, cky_r, &a.octets(), &port], &mut out)?,
        IpAddr::V6(a) => P::hash(hash, &[cky_i, cky_r, &a.octets(), &port], &mut out)?,
    };
    Ok((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn ids_round_trip() {
        let cases = [
            AddrRange::host(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).unwrap(),
            AddrRange::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
            )
            .unwrap(),
            AddrRange::from_prefix("2001:db8::".parse().unwrap(), 64).unwrap(),
            AddrRange::host("2001:db8::1".parse().unwrap()),
            AddrRange::new(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            )
            .unwrap(),
        ];
        for r in cases {
            let id = id_for(&r, Some(6), &PortRange::single(80));
            let (back, p, ports) = range_of(&id).unwrap();
            assert_eq!((back, p, ports), (r, Some(6), PortRange::single(80)));
        }
        let any = id_for(&AddrRange::any_v4(), None, &PortRange::ANY);
        assert!(matches!(any.identity, Identity::Ipv4Subnet { .. }));
        assert_eq!(range_of(&any).unwrap().0, AddrRange::any_v4());
    }
}
