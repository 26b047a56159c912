//! Tests of the V1 weights in and out, and of input validation.

#![allow(clippy::unwrap_used)]

use super::tests::{Case, random_case, run_fast, small_cfg};
use super::*;
use crate::TensorMap;
use crate::VocabMode;

#[test]
fn save_and_load_round_trip() {
    let cfg = V1Config {
        vocab_mode: VocabMode::Reference,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 31).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.safetensors");
    model.save(&path).unwrap();
    let back = TransActV1::load(&path).unwrap();
    assert!(back == model);
    assert_eq!(back.config(), &cfg);
    let case = random_case(&cfg, 6, 3, 2);
    assert_eq!(run_fast(&model, &case, 0), run_fast(&back, &case, 0));
    let map = model.to_tensors();
    assert!(
        map.tensors
            .contains_key("v1.transformer_encoder.layers.1.self_attn.in_proj_weight")
    );
    assert!(map.tensors.contains_key("v1.out_linear.bias"));
    assert!(map.metadata.contains_key("transact.v1_config"));
}

/// The model's tensors under the reference module's own names.
fn reference_names(model: &TransActV1) -> TensorMap {
    let mut map = TensorMap::new();
    for (name, t) in model.to_tensors().tensors {
        map.tensors
            .insert(name.trim_start_matches("v1.").to_string(), t);
    }
    map
}

#[test]
fn reference_state_dict_imports_in_both_vocab_modes() {
    for mode in [VocabMode::Reference, VocabMode::Padded] {
        let cfg = V1Config {
            vocab_mode: mode,
            ..small_cfg()
        };
        let model = TransActV1::new_random(cfg.clone(), 41).unwrap();
        let map = reference_names(&model);
        let rows = map.f32_any("action_emb_module.weight").unwrap().0[0];
        assert_eq!(rows, cfg.action_rows());
        let back = TransActV1::from_reference_state_dict(&map, cfg.clone()).unwrap();
        assert!(back == model);
    }
    // A |V|-row table read with the padded mode (|V| + 1 rows) is a shape error.
    let cfg = V1Config {
        vocab_mode: VocabMode::Reference,
        ..small_cfg()
    };
    let map = reference_names(&TransActV1::new_random(cfg.clone(), 1).unwrap());
    let padded = V1Config {
        vocab_mode: VocabMode::Padded,
        ..cfg
    };
    let err = TransActV1::from_reference_state_dict(&map, padded)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("action_emb_module.weight")
            && err.contains("[4, 4]")
            && err.contains("[5, 4]"),
        "{err}"
    );
}

#[test]
fn reference_import_errors_name_the_tensor_and_shapes() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 1).unwrap();
    let mut map = reference_names(&model);
    let name = "transformer_encoder.layers.1.linear1.weight";
    let ff = cfg.dim_feedforward;
    let d = cfg.d_model();
    map.insert_f32(name, vec![ff + 1, d], vec![0.0; (ff + 1) * d])
        .unwrap();
    let err = TransActV1::from_reference_state_dict(&map, cfg.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains(&format!("[{}, {d}]", ff + 1)) && err.contains(&format!("[{ff}, {d}]")),
        "{err}"
    );

    let mut map = reference_names(&model);
    map.tensors.remove("out_linear.bias");
    let err = TransActV1::from_reference_state_dict(&map, cfg.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out_linear.bias"), "{err}");

    let mut map = reference_names(&model);
    let w = "transformer_encoder.layers.0.norm2.bias";
    map.insert_f32(w, vec![d], vec![f32::NAN; d]).unwrap();
    let err = TransActV1::from_reference_state_dict(&map, cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains(w), "{err}");

    // Without max-pool there is no out_linear to read.
    let cfg = V1Config {
        concat_max_pool: false,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 1).unwrap();
    let map = reference_names(&model);
    assert!(!map.tensors.contains_key("out_linear.weight"));
    assert!(TransActV1::from_reference_state_dict(&map, cfg).is_ok());
}

#[test]
fn from_tensors_without_config_names_the_key() {
    let model = TransActV1::new_random(small_cfg(), 1).unwrap();
    let mut map = model.to_tensors();
    map.metadata.clear();
    let err = TransActV1::from_tensors(&map).unwrap_err().to_string();
    assert!(err.contains("transact.v1_config"), "{err}");
}

