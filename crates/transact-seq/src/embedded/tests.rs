//! Tests of the embedded store: ordering, capacity, validation, persistence,
//! crash recovery and failure handling.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use super::files::{log_path, snapshot_path};
use super::log::Fault;
use super::*;
use crate::{ActionType, ActionVocab, Surface};

const NOW: i64 = 1_000_000;

fn config() -> StoreConfig {
    StoreConfig::default().with_clock(|| NOW)
}

fn act(item: u64, t: i64) -> Action {
    Action {
        item_id: item,
        action_type: ActionType::CLICK,
        timestamp_ms: t,
        surface: Surface(1),
    }
}

/// Every user's history, newest first.
fn dump(store: &EmbeddedStore) -> BTreeMap<UserId, Vec<Action>> {
    store
        .users()
        .into_iter()
        .map(|u| {
            let mut v = Vec::new();
            store.for_each_action(u, |a| v.push(*a));
            (u, v)
        })
        .collect()
}

fn read(store: &EmbeddedStore, user: UserId, n: usize, t: Option<i64>) -> Vec<u64> {
    let mut buf = SequenceBuf::default();
    let got = store.read_newest(user, n, t, &mut buf).unwrap();
    assert_eq!(got, buf.len());
    buf.item_ids
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<EmbeddedStore>();
}

#[test]
fn reads_newest_first_with_limit() {
    let store = EmbeddedStore::in_memory(config());
    store.append(1, &[act(10, 100), act(11, 200)]).unwrap();
    store.append(1, &[act(12, 300)]).unwrap();
    store.append(2, &[act(20, 150)]).unwrap();
    assert_eq!(read(&store, 1, 10, None), [12, 11, 10]);
    assert_eq!(read(&store, 1, 2, None), [12, 11]);
    assert_eq!(read(&store, 1, 0, None), Vec::<u64>::new());
    assert_eq!(read(&store, 2, 10, None), [20]);
    assert_eq!(store.history_len(1).unwrap(), 3);
    assert_eq!(store.user_count(), 2);
    assert_eq!(store.users(), [1, 2]);
    let mut buf = SequenceBuf::default();
    store.read_newest(1, 1, None, &mut buf).unwrap();
    assert_eq!(
        buf.get(0),
        Some(Action {
            item_id: 12,
            action_type: ActionType::CLICK,
            timestamp_ms: 300,
            surface: Surface(1)
        })
    );
}

#[test]
fn unknown_user_reads_empty_and_clears_the_buffer() {
    let store = EmbeddedStore::in_memory(config());
    store.append(1, &[act(1, 1)]).unwrap();
    let mut buf = SequenceBuf::default();
    store.read_newest(1, 5, None, &mut buf).unwrap();
    assert_eq!(buf.len(), 1);
    assert_eq!(store.read_newest(99, 5, None, &mut buf).unwrap(), 0);
    assert!(buf.is_empty());
    assert_eq!(store.history_len(99).unwrap(), 0);
    assert_eq!(store.for_each_action(99, |_| panic!("no actions")), 0);
}

