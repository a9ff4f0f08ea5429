//! `esp_decapsulate`: outer packets into `EspSa::decapsulate` on a table of fixed SAs.
//!
//! Input layout (also written by `fuzz/seed.py`):
//!
//! * byte 0: bit 7 selects the mode, bits 0-6 the SA (index into [`SAS`], modulo its length).
//! * raw mode (bit 7 clear): the rest is an outer IP packet, decapsulated as is by a fresh
//!   inbound SA. Only the packets of the test vectors (and mutations of their outer headers,
//!   or anything on the SAs without integrity) get past the ICV.
//! * seal mode (bit 7 set): a 16-byte header, then an inner packet. The inner packet is
//!   sealed by the SA's outbound twin, `mask` is XORed into the sealed packet at `offset`,
//!   and the result is decapsulated: this is how replay, padding, next header and selector
//!   logic are reached with authentic packets.
//!
//!   | bytes | field |
//!   |---|---|
//!   | 1-2 | `offset` (u16, big endian) of the mutation in the sealed packet |
//!   | 3-6 | `mask`, XORed in at `offset` (bytes past the end are dropped) |
//!   | 7 | flags: 1 = wrap (next byte is an IP protocol, the rest its payload: the target builds the IP header), 2 = wrap in IPv6, 4 = addresses inside the selector SAs' policy, 8 = deliver the unmutated packet before the mutated one |
//!   | 8-15 | sequence number (u64, big endian; low 32 bits without ESN; 0 means 1) |
//!   | 16 | `back`: the inbound window's top is `seq - 1 - back` |
//!
//! Invariants: no panic; `Ok` only for packets whose ICV verifies (checked by an
//! independent locate-and-verify here); the returned slice lies within the buffer and is a
//! well-formed packet for the mode; a freshly sealed packet opens to exactly what was sealed
//! (or is refused for a reason its contents explain); an inauthentic packet never moves the
//! window; an accepted packet is a replay the second time.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use hal_traits::AeadAlg::{Aes128Gcm12, Aes128Gcm16, Aes192Gcm12, Aes256Gcm8, Aes256Gcm16};
use hal_traits::CipherAlg::{Aes128Cbc, Aes192Cbc, Aes256Cbc, DesCbc, TripleDesCbc};
use hal_traits::MacAlg::{self, HmacMd5_96, HmacSha1_96, HmacSha256_128};
use hal_traits::{Aead, Mac};
use ipsec_core::Instant;
use ipsec_core::esp::Encryption::{self, Cbc, Gcm, Null};
use ipsec_core::esp::Mode::{self, Transport, Tunnel};
use ipsec_core::esp::{Direction, EspConfig, EspError, EspSa, SealOptions, Transform, UdpEncap};
use ipsec_core::replay::ReplaySnapshot;
use ipsec_core::spd::{AddrRange, PortRange, Selector};
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use ipsec_core::wire::proto;
use ipsec_core::wire::udp::UdpPacket;
use ipsec_soft_crypto::{SoftAead, SoftCrypto, SoftMac};
use libfuzzer_sys::fuzz_target;

const NOW: Instant = Instant::ZERO;

/// Inbound selector of an SA, from the receiver's point of view.
#[derive(Clone, Copy)]
enum Sel {
    None,
    /// local 10.0.0.0/8, remote 172.16.0.0/12, any protocol.
    V4,
    /// As `V4`, UDP only, local ports 1000-2000.
    V4Udp,
    /// local 2001:db8:1::/48, remote 2001:db8:2::/48.
    V6,
}

struct Spec {
    name: &'static str,
    enc: Encryption,
    auth: Option<MacAlg>,
    mode: Mode,
    /// Tunnel endpoints are IPv6 (transport mode takes the family of the packet).
    v6: bool,
    udp: bool,
    esn: bool,
    /// 0 disables anti-replay; above 64 the SA uses a 4096-packet bitmap.
    window: u32,
    spi: u32,
    enc_key: &'static str,
    auth_key: &'static str,
    sel: Sel,
}

#[allow(clippy::too_many_arguments)]
const fn sa(
    name: &'static str,
    enc: Encryption,
    auth: Option<MacAlg>,
    mode: Mode,
    udp: bool,
    spi: u32,
    enc_key: &'static str,
    auth_key: &'static str,
) -> Spec {
    Spec {
        name,
        enc,
        auth,
        mode,
        v6: false,
        udp,
        esn: false,
        window: 64,
        spi,
        enc_key,
        auth_key,
        sel: Sel::None,
    }
}

