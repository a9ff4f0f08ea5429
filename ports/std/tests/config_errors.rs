//! Configuration errors: one test per class of mistake, each checking the line the error
//! names and that the message says what was expected. Plus: every shipped example parses.

use ipsec_std::config::{Config, ConfigError};

/// A valid configuration; tests replace one line (or add lines) to break it.
const BASE: &str = r#"hostname = "spoke"
[interface]
name = "l-out"
address = "203.0.113.1"
tun = "ipsec0"
mtu = 1400
source = "198.51.100.1"

[isakmp]
nat_keepalive = 20

[[isakmp.policy]]
priority = 10
encryption = "aes"
hash = "sha"
group = 14
authentication = "pre-share"

[[isakmp.key]]
key = "secret"
address = "203.0.113.2"

[[transform_set]]
name = "AES-SHA"
esp = ["esp-aes", "esp-sha-hmac"]

[[crypto_map]]
name = "vpn"
seq = 10
peers = ["203.0.113.2"]
transform_sets = ["AES-SHA"]
match = { local = "198.51.100.0/25", remote = "198.51.100.128/25" }
"#;

/// BASE with line `line` (1-based) replaced by `with`.
fn replace(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

fn err(text: &str) -> ConfigError {
    match Config::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            // The rendered form names the place and points at it.
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("config:{}:{}:", e.line, e.column)),
                "{shown}"
            );
            assert!(shown.contains('^'), "{shown}");
            e
        }
    }
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

fn assert_err(e: &ConfigError, line: usize, needles: &[&str]) {
    assert_eq!(e.line, line, "wrong line: {e}");
    for n in needles {
        assert!(e.message.contains(n), "message lacks {n:?}: {e}");
    }
}

#[test]
fn base_is_valid() {
    let c = Config::parse(BASE).expect("valid");
    assert_eq!(c.ike.crypto_maps.len(), 1);
    assert_eq!(c.interface.mtu, 1400);
    assert_eq!(c.nat_keepalive, 20);
}

#[test]
fn unknown_key() {
    let e = err(&replace(10, "nat_keepalve = 20"));
    assert_err(
        &e,
        10,
        &[
            "unknown field `nat_keepalve`",
            "expected one of",
            "nat_keepalive",
        ],
    );
    assert_eq!(e.column, 1);
    // In an inline table too.
    let e = err(&replace(
        32,
        r#"match = { local = "198.51.100.0/25", remote = "198.51.100.128/25", proto = "tcp" }"#,
    ));
    assert_err(&e, 32, &["unknown field `proto`", "protocol"]);
    // And an unknown section.
    let e = err(&format!("{BASE}\n[crypto]\nfoo = 1\n"));
    assert_err(&e, 34, &["unknown field `crypto`", "expected one of"]);
}

