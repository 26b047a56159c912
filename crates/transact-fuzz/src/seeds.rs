//! The seed corpus: valid inputs built by the real writers, and broken
//! ones (truncated, flipped bytes, huge length fields, NaN-ish numbers,
//! deep nesting), per target.
//!
//! `transact-fuzz seed-corpus` writes them to `fuzz/corpus/<target>/`;
//! the checked-in corpus was made that way (plus any crash inputs found
//! later, kept after their fix).

use std::collections::BTreeMap;

use transact_embed::{ItemTable, Precision};
use transact_features::{SelectedTokens, TokenPart};
use transact_log::{FeatureLogWriter, WriterOptions};
use transact_model::TensorMap;
use transact_rank::{Candidate, FeatureLogEntry, RankRequest};

use crate::{
    BUNDLE_PARTS, LOG_HEADER_LEN, SNAPSHOT_HEADER_LEN, SNAPSHOT_TRAILER_LEN, bundle_fixture,
    scratch, small_v1_model, small_v2_model, store_fixture,
};

/// A named seed input.
pub type Seed = (String, Vec<u8>);

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> Seed {
    (name.to_string(), bytes.into())
}

/// `bytes` with byte `at` (clamped) XOR-ed with `mask`.
fn flip(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if !b.is_empty() {
        let i = at.min(b.len() - 1);
        b[i] ^= mask;
    }
    b
}

/// `bytes` with `value` (little-endian) written at `at`.
fn put(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if at + value.len() <= b.len() {
        b[at..at + value.len()].copy_from_slice(value);
    }
    b
}

