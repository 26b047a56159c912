//! Fuzz targets for every decoder and parser of the workspace.
//!
//! Each target is a `pub fn <target>(data: &[u8])` that hands the bytes to
//! a real decoder through its crate's public API — directly when it takes
//! bytes, otherwise as a file in a fresh scratch directory that the public
//! opener reads. A target must never panic, hang or allocate without bound
//! on any input; returning an error from the decoder is the expected
//! outcome for almost every input and is ignored.
//!
//! [`TARGETS`] lists them by name; the cargo-fuzz project in `fuzz/` wraps
//! each in `fuzz_target!`, the stable driver (`transact-fuzz <target>
//! --seconds N`) mutates the checked-in corpus `fuzz/corpus/<target>/`, and
//! `tests/corpus.rs` replays that corpus on every `cargo test`. See
//! `docs/fuzzing.md`.
//!
//! Targets that need a valid starting point (a store directory, a bundle)
//! build it once per process ([`std::sync::OnceLock`]) and copy it into the
//! scratch directory before replacing the part under test.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tempfile::TempDir;
use transact_embed::{ItemTable, Precision};
use transact_features::{FeatureConfig, raw_id_key};
use transact_model::{HeadsConfig, RankingModel, TensorMap, V1Config, V2Config};
use transact_rank::Bundle;
use transact_rank::bundle::{FEATURES_FILE, ITEMS_FILE, MANIFEST_FILE, MODEL_FILE};
use transact_seq::{Action, ActionType, EmbeddedStore, SequenceStore, StoreConfig, Surface};
use transact_serve::wire::{self, ActionsBody, RankBody};
use transact_train::data::import::{Format, ImportOptions, import_path};

pub mod seeds;

/// A fuzz target: feeds the bytes to one decoder; never panics.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its corpus directory and of its
/// `fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("seq_log", seq_log),
    ("seq_log_record", seq_log_record),
    ("seq_snapshot", seq_snapshot),
    ("seq_snapshot_body", seq_snapshot_body),
    ("weights", weights),
    ("item_table", item_table),
    ("bundle", bundle),
    ("import_movielens_csv", import_movielens_csv),
    ("import_movielens_dat", import_movielens_dat),
    ("import_movielens_udata", import_movielens_udata),
    ("import_csv", import_csv),
    ("import_whitespace", import_whitespace),
    ("import_embeddings", import_embeddings),
    ("feature_log", feature_log),
    ("rank_request", rank_request),
    ("actions_request", actions_request),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

// ---------------------------------------------------------------------------
// Scratch directories and fixtures.

/// A fresh, empty scratch directory, removed when dropped: under
/// `$TRANSACT_FUZZ_TMP` if set, else `/dev/shm` when it exists (no disk
/// syncs), else the system temp dir.
///
/// # Panics
/// If no directory can be created: the environment is broken, not the
/// input.
pub fn scratch() -> TempDir {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        if let Some(dir) = std::env::var_os("TRANSACT_FUZZ_TMP") {
            return Some(PathBuf::from(dir));
        }
        let shm = Path::new("/dev/shm");
        tempfile::tempdir_in(shm).ok().map(|_| shm.to_path_buf())
    });
    let dir = match base {
        Some(b) => tempfile::Builder::new()
            .prefix("transact-fuzz")
            .tempdir_in(b),
        None => tempfile::Builder::new().prefix("transact-fuzz").tempdir(),
    };
    dir.expect("a scratch directory (environment, not input)")
}

/// Writes `files` into `dir`.
fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        // A failed write only means the decoder sees fewer files.
        let _ = fs::write(dir.join(name), bytes);
    }
}

/// The store configuration every store target opens with (a fixed clock,
/// so replays are deterministic; small capacities).
pub fn store_config() -> StoreConfig {
    StoreConfig::default()
        .with_capacity_per_user(64)
        .with_lifelong_capacity(64)
        .with_impression_capacity(32)
        .with_clock(|| 1_700_000_000_000)
}

