#!/usr/bin/env python3
"""Write the checked-in seed corpora: fuzz/corpus/<target>/seed-*.

    python3 fuzz/seed.py            # from anywhere; stdlib only, deterministic

Sources: the packets of ipsec-core/tests/data/scapy_esp_vectors.json and
rfc3602_aes_cbc_esp.json (RFC 3602 cases 6 and 8 and the RUB-NDS vector have no outer
header on record: one is built here), plus a few hand-built inputs for the parts the
vectors do not cover (IPv6, ESN, selectors, replay-window operations).

The esp_decapsulate seeds start with the index of an SA in the `SAS` table of
fuzz_targets/esp_decapsulate.rs; the indices are read from that file by SA name, so
reordering the table only needs a re-run of this script. Every existing `seed-*` file is
rewritten; `regression-*` files (crashes kept as regression seeds) are left alone.

File names start with "seed-", so they never match the .gitignore pattern for the hash
names libFuzzer gives the inputs it finds (/fuzz/corpus/*/[0-9a-f]*[0-9a-f]).
"""

import ipaddress
import json
import re
import struct
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
DATA = FUZZ.parent / "ipsec-core" / "tests" / "data"
CORPUS = FUZZ / "corpus"
NAME_OK = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def load(name):
    return json.loads((DATA / name).read_text())


