//! Arbitrary bytes as a save set header, a sealed segment, and a record stream fed in pieces.
#![no_main]
use cinta_agent::saveset::format;
use cinta_agent::stream::{Header, Opener};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Header::peek(data);
    let split = data.len() / 3;
    if let Ok(o) = Opener::new(&[7; 32], &data[..split]) {
        let mut block = data[split..].to_vec();
        let _ = o.open(0, true, &mut block, &mut Vec::new());
    }
    format::fuzz_parse(data);
});
