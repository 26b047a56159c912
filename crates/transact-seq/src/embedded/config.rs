//! Store configuration: capacity, vocabulary, clock, durability.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Action, ActionType, ActionVocab, SeqError, UserId};

/// The clock a store validates timestamps against: milliseconds since the
/// Unix epoch.
///
/// Injected through [`StoreConfig::clock`] so tests can pin time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in milliseconds since the Unix epoch (0 if the system
/// clock is before the epoch).
pub fn system_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When appended records are forced to stable storage (`fdatasync`).
///
/// Every append is handed to the operating system before it returns, so a
/// crash of the process alone loses nothing acknowledged; the policy decides
/// what a power loss or kernel crash may lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Sync before every `append` returns `Ok` (nothing acknowledged is lost).
    #[default]
    EveryAppend,
    /// Sync once every `n` records (`0` behaves like `1`); up to `n - 1`
    /// acknowledged records may be lost on power failure.
    EveryN(u64),
    /// Sync only on [`SequenceStore::sync`](crate::SequenceStore::sync),
    /// snapshots, [`EmbeddedStore::close`](crate::EmbeddedStore::close) and drop.
    OnClose,
}

/// Configuration of an [`EmbeddedStore`](crate::EmbeddedStore).
///
/// Build it with struct update syntax or the `with_*` methods:
///
/// ```
/// use transact_seq::{StoreConfig, SyncPolicy};
/// let config = StoreConfig::default()
///     .with_capacity_per_user(1_000)
///     .with_sync(SyncPolicy::EveryN(64))
///     .with_clock(|| 1_700_000_000_000);
/// assert_eq!(config.capacity_per_user, 1_000);
/// assert_eq!((config.clock)(), 1_700_000_000_000);
/// ```
#[derive(Clone)]
pub struct StoreConfig {
    /// Most actions of the realtime sequence kept per user (every action
    /// type, impressions included); the oldest is dropped when full. Must be
    /// at least 1. Default 16,384.
    pub capacity_per_user: usize,
    /// Most lifelong tokens kept per user: the explicit actions (every type
    /// but the impression types), one multi-hot token per item, surface and
    /// time, the oldest dropped when full; impressions never push them out.
    /// `0` keeps no lifelong sequence. Default 16,384.
    pub lifelong_capacity: usize,
    /// Most impressions kept per user, apart from the lifelong tokens; `0`
    /// keeps none apart. Default 4,096.
    pub impression_capacity: usize,
    /// The action types that are impressions. Default
    /// `[ActionType::IMPRESSION]`.
    pub impression_types: Vec<u16>,
    /// An explicit action joins an existing lifelong token of the same item
    /// and surface whose time is at most this far (ms) from its own, setting
    /// its type's bit in the token's mask (the token keeps its time). `0`
    /// joins only actions at exactly the same time. Must not be negative.
    /// Default 0.
    pub multi_hot_window_ms: i64,
    /// The action types accepted by `append`. Default [`ActionVocab::default`].
    pub vocab: ActionVocab,
    /// How far (ms) a timestamp may lie ahead of [`StoreConfig::clock`].
    /// Must not be negative. Default 24 hours.
    pub max_future_skew_ms: i64,
    /// When appends are synced to disk. Default [`SyncPolicy::EveryAppend`].
    pub sync: SyncPolicy,
    /// Take a snapshot after this many appended records; `0` means only on an
    /// explicit [`EmbeddedStore::snapshot`](crate::EmbeddedStore::snapshot).
    /// Default 100,000.
    pub snapshot_every: u64,
    /// The clock timestamps are checked against. Default [`system_clock_ms`].
    pub clock: Clock,
}

impl StoreConfig {
    /// Default per-user capacity of the realtime sequence.
    pub const DEFAULT_CAPACITY_PER_USER: usize = 16_384;
    /// Default per-user capacity of the lifelong sequence.
    pub const DEFAULT_LIFELONG_CAPACITY: usize = 16_384;
    /// Default per-user capacity of the impression sequence.
    pub const DEFAULT_IMPRESSION_CAPACITY: usize = 4_096;
    /// Default allowed clock skew: 24 hours.
    pub const DEFAULT_MAX_FUTURE_SKEW_MS: i64 = 24 * 3_600 * 1_000;
    /// Default snapshot interval in records.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

    /// Sets [`StoreConfig::capacity_per_user`].
    pub fn with_capacity_per_user(mut self, capacity: usize) -> Self {
        self.capacity_per_user = capacity;
        self
    }

    /// Sets [`StoreConfig::lifelong_capacity`].
    pub fn with_lifelong_capacity(mut self, capacity: usize) -> Self {
        self.lifelong_capacity = capacity;
        self
    }

    /// Sets [`StoreConfig::impression_capacity`].
    pub fn with_impression_capacity(mut self, capacity: usize) -> Self {
        self.impression_capacity = capacity;
        self
    }

    /// Sets [`StoreConfig::impression_types`].
    pub fn with_impression_types(mut self, types: impl IntoIterator<Item = u16>) -> Self {
        self.impression_types = types.into_iter().collect();
        self
    }

