//! Stored names as text: every name the file system holds shown distinctly and given back (`ls` prints, `--select` reads, the controller's index keeps), whatever its bytes.
//!
//! UTF-8 text stays as it is; a backslash is `\\`; a byte that is not
//! UTF-8, and an ASCII control character (a newline in a name would split
//! a line), is `\xNN`. So two names that differ in one byte are shown differently,
//! and what is shown reads back to the same bytes.

/// `name` as text that reads back to it with [`unescape`].
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes text written as [`escape`] writes names stands for. `\\` and
/// `\xNN` are read; any other backslash stays as it is (a glob's own).
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x') {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_differ_in_a_byte_are_shown_differently() {
        assert_eq!(escape(b"caf\xe9"), "caf\\xe9");
        assert_eq!(escape(b"caf\xe8"), "caf\\xe8");
        assert_eq!(escape("café".as_bytes()), "café");
        assert_eq!(escape(b"a\\b\nc"), "a\\\\b\\x0ac");
        assert_eq!(unescape("caf\\xe9"), b"caf\xe9");
        assert_eq!(unescape("*\\*"), b"*\\*", "a glob's own escape is kept");
    }

    proptest! {
        #[test]
        fn every_name_reads_back(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unescape(&escape(&name)), name);
        }
    }
}
