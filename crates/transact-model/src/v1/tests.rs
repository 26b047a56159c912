//! Tests of the V1 forwards: the de-duplicated path against the naive one,
//! masking invariants, weights in and out, input validation.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::TensorMap;

/// One user's request data, owned.
#[derive(Clone, Debug)]
struct Case {
    ids: Vec<i64>,
    items: Vec<f32>,
    times: Vec<i64>,
    now: i64,
    cands: Vec<f32>,
}

impl Case {
    fn request(&self) -> V1Request<'_> {
        V1Request {
            action_types: &self.ids,
            item_embeddings: &self.items,
            action_times_ms: &self.times,
            request_time_ms: self.now,
            candidates: &self.cands,
        }
    }

    fn b(&self, di: usize) -> usize {
        self.cands.len() / di
    }

    /// The same data as a reference batch: the sequence repeated for every
    /// candidate, padded to `seq_len` with `-1` ids and zero embeddings.
    fn batch_inputs(&self, cfg: &V1Config) -> (Vec<i64>, Vec<f32>, Vec<i64>, Vec<i64>) {
        let (s, di) = (cfg.seq_len, cfg.item_emb_dim);
        let b = self.b(di);
        let n = self.ids.len();
        let mut ids = vec![-1i64; b * s];
        let mut items = vec![0.0f32; b * s * di];
        let mut times = vec![0i64; b * s];
        for ex in 0..b {
            ids[ex * s..ex * s + n].copy_from_slice(&self.ids);
            items[ex * s * di..(ex * s + n) * di].copy_from_slice(&self.items);
            times[ex * s..ex * s + n].copy_from_slice(&self.times);
        }
        (ids, items, times, vec![self.now; b])
    }
}

/// Random request data: `n` actions (some padding, some in the future),
/// `b` candidates, all drawn from `seed`.
fn random_case(cfg: &V1Config, n: usize, b: usize, seed: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let di = cfg.item_emb_dim;
    let now = 1_700_000_000_000i64;
    let ids = (0..n)
        .map(|_| {
            if rng.random_bool(0.2) {
                -1
            } else {
                cfg.action_vocab[rng.random_range(0..cfg.action_vocab.len())]
            }
        })
        .collect();
    let times = (0..n)
        .map(|_| if rng.random_bool(0.2) { now + rng.random_range(1..5_000) } else { now - rng.random_range(0..100_000) })
        .collect();
    let items = (0..n * di).map(|_| rng.random_range(-1.5f32..1.5)).collect();
    let cands = (0..b * di).map(|_| rng.random_range(-1.5f32..1.5)).collect();
    Case { ids, items, times, now, cands }
}

fn small_cfg() -> V1Config {
    V1Config {
        seq_len: 7,
        latest_n_emb: 3,
        action_vocab: vec![3, 5, 8, 13],
        action_emb_dim: 4,
        item_emb_dim: 6,
        num_layer: 2,
        nhead: 2,
        dim_feedforward: 5,
        ..V1Config::default()
    }
}

fn run_fast(model: &TransActV1, case: &Case, window: i64) -> Vec<f32> {
    let b = case.b(model.config().item_emb_dim);
    let mut out = vec![0.0; b * model.output_dim()];
    model.forward_request_with_window(&case.request(), window, &mut out).unwrap();
    out
}

fn run_reference(model: &TransActV1, case: &Case, window: i64, rows: MaskedRows) -> Vec<f32> {
    let cfg = model.config();
    let b = case.b(cfg.item_emb_dim);
    let (ids, items, times, now) = case.batch_inputs(cfg);
    let batch = V1Batch {
        batch: b,
        seq: cfg.seq_len,
        action_types: &ids,
        item_embeddings: &items,
        action_times_ms: &times,
        request_times_ms: &now,
        candidates: &case.cands,
    };
    let mut out = vec![0.0; b * model.output_dim()];
    model.forward_batch_reference_with_window(&batch, window, rows, &mut out).unwrap();
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn fast_matches_reference_on_a_small_model() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 11).unwrap();
    for (n, b, seed) in [(7, 3, 1), (4, 1, 2), (0, 2, 3), (7, 9, 4)] {
        let case = random_case(&cfg, n, b, seed);
        let fast = run_fast(&model, &case, 0);
        let reference = run_reference(&model, &case, 0, MaskedRows::Zero);
        let diff = max_abs_diff(&fast, &reference);
        assert!(diff < 1e-4, "n={n} b={b}: diff {diff}");
    }
}
