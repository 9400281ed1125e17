//! `cinta-agent tape ...`: write a stream as a tape file, read one back, run the conformance suite.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use cinta_agent::tape::conformance::{self, Backend};
use cinta_agent::tape::label::LabelDate;
use cinta_agent::tape::volume::{FileReader, FileSpec, FileWriter, Target};
use cinta_agent::vtl::{CartState, Library, Location};
use clap::Subcommand;

use super::{human, parse_size, LibArg};

#[derive(Subcommand)]
pub enum TapeCmd {
    /// Write a file (or standard input) as one tape file, spanning cartridges as needed.
    Write {
        #[command(flatten)]
        lib: LibArg,
        /// Tape file identifier for the labels (up to 17 characters: A-Z 0-9 . - _ ...).
        #[arg(long)]
        name: String,
        /// Input file; standard input if absent or "-".
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long, default_value = "256K", value_parser = parse_size)]
        block_size: u64,
        /// Append after the last file of the most recently written active cartridge
        /// (default: start on a scratch cartridge).
        #[arg(long)]
        append: bool,
        #[arg(long)]
        json: bool,
    },
    /// Read a tape file back (following it across cartridges).
    Read {
        #[command(flatten)]
        lib: LibArg,
        /// Cartridge the file starts on.
        #[arg(long)]
        volume: String,
        /// File sequence number, as `library dump` shows it.
        #[arg(long)]
        file: u16,
        /// Output file (written whole, then renamed into place); standard output if absent or "-".
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Run the btape-style conformance suite on a back-end.
    Conformance {
        /// A real drive through the st driver (e.g. /dev/nst0). ITS TAPE IS OVERWRITTEN.
        #[arg(long, requires = "erase", conflicts_with_all = ["virtual_dir", "memory"])]
        device: Option<PathBuf>,
        /// Confirms the tape in --device may be overwritten.
        #[arg(long)]
        erase: bool,
        /// Virtual cartridges in this (scratch) directory.
        #[arg(long = "virtual", value_name = "DIR")]
        virtual_dir: Option<PathBuf>,
        /// In-memory tapes.
        #[arg(long)]
        memory: bool,
    },
}

fn today() -> LabelDate {
    LabelDate::from_unix(cinta_agent::vtl::state::now())
}

pub fn run(cmd: TapeCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TapeCmd::Write {
            lib,
            name,
            input,
            block_size,
            append,
            json,
        } => {
            let l = Library::open(&lib.library)?;
            anyhow::ensure!(
                (1..=cinta_agent::tape::MAX_BLOCK as u64).contains(&block_size),
                "--block-size must be 1 byte to 8 MiB"
            );
            let target = if append {
                let latest = l
                    .list()?
                    .into_iter()
                    .filter(|v| {
                        v.record.state == CartState::Active
                            && !matches!(v.record.location, Location::Ie(_))
                    })
                    .max_by_key(|v| v.record.last_written);
                match latest {
                    Some(v) => Target::Append(v.record.barcode),
                    None => Target::Scratch,
                }
            } else {
                Target::Scratch
            };
            let mut src: Box<dyn std::io::Read> = match input.as_deref() {
                None => Box::new(std::io::stdin().lock()),
                Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
                Some(p) => Box::new(
                    std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
                ),
            };
            let mut session = l.session()?;
            let spec = FileSpec {
                file_id: name.to_ascii_uppercase(),
                created: Some(today()),
                expires: None,
                max_block: block_size as u32,
                copy: 0,
            };
            let start = Instant::now();
            let mut w = FileWriter::begin(&mut session, target, spec)?;
            let mut buf = vec![0u8; block_size as usize];
            let mut total = 0u64;
            loop {
                let n = cinta_agent::io::fill(&mut *src, &mut buf).context("reading the input")?;
                if n == 0 {
                    break;
                }
                w.write_block(&buf[..n])?;
                total += n as u64;
            }
            let summary = w.finish()?;
            let secs = start.elapsed().as_secs_f64();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "file": summary, "bytes": total, "seconds": secs })
                    )?
                );
            } else {
                println!(
                    "wrote tape file {} ({}) of {} in {:.2}s ({:.0} MB/s):",
                    summary.sequence,
                    summary.file_id,
                    human(total),
                    secs,
                    total as f64 / secs.max(1e-9) / 1e6
                );
                for s in &summary.sections {
                    println!(
                        "  cartridge {} section {}: {} blocks from block {}",
                        s.volser, s.section, s.blocks, s.first_block
                    );
                }
            }
        }
        TapeCmd::Read {
            lib,
            volume,
            file,
            output,
        } => {
            let l = Library::open(&lib.library)?;
            let mut session = l.session()?;
            let mut r = FileReader::open(&mut session, &volume, file)?;
            let to_stdout = output.as_deref().is_none_or(|p| p.as_os_str() == "-");
            let partial = output.as_ref().map(|p| {
                let mut s = p.as_os_str().to_owned();
                s.push(".partial");
                PathBuf::from(s)
            });
            let mut out: Box<dyn std::io::Write> = if to_stdout {
                Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                let p = partial.as_ref().unwrap();
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ))
            };
            let mut buf = Vec::new();
            let mut total = 0u64;
            let result = (|| -> anyhow::Result<()> {
                while r.read_block(&mut buf)? {
                    out.write_all(&buf)?;
                    total += buf.len() as u64;
                }
                out.flush()?;
                Ok(())
            })();
            drop(out);
            if let Err(e) = result {
                if let Some(p) = &partial {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
            if let (Some(p), Some(final_path)) = (&partial, &output) {
                if !to_stdout {
                    std::fs::File::open(p)?.sync_all()?;
                    std::fs::rename(p, final_path)?;
                }
            }
            let vols: Vec<String> = r.sections().into_iter().map(|s| s.volser).collect();
            eprintln!(
                "read tape file {file}: {} from {}",
                human(total),
                vols.join(", ")
            );
        }
        TapeCmd::Conformance {
            device,
            erase: _,
            virtual_dir,
            memory,
        } => {
            let mut backend: Box<dyn Backend> = match (device, virtual_dir, memory) {
                (Some(d), _, _) => Box::new(conformance::StBackend::new(&d)),
                (None, Some(dir), _) => {
                    std::fs::create_dir_all(&dir)?;
                    Box::new(conformance::VcartBackend::new(&dir))
                }
                (None, None, true) => Box::new(conformance::MemBackend::default()),
                _ => anyhow::bail!("give --device DEV --erase, --virtual DIR or --memory"),
            };
            let mut failed = 0;
            for r in conformance::run_all(&mut *backend) {
                let status = match &r.outcome {
                    Ok(true) => "PASS".to_string(),
                    Ok(false) => "SKIP (not possible on this back-end)".to_string(),
                    Err(e) => {
                        failed += 1;
                        format!("FAIL: {e}")
                    }
                };
                println!("{:<64} {status}", r.name);
            }
            if failed > 0 {
                println!("{failed} case(s) failed");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
