//! `ipsec esp seal` / `ipsec esp open`.

use std::net::IpAddr;

use clap::{Args, Subcommand, ValueEnum};
use hal_traits::{AeadAlg, CipherAlg, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, SealOptions, Transform, UdpEncap};
use ipsec_core::replay::ReplaySnapshot;
use ipsec_soft_crypto::SoftCrypto;

#[derive(Subcommand, Debug)]
pub enum EspCommand {
    /// Decapsulate one outer IP packet (raw or UDP-encapsulated ESP) and print the result
    /// as hex: the inner packet in tunnel mode, the reconstructed packet in transport mode.
    Open(OpenArgs),
    /// Encapsulate one packet (the inner packet in tunnel mode, the original packet in
    /// transport mode) and print the outer packet as hex.
    Seal(SealArgs),
}

/// Encryption algorithm names.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum EncName {
    Null,
    DesCbc,
    #[value(name = "3des-cbc")]
    TripleDesCbc,
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm8,
    Aes128Gcm12,
    Aes128Gcm16,
    Aes192Gcm8,
    Aes192Gcm12,
    Aes192Gcm16,
    Aes256Gcm8,
    Aes256Gcm12,
    Aes256Gcm16,
}

impl EncName {
    pub(crate) fn encryption(self) -> Encryption {
        match self {
            Self::Null => Encryption::Null,
            Self::DesCbc => Encryption::Cbc(CipherAlg::DesCbc),
            Self::TripleDesCbc => Encryption::Cbc(CipherAlg::TripleDesCbc),
            Self::Aes128Cbc => Encryption::Cbc(CipherAlg::Aes128Cbc),
            Self::Aes192Cbc => Encryption::Cbc(CipherAlg::Aes192Cbc),
            Self::Aes256Cbc => Encryption::Cbc(CipherAlg::Aes256Cbc),
            Self::Aes128Gcm8 => Encryption::Gcm(AeadAlg::Aes128Gcm8),
            Self::Aes128Gcm12 => Encryption::Gcm(AeadAlg::Aes128Gcm12),
            Self::Aes128Gcm16 => Encryption::Gcm(AeadAlg::Aes128Gcm16),
            Self::Aes192Gcm8 => Encryption::Gcm(AeadAlg::Aes192Gcm8),
            Self::Aes192Gcm12 => Encryption::Gcm(AeadAlg::Aes192Gcm12),
            Self::Aes192Gcm16 => Encryption::Gcm(AeadAlg::Aes192Gcm16),
            Self::Aes256Gcm8 => Encryption::Gcm(AeadAlg::Aes256Gcm8),
            Self::Aes256Gcm12 => Encryption::Gcm(AeadAlg::Aes256Gcm12),
            Self::Aes256Gcm16 => Encryption::Gcm(AeadAlg::Aes256Gcm16),
        }
    }
}

/// Integrity algorithm names.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum AuthName {
    None,
    #[value(name = "hmac-sha1-96")]
    HmacSha1_96,
    #[value(name = "hmac-sha256-128")]
    HmacSha256_128,
    #[value(name = "hmac-md5-96")]
    HmacMd5_96,
}

