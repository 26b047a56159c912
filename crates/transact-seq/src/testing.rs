//! Test support shared by every [`SequenceStore`] implementation (cargo
//! feature `testing`; enable it from a dev-dependency).
//!
//! The semantics of a store are defined once, here, by a plain reference
//! [`Model`]: per user a realtime list of every action, an impressions list
//! and a lifelong list of multi-hot tokens of explicit actions, each newest
//! first and capped, out-of-order actions inserted at their place by time
//! (ties: the later arrival is newer). The proptest strategies ([`op`],
//! [`action_spec`]) generate appends (valid and invalid, in and out of time
//! order) and reads; a store's own test adds the operations that only make
//! sense for it (snapshots and torn-log crashes for the embedded store,
//! reconnects and server restarts for Redis) as [`Op::Store`], and runs the
//! common ones through [`ModelCheck`], which compares every answer of the
//! store with the model's.
//!
//! The model is configured by the constants below; a store under test must
//! be built from [`model_config`] (plus its own settings).

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::{
    Action, ActionType, SeqError, SequenceBuf, SequenceLimits, SequenceStore, StoreConfig, Surface,
    UserId, UserSequences,
};

/// The store clock of the model tests (ms).
pub const NOW: i64 = 50_000_000;
/// Allowed future skew (ms).
pub const SKEW: i64 = 60_000;
/// Realtime capacity per user.
pub const CAPACITY: usize = 5;
/// Lifelong token capacity per user.
pub const LIFELONG: usize = 6;
/// Impression capacity per user.
pub const IMPRESSIONS: usize = 3;
/// Multi-hot window (ms).
pub const WINDOW: i64 = 20;
/// The impression action type.
pub const IMPRESSION: u16 = 4;
/// The vocabulary is the default one, `0..VOCAB_END`.
pub const VOCAB_END: u16 = 20;
/// Users the generated appends write to are `0..APPEND_USERS`.
pub const APPEND_USERS: u64 = 4;
/// Users the generated reads and [`ModelCheck::check_all`] read are
/// `0..READ_USERS` (one more than ever written: an unknown user).
pub const READ_USERS: u64 = 5;
/// Where the test clock starts (ms).
pub const CLOCK_START: i64 = 1_000_000;

/// The store configuration the model describes: the capacities, window,
/// impression type, skew and a clock pinned at [`NOW`]. A store adds its
/// own settings (sync policy, snapshots) with the `with_*` methods.
pub fn model_config() -> StoreConfig {
    StoreConfig::default()
        .with_capacity_per_user(CAPACITY)
        .with_lifelong_capacity(LIFELONG)
        .with_impression_capacity(IMPRESSIONS)
        .with_impression_types([IMPRESSION])
        .with_multi_hot_window_ms(WINDOW)
        .with_max_future_skew_ms(SKEW)
        .with_clock(|| NOW)
}

/// How an action's timestamp relates to the running clock of the test.
#[derive(Clone, Debug)]
pub enum When {
    /// The clock advances by this much and the action takes the new time.
    Forward(i64),
    /// This much before the clock (at least 0): out of order.
    Back(i64),
    /// A negative timestamp (rejected).
    Negative,
    /// Beyond the allowed skew (rejected).
    Future,
}

/// One generated action, before its time is fixed by the running clock.
#[derive(Clone, Debug)]
pub struct ActionSpec {
    /// Item id (a few recur, so explicit actions merge into tokens).
    pub item: u64,
    /// Raw action type (a few are outside the vocabulary).
    pub action_type: u16,
    /// Its time.
    pub when: When,
    /// Surface id.
    pub surface: u16,
}

/// One step of a model test: the operations every store supports, and
/// `Store(S)` for those of one implementation.
#[derive(Clone, Debug)]
pub enum Op<S> {
    /// Append a batch for a user.
    Append {
        /// The user.
        user: UserId,
        /// The batch.
        actions: Vec<ActionSpec>,
    },
    /// `read_newest`, at most `n`, at or before `newest - back` when given.
    Read {
        /// The user.
        user: UserId,
        /// Most actions read.
        n: usize,
        /// How far before the newest stored action the time filter is.
        back: Option<i64>,
    },
    /// `read_sequences` with limits (lifelong, realtime, impressions).
    ReadSequences {
        /// The user.
        user: UserId,
        /// Limits: lifelong, realtime, impressions.
        limits: [usize; 3],
        /// How far before the newest stored action the time filter is.
        back: Option<i64>,
    },
    /// An operation of one store implementation.
    Store(S),
}