/// The SAs. `seed.py` finds indices by name here: keep names unique and rows one per line.
/// The first 43 hold the keys of ipsec-core/tests/data (scapy_esp_vectors.json in order,
/// then rfc3602_aes_cbc_esp.json); the rest cover IPv6, ESN, GCM-8/12, selectors and other
/// window sizes, with keys SHA-256("ipsec-fuzz/<name>/enc" or "/auth") truncated.
#[rustfmt::skip]
static SAS: &[Spec] = &[
    sa("des-cbc_hmac-sha1-96_transport", Cbc(DesCbc), Some(HmacSha1_96), Transport, false, 0x10000001, "7313ba6ec1dc2946", "b207eb324ec94d4b5cc975b4cb403526d1e995f4"),
    sa("des-cbc_hmac-sha1-96_transport_udp4500", Cbc(DesCbc), Some(HmacSha1_96), Transport, true, 0x10000002, "79c85d49ae10649b", "9dd67f5a9fb7635145cdb3ac95f9ee90c085c52a"),
    sa("des-cbc_hmac-sha1-96_tunnel", Cbc(DesCbc), Some(HmacSha1_96), Tunnel, false, 0x10000003, "523e43efd086e5b0", "39ca77a312d147ea5b5cb4000a5218dc4ac33cf0"),
    sa("des-cbc_hmac-sha1-96_tunnel_udp4500", Cbc(DesCbc), Some(HmacSha1_96), Tunnel, true, 0x10000004, "4aabd554ecb09151", "e05f91aecc3e69a935f05b4d6255fbd2570f7090"),
    sa("3des-cbc_hmac-sha1-96_transport", Cbc(TripleDesCbc), Some(HmacSha1_96), Transport, false, 0x10000005, "7c7fab7ad61a0b83f49429d33d837f260129028a107a20b6", "18fea5b295b70f38e9d1c8f38bb20f4668b4ecec"),
    sa("3des-cbc_hmac-sha1-96_transport_udp4500", Cbc(TripleDesCbc), Some(HmacSha1_96), Transport, true, 0x10000006, "6e260d62433491da0dba347c52f1f8629bab86b63e73e98f", "7d03e52d8638289e292cc5009ba24971e672c19e"),
    sa("3des-cbc_hmac-sha1-96_tunnel", Cbc(TripleDesCbc), Some(HmacSha1_96), Tunnel, false, 0x10000007, "dcec2904109d9704c4b9645ea264e6fb76d3d0076db99868", "8a243368b07ede88e4495b10cbeb430966ea5d59"),
    sa("3des-cbc_hmac-sha1-96_tunnel_udp4500", Cbc(TripleDesCbc), Some(HmacSha1_96), Tunnel, true, 0x10000008, "6becbc9baba4d9941680311620a2b375947aec647fe57a13", "ca3cc87cf5d7af19dc6975ffdb3d6d7aaac633e3"),
    sa("3des-cbc_hmac-sha256-128_transport", Cbc(TripleDesCbc), Some(HmacSha256_128), Transport, false, 0x10000009, "6429312f38a1bfe6b3450445cba4e91f297c6ba4dff74ae3", "2253215a77f421902d89c6f2d2848ebdd0ae7b7531f2cd26b6ed430da2955cd7"),
    sa("3des-cbc_hmac-sha256-128_transport_udp4500", Cbc(TripleDesCbc), Some(HmacSha256_128), Transport, true, 0x1000000a, "aeef524ad5a11023c2bac21902290b8cda29c80b5ec45291", "3cc8f164319b7316d7dfa00b8db417c3d920cab221cc33b05aa7cbdb3bcad8fb"),
    sa("3des-cbc_hmac-sha256-128_tunnel", Cbc(TripleDesCbc), Some(HmacSha256_128), Tunnel, false, 0x1000000b, "46b004f7a7d0153176dfa74f51c2c47032fd9168e608ea6b", "f1bbfa4b0086e652fd71617494567a76c47d019623645650f5aabab7e22f89eb"),
    sa("3des-cbc_hmac-sha256-128_tunnel_udp4500", Cbc(TripleDesCbc), Some(HmacSha256_128), Tunnel, true, 0x1000000c, "c4a42cdc792097316e52e580796758c2aeb06d6b6d895b89", "abf6a98f969ebe7686a6a96bf7d721cfa9e0f5f9a728eb2bb8a9c4add627f6ab"),
    sa("aes128-cbc_hmac-sha1-96_transport", Cbc(Aes128Cbc), Some(HmacSha1_96), Transport, false, 0x1000000d, "5975490c34e727b7dd523c59f54d8073", "751acfa9e1400d15741acc11c6d4d200550981ef"),
    sa("aes128-cbc_hmac-sha1-96_transport_udp4500", Cbc(Aes128Cbc), Some(HmacSha1_96), Transport, true, 0x1000000e, "31d2fa977e9e8373c26eed44e69fde44", "038a94fd0ebf7a31279cadc8dc48817370999a8e"),
    sa("aes128-cbc_hmac-sha1-96_tunnel", Cbc(Aes128Cbc), Some(HmacSha1_96), Tunnel, false, 0x1000000f, "997d10a27e3d4429622ebbcb602b3a87", "8758f4a2eb027dcac93d9f3c89c3690013932aa3"),
    sa("aes128-cbc_hmac-sha1-96_tunnel_udp4500", Cbc(Aes128Cbc), Some(HmacSha1_96), Tunnel, true, 0x10000010, "1c3b622d79cfd1372b5c773644b7786e", "eb3e38f96b520bfd1fc817fd47dd82a7a90e2bb7"),
    sa("aes128-cbc_hmac-sha256-128_transport", Cbc(Aes128Cbc), Some(HmacSha256_128), Transport, false, 0x10000011, "85c60dba80f6c138b00d821c1da525f9", "191b5125cdeb97f142bd9322883aae1ed205892edb87eedd290ba33662987fce"),
    sa("aes128-cbc_hmac-sha256-128_transport_udp4500", Cbc(Aes128Cbc), Some(HmacSha256_128), Transport, true, 0x10000012, "82e55b3221661bc72902b3051a3047ec", "3b62ca696a895a7d6341dfe7731a93892dce80f329aa673c5d2f05af885e352f"),
    sa("aes128-cbc_hmac-sha256-128_tunnel", Cbc(Aes128Cbc), Some(HmacSha256_128), Tunnel, false, 0x10000013, "4e62473d68dee595d640256f575285bb", "34ee68ad0b2a33655664df1c1f1e25a11da33ebc8fa5e7ff9d28518e7e5494c3"),
    sa("aes128-cbc_hmac-sha256-128_tunnel_udp4500", Cbc(Aes128Cbc), Some(HmacSha256_128), Tunnel, true, 0x10000014, "b88e80b2d7ceadb18aa820cf610c4160", "b5fa9c3313d69170af658c3aa51bbb5a77d97b2df4ec7f3338fde8c02b32f2c7"),
    sa("aes256-cbc_hmac-sha1-96_transport", Cbc(Aes256Cbc), Some(HmacSha1_96), Transport, false, 0x10000015, "53223aa99efe4bbbd7f62937b834e58ec49cd4d74ec3820b8407a2d20d5bb779", "db3c1d36bf74d69d23b68c1430cb65f5552eab0f"),
    sa("aes256-cbc_hmac-sha1-96_transport_udp4500", Cbc(Aes256Cbc), Some(HmacSha1_96), Transport, true, 0x10000016, "e36ac0c3006c1cc7470665f9dad6d03b66ce7a1acf87330ef6dbaa877a58cf9e", "b73684259acd84b5a2157da92e1bb905fdb02f60"),
    sa("aes256-cbc_hmac-sha1-96_tunnel", Cbc(Aes256Cbc), Some(HmacSha1_96), Tunnel, false, 0x10000017, "b169f62bc8eb97c68960bc394989d8e098f8127b2d30c0e05b33a4e64c30f6de", "8f380899d567576a661f1ebfecffb76628702503"),
    sa("aes256-cbc_hmac-sha1-96_tunnel_udp4500", Cbc(Aes256Cbc), Some(HmacSha1_96), Tunnel, true, 0x10000018, "83982318055951f876c243e8cee6f3e750d249358bb30c75dfde049a73fb0111", "eca4dc6cb11a1710861f173ae511fd4bb6d2eaab"),
    sa("aes256-cbc_hmac-sha256-128_transport", Cbc(Aes256Cbc), Some(HmacSha256_128), Transport, false, 0x10000019, "17f6df20caae9b330a2df48b2a81f5fd2151348f6b81c8c280a4f535b71b0dd6", "f4eaddb89dafba53d32b28c3535845664300cbe656b1324088919a5bef035a57"),
    sa("aes256-cbc_hmac-sha256-128_transport_udp4500", Cbc(Aes256Cbc), Some(HmacSha256_128), Transport, true, 0x1000001a, "9feabbd65baa4b38c269cc0ae7f6c35bc1dc6c0ddffd8f721bfe0e5bc92577f2", "3969abef9e5e15e001f4e1289c654936d82f6a381b58c7edc954f4338af2fcfa"),
    sa("aes256-cbc_hmac-sha256-128_tunnel", Cbc(Aes256Cbc), Some(HmacSha256_128), Tunnel, false, 0x1000001b, "1065149efaa24b56062a66a2b2bd42bd9df43ac308e0344bd09fbe7e65cb2796", "f06c16cfa668059182507542674d1a4b4dcc2a09aee248dee0a01076cf5c74dd"),
    sa("aes256-cbc_hmac-sha256-128_tunnel_udp4500", Cbc(Aes256Cbc), Some(HmacSha256_128), Tunnel, true, 0x1000001c, "fa8449a02e8fdf197f537d769f39ba83ec22a0cb48e126b80c9e832f270e8330", "bff66673b8fc34a2c808712ab5ab85c28948fdd9f175b113e7f54d1281d522f6"),
    sa("aes128-gcm-16_transport", Gcm(Aes128Gcm16), None, Transport, false, 0x1000001d, "181bbcf814a3e4eff7731c246bd866b9475c2841", ""),
    sa("aes128-gcm-16_transport_udp4500", Gcm(Aes128Gcm16), None, Transport, true, 0x1000001e, "517df92bc077a8f207ec3792335173d0b73acacb", ""),
    sa("aes128-gcm-16_tunnel", Gcm(Aes128Gcm16), None, Tunnel, false, 0x1000001f, "056dc0f9fe7e61f97c39be62a618a5eb2495623e", ""),
    sa("aes128-gcm-16_tunnel_udp4500", Gcm(Aes128Gcm16), None, Tunnel, true, 0x10000020, "b08df94980857edccb361a7e3ebb174206829f1f", ""),
    sa("aes256-gcm-16_transport", Gcm(Aes256Gcm16), None, Transport, false, 0x10000021, "ce0778408880de3e1c99c53439be9d8278dd07e6a62b3cb5fa459aac3e38bc09626d3ea2", ""),
    sa("aes256-gcm-16_transport_udp4500", Gcm(Aes256Gcm16), None, Transport, true, 0x10000022, "2753db6b02d876f820f0791c49a94ec492bd6c05594b46f3fce8b2f88cdd06a8ae4a2b73", ""),
    sa("aes256-gcm-16_tunnel", Gcm(Aes256Gcm16), None, Tunnel, false, 0x10000023, "22c3395aa3e5662c36380d462fcdeef87507be3ce12d144c6febaf36c1f391ee38ec372b", ""),
    sa("aes256-gcm-16_tunnel_udp4500", Gcm(Aes256Gcm16), None, Tunnel, true, 0x10000024, "df3bcebed47e5ba225967ef5c7a10ca3558b7011903b19f0273209d7d534e3962112c3b8", ""),
    sa("null_hmac-sha1-96_transport", Null, Some(HmacSha1_96), Transport, false, 0x10000025, "", "d1eb3038a45a152ac927d337313ad68d96cbd893"),
    sa("null_hmac-sha1-96_transport_udp4500", Null, Some(HmacSha1_96), Transport, true, 0x10000026, "", "d1835085d50685248bd72da48b439417aa9cd828"),
    sa("null_hmac-sha1-96_tunnel", Null, Some(HmacSha1_96), Tunnel, false, 0x10000027, "", "f8eba9296a3dc0bd43824f2fa5a01ce3f630b893"),
    sa("null_hmac-sha1-96_tunnel_udp4500", Null, Some(HmacSha1_96), Tunnel, true, 0x10000028, "", "e75c9d017173cb99900e9c0dfb20bd02a3f98b28"),
    sa("rfc3602-case5-6_aes128-cbc_transport", Cbc(Aes128Cbc), None, Transport, false, 0x4321, "90d382b410eeba7ad938c46cec1a82bf", ""),
    sa("rfc3602-case7-8_aes128-cbc_tunnel", Cbc(Aes128Cbc), None, Tunnel, false, 0x8765, "0123456789abcdef0123456789abcdef", ""),
    sa("rubnds_aes128-cbc_hmac-sha1-96_tunnel", Cbc(Aes128Cbc), Some(HmacSha1_96), Tunnel, false, 0xc6494f61, "bd30891c6cb5f9a353be9184897260c9", "d42291170f2c984835553a1b83373735723fe256"),
    Spec { v6: true, ..sa("aes128-gcm16_tunnel_udp_v6", Gcm(Aes128Gcm16), None, Tunnel, true, 0x20000001, "23cbd5708a9d69699456e198a7685a78ea29ff8e", "") },
    sa("3des-cbc_hmac-sha1-96_transport_v6", Cbc(TripleDesCbc), Some(HmacSha1_96), Transport, false, 0x20000002, "55826f650552c8a8069234d61ddbb1d312b5be442efc260e", "95b2b3907246817577ae41a0126d90b70fa386ec"),
    Spec { esn: true, ..sa("aes256-gcm8_tunnel_esn", Gcm(Aes256Gcm8), None, Tunnel, false, 0x20000003, "4cd208d65c3066f3ac61ed81fb4e4acd8937c21d4f26a9c61b37b301a6a05f624cd208d6", "") },
    Spec { esn: true, ..sa("aes192-gcm12_transport_udp_esn", Gcm(Aes192Gcm12), None, Transport, true, 0x20000004, "7cad7892a279abd02cecd42f44cf034c4036f8416fbe31e187fc073f", "") },
    Spec { v6: true, esn: true, sel: Sel::V6, ..sa("aes192-cbc_hmac-sha256-128_tunnel_v6_esn_sel6", Cbc(Aes192Cbc), Some(HmacSha256_128), Tunnel, false, 0x20000005, "469a636497f3a0d86885956b88bba8746d8f1ff50227fd7a", "1cb30b9bb36a5e7eed1f04174b68d9f9e7cdb7831f24dd729b4edda04b31b365") },
    Spec { esn: true, window: 0, ..sa("null_hmac-md5-96_transport_esn_nowindow", Null, Some(HmacMd5_96), Transport, false, 0x20000006, "", "2df262bb76e4bfa46e7dd32323d2ec40") },
    sa("des-cbc_nomac_transport", Cbc(DesCbc), None, Transport, false, 0x20000007, "30a8dd3b47dcad19", ""),
    Spec { sel: Sel::V4Udp, ..sa("aes128-gcm12_transport_sel4udp", Gcm(Aes128Gcm12), None, Transport, false, 0x20000008, "a88c24cd0967bb55dc4a9b1a79fb8151a0a19396", "") },
    Spec { window: 32, sel: Sel::V4, ..sa("aes256-cbc_hmac-sha1-96_tunnel_sel4_w32", Cbc(Aes256Cbc), Some(HmacSha1_96), Tunnel, false, 0x20000009, "0717c8b05a8a6c8854a587a527a00152414815d161d7b905869f6c54a59bc636", "e94371803c819070c9cbf4d0d05f7db7ee9f67f3") },
    Spec { v6: true, esn: true, window: 4096, ..sa("null_hmac-sha256-128_tunnel_v6_esn_w4096", Null, Some(HmacSha256_128), Tunnel, false, 0x2000000a, "", "206464eff7e7b521713c7aad716bffb3a009b5efefbe3e37ae42c430d1bad6dc") },
    Spec { v6: true, ..sa("aes128-cbc_nomac_tunnel_v6_udp", Cbc(Aes128Cbc), None, Tunnel, true, 0x2000000b, "43ecdca7a35973746ce8a405fc67c744", "") },
];