#[test]
fn capacity_drops_the_oldest() {
    let store = EmbeddedStore::in_memory(config().with_capacity_per_user(3));
    for i in 0..10u64 {
        store.append(5, &[act(i, i as i64)]).unwrap();
    }
    assert_eq!(read(&store, 5, 100, None), [9, 8, 7]);
    // One call with more actions than the capacity keeps the newest.
    store
        .append(
            6,
            &(0..10u64)
                .map(|i| act(i, 50 + i as i64))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(read(&store, 6, 100, None), [9, 8, 7]);
    // An action older than a full history is dropped at once.
    store.append(5, &[act(100, 0)]).unwrap();
    assert_eq!(read(&store, 5, 100, None), [9, 8, 7]);
    assert_eq!(store.stats().actions, 6);
}

#[test]
fn filter_keeps_actions_at_or_before_t() {
    let store = EmbeddedStore::in_memory(config());
    let actions: Vec<Action> = (1..=10u64).map(|i| act(i, i as i64 * 100)).collect();
    store.append(1, &actions).unwrap();
    assert_eq!(read(&store, 1, 3, Some(500)), [5, 4, 3]);
    assert_eq!(read(&store, 1, 3, Some(550)), [5, 4, 3]);
    assert_eq!(read(&store, 1, 100, Some(250)), [2, 1]);
    assert_eq!(read(&store, 1, 2, Some(10_000)), [10, 9]);
    assert_eq!(read(&store, 1, 5, Some(99)), Vec::<u64>::new());
    assert_eq!(read(&store, 1, 5, Some(-1)), Vec::<u64>::new());
}

#[test]
fn out_of_order_actions_are_inserted_by_time_stably() {
    let store = EmbeddedStore::in_memory(config());
    store.append(1, &[act(1, 100), act(2, 300)]).unwrap();
    store.append(1, &[act(3, 200)]).unwrap();
    store
        .append(1, &[act(4, 300), act(5, 50), act(6, 200)])
        .unwrap();
    // Equal timestamps: the later arrival reads as newer.
    assert_eq!(read(&store, 1, 10, None), [4, 2, 6, 3, 1, 5]);
    let mut buf = SequenceBuf::default();
    store.read_newest(1, 10, None, &mut buf).unwrap();
    assert!(buf.timestamps_ms.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn validation_errors_name_user_and_value_and_write_nothing() {
    let vocab = ActionVocab::new([1, 2]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config().with_vocab(vocab).with_max_future_skew_ms(1_000);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    let log_before = store.stats().log_bytes;

    let bad_type = Action {
        action_type: ActionType(3),
        ..act(1, 10)
    };
    let e = store.append(7, &[act(1, 5), bad_type]).unwrap_err();
    assert!(
        matches!(
            e,
            SeqError::UnknownActionType {
                user: 7,
                action_type: ActionType(3)
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("user 7") && e.to_string().contains('3'),
        "{e}"
    );

    let e = store.append(7, &[act(1, 5), act(2, -1)]).unwrap_err();
    assert!(
        matches!(
            e,
            SeqError::NegativeTimestamp {
                user: 7,
                timestamp_ms: -1
            }
        ),
        "{e:?}"
    );

    let e = store
        .append(7, &[act(1, 5), act(2, NOW + 1_001)])
        .unwrap_err();
    assert!(
        matches!(
            e,
            SeqError::FutureTimestamp {
                user: 7,
                timestamp_ms: t,
                ahead_ms: 1_001,
                max_skew_ms: 1_000
            } if t == NOW + 1_001
        ),
        "{e:?}"
    );
    // Exactly at the limit is accepted.
    store.append(8, &[act(1, NOW + 1_000)]).unwrap();
    // An extreme timestamp does not overflow the check.
    assert!(store.append(7, &[act(1, i64::MAX)]).is_err());

    assert_eq!(store.history_len(7).unwrap(), 0);
    assert_eq!(store.users(), [8]);
    // Empty appends are no-ops and write nothing.
    store.append(9, &[]).unwrap();
    assert_eq!(store.user_count(), 1);
    let log_after = store.stats().log_bytes;
    assert!(log_after > log_before);
    store.close().unwrap();
    let (store, report) = EmbeddedStore::open(dir.path(), cfg).unwrap();
    assert_eq!(report.records_replayed, 1);
    assert_eq!(store.users(), [8]);
}

#[test]
fn invalid_config_is_rejected_by_open_and_clamped_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let e = EmbeddedStore::open(dir.path(), config().with_capacity_per_user(0)).unwrap_err();
    assert!(matches!(e, SeqError::InvalidConfig(_)), "{e:?}");
    let e = EmbeddedStore::open(dir.path(), config().with_max_future_skew_ms(-1)).unwrap_err();
    assert!(matches!(e, SeqError::InvalidConfig(_)), "{e:?}");
    let store = EmbeddedStore::in_memory(config().with_capacity_per_user(0));
    store.append(1, &[act(1, 1), act(2, 2)]).unwrap();
    assert_eq!(read(&store, 1, 10, None), [2]);
}

/// A mixed workload: several users, out-of-order actions, capacity drops.
fn workload(store: &EmbeddedStore, users: u64, rounds: u64) {
    for r in 0..rounds {
        for u in 0..users {
            let t = 1_000 + (r * 10 + u) as i64;
            let mut batch = vec![act(r * 100 + u, t), act(r * 100 + u + 50, t + 3)];
            if r % 3 == 2 {
                batch.push(act(9_000 + r, t - 25)); // older than the newest
            }
            store.append(u, &batch).unwrap();
        }
    }
}

#[test]
fn reopen_restores_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config()
        .with_capacity_per_user(7)
        .with_sync(SyncPolicy::OnClose);
    let (store, report) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(report.snapshot_generation, None);
    assert_eq!(report.truncated_tail, None);
    workload(&store, 5, 12);
    let before = dump(&store);
    let stats = store.stats();
    store.close().unwrap();

    let (store, report) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(dump(&store), before);
    assert_eq!(report.records_replayed, 60);
    assert_eq!((report.users, report.actions), (5, 35));
    assert_eq!(store.stats().actions, stats.actions);
    assert_eq!(store.stats().log_bytes, stats.log_bytes);
    // Dropped without close: the OS still has every write.
    store.append(1, &[act(1, 5_000)]).unwrap();
    let before = dump(&store);
    drop(store);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg).unwrap();
    assert_eq!(dump(&store), before);
}

#[test]
fn a_smaller_capacity_applies_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    workload(&store, 3, 10);
    store.snapshot().unwrap();
    workload(&store, 3, 2);
    let before = dump(&store);
    drop(store);
    let (store, report) =
        EmbeddedStore::open(dir.path(), config().with_capacity_per_user(4)).unwrap();
    for (u, actions) in before {
        let mut got = Vec::new();
        store.for_each_action(u, |a| got.push(*a));
        assert_eq!(got.len(), 4);
        // The newest four survive (replay re-applies the rule record by record).
        assert_eq!(got[..], actions[..4]);
    }
    assert_eq!(report.actions, 12);
}

/// Opens a store, writes three records for user 1, drops it; returns the log path.
fn three_records(dir: &Path) -> std::path::PathBuf {
    let (store, _) = EmbeddedStore::open(dir, config()).unwrap();
    store.append(1, &[act(1, 100)]).unwrap();
    store.append(1, &[act(2, 200)]).unwrap();
    store.append(1, &[act(3, 300), act(4, 400)]).unwrap();
    drop(store);
    log_path(dir, 0)
}

/// Reopens after damage, checks the report, that the first two records
/// survived, that appends work and survive another reopen.
fn check_recovery(dir: &Path, expect: impl Fn(&DamageReason) -> bool, dropped: u64) {
    let log = log_path(dir, 0);
    let damaged_len = file_len(&log);
    let (store, report) = EmbeddedStore::open(dir, config()).unwrap();
    let tail = report.truncated_tail.clone().expect("damage reported");
    assert!(expect(&tail.reason), "{tail:?}");
    assert_eq!(tail.path, log);
    assert_eq!(tail.bytes_dropped, dropped, "{tail:?}");
    assert_eq!(tail.offset + tail.bytes_dropped, damaged_len);
    assert_eq!(
        file_len(&log),
        tail.offset,
        "file cut at the last good record"
    );
    assert_eq!(report.records_replayed, 2);
    assert_eq!(read(&store, 1, 10, None), [2, 1]);

    store.append(1, &[act(5, 500)]).unwrap();
    drop(store);
    let (store, report) = EmbeddedStore::open(dir, config()).unwrap();
    assert_eq!(report.truncated_tail, None);
    assert_eq!(report.records_replayed, 3);
    assert_eq!(read(&store, 1, 10, None), [5, 2, 1]);
}

/// Size of the last record written by `three_records` (two actions).
fn last_record_len() -> u64 {
    let mut frame = Vec::new();
    log::encode_append(&mut frame, 1, &[act(3, 300), act(4, 400)]).unwrap();
    frame.len() as u64
}

#[test]
fn torn_tail_short_payload_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let last = last_record_len();
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(file_len(&log) - 3).unwrap();
    drop(f);
    check_recovery(
        dir.path(),
        |r| matches!(r, DamageReason::ShortPayload { .. }),
        last - 3,
    );
}

#[test]
fn torn_tail_inside_record_header_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let last = last_record_len();
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(file_len(&log) - last + 5).unwrap();
    drop(f);
    check_recovery(dir.path(), |r| *r == DamageReason::ShortRecordHeader, 5);
}