/// Generated actions: mostly valid and in order, some out of order, some
/// rejected (unknown type, negative or future time).
pub fn action_spec() -> impl Strategy<Value = ActionSpec> {
    let when = prop_oneof![
        12 => (0i64..50).prop_map(When::Forward),
        4 => (0i64..400).prop_map(When::Back),
        1 => Just(When::Negative),
        1 => Just(When::Future),
    ];
    // The default vocabulary is 0..20: 20 and 21 are rejected.
    // Impressions (type 4) often, so they compete with engagements.
    let action_type =
        prop_oneof![10 => 0u16..VOCAB_END, 5 => Just(IMPRESSION), 1 => VOCAB_END..VOCAB_END + 2];
    // A few items recur, so explicit actions merge into multi-hot tokens.
    let item = prop_oneof![3 => 0u64..1_000, 2 => 0u64..3];
    (item, action_type, when, 0u16..2).prop_map(|(item, action_type, when, surface)| ActionSpec {
        item,
        action_type,
        when,
        surface,
    })
}

/// Generated operations: appends (weight 8), reads (4), sequence reads (3)
/// and the store's own operations from `store_op` with weight `store_weight`.
pub fn op<S: Clone + Debug>(
    store_op: impl Strategy<Value = S>,
    store_weight: u32,
) -> impl Strategy<Value = Op<S>> {
    prop_oneof![
        8 => (0u64..APPEND_USERS, prop::collection::vec(action_spec(), 0..5))
            .prop_map(|(user, actions)| Op::Append { user, actions }),
        4 => (0u64..READ_USERS, 0usize..8, prop::option::of(0i64..300))
            .prop_map(|(user, n, back)| Op::Read { user, n, back }),
        3 => (0u64..READ_USERS, [0usize..9, 0usize..9, 0usize..9], prop::option::of(0i64..300))
            .prop_map(|(user, limits, back)| Op::ReadSequences { user, limits, back }),
        store_weight => store_op.prop_map(Op::Store),
    ]
}

/// A lifelong token of the model: (item, mask, time, surface).
pub type Token = (u64, u64, i64, u16);

