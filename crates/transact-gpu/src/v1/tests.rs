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

use super::fused_fits;
use crate::{GpuContext, GpuError, GpuRankingModel, GpuTransActV1, Precision, Variant};

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

/// What the CPU model computes for a case: encoder output and logits.
struct Cpu {
    model: RankingModel,
    data: Data,
    enc: Vec<f32>,
    logits: Vec<f32>,
}

fn cpu(case: &Case) -> Cpu {
    let model = model(case);
    let data = Data::new(case);
    let req = data.request();
    let mut enc = vec![0.0; case.batch * model.v1().expect("v1").output_dim()];
    model
        .v1()
        .expect("v1")
        .forward_request(&req, &mut enc)
        .unwrap();
    let (user, cx) = (Data::opt(&data.user), Data::opt(&data.context));
    let mut logits = vec![0.0; case.batch * model.heads().num_heads()];
    model.score(&req, user, cx, &mut logits).unwrap();
    Cpu {
        model,
        data,
        enc,
        logits,
    }
}

/// Runs `encode` and `score` on the GPU with `variant` and `precision`;
/// returns the largest relative errors against the CPU and the model (to
/// check which variant and precision ran).
fn gpu_errors(
    ctx: &Arc<GpuContext>,
    c: &Cpu,
    variant: Variant,
    precision: Precision,
) -> (f32, f32, GpuRankingModel) {
    let gpu = GpuRankingModel::with_options(ctx.clone(), &c.model, variant, precision).unwrap();
    let req = c.data.request();
    let e_enc = max_rel_err(&gpu.encode(&req).unwrap(), &c.enc);
    let (user, cx) = (Data::opt(&c.data.user), Data::opt(&c.data.context));
    let e_score = max_rel_err(&gpu.score(&req, user, cx).unwrap(), &c.logits);
    (e_enc, e_score, gpu)
}

/// Every variant and precision with its tolerance (relative, against the
/// CPU): 1e-4 with f32 storage, 1e-2 with f16.
const RUNS: [(Variant, Precision, f32); 4] = [
    (Variant::Unfused, Precision::F32, 1e-4),
    (Variant::Fused, Precision::F32, 1e-4),
    (Variant::Unfused, Precision::F16, 1e-2),
    (Variant::Fused, Precision::F16, 1e-2),
];