#[test]
fn invalid_requests_are_errors() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 1).unwrap();
    let good = random_case(&cfg, 5, 2, 1);
    let od = model.output_dim();
    let run = |c: &Case, out_len: usize| {
        let mut out = vec![0.0; out_len];
        model.forward_request(&c.request(), &mut out)
    };
    assert!(run(&good, 2 * od).is_ok());

    let mut c = good.clone();
    c.cands[3] = f32::NAN;
    assert!(
        matches!(run(&c, 2 * od), Err(ModelError::NonFinite { ref name, index: 3 }) if name == "candidates")
    );
    let mut c = good.clone();
    c.items[7] = f32::INFINITY;
    assert!(
        matches!(run(&c, 2 * od), Err(ModelError::NonFinite { ref name, .. }) if name == "item_embeddings")
    );
    let mut c = good.clone();
    c.items.pop();
    assert!(
        matches!(run(&c, 2 * od), Err(ModelError::Shape { ref name, .. }) if name == "item_embeddings")
    );
    let mut c = good.clone();
    c.times.pop();
    assert!(
        matches!(run(&c, 2 * od), Err(ModelError::Shape { ref name, .. }) if name == "action_times_ms")
    );
    assert!(
        matches!(run(&good, 2 * od - 1), Err(ModelError::Shape { ref name, .. }) if name == "out")
    );
    let c = Case {
        cands: vec![],
        ..good.clone()
    };
    let err = run(&c, 0).unwrap_err().to_string();
    assert!(err.contains("B = 0"), "{err}");
    let mut c = good.clone();
    c.cands.pop();
    assert!(run(&c, 2 * od).is_err());
    let c = random_case(&cfg, cfg.seq_len + 1, 1, 3);
    let err = run(&c, od).unwrap_err().to_string();
    assert!(err.contains("seq_len"), "{err}");
    let mut c = good.clone();
    c.ids[3] = 4;
    let err = run(&c, 2 * od).unwrap_err().to_string();
    assert!(
        err.contains("position 3") && err.contains("action id 4"),
        "{err}"
    );
    let mut out = vec![0.0; 2 * od];
    assert!(
        model
            .forward_request_with_window(&good.request(), -1, &mut out)
            .is_err()
    );
}

#[test]
fn unknown_ids_are_padding_in_the_reference_vocabulary() {
    let cfg = V1Config {
        vocab_mode: VocabMode::Reference,
        ..small_cfg()
    };
    let model = TransActV1::new_random(cfg.clone(), 1).unwrap();
    let mut case = random_case(&cfg, 6, 2, 5);
    case.ids[2] = -1;
    let with_padding = run_fast(&model, &case, 0);
    for unknown in [4, 999, -7] {
        case.ids[2] = unknown;
        assert_eq!(run_fast(&model, &case, 0), with_padding);
    }
    // The smallest vocabulary id shares the padding row.
    case.ids[2] = 3;
    assert_eq!(run_fast(&model, &case, 0), with_padding);
}

#[test]
fn invalid_batches_are_errors() {
    let cfg = small_cfg();
    let model = TransActV1::new_random(cfg.clone(), 1).unwrap();
    let case = random_case(&cfg, 7, 2, 1);
    let (ids, items, times, now) = case.batch_inputs(&cfg);
    let s = cfg.seq_len;
    let batch = V1Batch {
        batch: 2,
        seq: s,
        action_types: &ids,
        item_embeddings: &items,
        action_times_ms: &times,
        request_times_ms: &now,
        candidates: &case.cands,
    };
    let od = model.output_dim();
    let mut out = vec![0.0; 2 * od];
    assert!(
        model
            .forward_batch_reference(&batch, MaskedRows::Zero, &mut out)
            .is_ok()
    );
    let empty = V1Batch { batch: 0, ..batch };
    assert!(
        model
            .forward_batch_reference(&empty, MaskedRows::Zero, &mut [])
            .is_err()
    );
    let short = V1Batch {
        action_times_ms: &times[1..],
        ..batch
    };
    assert!(
        model
            .forward_batch_reference(&short, MaskedRows::Zero, &mut out)
            .is_err()
    );
    let mut bad_ids = ids.clone();
    bad_ids[s + 2] = 4;
    let bad = V1Batch {
        action_types: &bad_ids,
        ..batch
    };
    let err = model
        .forward_batch_reference(&bad, MaskedRows::Zero, &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 1") && err.contains("position 2"),
        "{err}"
    );
}
