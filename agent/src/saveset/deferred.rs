//! Content digests left by a save's reading thread to its sealing thread: which stream bytes to hash, and where each digest goes.
//!
//! Hashing is a fifth of a save's work on small files. When the sealing
//! thread has time to spare, the reading thread leaves it a file's digest:
//! it writes a placeholder and says, in stream offsets, which bytes are the
//! file's content ([`Op::Data`]) and where its digest goes ([`Op::Digest`]:
//! in the end record, and in the index entry in the spill file). The
//! sealing thread hashes those bytes from each segment just before sealing
//! it and writes the digests in place, so the stream is byte for byte what
//! the reading thread would have written itself.
//!
//! The operations come in stream order, each with the segment being filled
//! when it was made, which holds its first byte or comes before it. So a
//! segment can be sealed as soon as the operations sent with it and before
//! it are applied: the ones reaching into the next segment wait for it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One step of the hashing left to the sealing thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Stream bytes `from..to` are the next bytes of the content being hashed.
    Data { from: u64, to: u64 },
    /// The content ended: its digest goes at stream offset `at` and, when
    /// `spill` is given, at that offset of the index spill file.
    Digest { at: u64, spill: Option<u64> },
}

/// The sealing thread's side: operations not yet done, and the content being hashed.
pub struct Deferred {
    ops: VecDeque<Op>,
    hasher: blake3::Hasher,
    /// The digest of the [`Op::Digest`] in front, once computed.
    digest: Option<[u8; 32]>,
    /// Where index entries wait until the save's end (the reading thread's
    /// file, shared: written only at given offsets).
    spill: File,
    /// Stream offset of the next segment to seal.
    next: u64,
}

impl Deferred {
    pub fn new(spill: File) -> Self {
        Deferred {
            ops: VecDeque::new(),
            hasher: blake3::Hasher::new(),
            digest: None,
            spill,
            next: 0,
        }
    }

    /// Applies `ops`, after those still waiting, to `seg`: the stream bytes
    /// of the next segment to seal. With `sealed_next` the segment is sealed
    /// next, and the one after follows it in the stream; without, it is the
    /// segment still being filled, handed over so every digest is written
    /// before the index is.
    pub fn apply(
        &mut self,
        ops: impl IntoIterator<Item = Op>,
        seg: &mut [u8],
        sealed_next: bool,
    ) -> std::io::Result<()> {
        self.ops.extend(ops);
        let start = self.next;
        let end = start + seg.len() as u64;
        while let Some(op) = self.ops.front_mut() {
            match op {
                // No bytes: nothing to hash, wherever it lies. (Clamped to a
                // segment it does not reach, it would become a range of
                // other bytes: the gap before it.)
                Op::Data { from, to } if *from >= *to => {}
                Op::Data { from, to } => {
                    if *from >= end {
                        break;
                    }
                    debug_assert!(*from >= start, "content bytes before the segment");
                    let (a, b) = ((*from).max(start).min(end), (*to).min(end));
                    self.hasher
                        .update(&seg[(a - start) as usize..(b - start) as usize]);
                    if b < *to {
                        *from = b;
                        break;
                    }
                }
                Op::Digest { at, spill } => {
                    let hasher = &mut self.hasher;
                    let d = *self.digest.get_or_insert_with(|| {
                        let d = *hasher.finalize().as_bytes();
                        hasher.reset();
                        d
                    });
                    if *at >= end {
                        break;
                    }
                    let (a, b) = ((*at).max(start), (*at + 32).min(end));
                    seg[(a - start) as usize..(b - start) as usize]
                        .copy_from_slice(&d[(a - *at) as usize..(b - *at) as usize]);
                    if b < *at + 32 {
                        break;
                    }
                    if let Some(off) = *spill {
                        self.spill.write_all_at(&d, off)?;
                    }
                    self.digest = None;
                }
            }
            self.ops.pop_front();
        }
        if sealed_next {
            self.next = end;
        }
        Ok(())
    }

