//! The cryptography the server performs for clients (KMIP Encrypt, Decrypt, Sign, Signature Verify, MAC, Derive Key, key wrapping, Create Key Pair), apart from the keystore and the wire.
//!
//! Every function takes key bytes and data and returns bytes or a
//! [`Fault`](crate::fault::Fault) naming what is wrong; none touches the
//! keystore, and only key generation and RSA encryption draw randomness.

pub mod asymmetric;
pub mod kdf;
pub mod symmetric;

/// Hex digits to bytes, for the known-answer tests.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