/// Runs `case` in every variant and precision; checks the errors and that
/// what was asked for ran (fused wherever [`fused_fits`], f16 wherever
/// the device has it). Returns a description of the first failure.
fn check_all_runs(ctx: &Arc<GpuContext>, case: &Case) -> Result<(), String> {
    let c = cpu(case);
    let cfg = &case.cfg;
    let fits = fused_fits(cfg.d_model(), cfg.dim_feedforward, cfg.nhead, ctx.limits());
    for (variant, precision, tol) in RUNS {
        let (e, s, gpu) = gpu_errors(ctx, &c, variant, precision);
        let want_v = if fits { variant } else { Variant::Unfused };
        let want_p = if ctx.has_f16() {
            precision
        } else {
            Precision::F32
        };
        let ran = (gpu.variant(), gpu.precision());
        if ran != (want_v, want_p) {
            return Err(format!(
                "asked {variant:?} {precision:?}, ran {ran:?} for {case:?}"
            ));
        }
        if !(e < tol && s < tol) {
            return Err(format!(
                "{variant:?} {precision:?}: encode error {e}, score error {s} (tolerance {tol}) for {case:?}"
            ));
        }
    }
    Ok(())
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

    /// Random shapes (d = 12 … 24 with 1, 2 or 4 heads, so head widths of
    /// 3 … 24, all in the fused kernel's range), masks and weights: every
    /// variant and precision against the CPU.
    #[test]
    fn encode_and_score_match_the_cpu(case in case_strategy()) {
        let Some(ctx) = test_context() else { return Ok(()); };
        let cfg = &case.cfg;
        prop_assert!(fused_fits(cfg.d_model(), cfg.dim_feedforward, cfg.nhead, ctx.limits()));
        if let Err(e) = check_all_runs(&ctx, &case) {
            prop_assert!(false, "{}", e);
        }
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
    // 70 rows: more than one workgroup of the unfused attention per
    // sequence; 300: two fused workgroups (256 rows each), the second
    // partly dead.
    for n in [70, 300] {
        let mut c = base.clone();
        c.cfg.seq_len = n;
        c.n = n;
        c.future = 0.1;
        c.padding = 0.05;
        cases.push(c);
    }
    // B = 1 and S = 1.
    let mut c = base.clone();
    c.batch = 1;
    c.cfg.seq_len = 1;
    c.n = 1;
    cases.push(c);
    // Widths that are not multiples of 4: d = 11 (one head), d = 14 (two
    // of width 7), d = 15 (three of width 5).
    for (da, di, h) in [(3, 4, 1), (4, 5, 2), (5, 5, 3)] {
        let mut c = base.clone();
        c.cfg.action_emb_dim = da;
        c.cfg.item_emb_dim = di;
        c.cfg.nhead = h;
        cases.push(c);
    }
    // One head and four (head width 3: heads start inside a vec4); four
    // heads without fusion or pool.
    for h in [1, 4] {
        let mut c = base.clone();
        c.cfg.nhead = h;
        cases.push(c.clone());
        c.cfg.concat_candidate_emb = false;
        c.cfg.concat_max_pool = false;
        c.batch = 1;
        cases.push(c);
    }
    for case in &cases {
        if let Err(e) = check_all_runs(&ctx, case) {
            panic!("{e}");
        }
    }
}

/// The reference width d = 96 (S = 100, K = 10, h = 2, L = 2), B = 2,
/// every variant and precision.
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
        batch: 2,
        n: 100,
        seed: 5,
        future: 0.1,
        padding: 0.1,
    };
    let cfg = &case.cfg;
    assert!(fused_fits(
        cfg.d_model(),
        cfg.dim_feedforward,
        cfg.nhead,
        ctx.limits()
    ));
    let t0 = std::time::Instant::now();
    if let Err(e) = check_all_runs(&ctx, &case) {
        panic!("{e}");
    }
    eprintln!(
        "d = 96, S = 100, B = 2: encode + score in 4 variants (GPU) and on the CPU in {:?}",
        t0.elapsed()
    );
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
        let mut out = vec![0.0; 64 * m.v1().expect("v1").output_dim()];
        let b = r.candidates.len() / 4;
        assert!(
            m.v1()
                .expect("v1")
                .forward_request(&r, &mut out[..b * m.v1().expect("v1").output_dim()])
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
    let d = Data::new(&case);
    let req = d.request();
    let (user, cx) = (Some(d.user.as_slice()), Some(d.context.as_slice()));
    for (variant, precision, _) in RUNS {
        let gpu = GpuRankingModel::with_options(ctx.clone(), &m, variant, precision).unwrap();
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
            "{variant:?} {precision:?}: buffers were created in steady state"
        );
    }
}

/// Dispatches `record` issues for `case` with `variant` (f32).
fn dispatches(ctx: &Arc<GpuContext>, m: &RankingModel, case: &Case, variant: Variant) -> usize {
    let gpu =
        GpuTransActV1::with_options(ctx.clone(), m.v1().expect("v1"), variant, Precision::F32)
            .unwrap();
    assert_eq!(gpu.variant(), variant);
    let data = Data::new(case);
    let plan = gpu.plan(&data.request()).unwrap();
    assert!(
        plan.batch * plan.se > super::rows::SMALL_M,
        "the case must take the GEMM path"
    );
    let od = gpu.output_dim();
    let mut rq = ctx.request("count");
    let input = ctx.upload(&plan.words).unwrap();
    let out = ctx.storage((plan.batch * od * 4) as u64).unwrap();
    let mut held = Vec::new();
    gpu.record(
        &mut rq,
        &plan,
        &input,
        super::OutTarget {
            buf: &out,
            ld: od,
            off: 0,
        },
        &mut held,
    )
    .unwrap();
    rq.len()
}

