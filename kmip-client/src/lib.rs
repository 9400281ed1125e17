//! A blocking KMIP client over mutual TLS: one reused connection, retries with backoff while the server is away, and the handful of operations a backup agent needs.
//!
//! The bytes on the wire come from `cinta-kmip` (the same codec the key
//! manager uses). A request that reached the server and failed there (a KMIP
//! failure) is never retried; a connection that broke is reconnected and the
//! request sent again, up to the retry budget. Error values say which is
//! which (`Error::is_retryable`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cinta_kmip::message::{OnError, Request, RequestItem, ResultStatus, Version};
use cinta_kmip::spec::{
    cryptographic_algorithm as alg, cryptographic_usage_mask as usage, name_type,
    object_type as ot, operation as op, revocation_reason_code, tag,
};
use cinta_kmip::ttlv::{self, Item, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or the connection broke; a retry may help.
    #[error("KMIP server {addr}: {message}")]
    Unreachable { addr: String, message: String },
    /// TLS set-up or handshake failed (certificates); a retry will not help.
    #[error("KMIP TLS: {0}")]
    Tls(String),
    /// The server answered with a KMIP failure.
    #[error("KMIP {operation} failed: {reason}: {message}")]
    Failed {
        operation: &'static str,
        reason: String,
        message: String,
    },
    /// The answer could not be understood.
    #[error("KMIP protocol: {0}")]
    Protocol(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Config {
    /// host:port
    pub addr: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Name to check the server certificate against (default: the host of `addr`).
    pub server_name: Option<String>,
    /// KMIP version to speak.
    pub version: Version,
    /// Total time to keep retrying an unreachable server.
    pub retry_for: Duration,
    /// Per-read/write timeout.
    pub io_timeout: Duration,
}

impl Config {
    pub fn new(addr: impl Into<String>, cert: &Path, key: &Path, ca: &Path) -> Config {
        Config {
            addr: addr.into(),
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
            server_name: None,
            version: Version::new(1, 4),
            retry_for: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
        }
    }
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One KMIP connection, reopened when it breaks.
pub struct Client {
    cfg: Config,
    tls: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    conn: Option<Stream>,
}

/// One batch item's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: ResultStatus,
    pub reason: Option<u32>,
    pub message: Option<String>,
    pub payload: Vec<Item>,
}

fn tls_err(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {e}", what.display()))
}

fn uid_item(uid: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.into()))
}

fn text(i: &Item) -> Option<&str> {
    match &i.value {
        Value::TextString(s) => Some(s),
        _ => None,
    }
}

