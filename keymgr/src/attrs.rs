//! A managed object's attributes, held one way (KMIP 1.x names, values tagged as in 2.0) and written the way each protocol version spells them.
//!
//! KMIP 1.x carries an attribute as `Attribute {Attribute Name, Attribute
//! Index, Attribute Value}`; KMIP 2.0 as the value item itself under the
//! attribute's own tag, and custom attributes as `Vendor Attribute`. A 1.x
//! custom attribute `x-name` is the 2.0 vendor attribute ("x", "name").

use cinta_kmip::message::Version;
use cinta_kmip::spec::{self, tag, AttrSpec, AttrType};
use cinta_kmip::ttlv::{Item, Value};

use crate::fault::{Fault, Reason};

/// KMIP 2.0's Vendor Attribute reuses 1.x's Attribute tag.
pub const VENDOR_ATTRIBUTE: u32 = tag::ATTRIBUTE;

/// Custom attributes allowed on one object (the tape library profile and
/// SKLM users need dozens; the limit keeps one object's row small).
pub const MAX_CUSTOM: usize = 64;
/// All attribute instances on one object.
pub const MAX_ATTRIBUTES: usize = 256;
/// The longest text or byte string value accepted in an attribute.
pub const MAX_VALUE_LEN: usize = 4096;

/// One attribute instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// The 1.x name ("Cryptographic Length", "x-saveset").
    pub name: String,
    /// The value; tagged with the attribute's tag, or Attribute Value for custom ones.
    pub value: Item,
}

/// Is `name` a client or server custom attribute?
pub fn is_custom(name: &str) -> bool {
    (name.starts_with("x-") || name.starts_with("y-")) && name.len() > 2
}

fn type_ok(ty: AttrType, v: &Value) -> bool {
    matches!(
        (ty, v),
        (AttrType::Text, Value::TextString(_))
            | (AttrType::Integer, Value::Integer(_))
            | (AttrType::LongInteger, Value::LongInteger(_))
            | (AttrType::BigInteger, Value::BigInteger(_))
            | (AttrType::Enumeration, Value::Enumeration(_))
            | (AttrType::Boolean, Value::Boolean(_))
            | (AttrType::ByteString, Value::ByteString(_))
            | (AttrType::DateTime, Value::DateTime(_))
            | (AttrType::Interval, Value::Interval(_))
            | (AttrType::Structure, Value::Structure(_))
    )
}

