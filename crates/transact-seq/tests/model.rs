//! The embedded store against a plain in-memory model, over random sequences
//! of appends (valid and invalid, in and out of time order), reads of the
//! realtime sequence and of all three sequences (lifelong multi-hot tokens,
//! realtime, impressions), snapshots, clean reopens and crashes that tear
//! the log.
//!
//! The model, the generated operations and the shared checks are
//! `transact_seq::testing` (feature `testing`), which the Redis store's
//! model test runs too; the snapshot, reopen and crash operations are this
//! store's own.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use transact_seq::testing::{self, Appended, ModelCheck, Op};
use transact_seq::{Action, EmbeddedStore, StoreConfig, SyncPolicy, UserId};

const SNAPSHOT_EVERY: u64 = 7;
const LOG_HEADER: u64 = 24;

/// The embedded store's own operations.
#[derive(Clone, Debug)]
enum EmbeddedOp {
    Snapshot,
    Reopen,
    Crash { cut: u64 },
}

/// The shared operations plus snapshots (weight 1), clean reopens (1) and
/// crashes that tear the log (2).
fn op() -> impl Strategy<Value = Op<EmbeddedOp>> {
    testing::op(
        prop_oneof![
            1 => Just(EmbeddedOp::Snapshot),
            1 => Just(EmbeddedOp::Reopen),
            2 => (0u64..80).prop_map(|cut| EmbeddedOp::Crash { cut }),
        ],
        4,
    )
}

fn policy() -> impl Strategy<Value = SyncPolicy> {
    prop_oneof![
        Just(SyncPolicy::EveryAppend),
        Just(SyncPolicy::EveryN(3)),
        Just(SyncPolicy::OnClose)
    ]
}

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

/// The test's view of the store: the model plus the acknowledged records,
/// and where each record of the current log file ends.
struct Harness {
    dir: PathBuf,
    config: StoreConfig,
    store: Option<EmbeddedStore>,
    check: ModelCheck,
    /// Every acknowledged record, in order.
    records: Vec<(UserId, Vec<Action>)>,
    /// How many of `records` are before the current log file.
    before_log: usize,
    /// End offset of each record in the current log file.
    ends: Vec<u64>,
}

impl Harness {
    fn store(&self) -> &EmbeddedStore {
        self.store.as_ref().expect("store is open")
    }

    fn log_path(&self) -> PathBuf {
        let g = self.store().stats().log_generation;
        self.dir.join(format!("log-{g}.wal"))
    }

    fn open(&mut self) -> transact_seq::OpenReport {
        let (store, report) =
            EmbeddedStore::open(&self.dir, self.config.clone()).expect("reopen succeeds");
        self.store = Some(store);
        report
    }

    /// The shared checks (every sequence, lengths, user count), plus what
    /// only the embedded store shows: every user's whole history through
    /// `users` / `for_each_action`, and the action count.
    fn check_all(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        prop_assert_eq!(dump(store), self.check.model.users.clone());
        self.check.check_all(store)?;
        let actions: usize = self.check.model.users.values().map(Vec::len).sum();
        prop_assert_eq!(store.stats().actions, actions as u64);
        Ok(())
    }

    fn run(&mut self, op: &Op<EmbeddedOp>) -> Result<(), TestCaseError> {
        if let Op::Append { user, actions } = op {
            let gen_before = self.store().stats().log_generation;
            let bytes_before = self.store().stats().log_bytes;
            let store = self.store.as_ref().expect("store is open");
            match self.check.append(store, *user, actions)? {
                Appended::Rejected => {
                    prop_assert_eq!(self.store().stats().log_bytes, bytes_before);
                }
                Appended::Empty => {
                    prop_assert_eq!(self.store().stats().log_bytes, bytes_before);
                    return Ok(());
                }
                Appended::Applied(actions) => {
                    self.records.push((*user, actions));
                    let stats = self.store().stats();
                    if stats.log_generation != gen_before {
                        // This record completed a snapshot interval.
                        prop_assert_eq!(stats.last_snapshot_error, None);
                        self.before_log = self.records.len();
                        self.ends.clear();
                    } else {
                        self.ends.push(stats.log_bytes);
                    }
                }
            }
            return self.check.check_lens(self.store());
        }
        let store = self.store.as_ref().expect("store is open");
        let Some(own) = self.check.run(store, op)? else {
            return Ok(());
        };
        match own {
            EmbeddedOp::Snapshot => {
                self.store().snapshot().expect("snapshot");
                self.before_log = self.records.len();
                self.ends.clear();
            }
            EmbeddedOp::Reopen => {
                if let Some(store) = self.store.take() {
                    store.close().expect("close");
                }
                let report = self.open();
                prop_assert_eq!(report.truncated_tail, None);
                prop_assert!(report.skipped_snapshots.is_empty());
                prop_assert_eq!(report.records_replayed, self.ends.len() as u64);
                self.check_all()?;
            }
            EmbeddedOp::Crash { cut } => {
                let log = self.log_path();
                let len = self.store().stats().log_bytes;
                // A crash: no close, no drop-time sync.
                if let Some(store) = self.store.take() {
                    store.simulate_crash();
                }
                let cut = (*cut).min(len - LOG_HEADER);
                let new_len = len - cut;
                truncate(&log, new_len);
                // The records wholly before the cut survive.
                let kept = self.ends.iter().take_while(|&&end| end <= new_len).count();
                let good_end = if kept == 0 {
                    LOG_HEADER
                } else {
                    self.ends[kept - 1]
                };
                let report = self.open();
                match &report.truncated_tail {
                    None => prop_assert_eq!(new_len, good_end),
                    Some(tail) => {
                        prop_assert!(new_len > good_end);
                        prop_assert_eq!(tail.offset, good_end);
                        prop_assert_eq!(tail.bytes_dropped, new_len - good_end);
                    }
                }
                prop_assert_eq!(report.records_replayed, kept as u64);
                self.records.truncate(self.before_log + kept);
                self.ends.truncate(kept);
                self.check.model = testing::Model::default();
                for (user, actions) in &self.records {
                    self.check.model.apply(*user, actions);
                }
                self.check_all()?;
            }
        }
        Ok(())
    }
}

fn truncate(path: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(path).expect("open log");
    f.set_len(len).expect("truncate log");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60), sync in policy()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = testing::model_config()
            .with_snapshot_every(SNAPSHOT_EVERY)
            .with_sync(sync);
        let mut h = Harness {
            dir: dir.path().to_path_buf(),
            config,
            store: None,
            check: ModelCheck::default(),
            records: Vec::new(),
            before_log: 0,
            ends: Vec::new(),
        };
        h.open();
        for op in &ops {
            h.run(op)?;
        }
        h.check_all()?;
        // However the run ended, a clean reopen sees the same state.
        if let Some(store) = h.store.take() {
            store.close().expect("close");
        }
        h.open();
        h.check_all()?;
    }
}
