//! One writer appending while readers read the newest actions: every read
//! must be a consistent, time-ordered cut of the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use transact_seq::{
    Action, ActionType, EmbeddedStore, SequenceBuf, SequenceStore, StoreConfig, Surface, SyncPolicy,
};

const USER: u64 = 1;
const WRITES: i64 = 4_000;
const CAPACITY: usize = 300;

/// The writer appends timestamps 1, 2, 3, ... with `item_id == timestamp`
/// (surface and type derived from it too), so a consistent read of the
/// newest `n` is `t, t-1, ..., t-n+1` in every column.
fn action(t: i64) -> Action {
    Action {
        item_id: t as u64,
        action_type: ActionType((t % 4) as u16),
        timestamp_ms: t,
        surface: Surface((t % 3) as u16),
    }
}

fn check_read(buf: &SequenceBuf, n: usize, at_or_before: Option<i64>) -> i64 {
    assert!(buf.len() <= n);
    let Some(newest) = buf.timestamps_ms.first().copied() else {
        return 0;
    };
    if let Some(t) = at_or_before {
        assert!(newest <= t, "read {newest} past the filter {t}");
    }
    for i in 0..buf.len() {
        let t = newest - i as i64;
        assert_eq!(
            buf.timestamps_ms[i], t,
            "not contiguous newest first: {:?}",
            buf.timestamps_ms
        );
        assert_eq!(buf.item_ids[i], t as u64, "columns out of step");
        assert_eq!(buf.action_types[i], (t % 4) as u16, "columns out of step");
        assert_eq!(buf.surfaces[i], (t % 3) as u16, "columns out of step");
    }
    newest
}

fn run(store: Arc<EmbeddedStore>) {
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut buf = SequenceBuf::with_capacity(CAPACITY);
                let mut last_newest = 0;
                let mut reads = 0u64;
                let mut k = 0usize;
                while !done.load(Ordering::Acquire) || reads < 100 {
                    k += 1;
                    let n = [1, 16, 64, CAPACITY, CAPACITY * 2][k % 5];
                    let got = store.read_newest(USER, n, None, &mut buf).expect("read");
                    assert_eq!(got, buf.len());
                    let newest = check_read(&buf, n, None);
                    // The writer only adds newer actions: what a reader sees never goes back.
                    assert!(
                        newest >= last_newest,
                        "reader {r}: {newest} after {last_newest}"
                    );
                    // A full history once the writer has filled it.
                    if newest >= CAPACITY as i64 {
                        assert_eq!(buf.len(), n.min(CAPACITY));
                    }
                    last_newest = newest;
                    if r == 1 && newest > 10 {
                        let t = newest - (k as i64 % 10);
                        store
                            .read_newest(USER, 32, Some(t), &mut buf)
                            .expect("read");
                        check_read(&buf, 32, Some(t));
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            let mut t = 1;
            while t <= WRITES {
                // Batches of 1..=3 actions, plus traffic for other users.
                let batch: Vec<Action> = (t..(t + 1 + t % 3).min(WRITES + 1)).map(action).collect();
                t += batch.len() as i64;
                store.append(USER, &batch).expect("append");
                store
                    .append(2 + (t as u64 % 5), &[action(t)])
                    .expect("append other");
            }
        })
    };
    writer.join().expect("writer");
    done.store(true, Ordering::Release);
    for r in readers {
        let reads = r.join().expect("reader");
        assert!(reads >= 100);
    }
    assert_eq!(store.history_len(USER).expect("len"), CAPACITY);
    let mut buf = SequenceBuf::default();
    store
        .read_newest(USER, usize::MAX, None, &mut buf)
        .expect("read");
    assert_eq!(check_read(&buf, usize::MAX, None), WRITES);
    assert_eq!(buf.len(), CAPACITY);
}

fn config() -> StoreConfig {
    StoreConfig::default()
        .with_capacity_per_user(CAPACITY)
        .with_clock(|| 1_000_000)
}

#[test]
fn readers_see_consistent_cuts_in_memory() {
    run(Arc::new(EmbeddedStore::in_memory(config())));
}

#[test]
fn readers_see_consistent_cuts_with_log_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config()
        .with_sync(SyncPolicy::OnClose)
        .with_snapshot_every(500);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg.clone()).expect("open");
    let store = Arc::new(store);
    run(Arc::clone(&store));
    let stats = store.stats();
    assert!(stats.log_generation >= 2, "{stats:?}");
    assert_eq!(stats.last_snapshot_error, None);
    let before: Vec<u64> = store.users();
    drop(store);
    let (store, _) = EmbeddedStore::open(dir.path(), cfg).expect("reopen");
    assert_eq!(store.users(), before);
    let mut buf = SequenceBuf::default();
    store
        .read_newest(USER, usize::MAX, None, &mut buf)
        .expect("read");
    assert_eq!(check_read(&buf, usize::MAX, None), WRITES);
}

/// Appends for several users go on while snapshots are written (appends
/// are not held for the length of a snapshot): after a clean reopen and
/// after a crash, every acknowledged action is there exactly once, in
/// order — a record a snapshot already holds is not replayed again.
#[test]
fn appends_during_snapshots_are_neither_lost_nor_doubled() {
    const USERS: u64 = 40;
    // Enough state that encoding a snapshot takes a while, so appends land
    // in the new log both before and after their user is encoded.
    const PREFILL: i64 = 4_000;
    const RECORDS: i64 = 20_000;
    for crash in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig::default()
            .with_capacity_per_user(20_000)
            .with_lifelong_capacity(20_000)
            .with_impression_capacity(20_000)
            .with_snapshot_every(0)
            .with_sync(SyncPolicy::OnClose)
            .with_clock(|| i64::MAX / 2);
        let (store, _) = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
        for u in 0..USERS {
            let batch: Vec<Action> = (1..=PREFILL).map(action).collect();
            store.append(u, &batch).expect("prefill");
        }
        let store = Arc::new(store);
        let writer = {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for t in PREFILL + 1..=PREFILL + RECORDS {
                    store
                        .append(t as u64 % USERS, &[action(t)])
                        .expect("append");
                }
            })
        };
        let (mut snapshots, mut overlapped) = (0, 0);
        while !writer.is_finished() && snapshots < 8 {
            store.snapshot().expect("snapshot while appending");
            // Appends that landed in the new log while this snapshot was written.
            overlapped += store.stats().records_since_snapshot;
            snapshots += 1;
        }
        writer.join().expect("writer");
        eprintln!("{snapshots} snapshots, {overlapped} appends during them");
        assert!(overlapped > 0, "no append overlapped a snapshot");
        let store = Arc::into_inner(store).expect("sole owner");
        if crash {
            store.sync().expect("sync");
            store.simulate_crash();
        } else {
            store.close().expect("close");
        }
        let (store, _) = EmbeddedStore::open(dir.path(), config).expect("reopen");
        let mut buf = SequenceBuf::default();
        for u in 0..USERS {
            store
                .read_newest(u, usize::MAX, None, &mut buf)
                .expect("read");
            let appended = (PREFILL + 1..=PREFILL + RECORDS)
                .rev()
                .filter(|t| *t as u64 % USERS == u);
            let prefill = (1..=PREFILL).rev();
            let want: Vec<i64> = appended.chain(prefill).collect();
            assert_eq!(
                buf.timestamps_ms.len(),
                want.len(),
                "user {u} after {} ({snapshots} snapshots)",
                if crash { "a crash" } else { "a clean close" }
            );
            assert_eq!(buf.timestamps_ms, want, "user {u}");
        }
    }
}
