//! `cinta-controller bench-catalog`: the catalog's object index on SQLite and, given a URL, on PostgreSQL, side by side: rows recorded per second, restore-point lookups and pattern searches.
//!
//! The same `Catalog` code runs on both engines. Objects go in as agents
//! send them (batches of 1000, one transaction each), then dated when their
//! save set is recorded; a restore-point lookup is what `cintactl find PATH
//! --at T` asks of the catalog (one index lookup among every copy of the path).

use std::time::{Duration, Instant};

use crate::catalog::{Catalog, ObjectRow, SaveSetRecord};

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Objects per save set in the benchmark's catalog.
const PER_SAVE_SET: u64 = 10_000;

struct Figures {
    rows_per_s: f64,
    lookup_p50_us: f64,
    lookup_p99_us: f64,
    search_p50_ms: f64,
}

fn path(i: u64) -> String {
    format!(
        "QSYS.LIB/DATA/dir{:03}/sub{:02}/file{i:08}.dat",
        i % 997,
        i % 61
    )
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn measure(c: &mut dyn Catalog, objects: u64, tag: &str) -> AnyResult<Figures> {
    let sets = objects.div_ceil(PER_SAVE_SET).max(1);
    let t = Instant::now();
    let mut i = 0u64;
    for s in 0..sets {
        let id = format!("bench-{tag}-{s:06}");
        c.put_save_set(&SaveSetRecord {
            id: id.clone(),
            agent: "BENCH".into(),
            library: "default".into(),
            control_group: "BENCH".into(),
            source: "/bench".into(),
            key_id: "kmip:bench".into(),
            created: 1_000_000 + s as i64,
            state: "active".into(),
            level: "full".into(),
            ..Default::default()
        })?;
        let end = ((s + 1) * PER_SAVE_SET).min(objects);
        while i < end {
            let n = (end - i).min(1000);
            let batch: Vec<ObjectRow> = (i..i + n)
                .map(|k| ObjectRow {
                    // Each save set holds the same tree again (a nightly full save).
                    path: path(k % PER_SAVE_SET.min(objects)),
                    kind: "file".into(),
                    size: k * 7,
                    mtime: 1_700_000_000 + k as i64,
                })
                .collect();
            c.put_objects(&id, &batch)?;
            i += n;
        }
        c.date_objects(&id, 1_000_000 + s as i64)?;
    }
    let rows_per_s = objects as f64 / t.elapsed().as_secs_f64();
    // Restore points: one path, every copy of it, the newest at or before a time.
    let mut lookups = Vec::new();
    for k in 0..2000u64 {
        let p = path((k * 7919) % PER_SAVE_SET.min(objects));
        let t = Instant::now();
        let newest = c.restore_point(&p, 1_000_000 + (sets / 2) as i64)?;
        std::hint::black_box(newest);
        lookups.push(t.elapsed());
    }
    let mut searches = Vec::new();
    for k in 0..20u64 {
        let t = Instant::now();
        let rows = c.find_objects(&format!("*/dir{:03}/sub*", k * 37 % 997), 100)?;
        std::hint::black_box(rows);
        searches.push(t.elapsed());
    }
    for s in 0..sets {
        c.drop_objects(&format!("bench-{tag}-{s:06}"))?;
    }
    Ok(Figures {
        rows_per_s,
        lookup_p50_us: pct(&mut lookups, 0.5).as_secs_f64() * 1e6,
        lookup_p99_us: pct(&mut lookups, 0.99).as_secs_f64() * 1e6,
        search_p50_ms: pct(&mut searches, 0.5).as_secs_f64() * 1e3,
    })
}

/// Runs the benchmark with `objects` rows on a fresh SQLite file in `dir`
/// and, if `postgres` is given, in that database (its bench rows removed after).
pub fn run(dir: &std::path::Path, objects: u64, postgres: Option<&str>) -> AnyResult<()> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("bench-catalog.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", file.display()));
    }
    println!(
        "catalog benchmark: {objects} objects in save sets of {PER_SAVE_SET}, batches of 1000"
    );
    let mut results = vec![(
        "SQLite",
        measure(&mut crate::catalog::sqlite::open(&file)?, objects, "s")?,
    )];
    if let Some(url) = postgres {
        let mut pg = crate::catalog::postgres::open(url, None)?;
        results.push(("PostgreSQL", measure(&mut pg, objects, "p")?));
    }
    println!(
        "{:<12} {:>14} {:>22} {:>22} {:>18}",
        "engine", "rows/s", "restore point p50 us", "restore point p99 us", "glob search p50 ms"
    );
    for (name, f) in &results {
        println!(
            "{:<12} {:>14.0} {:>22.1} {:>22.1} {:>18.2}",
            name, f.rows_per_s, f.lookup_p50_us, f.lookup_p99_us, f.search_p50_ms
        );
    }
    if let [(_, s), (_, p)] = &results[..] {
        println!(
            "SQLite / PostgreSQL: rows/s {:.2}x, restore point p50 {:.2}x faster, glob search {:.2}x faster",
            s.rows_per_s / p.rows_per_s,
            p.lookup_p50_us / s.lookup_p50_us,
            p.search_p50_ms / s.search_p50_ms
        );
    }
    Ok(())
}
