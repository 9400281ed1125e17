//! Linux SCSI tape through the st driver (`/dev/nstN`): MTIOCTOP, MTIOCGET and MTIOCPOS ioctls.
//!
//! The drive is put in variable block mode (MTSETBLK 0): each `write` is
//! one block. Early warning, as the st driver reports it: the write that
//! meets early warning completes; the next write returns `ENOSPC` without
//! writing; the write after that is allowed through (room for trailer
//! labels), and from then on failing and succeeding writes alternate until
//! the physical end. This back-end retries a write once after `ENOSPC` and
//! reports [`Written::EarlyWarning`]; a second `ENOSPC` is end of medium.
//!
//! `nix` and `libc` declare neither `struct mtop`, `struct mtget` nor
//! `struct mtpos`; they are declared here and their layouts and the request
//! codes are checked against `<sys/mtio.h>` by the tests.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::path::Path;

use libc::{c_int, c_long, c_short};

use super::{Read, TapeDevice, Written, MAX_BLOCK};
use crate::error::{Error, Result};

/// `struct mtop`: a tape operation and its count.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MtOp {
    pub mt_op: c_short,
    pub mt_count: c_int,
}

/// `struct mtget`: drive status.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MtGet {
    pub mt_type: c_long,
    pub mt_resid: c_long,
    pub mt_dsreg: c_long,
    pub mt_gstat: c_long,
    pub mt_erreg: c_long,
    /// `__kernel_daddr_t`, an `int`.
    pub mt_fileno: c_int,
    pub mt_blkno: c_int,
}

/// `struct mtpos`: the logical block position.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MtPos {
    pub mt_blkno: c_long,
}

/// `mt_op` values of `<linux/mtio.h>`.
pub mod op {
    use libc::c_short;
    pub const MTFSF: c_short = 1;
    pub const MTBSF: c_short = 2;
    pub const MTFSR: c_short = 3;
    pub const MTBSR: c_short = 4;
    pub const MTWEOF: c_short = 5;
    pub const MTREW: c_short = 6;
    pub const MTOFFL: c_short = 7;
    pub const MTNOP: c_short = 8;
    pub const MTEOM: c_short = 12;
    pub const MTSETBLK: c_short = 20;
    pub const MTSEEK: c_short = 22;
    pub const MTTELL: c_short = 23;
}

/// `mt_gstat` bits of `<linux/mtio.h>`.
pub mod gstat {
    pub const GMT_EOF: u64 = 0x8000_0000;
    pub const GMT_BOT: u64 = 0x4000_0000;
    pub const GMT_EOT: u64 = 0x2000_0000;
    pub const GMT_EOD: u64 = 0x0800_0000;
    pub const GMT_WR_PROT: u64 = 0x0400_0000;
    pub const GMT_ONLINE: u64 = 0x0100_0000;
}

nix::ioctl_write_ptr!(mtioctop, b'm', 1, MtOp);
nix::ioctl_read!(mtiocget, b'm', 2, MtGet);
nix::ioctl_read!(mtiocpos, b'm', 3, MtPos);

