//! KMIP request and response messages: the envelope around operations (header, batch items, results), KMIP 1.0-1.4 and 2.0. Items in, items out.
//!
//! A request is parsed into its version, header options and batch items
//! (operation, optional unique batch item id, payload left as an item for
//! the operation to read). Whatever makes a request unusable is an
//! [`Invalid`] carrying the result reason to answer with, so a server
//! always has a KMIP response to send. Responses are built in the order
//! the specification gives their fields.

use crate::ttlv::{Item, Value};

/// Tags (the envelope's among them) come from the specification tables.
pub use crate::spec::tag;

/// Most items in one batch: KMIP servers commonly cap batches, and 32 is
/// what cinta's clients and tape libraries need (a key and its attributes
/// in one round trip) while bounding one request's work.
pub const MAX_BATCH: usize = 32;

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl Version {
    pub const fn new(major: i32, minor: i32) -> Self {
        Version { major, minor }
    }

    pub fn to_item(self) -> Item {
        Item::new(
            tag::PROTOCOL_VERSION,
            Value::Structure(vec![
                Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ]),
        )
    }

    pub fn from_item(i: &Item) -> Option<Version> {
        match (
            i.child(tag::PROTOCOL_VERSION_MAJOR)?.value.clone(),
            i.child(tag::PROTOCOL_VERSION_MINOR)?.value.clone(),
        ) {
            (Value::Integer(major), Value::Integer(minor)) => Some(Version { major, minor }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Versions this codec speaks, newest first (the order Discover Versions answers in).
pub const SUPPORTED: [Version; 6] = [
    Version::new(2, 0),
    Version::new(1, 4),
    Version::new(1, 3),
    Version::new(1, 2),
    Version::new(1, 1),
    Version::new(1, 0),
];

/// The version to answer a request of version `v` in: its own if spoken,
/// else the newest spoken one below it (1.0 at least).
pub fn answer_version(v: Version) -> Version {
    SUPPORTED
        .iter()
        .copied()
        .find(|s| *s <= v)
        .unwrap_or(Version::new(1, 0))
}

/// Result Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ResultStatus {
    Success = 0,
    OperationFailed = 1,
    OperationPending = 2,
    OperationUndone = 3,
}

/// Result Reason (KMIP 1.0 §9.1.3.2.28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ResultReason {
    ItemNotFound = 0x01,
    ResponseTooLarge = 0x02,
    AuthenticationNotSuccessful = 0x03,
    InvalidMessage = 0x04,
    OperationNotSupported = 0x05,
    MissingData = 0x06,
    InvalidField = 0x07,
    FeatureNotSupported = 0x08,
    OperationCanceledByRequester = 0x09,
    CryptographicFailure = 0x0A,
    IllegalOperation = 0x0B,
    PermissionDenied = 0x0C,
    ObjectArchived = 0x0D,
    IndexOutOfBounds = 0x0E,
    ApplicationNamespaceNotSupported = 0x0F,
    KeyFormatTypeNotSupported = 0x10,
    KeyCompressionTypeNotSupported = 0x11,
    /// KMIP 1.2.
    KeyValueNotPresent = 0x13,
    /// KMIP 1.4.
    Sensitive = 0x16,
    /// KMIP 1.4.
    NotExtractable = 0x17,
    /// KMIP 1.4.
    ObjectAlreadyExists = 0x18,
    /// KMIP 2.0.
    AttributeNotFound = 0x21,
    /// KMIP 2.0.
    AttributeReadOnly = 0x22,
    /// KMIP 2.0.
    AttributeSingleValued = 0x23,
    /// KMIP 2.0.
    ObjectDestroyed = 0x36,
    /// KMIP 2.0.
    ServerLimitExceeded = 0x3A,
    /// KMIP 2.0.
    WrongKeyLifecycleState = 0x43,
    GeneralFailure = 0x100,
}

impl ResultReason {
    /// The reason as `v` can say it: reasons a version lacks become the
    /// nearest one it has (a 1.0 client is told Permission Denied where 2.0
    /// says Wrong Key Lifecycle State).
    pub fn in_version(self, v: Version) -> ResultReason {
        use ResultReason::*;
        let minor = if v.major >= 2 { 99 } else { v.minor };
        match self {
            KeyValueNotPresent if minor < 2 => PermissionDenied,
            ObjectAlreadyExists if minor < 4 => IllegalOperation,
            Sensitive | NotExtractable if minor < 4 => PermissionDenied,
            AttributeNotFound if minor < 99 => ItemNotFound,
            AttributeReadOnly | WrongKeyLifecycleState if minor < 99 => PermissionDenied,
            // 1.x has no Object Destroyed: the object is gone, as far as a 1.x client can tell.
            ObjectDestroyed if minor < 99 => ItemNotFound,
            AttributeSingleValued if minor < 99 => IllegalOperation,
            ServerLimitExceeded if minor < 99 => IllegalOperation,
            r => r,
        }
    }
}

/// What a batch does when an item fails (Batch Error Continuation Option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Continue = 1,
    Stop = 2,
    Undo = 3,
}

/// A request that cannot be served as sent: the reason and message to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: ResultReason,
    pub message: String,
    /// The request's version, when it was read.
    pub version: Option<Version>,
}

