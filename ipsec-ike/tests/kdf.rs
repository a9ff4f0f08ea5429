//! IKEv1 key derivation against NIST CAVS and a real recorded exchange, and codec + key
//! schedule together: decrypting real messages with the derived keys and parsing them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::{arr8, hx, ike_datagrams, json};
use hal_traits::{CbcCipher, CipherAlg, DhGroup, DiffieHellman, HashAlg};
use ipsec_ike::v1::keys::{Iv, Phase1Keys, phase1_iv, phase2_iv, skeyid_psk};
use ipsec_ike::wire::{
    Header, HeaderRepr, IdRepr, Identity, MessageBuilder, NotifyRepr, PayloadRepr, Payloads,
    RawPayload, ipsec_attr::EspTransform, notify, payload_type, protocol_id,
};
use ipsec_soft_crypto::{SoftCbc, SoftDh, SoftPrf};
use serde_json::Value;

type Keys = Phase1Keys<SoftPrf>;

fn hash_of(name: &str) -> HashAlg {
    match name {
        "SHA-1" => HashAlg::Sha1,
        "SHA-256" => HashAlg::Sha256,
        "SHA-384" => HashAlg::Sha384,
        "SHA-512" => HashAlg::Sha512,
        other => panic!("hash {other}"),
    }
}

#[test]
fn nist_cavs_ikev1_psk() {
    let v = json("nist_cavs_ikev1_psk_small.json");
    let mut n = 0;
    for g in v["groups"].as_array().unwrap() {
        let hash = hash_of(g["params"]["hash"].as_str().unwrap());
        for t in g["tests"].as_array().unwrap() {
            let k = Keys::from_psk(
                hash,
                &hx(&t["psk"]),
                &hx(&t["ni"]),
                &hx(&t["nr"]),
                &hx(&t["g_xy"]),
                &arr8(&hx(&t["cky_i"])),
                &arr8(&hx(&t["cky_r"])),
            )
            .unwrap();
            assert_eq!(k.skeyid().expose(), hx(&t["skeyid"]), "{t}");
            assert_eq!(k.skeyid_d().expose(), hx(&t["skeyid_d"]), "{t}");
            assert_eq!(k.skeyid_a().expose(), hx(&t["skeyid_a"]), "{t}");
            assert_eq!(k.skeyid_e().expose(), hx(&t["skeyid_e"]), "{t}");
            n += 1;
        }
    }
    assert_eq!(n, 17 * 3);
}

/// Everything of one recorded Main Mode, keyed from the JSON.
struct Session {
    v: Value,
    keys: Keys,
    cky_i: [u8; 8],
    cky_r: [u8; 8],
}

impl Session {
    fn new(v: &Value) -> Self {
        let cky_i = arr8(&hx(&v["cky_i"]));
        let cky_r = arr8(&hx(&v["cky_r"]));
        let keys = Keys::from_psk(
            HashAlg::Sha1,
            b"AAAA",
            &hx(&v["ni_b"]),
            &hx(&v["nr_b"]),
            &hx(&v["g_xy"]),
            &cky_i,
            &cky_r,
        )
        .unwrap();
        Self {
            v: v.clone(),
            keys,
            cky_i,
            cky_r,
        }
    }

