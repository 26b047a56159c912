//! Snapshot files: the whole state at the end of a log generation.
//!
//! ```text
//! header  = magic "TSEQSNAP" (8) | format version u32 LE | generation u64 LE
//! body    = MessagePack (rmp-serde) values, one after another:
//!           SnapHead { generation, users, actions }
//!           then `users` × SnapUser { user, item_ids, action_types,
//!                                     timestamps_ms, surfaces }   (columns newest first)
//! trailer = body length u64 LE | crc32 of body u32 LE | magic "TSEQEND\0" (8)
//! ```
//!
//! `snapshot-<g>.msgpack` holds the state after every record of logs
//! `< g`; log `g` continues from it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::files::{io_err, read_full, remove_if_exists, snapshot_path, sync_dir, tmp_path};
use super::history::UserHistory;
use super::log::FORMAT_VERSION;
use crate::{ItemId, SeqError, UserId};

const SNAP_MAGIC: [u8; 8] = *b"TSEQSNAP";
const END_MAGIC: [u8; 8] = *b"TSEQEND\0";
const HEADER_LEN: u64 = 20;
const TRAILER_LEN: u64 = 20;

#[derive(Serialize, Deserialize)]
struct SnapHead {
    generation: u64,
    users: u64,
    actions: u64,
}

#[derive(Serialize)]
struct SnapUserRef<'a> {
    user: UserId,
    item_ids: &'a VecDeque<ItemId>,
    action_types: &'a VecDeque<u16>,
    timestamps_ms: &'a VecDeque<i64>,
    surfaces: &'a VecDeque<u16>,
}

#[derive(Deserialize)]
struct SnapUser {
    user: UserId,
    item_ids: Vec<ItemId>,
    action_types: Vec<u16>,
    timestamps_ms: Vec<i64>,
    surfaces: Vec<u16>,
}

