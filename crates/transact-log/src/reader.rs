//! [`FeatureLog`]: a feature log file read and checked, its rows as
//! [`ExampleRecord`]s, looked up by (user, request time, candidate).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Int8Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use transact_features::TokenPart;
use transact_train::features::{LoggedTokens, V2TokenSource};

use crate::LogError;
use crate::schema::{
    self, DIM_KEY, MAX_DIM, MAX_SLOTS, SCHEMA_VERSION, SLOTS_KEY, VERSION_KEY, col,
};

const MAGIC: &[u8; 4] = b"PAR1";

/// One logged (request, candidate), borrowed from a [`FeatureLog`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExampleRecord<'a> {
    /// The user's store key.
    pub user_id: u64,
    /// Request time, ms.
    pub request_time_ms: i64,
    /// The candidate's position in its request.
    pub candidate_index: u32,
    /// The candidate's item key.
    pub candidate_item_id: u64,
    /// The candidate's `dim` int8 codes.
    pub candidate_codes: &'a [i8],
    /// Their scale (value = `code · scale / 127`).
    pub candidate_scale: f32,
    /// The bundle version that ranked the request.
    pub bundle_version: &'a str,
    /// Per token (oldest first), its item key.
    pub token_item_ids: &'a [u64],
    /// Per token, its multi-hot action mask.
    pub token_action_masks: &'a [u32],
    /// Per token, its surface.
    pub token_surfaces: &'a [u16],
    /// Per token, its time, ms.
    pub token_times_ms: &'a [i64],
    /// Per token, its part's code ([`TokenPart::code`]; see
    /// [`ExampleRecord::part`]).
    pub token_parts: &'a [u8],
    /// `[tokens × dim]` int8 codes.
    pub token_codes: &'a [i8],
    /// Per token, its codes' scale.
    pub token_scales: &'a [f32],
    /// The user feature the model read, if any.
    pub user_feature: Option<&'a [f32]>,
    /// The request's context vector, if any.
    pub context: Option<&'a [f32]>,
    /// The request's sequence actions on items without a row.
    pub unknown_items: u32,
    /// The request's actions outside the vocabulary.
    pub unknown_actions: u32,
}

impl ExampleRecord<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.token_scales.len()
    }

    /// Whether the candidate has no token.
    pub fn is_empty(&self) -> bool {
        self.token_scales.is_empty()
    }

    /// Where token `i` came from.
    pub fn part(&self, i: usize) -> Option<TokenPart> {
        TokenPart::from_code(*self.token_parts.get(i)?)
    }
}

/// A list column's per-row ranges, offsets widened to `usize`.
fn offsets(a: &dyn Array) -> Option<(Vec<usize>, &dyn Array)> {
    if let Some(l) = a.as_list_opt::<i32>() {
        let o = l.value_offsets().iter().map(|&x| x as usize).collect();
        Some((o, l.values().as_ref()))
    } else if let Some(l) = a.as_list_opt::<i64>() {
        let o = l.value_offsets().iter().map(|&x| x as usize).collect();
        Some((o, l.values().as_ref()))
    } else {
        None
    }
}

/// A list column of a batch: offsets, values, validity.
struct ListCol<'b, T: ArrowPrimitiveType> {
    offsets: Vec<usize>,
    values: &'b PrimitiveArray<T>,
    list: &'b dyn Array,
}

