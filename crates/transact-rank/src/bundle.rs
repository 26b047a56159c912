//! The serving bundle: everything a service needs to rank with a trained
//! model, loaded and checked as one unit.
//!
//! A bundle directory holds:
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | format name and version, the bundle's version, head names, utility weights, provenance (data file and its hash, training config, evaluation metrics) |
//! | `features.json` | the [`FeatureConfig`]: the sequence contract the model was trained with |
//! | `model.safetensors` | the ranking model (`transact_model::RankingModel`) |
//! | `items.safetensors` | the item table, keyed by the log's raw ids through [`transact_features::raw_id_key`] |
//! | `user_items.safetensors` | the user feature's item table (only when the features have a user feature) |
//! | `tokens.safetensors` | a TransAct V2 model's int8 token table: the codes nearest-neighbour selection scores and the encoder's tokens embed (only for a V2 model) |
//!
//! [`Bundle::load`] checks every part and that the parts agree (widths,
//! sequence length, vocabulary, heads); a missing part, a newer format
//! version or a disagreement is a [`BundleError`] naming the part.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use transact_embed::ItemTable;
use transact_features::{FeatureConfig, UserFeature};
use transact_model::{Encoder, RankingModel};

use crate::UtilityWeights;

/// Value of [`Manifest::format`].
pub const BUNDLE_FORMAT: &str = "transact-bundle";
/// The newest bundle format version this crate reads and the one it writes.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// The manifest file's name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The feature config's file name.
pub const FEATURES_FILE: &str = "features.json";
/// The model's file name.
pub const MODEL_FILE: &str = "model.safetensors";
/// The item table's file name.
pub const ITEMS_FILE: &str = "items.safetensors";
/// The user feature's item table file name.
pub const USER_ITEMS_FILE: &str = "user_items.safetensors";
/// The V2 token table's file name.
pub const TOKENS_FILE: &str = "tokens.safetensors";

/// Where a bundle came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The training data (a file path, or `synthetic`).
    pub data: String,
    /// SHA-256 of the data file, hex (empty for generated data).
    #[serde(default)]
    pub data_sha256: String,
    /// The training configuration, as the trainer wrote it.
    #[serde(default)]
    pub train_config: serde_json::Value,
    /// The evaluation metrics of the exported model.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// When the bundle was written, ms since the epoch.
    #[serde(default)]
    pub created_ms: i64,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The format version it was written with.
    pub format_version: u32,
    /// This bundle's version (named in every response and in metrics).
    pub version: String,
    /// The model's head names, in logit order.
    pub heads: Vec<String>,
    /// Utility weights by head name.
    pub utility: UtilityWeights,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
}

/// A bundle that cannot be used, naming the part.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A part is missing.
    #[error("bundle {dir}: {part} is missing")]
    Missing {
        /// The bundle directory.
        dir: PathBuf,
        /// The part's file name.
        part: &'static str,
    },
    /// A part could not be read or parsed.
    #[error("bundle {dir}: {part}: {detail}")]
    Part {
        /// The bundle directory.
        dir: PathBuf,
        /// The part's file name.
        part: &'static str,
        /// What failed.
        detail: String,
    },
    /// The bundle was written by a newer format version.
    #[error(
        "bundle {dir}: {MANIFEST_FILE}: format version {found} is newer than {BUNDLE_FORMAT_VERSION}, the newest this build reads"
    )]
    NewerFormat {
        /// The bundle directory.
        dir: PathBuf,
        /// The version found.
        found: u32,
    },
    /// Two parts disagree (or a part in memory is inconsistent).
    #[error("bundle: {part}: {detail}")]
    Mismatch {
        /// The part that disagrees with the others.
        part: &'static str,
        /// How.
        detail: String,
    },
}

/// A loaded, checked serving bundle. Share it behind an `Arc`: a
/// [`crate::Ranker`] holds one, and swapping bundles is swapping the `Arc`.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// The feature contract.
    pub features: FeatureConfig,
    /// The ranking model.
    pub model: Arc<RankingModel>,
    /// The item table (raw-id keys).
    pub items: Arc<ItemTable>,
    /// The user feature's table, when the features have one.
    pub user_items: Option<Arc<ItemTable>>,
    /// A V2 model's int8 token table (raw-id keys): selection scores its
    /// codes and the encoder's tokens are their dequantised values.
    pub tokens: Option<Arc<ItemTable>>,
}

