//! The codec over real captures: every ISAKMP datagram parses (unencrypted ones down to
//! every attribute, encrypted ones to the header), rebuilds byte for byte, and no
//! truncation or corruption panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::BTreeSet;

use common::{hx, ike_datagrams, json};
use ipsec_ike::wire::{
    Attributes, Header, HeaderRepr, IkeWireError, MessageBuilder, PayloadRepr, Payloads,
    ProposalRepr, Proposals, SaRepr, TransformRepr, Transforms, exchange_type, ike_attr,
    ipsec_attr, notify, payload_type, validate_chain, vendor_id,
};

const CAPTURES: [&str; 5] = [
    "ipsec-ikev1-isakmp-main-mode.pcap",
    "ipsec-ikev1-isakmp-aggressive-mode.pcap",
    "ipsec.cap",
    "ikev1-certs.pcap",
    "ikev1_rubnds_mainmode_quickmode_reframed.pcap",
];

/// What a full parse of one unencrypted message found.
#[derive(Debug, Default)]
struct Summary {
    types: Vec<u8>,
    vids: Vec<Vec<u8>>,
    nat_d: Vec<Vec<u8>>,
    ke_lens: Vec<usize>,
    nonce_lens: Vec<usize>,
    proposals: usize,
    transforms: usize,
    attributes: usize,
    notifies: Vec<u16>,
}

fn parse_full(msg: &[u8]) -> Result<Summary, IkeWireError> {
    let h = Header::new_checked(msg)?;
    let hr = HeaderRepr::parse(&h)?;
    assert!(!h.is_encrypted());
    validate_chain(hr.exchange_type, hr.next_payload, h.payload_area())?;
    let mut s = Summary::default();
    for p in h.payloads() {
        let p = p?;
        s.types.push(p.payload_type);
        match PayloadRepr::from_raw(&p)? {
            PayloadRepr::Sa(sa) => {
                for prop in sa.proposals.iter() {
                    s.proposals += 1;
                    for t in prop.transforms.iter() {
                        s.transforms += 1;
                        s.attributes += t.attributes.len();
                        if prop.protocol_id == 1 {
                            // Phase-1 proposals in these captures are all algorithms we know.
                            let p1 = ike_attr::Phase1Transform::from_attributes(&t.attributes);
                            assert!(
                                p1.is_ok()
                                    || t.attributes.get(ike_attr::attr::AUTH_METHOD).is_some(),
                                "{p1:?}"
                            );
                        }
                    }
                }
            }
            PayloadRepr::VendorId(v) => s.vids.push(v.data.to_vec()),
            PayloadRepr::NatD(n) => s.nat_d.push(n.data.to_vec()),
            PayloadRepr::Ke(k) => s.ke_lens.push(k.data.len()),
            PayloadRepr::Nonce(n) => s.nonce_lens.push(n.data.len()),
            PayloadRepr::Notify(n) => s.notifies.push(n.notify_type),
            _ => {}
        }
    }
    Ok(s)
}