fn invalid(version: Option<Version>, message: impl Into<String>) -> Invalid {
    Invalid {
        reason: ResultReason::InvalidMessage,
        message: message.into(),
        version,
    }
}

/// One batch item of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestItem {
    /// Operation enumeration value.
    pub operation: u32,
    pub id: Option<Vec<u8>>,
    /// The Request Payload structure, for the operation to read.
    pub payload: Option<Item>,
}

/// A request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub max_response_size: Option<i32>,
    /// Batch Order Option: items must run in order (cinta always runs them in order).
    pub batch_order: Option<bool>,
    pub on_error: OnError,
    /// The Authentication structure, if any (identity comes from the TLS certificate).
    pub authentication: Option<Item>,
    pub items: Vec<RequestItem>,
}

impl Request {
    /// Reads a request message.
    pub fn parse(msg: &Item) -> Result<Request, Invalid> {
        if msg.tag != tag::REQUEST_MESSAGE || !matches!(msg.value, Value::Structure(_)) {
            return Err(invalid(
                None,
                format!("expected a Request Message, found tag {:#08x}", msg.tag),
            ));
        }
        let header = msg
            .child(tag::REQUEST_HEADER)
            .ok_or_else(|| invalid(None, "the request has no Request Header"))?;
        let version = header
            .child(tag::PROTOCOL_VERSION)
            .and_then(Version::from_item)
            .ok_or_else(|| invalid(None, "the Request Header has no valid Protocol Version"))?;
        let v = Some(version);
        let int = |t: u32, what: &str| -> Result<Option<i32>, Invalid> {
            match header.child(t).map(|i| &i.value) {
                None => Ok(None),
                Some(Value::Integer(n)) => Ok(Some(*n)),
                Some(_) => Err(invalid(v, format!("{what} must be an Integer"))),
            }
        };
        let count = int(tag::BATCH_COUNT, "Batch Count")?
            .ok_or_else(|| invalid(v, "the Request Header has no Batch Count"))?;
        let max_response_size = int(tag::MAXIMUM_RESPONSE_SIZE, "Maximum Response Size")?;
        let batch_order = match header.child(tag::BATCH_ORDER_OPTION).map(|i| &i.value) {
            None => None,
            Some(Value::Boolean(b)) => Some(*b),
            Some(_) => return Err(invalid(v, "Batch Order Option must be a Boolean")),
        };
        let on_error = match header
            .child(tag::BATCH_ERROR_CONTINUATION_OPTION)
            .map(|i| &i.value)
        {
            None | Some(Value::Enumeration(2)) => OnError::Stop,
            Some(Value::Enumeration(1)) => OnError::Continue,
            Some(Value::Enumeration(3)) => OnError::Undo,
            Some(_) => {
                return Err(invalid(
                    v,
                    "Batch Error Continuation Option must be Continue, Stop or Undo",
                ))
            }
        };
        let mut items = Vec::new();
        for b in msg.children().iter().filter(|i| i.tag == tag::BATCH_ITEM) {
            if items.len() == MAX_BATCH {
                return Err(invalid(
                    v,
                    format!("a batch holds at most {MAX_BATCH} items"),
                ));
            }
            let operation = match b.child(tag::OPERATION).map(|i| &i.value) {
                Some(Value::Enumeration(op)) => *op,
                _ => {
                    return Err(invalid(
                        v,
                        format!("batch item {} has no Operation", items.len() + 1),
                    ))
                }
            };
            let id = match b.child(tag::UNIQUE_BATCH_ITEM_ID).map(|i| &i.value) {
                None => None,
                Some(Value::ByteString(id)) => Some(id.clone()),
                Some(_) => return Err(invalid(v, "Unique Batch Item ID must be a Byte String")),
            };
            let payload = b.child(tag::REQUEST_PAYLOAD).cloned();
            items.push(RequestItem {
                operation,
                id,
                payload,
            });
        }
        if items.is_empty() {
            return Err(invalid(v, "the request has no Batch Item"));
        }
        if count != items.len() as i32 {
            return Err(invalid(
                v,
                format!(
                    "Batch Count says {count} but the request holds {} Batch Items",
                    items.len()
                ),
            ));
        }
        Ok(Request {
            version,
            max_response_size,
            batch_order,
            on_error,
            authentication: header.child(tag::AUTHENTICATION).cloned(),
            items,
        })
    }

