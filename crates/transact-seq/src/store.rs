//! The `SequenceStore` trait and the buffer reads fill.

use crate::{Action, ActionType, ItemId, SeqError, Surface, UserId};

/// A reusable struct-of-arrays buffer holding a user's actions, newest first.
///
/// Reads clear and refill it, so a caller that keeps one per worker does not
/// allocate per request once it has grown to its working size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceBuf {
    /// Item ids, newest first.
    pub item_ids: Vec<ItemId>,
    /// Raw action type ids, parallel to `item_ids`.
    pub action_types: Vec<u16>,
    /// Timestamps in ms, parallel to `item_ids` (non-increasing).
    pub timestamps_ms: Vec<i64>,
    /// Raw surface ids, parallel to `item_ids`.
    pub surfaces: Vec<u16>,
}

impl SequenceBuf {
    /// An empty buffer with room for `n` actions.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            item_ids: Vec::with_capacity(n),
            action_types: Vec::with_capacity(n),
            timestamps_ms: Vec::with_capacity(n),
            surfaces: Vec::with_capacity(n),
        }
    }

    /// Number of actions held.
    pub fn len(&self) -> usize {
        self.item_ids.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.item_ids.is_empty()
    }

    /// Removes every action, keeping the allocations.
    pub fn clear(&mut self) {
        self.item_ids.clear();
        self.action_types.clear();
        self.timestamps_ms.clear();
        self.surfaces.clear();
    }

    /// Appends one action at the old end.
    pub fn push(&mut self, a: &Action) {
        self.item_ids.push(a.item_id);
        self.action_types.push(a.action_type.0);
        self.timestamps_ms.push(a.timestamp_ms);
        self.surfaces.push(a.surface.0);
    }

    /// The actions, newest first (`.rev()`: oldest first); as many as the
    /// shortest column holds.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Action> + ExactSizeIterator + '_ {
        self.item_ids
            .iter()
            .zip(&self.action_types)
            .zip(self.timestamps_ms.iter().zip(&self.surfaces))
            .map(|((&item_id, &t), (&timestamp_ms, &s))| Action {
                item_id,
                action_type: ActionType(t),
                timestamp_ms,
                surface: Surface(s),
            })
    }

    /// The `i`-th action (0 = newest), if any.
    pub fn get(&self, i: usize) -> Option<Action> {
        Some(Action {
            item_id: *self.item_ids.get(i)?,
            action_type: ActionType(*self.action_types.get(i)?),
            timestamp_ms: *self.timestamps_ms.get(i)?,
            surface: Surface(*self.surfaces.get(i)?),
        })
    }
}

/// A user's lifelong tokens, newest first, as parallel columns: one token
/// per (item, surface, time) with its action types as a multi-hot mask (bit
/// `t` set for action type `t`; types are below 64).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenBuf {
    /// Item of each token.
    pub item_ids: Vec<ItemId>,
    /// Action types of each token, multi-hot (bit `t` = type `t`).
    pub action_masks: Vec<u64>,
    /// Time of each token (its earliest action), milliseconds.
    pub timestamps_ms: Vec<i64>,
    /// Surface of each token.
    pub surfaces: Vec<u16>,
}

impl TokenBuf {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.item_ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.item_ids.is_empty()
    }

    /// Empties every column, keeping their capacity.
    pub fn clear(&mut self) {
        self.item_ids.clear();
        self.action_masks.clear();
        self.timestamps_ms.clear();
        self.surfaces.clear();
    }

    /// Whether token `i` has action type `t`.
    pub fn has_type(&self, i: usize, t: ActionType) -> bool {
        t.0 < 64 && self.action_masks.get(i).is_some_and(|m| m >> t.0 & 1 == 1)
    }
}

/// How much of each of a user's sequences [`SequenceStore::read_sequences`]
/// reads: the newest `n` of each, at or before a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceLimits {
    /// Lifelong tokens (explicit actions), e.g. 16,384.
    pub lifelong: usize,
    /// Realtime actions (every type, impressions included).
    pub realtime: usize,
    /// Impressions.
    pub impressions: usize,
    /// Only entries at or before this time (all when `None`).
    pub at_or_before_ms: Option<i64>,
}

impl SequenceLimits {
    /// Everything each sequence holds, at any time.
    pub const ALL: SequenceLimits = SequenceLimits {
        lifelong: usize::MAX,
        realtime: usize::MAX,
        impressions: usize::MAX,
        at_or_before_ms: None,
    };
}

/// One user's three sequences, newest first, reused across reads (a read
/// into a buffer that has held as much before allocates nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSequences {
    /// The lifelong explicit actions, as multi-hot tokens.
    pub lifelong: TokenBuf,
    /// The realtime sequence: the newest actions of every type.
    pub realtime: SequenceBuf,
    /// The impressions, kept apart so they never push engagements out.
    pub impressions: SequenceBuf,
}

impl UserSequences {
    /// Empties all three.
    pub fn clear(&mut self) {
        self.lifelong.clear();
        self.realtime.clear();
        self.impressions.clear();
    }
}

/// A store of per-user action histories.
///
/// Implementations are safe to share between threads: reads run concurrently
/// with writes, and a read never blocks on reads or writes of other users.
pub trait SequenceStore: Send + Sync {
    /// Appends actions for one user, in the order given (each must be at least
    /// as new as the user's newest stored action to keep the history time
    /// ordered; an older one is inserted at its place by time).
    ///
    /// On `Ok` every action is durable according to the store's sync policy.
    /// On `Err` nothing of this call was applied.
    fn append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError>;

    /// Checks `actions` for `user` as [`SequenceStore::append`] would,
    /// without writing anything: `Ok` means `append` would not reject them
    /// as input (it may still fail on I/O). A service validates a batch of
    /// several users with it before appending any of them. The default
    /// accepts everything.
    fn check_append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        let _ = (user, actions);
        Ok(())
    }

    /// Fills `out` with the user's newest actions, newest first: at most `n`,
    /// and only those with `timestamp_ms <= at_or_before_ms` when given.
    ///
    /// An unknown user yields an empty buffer, not an error. Returns the
    /// number of actions written.
    fn read_newest(
        &self,
        user: UserId,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut SequenceBuf,
    ) -> Result<usize, SeqError>;

    /// Reads the newest entries of the user's lifelong tokens, realtime
    /// actions and impressions into `out` (cleared first), each up to its
    /// limit and at or before `limits.at_or_before_ms`. An unknown user
    /// reads three empty sequences.
    fn read_sequences(
        &self,
        user: UserId,
        limits: &SequenceLimits,
        out: &mut UserSequences,
    ) -> Result<(), SeqError>;

    /// Number of actions stored for the user (0 for an unknown user).
    fn history_len(&self, user: UserId) -> Result<usize, SeqError>;

    /// Number of users with at least one stored action.
    fn user_count(&self) -> usize;

    /// Makes every acknowledged append durable now, whatever the sync policy.
    fn sync(&self) -> Result<(), SeqError>;
}
