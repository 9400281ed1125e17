//! KMIP operations on the keystore: one request message's batch run in one transaction, each item answered in the request's version.
//!
//! Lifecycle rules live here: a key is Pre-Active until activated (or its
//! Activation Date passes), Active until revoked or its Deactivation Date
//! passes; key material is never served from a Destroyed object, and a
//! protect use (Check for Encrypt) is refused outside the Active state.
//! Every object belongs to its creator's device group; other groups do not
//! see it at all (Item Not Found, as if it did not exist).

use cinta_kmip::message::{
    OnError, Request, RequestItem, ResponseItem, ResultStatus, Version, SUPPORTED,
};
use cinta_kmip::spec::{
    cryptographic_algorithm as alg, cryptographic_usage_mask as usage, key_format_type as kft,
    link_type, object_type as ot, operation as op, query_function as qf,
    revocation_reason_code as rrc, secret_data_type, state, tag,
};
use cinta_kmip::ttlv::{Item, Type, Value};

use crate::attrs::{self, Attr, Attrs};
use crate::fault::{Fault, Reason};
use crate::store::{is_destroyed, Object, Store, Tx};

/// What a client may do and where its keys live.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's device group.
    pub group: String,
    /// Serve key material only once a keystore backup holds it.
    pub require_backup: bool,
}

/// One audit line's worth of an item's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub operation: &'static str,
    pub object: Option<String>,
    pub result: &'static str,
    pub reason: Option<String>,
}

/// Operations this server performs, with the version that introduced them.
pub const OPERATIONS: &[(i32, Version)] = &[
    (op::CREATE, Version::new(1, 0)),
    (op::REGISTER, Version::new(1, 0)),
    (op::REKEY, Version::new(1, 0)),
    (op::LOCATE, Version::new(1, 0)),
    (op::CHECK, Version::new(1, 0)),
    (op::GET, Version::new(1, 0)),
    (op::GET_ATTRIBUTES, Version::new(1, 0)),
    (op::GET_ATTRIBUTE_LIST, Version::new(1, 0)),
    (op::ADD_ATTRIBUTE, Version::new(1, 0)),
    (op::MODIFY_ATTRIBUTE, Version::new(1, 0)),
    (op::DELETE_ATTRIBUTE, Version::new(1, 0)),
    (op::ACTIVATE, Version::new(1, 0)),
    (op::REVOKE, Version::new(1, 0)),
    (op::DESTROY, Version::new(1, 0)),
    (op::QUERY, Version::new(1, 0)),
    (op::DISCOVER_VERSIONS, Version::new(1, 1)),
];

/// Application namespaces answered by Query (the tape library profile's among them).
pub const NAMESPACES: &[&str] = &["LIBRARY-LTO", "LIBRARY-TS", "cinta"];

/// Where a secret's Secret Data Type is kept: a server attribute that is
/// never shown (clients read it inside the Secret Data object).
const SECRET_DATA_TYPE_ATTR: &str = "y-cinta-secret-data-type";

/// Attributes kept for the server's own use and never sent.
fn hidden(name: &str) -> bool {
    name.starts_with("y-cinta-")
}

/// Attributes only the server sets.
const SERVER_ONLY: &[&str] = &[
    "Unique Identifier",
    "Object Type",
    "State",
    "Initial Date",
    "Last Change Date",
    "Destroy Date",
    "Compromise Date",
    "Compromise Occurrence Date",
    "Revocation Reason",
    "Digest",
    "Fresh",
    "Original Creation Date",
    "Key Value Present",
    "Key Value Location",
    "Always Sensitive",
    "Never Extractable",
    "Random Number Generator",
    "Short Unique Identifier",
    "Key Format Type",
    "Archive Date",
    "Lease Time",
];

/// Attributes sent only when asked for by name (Get Attribute List names
/// them), as the KMIP 1.4 tape library test case TL-M-3 expects: PyKMIP's
/// client cannot decode several of them and fails a Get Attributes of all
/// attributes when they come unasked.
const NAMED_ONLY: &[&str] = &[
    "Digest",
    "Original Creation Date",
    "Random Number Generator",
    "Sensitive",
    "Always Sensitive",
    "Extractable",
    "Never Extractable",
];

/// Attributes a client may add, change or delete after creation.
const CLIENT_MUTABLE: &[&str] = &[
    "Name",
    "Application Specific Information",
    "Contact Information",
    "Alternative Name",
    "Description",
    "Comment",
    "Object Group",
    "Deactivation Date",
    "Activation Date",
    "Process Start Date",
    "Protect Stop Date",
    "Cryptographic Usage Mask",
    "Sensitive",
    "Extractable",
];

fn en(v: i32) -> Value {
    Value::Enumeration(v as u32)
}

fn uid_item(uid: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.to_string()))
}

/// The operation's spaced name, for audit and messages.
pub fn op_name(code: u32) -> &'static str {
    cinta_kmip::spec::operation_name(code as i32).unwrap_or("Unknown")
}

/// A batch's answers and audit outcomes; `undo` asks the caller to roll back what it did.
pub struct Batch {
    pub items: Vec<ResponseItem>,
    pub outcomes: Vec<Outcome>,
    pub undo: bool,
}

/// Runs a request's batch on `tx`, inside a transaction (or savepoint) the
/// caller opened and will end.
///
/// Stop ends the batch at the first failure; Undo also asks the caller to
/// roll back (`Batch::undo`) and reports the earlier items as undone.
pub fn run(tx: &Tx<'_>, req: &Request, caller: &Caller, now: i64) -> Batch {
    let v = cinta_kmip::message::answer_version(req.version);
    let mut cx = Cx {
        tx,
        v,
        caller,
        now,
        placeholder: None,
    };
    let mut items = Vec::with_capacity(req.items.len());
    let mut outs = Vec::with_capacity(req.items.len());
    let mut undo = false;
    for it in &req.items {
        match cx.dispatch(it) {
            Ok(done) => {
                outs.push(outcome(it, done.uid.as_deref(), None));
                if let Some(u) = done.uid {
                    cx.placeholder = Some(u);
                } else if it.operation == op::LOCATE as u32 {
                    // KMIP: Locate sets the ID placeholder only when it
                    // found exactly one object; otherwise it is emptied, so
                    // a following item naming no object fails instead of
                    // acting on an earlier item's (another tape's key).
                    cx.placeholder = None;
                }
                items.push(ResponseItem::success(it, done.payload));
            }
            Err(f) => {
                outs.push(outcome(it, cx.target(it).as_deref(), Some(&f)));
                items.push(ResponseItem::failure(Some(it), f.reason, f.message));
                match req.on_error {
                    OnError::Continue => {}
                    OnError::Stop => break,
                    OnError::Undo => {
                        undo = true;
                        break;
                    }
                }
            }
        }
    }
    if undo {
        for (i, o) in items.iter_mut().zip(outs.iter_mut()) {
            if i.status == ResultStatus::Success {
                i.status = ResultStatus::OperationUndone;
                i.payload = None;
                o.result = "undone";
            }
        }
    }
    Batch {
        items,
        outcomes: outs,
        undo,
    }
}

