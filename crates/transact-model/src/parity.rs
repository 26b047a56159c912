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
//!   saying which masked-row behaviour the recording used (model-spec §2.5):
//!   `"zero"`, `"computed"`, or `"auto"` (the default).
//!
//! **`auto`** reproduces PyTorch's own choice. In inference mode
//! `nn.TransformerEncoder` takes its packed (nested-tensor) fast path, which
//! returns zeros at masked positions, only when the head count is even and
//! every row's key padding mask is *left-aligned* (the unmasked positions of
//! each row form a prefix); otherwise it runs the regular path for the whole
//! batch, which computes the masked rows like any other. A batch where a
//! future action is masked ahead of older, unmasked ones is therefore
//! recorded with computed rows, and one where only a tail is masked with
//! zeros.
//!
//! [`check_parity_file`] imports the weights with
//! [`VocabMode::Reference`], runs the naive
//! reference forward in inference mode and, when masked rows are zero, the
//! de-duplicated forward too (each example as its own request with `B = 1`,
//! with the first layer both per token and factored), and reports the
//! largest differences from the recording.

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
    /// The masked-row behaviour the recording was compared against.
    pub masked_rows: MaskedRows,
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

/// Which masked-row behaviour the recording used (metadata `masked_rows`);
/// `None` means `auto`.
fn masked_rows_setting(map: &TensorMap) -> Result<Option<MaskedRows>, ModelError> {
    let raw = match map.metadata.get("masked_rows") {
        None => return Ok(None),
        Some(raw) => raw,
    };
    // Accept both JSON text (`"zero"`) and the bare word.
    let word: String = serde_json::from_str(raw).unwrap_or_else(|_| raw.trim().to_string());
    match word.as_str() {
        "zero" => Ok(Some(MaskedRows::Zero)),
        "computed" => Ok(Some(MaskedRows::Computed)),
        "auto" => Ok(None),
        other => Err(ModelError::Format {
            path: "metadata `masked_rows`".into(),
            detail: format!("`{other}` is not \"zero\", \"computed\" or \"auto\""),
        }),
    }
}

/// PyTorch's choice in inference mode: zeros (packed fast path) iff the head
/// count is even and every row's mask is left-aligned.
fn pytorch_masked_rows(cfg: &V1Config, masked: &[bool]) -> MaskedRows {
    let s = cfg.seq_len;
    let left_aligned = s > 0
        && masked.chunks(s).all(|row| {
            // Once a position is masked, every later one must be too.
            row.windows(2).all(|w| !w[0] || w[1])
        });
    if cfg.nhead.is_multiple_of(2) && left_aligned {
        MaskedRows::Zero
    } else {
        MaskedRows::Computed
    }
}

