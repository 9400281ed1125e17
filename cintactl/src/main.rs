//! `cintactl`: cinta operator console.
//!
//! This release ships the binary and its version only; its services arrive
//! with their issues (see ARCHITECTURE.md). It accepts `--help` and
//! `--version` and refuses anything else with a clear message.

use clap::Parser;

/// cinta operator console.
///
/// Not yet functional in this release: only --help and --version.
#[derive(Parser)]
#[command(name = "cintactl", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "cintactl {}: no service in this release yet; see ARCHITECTURE.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
