//! A Cortex-M4 program that links the core crates with **no global allocator** and no
//! `std`: if any of them used `alloc` or `std`, this would not build or link.
//!
//! Under QEMU (`cargo run --release`) it also exercises the ESP path once, sealing an IPv4
//! packet through an AES-128-GCM tunnel SA and opening it again, and reports through
//! semihosting.
#![no_std]
#![no_main]

use core::net::{IpAddr, Ipv4Addr};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use hal_traits::AeadAlg;
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, SealOptions, Transform};
use ipsec_soft_crypto::SoftCrypto;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

const INNER: [u8; 28] = [
    0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0xf6, 0x7b, 0xc6, 0x33, 0x64, 0x01,
    0xc6, 0x33, 0x64, 0x81, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
];

fn run() -> Result<usize, ipsec_core::esp::EspError> {
    let t = Transform { enc: Encryption::Gcm(AeadAlg::Aes128Gcm16), auth: None };
    let a = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let b = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    let key = [0x42u8; 20];
    let mut out_sa: EspSa<SoftCrypto> =
        EspSa::new(EspConfig::tunnel(0x1000, Direction::Outbound, t, a, b), &key, &[], Instant::ZERO)?;
    let mut in_sa: EspSa<SoftCrypto> =
        EspSa::new(EspConfig::tunnel(0x1000, Direction::Inbound, t, b, a), &key, &[], Instant::ZERO)?;
    let mut buf = [0u8; 256];
    let n = out_sa.encapsulate_with(Instant::ZERO, &INNER, &SealOptions::default(), &mut buf)?;
    let d = in_sa.decapsulate(Instant::ZERO, buf.get_mut(..n).unwrap_or(&mut []))?;
    Ok(if d.packet == &INNER[..] { n } else { 0 })
}

#[entry]
fn main() -> ! {
    match run() {
        Ok(n) if n > 0 => {
            hprintln!("nostd-check: ESP round trip ok ({} bytes on the wire)", n);
            debug::exit(debug::EXIT_SUCCESS);
        }
        _ => {
            hprintln!("nostd-check: ESP round trip FAILED");
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {}
}