/// A valid small store: its log with record boundaries, and the files of
/// a directory holding a snapshot.
#[derive(Debug)]
pub struct StoreFixture {
    /// File name of the log of a store that was never snapshotted.
    pub log_name: String,
    /// That log's bytes (header and records).
    pub log: Vec<u8>,
    /// Offsets where each record of [`StoreFixture::log`] ends (the first
    /// entry is the end of the header).
    pub record_ends: Vec<usize>,
    /// Every file (but `LOCK`) of a directory after a snapshot and more
    /// appends.
    pub snapshot_dir: Vec<(String, Vec<u8>)>,
    /// The name of the snapshot file in [`StoreFixture::snapshot_dir`].
    pub snapshot_name: String,
}

/// Length of a log file header (`log.rs`: magic, version, generation, crc).
pub const LOG_HEADER_LEN: usize = 24;
/// Length of a snapshot header (`snapshot.rs`: magic, version, generation).
pub const SNAPSHOT_HEADER_LEN: usize = 20;
/// Length of a snapshot trailer (body length, crc, end magic).
pub const SNAPSHOT_TRAILER_LEN: usize = 20;

fn act(item: u64, t: u16, ms: i64, surface: u16) -> Action {
    Action {
        item_id: item,
        action_type: ActionType(t),
        timestamp_ms: ms,
        surface: Surface(surface),
    }
}

fn append_some(store: &EmbeddedStore, base_ms: i64) {
    let batches: [(u64, Vec<Action>); 4] = [
        (1, vec![act(10, 1, base_ms, 0), act(11, 2, base_ms + 5, 1)]),
        (2, vec![act(12, 4, base_ms + 7, 0)]),
        (
            1,
            vec![
                act(10, 3, base_ms + 9, 0),
                act(u64::MAX, 4, base_ms + 11, 2),
            ],
        ),
        (u64::MAX, vec![act(1 << 40, 2, base_ms + 13, 0)]),
    ];
    for (user, actions) in batches {
        store.append(user, &actions).expect("fixture append");
    }
}

fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| {
            let e = e.expect("fixture entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = fs::read(e.path()).expect("fixture file");
            (name, bytes)
        })
        .filter(|(name, _)| name != "LOCK")
        .collect();
    out.sort();
    out
}

/// The valid store, built once per process.
///
/// # Panics
/// If the store cannot be built (a bug in the store, not input).
pub fn store_fixture() -> &'static StoreFixture {
    static FIXTURE: OnceLock<StoreFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch();
        let (store, _) = EmbeddedStore::open(dir.path(), store_config()).expect("fixture store");
        append_some(&store, 1_600_000_000_000);
        store.close().expect("fixture close");
        let files = dir_files(dir.path());
        let (log_name, log) = files
            .iter()
            .find(|(n, _)| n.starts_with("log-") && n.ends_with(".wal"))
            .cloned()
            .expect("fixture log");
        let mut record_ends = vec![LOG_HEADER_LEN];
        let mut pos = LOG_HEADER_LEN;
        while pos + 8 <= log.len() {
            let len = u32::from_le_bytes([log[pos], log[pos + 1], log[pos + 2], log[pos + 3]]);
            pos += 8 + len as usize;
            record_ends.push(pos);
        }
        assert_eq!(pos, log.len(), "fixture log framing");

        let (store, _) = EmbeddedStore::open(dir.path(), store_config()).expect("fixture reopen");
        store.snapshot().expect("fixture snapshot");
        append_some(&store, 1_600_000_001_000);
        store.close().expect("fixture close");
        let snapshot_dir = dir_files(dir.path());
        let snapshot_name = snapshot_dir
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| n.starts_with("snapshot-") && n.ends_with(".msgpack"))
            .expect("fixture snapshot file");
        StoreFixture {
            log_name,
            log,
            record_ends,
            snapshot_dir,
            snapshot_name,
        }
    })
}

fn open_store(dir: &Path) {
    if let Ok((store, _report)) = EmbeddedStore::open(dir, store_config()) {
        // Reading back what was recovered exercises the loaded state.
        for user in store.users() {
            store.for_each_action(user, |_| {});
        }
        let _ = store.close();
    }
}