impl Client {
    pub fn new(cfg: Config) -> Result<Client> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cfg.ca).map_err(|e| tls_err(&cfg.ca, e))? {
            roots
                .add(c.map_err(|e| tls_err(&cfg.ca, e))?)
                .map_err(|e| tls_err(&cfg.ca, e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
            .map_err(|e| tls_err(&cfg.cert, e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| tls_err(&cfg.cert, e))?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| tls_err(&cfg.key, e))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err(&cfg.cert, e))?;
        let host = cfg.server_name.clone().unwrap_or_else(|| {
            cfg.addr
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&cfg.addr)
                .trim_matches(['[', ']'])
                .to_string()
        });
        let name = ServerName::try_from(host.clone())
            .map_err(|e| Error::Tls(format!("server name {host}: {e}")))?;
        Ok(Client {
            cfg,
            tls: Arc::new(tls),
            name,
            conn: None,
        })
    }

    pub fn version(&self) -> Version {
        self.cfg.version
    }

    fn connect(&self) -> Result<Stream> {
        let unreachable = |m: String| Error::Unreachable {
            addr: self.cfg.addr.clone(),
            message: m,
        };
        let tcp = TcpStream::connect(&self.cfg.addr).map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.cfg.io_timeout))
            .map_err(|e| unreachable(e.to_string()))?;
        tcp.set_write_timeout(Some(self.cfg.io_timeout))
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), self.name.clone())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Finish the handshake now, so certificate problems show as TLS errors.
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        Error::Tls(format!("handshake with {}: {e}", self.cfg.addr))
                    }
                    _ => unreachable(format!("handshake: {e}")),
                })?;
        }
        Ok(s)
    }

    fn exchange(&mut self, bytes: &[u8]) -> Result<Item> {
        let addr = self.cfg.addr.clone();
        let broke = |m: String| Error::Unreachable {
            addr: addr.clone(),
            message: m,
        };
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let s = self.conn.as_mut().expect("connected");
        let r = (|| {
            s.write_all(bytes)
                .map_err(|e| broke(format!("write: {e}")))?;
            s.flush().map_err(|e| broke(format!("write: {e}")))?;
            let mut header = [0u8; ttlv::HEADER];
            s.read_exact(&mut header)
                .map_err(|e| broke(format!("read: {e}")))?;
            let len = ttlv::frame_len(&header).map_err(|e| Error::Protocol(e.to_string()))?;
            let mut msg = vec![0u8; len];
            msg[..ttlv::HEADER].copy_from_slice(&header);
            s.read_exact(&mut msg[ttlv::HEADER..])
                .map_err(|e| broke(format!("read: {e}")))?;
            Item::decode(&msg).map_err(|e| Error::Protocol(e.to_string()))
        })();
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// Sends a batch (operation, payload children) and returns each item's answer.
    pub fn batch(&mut self, items: Vec<(i32, Vec<Item>)>) -> Result<Vec<Answer>> {
        let req = Request {
            version: self.cfg.version,
            max_response_size: None,
            batch_order: Some(true),
            on_error: OnError::Stop,
            authentication: None,
            items: items
                .into_iter()
                .map(|(o, p)| RequestItem {
                    operation: o as u32,
                    id: None,
                    payload: Some(Item::new(tag::REQUEST_PAYLOAD, Value::Structure(p))),
                })
                .collect(),
        };
        let bytes = req.to_item().to_bytes();
        let start = Instant::now();
        let mut wait = Duration::from_millis(100);
        let resp = loop {
            match self.exchange(&bytes) {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && start.elapsed() + wait < self.cfg.retry_for => {
                    tracing::warn!(error = %e, retry_in = ?wait, "KMIP server unavailable; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        };
        if resp.tag != tag::RESPONSE_MESSAGE {
            return Err(Error::Protocol(format!(
                "expected a Response Message, got tag {:#08x}",
                resp.tag
            )));
        }
        let mut out = Vec::new();
        for b in resp.children().iter().filter(|i| i.tag == tag::BATCH_ITEM) {
            let e = |t| {
                b.child(t).and_then(|i| match i.value {
                    Value::Enumeration(x) => Some(x),
                    _ => None,
                })
            };
            let status = match e(tag::RESULT_STATUS) {
                Some(0) => ResultStatus::Success,
                Some(1) => ResultStatus::OperationFailed,
                Some(2) => ResultStatus::OperationPending,
                Some(3) => ResultStatus::OperationUndone,
                other => return Err(Error::Protocol(format!("result status {other:?}"))),
            };
            out.push(Answer {
                status,
                reason: e(tag::RESULT_REASON),
                message: b
                    .child(tag::RESULT_MESSAGE)
                    .and_then(text)
                    .map(str::to_string),
                payload: b
                    .child(tag::RESPONSE_PAYLOAD)
                    .map(|p| p.children().to_vec())
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// One operation; a KMIP failure becomes `Error::Failed`.
    pub fn call(&mut self, operation: i32, payload: Vec<Item>) -> Result<Vec<Item>> {
        let mut a = self.batch(vec![(operation, payload)])?;
        let a = a
            .pop()
            .ok_or_else(|| Error::Protocol("empty response".into()))?;
        let name = cinta_kmip::spec::operation_name(operation).unwrap_or("operation");
        if a.status != ResultStatus::Success {
            return Err(Error::Failed {
                operation: name,
                reason: reason_name(a.reason),
                message: a.message.unwrap_or_default(),
            });
        }
        Ok(a.payload)
    }

    fn attr(&self, name: &str, value: Item) -> Item {
        if self.cfg.version.major >= 2 {
            return value;
        }
        let mut v = value;
        v.tag = tag::ATTRIBUTE_VALUE;
        Item::new(
            tag::ATTRIBUTE,
            Value::Structure(vec![
                Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
                v,
            ]),
        )
    }

    fn wrap_attrs(&self, attrs: Vec<Item>) -> Item {
        if self.cfg.version.major >= 2 {
            Item::new(tag::ATTRIBUTES, Value::Structure(attrs))
        } else {
            Item::new(tag::TEMPLATE_ATTRIBUTE, Value::Structure(attrs))
        }
    }

    fn name_attr(&self, name: &str) -> Item {
        self.attr(
            "Name",
            Item::new(
                tag::NAME,
                Value::Structure(vec![
                    Item::new(tag::NAME_VALUE, Value::TextString(name.into())),
                    Item::new(
                        tag::NAME_TYPE,
                        Value::Enumeration(name_type::UNINTERPRETED_TEXT_STRING as u32),
                    ),
                ]),
            ),
        )
    }

    /// Creates an AES-256 key named `name` with text custom attributes (`x-...`, 1.x only).
    pub fn create_aes256(&mut self, name: &str, custom: &[(&str, &str)]) -> Result<String> {
        let payload = self.create_payload(name, custom);
        let p = self.call(op::CREATE, payload)?;
        uid_of(&p)
    }

    /// Create, Activate and Get of a new AES-256 key in one request message
    /// (the ID placeholder carries the new key from item to item): one round
    /// trip for a save's key.
    pub fn create_active_key(
        &mut self,
        name: &str,
        custom: &[(&str, &str)],
    ) -> Result<(String, Zeroizing<Vec<u8>>)> {
        let payload = self.create_payload(name, custom);
        let answers = self.batch(vec![
            (op::CREATE, payload),
            (op::ACTIVATE, vec![]),
            (op::GET, vec![]),
        ])?;
        for (a, o) in answers.iter().zip([op::CREATE, op::ACTIVATE, op::GET]) {
            if a.status != ResultStatus::Success {
                return Err(Error::Failed {
                    operation: cinta_kmip::spec::operation_name(o).unwrap_or("operation"),
                    reason: reason_name(a.reason),
                    message: a.message.clone().unwrap_or_default(),
                });
            }
        }
        if answers.len() != 3 {
            return Err(Error::Protocol(format!(
                "{} answers to a batch of 3",
                answers.len()
            )));
        }
        let uid = uid_of(&answers[0].payload)?;
        let key = key_of(&answers[2].payload, &uid)?;
        Ok((uid, key))
    }

    fn create_payload(&self, name: &str, custom: &[(&str, &str)]) -> Vec<Item> {
        let mut attrs = vec![
            self.attr(
                "Cryptographic Algorithm",
                Item::new(
                    tag::CRYPTOGRAPHIC_ALGORITHM,
                    Value::Enumeration(alg::AES as u32),
                ),
            ),
            self.attr(
                "Cryptographic Length",
                Item::new(tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(256)),
            ),
            self.attr(
                "Cryptographic Usage Mask",
                Item::new(
                    tag::CRYPTOGRAPHIC_USAGE_MASK,
                    Value::Integer(usage::ENCRYPT | usage::DECRYPT),
                ),
            ),
            self.name_attr(name),
        ];
        for (k, v) in custom {
            if self.cfg.version.major >= 2 {
                let (vendor, n) = k.split_at(1);
                attrs.push(Item::new(
                    tag::ATTRIBUTE,
                    Value::Structure(vec![
                        Item::new(tag::VENDOR_IDENTIFICATION, Value::TextString(vendor.into())),
                        Item::new(tag::ATTRIBUTE_NAME, Value::TextString(n[1..].into())),
                        Item::new(tag::ATTRIBUTE_VALUE, Value::TextString((*v).into())),
                    ]),
                ));
            } else {
                attrs.push(self.attr(k, Item::new(0, Value::TextString((*v).into()))));
            }
        }
        vec![
            Item::new(
                tag::OBJECT_TYPE,
                Value::Enumeration(ot::SYMMETRIC_KEY as u32),
            ),
            self.wrap_attrs(attrs),
        ]
    }

    /// Creates then activates an AES-256 key (two round trips).
    pub fn create_active_aes256(&mut self, name: &str, custom: &[(&str, &str)]) -> Result<String> {
        let uid = self.create_aes256(name, custom)?;
        self.activate(&uid)?;
        Ok(uid)
    }

    pub fn activate(&mut self, uid: &str) -> Result<()> {
        self.call(op::ACTIVATE, vec![uid_item(uid)]).map(|_| ())
    }

    /// The raw key bytes of a symmetric key.
    pub fn get_key(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>> {
        let p = self.call(op::GET, vec![uid_item(uid)])?;
        key_of(&p, uid)
    }
    /// A Locate request's filter for objects named `name`, as this client's version spells it.
    pub fn name_filter(&self, name: &str) -> Item {
        let f = self.name_attr(name);
        if self.cfg.version.major >= 2 {
            Item::new(tag::ATTRIBUTES, Value::Structure(vec![f]))
        } else {
            f
        }
    }

    /// Identifiers of objects named `name`, newest first.
    pub fn locate_by_name(&mut self, name: &str) -> Result<Vec<String>> {
        let filter = self.name_filter(name);
        let p = self.call(op::LOCATE, vec![filter])?;
        Ok(p.iter()
            .filter(|i| i.tag == tag::UNIQUE_IDENTIFIER)
            .filter_map(text)
            .map(str::to_string)
            .collect())
    }

    /// Asks whether `uid` may encrypt now (Check with the Encrypt usage).
    pub fn check_encrypt(&mut self, uid: &str) -> Result<()> {
        self.call(
            op::CHECK,
            vec![
                uid_item(uid),
                Item::new(
                    tag::CRYPTOGRAPHIC_USAGE_MASK,
                    Value::Integer(usage::ENCRYPT),
                ),
            ],
        )
        .map(|_| ())
    }

    pub fn revoke(&mut self, uid: &str, code: i32) -> Result<()> {
        self.call(
            op::REVOKE,
            vec![
                uid_item(uid),
                Item::new(
                    tag::REVOCATION_REASON,
                    Value::Structure(vec![Item::new(
                        tag::REVOCATION_REASON_CODE,
                        Value::Enumeration(code as u32),
                    )]),
                ),
            ],
        )
        .map(|_| ())
    }

    /// Revokes (cessation of operation) if needed and destroys: the key can never be served again.
    pub fn shred(&mut self, uid: &str) -> Result<()> {
        match self.revoke(uid, revocation_reason_code::CESSATION_OF_OPERATION) {
            Ok(()) => {}
            // Not active (never activated, or already revoked): destroy directly.
            Err(Error::Failed { .. }) => {}
            Err(e) => return Err(e),
        }
        self.destroy(uid)
    }

    pub fn destroy(&mut self, uid: &str) -> Result<()> {
        self.call(op::DESTROY, vec![uid_item(uid)]).map(|_| ())
    }
}

fn uid_of(p: &[Item]) -> Result<String> {
    p.iter()
        .find(|i| i.tag == tag::UNIQUE_IDENTIFIER)
        .and_then(text)
        .map(str::to_string)
        .ok_or_else(|| Error::Protocol("no Unique Identifier in the answer".into()))
}

fn reason_name(r: Option<u32>) -> String {
    use cinta_kmip::message::ResultReason as R;
    let all = [
        R::ItemNotFound,
        R::ResponseTooLarge,
        R::AuthenticationNotSuccessful,
        R::InvalidMessage,
        R::OperationNotSupported,
        R::MissingData,
        R::InvalidField,
        R::FeatureNotSupported,
        R::OperationCanceledByRequester,
        R::CryptographicFailure,
        R::IllegalOperation,
        R::PermissionDenied,
        R::ObjectArchived,
        R::IndexOutOfBounds,
        R::ApplicationNamespaceNotSupported,
        R::KeyFormatTypeNotSupported,
        R::KeyCompressionTypeNotSupported,
        R::KeyValueNotPresent,
        R::Sensitive,
        R::NotExtractable,
        R::ObjectAlreadyExists,
        R::AttributeNotFound,
        R::AttributeReadOnly,
        R::AttributeSingleValued,
        R::ObjectDestroyed,
        R::ServerLimitExceeded,
        R::WrongKeyLifecycleState,
        R::GeneralFailure,
    ];
    match r {
        Some(x) => all
            .iter()
            .find(|a| **a as u32 == x)
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| format!("reason {x:#x}")),
        None => "no reason given".into(),
    }
}

/// The raw key bytes in a Get answer.
fn key_of(p: &[Item], uid: &str) -> Result<Zeroizing<Vec<u8>>> {
    let km = p
        .iter()
        .find(|i| i.tag == tag::SYMMETRIC_KEY)
        .and_then(|s| s.child(tag::KEY_BLOCK))
        .and_then(|b| b.child(tag::KEY_VALUE))
        .and_then(|v| v.child(tag::KEY_MATERIAL));
    match km.map(|k| &k.value) {
        Some(Value::ByteString(b)) => Ok(Zeroizing::new(b.clone())),
        _ => Err(Error::Protocol(format!(
            "Get {uid}: no raw symmetric key in the answer"
        ))),
    }
}
