//! [`FeatureConfig`]: the rules of the sequence, as data.

use serde::{Deserialize, Serialize};
use transact_seq::ActionType;

use crate::FeatureError;

/// Which actions a request at time `T` may see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeRule {
    /// Actions with `t < T`: a logged request never sees the actions taken
    /// on its own slate (the default).
    #[default]
    StrictlyBefore,
    /// Actions with `t ≤ T`.
    AtOrBefore,
}

/// What an action whose type is outside [`FeatureConfig::action_vocab`]
/// becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAction {
    /// It is left out: the sequence holds the next action instead (default).
    #[default]
    Skip,
    /// It takes a position as padding (masked, zero embeddings).
    Padding,
}

/// What a sequence action on an item without an embedding row becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownItem {
    /// It is left out (default).
    #[default]
    Skip,
    /// It keeps its position and action type with a zero item embedding.
    ZeroEmbedding,
}

/// The dense user feature the ranking heads read, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFeature {
    /// No user feature (the default).
    #[default]
    None,
    /// The mean embedding (from the user-feature item table) of the items of
    /// the visible [`FeatureConfig::positive_actions`], over the whole
    /// visible history; zeros when there are none.
    MeanOfPositives,
}

/// The feature contract between a trained model and every user of it.
///
/// Saved in a serving bundle beside the model; the trainer, offline
/// evaluation and the ranker build sequences from it with
/// [`crate::FeatureBuilder`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Sequence length `S`: the newest this many sequence actions.
    pub seq_len: usize,
    /// Raw action type ids the model embeds (its action vocabulary).
    pub action_vocab: Vec<u16>,
    /// Action types that enter the sequence (a subset of the vocabulary).
    /// Vocabulary types not listed here (by default impressions) are left
    /// out of the sequence.
    pub sequence_actions: Vec<u16>,
    /// Action types that count as positive engagement for the user feature.
    pub positive_actions: Vec<u16>,
    /// Which actions a request may see.
    #[serde(default)]
    pub time_rule: TimeRule,
    /// What a type outside the vocabulary becomes.
    #[serde(default)]
    pub unknown_action: UnknownAction,
    /// What a sequence action on an item without a row becomes.
    #[serde(default)]
    pub unknown_item: UnknownItem,
    /// The dense user feature.
    #[serde(default)]
    pub user_feature: UserFeature,
    /// TransAct V2's token selection over the lifelong, realtime and
    /// impression sequences (`None`: a V1 model, the realtime sequence
    /// only).
    #[serde(default)]
    pub lifelong: Option<LifelongConfig>,
}

/// TransAct V2's token selection (model-spec §3), per candidate `c`:
/// `NN(S_LL, c) ⊕ S_RT[:r] ⊕ NN(S_RT[r:], c) ⊕ NN(S_imp, c)`, where `NN`
/// keeps the `k` tokens whose int8 item codes have the largest dot product
/// with the candidate's, ties to the newer token.
///
/// - `S_RT` is the realtime sequence of the [`FeatureConfig`] (its newest
///   `seq_len` sequence actions, by the same rules as V1).
/// - `S_LL` is the lifelong sequence's tokens **older than the oldest
///   action of `S_RT`** (**ours**: so that no action enters twice), with
///   their action types limited to [`FeatureConfig::sequence_actions`];
///   a token left with none is passed over.
/// - `S_imp` is the impression sequence.
///
/// A token's multi-hot action field sets bit `i` for the `i`-th id of
/// [`FeatureConfig::action_vocab`] (so the vocabulary holds at most 32
/// ids); its surface is kept below `num_surfaces` (others become 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifelongConfig {
    /// `r`: the newest realtime actions, always kept.
    pub rt_keep: usize,
    /// `k_LL`: lifelong tokens selected.
    pub k_lifelong: usize,
    /// `k_RT`: older realtime actions selected.
    pub k_realtime: usize,
    /// `k_imp`: impressions selected.
    pub k_impression: usize,
    /// Surfaces the model has rows for.
    pub num_surfaces: u16,
    /// What a token's (and the candidate's) item embedding is in the
    /// encoder; selection always scores the int8 codes.
    #[serde(default)]
    pub token_embeddings: TokenEmbeddings,
}

