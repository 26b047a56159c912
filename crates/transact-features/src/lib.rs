//! The feature contract of TransAct: which of a user's actions form the
//! sequence a model sees.
//!
//! A model is only as good as the agreement between what it was trained on
//! and what it is served. This crate is the one place that decides, from
//! (a user's history, the request time, a [`FeatureConfig`]), which actions
//! enter the encoder's sequence and what an action the model cannot embed
//! becomes. Serving (`transact-rank`), the trainer's featurizer and offline
//! evaluation (`transact-train`) all call [`FeatureBuilder`]; the GPU backend
//! receives what the ranker built. The config is data: a serving bundle
//! saves it beside the model.
//!
//! ```
//! use transact_features::{FeatureBuilder, FeatureConfig, SequenceFeatures};
//! use transact_seq::{Action, ActionType, Surface};
//!
//! let act = |item, t: ActionType, ms| Action { item_id: item, action_type: t, timestamp_ms: ms, surface: Surface(0) };
//! // Newest first, as a store reads them.
//! let history = [
//!     act(9, ActionType::CLICK, 3_000),      // at the request time: not visible
//!     act(8, ActionType::IMPRESSION, 2_500), // impressions do not enter by default
//!     act(7, ActionType::REPIN, 2_000),
//!     act(6, ActionType::HIDE, 1_000),
//! ];
//! let builder = FeatureBuilder::new(FeatureConfig::new(4))?;
//! let mut seq = SequenceFeatures::default();
//! builder.build(history, 3_000, |_item| true, &mut seq);
//! assert_eq!(seq.item_ids, [7, 6]);
//! assert_eq!(seq.action_types, [1, 3]);
//! assert_eq!(seq.sources, [2, 3]);
//! # Ok::<(), transact_features::FeatureError>(())
//! ```

mod builder;
mod config;
mod ids;
mod select;

pub use builder::{FeatureBuilder, SequenceFeatures};
pub use config::{
    FeatureConfig, LifelongConfig, TimeRule, TokenEmbeddings, UnknownAction, UnknownItem,
    UserFeature,
};
pub use ids::{RawIdKeys, raw_id_key};
pub use select::{SelectScratch, SelectedTokens, TokenPart, dequantize};
pub use transact_embed::select::NO_TOKEN;

/// A feature config that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A field of the config is invalid.
    #[error("feature config: {field}: {detail}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An input of a feature computation is malformed.
    #[error("features: {what}: {detail}")]
    Input {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Two raw ids map to the same key.
    #[error("raw ids `{first}` and `{second}` map to the same key {key}")]
    KeyCollision {
        /// The first raw id.
        first: String,
        /// The second raw id.
        second: String,
        /// Their key.
        key: u64,
    },
}
