//! GPU V1 encoder and ranking heads against the CPU model.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_model::weights::Tensor;
use transact_model::{
    HeadsConfig, RankingHeads, RankingModel, TransActV1, V1Config, V1Request, VocabMode,
};

use crate::{GpuContext, GpuError, GpuRankingModel, GpuTransActV1};

/// The shared context; `None` (skip) without an adapter unless `CI=true`.
fn test_context() -> Option<Arc<GpuContext>> {
    match crate::testing::shared_context() {
        Ok(Some(ctx)) => Some(ctx),
        Ok(None) => {
            eprintln!("note: no GPU adapter, test skipped");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Largest `|a − b| / max(1, |b|)`.
fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_finite() && y.is_finite() {
                (x - y).abs() / y.abs().max(1.0)
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, f32::max)
}

/// Adds noise to every bias and LayerNorm parameter (random models start
/// with zeros and ones there), so that every term is exercised.
fn perturb(map: &mut transact_model::TensorMap, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, t) in map.tensors.iter_mut() {
        if let Tensor::F32 { data, .. } = t
            && (name.contains("bias") || name.contains("norm"))
        {
            data.iter_mut()
                .for_each(|v| *v += rng.random_range(-0.3..0.3));
        }
    }
}

const VOCAB: [i64; 5] = [3, 7, 11, 20, 42];

/// One random case.
#[derive(Clone, Debug)]
struct Case {
    cfg: V1Config,
    heads: HeadsConfig,
    batch: usize,
    n: usize,
    seed: u64,
    /// Probability of a future (masked) action.
    future: f64,
    /// Probability of a padding id.
    padding: f64,
}

fn model(case: &Case) -> RankingModel {
    let v1 = TransActV1::new_random(case.cfg.clone(), case.seed).unwrap();
    let mut map = v1.to_tensors();
    perturb(&mut map, case.seed ^ 1);
    let v1 = TransActV1::from_tensors(&map).unwrap();
    let input = case
        .heads
        .input_dim(case.cfg.output_dim(), case.cfg.item_emb_dim);
    let h = RankingHeads::new_random(case.heads.clone(), input, case.seed ^ 2).unwrap();
    let mut hm = transact_model::TensorMap::new();
    h.to_tensors("", &mut hm);
    perturb(&mut hm, case.seed ^ 3);
    let h = RankingHeads::from_tensors(&hm, "", case.heads.clone(), input).unwrap();
    RankingModel::new(v1, h).unwrap()
}

/// Request data for a case (owned).
struct Data {
    ids: Vec<i64>,
    items: Vec<f32>,
    times: Vec<i64>,
    cands: Vec<f32>,
    user: Vec<f32>,
    context: Vec<f32>,
}

impl Data {
    fn new(case: &Case) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(case.seed ^ 7);
        let di = case.cfg.item_emb_dim;
        let ids = (0..case.n)
            .map(|_| {
                if rng.random_bool(case.padding) {
                    -1
                } else if case.cfg.vocab_mode == VocabMode::Reference && rng.random_bool(0.15) {
                    // Unknown id: padding in the reference mode.
                    99
                } else {
                    VOCAB[rng.random_range(0..VOCAB.len())]
                }
            })
            .collect();
        let times = (0..case.n)
            .map(|_| {
                if rng.random_bool(case.future) {
                    rng.random_range(10_001..20_000)
                } else {
                    rng.random_range(0..=10_000)
                }
            })
            .collect();
        let mut vals =
            |k: usize| -> Vec<f32> { (0..k).map(|_| rng.random_range(-1.5..1.5)).collect() };
        Self {
            ids,
            items: vals(case.n * di),
            times,
            cands: vals(case.batch * di),
            user: vals(case.heads.user_emb_dim),
            context: vals(case.heads.context_dim),
        }
    }

    fn request(&self) -> V1Request<'_> {
        V1Request {
            action_types: &self.ids,
            item_embeddings: &self.items,
            action_times_ms: &self.times,
            request_time_ms: 10_000,
            candidates: &self.cands,
        }
    }

    fn opt(v: &[f32]) -> Option<&[f32]> {
        (!v.is_empty()).then_some(v)
    }
}

