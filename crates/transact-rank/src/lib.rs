//! The TransAct ranking API.
//!
//! [`Ranker`] composes the pieces of the data path by the contract of a
//! serving [`Bundle`] (model, item table keyed by raw ids, feature config,
//! utility weights, version): it reads the user's history from a
//! [`SequenceStore`](transact_seq::SequenceStore), builds the sequence the
//! model was trained on with [`transact_features::FeatureBuilder`], looks up
//! item embeddings in the bundle's [`ItemTable`](transact_embed::ItemTable),
//! runs the sequence encoder and the heads through a [`Backend`] and returns
//! the candidates sorted by utility (`Σ_h v_h · p_h`, with a negative weight
//! on hide).
//!
//! The backend is the one place where device choice happens: [`CpuBackend`]
//! runs `transact-model` on the CPU; a GPU backend implements the same trait.
//!
//! ```
//! use std::sync::Arc;
//! use transact_embed::{ItemTable, Precision};
//! use transact_model::{HeadsConfig, RankingModel, V1Config};
//! use transact_features::FeatureConfig;
//! use transact_rank::{Bundle, Candidate, RankRequest, Ranker, RankerConfig};
//! use transact_seq::{Action, ActionType, EmbeddedStore, StoreConfig, SequenceStore, Surface};
//!
//! let v1 = V1Config { seq_len: 8, item_emb_dim: 4, action_emb_dim: 4, action_vocab: vec![1, 2, 3, 4], ..V1Config::default() };
//! let model = RankingModel::new_random(v1, HeadsConfig::default(), 1).unwrap();
//! let mut items = ItemTable::new(4, Precision::F32).unwrap();
//! for id in 0..10u64 {
//!     items.insert(id, &[id as f32 * 0.1, 0.2, -0.3, 0.4]).unwrap();
//! }
//! let store = EmbeddedStore::in_memory(StoreConfig::default());
//! let act = |item, t| Action { item_id: item, action_type: ActionType::REPIN, timestamp_ms: t, surface: Surface(0) };
//! store.append(7, &[act(1, 1_000), act(2, 2_000)]).unwrap();
//!
//! // In memory here; `Bundle::load(dir)` reads the one a training run wrote.
//! let bundle = Bundle::new(Arc::new(model), Arc::new(items), FeatureConfig::new(8)).unwrap();
//! let ranker = Ranker::new(Arc::new(store), Arc::new(bundle), RankerConfig::default()).unwrap();
//! let resp = ranker
//!     .rank(&RankRequest::new(7, 3_000, vec![Candidate::Item(3), Candidate::Item(4)]))
//!     .unwrap();
//! assert_eq!(resp.ranked.len(), 2);
//! assert!(resp.ranked[0].utility >= resp.ranked[1].utility);
//! ```

mod backend;
pub mod bundle;
mod error;
pub mod log;
mod ranker;

pub use backend::{Backend, CpuBackend, ScoreJob, job_offsets, score_each};
pub use bundle::{BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, Bundle, BundleError, Manifest, Provenance};
pub use error::RankError;
pub use log::{FeatureLogEntry, FeatureLogError, FeatureLogStats, FeatureLogger, OnLogError};
pub use ranker::{
    Candidate, RankRequest, RankResponse, Ranked, Ranker, RankerConfig, UtilityWeights,
};