/// Marks every item of a batch failed: its transaction did not commit.
pub fn fail_all(b: &mut Batch, why: &str) {
    for (i, o) in b.items.iter_mut().zip(b.outcomes.iter_mut()) {
        i.status = ResultStatus::OperationFailed;
        i.reason = Some(Reason::GeneralFailure);
        i.message = Some(format!("the keystore could not commit: {why}"));
        i.payload = None;
        o.result = "failure";
        o.reason = Some(format!("keystore commit failed: {why}"));
    }
}

/// Runs one request in a transaction of its own (the admin CLI's way).
pub fn run_alone(store: &mut Store, req: &Request, caller: &Caller, now: i64) -> Batch {
    if let Err(e) = store.exec("BEGIN IMMEDIATE") {
        let mut b = Batch {
            items: req
                .items
                .iter()
                .map(|i| ResponseItem::success(i, vec![]))
                .collect(),
            outcomes: req.items.iter().map(|i| outcome(i, None, None)).collect(),
            undo: false,
        };
        fail_all(&mut b, &e.to_string());
        return b;
    }
    let mut b = run(&store.tx(), req, caller, now);
    let end = if b.undo {
        store.exec("ROLLBACK")
    } else {
        store.exec("COMMIT")
    };
    if let Err(e) = end {
        let _ = store.exec("ROLLBACK");
        fail_all(&mut b, &e.to_string());
    }
    b
}

fn outcome(it: &RequestItem, uid: Option<&str>, f: Option<&Fault>) -> Outcome {
    Outcome {
        operation: op_name(it.operation),
        object: uid.map(str::to_string),
        result: if f.is_some() { "failure" } else { "success" },
        reason: f.map(|f| format!("{:?}: {}", f.reason, f.message)),
    }
}

/// What a successful item answers, and the identifier it leaves in the ID placeholder.
struct Done {
    uid: Option<String>,
    payload: Vec<Item>,
}

struct Cx<'a, 't> {
    tx: &'a Tx<'t>,
    v: Version,
    caller: &'a Caller,
    now: i64,
    placeholder: Option<String>,
}

fn kids(it: &RequestItem) -> &[Item] {
    it.payload.as_ref().map(|p| p.children()).unwrap_or(&[])
}

fn text(i: &Item) -> Option<&str> {
    match &i.value {
        Value::TextString(s) => Some(s),
        _ => None,
    }
}

fn int(i: &Item) -> Option<i64> {
    match &i.value {
        Value::Integer(x) => Some(*x as i64),
        Value::LongInteger(x) | Value::DateTime(x) => Some(*x),
        Value::Enumeration(x) => Some(*x as i64),
        Value::Interval(x) => Some(*x as i64),
        _ => None,
    }
}

fn child_int(items: &[Item], t: u32) -> Option<i64> {
    items.iter().find(|i| i.tag == t).and_then(int)
}

fn store_err(e: crate::error::Error) -> Fault {
    Fault::internal(format!("keystore: {e}"))
}

impl Cx<'_, '_> {
    fn is_v2(&self) -> bool {
        self.v.major >= 2
    }

    /// The object an item names (for audit), without failing.
    fn target(&self, it: &RequestItem) -> Option<String> {
        kids(it)
            .iter()
            .find(|i| i.tag == tag::UNIQUE_IDENTIFIER)
            .and_then(text)
            .map(str::to_string)
            .or_else(|| self.placeholder.clone())
    }

    fn dispatch(&mut self, it: &RequestItem) -> Result<Done, Fault> {
        let known = OPERATIONS
            .iter()
            .any(|(o, since)| *o as u32 == it.operation && *since <= self.v);
        if !known {
            return Err(Fault::new(
                Reason::OperationNotSupported,
                format!(
                    "{} ({:#x}) is not offered at KMIP {}",
                    op_name(it.operation),
                    it.operation,
                    self.v
                ),
            ));
        }
        let k = kids(it);
        match it.operation as i32 {
            op::DISCOVER_VERSIONS => Ok(discover_versions(k)),
            op::QUERY => self.query(k),
            op::CREATE => self.create(k),
            op::REGISTER => self.register(k),
            op::GET => self.get(k),
            op::GET_ATTRIBUTES => self.get_attributes(k),
            op::GET_ATTRIBUTE_LIST => self.get_attribute_list(k),
            op::ADD_ATTRIBUTE => self.add_attribute(k),
            op::MODIFY_ATTRIBUTE => self.modify_attribute(k),
            op::DELETE_ATTRIBUTE => self.delete_attribute(k),
            op::LOCATE => self.locate(k),
            op::ACTIVATE => self.activate(k),
            op::REVOKE => self.revoke(k),
            op::DESTROY => self.destroy(k),
            op::CHECK => self.check(k),
            op::REKEY => self.rekey(k),
            _ => Err(Fault::new(Reason::OperationNotSupported, "not offered")),
        }
    }

    /// The Unique Identifier an item names, or the ID placeholder.
    fn uid(&self, k: &[Item]) -> Result<String, Fault> {
        match k.iter().find(|i| i.tag == tag::UNIQUE_IDENTIFIER) {
            Some(i) => text(i)
                .map(str::to_string)
                .ok_or_else(|| Fault::invalid("Unique Identifier must be a Text String")),
            None => self.placeholder.clone().ok_or_else(|| {
                Fault::missing("no Unique Identifier, and no earlier batch item left one")
            }),
        }
    }

    /// Loads an object of the caller's group, bringing its state up to date with its dates.
    fn load(&self, uid: &str) -> Result<Object, Fault> {
        let mut o = self
            .tx
            .load(uid, &self.caller.group)
            .map_err(store_err)?
            .ok_or_else(|| Fault::not_found(uid))?;
        if tick(&mut o, self.now) {
            self.tx.update(&o).map_err(store_err)?;
        }
        Ok(o)
    }

    fn save(&self, o: &mut Object) -> Result<(), Fault> {
        o.attrs.set("Last Change Date", Value::DateTime(self.now));
        self.tx.update(o).map_err(store_err)
    }

