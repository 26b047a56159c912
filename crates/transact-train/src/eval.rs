//! Offline evaluation: HIT@k per head over logged requests, and HR@10 /
//! NDCG@10 under the SASRec next-item protocol.
//!
//! Both metrics rank candidates by a [`Scorer`]'s utility (higher = ranked
//! first). **Ties** are resolved by expectation over a uniformly random
//! order of the tied candidates: a group of equal scores straddling the
//! cut-off shares the remaining slots evenly, and the SASRec test item's
//! HR/NDCG is averaged over every position it could take among the
//! negatives with the same score. The result is deterministic, independent
//! of slate order, and a constant scorer gets exactly the chance value.
//! `NaN` scores rank below every number.
//!
//! # HIT@k (model-spec §5)
//! For each logged request, rank its candidates; count how many of the top
//! `k` carry each head's label; average over requests (requests without
//! candidates are skipped). Higher is better for repin and click, lower for
//! hide.
//!
//! # SASRec protocol
//! An *interaction* is any action other than an impression
//! ([`is_interaction`]): for imported rating logs that is every rating
//! (positive, neutral and negative alike), as in the spec's MovieLens
//! measurements. Per user, in log order: the last interaction is the test
//! item, the one before it the validation item, the rest training; users
//! with fewer than 3 interactions are skipped ([`sasrec_split`]). The test
//! item is ranked among `negatives` distinct items the user never touched
//! (no action of any type, impressions included), drawn uniformly with a
//! per-user seeded generator ([`sasrec_eval`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashSet;
use transact_seq::{Action, ActionType};

use crate::data::{Dataset, LoggedRequest};

/// Errors of the evaluation functions.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// `k` (or the number of negatives) was zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A request or split names a user the dataset does not have.
    #[error("user index {user} out of range ({users} users)")]
    UserOutOfRange {
        /// The user index.
        user: u32,
        /// Users in the dataset.
        users: usize,
    },
    /// A candidate names an item the dataset does not have.
    #[error("item index {item} out of range ({items} items)")]
    ItemOutOfRange {
        /// The item index.
        item: u64,
        /// Items in the dataset.
        items: usize,
    },
    /// A split position does not fit the user's log.
    #[error("split of user {user} does not match the dataset: {what}")]
    BadSplit {
        /// The user index.
        user: u32,
        /// What is wrong.
        what: String,
    },
    /// The scorer failed.
    #[error("scorer: {0}")]
    Scorer(String),
}

/// What a scorer may know about a request: the user, the time and the
/// user's actions before it.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// User index.
    pub user: u32,
    /// Request time (ms since the epoch).
    pub time_ms: i64,
    /// The user's actions up to the request, oldest first. For a logged
    /// request: every action at or before `time_ms`. For the SASRec
    /// protocol: every action before the target interaction in log order.
    /// Scorers should read this rather than the dataset's logs, which also
    /// hold the future; a model scorer sees it through its feature
    /// contract, whose time rule decides which of these a request may see
    /// (by default not those at exactly `time_ms`), as serving does.
    pub history: &'a [Action],
}

impl<'a> Query<'a> {
    /// The query of a logged request of `user` (whose log it is): every
    /// action at or before the request time.
    pub fn logged(user: &'a crate::data::UserHistory, req: &LoggedRequest) -> Self {
        let end = user
            .actions
            .partition_point(|a| a.timestamp_ms <= req.time_ms);
        Query {
            user: req.user,
            time_ms: req.time_ms,
            history: &user.actions[..end],
        }
    }
}