def sa_indices():
    """SA name -> index, from the `static SAS` table of the esp_decapsulate target."""
    src = (FUZZ / "fuzz_targets" / "esp_decapsulate.rs").read_text()
    table = src[src.index("static SAS"):]
    table = table[: table.index("\n];")]
    names = re.findall(r'\bsa\("([^"]+)"', table)
    if len(names) != len(set(names)) or len(names) > 128:
        sys.exit("esp_decapsulate SA table: names must be unique and at most 128")
    return {n: i for i, n in enumerate(names)}


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0x1234, ttl=64):
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    hdr = hdr[:10] + struct.pack(">H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def v6addr(a):
    return ipaddress.IPv6Address(a).packed


def ipv6(src, dst, nh, payload):
    return (struct.pack(">IHBB", 0x60000000, len(payload), nh, 64)
            + v6addr(src) + v6addr(dst) + payload)


def udp(sport, dport, payload):
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


class Writer:
    def __init__(self):
        self.count = {}

    def reset(self, target):
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("seed-*"):
            f.unlink()
        self.count[target] = 0

    def write(self, target, name, data):
        name = "seed-" + name.lower().replace("_", "-")
        assert NAME_OK.match(name), name
        path = CORPUS / target / name
        assert not path.exists(), f"duplicate seed name {name}"
        path.write_bytes(bytes(data))
        self.count[target] += 1


def rfc3602_packets(rfc):
    """(name, SA name, full packet) for RFC 3602 cases 5-8 and the RUB-NDS vector."""
    out = []
    for c in rfc["esp_cases"]:
        sa = ("rfc3602-case5-6_aes128-cbc_transport" if c["mode"] == "transport"
              else "rfc3602-case7-8_aes128-cbc_tunnel")
        esp = bytes.fromhex(c["esp_packet"])
        if c.get("full_ip_packet"):
            full = bytes.fromhex(c["full_ip_packet"])
        else:  # no outer header on record: build one
            full = ipv4(c["src"], c["dst"], 50, esp)
        out.append((f"rfc3602-case{c['case']}-{c['mode']}", sa, full))
    for i, c in enumerate(rfc["extra_esp_vectors"]):
        esp = bytes.fromhex(c["esp_packet"])
        out.append((f"rubnds-{i}-aes128-cbc-hmac-sha1-96-tunnel",
                    "rubnds_aes128-cbc_hmac-sha1-96_tunnel",
                    ipv4("192.0.2.1", "198.51.100.2", 50, esp)))
    return out


# Seal-mode flags of esp_decapsulate.
WRAP, WRAP_V6, IN_POLICY, ORIGINAL_FIRST = 1, 2, 4, 8


def seal_input(idx, inner, seq, flags=0, offset=0xFFFF, mask=b"\0\0\0\0", back=0):
    return (bytes([0x80 | idx]) + struct.pack(">H4sBQB", offset, mask, flags, seq, back)
            + inner)


def esp_decapsulate(w, scapy, rfc, sas):
    t = "esp_decapsulate"
    w.reset(t)
    # Raw mode: every full packet, on the SA with its keys.
    for v in scapy["vectors"]:
        w.write(t, "raw-" + v["name"], bytes([sas[v["name"]]]) + bytes.fromhex(v["full_packet"]))
    for name, sa, full in rfc3602_packets(rfc):
        w.write(t, "raw-" + name, bytes([sas[sa]]) + full)

    # Seal mode on the vectors' SAs: the packets they carry, untouched.
    by_name = {v["name"]: v for v in scapy["vectors"]}
    for n in ["des-cbc_hmac-sha1-96_transport", "3des-cbc_hmac-sha256-128_tunnel_udp4500",
              "aes128-cbc_hmac-sha1-96_tunnel", "aes256-cbc_hmac-sha256-128_transport_udp4500",
              "aes128-gcm-16_tunnel_udp4500", "aes256-gcm-16_transport",
              "null_hmac-sha1-96_transport", "null_hmac-sha1-96_tunnel_udp4500"]:
        v = by_name[n]
        w.write(t, "seal-" + n, seal_input(sas[n], bytes.fromhex(v["inner_packet"]), v["seq"]))
    c5, c7 = rfc["esp_cases"][0], rfc["esp_cases"][2]
    w.write(t, "seal-rfc3602-case5-transport",
            seal_input(sas["rfc3602-case5-6_aes128-cbc_transport"],
                       bytes.fromhex(c5["original_ip_header"] + c5["payload_data"]), c5["seq"]))
    w.write(t, "seal-rfc3602-case7-tunnel",
            seal_input(sas["rfc3602-case7-8_aes128-cbc_tunnel"],
                       bytes.fromhex(c7["payload_data"]), c7["seq"]))

    # Seal mode on the other SAs, with packets inside their selectors.
    data = bytes(range(32))
    v4 = ipv4("172.16.0.1", "10.0.0.1", 17, udp(1500, 1500, data))
    v6 = ipv6("2001:db8:2::1", "2001:db8:1::1", 17, udp(1500, 1500, data))
    v6_opts = ipv6("2001:db8:2::1", "2001:db8:1::1", 60,
                   bytes([17, 0, 1, 4, 0, 0, 0, 0]) + udp(1500, 1500, data))
    esn_seq = 0x1_FFFF_FFF0
    seeds = [
        ("aes128-gcm16_tunnel_udp_v6", v6, 7, 0),
        ("3des-cbc_hmac-sha1-96_transport_v6", v6_opts, 9, 0),
        ("aes256-gcm8_tunnel_esn", v4, esn_seq, 0),
        ("aes192-gcm12_transport_udp_esn", v4, 0xFFFF_FFFF, 0),
        ("aes192-cbc_hmac-sha256-128_tunnel_v6_esn_sel6", v6, esn_seq, 0),
        ("null_hmac-md5-96_transport_esn_nowindow", v4, 5, 0),
        ("des-cbc_nomac_transport", v4, 3, 0),
        ("aes128-gcm12_transport_sel4udp", v4, 11, 0),
        ("aes256-cbc_hmac-sha1-96_tunnel_sel4_w32", v4, 100, ORIGINAL_FIRST),
        ("null_hmac-sha256-128_tunnel_v6_esn_w4096", v6, 0xFFFF_FFFF_0000_0010, 0),
        ("aes128-cbc_nomac_tunnel_v6_udp", v6, 2, 0),
    ]
    for n, inner, seq, flags in seeds:
        w.write(t, "seal-" + n, seal_input(sas[n], inner, seq, flags))
    # The target builds the IP header (wrap): protocol byte, then the payload.
    w.write(t, "seal-wrap-v4-udp-aes128-gcm12-transport-sel4udp",
            seal_input(sas["aes128-gcm12_transport_sel4udp"], bytes([17]) + udp(1, 1500, data),
                       21, WRAP | IN_POLICY))
    w.write(t, "seal-wrap-v6-icmp-sel6",
            seal_input(sas["aes192-cbc_hmac-sha256-128_tunnel_v6_esn_sel6"],
                       bytes([58, 128, 0, 0, 0]) + data, 0x2_0000_0003, WRAP | WRAP_V6 | IN_POLICY, back=40))
    # A forgery (ICV byte flipped) and an outer-header change that must not matter.
    n = "aes128-cbc_hmac-sha1-96_tunnel"
    inner = bytes.fromhex(by_name[n]["inner_packet"])
    w.write(t, "seal-forged-icv-" + n, seal_input(sas[n], inner, 46, offset=20 + 8 + 16 + 80,
                                                  mask=b"\x01\0\0\0"))
    w.write(t, "seal-hop-limit-changed-aes128-gcm16-tunnel-udp-v6",
            seal_input(sas["aes128-gcm16_tunnel_udp_v6"], v6, 46, offset=7, mask=b"\x10\0\0\0"))


def wire_parse(w, scapy, rfc):
    t = "wire_parse"
    w.reset(t)
    for v in scapy["vectors"]:
        w.write(t, v["name"], bytes.fromhex(v["full_packet"]))
    for name, _, full in rfc3602_packets(rfc):
        w.write(t, name, full)
    data = bytes(range(24))
    esp = struct.pack(">II", 0x4321, 1) + data
    hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0])
    dst = bytes([50, 1, 1, 12] + [0] * 12)
    w.write(t, "ipv6-hbh-dstopts-esp",
            ipv6("2001:db8::1", "2001:db8:0:1::2", 0, hbh + dst + esp))
    w.write(t, "ipv6-udp4500-esp", ipv6("2001:db8::1", "2001:db8::2", 17, udp(4500, 4500, esp)))
    w.write(t, "ipv6-fragment-udp",
            ipv6("2001:db8::1", "2001:db8::2", 44, bytes([17, 0, 0, 1, 0, 0, 0, 7])
                 + udp(53, 53, data)))
    w.write(t, "ipv4-udp4500-non-esp-marker",
            ipv4("10.0.3.1", "10.0.3.10", 17, udp(4500, 4500, b"\0\0\0\0" + data)))