// Seal-mode flags.
const WRAP: u8 = 1;
const WRAP_V6: u8 = 2;
const IN_POLICY: u8 = 4;
const ORIGINAL_FIRST: u8 = 8;
const SEAL_HEADER_LEN: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let spec = &SAS[usize::from(sel & 0x7f) % SAS.len()];
    let seal = sel & 0x80 != 0;
    // Windows above 64 packets need a bigger bitmap (a const generic).
    match (spec.window > 64, seal) {
        (false, false) => raw::<2>(spec, rest),
        (false, true) => sealed::<2>(spec, rest),
        (true, false) => raw::<65>(spec, rest),
        (true, true) => sealed::<65>(spec, rest),
    }
});

type Res = Result<(Vec<u8>, u64, u8), EspError>;

/// Raw mode: the input is the outer packet.
fn raw<const W: usize>(spec: &Spec, packet: &[u8]) {
    let mut sa = inbound::<W>(spec, 0);
    let r = decap(spec, &mut sa, packet);
    if r.is_ok() && spec.window > 0 {
        assert_eq!(
            decap(spec, &mut sa, packet),
            Err(EspError::Replayed),
            "{}: an accepted packet was accepted again",
            spec.name
        );
    }
}

/// Seal mode: seal an inner packet, mutate it, decapsulate it.
fn sealed<const W: usize>(spec: &Spec, data: &[u8]) {
    let Some((hdr, rest)) = data.split_first_chunk::<SEAL_HEADER_LEN>() else {
        return;
    };
    let offset = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
    let mask = [hdr[2], hdr[3], hdr[4], hdr[5]];
    let flags = hdr[6];
    let mut seq = u64::from_be_bytes([
        hdr[7], hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14],
    ]);
    if !spec.esn {
        seq &= u64::from(u32::MAX);
    }
    let seq = seq.max(1);
    let top = seq.saturating_sub(1 + u64::from(hdr[15]));

    let inner = if flags & WRAP != 0 {
        let Some((&protocol, payload)) = rest.split_first() else {
            return;
        };
        match wrap(
            protocol,
            payload,
            flags & WRAP_V6 != 0,
            flags & IN_POLICY != 0,
        ) {
            Some(p) => p,
            None => return,
        }
    } else {
        rest.to_vec()
    };

    // Seal with the outbound twin. Unparsable inner packets are refused here: fine.
    let mut out_sa = EspSa::<SoftCrypto, W>::new(
        config(spec, Direction::Outbound),
        &hex(spec.enc_key),
        &hex(spec.auth_key),
        NOW,
    )
    .expect("outbound SA of the table");
    out_sa.advance_seq_to(seq);
    let iv = [0xa5u8; 16];
    let iv = match spec.enc {
        Cbc(c) => Some(&iv[..c.block_len()]),
        Null | Gcm(_) => None,
    };
    let mut sealed = vec![0u8; inner.len() + 128];
    let opts = SealOptions {
        iv,
        ipv4_ident: None,
    };
    let Ok(total) = out_sa.encapsulate_with(NOW, &inner, &opts, &mut sealed) else {
        return;
    };
    sealed.truncate(total);
    let payload_len = usize::try_from(out_sa.counters().bytes_out).expect("one small packet");
    let esp_start = total - out_sa.sealed_len(payload_len);
    assert_eq!(
        sealed[esp_start..esp_start + 4],
        spec.spi.to_be_bytes(),
        "{}: ESP not where sealed_len says",
        spec.name
    );

    let mut mutated = sealed.clone();
    let mut touched_esp = false;
    for (i, &m) in mask.iter().enumerate() {
        if let Some(b) = mutated.get_mut(offset + i).filter(|_| m != 0) {
            *b ^= m;
            touched_esp |= offset + i >= esp_start;
        }
    }
    let integrity = transform(spec).icv_len() > 0;

    // What a receiver in this state does with the untouched packet.
    let mut reference = inbound::<W>(spec, top);
    let expected = decap(spec, &mut reference, &sealed);
    match &expected {
        Ok((packet, s, _)) => {
            assert_eq!(*s, seq, "{}: wrong sequence number", spec.name);
            assert_same_packet(spec, &inner, packet);
        }
        Err(e) => assert!(
            refusal_explained(spec, *e),
            "{}: a freshly sealed packet was refused: {e:?}",
            spec.name
        ),
    }

    let mut sa = inbound::<W>(spec, top);
    if flags & ORIGINAL_FIRST != 0 {
        let first = decap(spec, &mut sa, &sealed);
        assert_eq!(first, expected, "{}: not deterministic", spec.name);
        let second = decap(spec, &mut sa, &mutated);
        // Untouched ESP is a replay of the accepted packet; touched ESP a forgery.
        if (integrity && touched_esp) || (!touched_esp && first.is_ok() && spec.window > 0) {
            assert!(
                second.is_err(),
                "{}: mutated copy of a delivered packet accepted (touched ESP: {touched_esp})",
                spec.name
            );
        }
    } else {
        let first = decap(spec, &mut sa, &mutated);
        if integrity && touched_esp {
            assert!(first.is_err(), "{}: forged packet accepted", spec.name);
        }
        let second = decap(spec, &mut sa, &sealed);
        if integrity && touched_esp {
            assert_eq!(
                second, expected,
                "{}: a forged packet changed the SA's state",
                spec.name
            );
        } else if !touched_esp && first.is_ok() && spec.window > 0 {
            assert_eq!(
                second,
                Err(EspError::Replayed),
                "{}: the same ESP packet was accepted twice",
                spec.name
            );
        }
    }
}

