//! `ipsec up --config FILE`: validate the configuration and run the daemon.

use std::path::PathBuf;

use clap::Args;
use ipsec_std::config::Config;
use ipsec_std::daemon::{self, RunOptions};
use tracing_subscriber::filter::{LevelFilter, Targets};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The configuration file (TOML, see ports/std/CONFIG.md).
    #[arg(long, short)]
    config: PathBuf,
    /// Control socket for `ipsec show` (default: the config's `[control] socket`, else
    /// /run/ipsec-rs.sock).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Only validate the configuration, print a summary and exit.
    #[arg(long)]
    check: bool,
    /// Debug output, like IOS `debug crypto isakmp` / `debug crypto ipsec`: a list of
    /// `isakmp`, `ipsec`, `ha` (IOS `debug standby` / `debug crypto ha`), `daemon` or
    /// `all`. Never prints key material.
    #[arg(long, value_delimiter = ',')]
    debug: Vec<String>,
    /// Log filter in tracing's `Targets` syntax (overrides --debug), e.g.
    /// `isakmp=debug,ipsec=trace,info`. Also read from IPSEC_LOG.
    #[arg(long, env = "IPSEC_LOG")]
    log: Option<String>,
}

fn init_logging(a: &UpArgs) -> Result<(), String> {
    let filter: Targets = match &a.log {
        Some(s) => s.parse().map_err(|e| format!("--log {s:?}: {e}"))?,
        None => {
            let mut t = Targets::new().with_default(LevelFilter::INFO);
            for d in &a.debug {
                match d.as_str() {
                    "all" => t = t.with_default(LevelFilter::DEBUG),
                    "isakmp" | "ipsec" | "ha" | "daemon" => {
                        t = t.with_target(d.clone(), LevelFilter::DEBUG)
                    }
                    other => {
                        return Err(format!(
                            "--debug {other:?}: expected isakmp, ipsec, ha, daemon or all"
                        ));
                    }
                }
            }
            t
        }
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init()
        .map_err(|e| e.to_string())
}

pub fn run(a: UpArgs) -> Result<(), String> {
    let cfg = Config::load(&a.config).map_err(|e| format!("configuration error\n{e}"))?;
    if a.check {
        println!(
            "{}: configuration OK: {} isakmp policies, {} keys, {} crypto map entries, {} tunnels",
            a.config.display(),
            cfg.ike.policies.len(),
            cfg.ike.keys.len(),
            // Protected tunnels have crypto map entries of their own: count them apart.
            cfg.ike.crypto_maps.len().saturating_sub(cfg.tunnels.len()),
            cfg.tunnels.len()
        );
        return Ok(());
    }
    init_logging(&a)?;
    daemon::run(cfg, &RunOptions { control: a.control })
}
