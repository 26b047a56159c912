//! One user's sequences: struct-of-arrays rings kept newest first.
//!
//! Each column is a `VecDeque` whose logical order is newest → oldest, so a
//! read of the newest `n` is at most two contiguous slices per column and
//! copies with `extend_from_slice`. The common append (newest so far) is a
//! `push_front`; dropping the oldest is a `pop_back`.

use std::collections::VecDeque;

use crate::{Action, ActionType, ItemId, SequenceBuf, Surface, TokenBuf};

/// What [`UserHistory::insert`] did with an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Stored; the history grew by one.
    Grew,
    /// Stored; the oldest action was dropped to make room.
    DroppedOldest,
    /// Not stored: the history is full and the action is older than all of it.
    Discarded,
    /// Folded into an existing multi-hot token (its action-type bit set).
    Merged,
}

/// Actions (or tokens) newest first, at most `capacity` of them; `K` is the
/// action column: one type id (`u16`) or a multi-hot mask of type ids
/// (`u64`, bit `t` for type `t`).
#[derive(Clone, Debug)]
pub(crate) struct Ring<K> {
    item_ids: VecDeque<ItemId>,
    action_types: VecDeque<K>,
    timestamps_ms: VecDeque<i64>,
    surfaces: VecDeque<u16>,
}

impl<K> Default for Ring<K> {
    fn default() -> Self {
        Self {
            item_ids: VecDeque::new(),
            action_types: VecDeque::new(),
            timestamps_ms: VecDeque::new(),
            surfaces: VecDeque::new(),
        }
    }
}

/// The realtime sequence and the impressions: one action type per action.
pub(crate) type UserHistory = Ring<u16>;

/// The lifelong sequence: one multi-hot token per (item, surface, time).
pub(crate) type TokenRing = Ring<u64>;

/// The four newest-first columns of a ring, borrowed.
pub(crate) type ColumnsRef<'a, K> = (
    &'a VecDeque<ItemId>,
    &'a VecDeque<K>,
    &'a VecDeque<i64>,
    &'a VecDeque<u16>,
);

/// Grows a column ahead of a push without overshooting `capacity` by much:
/// doubling like `Vec`, but never reserving more than the capacity needs.
fn reserve_one<T>(col: &mut VecDeque<T>, capacity: usize) {
    if col.len() == col.capacity() {
        let len = col.len();
        let extra = len.max(8).min(capacity.saturating_sub(len)).max(1);
        col.reserve_exact(extra);
    }
}

/// Appends `col[start..start + count]` (logical order) to `out`: at most two
/// `extend_from_slice` calls.
fn copy_range<T: Copy>(col: &VecDeque<T>, start: usize, count: usize, out: &mut Vec<T>) {
    let (front, back) = col.as_slices();
    if start < front.len() {
        let end = (start + count).min(front.len());
        out.extend_from_slice(&front[start..end]);
        let rest = count - (end - start);
        out.extend_from_slice(&back[..rest]);
    } else {
        let s = start - front.len();
        out.extend_from_slice(&back[s..s + count]);
    }
}

impl<K: Copy> Ring<K> {
    /// Builds a history from newest-first columns (as stored in a snapshot),
    /// keeping the newest `capacity`. Fails if the columns disagree in length
    /// or the timestamps are not non-increasing.
    pub(crate) fn from_columns(
        item_ids: Vec<ItemId>,
        action_types: Vec<K>,
        timestamps_ms: Vec<i64>,
        surfaces: Vec<u16>,
        capacity: usize,
    ) -> Result<Self, String> {
        let n = item_ids.len();
        if action_types.len() != n || timestamps_ms.len() != n || surfaces.len() != n {
            return Err(format!(
                "column lengths differ (items {n}, types {}, timestamps {}, surfaces {})",
                action_types.len(),
                timestamps_ms.len(),
                surfaces.len()
            ));
        }
        if let Some(i) = timestamps_ms.windows(2).position(|w| w[0] < w[1]) {
            return Err(format!("timestamps are not newest first at position {i}"));
        }
        let mut h = Self {
            item_ids: item_ids.into(),
            action_types: action_types.into(),
            timestamps_ms: timestamps_ms.into(),
            surfaces: surfaces.into(),
        };
        h.truncate(capacity);
        Ok(h)
    }

    /// Number of actions held.
    pub(crate) fn len(&self) -> usize {
        self.timestamps_ms.len()
    }

    /// Drops the oldest actions beyond `capacity`; returns how many.
    pub(crate) fn truncate(&mut self, capacity: usize) -> usize {
        let dropped = self.len().saturating_sub(capacity);
        self.item_ids.truncate(capacity);
        self.action_types.truncate(capacity);
        self.timestamps_ms.truncate(capacity);
        self.surfaces.truncate(capacity);
        dropped
    }