/// The bundle's files, built once per process (a small random V1 model,
/// 16 items of width 2, as `transact-serve`'s tests build one).
///
/// # Panics
/// If the bundle cannot be built (a bug, not input).
pub fn bundle_fixture() -> &'static [(String, Vec<u8>)] {
    static FIXTURE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch();
        small_bundle()
            .save(dir.path())
            .expect("fixture bundle save");
        dir_files(dir.path())
    })
}

/// A small random V1 model (4 positions, width 4, one layer).
pub fn small_v1_model(seed: u64) -> RankingModel {
    let v1 = V1Config {
        seq_len: 4,
        latest_n_emb: 2,
        action_emb_dim: 2,
        item_emb_dim: 2,
        num_layer: 1,
        dim_feedforward: 4,
        action_vocab: vec![1, 2, 3, 4],
        ..V1Config::default()
    };
    let heads = HeadsConfig {
        cross_layers: 0,
        mlp_hidden: vec![4],
        ..HeadsConfig::default()
    };
    RankingModel::new_random(v1, heads, seed).expect("fixture model")
}

/// A small random V2 model (4 tokens, width 4, one layer).
pub fn small_v2_model(seed: u64) -> RankingModel {
    let v2 = V2Config {
        seq_len: 4,
        item_emb_dim: 2,
        num_action_types: 4,
        num_surfaces: 2,
        num_layer: 1,
        dim_feedforward: 4,
        latest_n_emb: 2,
        ..V2Config::default()
    };
    let heads = HeadsConfig {
        cross_layers: 1,
        mlp_hidden: vec![4],
        ..HeadsConfig::default()
    };
    RankingModel::new_random_v2(v2, heads, seed).expect("fixture v2 model")
}

/// The bundle behind [`bundle_fixture`].
pub fn small_bundle() -> Bundle {
    let model = small_v1_model(3);
    let ids: Vec<u64> = (0..16).map(|i| raw_id_key(&i.to_string())).collect();
    let data: Vec<f32> = (0..16 * 2)
        .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
        .collect();
    let items = ItemTable::from_rows(2, Precision::F32, &ids, &data).expect("fixture items");
    let features = FeatureConfig {
        action_vocab: vec![1, 2, 3, 4],
        sequence_actions: vec![1, 2, 3],
        ..FeatureConfig::new(4)
    };
    Bundle::new(Arc::new(model), Arc::new(items), features).expect("fixture bundle")
}

/// The parts of a bundle the `bundle` target replaces, chosen by the
/// input's first byte (modulo the count).
pub const BUNDLE_PARTS: [&str; 4] = [MANIFEST_FILE, FEATURES_FILE, MODEL_FILE, ITEMS_FILE];

// ---------------------------------------------------------------------------
// The embedded store.

/// `log-<g>.wal` of an otherwise empty store directory holds `data`; the
/// store is opened (header check, record framing, checksums, MessagePack
/// decoding, tail truncation) and the recovered state read.
///
/// The log is named as the fixture store names its first log (generation
/// 0: a lone `log-1.wal` is refused before any decoding, since the chain
/// from generation 0 is incomplete).
pub fn seq_log(data: &[u8]) {
    let fixture = store_fixture();
    let dir = scratch();
    write_all(dir.path(), &[(fixture.log_name.clone(), data.to_vec())]);
    open_store(dir.path());
}

/// A valid log (header and the first `data[0] % (records + 1)` records of
/// the fixture) continued by fuzz bytes, so the fuzzer starts past the
/// header check: with `data[1]` even the rest of `data` is appended raw
/// (framing damage); odd, it is appended as one record whose length and
/// CRC-32 are correct, so the payload reaches the MessagePack decoder.
pub fn seq_log_record(data: &[u8]) {
    let fixture = store_fixture();
    let (keep, mode, rest) = match data {
        [k, m, rest @ ..] => (*k as usize, *m, rest),
        [k] => (*k as usize, 0, &[][..]),
        [] => (0, 0, &[][..]),
    };
    let end = fixture.record_ends[keep % fixture.record_ends.len()];
    let mut log = fixture.log[..end].to_vec();
    if mode % 2 == 0 {
        log.extend_from_slice(rest);
    } else {
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        log.extend_from_slice(&len.to_le_bytes());
        log.extend_from_slice(&crc32(rest).to_le_bytes());
        log.extend_from_slice(rest);
    }
    let dir = scratch();
    write_all(dir.path(), &[(fixture.log_name.clone(), log)]);
    open_store(dir.path());
}

