//! Create Key Pair: an RSA or EC key pair as two linked objects, and the key generation done before the keystore is entered.
//!
//! RSA key generation takes up to seconds; the connection's task makes the
//! pair (`pregenerate`, off the keystore thread, a few at a time) so the
//! one keystore thread never waits on it and no client is held up by
//! another's key generation.

use std::collections::VecDeque;

use cinta_kmip::message::Request;
use cinta_kmip::spec::{link_type, object_type as ot, operation as op, tag};
use cinta_kmip::ttlv::{Item, Value};

use super::objects::FORMAT_ATTR;
use super::{en, kids, link, material_attrs, Cx, Done};
use crate::attrs::{self, Attr};
use crate::crypto::asymmetric::{self, NewPair};
use crate::fault::Fault;

/// Key pairs made ahead for a message's Create Key Pair items, in order.
#[derive(Default)]
pub struct Pregenerated(pub VecDeque<Result<NewPair, Fault>>);

/// The three attribute sets of a Create Key Pair request: common, private, public.
fn templates(k: &[Item]) -> Result<[Vec<Attr>; 3], Fault> {
    let mut out: [Vec<Attr>; 3] = Default::default();
    for i in k {
        let slot = match i.tag {
            t if t == tag::COMMON_TEMPLATE_ATTRIBUTE || t == tag::COMMON_ATTRIBUTES => 0,
            t if t == tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE || t == tag::PRIVATE_KEY_ATTRIBUTES => 1,
            t if t == tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE || t == tag::PUBLIC_KEY_ATTRIBUTES => 2,
            _ => continue,
        };
        for a in i.children() {
            let attr = if a.tag == tag::ATTRIBUTE && a.child(tag::ATTRIBUTE_NAME).is_some() {
                attrs::from_v1(a)?.0
            } else if a.tag == tag::NAME {
                attrs::make("Name", a.clone())?
            } else {
                attrs::from_v2(a)?
            };
            out[slot].push(attr);
        }
    }
    Ok(out)
}

fn first_int(sets: &[&[Attr]], name: &str) -> Option<i64> {
    sets.iter()
        .flat_map(|s| s.iter())
        .find(|a| a.name == name)
        .and_then(|a| super::int(&a.value))
}

/// What to make: algorithm, length, curve (private, then public, then common attributes).
fn spec_of(t: &[Vec<Attr>; 3]) -> Result<(i32, Option<i64>, Option<i64>), Fault> {
    let order: [&[Attr]; 3] = [&t[1], &t[2], &t[0]];
    let a = first_int(&order, "Cryptographic Algorithm")
        .ok_or_else(|| Fault::missing("Create Key Pair needs a Cryptographic Algorithm"))?;
    let curve = order
        .iter()
        .flat_map(|s| s.iter())
        .find(|x| x.name == "Cryptographic Domain Parameters")
        .and_then(|x| x.value.child(tag::RECOMMENDED_CURVE))
        .and_then(super::int);
    Ok((a as i32, first_int(&order, "Cryptographic Length"), curve))
}

/// Makes the key pairs a request's Create Key Pair items ask for (a fault for one that asks for what cannot be made).
pub fn pregenerate(req: &Request) -> Pregenerated {
    let mut out = VecDeque::new();
    for it in &req.items {
        if it.operation != op::CREATE_KEY_PAIR as u32 {
            continue;
        }
        let k = kids(it);
        out.push_back(
            templates(k)
                .and_then(|t| spec_of(&t))
                .and_then(|(a, bits, curve)| asymmetric::generate(a, bits, curve)),
        );
    }
    Pregenerated(out)
}

impl Cx<'_, '_> {
    pub(super) fn create_key_pair(&mut self, k: &[Item]) -> Result<Done, Fault> {
        let t = templates(k)?;
        let (a, bits, curve) = spec_of(&t)?;
        let pair = match self.pre.0.pop_front() {
            Some(p) => p?,
            None => asymmetric::generate(a, bits, curve)?,
        };
        for set in &t {
            self.refuse_server_only(set)?;
        }
        let half = |own: &Vec<Attr>| -> Vec<Attr> {
            let mut v: Vec<Attr> = own.clone();
            for c in &t[0] {
                let single = !attrs::is_custom(&c.name)
                    && cinta_kmip::spec::attribute_by_name(&c.name).is_some_and(|s| !s.multi);
                if !(single && v.iter().any(|x| x.name == c.name)) {
                    v.push(c.clone());
                }
            }
            v.retain(|x| x.name != "Cryptographic Length" && x.name != "Cryptographic Algorithm");
            v
        };
        let mut private = self.new_object(ot::PRIVATE_KEY, half(&t[1]))?;
        let mut public = self.new_object(ot::PUBLIC_KEY, half(&t[2]))?;
        for (o, format, material, ty) in [
            (
                &mut private,
                pair.private_format,
                &pair.private[..],
                ot::PRIVATE_KEY,
            ),
            (
                &mut public,
                pair.public_format,
                &pair.public[..],
                ot::PUBLIC_KEY,
            ),
        ] {
            o.attrs
                .set("Cryptographic Algorithm", en(pair.info.algorithm));
            o.attrs.set(
                "Cryptographic Length",
                Value::Integer(pair.info.bits as i32),
            );
            if o.attrs.get("Cryptographic Usage Mask").is_none() {
                if let Some(u) = super::objects::default_usage(ty) {
                    o.attrs.set("Cryptographic Usage Mask", Value::Integer(u));
                }
            }
            o.attrs
                .add(attrs::make(FORMAT_ATTR, Item::new(0, en(format)))?)?;
            material_attrs(&mut o.attrs, material, format, true);
        }
        private.attrs.add(attrs::std(
            "Link",
            link(link_type::PUBLIC_KEY_LINK, &public.uid),
        ))?;
        public.attrs.add(attrs::std(
            "Link",
            link(link_type::PRIVATE_KEY_LINK, &private.uid),
        ))?;
        self.tx
            .insert(&mut private, &pair.private)
            .map_err(super::store_err)?;
        self.tx
            .insert(&mut public, &pair.public)
            .map_err(super::store_err)?;
        Ok(Done {
            uid: Some(private.uid.clone()),
            payload: vec![
                Item::new(
                    tag::PRIVATE_KEY_UNIQUE_IDENTIFIER,
                    Value::TextString(private.uid.clone()),
                ),
                Item::new(
                    tag::PUBLIC_KEY_UNIQUE_IDENTIFIER,
                    Value::TextString(public.uid.clone()),
                ),
            ],
        })
    }
}
