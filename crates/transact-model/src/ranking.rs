//! The whole ranking model: a sequence encoder (TransAct V1 over the
//! realtime sequence, or V2 over the selected lifelong tokens) plus the
//! ranking heads.

use std::path::Path;

use crate::v2::V2_CONFIG_KEY;
use crate::{
    HeadsConfig, ModelError, RankingHeads, TensorMap, TransActV1, V1Config, V1Request, V2Config,
    V2Encoder, V2Request,
};

/// Metadata key holding the heads config (JSON) in a ranking model file.
pub const HEADS_CONFIG_KEY: &str = "transact.heads_config";
/// Metadata key naming the file's format.
pub const FORMAT_KEY: &str = "transact.format";
/// Value of [`FORMAT_KEY`] for ranking model files.
pub const FORMAT_RANKING: &str = "transact-ranking-model/1";
/// Tensor name prefix of the heads in a ranking model file.
pub const HEADS_PREFIX: &str = "heads.";

/// Per-thread buffers reused across requests (encoder output, head features),
/// so steady-state scoring does not allocate them per request.
#[derive(Default)]
struct Scratch {
    encoded: Vec<f32>,
    features: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// One V1 request with the heads' other inputs: what a backend scores for
/// one request, alone or in a batch of several.
#[derive(Clone, Copy, Debug)]
pub struct V1Job<'a> {
    /// The user's sequence and the candidates.
    pub req: V1Request<'a>,
    /// The user feature, when the heads read one.
    pub user_emb: Option<&'a [f32]>,
    /// The context feature, when the heads read one.
    pub context: Option<&'a [f32]>,
}

/// One V2 request with the heads' other inputs (see [`V1Job`]).
#[derive(Clone, Copy, Debug)]
pub struct V2Job<'a> {
    /// Each candidate's selected tokens.
    pub req: V2Request<'a>,
    /// `B × d_item`: the candidates' embeddings the heads read.
    pub head_candidates: &'a [f32],
    /// The user feature, when the heads read one.
    pub user_emb: Option<&'a [f32]>,
    /// The context feature, when the heads read one.
    pub context: Option<&'a [f32]>,
}

/// The sequence encoder of a [`RankingModel`].
// One per model, held once: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Encoder {
    /// TransAct V1 over the realtime sequence.
    V1(TransActV1),
    /// TransAct V2 over each candidate's selected tokens.
    V2(V2Encoder),
}

impl Encoder {
    /// Output width per candidate.
    pub fn output_dim(&self) -> usize {
        match self {
            Encoder::V1(e) => e.config().output_dim(),
            Encoder::V2(e) => e.output_dim(),
        }
    }

    /// Width of the item embeddings it reads.
    pub fn item_emb_dim(&self) -> usize {
        match self {
            Encoder::V1(e) => e.config().item_emb_dim,
            Encoder::V2(e) => e.config().item_emb_dim,
        }
    }

    /// `"v1"` or `"v2"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Encoder::V1(_) => "v1",
            Encoder::V2(_) => "v2",
        }
    }
}

/// A sequence encoder, then the ranking heads over
/// `[encoder output ; candidate embedding ; user embedding ; context]`.
#[derive(Clone, Debug)]
pub struct RankingModel {
    encoder: Encoder,
    heads: RankingHeads,
}

impl RankingModel {
    /// Builds a V1 model from its two parts, checking that their widths agree.
    pub fn new(v1: TransActV1, heads: RankingHeads) -> Result<Self, ModelError> {
        Self::with_encoder(Encoder::V1(v1), heads)
    }

    /// Builds a model from an encoder and heads, checking that their widths
    /// agree.
    pub fn with_encoder(encoder: Encoder, heads: RankingHeads) -> Result<Self, ModelError> {
        let want = heads
            .config()
            .input_dim(encoder.output_dim(), encoder.item_emb_dim());
        if heads.input_dim() != want {
            return Err(ModelError::InvalidConfig(format!(
                "heads read {} features, the encoder and features give {want}",
                heads.input_dim()
            )));
        }
        Ok(Self { encoder, heads })
    }

    /// A randomly initialised V2 model (deterministic for a seed).
    pub fn new_random_v2(v2: V2Config, heads: HeadsConfig, seed: u64) -> Result<Self, ModelError> {
        let input = heads.input_dim(v2.output_dim(), v2.item_emb_dim);
        let v2 = V2Encoder::new_random(v2, seed)?;
        let heads = RankingHeads::new_random(heads, input, seed.wrapping_add(0x9e37_79b9))?;
        Self::with_encoder(Encoder::V2(v2), heads)
    }

