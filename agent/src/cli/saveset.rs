//! `cinta-agent key|save|restore|verify|ls|scan`: encrypted save sets on a virtual tape library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use cinta_agent::jobs;
use cinta_agent::keys::{FileKeySource, KeySource};
use cinta_agent::kmip_keys::KmipKeySource;
use cinta_agent::saveset::catalog::{self, Place, Record};
use cinta_agent::saveset::dest::{Existing, Restore, Verify};
use cinta_agent::saveset::read::{RunReport, SaveSet, Sink};
use cinta_agent::saveset::save::{self, Level, OnChange, Progress, SaveOptions, Source};
use cinta_agent::saveset::walk::Filter;
use cinta_agent::tape::label::LabelDate;
use cinta_agent::tape::volume::{self, Target};
use cinta_agent::vtl::{state, CartState, Library};
use clap::{Args, Subcommand};

use super::{human, parse_size, LibArg};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a local master key file (mode 0600) for the key-file key source.
    Init {
        #[arg(long)]
        file: PathBuf,
    },
}

/// Where data keys come from: a local key file, or the key manager over KMIP.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct KeyArg {
    /// Master key file of the key-file key source (see `key init`).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// KMIP key source: a TOML file naming the key manager (server, cert, key, ca).
    #[arg(long, value_name = "FILE")]
    pub kmip: Option<PathBuf>,
}

impl KeyArg {
    pub fn open(&self) -> anyhow::Result<Box<dyn KeySource>> {
        open_keys(self.key_file.as_deref(), self.kmip.as_deref())
    }
}

/// The key source the flags name.
fn open_keys(
    key_file: Option<&std::path::Path>,
    kmip: Option<&std::path::Path>,
) -> anyhow::Result<Box<dyn KeySource>> {
    Ok(match (key_file, kmip) {
        (Some(f), None) => Box::new(FileKeySource::open(f)?),
        (None, Some(k)) => Box::new(KmipKeySource::open(k)?),
        _ => anyhow::bail!("give one key source: --key-file FILE or --kmip FILE"),
    })
}

#[derive(Args)]
pub struct SaveArgs {
    #[command(flatten)]
    lib: LibArg,
    #[command(flatten)]
    key: KeyArg,
    /// Directory tree or file to save.
    #[arg(long, conflicts_with = "stdin", required_unless_present = "stdin")]
    source: Option<PathBuf>,
    /// Save standard input as one object with this name (e.g. a *SAVF).
    #[arg(long, value_name = "NAME")]
    stdin: Option<String>,
    /// Only files matching (globs; `*`, `?`, `**`). Directories are always walked.
    #[arg(long)]
    include: Vec<String>,
    /// Leave out what matches (a directory with everything below it).
    #[arg(long)]
    exclude: Vec<String>,
    /// full, incr (changed since the last save) or cuml (changed since the last full save).
    #[arg(long, default_value = "full", value_parser = parse_level)]
    level: Level,
    /// Compress segments with zstd before encryption.
    #[arg(long)]
    compress: bool,
    /// An object changing while read: retry[:N], warn, or fail.
    #[arg(long, default_value = "retry:2", value_parser = parse_on_change)]
    on_change: OnChange,
    /// Stream bytes per tape block.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    segment_size: u64,
    /// Append after the last file of the most recently written active cartridge.
    #[arg(long)]
    append: bool,
    /// Write only on cartridges of this media class (e.g. LTO9), from the media
    /// policy; without it, only on cartridges that have no class.
    #[arg(long, default_value = "")]
    media_class: String,
    #[arg(long)]
    json: bool,
    /// Progress as JSON lines on standard error, every second:
    /// {"progress":{"bytes":..,"objects":..,"total":..}}.
    #[arg(long)]
    progress_json: bool,
    /// For `cinta-agent serve`: progress, the save set made, then its
    /// objects read back from tape, as the wire lines of `cinta_agent::wire`
    /// on standard output.
    #[arg(long, conflicts_with_all = ["json", "progress_json"], hide = true)]
    wire: bool,
}