/// A writer that checksums and counts what passes through.
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checksums what passes through.
struct CrcReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes `snapshot-<generation>.msgpack` in `dir` from `users` (sorted by
/// id): to a temp file, synced, renamed into place, directory synced.
/// Returns the file size.
pub(crate) fn write(
    dir: &Path,
    generation: u64,
    users: &[(UserId, Arc<RwLock<UserHistory>>)],
) -> Result<u64, SeqError> {
    let path = snapshot_path(dir, generation);
    let tmp = tmp_path(&path);
    let result = write_tmp(&tmp, generation, users).and_then(|size| {
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        sync_dir(dir)?;
        Ok(size)
    });
    if result.is_err() {
        let _ = remove_if_exists(&tmp);
    }
    result
}

fn write_tmp(
    tmp: &Path,
    generation: u64,
    users: &[(UserId, Arc<RwLock<UserHistory>>)],
) -> Result<u64, SeqError> {
    let io = |e: io::Error| io_err(tmp, e);
    let encode = |e: rmp_serde::encode::Error| io_err(tmp, io::Error::other(e));
    let file = File::create(tmp).map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&SNAP_MAGIC).map_err(io)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&generation.to_le_bytes()).map_err(io)?;

    let mut body = CrcWriter {
        inner: &mut out,
        hasher: crc32fast::Hasher::new(),
        count: 0,
    };
    let actions: u64 = users.iter().map(|(_, h)| h.read().len() as u64).sum();
    let head = SnapHead {
        generation,
        users: users.len() as u64,
        actions,
    };
    rmp_serde::encode::write(&mut body, &head).map_err(encode)?;
    for (user, history) in users {
        let h = history.read();
        let (item_ids, action_types, timestamps_ms, surfaces) = h.columns();
        let rec = SnapUserRef {
            user: *user,
            item_ids,
            action_types,
            timestamps_ms,
            surfaces,
        };
        rmp_serde::encode::write(&mut body, &rec).map_err(encode)?;
    }
    let body_len = body.count;
    let crc = body.hasher.finalize();

    out.write_all(&body_len.to_le_bytes()).map_err(io)?;
    out.write_all(&crc.to_le_bytes()).map_err(io)?;
    out.write_all(&END_MAGIC).map_err(io)?;
    let file = out.into_inner().map_err(|e| io_err(tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(HEADER_LEN + body_len + TRAILER_LEN)
}

/// Reads and checks `snapshot-<generation>.msgpack` at `path`, keeping the
/// newest `capacity` actions per user.
///
/// Damage of any kind is [`SeqError::Corrupt`]; failing to read the file is
/// [`SeqError::Io`].
pub(crate) fn read(
    path: &Path,
    generation: u64,
    capacity: usize,
) -> Result<Vec<(UserId, UserHistory)>, SeqError> {
    let corrupt = |detail: String| SeqError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let io = |e: io::Error| io_err(path, e);

    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(format!(
            "{file_len} bytes is too short for a snapshot"
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    read_full(&mut file, &mut header).map_err(io)?;
    if header[..8] != SNAP_MAGIC {
        return Err(corrupt("not a snapshot file (bad magic)".into()));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported snapshot format version {version} (expected {FORMAT_VERSION})"
        )));
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[12..20]);
    let g = u64::from_le_bytes(g);
    if g != generation {
        return Err(corrupt(format!(
            "header says generation {g}, file name says {generation}"
        )));
    }

    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.seek(SeekFrom::Start(file_len - TRAILER_LEN))
        .map_err(io)?;
    read_full(&mut file, &mut trailer).map_err(io)?;
    if trailer[12..20] != END_MAGIC {
        return Err(corrupt("trailer magic missing (incomplete file?)".into()));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&trailer[..8]);
    let body_len = u64::from_le_bytes(n);
    let stored_crc = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
    if body_len != file_len - HEADER_LEN - TRAILER_LEN {
        return Err(corrupt(format!(
            "trailer says {body_len} body bytes, the file holds {}",
            file_len - HEADER_LEN - TRAILER_LEN
        )));
    }

    file.seek(SeekFrom::Start(HEADER_LEN)).map_err(io)?;
    let mut body = CrcReader {
        inner: BufReader::with_capacity(1 << 20, file).take(body_len),
        hasher: crc32fast::Hasher::new(),
    };
    let decoded = decode_body(&mut body, generation, capacity);
    // Checksum the whole body even when decoding stopped early, so damage is
    // reported as a checksum failure rather than as whatever decode tripped on.
    io::copy(&mut body, &mut io::sink()).map_err(io)?;
    let computed = body.hasher.finalize();
    if computed != stored_crc {
        return Err(corrupt(format!(
            "body checksum mismatch (stored {stored_crc:#010x}, computed {computed:#010x})"
        )));
    }
    decoded.map_err(corrupt)
}

fn decode_body(
    body: &mut impl Read,
    generation: u64,
    capacity: usize,
) -> Result<Vec<(UserId, UserHistory)>, String> {
    let mut de = rmp_serde::Deserializer::new(&mut *body);
    let head = SnapHead::deserialize(&mut de).map_err(|e| format!("head: {e}"))?;
    if head.generation != generation {
        return Err(format!(
            "body says generation {}, expected {generation}",
            head.generation
        ));
    }
    let mut users = Vec::with_capacity(usize::try_from(head.users).unwrap_or(0).min(1 << 20));
    let mut actions = 0u64;
    for i in 0..head.users {
        let u = SnapUser::deserialize(&mut de).map_err(|e| format!("user entry {i}: {e}"))?;
        actions += u.item_ids.len() as u64;
        if u.item_ids.is_empty() {
            return Err(format!("user {} has an empty history", u.user));
        }
        if let Some(&(prev, _)) = users.last()
            && prev >= u.user
        {
            return Err(format!("user ids not strictly increasing at entry {i}"));
        }
        let h = UserHistory::from_columns(
            u.item_ids,
            u.action_types,
            u.timestamps_ms,
            u.surfaces,
            capacity,
        )
        .map_err(|e| format!("user {}: {e}", u.user))?;
        users.push((u.user, h));
    }
    if actions != head.actions {
        return Err(format!(
            "head says {} actions, entries hold {actions}",
            head.actions
        ));
    }
    drop(de);
    let mut probe = [0u8; 1];
    if read_full(body, &mut probe).map_err(|e| e.to_string())? != 0 {
        return Err("bytes left over after the last user entry".into());
    }
    Ok(users)
}
