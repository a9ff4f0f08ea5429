#!/usr/bin/env python3
"""Write the checked-in seed corpora: fuzz/corpus/<target>/seed-*.

    python3 fuzz/seed.py            # from anywhere; stdlib only, deterministic

Sources: the packets of ipsec-core/tests/data/scapy_esp_vectors.json and
rfc3602_aes_cbc_esp.json (RFC 3602 cases 6 and 8 and the RUB-NDS vector have no outer
header on record: one is built here), plus a few hand-built inputs for the parts the
vectors do not cover (IPv6, ESN, selectors, replay-window operations), and HA sync message
bodies built from the record layout of ipsec-core/src/ha/record.rs (snapshots, updates,
handover markers whose digest matches the state or not).

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
IKE_DATA = FUZZ.parent / "ipsec-ike" / "tests" / "data"
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


# ---------------------------------------------------------------- ISAKMP captures --

def pcap_udp(path):
    """(frame, sport, dport, UDP payload) of every unfragmented IPv4/UDP frame of a
    classic pcap (Ethernet or Linux cooked), like ipsec-ike/tests/common/mod.rs."""
    b = path.read_bytes()
    magic = struct.unpack("<I", b[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        sys.exit(f"{path}: not a classic pcap")
    link = struct.unpack(e + "I", b[20:24])[0]
    off, frame, out = 24, 0, []
    while off + 16 <= len(b):
        incl = struct.unpack(e + "I", b[off + 8:off + 12])[0]
        pkt = b[off + 16:off + 16 + incl]
        off += 16 + incl
        frame += 1
        if link == 1:
            et, l3 = struct.unpack(">H", pkt[12:14])[0], 14
            if et == 0x8100:
                et, l3 = struct.unpack(">H", pkt[16:18])[0], 18
        elif link == 113:
            et, l3 = struct.unpack(">H", pkt[14:16])[0], 16
        else:
            sys.exit(f"{path}: link type {link}")
        if et != 0x0800:
            continue
        ip = pkt[l3:]
        ihl = (ip[0] & 0x0F) * 4
        frag = struct.unpack(">H", ip[6:8])[0]
        if ip[9] != 17 or frag & 0x3FFF:
            continue
        udp_ = ip[ihl:]
        sport, dport, ulen = struct.unpack(">HHH", udp_[:6])
        out.append((frame, sport, dport, udp_[8:ulen]))
    return out


def ike_datagrams(capture):
    """Every ISAKMP datagram of a capture: UDP 500, or UDP 4500 behind the non-ESP
    marker (stripped); keepalives and ESP-in-UDP are skipped."""
    out = []
    for frame, sport, dport, data in pcap_udp(IKE_DATA / "captures" / capture):
        if 4500 in (sport, dport):
            if len(data) < 4 or data[:4] != b"\0\0\0\0":
                continue
            data = data[4:]
        elif 500 not in (sport, dport):
            continue
        out.append((frame, data))
    return out


def ike_load(name):
    return json.loads((IKE_DATA / name).read_text())


def decrypted(message, plaintext):
    """The header of `message` with the E flag cleared and the length fixed, then the
    decrypted payload area: what the state machine iterates after decryption."""
    hdr = bytearray(message[:28])
    hdr[19] &= 0xFE
    hdr[24:28] = struct.pack(">I", 28 + len(plaintext))
    return bytes(hdr) + plaintext


def captures():
    return sorted(p.name for p in (IKE_DATA / "captures").glob("*.pcap*"))


def isakmp_parse(w):
    t = "isakmp_parse"
    w.reset(t)
    for cap in captures():
        stem = cap.split(".")[0].lower().replace("_", "-")
        for frame, data in ike_datagrams(cap):
            w.write(t, f"{stem}-frame{frame}", b"\0" + data)
    rub = ike_load("ikev1_mainmode_psk_rubnds.json")
    mm = rub["main_mode_exchange"]
    msgs = {k: bytes.fromhex(v) for k, v in mm["messages"].items()}
    w.write(t, "rubnds-m5-decrypted", b"\0" + decrypted(msgs["m5"], bytes.fromhex(mm["m5_plaintext"])))
    w.write(t, "rubnds-m6-decrypted", b"\0" + decrypted(msgs["m6"], bytes.fromhex(mm["m6_plaintext"])))
    qm = mm["quick_mode"]
    for k in ("qm1", "qm2", "qm3"):
        w.write(t, f"rubnds-{k}-decrypted",
                b"\0" + decrypted(msgs[k], bytes.fromhex(qm[k + "_plaintext"])))
    s2 = rub["session2_mainmode_plus_informational"]
    w.write(t, "rubnds-session2-info-decrypted",
            b"\0" + decrypted(bytes.fromhex(s2["messages"]["info"]),
                              bytes.fromhex(s2["informational"]["plaintext"])))
    ref = ike_load("natt_dpd_gre_reference.json")
    for k, m in ref["synthetic_dpd"]["messages"].items():
        w.write(t, f"dpd-{k.replace('_', '-')}-decrypted",
                b"\0" + decrypted(bytes.fromhex(m["message"]), bytes.fromhex(m["plaintext_padded"])))
    certs = ike_load("ikev1_certs_pcap_decryption.json")
    frames = dict(ike_datagrams("ikev1-certs.pcap"))
    for f in certs["decryption"]["frames"]:
        msg = frames.get(f["frame"])
        if msg is not None:
            w.write(t, f"certs-frame{f['frame']}-decrypted",
                    b"\0" + decrypted(msg, bytes.fromhex(f["plaintext"])))
    # Payload mode: type, body.
    w.write(t, "payload-sa-rubnds", b"\1\1" + bytes.fromhex(mm["sai_b"]))
    w.write(t, "payload-id-rubnds", b"\1\5" + bytes.fromhex(mm["idii_b"]))
    w.write(t, "payload-id-v6-subnet", b"\1\5" + bytes([6, 17, 1, 244]) + bytes(range(32)))
    w.write(t, "payload-id-fqdn", b"\1\5" + bytes([2, 0, 0, 0]) + b"vpn.example")
    w.write(t, "payload-notify-r-u-there",
            b"\1\x0b" + bytes.fromhex("000000010110 8d28".replace(" ", ""))
            + bytes.fromhex(mm["cky_i"] + mm["cky_r"]) + b"\x12\x34\x56\x78")
    w.write(t, "payload-delete-esp", b"\1\x0c" + bytes([0, 0, 0, 1, 3, 4, 0, 2]) + bytes(range(8)))
    w.write(t, "payload-nat-oa-v4", b"\1\x15" + bytes([1, 0, 0, 0, 10, 0, 3, 1]))
    w.write(t, "payload-nat-oa-draft-v6", b"\1\x83" + bytes([5, 0, 0, 0]) + bytes(range(16)))
    w.write(t, "payload-nat-d-draft", b"\1\x82" + bytes(range(20)))
    # An ESP proposal with a TLV life duration, PFS group and a UDP-tunnel mode.
    attrs = (bytes.fromhex("80010001") + bytes.fromhex("00020004") + struct.pack(">I", 86400)
             + bytes.fromhex("80030002 80040003 80050002 80060080".replace(" ", "")))
    tr = bytes([0, 0]) + struct.pack(">H", 4 + 4 + len(attrs)) + bytes([1, 12, 0, 0]) + attrs
    prop = (bytes([0, 0]) + struct.pack(">H", 4 + 8 + len(tr)) + bytes([1, 3, 4, 1])
            + b"\x12\x34\x56\x78" + tr)
    w.write(t, "payload-sa-esp-aes-pfs-udp-tunnel", b"\1\1" + bytes.fromhex("0000000100000001") + prop)


# -------------------------------------------------------------- IKE state machine --

IKE_FLAGS = {"constant": 0x01, "aggressive": 0x02, "pfs": 0x04, "keepalive": 0x08,
             "transport": 0x10, "nat": 0x20, "no-natt": 0x40, "3des-md5": 0x80}
EXCHANGE = bytes([6, 0]) + bytes([0, 1]) * 10  # initiate on I, then deliver both ways


def ike_ops(*parts):
    return b"".join(parts)


def op_time_ms(ms):
    return bytes([4]) + struct.pack(">H", ms)


def op_time_s(s):
    return bytes([5]) + struct.pack(">H", s)


def op_inject(src, data):
    return bytes([3, src]) + struct.pack(">H", len(data)) + data


def ike_responder(w):
    t = "ike_responder"
    w.reset(t)
    f = IKE_FLAGS
    configs = {
        "main-fold": 0,
        "main-constant": f["constant"],
        "aggressive-constant": f["aggressive"] | f["constant"],
        "main-pfs-transport": f["pfs"] | f["transport"],
        "nat-float-constant": f["nat"] | f["constant"],
        "nat-aggressive-keepalive": f["nat"] | f["aggressive"] | f["keepalive"] | f["constant"],
        "3des-md5-no-natt": f["3des-md5"] | f["no-natt"],
        "all-flags": 0xFF,
    }
    for name, flags in configs.items():
        w.write(t, name + "-exchange", bytes([flags]) + EXCHANGE + op_time_ms(100))
    c = f["constant"]
    seeds = {
        # Up, then rekey the child, delete it, DPD probe, delete the IKE SA.
        "lifecycle-constant": ike_ops(bytes([c]), EXCHANGE, bytes([9, 0, 0]), bytes([0, 1]) * 4,
                                      bytes([7, 1, 0]), bytes([0, 1]), bytes([10, 0, 0]),
                                      bytes([0, 1]) * 2, bytes([8, 1, 0]), bytes([0, 1]) * 2),
        # Lost and retransmitted messages: drop, time, duplicates, replays.
        "loss-retransmit": ike_ops(bytes([0]), bytes([6, 0, 0, 12, 0]), op_time_ms(600),
                                   bytes([0, 11, 1, 0, 13, 0, 1, 0, 1, 12, 1]), op_time_ms(1000),
                                   bytes([0, 1]) * 8),
        # Tampered messages in flight (constant PRF: the hashes stay valid).
        "tamper-constant": ike_ops(bytes([c, 6, 0, 0, 1, 0, 1]), bytes([2, 0, 40, 0x10]),
                                   bytes([1, 0]), bytes([15, 0, 60, 0x01]), bytes([0, 1]) * 6),
        # Lifetimes: child (600 s) and phase 1 (3600 s) expire, keepalives run.
        "expiry-keepalive": ike_ops(bytes([c | f["keepalive"]]), EXCHANGE, op_time_s(30),
                                    bytes([0, 1]) * 3, op_time_s(700), bytes([0, 1]) * 3,
                                    op_time_s(3600), bytes([0, 1]) * 3),
        # Both sides initiate at once; then R initiates again.
        "simultaneous": ike_ops(bytes([c, 6, 0, 6, 1]), bytes([0, 1]) * 12, bytes([6, 1]),
                                bytes([0, 1]) * 6),
        # Half-open SAs from other peers fill the table.
        "half-open-flood": ike_ops(bytes([0]), *(bytes([6, 0, 12, 0]) for _ in range(2)),
                                   op_time_s(40), bytes([0, 1]) * 4),
    }
    for name, data in seeds.items():
        w.write(t, name, data)
    # Captured datagrams injected at R from the other peers (and at I).
    for cap in ["ipsec-ikev1-isakmp-main-mode.pcap", "ipsec-ikev1-isakmp-aggressive-mode.pcap",
                "ikev1_rubnds_mainmode_quickmode_reframed.pcap", "ipsec.cap",
                "ipsec-ikev1-payload-bad-length.pcap"]:
        dg = ike_datagrams(cap)
        stem = cap.split(".")[0].lower().replace("_", "-")
        ops = b"".join(op_inject(2, d) + bytes([0, 1]) for _, d in dg[:6])
        w.write(t, f"inject-{stem}", bytes([c]) + ops)
    rub = ike_load("ikev1_mainmode_psk_rubnds.json")["main_mode_exchange"]["messages"]
    w.write(t, "inject-rubnds-m1-then-exchange",
            bytes([0]) + op_inject(0, bytes.fromhex(rub["m1"])) + EXCHANGE
            + op_inject(1, b"\0\0\0\0" + bytes.fromhex(rub["qm1"]))
            + bytes([14]) + struct.pack(">H", len(bytes.fromhex(rub["m2"]))) + bytes.fromhex(rub["m2"]))


# ----------------------------------------------------------------------- NAT-T --

def natt_demux(w):
    t = "natt_demux"
    w.reset(t)
    cap = FUZZ.parent / "ipsec-nat-t" / "tests" / "data" / "synthetic_natt_keepalive_nonesp_marker_espinudp.pcap"
    for frame, sport, dport, data in pcap_udp(cap):
        w.write(t, f"demux-synthetic-frame{frame}", b"\0" + data)
    for frame, data in ike_datagrams("ipsec-ikev1-isakmp-main-mode.pcap")[:2]:
        w.write(t, f"demux-framed-main-mode-frame{frame}", b"\0" + b"\0\0\0\0" + data)
    w.write(t, "demux-reserved-spi", b"\0" + bytes([0, 0, 0, 0xff, 0, 0, 0, 1]))
    w.write(t, "demux-short-ike", b"\0" + bytes(31))
    # NAT-D: the real examples (hash SHA-1, cookies, the hashed address).
    ref = ike_load("natt_dpd_gre_reference.json")
    for i, e in enumerate(ref["nat_d"]["real_examples"][:4]):
        host, port = e["hashed_address"].rsplit(":", 1)
        other = e["packet"].split(" -> ")
        peer = other[0] if other[1] == e["hashed_address"] else other[1]
        phost, pport = peer.rsplit(":", 1)
        data = (bytes([1, 0]) + bytes.fromhex(e["cky_i"]) + bytes.fromhex(e["cky_r"])
                + ipaddress.IPv4Address(host).packed + struct.pack(">H", int(port))
                + ipaddress.IPv4Address(phost).packed + struct.pack(">H", int(pport))
                + bytes([20]) + bytes.fromhex(e["nat_d"]) + bytes([20]) + bytes(20))
        w.write(t, f"natd-real-example-{i}", b"\1" + data)
    w.write(t, "natd-v6-sha256", b"\1" + bytes([2, 3]) + bytes(range(16)) + bytes(range(16, 32))
            + bytes(range(16)) + b"\x01\xf4" + bytes(range(100, 116)) + b"\x11\x94" + bytes([32]) + bytes(32))
    # PAT: structured packets (op 1 outbound, 0x81 inbound): host, peer, kind, value.
    def st(outbound, host, peer, kind, value):
        return bytes([1 if outbound else 0x81, host, peer, kind]) + struct.pack(">I", value)
    pat_seeds = {
        "pat-ike-two-hosts": bytes([0]) + st(1, 0, 0, 0, 0x11111111) + st(0, 0, 0, 0, 0x11111111)
        + st(1, 1, 0, 0, 0x22222222) + st(0, 1, 0, 0, 0x22222222) + st(0, 2, 0, 0, 0x33333333),
        "pat-esp-serialised": bytes([1]) + st(1, 0, 1, 1, 0x1000) + st(1, 1, 1, 1, 0x2000)
        + st(0, 0, 1, 1, 0x3000) + st(1, 1, 1, 1, 0x2000) + st(0, 0, 1, 2, 0x4000)
        + bytes([2]) + struct.pack(">H", 100) + st(1, 1, 1, 1, 0x2000),
        "pat-fragments-and-natt": bytes([0]) + st(1, 0, 2, 0, 5) + st(1, 0, 2, 3, 0)
        + st(0, 0, 2, 3, 0) + st(1, 3, 2, 4, 0) + st(0, 3, 2, 0x13, 0),
        "pat-table-full": bytes([1]) + b"".join(st(1, h, p, 1, 0x100 + h * 16 + p)
                                                for h in range(4) for p in range(3))
        + bytes([2]) + struct.pack(">H", 3000) + st(1, 0, 0, 1, 0x999),
        "pat-raw-fixed-checksum": bytes([0, 0x40]) + struct.pack(">H", 48)
        + ipv4("10.0.0.1", "198.51.100.1", 17, udp(500, 500, bytes(range(20)) + bytes(8))),
    }
    for name, data in pat_seeds.items():
        w.write(t, name, b"\2" + data)


# -------------------------------------------------------------------- ICMP PMTU --

def icmp_checksum_fill(msg):
    msg = bytearray(msg)
    msg[2:4] = b"\0\0"
    msg[2:4] = struct.pack(">H", checksum(bytes(msg)))
    return bytes(msg)


def icmp_pmtu(w):
    t = "icmp_pmtu"
    w.reset(t)
    # Config: interface MTU 1500 (index 2), then packets sent per SA (u32 each).
    sent = struct.pack(">IIII", 100, 5000, 70000, 10)
    head = bytes([2]) + sent

    def op1(sa, flags, mtu, seq, quote=255):
        return bytes([1, sa, flags]) + struct.pack(">II", mtu, seq) + bytes([quote])
    seeds = {
        "frag-needed-raw-esp": op1(0, 0, 1400, 50) + op1(0, 0, 1300, 100) + op1(0, 0, 1450, 99),
        "frag-needed-udp-encap": op1(1, 0, 1400, 4999) + op1(1, 16, 1300, 4998),
        "packet-too-big-v6-esn": op1(2, 0, 1400, 69999) + op1(2, 32, 1280, 1) + op1(2, 0, 1279, 69998),
        "transport-sa": op1(3, 0, 1000, 9) + op1(3, 0, 575, 8),
        "below-floor-bad-checksum-wrong-source": op1(0, 1, 1400, 50) + op1(0, 4, 1400, 50)
        + op1(0, 0, 500, 50) + op1(0, 8, 1400, 50),
        "through-receive-and-aging": op1(0, 2, 1400, 50) + bytes([2]) + struct.pack(">H", 700)
        + op1(0, 2, 1350, 60) + bytes([3, 0]) + op1(2, 2 | 32, 1300, 3),
        "short-quotes": op1(0, 0, 1400, 50, 24) + op1(1, 0, 1400, 50, 36) + op1(2, 0, 1400, 50, 44),
        "not-sent-yet": op1(3, 32, 1200, 0) + op1(0, 32, 1200, 0),
        "seq-zero-nothing-sent": op1(3, 0, 1000, 0),
    }
    for name, ops in seeds.items():
        w.write(t, name, head + ops)
    # Nothing sent yet on SA 0: quoting 0 or 0xfffffff0 (never sent) still lowers the PMTU;
    # fails with PMTU_STRICT_SEQ=1 (see README, "Findings").
    w.write(t, "strict-seq-nothing-sent", bytes([2]) + struct.pack(">IIII", 0, 0, 0, 0)
            + op1(0, 0, 1400, 0) + op1(0, 0, 1300, 0xFFFFFFF0))
    # A raw frag-needed (op 0) quoting SA 0 (SPI 0x1001) with sequence number 7.
    quote = ipv4("192.0.2.1", "198.51.100.2", 50, struct.pack(">II", 0x1001, 7) + bytes(24))
    msg = icmp_checksum_fill(bytes([3, 4, 0, 0, 0, 0]) + struct.pack(">H", 1400) + quote)
    pkt = ipv4("192.0.2.254", "192.0.2.1", 1, msg)
    w.write(t, "raw-frag-needed-spi-0x1001", head + bytes([0]) + struct.pack(">H", len(pkt)) + pkt
            + bytes([4]) + struct.pack(">H", len(pkt)) + pkt)
    # The same about SA 1 (ESP in UDP 4500 to 203.0.113.9).
    quote = ipv4("192.0.2.1", "203.0.113.9", 17,
                 udp(4500, 4500, struct.pack(">II", 0x1002, 4000) + bytes(24)))
    msg = icmp_checksum_fill(bytes([3, 4, 0, 0, 0, 0]) + struct.pack(">H", 1300) + quote)
    pkt = ipv4("192.0.2.254", "192.0.2.1", 1, msg)
    w.write(t, "raw-frag-needed-udp-spi-0x1002", head + bytes([0]) + struct.pack(">H", len(pkt)) + pkt)


# ------------------------------------------------------------------- reassembly --

def frag4(src, dst, ident, proto, off, more, payload, options=False):
    hl = 40 if options else 20
    total = hl + len(payload)
    hdr = bytearray(struct.pack(">BBHHHBBH4s4s", 0x40 | (hl // 4), 0, total, ident,
                                (off // 8) | (0x2000 if more else 0), 64, proto, 0,
                                ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    if options:
        hdr += b"\1" * 20
    hdr[10:12] = struct.pack(">H", checksum(bytes(hdr)))
    return bytes(hdr) + payload


def reassembly(w):
    t = "reassembly"
    w.reset(t)

    def raw(p):
        return bytes([0]) + struct.pack(">H", len(p)) + p

    def built(key, off8, flags, length, fill=0):
        return bytes([1, key]) + struct.pack(">H", off8) + bytes([flags]) + struct.pack(">H", length) + bytes([fill])
    data = bytes((i * 13) & 0xFF for i in range(1480))
    frags = [frag4("198.51.100.2", "192.0.2.1", 7, 50, o, o + 496 < len(data), data[o:o + 496])
             for o in range(0, len(data), 496)]
    seeds = {
        "in-order-esp": bytes([0]) + b"".join(raw(f) for f in frags),
        "reverse-order-with-duplicate": bytes([0]) + b"".join(raw(f) for f in reversed(frags)) + raw(frags[0]),
        "overlap-discards": bytes([0]) + raw(frags[0])
        + raw(frag4("198.51.100.2", "192.0.2.1", 7, 50, 488, True, data[488:496 + 488])) + raw(frags[1]),
        "split-ops": bytes([0, 3, 20, 3, 77, 3, 255, 3, 1]),
        "built-fragments-options": bytes([0]) + built(0, 0, 3, 64) + built(0, 8, 0, 10)
        + built(1, 1, 1, 8) + built(1, 0, 1, 8) + built(1, 2, 0, 3),
        "timeout-and-no-slot": bytes([4]) + built(0, 0, 1, 8) + built(1, 0, 1, 8) + built(2, 0, 1, 8)
        + built(3, 0, 1, 8) + built(0, 4, 0, 8) + bytes([2]) + struct.pack(">H", 600) + built(0, 1, 0, 8),
        "big-65535-limit": bytes([1]) + built(0, 8000, 8, 2000) + built(0, 0, 3 | 8, 64000 - 64000 % 8),
        "short-output-buffer": bytes([2]) + built(2, 0, 1, 1496) + built(2, 187, 0, 100),
        "inconsistent-last": bytes([0]) + built(0, 2, 0, 8) + built(0, 3, 0, 8) + built(0, 0, 1, 16),
    }
    for name, d in seeds.items():
        w.write(t, name, d)


# --- ha_sync_parse: sync message bodies (ipsec-core/src/ha/record.rs) -------------------

M64 = (1 << 64) - 1


def rec(kind, body):
    return struct.pack(">BH", kind, len(body)) + body


def ha_addr(a):
    return bytes([4]) + bytes(map(int, a.split(".")))


def ha_config(spi, direction, local, remote):
    """An EspConfig: tunnel, AES-256-CBC + HMAC-SHA-256-128, window 64, UDP 4500, a selector."""
    b = struct.pack(">IBBBBBBI", spi, direction, 0, 1, 5, 3, 0, 64)
    b += ha_addr(local) + ha_addr(remote)
    b += bytes([1]) + struct.pack(">HH", 4500, 4500)
    b += bytes([1])
    for r in (("10.0.1.0", "10.0.1.255"), ("10.0.68.0", "10.0.68.255")):
        b += ha_addr(r[0]) + ha_addr(r[1])
    b += struct.pack(">HHHHH", 0xFFFF, 0, 0xFFFF, 0, 0xFFFF)
    b += bytes(4)  # no lifetime limits
    return b + bytes([0, 64])  # DF copy, TTL 64


def ha_progress(p, flags=7):
    b = b""
    if flags & 1:
        b += struct.pack(">Q", p["seq"])
    if flags & 2:
        b += struct.pack(">QIBB", p["top"], 64, 0, 2) + struct.pack(">QQ", *p["bitmap"])
    if flags & 4:
        b += struct.pack(">QQQ", p["in_bytes"], p["out_bytes"], p["age"])
    return b


def ha_pair(p):
    b = struct.pack(">I", 10) + ha_addr("203.0.113.5") + bytes([7] * 16)
    b += ha_config(0x1001, 0, "192.0.2.100", "203.0.113.5")
    b += ha_config(0x2001, 1, "192.0.2.100", "203.0.113.5")
    for k in (0x11, 0x22, 0x33, 0x44):  # inbound enc, auth; outbound enc, auth
        b += bytes([32]) + bytes([k] * 32)
    return rec(3, b + ha_progress(p))


def ha_digest(pairs):
    """state_digest of record.rs: FNV-1a 64 per pair, an avalanche, a wrapping sum."""
    total = 0
    for in_spi, out_spi, p in pairs:
        h = 0xCBF29CE484222325
        data = struct.pack(">IIQQIB", in_spi, out_spi, p["seq"], p["top"], 64, 0)
        data += struct.pack(">QQ", *p["bitmap"])
        for c in data:
            h = ((h ^ c) * 0x100000001B3) & M64
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & M64
        h ^= h >> 33
        total = (total + h) & M64
    return total


def ha_sync_parse(w):
    t = "ha_sync_parse"
    w.reset(t)
    stale = {"seq": 1, "top": 0, "bitmap": (0, 0), "in_bytes": 0, "out_bytes": 0, "age": 0}
    final = {"seq": 43, "top": 40, "bitmap": ((1 << 40) | (1 << 39) | (1 << 37), 0),
             "in_bytes": 4000, "out_bytes": 5000, "age": 12000}
    begin, end = rec(1, struct.pack(">I", 1)), rec(2, struct.pack(">I", 1))
    update = rec(4, struct.pack(">IB", 0x1001, 7) + ha_progress(final))
    digest = ha_digest([(0x1001, 0x2001, final)])

    def marker(d, pairs=1):
        return rec(9, struct.pack(">IQ", pairs, d))

    ike = rec(6, bytes([7] * 16) + struct.pack(">H", 40) + bytes(range(40)))
    # Byte 0: odd = records; | 2 = the Standby then takes over.
    seeds = {
        "snapshot": bytes([1]) + begin + ha_pair(stale) + ike + end,
        "handover-exact": bytes([3]) + begin + ha_pair(stale) + ike + end + update + marker(digest),
        "handover-mismatch": bytes([3]) + begin + ha_pair(stale) + end + update + marker(digest ^ 1),
        "handover-superseded": bytes([3]) + begin + ha_pair(stale) + end + marker(digest) + update,
        "handover-no-snapshot": bytes([3]) + ha_pair(final) + marker(digest),
        "failover": bytes([3]) + begin + ha_pair(final) + end,
        "deletes-and-unknown": bytes([1]) + rec(5, struct.pack(">I", 0x1001))
        + rec(7, bytes([7] * 16)) + rec(8, b"") + rec(200, b"future") + marker(0, 0),
        "update-window-only": bytes([3]) + begin + ha_pair(stale) + end
        + rec(4, struct.pack(">IB", 0x1001, 2) + ha_progress(final, 2)),
        # A DATA datagram header: version 1, type 3, suite 1, node 1, session 7, packet 1,
        # data sequence 1, ack 0, 32 bytes of body, then the 16-byte tag.
        "channel-data": bytes([0]) + struct.pack(">BBBBIIQQQHH", 1, 3, 1, 0, 1, 7, 1, 1, 0, 32, 0)
        + bytes(32) + bytes(16),
    }
    for name, d in seeds.items():
        w.write(t, name, d)


def main():
    scapy = load("scapy_esp_vectors.json")
    rfc = load("rfc3602_aes_cbc_esp.json")
    w = Writer()
    esp_decapsulate(w, scapy, rfc, sa_indices())
    wire_parse(w, scapy, rfc)
    esp_roundtrip(w, scapy)
    replay_window(w)
    isakmp_parse(w)
    ike_responder(w)
    natt_demux(w)
    icmp_pmtu(w)
    reassembly(w)
    ha_sync_parse(w)
    for target, n in sorted(w.count.items()):
        print(f"{n:3} seeds in fuzz/corpus/{target}/")


if __name__ == "__main__":
    main()
