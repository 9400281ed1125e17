//! `cinta-controller`: serves AgentService and ConsoleService over gRPC with mutual TLS, gRPC health checking and server reflection; drains on SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cinta_controller::config::Config;
use cinta_controller::grpc::{Agents, Console};
use cinta_controller::state::State;
use cinta_proto::v1::agent_service_server::AgentServiceServer;
use cinta_proto::v1::console_service_server::ConsoleServiceServer;
use clap::{Parser, Subcommand};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// cinta controller: coordinates agents, keeps the catalog, runs control groups.
#[derive(Parser)]
#[command(name = "cinta-controller", version, about)]
struct Cli {
    #[arg(
        long,
        short,
        global = true,
        env = "CINTA_CONTROLLER_CONFIG",
        default_value = "/etc/cinta/controller.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve agents and consoles over gRPC (mutual TLS) until SIGTERM or Ctrl-C.
    Serve,
    /// Benchmark (not a test): this controller under N simulated agents.
    Bench {
        #[arg(long, default_value_t = 500)]
        agents: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Jobs the console queues per second (on agents in turn).
        #[arg(long, default_value_t = 20)]
        jobs_per_second: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Benchmark (not a test): the catalog's object index on SQLite and,
    /// with --postgres URL, on PostgreSQL: rows/s, restore-point lookups, searches.
    BenchCatalog {
        #[arg(long, default_value_t = 1_000_000)]
        objects: u64,
        /// A PostgreSQL database to measure beside SQLite (its bench rows are removed after).
        #[arg(long)]
        postgres: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Benchmark (not a test): `audit verify` over a log of N records on
    /// SQLite, beside reading and hashing the same rows.
    BenchAudit {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Benchmark (not a test): the backup log of a year and the evidence of
    /// a quarter over a catalog of a year of nights (50 servers, 1M objects).
    BenchReport {
        #[arg(long, default_value_t = 50)]
        servers: u32,
        #[arg(long, default_value_t = 1_000_000)]
        objects: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
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
        eprintln!("cinta-controller: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Serve => serve(Config::load(&cli.config)?),
        Cmd::Bench {
            agents,
            seconds,
            jobs_per_second,
            dir,
        } => {
            let dir = dir.unwrap_or_else(cinta_controller::bench::default_dir);
            cinta_controller::bench::run(
                &std::env::current_exe()?,
                &dir,
                agents,
                seconds,
                jobs_per_second,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Cmd::BenchCatalog {
            objects,
            postgres,
            dir,
        } => {
            let dir = dir.unwrap_or_else(cinta_controller::bench::default_dir);
            cinta_controller::bench_catalog::run(&dir, objects, postgres.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Cmd::BenchReport {
            servers,
            objects,
            dir,
        } => {
            let dir = dir.unwrap_or_else(cinta_controller::bench::default_dir);
            cinta_controller::bench_report::run(&dir, servers, objects)
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Cmd::BenchAudit { records, dir } => {
            let dir = dir.unwrap_or_else(cinta_controller::bench::default_dir);
            cinta_controller::bench_audit::run(&dir, records).map_err(|e| anyhow::anyhow!("{e}"))
        }
    }
}

fn serve(cfg: Config) -> Result<()> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&cfg.tls.cert)?,
            read(&cfg.tls.key)?,
        ))
        .client_ca_root(Certificate::from_pem(read(&cfg.tls.client_ca)?));
    let catalog = cinta_controller::catalog::open(&cfg.catalog, cfg.catalog_tls.as_ref())?;
    let listen = cfg.listen;
    let clock: Box<dyn cinta_controller::clock::Clock> = match &cfg.clock_file {
        Some(p) => {
            tracing::warn!(file = %p.display(), "the clock is read from a file (tests and demos only)");
            Box::new(cinta_controller::clock::FileClock::open(p.clone())?)
        }
        None => Box::new(cinta_controller::clock::SystemClock),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let events = cinta_controller::events::Events::new(&cfg.events);
        let metrics_listen = cfg.events.metrics_listen;
        let audit_key = cinta_controller::audit::AuditKey::load_or_create(&cfg.audit_key)?;
        let state = State::new(cfg, catalog, clock, events, audit_key)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AgentServiceServer<Agents>>().await;
        health.set_serving::<ConsoleServiceServer<Console>>().await;
        // Both reflection protocols: many clients (grpcio's descriptor
        // database among them) speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(cinta_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let reflection = reflection().build_v1()?;
        // The scheduler: schedules and the night, a few times a second.
        let sched = state.clone();
        tokio::spawn(async move {
            loop {
                let s = sched.clone();
                let _ =
                    tokio::task::spawn_blocking(move || cinta_controller::housekeeping::tick(&s))
                        .await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        println!("cinta-controller listening on {addr}");
        if let Some(m) = metrics_listen {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("metrics listen on {m}"))?;
            println!(
                "cinta-controller metrics on http://{}/metrics",
                l.local_addr()?
            );
            let s = state.clone();
            tokio::spawn(cinta_controller::events::serve_metrics(
                l,
                std::sync::Arc::new(move || cinta_controller::metrics::render(&s)),
            ));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, "serving gRPC over mutual TLS");
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("signal received: draining");
        };
        Server::builder()
            .tls_config(tls)?
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(AgentServiceServer::new(Agents(state.clone())))
            .add_service(ConsoleServiceServer::new(Console(state)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop,
            )
            .await?;
        tracing::info!("stopped");
        Ok(())
    })
}
