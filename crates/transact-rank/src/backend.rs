//! Where the model runs.

use transact_model::{ModelError, RankingModel, V1Request, V2Request};

/// A device that scores one request with a [`RankingModel`].
///
/// Implementations must compute what [`CpuBackend`] computes (the GPU
/// backend is tested against it).
pub trait Backend: Send + Sync {
    /// A short name for logs and responses (e.g. `cpu`, or the GPU adapter's name).
    fn name(&self) -> &str;

    /// Writes `B × H` head logits for the candidates of `req`.
    fn score(
        &self,
        model: &RankingModel,
        req: &V1Request<'_>,
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError>;

    /// Writes `B × H` head logits for a TransAct V2 request: `req` holds
    /// each candidate's selected tokens, `head_candidates` (`B × d_item`)
    /// the candidates' embeddings the heads read. The default runs the
    /// model on the CPU ([`RankingModel::score_v2`]).
    fn score_v2(
        &self,
        model: &RankingModel,
        req: &V2Request<'_>,
        head_candidates: &[f32],
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        model.score_v2(req, head_candidates, user_emb, context, logits)
    }
}

/// Runs the model on the CPU (all cores, through rayon).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn score(
        &self,
        model: &RankingModel,
        req: &V1Request<'_>,
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        model.score(req, user_emb, context, logits)
    }
}
