//! Backend choice: the GPU when an adapter exists, the CPU otherwise.
//!
//! [`GpuBackend`] scores requests with `transact-gpu`. When the device is
//! lost mid-request, that request is scored on the CPU and the next request
//! tries to recreate the device. [`auto_backend`] picks the GPU when an
//! adapter exists and says why it did not otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use transact_gpu::{GpuContext, GpuError, GpuRankingModel};
use transact_model::{ModelError, RankingModel, V1Job, V1Request, V2Job, V2Request};
use transact_rank::{Backend, CpuBackend, ScoreJob, score_each};

/// Which backend [`auto_backend`] chose, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    /// `gpu: <adapter>` or `cpu`.
    pub name: String,
    /// Why the CPU was chosen (`None` when the GPU was).
    pub cpu_reason: Option<String>,
}

struct GpuState {
    model: GpuRankingModel,
}

/// Scores on a wgpu device, falling back to the CPU for a request whose
/// device was lost.
///
/// Cheap to clone: clones share the device, the uploaded weights and the
/// fallback state (keep one to watch a backend a [`transact_rank::Ranker`]
/// owns).
#[derive(Clone)]
pub struct GpuBackend {
    inner: Arc<Inner>,
}

struct Inner {
    weights: Arc<RankingModel>,
    /// `gpu: <adapter>`.
    name: String,
    state: Mutex<Option<GpuState>>,
    adapter: String,
    software: bool,
    last_fallback: Mutex<Option<String>>,
    devices_opened: AtomicUsize,
}

impl GpuBackend {
    /// Opens the device chosen by the `WGPU_*` environment variables and
    /// uploads the model.
    pub fn new(model: Arc<RankingModel>) -> Result<Self, GpuError> {
        let state = Self::open(&model)?;
        let adapter = state.model.context().adapter_name();
        let software = state.model.context().adapter_info().device_type == wgpu::DeviceType::Cpu;
        Ok(Self {
            inner: Arc::new(Inner {
                name: format!("gpu: {adapter}"),
                software,
                weights: model,
                state: Mutex::new(Some(state)),
                adapter,
                last_fallback: Mutex::new(None),
                devices_opened: AtomicUsize::new(1),
            }),
        })
    }

    fn open(model: &RankingModel) -> Result<GpuState, GpuError> {
        let ctx = Arc::new(GpuContext::new_from_env()?);
        Ok(GpuState {
            model: GpuRankingModel::new(ctx, model)?,
        })
    }

    /// Whether the adapter is a software rasteriser (a CPU device).
    pub fn is_software(&self) -> bool {
        self.inner.software
    }

    /// Why the last request ran on the CPU, if it did.
    pub fn last_fallback(&self) -> Option<String> {
        self.inner.last_fallback.lock().clone()
    }

    /// The device in use (`None` after a loss, until the next request
    /// recreates it).
    pub fn context(&self) -> Option<Arc<GpuContext>> {
        let state = self.inner.state.lock();
        state.as_ref().map(|s| s.model.context().clone())
    }

    /// Devices opened so far: 1, plus one per recreation after a loss.
    pub fn devices_opened(&self) -> usize {
        self.inner.devices_opened.load(Ordering::SeqCst)
    }
}

