//! Arbitrary bytes opened as a SIMH cartridge and walked every way: errors, never a panic or a huge allocation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cinta_agent::tape::vcart::fuzz_cartridge_reader(data);
});
