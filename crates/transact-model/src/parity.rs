//! Parity with the reference PyTorch module.
//!
//! A parity file is one safetensors file holding:
//!
//! - the reference module's `state_dict` under its own names
//!   (`action_emb_module.weight`, `transformer_encoder.layers.{i}.…`,
//!   `out_linear.…`);
//! - the inputs `input.action_type_seq` (i64 `[B, S]`, `-1` = padding),
//!   `input.item_embedding_seq` (f32 `[B, S, d_item]`), `input.action_time_seq`
//!   (i64 `[B, S]`), `input.request_time` (i64 `[B]`), `input.item_embedding`
//!   (f32 `[B, d_item]`);
//! - the recorded output `expected.output` (f32 `[B, output_dim]`);
//! - the config in the metadata, each value as JSON text: `seq_len`,
//!   `latest_n_emb`, `action_vocab`, `action_emb_dim`, `item_emb_dim`,
//!   `num_layer`, `nhead`, `dim_feedforward`, `time_window_ms`,
//!   `concat_candidate_emb`, `concat_max_pool`; optionally `masked_rows`
//!   (`"zero"`, the default, or `"computed"`) saying which masked-row
//!   behaviour the recording used (model-spec §2.5).
//!
//! [`check_parity_file`] imports the weights with
//! [`VocabMode::Reference`](crate::VocabMode::Reference), runs the naive
//! reference forward in inference mode and, when masked rows are zero, the
//! de-duplicated forward too (each example as its own request with `B = 1`),
//! and reports the largest differences from the recording.

use std::path::Path;

use crate::v1::{MaskedRows, TransActV1, V1Batch, V1Request};
use crate::{ModelError, TensorMap, V1Config, VocabMode};

/// The outcome of [`check_parity_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct ParityReport {
    /// Number of examples `B`.
    pub batch: usize,
    /// Output width per example.
    pub out_dim: usize,
    /// Largest `|reference forward − expected|` over all outputs.
    pub max_abs_diff: f32,
    /// Largest `|de-duplicated forward − expected|`, when it was run
    /// (recordings with zeroed masked rows only).
    pub max_abs_diff_fast: Option<f32>,
    /// Flat index (`example · out_dim + column`) of `max_abs_diff`.
    pub worst_index: usize,
}

impl ParityReport {
    /// Whether every checked difference is at most `tolerance`.
    pub fn passes(&self, tolerance: f32) -> bool {
        self.max_abs_diff <= tolerance && self.max_abs_diff_fast.is_none_or(|f| f <= tolerance)
    }
}