#[test]
fn flipped_byte_in_last_payload_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let last = last_record_len();
    let mut bytes = std::fs::read(&log).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    check_recovery(
        dir.path(),
        |r| matches!(r, DamageReason::ChecksumMismatch { .. }),
        last,
    );
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let last = last_record_len();
    // Drop the real last record, then append junk in its place.
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(file_len(&log) - last).unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[
        0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    ])
    .unwrap();
    drop(f);
    check_recovery(
        dir.path(),
        |r| matches!(r, DamageReason::OversizedRecord { .. }),
        11,
    );
    // Junk with a small length and a wrong checksum.
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(file_len(&log) - last).unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[3, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]).unwrap();
    drop(f);
    check_recovery(
        dir.path(),
        |r| matches!(r, DamageReason::ChecksumMismatch { .. }),
        11,
    );
}

#[test]
fn a_checksummed_but_undecodable_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_records(dir.path());
    let last = last_record_len();
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(file_len(&log) - last).unwrap();
    drop(f);
    let payload = [0xc1u8, 0x00, 0x00]; // 0xc1 is never used in MessagePack
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&frame)
        .unwrap();
    check_recovery(
        dir.path(),
        |r| matches!(r, DamageReason::Undecodable(_)),
        11,
    );
}

#[test]
fn a_log_torn_inside_its_header_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(dir.path(), 0);
    std::fs::write(&log, b"TSEQ").unwrap();
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    let tail = report.truncated_tail.expect("reported");
    assert_eq!((tail.offset, tail.bytes_dropped), (0, 4));
    assert_eq!(tail.reason, DamageReason::ShortFileHeader);
    store.append(1, &[act(1, 1)]).unwrap();
    drop(store);
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_tail, None);
    assert_eq!(read(&store, 1, 10, None), [1]);
}

