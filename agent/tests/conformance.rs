//! The btape-style conformance suite against every back-end that runs here.

use cinta_agent::tape::conformance::{run_all, Backend, MemBackend, VcartBackend};

fn assert_all_pass(b: &mut dyn Backend) {
    let report = run_all(b);
    let mut failed = Vec::new();
    for r in &report {
        eprintln!("{:<70} {:?}", r.name, r.outcome);
        match &r.outcome {
            Ok(true) => {}
            Ok(false) => failed.push(format!("{}: skipped", r.name)),
            Err(e) => failed.push(format!("{}: {e}", r.name)),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn memory_back_end_conforms() {
    assert_all_pass(&mut MemBackend::default());
}

#[test]
fn virtual_cartridge_back_end_conforms() {
    let dir = tempfile::tempdir().unwrap();
    assert_all_pass(&mut VcartBackend::new(dir.path()));
}
