//! Small I/O helpers shared by the tape commands and the save pipeline.

use std::io::{ErrorKind, Read};

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn fill(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