/// Scores candidates for a request: one utility per candidate, higher is
/// ranked first.
pub trait Scorer {
    /// Writes `out[i]`, the utility of `candidates[i]` (item indices) for
    /// the query; `out.len() == candidates.len()`.
    fn score(
        &self,
        data: &Dataset,
        query: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError>;
}

impl<S: Scorer + ?Sized> Scorer for &S {
    fn score(
        &self,
        data: &Dataset,
        query: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        (**self).score(data, query, candidates, out)
    }
}

/// HIT@k per head.
#[derive(Clone, Debug, PartialEq)]
pub struct HitAtK {
    /// The cut-off.
    pub k: usize,
    /// Head names, as in [`Dataset::heads`].
    pub heads: Vec<String>,
    /// Mean number of labelled candidates in the top `k`, per head.
    pub per_head: Vec<f64>,
    /// Requests averaged over (those with at least one candidate).
    pub requests: usize,
}

impl HitAtK {
    /// The value of the head called `name`.
    pub fn head(&self, name: &str) -> Option<f64> {
        let i = self.heads.iter().position(|h| h == name)?;
        self.per_head.get(i).copied()
    }
}

/// Sort key putting NaN below every number.
fn key(s: f32) -> f32 {
    if s.is_nan() { f32::NEG_INFINITY } else { s }
}

/// Weight of each candidate in the top `k` (1 inside, 0 outside, a share
/// for a tie group straddling the cut-off), written into `w`.
fn top_k_weights(scores: &[f32], k: usize, order: &mut Vec<usize>, w: &mut Vec<f64>) {
    let n = scores.len();
    w.clear();
    w.resize(n, 0.0);
    if n <= k {
        w.fill(1.0);
        return;
    }
    order.clear();
    order.extend(0..n);
    order.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])).then(a.cmp(&b)));
    let cut = key(scores[order[k - 1]]);
    let above = order.iter().take_while(|&&i| key(scores[i]) > cut).count();
    let tied: Vec<usize> = order[above..]
        .iter()
        .copied()
        .take_while(|&i| key(scores[i]) == cut)
        .collect();
    for &i in &order[..above] {
        w[i] = 1.0;
    }
    let share = (k - above) as f64 / tied.len() as f64;
    for &i in &tied {
        w[i] = share;
    }
}

/// HIT@k per head over `requests` (model-spec §5; ties as in the module
/// docs). The heads are those of `data`; label bit `h` counts for head `h`.
pub fn hit_at_k<S: Scorer + ?Sized>(
    data: &Dataset,
    requests: &[LoggedRequest],
    k: usize,
    scorer: &S,
) -> Result<HitAtK, EvalError> {
    if k == 0 {
        return Err(EvalError::Zero("k"));
    }
    let heads = data.heads.len().min(8);
    let mut sums = vec![0.0f64; heads];
    let mut counted = 0usize;
    let (mut items, mut scores, mut order, mut w) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for req in requests {
        if req.candidates.is_empty() {
            continue;
        }
        let Some(user) = data.users.get(req.user as usize) else {
            return Err(EvalError::UserOutOfRange {
                user: req.user,
                users: data.users.len(),
            });
        };
        items.clear();
        for c in &req.candidates {
            if c.item as usize >= data.items.count {
                return Err(EvalError::ItemOutOfRange {
                    item: c.item as u64,
                    items: data.items.count,
                });
            }
            items.push(c.item);
        }
        let query = Query::logged(user, req);
        scores.clear();
        scores.resize(items.len(), 0.0f32);
        scorer.score(data, &query, &items, &mut scores)?;
        top_k_weights(&scores, k, &mut order, &mut w);
        for (c, &wi) in req.candidates.iter().zip(&w) {
            if wi == 0.0 {
                continue;
            }
            for (h, s) in sums.iter_mut().enumerate() {
                if c.labels & crate::data::label_bit(h) != 0 {
                    *s += wi;
                }
            }
        }
        counted += 1;
    }
    let per_head = sums
        .iter()
        .map(|s| {
            if counted == 0 {
                0.0
            } else {
                s / counted as f64
            }
        })
        .collect();
    Ok(HitAtK {
        k,
        heads: data.heads.iter().take(heads).cloned().collect(),
        per_head,
        requests: counted,
    })
}