/// Decapsulates a copy of `packet` and checks every `Ok` against the invariants.
fn decap<const W: usize>(spec: &Spec, sa: &mut EspSa<SoftCrypto, W>, packet: &[u8]) -> Res {
    let mut buf = packet.to_vec();
    let (base, len) = (buf.as_ptr() as usize, buf.len());
    let d = sa.decapsulate(NOW, &mut buf)?;
    let start = d.packet.as_ptr() as usize;
    assert!(
        start >= base && start + d.packet.len() <= base + len,
        "{}: the decapsulated slice lies outside the buffer",
        spec.name
    );
    let out = (d.packet.to_vec(), d.seq, d.next_header);
    assert!(
        authentic(spec, packet, out.1),
        "{}: accepted a packet whose ICV does not verify",
        spec.name
    );
    assert_well_formed(spec, &out.0, out.2);
    Ok(out)
}

/// Errors a freshly sealed, untouched packet may legitimately get: they come from its
/// contents (the protocol it carries, its addresses), never from ESP processing.
fn refusal_explained(spec: &Spec, e: EspError) -> bool {
    let by_mode =
        spec.mode == Transport && matches!(e, EspError::BadNextHeader | EspError::DummyPacket);
    let by_selector = !matches!(spec.sel, Sel::None)
        && matches!(e, EspError::PolicyMismatch | EspError::Malformed(_));
    by_mode || by_selector
}

