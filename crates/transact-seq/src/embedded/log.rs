//! The append-only log: file header, record framing, writing and scanning.
//!
//! A log file is a 24-byte header followed by records:
//!
//! ```text
//! header  = magic "TSEQWAL\0" (8) | format version u32 LE | generation u64 LE
//!           | crc32 of the previous 20 bytes u32 LE
//! record  = payload length u32 LE | crc32 of payload u32 LE | payload
//! payload = MessagePack (rmp-serde) of Record::Append { user, actions }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Cursor, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::SyncPolicy;
use super::files::{io_err, read_full, remove_if_exists, sync_dir, tmp_path};
use super::report::DamageReason;
use crate::{Action, SeqError, UserId};

/// Magic bytes at the start of every log file.
pub(crate) const LOG_MAGIC: [u8; 8] = *b"TSEQWAL\0";
/// Version of the log and snapshot formats.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Length of the log file header.
pub(crate) const LOG_HEADER_LEN: u64 = 24;
/// Length of a record's length + checksum prefix.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Largest payload the store writes (and accepts when reading).
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

/// A log record as written (borrows the actions).
#[derive(Serialize)]
#[serde(rename = "Record")]
enum RecordRef<'a> {
    Append { user: UserId, actions: &'a [Action] },
}

/// A log record as read back.
#[derive(Debug, Deserialize)]
pub(crate) enum Record {
    /// Actions appended for one user, in the order given.
    Append {
        /// The user.
        user: UserId,
        /// The actions.
        actions: Vec<Action>,
    },
}

/// The header of log `generation`.
pub(crate) fn header_bytes(generation: u64) -> [u8; LOG_HEADER_LEN as usize] {
    let mut h = [0u8; LOG_HEADER_LEN as usize];
    h[..8].copy_from_slice(&LOG_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Checks a log header; the error says what is wrong.
fn check_header(h: &[u8; LOG_HEADER_LEN as usize], generation: u64) -> Result<(), String> {
    if h[..8] != LOG_MAGIC {
        return Err("not a log file (bad magic)".into());
    }
    let crc = crc32fast::hash(&h[..20]);
    if crc != le_u32(&h[20..24]) {
        return Err("log header checksum mismatch".into());
    }
    let version = le_u32(&h[8..12]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported log format version {version} (expected {FORMAT_VERSION})"
        ));
    }
    let g = le_u64(&h[12..20]);
    if g != generation {
        return Err(format!(
            "header says generation {g}, file name says {generation}"
        ));
    }
    Ok(())
}

/// Encodes an append record with its 8-byte prefix into `frame` (cleared first).
pub(crate) fn encode_append(
    frame: &mut Vec<u8>,
    user: UserId,
    actions: &[Action],
) -> Result<(), SeqError> {
    frame.clear();
    frame.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    rmp_serde::encode::write(frame, &RecordRef::Append { user, actions }).map_err(|e| {
        SeqError::Unavailable(format!("user {user}: could not encode the log record: {e}"))
    })?;
    let len = frame.len() - RECORD_HEADER_LEN;
    if len > MAX_RECORD_BYTES {
        return Err(SeqError::BatchTooLarge {
            user,
            actions: actions.len(),
            bytes: len,
            max_bytes: MAX_RECORD_BYTES,
        });
    }
    let crc = crc32fast::hash(&frame[RECORD_HEADER_LEN..]);
    // `len` fits: MAX_RECORD_BYTES < u32::MAX.
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A test-only injected failure of the next write or sync.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Write half of the frame, then fail; the rollback truncation succeeds.
    PartialWrite,
    /// Write half of the frame, then fail, and fail the rollback too.
    PartialWriteNoRollback,
    /// Write the frame, then fail the sync.
    SyncFails,
}

/// Why a log append failed, and whether the file is still in a known state.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    /// The error for the caller.
    pub(crate) error: SeqError,
    /// False when the file may hold a partial record or unsynced data whose
    /// fate is unknown: the store must refuse further appends.
    pub(crate) log_intact: bool,
}

/// The open log file new records are appended to.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
    generation: u64,
    len: u64,
    unsynced: u64,
    policy: SyncPolicy,
    #[cfg(test)]
    pub(crate) fault: Option<Fault>,
}