/// Rebuilds an unencrypted message from its Reprs, with every nested list turned into
/// caller-provided items, and returns the bytes.
fn rebuild(msg: &[u8]) -> Vec<u8> {
    let h = Header::new_checked(msg).unwrap();
    let hr = HeaderRepr::parse(&h).unwrap();
    let raws: Vec<_> = h.payloads().map(Result::unwrap).collect();
    let reprs: Vec<PayloadRepr<'_>> = raws
        .iter()
        .map(|p| PayloadRepr::from_raw(p).unwrap())
        .collect();

    // Deep copies of the SA payloads' nested lists (stage by stage, for the borrows).
    let sas: Vec<SaRepr<'_>> = reprs
        .iter()
        .filter_map(|r| {
            if let PayloadRepr::Sa(s) = r {
                Some(*s)
            } else {
                None
            }
        })
        .collect();
    let props: Vec<Vec<ProposalRepr<'_>>> =
        sas.iter().map(|s| s.proposals.iter().collect()).collect();
    let attrs: Vec<Vec<Vec<Vec<_>>>> = props
        .iter()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    p.transforms
                        .iter()
                        .map(|t| t.attributes.iter().collect())
                        .collect()
                })
                .collect()
        })
        .collect();
    let trans: Vec<Vec<Vec<TransformRepr<'_>>>> = props
        .iter()
        .zip(&attrs)
        .map(|(ps, a)| {
            ps.iter()
                .zip(a)
                .map(|(p, a)| {
                    p.transforms
                        .iter()
                        .zip(a)
                        .map(|(t, a)| TransformRepr {
                            attributes: Attributes::from_slice(a),
                            ..t
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let props2: Vec<Vec<ProposalRepr<'_>>> = props
        .iter()
        .zip(&trans)
        .map(|(ps, t)| {
            ps.iter()
                .zip(t)
                .map(|(p, t)| ProposalRepr {
                    transforms: Transforms::from_slice(t),
                    ..*p
                })
                .collect()
        })
        .collect();
    let mut sa_items = sas.iter().zip(&props2).map(|(s, p)| SaRepr {
        proposals: Proposals::from_slice(p),
        ..*s
    });

    let mut buf = vec![0u8; msg.len() + 64];
    let mut b = MessageBuilder::new(&mut buf, &hr).unwrap();
    for r in &reprs {
        let r = match r {
            PayloadRepr::Sa(_) => PayloadRepr::Sa(sa_items.next().unwrap()),
            other => *other,
        };
        b.push(&r).unwrap();
    }
    let len = b.finish().unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn every_isakmp_datagram_parses() {
    let mut unencrypted = 0;
    let mut encrypted = 0;
    for cap in CAPTURES {
        let dgs = ike_datagrams(cap);
        assert!(!dgs.is_empty(), "{cap}");
        for d in &dgs {
            let h = Header::new_checked(&d.data[..])
                .unwrap_or_else(|e| panic!("{cap} #{}: {e}", d.frame));
            let hr = HeaderRepr::parse(&h).unwrap();
            assert_eq!(hr.length as usize, d.data.len(), "{cap} #{}", d.frame);
            if h.is_encrypted() {
                encrypted += 1;
                // CBC ciphertext: 3DES or AES blocks.
                assert_eq!(h.payload_area().len() % 8, 0, "{cap} #{}", d.frame);
                assert!(matches!(
                    hr.exchange_type,
                    exchange_type::IDENTITY_PROTECTION
                        | exchange_type::AGGRESSIVE
                        | exchange_type::QUICK_MODE
                ));
            } else {
                unencrypted += 1;
                let s = parse_full(&d.data).unwrap_or_else(|e| panic!("{cap} #{}: {e}", d.frame));
                assert!(!s.types.is_empty());
                // Whatever was parsed re-emits byte for byte from items.
                assert_eq!(rebuild(&d.data), d.data, "{cap} #{}", d.frame);
            }
        }
    }
    assert_eq!(unencrypted, 4 + 2 + 6 + 4 + 4, "unencrypted datagrams");
    assert_eq!(encrypted, 5 + 4 + 5 + 6 + 5, "encrypted datagrams");
}

#[test]
fn main_mode_capture_details() {
    let dgs = ike_datagrams("ipsec-ikev1-isakmp-main-mode.pcap");
    let mm1 = parse_full(&dgs[0].data).unwrap();
    assert_eq!(mm1.types, [1, 13, 13, 13, 13]);
    assert_eq!((mm1.proposals, mm1.transforms, mm1.attributes), (1, 1, 7));
    assert_eq!(mm1.vids[0], vendor_id::NATT_RFC3947);
    assert_eq!(
        vendor_id::nat_t_variant(&mm1.vids[2]),
        Some(vendor_id::NatTVariant::Draft)
    );

    // The phase-1 transform: AES-128 / SHA / group 2 / PSK / 86400 s.
    let h = Header::new_checked(&dgs[0].data[..]).unwrap();
    let sa = h.payloads().next().unwrap().unwrap();
    let PayloadRepr::Sa(sa) = PayloadRepr::from_raw(&sa).unwrap() else {
        panic!()
    };
    let t = sa
        .proposals
        .iter()
        .next()
        .unwrap()
        .transforms
        .iter()
        .next()
        .unwrap();
    let p1 = ike_attr::Phase1Transform::from_attributes(&t.attributes).unwrap();
    assert_eq!(p1.cipher, hal_traits::CipherAlg::Aes128Cbc);
    assert_eq!(p1.hash, hal_traits::HashAlg::Sha1);
    assert_eq!(p1.group, hal_traits::DhGroup::Modp1024);
    assert_eq!(p1.auth_method, ike_attr::auth_method::PRE_SHARED_KEY);

    let mm3 = parse_full(&dgs[2].data).unwrap();
    assert_eq!(mm3.types, [4, 10, 13, 13, 13, 20, 20]);
    assert_eq!(mm3.ke_lens, [128]);
    assert_eq!(mm3.nonce_lens, [20]);
    assert!(mm3.vids.iter().any(|v| v[..] == vendor_id::DPD));
    assert!(mm3.vids.iter().any(|v| v[..] == vendor_id::XAUTH));
}

#[test]
fn aggressive_mode_and_informational() {
    let dgs = ike_datagrams("ipsec-ikev1-isakmp-aggressive-mode.pcap");
    let am1 = parse_full(&dgs[0].data).unwrap();
    assert_eq!(am1.types, [1, 13, 13, 13, 13, 4, 10, 5, 13, 13, 13]);
    let am2 = parse_full(&dgs[1].data).unwrap();
    assert_eq!(am2.types, [1, 13, 13, 13, 13, 13, 4, 5, 10, 8, 20, 20]);
    let h = Header::new_checked(&dgs[0].data[..]).unwrap();
    let id = h
        .payloads()
        .map(Result::unwrap)
        .find(|p| p.payload_type == payload_type::ID)
        .unwrap();
    let PayloadRepr::Id(id) = PayloadRepr::from_raw(&id).unwrap() else {
        panic!()
    };
    assert_eq!(id.protocol_id, 17);
    assert_eq!(
        id.identity,
        ipsec_ike::wire::Identity::Ipv4Addr([192, 168, 12, 2].into())
    );

    // ipsec.cap frame 3: an unencrypted Informational NO-PROPOSAL-CHOSEN.
    let dgs = ike_datagrams("ipsec.cap");
    let info = dgs.iter().find(|d| d.frame == 3).unwrap();
    let s = parse_full(&info.data).unwrap();
    assert_eq!(s.notifies, [notify::NO_PROPOSAL_CHOSEN]);

    // ikev1-certs frame 4 carries a CERT_REQ (kept raw).
    let dgs = ike_datagrams("ikev1-certs.pcap");
    let s = parse_full(&dgs[3].data).unwrap();
    assert_eq!(s.types, [4, 10, 7]);
}

#[test]
fn vendor_ids_match_reference() {
    let reference = json("natt_dpd_gre_reference.json");
    let mut seen = BTreeSet::new();
    for cap in CAPTURES {
        for d in ike_datagrams(cap) {
            let h = Header::new_checked(&d.data[..]).unwrap();
            if h.is_encrypted() {
                continue;
            }
            seen.extend(parse_full(&d.data).unwrap().vids);
        }
    }
    let mut checked = 0;
    for v in reference["vendor_ids"].as_array().unwrap() {
        let vid = hx(&v["vendor_id"]);
        if v["seen_in_real_capture"].as_bool().unwrap() {
            assert!(seen.contains(&vid), "{} not found", v["name"]);
            checked += 1;
        }
    }
    assert!(checked >= 10);
    for (name, ours) in [
        ("RFC 3947", &vendor_id::NATT_RFC3947[..]),
        ("RFC 3706 DPD", &vendor_id::DPD[..]),
        ("XAUTH", &vendor_id::XAUTH[..]),
        (
            "draft-ietf-ipsec-nat-t-ike-03",
            &vendor_id::NATT_DRAFT_03[..],
        ),
        (
            "draft-ietf-ipsec-nat-t-ike-02",
            &vendor_id::NATT_DRAFT_02[..],
        ),
        (
            "draft-ietf-ipsec-nat-t-ike-02\\n",
            &vendor_id::NATT_DRAFT_02_N[..],
        ),
    ] {
        let r = reference["vendor_ids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        assert_eq!(hx(&r["vendor_id"]), ours, "{name}");
    }
    let c = &reference["nat_t_constants"];
    assert_eq!(c["nat_d_payload_type"], payload_type::NAT_D);
    assert_eq!(c["nat_oa_payload_type"], payload_type::NAT_OA);
    assert_eq!(c["draft_payload_types"]["NAT_D"], payload_type::NAT_D_DRAFT);
    assert_eq!(
        c["draft_payload_types"]["NAT_OA"],
        payload_type::NAT_OA_DRAFT
    );
    assert_eq!(
        c["encapsulation_modes"]["draft_UDP_Encapsulated_Tunnel"],
        ipsec_attr::encapsulation::UDP_TUNNEL_DRAFT
    );
    assert_eq!(reference["dpd_constants"]["R_U_THERE"], notify::R_U_THERE);
    assert_eq!(
        reference["dpd_constants"]["R_U_THERE_ACK"],
        notify::R_U_THERE_ACK
    );
}

#[test]
fn nat_d_payloads_match_reference() {
    let reference = json("natt_dpd_gre_reference.json");
    let examples = reference["nat_d"]["real_examples"].as_array().unwrap();
    for ex in examples {
        let cap = ex["capture"]
            .as_str()
            .unwrap()
            .trim_start_matches("captures/");
        let frame = ex["frame"].as_u64().unwrap() as usize;
        let d = ike_datagrams(cap)
            .into_iter()
            .find(|d| d.frame == frame)
            .unwrap();
        let s = parse_full(&d.data).unwrap();
        let want = hx(&ex["nat_d"]);
        let pos = s
            .nat_d
            .iter()
            .position(|n| *n == want)
            .unwrap_or_else(|| panic!("{ex}"));
        // The first NAT-D covers the remote (destination) address.
        let remote = ex["role"].as_str().unwrap().starts_with("remote");
        assert_eq!(pos == 0, remote, "{ex}");
        let h = Header::new_checked(&d.data[..]).unwrap();
        assert_eq!(&h.initiator_cookie()[..], &hx(&ex["cky_i"])[..]);
        assert_eq!(&h.responder_cookie()[..], &hx(&ex["cky_r"])[..]);
    }
    assert_eq!(examples.len(), 8);
}

#[test]
fn malformed_captures_are_errors() {
    let bad = ike_datagrams("ipsec-ikev1-payload-bad-length.pcap");
    assert_eq!(bad.len(), 1);
    let h = Header::new_checked(&bad[0].data[..]).unwrap();
    let err = h.payloads().find_map(Result::err).unwrap();
    assert_eq!(err, IkeWireError::BadLength);
    assert_eq!(err.notify_type(), Some(notify::PAYLOAD_MALFORMED));
    assert_eq!(
        parse_full(&bad[0].data).unwrap_err(),
        IkeWireError::BadLength
    );

    let zero = ike_datagrams("ipsec-ikev1-zero-length.pcap");
    assert_eq!(zero.len(), 1);
    let err = Header::new_checked(&zero[0].data[..]).unwrap_err();
    assert_eq!(err, IkeWireError::BadLength);
    assert_eq!(err.notify_type(), Some(notify::PAYLOAD_MALFORMED));
}

#[test]
fn round_trip_real_mm1() {
    for cap in CAPTURES {
        let d = &ike_datagrams(cap)[0];
        // Verbatim: parsed Reprs keep their bytes.
        let h = Header::new_checked(&d.data[..]).unwrap();
        let hr = HeaderRepr::parse(&h).unwrap();
        assert_eq!(hr.message_id, 0);
        assert_eq!(hr.responder_cookie, [0; 8]);
        let mut buf = vec![0u8; 2048];
        let mut b = MessageBuilder::new(&mut buf, &hr).unwrap();
        for p in h.payloads() {
            b.push(&PayloadRepr::from_raw(&p.unwrap()).unwrap())
                .unwrap();
        }
        let n = b.finish().unwrap();
        assert_eq!(&buf[..n], &d.data[..], "{cap}");
        // From items.
        assert_eq!(rebuild(&d.data), d.data, "{cap}");
    }
}

#[test]
fn truncation_never_panics_and_is_always_an_error() {
    for cap in CAPTURES {
        for d in ike_datagrams(cap) {
            let msg = &d.data;
            let encrypted = Header::new_checked(&msg[..]).unwrap().is_encrypted();
            for n in 0..msg.len() {
                // As received: the header length no longer fits.
                assert!(Header::new_checked(&msg[..n]).is_err());
                if n < 28 || encrypted {
                    continue;
                }
                // With the length field patched to the truncated size, the chain breaks.
                let mut t = msg[..n].to_vec();
                t[24..28].copy_from_slice(&(n as u32).to_be_bytes());
                assert!(parse_full(&t).is_err(), "{cap} #{} at {n}", d.frame);
                // Payload by payload, nothing panics either.
                let h = Header::new_checked(&t[..]).unwrap();
                for p in h.payloads().flatten() {
                    let _ = PayloadRepr::from_raw(&p);
                }
            }
        }
    }
}

#[test]
fn corruption_never_panics() {
    // A deterministic xorshift over every unencrypted message: flip bytes, parse deeply.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for cap in CAPTURES {
        for d in ike_datagrams(cap) {
            if Header::new_checked(&d.data[..]).unwrap().is_encrypted() {
                continue;
            }
            for _ in 0..300 {
                let mut m = d.data.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                let _ = parse_full_lenient(&m);
            }
        }
    }
}

/// Like `parse_full` but never asserts: used on corrupted input.
fn parse_full_lenient(msg: &[u8]) -> Result<(), IkeWireError> {
    let h = Header::new_checked(msg)?;
    let hr = HeaderRepr::parse(&h)?;
    let _ = validate_chain(hr.exchange_type, hr.next_payload, h.payload_area());
    for p in Payloads::new(hr.next_payload, h.payload_area()) {
        if let PayloadRepr::Sa(sa) = PayloadRepr::from_raw(&p?)? {
            for prop in sa.proposals.iter() {
                for t in prop.transforms.iter() {
                    let _ = ike_attr::Phase1Transform::from_attributes(&t.attributes);
                    let _ =
                        ipsec_attr::EspTransform::from_attributes(t.transform_id, &t.attributes);
                    for a in t.attributes.iter() {
                        let _ = a.as_u64();
                    }
                }
            }
        }
    }
    Ok(())
}
