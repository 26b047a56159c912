//! Whole-network checks: finite differences, range splits, parity with the
//! serving model, overfitting a small batch, and input errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_model::{HeadsConfig, V1Config, V1Request, V2Config, V2Request};

use super::*;
use crate::layers::gradcheck::{Tolerance, check_gradient};

fn tiny_cfg(nal: bool, dropout: f32) -> NetConfig {
    NetConfig {
        v1: V1Config {
            seq_len: 4,
            latest_n_emb: 2,
            action_vocab: vec![0, 1, 2],
            action_emb_dim: 4,
            item_emb_dim: 4,
            num_layer: 2,
            nhead: 2,
            dim_feedforward: 8,
            ..V1Config::default()
        },
        heads: HeadsConfig {
            heads: vec!["repin".into(), "click".into(), "hide".into()],
            user_emb_dim: 3,
            context_dim: 0,
            cross_layers: 1,
            mlp_hidden: vec![8],
        },
        use_sequence: true,
        item_rows: 12,
        learn_items: true,
        nal,
        nal_every_position: false,
        dropout,
        v2: None,
        v2_item_tokens: false,
    }
}

/// A random batch: masked positions (never position 0), some zero weights,
/// some examples without a NAL target, short negative lists.
fn random_batch(cfg: &NetConfig, b: usize, seed: u64) -> Batch {
    random_batch_with(cfg, b, seed, 1)
}

/// [`random_batch`] with `np` NAL targets per example.
fn random_batch_with(cfg: &NetConfig, b: usize, seed: u64, np: usize) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = cfg.v1.seq_len;
    let h = cfg.heads.heads.len();
    let rows = cfg.item_rows as u32;
    let arows = cfg.v1.action_rows() as u32;
    let negs = 3;
    let mut batch = Batch {
        len: b,
        seq_len: s,
        nal_negatives: negs,
        nal_positives: np,
        ..Batch::default()
    };
    for _ in 0..b {
        for p in 0..s {
            let a = rng.random_range(0..arows);
            let masked = p != 0 && (a == 0 || rng.random_bool(0.2));
            batch.seq_actions.push(a);
            // Masked positions may hold any row, even an invalid one.
            batch.seq_items.push(if masked {
                u32::MAX - 1
            } else {
                rng.random_range(0..rows)
            });
            batch.seq_masked.push(masked);
        }
        batch.cand_items.push(rng.random_range(0..rows));
        for _ in 0..cfg.heads.user_emb_dim {
            batch.user_features.push(rng.random_range(-1.0..1.0));
        }
        for _ in 0..h {
            batch.labels.push(f32::from(u8::from(rng.random_bool(0.4))));
            batch.weights.push(if rng.random_bool(0.15) {
                0.0
            } else {
                rng.random_range(0.5..1.5)
            });
        }
        for _ in 0..np {
            batch.nal_pos.push(if rng.random_bool(0.8) {
                rng.random_range(0..rows)
            } else {
                NO_ITEM
            });
        }
        for _ in 0..negs {
            batch.nal_neg.push(if rng.random_bool(0.8) {
                rng.random_range(0..rows)
            } else {
                NO_ITEM
            });
        }
    }
    // Per-position targets and negatives (read only with
    // `nal_every_position`), from their own stream.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5E0);
    let mut item = |p: f64| {
        if rng.random_bool(p) {
            rng.random_range(0..rows)
        } else {
            NO_ITEM
        }
    };
    batch.nal_seq = (0..b * s).map(|_| item(0.7)).collect();
    batch.nal_seq_neg = (0..b * s * negs).map(|_| item(0.8)).collect();
    batch
}

