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
    revocation_reason_code as rrc, state, tag,
};
use cinta_kmip::ttlv::{Item, Type, Value};

use crate::attrs::{self, Attr, Attrs};
use crate::fault::{Fault, Reason};
use crate::store::{is_destroyed, Object, Store, Tx};

mod objects;
mod pairs;
mod uses;

pub use pairs::{pregenerate, Pregenerated};

/// What a client may do and where its keys live.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's device group.
    pub group: String,
    /// Serve key material only once a keystore backup holds it.
    pub require_backup: bool,
    /// Lease Time of new objects (seconds; None: no leases).
    pub lease_time: Option<u32>,
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
    (op::CREATE_KEY_PAIR, Version::new(1, 0)),
    (op::DERIVE_KEY, Version::new(1, 0)),
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
    (op::OBTAIN_LEASE, Version::new(1, 0)),
    (op::DISCOVER_VERSIONS, Version::new(1, 1)),
    (op::ENCRYPT, Version::new(1, 2)),
    (op::DECRYPT, Version::new(1, 2)),
    (op::SIGN, Version::new(1, 2)),
    (op::SIGNATURE_VERIFY, Version::new(1, 2)),
    (op::MAC, Version::new(1, 2)),
    (op::MAC_VERIFY, Version::new(1, 2)),
];

/// Object types this server keeps (Query Objects).
pub const OBJECT_TYPES: &[i32] = &[
    ot::CERTIFICATE,
    ot::SYMMETRIC_KEY,
    ot::PUBLIC_KEY,
    ot::PRIVATE_KEY,
    ot::SPLIT_KEY,
    ot::SECRET_DATA,
    ot::OPAQUE_DATA,
];

/// Application namespaces answered by Query (the tape library profile's among them).
pub const NAMESPACES: &[&str] = &["LIBRARY-LTO", "LIBRARY-TS", "cinta"];

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
    "Certificate Type",
    "Operation Policy Name",
];

