//! `cinta-keymgr`: the KMIP key server and its administration: serve, init, clients, groups, keys, backup, restore, master-key rotation, audit, and a throwaway PKI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cinta_keymgr::audit::{self, Audit};
use cinta_keymgr::config::Config;
use cinta_keymgr::master::{self, Source};
use cinta_keymgr::ops::{self, state_name, Caller};
use cinta_keymgr::server::{self, Shared};
use cinta_keymgr::store::{Object, Store};
use cinta_keymgr::{backup, lock, pki};
use cinta_kmip::message::{OnError, Request, RequestItem, Version};
use cinta_kmip::spec::{operation as op, revocation_reason_code as rrc, tag};
use cinta_kmip::ttlv::{Item, Value};
use clap::{Args, Parser, Subcommand};

/// cinta key manager: a KMIP key server (mutual TLS, port 5696) and its administration.
#[derive(Parser)]
#[command(name = "cinta-keymgr", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "CINTA_KEYMGR_CONFIG",
        default_value = "/etc/cinta/keymgr.toml"
    )]
    config: PathBuf,
    /// Machine-readable output (JSON) for list and show commands.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve KMIP over mutual TLS until SIGTERM or Ctrl-C.
    Serve,
    /// Make a new, empty keystore (never overwrites one).
    Init,
    /// Master key: make a key file, or rotate (re-wrap every key; the server must be stopped).
    #[command(subcommand, name = "master-key")]
    MasterKey(MasterCmd),
    /// Client certificates: list, accept into a group, reject.
    #[command(subcommand)]
    Clients(ClientCmd),
    /// Device groups: list, add, set auto-accept.
    #[command(subcommand)]
    Groups(GroupCmd),
    /// Keys and secrets: list, show, destroy.
    #[command(subcommand)]
    Keys(KeyCmd),
    /// Write an encrypted backup of the keystore (works while serving).
    Backup(BackupArgs),
    /// Replace the keystore with a backup (the server must be stopped).
    Restore(RestoreArgs),
    /// Show the audit trail.
    Audit {
        /// Only the last N records (0: all).
        #[arg(long, default_value_t = 50)]
        tail: usize,
    },
    /// A throwaway PKI for trials and tests (ECDSA P-256).
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Load a KMIP server (this one or another) and report round trips per second and latency.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// host:port of the KMIP server.
    #[arg(long)]
    server: String,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, value_enum, default_value = "create-get")]
    mode: cinta_keymgr::bench::Mode,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// KMIP version, e.g. 1.2 or 2.0.
    #[arg(long, default_value = "1.2")]
    version: String,
}