/// Whether an action is an interaction for the SASRec protocol: any type
/// except [`ActionType::IMPRESSION`].
pub fn is_interaction(a: &Action) -> bool {
    a.action_type != ActionType::IMPRESSION
}

/// One user's leave-last-out split: positions in the user's action list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SasrecUser {
    /// User index.
    pub user: u32,
    /// Position of the validation interaction (the second-to-last);
    /// the training interactions are those before it.
    pub valid: usize,
    /// Position of the test interaction (the last).
    pub test: usize,
}

/// The SASRec leave-last-out split of a dataset ([`sasrec_split`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SasrecSplit {
    /// Users with at least 3 interactions, by increasing index.
    pub users: Vec<SasrecUser>,
    /// Users skipped for having fewer than 3 interactions.
    pub skipped: usize,
}

impl SasrecSplit {
    /// The training interactions of a split user (interactions before the
    /// validation one), oldest first.
    pub fn train_interactions<'a>(
        &self,
        data: &'a Dataset,
        u: &SasrecUser,
    ) -> impl Iterator<Item = &'a Action> + 'a {
        let acts: &'a [Action] = data
            .users
            .get(u.user as usize)
            .map_or(&[], |h| &h.actions[..u.valid.min(h.actions.len())]);
        acts.iter().filter(|a| is_interaction(a))
    }
}

impl SasrecSplit {
    /// What training may see of `data` under this split: every split
    /// user's actions before the validation item (the held-out items and
    /// everything after them cut), other users whole. `None` when a
    /// request of `train` falls after its user's validation item (a logged
    /// world whose slates run past it): there the training requests
    /// themselves hold the held-out items, and no cut helps. (A request
    /// in the validation item's own second is one a log importer built
    /// from the interactions before it.)
    ///
    /// Without the cut, the Next Action Loss of a user's newest training
    /// request would take its positives from the actions after it, the
    /// validation and test items among them.
    pub fn training_view(&self, data: &Dataset, train: &[LoggedRequest]) -> Option<Dataset> {
        let mut cut: Vec<Option<(usize, i64)>> = vec![None; data.users.len()];
        for su in &self.users {
            let h = data.users.get(su.user as usize)?;
            let t = h.actions.get(su.valid)?.timestamp_ms;
            *cut.get_mut(su.user as usize)? = Some((su.valid, t));
        }
        let past = train.iter().any(|r| {
            cut.get(r.user as usize)
                .copied()
                .flatten()
                .is_some_and(|(_, t)| r.time_ms > t)
        });
        if past {
            return None;
        }
        let mut view = data.clone();
        for (h, c) in view.users.iter_mut().zip(&cut) {
            if let Some((valid, _)) = c {
                h.actions.truncate(*valid);
            }
        }
        Some(view)
    }
}

/// Leave-last-out split (see the module docs): per user, the last
/// interaction is the test item, the one before it validation, the rest
/// training; users with fewer than 3 interactions are skipped.
pub fn sasrec_split(data: &Dataset) -> SasrecSplit {
    let mut split = SasrecSplit::default();
    for (u, h) in data.users.iter().enumerate() {
        let mut it = h
            .actions
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, a)| is_interaction(a))
            .map(|(i, _)| i);
        let (test, valid) = (it.next(), it.next());
        match (test, valid, it.next()) {
            (Some(test), Some(valid), Some(_)) => split.users.push(SasrecUser {
                user: u as u32,
                valid,
                test,
            }),
            _ => split.skipped += 1,
        }
    }
    split
}

/// Which held-out interaction to rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SasrecTarget {
    /// The validation interaction (history: everything before it).
    Validation,
    /// The test interaction (history: everything before it, validation
    /// included).
    #[default]
    Test,
}

