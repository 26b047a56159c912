//! Datasets: per-user action logs plus logged requests (candidate slates
//! with per-candidate labels), the seeded synthetic world, and importers
//! for real logs.
//!
//! Items and users are dense indices (`0..items.count`, `0..users.len()`);
//! importers keep the raw ids beside them. Every [`Action::item_id`] in a
//! [`Dataset`] is an item *index*.

use serde::{Deserialize, Serialize};
use transact_seq::Action;

/// Bit of [`LoggedCandidate::labels`] for head `h` of [`Dataset::heads`].
pub fn label_bit(head: usize) -> u8 {
    1u8 << head
}

/// The items of a dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemCatalog {
    /// Number of items.
    pub count: usize,
    /// Raw id of each item index, as found in the source (synthetic: the index).
    pub raw_ids: Vec<String>,
    /// Pretrained item embeddings, `count × dim` (`None`: the trainer learns
    /// an item table).
    pub embeddings: Option<ItemEmbeddings>,
}

/// Dense item embeddings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemEmbeddings {
    /// Width.
    pub dim: usize,
    /// `count × dim`, row-major.
    pub data: Vec<f32>,
}

/// One user's log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserHistory {
    /// Raw id of the user, as found in the source.
    pub raw_id: String,
    /// Actions in time order, oldest first (`item_id` is an item index;
    /// action types are `transact_seq::ActionType` REPIN, CLICK, HIDE and
    /// IMPRESSION).
    pub actions: Vec<Action>,
    /// Per-user loss weight `w_u` (1.0 unless the source says otherwise).
    pub weight: f32,
}

/// One candidate of a logged request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedCandidate {
    /// Item index.
    pub item: u32,
    /// Bit `h` set (see [`label_bit`]) when the user did head `h`'s action
    /// on this candidate; 0 = shown, not engaged.
    pub labels: u8,
}

/// A ranking request as it was logged: who, when, what was shown and what
/// the user did with each candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// User index.
    pub user: u32,
    /// Request time (ms since the epoch); the user's sequence is every
    /// action strictly before it.
    pub time_ms: i64,
    /// The slate.
    pub candidates: Vec<LoggedCandidate>,
}

/// Action logs and logged requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where it came from (for reports).
    pub name: String,
    /// Head names in label-bit order (default repin, click, hide).
    pub heads: Vec<String>,
    /// Items.
    pub items: ItemCatalog,
    /// Users, by index.
    pub users: Vec<UserHistory>,
    /// Logged requests, in time order.
    pub requests: Vec<LoggedRequest>,
}

pub mod import;
pub mod synthetic;

/// Index of the repin head in the default head order ([`default_heads`]).
pub const HEAD_REPIN: usize = 0;
/// Index of the click head in the default head order.
pub const HEAD_CLICK: usize = 1;
/// Index of the hide head in the default head order.
pub const HEAD_HIDE: usize = 2;

/// The default heads, in label-bit order: `repin`, `click`, `hide`.
pub fn default_heads() -> Vec<String> {
    vec!["repin".into(), "click".into(), "hide".into()]
}

/// The default utility weight of a head in the ranking score
/// `Σ_h v_h·p_h`: repin 1, click 0.5, hide −2 (hiding is penalised), any
/// other head 0.
pub fn default_utility(head: &str) -> f32 {
    match head {
        "repin" => 1.0,
        "click" => 0.5,
        "hide" => -2.0,
        _ => 0.0,
    }
}

/// Whether an action counts as a positive engagement (repin or click).
pub fn is_positive(action: &Action) -> bool {
    action.action_type == transact_seq::ActionType::REPIN
        || action.action_type == transact_seq::ActionType::CLICK
}

impl Dataset {
    /// The actions of `user` strictly before `time_ms`, oldest first (empty
    /// for an unknown user). This is what a model may read for a request at
    /// `time_ms`.
    pub fn history_before(&self, user: u32, time_ms: i64) -> &[Action] {
        match self.users.get(user as usize) {
            Some(h) => {
                let end = h.actions.partition_point(|a| a.timestamp_ms < time_ms);
                &h.actions[..end]
            }
            None => &[],
        }
    }

    /// Whether any user's log holds an impression (an item shown and not
    /// engaged): the Next Action Loss draws its impression negatives from
    /// them, and rating logs have none.
    pub fn has_impressions(&self) -> bool {
        self.users.iter().any(|u| {
            u.actions
                .iter()
                .any(|a| a.action_type == transact_seq::ActionType::IMPRESSION)
        })
    }

    /// Index of the first request at or after the time that leaves the last
    /// `test_fraction` of requests (by count, time-ordered) for testing;
    /// requests sharing that request's timestamp all go to the test side,
    /// so no training request is later than a test request.
    ///
    /// `requests[..i]` is the training part and `requests[i..]` the test part.
    pub fn time_split_index(&self, test_fraction: f64) -> usize {
        let n = self.requests.len();
        let f = if test_fraction.is_finite() {
            test_fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut i = n - ((n as f64 * f).round() as usize).min(n);
        if i < n {
            let t = self.requests[i].time_ms;
            i = self.requests[..i].partition_point(|r| r.time_ms < t);
        }
        i
    }

    /// Time-ordered split of the logged requests: `(train, test)`, see
    /// [`Dataset::time_split_index`].
    pub fn split_requests_by_time(
        &self,
        test_fraction: f64,
    ) -> (&[LoggedRequest], &[LoggedRequest]) {
        self.requests.split_at(self.time_split_index(test_fraction))
    }
}

/// Width of the user feature (the contract's
/// [`transact_features::UserFeature::MeanOfPositives`]) for this dataset:
/// the pretrained item embedding width, or 0 when the dataset has none.
pub fn user_feature_dim(data: &Dataset) -> usize {
    data.items.embeddings.as_ref().map_or(0, |e| e.dim)
}