    /// The request as a message item (the client side).
    pub fn to_item(&self) -> Item {
        let mut h = vec![self.version.to_item()];
        if let Some(n) = self.max_response_size {
            h.push(Item::new(tag::MAXIMUM_RESPONSE_SIZE, Value::Integer(n)));
        }
        if let Some(a) = &self.authentication {
            h.push(a.clone());
        }
        if self.on_error != OnError::Stop {
            h.push(Item::new(
                tag::BATCH_ERROR_CONTINUATION_OPTION,
                Value::Enumeration(self.on_error as u32),
            ));
        }
        if let Some(b) = self.batch_order {
            h.push(Item::new(tag::BATCH_ORDER_OPTION, Value::Boolean(b)));
        }
        h.push(Item::new(
            tag::BATCH_COUNT,
            Value::Integer(self.items.len() as i32),
        ));
        let mut m = vec![Item::new(tag::REQUEST_HEADER, Value::Structure(h))];
        for it in &self.items {
            let mut b = vec![Item::new(tag::OPERATION, Value::Enumeration(it.operation))];
            if let Some(id) = &it.id {
                b.push(Item::new(
                    tag::UNIQUE_BATCH_ITEM_ID,
                    Value::ByteString(id.clone()),
                ));
            }
            if let Some(p) = &it.payload {
                b.push(p.clone());
            }
            m.push(Item::new(tag::BATCH_ITEM, Value::Structure(b)));
        }
        Item::new(tag::REQUEST_MESSAGE, Value::Structure(m))
    }
}

/// One batch item of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseItem {
    pub operation: Option<u32>,
    pub id: Option<Vec<u8>>,
    pub status: ResultStatus,
    pub reason: Option<ResultReason>,
    pub message: Option<String>,
    /// The Response Payload structure.
    pub payload: Option<Item>,
}

impl ResponseItem {
    /// A successful item answering `req` with `payload` (its children).
    pub fn success(req: &RequestItem, payload: Vec<Item>) -> Self {
        ResponseItem {
            operation: Some(req.operation),
            id: req.id.clone(),
            status: ResultStatus::Success,
            reason: None,
            message: None,
            payload: Some(Item::new(tag::RESPONSE_PAYLOAD, Value::Structure(payload))),
        }
    }

    /// A failed item answering `req`.
    pub fn failure(
        req: Option<&RequestItem>,
        reason: ResultReason,
        message: impl Into<String>,
    ) -> Self {
        ResponseItem {
            operation: req.map(|r| r.operation),
            id: req.and_then(|r| r.id.clone()),
            status: ResultStatus::OperationFailed,
            reason: Some(reason),
            message: Some(message.into()),
            payload: None,
        }
    }
}

/// A response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    /// Seconds since 1970 (given: this module reads no clock).
    pub time_stamp: i64,
    pub items: Vec<ResponseItem>,
}

impl Response {
    /// The answer to a request that could not be read at all.
    pub fn to_invalid(e: &Invalid, time_stamp: i64) -> Response {
        Response {
            version: answer_version(e.version.unwrap_or(Version::new(1, 0))),
            time_stamp,
            items: vec![ResponseItem::failure(None, e.reason, e.message.clone())],
        }
    }

