//! The cryptography the server performs for clients (KMIP Encrypt, Decrypt, Sign, Signature Verify, MAC, Derive Key, key wrapping, Create Key Pair), apart from the keystore and the wire.
//!
//! Every function takes key bytes and data and returns bytes or a
//! [`Fault`](crate::fault::Fault) naming what is wrong; none touches the
//! keystore, and only key generation and RSA encryption draw randomness.

pub mod asymmetric;
pub mod kdf;
pub mod symmetric;
