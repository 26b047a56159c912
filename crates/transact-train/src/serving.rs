//! From a training run to what a service loads, and from a log to a store.
//!
//! - [`export_bundle`]: the trained model as a serving
//!   [`transact_rank::Bundle`]: the item table keyed by the log's own raw
//!   ids (through [`transact_features::raw_id_key`]), the run's feature
//!   contract, utility weights and provenance.
//! - [`ingest`]: appends a dataset's action logs to a sequence store under
//!   the same keys, so the store holds exactly what the trainer read.
//! - [`user_key`] / [`item_key`]: the keys of a dataset's users and items.

use std::sync::Arc;

use transact_embed::{ItemTable, Precision};
use transact_features::{RawIdKeys, UserFeature, raw_id_key};
use transact_rank::{
    BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, Bundle, Manifest, Provenance, UtilityWeights,
};
use transact_seq::{Action, EmbeddedStore, SequenceStore, StoreConfig};

use crate::data::{Dataset, LoggedRequest};
use crate::eval::{SasrecMetrics, SasrecSplit, SasrecTarget, sasrec_eval_with};
use crate::trainer::{RunError, Trainer};

/// The store key of user index `user` (its raw id's key).
pub fn user_key(data: &Dataset, user: u32) -> Option<u64> {
    data.users.get(user as usize).map(|u| raw_id_key(&u.raw_id))
}

/// The store and item-table key of item index `item` (its raw id's key).
pub fn item_key(data: &Dataset, item: u64) -> Option<u64> {
    usize::try_from(item)
        .ok()
        .and_then(|i| data.items.raw_ids.get(i))
        .map(|r| raw_id_key(r))
}

/// A logged request as the ranker takes it: the user's and the candidates'
/// keys, the request time. `None` when an index is outside the data.
pub fn rank_request(data: &Dataset, r: &LoggedRequest) -> Option<transact_rank::RankRequest> {
    let candidates = r
        .candidates
        .iter()
        .map(|c| item_key(data, u64::from(c.item)).map(transact_rank::Candidate::Item))
        .collect::<Option<Vec<_>>>()?;
    Some(transact_rank::RankRequest::new(
        user_key(data, r.user)?,
        r.time_ms,
        candidates,
    ))
}

fn invalid(e: impl std::fmt::Display) -> RunError {
    RunError::Invalid(e.to_string())
}

/// The serving bundle of a trainer's current parameters on `data` (the
/// dataset it was trained on: its raw ids key the item table).
///
/// `version` names the bundle; `provenance` is stored as given (its
/// `train_config` is filled in from the trainer when empty). The
/// no-sequence baseline has no serving form: an error.
pub fn export_bundle(
    trainer: &Trainer,
    data: &Dataset,
    version: &str,
    mut provenance: Provenance,
) -> Result<Bundle, RunError> {
    let cfg = &trainer.cfg;
    if !cfg.use_sequence {
        return Err(RunError::Invalid(
            "the no-sequence baseline has no serving form (it reads no sequence)".into(),
        ));
    }
    let keys = RawIdKeys::new(&data.items.raw_ids).map_err(invalid)?;
    if data.items.raw_ids.len() != data.items.count {
        return Err(RunError::Invalid(format!(
            "{} has {} items but {} raw ids",
            data.name,
            data.items.count,
            data.items.raw_ids.len()
        )));
    }
    let net = trainer.net().config();
    let map = trainer.params.ranking_tensor_map(net)?;
    let model = transact_model::RankingModel::from_tensors(&map)?;
    let d = cfg.v1.item_emb_dim;
    let weights = trainer
        .params
        .get("items.weight")
        .ok_or_else(|| RunError::Invalid("the network has no item table".into()))?;
    let rows = net.item_rows.saturating_sub(1).min(data.items.count);
    let mut items = ItemTable::new(d, Precision::F32).map_err(invalid)?;
    items.try_reserve(rows).map_err(invalid)?;
    for (i, row) in weights.chunks_exact(d).take(rows).enumerate() {
        items.insert(keys.as_slice()[i], row).map_err(invalid)?;
    }
    let features = cfg.feature_config().sequence;
    let user_items = match features.user_feature {
        UserFeature::None => None,
        UserFeature::MeanOfPositives => {
            let e = data.items.embeddings.as_ref().ok_or_else(|| {
                RunError::Invalid(format!(
                    "the user feature averages pretrained embeddings, {} has none",
                    data.name
                ))
            })?;
            let mut t = ItemTable::new(e.dim, Precision::F32).map_err(invalid)?;
            t.try_reserve(data.items.count).map_err(invalid)?;
            for (i, row) in e.data.chunks_exact(e.dim).enumerate() {
                t.insert(keys.as_slice()[i], row).map_err(invalid)?;
            }
            Some(Arc::new(t))
        }
    };
    let tokens = match &cfg.v2 {
        Some(_) => Some(Arc::new(
            crate::features::token_table(data, |i| keys.as_slice()[i]).map_err(invalid)?,
        )),
        None => None,
    };
    let heads = model.head_names().to_vec();
    let utility = UtilityWeights(
        heads
            .iter()
            .cloned()
            .zip(cfg.utility.iter().copied())
            .collect(),
    );
    if provenance.train_config.is_null() {
        provenance.train_config = serde_json::to_value(cfg).map_err(invalid)?;
    }
    let bundle = Bundle {
        manifest: Manifest {
            format: BUNDLE_FORMAT.into(),
            format_version: BUNDLE_FORMAT_VERSION,
            version: version.into(),
            heads,
            utility,
            provenance,
        },
        features,
        model: Arc::new(model),
        items: Arc::new(items),
        user_items,
        tokens,
    };
    bundle.validate().map_err(invalid)?;
    Ok(bundle)
}

