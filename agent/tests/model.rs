//! The virtual cartridge behaves exactly like the in-memory reference tape
//! under random operation sequences, reloads and a full medium included.

use cinta_agent::tape::mem::MemTape;
use cinta_agent::tape::vcart::Cartridge;
use cinta_agent::tape::{Read, TapeDevice};
use cinta_agent::Error;
use proptest::prelude::*;

const CAPACITY: u64 = 64 * 1024;
const EARLY_WARNING: u64 = 16 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Write(u16, u8),
    Filemark,
    Read,
    SpaceBlocks(i8),
    SpaceFilemarks(i8),
    Rewind,
    EndOfData,
    Locate(u8),
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u16..3000, any::<u8>()).prop_map(|(n, s)| Op::Write(n, s)),
        2 => Just(Op::Filemark),
        5 => Just(Op::Read),
        3 => (-5i8..=5).prop_map(Op::SpaceBlocks),
        2 => (-3i8..=3).prop_map(Op::SpaceFilemarks),
        1 => Just(Op::Rewind),
        1 => Just(Op::EndOfData),
        2 => (0u8..60).prop_map(Op::Locate),
        1 => Just(Op::Reload),
    ]
}

/// What an operation did, in a form both devices can be compared by.
fn outcome<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(Error::EndOfData { .. }) => "end of data".into(),
        Err(Error::BeginningOfTape { residual, .. }) => {
            format!("beginning of tape, {residual} left")
        }
        Err(Error::FilemarkHit { residual, .. }) => format!("filemark, {residual} left"),
        Err(Error::EndOfMedium { .. }) => "end of medium".into(),
        Err(e) => format!("other error: {e}"),
    }
}

fn apply(d: &mut dyn TapeDevice, op: &Op, buf: &mut Vec<u8>) -> String {
    match *op {
        Op::Write(n, s) => outcome(d.write_block(&vec![s; n as usize])),
        Op::Filemark => outcome(d.write_filemark()),
        Op::Read => {
            let r = d.read_block(buf);
            match r {
                Ok(Read::Block) => format!("block {} bytes of {:?}", buf.len(), buf.first()),
                other => outcome(other),
            }
        }
        Op::SpaceBlocks(n) => outcome(d.space_blocks(n.into())),
        Op::SpaceFilemarks(n) => outcome(d.space_filemarks(n.into())),
        Op::Rewind => outcome(d.rewind()),
        Op::EndOfData => outcome(d.seek_end_of_data()),
        Op::Locate(b) => outcome(d.locate(b.into())),
        Op::Reload => outcome(d.unload()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300), ..ProptestConfig::default() })]
    #[test]
    fn cartridge_matches_the_reference_tape(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("M.tap");
        let mut model = MemTape::new("M", CAPACITY, EARLY_WARNING);
        let mut cart = Cartridge::create(&path, "M", CAPACITY, EARLY_WARNING).unwrap();
        let (mut b1, mut b2) = (Vec::new(), Vec::new());
        for (i, op) in ops.iter().enumerate() {
            let want = apply(&mut model, op, &mut b1);
            let got = apply(&mut cart, op, &mut b2);
            prop_assert_eq!(&got, &want, "op {} {:?}", i, op);
            if let Op::Read = op {
                prop_assert_eq!(&b1, &b2);
            }
            if let Op::Reload = op {
                drop(cart);
                cart = Cartridge::open(&path, "M", CAPACITY, EARLY_WARNING).unwrap();
                prop_assert!(cart.report().clean, "reopened after a clean unload: {:?}", cart.report());
            }
            prop_assert_eq!(cart.position().unwrap(), model.position().unwrap(), "position after op {} {:?}", i, op);
            prop_assert_eq!(cart.used(), model.used(), "used bytes after op {} {:?}", i, op);
        }
    }
}