impl Bundle {
    /// A bundle in memory from its parts (version `dev`, default utility
    /// weights of the heads it has, no provenance), checked like a loaded
    /// one — except that a V2 model is checked once its token table is
    /// added with [`Bundle::with_tokens`].
    pub fn new(
        model: Arc<RankingModel>,
        items: Arc<ItemTable>,
        features: FeatureConfig,
    ) -> Result<Self, BundleError> {
        let heads = model.head_names().to_vec();
        let utility = UtilityWeights(
            UtilityWeights::default()
                .0
                .into_iter()
                .filter(|(h, _)| heads.contains(h))
                .collect(),
        );
        let bundle = Self {
            manifest: Manifest {
                format: BUNDLE_FORMAT.into(),
                format_version: BUNDLE_FORMAT_VERSION,
                version: "dev".into(),
                heads,
                utility,
                provenance: Provenance::default(),
            },
            features,
            model,
            items,
            user_items: None,
            tokens: None,
        };
        if bundle.model.v2().is_none() {
            bundle.validate()?;
        }
        Ok(bundle)
    }

    /// The same bundle with a V2 model's int8 token table (checked).
    pub fn with_tokens(mut self, table: Option<Arc<ItemTable>>) -> Result<Self, BundleError> {
        self.tokens = table;
        self.validate()?;
        Ok(self)
    }

    /// The same bundle with a user-feature table.
    pub fn with_user_items(mut self, table: Option<Arc<ItemTable>>) -> Result<Self, BundleError> {
        self.user_items = table;
        self.validate()?;
        Ok(self)
    }

    /// The same bundle with other utility weights.
    pub fn with_utility(mut self, utility: UtilityWeights) -> Result<Self, BundleError> {
        self.manifest.utility = utility;
        self.validate()?;
        Ok(self)
    }

