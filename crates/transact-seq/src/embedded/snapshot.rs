//! Snapshot files: the whole state at the end of a log generation.
//!
//! ```text
//! header  = magic "TSEQSNAP" (8) | format version u32 LE (3) | generation u64 LE
//! body    = MessagePack (rmp-serde) values, one after another:
//!           SnapHead { generation, users, actions = 0 }
//!           then `users` × SnapUser { user, realtime, lifelong, impressions,
//!                                     applied: (generation, end offset) }
//!           each sequence { item_ids, action_types, timestamps_ms, surfaces }
//!           (columns newest first; lifelong action_types are u64 multi-hot masks)
//!           then SnapEnd { actions }
//! trailer = body length u64 LE | crc32 of body u32 LE | magic "TSEQEND\0" (8)
//! ```
//!
//! Version 1 (before the lifelong and impression sequences) held only the
//! realtime columns, flat in SnapUser; it is still read: its actions are
//! routed into the three sequences as appends would be.
//!
//! Version 2 had no `applied` and counted the actions in the head.
//!
//! `snapshot-<g>.msgpack` holds the state after every record of logs
//! `< g`, and, per user, possibly some records of log `g` itself: it is
//! written while appends go on into log `g`, each user under that user's
//! read lock. `applied` is the end of the last record a user's entry
//! holds; replaying log `g` skips each user's records up to it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::config::StoreConfig;
use super::files::{io_err, read_full, remove_if_exists, snapshot_path, sync_dir, tmp_path};
use super::history::{ColumnsRef, Ring};
use super::state::{LogPos, UserState};
use crate::{Action, ActionType, ItemId, SeqError, Surface, UserId};

/// Snapshot format version written (3: three sequences and the last
/// applied log position per user).
const SNAPSHOT_VERSION: u32 = 3;
/// Three sequences per user, without log positions; still read.
const SNAPSHOT_VERSION_2: u32 = 2;
/// The first format (realtime sequence only), still read.
const SNAPSHOT_VERSION_1: u32 = 1;

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
struct SeqRef<'a, K> {
    item_ids: &'a VecDeque<ItemId>,
    action_types: &'a VecDeque<K>,
    timestamps_ms: &'a VecDeque<i64>,
    surfaces: &'a VecDeque<u16>,
}

impl<'a, K> SeqRef<'a, K> {
    fn new((item_ids, action_types, timestamps_ms, surfaces): ColumnsRef<'a, K>) -> Self {
        Self {
            item_ids,
            action_types,
            timestamps_ms,
            surfaces,
        }
    }
}

/// The end of a version-3 body: the actions its entries hold (counted
/// while writing, since appends change them meanwhile).
#[derive(Serialize, Deserialize)]
struct SnapEnd {
    actions: u64,
}

#[derive(Serialize)]
struct SnapUserRef<'a> {
    user: UserId,
    realtime: SeqRef<'a, u16>,
    lifelong: SeqRef<'a, u64>,
    impressions: SeqRef<'a, u16>,
    applied: LogPos,
}

#[derive(Deserialize)]
struct Seq<K> {
    item_ids: Vec<ItemId>,
    action_types: Vec<K>,
    timestamps_ms: Vec<i64>,
    surfaces: Vec<u16>,
}

impl<K: Copy> Seq<K> {
    fn into_ring(self, capacity: usize) -> Result<Ring<K>, String> {
        Ring::from_columns(
            self.item_ids,
            self.action_types,
            self.timestamps_ms,
            self.surfaces,
            capacity,
        )
    }
}

#[derive(Deserialize)]
struct SnapUser {
    user: UserId,
    realtime: Seq<u16>,
    lifelong: Seq<u64>,
    impressions: Seq<u16>,
}

/// A version-3 user entry: a version-2 one and its last applied record.
#[derive(Deserialize)]
struct SnapUserV3 {
    user: UserId,
    realtime: Seq<u16>,
    lifelong: Seq<u64>,
    impressions: Seq<u16>,
    applied: LogPos,
}