    /// Attributes sent with Create, Register or Re-key (1.x Template-Attribute, 2.0 Attributes).
    fn request_attrs(&self, k: &[Item]) -> Result<Vec<Attr>, Fault> {
        let mut out = Vec::new();
        for i in k {
            if i.tag == tag::TEMPLATE_ATTRIBUTE {
                for a in i.children() {
                    match a.tag {
                        t if t == tag::ATTRIBUTE => out.push(attrs::from_v1(a)?.0),
                        // A Name here names a Template object in 1.x; this
                        // server keeps no templates, and clients that send
                        // one (kmip-protocol's `TemplateAttribute::named`)
                        // mean the new object's name, so it becomes that.
                        t if t == tag::NAME => out.push(attrs::make("Name", a.clone())?),
                        t => {
                            return Err(Fault::invalid(format!(
                                "unexpected tag {t:#08x} in Template-Attribute"
                            )))
                        }
                    }
                }
            } else if i.tag == tag::ATTRIBUTES {
                for a in i.children() {
                    out.push(attrs::from_v2(a)?);
                }
            }
        }
        for a in &out {
            if SERVER_ONLY.contains(&a.name.as_str()) || a.name.starts_with("y-") {
                return Err(Fault::new(
                    Reason::InvalidField,
                    format!("'{}' is set by the server, not by a client", a.name),
                ));
            }
        }
        Ok(out)
    }

    /// A new object of the caller's group with the server's attributes.
    fn new_object(&self, object_type: i32, given: Vec<Attr>) -> Result<Object, Fault> {
        let uid = self.tx.new_uid().map_err(store_err)?;
        let mut a = Attrs::default();
        a.set("Unique Identifier", Value::TextString(uid.clone()));
        a.set("Object Type", en(object_type));
        for g in given {
            a.add(g)?;
        }
        a.set("State", en(state::PRE_ACTIVE));
        a.set("Initial Date", Value::DateTime(self.now));
        a.set("Original Creation Date", Value::DateTime(self.now));
        a.set("Last Change Date", Value::DateTime(self.now));
        a.set("Fresh", Value::Boolean(true));
        if a.get("Sensitive").is_none() {
            a.set("Sensitive", Value::Boolean(false));
        }
        if a.get("Extractable").is_none() {
            a.set("Extractable", Value::Boolean(true));
        }
        a.set("Always Sensitive", Value::Boolean(flag(&a, "Sensitive")));
        a.set(
            "Never Extractable",
            Value::Boolean(!flag(&a, "Extractable")),
        );
        let mut o = Object {
            seq: 0,
            uid,
            group: self.caller.group.clone(),
            attrs: a,
            wrapped: None,
            backed_up: false,
        };
        tick(&mut o, self.now);
        Ok(o)
    }

    fn query(&self, k: &[Item]) -> Result<Done, Fault> {
        let mut p = Vec::new();
        let fns: Vec<i64> = k
            .iter()
            .filter(|i| i.tag == tag::QUERY_FUNCTION)
            .filter_map(int)
            .collect();
        if fns.contains(&(qf::QUERY_OPERATIONS as i64)) {
            for (o, since) in OPERATIONS {
                if *since <= self.v {
                    p.push(Item::new(tag::OPERATION, en(*o)));
                }
            }
        }
        if fns.contains(&(qf::QUERY_OBJECTS as i64)) {
            p.push(Item::new(tag::OBJECT_TYPE, en(ot::SYMMETRIC_KEY)));
            p.push(Item::new(tag::OBJECT_TYPE, en(ot::SECRET_DATA)));
        }
        if fns.contains(&(qf::QUERY_SERVER_INFORMATION as i64)) {
            p.push(Item::new(
                tag::VENDOR_IDENTIFICATION,
                Value::TextString(format!("cinta-keymgr {}", env!("CARGO_PKG_VERSION"))),
            ));
            p.push(Item::new(tag::SERVER_INFORMATION, Value::Structure(vec![])));
        }
        if fns.contains(&(qf::QUERY_APPLICATION_NAMESPACES as i64)) {
            for n in NAMESPACES {
                p.push(Item::new(
                    tag::APPLICATION_NAMESPACE,
                    Value::TextString(n.to_string()),
                ));
            }
        }
        Ok(Done {
            uid: None,
            payload: p,
        })
    }

    fn create(&self, k: &[Item]) -> Result<Done, Fault> {
        let t = child_int(k, tag::OBJECT_TYPE)
            .ok_or_else(|| Fault::missing("Create needs an Object Type"))?;
        if t != ot::SYMMETRIC_KEY as i64 {
            return Err(Fault::new(
                Reason::InvalidField,
                format!("Create makes symmetric keys (object type {t:#x} asked); register secret data instead"),
            ));
        }
        let given = self.request_attrs(k)?;
        let mut o = self.new_object(ot::SYMMETRIC_KEY, given)?;
        let bits = check_symmetric(&mut o.attrs, None)?;
        let material = self.tx.random(bits / 8).map_err(store_err)?;
        material_attrs(&mut o.attrs, &material, kft::RAW, true);
        self.tx.insert(&mut o, &material).map_err(store_err)?;
        Ok(Done {
            uid: Some(o.uid.clone()),
            payload: vec![
                Item::new(tag::OBJECT_TYPE, en(ot::SYMMETRIC_KEY)),
                uid_item(&o.uid),
            ],
        })
    }