    /// The bundle's version.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// Checks that the parts agree.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |part, detail: String| Err(BundleError::Mismatch { part, detail });
        let m = &self.manifest;
        if m.format != BUNDLE_FORMAT {
            return bad(
                MANIFEST_FILE,
                format!("format `{}`, expected `{BUNDLE_FORMAT}`", m.format),
            );
        }
        if let Err(e) = self.features.validate() {
            return bad(FEATURES_FILE, e.to_string());
        }
        match self.model.encoder() {
            Encoder::V1(v1) => self.validate_v1(v1.config())?,
            Encoder::V2(v2) => self.validate_v2(v2.config())?,
        }
        let d_item = self.model.item_emb_dim();
        if self.items.dim() != d_item {
            return bad(
                ITEMS_FILE,
                format!(
                    "{}-wide embeddings, the model reads {d_item}",
                    self.items.dim()
                ),
            );
        }
        if m.heads != self.model.head_names() {
            return bad(
                MANIFEST_FILE,
                format!(
                    "heads {:?} but the model's are {:?}",
                    m.heads,
                    self.model.head_names()
                ),
            );
        }
        for (name, w) in &m.utility.0 {
            if !m.heads.contains(name) {
                return bad(
                    MANIFEST_FILE,
                    format!(
                        "utility weight for head `{name}`, the heads are {:?}",
                        m.heads
                    ),
                );
            }
            if !w.is_finite() {
                return bad(
                    MANIFEST_FILE,
                    format!("utility weight of `{name}` is not finite"),
                );
            }
        }
        let user_dim = self.model.heads().config().user_emb_dim;
        match (self.features.user_feature, &self.user_items) {
            (UserFeature::MeanOfPositives, None) => {
                return bad(
                    USER_ITEMS_FILE,
                    "missing: the features derive the user feature from it".into(),
                );
            }
            (UserFeature::MeanOfPositives, Some(t)) => {
                if t.dim() != user_dim {
                    return bad(
                        USER_ITEMS_FILE,
                        format!(
                            "{}-wide rows, the model's user feature is {user_dim}",
                            t.dim()
                        ),
                    );
                }
                if t.precision() != transact_embed::Precision::F32 {
                    return bad(
                        USER_ITEMS_FILE,
                        format!(
                            "precision {}, the user feature reads f32 rows",
                            t.precision().as_str()
                        ),
                    );
                }
            }
            (UserFeature::None, Some(_)) => {
                return bad(
                    USER_ITEMS_FILE,
                    "present, but the features have no user feature".into(),
                );
            }
            (UserFeature::None, None) => {}
        }
        Ok(())
    }

    fn validate_v1(&self, v1: &transact_model::V1Config) -> Result<(), BundleError> {
        let bad = |part, detail: String| Err(BundleError::Mismatch { part, detail });
        if self.features.lifelong.is_some() {
            return bad(
                FEATURES_FILE,
                "select lifelong tokens, but the model is TransAct V1".into(),
            );
        }
        if self.tokens.is_some() {
            return bad(TOKENS_FILE, "present, but the model is TransAct V1".into());
        }
        if self.features.seq_len != v1.seq_len {
            return bad(
                FEATURES_FILE,
                format!(
                    "seq_len {} but the model reads {} positions",
                    self.features.seq_len, v1.seq_len
                ),
            );
        }
        let mut fv: Vec<i64> = self
            .features
            .action_vocab
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        let mut mv = v1.action_vocab.clone();
        fv.sort_unstable();
        mv.sort_unstable();
        if fv != mv {
            return bad(
                FEATURES_FILE,
                format!("action_vocab {fv:?} but the model embeds {mv:?}"),
            );
        }
        Ok(())
    }

    fn validate_v2(&self, v2: &transact_model::V2Config) -> Result<(), BundleError> {
        let bad = |part, detail: String| Err(BundleError::Mismatch { part, detail });
        let Some(l) = &self.features.lifelong else {
            return bad(
                FEATURES_FILE,
                "have no lifelong selection, but the model is TransAct V2".into(),
            );
        };
        if l.max_tokens() > v2.seq_len {
            return bad(
                FEATURES_FILE,
                format!(
                    "select up to {} tokens per candidate, the model has {} positions",
                    l.max_tokens(),
                    v2.seq_len
                ),
            );
        }
        if self.features.action_vocab.len() > v2.num_action_types {
            return bad(
                FEATURES_FILE,
                format!(
                    "action_vocab has {} ids, the model embeds {} action types",
                    self.features.action_vocab.len(),
                    v2.num_action_types
                ),
            );
        }
        if usize::from(l.num_surfaces) > v2.num_surfaces {
            return bad(
                FEATURES_FILE,
                format!(
                    "{} surfaces, the model embeds {}",
                    l.num_surfaces, v2.num_surfaces
                ),
            );
        }
        let Some(t) = &self.tokens else {
            return bad(
                TOKENS_FILE,
                "missing: a V2 model reads its tokens from it".into(),
            );
        };
        if !t.precision().is_int8() {
            return bad(
                TOKENS_FILE,
                format!(
                    "precision {}, selection reads int8 codes",
                    t.precision().as_str()
                ),
            );
        }
        if t.dim() != v2.item_emb_dim {
            return bad(
                TOKENS_FILE,
                format!(
                    "{}-wide codes, the model's tokens are {}",
                    t.dim(),
                    v2.item_emb_dim
                ),
            );
        }
        Ok(())
    }

    /// Writes the bundle into `dir` (created if needed; existing parts are
    /// replaced, a stale `user_items.safetensors` removed).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), BundleError> {
        let dir = dir.as_ref();
        self.validate()?;
        let part_err = |part: &'static str, detail: String| BundleError::Part {
            dir: dir.to_path_buf(),
            part,
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| part_err(MANIFEST_FILE, e.to_string()))?;
        fn json<T: Serialize>(dir: &Path, part: &'static str, v: &T) -> Result<(), BundleError> {
            let err = |detail: String| BundleError::Part {
                dir: dir.to_path_buf(),
                part,
                detail,
            };
            let text = serde_json::to_string_pretty(v).map_err(|e| err(e.to_string()))?;
            std::fs::write(dir.join(part), text).map_err(|e| err(e.to_string()))
        }
        json(dir, FEATURES_FILE, &self.features)?;
        self.model
            .save(&dir.join(MODEL_FILE))
            .map_err(|e| part_err(MODEL_FILE, e.to_string()))?;
        self.items
            .save(dir.join(ITEMS_FILE))
            .map_err(|e| part_err(ITEMS_FILE, e.to_string()))?;
        let user_path = dir.join(USER_ITEMS_FILE);
        match &self.user_items {
            Some(t) => t
                .save(&user_path)
                .map_err(|e| part_err(USER_ITEMS_FILE, e.to_string()))?,
            None if user_path.exists() => std::fs::remove_file(&user_path)
                .map_err(|e| part_err(USER_ITEMS_FILE, e.to_string()))?,
            None => {}
        }
        let tokens_path = dir.join(TOKENS_FILE);
        match &self.tokens {
            Some(t) => t
                .save(&tokens_path)
                .map_err(|e| part_err(TOKENS_FILE, e.to_string()))?,
            None if tokens_path.exists() => std::fs::remove_file(&tokens_path)
                .map_err(|e| part_err(TOKENS_FILE, e.to_string()))?,
            None => {}
        }
        // The manifest last: a directory with a manifest has every part.
        json(dir, MANIFEST_FILE, &self.manifest)
    }

    /// Loads and checks the bundle in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        let dir = dir.as_ref();
        let path = |part: &'static str| -> Result<PathBuf, BundleError> {
            let p = dir.join(part);
            if p.is_file() {
                Ok(p)
            } else {
                Err(BundleError::Missing {
                    dir: dir.to_path_buf(),
                    part,
                })
            }
        };
        let part_err = |part: &'static str, detail: String| BundleError::Part {
            dir: dir.to_path_buf(),
            part,
            detail,
        };
        let read = |part: &'static str| -> Result<String, BundleError> {
            std::fs::read_to_string(path(part)?).map_err(|e| part_err(part, e.to_string()))
        };
        let manifest_text = read(MANIFEST_FILE)?;
        // The version first, so a newer bundle says so rather than failing
        // on a field this build does not know.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_str(&manifest_text)
            .map_err(|e| part_err(MANIFEST_FILE, e.to_string()))?;
        if v.format_version > BUNDLE_FORMAT_VERSION {
            return Err(BundleError::NewerFormat {
                dir: dir.to_path_buf(),
                found: v.format_version,
            });
        }
        let manifest: Manifest = serde_json::from_str(&manifest_text)
            .map_err(|e| part_err(MANIFEST_FILE, e.to_string()))?;
        let features: FeatureConfig = serde_json::from_str(&read(FEATURES_FILE)?)
            .map_err(|e| part_err(FEATURES_FILE, e.to_string()))?;
        let model = RankingModel::load(&path(MODEL_FILE)?)
            .map_err(|e| part_err(MODEL_FILE, e.to_string()))?;
        let items =
            ItemTable::load(path(ITEMS_FILE)?).map_err(|e| part_err(ITEMS_FILE, e.to_string()))?;
        let user_items = if features.user_feature == UserFeature::None {
            None
        } else {
            Some(Arc::new(
                ItemTable::load(path(USER_ITEMS_FILE)?)
                    .map_err(|e| part_err(USER_ITEMS_FILE, e.to_string()))?,
            ))
        };
        let tokens = if model.v2().is_some() {
            Some(Arc::new(
                ItemTable::load(path(TOKENS_FILE)?)
                    .map_err(|e| part_err(TOKENS_FILE, e.to_string()))?,
            ))
        } else {
            None
        };
        let bundle = Self {
            manifest,
            features,
            model: Arc::new(model),
            items: Arc::new(items),
            user_items,
            tokens,
        };
        bundle.validate()?;
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transact_embed::Precision;
    use transact_model::{HeadsConfig, V1Config};

    fn bundle() -> Bundle {
        let v1 = V1Config {
            seq_len: 4,
            latest_n_emb: 2,
            item_emb_dim: 4,
            action_emb_dim: 4,
            dim_feedforward: 8,
            action_vocab: vec![1, 2, 3, 4],
            ..V1Config::default()
        };
        let heads = HeadsConfig {
            mlp_hidden: vec![8],
            ..HeadsConfig::default()
        };
        let model = RankingModel::new_random(v1, heads, 3).expect("model");
        let mut items = ItemTable::new(4, Precision::F32).expect("table");
        for id in [1u64, 2, 1 << 63 | 5] {
            items
                .insert(id, &[0.1, 0.2, 0.3, id as f32 * 1e-20])
                .expect("row");
        }
        Bundle::new(Arc::new(model), Arc::new(items), FeatureConfig::new(4)).expect("bundle")
    }

    fn err(r: Result<Bundle, BundleError>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn a_saved_bundle_loads_back_equal() {
        let b = bundle();
        let dir = tempfile::tempdir().expect("tempdir");
        b.save(dir.path()).expect("save");
        let back = Bundle::load(dir.path()).expect("load");
        assert_eq!(back.manifest, b.manifest);
        assert_eq!(back.features, b.features);
        assert_eq!(back.items.len(), 3);
        assert!(back.items.contains(1 << 63 | 5));
        assert!(back.user_items.is_none());
        assert_eq!(back.model.v1(), b.model.v1());
    }

    #[test]
    fn missing_newer_or_disagreeing_parts_are_named() {
        let b = bundle();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        b.save(d).expect("save");
        for part in [MODEL_FILE, ITEMS_FILE, FEATURES_FILE, MANIFEST_FILE] {
            let p = d.join(part);
            let bytes = std::fs::read(&p).expect("read");
            std::fs::remove_file(&p).expect("rm");
            let msg = err(Bundle::load(d));
            assert!(msg.contains(part) && msg.contains("missing"), "{msg}");
            // Truncated: an error naming the part, not a panic.
            std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
            let msg = err(Bundle::load(d));
            assert!(msg.contains(part), "{msg}");
            std::fs::write(&p, &bytes).expect("restore");
        }
        Bundle::load(d).expect("restored");

        let manifest = std::fs::read_to_string(d.join(MANIFEST_FILE)).expect("read");
        let newer = manifest.replace("\"format_version\": 1", "\"format_version\": 2");
        assert_ne!(newer, manifest);
        std::fs::write(d.join(MANIFEST_FILE), &newer).expect("write");
        let msg = err(Bundle::load(d));
        assert!(msg.contains("format version 2 is newer"), "{msg}");
        let heads = manifest.replace("\"hide\"", "\"share\"");
        std::fs::write(d.join(MANIFEST_FILE), heads).expect("write");
        let msg = err(Bundle::load(d));
        assert!(
            msg.contains(MANIFEST_FILE) && msg.contains("heads"),
            "{msg}"
        );
        std::fs::write(d.join(MANIFEST_FILE), &manifest).expect("restore");

        let write_features = |f: &FeatureConfig| {
            std::fs::write(
                d.join(FEATURES_FILE),
                serde_json::to_string(f).expect("json"),
            )
            .expect("write");
        };
        let mut f = b.features.clone();
        f.seq_len = 5;
        write_features(&f);
        let msg = err(Bundle::load(d));
        assert!(
            msg.contains(FEATURES_FILE) && msg.contains("seq_len 5"),
            "{msg}"
        );
        let mut f = b.features.clone();
        f.action_vocab = vec![1, 2, 3, 7];
        f.sequence_actions = vec![1];
        f.positive_actions = vec![1];
        write_features(&f);
        let msg = err(Bundle::load(d));
        assert!(msg.contains("action_vocab"), "{msg}");
        let mut f = b.features.clone();
        f.user_feature = UserFeature::MeanOfPositives;
        write_features(&f);
        let msg = err(Bundle::load(d));
        assert!(
            msg.contains(USER_ITEMS_FILE) && msg.contains("missing"),
            "{msg}"
        );

        let wide = ItemTable::new(3, Precision::F32).expect("table");
        let msg = err(Bundle::new(
            b.model.clone(),
            Arc::new(wide),
            b.features.clone(),
        ));
        assert!(msg.contains(ITEMS_FILE) && msg.contains("3-wide"), "{msg}");
        let msg = err(b.clone().with_user_items(Some(b.items.clone())));
        assert!(msg.contains(USER_ITEMS_FILE), "{msg}");
        let msg = err(b
            .clone()
            .with_utility(UtilityWeights(vec![("repin".into(), f32::NAN)])));
        assert!(msg.contains("not finite"), "{msg}");
    }
}