fn loss_of(net: &Net, params: &Params, batch: &Batch, opts: &StepOptions) -> f64 {
    let mut g = vec![0.0; params.len()];
    let st = net
        .forward_backward(
            params,
            batch,
            0..batch.len,
            opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap();
    f64::from(st.loss)
}

/// Finite differences of the whole loss for a sample of every tensor.
fn check_network(cfg: NetConfig, opts: StepOptions, seed: u64) {
    check_network_with(cfg, opts, seed, 1);
}

/// [`check_network`] with `np` NAL targets per example.
fn check_network_with(cfg: NetConfig, opts: StepOptions, seed: u64, np: usize) {
    let (net, params) = Net::new(cfg.clone(), seed).unwrap();
    let mut params = params;
    let batch = random_batch_with(&cfg, 6, seed + 1, np);
    let mut grads = vec![0.0; params.len()];
    net.forward_backward(
        &params,
        &batch,
        0..batch.len,
        &opts,
        &mut grads,
        &mut Workspace::default(),
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 2);
    let specs = params.specs().to_vec();
    let mut checked = 0;
    for s in &specs {
        // Row 0 of the action table is the padding row: like PyTorch's
        // `padding_idx`, it takes no gradient (checked below).
        let skip = if s.name.ends_with("action_emb_module.weight") {
            s.shape[1]
        } else {
            0
        };
        let idx: Vec<usize> = (0..6)
            .map(|_| s.offset + rng.random_range(skip..s.len))
            .collect();
        let base = params.clone();
        let data = params.data_mut();
        let rep = check_gradient(
            &s.name,
            data,
            &grads,
            Some(&idx),
            Tolerance::default(),
            |x| {
                let mut q = base.clone();
                q.data_mut().copy_from_slice(x);
                loss_of(&net, &q, &batch, &opts)
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        checked += rep.checked;
    }
    assert!(
        checked > specs.len() * 4,
        "only {checked} coordinates compared"
    );
    if let Some(s) = specs
        .iter()
        .find(|s| s.name.ends_with("action_emb_module.weight"))
    {
        let pad = &grads[s.offset..s.offset + s.shape[1]];
        assert!(pad.iter().all(|&v| v == 0.0), "the padding row got {pad:?}");
    }
    // Every tensor receives some gradient.
    for s in &specs {
        let g = params.grad(&grads, &s.name).unwrap();
        assert!(
            g.iter().any(|&v| v != 0.0),
            "no gradient reaches `{}`",
            s.name
        );
    }
}

#[test]
fn network_gradients_match_finite_differences_with_impression_negatives() {
    let opts = StepOptions {
        nal_weight: 0.5,
        in_batch_negatives: false,
        also_in_batch: false,
        dropout: false,
        step_seed: 3,
    };
    check_network(tiny_cfg(true, 0.0), opts, 11);
}

#[test]
fn network_gradients_match_finite_differences_with_in_batch_negatives() {
    let opts = StepOptions {
        nal_weight: 0.5,
        in_batch_negatives: true,
        also_in_batch: false,
        dropout: false,
        step_seed: 3,
    };
    check_network(tiny_cfg(true, 0.0), opts, 12);
}

#[test]
fn network_gradients_match_finite_differences_with_several_nal_targets() {
    // 12 item rows and 3 targets per example: examples share items, so the
    // in-batch negatives exclude an example's own targets.
    for (in_batch, also) in [(true, false), (false, false), (false, true)] {
        let opts = StepOptions {
            nal_weight: 0.5,
            in_batch_negatives: in_batch,
            also_in_batch: also,
            dropout: false,
            step_seed: 3,
        };
        check_network_with(tiny_cfg(true, 0.0), opts, 15, 3);
    }
}

#[test]
fn network_gradients_match_finite_differences_with_nal_at_every_position() {
    for (in_batch, dropout) in [(true, 0.0), (false, 0.0), (false, 0.3)] {
        let opts = StepOptions {
            nal_weight: 0.5,
            in_batch_negatives: in_batch,
            also_in_batch: false,
            dropout: dropout > 0.0,
            step_seed: 7,
        };
        let cfg = NetConfig {
            nal_every_position: true,
            ..tiny_cfg(true, dropout)
        };
        check_network_with(cfg, opts, 16, 2);
    }
}

#[test]
fn nal_at_every_position_counts_a_term_per_unmasked_target() {
    let cfg = NetConfig {
        nal_every_position: true,
        ..tiny_cfg(true, 0.0)
    };
    let (net, params) = Net::new(cfg.clone(), 3).unwrap();
    let batch = random_batch_with(&cfg, 5, 4, 2);
    let s = cfg.v1.seq_len;
    let want = batch.nal_pos.iter().filter(|&&t| t != NO_ITEM).count()
        + (0..5 * s)
            .filter(|&k| k % s != 0 && !batch.seq_masked[k] && batch.nal_seq[k] != NO_ITEM)
            .count();
    let mut g = vec![0.0; params.len()];
    let opts = StepOptions {
        nal_weight: 0.5,
        in_batch_negatives: false,
        also_in_batch: false,
        dropout: false,
        step_seed: 1,
    };
    let st = net
        .forward_backward(
            &params,
            &batch,
            0..5,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap();
    assert_eq!(st.nal_targets, want);
    assert!(want > 5, "too few targets to test: {want}");
    // Without the flag only the newest rows' targets count.
    let (net1, params1) = Net::new(tiny_cfg(true, 0.0), 3).unwrap();
    let st1 = net1
        .forward_backward(
            &params1,
            &batch,
            0..5,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap();
    assert_eq!(
        st1.nal_targets,
        batch.nal_pos.iter().filter(|&&t| t != NO_ITEM).count()
    );
}

#[test]
fn network_gradients_match_finite_differences_with_dropout() {
    let opts = StepOptions {
        nal_weight: 0.5,
        in_batch_negatives: false,
        also_in_batch: false,
        dropout: true,
        step_seed: 99,
    };
    check_network(tiny_cfg(true, 0.3), opts, 13);
}

#[test]
fn baseline_gradients_match_finite_differences() {
    let cfg = NetConfig {
        use_sequence: false,
        ..tiny_cfg(false, 0.0)
    };
    let (_, params) = Net::new(cfg.clone(), 1).unwrap();
    assert!(params.specs().iter().all(|s| !s.name.starts_with("v1.")));
    let opts = StepOptions {
        nal_weight: 0.0,
        ..StepOptions::default()
    };
    check_network(cfg, opts, 14);
}

#[test]
fn range_split_gradients_sum_to_the_full_batch() {
    for (in_batch, dropout) in [(false, 0.0), (true, 0.25)] {
        let cfg = tiny_cfg(true, dropout);
        let (net, params) = Net::new(cfg.clone(), 5).unwrap();
        let batch = random_batch(&cfg, 45, 6);
        let opts = StepOptions {
            nal_weight: 0.3,
            in_batch_negatives: in_batch,
            also_in_batch: false,
            dropout: true,
            step_seed: 17,
        };
        let mut ws = Workspace::default();
        let mut full = vec![0.0; params.len()];
        let st = net
            .forward_backward(&params, &batch, 0..45, &opts, &mut full, &mut ws)
            .unwrap();
        let mut sum = vec![0.0; params.len()];
        let mut total = LossStats::default();
        for r in [0..5, 5..33, 33..45] {
            let mut g = vec![0.0; params.len()];
            total.add(
                &net.forward_backward(&params, &batch, r, &opts, &mut g, &mut ws)
                    .unwrap(),
            );
            sum.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        assert_eq!(total.examples, 45);
        assert_eq!(total.nal_targets, st.nal_targets);
        assert!(
            (total.loss - st.loss).abs() < 1e-5,
            "{} vs {}",
            total.loss,
            st.loss
        );
        let worst = full
            .iter()
            .zip(&sum)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "split gradients differ by {worst}");
    }
}

/// A request for the serving model and the same request as a training batch.
fn parity_case(cfg: &NetConfig, params: &Params, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = params.to_ranking_model(cfg).unwrap();
    let di = cfg.v1.item_emb_dim;
    let s = cfg.v1.seq_len;
    let items = params.get(ITEMS).unwrap();
    let n = s - 1; // one padded tail position
    let vocab = &cfg.v1.action_vocab;
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut rows = Vec::new();
    for p in 0..n {
        let pad = p > 0 && rng.random_bool(0.2);
        ids.push(if pad {
            -1
        } else {
            vocab[rng.random_range(0..vocab.len())]
        });
        // One action in the future (masked at inference).
        times.push(if p == 2 { 2_000 } else { 1_000 - p as i64 });
        rows.push(rng.random_range(0..cfg.item_rows as u32));
    }
    let emb: Vec<f32> = rows
        .iter()
        .flat_map(|&r| items[r as usize * di..(r as usize + 1) * di].to_vec())
        .collect();
    let b = 5;
    let cands: Vec<u32> = (0..b)
        .map(|_| rng.random_range(0..cfg.item_rows as u32))
        .collect();
    let cand_emb: Vec<f32> = cands
        .iter()
        .flat_map(|&r| items[r as usize * di..(r as usize + 1) * di].to_vec())
        .collect();
    let user: Vec<f32> = (0..cfg.heads.user_emb_dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let req = V1Request {
        action_types: &ids,
        item_embeddings: &emb,
        action_times_ms: &times,
        request_time_ms: 1_500,
        candidates: &cand_emb,
    };
    let h = cfg.heads.heads.len();
    let mut want = vec![0.0; b * h];
    let user_opt = (!user.is_empty()).then_some(user.as_slice());
    model.score(&req, user_opt, None, &mut want).unwrap();

    let mut batch = Batch {
        len: b,
        seq_len: s,
        ..Batch::default()
    };
    for &c in &cands {
        for p in 0..s {
            let (row, masked, item) = if p < n {
                let row = cfg.v1.action_row(ids[p]).map_or(0, |r| r as u32);
                let masked = p != 0 && (row == 0 || 1_500 - times[p] < 0);
                (row, masked, rows[p])
            } else {
                (0, true, 0)
            };
            batch.seq_actions.push(row);
            batch.seq_masked.push(masked);
            batch.seq_items.push(item);
        }
        batch.cand_items.push(c);
        batch.user_features.extend_from_slice(&user);
    }
    let (net, _) = Net::new(cfg.clone(), 0).unwrap();
    let mut got = vec![0.0; b * h];
    net.predict(params, &batch, 0..b, &mut got).unwrap();
    for (i, (a, w)) in got.iter().zip(&want).enumerate() {
        assert!((a - w).abs() < 1e-4, "logit {i}: training {a}, serving {w}");
    }
}

#[test]
fn predict_matches_the_serving_model() {
    let cfg = tiny_cfg(true, 0.1);
    let (_, params) = Net::new(cfg.clone(), 21).unwrap();
    parity_case(&cfg, &params, 1);
    // A wider model, one layer, no user features, K = all positions.
    let cfg = NetConfig {
        v1: V1Config {
            seq_len: 12,
            latest_n_emb: 0,
            action_emb_dim: 8,
            item_emb_dim: 8,
            num_layer: 1,
            nhead: 4,
            dim_feedforward: 16,
            ..V1Config::default()
        },
        heads: HeadsConfig {
            mlp_hidden: vec![16, 8],
            cross_layers: 2,
            ..HeadsConfig::default()
        },
        item_rows: 40,
        ..NetConfig::default()
    };
    let (_, mut params) = Net::new(cfg.clone(), 22).unwrap();
    // Non-zero biases and LayerNorm affines, so every parameter matters.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for s in params.specs().to_vec() {
        if s.name.ends_with("bias") || s.name.contains("norm") {
            for v in &mut params.data_mut()[s.range()] {
                *v += rng.random_range(-0.3..0.3);
            }
        }
    }
    parity_case(&cfg, &params, 2);
    // Without early fusion and without the max-pool part.
    let cfg = NetConfig {
        v1: V1Config {
            concat_candidate_emb: false,
            concat_max_pool: false,
            ..tiny_cfg(false, 0.0).v1
        },
        ..tiny_cfg(false, 0.0)
    };
    let (_, params) = Net::new(cfg.clone(), 23).unwrap();
    parity_case(&cfg, &params, 3);
}

#[test]
fn params_round_trip_through_tensor_maps_and_the_serving_model() {
    let cfg = tiny_cfg(true, 0.0);
    let (_, params) = Net::new(cfg.clone(), 8).unwrap();
    // Initialised exactly like the serving model's `new_random`.
    let fresh = RankingModel::new_random(cfg.v1.clone(), cfg.heads.clone(), 8)
        .unwrap()
        .to_tensors()
        .unwrap();
    for (name, t) in &fresh.tensors {
        let transact_model::weights::Tensor::F32 { data, .. } = t else {
            panic!("{name} is not f32");
        };
        assert_eq!(params.get(name).unwrap(), data.as_slice(), "{name}");
    }
    let back = Params::from_tensor_map(&cfg, &params.to_tensor_map()).unwrap();
    assert_eq!(back, params);
    let model = params.to_ranking_model(&cfg).unwrap();
    let items = params.get(ITEMS).unwrap();
    let again = Params::from_ranking_model(&cfg, &model, items, 8).unwrap();
    assert_eq!(again, params);
    // The serving model's own tensors are exactly ours.
    let served = model.to_tensors().unwrap();
    for (name, t) in &served.tensors {
        let transact_model::weights::Tensor::F32 { data, .. } = t else {
            panic!("{name} is not f32");
        };
        assert_eq!(params.get(name).unwrap(), data.as_slice(), "{name}");
    }
    assert_eq!(
        served.tensors.len() + 2,
        params.specs().len(),
        "only items.weight and nal.proj.weight are extra"
    );
    assert!(params.decay_ranges().len() > 4);
    assert!(Params::from_tensor_map(&tiny_cfg(false, 0.0), &TensorMap::new()).is_err());
}

#[test]
fn sgd_overfits_a_small_batch() {
    let cfg = tiny_cfg(true, 0.0);
    let (net, mut params) = Net::new(cfg.clone(), 31).unwrap();
    let batch = random_batch(&cfg, 16, 32);
    let opts = StepOptions {
        nal_weight: 0.1,
        in_batch_negatives: false,
        also_in_batch: false,
        dropout: false,
        step_seed: 0,
    };
    let mut ws = Workspace::default();
    let mut grads = vec![0.0; params.len()];
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..400 {
        grads.fill(0.0);
        let st = net
            .forward_backward(&params, &batch, 0..batch.len, &opts, &mut grads, &mut ws)
            .unwrap();
        first.get_or_insert(st.bce);
        last = st.bce;
        for (p, g) in params.data_mut().iter_mut().zip(&grads) {
            *p -= 0.1 * g;
        }
    }
    let first = first.unwrap_or(0.0);
    assert!(last < first / 20.0, "BCE went from {first} to {last}");
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let cfg = tiny_cfg(true, 0.0);
    let (net, params) = Net::new(cfg.clone(), 1).unwrap();
    let good = random_batch(&cfg, 4, 2);
    let opts = StepOptions::default();
    let run = |b: &Batch, r: Range<usize>| {
        let mut g = vec![0.0; params.len()];
        net.forward_backward(&params, b, r, &opts, &mut g, &mut Workspace::default())
    };
    assert!(run(&good, 0..4).is_ok());
    assert!(run(&good, 2..6).is_err());
    let mut cases: Vec<(&str, Batch)> = Vec::new();
    let mut b = good.clone();
    b.seq_items.pop();
    cases.push(("short seq_items", b));
    let mut b = good.clone();
    b.seq_masked[4] = true;
    cases.push(("masked position 0", b));
    let mut b = good.clone();
    b.cand_items[1] = 12;
    cases.push(("candidate row out of range", b));
    let mut b = good.clone();
    b.seq_masked[1] = false;
    b.seq_items[1] = 99;
    cases.push(("sequence row out of range", b));
    let mut b = good.clone();
    b.seq_masked[2] = false;
    b.seq_actions[2] = 7;
    cases.push(("action row out of range", b));
    let mut b = good.clone();
    b.labels.pop();
    cases.push(("short labels", b));
    let mut b = good.clone();
    b.weights[0] = f32::NAN;
    cases.push(("NaN weight", b));
    let mut b = good.clone();
    b.nal_pos[0] = 50;
    cases.push(("NAL row out of range", b));
    let mut b = good.clone();
    b.seq_len = 5;
    cases.push(("wrong seq_len", b));
    let mut b = good.clone();
    b.user_features.push(0.0);
    cases.push(("long user_features", b));
    for (what, b) in cases {
        let e = run(&b, 0..4);
        assert!(matches!(e, Err(TrainError::Batch(_))), "{what}: {e:?}");
    }
    let mut g = vec![0.0; 3];
    assert!(matches!(
        net.forward_backward(
            &params,
            &good,
            0..4,
            &opts,
            &mut g,
            &mut Workspace::default()
        ),
        Err(TrainError::Params(_))
    ));
    let bad_cfg = NetConfig {
        use_sequence: false,
        ..tiny_cfg(true, 0.0)
    };
    assert!(Net::new(bad_cfg, 0).is_err());
}

/// A tiny V2 network: 4-wide items (d = 8), 6 token slots, 3 action types,
/// 2 surfaces.
fn tiny_v2_cfg(nal: bool) -> NetConfig {
    let mut cfg = tiny_cfg(nal, 0.0);
    cfg.v2 = Some(V2Config {
        seq_len: 6,
        item_emb_dim: 4,
        num_action_types: 3,
        num_surfaces: 2,
        num_layer: 2,
        dim_feedforward: 8,
        latest_n_emb: 2,
        ..V2Config::default()
    });
    cfg
}

/// [`random_batch`] plus random V2 tokens: lengths 0..=S (an empty row
/// included), multi-hot masks, surfaces, token and candidate embeddings.
fn random_v2_batch(cfg: &NetConfig, b: usize, seed: u64) -> Batch {
    let v2 = cfg.v2.as_ref().unwrap();
    let mut batch = random_batch(cfg, b, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x2222);
    let (s, di) = (v2.seq_len, v2.item_emb_dim);
    batch.v2_seq = s;
    batch.v2_lens = (0..b)
        .map(|e| if e == 1 { 0 } else { rng.random_range(1..=s) })
        .collect();
    batch.v2_items = (0..b * s * di)
        .map(|_| rng.random_range(-0.6..0.6))
        .collect();
    batch.v2_masks = (0..b * s)
        .map(|_| rng.random_range(0..1u32 << v2.num_action_types))
        .collect();
    batch.v2_surfaces = (0..b * s)
        .map(|_| rng.random_range(0..v2.num_surfaces as u16))
        .collect();
    batch.v2_cand = (0..b * di).map(|_| rng.random_range(-0.6..0.6)).collect();
    if cfg.v2_item_tokens {
        let rows = cfg.item_rows as u32;
        batch.v2_rows = (0..b * s).map(|_| rng.random_range(0..rows)).collect();
    }
    // Padded slots hold zeros, as the featurizer writes them.
    for (e, &len) in batch.v2_lens.iter().enumerate() {
        for t in len..s {
            batch.v2_items[(e * s + t) * di..(e * s + t + 1) * di].fill(0.0);
            batch.v2_masks[e * s + t] = 0;
            batch.v2_surfaces[e * s + t] = 0;
        }
    }
    batch
}

#[test]
fn v2_network_gradients_match_finite_differences() {
    check_v2_network(tiny_v2_cfg(true), 5);
    let mut cfg = tiny_v2_cfg(true);
    cfg.v2_item_tokens = true;
    check_v2_network(cfg, SEED_ITEM_TOKENS);
}

/// [`random_v2_batch`] with per-slot NAL targets and negatives
/// (`nal_seq`, `nal_seq_neg` are `B × v2_seq` then).
fn random_v2_batch_every(cfg: &NetConfig, b: usize, seed: u64) -> Batch {
    let mut batch = random_v2_batch(cfg, b, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3333);
    let rows = cfg.item_rows as u32;
    let (s, k) = (batch.v2_seq, batch.nal_negatives);
    let mut item = |p: f64| {
        if rng.random_bool(p) {
            rng.random_range(0..rows)
        } else {
            NO_ITEM
        }
    };
    batch.nal_seq = (0..b * s).map(|_| item(0.6)).collect();
    batch.nal_seq_neg = (0..b * s * k).map(|_| item(0.8)).collect();
    batch
}

#[test]
fn v2_network_gradients_match_finite_differences_with_nal_at_every_position() {
    for (in_batch, item_tokens) in [(false, false), (true, true)] {
        let mut cfg = tiny_v2_cfg(true);
        cfg.nal_every_position = true;
        cfg.v2_item_tokens = item_tokens;
        let seed = if item_tokens { SEED_ITEM_TOKENS } else { 5 };
        let batch = random_v2_batch_every(&cfg, 6, seed + 1);
        let opts = StepOptions {
            nal_weight: 0.5,
            in_batch_negatives: in_batch,
            ..StepOptions::default()
        };
        check_v2_network_on(cfg, seed, &batch, &opts);
    }
}

#[test]
fn v2_nal_at_every_position_counts_the_realtime_slots_with_a_target() {
    let mut cfg = tiny_v2_cfg(true);
    cfg.nal_every_position = true;
    let (net, params) = Net::new(cfg.clone(), 3).unwrap();
    let batch = random_v2_batch_every(&cfg, 6, 4);
    let s = batch.v2_seq;
    // Slots before each row's newest with a target; the newest row's own
    // targets are `nal_pos`.
    let inner: usize = (0..6)
        .map(|e| {
            (0..batch.v2_lens[e].saturating_sub(1))
                .filter(|&t| batch.nal_seq[e * s + t] != NO_ITEM)
                .count()
        })
        .sum();
    let newest = batch.nal_pos.iter().filter(|&&t| t != NO_ITEM).count();
    assert!(inner > 3, "too few inner targets to test: {inner}");
    let opts = StepOptions {
        nal_weight: 0.5,
        in_batch_negatives: false,
        ..StepOptions::default()
    };
    let mut g = vec![0.0; params.len()];
    let st = net
        .forward_backward(
            &params,
            &batch,
            0..6,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap();
    assert_eq!(st.nal_targets, newest + inner);
    // Chunked the same: the split's counts add up.
    let (a, b) = (
        net.forward_backward(
            &params,
            &batch,
            0..2,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap(),
        net.forward_backward(
            &params,
            &batch,
            2..6,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap(),
    );
    assert_eq!(a.nal_targets + b.nal_targets, newest + inner);
    // Without the flag only the newest rows' targets count.
    cfg.nal_every_position = false;
    let (net1, params1) = Net::new(cfg, 3).unwrap();
    let st1 = net1
        .forward_backward(
            &params1,
            &batch,
            0..6,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .unwrap();
    assert_eq!(st1.nal_targets, newest);
    // A short per-slot target list is a named error, not a panic.
    let mut short = batch.clone();
    short.nal_seq.pop();
    let e = net
        .forward_backward(
            &params,
            &short,
            0..6,
            &opts,
            &mut g,
            &mut Workspace::default(),
        )
        .expect_err("short nal_seq")
        .to_string();
    assert!(e.contains("nal_seq"), "{e}");
}

/// A seed whose sampled item-table coordinates sit off the max-pool's kinks.
const SEED_ITEM_TOKENS: u64 = 11;

fn check_v2_network(cfg: NetConfig, seed: u64) {
    let batch = random_v2_batch(&cfg, 6, seed + 1);
    let opts = StepOptions {
        nal_weight: 0.5,
        ..StepOptions::default()
    };
    check_v2_network_on(cfg, seed, &batch, &opts);
}

fn check_v2_network_on(cfg: NetConfig, seed: u64, batch: &Batch, opts: &StepOptions) {
    let (net, mut params) = Net::new(cfg.clone(), seed).unwrap();
    let mut grads = vec![0.0; params.len()];
    net.forward_backward(
        &params,
        batch,
        0..6,
        opts,
        &mut grads,
        &mut Workspace::default(),
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 2);
    let specs = params.specs().to_vec();
    for s in &specs {
        let idx: Vec<usize> = (0..6)
            .map(|_| s.offset + rng.random_range(0..s.len))
            .collect();
        let base = params.clone();
        check_gradient(
            &s.name,
            params.data_mut(),
            &grads,
            Some(&idx),
            Tolerance::default(),
            |x| {
                let mut q = base.clone();
                q.data_mut().copy_from_slice(x);
                loss_of(&net, &q, batch, opts)
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if s.trainable {
            let g = params.grad(&grads, &s.name).unwrap();
            assert!(
                g.iter().any(|&v| v != 0.0),
                "no gradient reaches `{}`",
                s.name
            );
        }
    }
    assert!(specs.iter().any(|s| s.name == "v2.position_emb"));
    assert!(!specs.iter().any(|s| s.name.starts_with("v1.")));
}

#[test]
fn v2_predict_matches_the_serving_model() {
    v2_parity(tiny_v2_cfg(false));
    let mut cfg = tiny_v2_cfg(false);
    cfg.v2_item_tokens = true;
    v2_parity(cfg);
}

fn v2_parity(cfg: NetConfig) {
    let (net, params) = Net::new(cfg.clone(), 9).unwrap();
    let b = 5;
    let batch = random_v2_batch(&cfg, b, 10);
    let model = params.to_ranking_model(&cfg).unwrap();
    assert!(model.v2().is_some());
    let v2 = cfg.v2.as_ref().unwrap();
    let di = v2.item_emb_dim;
    let items = params.get(ITEMS).unwrap();
    let h = cfg.heads.heads.len();
    let u = cfg.heads.user_emb_dim;
    let mut got = vec![0.0; b * h];
    net.predict(&params, &batch, 0..b, &mut got).unwrap();
    // Serving scores one request at a time; each example is its own here.
    for e in 0..b {
        let s = batch.v2_seq;
        let c = batch.cand_items[e] as usize;
        // With item-table tokens, serving gathers the rows the batch names.
        let (tokens, cand): (Vec<f32>, Vec<f32>) = if cfg.v2_item_tokens {
            let mut t = vec![0.0; s * di];
            for slot in 0..batch.v2_lens[e] {
                let r = batch.v2_rows[e * s + slot] as usize;
                t[slot * di..(slot + 1) * di].copy_from_slice(&items[r * di..(r + 1) * di]);
            }
            (t, items[c * di..(c + 1) * di].to_vec())
        } else {
            (
                batch.v2_items[e * s * di..(e + 1) * s * di].to_vec(),
                batch.v2_cand[e * di..(e + 1) * di].to_vec(),
            )
        };
        let req = V2Request {
            batch: 1,
            seq: s,
            lens: &batch.v2_lens[e..e + 1],
            item_embeddings: &tokens,
            action_masks: &batch.v2_masks[e * s..(e + 1) * s],
            surfaces: &batch.v2_surfaces[e * s..(e + 1) * s],
            candidates: &cand,
        };
        let mut want = vec![0.0; h];
        model
            .score_v2(
                &req,
                &items[c * di..(c + 1) * di],
                Some(&batch.user_features[e * u..(e + 1) * u]),
                None,
                &mut want,
            )
            .unwrap();
        for (k, (a, w)) in got[e * h..(e + 1) * h].iter().zip(&want).enumerate() {
            assert!(
                (a - w).abs() < 1e-4,
                "example {e} head {k}: training {a}, serving {w}"
            );
        }
    }
    // The serving model round-trips into the same parameters.
    let back = Params::from_ranking_model(&cfg, &model, items, 9).unwrap();
    assert_eq!(back.data(), params.data());
}

#[test]
fn v2_batches_with_bad_tokens_are_errors() {
    let cfg = tiny_v2_cfg(false);
    let (net, params) = Net::new(cfg.clone(), 1).unwrap();
    let mut out = vec![0.0; 2 * 3];
    let good = random_v2_batch(&cfg, 2, 3);
    net.predict(&params, &good, 0..2, &mut out).unwrap();
    let mut b = good.clone();
    b.v2_masks[0] = 1 << 3;
    let e = net
        .predict(&params, &b, 0..2, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("action mask"), "{e}");
    let mut b = good.clone();
    b.v2_surfaces[0] = 2;
    let e = net
        .predict(&params, &b, 0..2, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("surface"), "{e}");
    let mut b = good;
    b.v2_items.pop();
    let e = net
        .predict(&params, &b, 0..2, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("v2_items"), "{e}");
}