/// Checks that tensor `name` has `shape`.
fn expect_shape(name: &str, got: &[usize], shape: &[usize]) -> Result<(), ModelError> {
    if got == shape {
        Ok(())
    } else {
        Err(ModelError::TensorShape {
            name: name.into(),
            expected: shape.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// Reads a parity file and compares both forwards with its recorded output.
pub fn check_parity_file(path: &Path) -> Result<ParityReport, ModelError> {
    check_parity_map(&TensorMap::load(path)?)
}

/// [`check_parity_file`] on an already loaded map.
pub fn check_parity_map(map: &TensorMap) -> Result<ParityReport, ModelError> {
    let cfg = parity_config(map)?;
    let setting = masked_rows_setting(map)?;
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
    let rows_mode = match setting {
        Some(mode) => mode,
        None => {
            let (_, masked) = model.batch_masks(&batch, 0)?;
            pytorch_masked_rows(&cfg, &masked)
        }
    };
    let mut got = vec![0.0f32; b * od];
    model.forward_batch_reference(&batch, rows_mode, &mut got)?;
    let (max_abs_diff, worst_index) = max_diff(&got, expected);

    let max_abs_diff_fast = if rows_mode == MaskedRows::Zero {
        let n = s.min(cfg.seq_len);
        let mut worst = 0.0f32;
        let mut one = vec![0.0f32; od];
        // A second copy that takes the factored first layer even for B = 1,
        // so that both first-layer variants meet the recording.
        let mut factored = model.clone();
        factored.factored_min_candidates = 1;
        for ex in 0..b {
            let req = V1Request {
                action_types: &ids[ex * s..ex * s + n],
                item_embeddings: &items[ex * s * di..(ex * s + n) * di],
                action_times_ms: &times[ex * s..ex * s + n],
                request_time_ms: req_times[ex],
                candidates: &cands[ex * di..(ex + 1) * di],
            };
            for m in [&model, &factored] {
                m.forward_request(&req, &mut one)?;
                worst = worst.max(max_diff(&one, &expected[ex * od..(ex + 1) * od]).0);
            }
        }
        Some(worst)
    } else {
        None
    };
    Ok(ParityReport {
        batch: b,
        out_dim: od,
        max_abs_diff,
        max_abs_diff_fast,
        worst_index,
        masked_rows: rows_mode,
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A parity file built in memory: a random model under the reference
    /// names, inputs with padding and future actions, and the expected output
    /// from the naive forward with `rows`.
    fn fixture(rows: MaskedRows) -> TensorMap {
        let cfg = V1Config {
            seq_len: 9,
            latest_n_emb: 4,
            action_vocab: vec![0, 1, 2, 3, 4, 5],
            vocab_mode: VocabMode::Reference,
            action_emb_dim: 4,
            item_emb_dim: 6,
            num_layer: 2,
            nhead: 2,
            dim_feedforward: 8,
            ..V1Config::default()
        };
        let model = TransActV1::new_random(cfg.clone(), 99).unwrap();
        let mut map = TensorMap::new();
        for (name, t) in model.to_tensors().tensors {
            map.tensors
                .insert(name.trim_start_matches("v1.").to_string(), t);
        }
        let (b, s, di) = (5usize, 11usize, cfg.item_emb_dim);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let now = 1_700_000_000_000i64;
        let mut ids = Vec::new();
        let mut times = Vec::new();
        for ex in 0..b {
            let len = [11, 6, 3, 9, 1][ex];
            for p in 0..s {
                let padded = p >= len;
                ids.push(if padded { -1 } else { rng.random_range(-1..6) });
                let future = !padded && rng.random_bool(0.25);
                times.push(if future {
                    now + 5_000
                } else {
                    now - rng.random_range(0..500_000)
                });
            }
        }
        let items: Vec<f32> = (0..b * s * di)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let cands: Vec<f32> = (0..b * di).map(|_| rng.random_range(-1.0..1.0)).collect();
        let req = vec![now; b];
        let batch = V1Batch {
            batch: b,
            seq: s,
            action_types: &ids,
            item_embeddings: &items,
            action_times_ms: &times,
            request_times_ms: &req,
            candidates: &cands,
        };
        let od = model.output_dim();
        let mut expected = vec![0.0f32; b * od];
        model
            .forward_batch_reference(&batch, rows, &mut expected)
            .unwrap();
        map.insert_i64("input.action_type_seq", vec![b, s], ids)
            .unwrap();
        map.insert_f32("input.item_embedding_seq", vec![b, s, di], items)
            .unwrap();
        map.insert_i64("input.action_time_seq", vec![b, s], times)
            .unwrap();
        map.insert_i64("input.request_time", vec![b], req).unwrap();
        map.insert_f32("input.item_embedding", vec![b, di], cands)
            .unwrap();
        map.insert_f32("expected.output", vec![b, od], expected)
            .unwrap();
        let meta = [
            ("seq_len", cfg.seq_len.to_string()),
            ("latest_n_emb", cfg.latest_n_emb.to_string()),
            (
                "action_vocab",
                serde_json::to_string(&cfg.action_vocab).unwrap(),
            ),
            ("action_emb_dim", cfg.action_emb_dim.to_string()),
            ("item_emb_dim", cfg.item_emb_dim.to_string()),
            ("num_layer", cfg.num_layer.to_string()),
            ("nhead", cfg.nhead.to_string()),
            ("dim_feedforward", cfg.dim_feedforward.to_string()),
            ("time_window_ms", cfg.time_window_ms.to_string()),
            ("concat_candidate_emb", "true".to_string()),
            ("concat_max_pool", "true".to_string()),
        ];
        for (k, v) in meta {
            map.metadata.insert(k.to_string(), v);
        }
        let word = match rows {
            MaskedRows::Zero => "\"zero\"",
            MaskedRows::Computed => "\"computed\"",
        };
        map.metadata.insert("masked_rows".into(), word.into());
        map
    }

    #[test]
    fn an_in_memory_fixture_passes_through_a_file() {
        let map = fixture(MaskedRows::Zero);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parity.safetensors");
        map.save(&path).unwrap();
        let report = check_parity_file(&path).unwrap();
        assert_eq!(report.batch, 5);
        assert_eq!(report.out_dim, 5 * 16);
        assert!(report.max_abs_diff <= 1e-6, "{report:?}");
        let fast = report.max_abs_diff_fast.unwrap();
        assert!(fast <= 1e-4, "{report:?}");
        assert!(report.passes(1e-4));
    }

    #[test]
    fn a_corrupted_expected_value_fails_and_is_located() {
        let mut map = fixture(MaskedRows::Zero);
        if let Some(crate::weights::Tensor::F32 { data, .. }) =
            map.tensors.get_mut("expected.output")
        {
            data[93] += 1e-3;
        }
        let report = check_parity_map(&map).unwrap();
        assert!(report.max_abs_diff > 1e-4, "{report:?}");
        assert_eq!(report.worst_index, 93);
        assert!(report.max_abs_diff_fast.unwrap() > 1e-4);
        assert!(!report.passes(1e-4));
    }

    #[test]
    fn computed_masked_rows_skip_the_fast_path() {
        let map = fixture(MaskedRows::Computed);
        let report = check_parity_map(&map).unwrap();
        assert!(report.max_abs_diff <= 1e-6, "{report:?}");
        assert_eq!(report.max_abs_diff_fast, None);
        // The same recording read as "zero" does not match: masked rows differ.
        let mut map = map;
        map.metadata.insert("masked_rows".into(), "zero".into());
        assert!(check_parity_map(&map).unwrap().max_abs_diff > 1e-4);
        map.metadata
            .insert("masked_rows".into(), "sometimes".into());
        assert!(check_parity_map(&map).is_err());
    }

    #[test]
    fn auto_follows_pytorchs_fast_path_rule() {
        // The fixture masks future actions ahead of older ones: not left-aligned,
        // so PyTorch computes the masked rows.
        let mut map = fixture(MaskedRows::Computed);
        map.metadata.remove("masked_rows");
        let report = check_parity_map(&map).unwrap();
        assert_eq!(report.masked_rows, MaskedRows::Computed);
        assert!(report.max_abs_diff <= 1e-6, "{report:?}");

        let cfg = V1Config {
            seq_len: 4,
            nhead: 2,
            ..V1Config::default()
        };
        let tail_only = [false, false, true, true, false, true, true, true];
        assert_eq!(pytorch_masked_rows(&cfg, &tail_only), MaskedRows::Zero);
        let gap = [false, true, false, true, false, false, false, false];
        assert_eq!(pytorch_masked_rows(&cfg, &gap), MaskedRows::Computed);
        let odd = V1Config { nhead: 3, ..cfg };
        assert_eq!(pytorch_masked_rows(&odd, &tail_only), MaskedRows::Computed);
    }

    #[test]
    fn the_recorded_pytorch_fixtures_match_when_present() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        for (name, mode) in [
            ("parity_v1.safetensors", MaskedRows::Computed),
            ("parity_v1_left_aligned.safetensors", MaskedRows::Zero),
        ] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let report = check_parity_file(&path).unwrap();
            assert_eq!(report.masked_rows, mode, "{name}");
            assert!(report.passes(1e-4), "{name}: {report:?}");
            assert_eq!(report.max_abs_diff_fast.is_some(), mode == MaskedRows::Zero);
        }
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut map = fixture(MaskedRows::Zero);
        map.metadata.remove("nhead");
        let err = check_parity_map(&map).unwrap_err().to_string();
        assert!(err.contains("nhead"), "{err}");

        let mut map = fixture(MaskedRows::Zero);
        map.tensors.remove("input.action_time_seq");
        let err = check_parity_map(&map).unwrap_err().to_string();
        assert!(err.contains("input.action_time_seq"), "{err}");

        let mut map = fixture(MaskedRows::Zero);
        map.tensors
            .remove("transformer_encoder.layers.1.norm1.weight");
        let err = check_parity_map(&map).unwrap_err().to_string();
        assert!(
            err.contains("transformer_encoder.layers.1.norm1.weight"),
            "{err}"
        );

        let mut map = fixture(MaskedRows::Zero);
        map.insert_f32("input.item_embedding", vec![5, 5], vec![0.0; 25])
            .unwrap();
        let err = check_parity_map(&map).unwrap_err().to_string();
        assert!(err.contains("input.item_embedding"), "{err}");

        let err = check_parity_file(Path::new("/nonexistent/parity.safetensors")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/parity.safetensors"));
    }
}