#[test]
fn a_foreign_file_is_an_error_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(dir.path(), 0);
    let junk = vec![7u8; 100];
    std::fs::write(&log, &junk).unwrap();
    let e = EmbeddedStore::open(dir.path(), config()).unwrap_err();
    match e {
        SeqError::Corrupt { path, detail } => {
            assert_eq!(path, log);
            assert!(detail.contains("magic"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&log).unwrap(), junk);
}

#[test]
fn snapshots_rotate_logs_and_reopen_replays_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config().with_snapshot_every(10).with_capacity_per_user(6);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    workload(&store, 4, 6); // 24 records: snapshots after 10 and 20
    let stats = store.stats();
    assert_eq!(stats.log_generation, 2);
    assert_eq!(stats.records_since_snapshot, 4);
    assert_eq!(stats.last_snapshot_error, None);
    let before = dump(&store);
    drop(store);

    // The previous snapshot and its log are kept as a fallback; older ones go.
    let d = dir.path();
    assert!(snapshot_path(d, 2).exists() && snapshot_path(d, 1).exists());
    assert!(log_path(d, 2).exists() && log_path(d, 1).exists());
    assert!(!log_path(d, 0).exists());

    let (store, report) = EmbeddedStore::open(d, cfg.clone()).unwrap();
    assert_eq!(report.snapshot_generation, Some(2));
    assert_eq!(report.log_generation, 2);
    assert_eq!(report.records_replayed, 4);
    assert_eq!(dump(&store), before);

    // An explicit snapshot, then more appends, then reopen.
    store.snapshot().unwrap();
    store.append(1, &[act(77, 10_000)]).unwrap();
    let before = dump(&store);
    drop(store);
    assert!(!snapshot_path(d, 1).exists() && !log_path(d, 1).exists());
    let (store, report) = EmbeddedStore::open(d, cfg).unwrap();
    assert_eq!(report.snapshot_generation, Some(3));
    assert_eq!(report.records_replayed, 1);
    assert_eq!(dump(&store), before);
}

#[test]
fn a_corrupt_snapshot_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, _) = EmbeddedStore::open(d, config()).unwrap();
    workload(&store, 3, 4);
    store.snapshot().unwrap();
    workload(&store, 3, 2);
    store.snapshot().unwrap();
    store.append(2, &[act(5, 9_999)]).unwrap();
    let before = dump(&store);
    drop(store);

    let snap = snapshot_path(d, 2);
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&snap, &bytes).unwrap();

    let (store, report) = EmbeddedStore::open(d, config()).unwrap();
    assert_eq!(report.snapshot_generation, Some(1));
    assert_eq!(report.skipped_snapshots.len(), 1);
    assert_eq!(report.skipped_snapshots[0].path, snap);
    assert!(
        report.skipped_snapshots[0].detail.contains("checksum"),
        "{report:?}"
    );
    assert_eq!(
        dump(&store),
        before,
        "nothing lost: logs 1 and 2 were replayed"
    );
    assert!(!snap.exists());
    assert!(files::with_suffix(&snap, ".corrupt").exists());
    store.append(2, &[act(6, 10_000)]).unwrap();
    let before = dump(&store);
    drop(store);
    let (store, _) = EmbeddedStore::open(d, config()).unwrap();
    assert_eq!(dump(&store), before);
}

