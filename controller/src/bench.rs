//! `cinta-controller bench`: the controller under N simulated agents (each its own mutual-TLS session, heartbeats every second, jobs accepted, progress reported, finished) while a console queues jobs; prints CPU, peak memory and scheduling latency.
//!
//! Scheduling latency is the time from the console's RunControlGroup call
//! returning to the simulated agent receiving that job on its assignment
//! stream. The simulated agents save nothing: this measures the controller.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cinta_proto::v1 as pb;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> AnyResult<Pki> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(DnType::CommonName, "cinta bench CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&key)?;
        Ok(Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// (certificate PEM, key PEM) for `cn`.
    fn issue(&self, cn: &str, server: bool) -> AnyResult<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        if server {
            p.subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse()?));
            p.subject_alt_names
                .push(SanType::DnsName("localhost".try_into()?));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let c = p.signed_by(&key, &self.issuer)?;
        Ok((c.pem(), key.serialize_pem()))
    }
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn proc_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn channel(addr: &str, ca: &str, cert: &str, key: &str) -> AnyResult<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    Ok(Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?)
}

/// Runs the benchmark; the controller binary is `exe`, its files go in `dir`.
pub fn run(
    exe: &Path,
    dir: &Path,
    agents: usize,
    seconds: u64,
    jobs_per_second: u32,
) -> AnyResult<()> {
    std::fs::create_dir_all(dir)?;
    let pki = Pki::new()?;
    let (scert, skey) = pki.issue("controller", true)?;
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem)?;
    std::fs::write(dir.join("server.pem"), &scert)?;
    std::fs::write(dir.join("server.key"), &skey)?;
    let _ = std::fs::remove_file(dir.join("catalog.db"));
    let names: Vec<String> = (1..=agents).map(|i| format!("SIM{i:04}")).collect();
    let mut cfg = String::from("listen = \"127.0.0.1:0\"\ncatalog = \"catalog.db\"\nheartbeat_seconds = 1\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n[[operator]]\nname = \"console\"\ncn = \"console\"\nroles = [\"operator\"]\n");
    for n in &names {
        cfg.push_str(&format!("[[lpar]]\nname = \"{n}\"\nrole = \"server\"\n"));
    }
    for n in &names {
        cfg.push_str(&format!("[[control_group]]\nname = \"CG-{n}\"\ntarget = \"{n}\"\n[[control_group.entry]]\npath = \"/data\"\n"));
    }
    std::fs::write(dir.join("controller.toml"), cfg)?;
    eprintln!("issuing {agents} agent certificates...");
    let creds: Vec<(String, String, String)> = names
        .iter()
        .map(|n| pki.issue(n, false).map(|(c, k)| (n.clone(), c, k)))
        .collect::<AnyResult<_>>()?;
    let (ccert, ckey) = pki.issue("console", false)?;

    let mut child = std::process::Command::new(exe)
        .arg("--config")
        .arg(dir.join("controller.toml"))
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("controller.log"))?)
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    let addr = line
        .trim()
        .strip_prefix("cinta-controller listening on ")
        .ok_or("the controller did not start")?
        .to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        // When the console asked for each job, and when its agent got it.
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let got: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let beats = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let ca = Arc::new(pki.ca_pem.clone());
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (name, cert, key) in creds {
            let (addr, ca, got, beats, finished) = (addr.clone(), ca.clone(), got.clone(), beats.clone(), finished.clone());
            tasks.push(tokio::spawn(async move {
                let ch = channel(&addr, &ca, &cert, &key).await?;
                let mut c = pb::agent_service_client::AgentServiceClient::new(ch);
                let reg = c
                    .register(pb::RegisterRequest {
                        inventory: Some(pb::Inventory { name: name.clone(), host: "bench".into(), role: String::new(), libraries: vec![], version: "bench".into() }),
                    })
                    .await?
                    .into_inner();
                let session = reg.session_id;
                let mut hb = c.clone();
                let hs = session.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        let usage = vec![pb::Usage { what: "ASP 1".into(), percent_used: 42.0 }];
                        if hb.heartbeat(pb::HeartbeatRequest { session_id: hs.clone(), usage, watched: vec![] }).await.is_ok() {
                            beats.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                let mut stream = c.assignments(pb::AssignmentsRequest { session_id: session.clone() }).await?.into_inner();
                while let Ok(Some(job)) = stream.message().await {
                    got.lock().unwrap().insert(job.job_id.clone(), Instant::now());
                    let ok = c.accept_job(pb::AcceptJobRequest { session_id: session.clone(), job_id: job.job_id.clone() }).await?.into_inner();
                    if !ok.ok {
                        continue;
                    }
                    c.report_progress(pb::JobProgress { session_id: session.clone(), job_id: job.job_id.clone(), entries_done: 1, entries_total: 1, bytes: 1 << 20, bytes_total: 1 << 20, objects: 1, current: String::new() }).await?;
                    c.finish_job(pb::JobResult { session_id: session.clone(), job_id: job.job_id, ok: true, message: "simulated".into(), save_sets: vec![], output: String::new(), restores: vec![], copies: vec![] }).await?;
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }));
        }
        // Wait for every agent to register.
        let ch = channel(&addr, &ca, &ccert, &ckey).await?;
        let mut console = pb::console_service_client::ConsoleServiceClient::new(ch);
        loop {
            let a = console.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents;
            if a.len() >= agents {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let connect_secs = t0.elapsed().as_secs_f64();
        eprintln!("{agents} agents registered in {connect_secs:.1} s; measuring for {seconds} s...");
        let cpu0 = proc_cpu_ticks(pid);
        let beats0 = beats.load(Ordering::Relaxed);
        let start = Instant::now();
        let every = Duration::from_secs_f64(1.0 / f64::from(jobs_per_second.max(1)));
        let mut queued = 0u64;
        let mut i = 0usize;
        while start.elapsed() < Duration::from_secs(seconds) {
            let name = &names[(i * 7919) % names.len()];
            i += 1;
            let asked = Instant::now();
            let j = console.run_control_group(pb::RunControlGroupRequest { control_group: format!("CG-{name}") }).await?.into_inner();
            sent.lock().unwrap().insert(j.id, asked);
            queued += 1;
            tokio::time::sleep(every).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let secs = start.elapsed().as_secs_f64();
        let cpu = (proc_cpu_ticks(pid) - cpu0) as f64 / 100.0;
        let hb = beats.load(Ordering::Relaxed) - beats0;
        let mut l: Vec<u64> = {
            let (sent, got) = (sent.lock().unwrap(), got.lock().unwrap());
            sent.iter()
                .filter_map(|(id, t)| got.get(id).map(|g| g.duration_since(*t).as_micros() as u64))
                .collect()
        };
        l.sort_unstable();
        let pct = |p: f64| if l.is_empty() { 0.0 } else { l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0 };
        println!("agents                 {agents}");
        println!("registration           {connect_secs:.1} s for all");
        println!("heartbeats handled     {:.0}/s", hb as f64 / secs);
        println!("jobs queued / finished {queued} / {}", finished.load(Ordering::Relaxed));
        println!("scheduling latency     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} jobs; from the console's request to the agent receiving the job)", pct(0.5), pct(0.99), pct(1.0), l.len());
        println!("controller CPU         {:.1}% of one core ({cpu:.1} s in {secs:.1} s)", 100.0 * cpu / secs);
        println!("controller peak RSS    {:.1} MiB", proc_hwm_kib(pid) as f64 / 1024.0);
        for t in tasks {
            t.abort();
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Default place for the benchmark's files.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("cinta-controller-bench")
}
