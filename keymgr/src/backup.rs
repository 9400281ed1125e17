//! Encrypted keystore backups: a consistent SQLite copy sealed in 64 KiB AES-256-GCM chunks under a key stretched from a backup passphrase.
//!
//! Layout: `CINTAKSB` (8), format 1 (1), KDF text length (u16 BE), KDF text
//! (`argon2id:m=..,t=..,p=..:SALTHEX`), nonce prefix (7); then chunks of
//! 64 KiB plaintext (the last one shorter, possibly empty) each sealed with
//! nonce = prefix || chunk counter (u32 BE) || last flag (1), and the header
//! as associated data. A cut, reordered or altered backup does not open.
//! The key material inside stays wrapped under the master key, so a restore
//! needs both the backup passphrase and the master key.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::master::{stretch, KdfParams, Source};
use crate::store::Store;

const MAGIC: &[u8; 8] = b"CINTAKSB";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Backup {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = last as u8;
    Nonce::assume_unique_for_key(n)
}

fn key_for(passphrase: &str, kdf: &KdfParams) -> Result<LessSafeKey> {
    let k = zeroize::Zeroizing::new(stretch(passphrase.as_bytes(), kdf)?);
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &*k).expect("32-byte key"),
    ))
}

/// What a backup held.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub objects: usize,
    pub bytes: u64,
}

/// Writes an encrypted backup of the keystore to `out` and marks its objects backed up.
pub fn write(store: &mut Store, out: &Path, passphrase: &str) -> Result<Summary> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let snap = dir.join(format!(
        ".{}.snapshot",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("backup")
    ));
    let _ = std::fs::remove_file(&snap);
    store.snapshot(&snap)?;
    let result = (|| {
        let uids = store.mark_copy_backed_up(&snap)?;
        let bytes = seal_file(&snap, out, passphrase)?;
        Ok::<_, Error>((uids, bytes))
    })();
    let _ = std::fs::remove_file(&snap);
    let (uids, bytes) = result?;
    store.mark_backed_up(&uids)?;
    Ok(Summary {
        path: out.to_owned(),
        objects: uids.len(),
        bytes,
    })
}

fn seal_file(input: &Path, out: &Path, passphrase: &str) -> Result<u64> {
    let rng = SystemRandom::new();
    let kdf = KdfParams::fresh(&rng)?;
    let key = key_for(passphrase, &kdf)?;
    let mut prefix = [0u8; 7];
    rng.fill(&mut prefix)
        .map_err(|_| bad(out, "no randomness"))?;
    let kdf_text = kdf.encode();
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.push(1);
    header.extend_from_slice(&(kdf_text.len() as u16).to_be_bytes());
    header.extend_from_slice(kdf_text.as_bytes());
    header.extend_from_slice(&prefix);

    let tmp = out.with_extension("partial");
    let io = |e| Error::io(format!("write {}", tmp.display()), e);
    let mut src = std::fs::File::open(input)
        .map_err(|e| Error::io(format!("read {}", input.display()), e))?;
    let total = src
        .metadata()
        .map_err(|e| Error::io(format!("read {}", input.display()), e))?
        .len();
    let _ = std::fs::remove_file(&tmp);
    let mut dst = std::io::BufWriter::new(crate::private::create_file(&tmp).map_err(io)?);
    dst.write_all(&header).map_err(io)?;
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut done: u64 = 0;
    let mut counter: u32 = 0;
    loop {
        let want = ((total - done) as usize).min(CHUNK);
        src.read_exact(&mut buf[..want])
            .map_err(|e| Error::io(format!("read {}", input.display()), e))?;
        done += want as u64;
        let last = done == total;
        let mut chunk = buf[..want].to_vec();
        key.seal_in_place_append_tag(
            nonce(&prefix, counter, last),
            Aad::from(&header),
            &mut chunk,
        )
        .map_err(|_| bad(out, "seal failed"))?;
        dst.write_all(&chunk).map_err(io)?;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or_else(|| bad(out, "keystore too large for one backup"))?;
    }
    let f = dst.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(format!("rename to {}", out.display()), e))?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

