//! Shared helpers for the integration tests: test data paths, hex, and a tiny pcap reader
//! (classic pcap, Ethernet or Linux cooked, IPv4, UDP 500/4500).
#![allow(
    dead_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn json(name: &str) -> serde_json::Value {
    let s = std::fs::read_to_string(data_path(name)).unwrap();
    serde_json::from_str(&s).unwrap()
}

pub fn hx(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))).unwrap()
}

pub fn arr8(v: &[u8]) -> [u8; 8] {
    v.try_into().unwrap()
}

/// One ISAKMP datagram found in a capture.
#[derive(Debug, Clone)]
pub struct IkeDatagram {
    /// 1-based frame number in the capture.
    pub frame: usize,
    pub src_port: u16,
    pub dst_port: u16,
    /// The UDP payload, with the non-ESP marker stripped on port 4500.
    pub data: Vec<u8>,
}

/// Every ISAKMP datagram of a capture (UDP 500, or UDP 4500 behind a non-ESP marker).
/// ESP-in-UDP, NAT keepalives and non-UDP frames are skipped.
pub fn ike_datagrams(capture: &str) -> Vec<IkeDatagram> {
    let b = std::fs::read(data_path(&format!("captures/{capture}"))).unwrap();
    assert!(b.len() >= 24, "short pcap");
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a classic pcap: {m:#x}"),
    };
    let u32_at = |o: usize| {
        let w: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(20);
    let mut out = Vec::new();
    let mut off = 24;
    let mut frame = 0;
    while off + 16 <= b.len() {
        let incl = u32_at(off + 8) as usize;
        let pkt = &b[off + 16..off + 16 + incl];
        off += 16 + incl;
        frame += 1;
        let (ethertype, l3) = match link {
            1 => {
                let mut et = u16::from_be_bytes([pkt[12], pkt[13]]);
                let mut p = 14;
                if et == 0x8100 {
                    et = u16::from_be_bytes([pkt[16], pkt[17]]);
                    p = 18;
                }
                (et, p)
            }
            113 => (u16::from_be_bytes([pkt[14], pkt[15]]), 16),
            l => panic!("link type {l} not handled"),
        };
        if ethertype != 0x0800 {
            continue;
        }
        let ip = &pkt[l3..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if ip[9] != 17 || frag & 0x1fff != 0 || frag & 0x2000 != 0 {
            continue;
        }
        let udp = &ip[ihl..];
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let mut data = &udp[8..ulen];
        if sport == 4500 || dport == 4500 {
            if data.len() < 4 || data[..4] != [0, 0, 0, 0] {
                continue; // NAT keepalive or ESP-in-UDP
            }
            data = &data[4..];
        } else if sport != 500 && dport != 500 {
            continue;
        }
        out.push(IkeDatagram {
            frame,
            src_port: sport,
            dst_port: dport,
            data: data.to_vec(),
        });
    }
    out
}