/// The decapsulated packet is the one that was sealed (trimmed to its length field); in
/// transport mode the IPv4 checksum is recomputed, so it is compared apart.
fn assert_same_packet(spec: &Spec, inner: &[u8], got: &[u8]) {
    let len = ip_len(inner).expect("sealed packets parse");
    let want = &inner[..len];
    if spec.mode == Transport && want[0] >> 4 == 4 {
        assert_eq!(got.len(), want.len(), "{}: length", spec.name);
        assert_eq!(got[..10], want[..10], "{}: rebuilt header", spec.name);
        assert_eq!(got[12..], want[12..], "{}: rebuilt packet", spec.name);
    } else {
        assert_eq!(got, want, "{}: decapsulated packet differs", spec.name);
    }
}

/// What the mode promises about a delivered packet.
fn assert_well_formed(spec: &Spec, p: &[u8], nh: u8) {
    let version = p.first().map(|b| b >> 4);
    match spec.mode {
        Tunnel => {
            let want = match nh {
                proto::IPV4 => Some(4),
                proto::IPV6 => Some(6),
                _ => panic!("{}: tunnel mode delivered next header {nh}", spec.name),
            };
            assert_eq!(version, want, "{}: next header / version", spec.name);
        }
        Transport => {
            assert!(
                !matches!(nh, proto::IPV4 | proto::IPV6 | proto::NO_NEXT_HEADER),
                "{}: transport mode delivered next header {nh}",
                spec.name
            );
            if version == Some(4) {
                let ip = Ipv4Packet::new_checked(p).expect("rebuilt IPv4 header");
                assert!(ip.header_checksum_ok(), "{}: rebuilt checksum", spec.name);
                assert_eq!(ip.protocol(), nh, "{}: rebuilt protocol", spec.name);
            }
        }
    }
    assert_eq!(ip_len(p), Some(p.len()), "{}: delivered length", spec.name);
}