# esp_roundtrip: the `Case` struct decoded by `arbitrary` (integers little endian).
ENC = {"null": 0, "des": 1, "3des": 2, "aes128": 3, "aes192": 4, "aes256": 5,
       "gcm128-8": 6, "gcm128-12": 7, "gcm128-16": 8, "gcm192-8": 9, "gcm192-12": 10,
       "gcm192-16": 11, "gcm256-8": 12, "gcm256-12": 13, "gcm256-16": 14}


def case(enc, auth=0, tunnel=False, inner_v6=False, outer_v6=False, udp_encap=False,
         esn=False, window=2, seq=1, spi=0x1000, keymat=b"", auth_key=b"", iv=b"",
         next_header=4, protocol=17, dest_opts=False, tos=0, ident=0, dont_frag=False,
         count=1, order=0, mtu=1500, short_by=0, payload=b""):
    def pad(b, n):
        return (bytes(b) + bytes(range(n)))[:n]
    return (bytes([ENC[enc], auth, tunnel, inner_v6, outer_v6, udp_encap, esn, window])
            + struct.pack("<QI", seq, spi) + pad(keymat, 36) + pad(auth_key, 32) + pad(iv, 16)
            + bytes([next_header, protocol, dest_opts, tos]) + struct.pack("<H", ident)
            + bytes([dont_frag, count, order]) + struct.pack("<H", mtu) + bytes([short_by])
            + payload)