/// A valid store directory (snapshot, the logs after it) whose
/// `snapshot-<g>.msgpack` holds `data`.
pub fn seq_snapshot(data: &[u8]) {
    let fixture = store_fixture();
    let dir = scratch();
    let files: Vec<(String, Vec<u8>)> = fixture
        .snapshot_dir
        .iter()
        .map(|(name, bytes)| {
            if *name == fixture.snapshot_name {
                (name.clone(), data.to_vec())
            } else {
                (name.clone(), bytes.clone())
            }
        })
        .collect();
    write_all(dir.path(), &files);
    open_store(dir.path());
}

/// As [`seq_snapshot`], but the snapshot is the fixture's valid header
/// (format version 1 when `data[0]` is odd, else 2) and a valid trailer
/// (body length and CRC-32) around `data[1..]`, so the body reaches the
/// MessagePack decoder and the state checks.
pub fn seq_snapshot_body(data: &[u8]) {
    let fixture = store_fixture();
    let (version, body) = match data {
        [v, rest @ ..] => (if v % 2 == 1 { 1u32 } else { 2 }, rest),
        [] => (2, &[][..]),
    };
    let valid = fixture
        .snapshot_dir
        .iter()
        .find(|(n, _)| *n == fixture.snapshot_name)
        .map(|(_, b)| b.as_slice())
        .unwrap_or(&[]);
    let mut snap = Vec::with_capacity(body.len() + 40);
    if valid.len() >= SNAPSHOT_HEADER_LEN + SNAPSHOT_TRAILER_LEN {
        snap.extend_from_slice(&valid[..8]);
        snap.extend_from_slice(&version.to_le_bytes());
        snap.extend_from_slice(&valid[12..SNAPSHOT_HEADER_LEN]);
    }
    snap.extend_from_slice(body);
    snap.extend_from_slice(&(body.len() as u64).to_le_bytes());
    snap.extend_from_slice(&crc32(body).to_le_bytes());
    snap.extend_from_slice(b"TSEQEND\0");
    seq_snapshot(&snap);
}

/// CRC-32 (IEEE), as the store's log and snapshot use (`crc32fast`).
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---------------------------------------------------------------------------
// Models, item tables, bundles.

/// Safetensors bytes → [`TensorMap::from_bytes`] → [`RankingModel::from_tensors`]
/// (the V1 or V2 encoder and the heads, configs from the metadata).
pub fn weights(data: &[u8]) {
    if let Ok(map) = TensorMap::from_bytes(data, "fuzz") {
        let _ = RankingModel::from_tensors(&map);
    }
}

/// Safetensors bytes → [`ItemTable::from_safetensors_bytes`] (the item,
/// user-item and token tables of a bundle).
pub fn item_table(data: &[u8]) {
    if let Ok(table) = ItemTable::from_safetensors_bytes(data, Path::new("fuzz")) {
        // `get` allocates one row, of a width the file's data backs (a
        // table without rows may claim any width: nothing is read then).
        for id in table.ids().take(4) {
            std::hint::black_box(table.get(id).ok());
        }
    }
}

/// [`Bundle::load`] on the fixture bundle with one part
/// ([`BUNDLE_PARTS`]`[data[0] % 4]`) replaced by `data[1..]`.
pub fn bundle(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let part = BUNDLE_PARTS[which as usize % BUNDLE_PARTS.len()];
    let dir = scratch();
    let files: Vec<(String, Vec<u8>)> = bundle_fixture()
        .iter()
        .map(|(name, b)| {
            if name == part {
                (name.clone(), bytes.to_vec())
            } else {
                (name.clone(), b.clone())
            }
        })
        .collect();
    write_all(dir.path(), &files);
    let _ = Bundle::load(dir.path());
}