impl LogWriter {
    /// Creates log `generation` in `dir` (header written, synced, renamed into
    /// place, directory synced) and opens it for appending.
    pub(crate) fn create(
        dir: &Path,
        generation: u64,
        policy: SyncPolicy,
    ) -> Result<Self, SeqError> {
        let path = super::files::log_path(dir, generation);
        let tmp = tmp_path(&path);
        let result = (|| {
            let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            f.write_all(&header_bytes(generation))
                .map_err(|e| io_err(&tmp, e))?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
            sync_dir(dir)
        })();
        if let Err(e) = result {
            let _ = remove_if_exists(&tmp);
            return Err(e);
        }
        Self::open_append(path, generation, LOG_HEADER_LEN, policy)
    }

    /// Opens an existing, checked log whose valid content ends at `len`.
    pub(crate) fn open_append(
        path: PathBuf,
        generation: u64,
        len: u64,
        policy: SyncPolicy,
    ) -> Result<Self, SeqError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(Self {
            file,
            path,
            generation,
            len,
            unsynced: 0,
            policy,
            #[cfg(test)]
            fault: None,
        })
    }

    /// The log's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one encoded frame and syncs as the policy asks.
    ///
    /// On failure the file is cut back to where it was; if that is not
    /// possible (or a sync failed), `log_intact` is false.
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<(), WriteFailure> {
        let before = self.len;
        if let Err(e) = self.write_frame(frame) {
            let log_intact = self.rollback(before).is_ok();
            return Err(WriteFailure {
                error: io_err(&self.path, e),
                log_intact,
            });
        }
        self.len += frame.len() as u64;
        self.unsynced += 1;
        let due = match self.policy {
            SyncPolicy::EveryAppend => true,
            SyncPolicy::EveryN(n) => self.unsynced >= n.max(1),
            SyncPolicy::OnClose => false,
        };
        if due {
            if let Err(e) = self.sync_file() {
                // A failed fsync leaves the fate of every unsynced byte unknown.
                let _ = self.rollback(before);
                return Err(WriteFailure {
                    error: io_err(&self.path, e),
                    log_intact: false,
                });
            }
            self.unsynced = 0;
        }
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(fault) = self.fault
            && matches!(fault, Fault::PartialWrite | Fault::PartialWriteNoRollback)
        {
            self.fault = (fault == Fault::PartialWriteNoRollback).then_some(fault);
            self.file.write_all(&frame[..frame.len() / 2])?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all(frame)
    }

    fn sync_file(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.fault == Some(Fault::SyncFails) {
            self.fault = None;
            return Err(io::Error::other("injected sync failure"));
        }
        self.file.sync_data()
    }

    /// Cuts the file back to `len` bytes after a failed write.
    fn rollback(&mut self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.fault == Some(Fault::PartialWriteNoRollback) {
            self.fault = None;
            return Err(io::Error::other("injected rollback failure"));
        }
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    /// Forces every appended record to stable storage.
    pub(crate) fn sync(&mut self) -> Result<(), SeqError> {
        self.sync_file().map_err(|e| io_err(&self.path, e))?;
        self.unsynced = 0;
        Ok(())
    }

    /// Whether records were appended since the last sync.
    pub(crate) fn has_unsynced(&self) -> bool {
        self.unsynced > 0
    }
}

/// The result of scanning a log file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Good records found (and handed to the callback).
    pub(crate) records: u64,
    /// Length of the file up to the end of the last good record.
    pub(crate) good_len: u64,
    /// Length of the file.
    pub(crate) file_len: u64,
    /// The first damaged record: offset and reason.
    pub(crate) damage: Option<(u64, DamageReason)>,
}

