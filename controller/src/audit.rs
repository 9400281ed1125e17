//! The tamper-evident audit log: every console action and every event as a record chained to the one before it (SHA-256), each record MACed and the chain's head signed (HMAC-SHA256 under the controller's audit key), so that a record changed, removed or inserted, or a tail cut off, is found and named by [`Verifier`].
//!
//! No catalog and no clock here: rows come in and go out as values; the
//! catalog stores them (table `audit`, the signed head in `meta`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// 1, 2, 3... without gaps.
    pub seq: i64,
    /// When (seconds since 1970).
    pub at: i64,
    /// The entry, as JSON ([`Entry`]).
    pub body: String,
    /// SHA-256 of the previous record (hex; zeros for the first).
    pub prev: String,
    /// HMAC-SHA256 of this record under the audit key (hex).
    pub mac: String,
}

/// What a record says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The operator, or "controller" for what the controller did itself.
    pub who: String,
    /// The role the action needed ("" for the controller's own events).
    pub role: String,
    /// The console method, or the event's kind.
    pub action: String,
    /// The request's arguments, or the event's text.
    pub args: String,
    /// "ok", the error, or "event".
    pub result: String,
    /// The caller's address ("" for the controller's own events).
    pub from: String,
}

impl AuditRow {
    pub fn entry(&self) -> Option<Entry> {
        serde_json::from_str(&self.body).ok()
    }
}

/// The signed head: the last record's number and hash, and their MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub mac: String,
}

impl Head {
    /// As kept in the catalog's `meta` (key [`HEAD_META`]).
    pub fn to_text(&self) -> String {
        format!("{} {} {}", self.seq, self.hash, self.mac)
    }
    pub fn parse(s: &str) -> Option<Head> {
        let mut it = s.split(' ');
        let h = Head {
            seq: it.next()?.parse().ok()?,
            hash: it.next()?.to_string(),
            mac: it.next()?.to_string(),
        };
        it.next().is_none().then_some(h)
    }
}

/// The `meta` key of the signed head.
pub const HEAD_META: &str = "audit_head";

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The controller's audit key (HMAC-SHA256): 32 random bytes in a file of mode 0600.
#[derive(Clone)]
pub struct AuditKey(ring::hmac::Key);

