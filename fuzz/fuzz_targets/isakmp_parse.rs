//! `isakmp_parse`: the ISAKMP codec of `ipsec-ike` (`ipsec_ike::wire`).
//!
//! Byte 0 selects the mode; the rest is the input.
//!
//! * Even: the rest is one ISAKMP message (a UDP payload on port 500, or on port 4500
//!   after the non-ESP marker). `Header::new_checked` and `HeaderRepr::parse`
//!   (emit → parse must give the same header), then the payload chain as
//!   `Header::payloads` yields it, whether or not the E flag is set (a decrypted area
//!   goes through the same iterator): every `RawPayload` must lie in the area, its body
//!   inside its raw bytes; every payload goes through `PayloadRepr::from_raw`, and one
//!   that parses is emitted back (`emit_body`) and parsed again: equal, and byte for
//!   byte equal to the body except for NAT-OA (whose reserved bytes are zeroed on emit).
//!   A too-short buffer gives `BufferTooSmall`. `validate_chain` for every exchange type
//!   agrees with the iterator and `allowed_in`. If every payload parses, the message is
//!   rebuilt with `MessageBuilder` (plain, and padded for 8- and 16-byte blocks) and
//!   parsed again: same header fields and payloads.
//! * Odd: byte 1 is a payload type and the rest a payload body, for `PayloadRepr::parse`
//!   directly (the same round trip), so that SA / Proposal / Transform / attribute
//!   nesting is reached without a valid header and chain around it.
//!
//! For every SA payload that parses, each proposal, transform and attribute is walked;
//! the SA is rebuilt from caller slices (`NestedList::from_slice`,
//! `Attributes::from_slice`), which must compare equal to the parsed one and re-emit to
//! bytes that parse back equal. Each transform goes through
//! `Phase1Transform::from_attributes` and `EspTransform::from_attributes`; a decoded one
//! must survive `to_attributes` → `from_attributes` unchanged.
#![no_main]

use ipsec_ike::wire::ike_attr::Phase1Transform;
use ipsec_ike::wire::ipsec_attr::EspTransform;
use ipsec_ike::wire::{
    AttributeIter, AttributeRepr, Attributes, HEADER_LEN, Header, HeaderRepr, IkeWireError,
    MessageBuilder, PayloadRepr, Payloads, ProposalRepr, Proposals, SaRepr, TransformRepr,
    Transforms, allowed_in, exchange_type, payload_type, validate_chain,
};
use libfuzzer_sys::fuzz_target;

const EXCHANGES: [u8; 8] = [
    exchange_type::BASE,
    exchange_type::IDENTITY_PROTECTION,
    exchange_type::AUTHENTICATION_ONLY,
    exchange_type::AGGRESSIVE,
    exchange_type::INFORMATIONAL,
    exchange_type::QUICK_MODE,
    0,
    255,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        message(rest);
    } else if let Some((&t, body)) = rest.split_first() {
        if let Ok(r) = PayloadRepr::parse(t, body) {
            round_trip(&r, body);
        }
    }
});

