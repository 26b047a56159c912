//! Named, flat model parameters (and gradients of the same layout).
//!
//! [`Params`] is one `Vec<f32>` plus a list of [`ParamSpec`]s (name, shape,
//! offset). Gradients are a `Vec<f32>` of the same length and layout, so an
//! optimiser works on plain slices.
//!
//! Names are the ones [`transact_model::RankingModel::to_tensors`] writes
//! (`v1.action_emb_module.weight`,
//! `v1.transformer_encoder.layers.{i}.self_attn.in_proj_weight`, …,
//! `v1.out_linear.weight`, `heads.cross.{i}.weight`, `heads.mlp.{i}.bias`,
//! `heads.out.weight`, …), plus the tensors only training uses:
//! [`ITEMS`] (the item table, `[item_rows × d_item]`) and [`NAL_PROJ`]
//! (the Next Action Loss projection, `[d_item × d]`). The layout, in order:
//! item table, V1 encoder (when the network uses the sequence), heads, NAL
//! projection (when on); each encoder layer's twelve tensors are contiguous
//! in the reference module's order.

use std::collections::HashMap;
use std::ops::Range;

use transact_model::ranking::{FORMAT_KEY, FORMAT_RANKING, HEADS_CONFIG_KEY, HEADS_PREFIX};
use transact_model::{RankingModel, TensorMap};

use crate::net::{NetConfig, TrainError};

/// Name of the item table `[item_rows × d_item]`.
pub const ITEMS: &str = "items.weight";
/// Name of the Next Action Loss projection `[d_item × d]` (`[out × in]`).
pub const NAL_PROJ: &str = "nal.proj.weight";
/// Prefix of the V1 tensors (as in [`transact_model::v1::TENSOR_PREFIX`]).
pub const V1_PREFIX: &str = "v1.";
/// Prefix of the V2 tensors (as [`transact_model::V2Encoder::to_tensors`] names them).
pub const V2_PREFIX: &str = "v2.";

/// One named tensor of a [`Params`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Tensor name.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// First value in the flat vector.
    pub offset: usize,
    /// Number of values (`shape` product).
    pub len: usize,
    /// Whether training updates it (a frozen, pretrained item table is not).
    pub trainable: bool,
    /// Whether weight decay applies (2-D weight matrices other than
    /// embedding tables).
    pub decay: bool,
}

impl ParamSpec {
    /// `offset..offset + len`.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Named parameters in one flat vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    specs: Vec<ParamSpec>,
    index: HashMap<String, usize>,
    data: Vec<f32>,
}

/// The tensors of the network `cfg` describes, in layout order:
/// `(name, shape, trainable, decay)`.
pub fn layout(cfg: &NetConfig) -> Vec<(String, Vec<usize>, bool, bool)> {
    let v1 = &cfg.v1;
    let (d, di, ff) = (v1.d_model(), v1.item_emb_dim, v1.dim_feedforward);
    let d_nal = cfg.d_model();
    let mut out = vec![(
        ITEMS.to_string(),
        vec![cfg.item_rows, di],
        cfg.learn_items,
        false,
    )];
    let mut push =
        |name: String, shape: Vec<usize>, decay: bool| out.push((name, shape, true, decay));
    if let (true, Some(v2)) = (cfg.use_sequence, &cfg.v2) {
        let (d, f) = (v2.d_model(), v2.dim_feedforward);
        push("v2.action_emb".into(), vec![v2.num_action_types, d], false);
        push("v2.surface_emb".into(), vec![v2.num_surfaces, d], false);
        push("v2.position_emb".into(), vec![v2.seq_len, d], false);
        for i in 0..v2.num_layer {
            let p = format!("v2.blocks.{i}.");
            for (name, shape) in [
                ("wq", vec![d, d]),
                ("wk", vec![d, d]),
                ("wv", vec![d, d]),
                ("w1", vec![d, f]),
                ("w2", vec![f, d]),
            ] {
                push(format!("{p}{name}"), shape, true);
            }
        }
        push("v2.out.weight".into(), vec![d, d], true);
        push("v2.out.bias".into(), vec![d], false);
    } else if cfg.use_sequence {
        push(
            format!("{V1_PREFIX}action_emb_module.weight"),
            vec![v1.action_rows(), v1.action_emb_dim],
            false,
        );
        for i in 0..v1.num_layer {
            let p = format!("{V1_PREFIX}transformer_encoder.layers.{i}.");
            for (name, shape, decay) in [
                ("self_attn.in_proj_weight", vec![3 * d, d], true),
                ("self_attn.in_proj_bias", vec![3 * d], false),
                ("self_attn.out_proj.weight", vec![d, d], true),
                ("self_attn.out_proj.bias", vec![d], false),
                ("linear1.weight", vec![ff, d], true),
                ("linear1.bias", vec![ff], false),
                ("linear2.weight", vec![d, ff], true),
                ("linear2.bias", vec![d], false),
                ("norm1.weight", vec![d], false),
                ("norm1.bias", vec![d], false),
                ("norm2.weight", vec![d], false),
                ("norm2.bias", vec![d], false),
            ] {
                push(format!("{p}{name}"), shape, decay);
            }
        }
        if v1.concat_max_pool {
            push(format!("{V1_PREFIX}out_linear.weight"), vec![d, d], true);
            push(format!("{V1_PREFIX}out_linear.bias"), vec![d], false);
        }
    }
    let n = cfg.feature_dim();
    for i in 0..cfg.heads.cross_layers {
        push(format!("{HEADS_PREFIX}cross.{i}.weight"), vec![n, n], true);
        push(format!("{HEADS_PREFIX}cross.{i}.bias"), vec![n], false);
    }
    let mut width = n;
    for (i, &h) in cfg.heads.mlp_hidden.iter().enumerate() {
        push(
            format!("{HEADS_PREFIX}mlp.{i}.weight"),
            vec![h, width],
            true,
        );
        push(format!("{HEADS_PREFIX}mlp.{i}.bias"), vec![h], false);
        width = h;
    }
    let heads = cfg.heads.heads.len();
    push(
        format!("{HEADS_PREFIX}out.weight"),
        vec![heads, width],
        true,
    );
    push(format!("{HEADS_PREFIX}out.bias"), vec![heads], false);
    if cfg.nal {
        push(NAL_PROJ.to_string(), vec![di, d_nal], true);
    }
    out
}