#[test]
fn a_corrupt_snapshot_without_fallback_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, _) = EmbeddedStore::open(d, config()).unwrap();
    workload(&store, 2, 3);
    store.snapshot().unwrap();
    store.snapshot().unwrap();
    drop(store);
    // Generation 1 (the fallback) is gone as well.
    std::fs::remove_file(snapshot_path(d, 1)).unwrap();
    std::fs::remove_file(log_path(d, 1)).unwrap();
    let snap = snapshot_path(d, 2);
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() - 1]).unwrap();
    match EmbeddedStore::open(d, config()).unwrap_err() {
        SeqError::Corrupt { path, detail } => {
            assert_eq!(path, snap);
            assert!(detail.contains("fall back"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        snap.exists(),
        "the file is left alone when nothing could be opened"
    );
}

#[test]
fn damage_inside_an_older_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, _) = EmbeddedStore::open(d, config()).unwrap();
    workload(&store, 2, 3);
    store.snapshot().unwrap();
    workload(&store, 2, 1);
    drop(store);
    // Snapshot 1 is damaged, so log 0 must be replayed, and it is damaged too.
    let snap = snapshot_path(d, 1);
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let log0 = log_path(d, 0);
    let f = OpenOptions::new().write(true).open(&log0).unwrap();
    f.set_len(file_len(&log0) - 2).unwrap();
    drop(f);
    match EmbeddedStore::open(d, config()).unwrap_err() {
        SeqError::Corrupt { path, detail } => {
            assert_eq!(path, log0);
            assert!(detail.contains("not a torn write"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn leftover_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tmp = files::tmp_path(&snapshot_path(d, 1));
    std::fs::write(&tmp, b"half a snapshot").unwrap();
    let (_store, report) = EmbeddedStore::open(d, config()).unwrap();
    assert_eq!(report.snapshot_generation, None);
    assert!(!tmp.exists());
}

#[test]
fn a_failed_write_that_is_rolled_back_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    store.append(1, &[act(1, 100)]).unwrap();
    let len = store.stats().log_bytes;
    store.inject_fault(Fault::PartialWrite);
    let e = store.append(1, &[act(2, 200)]).unwrap_err();
    assert!(
        matches!(&e, SeqError::Io { path, .. } if *path == log_path(dir.path(), 0)),
        "{e:?}"
    );
    assert_eq!(read(&store, 1, 10, None), [1]);
    assert_eq!(store.stats().log_bytes, len);
    assert_eq!(file_len(&log_path(dir.path(), 0)), len);
    assert_eq!(store.stats().poisoned, None);
    store.append(1, &[act(3, 300)]).unwrap();
    drop(store);
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_tail, None);
    assert_eq!(read(&store, 1, 10, None), [3, 1]);
}

#[test]
fn a_write_left_half_done_poisons_appends_but_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    store.append(1, &[act(1, 100)]).unwrap();
    store.inject_fault(Fault::PartialWriteNoRollback);
    assert!(matches!(
        store.append(1, &[act(2, 200)]),
        Err(SeqError::Io { .. })
    ));
    assert!(store.stats().poisoned.is_some());
    let e = store.append(1, &[act(3, 300)]).unwrap_err();
    assert!(matches!(e, SeqError::Unavailable(_)), "{e:?}");
    assert_eq!(read(&store, 1, 10, None), [1]);
    // Validation still runs first.
    assert!(matches!(
        store.append(1, &[act(3, -5)]),
        Err(SeqError::NegativeTimestamp { .. })
    ));

    // A reopen cuts the half record.
    drop(store);
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert!(report.truncated_tail.is_some());
    assert_eq!(read(&store, 1, 10, None), [1]);
    store.append(1, &[act(4, 400)]).unwrap();

    // Or a snapshot lifts the refusal in place.
    store.inject_fault(Fault::PartialWriteNoRollback);
    assert!(store.append(1, &[act(5, 500)]).is_err());
    assert!(store.stats().poisoned.is_some());
    store.snapshot().unwrap();
    assert_eq!(store.stats().poisoned, None);
    store.append(1, &[act(6, 600)]).unwrap();
    drop(store);
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(report.truncated_tail, None);
    assert_eq!(read(&store, 1, 10, None), [6, 4, 1]);
}

#[test]
fn a_failed_sync_poisons_and_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    store.append(1, &[act(1, 100)]).unwrap();
    store.inject_fault(Fault::SyncFails);
    assert!(matches!(
        store.append(1, &[act(2, 200)]),
        Err(SeqError::Io { .. })
    ));
    assert_eq!(read(&store, 1, 10, None), [1]);
    assert!(matches!(
        store.append(1, &[act(3, 300)]),
        Err(SeqError::Unavailable(_))
    ));
    drop(store);
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(read(&store, 1, 10, None), [1]);
}

