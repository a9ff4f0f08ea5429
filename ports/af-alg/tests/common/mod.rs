//! Shared helpers: test data from the sibling crates, the AF_ALG gate, a seeded PRNG.
#![allow(dead_code)]

use serde_json::Value;

/// Parses `<workspace>/<rel>` (e.g. `ipsec-core/tests/data/x.json`).
pub fn data(rel: &str) -> Value {
    let p = format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A field as text: the files hold most values as strings, a few as numbers or null.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A hex field.
pub fn h(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).unwrap()
}

/// Whether the AF_ALG tests can run. Without AF_ALG in the kernel they pass vacuously,
/// with a notice, unless `IPSEC_AF_ALG_REQUIRE=1` (set by the VM runner) makes that a
/// failure.
pub fn af_alg_or_skip(test: &str) -> bool {
    if ipsec_af_alg::af_alg_available() {
        return true;
    }
    let required = std::env::var("IPSEC_AF_ALG_REQUIRE").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: AF_ALG required but unavailable");
    println!(
        "NOTICE {test}: this kernel has no AF_ALG (socket(AF_ALG) fails: \
         CONFIG_CRYPTO_USER_API_* not set); passing vacuously. \
         Run ports/af-alg/vm/run-tests.sh for a kernel that has it."
    );
    false
}

/// xorshift64*: deterministic "random" inputs, reproducible from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
