//! The feature log's files: a round trip, and every way a file can be
//! wrong (truncated, not Parquet, another schema, a newer version, a bad
//! row) is an error naming the file, never a panic.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use transact_features::{SelectedTokens, TokenPart};
use transact_log::schema::{DIM_KEY, SLOTS_KEY, VERSION_KEY, arrow_schema, col};
use transact_log::{FeatureLog, FeatureLogWriter, LogError, WriterOptions};
use transact_rank::{Candidate, FeatureLogEntry, RankRequest};

const NO_TOKEN: u32 = u32::MAX;

/// A request of 2 candidates over a pool of 3 tokens (dim 2, 3 slots).
fn tokens() -> SelectedTokens {
    SelectedTokens {
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
        rows: vec![0, 1, 2, 2, NO_TOKEN, NO_TOKEN],
        unknown_items: 1,
        unknown_actions: 2,
    }
}

fn request(context: Option<Vec<f32>>) -> RankRequest {
    let mut r = RankRequest::new(7, 1_000, vec![Candidate::Item(20), Candidate::Item(21)]);
    r.context = context;
    r
}

fn write(path: &Path, requests: usize, options: WriterOptions) {
    let t = tokens();
    let mut w = FeatureLogWriter::create_with(path, options).expect("create");
    for i in 0..requests {
        let mut req = request((i % 2 == 0).then(|| vec![0.5, -1.0]));
        req.request_time_ms += i as i64;
        let entry = FeatureLogEntry {
            request: &req,
            tokens: &t,
            candidate_codes: &[5, 6, -7, -8],
            candidate_scales: &[0.1, 0.2],
            user_feature: Some(&[1.0, 2.0, 3.0]),
            bundle_version: "v-test",
        };
        w.append(&entry).expect("append");
    }
    let s = w.finish().expect("finish");
    assert_eq!((s.rows, s.requests), (2 * requests as u64, requests as u64));
}

#[test]
fn rows_round_trip_across_row_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.parquet");
    let options = WriterOptions {
        row_group_rows: 4,
        batch_rows: 3,
        ..WriterOptions::default()
    };
    write(&path, 5, options);
    let log = FeatureLog::open(&path).expect("open");
    assert_eq!(
        (log.len(), log.dim(), log.slots(), log.version()),
        (10, 2, 3, 1)
    );
    let r = log.find(7, 1_002, 21).expect("request 2, candidate 1");
    assert_eq!(r.candidate_index, 1);
    assert_eq!(r.candidate_codes, &[-7, -8]);
    assert_eq!(r.candidate_scale, 0.2);
    assert_eq!(r.token_item_ids, &[12]);
    assert_eq!(r.token_codes, &[127, -127]);
    assert_eq!(r.part(0), Some(TokenPart::Impression));
    assert_eq!(r.context, Some(&[0.5f32, -1.0][..]));
    let r = log.find(7, 1_001, 20).expect("request 1, candidate 0");
    assert_eq!(r.token_item_ids, &[10, 11, 12]);
    assert_eq!(r.token_action_masks, &[1, 2, 8]);
    assert_eq!(r.token_surfaces, &[0, 1, 0]);
    assert_eq!(r.token_times_ms, &[100, 200, 300]);
    assert_eq!(r.token_parts, &[0, 1, 2]);
    assert_eq!(r.token_codes, &[1, -2, 3, -4, 127, -127]);
    assert_eq!(r.token_scales, &[0.5, 0.25, 1.0]);
    assert_eq!(r.user_feature, Some(&[1.0f32, 2.0, 3.0][..]));
    assert_eq!(r.context, None);
    assert_eq!((r.unknown_items, r.unknown_actions), (1, 2));
    assert_eq!(r.bundle_version, "v-test");
    assert_eq!(log.iter().count(), 10);
    assert!(log.find(7, 999, 20).is_none());
}