#[test]
fn sync_policies_all_persist_on_close() {
    for policy in [
        SyncPolicy::EveryAppend,
        SyncPolicy::EveryN(3),
        SyncPolicy::EveryN(0),
        SyncPolicy::OnClose,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config().with_sync(policy);
        let (store, _) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
        workload(&store, 3, 5);
        store.sync().unwrap();
        store.append(1, &[act(1, 60_000)]).unwrap();
        let before = dump(&store);
        store.close().unwrap();
        let (store, _) = EmbeddedStore::open(dir.path(), cfg).unwrap();
        assert_eq!(dump(&store), before, "{policy:?}");
    }
}

#[test]
fn in_memory_snapshot_and_sync_are_no_ops() {
    let store = EmbeddedStore::in_memory(config());
    store.append(1, &[act(1, 1)]).unwrap();
    store.snapshot().unwrap();
    store.sync().unwrap();
    let stats = store.stats();
    assert_eq!((stats.users, stats.actions, stats.log_bytes), (1, 1, 0));
    assert!(store.dir().is_none());
    assert!(format!("{store:?}").contains("users: 1"));
    store.close().unwrap();
}

#[test]
fn reading_a_full_history_is_fast() {
    // A coarse guard against an accidental O(history) slow path: the budget
    // is generous so a loaded machine does not fail it.
    let store = EmbeddedStore::in_memory(config());
    let cap = StoreConfig::DEFAULT_CAPACITY_PER_USER;
    let actions: Vec<Action> = (0..cap as u64 + 1_000).map(|i| act(i, i as i64)).collect();
    store.append(1, &actions).unwrap();
    let mut buf = SequenceBuf::with_capacity(cap);
    store.read_newest(1, cap, None, &mut buf).unwrap();
    let reps = 200;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        store.read_newest(1, cap, None, &mut buf).unwrap();
    }
    let per_read = t0.elapsed() / reps;
    assert_eq!(buf.len(), cap);
    assert_eq!(buf.item_ids[0], cap as u64 + 999);
    assert!(
        per_read.as_micros() < 2_000,
        "{per_read:?} per read of {cap}"
    );
}

fn typed(item: u64, t: i64, action_type: ActionType) -> Action {
    Action {
        action_type,
        ..act(item, t)
    }
}

fn sequences(store: &EmbeddedStore, user: UserId) -> UserSequences {
    let mut out = UserSequences::default();
    store
        .read_sequences(user, &SequenceLimits::ALL, &mut out)
        .unwrap();
    out
}

#[test]
fn impressions_never_push_engagements_out_of_the_lifelong_sequence() {
    let store = EmbeddedStore::in_memory(
        config()
            .with_capacity_per_user(10)
            .with_impression_capacity(5),
    );
    store
        .append(1, &[typed(7, 100, ActionType::REPIN)])
        .unwrap();
    let imps: Vec<Action> = (0..50)
        .map(|i| typed(100 + i, 200 + i as i64, ActionType::IMPRESSION))
        .collect();
    store.append(1, &imps).unwrap();
    let seqs = sequences(&store, 1);
    // The realtime sequence (capacity 10) lost the repin to impressions ...
    assert_eq!(seqs.realtime.len(), 10);
    assert!(!seqs.realtime.item_ids.contains(&7));
    // ... the lifelong one kept it, and the impressions are their own.
    assert_eq!(seqs.lifelong.item_ids, [7]);
    assert!(seqs.lifelong.has_type(0, ActionType::REPIN));
    assert_eq!(seqs.impressions.item_ids, [149, 148, 147, 146, 145]);
}

