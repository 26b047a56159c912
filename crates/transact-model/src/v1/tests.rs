//! Tests of the V1 forwards: the de-duplicated path against the naive one,
//! masking invariants, weights in and out, input validation.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::VocabMode;

/// One user's request data, owned.
#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) ids: Vec<i64>,
    pub(super) items: Vec<f32>,
    pub(super) times: Vec<i64>,
    pub(super) now: i64,
    pub(super) cands: Vec<f32>,
}

impl Case {
    pub(super) fn request(&self) -> V1Request<'_> {
        V1Request {
            action_types: &self.ids,
            item_embeddings: &self.items,
            action_times_ms: &self.times,
            request_time_ms: self.now,
            candidates: &self.cands,
        }
    }

    pub(super) fn b(&self, di: usize) -> usize {
        self.cands.len() / di
    }

    /// The same data as a reference batch: the sequence repeated for every
    /// candidate, padded to `seq_len` with `-1` ids and zero embeddings.
    pub(super) fn batch_inputs(&self, cfg: &V1Config) -> (Vec<i64>, Vec<f32>, Vec<i64>, Vec<i64>) {
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
pub(super) fn random_case(cfg: &V1Config, n: usize, b: usize, seed: u64) -> Case {
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
        .map(|_| {
            if rng.random_bool(0.2) {
                now + rng.random_range(1..5_000)
            } else {
                now - rng.random_range(0..100_000)
            }
        })
        .collect();
    let items = (0..n * di)
        .map(|_| rng.random_range(-1.5f32..1.5))
        .collect();
    let cands = (0..b * di)
        .map(|_| rng.random_range(-1.5f32..1.5))
        .collect();
    Case {
        ids,
        items,
        times,
        now,
        cands,
    }
}

pub(super) fn small_cfg() -> V1Config {
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

/// The fast path, with the first layer factored whenever possible.
pub(super) fn run_fast(model: &TransActV1, case: &Case, window: i64) -> Vec<f32> {
    let mut factored = model.clone();
    factored.factored_min_candidates = 1;
    run_fast_as_is(&factored, case, window)
}

/// The fast path with the model's own first-layer choice.
pub(super) fn run_fast_as_is(model: &TransActV1, case: &Case, window: i64) -> Vec<f32> {
    let b = case.b(model.config().item_emb_dim);
    let mut out = vec![0.0; b * model.output_dim()];
    model
        .forward_request_with_window(&case.request(), window, &mut out)
        .unwrap();
    out
}

/// The fast path with the first layer run per token.
pub(super) fn run_fast_per_token(model: &TransActV1, case: &Case, window: i64) -> Vec<f32> {
    let mut per_token = model.clone();
    per_token.factored_min_candidates = usize::MAX;
    run_fast_as_is(&per_token, case, window)
}

pub(super) fn run_reference(
    model: &TransActV1,
    case: &Case,
    window: i64,
    rows: MaskedRows,
) -> Vec<f32> {
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
    model
        .forward_batch_reference_with_window(&batch, window, rows, &mut out)
        .unwrap();
    out
}

pub(super) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
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

/// A small config from proptest's draws.
#[allow(clippy::too_many_arguments)]
fn drawn_cfg(
    s: usize,
    two_heads: bool,
    k: usize,
    da_half: usize,
    di_half: usize,
    layers: usize,
    ff: usize,
    reference_vocab: bool,
    max_pool: bool,
    concat: bool,
) -> V1Config {
    V1Config {
        seq_len: s,
        latest_n_emb: k,
        action_vocab: vec![7, 2, 11, 5],
        vocab_mode: if reference_vocab {
            VocabMode::Reference
        } else {
            VocabMode::Padded
        },
        action_emb_dim: 2 * da_half,
        item_emb_dim: 2 * di_half,
        num_layer: layers,
        nhead: if two_heads { 2 } else { 1 },
        dim_feedforward: ff,
        concat_candidate_emb: concat,
        concat_max_pool: max_pool,
        ..V1Config::default()
    }
}

/// (config, n, B, seed, window)
fn arb_setup() -> impl Strategy<Value = (V1Config, usize, usize, u64, i64)> {
    (
        (
            1usize..=12,
            any::<bool>(),
            0usize..=14,
            1usize..=3,
            1usize..=3,
            1usize..=3,
            1usize..=6,
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            1usize..=5,
            any::<u64>(),
            0usize..4,
        ),
    )
        .prop_flat_map(|((s, h2, k, da, di, l, ff), (rv, mp, cc, b, seed, w))| {
            let cfg = drawn_cfg(s, h2, k.min(s + 2), da, di, l, ff, rv, mp, cc);
            let window = [0i64, 1, 20_000, 200_000][w];
            (Just(cfg), 0..=s, Just(b), Just(seed), Just(window))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn fast_path_equals_reference_path((cfg, n, b, seed, window) in arb_setup()) {
        let model = TransActV1::new_random(cfg.clone(), seed).unwrap();
        let case = random_case(&cfg, n, b, seed ^ 0x5eed);
        let fast = run_fast(&model, &case, window);
        let per_token = run_fast_per_token(&model, &case, window);
        let reference = run_reference(&model, &case, window, MaskedRows::Zero);
        let diff = max_abs_diff(&fast, &reference);
        prop_assert!(diff < 1e-4, "factored: diff {} for {:?}", diff, cfg);
        let diff = max_abs_diff(&per_token, &reference);
        prop_assert!(diff < 1e-4, "per token: diff {} for {:?}", diff, cfg);
        prop_assert!(fast.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn masked_positions_never_change_the_output((cfg, n, b, seed, _w) in arb_setup(), pick in any::<u64>()) {
        prop_assume!(n >= 2);
        let model = TransActV1::new_random(cfg.clone(), seed).unwrap();
        let mut case = random_case(&cfg, n, b, seed ^ 0xabc);
        // Make sure at least one position past 0 is masked.
        let forced = 1 + (pick as usize) % (n - 1);
        if pick.is_multiple_of(2) {
            case.ids[forced] = -1;
        } else {
            case.times[forced] = case.now + 1;
        }
        let before_fast = run_fast(&model, &case, 0);
        let before_per_token = run_fast_per_token(&model, &case, 0);
        let before_ref = run_reference(&model, &case, 0, MaskedRows::Zero);
        let mut rng = ChaCha8Rng::seed_from_u64(pick);
        let di = cfg.item_emb_dim;
        let mut changed = 0;
        for p in 1..n {
            let padding = model.action_row(case.ids[p], p).unwrap() == 0;
            let future = case.times[p] > case.now;
            if !(padding || future) {
                continue;
            }
            changed += 1;
            for v in &mut case.items[p * di..(p + 1) * di] {
                *v = rng.random_range(-3.0f32..3.0);
            }
            if padding {
                // Any time, and (in the reference vocabulary) another id that is padding too.
                case.times[p] = case.now - rng.random_range(-10_000..10_000);
                if cfg.vocab_mode == VocabMode::Reference {
                    case.ids[p] = if rng.random_bool(0.5) { 2 } else { 999 };
                }
            } else {
                case.times[p] = case.now + rng.random_range(1..10_000);
                case.ids[p] = cfg.action_vocab[rng.random_range(0..cfg.action_vocab.len())];
            }
        }
        prop_assert!(changed >= 1);
        let after_fast = run_fast(&model, &case, 0);
        let after_ref = run_reference(&model, &case, 0, MaskedRows::Zero);
        prop_assert_eq!(before_fast, after_fast);
        prop_assert_eq!(before_per_token, run_fast_per_token(&model, &case, 0));
        prop_assert_eq!(before_ref, after_ref);
    }
}

#[test]
fn position_zero_is_never_masked() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 5).unwrap();
    let mut case = random_case(&cfg, 5, 2, 9);
    // Position 0: padding and in the future; everything else in the past.
    case.ids[0] = -1;
    case.times[0] = case.now + 60_000;
    let out = run_fast(&model, &case, 0);
    let reference = run_reference(&model, &case, 0, MaskedRows::Zero);
    assert!(max_abs_diff(&out, &reference) < 1e-4);
    // Its output row (the first kept position, after the max-pool block) is not zero...
    let d = cfg.d_model();
    assert!(out[d..2 * d].iter().any(|&v| v != 0.0));
    // ...and its item embedding matters.
    let mut moved = case.clone();
    moved.items[0] += 1.0;
    let out2 = run_fast(&model, &moved, 0);
    assert!(max_abs_diff(&out, &out2) > 1e-4);
    // The same holds with a training window that would mask every action.
    let windowed = run_fast(&model, &case, 10_000_000);
    let windowed_ref = run_reference(&model, &case, 10_000_000, MaskedRows::Zero);
    assert!(max_abs_diff(&windowed, &windowed_ref) < 1e-4);
    assert!(windowed[d..2 * d].iter().any(|&v| v != 0.0));
    // Only position 0 is left: every other kept row is zero.
    let od = model.output_dim();
    for c in 0..2 {
        assert!(
            windowed[c * od + 2 * d..(c + 1) * od]
                .iter()
                .all(|&v| v == 0.0)
        );
    }
}

#[test]
fn an_empty_sequence_is_a_padded_position_zero() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 5).unwrap();
    let case = random_case(&cfg, 0, 3, 1);
    let out = run_fast(&model, &case, 0);
    assert!(max_abs_diff(&out, &run_reference(&model, &case, 0, MaskedRows::Zero)) < 1e-4);
}

#[test]
fn masked_rows_computed_differs_only_at_masked_positions() {
    let cfg = V1Config {
        latest_n_emb: 0,
        concat_max_pool: false,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 8).unwrap();
    let mut case = random_case(&cfg, 7, 1, 4);
    case.ids = vec![3, 5, -1, 8, 13, 3, 5];
    case.times = vec![case.now - 10; 7];
    case.times[4] = case.now + 10;
    let zero = run_reference(&model, &case, 0, MaskedRows::Zero);
    let computed = run_reference(&model, &case, 0, MaskedRows::Computed);
    let d = cfg.d_model();
    for p in 0..7 {
        let (z, c) = (&zero[p * d..(p + 1) * d], &computed[p * d..(p + 1) * d]);
        if p == 2 || p == 4 {
            assert!(z.iter().all(|&v| v == 0.0));
            assert!(c.iter().any(|&v| v != 0.0), "masked row {p} is computed");
        } else {
            assert!(max_abs_diff(z, c) < 1e-6, "unmasked row {p}");
        }
    }
}

#[test]
fn without_early_fusion_every_candidate_gets_the_same_output() {
    let cfg = V1Config {
        concat_candidate_emb: false,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 2).unwrap();
    let case = random_case(&cfg, 6, 4, 3);
    let out = run_fast(&model, &case, 0);
    let od = model.output_dim();
    for c in 1..4 {
        assert_eq!(out[..od], out[c * od..(c + 1) * od]);
    }
    assert!(max_abs_diff(&out, &run_reference(&model, &case, 0, MaskedRows::Zero)) < 1e-4);
}

#[test]
fn extreme_scores_fall_back_to_a_direct_softmax() {
    // Large first-layer weights make the factored denominators underflow.
    let cfg = small_cfg();
    let mut model = TransActV1::new_random(cfg.clone(), 3).unwrap();
    let mut params = model.params.clone();
    params.layers[0]
        .in_proj_weight
        .iter_mut()
        .for_each(|v| *v *= 40.0);
    model = TransActV1::from_params(cfg.clone(), params).unwrap();
    let mut case = random_case(&cfg, 7, 5, 12);
    case.items.iter_mut().for_each(|v| *v *= 4.0);
    case.cands.iter_mut().for_each(|v| *v *= 4.0);
    let fast = run_fast(&model, &case, 0);
    let reference = run_reference(&model, &case, 0, MaskedRows::Zero);
    assert!(fast.iter().all(|v| v.is_finite()));
    let diff = max_abs_diff(&fast, &reference);
    assert!(diff < 1e-3, "diff {diff}");
}

#[test]
fn large_requests_split_into_chunks_match_single_candidates() {
    let cfg = V1Config {
        seq_len: 20,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 21).unwrap();
    let case = random_case(&cfg, 20, 150, 22);
    // B = 150 takes the factored first layer, single candidates the per-token one.
    let all = run_fast_as_is(&model, &case, 0);
    let (di, od) = (cfg.item_emb_dim, model.output_dim());
    for c in [0, 1, 77, 149] {
        let one = Case {
            cands: case.cands[c * di..(c + 1) * di].to_vec(),
            ..case.clone()
        };
        let single = run_fast_as_is(&model, &one, 0);
        assert!(
            max_abs_diff(&single, &all[c * od..(c + 1) * od]) < 1e-4,
            "candidate {c}"
        );
    }
}

#[test]
fn concurrent_requests_agree_with_sequential_ones() {
    use rayon::prelude::*;
    let cfg = V1Config {
        seq_len: 12,
        ..small_cfg()
    };
    // One shared model (and scratch pools); requests of both first-layer kinds.
    let model = TransActV1::new_random(cfg.clone(), 4).unwrap();
    let cases: Vec<Case> = (0..12)
        .map(|i| random_case(&cfg, 1 + i % 12, [40, 3][i % 2], i as u64))
        .collect();
    let run = |c: &Case| run_fast_as_is(&model, c, 0);
    let sequential: Vec<Vec<f32>> = cases.iter().map(run).collect();
    let parallel: Vec<Vec<f32>> = cases.par_iter().map(run).collect();
    assert_eq!(sequential, parallel);
}

#[test]
fn longer_batch_inputs_are_truncated_to_seq_len() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 6).unwrap();
    let case = random_case(&cfg, 7, 2, 8);
    let (ids, items, times, now) = case.batch_inputs(&cfg);
    // Append three extra (unmasked) actions per example.
    let (s, di, b) = (cfg.seq_len, cfg.item_emb_dim, 2);
    let extra = 3;
    let mut ids2 = Vec::new();
    let mut items2 = Vec::new();
    let mut times2 = Vec::new();
    for ex in 0..b {
        ids2.extend_from_slice(&ids[ex * s..(ex + 1) * s]);
        ids2.extend_from_slice(&[3; 3]);
        items2.extend_from_slice(&items[ex * s * di..(ex + 1) * s * di]);
        items2.extend(std::iter::repeat_n(0.7f32, extra * di));
        times2.extend_from_slice(&times[ex * s..(ex + 1) * s]);
        times2.extend_from_slice(&[case.now - 1; 3]);
    }
    let batch = V1Batch {
        batch: b,
        seq: s + extra,
        action_types: &ids2,
        item_embeddings: &items2,
        action_times_ms: &times2,
        request_times_ms: &now,
        candidates: &case.cands,
    };
    let mut out = vec![0.0; b * model.output_dim()];
    model
        .forward_batch_reference(&batch, MaskedRows::Zero, &mut out)
        .unwrap();
    assert_eq!(out, run_reference(&model, &case, 0, MaskedRows::Zero));
}

#[test]
fn long_sequences_run_the_first_layer_per_token() {
    // h · S² · (d/h + 1) = 1,200² · 13 floats is past the factored table's budget.
    let cfg = V1Config {
        seq_len: 1200,
        latest_n_emb: 3,
        action_vocab: vec![1, 2, 3],
        action_emb_dim: 4,
        item_emb_dim: 4,
        num_layer: 2,
        nhead: 1,
        dim_feedforward: 4,
        ..V1Config::default()
    };
    let model = TransActV1::new_random(cfg.clone(), 3).unwrap();
    let mut case = random_case(&cfg, 1200, 2, 4);
    // Keep (almost) every position unmasked so that S_e stays large.
    case.ids.iter_mut().for_each(|id| *id = 2);
    case.times.iter_mut().for_each(|t| *t = case.now - 5);
    let fast = run_fast(&model, &case, 0);
    let reference = run_reference(&model, &case, 0, MaskedRows::Zero);
    assert!(max_abs_diff(&fast, &reference) < 1e-4);
}