/// The reference: histories newest first, capacity applied per insert.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Model {
    /// Realtime actions per user, newest first.
    pub users: BTreeMap<UserId, Vec<Action>>,
    /// Lifelong tokens per user, newest first.
    pub lifelong: BTreeMap<UserId, Vec<Token>>,
    /// Impressions per user, newest first.
    pub impressions: BTreeMap<UserId, Vec<Action>>,
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
    /// Applies an accepted batch.
    pub fn apply(&mut self, user: UserId, actions: &[Action]) {
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

    /// The three sequences of `user` within the limits (lifelong, realtime,
    /// impressions) at or before a time.
    pub fn read_sequences(
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

    /// The newest `n` realtime actions of `user` at or before a time.
    pub fn read(&self, user: UserId, n: usize, at_or_before: Option<i64>) -> Vec<Action> {
        let Some(h) = self.users.get(&user) else {
            return Vec::new();
        };
        h.iter()
            .filter(|a| at_or_before.is_none_or(|t| a.timestamp_ms <= t))
            .take(n)
            .copied()
            .collect()
    }

    /// The newest timestamp over all users (0 when empty).
    pub fn newest(&self) -> i64 {
        self.users
            .values()
            .filter_map(|h| h.first())
            .map(|a| a.timestamp_ms)
            .max()
            .unwrap_or(0)
    }
}

/// The error the store must return for a batch, if any (checked in order).
pub fn expected_error(user: UserId, actions: &[Action]) -> Option<SeqError> {
    for a in actions {
        if a.action_type.0 >= VOCAB_END {
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

/// Whether two validation errors are the same error for the same action.
pub fn same_error(got: &SeqError, want: &SeqError) -> bool {
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

/// A small deterministic spread for out-of-range timestamps.
fn d_of(item: u64) -> i64 {
    (item % 97) as i64
}

/// What [`ModelCheck::append`] saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Appended {
    /// The batch was invalid and the store rejected it with the right error.
    Rejected,
    /// The batch was empty (the store accepted it and nothing changed).
    Empty,
    /// The store accepted the batch; the model applied it.
    Applied(Vec<Action>),
}

/// The model plus the test's running clock: runs the common operations
/// against a store and compares its answers with the model's.
#[derive(Clone, Debug)]
pub struct ModelCheck {
    /// The reference state.
    pub model: Model,
    /// The test clock (advanced by [`When::Forward`]).
    pub clock: i64,
}

impl Default for ModelCheck {
    fn default() -> Self {
        Self {
            model: Model::default(),
            clock: CLOCK_START,
        }
    }
}

impl ModelCheck {
    /// Fixes the times of a generated batch (advancing the clock).
    pub fn actions(&mut self, specs: &[ActionSpec]) -> Vec<Action> {
        specs
            .iter()
            .map(|s| {
                let t = match s.when {
                    When::Forward(d) => {
                        self.clock += d;
                        self.clock
                    }
                    When::Back(d) => (self.clock - d).max(0),
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
            .collect()
    }

    /// Appends a generated batch to `store`: an invalid one must be rejected
    /// with the model's error, a valid one must succeed and is applied to
    /// the model.
    pub fn append(
        &mut self,
        store: &dyn SequenceStore,
        user: UserId,
        specs: &[ActionSpec],
    ) -> Result<Appended, TestCaseError> {
        let actions = self.actions(specs);
        let result = store.append(user, &actions);
        match expected_error(user, &actions) {
            Some(want) => {
                let got = match result {
                    Ok(()) => {
                        return Err(TestCaseError::fail(format!(
                            "invalid batch accepted, want {want:?}"
                        )));
                    }
                    Err(e) => e,
                };
                prop_assert!(same_error(&got, &want), "got {:?}, want {:?}", got, want);
                Ok(Appended::Rejected)
            }
            None => {
                if let Err(e) = result {
                    return Err(TestCaseError::fail(format!(
                        "valid append for user {user} failed: {e}"
                    )));
                }
                if actions.is_empty() {
                    return Ok(Appended::Empty);
                }
                self.model.apply(user, &actions);
                Ok(Appended::Applied(actions))
            }
        }
    }

    /// `history_len` of every user appends write to equals the model's.
    pub fn check_lens(&self, store: &dyn SequenceStore) -> Result<(), TestCaseError> {
        for u in 0..APPEND_USERS {
            let want = self.model.users.get(&u).map_or(0, Vec::len);
            let got = store
                .history_len(u)
                .map_err(|e| TestCaseError::fail(format!("history_len({u}): {e}")))?;
            prop_assert_eq!(got, want, "history_len of user {}", u);
        }
        Ok(())
    }

    /// `read_newest` equals the model's read.
    pub fn check_read(
        &self,
        store: &dyn SequenceStore,
        user: UserId,
        n: usize,
        back: Option<i64>,
    ) -> Result<(), TestCaseError> {
        let t = back.map(|b| self.model.newest() - b);
        let mut buf = SequenceBuf::default();
        let got = store
            .read_newest(user, n, t, &mut buf)
            .map_err(|e| TestCaseError::fail(format!("read_newest({user}): {e}")))?;
        let want = self.model.read(user, n, t);
        prop_assert_eq!(got, want.len());
        let got: Vec<Action> = (0..buf.len()).filter_map(|i| buf.get(i)).collect();
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// All three sequences of `user` read from the store equal the model's.
    pub fn check_sequences(
        &self,
        store: &dyn SequenceStore,
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
        store
            .read_sequences(user, &req, &mut out)
            .map_err(|e| TestCaseError::fail(format!("read_sequences({user}): {e}")))?;
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

    /// Runs a common operation; `Store` operations are the caller's (returns
    /// `Ok(Some(s))` for them, `Ok(None)` when the operation was run here).
    /// After an append, [`ModelCheck::check_lens`] runs unless the batch was
    /// empty; callers that need to look at the store between the append and
    /// that check call [`ModelCheck::append`] themselves.
    pub fn run<'a, S>(
        &mut self,
        store: &dyn SequenceStore,
        op: &'a Op<S>,
    ) -> Result<Option<&'a S>, TestCaseError> {
        match op {
            Op::Append { user, actions } => {
                if self.append(store, *user, actions)? != Appended::Empty {
                    self.check_lens(store)?;
                }
            }
            Op::Read { user, n, back } => self.check_read(store, *user, *n, *back)?,
            Op::ReadSequences { user, limits, back } => {
                let t = back.map(|b| self.model.newest() - b);
                self.check_sequences(store, *user, *limits, t)?;
            }
            Op::Store(s) => return Ok(Some(s)),
        }
        Ok(None)
    }

    /// Everything the store holds equals the model: all three sequences and
    /// the length of every user read, and the user count.
    pub fn check_all(&self, store: &dyn SequenceStore) -> Result<(), TestCaseError> {
        for u in 0..READ_USERS {
            self.check_sequences(store, u, [usize::MAX; 3], None)?;
            let want = self.model.users.get(&u).map_or(0, Vec::len);
            let got = store
                .history_len(u)
                .map_err(|e| TestCaseError::fail(format!("history_len({u}): {e}")))?;
            prop_assert_eq!(got, want, "history_len of user {}", u);
        }
        prop_assert_eq!(store.user_count(), self.model.users.len());
        Ok(())
    }
}