    fn register(&self, k: &[Item]) -> Result<Done, Fault> {
        let t = child_int(k, tag::OBJECT_TYPE)
            .ok_or_else(|| Fault::missing("Register needs an Object Type"))? as i32;
        let given = self.request_attrs(k)?;
        let (material, sd_type, block_alg, block_len) = match t {
            ot::SYMMETRIC_KEY => {
                let sk = k
                    .iter()
                    .find(|i| i.tag == tag::SYMMETRIC_KEY)
                    .ok_or_else(|| {
                        Fault::missing("Register of a symmetric key needs a Symmetric Key")
                    })?;
                let (m, a, l) = key_block(sk, &[kft::RAW, kft::TRANSPARENT_SYMMETRIC_KEY])?;
                (m, None, a, l)
            }
            ot::SECRET_DATA => {
                let sd = k
                    .iter()
                    .find(|i| i.tag == tag::SECRET_DATA)
                    .ok_or_else(|| Fault::missing("Register of secret data needs a Secret Data"))?;
                let sdt = sd
                    .child(tag::SECRET_DATA_TYPE)
                    .and_then(int)
                    .ok_or_else(|| Fault::missing("Secret Data needs a Secret Data Type"))?;
                let (m, _, _) = key_block(sd, &[kft::OPAQUE, kft::RAW])?;
                (m, Some(sdt), None, None)
            }
            _ => {
                return Err(Fault::new(
                    Reason::InvalidField,
                    format!(
                        "this server keeps symmetric keys and secret data, not object type {t:#x}"
                    ),
                ))
            }
        };
        if material.is_empty() || material.len() > 1024 {
            return Err(Fault::invalid("key material must be 1 to 1024 bytes"));
        }
        let mut o = self.new_object(t, given)?;
        if t == ot::SYMMETRIC_KEY {
            if o.attrs.get("Cryptographic Algorithm").is_none() {
                if let Some(a) = block_alg {
                    o.attrs.set("Cryptographic Algorithm", en(a as i32));
                }
            }
            if o.attrs.get("Cryptographic Length").is_none() {
                o.attrs.set(
                    "Cryptographic Length",
                    Value::Integer(block_len.unwrap_or(material.len() as i64 * 8) as i32),
                );
            }
            check_symmetric(&mut o.attrs, Some(material.len() * 8))?;
        } else if let Some(sdt) = sd_type {
            o.attrs.add(attrs::make(
                SECRET_DATA_TYPE_ATTR,
                Item::new(0, Value::Enumeration(sdt as u32)),
            )?)?;
            if o.attrs.get("Cryptographic Usage Mask").is_none() {
                o.attrs
                    .set("Cryptographic Usage Mask", Value::Integer(usage::VERIFY));
            }
        }
        let f = if t == ot::SYMMETRIC_KEY {
            kft::RAW
        } else {
            kft::OPAQUE
        };
        material_attrs(&mut o.attrs, &material, f, false);
        self.tx.insert(&mut o, &material).map_err(store_err)?;
        Ok(Done {
            uid: Some(o.uid.clone()),
            payload: vec![uid_item(&o.uid)],
        })
    }