    /// Whether every operation handed over is done.
    pub fn done(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream of objects, each `(content, gap)`: the content, then its
    /// 32-byte digest slot, then `gap` other bytes. Returns the stream with
    /// placeholders, the ops, and the stream as it should end.
    fn layout(objects: &[(Vec<u8>, usize)]) -> (Vec<u8>, Vec<Op>, Vec<u8>) {
        let (mut stream, mut ops, mut want) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (content, gap)) in objects.iter().enumerate() {
            let from = stream.len() as u64;
            stream.extend_from_slice(content);
            want.extend_from_slice(content);
            // Content may come in several records.
            let mid = from + content.len() as u64 / 2;
            ops.push(Op::Data { from, to: mid });
            ops.push(Op::Data {
                from: mid,
                to: stream.len() as u64,
            });
            ops.push(Op::Digest {
                at: stream.len() as u64,
                spill: Some(i as u64 * 32),
            });
            stream.extend_from_slice(&[0; 32]);
            want.extend_from_slice(blake3::hash(content).as_bytes());
            stream.extend(std::iter::repeat_n(0xee, *gap));
            want.extend(std::iter::repeat_n(0xee, *gap));
        }
        (stream, ops, want)
    }

    proptest! {
        /// Whatever the segment size, and whichever segment each op is sent
        /// with (its own or an earlier one), the stream and the spill file
        /// end up holding every digest.
        #[test]
        fn digests_land_where_the_reader_would_have_written_them(
            objects in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..3000), 0usize..40), 1..8),
            payload in 1usize..700,
            early in any::<u64>(),
        ) {
            let (mut stream, ops, want) = layout(&objects);
            let spill = tempfile::tempfile().unwrap();
            let mut d = Deferred::new(spill.try_clone().unwrap());
            let segments = stream.len().div_ceil(payload);
            // Each op goes with the segment holding its first byte, or one
            // or two before it (when "early" says so).
            // Ops stay in stream order.
            let mut with: Vec<Vec<Op>> = vec![Vec::new(); segments.max(1)];
            let mut last = 0;
            for (i, op) in ops.into_iter().enumerate() {
                let first = match &op { Op::Data { from, .. } => *from, Op::Digest { at, .. } => *at };
                let seg = (first as usize / payload).min(segments.max(1) - 1);
                let back = ((early >> (i % 32)) & 3) as usize % 3;
                last = seg.saturating_sub(back).max(last);
                with[last].push(op);
            }
            for (n, ops) in with.into_iter().enumerate() {
                let end = ((n + 1) * payload).min(stream.len());
                d.apply(ops, &mut stream[n * payload..end], true).unwrap();
            }
            prop_assert!(d.done());
            prop_assert_eq!(&stream, &want);
            for (i, (content, _)) in objects.iter().enumerate() {
                let mut got = [0u8; 32];
                spill.read_exact_at(&mut got, i as u64 * 32).unwrap();
                prop_assert_eq!(got, *blake3::hash(content).as_bytes());
            }
        }
    }

    #[test]
    fn the_segment_being_filled_gets_its_digests_and_stays_unsealed() {
        let (mut stream, ops, want) = layout(&[(b"abc".to_vec(), 5), (vec![9; 70], 0)]);
        let spill = tempfile::tempfile().unwrap();
        let mut d = Deferred::new(spill);
        let (first, rest) = stream.split_at_mut(50);
        d.apply(ops, first, true).unwrap();
        assert!(!d.done(), "the second object lies beyond the first segment");
        d.apply([], rest, false).unwrap();
        assert!(d.done());
        assert_eq!(stream, want);
        // Still unsealed: the same segment, applied again with nothing, is untouched.
        d.apply([], &mut stream[50..], true).unwrap();
        assert_eq!(stream, want);
    }
}