fn check_size(name: &str, v: &Item) -> Result<(), Fault> {
    let too_long = match &v.value {
        Value::TextString(s) => s.len() > MAX_VALUE_LEN,
        Value::ByteString(b) | Value::BigInteger(b) => b.len() > MAX_VALUE_LEN,
        Value::Structure(_) => v.to_bytes().len() > MAX_VALUE_LEN,
        _ => false,
    };
    if too_long {
        return Err(Fault::invalid(format!(
            "attribute '{name}' is longer than {MAX_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

/// Builds an attribute from a name and a value item (any tag), checking the type.
pub fn make(name: &str, mut value: Item) -> Result<Attr, Fault> {
    if is_custom(name) {
        match value.value {
            Value::TextString(_)
            | Value::Integer(_)
            | Value::LongInteger(_)
            | Value::DateTime(_)
            | Value::Enumeration(_)
            | Value::Boolean(_)
            | Value::ByteString(_)
            | Value::Interval(_) => {}
            _ => {
                return Err(Fault::invalid(format!(
                    "custom attribute '{name}' must be a single value, not a structure"
                )))
            }
        }
        value.tag = tag::ATTRIBUTE_VALUE;
        check_size(name, &value)?;
        return Ok(Attr {
            name: name.to_string(),
            value,
        });
    }
    let spec = spec::attribute_by_name(name).ok_or_else(|| {
        Fault::new(
            Reason::InvalidField,
            format!("unknown attribute '{name}' (custom attributes start with x-)"),
        )
    })?;
    if !type_ok(spec.ty, &value.value) {
        return Err(Fault::invalid(format!(
            "attribute '{name}' must be of type {:?}",
            spec.ty
        )));
    }
    value.tag = spec.tag;
    check_size(name, &value)?;
    Ok(Attr {
        name: spec.name.to_string(),
        value,
    })
}

/// A standard attribute from its value (tagged correctly by the caller).
pub fn std(spec_name: &str, value: Value) -> Attr {
    let s = spec::attribute_by_name(spec_name).expect("known attribute");
    Attr {
        name: s.name.to_string(),
        value: Item::new(s.tag, value),
    }
}

/// Reads a KMIP 1.x `Attribute` structure: the attribute and its index, if given.
pub fn from_v1(item: &Item) -> Result<(Attr, Option<i32>), Fault> {
    let name = text(item, tag::ATTRIBUTE_NAME)
        .ok_or_else(|| Fault::missing("an Attribute has no Attribute Name"))?;
    let index = match item.child(tag::ATTRIBUTE_INDEX).map(|i| &i.value) {
        None => None,
        Some(Value::Integer(i)) if *i >= 0 => Some(*i),
        Some(_) => {
            return Err(Fault::invalid(
                "Attribute Index must be a non-negative Integer",
            ))
        }
    };
    let value = item
        .child(tag::ATTRIBUTE_VALUE)
        .cloned()
        .ok_or_else(|| Fault::missing(format!("attribute '{name}' has no Attribute Value")))?;
    Ok((make(name, value)?, index))
}

/// The name an attribute has in 1.x for a 2.0 reference (a tag, or a vendor attribute).
pub fn name_of_v2(item: &Item) -> Result<String, Fault> {
    if item.tag == VENDOR_ATTRIBUTE || item.tag == tag::ATTRIBUTE_REFERENCE {
        let vendor = text(item, tag::VENDOR_IDENTIFICATION).unwrap_or("");
        let name = text(item, tag::ATTRIBUTE_NAME)
            .ok_or_else(|| Fault::missing("a Vendor Attribute has no Attribute Name"))?;
        if vendor != "x" && vendor != "y" {
            return Err(Fault::new(
                Reason::InvalidField,
                format!("vendor attributes of vendor '{vendor}' are not kept (use x or y)"),
            ));
        }
        return Ok(format!("{vendor}-{name}"));
    }
    spec::attribute_by_tag(item.tag)
        .map(|s| s.name.to_string())
        .ok_or_else(|| {
            Fault::new(
                Reason::InvalidField,
                format!("tag {:#08x} is not an attribute", item.tag),
            )
        })
}

/// Reads one KMIP 2.0 attribute item (a child of `Attributes`).
pub fn from_v2(item: &Item) -> Result<Attr, Fault> {
    let name = name_of_v2(item)?;
    if item.tag == VENDOR_ATTRIBUTE {
        let value = item
            .child(tag::ATTRIBUTE_VALUE)
            .cloned()
            .ok_or_else(|| Fault::missing(format!("vendor attribute '{name}' has no value")))?;
        return make(&name, value);
    }
    make(&name, item.clone())
}

/// A 2.0 Attribute Reference (Enumeration of the tag, or Vendor Attribute Reference) to a name.
pub fn name_of_reference(item: &Item) -> Result<String, Fault> {
    match &item.value {
        Value::Enumeration(t) => spec::attribute_by_tag(*t)
            .map(|s| s.name.to_string())
            .ok_or_else(|| {
                Fault::new(
                    Reason::InvalidField,
                    format!("{t:#08x} is not an attribute"),
                )
            }),
        Value::Structure(_) => name_of_v2(&Item::new(tag::ATTRIBUTE_REFERENCE, item.value.clone())),
        _ => Err(Fault::invalid(
            "Attribute Reference must be an Enumeration or a structure",
        )),
    }
}

/// Writes an attribute as a 1.x `Attribute` structure: with its Attribute
/// Index when the attribute may have several instances (clients such as
/// PyKMIP read the index of a Name back), without for single ones.
pub fn to_v1(a: &Attr, index: i32) -> Item {
    let multi = is_custom(&a.name) || spec::attribute_by_name(&a.name).is_some_and(|s| s.multi);
    v1_item(a, (index > 0 || multi).then_some(index))
}

fn v1_item(a: &Attr, index: Option<i32>) -> Item {
    let mut v = a.value.clone();
    v.tag = tag::ATTRIBUTE_VALUE;
    let mut kids = vec![Item::new(
        tag::ATTRIBUTE_NAME,
        Value::TextString(a.name.clone()),
    )];
    if let Some(index) = index {
        kids.push(Item::new(tag::ATTRIBUTE_INDEX, Value::Integer(index)));
    }
    kids.push(v);
    Item::new(tag::ATTRIBUTE, Value::Structure(kids))
}

/// Writes an attribute as a 2.0 item.
pub fn to_v2(a: &Attr) -> Item {
    if is_custom(&a.name) {
        let (vendor, name) = a.name.split_at(1);
        let mut v = a.value.clone();
        v.tag = tag::ATTRIBUTE_VALUE;
        return Item::new(
            VENDOR_ATTRIBUTE,
            Value::Structure(vec![
                Item::new(tag::VENDOR_IDENTIFICATION, Value::TextString(vendor.into())),
                Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name[1..].into())),
                v,
            ]),
        );
    }
    a.value.clone()
}

/// Whether a response in `v` may carry attribute `name`.
pub fn in_version(name: &str, v: Version) -> bool {
    if is_custom(name) {
        return true;
    }
    spec::attribute_by_name(name).is_some_and(|s: &AttrSpec| s.in_version(v.major, v.minor))
}

/// Is a 2.0 response?
pub fn is_v2(v: Version) -> bool {
    v.major >= 2
}

fn text(item: &Item, t: u32) -> Option<&str> {
    match &item.child(t)?.value {
        Value::TextString(s) => Some(s),
        _ => None,
    }
}

/// An object's attribute set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub Vec<Attr>);

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&Item> {
        self.0.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Item> + 'a {
        self.0
            .iter()
            .filter(move |a| a.name == name)
            .map(|a| &a.value)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        int_value(&self.get(name)?.value)
    }

    /// Replaces every instance of a standard attribute with one value.
    pub fn set(&mut self, name: &str, value: Value) {
        let a = std(name, value);
        match self.0.iter().position(|x| x.name == a.name) {
            Some(i) => {
                self.0[i] = a;
                let n = self.0[i].name.clone();
                let mut first = true;
                self.0.retain(|x| {
                    if x.name != n {
                        return true;
                    }
                    let keep = first;
                    first = false;
                    keep
                });
            }
            None => self.0.push(a),
        }
    }

    pub fn remove_all(&mut self, name: &str) {
        self.0.retain(|a| a.name != name);
    }

    /// Adds an instance; returns its index among instances of that name.
    pub fn add(&mut self, a: Attr) -> Result<i32, Fault> {
        let count = self.0.iter().filter(|x| x.name == a.name).count();
        let single =
            !is_custom(&a.name) && spec::attribute_by_name(&a.name).is_some_and(|s| !s.multi);
        if single && count > 0 {
            return Err(Fault::new(
                Reason::IllegalOperation,
                format!(
                    "'{}' has one instance per object and is already set",
                    a.name
                ),
            ));
        }
        if self.0.len() >= MAX_ATTRIBUTES {
            return Err(Fault::new(
                Reason::IllegalOperation,
                format!("an object holds at most {MAX_ATTRIBUTES} attributes"),
            ));
        }
        if is_custom(&a.name) && self.0.iter().filter(|x| is_custom(&x.name)).count() >= MAX_CUSTOM
        {
            return Err(Fault::new(
                Reason::IllegalOperation,
                format!("an object holds at most {MAX_CUSTOM} custom attributes"),
            ));
        }
        self.0.push(a);
        Ok(count as i32)
    }

    /// The position in `self.0` of instance `index` of `name`.
    pub fn position(&self, name: &str, index: i32) -> Option<usize> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, a)| a.name == name)
            .nth(index.max(0) as usize)
            .map(|(i, _)| i)
    }

    /// Every instance with its index among its name.
    pub fn indexed(&self) -> Vec<(&Attr, i32)> {
        let mut out = Vec::with_capacity(self.0.len());
        for (i, a) in self.0.iter().enumerate() {
            let idx = self.0[..i].iter().filter(|x| x.name == a.name).count() as i32;
            out.push((a, idx));
        }
        out
    }

    /// Stored form: a structure of 1.x `Attribute`s (our own TTLV codec).
    pub fn to_blob(&self) -> Vec<u8> {
        let kids = self.0.iter().map(|a| v1_item(a, None)).collect();
        Item::new(tag::ATTRIBUTES, Value::Structure(kids)).to_bytes()
    }

    pub fn from_blob(b: &[u8]) -> Option<Attrs> {
        let item = Item::decode(b).ok()?;
        let mut out = Vec::new();
        for k in item.children() {
            let name = text(k, tag::ATTRIBUTE_NAME)?.to_string();
            let mut value = k.child(tag::ATTRIBUTE_VALUE)?.clone();
            if !is_custom(&name) {
                value.tag = spec::attribute_by_name(&name)?.tag;
            }
            out.push(Attr { name, value });
        }
        Some(Attrs(out))
    }
}