fn message(data: &[u8]) {
    let Ok(h) = Header::new_checked(data) else {
        return;
    };
    let msg = h.message();
    assert!(msg.len() >= HEADER_LEN && msg.len() <= data.len());
    assert_eq!(msg.len(), h.length() as usize);
    let area = h.payload_area();
    assert_eq!(area.len(), msg.len() - HEADER_LEN);

    let hdr = HeaderRepr::parse(&h);
    if let Ok(r) = hdr {
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out).expect("header emit");
        assert_eq!(out[..17], data[..17], "header bytes before the version");
        assert_eq!(out[18..], data[18..HEADER_LEN], "header bytes after the version");
        let again = HeaderRepr::parse(&Header::new_unchecked(&out[..])).expect("re-parse");
        assert_eq!(again, r);
    } else {
        assert_ne!(h.major_version(), 1);
    }

    // The chain, whatever the E flag says.
    let mut reprs = Vec::new();
    let mut all_ok = true;
    let mut end = 0usize;
    let mut it = h.payloads();
    let mut count = 0usize;
    for p in it.by_ref() {
        count += 1;
        assert!(count <= area.len() / 4 + 1, "iterator does not advance");
        let p = match p {
            Ok(p) => p,
            Err(_) => {
                all_ok = false;
                break;
            }
        };
        assert_eq!(p.offset, end, "payload offsets are contiguous");
        assert!(p.raw.len() >= 4);
        assert_eq!(p.end(), p.offset + p.raw.len());
        assert!(p.end() <= area.len());
        assert_eq!(&area[p.offset..p.end()], p.raw);
        assert_eq!(&p.raw[4..], p.body);
        assert_eq!(p.raw[0], p.next_payload);
        end = p.end();
        match PayloadRepr::from_raw(&p) {
            Ok(r) => {
                round_trip(&r, p.body);
                reprs.push(r);
            }
            Err(e) => {
                if matches!(
                    p.payload_type,
                    payload_type::NONE | payload_type::PROPOSAL | payload_type::TRANSFORM
                ) {
                    assert_eq!(e, IkeWireError::InvalidPayloadType(p.payload_type));
                }
                all_ok = false;
            }
        }
    }
    let chain = Payloads::new(h.next_payload(), area).chain_end();
    if all_ok {
        assert_eq!(it.position(), end);
        assert_eq!(chain, Ok(end));
    }

    // validate_chain agrees with the iterator and `allowed_in`.
    for x in EXCHANGES.into_iter().chain([h.exchange_type()]) {
        let mut expect: Result<usize, IkeWireError> = Ok(0);
        for p in Payloads::new(h.next_payload(), area) {
            match p {
                Err(e) => {
                    expect = Err(e);
                    break;
                }
                Ok(p) if !allowed_in(x, p.payload_type) => {
                    expect = Err(IkeWireError::InvalidPayloadType(p.payload_type));
                    break;
                }
                Ok(p) => expect = Ok(p.end()),
            }
        }
        assert_eq!(validate_chain(x, h.next_payload(), area), expect, "exchange {x}");
    }

    // Rebuild the whole message from the parsed payloads.
    let Ok(hdr) = hdr else { return };
    if !all_ok {
        return;
    }
    for block in [None, Some(8usize), Some(16)] {
        let mut buf = vec![0u8; msg.len() + 64];
        let mut b = MessageBuilder::new(&mut buf, &hdr).expect("builder");
        for r in &reprs {
            b.push(r).expect("push a parsed payload");
        }
        let len = match block {
            None => b.finish().expect("finish"),
            Some(bl) => b.finish_encrypted(bl).expect("finish_encrypted"),
        };
        if let Some(bl) = block {
            assert_eq!((len - HEADER_LEN) % bl, 0, "padded to the block");
        }
        let h2 = Header::new_checked(&buf[..len]).expect("rebuilt header");
        let r2 = HeaderRepr::parse(&h2).expect("rebuilt header repr");
        assert_eq!(r2.length as usize, len);
        assert_eq!(
            (r2.initiator_cookie, r2.responder_cookie, r2.exchange_type, r2.message_id),
            (hdr.initiator_cookie, hdr.responder_cookie, hdr.exchange_type, hdr.message_id)
        );
        let first = reprs.first().map_or(payload_type::NONE, PayloadRepr::payload_type);
        assert_eq!(r2.next_payload, first);
        let again: Vec<_> = h2
            .payloads()
            .map(|p| PayloadRepr::from_raw(&p.expect("rebuilt chain")).expect("rebuilt payload"))
            .collect();
        assert_eq!(again, reprs, "rebuilt message");
    }
}

/// Emit → parse must give the same payload; the bytes are the received body except for
/// NAT-OA's reserved bytes.
fn round_trip(r: &PayloadRepr<'_>, body: &[u8]) {
    let n = r.body_len();
    let mut buf = vec![0u8; n];
    r.emit_body(&mut buf).expect("emit of a parsed payload");
    if !matches!(r, PayloadRepr::NatOa(_)) {
        assert_eq!(buf, body, "re-emitted body of type {}", r.payload_type());
    }
    let again = PayloadRepr::parse(r.payload_type(), &buf).expect("re-parse");
    assert_eq!(&again, r);
    if n > 0 {
        let mut short = vec![0u8; n - 1];
        assert_eq!(r.emit_body(&mut short), Err(IkeWireError::BufferTooSmall));
    }
    if let PayloadRepr::Sa(sa) = r {
        sa_deep(sa);
    }
    if let PayloadRepr::Delete(d) = r {
        let size = usize::from(d.spi_size.max(1));
        assert_eq!(d.iter().count() * size, d.spis.len());
    }
    if let PayloadRepr::Notify(n) = r {
        let _ = n.dpd_sequence();
    }
}

