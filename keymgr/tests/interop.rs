//! Independent KMIP clients against the running server: PyKMIP 0.11's ProxyKmipClient at 1.0, 1.1, 1.2, 1.4 and 2.0, and the kmip-protocol crate's requests and response parser over a TLS stream of ours.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use cinta_kmip::message::Version;
use cinta_tests::keymgr::{tls_client_config, Kms};
use cinta_tests::python;
use kmip_protocol::types::common::{
    AttributeName, CryptographicAlgorithm, CryptographicUsageMask, ObjectType,
    RevocationReasonCode, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, QueryFunction, RequestPayload, RevocationReason, TemplateAttribute,
};
use kmip_protocol::types::response::{
    ManagedObject, ResponseMessage, ResponsePayload, ResultStatus,
};
use rustls::pki_types::ServerName;

#[test]
fn pykmip_proxy_client_runs_the_lifecycle_at_every_version() {
    let py = python();
    let kms = Kms::serving();
    kms.accepted("pykmip", "default", Version::new(1, 2));
    let port = kms.addr.rsplit_once(':').unwrap().1.to_string();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/pykmip_lifecycle.py");
    for v in ["1.0", "1.1", "1.2", "1.4", "2.0"] {
        let out = Command::new(&py)
            .arg(&script)
            .args(["--port", &port, "--version", v])
            .arg("--cert")
            .arg(kms.pki.join("pykmip.pem"))
            .arg("--key")
            .arg(kms.pki.join("pykmip.key"))
            .arg("--ca")
            .arg(kms.pki.join("ca.pem"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains(&format!("PASS {v}")),
            "PyKMIP at {v}:\n{text}"
        );
        for step in [
            "create",
            "get",
            "locate",
            "get_attributes",
            "get_attribute_list",
            "activate",
            "revoke",
            "destroy",
            "register",
        ] {
            assert!(
                text.contains(&format!("ok   {v} {step}")),
                "{step} at {v}:\n{text}"
            );
        }
    }
    // The audit trail saw PyKMIP's operations under its certificate.
    let audit = kms.admin_ok(&["--json", "audit", "--tail", "0"]);
    let recs: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    for op in [
        "Create",
        "Get",
        "Locate",
        "Get Attributes",
        "Activate",
        "Revoke",
        "Destroy",
        "Register",
    ] {
        assert!(
            recs.iter()
                .any(|r| r["operation"] == op && r["result"] == "success"),
            "{op} audited"
        );
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(kms: &Kms, name: &str) -> Tls {
    let conn = rustls::ClientConnection::new(
        tls_client_config(kms, name, false),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, TcpStream::connect(&kms.addr).unwrap())
}

/// Sends kmip-protocol's encoding of `payload`; returns its parse of our answer.
fn call(s: &mut Tls, payload: RequestPayload) -> ResponsePayload {
    let bytes = kmip_protocol::request::to_vec(payload, None).unwrap();
    s.write_all(&bytes).unwrap();
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let n = cinta_kmip::ttlv::frame_len(&h).unwrap();
    let mut m = vec![0u8; n];
    m[..8].copy_from_slice(&h);
    s.read_exact(&mut m[8..]).unwrap();
    let msg: ResponseMessage = kmip_protocol::response::from_slice(&m)
        .unwrap_or_else(|e| panic!("kmip-protocol cannot parse our answer: {e:?}"));
    let item = msg.batch_items.into_iter().next().unwrap();
    assert_eq!(
        item.result_status,
        ResultStatus::Success,
        "{:?}",
        item.result_message
    );
    item.payload.expect("a payload")
}

#[test]
fn kmip_protocol_crate_runs_the_lifecycle_over_our_tls() {
    let kms = Kms::serving();
    kms.accepted("kp", "default", Version::new(1, 0));
    let mut s = connect(&kms, "kp");
    let uid = match call(
        &mut s,
        RequestPayload::Create(
            ObjectType::SymmetricKey,
            TemplateAttribute::named(
                "kp-key".into(),
                vec![
                    Attribute::CryptographicAlgorithm(CryptographicAlgorithm::AES),
                    Attribute::CryptographicLength(256),
                    Attribute::CryptographicUsageMask(CryptographicUsageMask::Encrypt),
                ],
            ),
        ),
    ) {
        ResponsePayload::Create(c) => c.unique_identifier,
        p => panic!("{p:?}"),
    };
    let id = || Some(UniqueIdentifier(uid.0.clone()));
    assert!(matches!(
        call(&mut s, RequestPayload::Activate(id())),
        ResponsePayload::Activate(_)
    ));
    match call(&mut s, RequestPayload::Get(id(), None, None, None)) {
        ResponsePayload::Get(g) => match g.cryptographic_object {
            ManagedObject::SymmetricKey(k) => {
                let text = format!("{:?}", k.key_block.key_value.key_material);
                assert!(text.contains("Bytes"), "{text}");
                assert_eq!(k.key_block.cryptographic_length, Some(256));
            }
            o => panic!("{o:?}"),
        },
        p => panic!("{p:?}"),
    }
    match call(
        &mut s,
        RequestPayload::Locate(vec![Attribute::Name("kp-key".into())]),
    ) {
        ResponsePayload::Locate(l) => {
            assert_eq!(l.unique_identifiers, vec![UniqueIdentifier(uid.0.clone())])
        }
        p => panic!("{p:?}"),
    }
    match call(
        &mut s,
        RequestPayload::GetAttributes(
            id(),
            Some(vec![
                AttributeName("Name".into()),
                AttributeName("Cryptographic Algorithm".into()),
            ]),
        ),
    ) {
        ResponsePayload::GetAttributes(a) => {
            let text = format!("{:?}", a.attributes);
            assert!(text.contains("kp-key") && text.contains("AES"), "{text}");
        }
        p => panic!("{p:?}"),
    }
    assert!(matches!(
        call(
            &mut s,
            RequestPayload::Revoke(
                id(),
                RevocationReason(RevocationReasonCode::CessationOfOperation, None),
                None
            )
        ),
        ResponsePayload::Revoke(_)
    ));
    assert!(matches!(
        call(&mut s, RequestPayload::Destroy(id())),
        ResponsePayload::Destroy(_)
    ));
    match call(
        &mut s,
        RequestPayload::Query(vec![QueryFunction::QueryOperations]),
    ) {
        ResponsePayload::Query(q) => assert!(format!("{q:?}").contains("Locate")),
        p => panic!("{p:?}"),
    }
}
