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