/// A value of any integer kind (integer, long integer, date-time,
/// enumeration, interval) as an `i64`.
pub fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i as i64),
        Value::LongInteger(i) | Value::DateTime(i) => Some(*i),
        Value::Enumeration(e) | Value::Interval(e) => Some(*e as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_item(s: &str) -> Item {
        Item::new(
            tag::ATTRIBUTE_VALUE,
            Value::Structure(vec![
                Item::new(tag::NAME_VALUE, Value::TextString(s.into())),
                Item::new(tag::NAME_TYPE, Value::Enumeration(1)),
            ]),
        )
    }

    #[test]
    fn v1_and_v2_spellings_meet_in_one_form() {
        let a = make("Name", name_item("k1")).unwrap();
        assert_eq!(a.value.tag, tag::NAME);
        let v1 = to_v1(&a, 0);
        assert_eq!(from_v1(&v1).unwrap().0, a);
        assert_eq!(from_v2(&to_v2(&a)).unwrap(), a);
        let c = make("x-saveset", Item::new(0, Value::TextString("S1".into()))).unwrap();
        let v2 = to_v2(&c);
        assert_eq!(v2.tag, VENDOR_ATTRIBUTE);
        assert_eq!(from_v2(&v2).unwrap(), c);
        assert_eq!(from_v1(&to_v1(&c, 3)).unwrap(), (c, Some(3)));
    }

    #[test]
    fn wrong_types_unknown_names_and_limits_are_faults() {
        let e = make(
            "Cryptographic Length",
            Item::new(0, Value::TextString("256".into())),
        );
        assert!(e.unwrap_err().message.contains("Integer"));
        assert!(make("Colour", Item::new(0, Value::Integer(1))).is_err());
        let mut s = Attrs::default();
        s.add(std("Cryptographic Length", Value::Integer(256)))
            .unwrap();
        assert!(s
            .add(std("Cryptographic Length", Value::Integer(128)))
            .is_err());
        for i in 0..MAX_CUSTOM {
            s.add(make(&format!("x-{i}"), Item::new(0, Value::Integer(i as i32))).unwrap())
                .unwrap();
        }
        assert!(s
            .add(make("x-one-more", Item::new(0, Value::Integer(0))).unwrap())
            .is_err());
        assert_eq!(Attrs::from_blob(&s.to_blob()), Some(s));
    }
}