/// Which save set: by id (catalog) or by where it starts on tape.
#[derive(Args)]
pub struct Which {
    /// Save set id (at least 6 hex digits), looked up in the catalog.
    #[arg(long, conflicts_with_all = ["volume", "file"], required_unless_present = "volume")]
    save_set: Option<String>,
    /// Cartridge the save set starts on (with --file).
    #[arg(long, requires = "file")]
    volume: Option<String>,
    /// Tape file sequence number on that cartridge.
    #[arg(long)]
    file: Option<u16>,
    /// Read only this copy of the save set (0 the original); without it a
    /// restore reads the copy whose cartridges are in the library, the
    /// original first, and reads what it cannot from the next copy.
    #[arg(long, requires = "save_set")]
    copy: Option<u8>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Save a tree, a file or standard input as one encrypted save set.
    Save(SaveArgs),
    /// Restore a save set, or objects of it, into a directory.
    Restore {
        #[command(flatten)]
        lib: LibArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        which: Which,
        /// Destination directory (objects go below it, under their saved paths).
        #[arg(
            long,
            conflicts_with = "original",
            required_unless_present = "original"
        )]
        to: Option<PathBuf>,
        /// Restore to the original place (destination /).
        #[arg(long)]
        original: bool,
        /// Objects to restore (globs over saved paths, or a directory); all if none.
        #[arg(long)]
        select: Vec<String>,
        /// More objects to restore, one name a line (as `ls` prints them).
        #[arg(long, value_name = "FILE")]
        select_from: Option<PathBuf>,
        /// An object that exists in the destination: keep or replace.
        #[arg(long, default_value = "keep", value_parser = parse_existing)]
        existing: Existing,
        #[arg(long)]
        json: bool,
    },
    /// Read every block of a save set, authenticate it and check every digest; writes nothing.
    Verify {
        #[command(flatten)]
        lib: LibArg,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// List save sets (catalog), or the objects of one (its index on tape).
    Ls {
        #[command(flatten)]
        lib: LibArg,
        /// List this save set's objects (needs --key-file or --kmip).
        #[arg(long)]
        save_set: Option<String>,
        /// Only save sets with data on this cartridge.
        #[arg(long, conflicts_with = "save_set")]
        volume: Option<String>,
        #[arg(long, conflicts_with = "kmip")]
        key_file: Option<PathBuf>,
        #[arg(long)]
        kmip: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// With --save-set: one compact JSON object per line, printed as the
        /// index is read (memory stays the same whatever the object count).
        #[arg(long, requires = "save_set")]
        lines: bool,
    },
    /// Expire a save set: drop it from the catalog; with --shred also destroy
    /// its key on the key manager, so no copy of it (vaulted tapes included)
    /// can ever be read again.
    Expire {
        #[command(flatten)]
        lib: LibArg,
        /// Save set id (or a unique prefix).
        #[arg(long)]
        save_set: String,
        /// Destroy the save set's key (crypto-shredding; needs --kmip).
        #[arg(long, requires = "kmip")]
        shred: bool,
        #[arg(long)]
        kmip: Option<PathBuf>,
    },
    /// Duplicate a save set's tape file onto cartridges of another media
    /// class, block for block (no key needed), checked against the digest
    /// recorded when it was written (BRMS DUPMEDBRM).
    Copy {
        #[command(flatten)]
        lib: LibArg,
        /// Save set id (or a unique prefix).
        #[arg(long)]
        save_set: String,
        /// Media class of the cartridges the copy goes on.
        #[arg(long)]
        media_class: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the catalog from the cartridges: every save set and its objects.
    Scan {
        #[command(flatten)]
        lib: LibArg,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long)]
        json: bool,
    },
}

fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "full" => Ok(Level::Full),
        "incr" | "incremental" => Ok(Level::Incremental),
        "cuml" | "cumulative" => Ok(Level::Cumulative),
        _ => Err(format!("{s:?}: full, incr or cuml")),
    }
}

