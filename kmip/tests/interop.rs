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

#[test]
fn our_parser_reads_their_requests_and_their_parser_reads_our_responses() {
    use cinta_kmip::message::{Request, Response, ResponseItem, ResultReason, Version, SUPPORTED};
    use kmip_protocol::types::response::{
        ResponseMessage, ResponsePayload, ResultReason as TheirReason, ResultStatus as TheirStatus,
    };

    // Their Discover Versions request, our envelope.
    let bytes =
        kmip_protocol::request::to_vec(RequestPayload::DiscoverVersions(vec![]), None).unwrap();
    let req = Request::parse(&Item::decode(&bytes).unwrap()).unwrap();
    assert_eq!((req.items.len(), req.items[0].operation), (1, 0x1E));

    // Our answer, listing the versions we speak, read by their parser.
    let payload: Vec<Item> = SUPPORTED.iter().map(|v| v.to_item()).collect();
    let resp = Response {
        version: req.version,
        time_stamp: 1_795_392_000,
        items: vec![ResponseItem::success(&req.items[0], payload)],
    };
    let theirs: ResponseMessage =
        kmip_protocol::response::from_slice(&resp.to_item().to_bytes()).unwrap();
    assert_eq!(
        (
            theirs.header.protocol_version.major,
            theirs.header.protocol_version.minor
        ),
        (req.version.major, req.version.minor)
    );
    assert_eq!(
        (theirs.header.timestamp, theirs.header.batch_count),
        (1_795_392_000, 1)
    );
    let item = &theirs.batch_items[0];
    assert_eq!(item.result_status, TheirStatus::Success);
    match &item.payload {
        Some(ResponsePayload::DiscoverVersions(p)) => {
            let got: Vec<(i32, i32)> = p
                .supported_versions
                .as_ref()
                .unwrap()
                .iter()
                .map(|v| (v.major, v.minor))
                .collect();
            assert_eq!(got, vec![(2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]);
        }
        other => panic!("{other:?}"),
    }

    // A failure, read by their parser with its reason and message.
    let fail = Response {
        version: Version::new(1, 2),
        time_stamp: 0,
        items: vec![ResponseItem::failure(
            Some(&req.items[0]),
            ResultReason::PermissionDenied,
            "client not accepted yet",
        )],
    };
    let theirs: ResponseMessage =
        kmip_protocol::response::from_slice(&fail.to_item().to_bytes()).unwrap();
    let item = &theirs.batch_items[0];
    assert_eq!(item.result_status, TheirStatus::OperationFailed);
    assert_eq!(item.result_reason, Some(TheirReason::PermissionDenied));
    assert_eq!(
        item.result_message.as_deref(),
        Some("client not accepted yet")
    );
}
