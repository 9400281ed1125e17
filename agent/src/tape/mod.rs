//! The tape layer: one device interface, its back-ends, standard labels and labelled volumes.
//!
//! - [`TapeDevice`]: what backup software needs of a drive (blocks,
//!   filemarks, spacing, locate, position, early warning).
//! - Back-ends: [`vcart::Cartridge`] (SIMH `.tap` files), [`st::StDevice`]
//!   (Linux SCSI tape), [`mem::MemTape`] (tests).
//! - [`simh`] and [`label`]: byte codecs, no I/O.
//! - [`volume`]: labelled volumes and tape files that span volumes.
//! - [`conformance`]: the btape-style suite every back-end must pass.

pub mod conformance;
pub mod digest;
pub mod label;
pub mod mem;
pub mod simh;
pub mod st;
pub mod vcart;
pub mod volume;

use crate::error::Result;

/// Largest block any back-end accepts, in bytes (8 MiB).
pub const MAX_BLOCK: usize = simh::MAX_RECORD as usize;

/// Checks a block's size before any back-end writes it.
pub fn check_block(device: &str, data: &[u8]) -> Result<()> {
    if data.is_empty() || data.len() > MAX_BLOCK {
        return Err(crate::Error::BadBlockSize {
            device: device.to_string(),
            len: data.len(),
            reason: "blocks are 1 byte to 8 MiB",
        });
    }
    Ok(())
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, and the medium has room.
    Ok,
    /// Written, and the early-warning point is passed: the software should
    /// close the volume (trailer labels) and continue on another one.
    EarlyWarning,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A data block; the buffer holds it.
    Block,
    /// A filemark; the position is now after it.
    Filemark,
}

/// A tape drive with a medium in it.
///
/// Positions are logical block addresses as SCSI counts them: every block
/// and every filemark is one object, the first at 0. Spacing follows the SCSI
/// stream commands: spacing blocks forward stops after a filemark, backward
/// stops before it ([`crate::Error::FilemarkHit`]); spacing filemarks forward
/// leaves the position after the n-th filemark, backward before it. Writing
/// anywhere but at end of data discards everything after the write, as tape
/// does.
pub trait TapeDevice: Send {
    /// Name for messages: a barcode or a device path.
    fn name(&self) -> &str;
    /// Writes one block (1 byte to [`MAX_BLOCK`]).
    fn write_block(&mut self, data: &[u8]) -> Result<Written>;
    /// Writes one filemark.
    fn write_filemark(&mut self) -> Result<Written>;
    /// Reads the next block into `buf` (resized to the block), or passes a filemark.
    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read>;
    /// Spaces over `count` blocks, forward if positive, backward if negative.
    fn space_blocks(&mut self, count: i64) -> Result<()>;
    /// Spaces over `count` filemarks, forward if positive, backward if negative.
    fn space_filemarks(&mut self, count: i64) -> Result<()>;
    /// Goes to the beginning of the medium.
    fn rewind(&mut self) -> Result<()>;
    /// Goes to end of recorded data, where the next write appends.
    fn seek_end_of_data(&mut self) -> Result<()>;
    /// Goes to a logical block address.
    fn locate(&mut self, block: u64) -> Result<()>;
    /// The current logical block address.
    fn position(&mut self) -> Result<u64>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<()>;
    /// Flushes, rewinds and releases the medium.
    fn unload(&mut self) -> Result<()>;
    /// Forgets what the device keeps about where things lie on the medium
    /// (a virtual cartridge's index) and learns it again from the medium
    /// itself, for a reader that met damage: if that knowledge was wrong,
    /// reading again works. `false` when there is nothing to learn again
    /// (the device keeps nothing, or learnt it already): retrying cannot help.
    /// The position is then unknown: locate before reading.
    fn relearn(&mut self) -> Result<bool> {
        Ok(false)
    }
}

impl<T: TapeDevice + ?Sized> TapeDevice for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn write_block(&mut self, data: &[u8]) -> Result<Written> {
        (**self).write_block(data)
    }
    fn write_filemark(&mut self) -> Result<Written> {
        (**self).write_filemark()
    }
    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read> {
        (**self).read_block(buf)
    }
    fn space_blocks(&mut self, count: i64) -> Result<()> {
        (**self).space_blocks(count)
    }
    fn space_filemarks(&mut self, count: i64) -> Result<()> {
        (**self).space_filemarks(count)
    }
    fn rewind(&mut self) -> Result<()> {
        (**self).rewind()
    }
    fn seek_end_of_data(&mut self) -> Result<()> {
        (**self).seek_end_of_data()
    }
    fn locate(&mut self, block: u64) -> Result<()> {
        (**self).locate(block)
    }
    fn position(&mut self) -> Result<u64> {
        (**self).position()
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn unload(&mut self) -> Result<()> {
        (**self).unload()
    }
    fn relearn(&mut self) -> Result<bool> {
        (**self).relearn()
    }
}