/// The length an IP packet's header gives it.
fn ip_len(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 => Some(usize::from(Ipv4Packet::new_checked(p).ok()?.total_len())),
        6 => Some(Ipv6Packet::new_checked(p).ok()?.total_len()),
        _ => None,
    }
}

/// Finds the ESP part of `packet` independently and verifies its ICV with the SA's keys.
fn authentic(spec: &Spec, packet: &[u8], seq: u64) -> bool {
    let t = transform(spec);
    let Some(esp) = esp_range(packet, spec.udp).and_then(|r| packet.get(r)) else {
        return false;
    };
    let Some(split) = esp.len().checked_sub(t.icv_len()) else {
        return false;
    };
    let (authed, icv) = esp.split_at(split);
    let Some(seq_lo) = authed.get(4..8) else {
        return false;
    };
    #[allow(clippy::cast_possible_truncation)]
    if seq_lo != (seq as u32).to_be_bytes() {
        return false;
    }
    #[allow(clippy::cast_possible_truncation)]
    let seq_hi = ((seq >> 32) as u32).to_be_bytes();
    match (spec.enc, spec.auth) {
        (Gcm(alg), _) => {
            let keymat = hex(spec.enc_key);
            let (key, salt) = keymat.split_at(alg.key_len());
            let Some(iv) = authed.get(8..16) else {
                return false;
            };
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(salt);
            nonce[4..].copy_from_slice(iv);
            let mut aad = authed[..4].to_vec();
            if spec.esn {
                aad.extend_from_slice(&seq_hi);
            }
            aad.extend_from_slice(seq_lo);
            let mut ct = authed[16..].to_vec();
            let aead = SoftAead::new(alg, key).expect("GCM key");
            aead.open(&nonce, &aad, &mut ct, icv).is_ok()
        }
        (_, None) => true, // no integrity: anything is "authentic"
        (_, Some(alg)) => {
            let mac = SoftMac::new(alg, &hex(spec.auth_key)).expect("MAC key");
            let parts: &[&[u8]] = if spec.esn {
                &[authed, &seq_hi]
            } else {
                &[authed]
            };
            mac.verify(parts, icv).is_ok()
        }
    }
}

