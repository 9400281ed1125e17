//! A real cinta-keymgr per test: its own directory, throwaway PKI, keystore, config and port on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cinta_kmip::message::Version;
use cinta_kmip_client::{Client, Config};

fn bin() -> PathBuf {
    crate::binary("cinta-keymgr")
}

pub struct Kms {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pki: PathBuf,
    pub addr: String,
    child: Option<Child>,
    pub log: PathBuf,
}

/// Runs the admin CLI; panics with its output if it fails.
pub fn admin_ok(config: &Path, args: &[&str]) -> String {
    let o = admin(config, args);
    assert!(
        o.status.success(),
        "cinta-keymgr {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn admin(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run cinta-keymgr")
}

impl Kms {
    /// PKI, master key, config (extra TOML lines appended), keystore; not yet serving.
    pub fn new(extra: &str) -> Kms {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let p = pki.to_str().unwrap();
        let none = Path::new("/nonexistent");
        admin_ok(none, &["pki", "init", p]);
        admin_ok(
            none,
            &[
                "pki",
                "issue",
                p,
                "server",
                "--server",
                "--host",
                "127.0.0.1",
                "--host",
                "localhost",
            ],
        );
        admin_ok(
            none,
            &[
                "master-key",
                "new",
                "--out",
                dir.path().join("master.key").to_str().unwrap(),
            ],
        );
        let config = dir.path().join("keymgr.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nkeystore = \"keystore.db\"\n{extra}\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n[master_key]\nfile = \"master.key\"\n"
            ),
        )
        .unwrap();
        admin_ok(&config, &["init"]);
        Kms {
            log: dir.path().join("serve.log"),
            dir,
            config,
            pki,
            addr: String::new(),
            child: None,
        }
    }

    /// Starts serving; waits for the "listening on" line.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("cinta-keymgr listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            });
        self.addr = addr.to_string();
        self.child = Some(child);
    }

    /// Keeps the current port across restarts (rewrites `listen` in the config).
    pub fn pin_port(&self) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let cfg = cfg.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.addr),
        );
        std::fs::write(&self.config, cfg).unwrap();
    }

    pub fn serving() -> Kms {
        let mut k = Kms::new("");
        k.start();
        k
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        admin_ok(&self.config, args)
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        admin(&self.config, args)
    }

    /// Issues a client certificate NAME (ECDSA).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        self.admin_ok(&["pki", "issue", self.pki.to_str().unwrap(), name, "--client"]);
        (
            self.pki.join(format!("{name}.pem")),
            self.pki.join(format!("{name}.key")),
        )
    }

    pub fn client_config(&self, name: &str, version: Version) -> Config {
        let mut c = Config::new(
            self.addr.clone(),
            &self.pki.join(format!("{name}.pem")),
            &self.pki.join(format!("{name}.key")),
            &self.pki.join("ca.pem"),
        );
        c.version = version;
        c.retry_for = Duration::from_secs(2);
        c
    }

    /// The fingerprint of client NAME as the server listed it.
    pub fn fingerprint(&self, name: &str) -> String {
        let out = self.admin_ok(&["--json", "clients", "list"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["subject"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("CN={name}"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "client {name} not listed: {out}\nserver log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })["fingerprint"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A client NAME that has connected once (pending) and been accepted into GROUP.
    pub fn accepted(&self, name: &str, group: &str, version: Version) -> Client {
        self.issue(name);
        let mut c = Client::new(self.client_config(name, version)).unwrap();
        let e = c.locate_by_name("nothing").unwrap_err();
        assert!(e.to_string().contains("pending"), "{e}");
        let fp = self.fingerprint(name);
        self.admin_ok(&["clients", "accept", &fp[..16], "--group", group]);
        c
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A rustls client configuration for client certificate NAME of `kms`'s PKI
/// (TLS 1.2 only if asked), for tests that speak raw TLS.
pub fn tls_client_config(
    kms: &Kms,
    name: &str,
    tls12_only: bool,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(kms.pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(kms.pki.join(format!("{name}.pem")))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(kms.pki.join(format!("{name}.key"))).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider);
    let b = if tls12_only {
        b.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        b.with_safe_default_protocol_versions()
    };
    std::sync::Arc::new(
        b.unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}