/// Attributes sent only when asked for by name (Get Attribute List names
/// them), as the KMIP 1.4 tape library test case TL-M-3 expects: PyKMIP's
/// client cannot decode several of them and fails a Get Attributes of all
/// attributes when they come unasked.
const NAMED_ONLY: &[&str] = &[
    "Digest",
    "Lease Time",
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
///
/// `pre` holds the key pairs made ahead for the request's Create Key Pair
/// items ([`pregenerate`]); an item without one makes its pair here.
pub fn run(tx: &Tx<'_>, req: &Request, caller: &Caller, now: i64, pre: Pregenerated) -> Batch {
    let v = cinta_kmip::message::answer_version(req.version);
    let mut cx = Cx {
        tx,
        v,
        caller,
        now,
        placeholder: None,
        pre,
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
    let mut b = run(&store.tx(), req, caller, now, pregenerate(req));
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
    pre: Pregenerated,
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
    attrs::int_value(&i.value)
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
            op::CREATE_KEY_PAIR => self.create_key_pair(k),
            op::DERIVE_KEY => self.derive_key(k),
            op::ENCRYPT => self.encrypt(k),
            op::DECRYPT => self.decrypt(k),
            op::SIGN => self.sign(k),
            op::SIGNATURE_VERIFY => self.signature_verify(k),
            op::MAC => self.mac(k),
            op::MAC_VERIFY => self.mac_verify(k),
            op::OBTAIN_LEASE => self.obtain_lease(k),
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

    /// [`Cx::load`], refusing an object destroyed (Object Destroyed).
    fn load_live(&self, uid: &str) -> Result<Object, Fault> {
        let o = self.load(uid)?;
        if is_destroyed(o.state()) {
            return Err(Fault::new(
                Reason::ObjectDestroyed,
                format!("{uid} is destroyed"),
            ));
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
        let mut from_templates: Vec<Vec<Attr>> = Vec::new();
        for i in k {
            if i.tag == tag::TEMPLATE_ATTRIBUTE {
                for a in i.children() {
                    match a.tag {
                        t if t == tag::ATTRIBUTE => out.push(attrs::from_v1(a)?.0),
                        // A Name here names a Template object in 1.x: its
                        // attributes apply where the request gives none.
                        // Naming no template of the caller's group, it is
                        // the new object's name, as clients that send one
                        // for that (kmip-protocol's `TemplateAttribute::named`) mean.
                        t if t == tag::NAME => match self.template(a)? {
                            Some(ta) => from_templates.push(ta),
                            None => out.push(attrs::make("Name", a.clone())?),
                        },
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
        // Each template whole (every value of a multi-instance attribute),
        // for the attributes neither the request nor an earlier template gave.
        for ta in from_templates {
            let given: Vec<String> = out.iter().map(|a| a.name.clone()).collect();
            out.extend(ta.into_iter().filter(|a| !given.contains(&a.name)));
        }
        self.refuse_server_only(&out)?;
        out.retain(|a| a.name != "Operation Policy Name");
        Ok(out)
    }

    /// The attributes of the template a Template-Attribute's Name names, if
    /// the caller's group has one by that name.
    fn template(&self, name: &Item) -> Result<Option<Vec<Attr>>, Fault> {
        let Some(n) = name.child(tag::NAME_VALUE).and_then(text) else {
            return Ok(None);
        };
        let found = self
            .tx
            .candidates(&self.caller.group, Some(n))
            .map_err(store_err)?
            .into_iter()
            .find(|o| o.object_type() as i32 == ot::TEMPLATE && !is_destroyed(o.state()));
        found.map(|o| objects::template_attrs(&o.attrs)).transpose()
    }

    /// Refuses attributes only the server sets. Operation Policy Name is
    /// the caller's device group: naming that one is no change.
    fn refuse_server_only(&self, given: &[Attr]) -> Result<(), Fault> {
        for a in given {
            if a.name == "Operation Policy Name"
                && text(&a.value) == Some(self.caller.group.as_str())
            {
                continue;
            }
            if SERVER_ONLY.contains(&a.name.as_str()) || a.name.starts_with("y-") {
                return Err(Fault::new(
                    Reason::InvalidField,
                    format!(
                        "'{}' is set by the server, not by a client{}",
                        a.name,
                        if a.name == "Operation Policy Name" {
                            " (it names the client's device group)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        Ok(())
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
        // KMIP 1.x's Operation Policy Name: the policy that governs the
        // object is its device group's (1.x responses only).
        a.set(
            "Operation Policy Name",
            Value::TextString(self.caller.group.clone()),
        );
        if let Some(l) = self.caller.lease_time {
            a.set("Lease Time", Value::Interval(l));
        }
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
            for t in OBJECT_TYPES {
                p.push(Item::new(tag::OBJECT_TYPE, en(*t)));
            }
            if !self.is_v2() {
                p.push(Item::new(tag::OBJECT_TYPE, en(ot::TEMPLATE)));
            }
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
                format!("Create makes symmetric keys (object type {t:#x} asked); Create Key Pair makes key pairs, Register keeps the rest"),
            ));
        }
        let given = self.request_attrs(k)?;
        let mut o = self.new_object(ot::SYMMETRIC_KEY, given)?;
        let n = check_symmetric(&mut o.attrs, None)?;
        let material = self.tx.random(n).map_err(store_err)?;
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
        if t == ot::TEMPLATE && self.is_v2() {
            return Err(Fault::invalid(
                "templates are KMIP 1.x objects (reserved in 2.0)",
            ));
        }
        let given = self.request_attrs(k)?;
        let inc = objects::incoming(t, k)?;
        let mut o = self.new_object(t, given)?;
        for c in inc.carried {
            if o.attrs.get(&c.name).is_none() {
                o.attrs.add(c)?;
            }
        }
        for h in inc.hidden {
            o.attrs.add(h)?;
        }
        if t == ot::SYMMETRIC_KEY && !inc.wrapped {
            check_symmetric(&mut o.attrs, Some(inc.material.len()))?;
        } else if o.attrs.get("Cryptographic Usage Mask").is_none() {
            if let Some(u) = objects::default_usage(t) {
                o.attrs.set("Cryptographic Usage Mask", Value::Integer(u));
            }
        }
        if t == ot::TEMPLATE {
            // Refused now, not at every Create that would name it.
            self.refuse_server_only(&objects::template_attrs(&o.attrs)?)?;
        } else {
            let f = objects::kept_format(&o.attrs);
            material_attrs(&mut o.attrs, &inc.material, f, false);
        }
        self.tx.insert(&mut o, &inc.material).map_err(store_err)?;
        Ok(Done {
            uid: Some(o.uid.clone()),
            payload: vec![uid_item(&o.uid)],
        })
    }

    fn get(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let wrap = k.iter().find(|i| i.tag == tag::KEY_WRAPPING_SPECIFICATION);
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
        // An unextractable key never leaves the server; a sensitive one
        // leaves only wrapped under another key.
        if !flag(&o.attrs, "Extractable") && o.attrs.get("Extractable").is_some() {
            return Err(Fault::new(
                Reason::NotExtractable,
                format!("{uid} is not Extractable: its key material never leaves the server"),
            ));
        }
        if flag(&o.attrs, "Sensitive") && wrap.is_none() {
            return Err(Fault::new(
                Reason::Sensitive,
                format!("{uid} is Sensitive: its key material is sent only wrapped (Key Wrapping Specification)"),
            ));
        }
        if wrap.is_some() && objects::registered_wrapping(&o.attrs).is_some() {
            return Err(Fault::invalid(format!(
                "{uid} was registered wrapped; it is served as registered"
            )));
        }
        let material = self.tx.material(&o).map_err(store_err)?.ok_or_else(|| {
            Fault::new(
                Reason::KeyValueNotPresent,
                format!("{uid} has no key material"),
            )
        })?;
        let t = o.object_type() as i32;
        let (format, material) = objects::in_format(&o, &material, objects::wanted_format(k))?;
        let wrapped = match wrap {
            Some(spec) => Some(self.wrap_for_get(spec, &material)?),
            None => None,
        };
        let object = objects::outgoing(&o, format, &material, wrapped)?;
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

    /// Obtain Lease: how long the client may now use the object, while it
    /// is usable (Active, or Deactivated for processing what it protected).
    fn obtain_lease(&self, k: &[Item]) -> Result<Done, Fault> {
        let uid = self.uid(k)?;
        let o = self.load_live(&uid)?;
        let s = o.state();
        if s != state::ACTIVE && s != state::DEACTIVATED {
            return Err(Fault::state(format!(
                "{uid} is {}: no lease is given for it",
                state_name(s)
            )));
        }
        // Objects made before leases were given have none of their own:
        // they get the server's.
        let lease = o
            .attrs
            .int("Lease Time")
            .or(self.caller.lease_time.map(i64::from))
            .ok_or_else(|| {
                Fault::new(
                    Reason::IllegalOperation,
                    format!(
                        "{uid} has no Lease Time and this server gives no leases (lease_time_secs = 0)"
                    ),
                )
            })?;
        let changed = o.attrs.int("Last Change Date").unwrap_or(self.now);
        Ok(Done {
            uid: Some(uid.clone()),
            payload: vec![
                uid_item(&uid),
                Item::new(tag::LEASE_TIME, Value::Interval(lease as u32)),
                Item::new(tag::LAST_CHANGE_DATE, Value::DateTime(changed)),
            ],
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
        let o = self.load_live(&uid)?;
        let s = o.state();
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
        let n = check_symmetric(&mut new.attrs, None)?;
        new.attrs.add(attrs::std(
            "Link",
            link(link_type::REPLACED_OBJECT_LINK, &uid),
        ))?;
        let material = self.tx.random(n).map_err(store_err)?;
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

/// Checks (and completes) a symmetric key's attributes; returns its
/// material's length in bytes (checked against `material_len` if given).
fn check_symmetric(a: &mut Attrs, material_len: Option<usize>) -> Result<usize, Fault> {
    let algorithm = a
        .int("Cryptographic Algorithm")
        .ok_or_else(|| Fault::missing("a symmetric key needs a Cryptographic Algorithm"))?
        as i32;
    let bits = a
        .int("Cryptographic Length")
        .ok_or_else(|| Fault::missing("a symmetric key needs a Cryptographic Length"))?;
    let bytes = symmetric_bytes(algorithm, bits)?;
    if let Some(m) = material_len {
        if m != bytes {
            return Err(Fault::invalid(format!(
                "Cryptographic Length says {bits} bits but the key material has {} bytes",
                m
            )));
        }
    }
    if a.get("Cryptographic Usage Mask").is_none() {
        let hmac = [
            alg::HMAC_SHA1,
            alg::HMAC_SHA224,
            alg::HMAC_SHA256,
            alg::HMAC_SHA384,
            alg::HMAC_SHA512,
        ]
        .contains(&algorithm);
        a.set(
            "Cryptographic Usage Mask",
            Value::Integer(if hmac {
                usage::MAC_GENERATE | usage::MAC_VERIFY
            } else {
                usage::ENCRYPT | usage::DECRYPT
            }),
        );
    }
    Ok(bytes)
}

/// The material bytes of a symmetric key of `algorithm` and `bits`, if the algorithm has such keys.
fn symmetric_bytes(algorithm: i32, bits: i64) -> Result<usize, Fault> {
    let bad = |lengths: &str| {
        Err(Fault::invalid(format!(
            "a key of algorithm {algorithm:#x} is {lengths}, not {bits} bits"
        )))
    };
    match algorithm {
        alg::AES | alg::CAMELLIA | alg::ARIA => match bits {
            128 | 192 | 256 => Ok(bits as usize / 8),
            _ => bad("128, 192 or 256 bits"),
        },
        alg::TRIPLE_DES => match bits {
            112 | 128 => Ok(16),
            168 | 192 => Ok(24),
            _ => bad("112 or 168 bits (16 or 24 bytes with parity)"),
        },
        alg::BLOWFISH => match bits {
            32..=448 if bits % 8 == 0 => Ok(bits as usize / 8),
            _ => bad("32 to 448 bits, a multiple of 8"),
        },
        alg::IDEA | alg::SEED | alg::SM4 => match bits {
            128 => Ok(16),
            _ => bad("128 bits"),
        },
        alg::CHACHA20 | alg::CHACHA20_POLY1305 => match bits {
            256 => Ok(32),
            _ => bad("256 bits"),
        },
        alg::HMAC_SHA1
        | alg::HMAC_SHA224
        | alg::HMAC_SHA256
        | alg::HMAC_SHA384
        | alg::HMAC_SHA512
        | alg::HMAC_SHA3_224
        | alg::HMAC_SHA3_256
        | alg::HMAC_SHA3_384
        | alg::HMAC_SHA3_512 => match bits {
            64..=4096 if bits % 8 == 0 => Ok(bits as usize / 8),
            _ => bad("64 to 4096 bits, a multiple of 8"),
        },
        _ => Err(Fault::invalid(format!(
            "cryptographic algorithm {algorithm:#x} is no symmetric key algorithm kept here (AES, 3DES, Blowfish, IDEA, Camellia, ARIA, SEED, SM4, ChaCha20 and HMAC keys are)"
        ))),
    }
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
        // A bit mask matches an object whose mask has every bit the filter has.
        if f.name == "Cryptographic Usage Mask" {
            let want = int(&f.value).unwrap_or(0);
            if !a.all(&f.name).filter_map(int).any(|m| m & want == want) {
                return false;
            }
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
            lease_time: Some(86_400),
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
        lease_time: Some(86_400),
    };
    if s.exec("BEGIN").is_err() {
        return;
    }
    let b = run(
        &s.tx(),
        &req,
        &caller,
        1_700_000_000,
        Pregenerated::default(),
    );
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
