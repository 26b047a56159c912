//! The embedded store against a plain in-memory model, over random sequences
//! of appends (valid and invalid, in and out of time order), reads of the
//! realtime sequence and of all three sequences (lifelong multi-hot tokens,
//! realtime, impressions), snapshots, clean reopens and crashes that tear
//! the log.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use transact_seq::{
    Action, ActionType, EmbeddedStore, SeqError, SequenceBuf, SequenceLimits, SequenceStore,
    StoreConfig, Surface, SyncPolicy, UserId, UserSequences,
};

const NOW: i64 = 50_000_000;
const SKEW: i64 = 60_000;
const CAPACITY: usize = 5;
const LIFELONG: usize = 6;
const IMPRESSIONS: usize = 3;
const WINDOW: i64 = 20;
const IMPRESSION: u16 = 4;
const SNAPSHOT_EVERY: u64 = 7;
const LOG_HEADER: u64 = 24;

/// How an action's timestamp relates to the running clock of the test.
#[derive(Clone, Debug)]
enum When {
    Forward(i64),
    Back(i64),
    Negative,
    Future,
}

#[derive(Clone, Debug)]
struct ActionSpec {
    item: u64,
    action_type: u16,
    when: When,
    surface: u16,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        user: UserId,
        actions: Vec<ActionSpec>,
    },
    Read {
        user: UserId,
        n: usize,
        back: Option<i64>,
    },
    ReadSequences {
        user: UserId,
        limits: [usize; 3],
        back: Option<i64>,
    },
    Snapshot,
    Reopen,
    Crash {
        cut: u64,
    },
}

fn action_spec() -> impl Strategy<Value = ActionSpec> {
    let when = prop_oneof![
        12 => (0i64..50).prop_map(When::Forward),
        4 => (0i64..400).prop_map(When::Back),
        1 => Just(When::Negative),
        1 => Just(When::Future),
    ];
    // The default vocabulary is 0..20: 20 and 21 are rejected.
    // Impressions (type 4) often, so they compete with engagements.
    let action_type = prop_oneof![10 => 0u16..20, 5 => Just(IMPRESSION), 1 => 20u16..22];
    // A few items recur, so explicit actions merge into multi-hot tokens.
    let item = prop_oneof![3 => 0u64..1_000, 2 => 0u64..3];
    (item, action_type, when, 0u16..2).prop_map(|(item, action_type, when, surface)| ActionSpec {
        item,
        action_type,
        when,
        surface,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..4, prop::collection::vec(action_spec(), 0..5))
            .prop_map(|(user, actions)| Op::Append { user, actions }),
        4 => (0u64..5, 0usize..8, prop::option::of(0i64..300))
            .prop_map(|(user, n, back)| Op::Read { user, n, back }),
        3 => (0u64..5, [0usize..9, 0usize..9, 0usize..9], prop::option::of(0i64..300))
            .prop_map(|(user, limits, back)| Op::ReadSequences { user, limits, back }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Reopen),
        2 => (0u64..80).prop_map(|cut| Op::Crash { cut }),
    ]
}

fn policy() -> impl Strategy<Value = SyncPolicy> {
    prop_oneof![
        Just(SyncPolicy::EveryAppend),
        Just(SyncPolicy::EveryN(3)),
        Just(SyncPolicy::OnClose)
    ]
}

/// A lifelong token of the model: (item, mask, time, surface).
type Token = (u64, u64, i64, u16);

/// The reference: histories newest first, capacity applied per insert.
#[derive(Default, Clone, Debug, PartialEq)]
struct Model {
    users: BTreeMap<UserId, Vec<Action>>,
    lifelong: BTreeMap<UserId, Vec<Token>>,
    impressions: BTreeMap<UserId, Vec<Action>>,
}

/// Inserts `x` (time `t`) before every entry with the same or an older
/// time, dropping the oldest beyond `capacity` (or `x` itself when it is
/// older than a full list).
fn insert_capped<T>(list: &mut Vec<T>, x: T, t: i64, time: impl Fn(&T) -> i64, capacity: usize) {
    let pos = list.partition_point(|y| time(y) > t);
    if list.len() >= capacity {
        if pos >= list.len() {
            return;
        }
        list.pop();
    }
    list.insert(pos, x);
}

