//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a free loopback port, stopped when dropped.
//!
//! PostgreSQL refuses to run as root; when the tests run as root the
//! server runs as the `postgres` user the Debian package creates
//! (tests/run.sh installs the package when it is missing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    bin: PathBuf,
    tls: bool,
}

/// Where PostgreSQL's server programs are (`initdb` on PATH, else Debian's place).
fn bindir() -> PathBuf {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().expect(
        "PostgreSQL's server is not installed (tests/run.sh installs the postgresql package)",
    )
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the server's user.
fn cmd(bin: &Path, prog: &str) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    }
}

impl Server {
    /// Creates a cluster (trust authentication, superuser `cinta`) and starts it.
    pub fn start() -> Server {
        Server::create(None)
    }

    /// The same, serving TLS (only) with this certificate and key; connections are logged.
    pub fn start_tls(cert: &Path, key: &Path) -> Server {
        Server::create(Some((cert, key)))
    }

    fn create(tls: Option<(&Path, &Path)>) -> Server {
        let bin = bindir();
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the test cluster to postgres");
        }
        let o = cmd(&bin, "initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "cinta", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if let Some((cert, key)) = tls {
            // PostgreSQL wants its key readable by its own user only.
            std::fs::copy(cert, dir.path().join("server.pem")).unwrap();
            std::fs::copy(key, dir.path().join("server.key")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if as_root() {
                let ok = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path().join("server.pem"))
                    .arg(dir.path().join("server.key"))
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            }
            // Only TLS connections over TCP (Unix sockets stay local).
            std::fs::write(
                dir.path().join("data/pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        let mut s = Server {
            dir,
            port,
            child: None,
            bin,
            tls: tls.is_some(),
        };
        s.run();
        s
    }

    /// Starts the server on its directory and port; returns once it takes connections.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut c = cmd(&self.bin, "postgres");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if self.tls {
            let d = self.dir.path().display();
            c.args(["-c", "ssl=on", "-c", "log_connections=on"])
                .args(["-c", &format!("ssl_cert_file={d}/server.pem")])
                .args(["-c", &format!("ssl_key_file={d}/server.key")]);
        }
        let child = c.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let ready = cmd(&self.bin, "pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server has logged (connections, with `start_tls`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: sessions are cut, data kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = cmd(&self.bin, "pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The catalog URL of database `postgres` as superuser `cinta`.
    pub fn url(&self) -> String {
        format!("postgresql://cinta@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
