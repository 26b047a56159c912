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

    /// Number of actions stored for the user (0 for an unknown user).
    fn history_len(&self, user: UserId) -> Result<usize, SeqError>;

    /// Number of users with at least one stored action.
    fn user_count(&self) -> usize;

    /// Makes every acknowledged append durable now, whatever the sync policy.
    fn sync(&self) -> Result<(), SeqError>;
}