fn open_file(input: &Path, out: &Path, passphrase: &str) -> Result<()> {
    let mut src = std::io::BufReader::new(
        std::fs::File::open(input)
            .map_err(|e| Error::io(format!("read {}", input.display()), e))?,
    );
    let rd = |e: std::io::Error| bad(input, format!("cut short or unreadable ({e})"));
    let mut fixed = [0u8; 11];
    src.read_exact(&mut fixed).map_err(rd)?;
    if &fixed[..8] != MAGIC || fixed[8] != 1 {
        return Err(bad(input, "is not a cinta keystore backup (format 1)"));
    }
    let n = u16::from_be_bytes([fixed[9], fixed[10]]) as usize;
    let mut kdf_text = vec![0u8; n];
    src.read_exact(&mut kdf_text).map_err(rd)?;
    let kdf = std::str::from_utf8(&kdf_text)
        .ok()
        .and_then(KdfParams::decode)
        .ok_or_else(|| bad(input, "unreadable KDF parameters"))?;
    if kdf.m_kib > 4 * 1024 * 1024 || kdf.t > 64 || kdf.p > 64 {
        return Err(bad(
            input,
            "KDF parameters beyond what cinta writes; refusing",
        ));
    }
    let mut prefix = [0u8; 7];
    src.read_exact(&mut prefix).map_err(rd)?;
    let mut header = fixed.to_vec();
    header.extend_from_slice(&kdf_text);
    header.extend_from_slice(&prefix);
    let key = key_for(passphrase, &kdf)?;

    let io = |e| Error::io(format!("write {}", out.display()), e);
    let _ = std::fs::remove_file(out);
    let mut dst = std::io::BufWriter::new(crate::private::create_file(out).map_err(io)?);
    let mut counter: u32 = 0;
    let mut buf = vec![0u8; CHUNK + TAG];
    loop {
        let mut got = 0;
        while got < buf.len() {
            let r = src.read(&mut buf[got..]).map_err(rd)?;
            if r == 0 {
                break;
            }
            got += r;
        }
        if got < TAG {
            return Err(bad(input, "cut short: its last chunk is missing"));
        }
        let last = got < buf.len() || src.fill_buf_is_empty()?;
        let mut chunk = buf[..got].to_vec();
        let plain = key
            .open_in_place(
                nonce(&prefix, counter, last),
                Aad::from(&header),
                &mut chunk,
            )
            .map_err(|_| {
                bad(
                    input,
                    if counter == 0 {
                        "does not open: wrong backup passphrase, or the backup was altered"
                            .to_string()
                    } else {
                        format!(
                            "chunk {counter} does not authenticate: the backup was altered or cut"
                        )
                    },
                )
            })?;
        dst.write_all(plain).map_err(io)?;
        if last {
            break;
        }
        counter += 1;
    }
    let f = dst.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    Ok(())
}

trait FillBufIsEmpty {
    fn fill_buf_is_empty(&mut self) -> Result<bool>;
}

impl<R: Read> FillBufIsEmpty for std::io::BufReader<R> {
    fn fill_buf_is_empty(&mut self) -> Result<bool> {
        use std::io::BufRead;
        self.fill_buf()
            .map(|b| b.is_empty())
            .map_err(|e| Error::io("read backup", e))
    }
}

/// Restores a backup over the keystore at `keystore`, which no server may be using.
///
/// The backup is decrypted beside the keystore and opened with the master
/// key first; only if that works is the old keystore moved aside (to
/// `KEYSTORE.before-restore-TIME`) and the restored one put in its place.
pub fn restore(
    input: &Path,
    passphrase: &str,
    keystore: &Path,
    master: &Source,
    now: i64,
) -> Result<(usize, Option<PathBuf>)> {
    let staged = keystore.with_extension("restoring");
    let _ = std::fs::remove_file(&staged);
    open_file(input, &staged, passphrase).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })?;
    let objects = match Store::open(&staged, master) {
        Ok(s) => s.count_objects()? as usize,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(bad(
                input,
                format!("the restored keystore does not open: {e}"),
            ));
        }
    };
    let mut aside = None;
    if keystore.exists() {
        let a = PathBuf::from(format!("{}.before-restore-{now}", keystore.display()));
        std::fs::rename(keystore, &a)
            .map_err(|e| Error::io(format!("move {} aside", keystore.display()), e))?;
        for ext in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{ext}", keystore.display()));
            if side.exists() {
                let _ = std::fs::rename(&side, format!("{}{ext}", a.display()));
            }
        }
        aside = Some(a);
    }
    std::fs::rename(&staged, keystore)
        .map_err(|e| Error::io(format!("rename to {}", keystore.display()), e))?;
    if let Some(d) = keystore.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok((objects, aside))
}
