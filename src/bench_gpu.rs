//! The GPU benchmark cases, shared by `transact bench kernels` and the
//! criterion benches in `benches/gpu.rs`: the V1 shape (B, S = 100, d = 96,
//! L = 2, K = 10; encoder and full ranking score) and the V2 block shape
//! (B, S = 192, d = 64, FFN 32, L = 2, causal; unfused and fused, f32 and
//! f16 when the adapter has `SHADER_F16`), each with the CPU time of the
//! same work for reference.
//!
//! Each path is timed as a whole and per kernel: with
//! [`GpuContext::set_profiling`] every dispatch runs in its own compute pass
//! bracketed by timestamp queries (when the adapter has them; wall time of
//! the whole path otherwise). A GEMM case compares the naive kernel with
//! the tiled one on V1's input-projection shape, and the nearest-neighbour
//! case the fused selection kernel with the unfused path (int8 → f32, GEMM,
//! top-k) on the CPU case `nn-16k-x256-top96`'s data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use transact_gpu::kernels::gemm::{GemmOptions, GemmShape, record_gemm, record_gemm_naive};
use transact_gpu::kernels::select::{SelectInput, SelectOptions, select_nearest_timed};

use crate::bench::BATCH;
use crate::bench_v2::V2RankCase;
use transact_gpu::timing::Clock;
use transact_gpu::{GpuContext, GpuError, GpuRankingModel, GpuV2Blocks, Precision, Variant};
use transact_model::v2::{V2Block, blocks_forward};
use transact_model::{HeadsConfig, ModelError, RankingModel, V1Config, V1Request};