/// Where a V2 token's item embedding comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEmbeddings {
    /// The dequantised int8 codes of the token table, frozen (Pinterest's
    /// setup: the sequence stores int8 pretrained embeddings).
    #[default]
    Codes,
    /// The model's own item table (the row the heads read for a
    /// candidate, trained with the model), zeros for an item without a
    /// row.
    ItemTable,
}

impl Default for LifelongConfig {
    /// `r = 32`, `k_LL = 96`, `k_RT = 32`, `k_imp = 32` (192 tokens), 8
    /// surfaces.
    fn default() -> Self {
        Self {
            rt_keep: 32,
            k_lifelong: 96,
            k_realtime: 32,
            k_impression: 32,
            num_surfaces: 8,
            token_embeddings: TokenEmbeddings::Codes,
        }
    }
}

impl LifelongConfig {
    /// Most tokens one candidate gets: `r + k_LL + k_RT + k_imp`.
    pub fn max_tokens(&self) -> usize {
        self.rt_keep
            .saturating_add(self.k_lifelong)
            .saturating_add(self.k_realtime)
            .saturating_add(self.k_impression)
    }
}

impl FeatureConfig {
    /// The defaults for sequences of `seq_len`: vocabulary repin, click,
    /// hide, impression; sequence of repins, clicks and hides; positives
    /// repin and click; actions strictly before the request; unknown types
    /// and items left out; no user feature.
    pub fn new(seq_len: usize) -> Self {
        let ids = |ts: &[ActionType]| ts.iter().map(|t| t.0).collect();
        Self {
            seq_len,
            action_vocab: ids(&[
                ActionType::REPIN,
                ActionType::CLICK,
                ActionType::HIDE,
                ActionType::IMPRESSION,
            ]),
            sequence_actions: ids(&[ActionType::REPIN, ActionType::CLICK, ActionType::HIDE]),
            positive_actions: ids(&[ActionType::REPIN, ActionType::CLICK]),
            time_rule: TimeRule::StrictlyBefore,
            unknown_action: UnknownAction::Skip,
            unknown_item: UnknownItem::Skip,
            user_feature: UserFeature::None,
            lifelong: None,
        }
    }

    /// The defaults of [`FeatureConfig::new`] with TransAct V2's selection
    /// ([`LifelongConfig::default`]) over a realtime sequence of `seq_len`.
    pub fn lifelong(seq_len: usize) -> Self {
        Self {
            lifelong: Some(LifelongConfig::default()),
            ..Self::new(seq_len)
        }
    }

    /// Largest raw action type id accepted, exclusive (as the store's
    /// vocabulary).
    pub const MAX_ACTION_ID: u16 = transact_seq::ActionVocab::MAX_ID;