/// HR@k and NDCG@k under the SASRec protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SasrecMetrics {
    /// Hit rate: share of users whose target ranks in the top `k`.
    pub hr: f64,
    /// Mean `1 / log2(rank + 2)` (0-based rank) over users, 0 outside the top `k`.
    pub ndcg: f64,
    /// Users evaluated.
    pub users: usize,
    /// Users who had fewer untouched items than the requested negatives
    /// (ranked against all of them instead).
    pub short_of_negatives: usize,
    /// The cut-off.
    pub k: usize,
}

/// HR@10 and NDCG@10 of the test items, each ranked among `negatives`
/// (the protocol's 100) seeded random items the user never touched.
pub fn sasrec_eval<S: Scorer + Sync + ?Sized>(
    data: &Dataset,
    split: &SasrecSplit,
    negatives: usize,
    seed: u64,
    scorer: &S,
) -> Result<SasrecMetrics, EvalError> {
    sasrec_eval_with(data, split, SasrecTarget::Test, negatives, 10, seed, scorer)
}

/// SplitMix64 finaliser: mixes a 64-bit value.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws up to `n` distinct item indices in `0..count` not in `touched`
/// (all of them when fewer remain), in draw order.
fn sample_untouched(
    rng: &mut ChaCha8Rng,
    count: usize,
    touched: &HashSet<u32>,
    n: usize,
) -> Vec<u32> {
    let free = count.saturating_sub(touched.len());
    if free <= n.saturating_mul(2) {
        // Few items left: enumerate and partially shuffle.
        let mut pool: Vec<u32> = (0..count as u32).filter(|i| !touched.contains(i)).collect();
        let take = n.min(pool.len());
        for i in 0..take {
            let j = rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(take);
        return pool;
    }
    let mut chosen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let i = rng.random_range(0..count) as u32;
        if !touched.contains(&i) && chosen.insert(i) {
            out.push(i);
        }
    }
    out
}

/// HR@k and NDCG@k of the validation or test items (see the module docs).
/// The negatives of user `u` come from a generator seeded with `seed` and
/// `u` alone, so they do not depend on which other users are evaluated.
pub fn sasrec_eval_with<S: Scorer + Sync + ?Sized>(
    data: &Dataset,
    split: &SasrecSplit,
    target: SasrecTarget,
    negatives: usize,
    k: usize,
    seed: u64,
    scorer: &S,
) -> Result<SasrecMetrics, EvalError> {
    if k == 0 {
        return Err(EvalError::Zero("k"));
    }
    if negatives == 0 {
        return Err(EvalError::Zero("negatives"));
    }
    // Users in parallel (each is independent: its own negatives, its own
    // query), summed in split order so the result does not depend on the
    // thread count.
    let per_user = split
        .users
        .par_iter()
        .map(|su| sasrec_user(data, su, target, negatives, k, seed, scorer))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hr = 0.0f64;
    let mut ndcg = 0.0f64;
    let mut short = 0usize;
    for (h_u, n_u, is_short) in per_user {
        hr += h_u;
        ndcg += n_u;
        short += usize::from(is_short);
    }
    let n = split.users.len();
    let div = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    Ok(SasrecMetrics {
        hr: div(hr),
        ndcg: div(ndcg),
        users: n,
        short_of_negatives: short,
        k,
    })
}

