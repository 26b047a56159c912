//! The checks and packing of one V1 request, shared by every device: the
//! CPU forward here and the GPU forward in `transact-gpu` call
//! [`PackedRequest::pack`], so they agree on what is an error, which
//! embedding row each action reads and which positions are masked.

use crate::{ModelError, V1Config, V1Request, VocabMode};

use super::is_masked;

/// The action vocabulary's id → embedding row lookup, built once per model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRows {
    sorted: Vec<i64>,
    mode: VocabMode,
}

impl ActionRows {
    /// The lookup of `cfg`'s vocabulary.
    pub fn new(cfg: &V1Config) -> Self {
        Self::from_vocab(&cfg.action_vocab, cfg.vocab_mode)
    }

    /// The lookup of a vocabulary under a mapping mode.
    pub fn from_vocab(vocab: &[i64], mode: VocabMode) -> Self {
        let mut sorted = vocab.to_vec();
        sorted.sort_unstable();
        Self { sorted, mode }
    }

    /// The embedding row of raw action id `id`: `Ok(0)` for padding (`-1`,
    /// and in [`VocabMode::Reference`] the smallest vocabulary id and any id
    /// outside the vocabulary, as the reference lookup does); an error naming
    /// `position` and the id for an unknown id in [`VocabMode::Padded`].
    pub fn row(&self, id: i64, position: usize) -> Result<usize, ModelError> {
        let rank = self.sorted.binary_search(&id).ok();
        match (self.mode, rank) {
            (VocabMode::Padded, Some(r)) => Ok(r + 1),
            (VocabMode::Padded, None) if id == -1 => Ok(0),
            (VocabMode::Padded, None) => Err(ModelError::BadInput {
                name: "action_types".into(),
                detail: format!(
                    "position {position}: action id {id} is not in the vocabulary (use -1 for padding)"
                ),
            }),
            (VocabMode::Reference, Some(r)) => Ok(r),
            (VocabMode::Reference, None) => Ok(0),
        }
    }
}

/// One request, checked and packed: the embedding row of each given
/// position and the positions the encoder runs on. Reusable: `pack` clears
/// and refills it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedRequest {
    /// Candidates `B`.
    pub batch: usize,
    /// Action embedding row of each of the `n` given positions.
    pub rows: Vec<usize>,
    /// Kept (unmasked) positions, ascending; always starts with 0.
    pub keep: Vec<usize>,
}

impl PackedRequest {
    /// Checks `req` against `cfg` (lengths, widths, finite values, action
    /// ids) and packs it with the training-mode time window `window_ms`
    /// (0: the inference rule, only padding and future actions masked).
    pub fn pack(
        &mut self,
        cfg: &V1Config,
        rows: &ActionRows,
        req: &V1Request<'_>,
        window_ms: i64,
    ) -> Result<(), ModelError> {
        let di = cfg.item_emb_dim;
        let n = req.action_types.len();
        if n > cfg.seq_len {
            return Err(ModelError::BadInput {
                name: "action_types".into(),
                detail: format!("{n} actions given, more than seq_len {}", cfg.seq_len),
            });
        }
        ModelError::check_len("item_embeddings", n * di, req.item_embeddings.len())?;
        ModelError::check_len("action_times_ms", n, req.action_times_ms.len())?;
        let nc = req.candidates.len();
        if nc == 0 {
            return Err(ModelError::BadInput {
                name: "candidates".into(),
                detail: "no candidates (B = 0)".into(),
            });
        }
        if !nc.is_multiple_of(di) {
            return Err(ModelError::BadInput {
                name: "candidates".into(),
                detail: format!("{nc} values is not a multiple of item_emb_dim {di}"),
            });
        }
        ModelError::check_finite("item_embeddings", req.item_embeddings)?;
        ModelError::check_finite("candidates", req.candidates)?;
        self.batch = nc / di;
        self.rows.clear();
        for (p, &id) in req.action_types.iter().enumerate() {
            self.rows.push(rows.row(id, p)?);
        }
        self.keep.clear();
        self.keep.push(0);
        for (p, (&row, &t)) in self
            .rows
            .iter()
            .zip(req.action_times_ms)
            .enumerate()
            .skip(1)
        {
            if !is_masked(p, row, req.request_time_ms, t, window_ms) {
                self.keep.push(p);
            }
        }
        Ok(())
    }
}