/// Reads log `generation` at `path`, handing each good record to `on_record`
/// in order with the offset just past it, and stops at the first damaged
/// record.
///
/// A bad header on a file long enough to hold one is an error (the file is
/// not a log of this store); a file too short for a header reports
/// [`DamageReason::ShortFileHeader`].
pub(crate) fn scan(
    path: &Path,
    generation: u64,
    mut on_record: impl FnMut(Record, u64),
) -> Result<Scan, SeqError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut scan = Scan {
        records: 0,
        good_len: 0,
        file_len,
        damage: None,
    };

    let mut header = [0u8; LOG_HEADER_LEN as usize];
    let n = read_full(&mut r, &mut header).map_err(|e| io_err(path, e))?;
    if n < header.len() {
        scan.damage = Some((0, DamageReason::ShortFileHeader));
        return Ok(scan);
    }
    check_header(&header, generation).map_err(|detail| SeqError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut offset = LOG_HEADER_LEN;
    scan.good_len = offset;

    let mut payload = Vec::new();
    loop {
        let mut prefix = [0u8; RECORD_HEADER_LEN];
        let n = read_full(&mut r, &mut prefix).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        if n < RECORD_HEADER_LEN {
            scan.damage = Some((offset, DamageReason::ShortRecordHeader));
            break;
        }
        let len = le_u32(&prefix[..4]);
        let stored = le_u32(&prefix[4..]);
        if len as usize > MAX_RECORD_BYTES {
            scan.damage = Some((offset, DamageReason::OversizedRecord { length: len }));
            break;
        }
        let available = file_len.saturating_sub(offset + RECORD_HEADER_LEN as u64);
        if u64::from(len) > available {
            scan.damage = Some((
                offset,
                DamageReason::ShortPayload {
                    expected: len,
                    available,
                },
            ));
            break;
        }
        payload.resize(len as usize, 0);
        let got = read_full(&mut r, &mut payload).map_err(|e| io_err(path, e))?;
        if got < payload.len() {
            // The file shrank while being read.
            let available = got as u64;
            scan.damage = Some((
                offset,
                DamageReason::ShortPayload {
                    expected: len,
                    available,
                },
            ));
            break;
        }
        let computed = crc32fast::hash(&payload);
        if computed != stored {
            scan.damage = Some((offset, DamageReason::ChecksumMismatch { stored, computed }));
            break;
        }
        let record = match decode_record(&payload) {
            Ok(rec) => rec,
            Err(e) => {
                scan.damage = Some((offset, DamageReason::Undecodable(e)));
                break;
            }
        };
        offset += RECORD_HEADER_LEN as u64 + u64::from(len);
        on_record(record, offset);
        scan.records += 1;
        scan.good_len = offset;
    }
    Ok(scan)
}

/// Decodes one payload, which must be exactly one record.
fn decode_record(payload: &[u8]) -> Result<Record, String> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(payload));
    let rec = Record::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = de.position();
    if used != payload.len() as u64 {
        return Err(format!(
            "{} trailing bytes after the record",
            payload.len() as u64 - used
        ));
    }
    Ok(rec)
}

/// Cuts a log file to `len` bytes and syncs it.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), SeqError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.set_len(len).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActionType, Surface};

    #[test]
    fn record_round_trips_and_rejects_trailing_bytes() {
        let actions = vec![
            Action {
                item_id: 7,
                action_type: ActionType(2),
                timestamp_ms: 123,
                surface: Surface(1),
            },
            Action {
                item_id: u64::MAX,
                action_type: ActionType(0),
                timestamp_ms: 0,
                surface: Surface(9),
            },
        ];
        let mut frame = Vec::new();
        encode_append(&mut frame, 42, &actions).expect("encode");
        let len = le_u32(&frame[..4]) as usize;
        assert_eq!(len, frame.len() - RECORD_HEADER_LEN);
        assert_eq!(le_u32(&frame[4..8]), crc32fast::hash(&frame[8..]));
        let Record::Append {
            user,
            actions: back,
        } = decode_record(&frame[8..]).expect("decode");
        assert_eq!(user, 42);
        assert_eq!(back, actions);
        let mut longer = frame[8..].to_vec();
        longer.push(0);
        assert!(decode_record(&longer).is_err());
    }

    #[test]
    fn header_checks() {
        let h = header_bytes(5);
        assert!(check_header(&h, 5).is_ok());
        assert!(
            check_header(&h, 6)
                .expect_err("generation")
                .contains("generation")
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert!(check_header(&bad, 5).expect_err("magic").contains("magic"));
        let mut bad = h;
        bad[13] ^= 1;
        assert!(check_header(&bad, 5).expect_err("crc").contains("checksum"));
    }
}
