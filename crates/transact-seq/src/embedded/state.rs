//! The in-memory state: sharded map from user to history.
//!
//! A read takes its shard's read lock just long enough to clone the user's
//! `Arc`, then the user's own read lock; it never waits on other users or
//! on the log. Only the store's single writer (holding the log lock) mutates.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::config::StoreConfig;
use super::history::{Inserted, TokenRing, UserHistory};
use crate::{Action, SequenceLimits, UserId, UserSequences};

/// Number of shards of the user map (a power of two).
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Where in the logs a record ends: (generation, byte offset just past
/// it). Ordered as the records were written; `(0, 0)` is before every record.
pub(crate) type LogPos = (u64, u64);

/// One user's three sequences.
#[derive(Clone, Debug, Default)]
pub(crate) struct UserState {
    /// The end of the last log record applied to this user (`(0, 0)` for
    /// none, or in memory). A snapshot stores it, and replay skips the
    /// records up to it: a snapshot written while appends continue may
    /// already hold some records of its own log.
    pub(crate) applied: LogPos,
    /// Every action, newest first (`capacity_per_user`).
    pub(crate) realtime: UserHistory,
    /// Explicit actions as multi-hot tokens (`lifelong_capacity`).
    pub(crate) lifelong: TokenRing,
    /// Impressions (`impression_capacity`).
    pub(crate) impressions: UserHistory,
}

impl UserState {
    /// Number of realtime actions (what [`State`] counts).
    pub(crate) fn len(&self) -> usize {
        self.realtime.len()
    }

    /// Whether all three sequences are empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.realtime.len() == 0 && self.lifelong.len() == 0 && self.impressions.len() == 0
    }

    /// Routes one validated action into the sequences it belongs to;
    /// returns what happened to its realtime copy.
    pub(crate) fn insert(&mut self, a: &Action, config: &StoreConfig) -> Inserted {
        if config.is_impression(a.action_type) {
            if config.impression_capacity > 0 {
                self.impressions.insert(a, config.impression_capacity);
            }
        } else if config.lifelong_capacity > 0 {
            self.lifelong
                .merge(a, config.multi_hot_window_ms, config.lifelong_capacity);
        }
        self.realtime.insert(a, config.capacity_per_user.max(1))
    }

    /// Fills `out` with the newest entries of each sequence within `limits`.
    pub(crate) fn read(&self, limits: &SequenceLimits, out: &mut UserSequences) {
        out.clear();
        let t = limits.at_or_before_ms;
        self.lifelong
            .copy_newest_tokens(limits.lifelong, t, &mut out.lifelong);
        self.realtime
            .copy_newest(limits.realtime, t, &mut out.realtime);
        self.impressions
            .copy_newest(limits.impressions, t, &mut out.impressions);
    }
}

/// A user's sequences, shared between the map and readers.
pub(crate) type SharedHistory = Arc<RwLock<UserState>>;

type Shard = RwLock<HashMap<UserId, SharedHistory>>;

/// Every user's history, plus running totals.
#[derive(Debug)]
pub(crate) struct State {
    shards: Box<[Shard]>,
    users: AtomicUsize,
    actions: AtomicU64,
}

impl State {
    /// An empty state.
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            users: AtomicUsize::new(0),
            actions: AtomicU64::new(0),
        }
    }

    fn shard(&self, user: UserId) -> &Shard {
        // Fibonacci hashing spreads sequential ids over the shards.
        let i = (user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS)) as usize;
        &self.shards[i]
    }

    /// The user's history, if the user has any actions.
    pub(crate) fn get(&self, user: UserId) -> Option<SharedHistory> {
        self.shard(user).read().get(&user).cloned()
    }

    /// Users with at least one action.
    pub(crate) fn user_count(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// Actions over all users.
    pub(crate) fn action_count(&self) -> u64 {
        self.actions.load(Ordering::Acquire)
    }

    /// Applies validated actions for one user from the log record that
    /// ends at `pos`, unless the user's state already holds that record
    /// (`pos <= applied`: replaying the log of a snapshot that was written
    /// while appends went on). Callers serialise on the store's writer
    /// lock, so a user missing here cannot appear meanwhile.
    pub(crate) fn apply(
        &self,
        user: UserId,
        actions: &[Action],
        config: &StoreConfig,
        pos: LogPos,
    ) {
        if actions.is_empty() {
            return;
        }
        let mut grew = 0u64;
        if let Some(h) = self.get(user) {
            let mut h = h.write();
            if pos != (0, 0) && pos <= h.applied {
                return;
            }
            h.applied = pos;
            for a in actions {
                if h.insert(a, config) == Inserted::Grew {
                    grew += 1;
                }
            }
        } else {
            // Build the history fully before publishing it, so readers never
            // see a user without actions.
            let mut h = UserState {
                applied: pos,
                ..UserState::default()
            };
            for a in actions {
                h.insert(a, config);
            }
            grew = h.len() as u64;
            self.shard(user)
                .write()
                .insert(user, Arc::new(RwLock::new(h)));
            self.users.fetch_add(1, Ordering::AcqRel);
        }
        self.actions.fetch_add(grew, Ordering::AcqRel);
    }

    /// Adds a loaded user (replacing any previous history of that user).
    pub(crate) fn install(&self, user: UserId, history: UserState) {
        let n = history.len() as u64;
        if history.is_empty() {
            return;
        }
        let old = self
            .shard(user)
            .write()
            .insert(user, Arc::new(RwLock::new(history)));
        match old {
            Some(old) => {
                let was = old.read().len() as u64;
                self.actions.fetch_sub(was, Ordering::AcqRel);
            }
            None => {
                self.users.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.actions.fetch_add(n, Ordering::AcqRel);
    }

    /// Every user with their history, sorted by user id.
    pub(crate) fn sorted_users(&self) -> Vec<(UserId, SharedHistory)> {
        let mut all = Vec::with_capacity(self.user_count());
        for shard in self.shards.iter() {
            let shard = shard.read();
            all.extend(shard.iter().map(|(&u, h)| (u, Arc::clone(h))));
        }
        all.sort_unstable_by_key(|&(u, _)| u);
        all
    }

    /// Every user id, sorted.
    pub(crate) fn user_ids(&self) -> Vec<UserId> {
        let mut ids = Vec::with_capacity(self.user_count());
        for shard in self.shards.iter() {
            ids.extend(shard.read().keys().copied());
        }
        ids.sort_unstable();
        ids
    }
}