/// The fused variant replaces the nine dispatches after each layer's input
/// projection (attention, two residual + bias writes, three GEMMs, a bias
/// write, two LayerNorms) by one, and saves one more per layer: it adds
/// the projection's bias itself (no bias write before the full-width
/// projection GEMM of the later layers) and, in the first layer with early
/// fusion, reads the user and candidate parts of the split projection
/// as they are (no dispatch adding them).
#[test]
fn fused_layers_take_one_dispatch_each() {
    let Some(ctx) = test_context() else { return };
    let case = small_case();
    assert!(case.cfg.concat_candidate_emb);
    let m = model(&case);
    let unfused = dispatches(&ctx, &m, &case, Variant::Unfused);
    let fused = dispatches(&ctx, &m, &case, Variant::Fused);
    assert_eq!(
        unfused - fused,
        9 * case.cfg.num_layer,
        "{unfused} vs {fused}"
    );
}

/// Workgroup sizes of the fused kernel: the smallest power of two from 8
/// to 64 invocations that covers a candidate's rows (four each).
#[test]
fn fused_workgroups_fit_the_sequence() {
    let lanes = |se| super::forward::fused_lanes(se);
    assert_eq!(
        [1, 32, 33, 64, 65, 100, 128, 129, 256, 257, 1000].map(lanes),
        [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64]
    );
}

/// Shapes the fused kernel does not take run unfused, and still match the
/// CPU; f16 is used exactly when the device has it.
#[test]
fn fused_falls_back_where_it_does_not_fit() {
    let Some(ctx) = test_context() else { return };
    let base = small_case();
    let mut cases = Vec::new();
    // d = 33 + 2·32 = 97: wider than 96.
    let mut c = base.clone();
    c.cfg.action_emb_dim = 33;
    c.cfg.item_emb_dim = 32;
    c.cfg.nhead = 1;
    cases.push(c);
    // 6 heads (d = 12): more than the fused kernel's 4.
    let mut c = base.clone();
    c.cfg.nhead = 6;
    cases.push(c);
    // d = 96 with FFN 64: the weights exceed 64 KiB.
    let mut c = base.clone();
    c.cfg.action_emb_dim = 32;
    c.cfg.item_emb_dim = 32;
    c.cfg.dim_feedforward = 64;
    cases.push(c);
    for case in &cases {
        let cfg = &case.cfg;
        assert!(!fused_fits(
            cfg.d_model(),
            cfg.dim_feedforward,
            cfg.nhead,
            ctx.limits()
        ));
        // check_all_runs asserts the fallback and the errors.
        if let Err(e) = check_all_runs(&ctx, case) {
            panic!("{e}");
        }
    }
    assert!(fused_fits(96, 33, 4, ctx.limits()));
    assert!(!fused_fits(96, 34, 2, ctx.limits()));
    assert!(!fused_fits(100, 8, 2, ctx.limits()));
    assert!(fused_fits(11, 12, 1, ctx.limits()));
}

/// `shaders/v1_block_fused.wgsl` is what `scripts/gen_v1_block_fused.py`
/// prints (skipped without `python3`, unless `CI=true`).
#[test]
fn generated_fused_shader_is_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = match std::process::Command::new("python3")
        .arg(root.join("scripts/gen_v1_block_fused.py"))
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3 is needed: {e}"
            );
            eprintln!("note: no python3 ({e}), test skipped");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated == super::V1_BLOCK_FUSED.source,
        "shaders/v1_block_fused.wgsl differs from the generator's output: run \
         python3 scripts/gen_v1_block_fused.py > shaders/v1_block_fused.wgsl"
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
