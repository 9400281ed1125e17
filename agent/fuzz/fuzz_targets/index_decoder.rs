//! Arbitrary bytes as an index entry and as a trailer: errors, never a panic.
#![no_main]
use cinta_agent::saveset::format;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(e) = format::decode_entry(data) {
        let mut out = Vec::new();
        format::put_entry(&e, &mut out).expect("a decoded entry encodes");
        assert_eq!(format::decode_entry(&out[5..]).expect("re-decodes"), e);
    }
    let _ = format::read_trailer(data);
});