/// The model configuration a parity file describes (reference vocabulary mode).
pub fn parity_config(map: &TensorMap) -> Result<V1Config, ModelError> {
    let cfg = V1Config {
        seq_len: map.meta_json("seq_len")?,
        latest_n_emb: map.meta_json("latest_n_emb")?,
        action_vocab: map.meta_json("action_vocab")?,
        vocab_mode: VocabMode::Reference,
        action_emb_dim: map.meta_json("action_emb_dim")?,
        item_emb_dim: map.meta_json("item_emb_dim")?,
        num_layer: map.meta_json("num_layer")?,
        nhead: map.meta_json("nhead")?,
        dim_feedforward: map.meta_json("dim_feedforward")?,
        time_window_ms: map.meta_json("time_window_ms")?,
        concat_candidate_emb: map.meta_json("concat_candidate_emb")?,
        concat_max_pool: map.meta_json("concat_max_pool")?,
        ..V1Config::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Which masked-row behaviour the recording used (metadata `masked_rows`).
fn masked_rows(map: &TensorMap) -> Result<MaskedRows, ModelError> {
    let raw = match map.metadata.get("masked_rows") {
        None => return Ok(MaskedRows::Zero),
        Some(raw) => raw,
    };
    // Accept both JSON text (`"zero"`) and the bare word.
    let word: String = serde_json::from_str(raw).unwrap_or_else(|_| raw.trim().to_string());
    match word.as_str() {
        "zero" => Ok(MaskedRows::Zero),
        "computed" => Ok(MaskedRows::Computed),
        other => Err(ModelError::Format {
            path: "metadata `masked_rows`".into(),
            detail: format!("`{other}` is neither \"zero\" nor \"computed\""),
        }),
    }
}

/// Checks that tensor `name` has `shape`.
fn expect_shape(name: &str, got: &[usize], shape: &[usize]) -> Result<(), ModelError> {
    if got == shape {
        Ok(())
    } else {
        Err(ModelError::TensorShape { name: name.into(), expected: shape.to_vec(), got: got.to_vec() })
    }
}

/// Reads a parity file and compares both forwards with its recorded output.
pub fn check_parity_file(path: &Path) -> Result<ParityReport, ModelError> {
    check_parity_map(&TensorMap::load(path)?)
}

/// [`check_parity_file`] on an already loaded map.
pub fn check_parity_map(map: &TensorMap) -> Result<ParityReport, ModelError> {
    let cfg = parity_config(map)?;
    let rows_mode = masked_rows(map)?;
    let model = TransActV1::from_reference_state_dict(map, cfg.clone())?;
    let di = cfg.item_emb_dim;

    let (shape, ids) = map.i64_any("input.action_type_seq")?;
    let (b, s) = match *shape {
        [b, s] => (b, s),
        _ => {
            return Err(ModelError::TensorShape {
                name: "input.action_type_seq".into(),
                expected: vec![0, cfg.seq_len],
                got: shape.to_vec(),
            });
        }
    };
    let (shape, items) = map.f32_any("input.item_embedding_seq")?;
    expect_shape("input.item_embedding_seq", shape, &[b, s, di])?;
    let (shape, times) = map.i64_any("input.action_time_seq")?;
    expect_shape("input.action_time_seq", shape, &[b, s])?;
    let (shape, req_times) = map.i64_any("input.request_time")?;
    expect_shape("input.request_time", shape, &[b])?;
    let (shape, cands) = map.f32_any("input.item_embedding")?;
    expect_shape("input.item_embedding", shape, &[b, di])?;
    let od = model.output_dim();
    let (shape, expected) = map.f32_any("expected.output")?;
    expect_shape("expected.output", shape, &[b, od])?;

    let batch = V1Batch {
        batch: b,
        seq: s,
        action_types: ids,
        item_embeddings: items,
        action_times_ms: times,
        request_times_ms: req_times,
        candidates: cands,
    };
    let mut got = vec![0.0f32; b * od];
    model.forward_batch_reference(&batch, rows_mode, &mut got)?;
    let (max_abs_diff, worst_index) = max_diff(&got, expected);

    let max_abs_diff_fast = if rows_mode == MaskedRows::Zero {
        let n = s.min(cfg.seq_len);
        let mut worst = 0.0f32;
        let mut one = vec![0.0f32; od];
        for ex in 0..b {
            let req = V1Request {
                action_types: &ids[ex * s..ex * s + n],
                item_embeddings: &items[ex * s * di..(ex * s + n) * di],
                action_times_ms: &times[ex * s..ex * s + n],
                request_time_ms: req_times[ex],
                candidates: &cands[ex * di..(ex + 1) * di],
            };
            model.forward_request(&req, &mut one)?;
            worst = worst.max(max_diff(&one, &expected[ex * od..(ex + 1) * od]).0);
        }
        Some(worst)
    } else {
        None
    };
    Ok(ParityReport { batch: b, out_dim: od, max_abs_diff, max_abs_diff_fast, worst_index })
}

/// Largest absolute difference and its index (NaN counts as infinite).
fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let diff = (x - y).abs();
        let diff = if diff.is_nan() { f32::INFINITY } else { diff };
        if diff > worst.0 {
            worst = (diff, i);
        }
    }
    worst
}