    fn get(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        if k.iter().any(|i| i.tag == tag::KEY_WRAPPING_SPECIFICATION) {
            return Err(Fault::new(
                Reason::FeatureNotSupported,
                "keys are served unwrapped over mutual TLS; Key Wrapping Specification is not supported",
            ));
        }
        let o = self.load(&uid)?;
        let s = o.state();
        if is_destroyed(s) {
            return Err(Fault::new(
                Reason::ObjectDestroyed,
                format!("the key material of {uid} was destroyed"),
            ));
        }
        if self.caller.require_backup && !o.backed_up {
            return Err(Fault::new(
                Reason::PermissionDenied,
                format!("{uid} is not served until a keystore backup holds it (require_backup)"),
            ));
        }
        // Keys are served only in the clear (over mutual TLS): a sensitive
        // or unextractable one is not served at all.
        if flag(&o.attrs, "Sensitive") {
            return Err(Fault::new(
                Reason::Sensitive,
                format!("{uid} is Sensitive: its key material is never sent in the clear"),
            ));
        }
        if !flag(&o.attrs, "Extractable") && o.attrs.get("Extractable").is_some() {
            return Err(Fault::new(
                Reason::NotExtractable,
                format!("{uid} is not Extractable: its key material never leaves the server"),
            ));
        }
        let material = self.tx.material(&o).map_err(store_err)?.ok_or_else(|| {
            Fault::new(
                Reason::KeyValueNotPresent,
                format!("{uid} has no key material"),
            )
        })?;
        let t = o.object_type() as i32;
        let wanted = child_int(k, tag::KEY_FORMAT_TYPE).map(|x| x as i32);
        let object = if t == ot::SYMMETRIC_KEY {
            let f = wanted.unwrap_or(kft::RAW);
            let value = match f {
                kft::RAW => Item::new(tag::KEY_MATERIAL, Value::ByteString(material.to_vec())),
                kft::TRANSPARENT_SYMMETRIC_KEY => Item::new(
                    tag::KEY_MATERIAL,
                    Value::Structure(vec![Item::new(
                        tag::KEY,
                        Value::ByteString(material.to_vec()),
                    )]),
                ),
                _ => {
                    return Err(Fault::new(
                        Reason::KeyFormatTypeNotSupported,
                        format!(
                        "symmetric keys are served as Raw or Transparent Symmetric Key, not {f:#x}"
                    ),
                    ))
                }
            };
            let block = vec![
                Item::new(tag::KEY_FORMAT_TYPE, en(f)),
                Item::new(tag::KEY_VALUE, Value::Structure(vec![value])),
                Item::new(
                    tag::CRYPTOGRAPHIC_ALGORITHM,
                    en(o.attrs
                        .int("Cryptographic Algorithm")
                        .unwrap_or(alg::AES as i64) as i32),
                ),
                Item::new(
                    tag::CRYPTOGRAPHIC_LENGTH,
                    Value::Integer(
                        o.attrs
                            .int("Cryptographic Length")
                            .unwrap_or(material.len() as i64 * 8) as i32,
                    ),
                ),
            ];
            Item::new(
                tag::SYMMETRIC_KEY,
                Value::Structure(vec![Item::new(tag::KEY_BLOCK, Value::Structure(block))]),
            )
        } else {
            let f = wanted.unwrap_or(kft::OPAQUE);
            if f != kft::OPAQUE {
                return Err(Fault::new(
                    Reason::KeyFormatTypeNotSupported,
                    format!("secret data is served as Opaque, not {f:#x}"),
                ));
            }
            let sdt = o
                .attrs
                .int(SECRET_DATA_TYPE_ATTR)
                .unwrap_or(secret_data_type::PASSWORD as i64);
            Item::new(
                tag::SECRET_DATA,
                Value::Structure(vec![
                    Item::new(tag::SECRET_DATA_TYPE, en(sdt as i32)),
                    Item::new(
                        tag::KEY_BLOCK,
                        Value::Structure(vec![
                            Item::new(tag::KEY_FORMAT_TYPE, en(f)),
                            Item::new(
                                tag::KEY_VALUE,
                                Value::Structure(vec![Item::new(
                                    tag::KEY_MATERIAL,
                                    Value::ByteString(material.to_vec()),
                                )]),
                            ),
                        ]),
                    ),
                ]),
            )
        };
        // Fresh: never served yet. Only the first Get writes.
        if flag(&o.attrs, "Fresh") {
            let mut o = o;
            o.attrs.set("Fresh", Value::Boolean(false));
            self.save(&mut o)?;
        }
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![Item::new(tag::OBJECT_TYPE, en(t)), uid_item(&uid), object],
        })
    }

    /// Attributes as this version writes them, optionally only those named.
    fn attrs_out(&self, o: &Object, only: Option<&[String]>) -> Vec<Item> {
        let chosen = o
            .attrs
            .indexed()
            .into_iter()
            .filter(|(a, _)| match only {
                Some(n) => n.contains(&a.name),
                None => !NAMED_ONLY.contains(&a.name.as_str()),
            })
            .filter(|(a, _)| attrs::in_version(&a.name, self.v) && !hidden(&a.name));
        if self.is_v2() {
            let items = chosen.map(|(a, _)| attrs::to_v2(a)).collect();
            vec![Item::new(tag::ATTRIBUTES, Value::Structure(items))]
        } else {
            chosen.map(|(a, i)| attrs::to_v1(a, i)).collect()
        }
    }

    fn get_attributes(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let o = self.load(&uid)?;
        let mut names = Vec::new();
        for i in k {
            if i.tag == tag::ATTRIBUTE_NAME {
                names.push(
                    text(i)
                        .ok_or_else(|| Fault::invalid("Attribute Name must be text"))?
                        .to_string(),
                );
            } else if i.tag == tag::ATTRIBUTE_REFERENCE {
                names.push(attrs::name_of_reference(i)?);
            }
        }
        let only = (!names.is_empty()).then_some(names.as_slice());
        let mut p = vec![uid_item(&uid)];
        p.extend(self.attrs_out(&o, only));
        Ok(Done {
            uid: Some(uid),
            payload: p,
        })
    }

    fn get_attribute_list(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let o = self.load(&uid)?;
        let mut p = vec![uid_item(&uid)];
        let mut seen: Vec<&str> = Vec::new();
        for a in &o.attrs.0 {
            if seen.contains(&a.name.as_str())
                || !attrs::in_version(&a.name, self.v)
                || hidden(&a.name)
            {
                continue;
            }
            seen.push(&a.name);
            if self.is_v2() {
                if attrs::is_custom(&a.name) {
                    let (vendor, name) = a.name.split_at(1);
                    p.push(Item::new(
                        tag::ATTRIBUTE_REFERENCE,
                        Value::Structure(vec![
                            Item::new(tag::VENDOR_IDENTIFICATION, Value::TextString(vendor.into())),
                            Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name[1..].into())),
                        ]),
                    ));
                } else {
                    p.push(Item::new(
                        tag::ATTRIBUTE_REFERENCE,
                        Value::Enumeration(a.value.tag),
                    ));
                }
            } else {
                p.push(Item::new(
                    tag::ATTRIBUTE_NAME,
                    Value::TextString(a.name.clone()),
                ));
            }
        }
        Ok(Done {
            uid: Some(uid),
            payload: p,
        })
    }

    /// May a client change `name` on `o` now?
    fn mutable(&self, name: &str, o: &Object) -> Result<(), Fault> {
        let ok = CLIENT_MUTABLE.contains(&name) || name.starts_with("x-");
        if !ok {
            return Err(Fault::new(
                Reason::AttributeReadOnly,
                format!("'{name}' cannot be changed by a client"),
            ));
        }
        let pre = o.state() == state::PRE_ACTIVE;
        if matches!(
            name,
            "Activation Date" | "Process Start Date" | "Protect Stop Date"
        ) && !pre
        {
            return Err(Fault::state(format!(
                "'{name}' can change only while the object is Pre-Active"
            )));
        }
        if is_destroyed(o.state()) {
            return Err(Fault::state(format!("{} is destroyed", o.uid)));
        }
        Ok(())
    }

    fn single_attr(
        &self,
        k: &[Item],
        v1_tag: u32,
        v2_tag: u32,
    ) -> Result<Option<(Attr, Option<i32>)>, Fault> {
        if let Some(a) = k.iter().find(|i| i.tag == v1_tag) {
            return Ok(Some(attrs::from_v1(a)?));
        }
        if let Some(w) = k.iter().find(|i| i.tag == v2_tag) {
            let inner = w
                .children()
                .first()
                .ok_or_else(|| Fault::missing("an empty attribute wrapper"))?;
            return Ok(Some((attrs::from_v2(inner)?, None)));
        }
        Ok(None)
    }

    fn add_attribute(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        let (a, _) = self
            .single_attr(k, tag::ATTRIBUTE, tag::NEW_ATTRIBUTE)?
            .ok_or_else(|| Fault::missing("Add Attribute needs an attribute"))?;
        self.mutable(&a.name, &o)?;
        let idx = o.attrs.add(a.clone())?;
        refresh_dates(&mut o, self.now);
        settle_flags(&mut o.attrs);
        self.save(&mut o)?;
        let mut p = vec![uid_item(&uid)];
        if !self.is_v2() {
            p.push(attrs::to_v1(&a, idx));
        }
        Ok(Done {
            uid: Some(uid),
            payload: p,
        })
    }

    fn modify_attribute(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        let (a, idx) = self
            .single_attr(k, tag::ATTRIBUTE, tag::NEW_ATTRIBUTE)?
            .ok_or_else(|| Fault::missing("Modify Attribute needs an attribute"))?;
        self.mutable(&a.name, &o)?;
        let pos = if let Some(cur) = k.iter().find(|i| i.tag == tag::CURRENT_ATTRIBUTE) {
            let c = attrs::from_v2(
                cur.children()
                    .first()
                    .ok_or_else(|| Fault::missing("empty Current Attribute"))?,
            )?;
            o.attrs.0.iter().position(|x| *x == c)
        } else {
            o.attrs.position(&a.name, idx.unwrap_or(0))
        };
        let pos = pos.ok_or_else(|| {
            Fault::new(
                Reason::AttributeNotFound,
                format!("{uid} has no such instance of '{}'", a.name),
            )
        })?;
        let index = o.attrs.indexed()[pos].1;
        o.attrs.0[pos] = a.clone();
        refresh_dates(&mut o, self.now);
        settle_flags(&mut o.attrs);
        self.save(&mut o)?;
        let mut p = vec![uid_item(&uid)];
        if !self.is_v2() {
            p.push(attrs::to_v1(&a, index));
        }
        Ok(Done {
            uid: Some(uid),
            payload: p,
        })
    }

    fn delete_attribute(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        let pos = if let Some(n) = k.iter().find(|i| i.tag == tag::ATTRIBUTE_NAME) {
            let name = text(n).ok_or_else(|| Fault::invalid("Attribute Name must be text"))?;
            self.mutable(name, &o)?;
            let idx = child_int(k, tag::ATTRIBUTE_INDEX).unwrap_or(0) as i32;
            o.attrs.position(name, idx)
        } else if let Some(cur) = k.iter().find(|i| i.tag == tag::CURRENT_ATTRIBUTE) {
            let c = attrs::from_v2(
                cur.children()
                    .first()
                    .ok_or_else(|| Fault::missing("empty Current Attribute"))?,
            )?;
            self.mutable(&c.name, &o)?;
            o.attrs.0.iter().position(|x| *x == c)
        } else if let Some(r) = k.iter().find(|i| i.tag == tag::ATTRIBUTE_REFERENCE) {
            let name = attrs::name_of_reference(r)?;
            self.mutable(&name, &o)?;
            o.attrs.position(&name, 0)
        } else {
            return Err(Fault::missing("Delete Attribute needs an Attribute Name, Current Attribute or Attribute Reference"));
        };
        let pos = pos.ok_or_else(|| {
            Fault::new(
                Reason::AttributeNotFound,
                format!("{uid} has no such attribute instance"),
            )
        })?;
        let index = o.attrs.indexed()[pos].1;
        let gone = o.attrs.0.remove(pos);
        settle_flags(&mut o.attrs);
        self.save(&mut o)?;
        let mut p = vec![uid_item(&uid)];
        if !self.is_v2() {
            p.push(attrs::to_v1(&gone, index));
        }
        Ok(Done {
            uid: Some(uid),
            payload: p,
        })
    }

    fn locate(&self, k: &[Item]) -> Result<Done, Fault> {
        let max = child_int(k, tag::MAXIMUM_ITEMS).map(|m| m.max(0) as usize);
        let offset = child_int(k, tag::OFFSET_ITEMS).unwrap_or(0).max(0) as usize;
        let mut filters: Vec<Attr> = Vec::new();
        for i in k {
            if i.tag == tag::ATTRIBUTE {
                filters.push(attrs::from_v1(i)?.0);
            } else if i.tag == tag::ATTRIBUTES {
                for a in i.children() {
                    filters.push(attrs::from_v2(a)?);
                }
            }
        }
        let name = filters.iter().find(|f| f.name == "Name").and_then(|f| {
            f.value
                .child(tag::NAME_VALUE)
                .and_then(text)
                .map(str::to_string)
        });
        // Destroyed objects are found only by a request that asks for a state.
        let asks_state = filters.iter().any(|f| f.name == "State");
        let mut found = Vec::new();
        for mut o in self
            .tx
            .candidates(&self.caller.group, name.as_deref())
            .map_err(store_err)?
        {
            tick(&mut o, self.now);
            if matches_all(&o.attrs, &filters) && (asks_state || !is_destroyed(o.state())) {
                found.push(o.uid);
            }
        }
        let total = found.len();
        let only = (total == 1).then(|| found[0].clone());
        let page: Vec<String> = found
            .into_iter()
            .skip(offset)
            .take(max.unwrap_or(usize::MAX))
            .collect();
        let mut p = Vec::new();
        if self.v >= Version::new(1, 3) {
            p.push(Item::new(
                tag::LOCATED_ITEMS,
                Value::Integer(total.min(i32::MAX as usize) as i32),
            ));
        }
        p.extend(page.iter().map(|u| uid_item(u)));
        Ok(Done {
            uid: only,
            payload: p,
        })
    }

    fn activate(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        if o.state() != state::PRE_ACTIVE {
            return Err(Fault::state(format!(
                "{uid} is {}, not Pre-Active; only a Pre-Active object can be activated",
                state_name(o.state())
            )));
        }
        o.attrs.set("State", en(state::ACTIVE));
        o.attrs.set("Activation Date", Value::DateTime(self.now));
        self.save(&mut o)?;
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![uid_item(&uid)],
        })
    }

    fn revoke(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        let reason = k
            .iter()
            .find(|i| i.tag == tag::REVOCATION_REASON)
            .ok_or_else(|| Fault::missing("Revoke needs a Revocation Reason"))?;
        let code = reason
            .child(tag::REVOCATION_REASON_CODE)
            .and_then(int)
            .ok_or_else(|| Fault::missing("Revocation Reason needs a Revocation Reason Code"))?
            as i32;
        let s = o.state();
        if is_destroyed(s) {
            return Err(Fault::state(format!("{uid} is destroyed")));
        }
        if code == rrc::KEY_COMPROMISE || code == rrc::CA_COMPROMISE {
            let when = child_int(k, tag::COMPROMISE_OCCURRENCE_DATE).unwrap_or(self.now);
            o.attrs.set("State", en(state::COMPROMISED));
            o.attrs.set("Compromise Date", Value::DateTime(self.now));
            o.attrs
                .set("Compromise Occurrence Date", Value::DateTime(when));
        } else {
            if s != state::ACTIVE {
                return Err(Fault::state(format!(
                    "{uid} is {}; only an Active object is revoked for reason {code:#x} (key compromise revokes any)",
                    state_name(s)
                )));
            }
            o.attrs.set("State", en(state::DEACTIVATED));
            o.attrs.set("Deactivation Date", Value::DateTime(self.now));
        }
        let mut r = Attr {
            name: "Revocation Reason".into(),
            value: reason.clone(),
        };
        r.value.tag = tag::REVOCATION_REASON;
        o.attrs.remove_all("Revocation Reason");
        o.attrs.0.push(r);
        self.save(&mut o)?;
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![uid_item(&uid)],
        })
    }

    fn destroy(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut o = self.load(&uid)?;
        let s = o.state();
        let next = match s {
            state::PRE_ACTIVE | state::DEACTIVATED => state::DESTROYED,
            state::COMPROMISED => state::DESTROYED_COMPROMISED,
            state::ACTIVE => {
                return Err(Fault::state(format!(
                    "{uid} is Active; revoke it before destroying it"
                )))
            }
            _ => return Err(Fault::state(format!("{uid} is already destroyed"))),
        };
        o.attrs.set("State", en(next));
        o.attrs.set("Destroy Date", Value::DateTime(self.now));
        self.tx.erase_material(&mut o).map_err(store_err)?;
        self.save(&mut o)?;
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![uid_item(&uid)],
        })
    }

    fn check(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let o = self.load(&uid)?;
        let s = o.state();
        if is_destroyed(s) {
            return Err(Fault::new(
                Reason::ObjectDestroyed,
                format!("{uid} is destroyed"),
            ));
        }
        if let Some(mask) = child_int(k, tag::CRYPTOGRAPHIC_USAGE_MASK) {
            let mask = mask as i32;
            let allowed = o.attrs.int("Cryptographic Usage Mask").unwrap_or(0) as i32;
            if mask & !allowed != 0 {
                return Err(Fault::new(
                    Reason::IllegalOperation,
                    format!("{uid} does not permit usage mask {mask:#x} (it permits {allowed:#x})"),
                ));
            }
            let protect = usage::ENCRYPT | usage::WRAP_KEY | usage::SIGN | usage::MAC_GENERATE;
            if mask & protect != 0 {
                if s != state::ACTIVE {
                    return Err(Fault::state(format!(
                        "{uid} is {}; it may not protect new data",
                        state_name(s)
                    )));
                }
                if o.attrs
                    .int("Protect Stop Date")
                    .is_some_and(|d| d <= self.now)
                {
                    return Err(Fault::state(format!("{uid} is past its Protect Stop Date")));
                }
            }
        }
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![uid_item(&uid)],
        })
    }

    fn rekey(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let mut old = self.load(&uid)?;
        if old.object_type() as i32 != ot::SYMMETRIC_KEY {
            return Err(Fault::invalid(format!("{uid} is not a symmetric key")));
        }
        if is_destroyed(old.state()) {
            return Err(Fault::state(format!("{uid} is destroyed")));
        }
        let offset = child_int(k, tag::OFFSET);
        let given = self.request_attrs(k)?;
        let keep = [
            "Name",
            "Cryptographic Algorithm",
            "Cryptographic Length",
            "Cryptographic Usage Mask",
            "Object Group",
            "Application Specific Information",
            "Contact Information",
            "Alternative Name",
            "Description",
            "Comment",
            "Sensitive",
            "Extractable",
        ];
        let mut carried: Vec<Attr> = old
            .attrs
            .0
            .iter()
            .filter(|a| keep.contains(&a.name.as_str()) || a.name.starts_with("x-"))
            .filter(|a| !given.iter().any(|g| g.name == a.name))
            .cloned()
            .collect();
        carried.extend(given);
        if let (Some(off), Some(_)) = (offset, old.attrs.get("Activation Date")) {
            carried.push(attrs::std(
                "Activation Date",
                Value::DateTime(self.now + off),
            ));
        }
        let mut new = self.new_object(ot::SYMMETRIC_KEY, carried)?;
        let bits = check_symmetric(&mut new.attrs, None)?;
        new.attrs.add(attrs::std(
            "Link",
            link(link_type::REPLACED_OBJECT_LINK, &uid),
        ))?;
        let material = self.tx.random(bits / 8).map_err(store_err)?;
        material_attrs(&mut new.attrs, &material, kft::RAW, true);
        self.tx.insert(&mut new, &material).map_err(store_err)?;
        old.attrs.add(attrs::std(
            "Link",
            link(link_type::REPLACEMENT_OBJECT_LINK, &new.uid),
        ))?;
        self.save(&mut old)?;
        Ok(Done {
            payload: vec![uid_item(&new.uid)],
            uid: Some(new.uid),
        })
    }
}

