//! Where the model runs.

use transact_model::{ModelError, RankingModel, V1Job, V1Request, V2Job, V2Request};

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

    /// Scores several requests (of different users, usually) in one call:
    /// `logits` holds every job's `B × H` logits one after the other, in job
    /// order ([`job_offsets`]). Returns one result per job, so that one bad
    /// request fails alone. A device backend records all jobs in one
    /// submission; the default scores them one by one ([`score_each`]).
    fn score_batch(
        &self,
        model: &RankingModel,
        jobs: &[ScoreJob<'_>],
        logits: &mut [f32],
    ) -> Vec<Result<(), ModelError>> {
        score_each(self, model, jobs, logits)
    }
}

/// One request's inputs to the model, as [`Backend::score_batch`] takes
/// them: several of these, from different users, are scored in one call.
#[derive(Clone, Copy, Debug)]
pub enum ScoreJob<'a> {
    /// A TransAct V1 request (see [`Backend::score`]).
    V1(V1Job<'a>),
    /// A TransAct V2 request (see [`Backend::score_v2`]).
    V2(V2Job<'a>),
}

impl ScoreJob<'_> {
    /// Candidates `B` of the job (0 for a malformed V1 job whose candidate
    /// buffer is not a multiple of `item_dim`; scoring it fails).
    pub fn candidates(&self, item_dim: usize) -> usize {
        match self {
            ScoreJob::V1(V1Job { req, .. }) => {
                if item_dim == 0 || !req.candidates.len().is_multiple_of(item_dim) {
                    0
                } else {
                    req.candidates.len() / item_dim
                }
            }
            ScoreJob::V2(job) => job.req.batch,
        }
    }

    /// Scores this one job with `backend` into its `B × H` logits.
    pub fn score_alone(
        &self,
        backend: &(impl Backend + ?Sized),
        model: &RankingModel,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        match self {
            ScoreJob::V1(j) => backend.score(model, &j.req, j.user_emb, j.context, logits),
            ScoreJob::V2(j) => backend.score_v2(
                model,
                &j.req,
                j.head_candidates,
                j.user_emb,
                j.context,
                logits,
            ),
        }
    }
}

/// The logits slice of each job in a batch: job `i` owns rows
/// `offsets[i] .. offsets[i + 1]` (in candidates; multiply by the number of
/// heads for values).
pub fn job_offsets(jobs: &[ScoreJob<'_>], item_dim: usize) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(jobs.len() + 1);
    let mut at = 0;
    offsets.push(0);
    for job in jobs {
        at += job.candidates(item_dim);
        offsets.push(at);
    }
    offsets
}

/// Scores every job alone, one after the other: the default of
/// [`Backend::score_batch`], for backends with nothing to share between
/// requests.
pub fn score_each(
    backend: &(impl Backend + ?Sized),
    model: &RankingModel,
    jobs: &[ScoreJob<'_>],
    logits: &mut [f32],
) -> Vec<Result<(), ModelError>> {
    let h = model.head_names().len();
    let offsets = job_offsets(jobs, model.item_emb_dim());
    if offsets.last().copied().unwrap_or(0) * h != logits.len() {
        let want = offsets.last().copied().unwrap_or(0) * h;
        return jobs
            .iter()
            .map(|_| ModelError::check_len("logits", want, logits.len()))
            .collect();
    }
    jobs.iter()
        .zip(offsets.windows(2))
        .map(|(job, w)| job.score_alone(backend, model, &mut logits[w[0] * h..w[1] * h]))
        .collect()
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