fn parse_on_change(s: &str) -> Result<OnChange, String> {
    match s.split_once(':') {
        None if s == "warn" => Ok(OnChange::Warn),
        None if s == "fail" => Ok(OnChange::Fail),
        None if s == "retry" => Ok(OnChange::Retry(2)),
        Some(("retry", n)) => n
            .parse()
            .map(OnChange::Retry)
            .map_err(|_| format!("{s:?}: retry:N")),
        _ => Err(format!("{s:?}: retry[:N], warn or fail")),
    }
}

fn parse_existing(s: &str) -> Result<Existing, String> {
    match s {
        "keep" => Ok(Existing::Keep),
        "replace" => Ok(Existing::Replace),
        _ => Err(format!("{s:?}: keep or replace")),
    }
}

pub fn key(cmd: KeyCmd) -> anyhow::Result<ExitCode> {
    let KeyCmd::Init { file } = cmd;
    let k = FileKeySource::init(&file)?;
    println!(
        "created key file {} (fingerprint {}); keep a copy apart from the tapes",
        file.display(),
        k.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

/// How progress is shown while a save, restore or verify runs.
#[derive(Clone, Copy, PartialEq)]
enum Show {
    Nothing,
    /// A rewritten line on a terminal, a line every 10 s otherwise.
    Human,
    /// A JSON line every second, for a program.
    Json,
    /// A wire line (`progress`) on standard output every second, for the daemon.
    Wire,
}

/// Prints progress on standard error while `f` runs.
fn with_progress<T>(show: Show, p: &Progress, f: impl FnOnce() -> T) -> T {
    if show == Show::Nothing {
        return f();
    }
    let tty = show == Show::Human && std::io::stderr().is_terminal();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let every = if tty || show != Show::Human {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(10)
                };
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let b = p.bytes.load(Ordering::Relaxed);
                if show == Show::Wire {
                    let l = cinta_agent::wire::Line::Progress {
                        bytes: b,
                        objects: p.objects.load(Ordering::Relaxed),
                        total: p.total.load(Ordering::Relaxed),
                    };
                    println!("{}", l.encode());
                    continue;
                }
                if show == Show::Json {
                    eprintln!(
                        "{{\"progress\":{{\"bytes\":{b},\"objects\":{},\"total\":{}}}}}",
                        p.objects.load(Ordering::Relaxed),
                        p.total.load(Ordering::Relaxed)
                    );
                    continue;
                }
                let rate = b as f64 / start.elapsed().as_secs_f64().max(1e-3);
                let total = p.total.load(Ordering::Relaxed);
                let eta = if total > b && rate > 0.0 {
                    let left = ((total - b) as f64 / rate) as u64;
                    format!(
                        ", {:.0}%, ETA {}:{:02}",
                        b as f64 * 100.0 / total as f64,
                        left / 60,
                        left % 60
                    )
                } else {
                    String::new()
                };
                let line = format!(
                    "{} objects, {}, {}/s{eta}",
                    p.objects.load(Ordering::Relaxed),
                    human(b),
                    human(rate as u64)
                );
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
            if tty {
                eprintln!();
            }
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        r
    })
}

fn now() -> i64 {
    state::now() as i64
}