impl AuditKey {
    pub fn new(bytes: &[u8]) -> AuditKey {
        AuditKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// Reads the key at `path`, making one (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<AuditKey> {
        let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
        match std::fs::read_to_string(path) {
            Ok(t) => {
                let t = t.trim();
                unhex(t)
                    .filter(|b| b.len() == 32)
                    .map(|b| AuditKey::new(&b))
                    .ok_or_else(|| Error::Config {
                        path: path.to_owned(),
                        message: "the audit key must be 64 hex digits (32 bytes)".into(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use ring::rand::SecureRandom;
                let mut b = [0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| Error::Config {
                        path: path.to_owned(),
                        message: "no randomness for a new audit key".into(),
                    })?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io(format!("create the audit key {}", path.display())))?;
                f.write_all(format!("{}\n", hex(&b)).as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(io(format!("write the audit key {}", path.display())))?;
                tracing::info!(path = %path.display(), "made a new audit key");
                Ok(AuditKey::new(&b))
            }
            Err(e) => Err(io(format!("read the audit key {}", path.display()))(e)),
        }
    }

    fn sign(&self, data: &[u8]) -> String {
        hex(ring::hmac::sign(&self.0, data).as_ref())
    }

    fn checks(&self, data: &[u8], mac: &str) -> bool {
        let Some(m) = unhex(mac) else {
            return false;
        };
        ring::hmac::verify(&self.0, data, &m).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// What a record's MAC covers: its number, time, the previous hash and its body.
fn covered(seq: i64, at: i64, prev: &str, body: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + prev.len() + body.len());
    v.extend_from_slice(b"cinta audit 1\0");
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&at.to_be_bytes());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(&(body.len() as u64).to_be_bytes());
    v.extend_from_slice(body.as_bytes());
    v
}

/// The SHA-256 the next record carries: of everything this one holds.
pub fn hash(r: &AuditRow) -> String {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(&covered(r.seq, r.at, &r.prev, &r.body));
    c.update(r.mac.as_bytes());
    hex(c.finish().as_ref())
}

fn head_covered(seq: i64, hash: &str) -> Vec<u8> {
    let mut v = b"cinta audit head 1\0".to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(hash.as_bytes());
    v
}

/// Where the next record goes: its number and the hash it carries.
pub struct Chain {
    key: AuditKey,
    next_seq: i64,
    prev: String,
}

impl Chain {
    /// Continues the chain after the signed head. When the stored records
    /// end elsewhere (a tail cut off, or records added without the key),
    /// the chain goes on from the head, so the damage stays visible to
    /// [`Verifier`]; the second value says what was found.
    pub fn open(
        key: AuditKey,
        head: Option<Head>,
        last: Option<&AuditRow>,
    ) -> (Chain, Option<String>) {
        let valid_head = head.filter(|h| key.checks(&head_covered(h.seq, &h.hash), &h.mac));
        let warning = match (&valid_head, last) {
            (Some(h), Some(l)) if h.seq == l.seq && h.hash == hash(l) => None,
            (None, None) => None,
            (Some(h), Some(l)) => Some(format!(
                "the audit log ends at record {} but its signed head is record {}",
                l.seq, h.seq
            )),
            (Some(h), None) => Some(format!(
                "the audit log is empty but its signed head is record {}",
                h.seq
            )),
            (None, Some(l)) => Some(format!(
                "the audit log has {} records but no valid signed head",
                l.seq
            )),
        };
        let (next_seq, prev) = match (valid_head, last) {
            // Records stored past the head without the key hold its
            // numbers: go on after them, from the head's hash.
            (Some(h), Some(l)) if l.seq > h.seq => (l.seq + 1, h.hash),
            (Some(h), _) => (h.seq + 1, h.hash),
            // No valid head: go on after the highest record, whatever it is.
            (None, Some(l)) => (l.seq + 1, hash(l)),
            (None, None) => (1, ZERO.to_string()),
        };
        (
            Chain {
                key,
                next_seq,
                prev,
            },
            warning,
        )
    }

    /// The next record and the head that signs it (stored together, or not at all).
    pub fn next(&self, at: i64, entry: &Entry) -> (AuditRow, Head) {
        let body = serde_json::to_string(entry).unwrap_or_default();
        let seq = self.next_seq;
        let mac = self.key.sign(&covered(seq, at, &self.prev, &body));
        let row = AuditRow {
            seq,
            at,
            body,
            prev: self.prev.clone(),
            mac,
        };
        let h = hash(&row);
        let head = Head {
            seq,
            mac: self.key.sign(&head_covered(seq, &h)),
            hash: h,
        };
        (row, head)
    }

    /// After the record was stored: the chain moves on.
    pub fn advance(&mut self, head: &Head) {
        self.next_seq = head.seq + 1;
        self.prev = head.hash.clone();
    }

    /// A record numbered `seq` is stored already, though the chain did not
    /// write it (inserted without the key): the next record goes after it,
    /// still following the signed head, so [`Verifier`] names the intruder.
    pub fn skip_past(&mut self, seq: i64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub records: u64,
    pub head: Option<i64>,
    /// The first problem, naming the record; None: the log is intact.
    pub problem: Option<String>,
}

/// Checks records in order (fed a page at a time, with one record of
/// lookahead), then the signed head. Stops at the first problem.
pub struct Verifier<'k> {
    key: &'k AuditKey,
    expected: i64,
    prev: String,
    count: u64,
    problem: Option<String>,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k AuditKey) -> Verifier<'k> {
        Verifier {
            key,
            expected: 1,
            prev: ZERO.to_string(),
            count: 0,
            problem: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// Checks `r`, the record after the last one fed; `next` is the one after it, if any.
    pub fn feed(&mut self, r: &AuditRow, next: Option<&AuditRow>) {
        if self.problem.is_some() {
            return;
        }
        let mac_ok = self
            .key
            .checks(&covered(r.seq, r.at, &r.prev, &r.body), &r.mac);
        if !mac_ok {
            // A record with no valid MAC that the chain steps over (the next
            // record follows the one before it) was put in; any other was changed.
            // (The next one may have been renumbered to make room: its
            // MAC then holds for the number it had.)
            let stepped_over = next.is_some_and(|n| {
                n.prev == self.prev
                    && [n.seq, n.seq - 1].iter().any(|&seq| {
                        self.key
                            .checks(&covered(seq, n.at, &n.prev, &n.body), &n.mac)
                    })
            });
            self.problem = Some(if stepped_over {
                format!("a record was inserted at {} (it has no valid MAC, and the record after it follows record {})", r.seq, self.expected - 1)
            } else {
                format!(
                    "record {} was changed: its MAC does not match what it holds",
                    r.seq
                )
            });
            return;
        }
        if r.seq > self.expected {
            self.problem = Some(if r.seq == self.expected + 1 {
                format!("record {} was removed", self.expected)
            } else {
                format!("records {} to {} were removed", self.expected, r.seq - 1)
            });
            return;
        }
        if r.seq < self.expected || r.prev != self.prev {
            self.problem = Some(format!(
                "record {} does not follow record {}: records were reordered or replaced",
                r.seq,
                self.expected - 1
            ));
            return;
        }
        self.count += 1;
        self.expected = r.seq + 1;
        self.prev = hash(r);
    }

    /// Checks the signed head against where the records ended.
    pub fn finish(mut self, head: Option<&Head>) -> Report {
        let last = self.expected - 1;
        if self.problem.is_none() {
            self.problem = match head {
                None if last == 0 => None,
                None => Some(format!(
                    "the log has {last} records but no signed head: the head was removed"
                )),
                Some(h) if !self.key.checks(&head_covered(h.seq, &h.hash), &h.mac) => Some(
                    "the signed head was altered (its MAC does not match), or the audit key is not the one that signed it".into(),
                ),
                Some(h) if h.seq > last => Some(if h.seq == last + 1 {
                    format!("record {} was removed from the end (the signed head is record {})", h.seq, h.seq)
                } else {
                    format!(
                        "records {} to {} were removed from the end (the signed head is record {})",
                        last + 1,
                        h.seq,
                        h.seq
                    )
                }),
                Some(h) if h.seq < last => Some(format!(
                    "record {} and after were added after the signed head (record {})",
                    h.seq + 1,
                    h.seq
                )),
                Some(h) if h.hash != self.prev => Some(format!(
                    "record {} does not match the signed head",
                    h.seq
                )),
                Some(_) => None,
            };
        }
        Report {
            records: self.count,
            head: head.map(|h| h.seq),
            problem: self.problem,
        }
    }
}

/// Records read a page at a time for [`verify_pages`].
pub const PAGE: u32 = 10_000;

/// Verifies a whole log read through `page(after)` (the records numbered
/// above `after`, in order, at most [`PAGE`]); memory holds two pages.
pub fn verify_pages(
    key: &AuditKey,
    head: Option<&str>,
    mut page: impl FnMut(i64) -> Result<Vec<AuditRow>>,
) -> Result<Report> {
    let head = match head.map(|h| Head::parse(h).ok_or(h)) {
        Some(Err(h)) => {
            return Ok(Report {
                records: 0,
                head: None,
                problem: Some(format!("the signed head is unreadable: {h:?}")),
            })
        }
        Some(Ok(h)) => Some(h),
        None => None,
    };
    let mut v = Verifier::new(key);
    let mut this = page(0)?;
    while !this.is_empty() && !v.failed() {
        let last = this.last().map(|r| r.seq).unwrap_or(0);
        let next = page(last)?;
        for (i, r) in this.iter().enumerate() {
            v.feed(r, this.get(i + 1).or(next.first()));
        }
        this = next;
    }
    Ok(v.finish(head.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(&[7u8; 32])
    }

    fn chain(n: i64) -> (Vec<AuditRow>, Head) {
        let (mut c, w) = Chain::open(key(), None, None);
        assert!(w.is_none());
        let mut rows = Vec::new();
        let mut head = None;
        for i in 0..n {
            let e = Entry {
                who: "ana".into(),
                role: "operator".into(),
                action: format!("Action{i}"),
                args: "{}".into(),
                result: "ok".into(),
                from: "127.0.0.1".into(),
            };
            let (r, h) = c.next(1000 + i, &e);
            c.advance(&h);
            rows.push(r);
            head = Some(h);
        }
        (rows, head.unwrap())
    }

    fn verify(rows: &[AuditRow], head: Option<&Head>) -> Report {
        let k = key();
        let mut v = Verifier::new(&k);
        for (i, r) in rows.iter().enumerate() {
            v.feed(r, rows.get(i + 1));
        }
        v.finish(head)
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let (rows, head) = chain(10);
        let ok = verify(&rows, Some(&head));
        assert_eq!(ok.problem, None, "{ok:?}");
        assert_eq!(ok.records, 10);

        let mut changed = rows.clone();
        changed[4].body = changed[4].body.replace("ana", "bob");
        assert_eq!(
            verify(&changed, Some(&head)).problem.unwrap(),
            "record 5 was changed: its MAC does not match what it holds"
        );

        let mut removed = rows.clone();
        removed.remove(3);
        assert_eq!(
            verify(&removed, Some(&head)).problem.unwrap(),
            "record 4 was removed"
        );

        let mut inserted = rows.clone();
        let mut forged = rows[2].clone();
        forged.seq = 4;
        forged.body = forged.body.replace("Action2", "Forged");
        inserted.insert(3, forged);
        for r in inserted.iter_mut().skip(4) {
            r.seq += 1;
        }
        let p = verify(&inserted, Some(&head)).problem.unwrap();
        assert!(p.starts_with("a record was inserted at 4"), "{p}");

        let cut = &rows[..7];
        assert_eq!(
            verify(cut, Some(&head)).problem.unwrap(),
            "records 8 to 10 were removed from the end (the signed head is record 10)"
        );

        // A chain recomputed without the key fails at the first changed record.
        let mut rewritten = rows.clone();
        rewritten[6].body = rewritten[6].body.replace("ana", "eve");
        for i in 7..rewritten.len() {
            rewritten[i].prev = hash(&rewritten[i - 1]);
        }
        assert!(verify(&rewritten, Some(&head))
            .problem
            .unwrap()
            .starts_with("record 7 was changed"));

        // After a cut, the chain goes on from the signed head: the gap stays visible.
        let (c, w) = Chain::open(key(), Some(head.clone()), cut.last());
        assert!(w.unwrap().contains("ends at record 7"));
        let (r, h) = c.next(
            5000,
            &Entry {
                who: "controller".into(),
                role: String::new(),
                action: "x".into(),
                args: String::new(),
                result: "event".into(),
                from: String::new(),
            },
        );
        let mut after = cut.to_vec();
        after.push(r);
        assert_eq!(
            verify(&after, Some(&h)).problem.unwrap(),
            "records 8 to 10 were removed"
        );
        assert_eq!(Head::parse(&h.to_text()), Some(h));
    }
}
