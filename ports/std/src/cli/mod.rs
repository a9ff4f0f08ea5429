//! Command-line definitions (clap derive) and dispatch.

mod esp;
mod ike;
mod pcap;
mod show;
mod up;

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
    /// IKEv1: negotiate and use one connection over real sockets (interop driver).
    #[command(subcommand)]
    Ike(IkeCommand),
    /// Captures: decrypt the ESP packets of a pcap/pcapng file with an SA table.
    #[command(subcommand)]
    Pcap(pcap::PcapCommand),
    /// Run the VPN daemon (IKE + ESP over a TUN device) from a configuration file.
    Up(up::UpArgs),
    /// Ask the running daemon: isakmp-sa, ipsec-sa, interfaces, ha.
    Show(show::ShowArgs),
}

#[derive(Subcommand, Debug)]
enum IkeCommand {
    /// Main/Aggressive Mode + Quick Mode with one peer, optional pings through the SA,
    /// optional DELETE; exits 0 when everything asked for worked.
    Connect(ike::ConnectArgs),
}

/// Runs a parsed command line; the error is the one-line reason printed on stderr.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Esp(cmd) => esp::run(cmd),
        Command::Ike(IkeCommand::Connect(a)) => ike::connect(a),
        Command::Pcap(cmd) => pcap::run(cmd),
        Command::Up(a) => up::run(a),
        Command::Show(a) => show::run(a),
    }
}