impl Model {
    fn apply(&mut self, user: UserId, actions: &[Action]) {
        for a in actions {
            let t = a.timestamp_ms;
            let h = self.users.entry(user).or_default();
            insert_capped(h, *a, t, |x| x.timestamp_ms, CAPACITY);
            if a.action_type.0 == IMPRESSION {
                let imp = self.impressions.entry(user).or_default();
                insert_capped(imp, *a, t, |x| x.timestamp_ms, IMPRESSIONS);
            } else {
                let ll = self.lifelong.entry(user).or_default();
                let bit = 1u64 << a.action_type.0;
                // The newest token of the same item and surface within the window.
                match ll.iter_mut().find(|(item, _, tt, s)| {
                    *item == a.item_id && *s == a.surface.0 && (tt - t).abs() <= WINDOW
                }) {
                    Some(tok) => tok.1 |= bit,
                    None => {
                        insert_capped(ll, (a.item_id, bit, t, a.surface.0), t, |x| x.2, LIFELONG)
                    }
                }
            }
        }
    }

    fn read_sequences(
        &self,
        user: UserId,
        [l, r, i]: [usize; 3],
        at_or_before: Option<i64>,
    ) -> (Vec<Token>, Vec<Action>, Vec<Action>) {
        let keep = |t: i64| at_or_before.is_none_or(|b| t <= b);
        let ll = self.lifelong.get(&user).map_or_else(Vec::new, |v| {
            v.iter().filter(|x| keep(x.2)).take(l).copied().collect()
        });
        let imp = self.impressions.get(&user).map_or_else(Vec::new, |v| {
            v.iter()
                .filter(|x| keep(x.timestamp_ms))
                .take(i)
                .copied()
                .collect()
        });
        (ll, self.read(user, r, at_or_before), imp)
    }

    fn read(&self, user: UserId, n: usize, at_or_before: Option<i64>) -> Vec<Action> {
        let Some(h) = self.users.get(&user) else {
            return Vec::new();
        };
        h.iter()
            .filter(|a| at_or_before.is_none_or(|t| a.timestamp_ms <= t))
            .take(n)
            .copied()
            .collect()
    }

    fn newest(&self) -> i64 {
        self.users
            .values()
            .filter_map(|h| h.first())
            .map(|a| a.timestamp_ms)
            .max()
            .unwrap_or(0)
    }
}

/// The error the store must return for a batch, if any (checked in order).
fn expected_error(user: UserId, actions: &[Action]) -> Option<SeqError> {
    for a in actions {
        if a.action_type.0 >= 20 {
            return Some(SeqError::UnknownActionType {
                user,
                action_type: a.action_type,
            });
        }
        if a.timestamp_ms < 0 {
            return Some(SeqError::NegativeTimestamp {
                user,
                timestamp_ms: a.timestamp_ms,
            });
        }
        if a.timestamp_ms - NOW > SKEW {
            return Some(SeqError::FutureTimestamp {
                user,
                timestamp_ms: a.timestamp_ms,
                ahead_ms: a.timestamp_ms - NOW,
                max_skew_ms: SKEW,
            });
        }
    }
    None
}

