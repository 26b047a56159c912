//! The GPU benchmark cases, shared by `transact bench kernels` and the
//! criterion benches in `benches/gpu.rs`: the V1 shape (B, S = 100, d = 96,
//! L = 2, K = 10; encoder and full ranking score) and the V2 block shape
//! (B, S = 192, d = 64, FFN 32, L = 2, causal; unfused and fused, f32 and
//! f16 when the adapter has `SHADER_F16`), each with the CPU time of the
//! same work for reference.
//!
//! Times are per path and variant: the infra's timestamp queries bracket a
//! request's whole compute pass, not each dispatch. The V2 blocks use GPU
//! timestamps when the adapter has them; the V1 paths expose no timed entry
//! point, so they are wall time (submission to mapped result, plus upload).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
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
    gpu: GpuRankingModel,
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
        let gpu = GpuRankingModel::new(ctx, &cpu)?;
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
            gpu,
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

    /// `GpuTransActV1::encode` of the request; returns its wall time.
    pub fn gpu_encode(&self) -> Result<Duration, GpuError> {
        let t0 = Instant::now();
        self.gpu.encode(&self.req())?;
        Ok(t0.elapsed())
    }

    /// `GpuRankingModel::score` of the request; returns its wall time.
    pub fn gpu_score(&self) -> Result<Duration, GpuError> {
        let t0 = Instant::now();
        self.gpu.score(&self.req(), None, None)?;
        Ok(t0.elapsed())
    }

    /// The same encoding on the CPU.
    pub fn cpu_encode(&mut self) -> Result<(), ModelError> {
        let mut out = std::mem::take(&mut self.encoded);
        let r = self.cpu.v1().forward_request(&self.req(), &mut out);
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

/// One line of `transact bench kernels`.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    /// Shape family (`v1-s100-d96`, `v2-s192-d64`).
    pub shape: String,
    /// Path or variant (`encode`, `score`, `fused-f32`, ...).
    pub variant: String,
    /// Candidates per request.
    pub batch: usize,
    /// Median GPU-side time in ms (rounded to µs).
    pub median_ms: f64,
    /// `gpu` (timestamp queries around the compute pass) or `wall`.
    pub clock: &'static str,
    /// Median CPU time of the same work in ms.
    pub cpu_median_ms: f64,
    /// What the time covers: the whole path (`path`), not per kernel.
    pub granularity: &'static str,
    /// Timed runs after one warm-up.
    pub runs: usize,
    /// Adapter name.
    pub adapter: String,
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
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], if all_gpu { "gpu" } else { "wall" }))
}

/// Runs every case on `ctx` with `batch` candidates, `runs` timed runs each
/// after one warm-up (GPU and CPU alike).
pub fn run_kernels(
    ctx: &Arc<GpuContext>,
    batch: usize,
    runs: usize,
) -> Result<Vec<KernelResult>, BenchError> {
    let adapter = ctx.adapter_name();
    let mut out = Vec::new();
    let mut push = |shape: &str, variant: &str, (ms, clock): (f64, &'static str), cpu: f64| {
        out.push(KernelResult {
            shape: shape.into(),
            variant: variant.into(),
            batch,
            median_ms: (ms * 1e3).round() / 1e3,
            clock,
            cpu_median_ms: (cpu * 1e3).round() / 1e3,
            granularity: "path",
            runs,
            adapter: adapter.clone(),
        });
    };

    let mut v1 = V1GpuCase::new(ctx.clone(), batch)?;
    let cpu = crate::bench::median_ms(runs, 1, || v1.cpu_encode())?;
    let gpu = median_gpu(runs, || v1.gpu_encode().map(|t| (t, Clock::Wall)))?;
    push(V1GpuCase::NAME, "encode", gpu, cpu);
    let cpu = crate::bench::median_ms(runs, 1, || v1.cpu_score())?;
    let gpu = median_gpu(runs, || v1.gpu_score().map(|t| (t, Clock::Wall)))?;
    push(V1GpuCase::NAME, "score", gpu, cpu);
    drop(v1);

    let v2 = V2GpuCase::new(ctx.clone(), batch)?;
    let cpu = crate::bench::median_ms(runs, 1, || v2.cpu_run())?;
    for (i, label) in v2.labels().iter().enumerate() {
        let gpu = median_gpu(runs, || v2.gpu_run(i))?;
        push(V2GpuCase::NAME, label, gpu, cpu);
    }
    Ok(out)
}