    fn check_phase1(&self) {
        let v = &self.v;
        let k = &self.keys;
        assert_eq!(k.skeyid().expose(), hx(&v["skeyid"]));
        assert_eq!(k.skeyid_d().expose(), hx(&v["skeyid_d"]));
        assert_eq!(k.skeyid_a().expose(), hx(&v["skeyid_a"]));
        assert_eq!(k.skeyid_e().expose(), hx(&v["skeyid_e"]));
        let ka = v.get("enc_key_ka").or(v.get("ka")).unwrap();
        assert_eq!(
            k.encryption_key(CipherAlg::Aes128Cbc).unwrap().expose(),
            hx(ka)
        );
        let iv = phase1_iv::<SoftPrf>(HashAlg::Sha1, &hx(&v["g_xi"]), &hx(&v["g_xr"]), 16).unwrap();
        assert_eq!(iv.as_slice(), hx(&v["phase1_iv"]));
        let sai_b = hx(&v["sai_b"]);
        let (g_xi, g_xr) = (hx(&v["g_xi"]), hx(&v["g_xr"]));
        if let Some(h) = v.get("hash_i") {
            let d = k
                .hash_i(
                    &g_xi,
                    &g_xr,
                    &self.cky_i,
                    &self.cky_r,
                    &sai_b,
                    &hx(&v["idii_b"]),
                )
                .unwrap();
            assert_eq!(d.as_slice(), hx(h));
        }
        if let Some(h) = v.get("hash_r") {
            let d = k
                .hash_r(
                    &g_xi,
                    &g_xr,
                    &self.cky_i,
                    &self.cky_r,
                    &sai_b,
                    &hx(&v["idir_b"]),
                )
                .unwrap();
            assert_eq!(d.as_slice(), hx(h));
            d.verify(&hx(h)).unwrap();
            assert!(d.verify(&hx(&v["skeyid"])).is_err());
        }
    }

    fn cipher(&self) -> SoftCbc {
        SoftCbc::new(
            CipherAlg::Aes128Cbc,
            self.keys
                .encryption_key(CipherAlg::Aes128Cbc)
                .unwrap()
                .expose(),
        )
        .unwrap()
    }
}

/// Decrypts a message's payload area with `iv`; returns the plaintext area and the IV for
/// the next message (the last ciphertext block).
fn decrypt(cbc: &SoftCbc, msg: &[u8], iv: &Iv) -> (Vec<u8>, Iv) {
    let h = Header::new_checked(msg).unwrap();
    assert!(h.is_encrypted());
    let ct = h.payload_area();
    let next = iv.chain(ct).unwrap();
    let mut pt = ct.to_vec();
    cbc.decrypt(iv.as_slice(), &mut pt).unwrap();
    (pt, next)
}

fn chain(first: u8, area: &[u8]) -> (Vec<RawPayload<'_>>, usize) {
    let mut it = Payloads::new(first, area);
    let v: Vec<_> = it.by_ref().map(Result::unwrap).collect();
    (v, it.position())
}

