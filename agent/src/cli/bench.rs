//! `cinta-agent bench tape`: a virtual cartridge written and read beside `dd` on the same disk; `bench copy`: a save set's tape file duplicated onto another cartridge beside `dd` of the cartridge image; with ratios.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context;
use cinta_agent::tape::vcart::Cartridge;
use cinta_agent::tape::{Read, TapeDevice};
use clap::Subcommand;

use super::parse_size;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Write then read back SIZE in BLOCK-SIZE blocks on a virtual cartridge, and the same with dd.
    Tape(Sizes),
    /// Copy a tape file of SIZE in BLOCK-SIZE blocks to a cartridge of
    /// another media class (`cinta-agent copy`), and dd the same cartridge
    /// image to a file.
    Copy(Sizes),
}

/// Where and how much a tape benchmark moves.
#[derive(clap::Args)]
pub struct Sizes {
    /// Scratch directory on the disk to measure (what is made there is removed afterwards).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    size: u64,
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    block_size: u64,
    /// Rounds; the best of each is kept.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
}

/// Drops a file's pages from the page cache so reads come from the disk.
fn evict(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    f.sync_all()?;
    nix::fcntl::posix_fadvise(
        f.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    Ok(())
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn dd(args: &[String]) -> anyhow::Result<()> {
    let out = Command::new("dd")
        .args(args)
        .output()
        .context("running dd")?;
    anyhow::ensure!(
        out.status.success(),
        "dd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    let (BenchCmd::Tape(s) | BenchCmd::Copy(s)) = &cmd;
    anyhow::ensure!(
        (1..=cinta_agent::tape::MAX_BLOCK as u64).contains(&s.block_size),
        "--block-size must be 1 byte to 8 MiB"
    );
    let Sizes {
        dir,
        size,
        block_size,
        rounds,
    } = match cmd {
        BenchCmd::Tape(s) => s,
        BenchCmd::Copy(s) => return copy(&s),
    };
    std::fs::create_dir_all(&dir)?;
    let blocks = size / block_size;
    let bytes = blocks * block_size;
    let cart = dir.join("cinta-bench.tap");
    let plain = dir.join("dd-bench.bin");
    let bs = block_size as usize;
    let mut data = vec![0u8; bs];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    println!(
        "writing and reading {} MB in {} KiB blocks in {}",
        bytes / 1_000_000,
        block_size / 1024,
        dir.display()
    );
    let (mut cw, mut cr, mut dw, mut dr) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for round in 1..=rounds {
        for p in [&cart, &plain] {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(cinta_agent::tape::vcart::index_path(&cart));
        // cinta: a virtual cartridge, flushed (fdatasync) at the end.
        let t = timed(|| {
            let mut c = Cartridge::create(&cart, "BENCH1", bytes * 2 + (1 << 30), 1 << 20)?;
            for i in 0..blocks {
                data[..8].copy_from_slice(&i.to_le_bytes());
                c.write_block(&data)?;
            }
            c.unload()?;
            Ok(())
        })?;
        cw = cw.min(t);
        evict(&cart)?;
        let t = timed(|| {
            let mut c = Cartridge::open(&cart, "BENCH1", bytes * 2 + (1 << 30), 1 << 20)?;
            let mut buf = Vec::with_capacity(bs);
            let mut n = 0u64;
            loop {
                match c.read_block(&mut buf) {
                    Ok(Read::Block) => {
                        anyhow::ensure!(buf[..8] == n.to_le_bytes(), "block {n} read back wrong");
                        n += 1;
                    }
                    Ok(Read::Filemark) => {}
                    Err(cinta_agent::Error::EndOfData { .. }) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            anyhow::ensure!(n == blocks, "read {n} of {blocks} blocks");
            Ok(())
        })?;
        cr = cr.min(t);
        // dd: the same block size and count to a plain file, fdatasync at the end.
        let t = timed(|| {
            dd(&[
                "if=/dev/zero".into(),
                format!("of={}", plain.display()),
                format!("bs={block_size}"),
                format!("count={blocks}"),
                "conv=fdatasync".into(),
                "status=none".into(),
            ])
        })?;
        dw = dw.min(t);
        evict(&plain)?;
        let t = timed(|| {
            dd(&[
                format!("if={}", plain.display()),
                "of=/dev/null".into(),
                format!("bs={block_size}"),
                "status=none".into(),
            ])
        })?;
        dr = dr.min(t);
        if rounds > 1 {
            println!("round {round} done");
        }
    }
    for p in [&cart, &plain] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(cinta_agent::tape::vcart::index_path(&cart));
    let mbs = |t: f64| bytes as f64 / t / 1e6;
    println!(
        "{:<8} {:>14} {:>14} {:>8}",
        "", "cinta MB/s", "dd MB/s", "ratio"
    );
    println!(
        "{:<8} {:>14.0} {:>14.0} {:>8.2}",
        "write",
        mbs(cw),
        mbs(dw),
        dw / cw
    );
    println!(
        "{:<8} {:>14.0} {:>14.0} {:>8.2}",
        "read",
        mbs(cr),
        mbs(dr),
        dr / cr
    );
    println!("(ratio = cinta speed / dd speed; goal >= 0.90 both ways)");
    Ok(ExitCode::SUCCESS)
}

/// `bench copy`: one tape file written once on a cartridge of class
/// BENCHA, then per round N copied to a fresh cartridge of class BENCHBN by
/// `cinta_agent::copy` (read, digest checked, written, flushed), and the
/// original's image copied by `dd` with the same block size (flushed).
/// Each starts with both images out of the page cache.
fn copy(s: &Sizes) -> anyhow::Result<ExitCode> {
    let (dir, size, block_size, rounds) = (&s.dir, s.size, s.block_size, s.rounds);
    use cinta_agent::saveset::catalog::{self, Record};
    use cinta_agent::saveset::save::Level;
    use cinta_agent::tape::label::LabelDate;
    use cinta_agent::tape::volume::{FileSpec, FileWriter, Target};
    use cinta_agent::vtl::{Library, LibraryConfig};
    let libdir = dir.join("cinta-bench-library");
    let _ = std::fs::remove_dir_all(&libdir);
    std::fs::create_dir_all(dir)?;
    let blocks = size / block_size;
    let bytes = blocks * block_size;
    let capacity = bytes * 2 + (1 << 30);
    let l = Library::create(
        &libdir,
        LibraryConfig {
            format: 1,
            name: "BENCH".into(),
            slots: rounds + 2,
            drives: 2,
            ie_ports: 1,
            capacity,
            early_warning: 1 << 20,
        },
    )?;
    l.add("BA0001", None, None, "BENCHA")?;
    for i in 1..=rounds {
        // A class per round: each round's copy goes on a fresh cartridge.
        l.add(&format!("BB{i:04}"), None, None, &format!("BENCHB{i}"))?;
    }
    let date = LabelDate::from_unix(0);
    let id = "0123456789abcdef0123456789abcdef".to_string();
    let mut data = vec![0u8; block_size as usize];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    println!(
        "copying a tape file of {} MB in {} KiB blocks in {}",
        bytes / 1_000_000,
        block_size / 1024,
        dir.display()
    );
    let file = {
        let mut session = l.session()?;
        session.set_media_class("BENCHA");
        let mut w = FileWriter::begin(
            &mut session,
            Target::Scratch,
            FileSpec {
                file_id: "SS-BENCH".into(),
                created: Some(date),
                expires: None,
                max_block: block_size as u32,
                copy: 0,
            },
        )?;
        for i in 0..blocks {
            data[..8].copy_from_slice(&i.to_le_bytes());
            w.write_block(&data)?;
        }
        w.finish()?
    };
    catalog::put(
        l.dir(),
        &Record {
            id: id.clone(),
            key_id: "bench".into(),
            source: "bench".into(),
            level: Level::Full,
            since: None,
            started: 0,
            host: "bench".into(),
            volume: file.sections[0].volser.clone(),
            sequence: file.sequence,
            sections: file.sections.clone(),
            objects: 0,
            bytes,
            compression: false,
            digest: file.digest.clone(),
            copies: vec![],
        },
    )?;
    let original = l.image_path("BA0001");
    let plain = dir.join("dd-copy.bin");
    let (mut ct, mut dt) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        evict(&original)?;
        let t = timed(|| {
            let c = cinta_agent::copy::copy(&l, &id, &format!("BENCHB{round}"), date)?;
            anyhow::ensure!(c.verified && c.blocks == blocks, "the copy is not whole");
            Ok(())
        })?;
        ct = ct.min(t);
        // Only one copy is kept per round: the next copies from the original.
        let mut r = catalog::find(l.dir(), &id)?;
        r.copies.clear();
        catalog::put(l.dir(), &r)?;
        let _ = std::fs::remove_file(&plain);
        evict(&original)?;
        let t = timed(|| {
            dd(&[
                format!("if={}", original.display()),
                format!("of={}", plain.display()),
                format!("bs={block_size}"),
                "conv=fdatasync".into(),
                "status=none".into(),
            ])
        })?;
        dt = dt.min(t);
        if rounds > 1 {
            println!("round {round} done");
        }
    }
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_dir_all(&libdir);
    let mbs = |t: f64| bytes as f64 / t / 1e6;
    println!(
        "{:<8} {:>14} {:>14} {:>8}",
        "", "cinta MB/s", "dd MB/s", "ratio"
    );
    println!(
        "{:<8} {:>14.0} {:>14.0} {:>8.2}",
        "copy",
        mbs(ct),
        mbs(dt),
        dt / ct
    );
    println!("(ratio = cinta speed / dd speed; goal >= 0.90)");
    Ok(ExitCode::SUCCESS)
}
