//! `ipsec pcap decrypt` on captures: the 40 scapy ESP vectors (with our SA file format and
//! with Wireshark's esp_sa UAT), NAT-T traffic on port 4500, GRE inside ESP, other link
//! types and pcapng, ESN, and every kind of failure (wrong key, no SA, bad SA file, cut or
//! malformed captures). The binary is run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn vectors() -> Vec<Value> {
    let p = format!(
        "{}/../../ipsec-core/tests/data/scapy_esp_vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let v = d["vectors"].as_array().unwrap().clone();
    assert_eq!(v.len(), 40);
    v
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipsec-cli-pcap-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.out.lines().collect()
    }
}

fn ipsec<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ipsec"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
    }
}

fn decrypt(sa_file: &Path, capture: &Path, hex: bool) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec!["pcap".as_ref(), "decrypt".as_ref()];
    if hex {
        args.push("--hex".as_ref());
    }
    args.extend([
        "--sa-file".as_ref(),
        sa_file.as_os_str(),
        capture.as_os_str(),
    ]);
    ipsec(&args)
}

/// One line of our SA file format for a scapy vector. `break_key` flips a key bit.
fn sa_line(v: &Value, break_key: bool) -> String {
    let (enc, mut key) = match s(&v["encryption"]).as_str() {
        "DES" => ("des-cbc", s(&v["enc_key"])),
        "3DES" => ("3des-cbc", s(&v["enc_key"])),
        "AES-CBC-128" => ("aes128-cbc", s(&v["enc_key"])),
        "AES-CBC-256" => ("aes256-cbc", s(&v["enc_key"])),
        "AES-GCM" if s(&v["enc_key"]).len() == 32 => ("aes128-gcm16", s(&v["gcm_keymat_rfc4106"])),
        "AES-GCM" => ("aes256-gcm16", s(&v["gcm_keymat_rfc4106"])),
        "NULL" => ("null", String::new()),
        other => panic!("{other}"),
    };
    let mut auth_key = s(&v["auth_key"]);
    let auth = match s(&v["integrity"]).as_str() {
        _ if enc.contains("gcm") => "none",
        "HMAC-SHA1-96" => "hmac-sha1-96",
        "HMAC-SHA2-256-128" => "hmac-sha256-128",
        other => panic!("{other}"),
    };
    if break_key {
        // The key the ICV depends on: the integrity key, or the AEAD key.
        let k = if auth == "none" {
            &mut key
        } else {
            &mut auth_key
        };
        let flipped = if k.starts_with('0') { "1" } else { "0" };
        k.replace_range(0..1, flipped);
    }
    let mut line = format!(
        "spi={} enc={enc} enc-key={key} mode={}",
        s(&v["spi"]),
        s(&v["mode"])
    );
    if auth != "none" {
        line += &format!(" auth={auth} auth-key={auth_key}");
    }
    if s(&v["udp_encap"]) == "true" {
        line += " udp-encap";
    }
    line += &format!(" src={} dst={}", s(&v["outer_src"]), s(&v["outer_dst"]));
    line
}