/// The payloads after the first (HASH) one, up to the end of the chain (no padding).
fn after_hash<'a>(area: &'a [u8], ps: &[RawPayload<'a>], end: usize) -> &'a [u8] {
    assert_eq!(ps[0].payload_type, payload_type::HASH);
    &area[ps[0].end()..end]
}

#[test]
fn rubnds_main_mode_quick_mode() {
    let all = json("ikev1_mainmode_psk_rubnds.json");
    let mm = &all["main_mode_exchange"];
    let s = Session::new(mm);
    s.check_phase1();

    // Diffie-Hellman through the provider: our g^xi and the shared secret.
    let dh =
        SoftDh::from_private(DhGroup::Modp1024, &hx(&mm["dh_private_x_initiator_hex"])).unwrap();
    let mut buf = [0u8; 128];
    dh.public_key(&mut buf).unwrap();
    assert_eq!(buf[..], hx(&mm["g_xi"])[..]);
    dh.shared_secret(&hx(&mm["g_xr"]), &mut buf).unwrap();
    assert_eq!(buf[..], hx(&mm["g_xy"])[..]);

    // The messages in the JSON are those of the reframed capture.
    let dgs = ike_datagrams("ikev1_rubnds_mainmode_quickmode_reframed.pcap");
    let names = ["m1", "m2", "m3", "m4", "m5", "m6", "qm1", "qm2", "qm3"];
    for (d, n) in dgs.iter().zip(names) {
        assert_eq!(d.data, hx(&mm["messages"][n]), "{n}");
    }
    let msg = |n: &str| hx(&mm["messages"][n]);

    // Nonces and KE from the unencrypted messages agree with the JSON.
    let m3 = msg("m3");
    let h3 = Header::new_checked(&m3[..]).unwrap();
    let (ps, _) = chain(h3.next_payload(), h3.payload_area());
    assert_eq!(ps[0].body, hx(&mm["g_xi"]));
    assert_eq!(ps[1].body, hx(&mm["ni_b"]));
    let m1 = msg("m1");
    let h1 = Header::new_checked(&m1[..]).unwrap();
    assert_eq!(
        h1.payloads().next().unwrap().unwrap().body,
        hx(&mm["sai_b"])
    );

    // MM5 / MM6: decrypt with Ka and the phase-1 IV, parse, check HASH_I and HASH_R.
    let cbc = s.cipher();
    let iv = phase1_iv::<SoftPrf>(HashAlg::Sha1, &hx(&mm["g_xi"]), &hx(&mm["g_xr"]), 16).unwrap();
    let m5 = msg("m5");
    let (pt5, iv) = decrypt(&cbc, &m5, &iv);
    assert_eq!(pt5, hx(&mm["m5_plaintext"]));
    let (ps, _) = chain(Header::new_checked(&m5[..]).unwrap().next_payload(), &pt5);
    assert_eq!(
        ps.iter().map(|p| p.payload_type).collect::<Vec<_>>(),
        [payload_type::ID, payload_type::HASH]
    );
    let PayloadRepr::Id(id) = PayloadRepr::from_raw(&ps[0]).unwrap() else {
        panic!()
    };
    assert_eq!(id, IdRepr::new(Identity::Ipv4Addr([10, 0, 3, 1].into())));
    let sai_b = hx(&mm["sai_b"]);
    let (g_xi, g_xr) = (hx(&mm["g_xi"]), hx(&mm["g_xr"]));
    s.keys
        .hash_i(&g_xi, &g_xr, &s.cky_i, &s.cky_r, &sai_b, ps[0].body)
        .unwrap()
        .verify(ps[1].body)
        .unwrap();

    let m6 = msg("m6");
    let (pt6, _) = decrypt(&cbc, &m6, &iv);
    assert_eq!(pt6, hx(&mm["m6_plaintext"]));
    let (ps, _) = chain(Header::new_checked(&m6[..]).unwrap().next_payload(), &pt6);
    s.keys
        .hash_r(&g_xi, &g_xr, &s.cky_i, &s.cky_r, &sai_b, ps[0].body)
        .unwrap()
        .verify(ps[1].body)
        .unwrap();
    let m6_ct = Header::new_checked(&m6[..])
        .unwrap()
        .payload_area()
        .to_vec();
    let last_p1_block = &m6_ct[m6_ct.len() - 16..];

    // Quick Mode.
    let qm = &mm["quick_mode"];
    let mid = u32::from_str_radix(qm["message_id"].as_str().unwrap(), 16).unwrap();
    let iv = phase2_iv::<SoftPrf>(HashAlg::Sha1, last_p1_block, mid).unwrap();
    assert_eq!(iv.as_slice(), hx(&qm["iv_first"]));

    let qm1 = msg("qm1");
    let hq1 = HeaderRepr::parse(&Header::new_checked(&qm1[..]).unwrap()).unwrap();
    assert_eq!(hq1.message_id, mid);
    let (pt1, iv) = decrypt(&cbc, &qm1, &iv);
    assert_eq!(pt1, hx(&qm["qm1_plaintext"]));
    let (ps1, end1) = chain(hq1.next_payload, &pt1);
    assert_eq!(
        ps1.iter().map(|p| p.payload_type).collect::<Vec<_>>(),
        [
            payload_type::HASH,
            payload_type::SA,
            payload_type::NONCE,
            payload_type::ID,
            payload_type::ID
        ]
    );
    let h1 = s
        .keys
        .quick_hash1(mid, after_hash(&pt1, &ps1, end1))
        .unwrap();
    assert_eq!(h1.as_slice(), hx(&qm["hash1"]));
    h1.verify(ps1[0].body).unwrap();
    let ni_b = ps1[2].body;
    assert_eq!(ni_b, hx(&qm["ni_b"]));
    let PayloadRepr::Sa(sa1) = PayloadRepr::from_raw(&ps1[1]).unwrap() else {
        panic!()
    };
    let prop1 = sa1.proposals.iter().next().unwrap();
    assert_eq!(prop1.protocol_id, protocol_id::ESP);
    assert_eq!(prop1.spi, hx(&qm["spi_initiator"]));
    for p in &ps1[3..] {
        let PayloadRepr::Id(id) = PayloadRepr::from_raw(p).unwrap() else {
            panic!()
        };
        assert!(
            matches!(
                id.identity,
                Identity::Ipv4Addr(_) | Identity::Ipv4Subnet { .. }
            ),
            "{id:?}"
        );
    }

    let qm2 = msg("qm2");
    let (pt2, iv) = decrypt(&cbc, &qm2, &iv);
    assert_eq!(pt2, hx(&qm["qm2_plaintext"]));
    let (ps2, end2) = chain(Header::new_checked(&qm2[..]).unwrap().next_payload(), &pt2);
    let h2 = s
        .keys
        .quick_hash2(mid, ni_b, after_hash(&pt2, &ps2, end2))
        .unwrap();
    assert_eq!(h2.as_slice(), hx(&qm["hash2"]));
    h2.verify(ps2[0].body).unwrap();
    let nr_b = ps2[2].body;
    assert_eq!(nr_b, hx(&qm["nr_b"]));
    let PayloadRepr::Sa(sa2) = PayloadRepr::from_raw(&ps2[1]).unwrap() else {
        panic!()
    };
    let prop2 = sa2.proposals.iter().next().unwrap();
    assert_eq!(prop2.spi, hx(&qm["spi_responder"]));
    let t2 = prop2.transforms.iter().next().unwrap();
    let esp = EspTransform::from_attributes(t2.transform_id, &t2.attributes).unwrap();
    assert_eq!(esp.keymat_len(), 36);

    let qm3 = msg("qm3");
    let (pt3, _) = decrypt(&cbc, &qm3, &iv);
    assert_eq!(pt3, hx(&qm["qm3_plaintext"]));
    let (ps3, _) = chain(Header::new_checked(&qm3[..]).unwrap().next_payload(), &pt3);
    let h3 = s.keys.quick_hash3(mid, ni_b, nr_b).unwrap();
    assert_eq!(h3.as_slice(), hx(&qm["hash3"]));
    h3.verify(ps3[0].body).unwrap();

    // KEYMAT for both SPIs, length from the negotiated transform.
    let k_i = s
        .keys
        .keymat(
            None,
            protocol_id::ESP,
            prop1.spi,
            ni_b,
            nr_b,
            esp.keymat_len(),
        )
        .unwrap();
    assert_eq!(k_i.expose(), hx(&qm["keymat_spi_initiator_36"]));
    let k_r = s
        .keys
        .keymat(
            None,
            protocol_id::ESP,
            prop2.spi,
            ni_b,
            nr_b,
            esp.keymat_len(),
        )
        .unwrap();
    assert_eq!(k_r.expose(), hx(&qm["keymat_spi_responder_36"]));
    // A prefix of a longer expansion is the same (K1 | K2 | K3 ...).
    let long = s
        .keys
        .keymat(None, protocol_id::ESP, prop2.spi, ni_b, nr_b, 100)
        .unwrap();
    assert_eq!(&long.expose()[..36], k_r.expose());
    assert!(s.keys.keymat(None, 3, prop2.spi, ni_b, nr_b, 129).is_err());
}

#[test]
fn rubnds_unit_vectors() {
    let all = json("ikev1_mainmode_psk_rubnds.json");
    let uv = all["unit_vectors"].as_array().unwrap();
    assert_eq!(uv.len(), 3);
    let (mut ivs, mut keymats) = (0, 0);
    for v in uv {
        let s = Session::new(v);
        s.check_phase1();
        let iv1 = hx(&v["phase1_iv"]);
        for (k, want) in v["expected_from_source"].as_object().unwrap() {
            // getIV(M-ID) before any phase-1 encryption: the phase-1 IV stands in for the
            // last CBC block.
            if let Some(m) = k.strip_prefix("instance.getIV(DatatypeHelper.hexDumpToByteArray(\"") {
                let mid = u32::from_str_radix(&m[..8], 16).unwrap();
                let iv = phase2_iv::<SoftPrf>(HashAlg::Sha1, &iv1, mid).unwrap();
                assert_eq!(iv.as_slice(), hx(want));
                ivs += 1;
            }
        }
        if let Some(q) = v.get("quick_mode") {
            let (ni, nr) = (hx(&q["ni_b"]), hx(&q["nr_b"]));
            for (spi, km) in [
                ("spi_inbound", "keymat_inbound_36"),
                ("spi_outbound", "keymat_outbound_36"),
            ] {
                let k = s.keys.keymat(None, 3, &hx(&q[spi]), &ni, &nr, 36).unwrap();
                assert_eq!(k.expose(), hx(&q[km]), "{spi}");
                keymats += 1;
            }
        }
    }
    assert_eq!((ivs, keymats), (1, 2));
}

#[test]
fn rubnds_session2_informational() {
    let all = json("ikev1_mainmode_psk_rubnds.json");
    let s2 = &all["session2_mainmode_plus_informational"];
    let s = Session::new(s2);
    s.check_phase1();
    let cbc = s.cipher();
    let msg = |n: &str| hx(&s2["messages"][n]);
    let iv = phase1_iv::<SoftPrf>(HashAlg::Sha1, &hx(&s2["g_xi"]), &hx(&s2["g_xr"]), 16).unwrap();
    let (pt5, iv) = decrypt(&cbc, &msg("m5"), &iv);
    let (ps5, _) = chain(payload_type::ID, &pt5);
    let (g_xi, g_xr, sai_b) = (hx(&s2["g_xi"]), hx(&s2["g_xr"]), hx(&s2["sai_b"]));
    assert_eq!(ps5[0].body, hx(&s2["idii_b"]));
    s.keys
        .hash_i(&g_xi, &g_xr, &s.cky_i, &s.cky_r, &sai_b, ps5[0].body)
        .unwrap()
        .verify(ps5[1].body)
        .unwrap();
    let (pt6, _) = decrypt(&cbc, &msg("m6"), &iv);
    let (ps6, _) = chain(payload_type::ID, &pt6);
    let PayloadRepr::Id(idr) = PayloadRepr::from_raw(&ps6[0]).unwrap() else {
        panic!()
    };
    assert_eq!((idr.protocol_id, idr.port), (17, 500));
    s.keys
        .hash_r(&g_xi, &g_xr, &s.cky_i, &s.cky_r, &sai_b, ps6[0].body)
        .unwrap()
        .verify(ps6[1].body)
        .unwrap();

    let m6 = msg("m6");
    let ct6 = Header::new_checked(&m6[..])
        .unwrap()
        .payload_area()
        .to_vec();
    let info = &s2["informational"];
    let info_msg = msg("info");
    let hr = HeaderRepr::parse(&Header::new_checked(&info_msg[..]).unwrap()).unwrap();
    assert_eq!(
        hr.exchange_type,
        ipsec_ike::wire::exchange_type::INFORMATIONAL
    );
    assert_eq!(
        format!("{:08x}", hr.message_id),
        info["message_id"].as_str().unwrap()
    );
    let iv = phase2_iv::<SoftPrf>(HashAlg::Sha1, &ct6[ct6.len() - 16..], hr.message_id).unwrap();
    assert_eq!(iv.as_slice(), hx(&info["iv"]));
    let (pt, _) = decrypt(&cbc, &info_msg, &iv);
    assert_eq!(pt, hx(&info["plaintext"]));
    let (ps, end) = chain(hr.next_payload, &pt);
    let h = s
        .keys
        .informational_hash(hr.message_id, after_hash(&pt, &ps, end))
        .unwrap();
    assert_eq!(h.as_slice(), hx(&info["hash1"]));
    h.verify(ps[0].body).unwrap();
    let PayloadRepr::Notify(n) = PayloadRepr::from_raw(&ps[1]).unwrap() else {
        panic!()
    };
    assert_eq!(n.notify_type, notify::RESPONDER_LIFETIME);
    assert_eq!(n.protocol_id, protocol_id::ISAKMP);
    assert_eq!(n.spi, hx(&info["notify"]["spi"]));
    assert_eq!(n.data, hx(&info["notify"]["data"]));
    let attrs = ipsec_ike::wire::Attributes::parse(n.data).unwrap();
    assert_eq!(attrs.get(12).unwrap().as_u64(), Some(300));
}

#[test]
fn synthetic_dpd_decrypts_and_rebuilds() {
    let all = json("ikev1_mainmode_psk_rubnds.json");
    let mm = &all["main_mode_exchange"];
    let s = Session::new(mm);
    let cbc = s.cipher();
    let m6 = hx(&mm["messages"]["m6"]);
    let ct6 = Header::new_checked(&m6[..])
        .unwrap()
        .payload_area()
        .to_vec();
    let last = &ct6[ct6.len() - 16..];
    let dpd = json("natt_dpd_gre_reference.json");

    // The same two messages also travel on UDP 4500 behind the non-ESP marker.
    let on_4500 = ike_datagrams("synthetic_natt_keepalive_nonesp_marker_espinudp.pcap");
    assert_eq!(on_4500.len(), 2);

    for (i, (name, ntype)) in [
        ("r_u_there", notify::R_U_THERE),
        ("r_u_there_ack", notify::R_U_THERE_ACK),
    ]
    .into_iter()
    .enumerate()
    {
        let m = &dpd["synthetic_dpd"]["messages"][name];
        let wire = hx(&m["message"]);
        assert_eq!(on_4500[i].data, wire);
        let hr = HeaderRepr::parse(&Header::new_checked(&wire[..]).unwrap()).unwrap();
        let iv = phase2_iv::<SoftPrf>(HashAlg::Sha1, last, hr.message_id).unwrap();
        assert_eq!(iv.as_slice(), hx(&m["iv"]));
        let (pt, _) = decrypt(&cbc, &wire, &iv);
        assert_eq!(pt, hx(&m["plaintext_padded"]));
        let (ps, end) = chain(hr.next_payload, &pt);
        let h = s
            .keys
            .informational_hash(hr.message_id, after_hash(&pt, &ps, end))
            .unwrap();
        assert_eq!(h.as_slice(), hx(&m["hash1"]));
        let PayloadRepr::Notify(n) = PayloadRepr::from_raw(&ps[1]).unwrap() else {
            panic!()
        };
        assert_eq!(n.notify_type, ntype);
        assert_eq!(n.dpd_sequence(), Some(0x1234_5678));

        // Build the same message: reserve HASH(1), add the notify, hash, pad, encrypt.
        let mut cookies = [0u8; 16];
        cookies[..8].copy_from_slice(&s.cky_i);
        cookies[8..].copy_from_slice(&s.cky_r);
        let seq = 0x1234_5678u32.to_be_bytes();
        let mut buf = [0u8; 256];
        let mut b = MessageBuilder::new(&mut buf, &hr).unwrap();
        let slot = b.reserve(payload_type::HASH, 20).unwrap();
        b.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
            ntype, &cookies, &seq,
        )))
        .unwrap();
        let (hash, rest) = b.split_at(slot).unwrap();
        let d = s.keys.informational_hash(hr.message_id, rest).unwrap();
        hash.copy_from_slice(d.as_slice());
        let len = b.finish_encrypted(16).unwrap();
        cbc.encrypt(iv.as_slice(), &mut buf[28..len]).unwrap();
        assert_eq!(&buf[..len], &wire[..], "{name}");
    }
}

