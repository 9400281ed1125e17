//! Our TTLV codec against an independent one: what kmip-protocol encodes, we decode and re-encode to the same bytes.

use cinta_kmip::ttlv::{Item, Value};
use kmip_protocol::types::request::RequestPayload;

#[test]
fn a_discover_versions_request_from_kmip_protocol_round_trips() {
    let theirs =
        kmip_protocol::request::to_vec(RequestPayload::DiscoverVersions(vec![]), None).unwrap();
    let msg = Item::decode(&theirs).unwrap();
    assert_eq!(msg.tag, 0x42_0078, "Request Message");
    let header = msg.child(0x42_0077).expect("Request Header");
    let version = header.child(0x42_0069).expect("Protocol Version");
    assert!(
        matches!(
            version.child(0x42_006A).map(|i| &i.value),
            Some(Value::Integer(1))
        ),
        "{version:?}"
    );
    assert!(
        matches!(
            header.child(0x42_000D).map(|i| &i.value),
            Some(Value::Integer(1))
        ),
        "Batch Count"
    );
    let item = msg.child(0x42_000F).expect("Batch Item");
    assert!(
        matches!(
            item.child(0x42_005C).map(|i| &i.value),
            Some(Value::Enumeration(0x1E))
        ),
        "Operation Discover Versions: {item:?}"
    );
    assert_eq!(msg.to_bytes(), theirs, "re-encoded byte for byte");
}

#[test]
fn a_create_request_with_attributes_from_kmip_protocol_round_trips() {
    use kmip_protocol::types::common::{
        CryptographicAlgorithm, CryptographicUsageMask, ObjectType,
    };
    use kmip_protocol::types::request::{Attribute, TemplateAttribute};
    let payload = RequestPayload::Create(
        ObjectType::SymmetricKey,
        TemplateAttribute::named(
            "cinta-saveset-0a1b2c".into(),
            vec![
                Attribute::CryptographicAlgorithm(CryptographicAlgorithm::AES),
                Attribute::CryptographicLength(256),
                Attribute::CryptographicUsageMask(CryptographicUsageMask::Encrypt),
            ],
        ),
    );
    let theirs = kmip_protocol::request::to_vec(payload, None).unwrap();
    let msg = Item::decode(&theirs).unwrap();
    let item = msg.child(0x42_000F).expect("Batch Item");
    assert!(
        matches!(
            item.child(0x42_005C).map(|i| &i.value),
            Some(Value::Enumeration(0x01))
        ),
        "Operation Create"
    );
    let payload = item.child(0x42_0079).expect("Request Payload");
    assert!(
        matches!(
            payload.child(0x42_0057).map(|i| &i.value),
            Some(Value::Enumeration(0x02))
        ),
        "Object Type Symmetric Key"
    );
    // Attribute names are text strings: find "Cryptographic Length" and its integer value.
    let template = payload.child(0x42_0091).expect("Template-Attribute");
    let length = template
        .children()
        .iter()
        .filter(|a| a.tag == 0x42_0008)
        .find(|a| matches!(a.child(0x42_000A).map(|n| &n.value), Some(Value::TextString(s)) if s == "Cryptographic Length"))
        .expect("a Cryptographic Length attribute");
    assert!(
        matches!(
            length.child(0x42_000B).map(|v| &v.value),
            Some(Value::Integer(256))
        ),
        "{length:?}"
    );
    assert_eq!(msg.to_bytes(), theirs, "re-encoded byte for byte");
}
