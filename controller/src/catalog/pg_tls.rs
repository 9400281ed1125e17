//! TLS to PostgreSQL with rustls (ring): the server's certificate checked against a given CA and host name, an optional client certificate.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes a rustls connector per connection, for the host being connected to.
#[derive(Clone)]
pub struct Rustls(Arc<rustls::ClientConfig>);

impl Rustls {
    /// Trusts `ca` for the server's certificate; presents `cert`/`key` if given.
    pub fn new(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Rustls, String> {
        let read = |p: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let v: Vec<_> = CertificateDer::pem_file_iter(p)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if v.is_empty() {
                return Err(format!("{}: no certificate in it", p.display()));
            }
            Ok(v)
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read(ca)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: not a usable CA certificate ({e})", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let cfg = match client {
            Some((cert, key)) => {
                let k = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: no usable private key ({e})", key.display()))?;
                b.with_client_auth_cert(read(cert)?, k)
                    .map_err(|e| format!("{}: {e}", cert.display()))?
            }
            None => b.with_no_client_auth(),
        };
        Ok(Rustls(Arc::new(cfg)))
    }
}

pub struct Connect {
    cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            cfg: self.0.clone(),
            name: ServerName::try_from(domain.to_string())?,
        })
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.cfg)
                .connect(self.name, stream)
                .await
                .map(Stream)
        })
    }
}

/// A TLS session to the server.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding is not offered; the certificate check binds the server.
        ChannelBinding::none()
    }
}
