//! `cinta-controller bench-report`: the backup log of a year and the evidence of a quarter generated over a catalog of a year of nights for N servers (default 50: 18,250 runs, their save sets, 1M objects), beside the floor of reading the same rows from the catalog (what a query and a spreadsheet would start from), in one run.

use std::path::Path;
use std::time::Instant;

use crate::catalog::{Assignment, JobRow, SaveSetRecord, SaveSetRow, Sql, Val};
use crate::config::Config;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// 2026-01-01 00:00 UTC.
const YEAR: i64 = 1_767_225_600;

struct FixedClock(i64);
impl crate::clock::Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0
    }
}

pub fn run(dir: &Path, servers: u32, objects: u64) -> AnyResult<()> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("report-bench.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let nights = 365u32;
    let runs = u64::from(servers) * u64::from(nights);
    let per_set = objects.div_ceil(runs).max(1);
    let mut toml = format!(
        "catalog = \"{}\"\ntime_zone = \"Europe/Madrid\"\naudit_key = \"{}\"\n[tls]\ncert = \"x\"\nkey = \"x\"\nclient_ca = \"x\"\n[[media_policy]]\nname = \"MONTH\"\nretention_days = 30\n",
        db.display(),
        dir.join("report-bench.key").display()
    );
    for s in 0..servers {
        toml += &format!(
            "[[lpar]]\nname = \"S{s:02}\"\nrole = \"server\"\n[[control_group]]\nname = \"NIGHTLY-S{s:02}\"\ntarget = \"S{s:02}\"\nmedia_policy = \"MONTH\"\n[[control_group.entry]]\npath = \"/data\"\npersonal_data = {}\n[[schedule]]\ncontrol_group = \"NIGHTLY-S{s:02}\"\ncron = \"0 22 * * *\"\n",
            s % 5 == 0
        );
    }
    let cfg = Config::parse(&toml, &dir.join("bench.toml"))?;
    let mut c = crate::catalog::sqlite::open(&db)?;
    let t = Instant::now();
    let mut seq = 0i64;
    let mut objects_made = 0u64;
    for n in 0..nights {
        let mut stmts: Vec<(&str, Vec<Val>)> = Vec::new();
        let mut objs: Vec<(&str, Vec<Val>)> = Vec::new();
        for s in 0..servers {
            let at = YEAR + i64::from(n) * 86_400 + 21 * 3600;
            seq += 1;
            let id = format!("J{n:03}-S{s:02}");
            let set = format!("SS{n:03}S{s:02}");
            let failed = (n + s) % 97 == 0;
            let bytes = 5_000_000_000 + u64::from(s) * 10_000_000;
            let row = SaveSetRow {
                id: set.clone(),
                source: "/data".into(),
                key_id: format!("kmip:key-{n}-{s}"),
                volumes: vec![format!("V{:05}", (n * servers + s) / 20)],
                objects: per_set,
                bytes,
                warnings: vec![],
                changed: vec![],
                changed_count: u64::from(n % 50 == 0),
            };
            let job = JobRow {
                state: if failed { "failed" } else { "succeeded" }.into(),
                started: at,
                finished: at + 1800 + i64::from(s) * 10,
                message: if failed {
                    "the library did not answer".into()
                } else {
                    String::new()
                },
                save_sets: if failed { vec![] } else { vec![row.clone()] },
                ..JobRow::queued(
                    id.clone(),
                    &format!("NIGHTLY-S{s:02}"),
                    &format!("S{s:02}"),
                    Assignment::chores("default".into()),
                    at,
                )
            };
            stmts.push((
                "INSERT INTO jobs (id, seq, agent, state, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                vec![
                    id.clone().into(),
                    seq.into(),
                    job.agent.clone().into(),
                    job.state.clone().into(),
                    Val::Text(serde_json::to_string(&job)?),
                ],
            ));
            if failed {
                continue;
            }
            let rec = SaveSetRecord {
                id: set.clone(),
                agent: job.agent.clone(),
                library: "default".into(),
                control_group: job.control_group.clone(),
                source: "/data".into(),
                key_id: row.key_id.clone(),
                volumes: row.volumes.clone(),
                created: job.finished,
                expires: job.finished + 30 * 86_400,
                state: "active".into(),
                media_policy: "MONTH".into(),
                level: "full".into(),
                job: id,
                bytes,
                seconds: 1800,
                changed: row.changed_count,
                ..Default::default()
            };
            stmts.push((
                "INSERT INTO save_sets (id, state, body) VALUES (?1, ?2, ?3)",
                vec![
                    set.clone().into(),
                    "active".into(),
                    Val::Text(serde_json::to_string(&rec)?),
                ],
            ));
            for k in 0..per_set {
                objs.push((
                    "INSERT INTO objects (save_set, path, kind, size, mtime, created) VALUES (?1, ?2, 'file', 1000, ?3, ?4)",
                    vec![
                        set.clone().into(),
                        format!("/data/dir{}/file{k:06}", k % 100).into(),
                        rec.created.into(),
                        rec.created.into(),
                    ],
                ));
                objects_made += 1;
            }
        }
        c.sql().exec(&stmts)?;
        c.sql().exec(&objs)?;
    }
    eprintln!(
        "made {runs} runs, {objects_made} objects in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        db.display()
    );
    // The controller's state over it, its clock at the end of the year.
    let key = crate::audit::AuditKey::load_or_create(&dir.join("report-bench.key"))?;
    let events = crate::events::Events::new(&cfg.events);
    let state = crate::state::State::new(
        cfg,
        Box::new(c),
        Box::new(FixedClock(YEAR + 365 * 86_400)),
        events,
        key,
    )?;
    let tz = state.cfg.tz()?;

    let t = Instant::now();
    let log = crate::reports::backup_log(&state, YEAR, YEAR + 365 * 86_400)?;
    let gathered = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let html = crate::reports::render::backup_log(&log, tz, "html")?;
    let csv = crate::reports::render::backup_log(&log, tz, "csv")?;
    let rendered = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let e = crate::reports::evidence::evidence(&state, "2026Q4")?;
    let page = crate::reports::evidence::html(&e, tz);
    let evidence = t.elapsed().as_secs_f64();

    // The floor: the same rows read and decoded, nothing computed.
    let t = Instant::now();
    let jobs = state.catalog().jobs(u32::MAX)?.len();
    let sets = state.catalog().save_sets()?.len();
    let floor = t.elapsed().as_secs_f64();

    println!(
        "catalog: {servers} servers x {nights} nights = {runs} runs ({jobs} jobs, {sets} save sets), {objects_made} objects"
    );
    println!("{:<52} {:>9}", "", "seconds");
    println!(
        "{:<52} {:>9.2}",
        "backup log of the year: gathered", gathered
    );
    println!(
        "{:<52} {:>9.2}",
        format!(
            "  rendered as HTML ({} KiB) and CSV ({} KiB)",
            html.len() / 1024,
            csv.len() / 1024
        ),
        rendered
    );
    println!(
        "{:<52} {:>9.2}",
        format!("evidence of 2026Q4 (HTML, {} KiB)", page.len() / 1024),
        evidence
    );
    println!(
        "{:<52} {:>9.2}",
        "read the jobs and save sets only (the floor)", floor
    );
    println!(
        "backup log of a year, all told: {:.2} s ({:.1}x the floor; goal under 5 s)",
        gathered + rendered,
        (gathered + rendered) / floor
    );
    Ok(())
}