fn sa_deep(sa: &SaRepr<'_>) {
    let proposals: Vec<ProposalRepr<'_>> = sa.proposals.iter().collect();
    assert!(!proposals.is_empty(), "a parsed SA has proposals");
    assert_eq!(proposals.len(), sa.proposals.len());
    // Owned copies of every transform and attribute list, so the SA can be rebuilt from
    // caller slices.
    let mut transforms: Vec<Vec<TransformRepr<'_>>> = Vec::new();
    let mut attrs: Vec<Vec<Vec<AttributeRepr<'_>>>> = Vec::new();
    for p in &proposals {
        let ts: Vec<TransformRepr<'_>> = p.transforms.iter().collect();
        assert!(!ts.is_empty());
        assert_eq!(ts.len(), p.transforms.len());
        let mut per = Vec::new();
        for t in &ts {
            let a: Vec<AttributeRepr<'_>> = t.attributes.iter().collect();
            assert_eq!(a.len(), t.attributes.len());
            assert_eq!(
                a.iter().map(AttributeRepr::buffer_len).sum::<usize>(),
                t.attributes.buffer_len()
            );
            for x in &a {
                let mut b = vec![0u8; x.buffer_len()];
                x.emit(&mut b).expect("attribute emit");
                assert_eq!(AttributeRepr::parse(&b), Ok(*x));
                let _ = (x.as_u64(), x.as_u16());
            }
            decode_transform(p.protocol_id, t);
            per.push(a);
        }
        transforms.push(ts);
        attrs.push(per);
    }
    // Rebuild: transforms over attribute slices, proposals over transform slices.
    let rebuilt_ts: Vec<Vec<TransformRepr<'_>>> = transforms
        .iter()
        .zip(&attrs)
        .map(|(ts, per)| {
            ts.iter()
                .zip(per)
                .map(|(t, a)| TransformRepr {
                    number: t.number,
                    transform_id: t.transform_id,
                    attributes: Attributes::from_slice(a),
                })
                .collect()
        })
        .collect();
    let rebuilt_ps: Vec<ProposalRepr<'_>> = proposals
        .iter()
        .zip(&rebuilt_ts)
        .map(|(p, ts)| ProposalRepr {
            number: p.number,
            protocol_id: p.protocol_id,
            spi: p.spi,
            transforms: Transforms::from_slice(ts),
        })
        .collect();
    let rebuilt = SaRepr {
        doi: sa.doi,
        situation: sa.situation,
        proposals: Proposals::from_slice(&rebuilt_ps),
    };
    assert_eq!(&rebuilt, sa, "SA rebuilt from slices");
    assert_eq!(rebuilt.buffer_len(), sa.buffer_len(), "rebuilt SA length");
    let mut b = vec![0u8; rebuilt.buffer_len()];
    rebuilt.emit(&mut b).expect("rebuilt SA emit");
    assert_eq!(SaRepr::parse(&b).as_ref(), Ok(sa), "rebuilt SA re-parse");
}

fn decode_transform(protocol_id: u8, t: &TransformRepr<'_>) {
    // Every attribute in the list is valid (checked at parse).
    assert!(AttributeIter::new(&[]).next().is_none());
    if let Ok(p1) = Phase1Transform::from_attributes(&t.attributes) {
        let mut store = [AttributeRepr::basic(0, 0); 9];
        if let Ok(a) = p1.to_attributes(&mut store) {
            assert_eq!(
                Phase1Transform::from_attributes(&Attributes::from_slice(a)),
                Ok(p1),
                "phase-1 transform round trip (protocol {protocol_id})"
            );
        }
    }
    if let Ok(esp) = EspTransform::from_attributes(t.transform_id, &t.attributes) {
        let _ = esp.keymat_len();
        for draft in [false, true] {
            let mut store = [AttributeRepr::basic(0, 0); 9];
            if let Ok((id, a)) = esp.to_attributes(draft, &mut store) {
                assert_eq!(
                    EspTransform::from_attributes(id, &Attributes::from_slice(a)),
                    Ok(esp),
                    "ESP transform round trip (draft {draft})"
                );
            }
        }
    }
}
