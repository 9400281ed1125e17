//! Command-line commands of `cinta-agent`: argument types and dispatch.

mod bench;
mod library;
mod saveset;
mod tape;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cinta-agent",
    version,
    about = "cinta agent: encrypted save sets on a virtual tape library or tape drives"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage a virtual tape library (slots, drives, cartridges).
    #[command(subcommand)]
    Library(library::LibraryCmd),
    /// Write and read tape files; run the tape conformance suite.
    #[command(subcommand)]
    Tape(tape::TapeCmd),
    /// Key-file key source.
    #[command(subcommand)]
    Key(saveset::KeyCmd),
    #[command(flatten)]
    Saveset(saveset::Cmd),
    /// Benchmarks (not tests): cinta beside what a user would use instead.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run a command as its own process group, killed whole when the agent
    /// `--parent PID` goes away (how the agent runs exit steps and library saves).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        parent: i32,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Keep a session with the controller and run the jobs it assigns.
    Serve {
        /// Agent configuration (name, controller, certificates, libraries, key source).
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Library(c) => library::run(c),
        Command::Tape(c) => tape::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Key(c) => saveset::key(c),
        Command::Saveset(c) => saveset::run(c),
        Command::Supervise { parent, command } => {
            let code = cinta_agent::supervise::run(parent, &command[0], &command[1..])?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        Command::Serve { config } => {
            let cfg = cinta_agent::daemon::AgentConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = cinta_agent::daemon::run(cfg) => r.map_err(anyhow::Error::from),
                    _ = term.recv() => Ok(()),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A byte size given as `123`, `64K`, `256M`, `4G`, `1T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mult = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 256K, 64M or 4G"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Bytes for people: 1.5 GiB.
pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The library directory argument.
#[derive(clap::Args)]
pub struct LibArg {
    /// Library directory.
    #[arg(value_name = "LIBRARY")]
    pub library: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("4Q").is_err());
        assert!(parse_size("x").is_err());
    }
}
