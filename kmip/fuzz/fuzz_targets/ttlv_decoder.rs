//! Arbitrary bytes framed and decoded as TTLV, then read as a request: errors and KMIP error responses, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cinta_kmip::ttlv::fuzz_decode(data);
    cinta_kmip::message::fuzz_request(data);
});