    /// Inserts one action at its place by time and enforces `capacity`
    /// (at least 1).
    ///
    /// An action goes before every stored action with the same or an older
    /// timestamp, so among equal timestamps the last to arrive reads as the
    /// newest. The usual case (newest so far) is O(1); an older one costs
    /// O(distance to the nearer end).
    pub(crate) fn insert_parts(
        &mut self,
        item_id: ItemId,
        kind: K,
        t: i64,
        surface: u16,
        capacity: usize,
    ) -> Inserted {
        let pos = match self.timestamps_ms.front() {
            None => 0,
            Some(&newest) if t >= newest => 0,
            Some(_) => self.timestamps_ms.partition_point(|&x| x > t),
        };
        let full = self.len() >= capacity;
        if full {
            if pos >= self.len() {
                return Inserted::Discarded;
            }
            self.item_ids.pop_back();
            self.action_types.pop_back();
            self.timestamps_ms.pop_back();
            self.surfaces.pop_back();
        } else {
            reserve_one(&mut self.item_ids, capacity);
            reserve_one(&mut self.action_types, capacity);
            reserve_one(&mut self.timestamps_ms, capacity);
            reserve_one(&mut self.surfaces, capacity);
        }
        if pos == 0 {
            self.item_ids.push_front(item_id);
            self.action_types.push_front(kind);
            self.timestamps_ms.push_front(t);
            self.surfaces.push_front(surface);
        } else {
            self.item_ids.insert(pos, item_id);
            self.action_types.insert(pos, kind);
            self.timestamps_ms.insert(pos, t);
            self.surfaces.insert(pos, surface);
        }
        if full {
            Inserted::DroppedOldest
        } else {
            Inserted::Grew
        }
    }

    /// Appends the newest (at most) `n` entries with `timestamp_ms <= t` (all
    /// when `at_or_before_ms` is `None`) to the four output columns, newest
    /// first; returns how many. Does not clear them.
    pub(crate) fn copy_newest_into(
        &self,
        n: usize,
        at_or_before_ms: Option<i64>,
        (item_ids, action_types, timestamps_ms, surfaces): ColumnsMut<'_, K>,
    ) -> usize {
        let skip = match at_or_before_ms {
            None => 0,
            // Newest first: the actions newer than `t` form a prefix.
            Some(t) => match self.timestamps_ms.front() {
                Some(&newest) if newest <= t => 0,
                _ => self.timestamps_ms.partition_point(|&x| x > t),
            },
        };
        let count = n.min(self.len() - skip);
        if count == 0 {
            return 0;
        }
        copy_range(&self.item_ids, skip, count, item_ids);
        copy_range(&self.action_types, skip, count, action_types);
        copy_range(&self.timestamps_ms, skip, count, timestamps_ms);
        copy_range(&self.surfaces, skip, count, surfaces);
        count
    }

    /// The four columns, newest first (for snapshots).
    pub(crate) fn columns(&self) -> ColumnsRef<'_, K> {
        (
            &self.item_ids,
            &self.action_types,
            &self.timestamps_ms,
            &self.surfaces,
        )
    }
}

/// The four output columns of a read.
pub(crate) type ColumnsMut<'a, K> = (
    &'a mut Vec<ItemId>,
    &'a mut Vec<K>,
    &'a mut Vec<i64>,
    &'a mut Vec<u16>,
);

impl Ring<u16> {
    /// Inserts one action at its place by time; see [`Ring::insert_parts`].
    pub(crate) fn insert(&mut self, a: &Action, capacity: usize) -> Inserted {
        self.insert_parts(
            a.item_id,
            a.action_type.0,
            a.timestamp_ms,
            a.surface.0,
            capacity,
        )
    }

    /// Appends the newest (at most) `n` actions at or before the time to
    /// `out`; see [`Ring::copy_newest_into`].
    pub(crate) fn copy_newest(
        &self,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut SequenceBuf,
    ) -> usize {
        self.copy_newest_into(
            n,
            at_or_before_ms,
            (
                &mut out.item_ids,
                &mut out.action_types,
                &mut out.timestamps_ms,
                &mut out.surfaces,
            ),
        )
    }

    /// The `i`-th action, newest first.
    pub(crate) fn get(&self, i: usize) -> Option<Action> {
        Some(Action {
            item_id: *self.item_ids.get(i)?,
            action_type: ActionType(*self.action_types.get(i)?),
            timestamp_ms: *self.timestamps_ms.get(i)?,
            surface: Surface(*self.surfaces.get(i)?),
        })
    }
}

