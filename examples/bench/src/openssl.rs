//! `openssl speed` on the same machine, in the same run, for reference.
//!
//! Each call is `openssl speed -seconds 1 -bytes N ...` for the exact payload size, so the
//! comparison needs no interpolation. `openssl speed` divides by user CPU time, as this
//! bench does. Its figures are cipher-only (`-evp`), HMAC-only (`-hmac`), or a full AEAD
//! record with nonce, AAD and tag per buffer (`-aead`, the closest to one ESP packet).

use std::collections::HashMap;
use std::process::Command;

/// A cache of `openssl speed` results in MB/s, keyed by arguments and size.
pub struct OpenSsl {
    version: Option<String>,
    cache: HashMap<(String, usize), Option<f64>>,
}

impl OpenSsl {
    /// Finds `openssl` on the PATH (unless `disabled`).
    pub fn find(disabled: bool) -> Self {
        let version = if disabled {
            None
        } else {
            Command::new("openssl")
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        Self {
            version,
            cache: HashMap::new(),
        }
    }

    /// `openssl version`, or why there are no openssl figures.
    pub fn describe(&self) -> String {
        self.version
            .clone()
            .unwrap_or_else(|| "openssl not found (or --no-openssl)".into())
    }

    /// MB/s of `openssl speed <args> -bytes <size>`, e.g. `["-evp", "aes-128-gcm"]`.
    pub fn speed(&mut self, args: &[&str], size: usize) -> Option<f64> {
        self.version.as_ref()?;
        let key = (args.join(" "), size);
        if let Some(v) = self.cache.get(&key) {
            return *v;
        }
        let out = Command::new("openssl")
            .arg("speed")
            .args(["-seconds", "1", "-bytes", &size.to_string()])
            .args(args)
            .output()
            .ok();
        let v = out.and_then(|o| parse(&String::from_utf8_lossy(&o.stdout)));
        self.cache.insert(key, v);
        v
    }
}

/// The last figure of the result table ("AES-128-GCM  1156101.04k": 1000s of bytes per
/// second), in MB/s.
fn parse(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.trim_end().ends_with('k'))?;
    let v = line.split_whitespace().last()?.trim_end_matches('k');
    v.parse::<f64>().ok().map(|kb| kb / 1000.0)
}

/// Formats an optional MB/s figure.
pub fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_table() {
        let out = "The 'numbers' are in 1000s of bytes per second processed.\n\
                   type           1400 bytes\nAES-128-GCM    1156101.04k\n";
        assert_eq!(super::parse(out), Some(1156.10104));
        assert_eq!(super::parse("hmac(sha1)      157635.50k"), Some(157.6355));
        assert_eq!(super::parse("nothing"), None);
    }
}
