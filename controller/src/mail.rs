//! Mail to requesters and the help desk: an SMTP client (STARTTLS and AUTH PLAIN when configured) fed by a bounded queue on its own task; a mail that cannot be sent is retried, and never blocks what sent it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// `[mail]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP server, host:port.
    pub server: String,
    /// The sender, e.g. "cinta@bank.example".
    pub from: String,
    /// The help desk's address: told of every request as well.
    pub help_desk: Option<String>,
    /// Switch to TLS (STARTTLS) before anything else is said; the server's
    /// certificate is checked against `ca` and the server's host name.
    #[serde(default)]
    pub starttls: bool,
    pub ca: Option<PathBuf>,
    /// AUTH PLAIN with this user and the first line of `password_file`
    /// (only over TLS).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Seconds between tries of a mail that could not be sent.
    #[serde(default = "default_retry")]
    pub retry_seconds: u32,
    /// Seconds after which a mail that could not be sent is given up (logged).
    #[serde(default = "default_give_up")]
    pub give_up_seconds: u32,
}

fn default_retry() -> u32 {
    60
}
fn default_give_up() -> u32 {
    86_400
}

/// One mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Mails waiting at most; more are dropped (logged), never waited for.
const QUEUE: usize = 1024;
/// Time allowed for each SMTP exchange.
const STEP: Duration = Duration::from_secs(20);

/// The sending side, shared.
#[derive(Default)]
pub struct Mailer {
    tx: Option<tokio::sync::mpsc::Sender<Mail>>,
    pub help_desk: Option<String>,
}

impl Mailer {
    /// Starts the sending task (inside a tokio runtime) when mail is configured.
    pub fn start(cfg: Option<MailConfig>) -> Mailer {
        let Some(cfg) = cfg else {
            return Mailer::default();
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Mail>(QUEUE);
        let help_desk = cfg.help_desk.clone();
        let cfg = Arc::new(cfg);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                // Each mail on its own task: one that waits to be retried
                // never holds up the next.
                let cfg = cfg.clone();
                tokio::spawn(async move { deliver(&cfg, m).await });
            }
        });
        Mailer {
            tx: Some(tx),
            help_desk,
        }
    }

    /// Queues a mail; never waits. Without `[mail]`, nothing is sent.
    pub fn send(&self, m: Mail) {
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.try_send(m) {
                tracing::error!(error = %e, "mail dropped: the queue is full");
            }
        }
    }
}

/// Sends `m`, trying again every `retry_seconds` until `give_up_seconds` passed.
async fn deliver(cfg: &MailConfig, m: Mail) {
    let start = std::time::Instant::now();
    loop {
        match send_once(cfg, &m).await {
            Ok(()) => {
                tracing::info!(to = ?m.to, subject = %m.subject, "mail sent");
                return;
            }
            Err(e) if start.elapsed().as_secs() >= u64::from(cfg.give_up_seconds) => {
                tracing::error!(to = ?m.to, subject = %m.subject, error = %e, "mail given up");
                return;
            }
            Err(e) => {
                tracing::warn!(to = ?m.to, subject = %m.subject, error = %e, retry_in = cfg.retry_seconds, "mail not sent yet");
                tokio::time::sleep(Duration::from_secs(u64::from(cfg.retry_seconds.max(1)))).await;
            }
        }
    }
}

type Line = std::result::Result<(), String>;

/// Reads one SMTP reply (its continuation lines too); `Err` unless its code is `want`.
async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>, want: u16) -> Line {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(STEP, r.read_line(&mut line))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if code == want {
            Ok(())
        } else {
            Err(format!("the server said {:?}", line.trim_end()))
        };
    }
}

async fn say<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    what: &str,
    want: u16,
) -> Line {
    s.get_mut()
        .write_all(format!("{what}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    reply(s, want).await
}

/// The message as sent: headers, then the body with lines that start
/// with a dot doubled, ending in a lone dot.
fn message(cfg: &MailConfig, m: &Mail) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let mut out = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        cfg.from,
        m.to.join(", "),
        m.subject.replace(['\r', '\n'], " ")
    );
    for line in m.body.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push('.');
    out
}

/// The envelope and message, over a connection past its greeting and EHLO.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    cfg: &MailConfig,
    m: &Mail,
    tls: bool,
) -> Line {
    if let (Some(user), Some(pw)) = (&cfg.username, &cfg.password_file) {
        if !tls {
            return Err("AUTH is only sent over TLS: set starttls".into());
        }
        let pass = std::fs::read_to_string(pw).map_err(|e| format!("{}: {e}", pw.display()))?;
        let token = base64(format!("\0{user}\0{}", pass.lines().next().unwrap_or("")).as_bytes());
        say(s, &format!("AUTH PLAIN {token}"), 235).await?;
    }
    say(s, &format!("MAIL FROM:<{}>", cfg.from), 250).await?;
    for to in &m.to {
        say(s, &format!("RCPT TO:<{to}>"), 250).await?;
    }
    say(s, "DATA", 354).await?;
    say(s, &message(cfg, m), 250).await?;
    let _ = say(s, "QUIT", 221).await;
    Ok(())
}

async fn send_once(cfg: &MailConfig, m: &Mail) -> Line {
    let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(&cfg.server))
        .await
        .map_err(|_| format!("{}: no answer in time", cfg.server))?
        .map_err(|e| format!("{}: {e}", cfg.server))?;
    let mut s = BufReader::new(tcp);
    reply(&mut s, 220).await?;
    say(&mut s, "EHLO cinta-controller", 250).await?;
    if !cfg.starttls {
        return transaction(&mut s, cfg, m, false).await;
    }
    say(&mut s, "STARTTLS", 220).await?;
    let host = cfg
        .server
        .rsplit_once(':')
        .map_or(cfg.server.as_str(), |(h, _)| h);
    let tls = starttls(cfg, s.into_inner(), host).await?;
    let mut s = BufReader::new(tls);
    say(&mut s, "EHLO cinta-controller", 250).await?;
    transaction(&mut s, cfg, m, true).await
}

async fn starttls(
    cfg: &MailConfig,
    tcp: tokio::net::TcpStream,
    host: &str,
) -> std::result::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let ca = cfg
        .ca
        .as_ref()
        .ok_or("starttls needs `ca`, the CA of the mail server's certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

/// Standard base64 (AUTH PLAIN's token).
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_dot_stuffing() {
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
        assert_eq!(base64(b"ab"), "YWI=");
        let cfg = MailConfig {
            server: "x:25".into(),
            from: "cinta@bank.example".into(),
            help_desk: None,
            starttls: false,
            ca: None,
            username: None,
            password_file: None,
            retry_seconds: 1,
            give_up_seconds: 1,
        };
        let m = message(
            &cfg,
            &Mail {
                to: vec!["a@b".into()],
                subject: "s\r\nBcc: evil@x".into(),
                body: "one\n.two\n".into(),
            },
        );
        assert!(m.contains("Subject: s  Bcc: evil@x\r\n"), "{m}");
        assert!(m.ends_with("one\r\n..two\r\n."), "{m}");
    }
}
