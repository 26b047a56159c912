//! [`FeatureLogWriter`]: one Parquet file of ranked (request, candidate)
//! rows; [`ParquetFeatureLogger`]: the ranker's hook writing one.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    Float32Builder, Int8Builder, Int64Builder, ListBuilder, StringBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use transact_rank::{FeatureLogEntry, FeatureLogError, FeatureLogger};

use crate::LogError;
use crate::schema::{self, DIM_KEY, SCHEMA_VERSION, SLOTS_KEY, VERSION_KEY, WRITER_KEY};

/// How a [`FeatureLogWriter`] lays out its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most rows per row group (the unit readers fetch and skip); each row
    /// holds at most `slots` tokens, so this bounds a row group's size and
    /// the writer's memory. Default 8,192.
    pub row_group_rows: usize,
    /// Rows buffered before they are handed to the Parquet encoder.
    /// Default 1,024.
    pub batch_rows: usize,
    /// zstd level (1–22). Default 3.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            row_group_rows: 8_192,
            batch_rows: 1_024,
            zstd_level: 3,
        }
    }
}

/// What a finished log holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Rows ((request, candidate) examples).
    pub rows: u64,
    /// Requests.
    pub requests: u64,
    /// Size of the file, bytes.
    pub bytes: u64,
}

fn list<T: arrow_array::builder::ArrayBuilder + Default>(item: DataType) -> ListBuilder<T> {
    ListBuilder::new(T::default()).with_field(Arc::new(Field::new("item", item, false)))
}

/// Column builders of the rows not yet handed to the encoder.
struct Columns {
    user_id: UInt64Builder,
    request_time_ms: Int64Builder,
    candidate_index: UInt32Builder,
    candidate_item_id: UInt64Builder,
    candidate_codes: ListBuilder<Int8Builder>,
    candidate_scale: Float32Builder,
    bundle_version: StringBuilder,
    token_item_ids: ListBuilder<UInt64Builder>,
    token_action_masks: ListBuilder<UInt32Builder>,
    token_surfaces: ListBuilder<UInt16Builder>,
    token_times_ms: ListBuilder<Int64Builder>,
    token_parts: ListBuilder<UInt8Builder>,
    token_codes: ListBuilder<Int8Builder>,
    token_scales: ListBuilder<Float32Builder>,
    user_feature: ListBuilder<Float32Builder>,
    context: ListBuilder<Float32Builder>,
    unknown_items: UInt32Builder,
    unknown_actions: UInt32Builder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        use DataType as T;
        Self {
            user_id: UInt64Builder::new(),
            request_time_ms: Int64Builder::new(),
            candidate_index: UInt32Builder::new(),
            candidate_item_id: UInt64Builder::new(),
            candidate_codes: list(T::Int8),
            candidate_scale: Float32Builder::new(),
            bundle_version: StringBuilder::new(),
            token_item_ids: list(T::UInt64),
            token_action_masks: list(T::UInt32),
            token_surfaces: list(T::UInt16),
            token_times_ms: list(T::Int64),
            token_parts: list(T::UInt8),
            token_codes: list(T::Int8),
            token_scales: list(T::Float32),
            user_feature: list(T::Float32),
            context: list(T::Float32),
            unknown_items: UInt32Builder::new(),
            unknown_actions: UInt32Builder::new(),
            rows: 0,
        }
    }

    /// The buffered rows as a batch (the builders start over).
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        use arrow_array::builder::ArrayBuilder as _;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.user_id.finish()),
            Arc::new(self.request_time_ms.finish()),
            Arc::new(self.candidate_index.finish()),
            Arc::new(self.candidate_item_id.finish()),
            Arc::new(self.candidate_codes.finish()),
            Arc::new(self.candidate_scale.finish()),
            Arc::new(self.bundle_version.finish()),
            Arc::new(self.token_item_ids.finish()),
            Arc::new(self.token_action_masks.finish()),
            Arc::new(self.token_surfaces.finish()),
            Arc::new(self.token_times_ms.finish()),
            Arc::new(self.token_parts.finish()),
            Arc::new(self.token_codes.finish()),
            Arc::new(self.token_scales.finish()),
            Arc::new(self.user_feature.finish()),
            Arc::new(self.context.finish()),
            Arc::new(self.unknown_items.finish()),
            Arc::new(self.unknown_actions.finish()),
        ];
        debug_assert!(self.user_id.is_empty());
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns)
    }
}

/// Writes one feature log file: create it, [`append`](Self::append) every
/// ranked request, [`finish`](Self::finish) it. A file not finished has no
/// Parquet footer and reads as truncated.
pub struct FeatureLogWriter {
    path: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<BufWriter<File>>>,
    columns: Columns,
    options: WriterOptions,
    /// Width of the codes and slots per candidate (from the first entry).
    shape: Option<(usize, usize)>,
    rows: u64,
    requests: u64,
    /// Why the writer stopped (a failed write leaves the encoder unusable).
    failed: Option<String>,
}

