//! Arbitrary 80-byte blocks decoded as standard labels; what decodes must encode back to the same label.
#![no_main]
use cinta_agent::tape::label;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(l) = label::decode(data) {
        let again = label::encode(&l).expect("a decoded label encodes");
        assert_eq!(label::decode(&again).expect("re-decodes"), l);
    }
});
