//! A received message's payloads, collected once (every length and type checked by the
//! codec), and the CBC helpers of RFC 2409 Appendix B.

use hal_traits::CbcCipher;

use super::IkeError;
use super::keys::Iv;
use crate::wire::consts::payload_type as pt;
use crate::wire::{
    DeleteRepr, HEADER_LEN, IdRepr, IkeWireError, NatOaRepr, NotifyRepr, PayloadRepr, Payloads,
    RawPayload, SaRepr, validate_chain,
};

/// The payloads of one message, by type.
#[derive(Default)]
pub struct Msg<'a> {
    /// The HASH payload, if any, and whether it came first.
    pub hash: Option<&'a [u8]>,
    pub hash_first: bool,
    /// Every payload after the first (HASH) one, up to the end of the chain: what Quick
    /// Mode and Informational hashes cover.
    pub after_first: &'a [u8],
    pub sa: Option<(SaRepr<'a>, &'a [u8])>,
    pub ke: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
    /// Identification payloads in order, with their bodies.
    pub ids: heapless::Vec<(IdRepr<'a>, &'a [u8]), 2>,
    pub natd: heapless::Vec<&'a [u8], 4>,
    pub vids: heapless::Vec<&'a [u8], 8>,
    pub notifies: heapless::Vec<NotifyRepr<'a>, 4>,
    pub deletes: heapless::Vec<DeleteRepr<'a>, 4>,
    /// NAT-OA payloads in order (Quick Mode: NAT-OAi, NAT-OAr).
    pub nat_oa: heapless::Vec<NatOaRepr, 2>,
}

/// Collects the chain in `area` (whose first payload has type `first`) for an
/// exchange of type `exchange`.
///
/// # Errors
/// The codec's error (with the notify it deserves): bad lengths, payload types unknown
/// or not allowed in the exchange, malformed bodies, too many IDs / NAT-D / notifies.
pub fn parse(exchange: u8, first: u8, area: &[u8]) -> Result<Msg<'_>, IkeWireError> {
    let end = validate_chain(exchange, first, area)?;
    let mut m = Msg::default();
    let mut first_end = None;
    for (n, raw) in Payloads::new(first, area).enumerate() {
        let raw: RawPayload<'_> = raw?;
        if n == 0 {
            first_end = Some(raw.end());
        }
        match PayloadRepr::from_raw(&raw)? {
            PayloadRepr::Hash(h) => {
                if m.hash.is_some() {
                    return Err(IkeWireError::Malformed);
                }
                m.hash = Some(h.data);
                m.hash_first = n == 0;
            }
            PayloadRepr::Sa(s) => {
                if m.sa.is_some() {
                    return Err(IkeWireError::Malformed);
                }
                m.sa = Some((s, raw.body));
            }
            PayloadRepr::Ke(k) => {
                if m.ke.replace(k.data).is_some() {
                    return Err(IkeWireError::Malformed);
                }
            }
            PayloadRepr::Nonce(x) => {
                if m.nonce.replace(x.data).is_some() {
                    return Err(IkeWireError::Malformed);
                }
            }
            PayloadRepr::Id(id) => m
                .ids
                .push((id, raw.body))
                .map_err(|_| IkeWireError::Malformed)?,
            PayloadRepr::NatD(d) => m.natd.push(d.data).map_err(|_| IkeWireError::Malformed)?,
            PayloadRepr::VendorId(v) => {
                // More vendor IDs than we track are ignored.
                let _ = m.vids.push(v.data);
            }
            PayloadRepr::Notify(x) => m.notifies.push(x).map_err(|_| IkeWireError::Malformed)?,
            PayloadRepr::Delete(d) => m.deletes.push(d).map_err(|_| IkeWireError::Malformed)?,
            PayloadRepr::NatOa(o) => m.nat_oa.push(o).map_err(|_| IkeWireError::Malformed)?,
            // CERT, CERT_REQ, SIG: allowed by the chain rules, not used.
            PayloadRepr::Other { .. } => {}
        }
    }
    if let Some(fe) = first_end {
        m.after_first = area.get(fe..end).unwrap_or(&[]);
    }
    Ok(m)
}

impl Msg<'_> {
    /// The HASH payload, required first (Quick Mode, Informational).
    pub fn leading_hash(&self) -> Result<&[u8], IkeError> {
        match (self.hash, self.hash_first) {
            (Some(h), true) => Ok(h),
            _ => Err(IkeError::Malformed(IkeWireError::InvalidPayloadType(
                pt::HASH,
            ))),
        }
    }
}

/// The leading HASH payload's body and every payload after it up to the end of the
/// chain, found by lengths only (payload types not yet judged): what Quick Mode and
/// Informational hashes cover, so a message is authenticated before its contents are
/// examined.
///
/// # Errors
/// Length errors; [`IkeWireError::InvalidPayloadType`] if the first payload is not HASH.
pub fn hashed(first: u8, area: &[u8]) -> Result<(&[u8], &[u8]), IkeWireError> {
    if first != pt::HASH {
        return Err(IkeWireError::InvalidPayloadType(first));
    }
    let mut it = Payloads::new(first, area);
    let h = it.next().ok_or(IkeWireError::Truncated)??;
    for p in it.by_ref() {
        p?;
    }
    let end = it.position();
    Ok((h.body, area.get(h.end()..end).unwrap_or(&[])))
}

/// Decrypts the payload area of `msg` (a checked message) into `rx`. Returns the
/// plaintext area and the IV for the next message (the last ciphertext block).
///
/// # Errors
/// [`IkeError::Malformed`] if the area is empty or not a whole number of blocks;
/// [`IkeError::TooLarge`]; provider errors.
pub fn decrypt<'r, C: CbcCipher>(
    cbc: &C,
    iv: &Iv,
    msg: &[u8],
    rx: &'r mut [u8],
) -> Result<(&'r [u8], Iv), IkeError> {
    let ct = msg.get(HEADER_LEN..).unwrap_or(&[]);
    if ct.is_empty() {
        return Err(IkeError::Malformed(IkeWireError::BadLength));
    }
    let next = iv
        .chain(ct)
        .map_err(|_| IkeError::Malformed(IkeWireError::BadLength))?;
    let pt = rx.get_mut(..ct.len()).ok_or(IkeError::TooLarge)?;
    pt.copy_from_slice(ct);
    cbc.decrypt(iv.as_slice(), pt)?;
    Ok((pt, next))
}

/// Encrypts `buf[28..len]` (padded by the builder) in place; returns the next IV.
///
/// # Errors
/// Provider errors; [`IkeError::TooLarge`] if `len` is out of range.
pub fn encrypt<C: CbcCipher>(cbc: &C, iv: &Iv, buf: &mut [u8], len: usize) -> Result<Iv, IkeError> {
    let area = buf.get_mut(HEADER_LEN..len).ok_or(IkeError::TooLarge)?;
    cbc.encrypt(iv.as_slice(), area)?;
    Ok(iv.chain(area)?)
}
