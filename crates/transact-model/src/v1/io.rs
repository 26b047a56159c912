//! Weights in and out: this project's files (reference names under `v1.`,
//! config in the metadata) and the reference module's own `state_dict`.

use std::path::Path;

use super::{EncoderLayer, Params, TransActV1};
use crate::{ModelError, TensorMap, V1Config};

/// Prefix of the V1 tensors in this project's weights files.
pub const TENSOR_PREFIX: &str = "v1.";
/// Metadata key holding the [`V1Config`] as JSON.
pub const CONFIG_KEY: &str = "transact.v1_config";

/// Name and shape of every parameter, in the reference module's naming.
fn param_shapes(cfg: &V1Config) -> Vec<(String, Vec<usize>)> {
    let d = cfg.d_model();
    let ff = cfg.dim_feedforward;
    let mut out = vec![(
        "action_emb_module.weight".to_string(),
        vec![cfg.action_rows(), cfg.action_emb_dim],
    )];
    for i in 0..cfg.num_layer {
        let p = format!("transformer_encoder.layers.{i}.");
        for (name, shape) in [
            ("self_attn.in_proj_weight", vec![3 * d, d]),
            ("self_attn.in_proj_bias", vec![3 * d]),
            ("self_attn.out_proj.weight", vec![d, d]),
            ("self_attn.out_proj.bias", vec![d]),
            ("linear1.weight", vec![ff, d]),
            ("linear1.bias", vec![ff]),
            ("linear2.weight", vec![d, ff]),
            ("linear2.bias", vec![d]),
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
        ] {
            out.push((format!("{p}{name}"), shape));
        }
    }
    if cfg.concat_max_pool {
        out.push(("out_linear.weight".into(), vec![d, d]));
        out.push(("out_linear.bias".into(), vec![d]));
    }
    out
}

impl Params {
    /// The parameters in [`param_shapes`] order.
    fn tensors(&self) -> Vec<&[f32]> {
        let mut out: Vec<&[f32]> = vec![&self.action_emb];
        for l in &self.layers {
            out.extend([
                l.in_proj_weight.as_slice(),
                &l.in_proj_bias,
                &l.out_proj_weight,
                &l.out_proj_bias,
                &l.linear1_weight,
                &l.linear1_bias,
                &l.linear2_weight,
                &l.linear2_bias,
                &l.norm1_weight,
                &l.norm1_bias,
                &l.norm2_weight,
                &l.norm2_bias,
            ]);
        }
        if let Some((w, b)) = &self.out_linear {
            out.extend([w.as_slice(), b.as_slice()]);
        }
        out
    }

    /// Reads every parameter as `prefix + reference name`, checking shapes
    /// and finiteness; extra tensors in `map` are ignored.
    fn read(map: &TensorMap, cfg: &V1Config, prefix: &str) -> Result<Self, ModelError> {
        let mut values = Vec::new();
        for (name, shape) in param_shapes(cfg) {
            let full = format!("{prefix}{name}");
            let data = map.f32(&full, &shape)?;
            ModelError::check_finite(&format!("weights `{full}`"), data)?;
            values.push(data.to_vec());
        }
        let mut it = values.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let action_emb = next();
        let mut layers = Vec::with_capacity(cfg.num_layer);
        for _ in 0..cfg.num_layer {
            layers.push(EncoderLayer {
                in_proj_weight: next(),
                in_proj_bias: next(),
                out_proj_weight: next(),
                out_proj_bias: next(),
                linear1_weight: next(),
                linear1_bias: next(),
                linear2_weight: next(),
                linear2_bias: next(),
                norm1_weight: next(),
                norm1_bias: next(),
                norm2_weight: next(),
                norm2_bias: next(),
            });
        }
        let out_linear = if cfg.concat_max_pool {
            Some((next(), next()))
        } else {
            None
        };
        Ok(Params {
            action_emb,
            layers,
            out_linear,
        })
    }
}

impl TransActV1 {
    /// The weights under this project's names (the reference names prefixed
    /// with `v1.`, e.g. `v1.transformer_encoder.layers.0.self_attn.in_proj_weight`)
    /// and the config as JSON in metadata key `transact.v1_config`.
    pub fn to_tensors(&self) -> TensorMap {
        let mut map = TensorMap::new();
        for ((name, shape), data) in param_shapes(&self.cfg)
            .into_iter()
            .zip(self.params.tensors())
        {
            map.tensors.insert(
                format!("{TENSOR_PREFIX}{name}"),
                crate::weights::Tensor::F32 {
                    shape,
                    data: data.to_vec(),
                },
            );
        }
        // Serialising a plain struct of numbers, strings and bools cannot fail.
        let json = serde_json::to_string(&self.cfg).unwrap_or_default();
        map.metadata.insert(CONFIG_KEY.into(), json);
        map
    }

    /// Reads a model written by [`TransActV1::to_tensors`]. Errors name the
    /// missing tensor or metadata key, or the tensor and both shapes.
    pub fn from_tensors(map: &TensorMap) -> Result<Self, ModelError> {
        let cfg: V1Config = map.meta_json(CONFIG_KEY)?;
        cfg.validate()?;
        let params = Params::read(map, &cfg, TENSOR_PREFIX)?;
        Self::from_params(cfg, params)
    }

    /// Writes the model to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.to_tensors().save(path)
    }

    /// Reads a model from a safetensors file written by [`TransActV1::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_tensors(&TensorMap::load(path)?)
    }

    /// Imports the reference PyTorch module's `state_dict` (its own names, no
    /// prefix: `action_emb_module.weight`, `transformer_encoder.layers.{i}.…`,
    /// `out_linear.…`) for the given config. With [`crate::VocabMode::Reference`]
    /// the action table has `|V|` rows as in the reference; with
    /// [`crate::VocabMode::Padded`], `|V| + 1`. Other tensors in `map` (such as
    /// the reference's lookup buffer) are ignored.
    pub fn from_reference_state_dict(map: &TensorMap, cfg: V1Config) -> Result<Self, ModelError> {
        cfg.validate()?;
        let params = Params::read(map, &cfg, "")?;
        Self::from_params(cfg, params)
    }
}