#[test]
fn wrong_type() {
    let e = err(&replace(6, r#"mtu = "1400""#));
    assert_err(&e, 6, &["invalid type: string \"1400\"", "expected u16"]);
    let e = err(&replace(30, r#"peers = "203.0.113.2""#));
    assert_err(&e, 30, &["invalid type", "expected a sequence"]);
}

#[test]
fn unknown_algorithm() {
    let e = err(&replace(25, r#"esp = ["esp-aes", "esp-sha-hmacc"]"#));
    assert_err(
        &e,
        25,
        &[
            "unknown variant `esp-sha-hmacc`",
            "esp-sha-hmac",
            "esp-sha256-hmac",
        ],
    );
    let e = err(&replace(14, r#"encryption = "aes-512""#));
    assert_err(&e, 14, &["unknown variant `aes-512`", "`aes-256`"]);
    let e = err(&replace(16, "group = 3"));
    assert_err(
        &e,
        16,
        &["unknown Diffie-Hellman group 3", "1, 2, 5, 14 or 15"],
    );
    let e = err(&replace(17, r#"authentication = "rsa-sig""#));
    assert_err(&e, 17, &["unknown variant `rsa-sig`", "`pre-share`"]);
    let e = err(&replace(25, r#"esp = ["esp-aes", "esp-3des"]"#));
    assert_err(&e, 25, &["two encryption transforms"]);
    let e = err(&format!("{BASE}pfs = \"group3\"\n"));
    assert_err(&e, 33, &["pfs", "group14"]);
}

#[test]
fn missing_psk_for_peer() {
    let e = err(&replace(30, r#"peers = ["203.0.113.2", "203.0.113.9"]"#));
    assert_err(
        &e,
        30,
        &[
            "no pre-shared key for peer 203.0.113.9",
            "[[isakmp.key]]",
            "0.0.0.0",
        ],
    );
    assert!(e.column > 20, "points at the second peer: {e}");
    // A wildcard key covers every peer.
    let ok = replace(21, r#"address = "0.0.0.0""#).replace(
        r#"peers = ["203.0.113.2"]"#,
        r#"peers = ["203.0.113.2", "203.0.113.9"]"#,
    );
    Config::parse(&ok).expect("wildcard key");
}

#[test]
fn overlapping_selectors() {
    let second = r#"
[[crypto_map]]
name = "vpn"
seq = 20
peers = ["203.0.113.2"]
transform_sets = ["AES-SHA"]
match = { local = "198.51.100.0/24", remote = "198.51.100.192/26" }
"#;
    let e = err(&format!("{BASE}{second}"));
    assert_err(
        &e,
        39,
        &[
            "crypto map vpn 20",
            "overlaps crypto map entry 10 (line 32)",
            "disjoint",
        ],
    );
    // Disjoint remote networks are fine.
    let ok = second.replace("198.51.100.192/26", "192.0.2.0/24");
    Config::parse(&format!("{BASE}{ok}")).expect("disjoint");
}

#[test]
fn unknown_transform_set() {
    let e = err(&replace(
        31,
        r#"transform_sets = ["AES-SHA", "AES-SHA256"]"#,
    ));
    assert_err(
        &e,
        31,
        &[
            "unknown transform set \"AES-SHA256\"",
            "expected one of",
            "AES-SHA",
        ],
    );
}

#[test]
fn semantic_ranges_and_references() {
    // Missing required value.
    let e = err(&replace(4, "# no address"));
    assert_err(&e, 2, &["missing field `address`"]);
    // Not an address.
    let e = err(&replace(4, r#"address = "203.0.113""#));
    assert_err(&e, 4, &["not an IP address"]);
    // Not a prefix.
    let e = err(&replace(
        32,
        r#"match = { local = "198.51.100.0/33", remote = "198.51.100.128/25" }"#,
    ));
    assert_err(&e, 32, &["not a prefix", "ADDRESS/LENGTH"]);
    // Keepalive (DPD) values are validated.
    let e = err(&BASE.replace(
        "nat_keepalive = 20",
        "nat_keepalive = 20\nkeepalive = { interval = 10, retry = 1, mode = \"periodic\" }",
    ));
    assert_err(&e, 11, &["keepalive retry 1", "2 to 60"]);
    let e = err(&BASE.replace(
        "nat_keepalive = 20",
        "keepalive = { interval = 10, retry = 2, mode = \"sometimes\" }",
    ));
    assert_err(
        &e,
        10,
        &["unknown variant `sometimes`", "`periodic`", "`on-demand`"],
    );
    // GRE tunnel protection must name a profile.
    let e = err(&format!(
        "{BASE}\n[[tunnel]]\nname = \"Tunnel0\"\naddress = \"172.16.0.1/30\"\nsource = \"203.0.113.1\"\ndestination = \"203.0.113.2\"\nprotection = \"gre-prof\"\n"
    ));
    assert_err(&e, 39, &["unknown ipsec profile \"gre-prof\""]);
    // Redundancy: disabled is fine with or without the other keys.
    Config::parse(&format!(
        "{BASE}\n[redundancy]\nenabled = false\nvirtual_ip = \"203.0.113.10\"\n"
    ))
    .expect("disabled redundancy");
    // Transport mode is for GRE tunnel protection only: a crypto map cannot use it.
    let text = replace(
        25,
        "esp = [\"esp-aes\", \"esp-sha-hmac\"]\nmode = \"transport\"",
    );
    let e = err(&text);
    assert_err(
        &e,
        line_of(&text, "transform_sets = [\"AES-SHA\"]"),
        &["mode transport", "ipsec_profile", "mode = \"tunnel\""],
    );
    // Duplicate priorities.
    let e = err(&format!(
        "{BASE}\n[[isakmp.policy]]\npriority = 10\nencryption = \"3des\"\nhash = \"md5\"\ngroup = 2\nauthentication = \"pre-share\"\n"
    ));
    assert_err(&e, 35, &["duplicate isakmp policy priority 10"]);
}

/// A GRE tunnel with tunnel protection (transport mode), appended to BASE.
const TUNNEL: &str = r#"
[[transform_set]]
name = "AES-SHA-TR"
esp = ["esp-aes", "esp-sha-hmac"]
mode = "transport"

[[ipsec_profile]]
name = "GRE-PROT"
transform_sets = ["AES-SHA-TR", "AES-SHA"]
pfs = "group14"
lifetime = { seconds = 1800 }

[[tunnel]]
name = "Tunnel0"
address = "172.16.68.1/30"
source = "203.0.113.1"
destination = "203.0.113.2"
protection = "GRE-PROT"
keepalive = { period = 10, retries = 3 }
"#;

#[test]
fn tunnel_protection_becomes_a_crypto_map_entry() {
    let c = Config::parse(&format!("{BASE}{TUNNEL}")).expect("valid");
    let t = &c.tunnels[0];
    assert_eq!(t.device, "tunnel0");
    assert_eq!(t.seq, ipsec_std::config::TUNNEL_SEQ_BASE);
    assert_eq!(t.keepalive, Some((10, 3)));
    let e = c.ike.crypto_map(t.seq).expect("entry for the tunnel");
    assert_eq!(e.selector.protocol, Some(47));
    assert_eq!(e.selector.local.to_string(), "203.0.113.1/32");
    assert_eq!(e.selector.remote.to_string(), "203.0.113.2/32");
    assert_eq!(
        e.peers.as_slice(),
        &["203.0.113.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(e.transform_sets.len(), 2);
    assert_eq!(e.transform_sets[0].mode, ipsec_core::esp::Mode::Transport);
    assert_eq!(e.lifetime_seconds, 1800);
    assert!(e.pfs.is_some());
    assert!(c.map(t.seq).is_none(), "not a configured crypto map entry");
}

#[test]
fn tunnel_mistakes() {
    let full = format!("{BASE}{TUNNEL}");
    let with = |from: &str, to: &str| {
        assert!(full.contains(from), "{from}");
        full.replacen(from, to, 1)
    };
    // The source must be the interface address: IKE and ESP leave from it.
    let t = with(
        "source = \"203.0.113.1\"\ndest",
        "source = \"203.0.113.7\"\ndest",
    );
    assert_err(
        &err(&t),
        line_of(&t, "203.0.113.7"),
        &["source 203.0.113.7", "[interface] address"],
    );
    // No protection: the daemon carries GRE only under IPsec.
    let t = with("protection = \"GRE-PROT\"\n", "");
    assert_err(
        &err(&t),
        line_of(&t, "[[tunnel]]"),
        &["no protection", "ipsec_profile"],
    );
    // The TUN is named after the tunnel: at most 15 characters.
    let t = with("name = \"Tunnel0\"", "name = \"Tunnel0123456789abc\"");
    assert_err(&err(&t), line_of(&t, "Tunnel0123"), &["1 to 15 characters"]);
    // No pre-shared key for the tunnel destination (the IKE peer).
    let t = with(
        "destination = \"203.0.113.2\"",
        "destination = \"203.0.113.9\"",
    );
    assert_err(
        &err(&t),
        line_of(&t, "203.0.113.9"),
        &["no pre-shared key for destination 203.0.113.9"],
    );
    // An address that is not an IPv4 /30 or wider.
    let t = with(
        "address = \"172.16.68.1/30\"",
        "address = \"172.16.68.1/32\"",
    );
    assert_err(
        &err(&t),
        line_of(&t, "172.16.68.1/32"),
        &["prefix of at most /30"],
    );
    // A second tunnel: same name (case-insensitive), overlapping subnet, same destination.
    let second = |name: &str, addr: &str, dst: &str| {
        format!(
            "{full}\n[[tunnel]]\nname = \"{name}\"\naddress = \"{addr}\"\nsource = \"203.0.113.1\"\ndestination = \"{dst}\"\nprotection = \"GRE-PROT\"\n[[isakmp.key]]\nkey = \"k\"\naddress = \"0.0.0.0\"\n"
        )
    };
    let t = second("TUNNEL0", "172.16.69.1/30", "203.0.113.3");
    assert_err(
        &err(&t),
        line_of(&t, "TUNNEL0"),
        &["duplicate tunnel \"TUNNEL0\"", "unique names"],
    );
    let t = second("Tunnel1", "172.16.68.2/30", "203.0.113.3");
    assert_err(
        &err(&t),
        line_of(&t, "172.16.68.2/30"),
        &["overlaps tunnel Tunnel0", "disjoint"],
    );
    let t = second("Tunnel1", "172.16.69.1/30", "203.0.113.2");
    let e = err(&t);
    assert_eq!(
        e.line,
        t.lines()
            .enumerate()
            .filter(|(_, l)| l.contains("destination = \"203.0.113.2\""))
            .map(|(i, _)| i + 1)
            .last()
            .unwrap()
    );
    assert!(e.message.contains("already tunnel Tunnel0's"), "{e}");
    // A crypto map entry whose ACL catches the tunnel's GRE packets.
    let t = format!(
        "{full}\n[[crypto_map]]\nname = \"vpn\"\nseq = 20\npeers = [\"203.0.113.2\"]\ntransform_sets = [\"AES-SHA\"]\nmatch = {{ local = \"203.0.113.0/24\", remote = \"203.0.113.0/24\", protocol = \"gre\" }}\n"
    );
    assert_err(
        &err(&t),
        line_of(&t, "[[tunnel]]"),
        &[
            "matches crypto map entry 20",
            "leave the tunnel's GRE packets alone",
        ],
    );
    // Crypto map entries and protected tunnels share the library's eight slots.
    let mut t = BASE.to_string();
    for i in 1..8 {
        t += &format!(
            "\n[[crypto_map]]\nname = \"vpn\"\nseq = {}\npeers = [\"203.0.113.2\"]\ntransform_sets = [\"AES-SHA\"]\nmatch = {{ local = \"10.{i}.0.0/16\", remote = \"10.{}.0.0/16\" }}\n",
            10 + i,
            100 + i
        );
    }
    let t = format!("{t}{TUNNEL}");
    assert_err(
        &err(&t),
        line_of(&t, "[[tunnel]]"),
        &["tunnel Tunnel0", "share 8 slots"],
    );
}

#[test]
fn examples_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "toml") {
            Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(
        n >= 4,
        "expected the four example configurations, found {n}"
    );
}

/// The lines of a `[redundancy]` section with every required key (line 34 of the file
/// is `[redundancy]`, 35 `enabled = true`, 36 `virtual_ip`, 37 `peer`, 38 `interface`,
/// 39 `sync_key`).
const HA: [&str; 6] = [
    "[redundancy]",
    "enabled = true",
    "virtual_ip = \"203.0.113.10\"",
    "peer = \"203.0.113.3\"",
    "interface = \"eth0\"",
    "sync_key = \"0123456789abcdef0123\"",
];

/// BASE plus the HA section, with `extra` lines added at its end.
fn ha(extra: &str) -> String {
    format!("{BASE}\n{}\n{extra}", HA.join("\n"))
}

/// BASE plus the HA section, with the section line starting `key =` replaced by `line`
/// (or `line` appended). Returns the text and the line number of `line`.
fn ha_with(key: &str, line: &str) -> (String, usize) {
    let mut lines: Vec<String> = HA.iter().map(ToString::to_string).collect();
    match lines
        .iter()
        .position(|l| l.starts_with(&format!("{key} =")))
    {
        Some(i) => lines[i] = line.to_string(),
        None => lines.push(line.to_string()),
    }
    let text = format!("{BASE}\n{}\n", lines.join("\n"));
    let n = text.lines().position(|l| l == line).map_or(0, |i| i + 1);
    (text, n)
}

#[test]
fn redundancy_valid() {
    let c = Config::parse(&ha("priority = 110\npreempt = true\nadvert_interval_ms = 200\nreplay_interval = { inbound = 1, outbound = 1 }\nwindow_margin = 2\n")).expect("valid");
    let r = c.redundancy.as_ref().expect("enabled");
    assert_eq!(r.virtual_ip.to_string(), "203.0.113.10");
    assert_eq!((r.group, r.priority, r.preempt), (1, 110, true));
    assert_eq!(r.preempt_delay, 0);
    assert_eq!(r.advert_interval_ms, 200);
    assert_eq!(r.sync_port, ipsec_std::config::DEFAULT_SYNC_PORT);
    assert_eq!(r.replay_interval, (1, 1));
    assert_eq!((r.seq_margin, r.window_margin), (64, 2));
    // IKE identities and the ESP outer addresses become the virtual IP.
    assert_eq!(c.ike.local_addr.to_string(), "203.0.113.10");
    assert_eq!(c.interface.address.to_string(), "203.0.113.1");
    // The sync key never shows in Debug output.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
    assert_eq!(r.sync_key.expose(), b"0123456789abcdef0123");
    // Disabled: no redundancy, IKE on the interface address.
    let off = Config::parse(&format!("{BASE}\n[redundancy]\nenabled = false\n")).expect("valid");
    assert!(off.redundancy.is_none());
    assert_eq!(off.ike.local_addr.to_string(), "203.0.113.1");
}

#[test]
fn redundancy_missing_keys() {
    for (drop, needle) in [
        ("virtual_ip", "needs virtual_ip"),
        ("peer", "needs peer"),
        ("interface", "needs interface"),
        ("sync_key", "needs sync_key"),
    ] {
        let lines: Vec<&str> = HA
            .iter()
            .copied()
            .filter(|l| !l.starts_with(&format!("{drop} =")))
            .collect();
        let text = format!("{BASE}\n{}\n", lines.join("\n"));
        let e = err(&text);
        // The error points at `enabled = true` (line 35).
        assert_err(&e, 35, &[needle, "[redundancy]"]);
    }
}

#[test]
fn redundancy_bad_values() {
    let cases: [(&str, &[&str]); 13] = [
        (
            "preempt_delay = 4000",
            &["preempt_delay 4000", "0 to 3600 seconds"],
        ),
        ("priority = 255", &["priority 255", "expected 1 to 254"]),
        ("priority = 0", &["priority 0", "expected 1 to 254"]),
        ("group = 0", &["group 0", "expected 1 to 255"]),
        (
            "advert_interval_ms = 5",
            &["advert_interval_ms 5", "multiple of 10"],
        ),
        (
            "advert_interval_ms = 1005",
            &["advert_interval_ms 1005", "multiple of 10"],
        ),
        (
            "advert_interval_ms = 50000",
            &["advert_interval_ms 50000", "10 to 40950"],
        ),
        (
            "sync_port = 4500",
            &["sync_port 4500", "not IKE's 500 or 4500"],
        ),
        (
            "replay_interval = { inbound = 0, outbound = 1 }",
            &["replay_interval 0", "1 to 1000000"],
        ),
        (
            "window_margin = 2000000",
            &["window_margin 2000000", "0 to 1000000"],
        ),
        (
            "interface = \"a/b\"",
            &["redundancy interface \"a/b\"", "no '/'"],
        ),
        (
            "replay_interval = { inbound = 1 }",
            &["missing field `outbound`"],
        ),
        ("track = \"eth1\"", &["unknown field `track`"]),
    ];
    for (line, needles) in cases {
        let key = line.split(' ').next().unwrap_or_default();
        let (text, want) = ha_with(key, line);
        let e = err(&text);
        assert_err(&e, want, needles);
    }
    // A short sync key, named with its length.
    let e = err(&ha("").replace("\"0123456789abcdef0123\"", "\"short\""));
    assert_err(&e, 39, &["sync_key of 5 bytes", "16 to 64"]);
    // IPv6 virtual IP.
    let e = err(&ha("").replace("\"203.0.113.10\"", "\"2001:db8::10\""));
    assert_err(&e, 36, &["virtual_ip", "IPv4"]);
    // The VIP may not be our own address, the peer may not be us or the VIP.
    let e = err(&ha("").replace("\"203.0.113.10\"", "\"203.0.113.1\""));
    assert_err(&e, 36, &["virtual_ip equals the interface address"]);
    let e = err(&ha("").replace("\"203.0.113.3\"", "\"203.0.113.10\""));
    assert_err(&e, 37, &["peer must be the other member's own address"]);
}

#[test]
fn redundancy_refuses_gre_tunnels() {
    // Stateful failover covers crypto map entries (as on IOS); a tunnel's source is the
    // box's own address, which does not move to the standby.
    let text = format!("{BASE}{TUNNEL}\n{}\n", HA.join("\n"));
    assert_err(
        &err(&text),
        line_of(&text, "[[tunnel]]"),
        &[
            "GRE tunnels cannot be combined with [redundancy]",
            "crypto map",
        ],
    );
    // Each on its own is fine.
    assert!(Config::parse(&format!("{BASE}{TUNNEL}")).is_ok());
    assert!(Config::parse(&ha("")).is_ok());
}
