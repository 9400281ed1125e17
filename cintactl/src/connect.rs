//! The connection to the controller: mutual TLS with this console's certificate, time limits, and what went wrong said in one line (a certificate expired, one not signed by the CA, nothing listening, no answer in time, a refusal).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cinta_proto::v1::console_service_client::ConsoleServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where and how to reach the controller.
pub struct Target<'a> {
    pub controller: &'a str,
    pub server_name: Option<&'a str>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub ca: Option<&'a Path>,
    /// For connecting, and for each call.
    pub timeout: Duration,
}

/// A channel to the controller; Err says in one line what is wrong.
pub async fn client(t: &Target<'_>) -> Result<ConsoleServiceClient<Channel>> {
    let (Some(cert), Some(key), Some(ca)) = (t.cert, t.key, t.ca) else {
        bail!("give --cert, --key and --ca (or CINTA_CERT, CINTA_KEY, CINTA_CA): the controller speaks mutual TLS only");
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let cert_pem = read(cert)?;
    check_own_certificate(cert, &cert_pem)?;
    let host = t.server_name.map(str::to_string).unwrap_or_else(|| {
        t.controller
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default()
    });
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(cert_pem, read(key)?))
        .domain_name(host.clone());
    let endpoint = Channel::from_shared(format!("https://{}", t.controller))?
        .tls_config(tls)?
        .connect_timeout(t.timeout)
        .timeout(t.timeout);
    // The limit covers the TLS handshake too, not only the TCP connect.
    let ch = tokio::time::timeout(t.timeout, endpoint.connect())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the controller at {} did not answer within {}s (--timeout)",
                t.controller,
                t.timeout.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!(transport(&e, t, &host, ca)))?;
    Ok(ConsoleServiceClient::new(ch))
}

/// This console's certificate, checked for its dates before it is offered.
fn check_own_certificate(path: &Path, pem: &[u8]) -> Result<()> {
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem) else {
        bail!("{} is not a PEM certificate", path.display());
    };
    let Ok(c) = p.parse_x509() else {
        bail!("{} holds no readable certificate", path.display());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let v = c.validity();
    if v.not_after.timestamp() < now {
        bail!(
            "your certificate {} expired on {}: ask for a new one",
            path.display(),
            crate::time::when(v.not_after.timestamp())
        );
    }
    if v.not_before.timestamp() > now {
        bail!(
            "your certificate {} is not valid before {} (is this machine's clock right?)",
            path.display(),
            crate::time::when(v.not_before.timestamp())
        );
    }
    Ok(())
}

/// A connection failure as what it means.
fn transport(e: &tonic::transport::Error, t: &Target<'_>, host: &str, ca: &Path) -> String {
    let mut chain = format!("{e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    explain(&chain, t.controller, host, ca, t.timeout).unwrap_or_else(|| {
        format!(
            "cannot connect to the controller at {}: {chain}",
            t.controller
        )
    })
}

/// The meaning of a connection or call failure's text, if it is a known one.
pub fn explain(
    chain: &str,
    addr: &str,
    host: &str,
    ca: &Path,
    timeout: Duration,
) -> Option<String> {
    let has = |s: &str| chain.contains(s);
    Some(
        if has("UnknownIssuer") || has("unknown issuer") || has("BadSignature") {
            format!(
                "the controller's certificate at {addr} is not signed by CA {} (--ca)",
                ca.display()
            )
        } else if has("NotValidForName") || has("not valid for name") {
            format!("the controller's certificate at {addr} is not for the name {host:?} (--server-name)")
        } else if has("Expired") && !has("alert") {
            format!("the controller's certificate at {addr} has expired")
        } else if has("CertificateExpired") || has("certificate expired") {
            "the controller refused this console's certificate: it has expired".into()
        } else if has("UnknownCA")
            || has("BadCertificate")
            || has("CertificateUnknown")
            || has("DecryptError")
        {
            "the controller refused this console's certificate (not signed by the CA it trusts)"
                .into()
        } else if has("Connection refused") {
            format!("nothing answers at {addr} (is cinta-controller running there?)")
        } else if has("timed out") || has("deadline") || has("Elapsed") {
            format!(
                "the controller at {addr} did not answer within {}s (--timeout)",
                timeout.as_secs()
            )
        } else if has("dns error") || has("failed to lookup") {
            format!("the controller's host in {addr} is not known")
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_said_as_what_they_mean() {
        let e = |c: &str| {
            explain(
                c,
                "ctl:7443",
                "ctl",
                Path::new("ca.pem"),
                Duration::from_secs(7),
            )
        };
        assert!(
            e("transport error: invalid peer certificate: UnknownIssuer")
                .unwrap()
                .contains("not signed by CA ca.pem")
        );
        assert!(e("invalid peer certificate: NotValidForName")
            .unwrap()
            .contains("not for the name \"ctl\""));
        assert!(e("tcp connect error: Connection refused (os error 111)")
            .unwrap()
            .contains("nothing answers at ctl:7443"));
        assert!(e("operation timed out").unwrap().contains("within 7s"));
        assert!(e("received fatal alert: CertificateExpired")
            .unwrap()
            .contains("this console's certificate: it has expired"));
        assert!(e("received fatal alert: UnknownCA")
            .unwrap()
            .contains("refused this console's certificate"));
        assert_eq!(e("something else"), None);
    }
}
