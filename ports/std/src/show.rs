//! `show crypto ipsec sa`-style rendering of ESP SAs and their counters.

use std::fmt::Write as _;
use std::net::IpAddr;

use hal_traits::{CipherAlg, CryptoProvider, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{Encryption, EspSa, Mode, Transform};
use ipsec_core::spd::AddrRange;

/// IOS's name for a transform: `esp-aes esp-sha-hmac`, `esp-3des esp-md5-hmac`,
/// `esp-gcm 256`, ...
#[must_use]
pub fn transform_name(t: &Transform) -> String {
    let enc = match t.enc {
        Encryption::Null => "esp-null",
        Encryption::Cbc(CipherAlg::DesCbc) => "esp-des",
        Encryption::Cbc(CipherAlg::TripleDesCbc) => "esp-3des",
        Encryption::Cbc(CipherAlg::Aes128Cbc) => "esp-aes",
        Encryption::Cbc(CipherAlg::Aes192Cbc) => "esp-aes 192",
        Encryption::Cbc(CipherAlg::Aes256Cbc) => "esp-aes 256",
        Encryption::Gcm(a) => match (a.key_len(), a.icv_len()) {
            (16, 16) => "esp-gcm",
            (24, 16) => "esp-gcm 192",
            (32, 16) => "esp-gcm 256",
            (16, 12) => "esp-gcm12",
            (24, 12) => "esp-gcm12 192",
            (32, 12) => "esp-gcm12 256",
            (16, _) => "esp-gcm8",
            (24, _) => "esp-gcm8 192",
            _ => "esp-gcm8 256",
        },
        Encryption::Cbc(_) => "esp-unknown",
    };
    let auth = match t.auth {
        Some(MacAlg::HmacMd5_96) => " esp-md5-hmac",
        Some(MacAlg::HmacSha1_96) => " esp-sha-hmac",
        Some(MacAlg::HmacSha256_128) => " esp-sha256-hmac",
        Some(_) => " esp-unknown-hmac",
        None => "",
    };
    format!("{enc}{auth}")
}

fn ident(r: Option<&AddrRange>, protocol: u8) -> String {
    match r.and_then(AddrRange::as_subnet) {
        Some((net, mask)) => format!("({net}/{mask}/{protocol}/0)"),
        None => match r {
            Some(r) => format!("({r}/{protocol}/0)"),
            None => "(0.0.0.0/0.0.0.0/0/0)".into(),
        },
    }
}

/// One crypto-map entry's SAs with a peer, as `show crypto ipsec sa` groups them.
pub struct SaPair<'a, P: CryptoProvider, const W: usize> {
    /// The interface the crypto map is applied to.
    pub interface: &'a str,
    /// The crypto map's name.
    pub map_tag: &'a str,
    /// Our address.
    pub local: IpAddr,
    /// The peer's address.
    pub peer: IpAddr,
    /// The inbound SA, if any.
    pub inbound: Option<&'a EspSa<P, W>>,
    /// The outbound SA, if any.
    pub outbound: Option<&'a EspSa<P, W>>,
}

