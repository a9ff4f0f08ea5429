//! `ipsec esp open` / `ipsec esp seal` reproduce independently generated packets byte for
//! byte (the binary is run as a user would run it), and fail with a one-line reason.

use std::process::Command;

use serde_json::Value;

fn data(name: &str) -> Value {
    let p = format!(
        "{}/../../ipsec-core/tests/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn ipsec(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipsec"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        String::from_utf8(out.stderr).unwrap().trim().to_string(),
    )
}

/// The SA options of one scapy vector, as command-line arguments.
fn sa_args(v: &Value) -> Vec<String> {
    let (enc, key) = match s(&v["encryption"]).as_str() {
        "DES" => ("des-cbc", s(&v["enc_key"])),
        "3DES" => ("3des-cbc", s(&v["enc_key"])),
        "AES-CBC-128" => ("aes128-cbc", s(&v["enc_key"])),
        "AES-CBC-256" => ("aes256-cbc", s(&v["enc_key"])),
        "AES-GCM" if s(&v["enc_key"]).len() == 32 => ("aes128-gcm16", s(&v["gcm_keymat_rfc4106"])),
        "AES-GCM" => ("aes256-gcm16", s(&v["gcm_keymat_rfc4106"])),
        "NULL" => ("null", String::new()),
        other => panic!("{other}"),
    };
    let auth = match s(&v["integrity"]).as_str() {
        "HMAC-SHA1-96" if enc.contains("gcm") => "none",
        "HMAC-SHA1-96" => "hmac-sha1-96",
        "HMAC-SHA2-256-128" => "hmac-sha256-128",
        _ => "none",
    };
    let mut a: Vec<String> = vec![
        "--spi".into(),
        s(&v["spi"]),
        "--enc".into(),
        enc.into(),
        "--enc-key".into(),
        key,
        "--auth".into(),
        auth.into(),
        "--mode".into(),
        s(&v["mode"]),
    ];
    if auth != "none" {
        a.extend(["--auth-key".into(), s(&v["auth_key"])]);
    }
    if matches!(s(&v["udp_encap"]).as_str(), "True" | "true") {
        a.push("--udp-encap".into());
    }
    a
}

#[test]
fn open_and_seal_reproduce_all_scapy_packets() {
    let d = data("scapy_esp_vectors.json");
    let vectors = d["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 40);
    for v in vectors {
        let name = s(&v["name"]);
        let full = s(&v["full_packet"]);
        let inner = s(&v["inner_packet"]);

        let mut open: Vec<String> = vec!["esp".into(), "open".into()];
        open.extend(sa_args(v));
        open.extend(["--packet".into(), full.clone()]);
        let (ok, out, err) = ipsec(&open);
        assert!(ok, "{name}: {err}");
        assert_eq!(out, inner, "{name}: open");

        let mut seal: Vec<String> = vec!["esp".into(), "seal".into()];
        seal.extend(sa_args(v));
        seal.extend([
            "--seq".into(),
            s(&v["seq"]),
            "--packet".into(),
            inner.clone(),
        ]);
        let iv = s(&v["iv"]);
        if !iv.is_empty() {
            seal.extend(["--iv".into(), iv]);
        }
        if s(&v["mode"]) == "tunnel" {
            let outer = hex::decode(s(&v["outer_headers"])).unwrap();
            let ident = u16::from_be_bytes([outer[4], outer[5]]);
            seal.extend([
                "--src".into(),
                s(&v["outer_src"]),
                "--dst".into(),
                s(&v["outer_dst"]),
                "--ident".into(),
                ident.to_string(),
            ]);
        }
        let (ok, out, err) = ipsec(&seal);
        assert!(ok, "{name}: {err}");
        assert_eq!(out, full, "{name}: seal");
    }
}

#[test]
fn rfc3602_full_packets() {
    let d = data("rfc3602_aes_cbc_esp.json");
    for c in d["esp_cases"].as_array().unwrap() {
        let full = s(&c["full_ip_packet"]);
        if full.is_empty() || full.starts_with("0000") {
            continue; // cases 6 and 8 have no outer header
        }
        let args: Vec<String> = [
            "esp",
            "open",
            "--spi",
            &s(&c["spi_hex"]),
            "--enc",
            "aes128-cbc",
            "--enc-key",
            &s(&c["key"]),
            "--mode",
            &s(&c["mode"]),
            "--packet",
            &full,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let (ok, out, err) = ipsec(&args);
        assert!(ok, "case {}: {err}", s(&c["case"]));
        let payload = s(&c["payload_data"]);
        assert!(out.ends_with(&payload), "case {}: {out}", s(&c["case"]));
    }
}

#[test]
fn failures_exit_nonzero_with_one_line_reason() {
    let d = data("scapy_esp_vectors.json");
    let v = d["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| s(&v["name"]) == "aes128-cbc_hmac-sha1-96_tunnel")
        .unwrap();
    let full = hex::decode(s(&v["full_packet"])).unwrap();
    let run = |pkt: &[u8], extra: &[&str]| {
        let mut a: Vec<String> = vec!["esp".into(), "open".into()];
        a.extend(sa_args(v));
        a.extend(extra.iter().map(|x| x.to_string()));
        a.extend(["--packet".into(), hex::encode(pkt)]);
        ipsec(&a)
    };
    let mut flipped = full.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let (ok, out, err) = run(&flipped, &[]);
    assert!(!ok && out.is_empty());
    assert_eq!(err, "ipsec: ICV mismatch");

    let (ok, _, err) = run(&full[..full.len() - 3], &[]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut wrong_spi = full.clone();
    wrong_spi[20] ^= 0xff;
    let (ok, _, err) = run(&wrong_spi, &[]);
    assert!(!ok);
    assert_eq!(err, "ipsec: SPI does not belong to this SA");

    // Wrong key length: rejected before any packet is looked at.
    let mut a: Vec<String> = vec!["esp".into(), "open".into()];
    a.extend(sa_args(v));
    let k = a.iter().position(|x| x == "--enc-key").unwrap();
    a[k + 1] = "00".into();
    a.extend(["--packet".into(), hex::encode(&full)]);
    let (ok, _, err) = ipsec(&a);
    assert!(!ok);
    assert!(err.starts_with("ipsec: invalid keys"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["esp", "--help"],
        &["esp", "open", "--help"],
        &["esp", "seal", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ipsec"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}