impl std::fmt::Debug for FeatureLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureLogWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl FeatureLogWriter {
    /// Creates (or truncates) `path` with the default [`WriterOptions`].
    ///
    /// # Errors
    /// [`LogError::Io`] if the file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::create_with(path, WriterOptions::default())
    }

    /// Creates (or truncates) `path`.
    ///
    /// # Errors
    /// [`LogError::Io`] if the file cannot be created; [`LogError::Parquet`]
    /// on options the encoder refuses.
    pub fn create_with(path: impl AsRef<Path>, options: WriterOptions) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        let pq = |e: &dyn std::fmt::Display| LogError::Parquet {
            path: path.clone(),
            detail: e.to_string(),
        };
        let file = File::create(&path).map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
        let level = ZstdLevel::try_new(options.zstd_level).map_err(|e| pq(&e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(VERSION_KEY.into(), SCHEMA_VERSION.to_string()),
                KeyValue::new(
                    WRITER_KEY.into(),
                    format!("transact-log {}", env!("CARGO_PKG_VERSION")),
                ),
            ]))
            .build();
        let schema: SchemaRef = Arc::new(schema::arrow_schema());
        let writer = ArrowWriter::try_new(BufWriter::new(file), schema.clone(), Some(props))
            .map_err(|e| pq(&e))?;
        Ok(Self {
            path,
            schema,
            writer: Some(writer),
            columns: Columns::new(),
            options,
            shape: None,
            rows: 0,
            requests: 0,
            failed: None,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn closed(&self) -> LogError {
        LogError::Closed {
            path: self.path.clone(),
            reason: self.failed.clone(),
        }
    }

    fn bad(&self, detail: String) -> LogError {
        LogError::BadEntry {
            path: self.path.clone(),
            detail,
        }
    }

    /// Appends one ranked request: a row per candidate.
    ///
    /// # Errors
    /// [`LogError::BadEntry`] if the entry is inconsistent (its parts
    /// disagree, or its code width or slots differ from the file's first
    /// entry) — nothing is written then; [`LogError::Parquet`] /
    /// [`LogError::Closed`] if encoding failed now or before.
    pub fn append(&mut self, entry: &FeatureLogEntry<'_>) -> Result<(), LogError> {
        if self.writer.is_none() {
            return Err(self.closed());
        }
        self.check(entry)?;
        let t = entry.tokens;
        let d = t.dim;
        let c = &mut self.columns;
        let unknown = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for (b, cand) in entry.request.candidates.iter().enumerate() {
            c.user_id.append_value(entry.request.user);
            c.request_time_ms
                .append_value(entry.request.request_time_ms);
            c.candidate_index
                .append_value(u32::try_from(b).unwrap_or(u32::MAX));
            c.candidate_item_id.append_value(cand.item_id());
            c.candidate_codes
                .values()
                .append_slice(&entry.candidate_codes[b * d..(b + 1) * d]);
            c.candidate_codes.append(true);
            c.candidate_scale.append_value(entry.candidate_scales[b]);
            c.bundle_version.append_value(entry.bundle_version);
            for &p in t.row(b) {
                let p = p as usize;
                c.token_item_ids.values().append_value(t.item_ids[p]);
                c.token_action_masks
                    .values()
                    .append_value(t.action_masks[p]);
                c.token_surfaces.values().append_value(t.surfaces[p]);
                c.token_times_ms.values().append_value(t.times_ms[p]);
                c.token_parts.values().append_value(t.parts[p].code());
                c.token_codes
                    .values()
                    .append_slice(&t.codes[p * d..(p + 1) * d]);
                c.token_scales.values().append_value(t.scales[p]);
            }
            c.token_item_ids.append(true);
            c.token_action_masks.append(true);
            c.token_surfaces.append(true);
            c.token_times_ms.append(true);
            c.token_parts.append(true);
            c.token_codes.append(true);
            c.token_scales.append(true);
            for (builder, values) in [
                (&mut c.user_feature, entry.user_feature),
                (&mut c.context, entry.request.context.as_deref()),
            ] {
                if let Some(v) = values {
                    builder.values().append_slice(v);
                }
                builder.append(values.is_some());
            }
            c.unknown_items.append_value(unknown(t.unknown_items));
            c.unknown_actions.append_value(unknown(t.unknown_actions));
            c.rows += 1;
        }
        self.rows += entry.request.candidates.len() as u64;
        self.requests += 1;
        if self.columns.rows >= self.options.batch_rows.max(1) {
            self.flush()?;
        }
        Ok(())
    }

    /// Everything that would make `append` panic or write a wrong row.
    fn check(&mut self, e: &FeatureLogEntry<'_>) -> Result<(), LogError> {
        let t = e.tokens;
        let (b, d, s) = (e.request.candidates.len(), t.dim, t.slots);
        let pool = t.item_ids.len();
        if t.candidates() != b {
            return Err(self.bad(format!(
                "{} candidate rows for a request of {b} candidates",
                t.candidates()
            )));
        }
        if d == 0 || e.candidate_codes.len() != b * d || e.candidate_scales.len() != b {
            return Err(self.bad(format!(
                "{} candidate codes and {} scales for {b} candidates of width {d}",
                e.candidate_codes.len(),
                e.candidate_scales.len()
            )));
        }
        if [
            t.action_masks.len(),
            t.surfaces.len(),
            t.times_ms.len(),
            t.parts.len(),
            t.scales.len(),
        ]
        .iter()
        .any(|&n| n != pool)
            || t.codes.len() != pool * d
        {
            return Err(self.bad(format!(
                "the token pool's columns disagree on its {pool} tokens"
            )));
        }
        if t.rows.len() < b * s || t.lens.iter().any(|&n| n > s) {
            return Err(self.bad(format!("candidate rows do not fit {s} slots")));
        }
        if (0..b).any(|c| t.row(c).iter().any(|&p| p as usize >= pool)) {
            return Err(self.bad(format!(
                "a candidate row points outside the {pool}-token pool"
            )));
        }
        match self.shape {
            None => self.shape = Some((d, s)),
            Some((fd, fs)) if (fd, fs) != (d, s) => {
                return Err(self.bad(format!(
                    "codes {d} wide in {s} slots, the file's are {fd} wide in {fs}"
                )));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Hands the buffered rows to the encoder.
    fn flush(&mut self) -> Result<(), LogError> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.closed());
        };
        let result = self
            .columns
            .finish(&self.schema)
            .map_err(|e| e.to_string())
            .and_then(|batch| writer.write(&batch).map_err(|e| e.to_string()));
        if let Err(detail) = result {
            // The encoder's state is unknown after a failed write.
            self.failed = Some(detail.clone());
            self.writer = None;
            return Err(LogError::Parquet {
                path: self.path.clone(),
                detail,
            });
        }
        Ok(())
    }

    /// Writes the buffered rows and the footer (with the code width and
    /// slots), syncs and closes the file.
    ///
    /// # Errors
    /// [`LogError::Parquet`] / [`LogError::Io`] / [`LogError::Closed`].
    pub fn finish(mut self) -> Result<LogSummary, LogError> {
        self.flush()?;
        let Some(mut writer) = self.writer.take() else {
            return Err(self.closed());
        };
        let (d, s) = self.shape.unwrap_or((0, 0));
        writer.append_key_value_metadata(KeyValue::new(DIM_KEY.into(), d.to_string()));
        writer.append_key_value_metadata(KeyValue::new(SLOTS_KEY.into(), s.to_string()));
        let pq = |e: &dyn std::fmt::Display| LogError::Parquet {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let file = writer
            .into_inner()
            .map_err(|e| pq(&e))?
            .into_inner()
            .map_err(|e| pq(&e.error()))?;
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        file.sync_all().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        Ok(LogSummary {
            rows: self.rows,
            requests: self.requests,
            bytes,
        })
    }
}

/// The ranker's [`FeatureLogger`] over a [`FeatureLogWriter`] (one file,
/// appends serialised by a mutex). [`finish`](Self::finish) it when the
/// ranker is done; a failed append is reported to the ranker, which
/// counts it (`transact_rank::OnLogError`).
#[derive(Debug)]
pub struct ParquetFeatureLogger {
    path: PathBuf,
    writer: Mutex<Option<FeatureLogWriter>>,
}

impl ParquetFeatureLogger {
    /// A logger writing `path` (created or truncated now).
    ///
    /// # Errors
    /// As [`FeatureLogWriter::create_with`].
    pub fn create(path: impl AsRef<Path>, options: WriterOptions) -> Result<Self, LogError> {
        let w = FeatureLogWriter::create_with(path, options)?;
        Ok(Self {
            path: w.path().to_path_buf(),
            writer: Mutex::new(Some(w)),
        })
    }

    /// Finishes the file; later appends fail with [`LogError::Closed`].
    ///
    /// # Errors
    /// As [`FeatureLogWriter::finish`]; [`LogError::Closed`] if finished
    /// before.
    pub fn finish(&self) -> Result<LogSummary, LogError> {
        let mut guard = match self.writer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.take() {
            Some(w) => w.finish(),
            None => Err(LogError::Closed {
                path: self.path.clone(),
                reason: None,
            }),
        }
    }
}

impl FeatureLogger for ParquetFeatureLogger {
    fn log(&self, entry: &FeatureLogEntry<'_>) -> Result<(), FeatureLogError> {
        let mut guard = match self.writer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_mut() {
            Some(w) => w.append(entry).map_err(Into::into),
            None => Err(LogError::Closed {
                path: self.path.clone(),
                reason: None,
            }
            .into()),
        }
    }
}
