//! Command-line definitions (clap derive) and dispatch.

mod esp;

use clap::{Parser, Subcommand};

/// An embeddable IPsec stack: command-line tool.
#[derive(Parser, Debug)]
#[command(name = "ipsec", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// ESP with manually keyed SAs: seal or open one packet.
    #[command(subcommand)]
    Esp(esp::EspCommand),
}

/// Runs a parsed command line; the error is the one-line reason printed on stderr.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Esp(cmd) => esp::run(cmd),
    }
}
