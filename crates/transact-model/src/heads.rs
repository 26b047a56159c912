//! The ranking head around the sequence encoder (model-spec §2, "The
//! ranking model around it"): a full-rank DCN v2 cross network, an MLP and
//! one logit per action head.
//!
//! ```text
//! x_0     = features                                  [B × n]
//! x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l               W_l [n × n], l < cross_layers
//! h       = relu(Linear(... relu(Linear(x_L))))       one Linear + ReLU per mlp_hidden width
//! logits  = Linear(h)                                 [B × heads]
//! ```
//!
//! Tensors: `{prefix}cross.{i}.weight [n, n]`, `{prefix}cross.{i}.bias [n]`,
//! `{prefix}mlp.{i}.weight [out, in]`, `{prefix}mlp.{i}.bias [out]`,
//! `{prefix}out.weight [heads, in]`, `{prefix}out.bias [heads]` — every
//! weight `[out × in]`, like a PyTorch `Linear`.
//!
//! Initialisation: Xavier-uniform weights and zero biases, except that the
//! cross weights are Xavier-uniform scaled by [`CROSS_INIT_SCALE`]: with a
//! zero bias each cross layer then starts close to the identity
//! (`x_{l+1} ≈ x_l`), so a deep stack neither explodes nor vanishes at the
//! start of training.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_embed::kernels::{Par, linear, relu};

use crate::weights::Tensor;
use crate::{HeadsConfig, ModelError, TensorMap};

/// Factor applied to the Xavier-uniform initialisation of the cross weights.
pub const CROSS_INIT_SCALE: f32 = 0.1;

/// Batches at least this large split their GEMMs over the rayon pool.
const PAR_MIN_BATCH: usize = 64;

/// The logistic function `1 / (1 + e^{-x})`, computed without overflow for
/// large `|x|`.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// One dense layer, weight `[out × in]`.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    d_in: usize,
    d_out: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Dense {
    fn random(rng: &mut ChaCha8Rng, d_in: usize, d_out: usize, scale: f32) -> Self {
        let bound = (6.0 / (d_in + d_out) as f64).sqrt() as f32;
        let weight = (0..d_in * d_out)
            .map(|_| rng.random_range(-bound..=bound) * scale)
            .collect();
        Self {
            d_in,
            d_out,
            weight,
            bias: vec![0.0; d_out],
        }
    }

    fn load(map: &TensorMap, name: &str, d_in: usize, d_out: usize) -> Result<Self, ModelError> {
        let wname = format!("{name}.weight");
        let bname = format!("{name}.bias");
        let weight = map.f32(&wname, &[d_out, d_in])?.to_vec();
        let bias = map.f32(&bname, &[d_out])?.to_vec();
        ModelError::check_finite(&wname, &weight)?;
        ModelError::check_finite(&bname, &bias)?;
        Ok(Self {
            d_in,
            d_out,
            weight,
            bias,
        })
    }

    fn store(&self, map: &mut TensorMap, name: &str) {
        map.tensors.insert(
            format!("{name}.weight"),
            Tensor::F32 {
                shape: vec![self.d_out, self.d_in],
                data: self.weight.clone(),
            },
        );
        map.tensors.insert(
            format!("{name}.bias"),
            Tensor::F32 {
                shape: vec![self.d_out],
                data: self.bias.clone(),
            },
        );
    }

    fn forward(&self, batch: usize, x: &[f32], y: &mut [f32], par: Par) -> Result<(), ModelError> {
        linear(
            batch,
            self.d_in,
            self.d_out,
            x,
            &self.weight,
            Some(&self.bias),
            y,
            par,
        )
        .map_err(|e| ModelError::BadInput {
            name: "heads kernel".into(),
            detail: e.to_string(),
        })
    }
}

/// The ranking heads: DCN v2 cross layers, an MLP and one logit per head
/// (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct RankingHeads {
    cfg: HeadsConfig,
    input_dim: usize,
    cross: Vec<Dense>,
    mlp: Vec<Dense>,
    out: Dense,
}

impl RankingHeads {
    /// Heads with random weights drawn from `seed` (initialisation in the
    /// [module docs](self)) reading `input_dim` features, usually
    /// `cfg.input_dim(seq_out_dim, item_emb_dim)`.
    ///
    /// Fails if the config is invalid or `input_dim` is 0.
    pub fn new_random(cfg: HeadsConfig, input_dim: usize, seed: u64) -> Result<Self, ModelError> {
        Self::check_dims(&cfg, input_dim)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = input_dim;
        let cross = (0..cfg.cross_layers)
            .map(|_| Dense::random(&mut rng, n, n, CROSS_INIT_SCALE))
            .collect();
        let mut mlp = Vec::with_capacity(cfg.mlp_hidden.len());
        let mut width = n;
        for &h in &cfg.mlp_hidden {
            mlp.push(Dense::random(&mut rng, width, h, 1.0));
            width = h;
        }
        let out = Dense::random(&mut rng, width, cfg.heads.len(), 1.0);
        Ok(Self {
            cfg,
            input_dim,
            cross,
            mlp,
            out,
        })
    }