#[derive(Subcommand)]
enum MasterCmd {
    /// Write 32 random bytes as hex to a new file (mode 0600).
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wrap every key under a new master key and switch to it.
    Rotate {
        /// New key file (64 hex digits).
        #[arg(long, conflicts_with = "new_passphrase_file")]
        new_file: Option<PathBuf>,
        /// New passphrase file.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    List,
    /// Accept a client (fingerprint or its first 8+ hex digits), optionally into a group.
    Accept {
        fingerprint: String,
        #[arg(long)]
        group: Option<String>,
    },
    Reject {
        fingerprint: String,
    },
}

#[derive(Subcommand)]
enum GroupCmd {
    List,
    Add {
        name: String,
        /// Accept unknown client certificates into this group without an administrator.
        #[arg(long)]
        auto_accept: bool,
    },
    Set {
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        auto_accept: bool,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    List {
        #[arg(long)]
        group: Option<String>,
    },
    Show {
        uid: String,
    },
    /// Revoke (if active) and destroy: the key material is gone for good.
    Destroy {
        uid: String,
    },
}

#[derive(Args)]
struct BackupArgs {
    #[arg(long)]
    out: PathBuf,
    /// File whose first line is the backup passphrase.
    #[arg(long)]
    passphrase_file: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    #[arg(long)]
    from: PathBuf,
    #[arg(long)]
    passphrase_file: PathBuf,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Make DIR/ca.pem and DIR/ca.key (kept if present).
    Init {
        dir: PathBuf,
        #[arg(long, default_value = "cinta throwaway CA")]
        name: String,
    },
    /// Issue DIR/NAME.pem and DIR/NAME.key.
    Issue {
        dir: PathBuf,
        name: String,
        #[arg(long, conflicts_with = "client")]
        server: bool,
        #[arg(long)]
        client: bool,
        /// Subject alternative name (IP or DNS), repeatable.
        #[arg(long)]
        host: Vec<String>,
        /// Certify this existing private key (PEM, e.g. RSA) instead of a new ECDSA one.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(cli) {
        eprintln!("cinta-keymgr: {e:#}");
        std::process::exit(1);
    }
}

fn master_source(cfg: &Config) -> Result<Source> {
    Ok(
        match (&cfg.master_key.file, &cfg.master_key.passphrase_file) {
            (Some(f), _) => Source::key_file(f)?,
            (_, Some(p)) => Source::passphrase_file(p)?,
            _ => bail!("no master key configured"),
        },
    )
}

fn open(cfg: &Config) -> Result<Store> {
    Ok(Store::open(&cfg.keystore, &master_source(cfg)?)?)
}

fn passphrase(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let p = t.lines().next().unwrap_or("").to_string();
    if p.chars().count() < 12 {
        bail!(
            "the passphrase in {} is shorter than 12 characters",
            path.display()
        );
    }
    Ok(p)
}

fn print<T: serde::Serialize>(json: bool, v: &T, human: impl FnOnce()) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human();
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.cmd {
        Cmd::Pki(p) => return pki_cmd(p),
        Cmd::Bench(b) => return bench(b, json),
        Cmd::MasterKey(MasterCmd::New { out }) => {
            if out.exists() {
                bail!(
                    "{} exists; a master key file is never overwritten",
                    out.display()
                );
            }
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("create {}", out.display()))?;
            f.write_all(master::new_key_text()?.as_bytes())?;
            f.sync_all()?;
            println!(
                "wrote a new master key to {} (keep a copy apart from keystore backups)",
                out.display()
            );
            return Ok(());
        }
        _ => {}
    }
    let cfg = Config::load(&cli.config)?;
    match cli.cmd {
        Cmd::Serve => serve(cfg),
        Cmd::Init => {
            let id = Store::create(
                &cfg.keystore,
                &master_source(&cfg)?,
                &cfg.default_group,
                server::now(),
            )?;
            println!(
                "made keystore {} (master key {id}, default group '{}')",
                cfg.keystore.display(),
                cfg.default_group
            );
            Ok(())
        }
        Cmd::MasterKey(MasterCmd::Rotate {
            new_file,
            new_passphrase_file,
        }) => {
            let _l = lock::take(&cfg.keystore, "cinta-keymgr master-key rotate")?;
            let new = match (new_file, new_passphrase_file) {
                (Some(f), _) => Source::key_file(&f)?,
                (_, Some(p)) => Source::passphrase_file(&p)?,
                _ => bail!("give --new-file or --new-passphrase-file"),
            };
            let mut s = open(&cfg)?;
            let old = s.master_id().to_string();
            let n = s.rotate(&new)?;
            println!(
                "re-wrapped {n} keys: master key {old} -> {}; now point [master_key] in {} at the new one",
                s.master_id(),
                cli.config.display()
            );
            Ok(())
        }
        Cmd::Clients(c) => {
            let mut s = open(&cfg)?;
            match c {
                ClientCmd::List => {
                    let list = s.clients()?;
                    print(json, &list, || {
                        println!(
                            "{:<16}  {:<9}  {:<12}  {:<20}  SUBJECT",
                            "FINGERPRINT", "STATUS", "GROUP", "LAST SEEN"
                        );
                        for c in &list {
                            println!(
                                "{:<16}  {:<9}  {:<12}  {:<20}  {}",
                                &c.fingerprint[..16],
                                c.status,
                                c.group,
                                when(c.last_seen),
                                c.subject
                            );
                        }
                    });
                }
                ClientCmd::Accept { fingerprint, group } => {
                    let c = s.set_client(&fingerprint, "accepted", group.as_deref())?;
                    println!(
                        "accepted {} ({}) into group '{}'",
                        c.fingerprint, c.subject, c.group
                    );
                }
                ClientCmd::Reject { fingerprint } => {
                    let c = s.set_client(&fingerprint, "rejected", None)?;
                    println!("rejected {} ({})", c.fingerprint, c.subject);
                }
            }
            Ok(())
        }
        Cmd::Groups(g) => {
            let mut s = open(&cfg)?;
            match g {
                GroupCmd::List => {
                    let list = s.groups()?;
                    print(json, &list, || {
                        println!(
                            "{:<16}  {:<11}  {:>7}  {:>7}",
                            "GROUP", "AUTO-ACCEPT", "CLIENTS", "OBJECTS"
                        );
                        for g in &list {
                            println!(
                                "{:<16}  {:<11}  {:>7}  {:>7}",
                                g.name,
                                if g.auto_accept { "yes" } else { "no" },
                                g.clients,
                                g.objects
                            );
                        }
                    });
                }
                GroupCmd::Add { name, auto_accept } => {
                    s.add_group(&name, auto_accept, server::now())?;
                    println!(
                        "added device group '{name}' (auto-accept {})",
                        if auto_accept { "on" } else { "off" }
                    );
                }
                GroupCmd::Set { name, auto_accept } => {
                    s.set_group_auto_accept(&name, auto_accept)?;
                    println!(
                        "device group '{name}': auto-accept {}",
                        if auto_accept { "on" } else { "off" }
                    );
                }
            }
            Ok(())
        }
        Cmd::Keys(k) => keys(&cfg, k, json),
        Cmd::Backup(b) => {
            let mut s = open(&cfg)?;
            let sum = backup::write(&mut s, &b.out, &passphrase(&b.passphrase_file)?)?;
            print(json, &sum, || {
                println!(
                    "backed up {} objects to {} ({} bytes, encrypted)",
                    sum.objects,
                    sum.path.display(),
                    sum.bytes
                )
            });
            Ok(())
        }
        Cmd::Restore(r) => {
            let _l = lock::take(&cfg.keystore, "cinta-keymgr restore")?;
            let (n, aside) = backup::restore(
                &r.from,
                &passphrase(&r.passphrase_file)?,
                &cfg.keystore,
                &master_source(&cfg)?,
                server::now(),
            )?;
            println!("restored {n} objects into {}", cfg.keystore.display());
            if let Some(a) = aside {
                println!("the keystore it replaced is kept as {}", a.display());
            }
            Ok(())
        }
        Cmd::Audit { tail } => {
            let recs = audit::read(&cfg.audit_path(), tail)?;
            print(json, &recs, || {
                for r in &recs {
                    println!(
                        "{}  {}  {:<10}  {:<18}  {:<36}  {}{}",
                        when(r.time),
                        &r.client[..r.client.len().min(16)],
                        r.group,
                        r.operation,
                        r.object.as_deref().unwrap_or("-"),
                        r.result,
                        r.reason
                            .as_deref()
                            .map(|x| format!(" ({x})"))
                            .unwrap_or_default()
                    );
                }
            });
            Ok(())
        }
        Cmd::Pki(_) | Cmd::Bench(_) | Cmd::MasterKey(MasterCmd::New { .. }) => {
            unreachable!("handled above")
        }
    }
}