/// Renders `show crypto ipsec sa` for the given pairs.
#[must_use]
pub fn crypto_ipsec_sa<P: CryptoProvider, const W: usize>(
    now: Instant,
    pairs: &[SaPair<'_, P, W>],
) -> String {
    let mut s = String::new();
    for p in pairs {
        let any = p.outbound.or(p.inbound);
        let sel = any.and_then(|sa| sa.config().selector.as_ref());
        let _ = writeln!(s, "interface: {}", p.interface);
        let _ = writeln!(
            s,
            "    Crypto map tag: {}, local addr {}",
            p.map_tag, p.local
        );
        let _ = writeln!(s);
        // IOS prints the ACL's protocol (47 for `permit gre`), 0 for `ip`.
        let prot = sel.and_then(|x| x.protocol).unwrap_or(0);
        let _ = writeln!(
            s,
            "   local  ident (addr/mask/prot/port): {}",
            ident(sel.map(|x| &x.local), prot)
        );
        let _ = writeln!(
            s,
            "   remote ident (addr/mask/prot/port): {}",
            ident(sel.map(|x| &x.remote), prot)
        );
        let port = any
            .and_then(|sa| sa.config().udp_encap)
            .map_or(500, |u| u.remote_port);
        let _ = writeln!(s, "   current_peer {} port {port}", p.peer);
        let _ = writeln!(s, "     PERMIT, flags={{origin_is_acl,}}");
        let o = p.outbound.map(|sa| *sa.counters()).unwrap_or_default();
        let i = p.inbound.map(|sa| *sa.counters()).unwrap_or_default();
        let _ = writeln!(
            s,
            "    #pkts encaps: {}, #pkts encrypt: {}, #pkts digest: {}",
            o.encaps, o.encrypt, o.digest
        );
        let _ = writeln!(
            s,
            "    #pkts decaps: {}, #pkts decrypt: {}, #pkts verify: {}",
            i.decaps, i.decrypt, i.verify
        );
        let _ = writeln!(
            s,
            "    #send errors {}, #recv errors {}",
            o.send_errors, i.recv_errors
        );
        let _ = writeln!(
            s,
            "    #pkts replay failed (rcv): {}, #pkts replay too old (rcv): {}, #pkts verify failed: {}",
            i.replay_failed, i.replay_too_old, i.verify_failed
        );
        let _ = writeln!(
            s,
            "    #pkts invalid len (rcv): {}, #pkts bad padding (rcv): {}, #pkts invalid prot (recv): {}, #pkts invalid identity (recv): {}",
            i.invalid_len, i.bad_padding, i.bad_next_header, i.policy_mismatch
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "     local crypto endpt.: {}, remote crypto endpt.: {}",
            p.local, p.peer
        );
        let out_spi = p.outbound.map_or(0, EspSa::spi);
        let _ = writeln!(s, "     current outbound spi: {out_spi:#X}({out_spi})");
        for (label, sa) in [("inbound", p.inbound), ("outbound", p.outbound)] {
            let _ = writeln!(s);
            let _ = writeln!(s, "     {label} esp sas:");
            if let Some(sa) = sa {
                let c = sa.config();
                let spi = sa.spi();
                let _ = writeln!(s, "      spi: {spi:#X}({spi})");
                let _ = writeln!(s, "        transform: {} ,", transform_name(&c.transform));
                let mode = match (c.mode, c.udp_encap.is_some()) {
                    (Mode::Tunnel, false) => "Tunnel",
                    (Mode::Tunnel, true) => "Tunnel UDP-Encaps",
                    (Mode::Transport, false) => "Transport",
                    (Mode::Transport, true) => "Transport UDP-Encaps",
                };
                let _ = writeln!(s, "        in use settings ={{{mode}, }}");
                let (kb, secs) = sa.lifetime().remaining_kb_secs(now);
                let kb = kb.map_or_else(|| "-".to_string(), |v| v.to_string());
                let secs = secs.map_or_else(|| "-".to_string(), |v| v.to_string());
                let _ = writeln!(
                    s,
                    "        sa timing: remaining key lifetime (k/sec): ({kb}/{secs})"
                );
                let replay = if c.replay_window > 0 { "Y" } else { "N" };
                let _ = writeln!(s, "        replay detection support: {replay}");
                let _ = writeln!(s, "        Status: ACTIVE");
            }
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use hal_traits::AeadAlg;

    use super::*;

    #[test]
    fn ios_transform_names() {
        let t = |enc, auth| transform_name(&Transform { enc, auth });
        assert_eq!(
            t(
                Encryption::Cbc(CipherAlg::TripleDesCbc),
                Some(MacAlg::HmacSha1_96)
            ),
            "esp-3des esp-sha-hmac"
        );
        assert_eq!(
            t(
                Encryption::Cbc(CipherAlg::Aes256Cbc),
                Some(MacAlg::HmacSha256_128)
            ),
            "esp-aes 256 esp-sha256-hmac"
        );
        assert_eq!(
            t(Encryption::Gcm(AeadAlg::Aes256Gcm16), None),
            "esp-gcm 256"
        );
        assert_eq!(
            t(Encryption::Null, Some(MacAlg::HmacMd5_96)),
            "esp-null esp-md5-hmac"
        );
    }
}
