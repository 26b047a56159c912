//! Model configurations. Each serialises to JSON, which weights files carry
//! in their metadata.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How raw action ids map to rows of the action embedding table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocabMode {
    /// This project's mapping: the `i`-th smallest vocabulary id → row `i + 1`;
    /// row 0 is padding alone. The table has `|V| + 1` rows.
    #[default]
    Padded,
    /// The reference PyTorch module's mapping: the `i`-th smallest id → row `i`,
    /// so the smallest id shares row 0 with padding and is masked like it.
    /// The table has `|V|` rows. Only for importing the reference's weights.
    Reference,
}

/// TransAct V1 (model-spec §2). Field names follow the reference module's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct V1Config {
    /// Sequence length `S` (newest actions kept).
    pub seq_len: usize,
    /// `K`: newest encoder output positions kept in the output (0 = all `S`).
    pub latest_n_emb: usize,
    /// Raw action ids of the vocabulary.
    pub action_vocab: Vec<i64>,
    /// How raw ids map to embedding rows.
    pub vocab_mode: VocabMode,
    /// `d_act`.
    pub action_emb_dim: usize,
    /// `d_item`.
    pub item_emb_dim: usize,
    /// `L`.
    pub num_layer: usize,
    /// Attention heads `h` (must divide `d`).
    pub nhead: usize,
    /// FFN hidden width.
    pub dim_feedforward: usize,
    /// Maximum random time window `W` in training, in ms.
    pub time_window_ms: i64,
    /// Concatenate the candidate's embedding to every token (early fusion).
    pub concat_candidate_emb: bool,
    /// Prepend `W_o · maxpool(y) + b_o` to the output.
    pub concat_max_pool: bool,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
}

impl Default for V1Config {
    /// The reference module's defaults: S = 100, K = 10, vocabulary `0..20`,
    /// d = 32 + 32 + 32 = 96, L = 2, h = 2, FFN 32, W = 1 h.
    fn default() -> Self {
        Self {
            seq_len: 100,
            latest_n_emb: 10,
            action_vocab: (0..20).collect(),
            vocab_mode: VocabMode::Padded,
            action_emb_dim: 32,
            item_emb_dim: 32,
            num_layer: 2,
            nhead: 2,
            dim_feedforward: 32,
            time_window_ms: 60 * 60 * 1000,
            concat_candidate_emb: true,
            concat_max_pool: true,
            layer_norm_eps: 1e-5,
        }
    }
}

impl V1Config {
    /// Model width `d = d_act + d_item (+ d_item with early fusion)`.
    pub fn d_model(&self) -> usize {
        self.action_emb_dim + self.item_emb_dim * if self.concat_candidate_emb { 2 } else { 1 }
    }

    /// Number of output positions kept besides the max-pool: `K`, or `S` when `K = 0`.
    pub fn kept_positions(&self) -> usize {
        if self.latest_n_emb == 0 {
            self.seq_len
        } else {
            self.latest_n_emb.min(self.seq_len)
        }
    }

    /// Output width per candidate: `(K + 1)·d` with max-pool, `K·d` without.
    pub fn output_dim(&self) -> usize {
        (self.kept_positions() + usize::from(self.concat_max_pool)) * self.d_model()
    }

    /// Rows of the action embedding table.
    pub fn action_rows(&self) -> usize {
        match self.vocab_mode {
            VocabMode::Padded => self.action_vocab.len() + 1,
            VocabMode::Reference => self.action_vocab.len(),
        }
    }

    /// Embedding row of raw action id `id`; `None` for ids outside the
    /// vocabulary. Row 0 means "padding" (the position is masked).
    /// Allocates nothing: `O(|V|)` over the (small) vocabulary.
    pub fn action_row(&self, id: i64) -> Option<usize> {
        if !self.action_vocab.contains(&id) {
            return None;
        }
        let rank = self.action_vocab.iter().filter(|&&v| v < id).count();
        Some(match self.vocab_mode {
            VocabMode::Padded => rank + 1,
            VocabMode::Reference => rank,
        })
    }

    /// Checks every dimension for consistency.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.seq_len == 0 {
            return bad("seq_len must be at least 1".into());
        }
        if self.action_vocab.is_empty() {
            return bad("action_vocab is empty".into());
        }
        let mut v = self.action_vocab.clone();
        v.sort_unstable();
        v.dedup();
        if v.len() != self.action_vocab.len() {
            return bad("action_vocab holds duplicate ids".into());
        }
        if v.iter().any(|&id| id < 0) {
            return bad("action_vocab ids must be non-negative (-1 means padding)".into());
        }
        if self.item_emb_dim == 0 || self.num_layer == 0 || self.dim_feedforward == 0 {
            return bad("item_emb_dim, num_layer and dim_feedforward must be positive".into());
        }
        // d_model() and output_dim() must not overflow (a config read from
        // a file may claim any width).
        let d = self
            .item_emb_dim
            .checked_mul(if self.concat_candidate_emb { 2 } else { 1 })
            .and_then(|w| w.checked_add(self.action_emb_dim));
        let out = d.and_then(|d| {
            self.kept_positions()
                .checked_add(usize::from(self.concat_max_pool))?
                .checked_mul(d)
        });
        if out.is_none() {
            return bad("the model width or output width overflows".into());
        }
        if self.nhead == 0 || !self.d_model().is_multiple_of(self.nhead) {
            return bad(format!(
                "nhead {} must divide d_model {}",
                self.nhead,
                self.d_model()
            ));
        }
        if self.time_window_ms < 0 {
            return bad("time_window_ms must be non-negative".into());
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return bad("layer_norm_eps must be positive".into());
        }
        Ok(())
    }
}