/// ESP from the SPI to the end of the ICV, behind an IPv4 or IPv6 header (and IPv6
/// Hop-by-Hop / Routing / Destination Options headers), raw or in UDP.
fn esp_range(p: &[u8], udp: bool) -> Option<Range<usize>> {
    let (protocol, l4, end) = match p.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(p).ok()?;
            (ip.protocol(), ip.header_len(), usize::from(ip.total_len()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(p).ok()?;
            let mut nh = ip.next_header();
            let mut off = 40;
            let mut hops = 0;
            while matches!(nh, 0 | 43 | 60) {
                hops += 1;
                if hops > 8 {
                    return None;
                }
                let next = *p.get(off)?;
                off += (usize::from(*p.get(off + 1)?) + 1) * 8;
                nh = next;
            }
            (nh, off, ip.total_len())
        }
        _ => return None,
    };
    match (protocol, udp) {
        (proto::ESP, false) => Some(l4..end),
        (proto::UDP, true) => {
            let seg = p.get(l4..end)?;
            let u = UdpPacket::new_checked(seg).ok()?;
            Some(l4 + 8..l4 + 8 + u.payload().len())
        }
        _ => None,
    }
}

/// An IP packet around `payload`, from the sender to the receiver of the selector SAs
/// (`in_policy`) or between the test-vector addresses.
fn wrap(protocol: u8, payload: &[u8], v6: bool, in_policy: bool) -> Option<Vec<u8>> {
    let mut p;
    if v6 {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = if in_policy {
            ("2001:db8:2::1".parse().ok()?, "2001:db8:1::1".parse().ok()?)
        } else {
            ("2001:db8::1".parse().ok()?, "2001:db8::2".parse().ok()?)
        };
        let repr = Ipv6Repr {
            src,
            dst,
            next_header: protocol,
            payload_len: payload.len(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut p).ok()?;
    } else {
        let (src, dst) = if in_policy {
            (Ipv4Addr::new(172, 16, 0, 1), Ipv4Addr::new(10, 0, 0, 1))
        } else {
            (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2))
        };
        let repr = Ipv4Repr {
            src,
            dst,
            protocol,
            payload_len: payload.len(),
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut p).ok()?;
    }
    let start = p.len() - payload.len();
    p[start..].copy_from_slice(payload);
    Some(p)
}