impl<'b, T: ArrowPrimitiveType> ListCol<'b, T> {
    fn row(&self, i: usize) -> &'b [T::Native] {
        &self.values.values()[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// A feature log read into memory and checked.
///
/// Holds every row (about `tokens × (dim + 24)` bytes per example): the
/// trainer shuffles examples over the whole log.
#[derive(Debug)]
pub struct FeatureLog {
    path: PathBuf,
    version: u32,
    dim: usize,
    slots: usize,
    user_id: Vec<u64>,
    request_time_ms: Vec<i64>,
    candidate_index: Vec<u32>,
    candidate_item_id: Vec<u64>,
    candidate_codes: Vec<i8>,
    candidate_scale: Vec<f32>,
    versions: Vec<String>,
    version_of: Vec<u32>,
    tok: Vec<usize>,
    token_item_ids: Vec<u64>,
    token_action_masks: Vec<u32>,
    token_surfaces: Vec<u16>,
    token_times_ms: Vec<i64>,
    token_parts: Vec<u8>,
    token_codes: Vec<i8>,
    token_scales: Vec<f32>,
    user_feature: Dense,
    context: Dense,
    unknown_items: Vec<u32>,
    unknown_actions: Vec<u32>,
    index: HashMap<(u64, i64, u64), usize>,
}

/// A nullable list of floats per row.
#[derive(Debug, Default)]
struct Dense {
    offsets: Vec<usize>,
    present: Vec<bool>,
    values: Vec<f32>,
}

impl Dense {
    fn get(&self, i: usize) -> Option<&[f32]> {
        self.present[i].then(|| &self.values[self.offsets[i]..self.offsets[i + 1]])
    }
}

impl FeatureLog {
    /// Reads and checks the feature log at `path`.
    ///
    /// # Errors
    /// Naming the file: [`LogError::Io`] if it cannot be read;
    /// [`LogError::NotParquet`], [`LogError::Truncated`] (no footer: cut
    /// short or never finished), [`LogError::ForeignSchema`] (a Parquet
    /// file without this schema or its version key),
    /// [`LogError::NewerVersion`], [`LogError::BadRow`] (a row breaking
    /// the schema's rules), [`LogError::Parquet`] (a corrupt page).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = path.as_ref();
        // The `parquet` crate (60.1) panics on some corrupt files instead of
        // returning an error: a column chunk with a negative offset or
        // length in the footer, a dictionary-encoded page without a
        // dictionary page (fuzz/known-crashes/feature_log). A corrupt file
        // must be an error naming it, not a crash of the trainer.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::open_checked(path)))
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(LogError::Parquet {
                    path: path.to_path_buf(),
                    detail: format!("the Parquet decoder failed on a corrupt page ({why})"),
                })
            })
    }

    fn open_checked(path: &Path) -> Result<Self, LogError> {
        let path = path.to_path_buf();
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        check_frame(&path, &mut file)?;
        let pq = |e: &dyn std::fmt::Display| LogError::Parquet {
            path: path.clone(),
            detail: e.to_string(),
        };
        let foreign = |detail: String| LogError::ForeignSchema {
            path: path.clone(),
            detail,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(&e))?;
        let kv = builder.metadata().file_metadata().key_value_metadata();
        let meta = |key: &str| -> Option<String> {
            kv.and_then(|kv| kv.iter().find(|k| k.key == key))
                .and_then(|k| k.value.clone())
        };
        let version = meta(VERSION_KEY)
            .ok_or_else(|| foreign(format!("no `{VERSION_KEY}` in its key-value metadata")))?;
        let version: u32 = version
            .trim()
            .parse()
            .map_err(|_| foreign(format!("`{VERSION_KEY}` is `{version}`, not a number")))?;
        if version > SCHEMA_VERSION {
            return Err(LogError::NewerVersion {
                path: path.clone(),
                found: version,
            });
        }
        if version == 0 {
            return Err(foreign(format!("`{VERSION_KEY}` is 0")));
        }
        let number = |key: &str, max: usize| -> Result<usize, LogError> {
            let v = meta(key).ok_or_else(|| foreign(format!("no `{key}` in its metadata")))?;
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| foreign(format!("`{key}` is `{v}` (at most {max})")))
        };
        let dim = number(DIM_KEY, MAX_DIM)?;
        let slots = number(SLOTS_KEY, MAX_SLOTS)?;
        let file_schema = builder.schema().clone();
        for want in schema::arrow_schema().fields() {
            let got = file_schema
                .field_with_name(want.name())
                .map_err(|_| foreign(format!("no column `{}`", want.name())))?;
            if !schema::type_matches(want.data_type(), got.data_type()) {
                return Err(foreign(format!(
                    "column `{}` is {}, the schema's is {}",
                    want.name(),
                    got.data_type(),
                    want.data_type()
                )));
            }
        }
        let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        if rows > 0 && dim == 0 {
            return Err(foreign(format!(
                "`{DIM_KEY}` is 0 in a file of {rows} rows"
            )));
        }
        let reader = builder.with_batch_size(4_096).build().map_err(|e| pq(&e))?;
        let mut log = Self {
            path: path.clone(),
            version,
            dim,
            slots,
            user_id: Vec::new(),
            request_time_ms: Vec::new(),
            candidate_index: Vec::new(),
            candidate_item_id: Vec::new(),
            candidate_codes: Vec::new(),
            candidate_scale: Vec::new(),
            versions: Vec::new(),
            version_of: Vec::new(),
            tok: vec![0],
            token_item_ids: Vec::new(),
            token_action_masks: Vec::new(),
            token_surfaces: Vec::new(),
            token_times_ms: Vec::new(),
            token_parts: Vec::new(),
            token_codes: Vec::new(),
            token_scales: Vec::new(),
            user_feature: Dense {
                offsets: vec![0],
                ..Dense::default()
            },
            context: Dense {
                offsets: vec![0],
                ..Dense::default()
            },
            unknown_items: Vec::new(),
            unknown_actions: Vec::new(),
            index: HashMap::new(),
        };
        for batch in reader {
            let batch = batch.map_err(|e| pq(&e))?;
            log.push_batch(&batch)?;
        }
        for i in 0..log.len() {
            log.index
                .entry((
                    log.user_id[i],
                    log.request_time_ms[i],
                    log.candidate_item_id[i],
                ))
                .or_insert(i);
        }
        Ok(log)
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Width of the int8 codes.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token slots per candidate of the contract that logged the file.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Rows (examples).
    pub fn len(&self) -> usize {
        self.user_id.len()
    }

    /// Whether the log has no row.
    pub fn is_empty(&self) -> bool {
        self.user_id.is_empty()
    }

    /// Row `i`.
    pub fn get(&self, i: usize) -> Option<ExampleRecord<'_>> {
        if i >= self.len() {
            return None;
        }
        let d = self.dim;
        let (a, b) = (self.tok[i], self.tok[i + 1]);
        Some(ExampleRecord {
            user_id: self.user_id[i],
            request_time_ms: self.request_time_ms[i],
            candidate_index: self.candidate_index[i],
            candidate_item_id: self.candidate_item_id[i],
            candidate_codes: &self.candidate_codes[i * d..(i + 1) * d],
            candidate_scale: self.candidate_scale[i],
            bundle_version: &self.versions[self.version_of[i] as usize],
            token_item_ids: &self.token_item_ids[a..b],
            token_action_masks: &self.token_action_masks[a..b],
            token_surfaces: &self.token_surfaces[a..b],
            token_times_ms: &self.token_times_ms[a..b],
            token_parts: &self.token_parts[a..b],
            token_codes: &self.token_codes[a * d..b * d],
            token_scales: &self.token_scales[a..b],
            user_feature: self.user_feature.get(i),
            context: self.context.get(i),
            unknown_items: self.unknown_items[i],
            unknown_actions: self.unknown_actions[i],
        })
    }

    /// Every row, in file order.
    pub fn iter(&self) -> impl Iterator<Item = ExampleRecord<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The row of `candidate` (item key) in the request of `user` at
    /// `request_ms` (the first such row, if the log has several).
    pub fn find(&self, user: u64, request_ms: i64, candidate: u64) -> Option<ExampleRecord<'_>> {
        let i = *self.index.get(&(user, request_ms, candidate))?;
        self.get(i)
    }

    fn push_batch(&mut self, batch: &RecordBatch) -> Result<(), LogError> {
        let first = self.len();
        let path = self.path.clone();
        let bad = |row: usize, detail: String| LogError::BadRow {
            path: path.clone(),
            row,
            detail,
        };
        let column = |name: &str| -> Result<&dyn Array, LogError> {
            batch
                .column_by_name(name)
                .map(|c| c.as_ref())
                .ok_or_else(|| bad(first, format!("no column `{name}`")))
        };
        fn prim<'b, T: ArrowPrimitiveType>(
            a: &'b dyn Array,
            name: &str,
            nullable: bool,
        ) -> Result<&'b PrimitiveArray<T>, String> {
            let p = a
                .as_primitive_opt::<T>()
                .ok_or_else(|| format!("column `{name}` is {}", a.data_type()))?;
            if !nullable && p.null_count() > 0 {
                return Err(format!("column `{name}` has nulls"));
            }
            Ok(p)
        }
        let listed = |name: &str| -> Result<(Vec<usize>, &dyn Array, &dyn Array), LogError> {
            let a = column(name)?;
            let (o, v) =
                offsets(a).ok_or_else(|| bad(first, format!("column `{name}` is not a list")))?;
            Ok((o, v, a))
        };
        macro_rules! list_col {
            ($name:expr, $t:ty, $nullable:expr) => {{
                let (offsets, values, list) = listed($name)?;
                if !$nullable && list.null_count() > 0 {
                    return Err(bad(first, format!("column `{}` has nulls", $name)));
                }
                let values = prim::<$t>(values, $name, false).map_err(|e| bad(first, e))?;
                ListCol::<$t> {
                    offsets,
                    values,
                    list,
                }
            }};
        }
        let user_id = scalar_col::<UInt64Type>(batch, col::USER_ID, &path, first)?;
        let time = scalar_col::<Int64Type>(batch, col::REQUEST_TIME_MS, &path, first)?;
        let cand_index = scalar_col::<UInt32Type>(batch, col::CANDIDATE_INDEX, &path, first)?;
        let cand_item = scalar_col::<UInt64Type>(batch, col::CANDIDATE_ITEM_ID, &path, first)?;
        let cand_scale = scalar_col::<Float32Type>(batch, col::CANDIDATE_SCALE, &path, first)?;
        let unknown_items = scalar_col::<UInt32Type>(batch, col::UNKNOWN_ITEMS, &path, first)?;
        let unknown_actions = scalar_col::<UInt32Type>(batch, col::UNKNOWN_ACTIONS, &path, first)?;
        let version = column(col::BUNDLE_VERSION)?;
        let version_at = |i: usize| -> Option<&str> {
            if version.is_null(i) {
                return None;
            }
            if let Some(s) = version.as_string_opt::<i32>() {
                Some(s.value(i))
            } else if let Some(s) = version.as_string_opt::<i64>() {
                Some(s.value(i))
            } else {
                version.as_string_view_opt().map(|s| s.value(i))
            }
        };
        let cand_codes = list_col!(col::CANDIDATE_CODES, Int8Type, false);
        let items = list_col!(col::TOKEN_ITEM_IDS, UInt64Type, false);
        let masks = list_col!(col::TOKEN_ACTION_MASKS, UInt32Type, false);
        let surfaces = list_col!(col::TOKEN_SURFACES, UInt16Type, false);
        let times = list_col!(col::TOKEN_TIMES_MS, Int64Type, false);
        let parts = list_col!(col::TOKEN_PARTS, UInt8Type, false);
        let codes = list_col!(col::TOKEN_CODES, Int8Type, false);
        let scales = list_col!(col::TOKEN_SCALES, Float32Type, false);
        let user = list_col!(col::USER_FEATURE, Float32Type, true);
        let context = list_col!(col::CONTEXT, Float32Type, true);
        let d = self.dim;
        for i in 0..batch.num_rows() {
            let row = first + i;
            let n = scales.row(i).len();
            let lens = [
                items.row(i).len(),
                masks.row(i).len(),
                surfaces.row(i).len(),
                times.row(i).len(),
                parts.row(i).len(),
            ];
            if lens.iter().any(|&l| l != n) {
                return Err(bad(
                    row,
                    format!("token lists of different lengths ({lens:?}, {n} scales)"),
                ));
            }
            if n > self.slots {
                return Err(bad(row, format!("{n} tokens in {} slots", self.slots)));
            }
            if codes.row(i).len() != n * d {
                return Err(bad(
                    row,
                    format!(
                        "{} token codes for {n} tokens of width {d}",
                        codes.row(i).len()
                    ),
                ));
            }
            if cand_codes.row(i).len() != d {
                return Err(bad(
                    row,
                    format!("{} candidate codes, width {d}", cand_codes.row(i).len()),
                ));
            }
            if let Some(&x) = parts.row(i).iter().find(|&&x| x > 2) {
                return Err(bad(row, format!("token part {x} (0, 1 or 2)")));
            }
            let v = version_at(i).ok_or_else(|| bad(row, "no bundle version".into()))?;
            let vi = match self.versions.iter().position(|x| x == v) {
                Some(k) => k,
                None => {
                    self.versions.push(v.to_string());
                    self.versions.len() - 1
                }
            };
            self.version_of.push(vi as u32);
            self.user_id.push(user_id.value(i));
            self.request_time_ms.push(time.value(i));
            self.candidate_index.push(cand_index.value(i));
            self.candidate_item_id.push(cand_item.value(i));
            self.candidate_codes.extend_from_slice(cand_codes.row(i));
            self.candidate_scale.push(cand_scale.value(i));
            self.token_item_ids.extend_from_slice(items.row(i));
            self.token_action_masks.extend_from_slice(masks.row(i));
            self.token_surfaces.extend_from_slice(surfaces.row(i));
            self.token_times_ms.extend_from_slice(times.row(i));
            self.token_parts.extend_from_slice(parts.row(i));
            self.token_codes.extend_from_slice(codes.row(i));
            self.token_scales.extend_from_slice(scales.row(i));
            self.tok.push(self.token_scales.len());
            for (dense, c) in [
                (&mut self.user_feature, &user),
                (&mut self.context, &context),
            ] {
                let present = !c.list.is_null(i);
                if present {
                    dense.values.extend_from_slice(c.row(i));
                }
                dense.present.push(present);
                dense.offsets.push(dense.values.len());
            }
            self.unknown_items.push(unknown_items.value(i));
            self.unknown_actions.push(unknown_actions.value(i));
        }
        Ok(())
    }
}