/// The TransAct V2 encoder (model-spec §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct V2Config {
    /// Maximum token count `|S_all|` (rows of the position table).
    pub seq_len: usize,
    /// `d_item`; the model width is `2·d_item` (`[e_t ; e_c]`).
    pub item_emb_dim: usize,
    /// Number of action types in the multi-hot field (bit `i` of a token's
    /// action mask selects row `i` of the action table). At most 32.
    pub num_action_types: usize,
    /// Number of surfaces (rows of the surface table).
    pub num_surfaces: usize,
    /// `L`.
    pub num_layer: usize,
    /// FFN hidden width.
    pub dim_feedforward: usize,
    /// `K`: newest positions kept in the output.
    pub latest_n_emb: usize,
    /// Apply the causal mask (tokens are oldest first; a token attends to itself and older ones).
    pub causal: bool,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
}

impl Default for V2Config {
    /// 192 tokens, d = 64, FFN 32, L = 2, K = 10, causal (the token
    /// selection is the feature contract's: `transact_features::LifelongConfig`).
    fn default() -> Self {
        Self {
            seq_len: 192,
            item_emb_dim: 32,
            num_action_types: 20,
            num_surfaces: 8,
            num_layer: 2,
            dim_feedforward: 32,
            latest_n_emb: 10,
            causal: true,
            layer_norm_eps: 1e-5,
        }
    }
}

impl V2Config {
    /// Model width `d = 2·d_item`.
    pub fn d_model(&self) -> usize {
        2 * self.item_emb_dim
    }

    /// Output width per candidate: `(K + 1)·d`.
    pub fn output_dim(&self) -> usize {
        (self.latest_n_emb.min(self.seq_len) + 1) * self.d_model()
    }

    /// Checks every dimension for consistency.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidConfig(m.to_string()));
        if self.seq_len == 0 || self.item_emb_dim == 0 || self.num_layer == 0 {
            return bad("seq_len, item_emb_dim and num_layer must be positive");
        }
        if self.dim_feedforward == 0 {
            return bad("dim_feedforward must be positive");
        }
        // d_model() and output_dim() must not overflow (a config read from
        // a file may claim any width).
        let out = self.item_emb_dim.checked_mul(2).and_then(|d| {
            self.latest_n_emb
                .min(self.seq_len)
                .checked_add(1)?
                .checked_mul(d)
        });
        if out.is_none() {
            return bad("the model width or output width overflows");
        }
        if self.num_action_types == 0 || self.num_action_types > 32 {
            return bad("num_action_types must be in 1..=32 (multi-hot u32 mask)");
        }
        if self.num_surfaces == 0 {
            return bad("num_surfaces must be positive");
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return bad("layer_norm_eps must be positive");
        }
        Ok(())
    }
}

/// The ranking head: features → DCN v2 → MLP → one logit per action head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadsConfig {
    /// Names of the action heads, in logit order.
    pub heads: Vec<String>,
    /// Width of the optional user embedding feature (0 = none).
    pub user_emb_dim: usize,
    /// Width of the optional context feature vector (0 = none).
    pub context_dim: usize,
    /// Number of full-rank DCN v2 cross layers.
    pub cross_layers: usize,
    /// Hidden widths of the MLP after the cross network (ReLU between).
    pub mlp_hidden: Vec<usize>,
}

impl Default for HeadsConfig {
    /// Heads repin, click, hide; 2 cross layers; MLP 256 → 64.
    fn default() -> Self {
        Self {
            heads: vec!["repin".into(), "click".into(), "hide".into()],
            user_emb_dim: 0,
            context_dim: 0,
            cross_layers: 2,
            mlp_hidden: vec![256, 64],
        }
    }
}

impl HeadsConfig {
    /// Width of the feature vector the head reads, given the sequence
    /// encoder's output width and the item embedding width:
    /// `[seq_out ; e_c ; user ; context]`. Saturates at `usize::MAX` (a
    /// width no weight tensor's shape matches) rather than overflowing on
    /// absurd widths read from a file.
    pub fn input_dim(&self, seq_out_dim: usize, item_emb_dim: usize) -> usize {
        seq_out_dim
            .saturating_add(item_emb_dim)
            .saturating_add(self.user_emb_dim)
            .saturating_add(self.context_dim)
    }

    /// Checks every dimension for consistency.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.heads.is_empty() {
            return Err(ModelError::InvalidConfig(
                "at least one head is needed".into(),
            ));
        }
        if self.mlp_hidden.contains(&0) {
            return Err(ModelError::InvalidConfig(
                "MLP widths must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_defaults_give_d96_and_1056_outputs() {
        let c = V1Config::default();
        c.validate().unwrap();
        assert_eq!(c.d_model(), 96);
        assert_eq!(c.output_dim(), 1056);
        assert_eq!(c.action_rows(), 21);
        assert_eq!(c.action_row(0), Some(1));
        assert_eq!(c.action_row(-1), None);
        let r = V1Config {
            vocab_mode: VocabMode::Reference,
            ..c
        };
        assert_eq!(r.action_row(0), Some(0));
        assert_eq!(r.action_row(19), Some(19));
        assert_eq!(r.action_rows(), 20);
    }

    #[test]
    fn bad_head_count_is_rejected() {
        let c = V1Config {
            nhead: 5,
            ..V1Config::default()
        };
        assert!(c.validate().is_err());
    }
}