    /// A randomly initialised model (deterministic for a seed).
    pub fn new_random(v1: V1Config, heads: HeadsConfig, seed: u64) -> Result<Self, ModelError> {
        let input = heads.input_dim(v1.output_dim(), v1.item_emb_dim);
        let v1 = TransActV1::new_random(v1, seed)?;
        let heads = RankingHeads::new_random(heads, input, seed.wrapping_add(0x9e37_79b9))?;
        Self::new(v1, heads)
    }

    /// The sequence encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The V1 encoder, if the model is a V1 model.
    pub fn v1(&self) -> Option<&TransActV1> {
        match &self.encoder {
            Encoder::V1(e) => Some(e),
            Encoder::V2(_) => None,
        }
    }

    /// The V2 encoder, if the model is a V2 model.
    pub fn v2(&self) -> Option<&V2Encoder> {
        match &self.encoder {
            Encoder::V2(e) => Some(e),
            Encoder::V1(_) => None,
        }
    }

    fn need_v1(&self) -> Result<&TransActV1, ModelError> {
        self.v1().ok_or_else(|| ModelError::BadInput {
            name: "request".into(),
            detail: "a V1 request was given to a TransAct V2 model".into(),
        })
    }

    /// The ranking heads.
    pub fn heads(&self) -> &RankingHeads {
        &self.heads
    }

    /// Names of the heads, in logit order.
    pub fn head_names(&self) -> &[String] {
        &self.heads.config().heads
    }

    /// Width of item embeddings the model reads.
    pub fn item_emb_dim(&self) -> usize {
        self.encoder.item_emb_dim()
    }

    /// Scores the candidates of one request: `logits` receives `B × H` values.
    ///
    /// `user_emb` and `context` must be given exactly when the heads config has
    /// a non-zero width for them.
    pub fn score(
        &self,
        req: &V1Request<'_>,
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let d_item = self.item_emb_dim();
        if d_item == 0 || !req.candidates.len().is_multiple_of(d_item) || req.candidates.is_empty()
        {
            return Err(ModelError::BadInput {
                name: "candidates".into(),
                detail: format!(
                    "{} values is not a positive multiple of the item width {d_item}",
                    req.candidates.len()
                ),
            });
        }
        let v1 = self.need_v1()?;
        let batch = req.candidates.len() / d_item;
        let mut encoded = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().encoded));
        encoded.clear();
        encoded.resize(batch * v1.config().output_dim(), 0.0);
        let result = v1
            .forward_request(req, &mut encoded)
            .and_then(|()| self.score_encoded(&encoded, req.candidates, user_emb, context, logits));
        SCRATCH.with(|s| s.borrow_mut().encoded = encoded);
        result
    }

    /// Scores the candidates of one V2 request: the encoder reads the
    /// selected tokens (`req`), the heads read `head_candidates` (`B ×
    /// d_item`, the candidates' rows of the model's item table); `logits`
    /// receives `B × H` values.
    pub fn score_v2(
        &self,
        req: &V2Request<'_>,
        head_candidates: &[f32],
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let v2 = self.v2().ok_or_else(|| ModelError::BadInput {
            name: "request".into(),
            detail: "a V2 request was given to a TransAct V1 model".into(),
        })?;
        let mut encoded = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().encoded));
        encoded.clear();
        encoded.resize(req.batch * v2.output_dim(), 0.0);
        let result = v2.forward(req, &mut encoded).and_then(|()| {
            self.score_encoded(&encoded, head_candidates, user_emb, context, logits)
        });
        SCRATCH.with(|s| s.borrow_mut().encoded = encoded);
        result
    }

    /// Runs the heads on an already encoded sequence (`B × encoder output`),
    /// e.g. one a GPU backend produced.
    pub fn score_encoded(
        &self,
        encoded: &[f32],
        candidates: &[f32],
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let cfg = self.heads.config();
        let d_item = self.item_emb_dim();
        let d_seq = self.encoder.output_dim();
        let batch = candidates.len() / d_item.max(1);
        ModelError::check_len("candidates", batch * d_item, candidates.len())?;
        ModelError::check_len("encoded", batch * d_seq, encoded.len())?;
        ModelError::check_len("logits", batch * self.heads.num_heads(), logits.len())?;
        let user = optional_feature("user_embedding", user_emb, cfg.user_emb_dim)?;
        let ctx = optional_feature("context", context, cfg.context_dim)?;
        let n = self.heads.input_dim();
        let mut features = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().features));
        features.clear();
        features.reserve(batch * n);
        for b in 0..batch {
            features.extend_from_slice(&encoded[b * d_seq..(b + 1) * d_seq]);
            features.extend_from_slice(&candidates[b * d_item..(b + 1) * d_item]);
            features.extend_from_slice(user);
            features.extend_from_slice(ctx);
        }
        let result = self.heads.forward(&features, batch, logits);
        SCRATCH.with(|s| s.borrow_mut().features = features);
        result
    }

    /// All weights and configs as named tensors.
    pub fn to_tensors(&self) -> Result<TensorMap, ModelError> {
        let mut map = match &self.encoder {
            Encoder::V1(e) => e.to_tensors(),
            Encoder::V2(e) => e.to_tensors(),
        };
        self.heads.to_tensors(HEADS_PREFIX, &mut map);
        let heads = serde_json::to_string(self.heads.config())
            .map_err(|e| ModelError::InvalidConfig(e.to_string()))?;
        map.metadata.insert(HEADS_CONFIG_KEY.into(), heads);
        map.metadata
            .insert(FORMAT_KEY.into(), FORMAT_RANKING.into());
        Ok(map)
    }

    /// Rebuilds a model from [`RankingModel::to_tensors`] output (a V2
    /// model when the metadata holds a V2 config).
    pub fn from_tensors(map: &TensorMap) -> Result<Self, ModelError> {
        let encoder = if map.metadata.contains_key(V2_CONFIG_KEY) {
            Encoder::V2(V2Encoder::from_tensors(map)?)
        } else {
            Encoder::V1(TransActV1::from_tensors(map)?)
        };
        let heads_cfg: HeadsConfig = map.meta_json(HEADS_CONFIG_KEY)?;
        heads_cfg.validate()?;
        let input = heads_cfg.input_dim(encoder.output_dim(), encoder.item_emb_dim());
        let heads = RankingHeads::from_tensors(map, HEADS_PREFIX, heads_cfg, input)?;
        Self::with_encoder(encoder, heads)
    }

    /// Saves to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.to_tensors()?.save(path)
    }

    /// Loads from a safetensors file written by [`RankingModel::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_tensors(&TensorMap::load(path)?)
    }
}