fn same_error(got: &SeqError, want: &SeqError) -> bool {
    match (got, want) {
        (
            SeqError::UnknownActionType {
                user: a,
                action_type: b,
            },
            SeqError::UnknownActionType {
                user: c,
                action_type: d,
            },
        ) => a == c && b == d,
        (
            SeqError::NegativeTimestamp {
                user: a,
                timestamp_ms: b,
            },
            SeqError::NegativeTimestamp {
                user: c,
                timestamp_ms: d,
            },
        ) => a == c && b == d,
        (
            SeqError::FutureTimestamp {
                user: a,
                timestamp_ms: b,
                ahead_ms: e,
                max_skew_ms: f,
            },
            SeqError::FutureTimestamp {
                user: c,
                timestamp_ms: d,
                ahead_ms: g,
                max_skew_ms: h,
            },
        ) => a == c && b == d && e == g && f == h,
        _ => false,
    }
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
    model: Model,
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

    fn check_all(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        prop_assert_eq!(dump(store), self.model.users.clone());
        for u in 0..5 {
            self.check_sequences(u, [usize::MAX; 3], None)?;
        }
        prop_assert_eq!(store.user_count(), self.model.users.len());
        let actions: usize = self.model.users.values().map(Vec::len).sum();
        prop_assert_eq!(store.stats().actions, actions as u64);
        Ok(())
    }

    /// All three sequences of `user` read from the store equal the model's.
    fn check_sequences(
        &self,
        user: UserId,
        limits: [usize; 3],
        at_or_before: Option<i64>,
    ) -> Result<(), TestCaseError> {
        let mut out = UserSequences::default();
        let [lifelong, realtime, impressions] = limits;
        let req = SequenceLimits {
            lifelong,
            realtime,
            impressions,
            at_or_before_ms: at_or_before,
        };
        self.store()
            .read_sequences(user, &req, &mut out)
            .expect("read sequences");
        let (ll, rt, imp) = self.model.read_sequences(user, limits, at_or_before);
        let got_ll: Vec<Token> = (0..out.lifelong.len())
            .map(|i| {
                let l = &out.lifelong;
                (
                    l.item_ids[i],
                    l.action_masks[i],
                    l.timestamps_ms[i],
                    l.surfaces[i],
                )
            })
            .collect();
        prop_assert_eq!(got_ll, ll);
        let got_rt: Vec<Action> = out.realtime.iter().collect();
        prop_assert_eq!(got_rt, rt);
        let got_imp: Vec<Action> = out.impressions.iter().collect();
        prop_assert_eq!(got_imp, imp);
        Ok(())
    }

    fn run(&mut self, op: &Op, clock: &mut i64) -> Result<(), TestCaseError> {
        match op {
            Op::Append { user, actions } => {
                let actions: Vec<Action> = actions
                    .iter()
                    .map(|s| {
                        let t = match s.when {
                            When::Forward(d) => {
                                *clock += d;
                                *clock
                            }
                            When::Back(d) => (*clock - d).max(0),
                            When::Negative => -1 - d_of(s.item),
                            When::Future => NOW + SKEW + 1 + d_of(s.item),
                        };
                        Action {
                            item_id: s.item,
                            action_type: ActionType(s.action_type),
                            timestamp_ms: t,
                            surface: Surface(s.surface),
                        }
                    })
                    .collect();
                let gen_before = self.store().stats().log_generation;
                let bytes_before = self.store().stats().log_bytes;
                let result = self.store().append(*user, &actions);
                match expected_error(*user, &actions) {
                    Some(want) => {
                        let got = result.expect_err("invalid batch must be rejected");
                        prop_assert!(same_error(&got, &want), "got {:?}, want {:?}", got, want);
                        prop_assert_eq!(self.store().stats().log_bytes, bytes_before);
                    }
                    None => {
                        result.expect("valid append");
                        if actions.is_empty() {
                            prop_assert_eq!(self.store().stats().log_bytes, bytes_before);
                            return Ok(());
                        }
                        self.model.apply(*user, &actions);
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
                for u in 0..4 {
                    let want = self.model.users.get(&u).map_or(0, Vec::len);
                    prop_assert_eq!(self.store().history_len(u).expect("len"), want);
                }
            }
            Op::Read { user, n, back } => {
                let t = back.map(|b| self.model.newest() - b);
                let mut buf = SequenceBuf::default();
                let got = self
                    .store()
                    .read_newest(*user, *n, t, &mut buf)
                    .expect("read");
                let want = self.model.read(*user, *n, t);
                prop_assert_eq!(got, want.len());
                let got: Vec<Action> = (0..buf.len()).filter_map(|i| buf.get(i)).collect();
                prop_assert_eq!(got, want);
            }
            Op::ReadSequences { user, limits, back } => {
                let t = back.map(|b| self.model.newest() - b);
                self.check_sequences(*user, *limits, t)?;
            }
            Op::Snapshot => {
                self.store().snapshot().expect("snapshot");
                self.before_log = self.records.len();
                self.ends.clear();
            }
            Op::Reopen => {
                if let Some(store) = self.store.take() {
                    store.close().expect("close");
                }
                let report = self.open();
                prop_assert_eq!(report.truncated_tail, None);
                prop_assert!(report.skipped_snapshots.is_empty());
                prop_assert_eq!(report.records_replayed, self.ends.len() as u64);
                self.check_all()?;
            }
            Op::Crash { cut } => {
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
                self.model = Model::default();
                for (user, actions) in &self.records {
                    self.model.apply(*user, actions);
                }
                self.check_all()?;
            }
        }
        Ok(())
    }
}

/// A small deterministic spread for out-of-range timestamps.
fn d_of(item: u64) -> i64 {
    (item % 97) as i64
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
        let config = StoreConfig::default()
            .with_capacity_per_user(CAPACITY)
            .with_lifelong_capacity(LIFELONG)
            .with_impression_capacity(IMPRESSIONS)
            .with_impression_types([IMPRESSION])
            .with_multi_hot_window_ms(WINDOW)
            .with_max_future_skew_ms(SKEW)
            .with_snapshot_every(SNAPSHOT_EVERY)
            .with_sync(sync)
            .with_clock(|| NOW);
        let mut h = Harness {
            dir: dir.path().to_path_buf(),
            config,
            store: None,
            model: Model::default(),
            records: Vec::new(),
            before_log: 0,
            ends: Vec::new(),
        };
        h.open();
        let mut clock = 1_000_000i64;
        for op in &ops {
            h.run(op, &mut clock)?;
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