// ---------------------------------------------------------------------------
// Log importers (transact-train).

/// Imports `data` written as `file_name` with `format` (`None`: detected),
/// with and without `skip_bad`.
fn import_as(data: &[u8], file_name: &str, format: Option<Format>) {
    let dir = scratch();
    let path = dir.path().join(file_name);
    if fs::write(&path, data).is_err() {
        return;
    }
    for skip_bad in [false, true] {
        let opts = ImportOptions {
            format,
            skip_bad,
            item_embeddings: None,
        };
        let _ = import_path(&path, &opts);
    }
}

/// MovieLens `ratings.csv` (`userId,movieId,rating,timestamp`, header).
pub fn import_movielens_csv(data: &[u8]) {
    import_as(data, "ratings.csv", None);
}

/// MovieLens `ratings.dat` (`user::item::rating::timestamp`).
pub fn import_movielens_dat(data: &[u8]) {
    import_as(data, "ratings.dat", None);
}

/// MovieLens 100k `u.data` (`user item rating timestamp`, tabs).
pub fn import_movielens_udata(data: &[u8]) {
    import_as(data, "u.data", None);
}

/// The generic CSV `user,item,action,timestamp` (forced, then detected
/// from the first line of `log.csv`).
pub fn import_csv(data: &[u8]) {
    import_as(data, "log.csv", Some(Format::GenericCsv));
    import_as(data, "log.csv", None);
}

/// The whitespace next-item format `user item1 item2 …` (forced, then
/// detected from the first line of `log.txt`).
pub fn import_whitespace(data: &[u8]) {
    import_as(data, "log.txt", Some(Format::Whitespace));
    import_as(data, "log.txt", None);
}

/// The log every `import_embeddings` run imports: items 1, 2, 3, 7 and a
/// non-integer raw id.
pub const EMBEDDINGS_LOG: &str =
    "1,1,repin,1000\n1,2,click,2000\n2,3,hide,3000\n2,7,repin,4000\n3,x9,repin,5000\n";

/// `--item-embeddings`: `data` as the safetensors file of item embeddings
/// (`items.weight`, `items.ids`) of a fixed small log.
pub fn import_embeddings(data: &[u8]) {
    let dir = scratch();
    let log = dir.path().join("log.csv");
    let emb = dir.path().join("items.safetensors");
    if fs::write(&log, EMBEDDINGS_LOG).is_err() || fs::write(&emb, data).is_err() {
        return;
    }
    let opts = ImportOptions {
        format: Some(Format::GenericCsv),
        skip_bad: false,
        item_embeddings: Some(emb),
    };
    let _ = import_path(&log, &opts);
}

// ---------------------------------------------------------------------------
// The feature log (transact-log).

/// `data` as a Parquet feature log → [`transact_log::FeatureLog::open`],
/// then every row read back.
pub fn feature_log(data: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("log.parquet");
    if fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(log) = transact_log::FeatureLog::open(&path) {
        let mut n = 0usize;
        for r in log.iter() {
            n += r.token_item_ids.len() + r.candidate_codes.len();
            for i in 0..r.len() {
                let _ = r.part(i);
            }
        }
        let _ = log.find(7, 1_000, 20);
        std::hint::black_box(n);
    }
}

// ---------------------------------------------------------------------------
// The serving wire format (transact-serve).

/// `POST /v1/rank` bodies: [`wire::parse`] as a [`RankBody`], then
/// [`RankBody::to_request`].
pub fn rank_request(data: &[u8]) {
    if let Ok(body) = wire::parse::<RankBody>(data) {
        let req = body.to_request();
        std::hint::black_box(req);
    }
}

/// `POST /v1/actions` bodies: [`wire::parse`] as an [`ActionsBody`], then
/// every action converted for the store.
pub fn actions_request(data: &[u8]) {
    if let Ok(body) = wire::parse::<ActionsBody>(data) {
        for a in &body.actions {
            std::hint::black_box(a.to_action());
            std::hint::black_box(a.user.key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn every_target_accepts_empty_input() {
        for (_, t) in TARGETS {
            t(&[]);
        }
    }
}