#[test]
fn an_inconsistent_entry_is_refused_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.parquet");
    let mut w = FeatureLogWriter::create(&path).expect("create");
    let req = request(None);
    let mut t = tokens();
    t.rows[1] = 9; // outside the pool
    let entry = FeatureLogEntry {
        request: &req,
        tokens: &t,
        candidate_codes: &[5, 6, -7, -8],
        candidate_scales: &[0.1, 0.2],
        user_feature: None,
        bundle_version: "v",
    };
    let err = w.append(&entry).expect_err("refused").to_string();
    assert!(err.contains("outside the 3-token pool"), "{err}");
    let t = tokens();
    let short = FeatureLogEntry {
        tokens: &t,
        candidate_codes: &[5, 6],
        ..entry
    };
    assert!(matches!(w.append(&short), Err(LogError::BadEntry { .. })));
    assert_eq!(w.rows(), 0);
    // The first good entry fixes the width; another width is refused.
    let good = FeatureLogEntry {
        tokens: &t,
        candidate_codes: &[5, 6, -7, -8],
        ..entry
    };
    w.append(&good).expect("good");
    let mut wide = tokens();
    wide.dim = 1;
    wide.codes.truncate(3);
    let other = FeatureLogEntry {
        tokens: &wide,
        candidate_codes: &[5, 6],
        ..entry
    };
    let err = w.append(&other).expect_err("other width").to_string();
    assert!(err.contains("the file's are 2 wide"), "{err}");
    assert_eq!(w.finish().expect("finish").rows, 2);
}

fn open_err(path: &Path) -> LogError {
    let err = FeatureLog::open(path).expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    err
}

#[test]
fn a_truncated_file_is_named_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.parquet");
    write(&path, 3, WriterOptions::default());
    let bytes = std::fs::read(&path).expect("read");
    for cut in [bytes.len() - 1, bytes.len() / 2, 8] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = open_err(&path);
        assert!(
            matches!(err, LogError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
    // An unfinished writer leaves no footer.
    let unfinished = dir.path().join("unfinished.parquet");
    let w = FeatureLogWriter::create(&unfinished).expect("create");
    drop(w);
    assert!(matches!(open_err(&unfinished), LogError::Truncated { .. }));
    // A footer whose length field claims more than the file holds.
    let mut lying = bytes.clone();
    let n = lying.len();
    lying[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &lying).expect("write");
    let err = open_err(&path);
    assert!(err.to_string().contains("footer claims"), "{err}");
    // A corrupt footer of plausible length: the Parquet layer's error.
    let mut corrupt = bytes;
    let n = corrupt.len();
    for b in &mut corrupt[n - 40..n - 8] {
        *b = 0xA5;
    }
    std::fs::write(&path, &corrupt).expect("write");
    let _ = open_err(&path);
}

#[test]
fn a_file_that_is_not_parquet_is_named_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.csv");
    std::fs::write(&path, "user,item\n1,2\n").expect("write");
    assert!(matches!(open_err(&path), LogError::NotParquet { .. }));
    std::fs::write(&path, "PA").expect("write");
    assert!(matches!(open_err(&path), LogError::NotParquet { .. }));
    let missing = dir.path().join("missing.parquet");
    assert!(matches!(open_err(&missing), LogError::Io { .. }));
}

/// A Parquet file of `schema` holding `columns`, with `metadata`.
fn parquet(path: &Path, schema: Schema, columns: Vec<ArrayRef>, metadata: Vec<(&str, &str)>) {
    let schema = Arc::new(schema);
    let kv = metadata
        .into_iter()
        .map(|(k, v)| KeyValue::new(k.into(), v.to_string()))
        .collect();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("writer");
    w.write(&RecordBatch::try_new(schema, columns).expect("batch"))
        .expect("write");
    w.close().expect("close");
}