/// The seeds of target `name` (empty for an unknown name).
///
/// # Panics
/// If a valid input cannot be built (a bug in a writer, not input).
pub fn seeds(name: &str) -> Vec<Seed> {
    match name {
        "seq_log" => seq_log(),
        "seq_log_record" => seq_log_record(),
        "seq_snapshot" => seq_snapshot(),
        "seq_snapshot_body" => seq_snapshot_body(),
        "weights" => weights(),
        "item_table" => item_table(),
        "bundle" => bundle(),
        "import_movielens_csv" => text_seeds(&[
            (
                "valid",
                "userId,movieId,rating,timestamp\n1,10,4.5,978300760\n1,11,2.0,978300761\n2,10,3.0,978300762\n",
            ),
            (
                "nan_rating",
                "userId,movieId,rating,timestamp\n1,10,NaN,978300760\n1,11,inf,1\n1,12,-0.0,2\n",
            ),
            (
                "huge_time",
                "userId,movieId,rating,timestamp\n1,10,4,9223372036854775807\n1,10,4,-1\n1,10,4,18446744073709551616\n",
            ),
            (
                "bad_fields",
                "userId,movieId,rating,timestamp\n1,10\n,,,\n1,10,4,5,6\n1,10,1e309,5\n",
            ),
            ("header_only", "userId,movieId,rating,timestamp\n"),
            (
                "crlf",
                "userId,movieId,rating,timestamp\r\n1,10,5,1\r\n2,11,1,2\r\n",
            ),
        ]),
        "import_movielens_dat" => text_seeds(&[
            (
                "valid",
                "1::1193::5::978300760\n1::661::3::978302109\n2::1193::1::978300761\n",
            ),
            (
                "bad",
                "1::1193\n::::::\n1::x::5::1\n1::2::11::1\n1::2::5::1e3\n",
            ),
            (
                "extremes",
                "18446744073709551615::0::0::0\n1::1::10::10413792000\n1::1::10::10413792001\n",
            ),
        ]),
        "import_movielens_udata" => text_seeds(&[
            (
                "valid",
                "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
            ),
            ("spaces", "196 242 3 881250949\n196  243   5 881250950\n"),
            (
                "bad",
                "196\t242\n196\t242\tNaN\t1\n\t\t\t\n196\t242\t3\t-5\n",
            ),
        ]),
        "import_csv" => text_seeds(&[
            (
                "valid",
                "user,item,action,timestamp\nu1,i1,repin,1000\nu1,i2,CLICK,2000\nu2,i1,3,3000\nu2,i3,impression,4000\n",
            ),
            ("no_header", "1,2,save,5\n1,3,view,6\n"),
            (
                "bad",
                "u1,i1,frobnicate,1\nu1,,repin,1\nu1,i1,repin,\nu1,i1,repin,99999999999999999999\n",
            ),
            ("unicode", "ü,☃,hide,1\n\u{feff}u,i,repin,2\n"),
        ]),
        "import_whitespace" => text_seeds(&[
            ("valid", "1 10 11 12\n2 10\n1 13\n"),
            ("one_per_line", "a b\na c\nb c\n"),
            ("bad", "1\n\n   \n2\t3\t4\t5\n"),
            ("tabs_numbers", "1\t2\t3\t4\n"),
        ]),
        "import_embeddings" => import_embeddings(),
        "feature_log" => feature_log(),
        "rank_request" => text_seeds(&[
            (
                "valid",
                r#"{"user": 7, "time_ms": 1700000000000, "candidates": [1, "2", {"id": 3, "embedding": [0.1, -0.2, 0.3, 0.4]}], "top": 2}"#,
            ),
            (
                "features",
                r#"{"user": "u-7", "time_ms": 0, "candidates": [], "user_embedding": [1.0, 2.0], "context": [0.5]}"#,
            ),
            (
                "nan_ish",
                r#"{"user": 7, "time_ms": 1e309, "candidates": [{"id": 3, "embedding": [NaN, 1e39, -1e-50]}]}"#,
            ),
            (
                "overflow",
                r#"{"user": 18446744073709551616, "time_ms": -9223372036854775809, "candidates": [-1], "top": 99999999999999999999}"#,
            ),
            (
                "unknown_field",
                r#"{"user": 7, "time_ms": 1, "candidates": [], "extra": true}"#,
            ),
            ("deep", &format!("{}{}", "[".repeat(600), "]".repeat(600))),
            (
                "deep_candidates",
                &format!(
                    r#"{{"user":1,"time_ms":1,"candidates":[{}]}}"#,
                    "{\"id\":".repeat(150)
                ),
            ),
            (
                "empty_id",
                r#"{"user": "", "time_ms": 1, "candidates": [""]}"#,
            ),
        ]),
        "actions_request" => text_seeds(&[
            (
                "valid",
                r#"{"actions": [{"user": 7, "item": 10, "action": 1, "time_ms": 1700000000000}, {"user": "u", "item": "i", "action": 4, "time_ms": 5, "surface": 2}]}"#,
            ),
            ("empty", r#"{"actions": []}"#),
            (
                "overflow",
                r#"{"actions": [{"user": 7, "item": 10, "action": 65536, "time_ms": 1}]}"#,
            ),
            (
                "nan_ish",
                r#"{"actions": [{"user": 1.5, "item": 1e400, "action": -1, "time_ms": NaN}]}"#,
            ),
            (
                "deep",
                &format!("{{\"actions\":{}{}}}", "[".repeat(200), "]".repeat(200)),
            ),
            ("trailing", r#"{"actions": []} {"actions": []}"#),
        ]),
        _ => Vec::new(),
    }
}

fn text_seeds(items: &[(&str, &str)]) -> Vec<Seed> {
    let mut out: Vec<Seed> = items.iter().map(|(n, t)| seed(n, t.as_bytes())).collect();
    out.push(seed("not_utf8", vec![0xFF, 0xFE, b',', 0x80, b'\n', 0xC3]));
    out
}

fn seq_log() -> Vec<Seed> {
    let f = store_fixture();
    let log = &f.log;
    let first_end = f.record_ends.get(1).copied().unwrap_or(log.len());
    vec![
        seed("valid", log.clone()),
        seed("header_only", log[..LOG_HEADER_LEN].to_vec()),
        seed("short_header", log[..10].to_vec()),
        seed("torn_record", log[..log.len() - 3].to_vec()),
        seed("flipped_payload", flip(log, first_end - 2, 0x40)),
        seed("bad_magic", flip(log, 0, 0x01)),
        seed(
            "huge_length",
            put(log, LOG_HEADER_LEN, &u32::MAX.to_le_bytes()),
        ),
        seed(
            "max_record_plus_one",
            put(log, LOG_HEADER_LEN, &((64u32 << 20) + 1).to_le_bytes()),
        ),
        seed(
            "max_record_exactly",
            put(log, LOG_HEADER_LEN, &(64u32 << 20).to_le_bytes()),
        ),
    ]
}

/// A record payload: `{"Append": [user, [actions…]]}` as rmp-serde writes it.
fn append_payload(user: u64, actions: &[u8], count_marker: &[u8]) -> Vec<u8> {
    let mut p = vec![0x81, 0xA6];
    p.extend_from_slice(b"Append");
    p.push(0x92);
    p.push(0xCF);
    p.extend_from_slice(&user.to_be_bytes());
    p.extend_from_slice(count_marker);
    p.extend_from_slice(actions);
    p
}

fn seq_log_record() -> Vec<Seed> {
    let f = store_fixture();
    let ends = &f.record_ends;
    let record = |i: usize| f.log[ends[i] + 8..ends[i + 1]].to_vec();
    let framed = |keep: u8, payload: Vec<u8>| {
        let mut v = vec![keep, 1];
        v.extend(payload);
        v
    };
    let raw = |keep: u8, tail: Vec<u8>| {
        let mut v = vec![keep, 0];
        v.extend(tail);
        v
    };
    // One action: [item, type, time, surface].
    let one_action = [0x94, 0x05, 0x01, 0xCD, 0x03, 0xE8, 0x00];
    vec![
        seed("valid_record", framed(0, record(0))),
        seed("valid_after_two", framed(2, record(1))),
        seed("all_records", raw(ends.len() as u8 - 1, Vec::new())),
        seed("torn_tail", raw(1, f.log[ends[1]..ends[2] - 1].to_vec())),
        seed(
            "huge_length_raw",
            raw(1, vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1]),
        ),
        seed(
            "one_action",
            framed(1, append_payload(9, &one_action, &[0x91])),
        ),
        seed(
            "huge_array",
            framed(1, append_payload(9, &[], &[0xDD, 0xFF, 0xFF, 0xFF, 0xFF])),
        ),
        seed(
            "huge_str",
            framed(0, vec![0x81, 0xDB, 0xFF, 0xFF, 0xFF, 0xF0, b'A']),
        ),
        seed(
            "huge_bin",
            framed(
                0,
                vec![
                    0x81, 0xA6, b'A', b'p', b'p', b'e', b'n', b'd', 0xC6, 0x7F, 0xFF, 0xFF, 0xFF,
                ],
            ),
        ),
        seed("deep_nesting", framed(0, [0x91].repeat(5000))),
        seed(
            "trailing_byte",
            framed(0, {
                let mut r = record(0);
                r.push(0xC0);
                r
            }),
        ),
        seed(
            "wrong_variant",
            framed(
                0,
                vec![0x81, 0xA6, b'D', b'e', b'l', b'e', b't', b'e', 0xC0],
            ),
        ),
    ]
}

fn valid_snapshot() -> Vec<u8> {
    let f = store_fixture();
    f.snapshot_dir
        .iter()
        .find(|(n, _)| *n == f.snapshot_name)
        .map(|(_, b)| b.clone())
        .expect("fixture snapshot")
}

fn seq_snapshot() -> Vec<Seed> {
    let s = valid_snapshot();
    let body_end = s.len() - SNAPSHOT_TRAILER_LEN;
    vec![
        seed("valid", s.clone()),
        seed("truncated", s[..s.len() - 1].to_vec()),
        seed("too_short", s[..30].to_vec()),
        seed("flipped_body", flip(&s, SNAPSHOT_HEADER_LEN + 3, 0x10)),
        seed("body_len_huge", put(&s, body_end, &u64::MAX.to_le_bytes())),
        seed("version_99", put(&s, 8, &99u32.to_le_bytes())),
        seed("version_1", put(&s, 8, &1u32.to_le_bytes())),
        seed("empty", Vec::new()),
    ]
}

fn seq_snapshot_body() -> Vec<Seed> {
    let s = valid_snapshot();
    let generation = u64::from_le_bytes(s[12..20].try_into().expect("8 bytes"));
    let body = &s[SNAPSHOT_HEADER_LEN..s.len() - SNAPSHOT_TRAILER_LEN];
    let with = |version: u8, b: &[u8]| {
        let mut v = vec![version];
        v.extend_from_slice(b);
        v
    };
    let head = |users: &[u8], actions: &[u8]| {
        let mut h = vec![0x93, 0xCF];
        h.extend_from_slice(&generation.to_be_bytes());
        h.extend_from_slice(users);
        h.extend_from_slice(actions);
        h
    };
    // Version 1: head + SnapUserV1 [user, item_ids, types, times, surfaces].
    let mut v1 = head(&[0x01], &[0x02]);
    v1.extend_from_slice(&[
        0x95, 0x05, 0x92, 0x0A, 0x0B, 0x92, 0x01, 0x02, 0x92, 0xCD, 0x07, 0xD0, 0xCD, 0x03, 0xE8,
        0x92, 0x00, 0x00,
    ]);
    let mut v1_unsorted = head(&[0x01], &[0x02]);
    v1_unsorted.extend_from_slice(&[
        0x95, 0x05, 0x92, 0x0A, 0x0B, 0x92, 0x01, 0x02, 0x92, 0xCD, 0x03, 0xE8, 0xCD, 0x07, 0xD0,
        0x92, 0x00, 0x00,
    ]);
    let mut huge_column = head(&[0x01], &[0x01]);
    huge_column.extend_from_slice(&[0x95, 0x05, 0xDD, 0xFF, 0xFF, 0xFF, 0xFF, 0x0A]);
    let mut huge_users = head(
        &[0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        &[0x00],
    );
    huge_users.extend_from_slice(&[0x95, 0x05]);
    vec![
        seed("valid_v2", with(2, body)),
        seed("v2_body_as_v1", with(1, body)),
        seed("valid_v1", with(1, &v1)),
        seed("v1_times_unsorted", with(1, &v1_unsorted)),
        seed("huge_column", with(1, &huge_column)),
        seed("huge_users", with(2, &huge_users)),
        seed("truncated_body", with(2, &body[..body.len() / 2])),
        seed("trailing_bytes", with(2, &[body, &[0xC0]].concat())),
        seed("deep_nesting", with(2, &[0x91].repeat(5000))),
    ]
}

fn model_bytes(model: &transact_model::RankingModel) -> (TensorMap, Vec<u8>) {
    let map = model.to_tensors().expect("fixture tensors");
    let bytes = map.to_bytes().expect("fixture bytes");
    (map, bytes)
}

/// `map` with every JSON-object metadata entry holding `key` set to `value`.
fn with_config(map: &TensorMap, key: &str, value: serde_json::Value) -> Vec<u8> {
    let mut m = map.clone();
    for text in m.metadata.values_mut() {
        if let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(text)
            && obj.contains_key(key)
        {
            obj.insert(key.to_string(), value.clone());
            *text = serde_json::Value::Object(obj).to_string();
        }
    }
    m.to_bytes().expect("fixture bytes")
}

/// A safetensors file by hand: header JSON, then `data`.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn weights() -> Vec<Seed> {
    let (v1, b1) = model_bytes(&small_v1_model(1));
    let (v2, b2) = model_bytes(&small_v2_model(2));
    let huge = serde_json::json!(u64::MAX);
    let big = serde_json::json!(1u64 << 40);
    vec![
        seed("valid_v1", b1.clone()),
        seed("valid_v2", b2.clone()),
        seed("truncated", b1[..b1.len() / 2].to_vec()),
        seed("header_len_huge", put(&b1, 0, &u64::MAX.to_le_bytes())),
        seed("v1_seq_len_huge", with_config(&v1, "seq_len", huge.clone())),
        seed(
            "v1_item_dim_huge",
            with_config(&v1, "item_emb_dim", huge.clone()),
        ),
        seed(
            "v1_feedforward_big",
            with_config(&v1, "dim_feedforward", big.clone()),
        ),
        seed("v1_nhead_huge", with_config(&v1, "nhead", huge.clone())),
        seed(
            "v1_latest_n_huge",
            with_config(&v1, "latest_n_emb", huge.clone()),
        ),
        seed(
            "v1_eps_nan",
            with_config(&v1, "layer_norm_eps", serde_json::json!("NaN")),
        ),
        seed("v2_seq_len_big", with_config(&v2, "seq_len", big.clone())),
        seed(
            "v2_item_dim_huge",
            with_config(&v2, "item_emb_dim", huge.clone()),
        ),
        seed(
            "v2_latest_n_huge",
            with_config(&v2, "latest_n_emb", huge.clone()),
        ),
        seed(
            "heads_mlp_big",
            with_config(&v1, "mlp_hidden", serde_json::json!([1u64 << 40])),
        ),
        seed(
            "heads_user_dim_huge",
            with_config(&v1, "user_emb_dim", huge.clone()),
        ),
        seed("heads_cross_big", with_config(&v2, "cross_layers", big)),
        seed(
            "zero_rows_huge_width",
            raw_safetensors(
                r#"{"x":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        seed(
            "offsets_past_end",
            raw_safetensors(
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
                &[0; 8],
            ),
        ),
    ]
}

fn item_table() -> Vec<Seed> {
    let items = bundle_fixture()
        .iter()
        .find(|(n, _)| n == "items.safetensors")
        .map(|(_, b)| b.clone())
        .expect("fixture items");
    let table = |precision: Precision| {
        let ids = [1u64, 2, u64::MAX];
        let data = [0.5, -0.25, 1.0, 0.0, 3.0, -3.0];
        let t = ItemTable::from_rows(2, precision, &ids, &data)
            .expect("fixture table")
            .with_fallback(Some(vec![0.1, 0.2]))
            .expect("fallback");
        t.to_safetensors_bytes().expect("fixture table bytes")
    };
    vec![
        seed("valid_bundle_items", items.clone()),
        seed("valid_f16", table(Precision::F16)),
        seed("valid_int8_per_row", table(Precision::Int8PerRow)),
        seed("valid_int8_global", table(Precision::Int8Global)),
        seed("truncated", items[..items.len() - 5].to_vec()),
        seed("flipped_header", flip(&items, 20, 0x20)),
        seed(
            "zero_rows_huge_dim",
            raw_safetensors(
                r#"{"__metadata__":{"format":"transact-item-table","version":"1","precision":"f32","dim":"4611686018427387904"},"ids":{"dtype":"I64","shape":[0],"data_offsets":[0,0]},"embeddings":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]},"fallback":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
    ]
}

fn bundle() -> Vec<Seed> {
    let files: BTreeMap<&str, &[u8]> = bundle_fixture()
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut out = Vec::new();
    for (i, part) in BUNDLE_PARTS.iter().enumerate() {
        let valid = files.get(part).copied().unwrap_or(&[]);
        let with = |b: &[u8]| [&[i as u8][..], b].concat();
        let stem = part.split('.').next().unwrap_or(part);
        out.push(seed(&format!("{stem}_valid"), with(valid)));
        out.push(seed(
            &format!("{stem}_truncated"),
            with(&valid[..valid.len() * 2 / 3]),
        ));
    }
    let manifest =
        String::from_utf8_lossy(files.get("manifest.json").copied().unwrap_or(&[])).into_owned();
    let features =
        String::from_utf8_lossy(files.get("features.json").copied().unwrap_or(&[])).into_owned();
    let json_with = |text: &str, key: &str, value: serde_json::Value| -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(key.to_string(), value);
        }
        v.to_string().into_bytes()
    };
    let tag = |i: u8, b: Vec<u8>| [vec![i], b].concat();
    out.push(seed(
        "manifest_newer",
        tag(
            0,
            json_with(&manifest, "format_version", serde_json::json!(u32::MAX)),
        ),
    ));
    out.push(seed(
        "features_seq_len_huge",
        tag(
            1,
            json_with(&features, "seq_len", serde_json::json!(u64::MAX)),
        ),
    ));
    out.push(seed(
        "features_user_feature",
        tag(
            1,
            json_with(&features, "user_feature", serde_json::json!("Mean")),
        ),
    ));
    out.push(seed(
        "features_deep",
        tag(
            1,
            format!("{}{}", "[".repeat(2000), "]".repeat(2000)).into_bytes(),
        ),
    ));
    out
}

fn import_embeddings() -> Vec<Seed> {
    let dir = scratch();
    let path = dir.path().join("e.safetensors");
    let ids: Vec<String> = ["1", "2", "3", "7", "8"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let weights: Vec<f32> = (0..10).map(|i| i as f32 * 0.25 - 1.0).collect();
    transact_train::data::import::save_embeddings(&path, &ids, 2, &weights)
        .expect("fixture embeddings");
    let valid = std::fs::read(&path).expect("fixture embeddings file");
    // The log imports 5 items; without ids row i is the item with raw id i.
    let w: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let no_ids = raw_safetensors(
        r#"{"items.weight":{"dtype":"F32","shape":[8,3],"data_offsets":[0,96]}}"#,
        &w,
    );
    let nan: Vec<u8> = [1.0f32, f32::NAN, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    vec![
        seed("valid", valid.clone()),
        seed("no_ids", no_ids),
        seed("truncated", valid[..valid.len() - 4].to_vec()),
        seed(
            "nan",
            raw_safetensors(
                r#"{"items.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
                &nan,
            ),
        ),
        seed(
            "ids_wrong_dtype",
            raw_safetensors(
                r#"{"items.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"items.ids":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0, 0, 128, 63, 1, 0, 0, 0],
            ),
        ),
        seed(
            "zero_rows_huge_width",
            raw_safetensors(
                r#"{"items.weight":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        seed(
            "zero_rows_big_width",
            raw_safetensors(
                r#"{"items.weight":{"dtype":"F32","shape":[0,1073741824],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
    ]
}

fn feature_log() -> Vec<Seed> {
    const NO: u32 = u32::MAX;
    let tokens = SelectedTokens {
        dim: 2,
        item_ids: vec![10, 11, 12],
        action_masks: vec![1, 2, 8],
        surfaces: vec![0, 1, 0],
        times_ms: vec![100, 200, 300],
        parts: vec![
            TokenPart::Lifelong,
            TokenPart::Realtime,
            TokenPart::Impression,
        ],
        codes: vec![1, -2, 3, -4, 127, -127],
        scales: vec![0.5, 0.25, 1.0],
        slots: 3,
        lens: vec![3, 1],
        rows: vec![0, 1, 2, 2, NO, NO],
        unknown_items: 1,
        unknown_actions: 2,
    };
    let dir = scratch();
    let path = dir.path().join("log.parquet");
    let mut w = FeatureLogWriter::create_with(&path, WriterOptions::default())
        .expect("fixture feature log");
    for i in 0..2 {
        let mut req =
            RankRequest::new(7, 1_000 + i, vec![Candidate::Item(20), Candidate::Item(21)]);
        req.context = (i == 0).then(|| vec![0.5, -1.0]);
        let entry = FeatureLogEntry {
            request: &req,
            tokens: &tokens,
            candidate_codes: &[5, 6, -7, -8],
            candidate_scales: &[0.1, 0.2],
            user_feature: Some(&[1.0, 2.0, 3.0]),
            bundle_version: "v-fuzz",
        };
        w.append(&entry).expect("fixture append");
    }
    w.finish().expect("fixture finish");
    let valid = std::fs::read(&path).expect("fixture log file");
    let n = valid.len();
    vec![
        seed("valid", valid.clone()),
        seed("truncated", valid[..n - 9].to_vec()),
        seed("no_magic", valid[..n - 4].to_vec()),
        seed(
            "footer_len_huge",
            put(&valid, n - 8, &u32::MAX.to_le_bytes()),
        ),
        seed(
            "footer_len_past_start",
            put(&valid, n - 8, &(n as u32).to_le_bytes()),
        ),
        seed("flipped_middle", flip(&valid, n / 2, 0x08)),
        seed("flipped_footer", flip(&valid, n - 40, 0x01)),
        seed("magic_only", b"PAR1PAR1".to_vec()),
    ]
}