/// Error type of the GPU cases (model and device errors).
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Batch size from `TRANSACT_BENCH_BATCH`, default [`crate::bench::BATCH`].
pub fn batch_from_env() -> usize {
    std::env::var("TRANSACT_BENCH_BATCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&b: &usize| b > 0)
        .unwrap_or(crate::bench::BATCH)
}

/// The V1 shape: one user, full sequence, `batch` candidates; CPU model and
/// its GPU copy with the same weights.
pub struct V1GpuCase {
    batch: usize,
    cpu: RankingModel,
    /// Every encoder variant the device offers, labelled (`fused-f32`, ...).
    gpus: Vec<(String, GpuRankingModel)>,
    action_types: Vec<i64>,
    item_embeddings: Vec<f32>,
    times: Vec<i64>,
    candidates: Vec<f32>,
    encoded: Vec<f32>,
    logits: Vec<f32>,
}

impl V1GpuCase {
    /// Name used in reports.
    pub const NAME: &'static str = "v1-s100-d96";

    /// Builds the case with the reference defaults and random weights.
    pub fn new(ctx: Arc<GpuContext>, batch: usize) -> Result<Self, BenchError> {
        let cfg = V1Config::default();
        let heads = HeadsConfig::default();
        let n_heads = heads.heads.len();
        let cpu = RankingModel::new_random(cfg.clone(), heads, 3)?;
        let mut precisions = vec![Precision::F32];
        if ctx.has_f16() {
            precisions.push(Precision::F16);
        }
        let mut gpus: Vec<(String, GpuRankingModel)> = Vec::new();
        for p in precisions {
            for v in [Variant::Unfused, Variant::Fused] {
                let g = GpuRankingModel::with_options(ctx.clone(), &cpu, v, p)?;
                let label = format!("{:?}-{:?}", g.variant(), g.precision()).to_lowercase();
                if !gpus.iter().any(|(l, _)| *l == label) {
                    gpus.push((label, g));
                }
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (s, d) = (cfg.seq_len, cfg.item_emb_dim);
        Ok(Self {
            batch,
            action_types: (0..s).map(|_| rng.random_range(1..20)).collect(),
            item_embeddings: (0..s * d).map(|_| rng.random_range(-0.5..0.5)).collect(),
            times: (0..s as i64).map(|i| 1_000_000 - 1_000 * i).collect(),
            candidates: (0..batch * d)
                .map(|_| rng.random_range(-0.5..0.5))
                .collect(),
            encoded: vec![0.0; batch * cfg.output_dim()],
            logits: vec![0.0; batch * n_heads],
            cpu,
            gpus,
        })
    }

    /// Candidates per request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn req(&self) -> V1Request<'_> {
        V1Request {
            action_types: &self.action_types,
            item_embeddings: &self.item_embeddings,
            action_times_ms: &self.times,
            request_time_ms: 1_000_001,
            candidates: &self.candidates,
        }
    }

    /// Labels of the GPU variants (e.g. `fused-f32`), in index order.
    pub fn labels(&self) -> Vec<String> {
        self.gpus.iter().map(|(l, _)| l.clone()).collect()
    }

    /// Encoder of variant `i` on the request; returns its wall time.
    pub fn gpu_encode(&self, i: usize) -> Result<Duration, GpuError> {
        let g = self.variant(i)?;
        let t0 = Instant::now();
        g.encode(&self.req())?;
        Ok(t0.elapsed())
    }

    /// Full ranking score (encoder of variant `i` + heads); wall time.
    pub fn gpu_score(&self, i: usize) -> Result<Duration, GpuError> {
        let g = self.variant(i)?;
        let t0 = Instant::now();
        g.score(&self.req(), None, None)?;
        Ok(t0.elapsed())
    }

    fn variant(&self, i: usize) -> Result<&GpuRankingModel, GpuError> {
        self.gpus
            .get(i)
            .map(|(_, g)| g)
            .ok_or_else(|| GpuError::BadInput {
                name: "variant".into(),
                detail: format!("no V1 variant {i}"),
            })
    }

    /// The same encoding on the CPU.
    pub fn cpu_encode(&mut self) -> Result<(), ModelError> {
        let mut out = std::mem::take(&mut self.encoded);
        let r = match self.cpu.v1() {
            Some(v1) => v1.forward_request(&self.req(), &mut out),
            None => Err(ModelError::InvalidConfig(
                "the GPU benchmark model is V1".into(),
            )),
        };
        self.encoded = out;
        r
    }

    /// The same scoring on the CPU.
    pub fn cpu_score(&mut self) -> Result<(), ModelError> {
        let mut out = std::mem::take(&mut self.logits);
        let r = self.cpu.score(&self.req(), None, None, &mut out);
        self.logits = out;
        r
    }
}

/// The V2 block stack: `batch` candidates, S = 192, d = 64, FFN 32, L = 2,
/// causal, all tokens valid.
pub struct V2GpuCase {
    batch: usize,
    blocks: Vec<V2Block>,
    x: Vec<f32>,
    lens: Vec<usize>,
    variants: Vec<(String, GpuV2Blocks)>,
}

impl V2GpuCase {
    /// Name used in reports.
    pub const NAME: &'static str = "v2-s192-d64";
    /// Tokens per candidate.
    pub const SEQ: usize = 192;
    /// Model width.
    pub const D: usize = 64;

    /// Builds the case and every variant the device offers: unfused and
    /// fused in f32, and in f16 when the adapter has `SHADER_F16`.
    pub fn new(ctx: Arc<GpuContext>, batch: usize) -> Result<Self, BenchError> {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let blocks = (0..2)
            .map(|i| V2Block::new_random(Self::D, 32, 100 + i))
            .collect::<Result<Vec<_>, _>>()?;
        let x = (0..batch * Self::SEQ * Self::D)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut precisions = vec![Precision::F32];
        if ctx.has_f16() {
            precisions.push(Precision::F16);
        }
        let mut variants = Vec::new();
        for p in precisions {
            for v in [Variant::Unfused, Variant::Fused] {
                let g = GpuV2Blocks::new(ctx.clone(), &blocks, v, p)?;
                let label = format!("{:?}-{:?}", g.variant(), g.precision()).to_lowercase();
                if !variants.iter().any(|(l, _)| *l == label) {
                    variants.push((label, g));
                }
            }
        }
        Ok(Self {
            batch,
            blocks,
            x,
            lens: vec![Self::SEQ; batch],
            variants,
        })
    }

    /// Candidates per request.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Labels of the variants (e.g. `fused-f32`), in [`Self::gpu_run`] order.
    pub fn labels(&self) -> Vec<String> {
        self.variants.iter().map(|(l, _)| l.clone()).collect()
    }

    /// One forward of variant `i`; GPU time when the device has timestamp
    /// queries (with [`Clock::Gpu`]), wall time otherwise.
    pub fn gpu_run(&self, i: usize) -> Result<(Duration, Clock), GpuError> {
        let g = &self.variants[i].1;
        let r = g.forward_timed(&self.x, self.batch, Self::SEQ, &self.lens, true, 1e-5, true)?;
        Ok(match r.gpu_time {
            Some(t) => (t, Clock::Gpu),
            None => (r.wall_time, Clock::Wall),
        })
    }

    /// The same forward on the CPU (on a copy of the input, so every run
    /// does the same work).
    pub fn cpu_run(&self) -> Result<(), ModelError> {
        let mut x = self.x.clone();
        blocks_forward(
            &self.blocks,
            &mut x,
            self.batch,
            Self::SEQ,
            &self.lens,
            true,
            1e-5,
        )
    }
}

/// The GEMM of V1's input projection over every token of every candidate
/// (`M = B·S` rows, `N = 3d = 288`, `K = d = 96`, `B` transposed), on the
/// naive kernel (one invocation per output) and the tiled one.
pub struct GemmGpuCase {
    ctx: Arc<GpuContext>,
    shape: GemmShape,
    a: transact_gpu::PooledBuffer,
    b: transact_gpu::PooledBuffer,
    c: transact_gpu::PooledBuffer,
}

impl GemmGpuCase {
    /// Name used in reports.
    pub const NAME: &'static str = "gemm-qkv-s100-d96";

    /// Uploads random operands for `batch` candidates of 100 tokens.
    pub fn new(ctx: Arc<GpuContext>, batch: usize) -> Result<Self, BenchError> {
        let (m, n, k) = (batch * 100, 288, 96);
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (a, b) = (ctx.upload(&a)?, ctx.upload(&b)?);
        let c = ctx.storage((m * n * 4) as u64)?;
        Ok(Self {
            shape: GemmShape::dense(m, n, k, true),
            ctx,
            a,
            b,
            c,
        })
    }

    /// One product on the naive (`true`) or tiled kernel; wall time of the
    /// request.
    pub fn run(&self, naive: bool) -> Result<Duration, GpuError> {
        let o = GemmOptions {
            trans_b: true,
            ..GemmOptions::default()
        };
        let mut rq = self.ctx.request("gemm case");
        let record = if naive {
            record_gemm_naive
        } else {
            record_gemm
        };
        record(&self.ctx, &mut rq, self.shape, o, &self.a, &self.b, &self.c)?;
        rq.finish()
    }
}

/// TransAct V2's nearest-neighbour selection on the GPU: the CPU case
/// [`NnCase`](crate::bench_lifelong::NnCase)'s user (16,384 int8 tokens of
/// 32 codes) against `candidates` candidates, top 96, on the fused kernel
/// and on the unfused path; both checked against the CPU when built.
pub struct NnGpuCase {
    ctx: Arc<GpuContext>,
    cpu: crate::bench_lifelong::NnCase,
}

impl NnGpuCase {
    /// Name used in reports.
    pub const NAME: &'static str = "nn-16k-d32-top96";
    /// The paths, in the order of [`NnGpuCase::gpu_run`]'s index.
    pub const LABELS: [&'static str; 2] = ["fused", "unfused"];

    /// Builds the case and checks that both GPU paths select what the CPU
    /// selects.
    pub fn new(ctx: Arc<GpuContext>, candidates: usize) -> Result<Self, BenchError> {
        let mut cpu = crate::bench_lifelong::NnCase::with_candidates(candidates);
        cpu.run()?;
        let case = Self { ctx, cpu };
        for i in 0..Self::LABELS.len() {
            let got = select_nearest_timed(&case.ctx, &case.input(), Self::options(i), false)?;
            if got.data != case.cpu.output() {
                return Err(
                    format!("GPU {} selection differs from the CPU's", Self::LABELS[i]).into(),
                );
            }
        }
        Ok(case)
    }

    fn options(i: usize) -> SelectOptions {
        SelectOptions::from(if i == 0 {
            Variant::Fused
        } else {
            Variant::Unfused
        })
    }

    fn input(&self) -> SelectInput<'_> {
        let (history, scales, candidates) = self.cpu.inputs();
        SelectInput {
            history,
            scales,
            candidates,
            dim: self.cpu.dim(),
            k: crate::bench_lifelong::NnCase::K,
        }
    }

    /// One request (upload, selection, readback of the indices) on path
    /// `i` of [`NnGpuCase::LABELS`]; wall time from submission to result.
    pub fn gpu_run(&self, i: usize) -> Result<Duration, GpuError> {
        Ok(select_nearest_timed(&self.ctx, &self.input(), Self::options(i), false)?.wall_time)
    }

    /// The same selection on the CPU (both cores).
    pub fn cpu_run(&mut self) -> Result<(), transact_embed::EmbedError> {
        self.cpu.run()
    }
}

/// One line of `transact bench kernels`: a whole path or variant (`kernel`
/// empty), or one kernel within it.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    /// Shape family (`gemm-qkv-s100-d96`, `v1-s100-d96`, `v2-s192-d64`,
    /// `nn-16k-d32-top96`, `v2-rank-b256-16k`).
    pub shape: String,
    /// Path or variant (`naive`, `tiled`, `encode`, `score`, `fused-f32`, ...).
    pub variant: String,
    /// `shader::entry` for a per-kernel line; empty for the whole path.
    pub kernel: String,
    /// Dispatches of the kernel per request (of every kernel for a path line).
    pub dispatches: usize,
    /// Candidates per request.
    pub batch: usize,
    /// Median time in ms (rounded to µs).
    pub median_ms: f64,
    /// `gpu` (timestamp queries) or `wall` (submission to result).
    pub clock: &'static str,
    /// Median CPU time of the same work in ms (path lines of V1 and V2).
    pub cpu_median_ms: Option<f64>,
    /// Timed runs after one warm-up.
    pub runs: usize,
    /// Adapter name.
    pub adapter: String,
}

/// Median times of a profiled path: the whole request and each kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Profiled {
    /// Median of the whole request, in ms.
    pub total_ms: f64,
    /// `gpu` or `wall`.
    pub clock: &'static str,
    /// Per kernel in order of first use: label, dispatches per request,
    /// median summed time in ms (empty without timestamp queries).
    pub kernels: Vec<(String, usize, f64)>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `f` once to warm up, then `runs` times with per-dispatch profiling
/// on `ctx` (GPU timestamps when the device has them, else the wall time
/// `f` returns).
pub fn profile_path(
    ctx: &GpuContext,
    runs: usize,
    mut f: impl FnMut() -> Result<Duration, GpuError>,
) -> Result<Profiled, GpuError> {
    ctx.set_profiling(true);
    let result = (|| {
        f()?;
        ctx.take_profile();
        let mut totals = Vec::new();
        let mut walls = Vec::new();
        let mut per: Vec<(String, usize, Vec<f64>)> = Vec::new();
        for _ in 0..runs.max(1) {
            walls.push(f()?.as_secs_f64() * 1e3);
            if let Some(p) = ctx.take_profile() {
                totals.push(p.total.as_secs_f64() * 1e3);
                for k in p.by_kernel() {
                    let ms = k.time.as_secs_f64() * 1e3;
                    match per.iter_mut().find(|(l, _, _)| *l == k.label) {
                        Some(e) => e.2.push(ms),
                        None => per.push((k.label, k.dispatches, vec![ms])),
                    }
                }
            }
        }
        Ok(if totals.len() == walls.len() {
            Profiled {
                total_ms: median(&mut totals),
                clock: "gpu",
                kernels: per
                    .into_iter()
                    .map(|(l, n, mut v)| (l, n, median(&mut v)))
                    .collect(),
            }
        } else {
            Profiled {
                total_ms: median(&mut walls),
                clock: "wall",
                kernels: Vec::new(),
            }
        })
    })();
    ctx.set_profiling(false);
    result
}

/// Median over `runs` of `f` after one warm-up; the clock is `gpu` only
/// when every run had one.
pub fn median_gpu(
    runs: usize,
    mut f: impl FnMut() -> Result<(Duration, Clock), GpuError>,
) -> Result<(f64, &'static str), GpuError> {
    f()?;
    let mut v = Vec::with_capacity(runs.max(1));
    let mut all_gpu = true;
    for _ in 0..runs.max(1) {
        let (t, c) = f()?;
        all_gpu &= c == Clock::Gpu;
        v.push(t.as_secs_f64() * 1e3);
    }
    Ok((median(&mut v), if all_gpu { "gpu" } else { "wall" }))
}

/// Runs every case on `ctx` with `batch` candidates, `runs` timed runs each
/// after one warm-up (GPU and CPU alike): the GEMM naive vs tiled, V1
/// encode and score, the V2 block variants, the nearest-neighbour selection
/// fused vs unfused, a whole V2 request (`v2-rank-b256-16k`, B = 256
/// whatever `batch`: the model's command buffer per kernel, and the whole
/// request through a GPU-backed `Ranker`); each path with its per-kernel
/// breakdown when the device has timestamp queries. With `only`, just the
/// case of that shape name (e.g. `nn-16k-d32-top96`).
pub fn run_kernels(
    ctx: &Arc<GpuContext>,
    batch: usize,
    runs: usize,
    only: Option<&str>,
) -> Result<Vec<KernelResult>, BenchError> {
    let shapes = [
        GemmGpuCase::NAME,
        V1GpuCase::NAME,
        V2GpuCase::NAME,
        NnGpuCase::NAME,
        V2RankCase::NAME,
    ];
    if let Some(o) = only
        && !shapes.contains(&o)
    {
        return Err(format!("unknown shape {o}; the shapes are {}", shapes.join(", ")).into());
    }
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let adapter = ctx.adapter_name();
    let round = |ms: f64| (ms * 1e3).round() / 1e3;
    let mut out = Vec::new();
    let mut push = |shape: &str, variant: &str, p: &Profiled, cpu: Option<f64>, batch: usize| {
        let line = |kernel: &str, dispatches: usize, ms: f64, cpu: Option<f64>| KernelResult {
            shape: shape.into(),
            variant: variant.into(),
            kernel: kernel.into(),
            dispatches,
            batch,
            median_ms: round(ms),
            clock: p.clock,
            cpu_median_ms: cpu.map(round),
            runs,
            adapter: adapter.clone(),
        };
        let all = p.kernels.iter().map(|k| k.1).sum();
        out.push(line("", all, p.total_ms, cpu));
        for (label, n, ms) in &p.kernels {
            out.push(line(label, *n, *ms, None));
        }
    };

    if wanted(GemmGpuCase::NAME) {
        let gemm = GemmGpuCase::new(ctx.clone(), batch)?;
        for (naive, name) in [(true, "naive"), (false, "tiled")] {
            let p = profile_path(ctx, runs, || gemm.run(naive))?;
            push(GemmGpuCase::NAME, name, &p, None, batch);
        }
    }

    if wanted(V1GpuCase::NAME) {
        let mut v1 = V1GpuCase::new(ctx.clone(), batch)?;
        let cpu_encode = crate::bench::median_ms(runs, 1, || v1.cpu_encode())?;
        let cpu_score = crate::bench::median_ms(runs, 1, || v1.cpu_score())?;
        for (i, label) in v1.labels().iter().enumerate() {
            let p = profile_path(ctx, runs, || v1.gpu_encode(i))?;
            push(
                V1GpuCase::NAME,
                &format!("encode {label}"),
                &p,
                Some(cpu_encode),
                batch,
            );
        }
        // The full score (encoder + heads) on the default variant (fused f32
        // where it fits).
        let labels = v1.labels();
        let default = labels.iter().position(|l| l == "fused-f32").unwrap_or(0);
        let p = profile_path(ctx, runs, || v1.gpu_score(default))?;
        push(
            V1GpuCase::NAME,
            &format!("score {}", labels[default]),
            &p,
            Some(cpu_score),
            batch,
        );
    }

    if wanted(V2GpuCase::NAME) {
        let v2 = V2GpuCase::new(ctx.clone(), batch)?;
        let cpu = crate::bench::median_ms(runs, 1, || v2.cpu_run())?;
        for (i, label) in v2.labels().iter().enumerate() {
            let p = profile_path(ctx, runs, || v2.gpu_run(i).map(|(t, _)| t))?;
            push(V2GpuCase::NAME, label, &p, Some(cpu), batch);
        }
    }

    if wanted(NnGpuCase::NAME) {
        let mut nn = NnGpuCase::new(ctx.clone(), batch)?;
        let cpu = crate::bench::median_ms(runs, 1, || nn.cpu_run())?;
        for (i, label) in NnGpuCase::LABELS.iter().enumerate() {
            let p = profile_path(ctx, runs, || nn.gpu_run(i))?;
            push(NnGpuCase::NAME, label, &p, Some(cpu), batch);
        }
    }

    if wanted(V2RankCase::NAME) {
        // A whole V2 request (B = 256 fixed): store read of a 16k lifelong
        // + realtime + impression history, selection and token building on
        // the CPU, then blocks, compression and heads in one GPU command
        // buffer; the per-kernel lines are that command buffer's.
        let err = |e: Box<dyn std::error::Error>| -> BenchError { e.to_string().into() };
        let mut cpu_case = V2RankCase::new().map_err(err)?;
        let cpu_rank = crate::bench::median_ms(runs, 1, || cpu_case.run())?;
        let mut stages = cpu_case.stages().map_err(err)?;
        let cpu_score = crate::bench::median_ms(runs, 1, || stages.score())?;
        let gpu = GpuRankingModel::new(ctx.clone(), cpu_case.model())?;
        let label = format!("{:?}-{:?}", gpu.variant(), gpu.precision()).to_lowercase();
        let p = profile_path(ctx, runs, || stages.score_gpu(&gpu))?;
        push(
            V2RankCase::NAME,
            &format!("score {label}"),
            &p,
            Some(cpu_score),
            BATCH,
        );
        drop(stages);
        drop(cpu_case);
        // The same request through a `Ranker` on the GPU backend: wall time
        // of the whole request (its kernels are the score line's).
        let mut watch = None;
        let mut gpu_case = V2RankCase::with_backend(|m| {
            let g = crate::backend::GpuBackend::new(m)?;
            watch = Some(g.clone());
            Ok(Box::new(g))
        })
        .map_err(err)?;
        let gpu_rank = crate::bench::median_ms(runs, 1, || gpu_case.run())?;
        if let Some(f) = watch.as_ref().and_then(|w| w.last_fallback()) {
            return Err(format!("the GPU request fell back to the CPU: {f}").into());
        }
        let whole = Profiled {
            total_ms: gpu_rank,
            clock: "wall",
            kernels: Vec::new(),
        };
        push(V2RankCase::NAME, "request", &whole, Some(cpu_rank), BATCH);
    }
    Ok(out)
}
