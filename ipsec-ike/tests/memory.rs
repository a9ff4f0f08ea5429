//! Memory footprint of the control plane (everything is inline: this is what a
//! firmware's static holds). Run with `--nocapture` to see the numbers.
#![allow(clippy::unwrap_used)]

use ipsec_ike::v1::{ChildSa, Ike, IkeConfig, IkeEvent};
use ipsec_soft_crypto::SoftCrypto;

#[test]
fn footprint() {
    let big = core::mem::size_of::<Ike<SoftCrypto, 16>>();
    let small = core::mem::size_of::<Ike<SoftCrypto, 2, 4>>();
    println!("size_of::<Ike<SoftCrypto, 16>>()      = {big}");
    println!("size_of::<Ike<SoftCrypto, 2, 4>>()    = {small}");
    println!(
        "size_of::<IkeConfig>()                = {}",
        core::mem::size_of::<IkeConfig>()
    );
    println!(
        "size_of::<IkeEvent>()                 = {}",
        core::mem::size_of::<IkeEvent>()
    );
    println!(
        "size_of::<ChildSa>()                  = {}",
        core::mem::size_of::<ChildSa>()
    );
    // Per IKE SA and per child, by difference.
    let per_sa = (core::mem::size_of::<Ike<SoftCrypto, 3, 4>>() - small) as f64;
    let per_child = (core::mem::size_of::<Ike<SoftCrypto, 2, 5>>() - small) as f64;
    println!("per IKE SA (with 2 Quick Mode slots)  = {per_sa}");
    println!("per child SA record                   = {per_child}");
    assert!(big < 300_000, "{big}");
    assert!(small < 60_000, "{small}");
}
