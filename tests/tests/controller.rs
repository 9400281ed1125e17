//! The controller with real processes: keymgr, controller, an agent on a simulated LPAR; a control group run from the console, restored; the controller restarted; an agent killed mid-job; a Python gRPC client built from the .proto files alone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cinta_tests::keymgr::Kms;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(bin: &str, args: &[&str]) -> String {
    let o = Command::new(cinta_tests::binary(bin))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{bin} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A night's worth of parts: key manager, PKI, controller config, one LPAR's library and data.
struct Site {
    kms: Kms,
    dir: tempfile::TempDir,
    controller: Option<Proc>,
    addr: String,
    metrics: String,
    /// What the webhook receiver got: every POST body.
    hooks: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    agents: std::collections::HashMap<String, Proc>,
}

impl Site {
    fn new() -> Site {
        // A webhook receiver: keeps each request's body, answers 204.
        let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hook_addr = hook.local_addr().unwrap();
        let hooks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let got = hooks.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in hook.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            got.lock().unwrap().push(body.to_string());
                            let _ = s
                                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                            break;
                        }
                    }
                }
            }
        });
        let kms = Kms::serving();
        kms.admin_ok(&["groups", "set", "default", "--auto-accept", "true"]);
        let pki = kms.pki.to_str().unwrap().to_string();
        for (name, role) in [
            ("controller", "--server"),
            ("PROD1", "--client"),
            ("CONT1", "--client"),
            ("WEB1", "--client"),
            ("MAIL1", "--client"),
            ("console", "--client"),
            ("viewer", "--client"),
            ("approver", "--client"),
            ("auditor", "--client"),
            ("stranger", "--client"),
        ] {
            let mut a = vec!["pki", "issue", &pki, name, role];
            if name == "controller" {
                a.extend(["--host", "localhost", "--host", "127.0.0.1"]);
            }
            kms.admin_ok(&a);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (p, body) in [
            ("data/payroll/ledger.dat", vec![3u8; 200_000]),
            ("data/payroll/close.txt", b"close\n".to_vec()),
            ("data/home/note.txt", b"hello\n".to_vec()),
            ("data/db/orders.db", vec![7u8; 50_000]),
        ] {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), body).unwrap();
        }
        std::fs::write(
            d.join("controller.toml"),
            format!(
                r#"
listen = "127.0.0.1:0"
catalog = "catalog.db"
heartbeat_seconds = 1
time_zone = "Europe/Madrid"
clock_file = "clock"
[events]
webhook = "http://{hook}/cinta"
metrics_listen = "127.0.0.1:0"
usage_threshold_percent = 0.01
[tls]
cert = "{pki}/controller.pem"
key = "{pki}/controller.key"
client_ca = "{pki}/ca.pem"
[[operator]]
name = "console"
cn = "console"
roles = ["admin"]
[[operator]]
name = "helpdesk"
cn = "viewer"
roles = ["viewer"]
[[operator]]
name = "Marta"
cn = "approver"
roles = ["approver"]
[[operator]]
name = "Ines"
cn = "auditor"
roles = ["auditor"]
[ibmi]
save_library = "bash {sim} {d}/sim/{{lpar}} savlib {{lib}}"
restore_library = "bash {sim} {d}/sim/{{lpar}} rstlib {{lib}} {{to}}"
[[lpar]]
name = "PROD1"
role = "production"
[[lpar.watch]]
name = "subsystem QINTER"
command = "bash {sim} {d}/sim/{{lpar}} subsystem QINTER"
every_seconds = 1
[[lpar]]
name = "CONT1"
role = "contingency"
[[lpar]]
name = "WEB1"
role = "server"
[[lpar]]
name = "MAIL1"
role = "server"
[[control_group]]
name = "WEB-FILES"
target = "WEB1"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "MAIL-FILES"
target = "MAIL1"
[[control_group.entry]]
path = "{d}/data/payroll"
[[control_group]]
name = "CONT-FILES"
target = "CONT1"
[[control_group.entry]]
path = "{d}/data/home"
[drills]
scratch = "{d}/drill-scratch"
[[control_group]]
name = "NIGHTLY"
target = "production"
[[control_group.entry]]
path = "{d}/data/payroll"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "PRE-CLOSE"
target = "production"
[[control_group.entry]]
path = "{d}/data/payroll"
[[control_group]]
name = "POST-CLOSE"
target = "production"
[[control_group.entry]]
path = "{d}/data/payroll"
[[control_group]]
name = "LATE-EXTRA"
target = "production"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "ORDERS-DB"
target = "production"
[[control_group.entry]]
path = "{d}/data/db"
data_class = "database"
[[schedule]]
control_group = "LATE-EXTRA"
cron = "0 22 * * MON-FRI"
[night]
pre_close = "PRE-CLOSE"
pre_close_at = "30 20 * * *"
post_close = "POST-CLOSE"
deadline = "0 23 * * *"
grace_minutes = 15
close_probe = "bash {sim} {d}/sim/{{lpar}} close"
close_probe_every_minutes = 5
quiesce_probe = "bash {sim} {d}/sim/{{lpar}} users"
quiesce_grace_minutes = 10
force_signoff = "bash {sim} {d}/sim/{{lpar}} signoff"
[night.contingency]
replication_probe = "bash {sim} {d}/sim/{{lpar}} replication"
max_backlog = 100
max_latency_seconds = 60
suspend = "bash {sim} {d}/sim/{{lpar}} end-apply"
resume = "bash {sim} {d}/sim/{{lpar}} start-apply"
[[media_policy]]
name = "ONE-DAY-SHRED"
retention_days = 1
shred_on_expiry = true
compress = true
[[media_policy]]
name = "TWO-VERSIONS"
retention_versions = 2
[[move_policy]]
name = "VAULT-7"
[[move_policy.step]]
location = "VAULT"
days = 7
[[location]]
name = "VAULT"
recall_hours = 24
emergency_recall_hours = 3
[[media_policy]]
name = "VAULTED"
retention_days = 30
move_policy = "VAULT-7"
[[control_group]]
name = "TO-VAULT"
target = "production"
media_policy = "VAULTED"
[[control_group.entry]]
path = "{d}/data/home"
[[media_policy]]
name = "ON-LTO9"
media_class = "LTO9"
[[media_policy]]
name = "DUPLICATED"
retention_days = 2
shred_on_expiry = true
media_class = "ONSITE"
copies = 2
copy_media_class = "OFFSITE"
copy_move_policy = "VAULT-7"
[[control_group]]
name = "DUPLICATED"
target = "production"
media_policy = "DUPLICATED"
[[control_group.entry]]
path = "{d}/data"
[[media_policy]]
name = "DUP-ORIGINAL-AWAY"
media_class = "ONSITE"
move_policy = "VAULT-7"
copies = 2
copy_media_class = "OFFSITE"
[[control_group]]
name = "DUP-ORIGINAL-AWAY"
target = "production"
media_policy = "DUP-ORIGINAL-AWAY"
[[control_group.entry]]
path = "{d}/data/home"
[[media_policy]]
name = "DUP-MORNING"
media_class = "ONSITE"
copies = 2
copy_media_class = "OFFSITE"
copy_schedule = "0 6 * * *"
[[control_group]]
name = "DUP-MORNING"
target = "production"
media_policy = "DUP-MORNING"
[[control_group.entry]]
path = "{d}/data/home"
[[media_policy]]
name = "COPY-NOWHERE"
media_class = "ONSITE"
copies = 2
copy_media_class = "NOWHERE"
[[control_group]]
name = "COPY-NOWHERE"
target = "production"
media_policy = "COPY-NOWHERE"
[[control_group.entry]]
path = "{d}/data/home"
[[media_policy]]
name = "ON-LTO8"
media_class = "LTO8"
[[control_group]]
name = "CLASS-LTO9"
target = "production"
media_policy = "ON-LTO9"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "CLASS-LTO8"
target = "production"
media_policy = "ON-LTO8"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "KEEP-1-DAY"
target = "production"
media_policy = "ONE-DAY-SHRED"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "KEEP-2"
target = "production"
media_policy = "TWO-VERSIONS"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "WITH-STEPS"
target = "production"
pre = ["echo ended on {{lpar}} >> {d}/steps.log"]
post = ["echo restarted >> {d}/steps.log"]
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "LIBS"
target = "production"
level = "incr"
[[control_group.entry]]
library = "PAYLIB"
[[control_group.entry]]
path = "{d}/data/home"
[[control_group]]
name = "NO-SUCH-LIB"
target = "production"
[[control_group.entry]]
library = "NOSUCHLIB"
[[control_group]]
name = "BAD-PRE"
target = "production"
pre = ["echo cannot end the subsystem >&2; exit 3"]
post = ["echo restarted >> {d}/steps.log"]
[[control_group.entry]]
path = "{d}/data/home"
"#,
                d = d.display(),
                sim = cinta_tests::repo()
                    .join("deploy/lpar-simulator.sh")
                    .display(),
                hook = hook_addr
            ),
        )
        .unwrap();
        for name in ["PROD1", "CONT1", "WEB1", "MAIL1"] {
            let lib = d.join(format!("lib-{name}"));
            ok(
                "cinta-agent",
                &[
                    "library",
                    "create",
                    lib.to_str().unwrap(),
                    "--name",
                    name,
                    "--slots",
                    "8",
                    "--drives",
                    "2",
                    "--ie-ports",
                    "1",
                    "--capacity",
                    "64M",
                    "--early-warning",
                    "1M",
                ],
            );
            ok(
                "cinta-agent",
                &[
                    "library",
                    "add",
                    lib.to_str().unwrap(),
                    "--prefix",
                    &name[..2],
                    "--count",
                    "3",
                ],
            );
            std::fs::write(
                d.join(format!("kmip-{name}.toml")),
                format!("server = \"{}\"\ncert = \"{pki}/{name}.pem\"\nkey = \"{pki}/{name}.key\"\nca = \"{pki}/ca.pem\"\n", kms.addr),
            )
            .unwrap();
        }
        // 2026-11-24 20:00 in Madrid (19:00 UTC): before tonight's pre-close at 20:30.
        std::fs::write(d.join("clock"), EVENING.to_string()).unwrap();
        let mut s = Site {
            kms,
            dir,
            controller: None,
            addr: String::new(),
            metrics: String::new(),
            hooks,
            agents: Default::default(),
        };
        s.start_controller();
        s
    }

    /// A site whose production agent (PROD1) has registered.
    fn with_production_agent() -> Site {
        let mut s = Site::new();
        s.start_agent("PROD1");
        s.until("the agent to register", Site::agent_connected);
        s
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn start_controller(&mut self) {
        let mut c = Command::new(cinta_tests::binary("cinta-controller"))
            .arg("--config")
            .arg(self.d().join("controller.toml"))
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.d().join("controller.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let mut m = String::new();
        out.read_line(&mut m).unwrap();
        self.metrics = m
            .trim()
            .strip_prefix("cinta-controller metrics on http://")
            .map(|a| a.trim_end_matches("/metrics").to_string())
            .unwrap_or_default();
        self.addr = line
            .trim()
            .strip_prefix("cinta-controller listening on ")
            .unwrap_or_else(|| panic!("controller: {line:?}"))
            .to_string();
        self.controller = Some(Proc(c));
        // Keep the port for restarts.
        let p = self.d().join("controller.toml");
        // (The first line; metrics_listen below keeps asking for a free port.)
        let cfg = std::fs::read_to_string(&p).unwrap().replacen(
            "\nlisten = \"127.0.0.1:0\"",
            &format!("\nlisten = \"{}\"", self.addr),
            1,
        );
        std::fs::write(p, cfg).unwrap();
    }

    fn start_agent(&mut self, name: &str) {
        let pki = self.kms.pki.display().to_string();
        let cfg = self.d().join(format!("agent-{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\ncontroller = \"{}\"\nserver_name = \"localhost\"\ncert = \"{pki}/{name}.pem\"\nkey = \"{pki}/{name}.key\"\nca = \"{pki}/ca.pem\"\nkmip = \"kmip-{name}.toml\"\n[[library]]\nname = \"default\"\npath = \"lib-{name}\"\n",
                self.addr
            ),
        )
        .unwrap();
        let a = Command::new(cinta_tests::binary("cinta-agent"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.d().join("agent.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.agents.insert(name.to_string(), Proc(a));
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_as("console", args)
    }

    /// cintactl with the certificate of `identity` (an operator, an agent, a stranger).
    fn ctl_as(&self, identity: &str, args: &[&str]) -> Output {
        let pki = &self.kms.pki;
        Command::new(cinta_tests::binary("cintactl"))
            .args([
                "--controller",
                &self.addr,
                "--server-name",
                "localhost",
                "--json",
            ])
            .arg("--cert")
            .arg(pki.join(format!("{identity}.pem")))
            .arg("--key")
            .arg(pki.join(format!("{identity}.key")))
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "cintactl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Waits (polling the console, not a clock) until `f` holds.
    fn until(&self, what: &str, f: impl Fn(&Site) -> bool) {
        let t = Instant::now();
        while !f(self) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; agent log: {}",
                std::fs::read_to_string(self.d().join("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn connected(&self, name: &str) -> bool {
        self.ctl_json(&["agents"])
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name && a["connected"] == true)
    }

    fn agent_connected(&self) -> bool {
        self.connected("PROD1")
    }
}

/// 2026-11-24 19:00:00 UTC, 20:00 in Madrid.
const EVENING: i64 = 1_795_546_800;

impl Site {
    /// Sends `vol` to the vault by its move policy: the move started, the
    /// eject job done, the cartridge carried and its arrival confirmed.
    /// Returns where its image was carried.
    fn send_to_vault(&self, vol: &str) -> PathBuf {
        self.ctl_json(&["moves", "start", vol]);
        self.until("the eject job to end", |s| s.volume(vol)["move_job"] == "");
        let carried = self.d().join(format!("{vol}.tap"));
        self.carry_to_vault(vol, &carried);
        carried
    }

    /// The operator takes `vol` out of the import/export port (its image
    /// to `carried`) and confirms it arrived at the vault.
    fn carry_to_vault(&self, vol: &str, carried: &Path) {
        ok(
            "cinta-agent",
            &[
                "library",
                "remove",
                lib(self).to_str().unwrap(),
                vol,
                "--to",
                carried.to_str().unwrap(),
            ],
        );
        let r = self.ctl_json(&["moves", "confirm", vol]);
        assert_eq!(r["volumes"][0]["location"], "VAULT", "{r}");
    }

    /// A volume as `cintactl volumes` lists it.
    fn volume(&self, volser: &str) -> serde_json::Value {
        self.ctl_json(&["volumes"])
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["volser"] == volser)
            .cloned()
            .unwrap_or_else(|| panic!("{volser} not listed"))
    }

    /// Moves the controller's clock to EVENING + `minutes`.
    fn at(&self, minutes: i64) {
        std::fs::write(self.d().join("clock"), (EVENING + minutes * 60).to_string()).unwrap();
    }

    /// Starts the agents of both LPARs and waits until both are connected.
    fn start_both_agents(&mut self) {
        self.start_agent("PROD1");
        self.start_agent("CONT1");
        self.until("both agents", |s| {
            s.connected("PROD1") && s.connected("CONT1")
        });
    }

    /// 20:31: the pre-close save has run; waits for the close window.
    fn reach_close_window(&self) {
        self.at(31);
        self.until("the close window", |s| {
            s.tonight()["state"] == "close-window"
        });
    }

    /// A restore request of `path` on PROD1 into `to`; its id.
    fn request_restore(&self, path: &str, to: &Path, ticket: &str, requester: &str) -> String {
        let r = self.ctl_json(&[
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            path,
            "--to",
            to.to_str().unwrap(),
            "--ticket",
            ticket,
            "--requester",
            requester,
        ]);
        r["id"].as_str().unwrap().to_string()
    }

    /// The evidence of 2026Q4 as the auditor reads it, as JSON.
    fn evidence(&self) -> serde_json::Value {
        let o = self.ctl_as(
            "auditor",
            &[
                "report",
                "evidence",
                "--quarter",
                "2026Q4",
                "--format",
                "json",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Waits until restore request `id` is verified; what it shows then.
    fn until_verified(&self, id: &str) -> serde_json::Value {
        self.until("the restore request to be verified", |s| {
            s.ctl_json(&["restore", "show", id])["state"] == "verified"
        });
        self.ctl_json(&["restore", "show", id])
    }

    fn tonight(&self) -> serde_json::Value {
        let o = self.ctl(&["tonight"]);
        if !o.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// GET /metrics, checked to be a 200 answer.
fn metrics(s: &Site) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&s.metrics).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

fn lib(s: &Site) -> PathBuf {
    s.d().join("lib-PROD1")
}

#[test]
fn a_control_group_runs_on_its_lpar_from_the_console_and_restores() {
    let mut s = Site::new();
    // Without a console certificate there is no answer.
    let o = Command::new(cinta_tests::binary("cintactl"))
        .args(["--controller", &s.addr, "agents"])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("mutual TLS"));
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let agents = s.ctl_json(&["agents"]);
    assert_eq!(agents[0]["role"], "production");
    assert_eq!(agents[0]["libraries"][0]["scratch"], 3);

    let job = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["agent"], "PROD1");
    let sets = job["save_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{job}");
    for set in sets {
        assert!(
            set["key_id"].as_str().unwrap().starts_with("kmip:"),
            "{set}"
        );
    }
    // The data is on the LPAR's tape, restorable with the key manager's key.
    let out = s.d().join("restored");
    let id = sets[0]["id"].as_str().unwrap();
    ok(
        "cinta-agent",
        &[
            "restore",
            lib(&s).to_str().unwrap(),
            "--kmip",
            s.d().join("kmip-PROD1.toml").to_str().unwrap(),
            "--save-set",
            id,
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let src = s.d().join("data/payroll/ledger.dat");
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(&src).unwrap()
    );

    // The controller restarts: the job is still there, the agent comes back.
    drop(s.controller.take());
    s.start_controller();
    let jobs = s.ctl_json(&["jobs"]);
    assert_eq!(jobs[0]["id"], job["id"]);
    assert_eq!(jobs[0]["state"], "succeeded");
    s.until("the agent to reconnect", Site::agent_connected);
    let again = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(again["state"], "succeeded", "{again}");
}

#[test]
fn an_agent_killed_mid_job_fails_the_job_and_leaves_no_save_set_recorded() {
    let mut s = Site::new();
    // Enough data that the save is still running when the agent dies.
    let big = s.d().join("data/payroll/big.dat");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..48 {
            f.write_all(&chunk).unwrap();
        }
    }
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let job = s.ctl_json(&["run", "NIGHTLY"]);
    let id = job["id"].as_str().unwrap().to_string();
    s.until("the job to start", |s| {
        s.ctl_json(&["job", &id])["state"] == "running"
    });
    drop(s.agents.remove("PROD1")); // SIGKILL: the save child dies with it
    s.start_agent("PROD1");
    s.until("the job to be failed", |s| {
        s.ctl_json(&["job", &id])["state"] == "failed"
    });
    let j = s.ctl_json(&["job", &id]);
    assert!(j["message"].as_str().unwrap().contains("restarted"), "{j}");
    // The job lists no save set; whatever the agent's catalog holds was
    // finished before the kill and verifies whole (the save cut short left
    // no record); the library takes the next run.
    assert!(j["save_sets"].as_array().unwrap().is_empty(), "{j}");
    let ls: serde_json::Value = serde_json::from_str(&ok(
        "cinta-agent",
        &["ls", lib(&s).to_str().unwrap(), "--json"],
    ))
    .unwrap();
    for r in ls.as_array().unwrap() {
        ok(
            "cinta-agent",
            &[
                "verify",
                lib(&s).to_str().unwrap(),
                "--kmip",
                s.d().join("kmip-PROD1.toml").to_str().unwrap(),
                "--save-set",
                r["id"].as_str().unwrap(),
            ],
        );
    }
    let again = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(again["state"], "succeeded", "{again}");
}

#[test]
fn a_python_grpc_client_built_from_the_protos_lists_agents_and_starts_a_job() {
    let s = Site::with_production_agent();
    let o = grpc_script(&s, "grpc_console.py", "console")
        .args(["--run", "NIGHTLY"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["agents"][0]["name"], "PROD1");
    assert_eq!(doc["agents"][0]["connected"], true);
    let id = doc["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(doc["job"]["agent"], "PROD1");
    s.until("the Python-started job to succeed", |s| {
        s.ctl_json(&["job", &id])["state"] == "succeeded"
    });
}

/// A gRPC client script of tests/python, run as `identity` (a certificate
/// of the site's PKI) against the site's controller.
fn grpc_script(s: &Site, script: &str, identity: &str) -> Command {
    let pki = &s.kms.pki;
    let mut c = Command::new(grpc_python());
    c.arg(cinta_tests::repo().join("tests/python").join(script))
        .args(["--target", &s.addr, "--server-name", "localhost"])
        .arg("--cert")
        .arg(pki.join(format!("{identity}.pem")))
        .arg("--key")
        .arg(pki.join(format!("{identity}.key")))
        .arg("--ca")
        .arg(pki.join("ca.pem"));
    c
}

/// The Python interpreter with grpcio (made once by tests/python/setup.sh).
fn grpc_python() -> PathBuf {
    match std::env::var("CINTA_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let o = Command::new("bash")
                .arg(cinta_tests::repo().join("tests/python/setup.sh"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
        }
    }
}

#[test]
fn an_agent_cannot_claim_a_recorded_save_set_as_its_jobs() {
    let mut s = Site::with_production_agent();
    let job = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["save_sets"][0]["id"].as_str().unwrap().to_string();
    let sets_before = s.ctl_json(&["save-sets"]);
    // The agent's process is replaced by one that, given its next job,
    // reports objects into that save set and names it as the job's own.
    drop(s.agents.remove("PROD1"));
    let mut second = serde_json::Value::Null;
    let doc = rogue_agent(&s, &["--claim", &id], || {
        second = s.ctl_json(&["run", "NIGHTLY"]);
    });
    assert_eq!(doc["job"], second["id"], "{doc}");
    // Objects under no job at all are refused before anything else.
    assert_eq!(
        doc["report_without_job"]["code"], "FAILED_PRECONDITION",
        "{doc}"
    );
    assert!(
        doc["report_without_job"]["message"]
            .as_str()
            .unwrap()
            .contains("job  is not running on PROD1"),
        "{doc}"
    );
    for call in ["report_objects", "finish_claiming"] {
        assert_eq!(doc[call]["code"], "FAILED_PRECONDITION", "{call}: {doc}");
        assert!(
            doc[call]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("save set {id} is recorded already")),
            "{call}: {doc}"
        );
    }
    assert_eq!(doc["finish_plainly"]["code"], "OK", "{doc}");
    // The record is as the first job left it; nothing was planted in it.
    assert_eq!(s.ctl_json(&["save-sets"]), sets_before);
    let found = s.ctl_json(&["find", "*/planted"]);
    assert_eq!(found["objects"].as_array().unwrap().len(), 0, "{found}");
    let ended = s.ctl_json(&["job", second["id"].as_str().unwrap()]);
    assert_eq!(ended["state"], "failed", "{ended}");
}

/// Runs `grpc_rogue_agent.py` as PROD1 with `args`; once it has registered,
/// `queue` gives it work. Returns the JSON document it prints.
fn rogue_agent(s: &Site, args: &[&str], queue: impl FnOnce()) -> serde_json::Value {
    let mut rogue = grpc_script(s, "grpc_rogue_agent.py", "PROD1")
        .args(["--name", "PROD1"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(rogue.stdout.take().unwrap()));
    if !lines
        .next()
        .is_some_and(|l| l.unwrap().contains("registered"))
    {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut rogue.stderr.take().unwrap(), &mut err).unwrap();
        panic!("the rogue agent did not register: {err}");
    }
    queue();
    let doc: serde_json::Value = match lines.next() {
        Some(l) => serde_json::from_str(&l.unwrap()).unwrap(),
        None => {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut rogue.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the rogue agent said nothing: {err}");
        }
    };
    assert!(rogue.wait().unwrap().success());
    doc
}

#[test]
fn a_save_set_being_made_is_its_jobs_alone_and_is_forgotten_if_never_finished() {
    let s = Site::new();
    // A grpcio "agent" takes two jobs. The first reports an object into a
    // new save set; the second reports into the same one and claims it.
    let mut jobs = Vec::new();
    let doc = rogue_agent(&s, &["--plant", "S-UNFINISHED"], || {
        for _ in 0..2 {
            jobs.push(s.ctl_json(&["run", "NIGHTLY"])["id"].clone());
        }
    });
    assert_eq!(doc["jobs"].as_array(), Some(&jobs), "{doc}");
    assert_eq!(doc["first_reports"]["code"], "OK", "{doc}");
    for call in ["second_reports", "second_finish_claiming"] {
        assert_eq!(doc[call]["code"], "FAILED_PRECONDITION", "{call}: {doc}");
        assert!(
            doc[call]["message"].as_str().unwrap().contains(&format!(
                "save set S-UNFINISHED is job {}'s",
                jobs[0].as_str().unwrap()
            )),
            "{call}: {doc}"
        );
    }
    for call in ["second_finish_plainly", "first_finish_plainly"] {
        assert_eq!(doc[call]["code"], "OK", "{call}: {doc}");
    }
    // Both jobs failed: the save set was never recorded, and what the first
    // reported into it is forgotten with it; the second planted nothing.
    assert_eq!(s.ctl_json(&["save-sets"]), serde_json::json!([]));
    let catalog = cinta_controller::catalog::open(&s.d().join("catalog.db"), None).unwrap();
    assert_eq!(catalog.find_objects("etc/*", 10).unwrap(), []);
}

#[test]
fn exit_steps_run_around_the_saves_and_post_steps_run_after_a_failure() {
    let s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "WITH-STEPS", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        std::fs::read_to_string(s.d().join("steps.log")).unwrap(),
        "ended on PROD1\nrestarted\n"
    );
    let o = s.ctl(&["run", "BAD-PRE", "--wait"]);
    assert!(!o.status.success(), "a failed job exits 1");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "failed");
    let m = j["message"].as_str().unwrap();
    assert!(
        m.contains("pre step")
            && m.contains("cannot end the subsystem")
            && m.contains("saves skipped"),
        "{m}"
    );
    assert!(j["save_sets"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(s.d().join("steps.log")).unwrap(),
        "ended on PROD1\nrestarted\nrestarted\n",
        "the post step ran after the failed pre step"
    );
}

#[test]
fn after_a_role_switch_control_groups_follow_the_role() {
    let mut s = Site::new();
    s.start_both_agents();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(
        (j["agent"].as_str(), j["state"].as_str()),
        (Some("PROD1"), Some("succeeded"))
    );
    // Failover: the contingency LPAR becomes production.
    let roles = s.ctl_json(&["switch-role", "CONT1", "production"]);
    assert_eq!(roles["CONT1"], "production");
    assert_eq!(roles["PROD1"], "contingency");
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(
        (j["agent"].as_str(), j["state"].as_str()),
        (Some("CONT1"), Some("succeeded")),
        "{j}"
    );
    // The saves are in CONT1's library.
    let ls: serde_json::Value = serde_json::from_str(&ok(
        "cinta-agent",
        &["ls", s.d().join("lib-CONT1").to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
    let agents = s.ctl_json(&["agents"]);
    let role = |n: &str| {
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()["role"]
            .clone()
    };
    assert_eq!(role("CONT1"), "production");
    // The switch survives a controller restart.
    drop(s.controller.take());
    s.start_controller();
    let j = s.ctl_json(&["run", "NIGHTLY"]);
    assert_eq!(j["agent"], "CONT1");
    let e = s.ctl(&["switch-role", "NOPE", "production"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("no LPAR"));
}

#[test]
fn a_normal_night_with_a_controller_restart_in_the_close_window() {
    let mut s = Site::with_production_agent();
    assert!(s.tonight().is_null(), "no night before the pre-close time");
    s.at(31); // 20:31 local: the pre-close save runs
    s.until("the pre-close save and the close window", |s| {
        s.tonight()["state"] == "close-window"
    });
    let n = s.tonight();
    let pre = s.ctl_json(&["job", n["pre_close_job"].as_str().unwrap()]);
    assert_eq!(
        (pre["control_group"].as_str(), pre["state"].as_str()),
        (Some("PRE-CLOSE"), Some("succeeded"))
    );
    // The controller dies in the close window and comes back: tonight goes on.
    drop(s.controller.take());
    s.start_controller();
    assert_eq!(s.tonight()["state"], "close-window");
    s.at(150); // 22:30: the close finishes before its deadline
    s.until("the agent to reconnect", Site::agent_connected);
    // The 22:00 weekday schedule (a Tuesday) fired once on the way.
    s.until("the scheduled job", |s| {
        s.ctl_json(&["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["control_group"] == "LATE-EXTRA")
            .count()
            == 1
    });
    let n = s.ctl_json(&["close", "finished"]);
    assert_eq!(n["state"], "quiesce-check", "{n}");
    s.until("the post-close save", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    assert_eq!(n["escalated"], false);
    let post = s.ctl_json(&["job", n["post_close_job"].as_str().unwrap()]);
    assert_eq!(
        (post["control_group"].as_str(), post["state"].as_str()),
        (Some("POST-CLOSE"), Some("succeeded"))
    );
    let timeline = n["timeline"].to_string();
    assert!(
        timeline.contains("production is quiet")
            && timeline.contains("pre-close save succeeded")
            && timeline.contains("close finished")
            && timeline.contains("night done"),
        "{timeline}"
    );
    assert_eq!(n["id"], "2026-11-24");
}

#[test]
fn a_close_that_slips_past_its_deadline_is_escalated_and_the_post_close_still_runs() {
    let s = Site::with_production_agent();
    s.reach_close_window();
    s.ctl_json(&["close", "started"]);
    s.at(4 * 60 - 5); // 23:55 local... past 23:00 + 15 min grace
    s.until("the escalation", |s| s.tonight()["escalated"] == true);
    let n = s.tonight();
    assert_eq!(n["state"], "close-window", "still waiting for the close");
    assert!(n["timeline"].to_string().contains("ESCALATION"), "{n}");
    s.at(4 * 60 + 20); // 00:20: the close finally ends
    s.ctl_json(&["close", "finished"]);
    s.until("the post-close save", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    let post = s.ctl_json(&["job", n["post_close_job"].as_str().unwrap()]);
    assert_eq!(post["state"], "succeeded");
    // A second signal is refused by name.
    let o = s.ctl(&["close", "finished"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no night in progress")
    );
}

/// Both LPARs' agents up, the pre-close save done, then the close finished
/// at 22:30 with `users` still signed on to production and the replica
/// `backlog` entries and `latency` seconds behind; waits out the quiesce
/// grace (to 22:41) and returns once the night is done.
fn night_with_users_on(users: u32, backlog: u32, latency: u32) -> Site {
    let s = fallback_begins(users, backlog, latency, |_| {});
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    s
}

/// A night whose users stay signed on, up to 22:41 (past the grace period:
/// the fallback begins); `setup` prepares the simulated LPARs first.
fn fallback_begins(users: u32, backlog: u32, latency: u32, setup: impl FnOnce(&Path)) -> Site {
    let mut s = Site::new();
    s.start_both_agents();
    s.reach_close_window();
    let sim = s.d().join("sim");
    std::fs::create_dir_all(sim.join("PROD1")).unwrap();
    std::fs::create_dir_all(sim.join("CONT1")).unwrap();
    std::fs::write(sim.join("PROD1/users"), format!("{users}\n")).unwrap();
    std::fs::write(sim.join("CONT1/backlog"), format!("{backlog}\n")).unwrap();
    std::fs::write(sim.join("CONT1/latency"), format!("{latency}\n")).unwrap();
    // Their jobs do not end when the sign-off policy runs.
    std::fs::write(sim.join("PROD1/stay"), "").unwrap();
    s.at(150);
    s.ctl_json(&["close", "finished"]);
    s.until("the quiesce wait", |s| {
        s.tonight()["state"] == "quiesce-wait"
    });
    setup(&sim);
    s.at(150 + 11); // the grace has passed and they are still there
    s
}

#[test]
fn users_still_signed_on_fall_back_to_contingency_end_to_end() {
    // Users are still signed on when the close finishes; replication is a little behind.
    let s = night_with_users_on(3, 7, 2);
    let sim = s.d().join("sim");
    let n = s.tonight();
    let t = n["timeline"].to_string();
    for want in [
        "3 users still signed on",
        "forcing sign-off (policy)",
        "sign-off ran: ENDJOB: 3 jobs would not end",
        "FALLBACK to contingency",
        "replication healthy (backlog 7, latency 2s)",
        "recovery point: journal sequence",
        "contingency save",
        "apply resumed",
        "must move to the main site",
    ] {
        assert!(t.contains(want), "{want:?} not in the timeline: {t}");
    }
    assert_eq!(n["post_close_job"], "", "no post-close save on production");
    assert_eq!(apply_state(&sim), "active", "replication runs again");
    // The contingency save is in CONT1's library and restores the production data (replicated there).
    let ls: serde_json::Value = serde_json::from_str(&ok(
        "cinta-agent",
        &["ls", s.d().join("lib-CONT1").to_str().unwrap(), "--json"],
    ))
    .unwrap();
    let set = &ls.as_array().unwrap()[0];
    let out = s.d().join("restored-cont");
    ok(
        "cinta-agent",
        &[
            "restore",
            s.d().join("lib-CONT1").to_str().unwrap(),
            "--kmip",
            s.d().join("kmip-CONT1.toml").to_str().unwrap(),
            "--save-set",
            set["id"].as_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let src = s.d().join("data/payroll/ledger.dat");
    assert_eq!(
        std::fs::read(out.join(src.strip_prefix("/").unwrap())).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // The cartridge written at the contingency site is on the move list for
    // the main site; once carried and confirmed it stays there.
    let due = s.ctl_json(&["volumes", "--moves"]);
    let v = &due.as_array().unwrap()[0];
    assert_eq!(
        (v["agent"].as_str(), v["next_move_to"].as_str()),
        (Some("CONT1"), Some("SITE main")),
        "{due}"
    );
    let vol = v["volser"].as_str().unwrap().to_string();
    s.ctl_json(&["moves", "start", &vol]);
    s.until("the eject", |s| {
        s.ctl_json(&["volumes"])
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["volser"] == vol.as_str() && v["move_job"] == "")
    });
    let r = s.ctl_json(&["moves", "confirm", &vol]);
    assert_eq!(r["volumes"][0]["location"], "SITE main", "{r}");
    assert_eq!(r["volumes"][0]["next_move_to"], "", "{r}");
    // The backup log shows the night's fallback and the contingency save
    // (run on CONT1, its cartridge carried to the main site).
    let log = s.ctl_json(&["report", "backups", "--from", "2026-11-24"]);
    let nights = log["nights"].to_string();
    assert!(nights.contains("fallback.taken"), "{nights}");
    let cont = log["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["server"] == "CONT1")
        .unwrap_or_else(|| panic!("no contingency run: {log}"));
    assert_eq!(cont["state"], "succeeded", "{cont}");
    assert_eq!(
        cont["save_sets"][0]["copies"][0]["locations"][0], "SITE main",
        "{cont}"
    );
}

#[test]
fn an_unhealthy_replica_is_not_saved_and_the_night_is_escalated() {
    let s = night_with_users_on(1, 5000, 0);
    let sim = s.d().join("sim");
    let n = s.tonight();
    assert_eq!(n["escalated"], true);
    assert!(
        n["timeline"]
            .to_string()
            .contains("replication unhealthy (backlog 5000 > 100"),
        "{n}"
    );
    assert!(
        !sim.join("CONT1/apply").exists(),
        "apply was never suspended"
    );
}

#[test]
fn events_reach_the_console_the_webhook_and_the_metrics_endpoint() {
    let s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded");
    // A heartbeat above the (tiny) usage threshold raised one event, not one per heartbeat.
    s.until("the threshold event", |s| {
        s.ctl_json(&["events"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "threshold.crossed")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let events = s.ctl_json(&["events", "--limit", "200"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "threshold.crossed").count(),
        1,
        "{kinds:?}"
    );
    for k in [
        "agent.registered",
        "job.queued",
        "job.started",
        "job.succeeded",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // The same events went to the webhook, as JSON.
    s.until("the webhook", |s| {
        s.hooks
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("job.succeeded"))
    });
    let first: serde_json::Value = serde_json::from_str(&s.hooks.lock().unwrap()[0]).unwrap();
    assert!(first["kind"].is_string() && first["time"].is_i64());
    // And the Prometheus endpoint counts them.
    let body = metrics(&s);
    for want in [
        "cinta_agents{state=\"connected\"} 1",
        "cinta_jobs{state=\"succeeded\"} 1",
        "cinta_events_total{kind=\"job.succeeded\"} 1",
        "cinta_agent_usage_percent{agent=\"PROD1\",what=\"/\"}",
        "cinta_night_escalated 0",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}

#[test]
fn media_policies_expire_save_sets_by_date_with_shredding_and_by_versions() {
    let s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "KEEP-1-DAY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let id = j["save_sets"][0]["id"].as_str().unwrap().to_string();
    let uid = j["save_sets"][0]["key_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("kmip:")
        .to_string();
    let set = |s: &Site, id: &str| -> serde_json::Value {
        s.ctl_json(&["save-sets"])
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .cloned()
            .unwrap()
    };
    let rec = set(&s, &id);
    assert_eq!(rec["state"], "active");
    assert_eq!(
        rec["expires"].as_i64().unwrap(),
        rec["created"].as_i64().unwrap() + 86_400
    );
    // The policy's compression reached the save.
    let ls: serde_json::Value = serde_json::from_str(&ok(
        "cinta-agent",
        &["ls", lib(&s).to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(
        ls.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap()["compression"],
        true
    );

    // Three saves under "two versions": the oldest goes (its key stays: no shredding in that policy).
    let mut v = Vec::new();
    for _ in 0..3 {
        let j = s.ctl_json(&["run", "KEEP-2", "--wait"]);
        v.push(j["save_sets"][0]["id"].as_str().unwrap().to_string());
    }
    s.until("the oldest version to expire", |s| {
        set(s, &v[0])["state"] == "expired"
    });
    assert_eq!(set(&s, &v[1])["state"], "active");
    assert_eq!(set(&s, &v[2])["state"], "active");

    // A day later the one-day save set expires, and its key is destroyed.
    s.at(24 * 60 + 1);
    s.until("the one-day save set to expire", |s| {
        set(s, &id)["state"] == "expired"
    });
    let key: serde_json::Value =
        serde_json::from_str(&s.kms.admin_ok(&["--json", "keys", "show", &uid])).unwrap();
    assert_eq!(key["key"]["state"], "Destroyed", "{key}");
    let ls: serde_json::Value = serde_json::from_str(&ok(
        "cinta-agent",
        &["ls", lib(&s).to_str().unwrap(), "--json"],
    ))
    .unwrap();
    let ids: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&id.as_str()) && !ids.contains(&v[0].as_str()),
        "{ids:?}"
    );
    let events = s.ctl_json(&["events", "--limit", "200"]).to_string();
    assert!(events.contains("(key destroyed)"), "{events}");
    // Expired save sets are out of object searches; the versions kept are in.
    let found = s.ctl_json(&["find", "*/note.txt"]);
    let in_sets: Vec<&str> = found["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["save_set"].as_str().unwrap())
        .collect();
    assert!(
        in_sets.contains(&v[1].as_str()) && in_sets.contains(&v[2].as_str()),
        "{found}"
    );
    assert!(
        !in_sets.contains(&v[0].as_str()) && !in_sets.contains(&id.as_str()),
        "{found}"
    );
}

#[test]
fn the_close_probe_on_production_ends_the_close_window_without_an_operator() {
    let s = Site::with_production_agent();
    s.reach_close_window();
    // The close is still running at 21:00...
    s.at(60);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.tonight()["state"], "close-window");
    // ...and has finished by 21:10: the next probe says so and the post-close save runs.
    std::fs::create_dir_all(s.d().join("sim/PROD1")).unwrap();
    std::fs::write(s.d().join("sim/PROD1/close"), "finished\n").unwrap();
    s.at(70);
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    assert!(
        n["timeline"]
            .to_string()
            .contains("reported by the close probe"),
        "{n}"
    );
    assert_eq!(
        s.ctl_json(&["job", n["post_close_job"].as_str().unwrap()])["state"],
        "succeeded"
    );
}

#[test]
fn a_forced_sign_off_by_policy_quiesces_production_and_the_post_close_runs_there() {
    let mut s = Site::new();
    s.start_both_agents();
    s.reach_close_window();
    let sim = s.d().join("sim");
    std::fs::create_dir_all(sim.join("PROD1")).unwrap();
    std::fs::write(sim.join("PROD1/users"), "2\n").unwrap();
    s.at(150);
    s.ctl_json(&["close", "finished"]);
    s.until("the quiesce wait", |s| {
        s.tonight()["state"] == "quiesce-wait"
    });
    s.at(150 + 11);
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    let t = n["timeline"].to_string();
    for want in [
        "2 users still signed on after the grace period; forcing sign-off (policy)",
        "sign-off ran: ended 2 interactive jobs",
        "production is quiet",
        "post-close save succeeded",
    ] {
        assert!(t.contains(want), "{want:?} not in the timeline: {t}");
    }
    assert!(!t.contains("FALLBACK"), "{t}");
    assert_ne!(n["post_close_job"], "");
    let ev = s.ctl_json(&["events"]).to_string();
    assert!(ev.contains("signoff.forced"), "{ev}");
}

/// Files below `d`, as (relative path, bytes), sorted.
fn tree(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().strip_prefix(d).unwrap().to_path_buf(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_ibm_i_library_is_saved_through_a_save_file_and_a_failed_savlib_records_nothing() {
    let mut s = Site::new();
    let libs = s.d().join("sim/PROD1/libs/PAYLIB");
    std::fs::create_dir_all(libs.join("QCLSRC.FILE")).unwrap();
    std::fs::write(libs.join("LEDGER.FILE"), vec![7u8; 300_000]).unwrap();
    std::fs::write(libs.join("QCLSRC.FILE/CLOSE.MBR"), b"PGM\nENDPGM\n").unwrap();
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    // A full save of the paths first: LIBS is an incremental group (its library is saved whole all the same).
    let full = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(full["state"], "succeeded", "{full}");

    let job = s.ctl_json(&["run", "LIBS", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let sets = job["save_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{job}");
    assert!(
        sets[0]["source"].as_str().unwrap().contains("PAYLIB.SAVF"),
        "{job}"
    );
    // The save file comes back out of the save set and RSTLIB restores the library on another LPAR.
    let out = s.d().join("restored-lib");
    let kmip = s.d().join("kmip-PROD1.toml");
    ok(
        "cinta-agent",
        &[
            "restore",
            lib(&s).to_str().unwrap(),
            "--kmip",
            kmip.to_str().unwrap(),
            "--save-set",
            sets[0]["id"].as_str().unwrap(),
            "--select",
            "PAYLIB.SAVF",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let savf = std::fs::File::open(out.join("PAYLIB.SAVF")).unwrap();
    let other = s.d().join("sim/OTHER");
    let o = Command::new("bash")
        .arg(cinta_tests::repo().join("deploy/lpar-simulator.sh"))
        .arg(&other)
        .args(["rstlib", "PAYLIB"])
        .stdin(savf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tree(&other.join("libs/PAYLIB")), tree(&libs));

    // SAVLIB fails part-way: the entry fails with IBM i's message, and no
    // save set of the half save file is recorded anywhere.
    let listed = |s: &Site| {
        serde_json::from_str::<serde_json::Value>(&ok(
            "cinta-agent",
            &["ls", lib(s).to_str().unwrap(), "--json"],
        ))
        .unwrap()
        .as_array()
        .unwrap()
        .len()
    };
    let before = listed(&s);
    std::fs::write(s.d().join("sim/PROD1/fail-save"), "").unwrap();
    // (cintactl run --wait exits non-zero for a failed job, printing it.)
    let failed = |s: &Site, group: &str| -> serde_json::Value {
        let o = s.ctl(&["run", group, "--wait"]);
        assert!(!o.status.success());
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let job = failed(&s, "LIBS");
    assert_eq!(job["state"], "failed", "{job}");
    let m = job["message"].as_str().unwrap();
    assert!(m.contains("entry PAYLIB") && m.contains("CPF3777"), "{m}");
    assert!(job["save_sets"].as_array().unwrap().is_empty(), "{job}");
    assert_eq!(listed(&s), before, "nothing recorded by the agent");
    let sets = s.ctl_json(&["save-sets"]);
    assert_eq!(sets.as_array().unwrap().len(), 4, "{sets}");
    // The library takes the next save once SAVLIB works again; a missing library is named.
    std::fs::remove_file(s.d().join("sim/PROD1/fail-save")).unwrap();
    let job = failed(&s, "NO-SUCH-LIB");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("CPF3781: Library NOSUCHLIB not found"),
        "{job}"
    );
    let job = s.ctl_json(&["run", "LIBS", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[test]
fn a_running_job_is_watched_live_from_the_console() {
    let mut s = Site::new();
    let libs = s.d().join("sim/PROD1/libs/PAYLIB");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::write(libs.join("LEDGER.FILE"), vec![9u8; 3_000_000]).unwrap();
    // SAVLIB pauses after the first 2.5 MB: the job is seen running, part done.
    std::fs::write(s.d().join("sim/PROD1/slow-save"), "3\n").unwrap();
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    s.ctl_json(&["run", "NIGHTLY", "--wait"]); // a full save of the paths LIBS adds incrementally
    let job = s.ctl_json(&["run", "LIBS"]);
    let id = job["id"].as_str().unwrap().to_string();
    let pki = &s.kms.pki;
    let watcher = |json: bool| {
        let mut c = Command::new(cinta_tests::binary("cintactl"));
        c.args(["--controller", &s.addr, "--server-name", "localhost"])
            .arg("--cert")
            .arg(pki.join("console.pem"))
            .arg("--key")
            .arg(pki.join("console.key"))
            .arg("--ca")
            .arg(pki.join("ca.pem"));
        if json {
            c.arg("--json");
        }
        c.args(["watch", &id])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (lines, plain) = (watcher(true), watcher(false));
    let lines = lines.wait_with_output().unwrap();
    let plain = plain.wait_with_output().unwrap();
    assert!(lines.status.success() && plain.status.success());
    let seen: Vec<serde_json::Value> = String::from_utf8_lossy(&lines.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mid = seen
        .iter()
        .find(|j| j["state"] == "running" && j["bytes"].as_u64().unwrap() > 0)
        .unwrap_or_else(|| panic!("no progress while running: {seen:?}"));
    assert_eq!(mid["current"], "library PAYLIB", "{mid}");
    assert!(mid["bytes"].as_u64().unwrap() < 3_000_000, "{mid}");
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["entries_done"], 2, "{last}");
    // Without --json and not on a terminal: plain progress lines, then the job.
    let text = String::from_utf8_lossy(&plain.stdout);
    // A save file's size is not known while it is made: bytes and rate, no bar.
    assert!(
        text.contains("running  ")
            && text.contains("(size not known)")
            && text.contains("entry 1/2: library PAYLIB"),
        "{text}"
    );
    assert!(
        text.contains(&format!("job {id} (LIBS) on PROD1: succeeded")),
        "{text}"
    );
}

#[test]
fn a_watched_subsystem_going_down_and_up_raises_events_everywhere() {
    let mut s = Site::new();
    s.start_agent("PROD1");
    let watched = |s: &Site| -> serde_json::Value {
        s.ctl_json(&["agents"])
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "PROD1")
            .map(|a| a["watched"].clone())
            .unwrap_or_default()
    };
    s.until("the watch to be reported up", |s| {
        watched(s)[0]["ok"] == true
    });
    assert_eq!(watched(&s)[0]["name"], "subsystem QINTER");
    assert!(watched(&s)[0]["detail"]
        .as_str()
        .unwrap()
        .contains("QINTER ACTIVE"));
    std::fs::write(s.d().join("sim/PROD1/down-QINTER"), "").unwrap();
    s.until("the watch to be reported down", |s| {
        watched(s)[0]["ok"] == false
    });
    let events = |s: &Site| s.ctl_json(&["events"]).to_string();
    s.until("watch.down", |s| events(s).contains("watch.down"));
    assert!(
        events(&s).contains("PROD1: subsystem QINTER is DOWN: QINTER INACTIVE"),
        "{}",
        events(&s)
    );
    let table = Command::new(cinta_tests::binary("cintactl"))
        .args(["--controller", &s.addr, "--server-name", "localhost"])
        .arg("--cert")
        .arg(s.kms.pki.join("console.pem"))
        .arg("--key")
        .arg(s.kms.pki.join("console.key"))
        .arg("--ca")
        .arg(s.kms.pki.join("ca.pem"))
        .arg("agents")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("subsystem QINTER DOWN"), "{table}");
    let m = metrics(&s);
    assert!(
        m.contains("cinta_watch_up{agent=\"PROD1\",name=\"subsystem QINTER\"} 0"),
        "{m}"
    );
    std::fs::remove_file(s.d().join("sim/PROD1/down-QINTER")).unwrap();
    s.until("watch.up", |s| events(s).contains("watch.up"));
    s.until("the webhook to get both", |s| {
        let h = s.hooks.lock().unwrap();
        h.iter().any(|b| b.contains("watch.down")) && h.iter().any(|b| b.contains("watch.up"))
    });
    // One event per change, not per heartbeat.
    let ev = s.ctl_json(&["events", "--limit", "200"]);
    let downs = ev
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "watch.down")
        .count();
    assert_eq!(downs, 1, "{ev}");
}

#[test]
fn cartridges_rotate_to_the_vault_and_back_by_move_policy_with_confirmed_moves() {
    let s = Site::with_production_agent();
    let job = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let vol = job["save_sets"][0]["volumes"][0]
        .as_str()
        .unwrap()
        .to_string();
    let v = s.volume(&vol);
    assert_eq!(v["location"], "*HOME", "{v}");
    assert_eq!(v["next_move_to"], "VAULT", "{v}");
    assert_eq!(v["move_policy"], "VAULT-7", "{v}");
    let due = s.ctl_json(&["volumes", "--moves"]);
    assert_eq!(due.as_array().unwrap().len(), 1, "{due}");
    // Nothing is in transit yet, and unknown volumes are named.
    let o = s.ctl(&["moves", "confirm", &vol]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("not in transit"));
    let o = s.ctl(&["moves", "start", "ZZ9999"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ZZ9999: no such volume"));

    // MOVMEDBRM: the cartridge goes to the library's import/export port.
    let r = s.ctl_json(&["moves", "start"]);
    assert_eq!(r["volumes"][0]["in_transit_to"], "VAULT", "{r}");
    s.until("the eject job to end", |s| s.volume(&vol)["move_job"] == "");
    assert_eq!(s.volume(&vol)["in_transit_to"], "VAULT");
    let list = ok(
        "cinta-agent",
        &["library", "list", lib(&s).to_str().unwrap()],
    );
    let line = list.lines().find(|l| l.contains(&vol)).unwrap().to_string();
    assert!(line.starts_with("ie "), "{list}");
    // The operator takes it out and carries it to the vault, then confirms.
    let vault = s.d().join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let carried = vault.join(format!("{vol}.tap"));
    s.carry_to_vault(&vol, &carried);
    let v = s.volume(&vol);
    assert_eq!(
        (v["location"].as_str(), v["in_transit_to"].as_str()),
        (Some("VAULT"), Some(""))
    );
    assert!(
        v["next_move_at"].as_i64().unwrap() > EVENING + 6 * 86_400,
        "{v}"
    );
    assert_eq!(
        s.ctl_json(&["volumes", "--moves"])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Seven days on, it is due home: sent from the vault, put in the
    // import/export port, confirmed, and taken into the library by the agent.
    s.at(8 * 24 * 60);
    s.until("the return to be due", |s| {
        s.ctl_json(&["volumes", "--moves"])
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let r = s.ctl_json(&["moves", "start", &vol]);
    assert_eq!(r["volumes"][0]["in_transit_to"], "*HOME", "{r}");
    ok(
        "cinta-agent",
        &[
            "library",
            "insert",
            lib(&s).to_str().unwrap(),
            carried.to_str().unwrap(),
            "--barcode",
            &vol,
        ],
    );
    s.ctl_json(&["moves", "confirm", "--all"]);
    s.until("the cartridge to be home", |s| {
        s.volume(&vol)["location"] == "*HOME"
    });
    let list = ok(
        "cinta-agent",
        &["library", "list", lib(&s).to_str().unwrap()],
    );
    let line = list.lines().find(|l| l.contains(&vol)).unwrap().to_string();
    assert!(line.starts_with("slot "), "{list}");
    let ev = s.ctl_json(&["events", "--limit", "200"]).to_string();
    for want in [
        "media.move",
        "arrived at VAULT",
        "is back in library default of PROD1",
    ] {
        assert!(ev.contains(want), "{want}: {ev}");
    }
}

#[test]
fn the_controller_runs_on_a_postgresql_catalog_and_keeps_its_jobs_across_a_restart() {
    let pg = cinta_tests::postgres::Server::start();
    let mut s = Site::new();
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let cfg = std::fs::read_to_string(&p).unwrap().replacen(
        "catalog = \"catalog.db\"",
        &format!("catalog = \"{}\"", pg.url()),
        1,
    );
    std::fs::write(&p, cfg).unwrap();
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(s.d().join(f));
    }
    s.start_controller();
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let job = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    drop(s.controller.take());
    s.start_controller();
    let jobs = s.ctl_json(&["jobs"]);
    assert_eq!(jobs[0]["id"], job["id"]);
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(s.ctl_json(&["save-sets"]).as_array().unwrap().len(), 1);
    assert_eq!(s.ctl_json(&["volumes"])[0]["next_move_to"], "VAULT");
    assert!(
        !s.d().join("catalog.db").exists(),
        "no SQLite file beside it"
    );
    s.until("the agent to reconnect", Site::agent_connected);
    let again = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(again["state"], "succeeded", "{again}");
}

#[test]
fn after_a_failover_the_night_probes_and_saves_the_new_production_lpar() {
    let mut s = Site::new();
    s.start_both_agents();
    s.ctl_json(&["switch-role", "CONT1", "production"]);
    // The old production LPAR still has users on; the new one is quiet.
    let sim = s.d().join("sim");
    std::fs::create_dir_all(sim.join("PROD1")).unwrap();
    std::fs::create_dir_all(sim.join("CONT1")).unwrap();
    std::fs::write(sim.join("PROD1/users"), "9\n").unwrap();
    std::fs::write(sim.join("CONT1/users"), "0\n").unwrap();
    s.reach_close_window();
    s.at(150);
    s.ctl_json(&["close", "finished"]);
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    let t = n["timeline"].to_string();
    assert!(t.contains("on the production LPAR CONT1"), "{t}");
    assert!(t.contains("production is quiet"), "{t}");
    assert!(!t.contains("FALLBACK"), "{t}");
    for key in ["pre_close_job", "post_close_job"] {
        let j = s.ctl_json(&["job", n[key].as_str().unwrap()]);
        assert_eq!(
            (j["agent"].as_str(), j["state"].as_str()),
            (Some("CONT1"), Some("succeeded")),
            "{j}"
        );
    }
}

#[test]
fn a_media_policy_with_a_media_class_writes_only_on_cartridges_of_that_class() {
    let mut s = Site::new();
    let l = lib(&s);
    ok(
        "cinta-agent",
        &[
            "library",
            "add",
            l.to_str().unwrap(),
            "T90001",
            "--media-class",
            "LTO9",
        ],
    );
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    // Saves of the LTO9 policy go on T90001 (and append to it), never on the unclassed PR000n.
    for _ in 0..2 {
        let j = s.ctl_json(&["run", "CLASS-LTO9", "--wait"]);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["save_sets"][0]["volumes"][0], "T90001", "{j}");
    }
    let list = ok("cinta-agent", &["library", "list", l.to_str().unwrap()]);
    let line = list.lines().find(|x| x.contains("T90001")).unwrap();
    assert!(line.contains("LTO9") && line.contains("active"), "{list}");
    // No cartridge of class LTO8: the save fails and says so; nothing is written.
    let o = s.ctl(&["run", "CLASS-LTO8", "--wait"]);
    assert!(!o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("no scratch cartridge of media class LTO8"),
        "{j}"
    );
    assert!(j["save_sets"].as_array().unwrap().is_empty());
}

#[test]
fn objects_are_found_with_their_cartridges_and_a_restore_point_picks_the_copy_of_its_time() {
    let s = Site::with_production_agent();
    let ledger = s.d().join("data/payroll/ledger.dat");
    let first = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(first["state"], "succeeded", "{first}");
    // Twenty minutes later (before tonight's pre-close) the ledger has changed and is saved again.
    std::fs::write(&ledger, vec![4u8; 1000]).unwrap();
    s.at(20);
    let second = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    let (a, b) = (
        first["save_sets"][0]["id"].as_str().unwrap(),
        second["save_sets"][0]["id"].as_str().unwrap(),
    );
    let found = s.ctl_json(&["find", "*/payroll/ledger.dat"]);
    let objs = found["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 2, "{found}");
    let path = objs[0]["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("data/payroll/ledger.dat"), "{path}");
    let sizes: Vec<u64> = objs.iter().map(|o| o["size"].as_u64().unwrap()).collect();
    assert!(sizes.contains(&200_000) && sizes.contains(&1000), "{found}");
    assert_eq!(objs[0]["volumes"][0]["location"], "*HOME", "{found}");
    assert_eq!(found["truncated"], false);
    // Restore points: at 20:10 the first copy, at 20:25 the second.
    let at = |minutes: i64| {
        let f = s.ctl_json(&[
            "find",
            "*/ledger.dat",
            "--at",
            &(EVENING + minutes * 60).to_string(),
        ]);
        let o = f["objects"].as_array().unwrap();
        assert_eq!(o.len(), 1, "{f}");
        o[0]["save_set"].as_str().unwrap().to_string()
    };
    assert_eq!(at(10), a);
    assert_eq!(at(25), b);
    // The same for an exact path (one index lookup).
    for (minutes, want) in [(10, a), (25, b)] {
        let t = (EVENING + minutes * 60).to_string();
        let f = s.ctl_json(&["find", &path, "--at", &t]);
        assert_eq!(f["objects"].as_array().unwrap().len(), 1, "{f}");
        assert_eq!(f["objects"][0]["save_set"], want, "{f}");
    }
    let f = s.ctl_json(&["find", "*/ledger.dat", "--at", "2026-11-24T19:10:00Z"]);
    assert_eq!(f["objects"][0]["save_set"], a, "{f}");
    // What find names restores: the first copy, byte for byte.
    let out = s.d().join("restored-find");
    ok(
        "cinta-agent",
        &[
            "restore",
            lib(&s).to_str().unwrap(),
            "--kmip",
            s.d().join("kmip-PROD1.toml").to_str().unwrap(),
            "--save-set",
            a,
            "--select",
            &path,
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(out.join(&path)).unwrap(), vec![3u8; 200_000]);
    let o = s.ctl(&["find", "  "]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("give a pattern"));
}

/// Users stay on production, so the night falls back to contingency, whose
/// post-close save also saves library PAYLIB, slowly (`slow` seconds):
/// returns once that contingency save is running. `extra` goes at the top
/// of the controller's configuration.
fn night_with_a_slow_contingency_save(slow: u32, extra: &str) -> Site {
    let mut s = Site::new();
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let cfg = std::fs::read_to_string(&p)
        .unwrap()
        .replacen(
            "heartbeat_seconds = 1\n",
            &format!("heartbeat_seconds = 1\n{extra}"),
            1,
        )
        .replacen(
            "name = \"POST-CLOSE\"\ntarget = \"production\"\n",
            "name = \"POST-CLOSE\"\ntarget = \"production\"\n[[control_group.entry]]\nlibrary = \"PAYLIB\"\n",
            1,
        );
    std::fs::write(&p, cfg).unwrap();
    let sim = s.d().join("sim");
    std::fs::create_dir_all(sim.join("CONT1/libs/PAYLIB")).unwrap();
    std::fs::write(
        sim.join("CONT1/libs/PAYLIB/LEDGER.FILE"),
        vec![5u8; 3_000_000],
    )
    .unwrap();
    std::fs::write(sim.join("CONT1/slow-save"), format!("{slow}\n")).unwrap();
    std::fs::create_dir_all(sim.join("PROD1")).unwrap();
    std::fs::write(sim.join("PROD1/users"), "4\n").unwrap();
    std::fs::write(sim.join("PROD1/stay"), "").unwrap();
    s.start_controller();
    s.start_both_agents();
    s.reach_close_window();
    s.at(150);
    s.ctl_json(&["close", "finished"]);
    s.until("the quiesce wait", |s| {
        s.tonight()["state"] == "quiesce-wait"
    });
    s.at(161);
    s.until("the contingency save to run", |s| {
        contingency_jobs(s).iter().any(|j| j["state"] == "running")
    });
    s
}

/// The jobs of the post-close group on the contingency LPAR.
fn contingency_jobs(s: &Site) -> Vec<serde_json::Value> {
    s.ctl_json(&["jobs", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["control_group"] == "POST-CLOSE" && j["agent"] == "CONT1")
        .cloned()
        .collect()
}

#[test]
fn the_controller_restarted_during_the_contingency_save_resumes_without_saving_twice() {
    // 3 s: long enough to stop the controller under the save.
    let mut s = night_with_a_slow_contingency_save(3, "");
    let sim = s.d().join("sim");
    drop(s.controller.take());
    // The save ends while the controller is away: the agent keeps its result.
    let log = s.d().join("agent.log");
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("finish:")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the agent never tried to report"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.start_controller();
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let jobs = contingency_jobs(&s);
    assert_eq!(jobs.len(), 1, "saved once: {jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    assert_eq!(
        jobs[0]["save_sets"].as_array().unwrap().len(),
        2,
        "{jobs:?}"
    );
    let t = s.tonight()["timeline"].to_string();
    for want in [
        "contingency save",
        "succeeded",
        "apply resumed",
        "night done (contingency fallback)",
    ] {
        assert!(t.contains(want), "{want:?} not in {t}");
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("delivered the result of a job that ended while the controller was away"));
    assert_eq!(apply_state(&sim), "active");
}

#[test]
fn a_contingency_agent_lost_mid_save_escalates_waits_for_it_and_resumes_apply_when_it_is_back() {
    let mut s = night_with_a_slow_contingency_save(30, "agent_lost_seconds = 3\n");
    let sim = s.d().join("sim");
    // The contingency LPAR's agent dies mid-save.
    drop(s.agents.remove("CONT1"));
    s.until("the save given up and a retry waiting", |s| {
        s.tonight()["waiting_for"]
            .as_str()
            .unwrap_or("")
            .contains("contingency save to be tried again")
    });
    let n = s.tonight();
    assert_eq!(
        (n["escalated"].as_bool(), n["state"].as_str()),
        (Some(true), Some("contingency-save")),
        "{n}"
    );
    let t = n["timeline"].to_string();
    for want in [
        "ESCALATION: the contingency save failed: agent CONT1 silent for more than 3s",
        "agent CONT1 is not connected: will save again when it is back",
    ] {
        assert!(t.contains(want), "{want:?} not in {t}");
    }
    assert_eq!(
        apply_state(&sim),
        "suspended",
        "apply stays at its recovery point while the night waits"
    );
    let ev = s.ctl_json(&["events", "--limit", "200"]).to_string();
    assert_eq!(ev.matches("agent.lost").count(), 1, "{ev}");
    assert!(ev.contains("night.escalated"), "{ev}");
    // Production's agent, which kept talking, lost nothing.
    let prod_failed = s
        .ctl_json(&["jobs", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["agent"] == "PROD1" && j["message"].as_str().unwrap_or("").contains("silent"));
    assert!(!prod_failed);
    // It comes back (the save is quick now): the save again, then apply resumed.
    std::fs::remove_file(sim.join("CONT1/slow-save")).unwrap();
    s.start_agent("CONT1");
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    let t = n["timeline"].to_string();
    for want in [
        "contingency save: attempt 2 of 2",
        "apply resumed",
        "night done (contingency fallback): degraded",
    ] {
        assert!(t.contains(want), "{want:?} not in {t}");
    }
    assert_eq!(n["outcome"], "degraded", "{n}");
    assert_eq!(apply_state(&sim), "active");
    let jobs = contingency_jobs(&s);
    assert_eq!(
        jobs.iter()
            .map(|j| j["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["succeeded", "failed"],
        "{jobs:?}"
    );
}

#[test]
fn a_resume_that_fails_twice_is_retried_with_backoff_and_the_night_ends_degraded() {
    let s = fallback_begins(2, 0, 0, |sim| {
        std::fs::write(sim.join("CONT1/fail-resume"), "2\n").unwrap();
    });
    let waiting = |attempt: u32| {
        move |s: &Site| {
            s.tonight()["waiting_for"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("attempt {attempt} failed"))
        }
    };
    s.until("the first resume to fail", waiting(1));
    let sim = s.d().join("sim");
    assert_eq!(apply_state(&sim), "suspended");
    // Not before its backoff (1 min)...
    std::thread::sleep(Duration::from_millis(1500));
    assert!(waiting(1)(&s), "{}", s.tonight());
    s.at(161 + 1);
    s.until("the second resume to fail", waiting(2));
    s.at(161 + 1 + 2);
    s.until("the night to end", |s| s.tonight()["state"] == "done");
    let n = s.tonight();
    assert_eq!(
        (n["outcome"].as_str(), n["escalated"].as_bool()),
        (Some("degraded"), Some(true)),
        "{n}"
    );
    let t = n["timeline"].to_string();
    for want in [
        "ESCALATION: apply could not be resumed (attempt 1)",
        "STRDG failed: data group locked",
        "resuming apply: attempt 2",
        "ESCALATION: apply could not be resumed (attempt 2)",
        "resuming apply: attempt 3",
        "apply resumed",
        "replication catching up",
    ] {
        assert!(t.contains(want), "{want:?} not in {t}");
    }
    assert_eq!(apply_state(&sim), "active");
    // The escalations are events of their own: in the catalog, on the webhook, counted.
    let ev = s.ctl_json(&["events", "--limit", "300"]).to_string();
    assert!(
        ev.matches("apply could not be resumed").count() >= 2,
        "{ev}"
    );
    assert!(
        ev.contains("night 2026-11-24: degraded (contingency fallback)"),
        "{ev}"
    );
    s.until("the webhook", |s| {
        let h = s.hooks.lock().unwrap().join("\n");
        h.contains("\"night.escalated\"") && h.contains("degraded")
    });
    let m = metrics(&s);
    assert!(m.contains("cinta_night_escalations_total 2"), "{m}");
    assert!(
        m.contains("cinta_nights_total{outcome=\"degraded\"} 1"),
        "{m}"
    );
    let log = std::fs::read_to_string(s.d().join("controller.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("apply could not be resumed")),
        "escalations are logged as errors"
    );
}

#[test]
fn only_operators_with_the_role_reach_the_console_and_agents_never_do() {
    let mut s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    let id = j["id"].as_str().unwrap().to_string();
    let every: Vec<Vec<&str>> = vec![
        vec!["agents"],
        vec!["jobs"],
        vec!["job", &id],
        vec!["run", "NIGHTLY"],
        vec!["cancel", &id],
        vec!["switch-role", "CONT1", "production"],
        vec!["tonight"],
        vec!["tonight", "ack"],
        vec!["close", "finished"],
        vec!["events"],
        vec!["save-sets"],
        vec!["volumes"],
        vec!["find", "*"],
        vec!["moves", "start"],
        vec!["moves", "confirm", "--all"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["restore", "list"],
        vec!["restore", "show", "R1"],
        vec!["restore", "close", "R1"],
        vec![
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "*",
            "--to",
            "/tmp/x",
            "--ticket",
            "T1",
            "--requester",
            "x",
        ],
    ];
    let refused = |who: &str, args: &[&str], why: &str| {
        let o = s.ctl_as(who, args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{who} {args:?} was let through");
        assert!(
            err.contains("PermissionDenied")
                || err.contains("permission denied")
                || err.contains(why),
            "{who} {args:?}: {err}"
        );
        assert!(err.contains(why), "{who} {args:?}: {err}");
    };
    // An agent's certificate: refused on every console method.
    for args in &every {
        refused("PROD1", args, "PROD1 is an agent's certificate");
    }
    // A stranger the CA signed: refused, named.
    refused("stranger", &["agents"], "CN=\"stranger\"");
    // A viewer reads, and may not act.
    let o = s.ctl_as("viewer", &["jobs"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (args, role) in [
        (vec!["run", "NIGHTLY"], "needs the operator role"),
        (vec!["close", "finished"], "needs the operator role"),
        (
            vec!["switch-role", "CONT1", "production"],
            "needs the admin role",
        ),
    ] {
        refused("viewer", &args, role);
    }
    assert_eq!(
        s.ctl_json(&["agents"])[0]["role"],
        "production",
        "nothing was switched"
    );
    // Every refusal is an event.
    let ev = s.ctl_json(&["events", "--limit", "200"]).to_string();
    assert!(
        ev.matches("access.denied").count() >= every.len() + 4,
        "{ev}"
    );
    // A console certificate never acts as an agent.
    drop(s.agents.remove("PROD1"));
    let cfg = s.d().join("agent-PROD1.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("/PROD1.pem", "/console.pem")
        .replace("/PROD1.key", "/console.key");
    std::fs::write(&cfg, text).unwrap();
    let a = Command::new(cinta_tests::binary("cinta-agent"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _a = Proc(a);
    s.until("the console certificate refused as an agent", |s| {
        s.ctl_json(&["events", "--limit", "20"])
            .to_string()
            .contains("operator console's certificate may not act as an agent")
    });
}

#[test]
fn a_clock_file_read_empty_never_starts_a_new_night() {
    let mut s = Site::new();
    s.start_both_agents();
    s.reach_close_window();
    let before = s.tonight();
    // A writer caught half-way: the file empty, then garbage.
    for bad in ["", "17955"] {
        std::fs::write(s.d().join("clock"), bad).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let n = s.tonight();
        assert_eq!(
            (&n["id"], &n["state"]),
            (&before["id"], &before["state"]),
            "{n}"
        );
    }
    let log = std::fs::read_to_string(s.d().join("controller.log")).unwrap();
    assert!(log.contains("the clock file did not give a time"), "{log}");
    // The next night, due while this one is unfinished, does not replace it.
    s.at(24 * 60 + 31);
    s.until("the overlap escalated", |s| {
        s.tonight()["timeline"]
            .to_string()
            .contains("is due but night 2026-11-24 is not finished")
    });
    let n = s.tonight();
    assert_eq!(
        (n["id"].as_str(), n["state"].as_str()),
        (Some("2026-11-24"), Some("close-window"))
    );
}

#[test]
fn a_library_save_command_dies_with_the_agent() {
    let mut s = Site::new();
    let sim = s.d().join("sim/PROD1");
    std::fs::create_dir_all(sim.join("libs/PAYLIB")).unwrap();
    std::fs::write(sim.join("libs/PAYLIB/LEDGER.FILE"), vec![5u8; 3_000_000]).unwrap();
    std::fs::write(sim.join("slow-save"), "120\n").unwrap();
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let job = s.ctl_json(&["run", "LIBS"]);
    let id = job["id"].as_str().unwrap().to_string();
    s.until("the SAVLIB to run", |_| sim.join("savlib.pid").exists());
    let pid = std::fs::read_to_string(sim.join("savlib.pid"))
        .unwrap()
        .trim()
        .to_string();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "the simulated SAVLIB runs");
    assert_eq!(s.ctl_json(&["job", &id])["state"], "running");
    drop(s.agents.remove("PROD1")); // SIGKILL
    let t = Instant::now();
    while proc_dir.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "SAVLIB {pid} still runs after its agent died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn what_a_save_warns_of_reaches_the_job_the_console_and_an_event() {
    let mut s = Site::new();
    // A socket is not saved (as tar: the program listening makes it): the save says so.
    drop(std::os::unix::net::UnixListener::bind(s.d().join("data/home/sock")).unwrap());
    // Two names that are not UTF-8 and differ in one byte.
    for b in [b"caf\xe9", b"caf\xe8"] {
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(
            s.d().join("data/home").join(std::ffi::OsStr::from_bytes(b)),
            b,
        )
        .unwrap();
    }
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let home = j["save_sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"].as_str().unwrap().ends_with("data/home"))
        .unwrap()
        .clone();
    let w = home["warnings"].to_string();
    assert!(w.contains("sock") && w.contains("not saved"), "{home}");
    assert!(j["message"].as_str().unwrap().contains("1 warnings"), "{j}");
    // The objects were still indexed from the same save child.
    let found = s.ctl_json(&["find", "*/data/home/note.txt"]);
    assert_eq!(found["objects"].as_array().unwrap().len(), 1, "{found}");
    // The catalog tells names apart that differ in a byte that is not UTF-8.
    let found = s.ctl_json(&["find", "*/data/home/caf*"]);
    let mut paths: Vec<&str> = found["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["caf\\xe8", "caf\\xe9"], "{found}");
    let o = s.ctl_as("console", &["job", j["id"].as_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("not saved"), "{text}");
    let ev = s.ctl_json(&["events", "--limit", "50"]).to_string();
    assert!(
        ev.contains("job.warnings") && ev.contains("1 warnings"),
        "{ev}"
    );
}

#[test]
fn the_console_says_in_one_line_what_is_wrong_and_shows_local_times() {
    let s = Site::with_production_agent();
    let pki = s.kms.pki.clone();
    let ctl = |addr: &str, cert: &Path, key: &Path, ca: &Path, args: &[&str]| {
        let o = Command::new(cinta_tests::binary("cintactl"))
            .args([
                "--controller",
                addr,
                "--server-name",
                "localhost",
                "--timeout",
                "1",
            ])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(ca)
            .args(args)
            .env_remove("TZ")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            err,
        )
    };
    let (cert, key, ca) = (
        pki.join("console.pem"),
        pki.join("console.key"),
        pki.join("ca.pem"),
    );
    let one_line = |err: &str| {
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            !err.contains("Status {") && !err.contains("details"),
            "{err}"
        );
    };
    // An expired console certificate is named as such, before connecting.
    let mut p = rcgen::CertificateParams::new(vec!["console".to_string()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "console");
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = rcgen::date_time_ymd(2020, 1, 2);
    let k = rcgen::KeyPair::generate().unwrap();
    let old = p.self_signed(&k).unwrap();
    let (old_cert, old_key) = (s.d().join("old.pem"), s.d().join("old.key"));
    std::fs::write(&old_cert, old.pem()).unwrap();
    std::fs::write(&old_key, k.serialize_pem()).unwrap();
    let (ok, _, err) = ctl(&s.addr, &old_cert, &old_key, &ca, &["agents"]);
    assert!(
        !ok && err.contains("your certificate") && err.contains("expired on 2020-01-02"),
        "{err}"
    );
    one_line(&err);
    // The controller's certificate checked against another CA.
    let other = s.d().join("other-pki");
    ok_bin("cinta-keymgr", &["pki", "init", other.to_str().unwrap()]);
    let (ok, _, err) = ctl(&s.addr, &cert, &key, &other.join("ca.pem"), &["agents"]);
    assert!(
        !ok && err.contains("is not signed by CA") && err.contains("other-pki/ca.pem"),
        "{err}"
    );
    one_line(&err);
    // Nothing listening; something listening that never answers.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let (ok, _, err) = ctl(&gone_addr, &cert, &key, &ca, &["agents"]);
    assert!(!ok && err.contains("nothing answers at"), "{err}");
    one_line(&err);
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap().to_string();
    let t = Instant::now();
    let (ok, _, err) = ctl(&mute_addr, &cert, &key, &ca, &["agents"]);
    assert!(!ok && err.contains("did not answer within 1s"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    one_line(&err);
    drop(mute);
    // Times in the controller's zone (Europe/Madrid: +01:00 in November), or UTC.
    s.reach_close_window();
    let (ok, out, err) = ctl(&s.addr, &cert, &key, &ca, &["tonight"]);
    assert!(ok, "{err}");
    assert!(out.contains("2026-11-24 20:31:00+01:00"), "{out}");
    assert!(
        out.contains("waiting for the close: `cintactl close finished`"),
        "{out}"
    );
    let (_, out, _) = ctl(&s.addr, &cert, &key, &ca, &["--utc", "tonight"]);
    assert!(out.contains("2026-11-24 19:31:00Z"), "{out}");
    // The pre-close save's objects, found by a local restore point.
    let (ok, out, err) = ctl(
        &s.addr,
        &cert,
        &key,
        &ca,
        &["--json", "find", "*/ledger.dat", "--at", "2026-11-24 20:40"],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["objects"].as_array().unwrap().len(), 1, "{v}");
    let (ok, out, _) = ctl(
        &s.addr,
        &cert,
        &key,
        &ca,
        &["--json", "find", "*/ledger.dat", "--at", "2026-11-24 20:20"],
    );
    assert!(ok);
    assert!(
        out.contains("\"objects\": []"),
        "before the pre-close save, no copy: {out}"
    );
    // Server reflection answers both protocols.
    let o = grpc_script(&s, "grpc_list_services.py", "console")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ok_bin(bin: &str, args: &[&str]) {
    let o = Command::new(cinta_tests::binary(bin))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What the simulated contingency LPAR says apply is (active, suspended).
fn apply_state(sim: &Path) -> String {
    std::fs::read_to_string(sim.join("CONT1/apply"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_restore_request_is_served_end_to_end_and_one_the_policy_does_not_cover_is_refused() {
    let s = Site::with_production_agent();
    let ledger = s.d().join("data/payroll/ledger.dat");
    let first = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(first["state"], "succeeded", "{first}");
    // Twenty minutes later the ledger is overwritten, and saved again.
    std::fs::write(&ledger, vec![4u8; 1000]).unwrap();
    s.at(20);
    let second = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(second["state"], "succeeded", "{second}");
    let found = s.ctl_json(&["find", "*/payroll/ledger.dat"]);
    let path = found["objects"][0]["path"].as_str().unwrap().to_string();
    // The help desk asks for the ledger as it was at 20:10, into a scratch directory.
    let to = s.d().join("restored-request");
    let to_s = to.to_str().unwrap().to_string();
    let at = (EVENING + 10 * 60).to_string();
    let ask = |extra: &[&str]| -> Output {
        let mut a = vec![
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "*/payroll/ledger.dat",
            "--requester",
            "Ana Ruiz",
            "--email",
            "ana.ruiz@bank.example",
            "--reason",
            "ledger overwritten by the 20:15 batch",
        ];
        a.extend_from_slice(extra);
        s.ctl(&a)
    };
    let o = ask(&["--at", &at, "--to", &to_s, "--ticket", "INC-4711", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["state"].as_str(), r["ticket"].as_str()),
        (Some("restoring"), Some("INC-4711")),
        "{r}"
    );
    assert_eq!(
        r["plan"][0]["save_set"], first["save_sets"][0]["id"],
        "the copy of 20:10: {r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    s.until("the restore request to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    assert_eq!(std::fs::read(to.join(&path)).unwrap(), vec![3u8; 200_000]);
    let r = s.ctl_json(&["restore", "show", &id]);
    assert_eq!(r["objects"], 1, "{r}");
    let steps: Vec<(&str, &str)> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["state"].as_str().unwrap(), h["who"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("requested", "console"),
            ("restoring", "console"),
            ("verified", "controller")
        ],
        "{r}"
    );
    let attempt = &r["attempts"][0];
    assert_eq!(attempt["state"], "succeeded", "{r}");
    assert_eq!(attempt["outcomes"][0]["objects"], 1, "{r}");
    // Its job was watched like a save: a step per save set, the bytes.
    let job = s.ctl_json(&["job", attempt["job"].as_str().unwrap()]);
    assert_eq!(
        (job["entries_done"].as_u64(), job["entries_total"].as_u64()),
        (Some(1), Some(1)),
        "{job}"
    );
    assert_eq!(job["bytes"], 200_000, "{job}");
    // A viewer may read requests, never make or close one.
    let v = s.ctl_as("viewer", &["restore", "list", "--json"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let o = s.ctl_as(
        "viewer",
        &[
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "*",
            "--to",
            "/tmp/x",
            "--ticket",
            "T",
            "--requester",
            "x",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("needs the operator role"),
        "{err}"
    );
    let o = s.ctl_as("viewer", &["restore", "close", &id]);
    assert!(!o.status.success(), "a viewer closed a request");
    // Delivered to Ana, then closed by the operator: served.
    let r = s.ctl_json(&["restore", "deliver", &id, "--note", "on her share"]);
    assert_eq!(r["state"], "delivered", "{r}");
    let r = s.ctl_json(&["restore", "close", &id, "--note", "delivered to Ana"]);
    assert_eq!(
        (r["state"].as_str(), r["outcome"].as_str()),
        (Some("closed"), Some("served")),
        "{r}"
    );
    let o = s.ctl(&["restore", "close", &id]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("closed already"));
    // A date before any copy: refused by the policy, the restore points that
    // exist named, closed at once; exit 3.
    let before = (EVENING - 3600).to_string();
    let o = ask(&[
        "--at", &before, "--to", &to_s, "--ticket", "INC-4712", "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["state"].as_str(), r["outcome"].as_str()),
        (Some("closed"), Some("refused")),
        "{r}"
    );
    assert!(r["refusal"].as_str().unwrap().contains("no copy"), "{r}");
    assert_eq!(
        r["nearest"].as_array().unwrap().len(),
        2,
        "both saves are restore points: {r}"
    );
    assert!(
        r["attempts"].as_array().unwrap().is_empty(),
        "nothing ran: {r}"
    );
    // No ticket is refused unless urgent; an urgent one is served, flagged.
    let o = ask(&["--to", &to_s]);
    assert!(!o.status.success());
    let r: serde_json::Value =
        serde_json::from_slice(&ask(&["--to", &to_s, "--urgent", "--json"]).stdout).unwrap();
    assert_eq!(
        (r["urgent"].as_bool(), r["ticket"].as_str()),
        (Some(true), Some("")),
        "{r}"
    );
    // The ticket comes later: attached, the flag goes.
    let urgent_id = r["id"].as_str().unwrap().to_string();
    let t = s.ctl_json(&["restore", "ticket", &urgent_id, "INC-4714"]);
    assert_eq!(t["ticket"], "INC-4714", "{t}");
    let o = s.ctl(&["restore", "ticket", &urgent_id, "INC-4715"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already"));
    let all = s.ctl_json(&["restore", "list", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let open = s.ctl_json(&["restore", "list"]);
    assert!(
        open.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] != "closed"),
        "{open}"
    );
    // Every step is an event.
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    for k in [
        "restore.requested",
        "restore.verified",
        "restore.refused",
        "restore.closed",
    ] {
        assert!(ev.contains(k), "{k}: {ev}");
    }
}

#[test]
fn a_restore_that_fails_is_tried_again_after_a_controller_restart_and_then_served() {
    let mut s = Site::with_production_agent();
    let first = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(first["state"], "succeeded", "{first}");
    // The destination's parent is a file: the first attempt cannot write.
    let blocked = s.d().join("blocked");
    std::fs::write(&blocked, b"a file where a directory should be").unwrap();
    let to = blocked.join("out");
    let id = s.request_restore("*/payroll/ledger.dat", &to, "INC-5000", "Ops");
    s.until("the first attempt to fail", |s| {
        s.ctl_json(&["restore", "show", &id])["attempts"][0]["state"] == "failed"
    });
    let r = s.ctl_json(&["restore", "show", &id]);
    assert_eq!(r["state"], "restoring", "waiting to try again: {r}");
    assert_eq!(r["attempts"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["attempts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Not a directory"),
        "{r}"
    );
    // The controller restarts while the request waits; the obstacle goes.
    drop(s.controller.take());
    s.start_controller();
    std::fs::remove_file(&blocked).unwrap();
    s.until("the agent to come back", Site::agent_connected);
    // Five minutes later (retry_after_seconds), the second attempt serves it.
    s.at(6);
    s.until("the restore request to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    let r = s.ctl_json(&["restore", "show", &id]);
    let attempts: Vec<&str> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, ["failed", "succeeded"], "each attempt kept: {r}");
    let path = s.ctl_json(&["find", "*/payroll/ledger.dat"])["objects"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read(to.join(path)).unwrap(), vec![3u8; 200_000]);
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    assert!(
        ev.contains("restore.retry") && ev.contains("tried again in 300 s"),
        "{ev}"
    );
}

#[test]
fn database_data_is_restored_only_after_a_second_person_approves() {
    let s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "ORDERS-DB", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let to = s.d().join("restored-db");
    let ask = |ticket: &str| {
        s.ctl_json(&[
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "*/db/orders.db",
            "--to",
            to.to_str().unwrap(),
            "--ticket",
            ticket,
            "--requester",
            "Marta",
            "--reason",
            "orders table dropped",
        ])
    };
    // Made by the operator "console" for Marta, who is also an approver.
    let r = ask("INC-6001");
    assert_eq!(r["state"], "awaiting approval", "{r}");
    assert_eq!(r["plan"][0]["data_class"], "database", "{r}");
    assert!(
        r["attempts"].as_array().unwrap().is_empty(),
        "nothing runs yet: {r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    // The requester may not approve it, nor may the operator who made it
    // (an admin), nor a viewer.
    for (who, why) in [
        ("approver", "two-person rule"),
        ("console", "two-person rule"),
        ("viewer", "needs the approver role"),
    ] {
        let o = s.ctl_as(who, &["restore", "approve", &id]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{who}: {err}");
    }
    assert!(!to.exists(), "nothing was restored before approval");
    // Requested for someone else, the approver approves: it is served.
    let r = s.ctl_json(&[
        "restore",
        "request",
        "--server",
        "PROD1",
        "--path",
        "*/db/orders.db",
        "--to",
        to.to_str().unwrap(),
        "--ticket",
        "INC-6002",
        "--requester",
        "Luis",
    ]);
    let id2 = r["id"].as_str().unwrap().to_string();
    let o = s.ctl_as(
        "approver",
        &["restore", "approve", &id2, "--note", "checked with the DBA"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.until("the approved restore to be verified", |s| {
        s.ctl_json(&["restore", "show", &id2])["state"] == "verified"
    });
    let r = s.ctl_json(&["restore", "show", &id2]);
    let steps: Vec<(&str, &str)> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["state"].as_str().unwrap(), h["who"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("requested", "console"),
            ("awaiting approval", "controller"),
            ("approved", "Marta"),
            ("restoring", "Marta"),
            ("verified", "controller"),
        ],
        "{r}"
    );
    let path = s.ctl_json(&["find", "*/db/orders.db"])["objects"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read(to.join(path)).unwrap(), vec![7u8; 50_000]);
    // The first one is rejected: closed.
    let o = s.ctl_as(
        "approver",
        &["restore", "reject", &id, "--note", "asked for herself"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = s.ctl_json(&["restore", "show", &id]);
    assert_eq!(
        (r["state"].as_str(), r["outcome"].as_str()),
        (Some("closed"), Some("rejected")),
        "{r}"
    );
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    for k in [
        "restore.approval_needed",
        "restore.approved",
        "restore.rejected",
        "access.denied",
    ] {
        assert!(ev.contains(k), "{k}: {ev}");
    }
}

#[test]
fn a_restore_whose_cartridge_is_at_the_vault_waits_for_its_recall() {
    let s = Site::with_production_agent();
    let job = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let vol = job["save_sets"][0]["volumes"][0]
        .as_str()
        .unwrap()
        .to_string();
    // The cartridge goes to the vault (as the rotation test shows it).
    let carried = s.send_to_vault(&vol);
    // An urgent request: the cartridge is recalled (emergency, 3 h) and the
    // request waits, saying when it should be back.
    s.at(30);
    let to = s.d().join("restored-from-vault");
    let r = s.ctl_json(&[
        "restore",
        "request",
        "--server",
        "PROD1",
        "--path",
        "*/home/note.txt",
        "--to",
        to.to_str().unwrap(),
        "--urgent",
        "--requester",
        "Night shift",
    ]);
    assert_eq!(r["state"], "recall", "{r}");
    assert_eq!(r["back_by"], EVENING + 30 * 60 + 3 * 3600, "{r}");
    let note = r["history"][1]["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("{vol} at VAULT: emergency recall")),
        "{note}"
    );
    assert_eq!(s.volume(&vol)["in_transit_to"], "*HOME");
    let id = r["id"].as_str().unwrap().to_string();
    // Nothing runs while it is away.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.ctl_json(&["restore", "show", &id])["state"], "recall");
    // Back at the site: put in the import/export port, confirmed, imported;
    // then the restore runs.
    ok(
        "cinta-agent",
        &[
            "library",
            "insert",
            lib(&s).to_str().unwrap(),
            carried.to_str().unwrap(),
            "--barcode",
            &vol,
        ],
    );
    s.ctl_json(&["moves", "confirm", "--all"]);
    s.until("the restore request to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    let path = s.ctl_json(&["find", "*/home/note.txt"])["objects"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read(to.join(path)).unwrap(), b"hello\n");
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    assert!(
        ev.contains("restore.recall") && ev.contains("recalled from VAULT"),
        "{ev}"
    );
}

/// A real SMTP server (aiosmtpd) on `port`, writing what it receives to
/// `dir`; stopped when dropped.
fn smtp_sink(port: u16, dir: &Path, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let mut sink = Command::new(grpc_python())
        .arg(cinta_tests::repo().join("tests/python/smtp_sink.py"))
        .args(["--port", &port.to_string(), "--dir", dir.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sink.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Proc(sink)
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The mails an SMTP sink received: (recipients line, whole text), in order.
fn mails(dir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn requesters_and_the_help_desk_are_told_by_mail_and_a_mail_not_sent_is_retried() {
    let mut s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    // Mail configured, its server not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let mut cfg = std::fs::read_to_string(&p).unwrap();
    cfg.push_str(&format!(
        "\n[mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"cinta@bank.example\"\nhelp_desk = \"helpdesk@bank.example\"\nretry_seconds = 1\n"
    ));
    std::fs::write(&p, cfg).unwrap();
    s.start_controller();
    s.until("the agent to come back", Site::agent_connected);
    let to = s.d().join("restored-mail");
    let ask = |ticket: &str, at: &str| {
        let o = s.ctl(&[
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "*/payroll/ledger.dat",
            "--to",
            to.to_str().unwrap(),
            "--ticket",
            ticket,
            "--at",
            at,
            "--requester",
            "Ana Ruiz",
            "--email",
            "ana.ruiz@bank.example",
        ]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let served = ask("INC-7001", &(EVENING + 600).to_string());
    let refused = ask("INC-7002", &(EVENING - 3600).to_string());
    assert_eq!(refused["outcome"], "refused");
    let id = served["id"].as_str().unwrap().to_string();
    s.until("the restore request to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    s.ctl_json(&["restore", "close", &id, "--note", "Ana has her ledger back"]);
    // The restore did not wait for mail. Now the mail server comes up; the
    // mails waiting are sent on their next try.
    let dir = s.d().join("mails");
    let sink = smtp_sink(port, &dir, &[]);
    s.until("four mails", |_| mails(&dir).len() >= 4);
    std::thread::sleep(Duration::from_secs(2));
    let got = mails(&dir);
    drop(sink);
    assert_eq!(got.len(), 4, "{got:#?}");
    for (ticket, what) in [
        ("INC-7001", "received"),
        ("INC-7001", "restored and verified"),
        ("INC-7001", "closed"),
        ("INC-7002", "refused"),
    ] {
        let m = got
            .iter()
            .find(|m| {
                m.contains(&format!("Subject: [{ticket}] restore request"))
                    && m.contains(&format!(": {what}\r\n"))
            })
            .unwrap_or_else(|| panic!("no {what} mail for {ticket}: {got:#?}"));
        assert!(
            m.starts_with("X-Rcpt: ana.ruiz@bank.example, helpdesk@bank.example"),
            "{m}"
        );
    }
    let refusal = got.iter().find(|m| m.contains("INC-7002")).unwrap();
    assert!(
        refusal.contains("Restore points that exist nearest"),
        "{refusal}"
    );
}

/// Flips a byte in the middle of every block of a SIMH image bigger than
/// `min` bytes (the save sets' segments; labels and headers are smaller).
fn damage_blocks(img: &Path, min: usize) {
    let mut b = std::fs::read(img).unwrap();
    let mut off = 0;
    while off + 4 <= b.len() {
        let w = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        if w == 0xffff_ffff {
            break;
        }
        if w == 0 {
            off += 4;
            continue;
        }
        let len = (w & 0x00ff_ffff) as usize;
        if len > min {
            b[off + 4 + len / 2] ^= 0x20;
        }
        off += 8 + len + (len & 1);
    }
    std::fs::write(img, b).unwrap();
}

#[test]
fn a_drill_restores_a_sample_on_three_of_four_servers_chosen_by_its_seed() {
    let mut s = Site::new();
    for a in ["PROD1", "CONT1", "WEB1", "MAIL1"] {
        s.start_agent(a);
    }
    s.until("the four agents", |s| {
        s.ctl_json(&["agents"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["connected"] == true)
            .count()
            == 4
    });
    for g in ["NIGHTLY", "CONT-FILES", "WEB-FILES", "MAIL-FILES"] {
        let j = s.ctl_json(&["run", g, "--wait"]);
        assert_eq!(j["state"], "succeeded", "{g}: {j}");
    }
    let d = s.ctl_json(&["drills", "run", "--seed", "42"]);
    assert_eq!(d["seed"], 42, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let servers = |d: &serde_json::Value| -> Vec<String> {
        d["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["agent"].as_str().unwrap().to_string())
            .collect()
    };
    let chosen = servers(&d);
    assert_eq!(chosen.len(), 3, "{d}");
    let mut distinct = chosen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{d}");
    s.until("the drill to end", |s| {
        s.ctl_json(&["drills", "show", &id])["state"] != "running"
    });
    let d = s.ctl_json(&["drills", "show", &id]);
    assert_eq!(d["state"], "passed", "{d}");
    for x in d["servers"].as_array().unwrap() {
        assert_eq!(x["state"], "passed", "{x}");
        assert!(x["objects"].as_u64().unwrap() >= 1, "{x}");
        let samples = x["samples"].as_array().unwrap();
        assert!(
            !samples.is_empty()
                && samples
                    .iter()
                    .all(|y| !y["volumes"].as_array().unwrap().is_empty()),
            "{x}"
        );
        // The scratch copy is gone.
        let scratch = x["scratch"].as_str().unwrap();
        assert!(
            scratch.starts_with(s.d().join("drill-scratch").to_str().unwrap()),
            "{x}"
        );
        assert!(!Path::new(scratch).exists(), "{scratch} left behind");
    }
    // PROD1 saved both entries of NIGHTLY: its newest save set of each is sampled.
    if let Some(p) = d["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["agent"] == "PROD1")
    {
        assert_eq!(p["samples"].as_array().unwrap().len(), 2, "{p}");
    }
    // The same seed makes the same choice.
    let again = s.ctl_json(&["drills", "run", "--seed", "42"]);
    assert_eq!(servers(&again), chosen);
    let list = s.ctl_json(&["drills", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    assert!(
        ev.contains("drill.started") && ev.contains("drill.passed"),
        "{ev}"
    );
}

#[test]
fn a_drill_that_meets_a_damaged_cartridge_fails_and_escalates() {
    let s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let vol = j["save_sets"][0]["volumes"][0]
        .as_str()
        .unwrap()
        .to_string();
    damage_blocks(&lib(&s).join("cartridges").join(format!("{vol}.tap")), 1000);
    let d = s.ctl_json(&["drills", "run"]);
    assert!(
        d["seed"].as_u64().unwrap() > 0,
        "a seed is drawn and recorded: {d}"
    );
    let id = d["id"].as_str().unwrap().to_string();
    s.until("the drill to end", |s| {
        s.ctl_json(&["drills", "show", &id])["state"] != "running"
    });
    let d = s.ctl_json(&["drills", "show", &id]);
    assert_eq!(d["state"], "failed", "{d}");
    let p = &d["servers"][0];
    assert_eq!(
        (p["agent"].as_str(), p["state"].as_str()),
        (Some("PROD1"), Some("failed")),
        "{d}"
    );
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("restore of save set"),
        "{d}"
    );
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    assert!(ev.contains("drill.failed"), "{ev}");
}

#[test]
fn the_scheduled_drill_runs_only_in_a_quarter_without_a_restore_served() {
    let mut s = Site::with_production_agent();
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    // Every day at 21:00 for the test (a site would say quarterly).
    let cfg = std::fs::read_to_string(&p).unwrap().replacen(
        "[drills]\n",
        "[drills]\ncron = \"0 21 * * *\"\n",
        1,
    );
    std::fs::write(&p, cfg).unwrap();
    s.start_controller();
    s.until("the agent to come back", Site::agent_connected);
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let r = s.ctl_json(&[
        "restore",
        "request",
        "--server",
        "PROD1",
        "--path",
        "*/home/note.txt",
        "--to",
        s.d().join("r").to_str().unwrap(),
        "--ticket",
        "INC-8001",
        "--requester",
        "Ops",
    ]);
    let id = r["id"].as_str().unwrap().to_string();
    s.until("the restore request to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    // 21:00 this quarter: a request was served, so no drill.
    s.at(61);
    s.until("the drill to be skipped", |s| {
        s.ctl_json(&["events", "--limit", "50"])
            .to_string()
            .contains("drill.skipped")
    });
    assert!(s
        .ctl_json(&["drills", "list"])
        .as_array()
        .unwrap()
        .is_empty());
    // 21:00 on 2 January: a new quarter with no request served: the drill runs.
    s.at(39 * 24 * 60 + 61);
    s.until("the scheduled drill", |s| {
        !s.ctl_json(&["drills", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    });
    let d = &s.ctl_json(&["drills", "list"])[0];
    assert_eq!(d["by"], "schedule", "{d}");
}

#[test]
fn an_ibm_i_library_is_restored_into_another_library_through_rstlib() {
    let mut s = Site::new();
    let libs = s.d().join("sim/PROD1/libs");
    std::fs::create_dir_all(libs.join("PAYLIB/QCLSRC.FILE")).unwrap();
    std::fs::write(libs.join("PAYLIB/LEDGER.FILE"), vec![7u8; 300_000]).unwrap();
    std::fs::write(libs.join("PAYLIB/QCLSRC.FILE/CLOSE.MBR"), b"PGM\nENDPGM\n").unwrap();
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let full = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(full["state"], "succeeded", "{full}");
    let job = s.ctl_json(&["run", "LIBS", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let ask = |extra: &[&str]| {
        let mut a = vec![
            "restore",
            "request",
            "--server",
            "PROD1",
            "--path",
            "PAYLIB.SAVF",
            "--ticket",
            "INC-9001",
            "--requester",
            "Payroll",
        ];
        a.extend_from_slice(extra);
        s.ctl(&a)
    };
    // A save file is restored into a library, named; never a directory.
    let o = ask(&["--to", s.d().join("x").to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--into-library"),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let o = ask(&["--into-library", "payrst"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("upper case"));
    let o = ask(&["--into-library", "PAYRST"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    s.until("the library restore to be verified", |s| {
        s.ctl_json(&["restore", "show", &id])["state"] == "verified"
    });
    // RSTLIB (simulated) made library PAYRST from PAYLIB's save file.
    assert_eq!(
        std::fs::read(libs.join("PAYRST/LEDGER.FILE")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read(libs.join("PAYRST/QCLSRC.FILE/CLOSE.MBR")).unwrap(),
        b"PGM\nENDPGM\n"
    );
    assert!(
        libs.join("PAYLIB/LEDGER.FILE").exists(),
        "the original library stays"
    );
    let r = s.ctl_json(&["restore", "show", &id]);
    assert_eq!(r["into_library"], "PAYRST", "{r}");
    assert_eq!(r["attempts"][0]["outcomes"][0]["objects"], 1, "{r}");
}

#[test]
fn mail_goes_over_starttls_with_authentication_and_never_in_the_clear() {
    let mut s = Site::with_production_agent();
    let j = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    // The mail server's certificate, from the site's CA; it requires STARTTLS and AUTH.
    let pki = s.kms.pki.clone();
    s.kms.admin_ok(&[
        "pki",
        "issue",
        pki.to_str().unwrap(),
        "smtp",
        "--server",
        "--host",
        "127.0.0.1",
    ]);
    std::fs::write(s.d().join("mail.pass"), "s3cret\n").unwrap();
    let port = free_port();
    let dir = s.d().join("tls-mails");
    let sink = smtp_sink(
        port,
        &dir,
        &[
            "--cert",
            pki.join("smtp.pem").to_str().unwrap(),
            "--key",
            pki.join("smtp.key").to_str().unwrap(),
            "--user",
            "cinta",
            "--password",
            "s3cret",
        ],
    );
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let mut cfg = std::fs::read_to_string(&p).unwrap();
    cfg.push_str(&format!(
        "\n[mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"cinta@bank.example\"\nstarttls = true\nca = \"{}\"\nusername = \"cinta\"\npassword_file = \"mail.pass\"\nretry_seconds = 1\n",
        pki.join("ca.pem").display()
    ));
    std::fs::write(&p, cfg).unwrap();
    s.start_controller();
    s.until("the agent to come back", Site::agent_connected);
    let r = s.ctl_json(&[
        "restore",
        "request",
        "--server",
        "PROD1",
        "--path",
        "*/home/note.txt",
        "--to",
        s.d().join("r").to_str().unwrap(),
        "--ticket",
        "INC-7100",
        "--requester",
        "Ana",
        "--email",
        "ana@bank.example",
    ]);
    let id = r["id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    while mails(&dir).len() < 2 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = mails(&dir);
    drop(sink);
    assert!(
        got.len() >= 2,
        "mails over TLS: {got:#?}; controller log: {}",
        std::fs::read_to_string(s.d().join("controller.log")).unwrap_or_default()
    );
    for m in &got {
        assert!(
            m.contains("X-Auth: cinta\r\n") && m.contains("[INC-7100]"),
            "{m}"
        );
    }
    assert!(
        got.iter()
            .any(|m| m.contains(&format!("restore request {id}: restored and verified"))),
        "{got:#?}"
    );
}

#[test]
fn the_audit_log_records_every_action_and_names_the_record_tampered_with() {
    use cinta_controller::catalog::{Catalog, Sql};
    let s = Site::with_production_agent();
    let job = s.ctl_json(&["run", "NIGHTLY", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let refused = s.ctl_as("viewer", &["run", "NIGHTLY"]);
    assert!(!refused.status.success());
    let audit = |who: &str, args: &[&str]| -> (bool, serde_json::Value, String) {
        let mut a = vec!["audit"];
        a.extend_from_slice(args);
        let o = s.ctl_as(who, &a);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        (
            o.status.success(),
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
            err,
        )
    };
    // Only the auditor (and an admin) read the log; a viewer and an approver may not.
    for who in ["viewer", "approver"] {
        let (ok, _, err) = audit(who, &[]);
        assert!(
            !ok && err.contains("needs the auditor role"),
            "{who}: {err}"
        );
    }
    let (ok, log, err) = audit("auditor", &[]);
    assert!(ok, "{err}");
    let records = log.as_array().unwrap();
    // Who, role, what, arguments, result, when and from where.
    let run = records
        .iter()
        .find(|r| r["action"] == "RunControlGroup")
        .expect("the console action is recorded");
    assert_eq!(run["who"], "console", "{run}");
    assert_eq!(run["role"], "operator", "{run}");
    assert!(run["args"].as_str().unwrap().contains("NIGHTLY"), "{run}");
    assert_eq!(run["result"], "ok", "{run}");
    assert!(
        run["from"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{run}"
    );
    assert!(run["time"].as_i64().unwrap() > 0, "{run}");
    // The job's own events and the refusal are in it too.
    assert!(
        records
            .iter()
            .any(|r| r["who"] == "controller" && r["action"].as_str().unwrap().starts_with("job.")),
        "{log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "access.denied"
                && r["args"].as_str().unwrap().contains("helpdesk")),
        "{log}"
    );
    // Intact: every record and the signed head check.
    let (ok, v, err) = audit("auditor", &["verify"]);
    assert!(ok, "{err}");
    assert_eq!(v["intact"], true, "{v}");
    let n = v["records"].as_u64().unwrap() as i64;
    assert!(n >= 3, "{v}");

    // Someone with the catalog file but not the audit key edits the record
    // of the run: verify names it, exits 3, and the log is intact again once undone.
    let seq = run["seq"].as_i64().unwrap();
    let mut db = cinta_controller::catalog::sqlite::open(&s.d().join("catalog.db")).unwrap();
    let original = db.audit_page(seq - 1, 1).unwrap().remove(0);
    let tamper =
        |db: &mut cinta_controller::catalog::SqlCatalog<
            cinta_controller::catalog::sqlite::Sqlite,
        >,
         q: &str,
         p: Vec<cinta_controller::catalog::Val>| { db.sql().exec(&[(q, p)]).unwrap() };
    tamper(
        &mut db,
        "UPDATE audit SET body = ?1 WHERE seq = ?2",
        vec![
            original.body.replace("NIGHTLY", "NOTHING").into(),
            seq.into(),
        ],
    );
    let verify_fails = |want: &str| {
        let o = s.ctl_as("auditor", &["audit", "verify"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(3), "{v}");
        assert_eq!(v["intact"], false, "{v}");
        assert!(v["problem"].as_str().unwrap().contains(want), "{want}: {v}");
    };
    verify_fails(&format!("record {seq} was changed"));
    let put = |db: &mut cinta_controller::catalog::SqlCatalog<
        cinta_controller::catalog::sqlite::Sqlite,
    >,
               r: &cinta_controller::audit::AuditRow| {
        db.sql()
            .exec(&[cinta_controller::catalog::audit_insert(r)])
            .unwrap()
    };
    tamper(
        &mut db,
        "DELETE FROM audit WHERE seq = ?1",
        vec![seq.into()],
    );
    verify_fails(&format!("record {seq} was removed"));
    put(&mut db, &original);
    let (_, v, _) = audit("auditor", &["verify"]);
    assert_eq!(v["intact"], true, "{v}");
    // A forged record inserted before the run (the later ones renumbered).
    let later = db.audit_page(seq - 1, 100_000).unwrap();
    tamper(
        &mut db,
        "DELETE FROM audit WHERE seq >= ?1",
        vec![seq.into()],
    );
    let mut forged = original.clone();
    forged.body = forged.body.replace("\"console\"", "\"Marta\"");
    put(&mut db, &forged);
    for r in &later {
        let mut r = r.clone();
        r.seq += 1;
        put(&mut db, &r);
    }
    verify_fails(&format!("a record was inserted at {seq}"));
    // Records cut from the end are named against the signed head ("from
    // the end", or, if the controller recorded something since, a gap
    // before its next record: the chain goes on from the signed head).
    tamper(
        &mut db,
        "DELETE FROM audit WHERE seq >= ?1",
        vec![seq.into()],
    );
    verify_fails(&format!("records {seq} to "));
}

#[test]
fn the_recovery_report_orders_a_full_and_its_incremental_with_vaulted_cartridges_and_recall_times()
{
    let mut s = Site::with_production_agent();
    // A full save, its cartridge carried to the vault.
    let full = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(full["state"], "succeeded", "{full}");
    let vol = full["save_sets"][0]["volumes"][0]
        .as_str()
        .unwrap()
        .to_string();
    s.send_to_vault(&vol);
    // The next day an incremental (the control group now saves changes only).
    s.at(24 * 60);
    std::fs::write(s.d().join("data/home/note.txt"), b"changed\n").unwrap();
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let cfg = std::fs::read_to_string(&p).unwrap().replacen(
        "name = \"TO-VAULT\"\ntarget = \"production\"\n",
        "name = \"TO-VAULT\"\ntarget = \"production\"\nlevel = \"incr\"\n",
        1,
    );
    assert!(cfg.contains("level = \"incr\""));
    std::fs::write(&p, cfg).unwrap();
    s.start_controller();
    s.until("the agent to reconnect", Site::agent_connected);
    let incr = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(incr["state"], "succeeded", "{incr}");

    // find says where the vaulted copy is and how long its recall takes.
    let f = s.ctl_json(&["find", "*/note.txt"]);
    let vaulted = f["objects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["volumes"].as_array().unwrap().clone())
        .find(|v| v["volser"] == vol.as_str())
        .expect("the vaulted cartridge is listed");
    assert_eq!(vaulted["location"], "VAULT", "{vaulted}");
    assert_eq!(vaulted["recall_hours"], 24, "{vaulted}");
    assert_eq!(vaulted["emergency_recall_hours"], 3, "{vaulted}");

    // The plan: the full first (from the vault), then the incremental.
    let r = s.ctl_json(&["report", "recovery", "PROD1", "--control-group", "TO-VAULT"]);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{r}");
    assert_eq!(steps[0]["level"], "full", "{r}");
    assert_eq!(steps[0]["save_set"], full["save_sets"][0]["id"], "{r}");
    assert_eq!(steps[0]["volumes"][0]["location"], "VAULT", "{r}");
    assert_eq!(steps[0]["volumes"][0]["recall_hours"], 24, "{r}");
    assert_eq!(steps[1]["level"], "incr", "{r}");
    assert_eq!(steps[1]["save_set"], incr["save_sets"][0]["id"], "{r}");
    assert_eq!(steps[1]["volumes"][0]["location"], "*HOME", "{r}");
    for st in steps {
        assert!(
            st["command"]
                .as_str()
                .unwrap()
                .contains(st["save_set"].as_str().unwrap()),
            "{st}"
        );
    }
    // The time: the vault's standard recall, then both restores.
    assert_eq!(r["recall_seconds"], 24 * 3600, "{r}");
    assert_eq!(
        r["total_seconds"].as_i64().unwrap(),
        24 * 3600 + r["restore_seconds"].as_i64().unwrap(),
        "{r}"
    );
    let attention = r["attention"].to_string();
    assert!(attention.contains("single copy"), "{r}");
    // At a time before the incremental, only the full.
    let before = s.ctl_json(&[
        "report",
        "recovery",
        "PROD1",
        "--control-group",
        "TO-VAULT",
        "--at",
        "2026-11-25 08:00",
    ]);
    assert_eq!(before["steps"].as_array().unwrap().len(), 1, "{before}");
    // People read it too.
    let o = s.ctl_as("viewer", &["report", "recovery", "PROD1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unknown = s.ctl(&["report", "recovery", "NOPE"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NOPE is no LPAR"));
}

#[test]
fn the_backup_log_lists_every_run_its_save_sets_and_missed_runs_as_the_catalog_has_them() {
    let s = Site::with_production_agent();
    let good = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    assert_eq!(good["state"], "succeeded", "{good}");
    let bad = s.ctl(&["run", "BAD-PRE", "--wait"]);
    assert!(!bad.status.success());
    let bad: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let log = s.ctl_json(&["report", "backups", "--from", "2026-11-20"]);
    let runs = log["runs"].as_array().unwrap();
    let run = |job: &serde_json::Value| {
        runs.iter()
            .find(|r| r["job"] == job["id"])
            .unwrap_or_else(|| panic!("job {} not in the log: {log}", job["id"]))
            .clone()
    };
    // The good run, as the catalog has it: its save set encrypted, its key,
    // its retention as the media policy asks, its cartridge and where it is.
    let g = run(&good);
    assert_eq!(g["state"], "succeeded");
    assert_eq!(g["server"], "PROD1");
    assert_eq!(g["control_group"], "TO-VAULT");
    let set = &g["save_sets"][0];
    let caught = &good["save_sets"][0];
    assert_eq!(set["id"], caught["id"], "{g}");
    assert_eq!(set["bytes"], caught["bytes"], "{g}");
    assert_eq!(set["objects"], caught["objects"], "{g}");
    assert_eq!(set["key_id"], caught["key_id"], "{g}");
    assert_eq!(set["encryption"], "AES-256-GCM", "{g}");
    assert_eq!(set["key_manager"], "KMIP key manager", "{g}");
    assert_eq!(set["retention_asked"], "30 days", "{g}");
    assert_eq!(set["retention_applied"], true, "{g}");
    assert_eq!(set["copies"][0]["volumes"], caught["volumes"], "{g}");
    assert_eq!(set["copies"][0]["locations"][0], "*HOME", "{g}");
    let recorded = s
        .ctl_json(&["save-sets"])
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == caught["id"])
        .cloned()
        .unwrap();
    assert_eq!(set["expires"], recorded["expires"], "{recorded}");
    // The failed run with its reason.
    let b = run(&bad);
    assert_eq!(b["state"], "failed");
    assert!(b["message"].as_str().unwrap().contains("pre step"), "{b}");
    // The tallies add up.
    let tally = |g: &str| {
        log["tallies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["control_group"] == g)
            .cloned()
            .unwrap_or_else(|| panic!("{g} not tallied: {log}"))
    };
    assert_eq!(tally("TO-VAULT")["succeeded"], 1);
    assert_eq!(tally("TO-VAULT")["bytes"], caught["bytes"]);
    assert_eq!(tally("BAD-PRE")["failed"], 1);
    // Runs that were due while nothing ran: the weekday schedule and the night's pre-close.
    let missed = log["missed"].to_string();
    assert!(missed.contains("LATE-EXTRA"), "{missed}");
    assert!(missed.contains("\"by\":\"night pre-close\""), "{missed}");
    assert!(
        tally("LATE-EXTRA")["missed"].as_u64().unwrap() >= 2,
        "{log}"
    );
    assert!(log["audit_head"].as_i64().unwrap() > 0, "{log}");

    // CSV: a header and one line per save set of each run (a run without one: one line).
    let csv = s.ctl(&[
        "report",
        "backups",
        "--from",
        "2026-11-20",
        "--format",
        "csv",
    ]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("server,control_group,job,state"),
        "{csv}"
    );
    let rows: usize = runs
        .iter()
        .map(|r| r["save_sets"].as_array().unwrap().len().max(1))
        .sum();
    assert_eq!(lines.len(), 1 + rows, "{csv}");
    assert!(csv.contains(caught["id"].as_str().unwrap()));
    // HTML: one page, its tables, to a file.
    let page = s.d().join("backups.html");
    let o = s.ctl(&[
        "report",
        "backups",
        "--from",
        "2026-11-20",
        "--format",
        "html",
        "--output",
        page.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    for want in [
        "<!DOCTYPE html>",
        "<table id=\"runs\">",
        "<table id=\"missed\">",
        good["id"].as_str().unwrap(),
        "AES-256-GCM",
    ] {
        assert!(html.contains(want), "{want} not in the page");
    }
    assert!(
        !html.contains("<script"),
        "a self-contained page runs nothing"
    );
    let e = s.ctl(&[
        "report",
        "backups",
        "--from",
        "2026-11-20",
        "--format",
        "pdf",
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("format \"pdf\""));
}

/// Debian's Chromium, headless, as root, with no network of its own.
fn chromium(dir: &Path, args: &[&str]) -> Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.display()))
        .args(args)
        .output()
        .expect("chromium (Debian's package; tests/run.sh installs it)")
}

#[test]
fn the_quarters_evidence_matches_the_catalog_and_renders_in_a_real_browser() {
    let mut s = Site::with_production_agent();
    // The payroll entry holds personal data.
    drop(s.controller.take());
    let p = s.d().join("controller.toml");
    let cfg = std::fs::read_to_string(&p).unwrap();
    let at = cfg.find("name = \"NIGHTLY\"").unwrap();
    let line_end = at + cfg[at..].find("/data/payroll\"\n").unwrap() + "/data/payroll\"\n".len();
    let cfg = format!(
        "{}personal_data = true\n{}",
        &cfg[..line_end],
        &cfg[line_end..]
    );
    std::fs::write(&p, cfg).unwrap();
    s.start_controller();
    s.until("the agent to reconnect", Site::agent_connected);
    // Two nights: saves, a failed run, a cartridge to the vault.
    let mut jobs = vec![s.ctl_json(&["run", "NIGHTLY", "--wait"])];
    let bad = s.ctl(&["run", "BAD-PRE", "--wait"]);
    jobs.push(serde_json::from_slice(&bad.stdout).unwrap());
    s.at(24 * 60);
    jobs.push(s.ctl_json(&["run", "NIGHTLY", "--wait"]));
    // A restore request and a drill.
    let to = s.d().join("restored");
    let rid = s.request_restore("*/payroll/ledger.dat", &to, "INC-1", "Ana Ruiz");
    s.until_verified(&rid);
    let d = s.ctl_json(&["drills", "run", "--seed", "7"]);
    let did = d["id"].as_str().unwrap().to_string();
    s.until("the drill to end", |s| {
        s.ctl_json(&["drills", "show", &did])["state"] != "running"
    });

    // Then a save whose cartridge goes to the vault.
    let vaulted = s.ctl_json(&["run", "TO-VAULT", "--wait"]);
    let vol = vaulted["save_sets"][0]["volumes"][0]
        .as_str()
        .unwrap()
        .to_string();
    jobs.push(vaulted);
    s.send_to_vault(&vol);
    // Only the auditor (and an admin) reads the evidence.
    let o = s.ctl_as("viewer", &["report", "evidence", "--quarter", "2026Q4"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs the auditor role"));
    let e = s.evidence();
    // Its figures are the catalog's (the scheduler's own runs of the second
    // night included: its pre-close and the weekday schedule).
    let sets = s.ctl_json(&["save-sets"]).as_array().unwrap().len();
    assert!(sets >= 5, "{sets}");
    assert_eq!(e["save_sets"], sets, "{e}");
    assert_eq!(e["encrypted"], sets, "every save set encrypted: {e}");
    assert_eq!(e["keys_in_key_manager"], sets, "{e}");
    let listed_jobs = s.ctl_json(&["jobs", "--limit", "100"]);
    let runs_in_log = e["log"]["runs"].as_array().unwrap().len();
    let control_group_jobs = listed_jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            let g = j["control_group"].as_str().unwrap();
            !g.is_empty() && e["groups"].to_string().contains(&format!("\"{g}\""))
        })
        .count();
    assert_eq!(runs_in_log, control_group_jobs, "{listed_jobs}");
    let group = |g: &str| {
        e["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["control_group"] == g)
            .cloned()
            .unwrap()
    };
    assert_eq!(group("NIGHTLY")["runs"], 2);
    assert_eq!(group("NIGHTLY")["succeeded"], 2);
    assert_eq!(group("BAD-PRE")["failed"], 1);
    assert_eq!(group("TO-VAULT")["retention"], "30 days");
    assert_eq!(e["retention_applied"], sets, "{e}");
    assert_eq!(e["nights"].as_array().unwrap().len(), 2, "{e}");
    assert!(e["away"].as_u64().unwrap() >= 1, "{e}");
    assert!(e["moves"].to_string().contains(&vol), "{e}");
    assert_eq!(e["log"]["restores"][0]["id"], rid.as_str());
    assert_eq!(e["log"]["drills"][0]["id"], did.as_str());
    assert_eq!(
        e["drills_passed"].as_u64().unwrap() + e["drills_failed"].as_u64().unwrap(),
        1
    );
    let personal = &e["personal_data"][0];
    assert_eq!(personal["control_group"], "NIGHTLY", "{e}");
    assert!(personal["entry"]
        .as_str()
        .unwrap()
        .ends_with("/data/payroll"));
    assert_eq!(personal["all_encrypted"], true);
    let nightly_sets: Vec<&serde_json::Value> = jobs
        .iter()
        .filter(|j| j["control_group"] == "NIGHTLY")
        .flat_map(|j| j["save_sets"].as_array().unwrap())
        .map(|x| &x["id"])
        .collect();
    let listed: Vec<&serde_json::Value> = personal["save_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| &x["save_set"])
        .collect();
    assert_eq!(listed, nightly_sets, "{e}");
    assert_eq!(e["audit"]["intact"], true, "{e}");
    assert!(e["audit"]["head"].as_i64().unwrap() > 0);

    // One page, rendered by a real browser: its sections and three charts,
    // one bar per night, and a screenshot of it.
    let page = s.d().join("evidence.html");
    let o = s.ctl_as(
        "auditor",
        &[
            "report",
            "evidence",
            "--quarter",
            "2026Q4",
            "--format",
            "html",
            "--output",
            page.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let profile = s.d().join("chromium");
    let dom = chromium(
        &profile,
        &["--dump-dom", &format!("file://{}", page.display())],
    );
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    for id in [
        "policy",
        "restore",
        "media",
        "personal",
        "audit",
        "chart-bytes",
        "chart-duration",
        "chart-success",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "{id} not rendered: {dom}"
        );
    }
    let chart = dom.split("id=\"chart-bytes\"").nth(1).unwrap();
    let chart = chart.split("</svg>").next().unwrap();
    assert_eq!(chart.matches("class=\"bar\"").count(), 2, "{chart}");
    let shot = s.d().join("evidence.png");
    let o = chromium(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
            &format!("file://{}", page.display()),
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    if let Ok(dir) = std::env::var("CINTA_EVIDENCE_SCREENSHOT") {
        std::fs::copy(&shot, dir).unwrap();
    }
}

/// Adds cartridges (barcode, media class) to PROD1's library.
fn add_cartridges(s: &Site, carts: &[(&str, &str)]) {
    for (bc, class) in carts {
        ok(
            "cinta-agent",
            &[
                "library",
                "add",
                lib(s).to_str().unwrap(),
                bc,
                "--media-class",
                class,
            ],
        );
    }
}

/// A site whose PROD1 library also holds ON0001 (class ONSITE) and
/// OF0001 (class OFFSITE), with PROD1's agent connected.
fn site_with_two_sets() -> Site {
    let mut s = Site::new();
    add_cartridges(&s, &[("ON0001", "ONSITE"), ("OF0001", "OFFSITE")]);
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    s
}

/// Waits until save set `id` has its first copy.
fn until_copied(s: &Site, id: &str) {
    s.until("the copy to be recorded", |s| {
        save_set(s, id)["copies"]
            .as_array()
            .is_some_and(|c| c.len() == 1)
    });
}

/// The save set as `cintactl save-sets` shows it.
fn save_set(s: &Site, id: &str) -> serde_json::Value {
    s.ctl_json(&["save-sets"])
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .cloned()
        .unwrap()
}

#[test]
fn each_save_is_copied_to_a_second_cartridge_set_and_the_copy_serves_when_the_original_cannot() {
    let s = site_with_two_sets();
    let l = lib(&s);
    let j = s.ctl_json(&["run", "DUPLICATED", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["save_sets"][0]["volumes"][0], "ON0001", "{j}");
    let id = j["save_sets"][0]["id"].as_str().unwrap().to_string();
    // The copy job follows the save at once: block for block onto the
    // OFFSITE set, checked against the digest the save recorded.
    until_copied(&s, &id);
    let rec = save_set(&s, &id);
    let c = &rec["copies"][0];
    assert_eq!(c["volumes"][0], "OF0001", "{rec}");
    assert_eq!(c["media_class"], "OFFSITE", "{rec}");
    assert_eq!(c["move_policy"], "VAULT-7", "{rec}");
    assert_eq!(c["verified"], true, "{rec}");
    assert_eq!(rec["copies_wanted"], 2, "{rec}");
    let copy_jobs: Vec<serde_json::Value> = s
        .ctl_json(&["jobs"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["control_group"] == "copy")
        .cloned()
        .collect();
    assert_eq!(copy_jobs.len(), 1, "{copy_jobs:?}");
    assert_eq!(copy_jobs[0]["state"], "succeeded", "{copy_jobs:?}");
    let ev = s.ctl_json(&["events", "--limit", "100"]).to_string();
    assert!(
        ev.contains("saveset.copied") && ev.contains("copy 1 on OF0001"),
        "{ev}"
    );
    // The copy's cartridge is a volume of its own, following the vault policy.
    let vols = s.ctl_json(&["volumes"]);
    let of = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volser"] == "OF0001")
        .unwrap();
    assert_eq!(of["move_policy"], "VAULT-7", "{of}");
    // Nothing left to copy: the console says so.
    let o = s.ctl(&["copy", &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has the 2 copies media policy"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The original damaged: the restore reads what it cannot give from the copy.
    damage_blocks(&l.join("cartridges/ON0001.tap"), 4096);
    let to = s.d().join("restored-1");
    let rid = s.request_restore("*/payroll/ledger.dat", &to, "INC-1", "Accounting");
    let shown = s.until_verified(&rid);
    let path = s.ctl_json(&["find", "*/payroll/ledger.dat"])["objects"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read(to.join(&path)).unwrap(), vec![3u8; 200_000]);
    let msg = shown.to_string();
    assert!(
        msg.contains("objects read from copy 1 on cartridge OF0001"),
        "{shown}"
    );

    // The original's cartridge gone from the library: all from the copy.
    ok(
        "cinta-agent",
        &["library", "export", l.to_str().unwrap(), "ON0001"],
    );
    ok(
        "cinta-agent",
        &[
            "library",
            "remove",
            l.to_str().unwrap(),
            "ON0001",
            "--to",
            s.d().join("ON0001-lost.tap").to_str().unwrap(),
        ],
    );
    let to2 = s.d().join("restored-2");
    let rid = s.request_restore("*/home/note.txt", &to2, "INC-2", "Accounting");
    s.until_verified(&rid);
    let path = s.ctl_json(&["find", "*/home/note.txt"])["objects"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read(to2.join(&path)).unwrap(), b"hello\n");
    assert!(
        s.ctl_json(&["restore", "show", &rid])
            .to_string()
            .contains("the original's cartridges are not in the library"),
        "{}",
        s.ctl_json(&["restore", "show", &rid])
    );

    // The copy goes to the vault by its move policy; the recovery report
    // counts two copies and names where each is.
    s.send_to_vault("OF0001");
    let plan = s.ctl_json(&[
        "report",
        "recovery",
        "PROD1",
        "--control-group",
        "DUPLICATED",
    ]);
    let step = &plan["steps"][0];
    assert_eq!(step["save_set"], id.as_str(), "{plan}");
    assert_eq!(step["copies"], 2, "{plan}");
    assert!(
        !plan["attention"]
            .to_string()
            .contains(&format!("save set {id} has a single copy")),
        "{plan}"
    );
    let log = s.ctl_json(&[
        "report",
        "backups",
        "--from",
        "2020-01-01",
        "--format",
        "json",
    ]);
    assert!(
        log.to_string().contains("\"OF0001\"") && log.to_string().contains("\"VAULT\""),
        "{log}"
    );

    // Expiry takes every copy: the key is destroyed, so the vaulted copy
    // can never be read, and both cartridges hold only expired data.
    let uid = rec["key_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("kmip:")
        .to_string();
    s.at(2 * 24 * 60 + 1);
    s.until("the save set to expire", |s| {
        save_set(s, &id)["state"] == "expired"
    });
    let key: serde_json::Value =
        serde_json::from_str(&s.kms.admin_ok(&["--json", "keys", "show", &uid])).unwrap();
    assert_eq!(key["key"]["state"], "Destroyed", "{key}");
    let vols = s.ctl_json(&["volumes"]);
    for v in ["ON0001", "OF0001"] {
        let x = vols
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["volser"] == v)
            .unwrap();
        assert_eq!(x["expired"], true, "{x}");
    }
}

/// One night at `day` days after the first evening: the pre-close save at
/// 20:31, the close finished at 22:30, the post-close save; returns once
/// the night is done.
fn a_normal_night(s: &Site, day: i64) {
    let m = day * 24 * 60;
    s.at(m + 31);
    s.until("the pre-close save and the close window", |s| {
        let n = s.tonight();
        n["state"] == "close-window" && n["pre_close_job"] != ""
    });
    s.at(m + 150);
    s.ctl_json(&["close", "finished"]);
    s.until("the night to end", |s| s.tonight()["state"] == "done");
}

#[test]
fn a_simulated_quarter_is_reported_as_the_catalog_holds_it() {
    // The first night falls back to the contingency LPAR (users stayed on).
    let s = night_with_users_on(3, 7, 2);
    assert!(s.tonight()["timeline"].to_string().contains("FALLBACK"));
    let sim = s.d().join("sim");
    std::fs::write(sim.join("PROD1/users"), "0\n").unwrap();
    std::fs::remove_file(sim.join("PROD1/stay")).unwrap();
    add_cartridges(&s, &[("ON0001", "ONSITE"), ("OF0001", "OFFSITE")]);
    // The next night is a normal one; during the day a run fails, a save
    // is copied to the offsite set, a restore is asked for and served, and
    // a drill runs.
    a_normal_night(&s, 1);
    let bad = s.ctl(&["run", "BAD-PRE", "--wait"]);
    assert!(!bad.status.success());
    let dup = s.ctl_json(&["run", "DUPLICATED", "--wait"]);
    let dup_id = dup["save_sets"][0]["id"].as_str().unwrap().to_string();
    until_copied(&s, &dup_id);
    let to = s.d().join("restored");
    let rid = s.request_restore("*/payroll/ledger.dat", &to, "INC-7", "Ana Ruiz");
    s.until_verified(&rid);
    let d = s.ctl_json(&["drills", "run", "--seed", "11"]);
    let did = d["id"].as_str().unwrap().to_string();
    s.until("the drill to end", |s| {
        s.ctl_json(&["drills", "show", &did])["state"] != "running"
    });
    // Three weeks later, another night (the weekday runs between were missed).
    a_normal_night(&s, 21);

    let e = s.evidence();
    let log = &e["log"];
    // Nights: three, the first with its fallback to the contingency LPAR.
    assert_eq!(e["nights"].as_array().unwrap().len(), 3, "{e}");
    let nights = log["nights"].to_string();
    assert!(
        nights.contains("fallback.taken") && nights.contains("saving on contingency"),
        "{nights}"
    );
    // After three weeks without a night, tonight's night ran, not the first one missed.
    assert!(nights.contains("night 2026-12-15: ok"), "{nights}");
    // Every save set of the catalog, each encrypted under a key of the key manager.
    let sets = s.ctl_json(&["save-sets"]);
    let sets = sets.as_array().unwrap();
    assert!(sets.len() >= 5, "{sets:?}");
    assert_eq!(e["save_sets"], sets.len(), "{e}");
    assert_eq!(e["encrypted"], sets.len(), "{e}");
    assert_eq!(e["keys_in_key_manager"], sets.len(), "{e}");
    assert_eq!(e["retention_applied"], sets.len(), "{e}");
    // Every run of a control group the jobs list holds, with its result.
    let jobs = s.ctl_json(&["jobs", "--limit", "200"]);
    let group_jobs: Vec<&serde_json::Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            let g = j["control_group"].as_str().unwrap();
            e["groups"].to_string().contains(&format!("\"{g}\""))
        })
        .collect();
    let runs = log["runs"].as_array().unwrap();
    assert_eq!(runs.len(), group_jobs.len(), "{jobs}");
    for j in &group_jobs {
        let r = runs.iter().find(|r| r["job"] == j["id"]).unwrap();
        assert_eq!(r["state"], j["state"], "{r}");
    }
    let failed = group_jobs.iter().filter(|j| j["state"] == "failed").count();
    let tallied: u64 = log["tallies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(tallied, failed as u64, "{log}");
    assert!(failed >= 1);
    // The contingency save is CONT1's run of the fallback night.
    assert!(
        runs.iter()
            .any(|r| r["server"] == "CONT1" && r["state"] == "succeeded"),
        "{log}"
    );
    // The weekdays between the nights were missed, and say so.
    assert!(
        log["missed"].to_string().contains("LATE-EXTRA"),
        "{}",
        log["missed"]
    );
    // The restore request and the drill, with their results.
    assert_eq!(log["restores"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["restores"][0]["id"], rid.as_str());
    assert_eq!(e["restores_served"], 1, "{e}");
    let drill = s.ctl_json(&["drills", "show", &did]);
    assert_eq!(log["drills"][0]["id"], did.as_str());
    assert_eq!(log["drills"][0]["state"], drill["state"], "{log}");
    // Copies: the one save set whose policy asks for two has them.
    let copied = sets
        .iter()
        .filter(|x| !x["copies"].as_array().unwrap().is_empty())
        .count();
    assert_eq!(copied, 1);
    assert_eq!(e["copied"], copied, "{e}");
    assert_eq!(e["copies_short"].as_array().unwrap().len(), 0, "{e}");
    let line = runs
        .iter()
        .flat_map(|r| r["save_sets"].as_array().unwrap())
        .find(|x| x["id"] == dup_id.as_str())
        .unwrap();
    assert_eq!(line["copies"][1]["volumes"][0], "OF0001", "{line}");
    assert_eq!(e["audit"]["intact"], true, "{e}");
}

#[test]
fn a_copy_that_cannot_be_made_is_retried_then_escalated_and_an_operator_retries_it() {
    let mut s = Site::new();
    add_cartridges(&s, &[("ON0001", "ONSITE")]);
    s.start_agent("PROD1");
    s.until("the agent to register", Site::agent_connected);
    let j = s.ctl_json(&["run", "COPY-NOWHERE", "--wait"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let id = j["save_sets"][0]["id"].as_str().unwrap().to_string();
    // No cartridge of class NOWHERE: three copy jobs fail, then an escalation.
    s.until("the escalation", |s| {
        s.ctl_json(&["events", "--limit", "200"])
            .to_string()
            .contains("copy.failed")
    });
    let copy_jobs = |s: &Site| -> Vec<serde_json::Value> {
        s.ctl_json(&["jobs", "--limit", "200"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["control_group"] == "copy")
            .cloned()
            .collect()
    };
    let jobs = copy_jobs(&s);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["state"] == "failed"), "{jobs:?}");
    assert!(
        jobs[0]["message"]
            .as_str()
            .unwrap()
            .contains("no scratch cartridge of media class NOWHERE"),
        "{jobs:?}"
    );
    let ev = s.ctl_json(&["events", "--limit", "200"]).to_string();
    assert!(
        ev.contains(&format!(
            "save set {id} of PROD1 has 1 of the 2 copies media policy COPY-NOWHERE asks for"
        )),
        "{ev}"
    );
    assert!(ev.contains("copy.retry"), "{ev}");
    // Nothing more is tried on its own.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(copy_jobs(&s).len(), 3);
    // The evidence names it as short of copies.
    let e = s.evidence();
    assert_eq!(e["copies_short"][0], id.as_str(), "{e}");
    // A cartridge of the class arrives; the operator tries again and the copy is made.
    add_cartridges(&s, &[("NW0001", "NOWHERE")]);
    let r = s.ctl_json(&["copy", &id]);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1, "{r}");
    until_copied(&s, &id);
    assert_eq!(save_set(&s, &id)["copies"][0]["volumes"][0], "NW0001");
    // A viewer cannot start copies.
    let o = s.ctl_as("viewer", &["copy"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs the operator role"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn copies_on_a_schedule_wait_for_the_morning() {
    let s = site_with_two_sets();
    let j = s.ctl_json(&["run", "DUP-MORNING", "--wait"]);
    let id = j["save_sets"][0]["id"].as_str().unwrap().to_string();
    // The evening's save is not copied at once...
    std::thread::sleep(Duration::from_secs(3));
    assert!(save_set(&s, &id)["copies"].as_array().unwrap().is_empty());
    assert!(!s.ctl_json(&["jobs"]).to_string().contains("\"copy\""));
    // ...but at 06:00 the next morning.
    s.at(10 * 60 + 1);
    until_copied(&s, &id);
    assert_eq!(save_set(&s, &id)["copies"][0]["volumes"][0], "OF0001");
}

#[test]
fn a_restore_reads_the_copy_at_home_instead_of_recalling_the_vaulted_original() {
    let s = site_with_two_sets();
    let j = s.ctl_json(&["run", "DUP-ORIGINAL-AWAY", "--wait"]);
    let id = j["save_sets"][0]["id"].as_str().unwrap().to_string();
    until_copied(&s, &id);
    // This policy sends the original to the vault and keeps the copy home.
    s.send_to_vault("ON0001");
    assert_eq!(s.volume("ON0001")["location"], "VAULT");
    // No recall: the copy at home serves.
    let to = s.d().join("restored");
    let rid = s.request_restore("*/home/note.txt", &to, "INC-9", "Ops");
    let r = s.until_verified(&rid);
    assert!(
        !r["history"].to_string().contains("recall"),
        "nothing recalled: {r}"
    );
    assert!(
        r.to_string()
            .contains("objects read from copy 1 on cartridge OF0001"),
        "{r}"
    );
    assert_eq!(
        s.volume("ON0001")["in_transit_to"],
        "",
        "the original stays at the vault"
    );
    // The recovery report plans from the copy at home, and says why.
    let plan = s.ctl_json(&[
        "report",
        "recovery",
        "PROD1",
        "--control-group",
        "DUP-ORIGINAL-AWAY",
    ]);
    assert_eq!(plan["steps"][0]["volumes"][0]["volser"], "OF0001", "{plan}");
    assert_eq!(plan["recall_seconds"], 0, "{plan}");
    assert!(
        plan["attention"]
            .to_string()
            .contains("copy 1 (OF0001) is read"),
        "{plan}"
    );
}
