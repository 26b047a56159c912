//! A request's host-side checks and its one upload ([`Plan`]).

use transact_model::v1::PackedRequest;
use transact_model::{ModelError, V1Request};

use super::GpuTransActV1;
use super::rows::u;
use crate::GpuError;

/// Maps a CPU-model error to this crate's error.
/// A bad input keeps its name, so the caller sees which field was wrong.
pub(crate) fn model_err(e: ModelError) -> GpuError {
    match e {
        ModelError::BadInput { name, detail } => GpuError::BadInput { name, detail },
        e => GpuError::bad("model", e.to_string()),
    }
}

/// `BadInput` naming the first non-finite value of `xs`.
pub(crate) fn check_finite(name: &str, xs: &[f32]) -> Result<(), GpuError> {
    match xs.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(GpuError::bad(
            name,
            format!("non-finite value at index {i}"),
        )),
    }
}

/// The request after host-side checks: sizes and the one upload.
pub(crate) struct Plan {
    /// Candidates `B`.
    pub(crate) batch: usize,
    /// Kept (unmasked) positions `S_e ≥ 1`.
    pub(crate) se: usize,
    /// Actions given (`n ≤ S`).
    pub(crate) n_given: usize,
    /// The upload, as u32 words (f32 values bit-cast).
    pub(crate) words: Vec<u32>,
    pub(crate) pos_off: usize,
    pub(crate) rows_off: usize,
    pub(crate) kmap_off: usize,
    pub(crate) item_off: usize,
    /// Offset of the candidate embeddings in `words`.
    pub(crate) cand_off: usize,
}

impl Plan {
    /// Appends `xs` (bit patterns) to the upload; returns their offset.
    pub(crate) fn push_f32(&mut self, xs: &[f32]) -> usize {
        let off = self.words.len();
        self.words.extend(xs.iter().map(|v| v.to_bits()));
        off
    }
}

/// Where the encoder output goes: `B` rows of stride `ld` in `buf`, the
/// first at element `off` (a request's place in a batch of several).
pub(crate) struct OutTarget<'a> {
    pub(crate) buf: &'a wgpu::Buffer,
    pub(crate) ld: usize,
    pub(crate) off: usize,
}

impl GpuTransActV1 {
    /// Checks the request like the CPU model and builds the upload.
    pub(crate) fn plan(&self, req: &V1Request<'_>) -> Result<Plan, GpuError> {
        let cfg = &self.cfg;
        let mut packed = PackedRequest::default();
        packed
            .pack(cfg, &self.action_rows, req, 0)
            .map_err(model_err)?;
        let PackedRequest { batch, rows, keep } = packed;
        let n = rows.len();
        let di = cfg.item_emb_dim;
        let se = keep.len();
        let k = cfg.kept_positions();
        let mut kmap = vec![-1i32; k];
        for (i, &p) in keep.iter().enumerate() {
            if p < k {
                kmap[p] = i32::try_from(i).map_err(|_| GpuError::bad("seq_len", "too long"))?;
            }
        }
        let mut words = Vec::with_capacity(2 * se + k + (n + batch) * di + 64);
        let pos_off = 0;
        for &p in &keep {
            words.push(u("position", p)?);
        }
        let rows_off = words.len();
        for &p in &keep {
            words.push(u("row", rows.get(p).copied().unwrap_or(0))?);
        }
        let kmap_off = words.len();
        words.extend(kmap.iter().map(|&v| v.cast_unsigned()));
        let mut plan = Plan {
            batch,
            se,
            n_given: n,
            words,
            pos_off,
            rows_off,
            kmap_off,
            item_off: 0,
            cand_off: 0,
        };
        plan.item_off = plan.push_f32(req.item_embeddings);
        plan.cand_off = plan.push_f32(req.candidates);
        Ok(plan)
    }
}