/// A boolean attribute's value (false when absent).
fn flag(a: &Attrs, name: &str) -> bool {
    matches!(a.get(name).map(|i| &i.value), Some(Value::Boolean(true)))
}

/// RNG Algorithm "Unspecified": keys come from the operating system's
/// generator (getrandom through ring), which is no NIST SP 800-90A DRBG.
const RNG_UNSPECIFIED: i32 = 1;
/// Hashing Algorithm SHA-256.
const SHA_256: i32 = 6;

/// What the server says of key material it keeps: its Digest (SHA-256, in
/// the format it is served in) and, when it made the material, the
/// Random Number Generator it used.
fn material_attrs(a: &mut Attrs, material: &[u8], format: i32, generated: bool) {
    let d = ring::digest::digest(&ring::digest::SHA256, material);
    a.set(
        "Digest",
        Value::Structure(vec![
            Item::new(tag::HASHING_ALGORITHM, en(SHA_256)),
            Item::new(tag::DIGEST_VALUE, Value::ByteString(d.as_ref().to_vec())),
            Item::new(tag::KEY_FORMAT_TYPE, en(format)),
        ]),
    );
    if generated {
        a.set(
            "Random Number Generator",
            Value::Structure(vec![Item::new(tag::RNG_ALGORITHM, en(RNG_UNSPECIFIED))]),
        );
    }
}

