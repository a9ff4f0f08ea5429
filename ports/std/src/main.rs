//! `ipsec`: the command-line tool of the std host port.
//!
//! Today it seals and opens single ESP packets with manually keyed SAs (`ipsec esp seal`,
//! `ipsec esp open`), the way `setkey` + a packet generator would, which makes it a
//! debugging aid and a reproducible way to check packets against other implementations.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ipsec: {msg}");
            ExitCode::FAILURE
        }
    }
}
