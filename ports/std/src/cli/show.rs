//! `ipsec show ...`: asks the running daemon over its control socket.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ipsec_std::config::{Config, DEFAULT_CONTROL_SOCKET};
use ipsec_std::daemon::control;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Topic {
    /// `show crypto isakmp sa detail`.
    IsakmpSa,
    /// `show crypto ipsec sa` (with counters).
    IpsecSa,
    /// The TUN, the outside interface, routes and tunnels.
    Interfaces,
    /// Redundancy (HA) state.
    Ha,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// What to show.
    #[arg(value_enum)]
    topic: Topic,
    /// The daemon's control socket.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Take the control socket from this configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ShowArgs) -> Result<(), String> {
    let path = match (&a.control, &a.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => Config::load(c).map_err(|e| e.to_string())?.control_socket,
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    let topic = match a.topic {
        Topic::IsakmpSa => "isakmp-sa",
        Topic::IpsecSa => "ipsec-sa",
        Topic::Interfaces => "interfaces",
        Topic::Ha => "ha",
    };
    let v = control::request(&path, topic)?;
    if a.json {
        let data = v.get("data").cloned().unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&data).map_err(|e| e.to_string())?
        );
    } else {
        print!(
            "{}",
            v.get("text")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
        );
    }
    Ok(())
}