impl AuthName {
    pub(crate) fn mac(self) -> Option<MacAlg> {
        match self {
            Self::None => None,
            Self::HmacSha1_96 => Some(MacAlg::HmacSha1_96),
            Self::HmacSha256_128 => Some(MacAlg::HmacSha256_128),
            Self::HmacMd5_96 => Some(MacAlg::HmacMd5_96),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeName {
    Tunnel,
    Transport,
}

/// The SA: what `setkey` would be told.
#[derive(Args, Debug)]
struct SaArgs {
    /// SPI in hex (e.g. 10000001 or 0x10000001).
    #[arg(long, value_parser = parse_hex_u32)]
    spi: u32,
    /// Encryption algorithm.
    #[arg(long, value_enum)]
    enc: EncName,
    /// Encryption key in hex; for AES-GCM the key followed by the 4-byte salt (RFC 4106).
    /// Empty for null.
    #[arg(long, value_parser = parse_hex, default_value = "")]
    enc_key: Hex,
    /// Integrity algorithm (none for AES-GCM).
    #[arg(long, value_enum, default_value = "none")]
    auth: AuthName,
    /// Integrity key in hex.
    #[arg(long, value_parser = parse_hex, default_value = "")]
    auth_key: Hex,
    /// ESP mode.
    #[arg(long, value_enum, default_value = "tunnel")]
    mode: ModeName,
    /// ESP is carried in UDP (RFC 3948), port 4500 unless --udp-port says otherwise.
    #[arg(long)]
    udp_encap: bool,
    /// UDP port of the encapsulation (both sides).
    #[arg(long, default_value_t = 4500, requires = "udp_encap")]
    udp_port: u16,
    /// Extended Sequence Numbers: the high 32 bits of the sequence number.
    #[arg(long)]
    esn_high: Option<u32>,
    /// The packet, in hex.
    #[arg(long, value_parser = parse_hex)]
    packet: Hex,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    #[command(flatten)]
    sa: SaArgs,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    #[command(flatten)]
    sa: SaArgs,
    /// Sequence number (low 32 bits; with --esn-high the high bits come from there).
    #[arg(long, default_value_t = 1)]
    seq: u32,
    /// IV in hex, to reproduce a packet (CBC: one block; GCM: 8 bytes). Random by
    /// default for CBC, the sequence number for GCM.
    #[arg(long, value_parser = parse_hex)]
    iv: Option<Hex>,
    /// Outer source address (tunnel mode).
    #[arg(long)]
    src: Option<IpAddr>,
    /// Outer destination address (tunnel mode).
    #[arg(long)]
    dst: Option<IpAddr>,
    /// IPv4 identification of the outer header (tunnel mode).
    #[arg(long)]
    ident: Option<u16>,
    /// TTL / hop limit of the outer header (tunnel mode).
    #[arg(long, default_value_t = 64)]
    ttl: u8,
}

/// Bytes given in hex on the command line (a newtype, so clap takes one value, not many).
#[derive(Clone, Debug, Default)]
pub(crate) struct Hex(pub(crate) Vec<u8>);

pub(crate) fn parse_hex(s: &str) -> Result<Hex, String> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let s = s.strip_prefix("0x").unwrap_or(&s);
    hex::decode(s).map(Hex).map_err(|e| format!("not hex: {e}"))
}

pub(crate) fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(s, 16).map_err(|e| format!("not a 32-bit hex number: {e}"))
}

pub fn run(cmd: EspCommand) -> Result<(), String> {
    let hex_out = match cmd {
        EspCommand::Open(a) => open(a)?,
        EspCommand::Seal(a) => seal(a)?,
    };
    println!("{hex_out}");
    Ok(())
}

fn config(
    sa: &SaArgs,
    direction: Direction,
    local: Option<IpAddr>,
    remote: Option<IpAddr>,
) -> Result<EspConfig, String> {
    let transform = Transform {
        enc: sa.enc.encryption(),
        auth: sa.auth.mac(),
    };
    transform
        .validate()
        .map_err(|_| "invalid transform: AES-GCM takes no --auth, null needs one".to_string())?;
    let mut cfg = match sa.mode {
        ModeName::Transport => EspConfig::transport(sa.spi, direction, transform),
        ModeName::Tunnel => {
            let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            let l = local.unwrap_or(unspecified);
            let r = remote.unwrap_or(unspecified);
            EspConfig::tunnel(sa.spi, direction, transform, l, r)
        }
    };
    cfg.esn = sa.esn_high.is_some();
    if sa.udp_encap {
        cfg.udp_encap = Some(UdpEncap {
            local_port: sa.udp_port,
            remote_port: sa.udp_port,
        });
    }
    Ok(cfg)
}

fn key_error(sa: &SaArgs) -> String {
    let t = Transform {
        enc: sa.enc.encryption(),
        auth: sa.auth.mac(),
    };
    format!(
        "invalid keys: --enc-key must be {} bytes and --auth-key {} bytes",
        t.enc.keymat_len(),
        t.auth.map_or(0, MacAlg::key_len)
    )
}

fn open(a: OpenArgs) -> Result<String, String> {
    let sa_args = &a.sa;
    let mut cfg = config(sa_args, Direction::Inbound, None, None)?;
    if sa_args.esn_high.is_some() {
        // One packet, no history: no replay window, the high bits as given.
        cfg.replay_window = 0;
    }
    let mut sa: EspSa<SoftCrypto> =
        EspSa::new(cfg, &sa_args.enc_key.0, &sa_args.auth_key.0, Instant::ZERO)
            .map_err(|_| key_error(sa_args))?;
    let mut packet = sa_args.packet.0.clone();
    if let Some(hi) = sa_args.esn_high {
        let lo =
            ipsec_core::esp::packet::peek_seq(&packet, sa.config()).map_err(|e| e.to_string())?;
        let top = (u64::from(hi) << 32) | u64::from(lo);
        sa.restore_replay(&ReplaySnapshot {
            bitmap: [0; 2],
            top,
            size: 0,
            esn: true,
        })
        .map_err(|e| e.to_string())?;
    }
    let d = sa
        .decapsulate(Instant::ZERO, &mut packet)
        .map_err(|e| e.to_string())?;
    Ok(hex::encode(&*d.packet))
}

fn seal(a: SealArgs) -> Result<String, String> {
    let sa_args = &a.sa;
    if matches!(sa_args.mode, ModeName::Tunnel) && (a.src.is_none() || a.dst.is_none()) {
        return Err("tunnel mode needs --src and --dst for the outer header".into());
    }
    let mut cfg = config(sa_args, Direction::Outbound, a.src, a.dst)?;
    cfg.outer_ttl = a.ttl;
    let mut sa: EspSa<SoftCrypto> =
        EspSa::new(cfg, &sa_args.enc_key.0, &sa_args.auth_key.0, Instant::ZERO)
            .map_err(|_| key_error(sa_args))?;
    let hi = u64::from(sa_args.esn_high.unwrap_or(0));
    sa.advance_seq_to((hi << 32) | u64::from(a.seq));
    let mut out = vec![0u8; sa_args.packet.0.len() + 256];
    let n = match &a.iv {
        Some(iv) => {
            let opts = SealOptions {
                iv: Some(&iv.0),
                ipv4_ident: a.ident,
            };
            sa.encapsulate_with(Instant::ZERO, &sa_args.packet.0, &opts, &mut out)
        }
        None => {
            let mut rng = ipsec_soft_crypto::OsRng;
            sa.encapsulate(
                Instant::ZERO,
                &sa_args.packet.0,
                a.ident,
                &mut rng,
                &mut out,
            )
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(hex::encode(&out[..n]))
}