/// A non-nullable primitive column of `batch`.
fn scalar_col<'b, T: ArrowPrimitiveType>(
    batch: &'b RecordBatch,
    name: &str,
    path: &Path,
    row: usize,
) -> Result<&'b PrimitiveArray<T>, LogError> {
    let bad = |detail: String| LogError::BadRow {
        path: path.to_path_buf(),
        row,
        detail,
    };
    let a = batch
        .column_by_name(name)
        .ok_or_else(|| bad(format!("no column `{name}`")))?;
    let p = a
        .as_primitive_opt::<T>()
        .ok_or_else(|| bad(format!("column `{name}` is {}", a.data_type())))?;
    if p.null_count() > 0 {
        return Err(bad(format!("column `{name}` has nulls")));
    }
    Ok(p)
}

/// The Parquet frame: `PAR1` at both ends and a footer length that fits,
/// so a foreign or cut-short file is named for what it is before the
/// Parquet reader sees it.
fn check_frame(path: &Path, file: &mut File) -> Result<(), LogError> {
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    let mut head = [0u8; 4];
    let got = file.read(&mut head).map_err(io)?;
    if got < 4 || &head != MAGIC {
        return Err(LogError::NotParquet {
            path: path.to_path_buf(),
            detail: if len < 4 {
                format!("{len} bytes")
            } else {
                format!("it starts with {:02x?}, not `PAR1`", &head[..got])
            },
        });
    }
    let truncated = |detail: String| LogError::Truncated {
        path: path.to_path_buf(),
        detail,
    };
    if len < 12 {
        return Err(truncated(format!("{len} bytes")));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    if &tail[4..] != MAGIC {
        return Err(truncated(format!(
            "{len} bytes and no `PAR1` footer at the end"
        )));
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer + 12 > len {
        return Err(truncated(format!(
            "its footer claims {footer} bytes, the file has {len}"
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

impl V2TokenSource for FeatureLog {
    fn dim(&self) -> usize {
        self.dim
    }

    fn slots(&self) -> usize {
        self.slots
    }

    fn find(&self, user: u64, request_ms: i64, candidate: u64) -> Option<LoggedTokens<'_>> {
        let r = FeatureLog::find(self, user, request_ms, candidate)?;
        Some(LoggedTokens {
            item_ids: r.token_item_ids,
            codes: r.token_codes,
            scales: r.token_scales,
            action_masks: r.token_action_masks,
            surfaces: r.token_surfaces,
            times_ms: r.token_times_ms,
            parts: r.token_parts,
            candidate_codes: r.candidate_codes,
            candidate_scale: r.candidate_scale,
            user_feature: r.user_feature,
        })
    }

    fn describe(&self) -> String {
        format!("feature log {}", self.path.display())
    }
}
