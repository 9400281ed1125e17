//! An in-memory tape for tests: the reference model of [`TapeDevice`] semantics.
//!
//! Capacity is counted in the bytes the same content would take as a SIMH
//! cartridge, so early warning falls where it falls on a virtual cartridge.

use super::{simh, Read, TapeDevice, Written};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Entry {
    Block(Vec<u8>),
    Filemark,
}

impl Entry {
    fn span(&self) -> u64 {
        match self {
            Entry::Block(b) => simh::record_span(b.len() as u32),
            Entry::Filemark => simh::WORD,
        }
    }
}

/// A tape held in memory.
#[derive(Debug, Clone)]
pub struct MemTape {
    name: String,
    entries: Vec<Entry>,
    pos: usize,
    used: u64,
    capacity: u64,
    early_warning: u64,
}

impl MemTape {
    /// A blank tape of `capacity` bytes whose early warning comes
    /// `early_warning` bytes before the end.
    pub fn new(name: &str, capacity: u64, early_warning: u64) -> Self {
        MemTape {
            name: name.to_string(),
            entries: Vec::new(),
            pos: 0,
            used: 0,
            capacity,
            early_warning: early_warning.min(capacity),
        }
    }

    /// Bytes used, as a SIMH image would use them.
    pub fn used(&self) -> u64 {
        self.used
    }

    fn truncate_here(&mut self) {
        for e in self.entries.drain(self.pos..) {
            self.used -= e.span();
        }
    }

    fn append(&mut self, e: Entry) -> Result<Written> {
        self.truncate_here();
        let need = e.span();
        if self.used + need > self.capacity {
            return Err(Error::EndOfMedium {
                device: self.name.clone(),
                needed: need,
                used: self.used,
                capacity: self.capacity,
            });
        }
        self.used += need;
        self.entries.push(e);
        self.pos += 1;
        Ok(if self.used > self.capacity - self.early_warning {
            Written::EarlyWarning
        } else {
            Written::Ok
        })
    }

    fn eod(&self) -> Error {
        Error::EndOfData {
            device: self.name.clone(),
            block: self.pos as u64,
        }
    }
}

impl TapeDevice for MemTape {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_block(&mut self, data: &[u8]) -> Result<Written> {
        super::check_block(&self.name, data)?;
        self.append(Entry::Block(data.to_vec()))
    }

    fn write_filemark(&mut self) -> Result<Written> {
        self.append(Entry::Filemark)
    }

    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read> {
        match self.entries.get(self.pos) {
            None => Err(self.eod()),
            Some(Entry::Filemark) => {
                self.pos += 1;
                Ok(Read::Filemark)
            }
            Some(Entry::Block(b)) => {
                buf.clear();
                buf.extend_from_slice(b);
                self.pos += 1;
                Ok(Read::Block)
            }
        }
    }

    fn space_blocks(&mut self, count: i64) -> Result<()> {
        let mut left = count.unsigned_abs();
        while left > 0 {
            if count > 0 {
                match self.entries.get(self.pos) {
                    None => return Err(self.eod()),
                    Some(e) => {
                        self.pos += 1;
                        if matches!(e, Entry::Filemark) {
                            return Err(Error::FilemarkHit {
                                device: self.name.clone(),
                                residual: left,
                            });
                        }
                        left -= 1;
                    }
                }
            } else {
                if self.pos == 0 {
                    return Err(Error::BeginningOfTape {
                        device: self.name.clone(),
                        residual: left,
                    });
                }
                if matches!(self.entries[self.pos - 1], Entry::Filemark) {
                    self.pos -= 1;
                    return Err(Error::FilemarkHit {
                        device: self.name.clone(),
                        residual: left,
                    });
                }
                self.pos -= 1;
                left -= 1;
            }
        }
        Ok(())
    }

    fn space_filemarks(&mut self, count: i64) -> Result<()> {
        let mut left = count.unsigned_abs();
        while left > 0 {
            if count > 0 {
                match self.entries.get(self.pos) {
                    None => return Err(self.eod()),
                    Some(e) => {
                        self.pos += 1;
                        if matches!(e, Entry::Filemark) {
                            left -= 1;
                        }
                    }
                }
            } else {
                if self.pos == 0 {
                    return Err(Error::BeginningOfTape {
                        device: self.name.clone(),
                        residual: left,
                    });
                }
                self.pos -= 1;
                if matches!(self.entries[self.pos], Entry::Filemark) {
                    left -= 1;
                }
            }
        }
        Ok(())
    }

    fn rewind(&mut self) -> Result<()> {
        self.pos = 0;
        Ok(())
    }

    fn seek_end_of_data(&mut self) -> Result<()> {
        self.pos = self.entries.len();
        Ok(())
    }

    fn locate(&mut self, block: u64) -> Result<()> {
        if block > self.entries.len() as u64 {
            self.pos = self.entries.len();
            return Err(self.eod());
        }
        self.pos = block as usize;
        Ok(())
    }

    fn position(&mut self) -> Result<u64> {
        Ok(self.pos as u64)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn unload(&mut self) -> Result<()> {
        self.pos = 0;
        Ok(())
    }
}