/// What [`ingest`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Users appended to.
    pub users: usize,
    /// Actions appended.
    pub actions: usize,
}

/// Appends every user's log in `data` to `store` under the raw-id keys
/// ([`user_key`], [`item_key`]), one `append` per user (chunked to
/// `chunk` actions), calling `progress(actions so far)` after each.
/// Fails on the first store error, naming the user; what was appended
/// before stays.
pub fn ingest<S: SequenceStore + ?Sized>(
    data: &Dataset,
    store: &S,
    chunk: usize,
    mut progress: impl FnMut(usize),
) -> Result<IngestReport, RunError> {
    let keys = RawIdKeys::new(&data.items.raw_ids).map_err(invalid)?;
    let mut report = IngestReport::default();
    let mut buf: Vec<Action> = Vec::new();
    for (u, h) in data.users.iter().enumerate() {
        if h.actions.is_empty() {
            continue;
        }
        let user = raw_id_key(&h.raw_id);
        for part in h.actions.chunks(chunk.max(1)) {
            buf.clear();
            for a in part {
                let key = usize::try_from(a.item_id)
                    .ok()
                    .and_then(|i| keys.get(i))
                    .ok_or_else(|| {
                        RunError::Invalid(format!(
                            "user `{}` (index {u}): item index {} is outside the {} items",
                            h.raw_id, a.item_id, data.items.count
                        ))
                    })?;
                buf.push(Action { item_id: key, ..*a });
            }
            store
                .append(user, &buf)
                .map_err(|e| RunError::Invalid(format!("appending user `{}`: {e}", h.raw_id)))?;
            report.actions += buf.len();
            progress(report.actions);
        }
        report.users += 1;
    }
    Ok(report)
}

/// An in-memory store holding every action of `data`, keyed as serving
/// keys them ([`ingest`]): the store an offline evaluation through the
/// serving path reads.
pub fn memory_store(data: &Dataset) -> Result<Arc<EmbeddedStore>, RunError> {
    let store = EmbeddedStore::in_memory(StoreConfig::default());
    ingest(data, &store, 4_096, |_| {})?;
    Ok(Arc::new(store))
}

/// HR@10 / NDCG@10 of `bundle` under the SASRec protocol (100 negatives,
/// `seed`) through the serving path, one result per target in `targets`:
/// one ranker over `store` scores each candidate by P(any interaction)
/// (every head weighs 1; the protocol's target is an interaction of any
/// kind).
pub fn sasrec_served<S: SequenceStore + ?Sized>(
    bundle: &Bundle,
    store: Arc<S>,
    data: &Dataset,
    split: &SasrecSplit,
    targets: &[SasrecTarget],
    seed: u64,
) -> Result<Vec<SasrecMetrics>, RunError> {
    let ones = UtilityWeights(data.heads.iter().map(|h| (h.clone(), 1.0)).collect());
    let any = bundle.clone().with_utility(ones).map_err(invalid)?;
    let ranker =
        transact_rank::Ranker::new(store, Arc::new(any), transact_rank::RankerConfig::default())
            .map_err(invalid)?;
    let scorer = RankerScorer::new(&ranker, data)?;
    targets
        .iter()
        .map(|&t| Ok(sasrec_eval_with(data, split, t, 100, 10, seed, &scorer)?))
        .collect()
}

/// Offline evaluation through the serving path: scores a query by asking a
/// [`transact_rank::Ranker`] (whose store holds the dataset's logs, see
/// [`ingest`]) to rank the candidates, keyed by raw ids; the score of a
/// candidate is its utility under the bundle's weights.
pub struct RankerScorer<'r, S: SequenceStore + ?Sized> {
    ranker: &'r transact_rank::Ranker<S>,
    user_keys: Vec<u64>,
    item_keys: RawIdKeys,
}

impl<'r, S: SequenceStore + ?Sized> RankerScorer<'r, S> {
    /// A scorer over `data`'s ids.
    pub fn new(ranker: &'r transact_rank::Ranker<S>, data: &Dataset) -> Result<Self, RunError> {
        Ok(Self {
            ranker,
            user_keys: data.users.iter().map(|u| raw_id_key(&u.raw_id)).collect(),
            item_keys: RawIdKeys::new(&data.items.raw_ids).map_err(invalid)?,
        })
    }
}

impl<S: SequenceStore + ?Sized> crate::eval::Scorer for RankerScorer<'_, S> {
    fn score(
        &self,
        _data: &Dataset,
        query: &crate::eval::Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), crate::eval::EvalError> {
        use crate::eval::EvalError;
        let user = *self
            .user_keys
            .get(query.user as usize)
            .ok_or_else(|| EvalError::Scorer(format!("user index {} unknown", query.user)))?;
        let cands = candidates
            .iter()
            .map(|&c| {
                self.item_keys
                    .get(c as usize)
                    .map(transact_rank::Candidate::Item)
                    .ok_or_else(|| EvalError::Scorer(format!("item index {c} unknown")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let req = transact_rank::RankRequest::new(user, query.time_ms, cands);
        let resp = self
            .ranker
            .rank(&req)
            .map_err(|e| EvalError::Scorer(e.to_string()))?;
        for r in &resp.ranked {
            if let Some(o) = out.get_mut(r.request_index) {
                *o = r.utility;
            }
        }
        Ok(())
    }
}