/// Request codes as the kernel computes them (`_IOW('m', 1, struct mtop)` ...).
pub fn request_codes() -> [(&'static str, u64); 3] {
    [
        (
            "MTIOCTOP",
            nix::request_code_write!(b'm', 1, std::mem::size_of::<MtOp>()) as u64,
        ),
        (
            "MTIOCGET",
            nix::request_code_read!(b'm', 2, std::mem::size_of::<MtGet>()) as u64,
        ),
        (
            "MTIOCPOS",
            nix::request_code_read!(b'm', 3, std::mem::size_of::<MtPos>()) as u64,
        ),
    ]
}

/// A tape drive opened through the st driver. Use the no-rewind node (`/dev/nstN`).
pub struct StDevice {
    name: String,
    file: File,
    buf: Vec<u8>,
    early_warning: bool,
}

impl StDevice {
    /// Opens the drive read-write and sets variable block mode.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("tape drive {name}"), e))?;
        let mut d = StDevice {
            name,
            file,
            buf: Vec::new(),
            early_warning: false,
        };
        d.op(op::MTSETBLK, 0)?;
        Ok(d)
    }

    fn err(&self, e: impl Into<io::Error>) -> Error {
        Error::io(format!("tape drive {}", self.name), e.into())
    }

    fn op(&mut self, mt_op: c_short, count: i64) -> Result<()> {
        let mt_count = c_int::try_from(count).map_err(|_| Error::Unsupported {
            device: self.name.clone(),
            reason: format!("count {count} does not fit the st driver's int"),
        })?;
        let o = MtOp { mt_op, mt_count };
        // SAFETY: MTIOCTOP reads one `struct mtop`, which `o` is.
        unsafe { mtioctop(self.file.as_raw_fd(), &o) }
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drive status (MTIOCGET).
    pub fn status(&self) -> Result<MtGet> {
        let mut g = MtGet::default();
        // SAFETY: MTIOCGET writes one `struct mtget` into `g`.
        unsafe { mtiocget(self.file.as_raw_fd(), &mut g) }.map_err(|e| self.err(e))?;
        Ok(g)
    }

    /// Turns a failed space operation into the SCSI condition that stopped it.
    fn space_error(&self, e: Error) -> Error {
        let Ok(st) = self.status() else { return e };
        let residual = st.mt_resid.unsigned_abs();
        let g = st.mt_gstat as u64;
        if g & gstat::GMT_EOD != 0 {
            Error::EndOfData {
                device: self.name.clone(),
                block: st.mt_blkno.max(0) as u64,
            }
        } else if g & gstat::GMT_BOT != 0 {
            Error::BeginningOfTape {
                device: self.name.clone(),
                residual,
            }
        } else if g & gstat::GMT_EOF != 0 {
            Error::FilemarkHit {
                device: self.name.clone(),
                residual,
            }
        } else {
            e
        }
    }

    fn write_once(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write(data)
    }
}

impl TapeDevice for StDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_block(&mut self, data: &[u8]) -> Result<Written> {
        super::check_block(&self.name, data)?;
        let mut result = self.write_once(data);
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)) {
            // Early warning: the driver refused this write once; the next is let through.
            self.early_warning = true;
            result = self.write_once(data);
        }
        match result {
            Ok(n) if n == data.len() => {}
            Ok(n) => {
                return Err(Error::Unsupported {
                    device: self.name.clone(),
                    reason: format!(
                        "short write of {n} of {} bytes (is the drive in fixed block mode?)",
                        data.len()
                    ),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(Error::EndOfMedium {
                    device: self.name.clone(),
                    needed: data.len() as u64,
                    used: 0,
                    capacity: 0,
                })
            }
            Err(e) => return Err(self.err(e)),
        }
        if !self.early_warning {
            if let Ok(st) = self.status() {
                self.early_warning = (st.mt_gstat as u64) & gstat::GMT_EOT != 0;
            }
        }
        Ok(if self.early_warning {
            Written::EarlyWarning
        } else {
            Written::Ok
        })
    }

    fn write_filemark(&mut self) -> Result<Written> {
        self.op(op::MTWEOF, 1)?;
        Ok(if self.early_warning {
            Written::EarlyWarning
        } else {
            Written::Ok
        })
    }

    fn read_block(&mut self, buf: &mut Vec<u8>) -> Result<Read> {
        self.buf.resize(MAX_BLOCK, 0);
        match self.file.read(&mut self.buf) {
            Ok(0) => {
                let st = self.status()?;
                if (st.mt_gstat as u64) & gstat::GMT_EOD != 0 {
                    Err(Error::EndOfData {
                        device: self.name.clone(),
                        block: st.mt_blkno.max(0) as u64,
                    })
                } else {
                    Ok(Read::Filemark)
                }
            }
            Ok(n) => {
                buf.clear();
                buf.extend_from_slice(&self.buf[..n]);
                Ok(Read::Block)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => Err(Error::BadBlockSize {
                device: self.name.clone(),
                len: MAX_BLOCK + 1,
                reason: "block larger than 8 MiB",
            }),
            Err(e) => Err(self.space_error(self.err(e))),
        }
    }

    fn space_blocks(&mut self, count: i64) -> Result<()> {
        let (o, n) = if count >= 0 {
            (op::MTFSR, count)
        } else {
            (op::MTBSR, -count)
        };
        if n == 0 {
            return Ok(());
        }
        self.op(o, n).map_err(|e| self.space_error(e))
    }

    fn space_filemarks(&mut self, count: i64) -> Result<()> {
        let (o, n) = if count >= 0 {
            (op::MTFSF, count)
        } else {
            (op::MTBSF, -count)
        };
        if n == 0 {
            return Ok(());
        }
        self.op(o, n).map_err(|e| self.space_error(e))
    }

    fn rewind(&mut self) -> Result<()> {
        self.early_warning = false;
        self.op(op::MTREW, 1)
    }

    fn seek_end_of_data(&mut self) -> Result<()> {
        self.op(op::MTEOM, 1)
    }

    fn locate(&mut self, block: u64) -> Result<()> {
        self.early_warning = false;
        self.op(op::MTSEEK, block as i64)
    }

    fn position(&mut self) -> Result<u64> {
        let mut p = MtPos::default();
        // SAFETY: MTIOCPOS writes one `struct mtpos` into `p`.
        unsafe { mtiocpos(self.file.as_raw_fd(), &mut p) }.map_err(|e| self.err(e))?;
        Ok(p.mt_blkno as u64)
    }

    fn flush(&mut self) -> Result<()> {
        // MTWEOF with a count of 0 writes the drive's buffer to the medium.
        self.op(op::MTWEOF, 0)
    }

    fn unload(&mut self) -> Result<()> {
        self.early_warning = false;
        self.op(op::MTOFFL, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// What `<sys/mtio.h>` says, printed by a C program compiled here.
    fn c_values() -> Option<std::collections::HashMap<String, u64>> {
        let dir = tempfile::tempdir().ok()?;
        let src = dir.path().join("mtio.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mtio.h>
#define P(n, v) printf("%s %lu\n", n, (unsigned long)(v))
int main(void) {
  P("MTIOCTOP", MTIOCTOP); P("MTIOCGET", MTIOCGET); P("MTIOCPOS", MTIOCPOS);
  P("sizeof_mtop", sizeof(struct mtop)); P("sizeof_mtget", sizeof(struct mtget)); P("sizeof_mtpos", sizeof(struct mtpos));
  P("mtop.mt_count", offsetof(struct mtop, mt_count));
  P("mtget.mt_resid", offsetof(struct mtget, mt_resid)); P("mtget.mt_gstat", offsetof(struct mtget, mt_gstat));
  P("mtget.mt_fileno", offsetof(struct mtget, mt_fileno)); P("mtget.mt_blkno", offsetof(struct mtget, mt_blkno));
  P("MTFSF", MTFSF); P("MTBSF", MTBSF); P("MTFSR", MTFSR); P("MTBSR", MTBSR); P("MTWEOF", MTWEOF);
  P("MTREW", MTREW); P("MTOFFL", MTOFFL); P("MTNOP", MTNOP); P("MTEOM", MTEOM); P("MTSETBLK", MTSETBLK);
  P("MTSEEK", MTSEEK); P("MTTELL", MTTELL);
  P("GMT_EOF", GMT_EOF(~0UL)); P("GMT_BOT", GMT_BOT(~0UL)); P("GMT_EOT", GMT_EOT(~0UL)); P("GMT_EOD", GMT_EOD(~0UL));
  P("GMT_WR_PROT", GMT_WR_PROT(~0UL)); P("GMT_ONLINE", GMT_ONLINE(~0UL));
  return 0;
}"#,
        )
        .ok()?;
        let exe = dir.path().join("mtio");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let ok = Command::new(cc)
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        let out = Command::new(&exe).output().ok()?;
        Some(
            String::from_utf8(out.stdout)
                .ok()?
                .lines()
                .filter_map(|l| {
                    l.split_once(' ')
                        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                })
                .collect(),
        )
    }

    #[test]
    fn layouts_and_codes_match_the_c_header() {
        // The values of x86_64 Linux, checked always...
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            assert_eq!(
                request_codes(),
                [
                    ("MTIOCTOP", 0x4008_6d01),
                    ("MTIOCGET", 0x8030_6d02),
                    ("MTIOCPOS", 0x8008_6d03)
                ]
            );
            assert_eq!(
                (size_of::<MtOp>(), size_of::<MtGet>(), size_of::<MtPos>()),
                (8, 48, 8)
            );
        }
        // ...and against the C compiler's view of <sys/mtio.h> wherever one exists.
        let Some(c) = c_values() else {
            eprintln!("no C compiler: checked against the recorded x86_64 values only");
            return;
        };
        for (name, code) in request_codes() {
            assert_eq!(c[name], code, "{name}");
        }
        assert_eq!(c["sizeof_mtop"], size_of::<MtOp>() as u64);
        assert_eq!(c["sizeof_mtget"], size_of::<MtGet>() as u64);
        assert_eq!(c["sizeof_mtpos"], size_of::<MtPos>() as u64);
        assert_eq!(c["mtop.mt_count"], offset_of!(MtOp, mt_count) as u64);
        assert_eq!(c["mtget.mt_resid"], offset_of!(MtGet, mt_resid) as u64);
        assert_eq!(c["mtget.mt_gstat"], offset_of!(MtGet, mt_gstat) as u64);
        assert_eq!(c["mtget.mt_fileno"], offset_of!(MtGet, mt_fileno) as u64);
        assert_eq!(c["mtget.mt_blkno"], offset_of!(MtGet, mt_blkno) as u64);
        for (name, v) in [
            ("MTFSF", op::MTFSF),
            ("MTBSF", op::MTBSF),
            ("MTFSR", op::MTFSR),
            ("MTBSR", op::MTBSR),
            ("MTWEOF", op::MTWEOF),
            ("MTREW", op::MTREW),
            ("MTOFFL", op::MTOFFL),
            ("MTNOP", op::MTNOP),
            ("MTEOM", op::MTEOM),
            ("MTSETBLK", op::MTSETBLK),
            ("MTSEEK", op::MTSEEK),
            ("MTTELL", op::MTTELL),
        ] {
            assert_eq!(c[name], v as u64, "{name}");
        }
        for (name, v) in [
            ("GMT_EOF", gstat::GMT_EOF),
            ("GMT_BOT", gstat::GMT_BOT),
            ("GMT_EOT", gstat::GMT_EOT),
            ("GMT_EOD", gstat::GMT_EOD),
            ("GMT_WR_PROT", gstat::GMT_WR_PROT),
            ("GMT_ONLINE", gstat::GMT_ONLINE),
        ] {
            assert_eq!(c[name], v, "{name}");
        }
    }

    #[test]
    fn opening_a_missing_drive_names_it() {
        let e = StDevice::open(Path::new("/dev/nst-cinta-none"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("tape drive /dev/nst-cinta-none"),
            "{e}"
        );
    }
}
