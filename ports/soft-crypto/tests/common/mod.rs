//! Shared helpers for the vector tests: loading the JSON copies in `tests/data/`.
//! Not every test binary uses every helper.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// Parses `tests/data/<name>`.
pub fn load(name: &str) -> Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Decodes the hex string at `v[key]` (an absent or null field is an error).
pub fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {key} in {v}"));
    hex::decode(s).unwrap()
}

/// The string at `v[key]`.
pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {key} in {v}"))
}

/// Iterates over `(file name, record)` for a `{"files": {name: [records]}}` document.
pub fn records<'a>(doc: &'a Value, top: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    doc[top]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(name, recs)| {
            recs.as_array()
                .unwrap()
                .iter()
                .map(move |r| (name.as_str(), r))
        })
}