/// One user's (HR@k, NDCG@k, short of negatives) under the protocol.
fn sasrec_user<S: Scorer + ?Sized>(
    data: &Dataset,
    su: &SasrecUser,
    target: SasrecTarget,
    negatives: usize,
    k: usize,
    seed: u64,
    scorer: &S,
) -> Result<(f64, f64, bool), EvalError> {
    let Some(h) = data.users.get(su.user as usize) else {
        return Err(EvalError::UserOutOfRange {
            user: su.user,
            users: data.users.len(),
        });
    };
    let pos = match target {
        SasrecTarget::Validation => su.valid,
        SasrecTarget::Test => su.test,
    };
    let Some(act) = h.actions.get(pos) else {
        return Err(EvalError::BadSplit {
            user: su.user,
            what: format!("position {pos} beyond {} actions", h.actions.len()),
        });
    };
    if act.item_id >= data.items.count as u64 {
        return Err(EvalError::ItemOutOfRange {
            item: act.item_id,
            items: data.items.count,
        });
    }
    let touched: HashSet<u32> = h
        .actions
        .iter()
        .filter(|a| a.item_id < data.items.count as u64)
        .map(|a| a.item_id as u32)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(u64::from(su.user) + 1)));
    let negs = sample_untouched(&mut rng, data.items.count, &touched, negatives);
    let mut cands = Vec::with_capacity(negs.len() + 1);
    cands.push(act.item_id as u32);
    cands.extend_from_slice(&negs);
    let mut scores = vec![0.0f32; cands.len()];
    let query = Query {
        user: su.user,
        time_ms: act.timestamp_ms,
        history: &h.actions[..pos],
    };
    scorer.score(data, &query, &cands, &mut scores)?;
    let t = key(scores[0]);
    let above = scores[1..].iter().filter(|&&s| key(s) > t).count();
    let ties = scores[1..].iter().filter(|&&s| key(s) == t).count();
    let (h_u, n_u) = expected_hit_ndcg(above, ties, k);
    Ok((h_u, n_u, negs.len() < negatives))
}

/// HR@k and NDCG@k of an item with `above` strictly better candidates and
/// `ties` equal ones, averaged over its possible positions among the ties.
fn expected_hit_ndcg(above: usize, ties: usize, k: usize) -> (f64, f64) {
    let mut hit = 0.0;
    let mut ndcg = 0.0;
    for rank in above..=above + ties {
        if rank >= k {
            break;
        }
        hit += 1.0;
        ndcg += 1.0 / ((rank + 2) as f64).log2();
    }
    let n = (ties + 1) as f64;
    (hit / n, ndcg / n)
}

/// Scores every candidate with a hash of `(seed, user, time, item)`: a
/// random ranking, reproducible for a seed and independent of slate order.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomScorer {
    /// Seed of the hash.
    pub seed: u64,
}

impl RandomScorer {
    /// A random scorer with this seed.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl Scorer for RandomScorer {
    fn score(
        &self,
        _data: &Dataset,
        query: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        let base =
            mix64(self.seed ^ mix64(u64::from(query.user)) ^ mix64(query.time_ms as u64 ^ 0x5a5a));
        for (o, &c) in out.iter_mut().zip(candidates) {
            // 24 random bits: exact in f32, so distinct items rarely tie.
            *o = (mix64(base ^ u64::from(c)) >> 40) as f32;
        }
        Ok(())
    }
}

/// Scores a candidate by how many interactions its item had in the counted
/// data (ties resolved as in the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PopularityScorer {
    /// Interaction count per item index.
    pub counts: Vec<u32>,
}

impl PopularityScorer {
    /// Counts the training interactions of a SASRec split (those before each
    /// user's validation item; validation and test items are not counted).
    pub fn from_split(data: &Dataset, split: &SasrecSplit) -> Self {
        let mut counts = vec![0u32; data.items.count];
        for u in &split.users {
            for a in split.train_interactions(data, u) {
                if let Some(c) = counts.get_mut(a.item_id as usize) {
                    *c += 1;
                }
            }
        }
        Self { counts }
    }

    /// Counts every user's interactions strictly before `before_ms` (for
    /// HIT@k on requests at or after that time).
    pub fn from_history(data: &Dataset, before_ms: i64) -> Self {
        let mut counts = vec![0u32; data.items.count];
        for h in &data.users {
            for a in h.actions.iter().take_while(|a| a.timestamp_ms < before_ms) {
                if is_interaction(a)
                    && let Some(c) = counts.get_mut(a.item_id as usize)
                {
                    *c += 1;
                }
            }
        }
        Self { counts }
    }
}