fn optional_feature<'a>(
    name: &str,
    value: Option<&'a [f32]>,
    width: usize,
) -> Result<&'a [f32], ModelError> {
    match value {
        None if width == 0 => Ok(&[]),
        None => Err(ModelError::BadInput {
            name: name.into(),
            detail: format!("the model needs {width} values and none were given"),
        }),
        Some(v) => {
            ModelError::check_len(name, width, v.len())?;
            ModelError::check_finite(name, v)?;
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RankingModel {
        let v1 = V1Config {
            seq_len: 6,
            latest_n_emb: 2,
            action_emb_dim: 4,
            item_emb_dim: 4,
            dim_feedforward: 8,
            ..V1Config::default()
        };
        let heads = HeadsConfig {
            mlp_hidden: vec![8],
            user_emb_dim: 3,
            ..HeadsConfig::default()
        };
        RankingModel::new_random(v1, heads, 5).unwrap()
    }

    fn request<'a>(cands: &'a [f32], items: &'a [f32]) -> V1Request<'a> {
        V1Request {
            action_types: &[1, 2, 3],
            item_embeddings: items,
            action_times_ms: &[30, 20, 10],
            request_time_ms: 40,
            candidates: cands,
        }
    }

    #[test]
    fn score_is_per_candidate_and_round_trips_through_a_file() {
        let m = small();
        let items: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let cands: Vec<f32> = (0..8).map(|i| (i as f32 * 0.91).cos()).collect();
        let user = [0.1, -0.2, 0.3];
        let mut both = vec![0.0; 6];
        m.score(&request(&cands, &items), Some(&user), None, &mut both)
            .unwrap();
        let mut second = vec![0.0; 3];
        m.score(
            &request(&cands[4..], &items),
            Some(&user),
            None,
            &mut second,
        )
        .unwrap();
        for (a, b) in both[3..].iter().zip(&second) {
            assert!(
                (a - b).abs() < 1e-5,
                "candidate scores depend on the batch: {a} vs {b}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path).unwrap();
        let back = RankingModel::load(&path).unwrap();
        let mut again = vec![0.0; 6];
        back.score(&request(&cands, &items), Some(&user), None, &mut again)
            .unwrap();
        assert_eq!(both, again);
    }

    #[test]
    fn missing_or_bad_user_embedding_is_an_error() {
        let m = small();
        let items = vec![0.5; 12];
        let cands = vec![0.5; 4];
        let mut out = vec![0.0; 3];
        assert!(
            m.score(&request(&cands, &items), None, None, &mut out)
                .is_err()
        );
        let nan = [f32::NAN, 0.0, 0.0];
        assert!(
            m.score(&request(&cands, &items), Some(&nan), None, &mut out)
                .is_err()
        );
        assert!(
            m.score(&request(&cands, &items), Some(&[0.0; 2]), None, &mut out)
                .is_err()
        );
    }
}
