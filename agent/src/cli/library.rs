//! `cinta-agent library ...`: create a library, add, label, move, load, export, import and dump cartridges.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cinta_agent::vtl::{Library, LibraryConfig, Location};
use clap::Subcommand;

use super::{human, parse_size, LibArg};

#[derive(Subcommand)]
pub enum LibraryCmd {
    /// Create a library in a new or empty directory.
    Create {
        #[command(flatten)]
        lib: LibArg,
        /// Name shown in listings.
        #[arg(long, default_value = "cinta")]
        name: String,
        #[arg(long, default_value_t = 20)]
        slots: u32,
        #[arg(long, default_value_t = 2)]
        drives: u32,
        /// Import/export ports.
        #[arg(long, default_value_t = 4)]
        ie_ports: u32,
        /// Capacity of each cartridge (e.g. 64M, 100G).
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        capacity: u64,
        /// Early-warning margin before the end of a cartridge (default: 1/32 of capacity, at least 17 MiB).
        #[arg(long, value_parser = parse_size)]
        early_warning: Option<u64>,
    },
    /// Add new cartridges (labelled, scratch) into free slots.
    Add {
        #[command(flatten)]
        lib: LibArg,
        /// Barcodes: 6 upper-case letters or digits each.
        barcodes: Vec<String>,
        /// Add COUNT cartridges named PREFIX + number (e.g. --prefix CT --count 3: CT0001..CT0003).
        #[arg(long, requires = "prefix")]
        count: Option<u32>,
        #[arg(long)]
        prefix: Option<String>,
        /// Slot for a single cartridge.
        #[arg(long)]
        slot: Option<u32>,
        /// Capacity, if not the library's.
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Media class (e.g. LTO9): saves asking for a class use only its cartridges.
        #[arg(long, default_value = "")]
        media_class: String,
    },
    /// Relabel a scratch or expired cartridge (error cartridges need --force).
    Label {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
        #[arg(long)]
        force: bool,
    },
    /// List drives, slots and ports with cartridges, states and used capacity.
    List {
        #[command(flatten)]
        lib: LibArg,
        #[arg(long)]
        json: bool,
    },
    /// Load a cartridge into a drive.
    Load {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
        #[arg(long)]
        drive: Option<u32>,
    },
    /// Unload a drive: its cartridge goes back to its slot.
    Unload {
        #[command(flatten)]
        lib: LibArg,
        #[arg(long)]
        drive: u32,
    },
    /// Move a cartridge to slot:N, drive:N or ie:N.
    Move {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
        #[arg(long)]
        to: Location,
    },
    /// Move a cartridge to an import/export port (to take it out, e.g. to the vault).
    Export {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
    },
    /// Move cartridges from the import/export ports into free slots.
    Import {
        #[command(flatten)]
        lib: LibArg,
        barcode: Option<String>,
    },
    /// Put a cartridge image from outside into a free import/export port.
    Insert {
        #[command(flatten)]
        lib: LibArg,
        file: PathBuf,
        /// Expected barcode: refused if the VOL1 label says otherwise.
        #[arg(long)]
        barcode: Option<String>,
        /// Its media class, as when it was added.
        #[arg(long, default_value = "")]
        media_class: String,
    },
    /// Take a cartridge out of an import/export port into a file.
    Remove {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
        #[arg(long)]
        to: PathBuf,
    },
    /// Mark an active or full cartridge expired.
    Expire {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
    },
    /// Take a cartridge out of error state after a repair (its image must
    /// open and its labels read; its data is kept): scratch, active or full.
    Clear {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
    },
    /// Show a cartridge's labels, tape files and block counts.
    Dump {
        #[command(flatten)]
        lib: LibArg,
        barcode: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LibraryCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LibraryCmd::Create {
            lib,
            name,
            slots,
            drives,
            ie_ports,
            capacity,
            early_warning,
        } => {
            let early_warning =
                early_warning.unwrap_or((capacity / 32).max(17 << 20).min(capacity / 2));
            let cfg = LibraryConfig {
                format: cinta_agent::vtl::state::FORMAT,
                name,
                slots,
                drives,
                ie_ports,
                capacity,
                early_warning,
            };
            Library::create(&lib.library, cfg)?;
            println!(
                "created library {}: {slots} slots, {drives} drives, {ie_ports} import/export ports, cartridges of {} (early warning {} before the end)",
                lib.library.display(),
                human(capacity),
                human(early_warning)
            );
        }
        LibraryCmd::Add {
            lib,
            barcodes,
            count,
            prefix,
            slot,
            capacity,
            media_class,
        } => {
            let l = Library::open(&lib.library)?;
            let mut all = barcodes;
            if let (Some(n), Some(p)) = (count, prefix) {
                let width = 6usize.saturating_sub(p.len());
                all.extend((1..=n).map(|i| format!("{p}{i:0width$}")));
            }
            anyhow::ensure!(!all.is_empty(), "give barcodes, or --prefix and --count");
            anyhow::ensure!(
                slot.is_none() || all.len() == 1,
                "--slot takes a single barcode"
            );
            for b in all {
                let r = l.add(&b, slot, capacity, &media_class)?;
                println!(
                    "added {} in {} (scratch, {})",
                    r.barcode,
                    r.location,
                    human(r.capacity)
                );
            }
        }
        LibraryCmd::Label {
            lib,
            barcode,
            force,
        } => {
            Library::open(&lib.library)?.label(&barcode, force)?;
            println!("labelled {barcode}: scratch");
        }
        LibraryCmd::List { lib, json } => list(&Library::open(&lib.library)?, json)?,
        LibraryCmd::Load {
            lib,
            barcode,
            drive,
        } => {
            let d = Library::open(&lib.library)?.load(&barcode, drive)?;
            println!("loaded {barcode} into drive {d}");
        }
        LibraryCmd::Unload { lib, drive } => {
            let l = Library::open(&lib.library)?;
            let b = l.unload(drive)?;
            println!(
                "unloaded {b} from drive {drive} to {}",
                l.record(&b)?.location
            );
        }
        LibraryCmd::Move { lib, barcode, to } => {
            Library::open(&lib.library)?.move_to(&barcode, to)?;
            println!("moved {barcode} to {to}");
        }
        LibraryCmd::Export { lib, barcode } => {
            let p = Library::open(&lib.library)?.export(&barcode)?;
            println!("exported {barcode} to import/export port {p}");
        }
        LibraryCmd::Import { lib, barcode } => {
            for (b, s) in Library::open(&lib.library)?.import(barcode.as_deref())? {
                println!("imported {b} into slot {s}");
            }
        }
        LibraryCmd::Insert {
            lib,
            file,
            barcode,
            media_class,
        } => {
            let r = Library::open(&lib.library)?.insert(
                &file,
                barcode.as_deref(),
                None,
                &media_class,
            )?;
            println!("inserted {} into {} ({})", r.barcode, r.location, r.state);
        }
        LibraryCmd::Remove { lib, barcode, to } => {
            Library::open(&lib.library)?.remove(&barcode, &to)?;
            println!("removed {barcode} to {}", to.display());
        }
        LibraryCmd::Clear { lib, barcode } => {
            let st = Library::open(&lib.library)?.clear_error(&barcode)?;
            println!("{barcode}: error state cleared; it is {st}");
        }
        LibraryCmd::Expire { lib, barcode } => {
            Library::open(&lib.library)?.expire(&barcode)?;
            println!("expired {barcode}");
        }
        LibraryCmd::Dump { lib, barcode, json } => {
            let d = Library::open(&lib.library)?.dump(&barcode)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "cartridge {}: {}, {} of {} used, VOL1 owner {}",
                    d.barcode,
                    d.state,
                    human(d.used),
                    human(d.capacity),
                    if d.vol1_owner.is_empty() {
                        "-"
                    } else {
                        &d.vol1_owner
                    }
                );
                if d.crashed_writer {
                    println!("  the last writer stopped without closing it: {} torn bytes after the last complete record are ignored", d.torn_bytes);
                }
                println!(
                    "  {:>4} {:>3}  {:<17} {:<6} {:<8} {:>10} {:>10} {:>9}  END",
                    "FILE", "SEC", "FILE-ID", "SET", "CREATED", "FIRST", "BLOCKS", "MAXBLOCK"
                );
                for f in &d.files {
                    println!(
                        "  {:>4} {:>3}  {:<17} {:<6} {:<8} {:>10} {:>10} {:>9}  {}",
                        f.sequence,
                        f.section,
                        f.file_id,
                        f.file_set_id,
                        f.created,
                        f.first_block,
                        f.blocks,
                        f.max_block,
                        f.end
                    );
                }
                match d.append_at {
                    Some(b) => println!("  next file goes at block {b}"),
                    None => println!("  full: the last file continues on another volume"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(l: &Library, json: bool) -> anyhow::Result<()> {
    let carts = l.list().context("listing cartridges")?;
    let c = l.config();
    if json {
        let drives: Vec<serde_json::Value> = (0..c.drives)
            .map(|d| serde_json::json!({ "drive": d, "in_use_by": l.drive_holder(d) }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "library": c, "drives": drives, "cartridges": carts })
            )?
        );
        return Ok(());
    }
    println!(
        "library {} ({}): {} slots, {} drives, {} import/export ports",
        l.dir().display(),
        c.name,
        c.slots,
        c.drives,
        c.ie_ports
    );
    println!(
        "{:<10} {:<7} {:<8} {:>10} {:>10}  {:<6} NOTE",
        "PLACE", "BARCODE", "STATE", "USED", "CAPACITY", "CLASS"
    );
    let places = (0..c.drives)
        .map(Location::Drive)
        .chain((1..=c.slots).map(Location::Slot))
        .chain((1..=c.ie_ports).map(Location::Ie));
    for p in places {
        let name = match p {
            Location::Drive(n) => format!("drive {n}"),
            Location::Slot(n) => format!("slot {n}"),
            Location::Ie(n) => format!("ie {n}"),
        };
        let busy = match p {
            Location::Drive(d) => l.drive_holder(d).map(|h| format!("in use by {h}")),
            _ => None,
        };
        match carts.iter().find(|v| v.record.location == p) {
            Some(v) => println!(
                "{:<10} {:<7} {:<8} {:>10} {:>10}  {:<6} {}",
                name,
                v.record.barcode,
                v.record.state.to_string(),
                human(v.used),
                human(v.record.capacity),
                if v.record.media_class.is_empty() {
                    "-"
                } else {
                    &v.record.media_class
                },
                [busy, v.record.note.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            None => println!(
                "{:<10} {:<7} {:<8} {:>10} {:>10}  {:<6} {}",
                name,
                "-",
                "",
                "",
                "",
                "",
                busy.unwrap_or_default()
            ),
        }
    }
    Ok(())
}
