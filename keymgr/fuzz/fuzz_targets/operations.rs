//! Arbitrary request messages run through every KMIP operation on a real keystore (rolled back each time): failures are KMIP errors, never a panic, and every response encodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cinta_keymgr::ops::fuzz_operations(data);
});