def esp_roundtrip(w, scapy):
    t = "esp_roundtrip"
    w.reset(t)
    v = {x["name"]: x for x in scapy["vectors"]}
    icmp = bytes.fromhex(v["aes128-cbc_hmac-sha1-96_tunnel"]["inner_packet"])[20:]
    k = lambda n, f: bytes.fromhex(v[n][f] or "")  # noqa: E731
    seeds = {
        "aes128-cbc-sha1-tunnel-v4": case(
            "aes128", 2, tunnel=True, seq=46, keymat=k("aes128-cbc_hmac-sha1-96_tunnel", "enc_key"),
            auth_key=k("aes128-cbc_hmac-sha1-96_tunnel", "auth_key"), protocol=1, payload=icmp),
        "gcm128-16-transport-v6-udp-esn-cross": case(
            "gcm128-16", tunnel=False, inner_v6=True, udp_encap=True, esn=True, seq=0xFFFF_FFFE,
            keymat=k("aes128-gcm-16_transport", "gcm_keymat_rfc4106"), count=3, order=5,
            payload=icmp),
        "3des-sha256-tunnel-v6-in-v4-w4096": case(
            "3des", 3, tunnel=True, inner_v6=True, window=3, seq=1000, count=3, order=23,
            keymat=k("3des-cbc_hmac-sha256-128_tunnel", "enc_key"),
            auth_key=k("3des-cbc_hmac-sha256-128_tunnel", "auth_key"), payload=icmp),
        "null-md5-transport-esn-nowindow": case(
            "null", 0, esn=True, window=0, seq=0x7_0000_0000, count=2, order=1, payload=icmp),
        "des-nomac-tunnel-v6-udp-short": case(
            "des", 0, tunnel=True, inner_v6=True, outer_v6=True, udp_encap=True, short_by=3,
            keymat=k("des-cbc_hmac-sha1-96_tunnel", "enc_key"), payload=icmp),
        "gcm256-8-transport-dummy": case("gcm256-8", next_header=59, payload=icmp[:7]),
        "aes192-sha256-tunnel-v4-in-v6-esn-overflow": case(
            "aes192", 3, tunnel=True, outer_v6=True, esn=True, seq=0xFFFF_FFFF_FFFF_FFFE,
            count=4, payload=icmp),
        "aes256-sha1-transport-v6-dstopts-mtu": case(
            "aes256", 2, inner_v6=True, dest_opts=True, mtu=1280, protocol=6,
            keymat=k("aes256-cbc_hmac-sha1-96_transport", "enc_key"),
            auth_key=k("aes256-cbc_hmac-sha1-96_transport", "auth_key"), payload=icmp * 3),
    }
    for name, data in seeds.items():
        w.write(t, name, data)


# replay_window: config byte, then operations (see the target's docs).
def check(seq_low, verified=True, twice=False):
    return bytes([(8 if verified else 0) | (16 if twice else 0)]) + struct.pack(">I", seq_low)


def replay_window(w):
    t = "replay_window"
    w.reset(t)
    w64 = 33 << 2  # ReplayWindow<2>, size 32 + (32 * 67) % 33 = 64
    seeds = {
        "in-order-w64": bytes([w64]) + b"".join(check(s) for s in range(1, 12)),
        "reorder-dup-too-old-w64": bytes([w64]) + b"".join(
            check(s, twice=(s == 70)) for s in [5, 3, 70, 4, 5, 6, 7, 200, 136, 137, 135, 0, 201])
        + b"\x07",
        "unverified-then-verified": bytes([w64]) + check(9, verified=False) + check(9) + check(9),
        "near-top-edges-w121": bytes([2 | (63 << 2)]) + check(5000)
        + b"".join(bytes([3 | 8]) + struct.pack(">h", d) for d in [-120, -121, -122, 1, 0, -1]),
        "esn-cross-2-32": bytes([1 | (1 << 2)]) + bytes([4]) + struct.pack(">Q", 0xFFFF_FFF0)
        + b"".join(check(s & 0xFFFF_FFFF) for s in range(0xFFFF_FFF5, 0x1_0000_0004, 3))
        + check(0xFFFF_FFF1) + b"\x07",
        "esn-disabled-window": bytes([1]) + check(1) + check(0x8000_0001) + check(2)
        + check(0x8000_0001) + b"\x05",
        "restore-bits-snapshot-sweep": bytes([1 | 2 | (20 << 2)]) + bytes([6])
        + struct.pack(">QQ", 0x1_0000_0100, 0xDEAD_BEEF) + b"\x05" + check(0x100) + check(0xF0)
        + b"\x07",
        "no-esn-restore-above-32-bits": bytes([w64]) + bytes([4]) + struct.pack(">Q", 1 << 32)
        + check(0xFFFF_FFFF) + check(0),
        "esn-end-of-space": bytes([1 | (33 << 2)]) + bytes([4])
        + struct.pack(">Q", 0xFFFF_FFFF_FFFF_FFF0) + check(0xFFFF_FFFF) + check(0x10) + b"\x07",
    }
    for name, data in seeds.items():
        w.write(t, name, data)


def main():
    scapy = load("scapy_esp_vectors.json")
    rfc = load("rfc3602_aes_cbc_esp.json")
    w = Writer()
    esp_decapsulate(w, scapy, rfc, sa_indices())
    wire_parse(w, scapy, rfc)
    esp_roundtrip(w, scapy)
    replay_window(w)
    for target, n in sorted(w.count.items()):
        print(f"{n:3} seeds in fuzz/corpus/{target}/")


if __name__ == "__main__":
    main()
