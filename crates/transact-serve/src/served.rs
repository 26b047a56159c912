//! The model in service: a bundle loaded into a [`Ranker`] over the
//! server's store, checked before it takes traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use transact_rank::{Backend, Bundle, Candidate, CpuBackend, RankRequest, Ranker, RankerConfig};
use transact_seq::{SequenceStore, system_clock_ms};

use crate::backend::auto_backend;

/// Which backend a loaded bundle scores on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendPolicy {
    /// Always the CPU.
    Cpu,
    /// The GPU when a hardware adapter exists (or a software one, with
    /// `allow_software`), else the CPU.
    Auto {
        /// Also use a software adapter (llvmpipe, WARP).
        allow_software: bool,
    },
}

/// A bundle loaded for serving: its ranker, where it came from, its version
/// and backend. Requests hold an `Arc` of it, so a reload never pulls a
/// model from under a request in flight.
pub struct LoadedModel {
    /// The ranker over the server's store.
    pub ranker: Ranker<dyn SequenceStore>,
    /// The bundle directory.
    pub dir: PathBuf,
    /// The bundle's version.
    pub version: String,
    /// The backend's name (`cpu`, `gpu: <adapter>`).
    pub backend: String,
    store: Arc<dyn SequenceStore>,
}

/// Users the self-check ranks for (not a user id any log maps to: raw ids
/// are hashed into keys, and this is the key of no short id in practice).
const PROBE_USER: u64 = u64::MAX;
/// Candidates the self-check ranks.
const PROBE_CANDIDATES: usize = 8;
/// Largest |utility| difference accepted between a device backend and the
/// CPU on the self-check request.
const BACKEND_TOLERANCE: f32 = 1e-3;

impl LoadedModel {
    /// Loads the bundle at `dir`, builds its ranker on `store` and the
    /// backend `policy` picks, and runs [`LoadedModel::self_check`]. The
    /// error says which step failed and why.
    pub fn load(
        dir: &Path,
        store: Arc<dyn SequenceStore>,
        policy: BackendPolicy,
        config: RankerConfig,
    ) -> Result<Self, String> {
        let bundle =
            Arc::new(Bundle::load(dir).map_err(|e| format!("bundle {}: {e}", dir.display()))?);
        let backend: Box<dyn Backend> = match policy {
            BackendPolicy::Cpu => Box::new(CpuBackend),
            BackendPolicy::Auto { allow_software } => {
                auto_backend(bundle.model.clone(), allow_software).0
            }
        };
        let version = bundle.version().to_string();
        let ranker = Ranker::with_backend(store.clone(), bundle, config, backend)
            .map_err(|e| format!("bundle {}: {e}", dir.display()))?;
        let backend = ranker.backend_name().to_string();
        let model = Self {
            ranker,
            dir: dir.to_path_buf(),
            version,
            backend,
            store,
        };
        model
            .self_check()
            .map_err(|e| format!("bundle {} failed its self-check: {e}", dir.display()))?;
        Ok(model)
    }

    /// Whether the model scores on the CPU backend.
    pub fn on_cpu(&self) -> bool {
        self.backend == CpuBackend.name()
    }

    /// Ranks a probe request (a user without history, up to 8 of the
    /// bundle's items, now): every candidate must come back once with
    /// probabilities in [0, 1]; on a device backend the utilities must
    /// match the CPU's within 1e-3.
    pub fn self_check(&self) -> Result<(), String> {
        let bundle = self.ranker.bundle();
        let ids: Vec<u64> = bundle.items.ids().take(PROBE_CANDIDATES).collect();
        if ids.is_empty() {
            return Err("the item table is empty".into());
        }
        let req = RankRequest::new(
            PROBE_USER,
            system_clock_ms(),
            ids.iter().map(|&id| Candidate::Item(id)).collect(),
        );
        let resp = self
            .ranker
            .rank(&req)
            .map_err(|e| format!("ranking a probe request: {e}"))?;
        if resp.ranked.len() != ids.len() {
            return Err(format!(
                "{} candidates in, {} ranked out",
                ids.len(),
                resp.ranked.len()
            ));
        }
        if let Some(p) = resp
            .probabilities
            .iter()
            .find(|p| !(0.0..=1.0).contains(*p))
        {
            return Err(format!("a head probability is {p}, outside [0, 1]"));
        }
        if self.backend != CpuBackend.name() {
            let cpu = Ranker::with_backend(
                self.store.clone(),
                bundle.clone(),
                self.ranker.config().clone(),
                Box::new(CpuBackend),
            )
            .map_err(|e| e.to_string())?;
            let want = cpu
                .rank(&req)
                .map_err(|e| format!("ranking the probe on the CPU: {e}"))?;
            let by_index = |r: &transact_rank::RankResponse| {
                let mut u = vec![0.0f32; ids.len()];
                for x in &r.ranked {
                    if let Some(slot) = u.get_mut(x.request_index) {
                        *slot = x.utility;
                    }
                }
                u
            };
            let (got, want) = (by_index(&resp), by_index(&want));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if worst.is_nan() || worst > BACKEND_TOLERANCE {
                return Err(format!(
                    "{} and the CPU disagree by {worst} on a probe utility (tolerance {BACKEND_TOLERANCE})",
                    self.backend
                ));
            }
        }
        Ok(())
    }
}