/// Runs `encode` and `score` on the GPU and the CPU; returns the largest
/// relative errors.
fn compare(ctx: &Arc<GpuContext>, case: &Case) -> (f32, f32) {
    let m = model(case);
    let data = Data::new(case);
    let req = data.request();
    let gpu = GpuRankingModel::new(ctx.clone(), &m).unwrap();
    let od = m.v1().output_dim();
    let mut want = vec![0.0; case.batch * od];
    m.v1().forward_request(&req, &mut want).unwrap();
    let got = gpu.encode(&req).unwrap();
    let e_enc = max_rel_err(&got, &want);

    let (user, cx) = (Data::opt(&data.user), Data::opt(&data.context));
    let mut want_l = vec![0.0; case.batch * m.heads().num_heads()];
    m.score(&req, user, cx, &mut want_l).unwrap();
    let got_l = gpu.score(&req, user, cx).unwrap();
    (e_enc, max_rel_err(&got_l, &want_l))
}

type Raw = (
    (usize, usize, usize),
    (usize, usize, bool, bool, bool),
    (usize, usize),
    (usize, bool, bool, u64),
    (f64, f64, usize),
);

fn build_case(raw: Raw) -> Case {
    let (
        (s, k, h),
        (b, l, reference, fuse, pool),
        (da, di),
        (cross, user, cx, seed),
        (fut, pad, n),
    ) = raw;
    let cfg = V1Config {
        seq_len: s,
        latest_n_emb: k,
        action_vocab: VOCAB.to_vec(),
        vocab_mode: if reference {
            VocabMode::Reference
        } else {
            VocabMode::Padded
        },
        action_emb_dim: da,
        item_emb_dim: di,
        num_layer: l,
        nhead: h,
        dim_feedforward: 12,
        concat_candidate_emb: fuse,
        concat_max_pool: pool,
        ..V1Config::default()
    };
    let heads = HeadsConfig {
        cross_layers: cross,
        mlp_hidden: vec![8],
        user_emb_dim: if user { 3 } else { 0 },
        context_dim: if cx { 2 } else { 0 },
        ..HeadsConfig::default()
    };
    Case {
        cfg,
        heads,
        batch: b,
        n: n.min(s),
        seed,
        future: fut,
        padding: pad,
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let sizes = (
        1usize..=24,
        0usize..=26,
        prop::sample::select(vec![1usize, 2, 4]),
    );
    let flags = (
        1usize..=6,
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    let widths = (
        prop::sample::select(vec![4usize, 8]),
        prop::sample::select(vec![4usize, 8]),
    );
    let heads = (0usize..=2, any::<bool>(), any::<bool>(), any::<u64>());
    let masks = (0.0f64..0.6, 0.0f64..0.4, 0usize..=24);
    (sizes, flags, widths, heads, masks).prop_map(build_case)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_and_score_match_the_cpu(case in case_strategy()) {
        let Some(ctx) = test_context() else { return Ok(()); };
        let (e_enc, e_score) = compare(&ctx, &case);
        prop_assert!(e_enc < 1e-4, "encode: relative error {e_enc} for {case:?}");
        prop_assert!(e_score < 1e-4, "score: relative error {e_score} for {case:?}");
    }
}

fn small_case() -> Case {
    Case {
        cfg: V1Config {
            seq_len: 9,
            latest_n_emb: 4,
            action_vocab: VOCAB.to_vec(),
            action_emb_dim: 4,
            item_emb_dim: 4,
            num_layer: 2,
            nhead: 2,
            dim_feedforward: 12,
            ..V1Config::default()
        },
        heads: HeadsConfig {
            mlp_hidden: vec![8],
            user_emb_dim: 3,
            context_dim: 2,
            ..HeadsConfig::default()
        },
        batch: 3,
        n: 7,
        seed: 11,
        future: 0.3,
        padding: 0.2,
    }
}

#[test]
fn fixed_corner_cases_match_the_cpu() {
    let Some(ctx) = test_context() else { return };
    let base = small_case();
    let mut cases = vec![base.clone()];
    // Every action but position 0 in the future: one packed row.
    cases.push(Case {
        future: 1.0,
        padding: 0.0,
        ..base.clone()
    });
    // No actions at all; K larger than S; both vocab modes; no fusion; no pool.
    cases.push(Case {
        n: 0,
        ..base.clone()
    });
    let mut c = base.clone();
    c.cfg.latest_n_emb = 20;
    c.cfg.vocab_mode = VocabMode::Reference;
    cases.push(c);
    let mut c = base.clone();
    c.cfg.concat_candidate_emb = false;
    c.cfg.concat_max_pool = false;
    c.cfg.latest_n_emb = 0;
    cases.push(c);
    // 70 rows: more than one attention workgroup per sequence.
    let mut c = base.clone();
    c.cfg.seq_len = 70;
    c.n = 70;
    c.future = 0.1;
    c.padding = 0.05;
    cases.push(c);
    for case in &cases {
        let (e, s) = compare(&ctx, case);
        assert!(e < 1e-4 && s < 1e-4, "errors {e} / {s} for {case:?}");
    }
}

/// The reference width d = 96 (S = 100, K = 10, h = 2, L = 2), B = 4.
#[test]
fn reference_width_matches_the_cpu() {
    let Some(ctx) = test_context() else { return };
    let case = Case {
        cfg: V1Config {
            action_vocab: VOCAB.to_vec(),
            ..V1Config::default()
        },
        heads: HeadsConfig {
            mlp_hidden: vec![32, 16],
            ..HeadsConfig::default()
        },
        batch: 4,
        n: 100,
        seed: 5,
        future: 0.1,
        padding: 0.1,
    };
    let t0 = std::time::Instant::now();
    let (e, s) = compare(&ctx, &case);
    eprintln!(
        "d = 96, S = 100, B = 4: encode + score (GPU and CPU) in {:?}",
        t0.elapsed()
    );
    assert!(e < 1e-4 && s < 1e-4, "errors {e} / {s}");
}

#[test]
fn bad_inputs_are_errors() {
    let Some(ctx) = test_context() else { return };
    let case = small_case();
    let m = model(&case);
    let gpu = GpuRankingModel::new(ctx.clone(), &m).unwrap();
    let d = Data::new(&case);
    let user = Some(d.user.as_slice());
    let cx = Some(d.context.as_slice());
    let ok = d.request();
    let bad = |r: V1Request<'_>| {
        let e = gpu.encode(&r).unwrap_err();
        assert!(matches!(e, GpuError::BadInput { .. }), "{e}");
        assert!(gpu.score(&r, user, cx).is_err());
        // The CPU rejects the same request.
        let mut out = vec![0.0; 64 * m.v1().output_dim()];
        let b = r.candidates.len() / 4;
        assert!(
            m.v1()
                .forward_request(&r, &mut out[..b * m.v1().output_dim()])
                .is_err()
        );
    };
    // B = 0, ragged candidates.
    bad(V1Request {
        candidates: &[],
        ..ok
    });
    bad(V1Request {
        candidates: &d.cands[..5],
        ..ok
    });
    // Lengths.
    bad(V1Request {
        item_embeddings: &d.items[1..],
        ..ok
    });
    bad(V1Request {
        action_times_ms: &d.times[1..],
        ..ok
    });
    let long_ids = vec![3i64; 10];
    let long_items = vec![0.0f32; 40];
    let long_times = vec![0i64; 10];
    bad(V1Request {
        action_types: &long_ids,
        item_embeddings: &long_items,
        action_times_ms: &long_times,
        ..ok
    });
    // NaN / infinity.
    let mut items = d.items.clone();
    items[5] = f32::NAN;
    bad(V1Request {
        item_embeddings: &items,
        ..ok
    });
    let mut cands = d.cands.clone();
    cands[2] = f32::INFINITY;
    bad(V1Request {
        candidates: &cands,
        ..ok
    });
    // Unknown id in the padded mode.
    let mut ids = d.ids.clone();
    ids[1] = 99;
    bad(V1Request {
        action_types: &ids,
        ..ok
    });
    // Heads features.
    assert!(gpu.score(&ok, None, cx).is_err());
    assert!(gpu.score(&ok, Some(&[0.0; 2]), cx).is_err());
    assert!(gpu.score(&ok, user, Some(&[f32::NAN, 0.0])).is_err());
    assert!(gpu.heads().forward(&[0.0; 5], 2).is_err());
    // The valid request still works afterwards.
    assert_eq!(gpu.score(&ok, user, cx).unwrap().len(), 3 * 3);
}

#[test]
fn heads_alone_match_the_cpu() {
    let Some(ctx) = test_context() else { return };
    let case = small_case();
    let m = model(&case);
    let gpu = crate::GpuRankingHeads::new(ctx, m.heads()).unwrap();
    let n = m.heads().input_dim();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Few rows (one thread per output) and many (tiled GEMM).
    for batch in [5usize, 20] {
        let f: Vec<f32> = (0..batch * n)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let mut want = vec![0.0; batch * 3];
        m.heads().forward(&f, batch, &mut want).unwrap();
        let got = gpu.forward(&f, batch).unwrap();
        assert!(max_rel_err(&got, &want) < 1e-4, "batch {batch}");
    }
    assert!(gpu.forward(&[], 0).unwrap().is_empty());
}

#[test]
fn steady_state_reuses_buffers() {
    if test_context().is_none() {
        return;
    }
    // A context of its own: other tests allocate on the shared one.
    let ctx = Arc::new(GpuContext::new_from_env().unwrap());
    let case = small_case();
    let m = model(&case);
    let gpu = GpuRankingModel::new(ctx.clone(), &m).unwrap();
    let d = Data::new(&case);
    let req = d.request();
    let (user, cx) = (Some(d.user.as_slice()), Some(d.context.as_slice()));
    let first = gpu.score(&req, user, cx).unwrap();
    gpu.encode(&req).unwrap();
    let created = ctx.buffers_created();
    for _ in 0..3 {
        assert_eq!(gpu.score(&req, user, cx).unwrap(), first);
        gpu.encode(&req).unwrap();
    }
    assert_eq!(
        ctx.buffers_created(),
        created,
        "buffers were created in steady state"
    );
}

#[test]
fn unsupported_head_width_is_an_error() {
    let Some(ctx) = test_context() else { return };
    let cfg = V1Config {
        action_emb_dim: 100,
        item_emb_dim: 20,
        nhead: 1,
        ..V1Config::default()
    };
    let m = TransActV1::new_random(cfg, 1).unwrap();
    assert!(matches!(
        GpuTransActV1::new(ctx, &m),
        Err(GpuError::Unsupported(_))
    ));
}

/// Wall times of `score` and `encode` at the reference width (run with
/// `cargo test --release -p transact-gpu --lib v1::tests::timing -- --ignored --nocapture`).
#[test]
#[ignore = "timing only"]
fn timing() {
    let Some(ctx) = test_context() else { return };
    for batch in [4usize, 32] {
        let case = Case {
            cfg: V1Config {
                action_vocab: VOCAB.to_vec(),
                ..V1Config::default()
            },
            heads: HeadsConfig::default(),
            batch,
            n: 100,
            seed: 5,
            future: 0.0,
            padding: 0.0,
        };
        let m = model(&case);
        let gpu = GpuRankingModel::new(ctx.clone(), &m).unwrap();
        let d = Data::new(&case);
        let req = d.request();
        gpu.score(&req, None, None).unwrap();
        let median = |f: &dyn Fn()| {
            let mut t: Vec<_> = (0..5)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    f();
                    t0.elapsed()
                })
                .collect();
            t.sort();
            t[2]
        };
        let s = median(&|| {
            gpu.score(&req, None, None).unwrap();
        });
        let e = median(&|| {
            gpu.encode(&req).unwrap();
        });
        let mut out = vec![0.0; batch * 3];
        let c = median(&|| {
            let mut o = out.clone();
            m.score(&req, None, None, &mut o).unwrap();
        });
        out.clear();
        eprintln!(
            "d = 96, S = 100, L = 2, B = {batch}: GPU score {s:?}, GPU encode {e:?}, CPU score {c:?} ({})",
            ctx.adapter_name()
        );
    }
}