pub fn save_cmd(a: SaveArgs) -> anyhow::Result<ExitCode> {
    let l = Library::open(&a.lib.library)?;
    let mut keys = a.key.open()?;
    let source = match (a.source, a.stdin) {
        (Some(root), _) => Source::Tree {
            root: std::fs::canonicalize(&root)
                .map_err(|e| anyhow::anyhow!("source {}: {e}", root.display()))?,
            filter: Filter {
                include: a.include,
                exclude: a.exclude,
            },
        },
        (None, Some(name)) => Source::Stdin { name },
        (None, None) => anyhow::bail!("give --source PATH or --stdin NAME"),
    };
    anyhow::ensure!(
        a.segment_size >= 4096 && a.segment_size <= u64::from(cinta_agent::stream::MAX_PAYLOAD),
        "--segment-size must be 4 KiB to 8 MiB"
    );
    let reference = catalog::reference(l.dir(), &source.describe(), a.level)?;
    let started = now();
    let opts = SaveOptions {
        source,
        level: a.level,
        since: reference.as_ref().map(|r| r.1),
        compression: a.compress,
        on_change: a.on_change,
        payload: a.segment_size as u32,
        date: LabelDate::from_unix(started as u64),
        started,
    };
    cinta_agent::vtl::check_media_class(&a.media_class).map_err(anyhow::Error::msg)?;
    let target = if a.append {
        latest_active(&l, &a.media_class)?
    } else {
        Target::Scratch
    };
    let progress = Progress::default();
    let t = Instant::now();
    let show = match (a.wire, a.progress_json, a.json) {
        (true, _, _) => Show::Wire,
        (_, true, _) => Show::Json,
        (_, false, true) => Show::Nothing,
        _ => Show::Human,
    };
    let report = with_progress(show, &progress, || {
        std::thread::scope(|s| {
            if show != Show::Nothing {
                s.spawn(|| {
                    progress
                        .total
                        .store(save::estimate(&opts.source, opts.since), Ordering::Relaxed)
                });
            }
            jobs::save_and_record(&l, &mut *keys, &opts, target, &a.media_class, &progress)
        })
    })?;
    let secs = t.elapsed().as_secs_f64();
    if a.wire {
        // The save set stands once recorded; its objects follow, read back
        // from tape with the same key source (no second key request).
        use cinta_agent::wire::Line;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", Line::Saved(jobs::saved(&report)).encode())?;
        out.flush()?;
        let n = jobs::objects(&l, &mut *keys, &report.save_set, |o| {
            writeln!(out, "{}", Line::Object(o).encode())
                .map_err(|e| cinta_agent::Error::io("standard output", e))
        })?;
        writeln!(out, "{}", Line::Indexed { objects: n }.encode())?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "report": report, "seconds": secs })
            )?
        );
    } else {
        println!(
            "saved {} objects, {} in {:.1}s ({:.0} MB/s) as save set {} (key {})",
            report.objects,
            human(report.bytes),
            secs,
            report.read_bytes as f64 / secs.max(1e-9) / 1e6,
            report.save_set,
            report.key_id
        );
        for s in &report.file.sections {
            println!(
                "  cartridge {} tape file {} section {}: {} blocks",
                s.volser, report.file.sequence, s.section, s.blocks
            );
        }
        for w in &report.warnings {
            println!("  warning: {w}");
        }
        if let Some((id, _)) = reference {
            println!(
                "  {} save: changes since save set {id}",
                if opts.level == Level::Incremental {
                    "incremental"
                } else {
                    "cumulative"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The active cartridge written last (of `class`, if one is asked for).
fn latest_active(l: &Library, class: &str) -> anyhow::Result<Target> {
    Ok(l.latest_active(class)?
        .map_or(Target::Scratch, Target::Append))
}

fn places(l: &Library, which: &Which) -> anyhow::Result<Vec<Place>> {
    match (&which.save_set, &which.volume, which.file) {
        (Some(id), _, _) => {
            let r = catalog::find(l.dir(), id)?;
            match which.copy {
                Some(n) => {
                    let p = r.places().into_iter().find(|p| p.copy == n);
                    Ok(vec![p.ok_or_else(|| {
                        anyhow::anyhow!(
                            "save set {} has no copy {n} (copies: {})",
                            r.id,
                            r.copies
                                .iter()
                                .map(|c| c.copy.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?])
                }
                None => Ok(cinta_agent::copy::reading_order(l, &r)),
            }
        }
        (None, Some(v), Some(f)) => Ok(vec![Place {
            copy: 0,
            volume: v.clone(),
            sequence: f,
            sections: vec![],
            digest: String::new(),
        }]),
        _ => anyhow::bail!("give --save-set ID, or --volume and --file"),
    }
}

/// Exit status: 0 all objects good and no block damaged (or what damage
/// cost was read from a copy), 3 some objects failed or blocks were
/// damaged, 1 no object could be read.
fn status(r: &RunReport) -> ExitCode {
    if r.failed.is_empty() && (r.damaged.is_empty() || !r.from_copies.is_empty()) {
        ExitCode::SUCCESS
    } else if r.ok > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::FAILURE
    }
}

fn print_run(what: &str, r: &RunReport, extra: &[String]) {
    println!(
        "{what}: {} objects good, {} failed, {} read",
        r.ok,
        r.failed.len(),
        human(r.bytes)
    );
    for d in &r.damaged {
        println!("  damaged: {d}");
    }
    for (p, why) in &r.failed {
        println!("  FAILED {p}: {why}");
    }
    for e in extra {
        println!("  {e}");
    }
}

fn run_on(
    l: &Library,
    keys: &mut dyn KeySource,
    at: &Place,
    sink: &mut dyn Sink,
    quiet: bool,
) -> anyhow::Result<RunReport> {
    let mut session = l.session()?;
    let mut ss = SaveSet::open(&mut session, &at.volume, at.sequence, keys)?;
    let index = ss.index()?;
    let progress = Progress::default();
    progress.total.store(index.content_bytes, Ordering::Relaxed);
    let show = if quiet { Show::Nothing } else { Show::Human };
    let mut report = with_progress(show, &progress, || ss.run(index, sink, &progress))?;
    // What opening said first, each once.
    report
        .damaged
        .retain(|d| !ss.anomalies.iter().any(|a| a.starts_with(d.as_str())));
    report.damaged.splice(0..0, ss.anomalies.iter().cloned());
    Ok(report)
}

/// What a restore did, over every place it read.
struct Restored {
    report: RunReport,
    matched: bool,
    restored: u64,
    skipped: Vec<String>,
    warnings: Vec<String>,
}

/// Restores from the first place that opens; objects it could not read
/// (damaged blocks) are read from the next place, and so on. Objects
/// that failed to be written are not read again. `asked`: the one place
/// was asked for by the user (`--copy`), not chosen as a fallback.
#[allow(clippy::too_many_arguments)]
fn restore_from(
    l: &Library,
    keys: &mut dyn KeySource,
    places: &[Place],
    asked: bool,
    dest: &std::path::Path,
    select: &[String],
    existing: Existing,
    quiet: bool,
) -> anyhow::Result<Restored> {
    let mut out = Restored {
        report: RunReport::default(),
        matched: false,
        restored: 0,
        skipped: vec![],
        warnings: vec![],
    };
    // The exact names of the objects not read yet (None: the selection).
    let mut todo: Option<Vec<String>> = None;
    let mut unread: Vec<(String, String)> = Vec::new();
    let mut first_error = None;
    let mut opened = false;
    for at in places {
        let mut sink = match &todo {
            None => Restore::new(dest, select.to_vec(), existing)?,
            Some(names) => Restore::new(dest, names.clone(), existing)?.exactly(),
        };
        let mut r = match run_on(l, keys, at, &mut sink, quiet) {
            Ok(r) => r,
            Err(e) => {
                let e = e.context(format!(
                    "{} on cartridge {} (file {})",
                    at.what(),
                    at.volume,
                    at.sequence
                ));
                if opened || first_error.is_some() {
                    out.warnings.push(format!("{e:#}"));
                } else {
                    first_error = Some(e);
                }
                continue;
            }
        };
        sink.finish()?;
        let read_failed = std::mem::take(&mut r.failed);
        sink.settle(&mut r);
        let fallback = opened || (at.copy != 0 && !asked);
        if fallback {
            let why = match (&first_error, opened) {
                (Some(e), false) => format!("{e:#}"),
                (None, false) => "the original's cartridges are not in the library".to_string(),
                (_, true) => format!(
                    "{} objects could not be read where read before",
                    todo.as_ref().map_or(0, Vec::len)
                ),
            };
            out.report.from_copies.push(format!(
                "{} objects read from {} on cartridge {} (file {}): {why}",
                r.ok,
                at.what(),
                at.volume,
                at.sequence
            ));
        }
        opened = true;
        out.matched |= sink.matched;
        out.restored += sink.restored;
        out.skipped.append(&mut sink.skipped);
        out.warnings.append(&mut sink.warnings);
        out.report.ok += r.ok;
        out.report.bytes += r.bytes;
        out.report.failed.extend(r.failed);
        out.report.damaged.extend(r.damaged);
        unread = read_failed;
        if unread.is_empty() {
            break;
        }
        todo = Some(unread.iter().map(|(p, _)| p.clone()).collect());
    }
    if !opened {
        return Err(
            first_error.unwrap_or_else(|| anyhow::anyhow!("the save set has no place to read"))
        );
    }
    out.report.failed.extend(unread);
    Ok(out)
}

pub fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Save(a) => save_cmd(a),
        Cmd::Restore {
            lib,
            key,
            which,
            to,
            original,
            mut select,
            select_from,
            existing,
            json,
        } => {
            if let Some(f) = select_from {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading --select-from {}", f.display()))?;
                select.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
            let l = Library::open(&lib.library)?;
            let mut keys = key.open()?;
            let dest = if original {
                PathBuf::from("/")
            } else {
                to.expect("clap requires --to or --original")
            };
            let at = places(&l, &which)?;
            let done = restore_from(
                &l,
                &mut *keys,
                &at,
                which.copy.is_some(),
                &dest,
                &select,
                existing,
                json,
            )?;
            let report = done.report;
            if !select.is_empty() && !done.matched {
                anyhow::bail!(
                    "--select {} matched no object of the save set (names are given as `ls --save-set` prints them: \\xNN for a byte that is not UTF-8)",
                    select.join(" ")
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "report": report, "restored": done.restored, "skipped": done.skipped, "warnings": done.warnings })
                    )?
                );
            } else {
                let mut extra: Vec<String> = done
                    .skipped
                    .iter()
                    .map(|s| format!("kept existing {s}"))
                    .collect();
                extra.extend(done.warnings.iter().map(|w| format!("warning: {w}")));
                extra.extend(report.from_copies.iter().cloned());
                print_run(
                    &format!("restored into {}", dest.display()),
                    &report,
                    &extra,
                );
            }
            Ok(status(&report))
        }
        Cmd::Verify {
            lib,
            key,
            which,
            json,
        } => {
            let l = Library::open(&lib.library)?;
            let mut keys = key.open()?;
            // Without --copy the original is verified, wherever it is.
            let mut which = which;
            if which.save_set.is_some() {
                which.copy.get_or_insert(0);
            }
            let at = places(&l, &which)?.remove(0);
            let report = run_on(&l, &mut *keys, &at, &mut Verify, json)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_run("verified", &report, &[]);
            }
            Ok(status(&report))
        }
        Cmd::Ls {
            lib,
            save_set,
            volume,
            key_file,
            kmip,
            json,
            lines,
        } => {
            let l = Library::open(&lib.library)?;
            match save_set {
                None => {
                    let all: Vec<Record> = catalog::all(l.dir())?
                        .into_iter()
                        .filter(|r| {
                            volume
                                .as_deref()
                                .is_none_or(|v| r.sections.iter().any(|s| s.volser == v))
                        })
                        .collect();
                    if json {
                        println!("{}", serde_json::to_string_pretty(&all)?);
                    } else {
                        println!(
                            "{:<32} {:<5} {:>8} {:>10}  {:<7} {:>4}  SOURCE",
                            "SAVE SET", "LEVEL", "OBJECTS", "BYTES", "VOLUME", "FILE"
                        );
                        for r in all {
                            println!(
                                "{:<32} {:<5} {:>8} {:>10}  {:<7} {:>4}  {}",
                                r.id,
                                format!("{:?}", r.level)
                                    .to_lowercase()
                                    .chars()
                                    .take(5)
                                    .collect::<String>(),
                                r.objects,
                                human(r.bytes),
                                r.volume,
                                r.sequence,
                                r.source
                            );
                        }
                    }
                }
                Some(id) => {
                    if key_file.is_none() && kmip.is_none() {
                        anyhow::bail!("listing a save set's objects needs --key-file or --kmip");
                    }
                    let mut keys = open_keys(key_file.as_deref(), kmip.as_deref())?;
                    let r = catalog::find(l.dir(), &id)?;
                    let mut session = l.session()?;
                    let mut ss = SaveSet::open(&mut session, &r.volume, r.sequence, &mut *keys)?;
                    let p = u64::from(ss.header().payload);
                    let mut rows = Vec::new();
                    let mut out = std::io::stdout().lock();
                    for e in ss.index()? {
                        let e = e?;
                        let (vol, block) = ss.where_is(e.start / p);
                        let row = serde_json::json!({
                            "path": cinta_agent::saveset::names::escape(&e.meta.path), "kind": e.meta.kind, "size": e.meta.size,
                            "mode": format!("{:o}", e.meta.mode & 0o7777), "mtime": e.meta.mtime.0,
                            "digest": cinta_agent::stream::hex(&e.digest), "volume": vol, "block": block, "offset": e.start % p,
                            "changed_while_saved": e.flags & cinta_agent::saveset::format::FLAG_CHANGED != 0,
                        });
                        if lines {
                            use std::io::Write;
                            writeln!(out, "{row}")?;
                        } else {
                            rows.push(row);
                        }
                    }
                    if lines {
                        return Ok(ExitCode::SUCCESS);
                    }
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        for r in rows {
                            println!(
                                "{:<8} {:>12} {} {}:{}  {}",
                                r["kind"].as_str().unwrap_or(""),
                                r["size"],
                                r["mode"].as_str().unwrap_or(""),
                                r["volume"].as_str().unwrap_or(""),
                                r["block"],
                                r["path"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Expire {
            lib,
            save_set,
            shred,
            kmip,
        } => {
            let l = Library::open(&lib.library)?;
            let mut keys = match (shred, kmip) {
                (true, Some(k)) => Some(KmipKeySource::open(&k)?),
                (true, None) => anyhow::bail!("--shred needs --kmip FILE"),
                (false, _) => None,
            };
            let e = jobs::expire(&l, &save_set, keys.as_mut())?;
            let r = &e.record;
            if e.shredded {
                println!(
                    "destroyed key {} of save set {}: its data on every copy is unreadable",
                    r.key_id, r.id
                );
            }
            println!(
                "expired save set {} (cartridges {})",
                r.id,
                r.sections
                    .iter()
                    .map(|s| s.volser.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Copy {
            lib,
            save_set,
            media_class,
            json,
        } => {
            let l = Library::open(&lib.library)?;
            let t = Instant::now();
            let c = cinta_agent::copy::copy(
                &l,
                &save_set,
                &media_class,
                LabelDate::from_unix(now() as u64),
            )?;
            let secs = t.elapsed().as_secs_f64();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "copy": c, "seconds": secs })
                    )?
                );
            } else {
                println!(
                    "copied save set {} as copy {} onto {} (file {}): {} blocks, {} in {secs:.1}s ({:.0} MB/s), {}",
                    c.save_set,
                    c.copy,
                    c.volumes.join(", "),
                    c.sequence,
                    c.blocks,
                    human(c.bytes),
                    c.bytes as f64 / secs.max(1e-9) / 1e6,
                    if c.verified {
                        "every block as the save wrote it"
                    } else {
                        "not checked (no digest recorded)"
                    }
                );
                for w in &c.warnings {
                    println!("  warning: {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Scan { lib, key, json } => scan(&Library::open(&lib.library)?, &key, json),
    }
}

/// Reads every cartridge's labels; every tape file that is a save set (and
/// starts on that cartridge) is opened with the key and recorded.
fn scan(l: &Library, key: &KeyArg, json: bool) -> anyhow::Result<ExitCode> {
    let mut keys = key.open()?;
    let mut found: Vec<Record> = Vec::new();
    let mut tape_files: Vec<(u8, Record)> = Vec::new();
    let mut problems = Vec::new();
    let carts: Vec<String> = l
        .list()?
        .into_iter()
        .filter(|v| !matches!(v.record.state, CartState::Error | CartState::Scratch))
        .map(|v| v.record.barcode)
        .collect();
    let mut session = l.session()?;
    for bc in carts {
        let files = {
            use cinta_agent::tape::volume::Changer;
            let mut m = session.mount(&bc)?;
            let info = volume::inspect(&mut *m.device, &bc);
            session.dismount(m, volume::Outcome::Read)?;
            match info {
                Ok(i) => i.files,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            }
        };
        for f in files
            .iter()
            .filter(|f| f.hdr1.section == 1 && f.hdr1.file_id.starts_with("SS-"))
        {
            let r = (|| -> anyhow::Result<Record> {
                let mut ss = SaveSet::open(&mut session, &bc, f.hdr1.sequence, &mut *keys)?;
                let info = ss.info()?;
                let (mut objects, mut bytes) = (0u64, 0u64);
                for e in ss.index()? {
                    let e = e?;
                    objects += 1;
                    bytes += e.meta.size;
                }
                let h = ss.header().clone();
                let sections = ss.sections();
                drop(ss);
                // What is on tape now: later copies are checked against it.
                // A block that does not read costs the digest, not the record.
                let digest = match cinta_agent::copy::digest_of(&mut session, &bc, f.hdr1.sequence)
                {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(format!(
                            "cartridge {bc} tape file {}: recorded without a digest: {e}",
                            f.hdr1.sequence
                        ));
                        String::new()
                    }
                };
                Ok(Record {
                    id: h.id_hex(),
                    key_id: h.key_id.clone(),
                    source: info.source,
                    level: info.level,
                    since: info.since,
                    started: info.started,
                    host: info.host,
                    volume: bc.clone(),
                    sequence: f.hdr1.sequence,
                    sections,
                    objects,
                    bytes,
                    compression: h.compression,
                    digest,
                    copies: vec![],
                })
            })();
            match r {
                Ok(r) => tape_files.push((f.hdr1.generation_version, r)),
                Err(e) => problems.push(format!(
                    "cartridge {bc} tape file {}: {e:#}",
                    f.hdr1.sequence
                )),
            }
        }
    }
    // A save set's original (generation version 0) is its record; the
    // duplicates of it found are its copies.
    tape_files.sort_by_key(|(copy, _)| *copy);
    let classes: std::collections::BTreeMap<String, String> = l
        .list()?
        .into_iter()
        .map(|v| (v.record.barcode, v.record.media_class))
        .collect();
    for (copy, r) in tape_files {
        match found.iter_mut().find(|f: &&mut Record| f.id == r.id) {
            None => found.push(r),
            Some(f) => f.copies.push(catalog::Copy {
                copy: copy.max(1),
                media_class: classes.get(&r.volume).cloned().unwrap_or_default(),
                volume: r.volume,
                sequence: r.sequence,
                sections: r.sections,
                made: 0,
                digest: r.digest,
            }),
        }
    }
    for r in &found {
        catalog::put(l.dir(), r)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "save_sets": found, "problems": problems })
            )?
        );
    } else {
        println!("scan found {} save sets", found.len());
        for r in &found {
            println!(
                "  {} {:?} {} objects {} on {} file {}: {}",
                r.id,
                r.level,
                r.objects,
                human(r.bytes),
                r.volume,
                r.sequence,
                r.source
            );
        }
        for p in &problems {
            println!("  problem: {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
