//! Arbitrary bytes framed and decoded as TTLV: errors, never a panic; what decodes re-encodes the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cinta_kmip::ttlv::fuzz_decode(data);
});