fn transform(spec: &Spec) -> Transform {
    Transform {
        enc: spec.enc,
        auth: spec.auth,
    }
}

fn config(spec: &Spec, direction: Direction) -> EspConfig {
    let (a, b): (IpAddr, IpAddr) = if spec.v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
        )
    } else {
        (
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(198, 51, 100, 2).into(),
        )
    };
    let (local, remote) = match direction {
        Direction::Outbound => (a, b),
        Direction::Inbound => (b, a),
    };
    let mut c = match spec.mode {
        Tunnel => EspConfig::tunnel(spec.spi, direction, transform(spec), local, remote),
        Transport => EspConfig::transport(spec.spi, direction, transform(spec)),
    };
    c.esn = spec.esn;
    c.replay_window = spec.window;
    c.udp_encap = spec.udp.then_some(UdpEncap::STANDARD);
    if direction == Direction::Inbound {
        c.selector = selector(spec.sel);
    }
    c
}

fn selector(sel: Sel) -> Option<Selector> {
    let net =
        |a: &str, len| AddrRange::from_prefix(a.parse().expect("address"), len).expect("prefix");
    let v4 = || Selector::new(net("10.0.0.0", 8), net("172.16.0.0", 12)).expect("selector");
    match sel {
        Sel::None => None,
        Sel::V4 => Some(v4()),
        Sel::V4Udp => Some(
            v4().with_protocol(proto::UDP)
                .with_local_ports(PortRange::new(1000, 2000).expect("ports")),
        ),
        Sel::V6 => {
            Some(Selector::new(net("2001:db8:1::", 48), net("2001:db8:2::", 48)).expect("selector"))
        }
    }
}

/// A fresh inbound SA whose window has `top` as its highest sequence number (none marked).
fn inbound<const W: usize>(spec: &Spec, top: u64) -> EspSa<SoftCrypto, W> {
    let mut sa = EspSa::<SoftCrypto, W>::new(
        config(spec, Direction::Inbound),
        &hex(spec.enc_key),
        &hex(spec.auth_key),
        NOW,
    )
    .expect("inbound SA of the table");
    if top > 0 {
        let snapshot = ReplaySnapshot::<W> {
            bitmap: [0; W],
            top,
            size: spec.window,
            esn: spec.esn,
        };
        sa.restore_replay(&snapshot).expect("window top");
    }
    sa
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex key"))
        .collect()
}