impl Params {
    /// All-zero parameters with the given tensors `(name, shape, trainable,
    /// decay)`, laid out in order. Fails on a repeated name.
    pub fn zeros(
        tensors: impl IntoIterator<Item = (String, Vec<usize>, bool, bool)>,
    ) -> Result<Self, TrainError> {
        let mut p = Params::default();
        let mut offset = 0;
        for (name, shape, trainable, decay) in tensors {
            let len = shape.iter().product();
            if p.index.insert(name.clone(), p.specs.len()).is_some() {
                return Err(TrainError::Params(format!("tensor `{name}` appears twice")));
            }
            p.specs.push(ParamSpec {
                name,
                shape,
                offset,
                len,
                trainable,
                decay,
            });
            offset += len;
        }
        p.data = vec![0.0; offset];
        Ok(p)
    }

    /// All-zero parameters in the layout of `cfg` (see [`layout`]).
    pub fn for_config(cfg: &NetConfig) -> Result<Self, TrainError> {
        Self::zeros(layout(cfg))
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every value, in layout order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Every value, mutable (for an optimiser step).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The tensors, in layout order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The tensor named `name`.
    pub fn spec(&self, name: &str) -> Option<&ParamSpec> {
        self.index.get(name).map(|&i| &self.specs[i])
    }

    /// Where tensor `name` lives in the flat vector (and in a gradient vector).
    pub fn range(&self, name: &str) -> Option<Range<usize>> {
        self.spec(name).map(ParamSpec::range)
    }

    /// The values of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.range(name).map(|r| &self.data[r])
    }