/// After a client changed attributes: a key that stops being Sensitive was
/// not always so, one that becomes Extractable was not never so.
fn settle_flags(a: &mut Attrs) {
    if !flag(a, "Sensitive") {
        a.set("Always Sensitive", Value::Boolean(false));
    }
    if a.get("Extractable").is_none() || flag(a, "Extractable") {
        a.set("Never Extractable", Value::Boolean(false));
    }
}

fn link(t: i32, uid: &str) -> Value {
    Value::Structure(vec![
        Item::new(tag::LINK_TYPE, en(t)),
        Item::new(tag::LINKED_OBJECT_IDENTIFIER, Value::TextString(uid.into())),
    ])
}

/// Answers Discover Versions: ours, restricted to the client's list if it sent one.
fn discover_versions(k: &[Item]) -> Done {
    let theirs: Vec<Version> = k
        .iter()
        .filter(|i| i.tag == tag::PROTOCOL_VERSION)
        .filter_map(Version::from_item)
        .collect();
    let payload = SUPPORTED
        .iter()
        .filter(|v| theirs.is_empty() || theirs.contains(v))
        .map(|v| v.to_item())
        .collect();
    Done { uid: None, payload }
}

/// Checks (and completes) a symmetric key's attributes; returns its length in bits.
fn check_symmetric(a: &mut Attrs, material_bits: Option<usize>) -> Result<usize, Fault> {
    let algorithm = a
        .int("Cryptographic Algorithm")
        .ok_or_else(|| Fault::missing("a symmetric key needs a Cryptographic Algorithm"))?;
    if algorithm != alg::AES as i64 {
        return Err(Fault::invalid(format!(
            "this server keeps AES keys (Cryptographic Algorithm {algorithm:#x} asked)"
        )));
    }
    let bits = a
        .int("Cryptographic Length")
        .ok_or_else(|| Fault::missing("a symmetric key needs a Cryptographic Length"))?;
    if ![128, 192, 256].contains(&bits) {
        return Err(Fault::invalid(format!(
            "AES keys are 128, 192 or 256 bits, not {bits}"
        )));
    }
    if let Some(m) = material_bits {
        if m as i64 != bits {
            return Err(Fault::invalid(format!(
                "Cryptographic Length says {bits} bits but the key material has {m}"
            )));
        }
    }
    if a.get("Cryptographic Usage Mask").is_none() {
        a.set(
            "Cryptographic Usage Mask",
            Value::Integer(usage::ENCRYPT | usage::DECRYPT),
        );
    }
    Ok(bits as usize)
}

/// Reads the key block of a Symmetric Key or Secret Data: material, algorithm, length.
/// Key material with the key block's algorithm and length, if it gave them.
type KeyBlock = (Vec<u8>, Option<i64>, Option<i64>);

