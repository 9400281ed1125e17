//! The controller's catalog on PostgreSQL: the same conformance checks as SQLite's, a server restart under it, and the controller serving on it (a job survives a controller restart).

use cinta_controller::catalog::{self, Catalog};
use cinta_tests::postgres::Server;

#[test]
fn the_postgresql_catalog_conforms_and_survives_a_server_restart() {
    let mut pg = Server::start();
    let mut c = catalog::postgres::open(&pg.url(), None).unwrap();
    catalog::conformance(&mut c);
    // The audit log: rows changed, removed and inserted with plain SQL are caught.
    catalog::audit_tampering_is_caught(&mut c);

    // The server restarts under an open catalog: the first statement says a
    // retry can help, the next one reconnects, and nothing was lost.
    pg.stop();
    pg.run();
    let mut answers = Vec::new();
    for _ in 0..3 {
        match c.meta("k") {
            Ok(v) => {
                answers.push(v);
                break;
            }
            Err(cinta_controller::Error::Catalog { retry, message, .. }) => {
                assert!(retry, "a lost connection is worth a retry: {message}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        answers,
        [Some("2".to_string())],
        "the value set before the restart"
    );
    c.set_meta("k", "3").unwrap();
    drop(c);
    // A second catalog on the same database sees everything (one schema, created once).
    let again = catalog::postgres::open(&pg.url(), None).unwrap();
    assert_eq!(again.meta("k").unwrap().as_deref(), Some("3"));
    assert_eq!(again.save_sets().unwrap().len(), 4);
    // Over the server's Unix socket, as on a host that runs both.
    let local = format!(
        "postgresql://cinta@/postgres?host={}&port={}",
        pg.dir.path().display(),
        pg.port
    );
    let on_socket = catalog::postgres::open(&local, None).unwrap();
    assert_eq!(on_socket.meta("k").unwrap().as_deref(), Some("3"));
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = catalog::postgres::open(
        &format!("postgresql://cinta:s3cret@127.0.0.1:{port}/cinta"),
        None,
    )
    .err()
    .expect("nothing listens there")
    .to_string();
    assert!(
        e.contains(&format!("postgresql://cinta@127.0.0.1:{port}/cinta")),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

/// A throwaway CA with a server certificate for 127.0.0.1 (`cinta-keymgr pki`).
fn pki(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.to_str().unwrap();
    let none = std::path::Path::new("/nonexistent");
    cinta_tests::keymgr::admin_ok(none, &["pki", "init", p]);
    cinta_tests::keymgr::admin_ok(
        none,
        &["pki", "issue", p, "db", "--server", "--host", "127.0.0.1"],
    );
    dir.to_path_buf()
}

#[test]
fn over_tls_the_server_certificate_is_checked_and_plaintext_is_never_used() {
    let d = tempfile::tempdir().unwrap();
    let good = pki(&d.path().join("good"));
    let other = pki(&d.path().join("other"));
    let pg = Server::start_tls(&good.join("db.pem"), &good.join("db.key"));
    let tls = |ca: &std::path::Path| catalog::postgres::TlsFiles {
        ca: ca.join("ca.pem"),
        cert: None,
        key: None,
    };
    let mut c = catalog::postgres::open(&pg.url(), Some(&tls(&good))).unwrap();
    c.set_meta("over", "tls").unwrap();
    assert_eq!(c.meta("over").unwrap().as_deref(), Some("tls"));
    assert!(
        pg.log().contains("SSL enabled"),
        "the session is encrypted: {}",
        pg.log()
    );
    // A certificate from another CA is refused: no connection, no data.
    let e = catalog::postgres::open(&pg.url(), Some(&tls(&other)))
        .err()
        .expect("another CA's certificate")
        .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The URL cannot turn TLS off once it is configured.
    let e = catalog::postgres::open(&format!("{}?sslmode=disable", pg.url()), Some(&tls(&good)))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sslmode=disable"), "{e}");
    // A server without TLS is not spoken to in the clear.
    let plain = Server::start();
    let e = catalog::postgres::open(&plain.url(), Some(&tls(&good)))
        .err()
        .expect("no TLS on that server")
        .to_string();
    assert!(e.contains(&plain.url()), "{e}");
}
