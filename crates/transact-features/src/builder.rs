//! [`FeatureBuilder`]: history → the sequence the encoder reads.

use transact_seq::{Action, ItemId};

use crate::{FeatureConfig, FeatureError, UnknownAction, UnknownItem};

/// How an action type is treated, precomputed per raw id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// In the vocabulary and in the sequence.
    Enter,
    /// In the vocabulary, not in the sequence (e.g. impressions).
    Exclude,
    /// Outside the vocabulary.
    Unknown,
}

/// The encoder's sequence for one request, newest first. Buffers are
/// reused: [`FeatureBuilder::build`] clears and refills them, so a caller
/// that keeps one per worker does not allocate per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceFeatures {
    /// Raw action type per position; `-1` is padding.
    pub action_types: Vec<i64>,
    /// Item per position (`0` at padding).
    pub item_ids: Vec<ItemId>,
    /// Whether the item has an embedding row (`false`: zero embedding,
    /// and always at padding).
    pub item_known: Vec<bool>,
    /// Timestamp per position, in ms.
    pub times_ms: Vec<i64>,
    /// Surface per position (`0` at padding).
    pub surfaces: Vec<u16>,
    /// Per position, the offset of its action in the newest-first history
    /// given to [`FeatureBuilder::build`].
    pub sources: Vec<usize>,
    /// Visible actions whose type is outside the vocabulary (left out or
    /// padded, by [`FeatureConfig::unknown_action`]).
    pub unknown_actions: usize,
    /// Sequence actions on an item without a row (left out or given a zero
    /// embedding, by [`FeatureConfig::unknown_item`]).
    pub unknown_items: usize,
    /// Whether the sequence holds `seq_len` positions (reading more history
    /// cannot change it).
    pub full: bool,
}

impl SequenceFeatures {
    /// Number of positions.
    pub fn len(&self) -> usize {
        self.action_types.len()
    }

    /// Whether there is no position.
    pub fn is_empty(&self) -> bool {
        self.action_types.is_empty()
    }

    fn clear(&mut self) {
        self.action_types.clear();
        self.item_ids.clear();
        self.item_known.clear();
        self.times_ms.clear();
        self.surfaces.clear();
        self.sources.clear();
        self.unknown_actions = 0;
        self.unknown_items = 0;
        self.full = false;
    }

    fn push(&mut self, action: i64, a: &Action, known: bool, source: usize) {
        self.action_types.push(action);
        self.item_ids.push(if action < 0 { 0 } else { a.item_id });
        self.item_known.push(known);
        self.times_ms.push(a.timestamp_ms);
        self.surfaces.push(if action < 0 { 0 } else { a.surface.0 });
        self.sources.push(source);
    }
}

/// Builds sequences by a [`FeatureConfig`]; cheap to share between threads.
#[derive(Clone, Debug)]
pub struct FeatureBuilder {
    cfg: FeatureConfig,
    /// Per raw action id below [`FeatureConfig::MAX_ACTION_ID`].
    kinds: Vec<Kind>,
    /// Per raw action id: counts as positive for the user feature.
    positive: Vec<bool>,
    /// Per raw action id: its bit in a V2 token's multi-hot field (bit `i`
    /// for the `i`-th vocabulary id below 32; 0 otherwise).
    vocab_bits: Vec<u32>,
}

impl FeatureBuilder {
    /// A builder for a validated config.
    pub fn new(cfg: FeatureConfig) -> Result<Self, FeatureError> {
        cfg.validate()?;
        let n = usize::from(FeatureConfig::MAX_ACTION_ID);
        let mut kinds = vec![Kind::Unknown; n];
        for &id in &cfg.action_vocab {
            kinds[usize::from(id)] = Kind::Exclude;
        }
        for &id in &cfg.sequence_actions {
            kinds[usize::from(id)] = Kind::Enter;
        }
        let mut vocab_bits = vec![0u32; n];
        for (i, &id) in cfg.action_vocab.iter().enumerate().take(32) {
            vocab_bits[usize::from(id)] = 1 << i;
        }
        let mut positive = vec![false; n];
        for &id in &cfg.positive_actions {
            positive[usize::from(id)] = true;
        }
        Ok(Self {
            cfg,
            kinds,
            positive,
            vocab_bits,
        })
    }