    fn check_dims(cfg: &HeadsConfig, input_dim: usize) -> Result<(), ModelError> {
        cfg.validate()?;
        if input_dim == 0 {
            return Err(ModelError::InvalidConfig(
                "heads: input_dim must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.cfg
    }

    /// Width `n` of the feature vector read per candidate.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Number of heads (logits per candidate).
    pub fn num_heads(&self) -> usize {
        self.cfg.heads.len()
    }

    /// Computes `logits [batch × heads]` from `features [batch × input_dim]`.
    ///
    /// Fails on a wrong length or a non-finite feature.
    ///
    /// ```
    /// use transact_model::{HeadsConfig, RankingHeads};
    /// use transact_model::heads::sigmoid;
    ///
    /// let cfg = HeadsConfig { mlp_hidden: vec![16], ..HeadsConfig::default() };
    /// let heads = RankingHeads::new_random(cfg, 10, 1)?;
    /// let features: Vec<f32> = (0..2 * 10).map(|i| i as f32 * 0.05).collect();
    /// let mut logits = vec![0.0; 2 * heads.num_heads()];
    /// heads.forward(&features, 2, &mut logits)?;
    /// let p_repin = sigmoid(logits[0]);
    /// assert!(p_repin > 0.0 && p_repin < 1.0);
    /// # Ok::<(), transact_model::ModelError>(())
    /// ```
    pub fn forward(
        &self,
        features: &[f32],
        batch: usize,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let n = self.input_dim;
        ModelError::check_len("features", batch * n, features.len())?;
        ModelError::check_len("logits", batch * self.num_heads(), logits.len())?;
        ModelError::check_finite("features", features)?;
        if batch == 0 {
            return Ok(());
        }
        let par = if batch >= PAR_MIN_BATCH {
            Par::Rayon
        } else {
            Par::Seq
        };
        let mut x = features.to_vec();
        let mut t = vec![0.0f32; batch * n];
        for layer in &self.cross {
            layer.forward(batch, &x, &mut t, par)?;
            // x ← x0 ⊙ t + x
            for ((xv, &tv), &x0) in x.iter_mut().zip(&t).zip(features) {
                *xv += x0 * tv;
            }
        }
        for layer in &self.mlp {
            let mut h = vec![0.0f32; batch * layer.d_out];
            layer.forward(batch, &x, &mut h, par)?;
            relu(&mut h);
            x = h;
        }
        self.out.forward(batch, &x, logits, par)
    }

    /// Writes the weights into `map` under `prefix` (names in the
    /// [module docs](self)).
    pub fn to_tensors(&self, prefix: &str, map: &mut TensorMap) {
        for (i, l) in self.cross.iter().enumerate() {
            l.store(map, &format!("{prefix}cross.{i}"));
        }
        for (i, l) in self.mlp.iter().enumerate() {
            l.store(map, &format!("{prefix}mlp.{i}"));
        }
        self.out.store(map, &format!("{prefix}out"));
    }

    /// Reads heads written by [`RankingHeads::to_tensors`], checking every
    /// shape against `cfg` and `input_dim`.
    pub fn from_tensors(
        map: &TensorMap,
        prefix: &str,
        cfg: HeadsConfig,
        input_dim: usize,
    ) -> Result<Self, ModelError> {
        Self::check_dims(&cfg, input_dim)?;
        let n = input_dim;
        let cross = (0..cfg.cross_layers)
            .map(|i| Dense::load(map, &format!("{prefix}cross.{i}"), n, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut mlp = Vec::with_capacity(cfg.mlp_hidden.len());
        let mut width = n;
        for (i, &h) in cfg.mlp_hidden.iter().enumerate() {
            mlp.push(Dense::load(map, &format!("{prefix}mlp.{i}"), width, h)?);
            width = h;
        }
        let out = Dense::load(map, &format!("{prefix}out"), width, cfg.heads.len())?;
        Ok(Self {
            cfg,
            input_dim,
            cross,
            mlp,
            out,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The heads computed with explicit loops, one candidate at a time.
    fn naive(h: &RankingHeads, features: &[f32], batch: usize) -> Vec<f32> {
        let n = h.input_dim;
        let dense = |l: &Dense, x: &[f32]| -> Vec<f32> {
            (0..l.d_out)
                .map(|o| {
                    l.bias[o]
                        + (0..l.d_in)
                            .map(|i| l.weight[o * l.d_in + i] * x[i])
                            .sum::<f32>()
                })
                .collect()
        };
        let mut out = Vec::new();
        for b in 0..batch {
            let x0 = &features[b * n..(b + 1) * n];
            let mut x = x0.to_vec();
            for l in &h.cross {
                let t = dense(l, &x);
                x = (0..n).map(|i| x0[i] * t[i] + x[i]).collect();
            }
            for l in &h.mlp {
                x = dense(l, &x).into_iter().map(|v| v.max(0.0)).collect();
            }
            out.extend(dense(&h.out, &x));
        }
        out
    }

    fn features(batch: usize, n: usize) -> Vec<f32> {
        (0..batch * n)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 3.0)
            .collect()
    }

    #[test]
    fn forward_matches_naive_loops() {
        for (batch, n, cross, mlp) in [
            (1usize, 5usize, 0usize, vec![]),
            (3, 9, 2, vec![7]),
            (70, 33, 3, vec![16, 8]),
            (130, 20, 1, vec![4]),
        ] {
            let cfg = HeadsConfig {
                cross_layers: cross,
                mlp_hidden: mlp,
                ..HeadsConfig::default()
            };
            let mut h = RankingHeads::new_random(cfg, n, 5).unwrap();
            // Non-zero biases and larger cross weights, so every term matters.
            for (i, l) in h.cross.iter_mut().chain(h.mlp.iter_mut()).enumerate() {
                l.bias
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = ((i + j) % 5) as f32 * 0.1 - 0.2);
                l.weight.iter_mut().for_each(|w| *w *= 3.0);
            }
            let f = features(batch, n);
            let mut logits = vec![0.0; batch * h.num_heads()];
            h.forward(&f, batch, &mut logits).unwrap();
            let want = naive(&h, &f, batch);
            for (a, b) in logits.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn cross_stack_starts_near_identity() {
        let cfg = HeadsConfig {
            cross_layers: 6,
            mlp_hidden: vec![],
            ..HeadsConfig::default()
        };
        let h = RankingHeads::new_random(cfg, 64, 1).unwrap();
        let f = features(4, 64);
        let mut x = f.clone();
        let mut t = vec![0.0; f.len()];
        for l in &h.cross {
            l.forward(4, &x, &mut t, Par::Seq).unwrap();
            for ((xv, &tv), &x0) in x.iter_mut().zip(&t).zip(&f) {
                *xv += x0 * tv;
            }
        }
        let rel = x
            .iter()
            .zip(&f)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt()
            / f.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(rel < 0.5, "six cross layers moved the input by {rel}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let cfg = HeadsConfig {
            user_emb_dim: 3,
            ..HeadsConfig::default()
        };
        let n = cfg.input_dim(24, 4);
        let h = RankingHeads::new_random(cfg.clone(), n, 9).unwrap();
        let mut map = TensorMap::new();
        h.to_tensors("heads.", &mut map);
        assert!(map.tensors.contains_key("heads.cross.1.weight"));
        assert!(map.tensors.contains_key("heads.mlp.1.bias"));
        assert!(map.tensors.contains_key("heads.out.weight"));
        let map = TensorMap::from_bytes(&map.to_bytes().unwrap(), "mem").unwrap();
        let back = RankingHeads::from_tensors(&map, "heads.", cfg.clone(), n).unwrap();
        assert_eq!(back, h);
        // A config that disagrees with the stored shapes is an error naming the tensor.
        let wider = HeadsConfig {
            mlp_hidden: vec![128, 64],
            ..cfg
        };
        let e = RankingHeads::from_tensors(&map, "heads.", wider, n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("heads.mlp.0.weight"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let h = RankingHeads::new_random(HeadsConfig::default(), 8, 0).unwrap();
        let mut logits = vec![0.0; 2 * 3];
        assert!(matches!(
            h.forward(&[0.0; 15], 2, &mut logits),
            Err(ModelError::Shape { .. })
        ));
        assert!(h.forward(&[0.0; 16], 2, &mut logits[..5]).is_err());
        let mut f = vec![0.0; 16];
        f[11] = f32::NAN;
        assert!(matches!(
            h.forward(&f, 2, &mut logits),
            Err(ModelError::NonFinite { index: 11, .. })
        ));
        assert!(RankingHeads::new_random(HeadsConfig::default(), 0, 0).is_err());
        let no_heads = HeadsConfig {
            heads: vec![],
            ..HeadsConfig::default()
        };
        assert!(RankingHeads::new_random(no_heads, 8, 0).is_err());
    }

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-6);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!(sigmoid(-100.0) > 0.0);
    }
}