    /// The response as a message item, fields in the specification's order.
    pub fn to_item(&self) -> Item {
        let header = Item::new(
            tag::RESPONSE_HEADER,
            Value::Structure(vec![
                self.version.to_item(),
                Item::new(tag::TIME_STAMP, Value::DateTime(self.time_stamp)),
                Item::new(tag::BATCH_COUNT, Value::Integer(self.items.len() as i32)),
            ]),
        );
        let mut m = vec![header];
        for it in &self.items {
            let mut b = Vec::new();
            if let Some(op) = it.operation {
                b.push(Item::new(tag::OPERATION, Value::Enumeration(op)));
            }
            if let Some(id) = &it.id {
                b.push(Item::new(
                    tag::UNIQUE_BATCH_ITEM_ID,
                    Value::ByteString(id.clone()),
                ));
            }
            b.push(Item::new(
                tag::RESULT_STATUS,
                Value::Enumeration(it.status as u32),
            ));
            if let Some(r) = it.reason {
                let r = r.in_version(self.version);
                b.push(Item::new(tag::RESULT_REASON, Value::Enumeration(r as u32)));
            }
            if let Some(msg) = &it.message {
                b.push(Item::new(
                    tag::RESULT_MESSAGE,
                    Value::TextString(msg.clone()),
                ));
            }
            if let Some(p) = &it.payload {
                b.push(p.clone());
            }
            m.push(Item::new(tag::BATCH_ITEM, Value::Structure(b)));
        }
        Item::new(tag::RESPONSE_MESSAGE, Value::Structure(m))
    }
}

/// The fuzz target's body for requests: whatever decodes is parsed as a
/// request; an unusable one must still yield a response that encodes.
pub fn fuzz_request(bytes: &[u8]) {
    if let Ok(item) = Item::decode(bytes) {
        match Request::parse(&item) {
            Ok(r) => {
                let again = Request::parse(&r.to_item()).expect("a parsed request parses again");
                assert_eq!(again.items.len(), r.items.len());
            }
            Err(e) => {
                let _ = Response::to_invalid(&e, 0).to_item().to_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> Request {
        Request {
            version: Version::new(1, 4),
            max_response_size: Some(1 << 20),
            batch_order: Some(true),
            on_error: OnError::Continue,
            authentication: None,
            items: (0..n)
                .map(|i| RequestItem {
                    operation: 0x0A,
                    id: Some(vec![i as u8]),
                    payload: Some(Item::new(tag::REQUEST_PAYLOAD, Value::Structure(vec![]))),
                })
                .collect(),
        }
    }

    #[test]
    fn requests_round_trip_through_bytes() {
        let r = request(3);
        let back = Request::parse(&Item::decode(&r.to_item().to_bytes()).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unusable_requests_say_why_in_kmip_terms() {
        let msg = |r: &Request| r.to_item();
        // 33 items.
        let e = Request::parse(&msg(&request(MAX_BATCH + 1))).unwrap_err();
        assert_eq!(
            (e.reason, e.version),
            (ResultReason::InvalidMessage, Some(Version::new(1, 4)))
        );
        assert!(e.message.contains("at most 32"), "{e:?}");
        // A batch count that lies.
        let mut m = msg(&request(2));
        if let Value::Structure(items) = &mut m.value {
            items.pop();
        }
        assert!(Request::parse(&m)
            .unwrap_err()
            .message
            .contains("Batch Count says 2"));
        // No operation in an item.
        let mut m = msg(&request(1));
        if let Value::Structure(items) = &mut m.value {
            if let Value::Structure(b) = &mut items[1].value {
                b.remove(0);
            }
        }
        assert!(Request::parse(&m)
            .unwrap_err()
            .message
            .contains("has no Operation"));
        // Not a request at all.
        let e = Request::parse(&Item::new(tag::RESPONSE_MESSAGE, Value::Structure(vec![])))
            .unwrap_err();
        assert!(e.message.contains("expected a Request Message") && e.version.is_none());
        // The answer to it is a one-item failure in a version we speak.
        let resp = Response::to_invalid(&e, 1_800_000_000);
        assert_eq!(resp.version, Version::new(1, 0));
        assert_eq!(resp.items[0].status, ResultStatus::OperationFailed);
    }

    #[test]
    fn answers_go_in_the_request_version_or_the_newest_below_it() {
        assert_eq!(answer_version(Version::new(1, 2)), Version::new(1, 2));
        assert_eq!(answer_version(Version::new(2, 1)), Version::new(2, 0));
        assert_eq!(answer_version(Version::new(1, 9)), Version::new(1, 4));
        assert_eq!(answer_version(Version::new(0, 9)), Version::new(1, 0));
    }
}