    /// Checks the config, naming the bad field.
    pub fn validate(&self) -> Result<(), FeatureError> {
        let bad = |field, detail: String| Err(FeatureError::InvalidConfig { field, detail });
        if self.seq_len == 0 {
            return bad("seq_len", "must be at least 1".into());
        }
        if self.action_vocab.is_empty() {
            return bad("action_vocab", "is empty".into());
        }
        let mut v = self.action_vocab.clone();
        v.sort_unstable();
        v.dedup();
        if v.len() != self.action_vocab.len() {
            return bad("action_vocab", "holds duplicate ids".into());
        }
        if let Some(id) = v.iter().find(|&&id| id >= Self::MAX_ACTION_ID) {
            return bad(
                "action_vocab",
                format!("id {id} is not below {}", Self::MAX_ACTION_ID),
            );
        }
        if self.sequence_actions.is_empty() {
            return bad("sequence_actions", "is empty: the sequence would be".into());
        }
        for (field, list) in [
            ("sequence_actions", &self.sequence_actions),
            ("positive_actions", &self.positive_actions),
        ] {
            if let Some(id) = list.iter().find(|id| v.binary_search(id).is_err()) {
                return bad(
                    field,
                    format!("action type {id} is not in action_vocab {v:?}"),
                );
            }
        }
        if let Some(l) = &self.lifelong {
            if self.action_vocab.len() > 32 {
                return bad(
                    "action_vocab",
                    format!(
                        "holds {} ids, but a lifelong token's multi-hot field has 32 bits",
                        self.action_vocab.len()
                    ),
                );
            }
            if l.max_tokens() == 0 || l.max_tokens() > 1 << 16 {
                return bad(
                    "lifelong",
                    format!(
                        "selects {} tokens per candidate; must be in 1..=65536",
                        l.max_tokens()
                    ),
                );
            }
            if l.num_surfaces == 0 {
                return bad("lifelong.num_surfaces", "must be at least 1".into());
            }
        }
        if self.user_feature == UserFeature::MeanOfPositives && self.positive_actions.is_empty() {
            return bad(
                "positive_actions",
                "is empty, but the user feature is the mean of the positives".into(),
            );
        }
        Ok(())
    }

    /// Whether an action at `t_ms` is visible to a request at `request_ms`.
    #[inline]
    pub fn visible(&self, t_ms: i64, request_ms: i64) -> bool {
        match self.time_rule {
            TimeRule::StrictlyBefore => t_ms < request_ms,
            TimeRule::AtOrBefore => t_ms <= request_ms,
        }
    }

    /// The newest timestamp a request at `request_ms` may see: the bound to
    /// pass to a store's `read_newest`.
    pub fn newest_visible_ms(&self, request_ms: i64) -> i64 {
        match self.time_rule {
            TimeRule::StrictlyBefore => request_ms.saturating_sub(1),
            TimeRule::AtOrBefore => request_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = FeatureConfig::new(8);
        c.validate().expect("valid");
        let json = serde_json::to_string(&c).expect("json");
        let back: FeatureConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn bad_fields_are_named() {
        let check = |c: FeatureConfig, field: &str| {
            let e = c.validate().expect_err("invalid").to_string();
            assert!(e.contains(field), "{e}");
        };
        check(
            FeatureConfig {
                seq_len: 0,
                ..FeatureConfig::new(4)
            },
            "seq_len",
        );
        let mut c = FeatureConfig::new(4);
        c.sequence_actions.push(9);
        check(c, "sequence_actions");
        let mut c = FeatureConfig::new(4);
        c.action_vocab.push(1);
        check(c, "action_vocab");
        let mut c = FeatureConfig::new(4);
        c.action_vocab.push(5000);
        check(c, "action_vocab");
        let mut c = FeatureConfig::new(4);
        c.positive_actions.clear();
        c.user_feature = UserFeature::MeanOfPositives;
        check(c, "positive_actions");
        // A misspelt field is refused, not ignored.
        let json = r#"{"seq_len":4,"action_vocab":[1],"sequence_actions":[1],"positive_actions":[1],"time_rul":"at_or_before"}"#;
        assert!(serde_json::from_str::<FeatureConfig>(json).is_err());
    }

    #[test]
    fn the_time_rule_decides_visibility_and_the_read_bound() {
        let mut c = FeatureConfig::new(4);
        assert!(!c.visible(10, 10));
        assert!(c.visible(9, 10));
        assert_eq!(c.newest_visible_ms(10), 9);
        assert_eq!(c.newest_visible_ms(i64::MIN), i64::MIN);
        c.time_rule = TimeRule::AtOrBefore;
        assert!(c.visible(10, 10));
        assert!(!c.visible(11, 10));
        assert_eq!(c.newest_visible_ms(10), 10);
    }
}