impl Scorer for PopularityScorer {
    fn score(
        &self,
        _data: &Dataset,
        _query: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        for (o, &c) in out.iter_mut().zip(candidates) {
            *o = self.counts.get(c as usize).copied().unwrap_or(0) as f32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ItemCatalog, LoggedCandidate, UserHistory, default_heads, label_bit};
    use transact_seq::Surface;

    fn act(item: u64, t: i64, ty: ActionType) -> Action {
        Action {
            item_id: item,
            action_type: ty,
            timestamp_ms: t,
            surface: Surface(0),
        }
    }

    /// Scores by a fixed per-item table.
    struct Table(Vec<f32>);
    impl Scorer for Table {
        fn score(
            &self,
            _: &Dataset,
            _: &Query<'_>,
            c: &[u32],
            out: &mut [f32],
        ) -> Result<(), EvalError> {
            for (o, &i) in out.iter_mut().zip(c) {
                *o = self.0[i as usize];
            }
            Ok(())
        }
    }

    fn one_request_dataset(labels: &[u8]) -> Dataset {
        let n = labels.len();
        Dataset {
            name: "t".into(),
            heads: default_heads(),
            items: ItemCatalog {
                count: n,
                raw_ids: (0..n).map(|i| i.to_string()).collect(),
                embeddings: None,
            },
            users: vec![UserHistory {
                raw_id: "u".into(),
                actions: vec![],
                weight: 1.0,
            }],
            requests: vec![LoggedRequest {
                user: 0,
                time_ms: 10,
                candidates: labels
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| LoggedCandidate {
                        item: i as u32,
                        labels: l,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn hit_at_3_counts_labels_in_top_three() {
        let r = label_bit(0);
        let h = label_bit(2);
        // Items 0..6; repins on 0, 1, 5; hide on 2.
        let d = one_request_dataset(&[r, r, h, 0, 0, r]);
        let best = Table(vec![6.0, 5.0, 0.0, 1.0, 2.0, 4.0]);
        let m = hit_at_k(&d, &d.requests, 3, &best).unwrap();
        assert_eq!(m.per_head, vec![3.0, 0.0, 0.0]);
        assert_eq!(m.requests, 1);
        let worst = Table(vec![0.0, 1.0, 6.0, 5.0, 4.0, 2.0]);
        let m = hit_at_k(&d, &d.requests, 3, &worst).unwrap();
        assert_eq!(m.head("repin"), Some(0.0));
        assert_eq!(m.head("hide"), Some(1.0));
    }

    #[test]
    fn hit_at_k_ties_share_slots_and_constant_scorer_gets_chance() {
        let r = label_bit(0);
        let d = one_request_dataset(&[r, 0, 0, 0, r, 0]);
        let m = hit_at_k(&d, &d.requests, 3, &Table(vec![0.0; 6])).unwrap();
        // 2 repins among 6, 3 slots: expected 1.0.
        assert!((m.per_head[0] - 1.0).abs() < 1e-12);
        // Item 4 alone on top, the rest tied: 1 + 2 slots * 1/5 repin share.
        let m = hit_at_k(&d, &d.requests, 3, &Table(vec![0., 0., 0., 0., 1., 0.])).unwrap();
        assert!((m.per_head[0] - 1.4).abs() < 1e-12);
        // NaN ranks last.
        let m = hit_at_k(
            &d,
            &d.requests,
            1,
            &Table(vec![f32::NAN, 0., 0., 0., -1., 0.]),
        )
        .unwrap();
        assert_eq!(m.per_head[0], 0.0);
        assert!(matches!(
            hit_at_k(&d, &d.requests, 0, &Table(vec![0.0; 6])),
            Err(EvalError::Zero(_))
        ));
    }

    /// `users` users, each with interactions on items `3u, 3u+1, 3u+2`, over
    /// a catalogue of `items` items.
    fn sasrec_dataset(users: usize, items: usize) -> Dataset {
        let mut d = one_request_dataset(&vec![0; items]);
        d.requests.clear();
        d.users = (0..users)
            .map(|u| UserHistory {
                raw_id: u.to_string(),
                actions: (0..3)
                    .map(|j| act((3 * u + j) as u64, j as i64, ActionType::CLICK))
                    .chain([act(items as u64 - 1, 5, ActionType::IMPRESSION)])
                    .collect(),
                weight: 1.0,
            })
            .collect();
        d
    }

    #[test]
    fn the_training_view_cuts_each_user_at_the_validation_item() {
        let mut d = sasrec_dataset(3, 200);
        d.users[1].actions.remove(0); // too short: not split, kept whole
        let s = sasrec_split(&d);
        let before = |u: u32, t: i64| LoggedRequest {
            user: u,
            time_ms: t,
            candidates: Vec::new(),
        };
        let view = s
            .training_view(&d, &[before(0, 0), before(2, 0)])
            .expect("view");
        for su in &s.users {
            let h = &view.users[su.user as usize].actions;
            assert_eq!(h.len(), su.valid);
            assert!(
                h.iter()
                    .all(|a| a.timestamp_ms
                        < d.users[su.user as usize].actions[su.valid].timestamp_ms),
                "nothing from the validation item on"
            );
        }
        assert_eq!(view.users[1].actions, d.users[1].actions);
        // A training request after the validation item: no view helps.
        let t_valid = d.users[0].actions[s.users[0].valid].timestamp_ms;
        assert!(s.training_view(&d, &[before(0, t_valid)]).is_some());
        assert!(s.training_view(&d, &[before(0, t_valid + 1)]).is_none());
    }

    #[test]
    fn sasrec_split_leaves_last_out_and_skips_short_users() {
        let mut d = sasrec_dataset(3, 200);
        d.users[1].actions.remove(0);
        let s = sasrec_split(&d);
        assert_eq!(s.skipped, 1);
        assert_eq!(s.users.len(), 2);
        // The trailing impression is not an interaction.
        assert_eq!(
            s.users[0],
            SasrecUser {
                user: 0,
                valid: 1,
                test: 2
            }
        );
        assert_eq!(s.train_interactions(&d, &s.users[0]).count(), 1);
        let pop = PopularityScorer::from_split(&d, &s);
        assert_eq!(pop.counts[0], 1);
        assert_eq!(pop.counts[1], 0);
        assert_eq!(pop.counts.iter().sum::<u32>(), 2);
    }

    /// Ranks the item of a fixed "target" per user at a chosen rank `r`
    /// (0-based) by giving it a score below exactly `r` negatives.
    struct AtRank {
        targets: Vec<u32>,
        rank: usize,
    }
    impl Scorer for AtRank {
        fn score(
            &self,
            _: &Dataset,
            q: &Query<'_>,
            c: &[u32],
            out: &mut [f32],
        ) -> Result<(), EvalError> {
            let target = self.targets[q.user as usize];
            let mut neg = 0usize;
            for (o, &i) in out.iter_mut().zip(c) {
                if i == target {
                    *o = 0.0;
                } else {
                    neg += 1;
                    *o = if neg <= self.rank { 1.0 } else { -1.0 };
                }
            }
            Ok(())
        }
    }

    #[test]
    fn sasrec_metrics_known_answers() {
        let d = sasrec_dataset(4, 200);
        let s = sasrec_split(&d);
        let targets: Vec<u32> = (0..4).map(|u| 3 * u + 2).collect();
        let perfect = AtRank {
            targets: targets.clone(),
            rank: 0,
        };
        let m = sasrec_eval(&d, &s, 100, 7, &perfect).unwrap();
        assert_eq!(
            (m.hr, m.ndcg, m.users, m.short_of_negatives),
            (1.0, 1.0, 4, 0)
        );
        let worst = AtRank {
            targets: targets.clone(),
            rank: 100,
        };
        let m = sasrec_eval(&d, &s, 100, 7, &worst).unwrap();
        assert_eq!((m.hr, m.ndcg), (0.0, 0.0));
        for r in [1usize, 4, 9] {
            let m = sasrec_eval(
                &d,
                &s,
                100,
                7,
                &AtRank {
                    targets: targets.clone(),
                    rank: r,
                },
            )
            .unwrap();
            assert_eq!(m.hr, 1.0);
            let want = 1.0 / ((r + 2) as f64).log2();
            assert!(
                (m.ndcg - want).abs() < 1e-12,
                "rank {r}: {} vs {want}",
                m.ndcg
            );
        }
        // Validation target: the second-to-last item.
        let vt: Vec<u32> = (0..4).map(|u| 3 * u + 1).collect();
        let m = sasrec_eval_with(
            &d,
            &s,
            SasrecTarget::Validation,
            100,
            10,
            7,
            &AtRank {
                targets: vt,
                rank: 0,
            },
        )
        .unwrap();
        assert_eq!(m.hr, 1.0);
    }

    #[test]
    fn sasrec_ties_average_over_positions() {
        let d = sasrec_dataset(1, 200);
        let s = sasrec_split(&d);
        // Everything tied: test item uniform over 101 positions.
        let m = sasrec_eval(&d, &s, 100, 1, &Table(vec![0.0; 200])).unwrap();
        assert!((m.hr - 10.0 / 101.0).abs() < 1e-12);
        let want: f64 = (0..10).map(|r| 1.0 / ((r + 2) as f64).log2()).sum::<f64>() / 101.0;
        assert!((m.ndcg - want).abs() < 1e-12);
    }

    /// Records the candidates it was asked about, by user.
    struct Record(std::sync::Mutex<Vec<(u32, Vec<u32>)>>);
    impl Scorer for Record {
        fn score(
            &self,
            _: &Dataset,
            q: &Query<'_>,
            c: &[u32],
            _: &mut [f32],
        ) -> Result<(), EvalError> {
            // The history never holds the target or anything after it.
            assert!(q.history.len() <= 2);
            self.0.lock().expect("record").push((q.user, c.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn sasrec_negatives_are_seeded_distinct_and_untouched() {
        let d = sasrec_dataset(5, 300);
        let s = sasrec_split(&d);
        let run = |seed| {
            let r = Record(Default::default());
            sasrec_eval(&d, &s, 100, seed, &r).unwrap();
            let mut asked = r.0.into_inner().expect("record");
            asked.sort_by_key(|(u, _)| *u);
            asked.into_iter().map(|(_, c)| c).collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        for (u, c) in a.iter().enumerate() {
            assert_eq!(c.len(), 101);
            let set: HashSet<u32> = c.iter().copied().collect();
            assert_eq!(set.len(), 101);
            for a in &d.users[u].actions {
                assert!(!c[1..].contains(&(a.item_id as u32)));
            }
        }
        // Few untouched items: all of them are used.
        let small = sasrec_dataset(2, 50);
        let s = sasrec_split(&small);
        let m = sasrec_eval(&small, &s, 100, 1, &RandomScorer::new(1)).unwrap();
        assert_eq!(m.short_of_negatives, 2);
    }

    #[test]
    fn random_scorer_is_near_chance_and_deterministic() {
        let d = sasrec_dataset(60, 400);
        let s = sasrec_split(&d);
        let a = sasrec_eval(&d, &s, 100, 9, &RandomScorer::new(5)).unwrap();
        let b = sasrec_eval(&d, &s, 100, 9, &RandomScorer::new(5)).unwrap();
        assert_eq!(a, b);
        assert!(a.hr < 0.3, "random HR@10 {}", a.hr);
    }
}