impl Ring<u64> {
    /// Appends the newest (at most) `n` tokens at or before the time to
    /// `out`; see [`Ring::copy_newest_into`].
    pub(crate) fn copy_newest_tokens(
        &self,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut TokenBuf,
    ) -> usize {
        self.copy_newest_into(
            n,
            at_or_before_ms,
            (
                &mut out.item_ids,
                &mut out.action_masks,
                &mut out.timestamps_ms,
                &mut out.surfaces,
            ),
        )
    }

    /// Adds an action of type `action_type` (below 64) to the lifelong
    /// tokens: folded into the newest token of the same item and surface
    /// whose time is within `window_ms` of the action's (its mask gains the
    /// type's bit, its time stays), else inserted as a new token by time.
    pub(crate) fn merge(&mut self, a: &Action, window_ms: i64, capacity: usize) -> Inserted {
        let bit = 1u64 << (a.action_type.0 & 63);
        let t = a.timestamp_ms;
        // Newest first: the tokens within the window form one run.
        let start = self
            .timestamps_ms
            .partition_point(|&x| x > t.saturating_add(window_ms));
        let end = self
            .timestamps_ms
            .partition_point(|&x| x >= t.saturating_sub(window_ms));
        for i in start..end {
            if self.item_ids.get(i) == Some(&a.item_id)
                && self.surfaces.get(i) == Some(&a.surface.0)
                && let Some(mask) = self.action_types.get_mut(i)
            {
                *mask |= bit;
                return Inserted::Merged;
            }
        }
        self.insert_parts(a.item_id, bit, t, a.surface.0, capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(item: u64, t: i64) -> Action {
        Action {
            item_id: item,
            action_type: ActionType(1),
            timestamp_ms: t,
            surface: Surface(0),
        }
    }

    fn items(h: &UserHistory) -> Vec<u64> {
        (0..h.len())
            .filter_map(|i| h.get(i))
            .map(|a| a.item_id)
            .collect()
    }

    #[test]
    fn insert_keeps_time_order_and_arrival_order_for_ties() {
        let mut h = UserHistory::default();
        for (item, t) in [(1, 10), (2, 20), (3, 30), (4, 20), (5, 5), (6, 30)] {
            h.insert(&act(item, t), 100);
        }
        // Newest first; among equal timestamps the later arrival is newer.
        assert_eq!(items(&h), vec![6, 3, 4, 2, 1, 5]);
    }

    #[test]
    fn capacity_drops_oldest_and_discards_too_old() {
        let mut h = UserHistory::default();
        for i in 0..5 {
            assert_eq!(h.insert(&act(i, i as i64 * 10), 3), {
                if i < 3 {
                    Inserted::Grew
                } else {
                    Inserted::DroppedOldest
                }
            });
        }
        assert_eq!(items(&h), vec![4, 3, 2]);
        assert_eq!(h.insert(&act(99, 0), 3), Inserted::Discarded);
        assert_eq!(h.insert(&act(98, 25), 3), Inserted::DroppedOldest);
        assert_eq!(items(&h), vec![4, 3, 98]);
    }

    #[test]
    fn copy_newest_across_the_wrap_point() {
        let mut h = UserHistory::default();
        // Enough pushes at capacity to wrap the ring several times.
        for i in 0..1000u64 {
            h.insert(&act(i, i as i64), 37);
        }
        for (n, t, want_first, want_len) in [
            (5, None, 999, 5),
            (100, None, 999, 37),
            (4, Some(980), 980, 4),
            (50, Some(970), 970, 8),
        ] {
            let mut out = SequenceBuf::default();
            let got = h.copy_newest(n, t, &mut out);
            assert_eq!(got, want_len);
            assert_eq!(out.len(), want_len);
            assert_eq!(out.item_ids[0], want_first);
            for w in out.timestamps_ms.windows(2) {
                assert_eq!(w[0], w[1] + 1);
            }
        }
        let mut out = SequenceBuf::default();
        assert_eq!(h.copy_newest(10, Some(0), &mut out), 0);
    }

    #[test]
    fn from_columns_checks_shape() {
        assert!(UserHistory::from_columns(vec![1], vec![], vec![1], vec![0], 5).is_err());
        assert!(
            UserHistory::from_columns(vec![1, 2], vec![1, 1], vec![1, 2], vec![0, 0], 5).is_err()
        );
        let h = UserHistory::from_columns(vec![1, 2, 3], vec![1; 3], vec![3, 2, 1], vec![0; 3], 2)
            .expect("valid");
        assert_eq!(items(&h), vec![1, 2]);
    }
}