    /// The config.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    pub(crate) fn kind(&self, action_type: u16) -> Kind {
        self.kinds
            .get(usize::from(action_type))
            .copied()
            .unwrap_or(Kind::Unknown)
    }

    /// The bit of raw action type `action_type` in a V2 token's multi-hot
    /// field: `1 << i` for the `i`-th id of the vocabulary, 0 outside it.
    pub fn vocab_bit(&self, action_type: u16) -> u32 {
        self.vocab_bits
            .get(usize::from(action_type))
            .copied()
            .unwrap_or(0)
    }

    /// Whether an action of this type can enter the sequence.
    pub fn enters_sequence(&self, action_type: u16) -> bool {
        self.kind(action_type) == Kind::Enter
    }

    /// The visible part of a time-ordered (oldest first) history for a
    /// request at `request_ms`.
    pub fn visible_prefix<'h>(&self, oldest_first: &'h [Action], request_ms: i64) -> &'h [Action] {
        let end = oldest_first.partition_point(|a| self.cfg.visible(a.timestamp_ms, request_ms));
        &oldest_first[..end]
    }

    /// Fills `out` with the sequence of a request at `request_ms` from the
    /// user's history, **newest first**. Actions that are not visible at
    /// the request time are passed over; `has_row(item)` says whether an
    /// item has an embedding row.
    pub fn build<I>(
        &self,
        newest_first: I,
        request_ms: i64,
        has_row: impl Fn(ItemId) -> bool,
        out: &mut SequenceFeatures,
    ) where
        I: IntoIterator<Item = Action>,
    {
        out.clear();
        let s = self.cfg.seq_len;
        for (i, a) in newest_first.into_iter().enumerate() {
            if out.len() == s {
                break;
            }
            if !self.cfg.visible(a.timestamp_ms, request_ms) {
                continue;
            }
            match self.kind(a.action_type.0) {
                Kind::Exclude => {}
                Kind::Unknown => {
                    out.unknown_actions += 1;
                    if self.cfg.unknown_action == UnknownAction::Padding {
                        out.push(-1, &a, false, i);
                    }
                }
                Kind::Enter => {
                    let known = has_row(a.item_id);
                    if !known {
                        out.unknown_items += 1;
                        if self.cfg.unknown_item == UnknownItem::Skip {
                            continue;
                        }
                    }
                    out.push(i64::from(a.action_type.0), &a, known, i);
                }
            }
        }
        out.full = out.len() == s;
    }

    /// Writes the user feature of a request at `request_ms` into `out`
    /// ([`crate::UserFeature::MeanOfPositives`]: the mean of the rows of
    /// the visible positive actions' items, in `out.len()` values; zeros
    /// when there are none). The history is **oldest first**, the order of
    /// the sum. `row(item)` is the item's user-feature row, if it has one
    /// of at least `out.len()` values. Returns the number of actions
    /// averaged.
    pub fn user_feature<'t, I>(
        &self,
        oldest_first: I,
        request_ms: i64,
        mut row: impl FnMut(ItemId) -> Option<&'t [f32]>,
        out: &mut [f32],
    ) -> usize
    where
        I: IntoIterator<Item = Action>,
    {
        out.fill(0.0);
        let d = out.len();
        let mut n = 0usize;
        for a in oldest_first {
            if !self.cfg.visible(a.timestamp_ms, request_ms)
                || !self
                    .positive
                    .get(usize::from(a.action_type.0))
                    .copied()
                    .unwrap_or(false)
            {
                continue;
            }
            if let Some(r) = row(a.item_id).and_then(|r| r.get(..d)) {
                for (o, v) in out.iter_mut().zip(r) {
                    *o += v;
                }
                n += 1;
            }
        }
        if n > 0 {
            let inv = 1.0 / n as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TimeRule, UserFeature};
    use proptest::prelude::*;
    use transact_seq::{ActionType, Surface};

    fn act(item: ItemId, t: u16, ms: i64) -> Action {
        Action {
            item_id: item,
            action_type: ActionType(t),
            timestamp_ms: ms,
            surface: Surface(0),
        }
    }

    #[test]
    fn unknown_types_and_items_follow_the_config() {
        // Newest first: unknown type 9, repin on item 5 without a row, click 3.
        let h = [act(1, 9, 30), act(5, 1, 20), act(3, 2, 10)];
        let has_row = |i: ItemId| i != 5;
        let mut cfg = FeatureConfig::new(4);
        let mut out = SequenceFeatures::default();
        FeatureBuilder::new(cfg.clone())
            .expect("b")
            .build(h, 100, has_row, &mut out);
        assert_eq!(out.action_types, [2]);
        assert_eq!(out.sources, [2]);
        assert_eq!((out.unknown_actions, out.unknown_items), (1, 1));
        cfg.unknown_action = UnknownAction::Padding;
        cfg.unknown_item = UnknownItem::ZeroEmbedding;
        FeatureBuilder::new(cfg)
            .expect("b")
            .build(h, 100, has_row, &mut out);
        assert_eq!(out.action_types, [-1, 1, 2]);
        assert_eq!(out.item_ids, [0, 5, 3]);
        assert_eq!(out.item_known, [false, false, true]);
        assert_eq!(out.times_ms, [30, 20, 10]);
        assert!(!out.full);
    }

    #[test]
    fn the_sequence_stops_at_seq_len_and_says_it_is_full() {
        let h: Vec<Action> = (0..10).rev().map(|i| act(i, 1, i as i64)).collect();
        let b = FeatureBuilder::new(FeatureConfig::new(3)).expect("b");
        let mut out = SequenceFeatures::default();
        b.build(h.iter().copied(), 8, |_| true, &mut out);
        // Strictly before 8: items 7, 6, 5.
        assert_eq!(out.item_ids, [7, 6, 5]);
        assert!(out.full);
        assert_eq!(b.visible_prefix(&[act(1, 1, 7), act(2, 1, 8)], 8).len(), 1);
    }

    #[test]
    fn the_user_feature_is_the_mean_of_visible_positives() {
        let rows = [[1.0f32, 2.0], [3.0, 4.0], [100.0, 100.0]];
        let mut cfg = FeatureConfig::new(2);
        cfg.user_feature = UserFeature::MeanOfPositives;
        let b = FeatureBuilder::new(cfg.clone()).expect("b");
        // Oldest first: repin 0, hide 2 (not positive), click 1, repin 2 at
        // the request time (not visible), repin 7 (no row).
        let h = [
            act(0, 1, 1),
            act(2, 3, 2),
            act(1, 2, 3),
            act(7, 1, 4),
            act(2, 1, 10),
        ];
        let mut out = [9.0f32; 2];
        let n = b.user_feature(h, 10, |i| rows.get(i as usize).map(|r| &r[..]), &mut out);
        assert_eq!(n, 2);
        assert_eq!(out, [2.0, 3.0]);
        cfg.time_rule = TimeRule::AtOrBefore;
        let b = FeatureBuilder::new(cfg).expect("b");
        let n = b.user_feature(h, 10, |i| rows.get(i as usize).map(|r| &r[..]), &mut out);
        assert_eq!(n, 3);
        let n = b.user_feature([], 10, |_| None, &mut out);
        assert_eq!((n, out), (0, [0.0, 0.0]));
    }

    proptest! {
        /// The builder against a plain model of the rules: the newest
        /// visible sequence actions (unknown items left out), at most S.
        #[test]
        fn build_matches_a_plain_filter(
            raw in proptest::collection::vec((0u64..12, 0u16..8, 0i64..50), 0..40),
            request in 0i64..60,
            s in 1usize..10,
            at_or_before in any::<bool>(),
        ) {
            let mut h: Vec<Action> = raw.iter().map(|&(i, t, ms)| act(i, t, ms)).collect();
            h.sort_by_key(|a| std::cmp::Reverse(a.timestamp_ms));
            let mut cfg = FeatureConfig::new(s);
            if at_or_before {
                cfg.time_rule = TimeRule::AtOrBefore;
            }
            let b = FeatureBuilder::new(cfg.clone()).expect("b");
            let has_row = |i: ItemId| !i.is_multiple_of(5);
            let mut out = SequenceFeatures::default();
            b.build(h.iter().copied(), request, has_row, &mut out);
            let want: Vec<(usize, Action)> = h
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, a)| cfg.visible(a.timestamp_ms, request))
                .filter(|(_, a)| cfg.sequence_actions.contains(&a.action_type.0))
                .filter(|(_, a)| has_row(a.item_id))
                .take(s)
                .collect();
            prop_assert_eq!(out.len(), want.len());
            for (p, (src, a)) in want.iter().enumerate() {
                prop_assert_eq!(out.sources[p], *src);
                prop_assert_eq!(out.item_ids[p], a.item_id);
                prop_assert_eq!(out.action_types[p], i64::from(a.action_type.0));
                prop_assert_eq!(out.times_ms[p], a.timestamp_ms);
            }
            prop_assert_eq!(out.full, want.len() == s);
        }
    }
}
