//! Actions and action vocabularies.

use serde::{Deserialize, Serialize};

/// Identifier of a user.
pub type UserId = u64;
/// Identifier of an item (a pin, a movie, ...).
pub type ItemId = u64;

/// The type of an action (repin, click, hide, ...), as a raw id.
///
/// Raw ids are what the model's action vocabulary maps to embedding rows; the
/// named constants are this project's default vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionType(pub u16);

impl ActionType {
    /// Saving an item to a board (the strongest positive signal).
    pub const REPIN: ActionType = ActionType(1);
    /// A click-through or close-up view.
    pub const CLICK: ActionType = ActionType(2);
    /// Hiding an item (negative feedback).
    pub const HIDE: ActionType = ActionType(3);
    /// An impression that was not engaged.
    pub const IMPRESSION: ActionType = ActionType(4);
}

/// Where an action happened (home feed, search, related items, ...), as a raw id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Surface(pub u16);

/// One user action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The item acted on.
    pub item_id: ItemId,
    /// What the user did.
    pub action_type: ActionType,
    /// When, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Where.
    pub surface: Surface,
}

/// The set of action types a deployment accepts.
///
/// Raw ids must be below 1,024. The vocabulary's sorted order defines the
/// embedding row of each type in the model (row `1 + rank`; row 0 is padding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionVocab {
    ids: Vec<u16>,
}

impl ActionVocab {
    /// Largest raw id accepted, exclusive.
    pub const MAX_ID: u16 = 1024;

    /// Builds a vocabulary from raw ids (sorted and de-duplicated).
    ///
    /// Fails if the list is empty or an id is not below [`ActionVocab::MAX_ID`].
    pub fn new(ids: impl IntoIterator<Item = u16>) -> Result<Self, crate::SeqError> {
        let mut ids: Vec<u16> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Err(crate::SeqError::InvalidConfig(
                "action vocabulary is empty".into(),
            ));
        }
        if let Some(bad) = ids.iter().find(|&&id| id >= Self::MAX_ID) {
            return Err(crate::SeqError::InvalidConfig(format!(
                "action type id {bad} is not below {}",
                Self::MAX_ID
            )));
        }
        Ok(Self { ids })
    }

    /// The raw ids, sorted.
    pub fn ids(&self) -> &[u16] {
        &self.ids
    }

    /// Number of action types.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a vocabulary holds at least one type.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `t` is one of the accepted types.
    pub fn contains(&self, t: ActionType) -> bool {
        self.ids.binary_search(&t.0).is_ok()
    }

    /// Rank of `t` in the sorted vocabulary, if accepted.
    pub fn rank(&self, t: ActionType) -> Option<usize> {
        self.ids.binary_search(&t.0).ok()
    }
}

impl Default for ActionVocab {
    /// Raw ids `0..20`, the reference module's default vocabulary size.
    fn default() -> Self {
        Self {
            ids: (0..20).collect(),
        }
    }
}