/// A user entry of a version-1 snapshot: the realtime columns only.
#[derive(Deserialize)]
struct SnapUserV1 {
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
    users: &[(UserId, Arc<RwLock<UserState>>)],
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
    users: &[(UserId, Arc<RwLock<UserState>>)],
) -> Result<u64, SeqError> {
    let io = |e: io::Error| io_err(tmp, e);
    let encode = |e: rmp_serde::encode::Error| io_err(tmp, io::Error::other(e));
    let file = File::create(tmp).map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&SNAP_MAGIC).map_err(io)?;
    out.write_all(&SNAPSHOT_VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&generation.to_le_bytes()).map_err(io)?;

    let mut body = CrcWriter {
        inner: &mut out,
        hasher: crc32fast::Hasher::new(),
        count: 0,
    };
    let head = SnapHead {
        generation,
        users: users.len() as u64,
        actions: 0,
    };
    rmp_serde::encode::write(&mut body, &head).map_err(encode)?;
    let mut actions = 0u64;
    for (user, history) in users {
        // Each user under its own read lock, only while it is encoded:
        // appends to other users (and to this one, between entries) go on.
        let h = history.read();
        actions += h.len() as u64;
        let rec = SnapUserRef {
            user: *user,
            realtime: SeqRef::new(h.realtime.columns()),
            lifelong: SeqRef::new(h.lifelong.columns()),
            impressions: SeqRef::new(h.impressions.columns()),
            applied: h.applied,
        };
        rmp_serde::encode::write(&mut body, &rec).map_err(encode)?;
    }
    rmp_serde::encode::write(&mut body, &SnapEnd { actions }).map_err(encode)?;
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
/// newest entries of each sequence that `config`'s capacities allow.
///
/// Damage of any kind is [`SeqError::Corrupt`]; failing to read the file is
/// [`SeqError::Io`].
pub(crate) fn read(
    path: &Path,
    generation: u64,
    config: &StoreConfig,
) -> Result<Vec<(UserId, UserState)>, SeqError> {
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
    if !(SNAPSHOT_VERSION_1..=SNAPSHOT_VERSION).contains(&version) {
        return Err(corrupt(format!(
            "unsupported snapshot format version {version} (this build reads \
             {SNAPSHOT_VERSION_1} to {SNAPSHOT_VERSION})"
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
    let decoded = decode_body(&mut body, generation, version, config);
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
    version: u32,
    config: &StoreConfig,
) -> Result<Vec<(UserId, UserState)>, String> {
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
        let entry = |e| format!("user entry {i}: {e}");
        let (user, h) = if version == SNAPSHOT_VERSION_1 {
            let u = SnapUserV1::deserialize(&mut de).map_err(entry)?;
            actions += u.item_ids.len() as u64;
            (u.user, migrate_v1(u, config)?)
        } else {
            let u = if version == SNAPSHOT_VERSION_2 {
                let u = SnapUser::deserialize(&mut de).map_err(entry)?;
                SnapUserV3 {
                    user: u.user,
                    realtime: u.realtime,
                    lifelong: u.lifelong,
                    impressions: u.impressions,
                    applied: (0, 0),
                }
            } else {
                SnapUserV3::deserialize(&mut de).map_err(entry)?
            };
            actions += u.realtime.item_ids.len() as u64;
            let named = |what: &str, e: String| format!("user {} {what}: {e}", u.user);
            let realtime = u
                .realtime
                .into_ring(config.capacity_per_user.max(1))
                .map_err(|e| named("realtime", e))?;
            let lifelong = u
                .lifelong
                .into_ring(config.lifelong_capacity)
                .map_err(|e| named("lifelong", e))?;
            let impressions = u
                .impressions
                .into_ring(config.impression_capacity)
                .map_err(|e| named("impressions", e))?;
            let h = UserState {
                applied: u.applied,
                realtime,
                lifelong,
                impressions,
            };
            (u.user, h)
        };
        if h.is_empty() {
            return Err(format!("user {user} has an empty history"));
        }
        if let Some(&(prev, _)) = users.last()
            && prev >= user
        {
            return Err(format!("user ids not strictly increasing at entry {i}"));
        }
        users.push((user, h));
    }
    let counted = if version == SNAPSHOT_VERSION {
        SnapEnd::deserialize(&mut de)
            .map_err(|e| format!("end of body: {e}"))?
            .actions
    } else {
        head.actions
    };
    if actions != counted {
        return Err(format!(
            "the snapshot says {counted} actions, its entries hold {actions}"
        ));
    }
    drop(de);
    let mut probe = [0u8; 1];
    if read_full(body, &mut probe).map_err(|e| e.to_string())? != 0 {
        return Err("bytes left over after the last user entry".into());
    }
    Ok(users)
}

/// A version-1 entry (realtime columns only) as three sequences: its
/// actions, oldest first, routed as appends would route them.
fn migrate_v1(u: SnapUserV1, config: &StoreConfig) -> Result<UserState, String> {
    let n = u.item_ids.len();
    if u.action_types.len() != n || u.timestamps_ms.len() != n || u.surfaces.len() != n {
        return Err(format!("user {}: column lengths differ", u.user));
    }
    if let Some(i) = u.timestamps_ms.windows(2).position(|w| w[0] < w[1]) {
        return Err(format!(
            "user {}: timestamps are not newest first at position {i}",
            u.user
        ));
    }
    let mut h = UserState::default();
    for i in (0..n).rev() {
        let a = Action {
            item_id: u.item_ids[i],
            action_type: ActionType(u.action_types[i]),
            timestamp_ms: u.timestamps_ms[i],
            surface: Surface(u.surfaces[i]),
        };
        h.insert(&a, config);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Serialize)]
    struct V1User {
        user: UserId,
        item_ids: Vec<ItemId>,
        action_types: Vec<u16>,
        timestamps_ms: Vec<i64>,
        surfaces: Vec<u16>,
    }

    /// A version-1 snapshot file, written as the first format did.
    fn write_v1(path: &Path, generation: u64, users: &[V1User]) {
        let mut body = Vec::new();
        let actions = users.iter().map(|u| u.item_ids.len() as u64).sum();
        let head = SnapHead {
            generation,
            users: users.len() as u64,
            actions,
        };
        rmp_serde::encode::write(&mut body, &head).unwrap();
        for u in users {
            rmp_serde::encode::write(&mut body, u).unwrap();
        }
        let mut file = Vec::new();
        file.extend_from_slice(&SNAP_MAGIC);
        file.extend_from_slice(&SNAPSHOT_VERSION_1.to_le_bytes());
        file.extend_from_slice(&generation.to_le_bytes());
        file.extend_from_slice(&body);
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        file.extend_from_slice(&END_MAGIC);
        std::fs::write(path, file).unwrap();
    }

    #[test]
    fn a_version_1_snapshot_is_routed_into_three_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-3.msgpack");
        // Newest first: an impression, a click, a repin of the same item at
        // the same time, an impression.
        write_v1(
            &path,
            3,
            &[V1User {
                user: 8,
                item_ids: vec![40, 30, 30, 20],
                action_types: vec![4, 2, 1, 4],
                timestamps_ms: vec![400, 300, 300, 200],
                surfaces: vec![0, 0, 0, 0],
            }],
        );
        let users = read(&path, 3, &StoreConfig::default()).unwrap();
        let [(user, h)] = users.as_slice() else {
            panic!("one user")
        };
        assert_eq!(*user, 8);
        assert_eq!(h.realtime.len(), 4);
        assert_eq!(h.impressions.len(), 2);
        let (items, masks, times, _) = h.lifelong.columns();
        assert_eq!(items.iter().copied().collect::<Vec<_>>(), [30]);
        assert_eq!(masks.iter().copied().collect::<Vec<_>>(), [0b110]);
        assert_eq!(times.iter().copied().collect::<Vec<_>>(), [300]);
        // The realtime order is the snapshot's, ties included.
        let (items, types, _, _) = h.realtime.columns();
        assert_eq!(items.iter().copied().collect::<Vec<_>>(), [40, 30, 30, 20]);
        assert_eq!(types.iter().copied().collect::<Vec<_>>(), [4, 2, 1, 4]);
    }

    #[derive(Serialize)]
    struct V2Seq {
        item_ids: Vec<ItemId>,
        action_types: Vec<u64>,
        timestamps_ms: Vec<i64>,
        surfaces: Vec<u16>,
    }

    #[derive(Serialize)]
    struct V2User {
        user: UserId,
        realtime: V2Seq,
        lifelong: V2Seq,
        impressions: V2Seq,
    }

    #[test]
    fn a_version_2_snapshot_is_read_with_no_applied_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-2.msgpack");
        let seq = |items: Vec<u64>, types: Vec<u64>, times: Vec<i64>| V2Seq {
            surfaces: vec![0; items.len()],
            item_ids: items,
            action_types: types,
            timestamps_ms: times,
        };
        let user = V2User {
            user: 5,
            realtime: seq(vec![2, 1], vec![2, 1], vec![20, 10]),
            lifelong: seq(vec![2, 1], vec![0b100, 0b10], vec![20, 10]),
            impressions: seq(vec![], vec![], vec![]),
        };
        let mut body = Vec::new();
        let head = SnapHead {
            generation: 2,
            users: 1,
            actions: 2,
        };
        rmp_serde::encode::write(&mut body, &head).unwrap();
        rmp_serde::encode::write(&mut body, &user).unwrap();
        let mut file = Vec::new();
        file.extend_from_slice(&SNAP_MAGIC);
        file.extend_from_slice(&SNAPSHOT_VERSION_2.to_le_bytes());
        file.extend_from_slice(&2u64.to_le_bytes());
        file.extend_from_slice(&body);
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        file.extend_from_slice(&END_MAGIC);
        std::fs::write(&path, file).unwrap();
        let users = read(&path, 2, &StoreConfig::default()).unwrap();
        let [(id, h)] = users.as_slice() else {
            panic!("one user")
        };
        assert_eq!((*id, h.realtime.len(), h.lifelong.len()), (5, 2, 2));
        assert_eq!(h.applied, (0, 0));
    }

    #[test]
    fn a_newer_version_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-1.msgpack");
        write_v1(&path, 1, &[]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let err = read(&path, 1, &StoreConfig::default()).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }
}