    /// Sets [`StoreConfig::multi_hot_window_ms`].
    pub fn with_multi_hot_window_ms(mut self, ms: i64) -> Self {
        self.multi_hot_window_ms = ms;
        self
    }

    /// Checks a batch for `user` as every store's `append` does before
    /// writing anything: each type is in [`StoreConfig::vocab`], no
    /// timestamp is negative or further ahead of [`StoreConfig::clock`]
    /// than [`StoreConfig::max_future_skew_ms`]. The first bad action's
    /// error names it.
    pub fn check_actions(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        let now = (self.clock)();
        let max_skew_ms = self.max_future_skew_ms;
        for a in actions {
            if !self.vocab.contains(a.action_type) {
                return Err(SeqError::UnknownActionType {
                    user,
                    action_type: a.action_type,
                });
            }
            if a.timestamp_ms < 0 {
                return Err(SeqError::NegativeTimestamp {
                    user,
                    timestamp_ms: a.timestamp_ms,
                });
            }
            let ahead_ms = a.timestamp_ms.saturating_sub(now);
            if ahead_ms > max_skew_ms {
                return Err(SeqError::FutureTimestamp {
                    user,
                    timestamp_ms: a.timestamp_ms,
                    ahead_ms,
                    max_skew_ms,
                });
            }
        }
        Ok(())
    }

    /// Whether actions of type `t` are impressions.
    pub fn is_impression(&self, t: ActionType) -> bool {
        self.impression_types.contains(&t.0)
    }

    /// Sets [`StoreConfig::vocab`].
    pub fn with_vocab(mut self, vocab: ActionVocab) -> Self {
        self.vocab = vocab;
        self
    }

    /// Sets [`StoreConfig::max_future_skew_ms`].
    pub fn with_max_future_skew_ms(mut self, ms: i64) -> Self {
        self.max_future_skew_ms = ms;
        self
    }

    /// Sets [`StoreConfig::sync`].
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`StoreConfig::snapshot_every`].
    pub fn with_snapshot_every(mut self, records: u64) -> Self {
        self.snapshot_every = records;
        self
    }

    /// Sets [`StoreConfig::clock`].
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the values that have a valid range.
    pub fn validate(&self) -> Result<(), SeqError> {
        if self.capacity_per_user == 0 {
            return Err(SeqError::InvalidConfig(
                "capacity_per_user must be at least 1".into(),
            ));
        }
        if self.max_future_skew_ms < 0 {
            return Err(SeqError::InvalidConfig(format!(
                "max_future_skew_ms must not be negative (got {})",
                self.max_future_skew_ms
            )));
        }
        if self.multi_hot_window_ms < 0 {
            return Err(SeqError::InvalidConfig(format!(
                "multi_hot_window_ms must not be negative (got {})",
                self.multi_hot_window_ms
            )));
        }
        if self.lifelong_capacity > 0
            && let Some(t) = self.first_wide_explicit_type()
        {
            return Err(SeqError::InvalidConfig(format!(
                "action type {t} cannot enter the lifelong sequence: its tokens hold action \
                 types as a 64-bit multi-hot mask, so explicit types must be below 64 (or set \
                 lifelong_capacity to 0)"
            )));
        }
        Ok(())
    }

    /// The first explicit (non-impression) vocabulary type too large for a
    /// lifelong token's 64-bit multi-hot mask.
    fn first_wide_explicit_type(&self) -> Option<u16> {
        self.vocab
            .ids()
            .iter()
            .copied()
            .find(|&t| t >= 64 && !self.is_impression(ActionType(t)))
    }

    /// The same configuration with out-of-range values clamped into range.
    pub(crate) fn clamped(mut self) -> Self {
        self.capacity_per_user = self.capacity_per_user.max(1);
        self.max_future_skew_ms = self.max_future_skew_ms.max(0);
        self.multi_hot_window_ms = self.multi_hot_window_ms.max(0);
        if self.first_wide_explicit_type().is_some() {
            self.lifelong_capacity = 0;
        }
        self
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity_per_user: Self::DEFAULT_CAPACITY_PER_USER,
            lifelong_capacity: Self::DEFAULT_LIFELONG_CAPACITY,
            impression_capacity: Self::DEFAULT_IMPRESSION_CAPACITY,
            impression_types: vec![ActionType::IMPRESSION.0],
            multi_hot_window_ms: 0,
            vocab: ActionVocab::default(),
            max_future_skew_ms: Self::DEFAULT_MAX_FUTURE_SKEW_MS,
            sync: SyncPolicy::default(),
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            clock: Arc::new(system_clock_ms),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("capacity_per_user", &self.capacity_per_user)
            .field("lifelong_capacity", &self.lifelong_capacity)
            .field("impression_capacity", &self.impression_capacity)
            .field("impression_types", &self.impression_types)
            .field("multi_hot_window_ms", &self.multi_hot_window_ms)
            .field("vocab", &self.vocab)
            .field("max_future_skew_ms", &self.max_future_skew_ms)
            .field("sync", &self.sync)
            .field("snapshot_every", &self.snapshot_every)
            .field("clock", &format_args!("<fn() -> i64>"))
            .finish()
    }
}