#[test]
fn a_parquet_file_of_another_schema_is_named_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.parquet");
    let mut ids = UInt64Builder::new();
    ids.append_value(1);
    let schema = Schema::new(vec![Field::new("id", DataType::UInt64, false)]);
    let cols: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
    parquet(&path, schema.clone(), cols.clone(), vec![]);
    let err = open_err(&path);
    assert!(matches!(err, LogError::ForeignSchema { .. }), "{err}");
    assert!(err.to_string().contains(VERSION_KEY), "{err}");
    // The version key alone does not make it a feature log.
    parquet(
        &path,
        schema,
        cols,
        vec![(VERSION_KEY, "1"), (DIM_KEY, "2"), (SLOTS_KEY, "3")],
    );
    let err = open_err(&path).to_string();
    assert!(err.contains("no column `user_id`"), "{err}");
    // A column of the wrong type.
    let mut fields: Vec<Field> = arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[1] = Field::new(col::REQUEST_TIME_MS, DataType::Utf8, false);
    let empty: Vec<ArrayRef> = fields
        .iter()
        .map(|f| arrow_array::new_empty_array(f.data_type()))
        .collect();
    parquet(
        &path,
        Schema::new(fields),
        empty,
        vec![(VERSION_KEY, "1"), (DIM_KEY, "2"), (SLOTS_KEY, "3")],
    );
    let err = open_err(&path).to_string();
    assert!(err.contains("column `request_time_ms` is Utf8"), "{err}");
}

#[test]
fn a_newer_version_and_unreadable_metadata_are_named_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.parquet");
    let schema = arrow_schema();
    let empty = || -> Vec<ArrayRef> {
        schema
            .fields()
            .iter()
            .map(|f| arrow_array::new_empty_array(f.data_type()))
            .collect()
    };
    parquet(
        &path,
        schema.clone(),
        empty(),
        vec![(VERSION_KEY, "2"), (DIM_KEY, "2"), (SLOTS_KEY, "3")],
    );
    let err = open_err(&path);
    assert!(
        matches!(err, LogError::NewerVersion { found: 2, .. }),
        "{err}"
    );
    // A width past the bound is refused before anything is read.
    parquet(
        &path,
        schema.clone(),
        empty(),
        vec![
            (VERSION_KEY, "1"),
            (DIM_KEY, "99999999999"),
            (SLOTS_KEY, "3"),
        ],
    );
    assert!(open_err(&path).to_string().contains("at most"));
    parquet(
        &path,
        schema.clone(),
        empty(),
        vec![(VERSION_KEY, "one"), (DIM_KEY, "2"), (SLOTS_KEY, "3")],
    );
    assert!(matches!(open_err(&path), LogError::ForeignSchema { .. }));
}

#[test]
fn a_row_breaking_the_schema_is_named_with_its_number() {
    // A good file, read back and rewritten with row 3's token times one
    // longer than its other token lists.
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.parquet");
    write(&good, 3, WriterOptions::default());
    let file = std::fs::File::open(&good).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader");
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let batch = reader
        .build()
        .expect("build")
        .next()
        .expect("a batch")
        .expect("read");
    let times = batch
        .schema()
        .index_of(col::TOKEN_TIMES_MS)
        .expect("column");
    let mut b = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int64,
        false,
    )));
    for row in 0..batch.num_rows() {
        let n = if row % 2 == 0 { 3 } else { 1 };
        let n = if row == 3 { n + 1 } else { n };
        b.values().append_slice(&vec![5; n]);
        b.append(true);
    }
    let mut columns = batch.columns().to_vec();
    columns[times] = Arc::new(b.finish());
    let path = dir.path().join("bad.parquet");
    let meta: Vec<(String, String)> = kv
        .into_iter()
        .filter_map(|k| Some((k.key, k.value?)))
        .collect();
    parquet(
        &path,
        batch.schema().as_ref().clone(),
        columns,
        meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
    );
    let err = open_err(&path);
    assert!(matches!(err, LogError::BadRow { row: 3, .. }), "{err}");
    assert!(err.to_string().contains("different lengths"), "{err}");
}
