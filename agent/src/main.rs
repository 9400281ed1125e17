//! `cinta-agent`: the agent's command line. Parses, sets up logging, runs one command.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `cinta-agent ls | head`: a closed pipe ends the program quietly, as it
    // does any Unix tool, instead of a panic on the next print.
    // SAFETY: restores the default disposition of one signal at start-up,
    // before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cinta-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
