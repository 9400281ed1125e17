//! `cinta-controller`: cinta controller: coordinates agents, keeps the catalog, runs the nightly close.
//!
//! This release ships the binary and its version only; its services arrive
//! with their issues (see ARCHITECTURE.md). It accepts `--help` and
//! `--version` and refuses anything else with a clear message.

use clap::Parser;

/// cinta controller: coordinates agents, keeps the catalog, runs the nightly close.
///
/// Not yet functional in this release: only --help and --version.
#[derive(Parser)]
#[command(name = "cinta-controller", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "cinta-controller {}: no service in this release yet; see ARCHITECTURE.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
