//! `cinta-controller bench-audit`: `audit verify` over a log of N records (default 1M) on SQLite, beside the floor of reading the same rows and hashing them (what checking an exported log with sha256sum costs), in one run, with the ratio.

use std::path::Path;
use std::time::Instant;

use crate::audit::{verify_pages, AuditKey, Chain, Entry, HEAD_META, PAGE};
use crate::catalog::{Catalog, Sql, Val};

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Records written per transaction while the log is made.
const BATCH: usize = 10_000;

pub fn run(dir: &Path, records: u64) -> AnyResult<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("audit-bench.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    let mut c = crate::catalog::sqlite::open(&path)?;
    let key = || AuditKey::new(&[0x5a; 32]);
    let (mut chain, _) = Chain::open(key(), None, None);
    let t = Instant::now();
    let mut head = None;
    let mut n = 0u64;
    while n < records {
        let mut stmts: Vec<(&str, Vec<Val>)> = Vec::with_capacity(BATCH + 1);
        for _ in 0..BATCH.min((records - n) as usize) {
            let e = Entry {
                who: if n.is_multiple_of(7) {
                    "controller"
                } else {
                    "ana"
                }
                .into(),
                role: "operator".into(),
                action: if n.is_multiple_of(7) {
                    "job.finished"
                } else {
                    "RunControlGroup"
                }
                .into(),
                args: format!(
                    "RunControlGroupRequest {{ control_group: \"NIGHTLY{}\" }}",
                    n % 50
                ),
                result: "ok".into(),
                from: "10.1.2.3:50412".into(),
            };
            let (row, h) = chain.next(1_700_000_000 + n as i64 * 60, &e);
            chain.advance(&h);
            let (sql, params) = crate::catalog::audit_insert(&row);
            stmts.push((sql, params));
            head = Some(h);
            n += 1;
        }
        if let Some(h) = &head {
            stmts.push(crate::catalog::meta_upsert(HEAD_META, &h.to_text()));
        }
        c.sql().exec(&stmts)?;
    }
    let made = t.elapsed();
    eprintln!(
        "made {records} records in {:.1} s ({})",
        made.as_secs_f64(),
        path.display()
    );

    let k = key();
    let t = Instant::now();
    let head_text = c.meta(HEAD_META)?;
    let report = verify_pages(&k, head_text.as_deref(), |after| c.audit_page(after, PAGE))
        .map_err(|e| e.to_string())?;
    let verify = t.elapsed().as_secs_f64();
    if let Some(p) = report.problem {
        return Err(format!("the benchmark's own log does not verify: {p}").into());
    }

    // The floor: the same rows read a page at a time and hashed, nothing checked.
    let t = Instant::now();
    let mut after = 0;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        let page = c.audit_page(after, PAGE)?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for r in &page {
            ctx.update(r.body.as_bytes());
            ctx.update(r.prev.as_bytes());
            ctx.update(r.mac.as_bytes());
        }
        after = last;
    }
    let _ = ctx.finish();
    let scan = t.elapsed().as_secs_f64();

    println!("audit log of {records} records on SQLite (pages of {PAGE})");
    println!("{:<42} {:>9} {:>14}", "", "seconds", "records/s");
    println!(
        "{:<42} {:>9.2} {:>14.0}",
        "cintactl audit verify (chain, MACs, head)",
        verify,
        records as f64 / verify
    );
    println!(
        "{:<42} {:>9.2} {:>14.0}",
        "read and SHA-256 only (the floor)",
        scan,
        records as f64 / scan
    );
    println!(
        "ratio verify/floor: {:.2}x (goal: verify under 10 s for 1M)",
        verify / scan
    );
    Ok(())
}