#[test]
fn explicit_actions_on_one_item_merge_into_a_multi_hot_token() {
    let store = EmbeddedStore::in_memory(config().with_multi_hot_window_ms(1_000));
    store
        .append(
            2,
            &[
                typed(5, 10_000, ActionType::CLICK),
                typed(5, 10_400, ActionType::REPIN),
                // Outside the window: a token of its own.
                typed(5, 12_000, ActionType::HIDE),
                // Another surface: a token of its own.
                Action {
                    surface: Surface(9),
                    ..typed(5, 10_200, ActionType::REPIN)
                },
            ],
        )
        .unwrap();
    let ll = sequences(&store, 2).lifelong;
    assert_eq!(ll.timestamps_ms, [12_000, 10_200, 10_000]);
    assert_eq!(ll.surfaces, [1, 9, 1]);
    let bits = |ts: &[ActionType]| ts.iter().fold(0u64, |m, t| m | 1 << t.0);
    assert_eq!(
        ll.action_masks,
        [
            bits(&[ActionType::HIDE]),
            bits(&[ActionType::REPIN]),
            bits(&[ActionType::CLICK, ActionType::REPIN])
        ]
    );
    // Every action is still in the realtime sequence.
    assert_eq!(sequences(&store, 2).realtime.len(), 4);
}

#[test]
fn three_sequences_survive_snapshot_and_reopen_with_their_capacities() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config()
        .with_capacity_per_user(4)
        .with_lifelong_capacity(6)
        .with_impression_capacity(3);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..20u64 {
        let t = if i % 2 == 0 {
            ActionType::IMPRESSION
        } else {
            ActionType::CLICK
        };
        store.append(3, &[typed(i, i as i64 * 10, t)]).unwrap();
    }
    let before = sequences(&store, 3);
    store.snapshot().unwrap();
    store
        .append(3, &[typed(99, 500, ActionType::REPIN)])
        .unwrap();
    let after_append = sequences(&store, 3);
    store.close().unwrap();
    let (store, report) = EmbeddedStore::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(report.records_replayed, 1);
    assert_eq!(sequences(&store, 3), after_append);
    assert_eq!(before.lifelong.len(), 6);
    assert_eq!(before.impressions.len(), 3);
    assert_eq!(before.realtime.len(), 4);
    store.snapshot().unwrap();
    store.close().unwrap();
    // Smaller capacities apply to a loaded snapshot.
    let (store, _) = EmbeddedStore::open(
        dir.path(),
        cfg.with_lifelong_capacity(2).with_impression_capacity(1),
    )
    .unwrap();
    let s = sequences(&store, 3);
    assert_eq!(s.lifelong.item_ids, [99, 19]);
    assert_eq!(s.impressions.item_ids, [18]);
}

#[test]
fn explicit_types_above_63_need_the_lifelong_sequence_off() {
    let vocab = ActionVocab::new([1, 4, 70]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedStore::open(dir.path(), config().with_vocab(vocab.clone())).unwrap_err();
    assert!(err.to_string().contains("action type 70"), "{err}");
    assert!(
        EmbeddedStore::open(
            dir.path(),
            config().with_vocab(vocab).with_lifelong_capacity(0)
        )
        .is_ok()
    );
}

#[test]
fn a_second_open_of_a_directory_is_refused_until_the_first_store_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    store.append(1, &[act(1, 10)]).unwrap();
    let err = EmbeddedStore::open(dir.path(), config()).unwrap_err();
    assert!(matches!(&err, SeqError::Locked { dir: d } if d == dir.path()));
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()) && msg.contains("in use"));
    // The refused open changed nothing: the first store still appends.
    store.append(1, &[act(2, 20)]).unwrap();
    store.close().unwrap();
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(report.actions, 2);
    drop(store);
    // Dropping releases the lock too; so does a crash.
    let (store, _) = EmbeddedStore::open(dir.path(), config()).unwrap();
    store.simulate_crash();
    let (store, report) = EmbeddedStore::open(dir.path(), config()).unwrap();
    assert_eq!(report.actions, 2);
    assert!(dir.path().join(lock::LOCK_FILE).exists());
    drop(store);
}
