//! The feature log's schema, version 1: one row per ranked (request,
//! candidate), its tokens as list columns (see `docs/feature-log.md`).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

/// The key-value metadata key holding the schema version.
pub const VERSION_KEY: &str = "transact.feature_log.version";
/// The key-value metadata key holding the width of the int8 codes.
pub const DIM_KEY: &str = "transact.feature_log.dim";
/// The key-value metadata key holding the token slots per candidate.
pub const SLOTS_KEY: &str = "transact.feature_log.slots";
/// The key-value metadata key naming the writer.
pub const WRITER_KEY: &str = "transact.feature_log.writer";
/// The schema version this crate writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Widest codes a reader accepts (a bound on what a metadata field can ask for).
pub const MAX_DIM: usize = 4096;
/// Most token slots per candidate a reader accepts.
pub const MAX_SLOTS: usize = 1 << 16;

/// The columns, in file order.
pub mod col {
    /// `uint64`: the user's store key.
    pub const USER_ID: &str = "user_id";
    /// `int64`: request time, ms.
    pub const REQUEST_TIME_MS: &str = "request_time_ms";
    /// `uint32`: the candidate's position in the request.
    pub const CANDIDATE_INDEX: &str = "candidate_index";
    /// `uint64`: the candidate's item key.
    pub const CANDIDATE_ITEM_ID: &str = "candidate_item_id";
    /// `list<int8>` (`dim` values): the candidate's int8 codes.
    pub const CANDIDATE_CODES: &str = "candidate_codes";
    /// `float32`: the candidate codes' scale.
    pub const CANDIDATE_SCALE: &str = "candidate_scale";
    /// `utf8`: the bundle version that ranked the request.
    pub const BUNDLE_VERSION: &str = "bundle_version";
    /// `list<uint64>`: per token, its item key.
    pub const TOKEN_ITEM_IDS: &str = "token_item_ids";
    /// `list<uint32>`: per token, its multi-hot action mask.
    pub const TOKEN_ACTION_MASKS: &str = "token_action_masks";
    /// `list<uint16>`: per token, its surface.
    pub const TOKEN_SURFACES: &str = "token_surfaces";
    /// `list<int64>`: per token, its time (ms).
    pub const TOKEN_TIMES_MS: &str = "token_times_ms";
    /// `list<uint8>`: per token, its part (0 lifelong, 1 realtime, 2 impression).
    pub const TOKEN_PARTS: &str = "token_parts";
    /// `list<int8>` (`tokens × dim`, token-major): the tokens' int8 codes.
    pub const TOKEN_CODES: &str = "token_codes";
    /// `list<float32>`: per token, its codes' scale.
    pub const TOKEN_SCALES: &str = "token_scales";
    /// `list<float32>`, null when the model reads none: the user feature.
    pub const USER_FEATURE: &str = "user_feature";
    /// `list<float32>`, null when the request has none: the context vector.
    pub const CONTEXT: &str = "context";
    /// `uint32`: the request's sequence actions on items without a row.
    pub const UNKNOWN_ITEMS: &str = "unknown_items";
    /// `uint32`: the request's actions outside the vocabulary.
    pub const UNKNOWN_ACTIONS: &str = "unknown_actions";
}

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

/// The Arrow schema of version [`SCHEMA_VERSION`] (without metadata).
pub fn arrow_schema() -> Schema {
    use DataType as T;
    Schema::new(vec![
        Field::new(col::USER_ID, T::UInt64, false),
        Field::new(col::REQUEST_TIME_MS, T::Int64, false),
        Field::new(col::CANDIDATE_INDEX, T::UInt32, false),
        Field::new(col::CANDIDATE_ITEM_ID, T::UInt64, false),
        Field::new(col::CANDIDATE_CODES, list(T::Int8), false),
        Field::new(col::CANDIDATE_SCALE, T::Float32, false),
        Field::new(col::BUNDLE_VERSION, T::Utf8, false),
        Field::new(col::TOKEN_ITEM_IDS, list(T::UInt64), false),
        Field::new(col::TOKEN_ACTION_MASKS, list(T::UInt32), false),
        Field::new(col::TOKEN_SURFACES, list(T::UInt16), false),
        Field::new(col::TOKEN_TIMES_MS, list(T::Int64), false),
        Field::new(col::TOKEN_PARTS, list(T::UInt8), false),
        Field::new(col::TOKEN_CODES, list(T::Int8), false),
        Field::new(col::TOKEN_SCALES, list(T::Float32), false),
        Field::new(col::USER_FEATURE, list(T::Float32), true),
        Field::new(col::CONTEXT, list(T::Float32), true),
        Field::new(col::UNKNOWN_ITEMS, T::UInt32, false),
        Field::new(col::UNKNOWN_ACTIONS, T::UInt32, false),
    ])
}

/// Whether a file's column type is the schema's: the same primitive, or a
/// list (any list flavour, any item field name or nullability) of the same
/// primitive, so a file rewritten by another engine still reads.
pub(crate) fn type_matches(want: &DataType, got: &DataType) -> bool {
    let item = |t: &DataType| match t {
        DataType::List(f) | DataType::LargeList(f) => Some(f.data_type().clone()),
        _ => None,
    };
    match (item(want), item(got)) {
        (Some(w), Some(g)) => w == g,
        (None, None) => {
            want == got
                || matches!(
                    (want, got),
                    (DataType::Utf8, DataType::LargeUtf8 | DataType::Utf8View)
                )
        }
        _ => false,
    }
}