impl GpuBackend {
    /// Runs `gpu` on the device (recreating it first if it was lost); on a
    /// device failure other than bad input, marks a lost device and runs
    /// `cpu` instead.
    fn run(
        &self,
        logits: &mut [f32],
        gpu: impl FnOnce(&GpuRankingModel) -> Result<Vec<f32>, GpuError>,
        cpu: impl FnOnce(&mut [f32]) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        if state.is_none() {
            // The device was lost earlier: try to recreate it.
            *state = Self::open(&inner.weights).ok();
            if state.is_some() {
                inner.devices_opened.fetch_add(1, Ordering::SeqCst);
            }
        }
        let outcome = match state.as_ref() {
            Some(s) => gpu(&s.model),
            None => Err(GpuError::DeviceLost(
                "the device could not be recreated".into(),
            )),
        };
        match outcome {
            Ok(v) => {
                ModelError::check_len("logits", logits.len(), v.len())?;
                logits.copy_from_slice(&v);
                *inner.last_fallback.lock() = None;
                Ok(())
            }
            Err(GpuError::BadInput { name, detail }) => Err(ModelError::BadInput { name, detail }),
            Err(e) => {
                let lost = matches!(e, GpuError::DeviceLost(_))
                    || state.as_ref().is_some_and(|s| s.model.context().is_lost());
                if lost {
                    *state = None;
                }
                drop(state);
                tracing::warn!(error = %e, "GPU request failed; scoring this request on the CPU");
                *inner.last_fallback.lock() = Some(e.to_string());
                cpu(logits)
            }
        }
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn score(
        &self,
        model: &RankingModel,
        req: &V1Request<'_>,
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        self.run(
            logits,
            |g| g.score(req, user_emb, context),
            |l| CpuBackend.score(model, req, user_emb, context, l),
        )
    }

    fn score_v2(
        &self,
        model: &RankingModel,
        req: &V2Request<'_>,
        head_candidates: &[f32],
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        self.run(
            logits,
            |g| g.score_v2(req, head_candidates, user_emb, context),
            |l| CpuBackend.score_v2(model, req, head_candidates, user_emb, context, l),
        )
    }

    /// All jobs in one device submission ([`GpuRankingModel::score_batch`],
    /// [`GpuRankingModel::score_batch_v2`]). When the batch is refused for
    /// a bad input, each job is scored alone, so that only the bad one
    /// fails; when the device fails, the batch is scored on the CPU.
    fn score_batch(
        &self,
        model: &RankingModel,
        jobs: &[ScoreJob<'_>],
        logits: &mut [f32],
    ) -> Vec<Result<(), ModelError>> {
        if jobs.len() <= 1 {
            return score_each(self, model, jobs, logits);
        }
        let v1: Option<Vec<V1Job<'_>>> = jobs
            .iter()
            .map(|j| match j {
                ScoreJob::V1(j) => Some(*j),
                ScoreJob::V2(_) => None,
            })
            .collect();
        let v2: Option<Vec<V2Job<'_>>> = jobs
            .iter()
            .map(|j| match j {
                ScoreJob::V2(j) => Some(*j),
                ScoreJob::V1(_) => None,
            })
            .collect();
        let mut on_cpu = None;
        let outcome = self.run(
            logits,
            |g| match (&v1, &v2) {
                (Some(v1), _) => g.score_batch(v1),
                (_, Some(v2)) => g.score_batch_v2(v2),
                _ => Err(GpuError::BadInput {
                    name: "request".into(),
                    detail: "a batch mixes V1 and V2 requests".into(),
                }),
            },
            |l| {
                on_cpu = Some(score_each(&CpuBackend, model, jobs, l));
                Ok(())
            },
        );
        match (outcome, on_cpu) {
            (Ok(()), Some(results)) => results,
            (Ok(()), None) => jobs.iter().map(|_| Ok(())).collect(),
            (Err(_), _) => score_each(self, model, jobs, logits),
        }
    }
}

/// The GPU backend when an adapter exists, else the CPU backend with the reason.
///
/// A software adapter (Mesa's llvmpipe, WARP) is far slower than the CPU
/// path, so it is only chosen with `allow_software`.
pub fn auto_backend(
    model: Arc<RankingModel>,
    allow_software: bool,
) -> (Box<dyn Backend>, BackendChoice) {
    match GpuBackend::new(model) {
        Ok(gpu) if !allow_software && gpu.is_software() => {
            let reason = format!(
                "the only GPU adapter is a software one ({}); it is slower than the CPU path",
                gpu.inner.adapter
            );
            tracing::info!(%reason, "ranking on the CPU");
            (
                Box::new(CpuBackend),
                BackendChoice {
                    name: "cpu".into(),
                    cpu_reason: Some(reason),
                },
            )
        }
        Ok(gpu) => {
            let name = gpu.name().to_string();
            (
                Box::new(gpu),
                BackendChoice {
                    name,
                    cpu_reason: None,
                },
            )
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::info!(%reason, "ranking on the CPU");
            (
                Box::new(CpuBackend),
                BackendChoice {
                    name: "cpu".into(),
                    cpu_reason: Some(reason),
                },
            )
        }
    }
}