fn when(t: i64) -> String {
    // UTC, ISO 8601, without a time-zone crate.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

#[derive(serde::Serialize)]
struct KeyRow {
    uid: String,
    group: String,
    object_type: String,
    state: String,
    names: Vec<String>,
    length: Option<i64>,
    created: Option<String>,
    backed_up: bool,
    has_material: bool,
}

fn key_row(o: &Object) -> KeyRow {
    KeyRow {
        uid: o.uid.clone(),
        group: o.group.clone(),
        object_type: match o.object_type() as i32 {
            cinta_kmip::spec::object_type::SYMMETRIC_KEY => "Symmetric Key".into(),
            cinta_kmip::spec::object_type::SECRET_DATA => "Secret Data".into(),
            t => format!("{t:#x}"),
        },
        state: state_name(o.state()).into(),
        names: o.name_values(),
        length: o.attrs.int("Cryptographic Length"),
        created: o.attrs.int("Initial Date").map(when),
        backed_up: o.backed_up,
        has_material: o.wrapped.is_some(),
    }
}

fn keys(cfg: &Config, k: KeyCmd, json: bool) -> Result<()> {
    let mut s = open(cfg)?;
    match k {
        KeyCmd::List { group } => {
            let rows: Vec<KeyRow> = s.objects(group.as_deref())?.iter().map(key_row).collect();
            print(json, &rows, || {
                println!(
                    "{:<36}  {:<10}  {:<13}  {:<21}  {:>4}  {:<6}  NAME",
                    "UID", "GROUP", "TYPE", "STATE", "BITS", "BACKUP"
                );
                for r in &rows {
                    println!(
                        "{:<36}  {:<10}  {:<13}  {:<21}  {:>4}  {:<6}  {}",
                        r.uid,
                        r.group,
                        r.object_type,
                        r.state,
                        r.length.map(|l| l.to_string()).unwrap_or_default(),
                        if r.backed_up { "yes" } else { "no" },
                        r.names.join(", ")
                    );
                }
            });
        }
        KeyCmd::Show { uid } => {
            let o = find(&mut s, &uid)?;
            let attrs: Vec<(String, String)> = o
                .attrs
                .0
                .iter()
                .map(|a| (a.name.clone(), show_value(&a.value)))
                .collect();
            print(
                json,
                &serde_json::json!({"key": key_row(&o), "attributes": attrs}),
                || {
                    println!(
                        "{} (group {}, {})",
                        o.uid,
                        o.group,
                        if o.backed_up {
                            "in a backup"
                        } else {
                            "not yet backed up"
                        }
                    );
                    for (n, v) in &attrs {
                        println!("  {n}: {v}");
                    }
                },
            );
        }
        KeyCmd::Destroy { uid } => {
            let o = find(&mut s, &uid)?;
            let caller = Caller {
                group: o.group.clone(),
                require_backup: false,
                lease_time: cfg.lease_time(),
            };
            let uid_item = |op: i32, extra: Vec<Item>| {
                let mut kids = vec![Item::new(
                    tag::UNIQUE_IDENTIFIER,
                    Value::TextString(o.uid.clone()),
                )];
                kids.extend(extra);
                RequestItem {
                    operation: op as u32,
                    id: None,
                    payload: Some(Item::new(tag::REQUEST_PAYLOAD, Value::Structure(kids))),
                }
            };
            let mut items = Vec::new();
            if o.state() == cinta_kmip::spec::state::ACTIVE {
                items.push(uid_item(
                    op::REVOKE,
                    vec![Item::new(
                        tag::REVOCATION_REASON,
                        Value::Structure(vec![Item::new(
                            tag::REVOCATION_REASON_CODE,
                            Value::Enumeration(rrc::CESSATION_OF_OPERATION as u32),
                        )]),
                    )],
                ));
            }
            items.push(uid_item(op::DESTROY, vec![]));
            let req = Request {
                version: Version::new(2, 0),
                max_response_size: None,
                batch_order: Some(true),
                on_error: OnError::Undo,
                authentication: None,
                items,
            };
            let resp = ops::run_alone(&mut s, &req, &caller, server::now()).items;
            if let Some(f) = resp.iter().find(|r| r.message.is_some()) {
                bail!(
                    "{} not destroyed: {}",
                    o.uid,
                    f.message.clone().unwrap_or_default()
                );
            }
            if let Ok(mut a) = Audit::open(&cfg.audit_path()) {
                let _ = a.write(&[audit::Record {
                    time: server::now(),
                    client: "administrator".into(),
                    subject: format!("cinta-keymgr keys destroy (uid {})", nix::unistd::getuid()),
                    group: o.group.clone(),
                    operation: "Destroy".into(),
                    object: Some(o.uid.clone()),
                    result: "success".into(),
                    reason: None,
                }]);
            }
            println!(
                "destroyed {}: its key material is erased; data encrypted under it cannot be read",
                o.uid
            );
        }
    }
    Ok(())
}

fn find(s: &mut Store, uid: &str) -> Result<Object> {
    s.objects(None)?
        .into_iter()
        .find(|o| o.uid == uid)
        .ok_or_else(|| anyhow::anyhow!("no object '{uid}'"))
}

fn show_value(i: &Item) -> String {
    match &i.value {
        Value::TextString(s) => s.clone(),
        Value::Integer(x) => x.to_string(),
        Value::LongInteger(x) => x.to_string(),
        Value::Enumeration(x) => format!("{x:#x}"),
        Value::Boolean(b) => b.to_string(),
        Value::DateTime(t) => when(*t),
        Value::Interval(x) => format!("{x}s"),
        Value::ByteString(b) | Value::BigInteger(b) => master::hex(b),
        Value::DateTimeExtended(x) => x.to_string(),
        Value::Structure(kids) => format!(
            "{{{}}}",
            kids.iter().map(show_value).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn bench(b: BenchArgs, json: bool) -> Result<()> {
    let version = match b
        .version
        .split_once('.')
        .map(|(a, c)| (a.parse::<i32>(), c.parse::<i32>()))
    {
        Some((Ok(a), Ok(c))) => Version::new(a, c),
        _ => bail!("--version {}: give major.minor, e.g. 1.2", b.version),
    };
    let r = cinta_keymgr::bench::run(&cinta_keymgr::bench::Plan {
        server: b.server,
        cert: b.cert,
        key: b.key,
        ca: b.ca,
        version,
        connections: b.connections,
        duration: Duration::from_secs(b.seconds),
        mode: b.mode,
    })?;
    print(json, &r, || {
        println!(
            "{:?} over {} connection(s): {} round trips in {:.1} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            r.mode, r.connections, r.round_trips, r.seconds, r.per_second, r.p50_ms, r.p99_ms, r.max_ms, r.errors
        )
    });
    if r.errors > 0 {
        bail!("{} round trips failed", r.errors);
    }
    Ok(())
}

fn pki_cmd(p: PkiCmd) -> Result<()> {
    match p {
        PkiCmd::Init { dir, name } => {
            let c = pki::init(&dir, &name)?;
            println!("CA certificate {}", c.display());
        }
        PkiCmd::Issue {
            dir,
            name,
            server,
            client,
            host,
            key,
        } => {
            let role = match (server, client) {
                (true, false) => pki::Role::Server,
                (false, true) => pki::Role::Client,
                _ => bail!("say --server or --client"),
            };
            let (c, k) = pki::issue(&dir, &name, role, &host, key.as_deref())?;
            println!("certificate {} key {}", c.display(), k.display());
        }
    }
    Ok(())
}

fn serve(cfg: Config) -> Result<()> {
    let _lock = lock::take(&cfg.keystore, "cinta-keymgr serve")?;
    let store = open(&cfg)?;
    tracing::info!(keystore = %cfg.keystore.display(), master_key = store.master_id(), "keystore open");
    let audit = Audit::open(&cfg.audit_path())?;
    let (keystore, keystore_thread) = server::spawn_keystore(server::Keystore {
        store,
        audit,
        default_group: cfg.default_group.clone(),
        require_backup: cfg.require_backup,
        lease_time: cfg.lease_time(),
    });
    let shared = Arc::new(Shared {
        keystore,
        trace: cfg.trace,
        idle: Duration::from_secs(cfg.idle_timeout_secs),
        handshake: Duration::from_secs(cfg.handshake_timeout_secs),
        waiting_idle: Duration::from_secs(cfg.waiting_idle_timeout_secs),
        keygen: Arc::new(tokio::sync::Semaphore::new(
            cinta_keymgr::server::keygen_slots(),
        )),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        // The first stdout line says where we listen (tests and scripts read it).
        println!("cinta-keymgr listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, "serving KMIP over mutual TLS");
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("signal received");
        };
        server::serve(&cfg, listener, shared, stop).await?;
        Ok::<_, anyhow::Error>(())
    });
    // Dropping the runtime drops every connection and with them the
    // keystore queue; the keystore thread finishes its group and ends.
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = keystore_thread.join();
    tracing::info!("stopped");
    served
}