    /// The values of tensor `name`, mutable.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        self.range(name).map(|r| &mut self.data[r])
    }

    /// The part of `grads` (same layout) that belongs to tensor `name`.
    pub fn grad<'g>(&self, grads: &'g [f32], name: &str) -> Option<&'g [f32]> {
        self.range(name).and_then(|r| grads.get(r))
    }

    /// Ranges of the tensors weight decay applies to.
    pub fn decay_ranges(&self) -> Vec<Range<usize>> {
        self.specs
            .iter()
            .filter(|s| s.decay)
            .map(ParamSpec::range)
            .collect()
    }

    /// Ranges of the tensors training must leave unchanged (their gradients
    /// are always zero).
    pub fn frozen_ranges(&self) -> Vec<Range<usize>> {
        self.specs
            .iter()
            .filter(|s| !s.trainable)
            .map(ParamSpec::range)
            .collect()
    }

    /// Every tensor under its name (no metadata).
    pub fn to_tensor_map(&self) -> TensorMap {
        let mut map = TensorMap::new();
        for s in &self.specs {
            map.tensors.insert(
                s.name.clone(),
                transact_model::weights::Tensor::F32 {
                    shape: s.shape.clone(),
                    data: self.data[s.range()].to_vec(),
                },
            );
        }
        map
    }

    /// Overwrites every tensor of this layout with the one of the same name
    /// in `map`, checking shapes and finiteness. Tensors of `map` not in the
    /// layout are ignored; a missing one is an error.
    pub fn load_tensor_map(&mut self, map: &TensorMap) -> Result<(), TrainError> {
        for s in &self.specs {
            let v = map.f32(&s.name, &s.shape)?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(TrainError::Params(format!(
                    "tensor `{}` holds a non-finite value at index {i}",
                    s.name
                )));
            }
            self.data[s.range()].copy_from_slice(v);
        }
        Ok(())
    }

    /// Parameters in the layout of `cfg`, read from `map` (as written by
    /// [`Params::to_tensor_map`]).
    pub fn from_tensor_map(cfg: &NetConfig, map: &TensorMap) -> Result<Self, TrainError> {
        cfg.validate()?;
        let mut p = Self::for_config(cfg)?;
        p.load_tensor_map(map)?;
        Ok(p)
    }

    /// Parameters of the network `cfg` from a serving model and an item
    /// table (`item_rows × d_item` values). Tensors the model does not have
    /// (the NAL projection) keep the initialisation of
    /// [`crate::net::Net::new`] with `seed`. The network must use the
    /// sequence, and its config must match the model's.
    pub fn from_ranking_model(
        cfg: &NetConfig,
        model: &RankingModel,
        items: &[f32],
        seed: u64,
    ) -> Result<Self, TrainError> {
        if !cfg.use_sequence {
            return Err(TrainError::Config(
                "a ranking model has a sequence encoder; this network does not use one".into(),
            ));
        }
        let same_encoder = match &cfg.v2 {
            Some(v2) => model.v2().is_some_and(|e| e.config() == v2),
            None => model.v1().is_some_and(|e| e.config() == &cfg.v1),
        };
        if !same_encoder || model.heads().config() != &cfg.heads {
            return Err(TrainError::Config(
                "the ranking model's encoder or heads config differs from the network's".into(),
            ));
        }
        let (_, mut p) = crate::net::Net::new(cfg.clone(), seed)?;
        let mut map = model.to_tensors()?;
        map.tensors.insert(
            ITEMS.into(),
            transact_model::weights::Tensor::F32 {
                shape: vec![cfg.item_rows, cfg.v1.item_emb_dim],
                data: items.to_vec(),
            },
        );
        if let (Some(r), true) = (p.range(NAL_PROJ), cfg.nal) {
            let shape = p.specs[p.index[NAL_PROJ]].shape.clone();
            map.insert_f32(NAL_PROJ, shape, p.data[r].to_vec())?;
        }
        if items.len() != cfg.item_rows * cfg.v1.item_emb_dim {
            return Err(TrainError::Params(format!(
                "item table has {} values, expected {} rows × {}",
                items.len(),
                cfg.item_rows,
                cfg.v1.item_emb_dim
            )));
        }
        p.load_tensor_map(&map)?;
        Ok(p)
    }

    /// The serving model's tensors and metadata (what
    /// [`RankingModel::to_tensors`] writes): every `v1.*` and `heads.*`
    /// tensor plus the configs. Fails for the no-sequence baseline.
    pub fn ranking_tensor_map(&self, cfg: &NetConfig) -> Result<TensorMap, TrainError> {
        if !cfg.use_sequence {
            return Err(TrainError::Config(
                "the no-sequence baseline has no serving-model form".into(),
            ));
        }
        let mut map = TensorMap::new();
        for s in &self.specs {
            if s.name.starts_with(V1_PREFIX)
                || s.name.starts_with(V2_PREFIX)
                || s.name.starts_with(HEADS_PREFIX)
            {
                map.insert_f32(
                    s.name.clone(),
                    s.shape.clone(),
                    self.data[s.range()].to_vec(),
                )?;
            }
        }
        match &cfg.v2 {
            Some(v2) => map
                .metadata
                .insert(transact_model::v2::V2_CONFIG_KEY.into(), to_json(v2)?),
            None => map
                .metadata
                .insert(transact_model::v1::CONFIG_KEY.into(), to_json(&cfg.v1)?),
        };
        map.metadata
            .insert(HEADS_CONFIG_KEY.into(), to_json(&cfg.heads)?);
        map.metadata
            .insert(FORMAT_KEY.into(), FORMAT_RANKING.into());
        Ok(map)
    }

    /// The serving model these parameters define (the item table and the
    /// NAL projection are not part of it).
    pub fn to_ranking_model(&self, cfg: &NetConfig) -> Result<RankingModel, TrainError> {
        Ok(RankingModel::from_tensors(&self.ranking_tensor_map(cfg)?)?)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, TrainError> {
    serde_json::to_string(v).map_err(|e| TrainError::Config(e.to_string()))
}