#[test]
fn ikev1_certs_3des_md5_decrypts() {
    let v = json("ikev1_certs_pcap_decryption.json");
    let d = &v["decryption"];
    let dgs = ike_datagrams("ikev1-certs.pcap");
    let frame = |n: usize| dgs.iter().find(|d| d.frame == n).unwrap().data.clone();
    // g^xi / g^xr from the KE payloads of frames 3 and 4.
    let ke = |n: usize| {
        let m = frame(n);
        let h = Header::new_checked(&m[..]).unwrap();
        h.payloads().next().unwrap().unwrap().body.to_vec()
    };
    let (g_xi, g_xr) = (ke(3), ke(4));
    assert_eq!(g_xi, hx(&d["g_xi"]));
    assert_eq!(g_xr, hx(&d["g_xr"]));
    let iv = phase1_iv::<SoftPrf>(HashAlg::Md5, &g_xi, &g_xr, 8).unwrap();
    assert_eq!(iv.as_slice(), hx(&d["phase1_iv"]));
    let cbc = SoftCbc::new(CipherAlg::TripleDesCbc, &hx(&d["enc_key"])).unwrap();
    let plain = |n: u64| {
        let f = d["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["frame"] == n)
            .unwrap();
        let types: Vec<u8> = f["payload_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u8)
            .collect();
        (hx(&f["plaintext"]), types)
    };
    let check = |n: usize, iv: &Iv| -> Iv {
        let m = frame(n);
        let (pt, next) = decrypt(&cbc, &m, iv);
        let (want, types) = plain(n as u64);
        assert_eq!(pt, want, "frame {n}");
        let (ps, _) = chain(Header::new_checked(&m[..]).unwrap().next_payload(), &pt);
        assert_eq!(
            ps.iter().map(|p| p.payload_type).collect::<Vec<_>>(),
            types,
            "frame {n}"
        );
        for p in &ps {
            PayloadRepr::from_raw(p).unwrap();
        }
        next
    };
    let iv = check(5, &iv);
    let _ = check(6, &iv);
    let m6 = frame(6);
    let ct6 = Header::new_checked(&m6[..])
        .unwrap()
        .payload_area()
        .to_vec();
    let mid = Header::new_checked(&frame(7)[..]).unwrap().message_id();
    let qiv = phase2_iv::<SoftPrf>(HashAlg::Md5, &ct6[ct6.len() - 8..], mid).unwrap();
    let next = check(7, &qiv);
    let _ = check(8, &qiv); // retransmission: same IV
    let next = check(9, &next);
    let _ = check(10, &next);
}

#[test]
fn encryption_key_expansion() {
    // 3DES (24 bytes) from an MD5 or SHA-1 SKEYID_e needs Appendix B's expansion; check it
    // against the formula computed directly with the PRF.
    use hal_traits::Prf;
    for hash in [HashAlg::Md5, HashAlg::Sha1] {
        let k = Keys::from_psk(
            hash, b"key", &[1; 16], &[2; 16], &[3; 128], &[4; 8], &[5; 8],
        )
        .unwrap();
        let ka = k.encryption_key(CipherAlg::TripleDesCbc).unwrap();
        let prf = SoftPrf::new(hash, k.skeyid_e().expose()).unwrap();
        let mut k1 = [0u8; 64];
        let n = prf.compute(&[&[0]], &mut k1).unwrap();
        let mut k2 = [0u8; 64];
        prf.compute(&[&k1[..n]], &mut k2).unwrap();
        let mut want = k1[..n].to_vec();
        want.extend_from_slice(&k2[..n]);
        assert_eq!(ka.expose(), &want[..24], "{hash:?}");
        // Long enough: plain truncation.
        let aes = k.encryption_key(CipherAlg::Aes128Cbc).unwrap();
        assert_eq!(aes.expose(), &k.skeyid_e().expose()[..16]);
    }
    let k = Keys::from_psk(
        HashAlg::Sha256,
        b"key",
        &[1; 16],
        &[2; 16],
        &[3; 128],
        &[4; 8],
        &[5; 8],
    )
    .unwrap();
    assert_eq!(
        k.encryption_key(CipherAlg::Aes256Cbc).unwrap().expose(),
        k.skeyid_e().expose()
    );
    // SKEYID from the free function equals the schedule's.
    let s = skeyid_psk::<SoftPrf>(HashAlg::Sha256, b"key", &[1; 16], &[2; 16]).unwrap();
    assert_eq!(s.expose(), k.skeyid().expose());
    // Secrets never print.
    let dbg = format!("{:?} {:?}", k, k.skeyid());
    assert!(
        !dbg.contains(&hex::encode(&k.skeyid().expose()[..4])),
        "{dbg}"
    );
}