fn write_sa_file(dir: &Path, name: &str, vs: &[Value], break_key: bool) -> PathBuf {
    let mut text =
        String::from("# generated from ipsec-core/tests/data/scapy_esp_vectors.json\n\n");
    for v in vs {
        text += &format!("{}  # {}\n", sa_line(v, break_key), s(&v["name"]));
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The text after the last `": "` of an output line.
fn tail(line: &str) -> &str {
    line.rsplit(": ").next().unwrap()
}

fn check_all_40(r: &Run, vs: &[Value]) {
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    assert_eq!(lines.len(), 40, "{}", r.out);
    for (i, (line, v)) in lines.iter().zip(vs).enumerate() {
        let spi = format!("spi 0x{} ", s(&v["spi"]));
        assert!(line.starts_with(&format!("#{} ", i + 1)), "{line}");
        assert!(line.contains(&spi), "{line}");
        assert!(line.contains(&format!(" seq {}:", s(&v["seq"]))), "{line}");
        assert_eq!(
            tail(line),
            s(&v["inner_packet"]),
            "{}: {line}",
            s(&v["name"])
        );
        let udp = s(&v["udp_encap"]) == "true";
        assert_eq!(line.contains(":4500 ESP-in-UDP spi"), udp, "{line}");
    }
}

#[test]
fn all_scapy_packets_decrypt_with_our_sa_file() {
    let vs = vectors();
    let dir = scratch("ours");
    let keys = write_sa_file(&dir, "scapy.sa", &vs, false);
    let cap = data_dir().join("synthetic_esp_scapy_vectors.pcap");
    check_all_40(&decrypt(&keys, &cap, true), &vs);

    // The summaries: outer addresses, then the inner ICMP echo (tunnel mode: 10.1.0.1 ->
    // 10.2.0.1; transport mode: the outer addresses again).
    let r = decrypt(&keys, &cap, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    assert_eq!(lines.len(), 40);
    assert_eq!(
        lines[2],
        "#3 192.0.2.1 -> 198.51.100.2 ESP spi 0x10000003 seq 10: 10.1.0.1 -> 10.2.0.1 ICMP \
         echo request id 0x4242 seq 3 (len 65)"
    );
    for (i, (line, v)) in lines.iter().zip(&vs).enumerate() {
        let inner = if s(&v["mode"]) == "tunnel" {
            "10.1.0.1 -> 10.2.0.1"
        } else {
            "192.0.2.1 -> 198.51.100.2"
        };
        let want = format!(
            ": {inner} ICMP echo request id 0x4242 seq {} (len 65)",
            i + 1
        );
        assert!(line.ends_with(&want), "{line}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn all_scapy_packets_decrypt_with_the_wireshark_uat() {
    let vs = vectors();
    let uat = data_dir().join("wireshark_esp_sa_synthetic_esp_scapy_vectors.uat");
    let cap = data_dir().join("synthetic_esp_scapy_vectors.pcap");
    check_all_40(&decrypt(&uat, &cap, true), &vs);

    // The format is told by content, not by the name (Wireshark's file is called `esp_sa`).
    let dir = scratch("uat");
    let esp_sa = dir.join("esp_sa");
    let text = std::fs::read_to_string(&uat).unwrap();
    std::fs::write(
        &esp_sa,
        format!("# This file is automatically generated, DO NOT MODIFY.\n{text}"),
    )
    .unwrap();
    check_all_40(&decrypt(&esp_sa, &cap, true), &vs);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn natt_capture_shows_keepalives_ike_and_esp_in_udp() {
    let vs = vectors();
    let uat = data_dir().join("wireshark_esp_sa_synthetic_esp_scapy_vectors.uat");
    let cap = data_dir().join("synthetic_natt_keepalive_nonesp_marker_espinudp.pcap");
    let r = decrypt(&uat, &cap, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    assert_eq!(lines.len(), 5, "{}", r.out);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with("NAT-keepalive"))
            .count(),
        2
    );
    let ike: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(" IKE (non-ESP marker): IKEv1 Informational"))
        .collect();
    assert_eq!(ike.len(), 2, "{}", r.out);
    assert!(ike[0].contains("msgid 0x5a5a0001"), "{}", ike[0]);
    assert!(ike[1].contains("msgid 0xa5a50002"), "{}", ike[1]);
    assert_eq!(lines[0], "#1 10.0.3.1:4500 -> 10.0.3.10:4500 NAT-keepalive");
    assert!(
        lines[4].starts_with("#5 192.0.2.1:4500 -> 198.51.100.2:4500 ESP-in-UDP spi 0x10000010"),
        "{}",
        lines[4]
    );
    assert!(lines[4].ends_with("10.1.0.1 -> 10.2.0.1 ICMP echo request id 0x4242 seq 16 (len 65)"));

    let r = decrypt(&uat, &cap, true);
    let v = vs
        .iter()
        .find(|v| s(&v["name"]) == "aes128-cbc_hmac-sha1-96_tunnel_udp4500")
        .unwrap();
    assert_eq!(tail(r.lines()[4]), s(&v["inner_packet"]));
    // Not ESP, so no decryption attempt and no `no SA` on the other lines.
    assert!(!r.out.contains("no SA"), "{}", r.out);
}

#[test]
fn wrong_keys_give_one_icv_failure_per_packet() {
    let vs = vectors();
    let dir = scratch("wrongkey");
    let keys = write_sa_file(&dir, "broken.sa", &vs, true);
    let cap = data_dir().join("synthetic_esp_scapy_vectors.pcap");
    let r = decrypt(&keys, &cap, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    assert_eq!(lines.len(), 40, "{}", r.out);
    for l in lines {
        assert!(
            l.ends_with(": error: ICV mismatch (wrong key or algorithm?)"),
            "{l}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn packets_without_an_sa_say_so() {
    let vs = vectors();
    let dir = scratch("nosa");
    // Only the SA of frame 13 (and one with the right SPI but other addresses).
    let mut text = sa_line(&vs[12], false) + "\n";
    text += &sa_line(&vs[13], false).replace("src=192.0.2.1", "src=192.0.2.99");
    let keys = dir.join("one.sa");
    std::fs::write(&keys, text).unwrap();
    let cap = data_dir().join("synthetic_esp_scapy_vectors.pcap");
    let r = decrypt(&keys, &cap, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    for (i, l) in r.lines().iter().enumerate() {
        if i == 12 {
            assert!(l.contains("ICMP echo request"), "{l}");
        } else {
            assert!(
                l.ends_with(&format!(": no SA for spi 0x{:08x}", 0x1000_0001 + i)),
                "{l}"
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn malformed_sa_files_are_refused_with_the_line_number() {
    let dir = scratch("badsa");
    let cap = data_dir().join("synthetic_esp_scapy_vectors.pcap");
    let good = "spi=10000001 enc=aes128-cbc enc-key=00112233445566778899aabbccddeeff \
                auth=hmac-sha1-96 auth-key=0011223344556677889900112233445566778899";
    let cases: &[(&str, &str)] = &[
        ("colour=blue", "unknown key \"colour\""),
        (
            "spi=10000002 enc=aes128-cbc",
            "the encryption key must be 16 bytes",
        ),
        ("spi=zz enc=null auth=hmac-sha1-96", "spi"),
        ("spi=1 enc=rot13", "unknown encryption \"rot13\""),
        (
            "spi=1 enc=aes128-gcm16 enc-key=00",
            "the encryption key must be 20 bytes",
        ),
        (
            "spi=1 enc=aes128-gcm16 enc-key=0011223344556677889900112233445566778899 \
             auth=hmac-sha1-96 auth-key=0011223344556677889900112233445566778899",
            "AES-GCM takes no integrity algorithm",
        ),
        (
            "spi=1 enc=null",
            "null encryption needs an integrity algorithm",
        ),
        ("spi=1 enc=3des-cbc enc-key=nothex", "enc-key: not hex"),
        ("enc=null auth=hmac-sha1-96", "missing spi="),
        ("spi=1 spi=2 enc=null", "spi given twice"),
        ("spi=1 enc=null mode=sideways", "mode"),
        ("spi=1 enc=null src=300.1.1.1", "src"),
        ("spi=1 esn=1 enc=null", "esn is a flag"),
    ];
    for (bad, why) in cases {
        let p = dir.join("bad.sa");
        std::fs::write(&p, format!("# keys\n{good}\n{bad}\n")).unwrap();
        let r = decrypt(&p, &cap, false);
        assert_eq!(r.code, Some(1), "{bad}: {}", r.out);
        assert!(r.out.is_empty(), "{bad}: {}", r.out);
        assert!(r.err.contains("bad.sa: line 3: "), "{bad}: {}", r.err);
        assert!(r.err.contains(why), "{bad}: {}", r.err);
    }
    // UAT format errors too.
    let uat_cases: &[(&str, &str)] = &[
        (r#""IPv4","*","*","0x1","NULL","""#, "expected 8 fields"),
        (
            r#""IPv4","*","*","0x1","AES-CBC [RFC3602]","0x0011","NULL","""#,
            "AES-CBC key must be 16, 24 or 32 bytes",
        ),
        (
            r#""IPv4","*","*","0x1","NULL","","HMAC-SHA-1-96 [RFC2404]","0x12"#,
            "unterminated",
        ),
        (
            r#""IPv4","10.0.*.1","*","0x1","NULL","","HMAC-MD5-96 [RFC2403]","""#,
            "source",
        ),
    ];
    for (bad, why) in uat_cases {
        let p = dir.join("bad.uat");
        let ok = r#""IPv4","*","*","*","NULL","","HMAC-SHA-1-96 [RFC2404]","0x0011223344556677889900112233445566778899""#;
        std::fs::write(&p, format!("{ok}\n\n{bad}\n")).unwrap();
        let r = decrypt(&p, &cap, false);
        assert_eq!(r.code, Some(1), "{bad}: {}", r.out);
        assert!(r.err.contains("bad.uat: line 3: "), "{bad}: {}", r.err);
        assert!(r.err.contains(why), "{bad}: {}", r.err);
    }
    // Unreadable or empty SA file, unreadable capture.
    let r = decrypt(&dir.join("missing.sa"), &cap, false);
    assert_eq!(r.code, Some(1));
    assert!(r.err.contains("missing.sa"), "{}", r.err);
    let empty = dir.join("empty.sa");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let r = decrypt(&empty, &cap, false);
    assert_eq!(r.code, Some(1));
    assert!(r.err.contains("no SA in the file"), "{}", r.err);
    let uat = data_dir().join("wireshark_esp_sa_synthetic_esp_scapy_vectors.uat");
    let r = decrypt(&uat, &dir.join("missing.pcap"), false);
    assert_eq!(r.code, Some(1));
    assert!(r.err.contains("missing.pcap"), "{}", r.err);
    let r = decrypt(&uat, &uat, false);
    assert_eq!(r.code, Some(1));
    assert!(r.err.contains("not a pcap or pcapng file"), "{}", r.err);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_wireshark_algorithms_are_reported_not_fatal() {
    let dir = scratch("unsupported");
    let p = dir.join("esp_sa");
    std::fs::write(
        &p,
        concat!(
            r#""IPv4","*","*","0x10000001","AES-CTR [RFC3686]","0x00112233445566778899aabbccddeeff00112233","HMAC-SHA-1-96 [RFC2404]","0x0011223344556677889900112233445566778899""#,
            "\n"
        ),
    )
    .unwrap();
    let r = decrypt(
        &p,
        &data_dir().join("synthetic_esp_scapy_vectors.pcap"),
        false,
    );
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(
        r.err.contains("line 1: unsupported encryption algorithm"),
        "{}",
        r.err
    );
    assert!(
        r.lines()[0].ends_with("not decrypted: the SA on line 1 has an unsupported encryption algorithm \"AES-CTR [RFC3686]\""),
        "{}",
        r.out
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_cut_capture_decrypts_what_it_has() {
    let vs = vectors();
    let dir = scratch("cut");
    let keys = write_sa_file(&dir, "scapy.sa", &vs, false);
    let full = std::fs::read(data_dir().join("synthetic_esp_scapy_vectors.pcap")).unwrap();
    // Offset of frame 10's record, then cut 30 bytes into its data.
    let mut off = 24;
    for _ in 0..9 {
        let incl = u32::from_le_bytes(full[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
    }
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &full[..off + 16 + 30]).unwrap();
    let r = decrypt(&keys, &cut, true);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    assert_eq!(lines.len(), 10, "{}", r.out);
    for (l, v) in lines.iter().zip(&vs).take(9) {
        assert_eq!(tail(l), s(&v["inner_packet"]));
    }
    assert!(
        lines[9].starts_with("#10 capture truncated"),
        "{}",
        lines[9]
    );

    // Cut in the middle of a record header, and in the file header.
    std::fs::write(&cut, &full[..off + 5]).unwrap();
    let r = decrypt(&keys, &cut, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert_eq!(r.lines().len(), 10);
    std::fs::write(&cut, &full[..10]).unwrap();
    let r = decrypt(&keys, &cut, false);
    assert_eq!(r.code, Some(1), "{}", r.err);
    assert!(r.err.contains("not a pcap"), "{}", r.err);
    std::fs::write(&cut, &full[..2]).unwrap();
    assert_eq!(decrypt(&keys, &cut, false).code, Some(1));
    std::fs::remove_dir_all(dir).ok();
}

// ---------------------------------------------------------------------------------------
// Captures built here: pcap with other link types, pcapng, GRE inside ESP, IPv6, ESN and
// malformed frames.
// ---------------------------------------------------------------------------------------

fn pcap(linktype: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (i, fr) in frames.iter().enumerate() {
        let len = u32::try_from(fr.len()).unwrap();
        f.extend_from_slice(&u32::try_from(i).unwrap().to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(fr);
    }
    f
}

fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let len = u32::try_from(body.len() + 12).unwrap();
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A pcapng file with one interface of `linktype` and the frames as enhanced packets.
fn pcapng(linktype: u16, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut f = pcapng_block(0x0a0d_0d0a, &shb);
    let mut idb = linktype.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    f.extend(pcapng_block(1, &idb));
    for fr in frames {
        let len = u32::try_from(fr.len()).unwrap();
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&[0; 8]);
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(fr);
        f.extend(pcapng_block(6, &epb));
    }
    f
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let et: &[u8] = if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(et);
    f.extend_from_slice(ip);
    f
}

fn linux_cooked(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(ip);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(20 + payload.len()).unwrap();
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn icmp_echo(id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// 10.0.0.1 -> 10.0.0.2 GRE (key 0x1234, seq 7) carrying 192.168.1.1 -> 192.168.2.1 ICMP.
fn gre_packet() -> Vec<u8> {
    let inner = ipv4([192, 168, 1, 1], [192, 168, 2, 1], 1, &icmp_echo(1, 1));
    let mut gre = vec![0x30, 0x00, 0x08, 0x00, 0, 0, 0x12, 0x34, 0, 0, 0, 7];
    gre.extend_from_slice(&inner);
    ipv4([10, 0, 0, 1], [10, 0, 0, 2], 47, &gre)
}

const KEY: &str = "00112233445566778899aabbccddeeff";
const AUTH: &str = "0102030405060708090a0b0c0d0e0f1011121314";

fn seal(spi: &str, packet: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "esp",
        "seal",
        "--spi",
        spi,
        "--enc",
        "aes128-cbc",
        "--enc-key",
        KEY,
        "--auth",
        "hmac-sha1-96",
        "--auth-key",
        AUTH,
    ];
    args.extend_from_slice(extra);
    let p = hex::encode(packet);
    args.extend(["--packet", &p]);
    let r = ipsec(&args);
    assert_eq!(r.code, Some(0), "{}", r.err);
    hex::decode(r.out.trim()).unwrap()
}

fn our_keys(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("keys.sa");
    std::fs::write(
        &p,
        format!(
            "spi=0x20000000 enc=aes128-cbc enc-key={KEY} auth=hmac-sha1-96 auth-key={AUTH}\n\
             spi=20000001 enc=aes128-cbc enc-key={KEY} auth=hmac-sha1-96 auth-key={AUTH} {extra}\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn gre_inside_esp_over_every_link_type_and_pcapng() {
    let dir = scratch("gre");
    let keys = our_keys(&dir, "esn esn-high=1");
    let tunnel = [
        "--mode",
        "tunnel",
        "--src",
        "203.0.113.1",
        "--dst",
        "203.0.113.2",
    ];
    let v4 = seal("20000000", &gre_packet(), &tunnel);
    // IPv6 outside, transport mode with ESN (high bits 1) inside: the GRE packet of
    // 10.0.0.1 is not IPv6, so use an IPv6 GRE packet carrying IPv4.
    let inner = ipv4([192, 168, 1, 1], [192, 168, 2, 1], 1, &icmp_echo(2, 9));
    let mut gre6 = vec![0x00, 0x00, 0x08, 0x00];
    gre6.extend_from_slice(&inner);
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&u16::try_from(gre6.len()).unwrap().to_be_bytes());
    ip6.extend_from_slice(&[47, 64]);
    ip6.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ip6.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ip6.extend_from_slice(&gre6);
    let v6 = seal(
        "20000001",
        &ip6,
        &["--mode", "transport", "--esn-high", "1", "--seq", "5"],
    );

    let want_v4 = "#1 203.0.113.1 -> 203.0.113.2 ESP spi 0x20000000 seq 1: 10.0.0.1 -> 10.0.0.2 \
                   GRE proto 0x0800 (IPv4) key 0x00001234 seq 7 (len 60): 192.168.1.1 -> \
                   192.168.2.1 ICMP echo request id 0x0001 seq 1 (len 28)";
    let want_v6 = "#2 2001:db8::1 -> 2001:db8::2 ESP spi 0x20000001 seq 5: 2001:db8::1 -> \
                   2001:db8::2 GRE proto 0x0800 (IPv4) (len 72): 192.168.1.1 -> 192.168.2.1 \
                   ICMP echo request id 0x0002 seq 9 (len 28)";
    let frames = [v4.clone(), v6.clone()];
    let captures = [
        ("raw.pcap", pcap(101, &frames)),
        ("raw228.pcap", pcap(228, &frames[..1])),
        (
            "eth.pcap",
            pcap(1, &frames.iter().map(|f| ethernet(f)).collect::<Vec<_>>()),
        ),
        (
            "sll.pcap",
            pcap(
                113,
                &frames.iter().map(|f| linux_cooked(f)).collect::<Vec<_>>(),
            ),
        ),
        (
            "eth.pcapng",
            pcapng(1, &frames.iter().map(|f| ethernet(f)).collect::<Vec<_>>()),
        ),
    ];
    for (name, bytes) in captures {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = decrypt(&keys, &p, false);
        assert_eq!(r.code, Some(0), "{name}: {}", r.err);
        let lines = r.lines();
        assert_eq!(lines[0], want_v4, "{name}");
        if name != "raw228.pcap" {
            assert_eq!(lines.len(), 2, "{name}: {}", r.out);
            assert_eq!(lines[1], want_v6, "{name}");
        }
        let r = decrypt(&keys, &p, true);
        assert_eq!(tail(r.lines()[0]), hex::encode(gre_packet()), "{name}");
    }

    // ESP behind AH over IPv4: AH is skipped (not verified) and the ESP packet opened.
    let mut ah = v4[..20].to_vec();
    ah.extend_from_slice(&[50, 4, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 1]);
    ah.extend_from_slice(&[0x5a; 12]);
    ah.extend_from_slice(&v4[20..]);
    ah[9] = 51;
    let len = u16::try_from(ah.len()).unwrap();
    ah[2..4].copy_from_slice(&len.to_be_bytes());
    ah[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&ah[..20]);
    ah[10..12].copy_from_slice(&c.to_be_bytes());
    let p = dir.join("ah.pcap");
    std::fs::write(&p, pcap(101, &[ah])).unwrap();
    let r = decrypt(&keys, &p, false);
    assert_eq!(
        r.out.trim(),
        want_v4.replace(
            "ESP spi 0x20000000",
            "AH spi 0xaabbccdd (not verified) ESP spi 0x20000000"
        )
    );

    // The ESN high bits matter: without them (or with the wrong mode forced) the packet
    // does not open.
    let p = dir.join("raw.pcap");
    let r = decrypt(&our_keys(&dir, "esn"), &p, false);
    assert!(
        r.lines()[1].ends_with(": error: ICV mismatch (wrong key or algorithm?)"),
        "{}",
        r.out
    );
    let r = decrypt(&our_keys(&dir, "esn-high=1 mode=tunnel"), &p, false);
    assert!(
        r.lines()[1].ends_with(": error: bad next header"),
        "{}",
        r.out
    );
    let r = decrypt(
        &our_keys(&dir, "esn-high=1 mode=transport dst=2001:db8::/64"),
        &p,
        false,
    );
    assert_eq!(r.lines()[1], want_v6);
    let r = decrypt(&our_keys(&dir, "esn-high=1 dst=2001:db8:1::/48"), &p, false);
    assert!(
        r.lines()[1].ends_with(": no SA for spi 0x20000001"),
        "{}",
        r.out
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn malformed_frames_are_reported_or_skipped_never_fatal() {
    let dir = scratch("garbage");
    let keys = our_keys(&dir, "");
    let tunnel = [
        "--mode",
        "tunnel",
        "--src",
        "203.0.113.1",
        "--dst",
        "203.0.113.2",
    ];
    let good = seal("20000000", &gre_packet(), &tunnel);
    let mut bad_icv = good.clone();
    let n = bad_icv.len();
    bad_icv[n - 1] ^= 1;
    let mut frag = good.clone();
    frag[6] = 0x20; // More Fragments
    let udp = |payload: &[u8]| {
        let mut u = vec![0x11, 0x94, 0x11, 0x94];
        u.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &u)
    };
    let frames = vec![
        good.clone(),                                  // 1: decrypts
        bad_icv,                                       // 2: ICV mismatch
        good[..good.len() - 10].to_vec(),              // 3: cut by the snap length
        ipv4([1, 1, 1, 1], [2, 2, 2, 2], 50, &[0, 0]), // 4: ESP header cut short
        frag,                                          // 5: a fragment
        udp(&[0xfe]),                                  // 6: 1-byte UDP payload, not ff
        udp(&[0, 0, 0, 0, 1]),                         // 7: IKE too short
        udp(&[0x20, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]), // 8: ESP-in-UDP, too short
        ipv4([1, 1, 1, 1], [2, 2, 2, 2], 6, &[0; 20]), // 9: TCP: skipped
        vec![0x45, 0, 0],                              // 10: not even an IP header
        vec![],                                        // 11: empty frame
        vec![0x60; 30],                                // 12: cut IPv6 header
        ipv4(
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            50,
            &[0x20, 0, 0, 0, 0, 0, 0, 1, 0xff],
        ), // 13
        good,                                          // 14: decrypts again
    ];
    let p = dir.join("garbage.pcap");
    std::fs::write(&p, pcap(101, &frames)).unwrap();
    let r = decrypt(&keys, &p, false);
    assert_eq!(r.code, Some(0), "{}", r.err);
    let lines = r.lines();
    let find = |n: u32| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("#{n} ")))
            .copied()
    };
    assert!(find(1).unwrap().contains("ICMP echo request"));
    assert!(
        find(2)
            .unwrap()
            .ends_with("ICV mismatch (wrong key or algorithm?)")
    );
    assert!(
        find(3).unwrap().contains("packet cut short by the capture"),
        "{:?}",
        find(3)
    );
    assert!(
        find(4).unwrap().ends_with("ESP: truncated header"),
        "{:?}",
        find(4)
    );
    assert!(find(5).unwrap().contains("fragment"), "{:?}", find(5));
    assert!(
        find(6)
            .unwrap()
            .contains("neither ESP, IKE nor a keepalive"),
        "{:?}",
        find(6)
    );
    assert!(
        find(7).unwrap().contains("too short for an IKE header"),
        "{:?}",
        find(7)
    );
    assert!(
        find(8).unwrap().contains("ESP-in-UDP spi 0x20000000"),
        "{:?}",
        find(8)
    );
    assert!(find(8).unwrap().contains("error"), "{:?}", find(8));
    for n in [9, 10, 11, 12] {
        assert_eq!(find(n), None);
    }
    assert!(find(13).unwrap().contains("error"), "{:?}", find(13));
    assert!(find(14).unwrap().contains("ICMP echo request"));
    assert_eq!(lines.len(), 10, "{}", r.out);

    // An unsupported link type is an error for the whole file.
    std::fs::write(&p, pcap(147, &frames)).unwrap();
    let r = decrypt(&keys, &p, false);
    assert_eq!(r.code, Some(1));
    assert!(
        r.err.contains("link type 147 is not supported"),
        "{}",
        r.err
    );
    std::fs::remove_dir_all(dir).ok();
}