fn key_block(obj: &Item, formats: &[i32]) -> Result<KeyBlock, Fault> {
    let b = obj
        .child(tag::KEY_BLOCK)
        .ok_or_else(|| Fault::missing("no Key Block"))?;
    if b.child(tag::KEY_WRAPPING_DATA).is_some() {
        return Err(Fault::new(
            Reason::FeatureNotSupported,
            "wrapped key blocks are not accepted",
        ));
    }
    let f = b
        .child(tag::KEY_FORMAT_TYPE)
        .and_then(int)
        .ok_or_else(|| Fault::missing("the Key Block has no Key Format Type"))? as i32;
    if !formats.contains(&f) {
        return Err(Fault::new(
            Reason::KeyFormatTypeNotSupported,
            format!("key format type {f:#x} is not accepted here"),
        ));
    }
    let kv = b
        .child(tag::KEY_VALUE)
        .ok_or_else(|| Fault::missing("the Key Block has no Key Value"))?;
    let km = match &kv.value {
        Value::ByteString(bytes) => bytes.clone(),
        Value::Structure(_) => match kv.child(tag::KEY_MATERIAL).map(|m| &m.value) {
            Some(Value::ByteString(bytes)) => bytes.clone(),
            Some(Value::Structure(s)) => {
                match s.iter().find(|i| i.tag == tag::KEY).map(|i| &i.value) {
                    Some(Value::ByteString(bytes)) => bytes.clone(),
                    _ => return Err(Fault::missing("Transparent Symmetric Key has no Key")),
                }
            }
            _ => return Err(Fault::missing("the Key Value has no Key Material")),
        },
        _ => return Err(Fault::invalid("Key Value must be a structure")),
    };
    Ok((
        km,
        b.child(tag::CRYPTOGRAPHIC_ALGORITHM).and_then(int),
        b.child(tag::CRYPTOGRAPHIC_LENGTH).and_then(int),
    ))
}

/// Brings an object's state up to its dates; true if it changed.
pub fn tick(o: &mut Object, now: i64) -> bool {
    let mut changed = false;
    if o.state() == state::PRE_ACTIVE && o.attrs.int("Activation Date").is_some_and(|d| d <= now) {
        o.attrs.set("State", en(state::ACTIVE));
        changed = true;
    }
    if o.state() == state::ACTIVE && o.attrs.int("Deactivation Date").is_some_and(|d| d <= now) {
        o.attrs.set("State", en(state::DEACTIVATED));
        changed = true;
    }
    changed
}

/// After a client changed dates: a past Activation Date activates now.
fn refresh_dates(o: &mut Object, now: i64) {
    tick(o, now);
}

/// A state's name as KMIP writes it.
pub fn state_name(s: i32) -> &'static str {
    match s {
        state::PRE_ACTIVE => "Pre-Active",
        state::ACTIVE => "Active",
        state::DEACTIVATED => "Deactivated",
        state::COMPROMISED => "Compromised",
        state::DESTROYED => "Destroyed",
        state::DESTROYED_COMPROMISED => "Destroyed Compromised",
        _ => "Unknown",
    }
}

/// Locate's matching: every filter matches some instance; two instances of a
/// date attribute are a range (inclusive).
fn matches_all(a: &Attrs, filters: &[Attr]) -> bool {
    let mut done: Vec<&str> = Vec::new();
    for f in filters {
        if done.contains(&f.name.as_str()) {
            continue;
        }
        let same: Vec<&Attr> = filters.iter().filter(|g| g.name == f.name).collect();
        let is_date = f.value.value.type_of() == Type::DateTime;
        if is_date && same.len() == 2 {
            let (Some(lo), Some(hi)) = (int(&same[0].value), int(&same[1].value)) else {
                return false;
            };
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            if !a.all(&f.name).filter_map(int).any(|d| d >= lo && d <= hi) {
                return false;
            }
            done.push(&f.name);
            continue;
        }
        if !a.all(&f.name).any(|v| v.value == f.value.value) {
            return false;
        }
    }
    true
}

/// The fuzz target's body: a request message run on a keystore made once
/// (with three keys in it) inside a transaction that is always rolled back.
/// Whatever the bytes, no panic, and the response encodes.
pub fn fuzz_operations(bytes: &[u8]) {
    use std::sync::{Mutex, OnceLock};
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cinta-keymgr-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keystore.db");
        let source = crate::master::Source::Key(zeroize::Zeroizing::new([7u8; 32]));
        Store::create(&path, &source, "default", 1_700_000_000).expect("make the fuzz keystore");
        let mut s = Store::open(&path, &source).expect("open the fuzz keystore");
        let caller = Caller {
            group: "default".into(),
            require_backup: false,
        };
        let create = |name: &str| -> Item {
            let a = |n: &str, mut v: Item| {
                v.tag = tag::ATTRIBUTE_VALUE;
                Item::new(
                    tag::ATTRIBUTE,
                    Value::Structure(vec![
                        Item::new(tag::ATTRIBUTE_NAME, Value::TextString(n.into())),
                        v,
                    ]),
                )
            };
            Item::new(
                tag::REQUEST_PAYLOAD,
                Value::Structure(vec![
                    Item::new(tag::OBJECT_TYPE, en(ot::SYMMETRIC_KEY)),
                    Item::new(
                        tag::TEMPLATE_ATTRIBUTE,
                        Value::Structure(vec![
                            a("Cryptographic Algorithm", Item::new(0, en(alg::AES))),
                            a("Cryptographic Length", Item::new(0, Value::Integer(256))),
                            a(
                                "Name",
                                Item::new(
                                    0,
                                    Value::Structure(vec![
                                        Item::new(tag::NAME_VALUE, Value::TextString(name.into())),
                                        Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
                                    ]),
                                ),
                            ),
                        ]),
                    ),
                ]),
            )
        };
        for n in ["k1", "k2", "k3"] {
            let req = Request {
                version: Version::new(1, 4),
                max_response_size: None,
                batch_order: None,
                on_error: OnError::Stop,
                authentication: None,
                items: vec![RequestItem {
                    operation: op::CREATE as u32,
                    id: None,
                    payload: Some(create(n)),
                }],
            };
            run_alone(&mut s, &req, &caller, 1_700_000_000);
        }
        Mutex::new(s)
    });
    let Ok(item) = Item::decode(bytes) else {
        return;
    };
    let Ok(req) = Request::parse(&item) else {
        return;
    };
    let s = store.lock().unwrap_or_else(|p| p.into_inner());
    let caller = Caller {
        group: "default".into(),
        require_backup: false,
    };
    if s.exec("BEGIN").is_err() {
        return;
    }
    let b = run(&s.tx(), &req, &caller, 1_700_000_000);
    let _ = s.exec("ROLLBACK");
    let resp = cinta_kmip::message::Response {
        version: cinta_kmip::message::answer_version(req.version),
        time_stamp: 0,
        items: b.items,
    };
    let bytes = resp.to_item().to_bytes();
    assert!(
        Item::decode(&bytes).is_ok(),
        "a response that does not decode"
    );
}
