//! Item embedding tables: `ItemId` → one row of `dim` values, stored as f32,
//! f16 or int8 (global or per-row scale), with an optional fallback vector
//! for ids the table does not know.
//!
//! Rows live in one contiguous buffer in insertion order; a hash map gives
//! the row of an id. Reads ([`ItemTable::get_into`], [`ItemTable::gather`])
//! dequantise into caller-provided f32 buffers and never allocate.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};

use crate::EmbedError;
use crate::quant::{
    INT8_GLOBAL_SCALE, dequantize_i8_into, quantize_i8_global_into, quantize_i8_per_row_into,
};

/// The id of an item (a pin).
pub type ItemId = u64;

/// How an [`ItemTable`] stores its rows.
///
/// Serialised (serde and file metadata) as `"f32"`, `"f16"`, `"int8_global"`,
/// `"int8_per_row"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// Full precision, 4 bytes a value.
    #[serde(rename = "f32")]
    F32,
    /// IEEE half precision, 2 bytes a value.
    #[serde(rename = "f16")]
    F16,
    /// int8 with the global TransAct V2 scale 0.65 (values beyond ±0.65 clamp).
    #[serde(rename = "int8_global")]
    Int8Global,
    /// int8 with one scale (`max |e|`) per row, plus 4 bytes a row.
    #[serde(rename = "int8_per_row")]
    Int8PerRow,
}

impl Precision {
    /// Every precision, in declaration order.
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::F16,
        Precision::Int8Global,
        Precision::Int8PerRow,
    ];

    /// The name used in serde and in table files.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8Global => "int8_global",
            Precision::Int8PerRow => "int8_per_row",
        }
    }

    /// Whether rows are stored as int8 codes.
    pub fn is_int8(self) -> bool {
        matches!(self, Precision::Int8Global | Precision::Int8PerRow)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = EmbedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                EmbedError::InvalidArgument(format!(
                    "unknown precision `{s}` (expected f32, f16, int8_global or int8_per_row)"
                ))
            })
    }
}

/// A hasher for `u64` ids: one 64×64→128-bit multiply folded to 64 bits.
///
/// SipHash (the std default) resists hash flooding but costs ~20 ns a key;
/// gathering a 16k-action lifelong sequence does 16k lookups per request.
/// Item ids come from our own catalogue, not from untrusted clients, so a
/// fast non-keyed mix is the right trade. The folded multiply spreads every
/// input bit over both the low bits (bucket) and the high bits (hashbrown's
/// control byte), so strided ids such as multiples of 2^k stay well spread.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const MIX_SEED: u64 = 0x243f_6a88_85a3_08d3;
const MIX_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        let p = u128::from(self.0 ^ x ^ MIX_SEED) * u128::from(MIX_MUL);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; kept correct for any other key type.
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap = HashMap<ItemId, u32, BuildHasherDefault<IdHasher>>;

/// Row storage, one variant per precision; rows are contiguous, `dim` apart.
#[derive(Clone)]
pub(crate) enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Int8Global(Vec<i8>),
    Int8PerRow { codes: Vec<i8>, scales: Vec<f32> },
}

impl Storage {
    fn new(precision: Precision) -> Self {
        match precision {
            Precision::F32 => Storage::F32(Vec::new()),
            Precision::F16 => Storage::F16(Vec::new()),
            Precision::Int8Global => Storage::Int8Global(Vec::new()),
            Precision::Int8PerRow => Storage::Int8PerRow {
                codes: Vec::new(),
                scales: Vec::new(),
            },
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Storage::F32(v) => v.len() * 4,
            Storage::F16(v) => v.len() * 2,
            Storage::Int8Global(v) => v.len(),
            Storage::Int8PerRow { codes, scales } => codes.len() + scales.len() * 4,
        }
    }
}

/// A table of item embeddings of a fixed width, in one of four storage
/// [`Precision`]s.
///
/// Inserting validates the row (length, finiteness, f16 range) and stores it
/// quantised; reads dequantise into caller buffers. Unknown ids are an error
/// unless a fallback vector is set, which is then returned for them (the
/// fallback is kept in f32 exactly as given).
///
/// ```
/// use transact_embed::{EmbedError, ItemTable, Precision};
///
/// let mut table = ItemTable::new(4, Precision::Int8Global)?;
/// table.insert(42, &[0.1, -0.2, 0.3, 0.65])?;
/// table.insert(7, &[0.0, 0.0, 0.5, -0.5])?;
///
/// let mut row = [0.0f32; 4];
/// table.get_into(42, &mut row)?;
/// assert!((row[1] + 0.2).abs() <= 0.65 / 254.0 + 1e-6);
///
/// // Unknown ids are an error naming the id, until a fallback is set.
/// assert!(matches!(table.get_into(99, &mut row), Err(EmbedError::UnknownItem(99))));
/// let table = table.with_fallback(Some(vec![0.0; 4]))?;
///
/// // Many rows at once, into one [ids.len() × dim] buffer.
/// let mut batch = vec![0.0f32; 3 * 4];
/// table.gather(&[7, 99, 42], &mut batch)?;
/// assert_eq!(&batch[4..8], &[0.0; 4]);
/// # Ok::<(), EmbedError>(())
/// ```
#[derive(Clone)]
pub struct ItemTable {
    dim: usize,
    precision: Precision,
    index: IdMap,
    /// Row → id, in insertion order.
    ids: Vec<ItemId>,
    storage: Storage,
    fallback: Option<Vec<f32>>,
}

impl fmt::Debug for ItemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemTable")
            .field("dim", &self.dim)
            .field("precision", &self.precision)
            .field("len", &self.len())
            .field("has_fallback", &self.fallback.is_some())
            .finish()
    }
}

fn check_finite(item: ItemId, row: &[f32]) -> Result<(), EmbedError> {
    match row.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(EmbedError::NonFinite { item, index }),
        None => Ok(()),
    }
}

impl ItemTable {
    /// An empty table of rows of width `dim`.
    ///
    /// # Errors
    /// [`EmbedError::InvalidArgument`] if `dim == 0`.
    pub fn new(dim: usize, precision: Precision) -> Result<Self, EmbedError> {
        if dim == 0 {
            return Err(EmbedError::InvalidArgument(
                "item table: the embedding width must be positive".into(),
            ));
        }
        Ok(ItemTable {
            dim,
            precision,
            index: IdMap::default(),
            ids: Vec::new(),
            storage: Storage::new(precision),
            fallback: None,
        })
    }

    /// A table holding `ids.len()` rows taken from `data` (`[ids.len() × dim]`,
    /// row-major), in that order.
    ///
    /// # Errors
    /// As [`ItemTable::new`]; [`EmbedError::Dimension`] if `data` is not
    /// `ids.len() × dim` long; [`EmbedError::DuplicateItem`] naming the first
    /// repeated id; the errors of [`ItemTable::insert`] for a bad row.
    pub fn from_rows(
        dim: usize,
        precision: Precision,
        ids: &[ItemId],
        data: &[f32],
    ) -> Result<Self, EmbedError> {
        let mut table = Self::new(dim, precision)?;
        let expected = ids.len().checked_mul(dim).ok_or_else(|| {
            EmbedError::InvalidArgument("item table: ids.len() × dim overflows".into())
        })?;
        if data.len() != expected {
            return Err(EmbedError::Dimension {
                what: format!("item table data for {} ids of width {dim}", ids.len()),
                expected,
                got: data.len(),
            });
        }
        table.try_reserve(ids.len())?;
        for (&id, row) in ids.iter().zip(data.chunks_exact(dim)) {
            if table.contains(id) {
                return Err(EmbedError::DuplicateItem(id));
            }
            table.insert(id, row)?;
        }
        Ok(table)
    }

    /// Sets the fallback vector (builder style); see [`ItemTable::set_fallback`].
    ///
    /// # Errors
    /// As [`ItemTable::set_fallback`].
    pub fn with_fallback(mut self, fallback: Option<Vec<f32>>) -> Result<Self, EmbedError> {
        self.set_fallback(fallback)?;
        Ok(self)
    }

    /// Sets (`Some`) or clears (`None`) the vector returned for unknown ids.
    /// It is kept in f32 as given, whatever the table's precision.
    ///
    /// # Errors
    /// [`EmbedError::Dimension`] if its length is not `dim`;
    /// [`EmbedError::InvalidArgument`] if it holds NaN or ±∞.
    pub fn set_fallback(&mut self, fallback: Option<Vec<f32>>) -> Result<(), EmbedError> {
        if let Some(f) = &fallback {
            if f.len() != self.dim {
                return Err(EmbedError::Dimension {
                    what: "item table fallback vector".into(),
                    expected: self.dim,
                    got: f.len(),
                });
            }
            if let Some(i) = f.iter().position(|v| !v.is_finite()) {
                return Err(EmbedError::InvalidArgument(format!(
                    "item table fallback vector has a non-finite value at index {i}"
                )));
            }
        }
        self.fallback = fallback;
        Ok(())
    }

    /// The fallback vector, if one is set.
    pub fn fallback(&self) -> Option<&[f32]> {
        self.fallback.as_deref()
    }

    /// Reserves room for `additional` more rows, so that bulk inserts do not
    /// reallocate.
    ///
    /// # Errors
    /// [`EmbedError::InvalidArgument`] if the capacity would overflow or the
    /// allocation fails (nothing panics).
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), EmbedError> {
        let fail = |e: std::collections::TryReserveError| {
            EmbedError::InvalidArgument(format!(
                "item table: cannot reserve {additional} rows: {e}"
            ))
        };
        let values = additional.checked_mul(self.dim).ok_or_else(|| {
            EmbedError::InvalidArgument(format!(
                "item table: {additional} rows of width {} overflow",
                self.dim
            ))
        })?;
        self.index.try_reserve(additional).map_err(fail)?;
        self.ids.try_reserve(additional).map_err(fail)?;
        match &mut self.storage {
            Storage::F32(v) => v.try_reserve(values).map_err(fail),
            Storage::F16(v) => v.try_reserve(values).map_err(fail),
            Storage::Int8Global(v) => v.try_reserve(values).map_err(fail),
            Storage::Int8PerRow { codes, scales } => {
                codes.try_reserve(values).map_err(fail)?;
                scales.try_reserve(additional).map_err(fail)
            }
        }
    }

    /// Inserts the row of `id`, or overwrites it if `id` is already present.
    ///
    /// Int8 precisions quantise as described in [`crate::quant`] (global:
    /// values beyond ±0.65 clamp). On error the table is unchanged.
    ///
    /// # Errors
    /// [`EmbedError::Dimension`] (naming the id) if `embedding.len() != dim`;
    /// [`EmbedError::NonFinite`] for NaN or ±∞; [`EmbedError::OutOfRange`]
    /// for a value beyond the f16 range in an f16 table;
    /// [`EmbedError::InvalidArgument`] past `u32::MAX` rows.
    pub fn insert(&mut self, id: ItemId, embedding: &[f32]) -> Result<(), EmbedError> {
        let dim = self.dim;
        if embedding.len() != dim {
            return Err(EmbedError::Dimension {
                what: format!("embedding of item {id}"),
                expected: dim,
                got: embedding.len(),
            });
        }
        check_finite(id, embedding)?;
        if self.precision == Precision::F16
            && let Some(index) = embedding
                .iter()
                .position(|&v| f16::from_f32(v).is_infinite())
        {
            return Err(EmbedError::OutOfRange {
                item: id,
                index,
                value: embedding[index],
            });
        }
        let row = match self.index.get(&id) {
            Some(&r) => r as usize,
            None => {
                let r = self.ids.len();
                if u32::try_from(r).is_err() {
                    return Err(EmbedError::InvalidArgument(format!(
                        "item table is full ({r} rows); cannot insert item {id}"
                    )));
                }
                self.push_zero_row();
                self.ids.push(id);
                self.index.insert(id, r as u32);
                r
            }
        };
        self.write_row(row, embedding);
        Ok(())
    }

    fn push_zero_row(&mut self) {
        let new_len = (self.ids.len() + 1) * self.dim;
        match &mut self.storage {
            Storage::F32(v) => v.resize(new_len, 0.0),
            Storage::F16(v) => v.resize(new_len, f16::ZERO),
            Storage::Int8Global(v) => v.resize(new_len, 0),
            Storage::Int8PerRow { codes, scales } => {
                codes.resize(new_len, 0);
                scales.push(0.0);
            }
        }
    }

    /// Stores a validated (finite, `dim` long) row at `row`, which exists.
    fn write_row(&mut self, row: usize, e: &[f32]) {
        let range = row * self.dim..(row + 1) * self.dim;
        match &mut self.storage {
            Storage::F32(v) => v[range].copy_from_slice(e),
            Storage::F16(v) => v[range].convert_from_f32_slice(e),
            Storage::Int8Global(v) => quantize_i8_global_into(e, &mut v[range]),
            Storage::Int8PerRow { codes, scales } => {
                scales[row] = quantize_i8_per_row_into(e, &mut codes[range]);
            }
        }
    }

    /// Number of rows (items).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the table holds no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Width of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether `id` has a row (the fallback does not count).
    pub fn contains(&self, id: ItemId) -> bool {
        self.index.contains_key(&id)
    }

    /// The ids of all rows, in row (first insertion) order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = ItemId> + '_ {
        self.ids.iter().copied()
    }

    /// Decodes row `row` into `out` (`out.len() == dim`).
    #[inline]
    fn decode_row(&self, row: usize, out: &mut [f32]) {
        let range = row * self.dim..(row + 1) * self.dim;
        match &self.storage {
            Storage::F32(v) => out.copy_from_slice(&v[range]),
            Storage::F16(v) => v[range].convert_to_f32_slice(out),
            Storage::Int8Global(v) => dequantize_i8_into(&v[range], INT8_GLOBAL_SCALE, out),
            Storage::Int8PerRow { codes, scales } => {
                dequantize_i8_into(&codes[range], scales[row], out)
            }
        }
    }

    /// Writes the (dequantised) row of `id` into `out`, or the fallback
    /// vector if `id` is unknown and one is set.
    ///
    /// # Errors
    /// [`EmbedError::Dimension`] if `out.len() != dim`;
    /// [`EmbedError::UnknownItem`] if `id` is unknown and no fallback is set.
    pub fn get_into(&self, id: ItemId, out: &mut [f32]) -> Result<(), EmbedError> {
        if out.len() != self.dim {
            return Err(EmbedError::Dimension {
                what: format!("output buffer for item {id}"),
                expected: self.dim,
                got: out.len(),
            });
        }
        match self.index.get(&id) {
            Some(&r) => self.decode_row(r as usize, out),
            None => match &self.fallback {
                Some(f) => out.copy_from_slice(f),
                None => return Err(EmbedError::UnknownItem(id)),
            },
        }
        Ok(())
    }

    /// The (dequantised) row of `id` as a new vector; a convenience that
    /// allocates — prefer [`ItemTable::get_into`] on hot paths.
    ///
    /// # Errors
    /// [`EmbedError::UnknownItem`] if `id` is unknown and no fallback is set.
    pub fn get(&self, id: ItemId) -> Result<Vec<f32>, EmbedError> {
        let mut out = vec![0.0; self.dim];
        self.get_into(id, &mut out)?;
        Ok(out)
    }

    /// Writes the rows of `ids` into `out` (`[ids.len() × dim]`, row `i` for
    /// `ids[i]`), using the fallback for unknown ids if one is set.
    ///
    /// Does not allocate. On error `out` may be partly written.
    ///
    /// # Errors
    /// [`EmbedError::Dimension`] if `out.len() != ids.len() × dim`;
    /// [`EmbedError::UnknownItem`] for the first unknown id when no fallback
    /// is set.
    pub fn gather(&self, ids: &[ItemId], out: &mut [f32]) -> Result<(), EmbedError> {
        let dim = self.dim;
        let expected = ids.len().saturating_mul(dim);
        if out.len() != expected {
            return Err(EmbedError::Dimension {
                what: format!("gather output for {} ids of width {dim}", ids.len()),
                expected,
                got: out.len(),
            });
        }
        // One monomorphised loop per storage type: the match is hoisted out.
        match &self.storage {
            Storage::F32(v) => self.gather_with(ids, out, |r, o| {
                o.copy_from_slice(&v[r * dim..(r + 1) * dim]);
            }),
            Storage::F16(v) => self.gather_with(ids, out, |r, o| {
                v[r * dim..(r + 1) * dim].convert_to_f32_slice(o);
            }),
            Storage::Int8Global(v) => self.gather_with(ids, out, |r, o| {
                dequantize_i8_into(&v[r * dim..(r + 1) * dim], INT8_GLOBAL_SCALE, o);
            }),
            Storage::Int8PerRow { codes, scales } => self.gather_with(ids, out, |r, o| {
                dequantize_i8_into(&codes[r * dim..(r + 1) * dim], scales[r], o);
            }),
        }
    }

    #[inline]
    fn gather_with<F: Fn(usize, &mut [f32])>(
        &self,
        ids: &[ItemId],
        out: &mut [f32],
        decode: F,
    ) -> Result<(), EmbedError> {
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(self.dim)) {
            match self.index.get(&id) {
                Some(&r) => decode(r as usize, o),
                None => match &self.fallback {
                    Some(f) => o.copy_from_slice(f),
                    None => return Err(EmbedError::UnknownItem(id)),
                },
            }
        }
        Ok(())
    }

    /// Writes the int8 codes of `ids` into `codes` (`[ids.len() × dim]`)
    /// and their scales into `scales` (value = `code · scale / 127`), without
    /// dequantising: the lifelong history of a request gathered once for
    /// int8 nearest-neighbour selection. An id without a row gets zero codes
    /// and scale 0 (its dot product with anything is 0; the fallback is not
    /// used). Returns how many ids had no row. Does not allocate.
    ///
    /// # Errors
    /// [`EmbedError::InvalidArgument`] if the table is not int8;
    /// [`EmbedError::Dimension`] if an output has the wrong length.
    pub fn gather_i8(
        &self,
        ids: &[ItemId],
        codes: &mut [i8],
        scales: &mut [f32],
    ) -> Result<usize, EmbedError> {
        let dim = self.dim;
        let expected = ids.len().saturating_mul(dim);
        if codes.len() != expected {
            return Err(EmbedError::Dimension {
                what: format!("gather_i8 codes for {} ids of width {dim}", ids.len()),
                expected,
                got: codes.len(),
            });
        }
        if scales.len() != ids.len() {
            return Err(EmbedError::Dimension {
                what: "gather_i8 scales".into(),
                expected: ids.len(),
                got: scales.len(),
            });
        }
        let (table, per_row) = match &self.storage {
            Storage::Int8Global(v) => (v, None),
            Storage::Int8PerRow { codes, scales } => (codes, Some(scales)),
            Storage::F32(_) | Storage::F16(_) => {
                return Err(EmbedError::InvalidArgument(format!(
                    "gather_i8 needs an int8 table, this one is {}",
                    self.precision.as_str()
                )));
            }
        };
        let mut unknown = 0;
        for ((&id, out), scale) in ids.iter().zip(codes.chunks_exact_mut(dim)).zip(scales) {
            match self.index.get(&id) {
                Some(&r) => {
                    let r = r as usize;
                    out.copy_from_slice(&table[r * dim..(r + 1) * dim]);
                    *scale = per_row.map_or(INT8_GLOBAL_SCALE, |s| s[r]);
                }
                None => {
                    out.fill(0);
                    *scale = 0.0;
                    unknown += 1;
                }
            }
        }
        Ok(unknown)
    }

    /// The int8 codes of `id` and their scale (value = `code · scale / 127`;
    /// the scale is 0.65 for [`Precision::Int8Global`]). `None` if the table
    /// is not int8 or `id` has no row (the fallback is not returned).
    pub fn row_i8(&self, id: ItemId) -> Option<(&[i8], f32)> {
        let row = *self.index.get(&id)? as usize;
        let range = row * self.dim..(row + 1) * self.dim;
        match &self.storage {
            Storage::Int8Global(v) => Some((&v[range], INT8_GLOBAL_SCALE)),
            Storage::Int8PerRow { codes, scales } => Some((&codes[range], scales[row])),
            Storage::F32(_) | Storage::F16(_) => None,
        }
    }

    /// The stored f32 row of `id` without copying; `None` unless the table
    /// is [`Precision::F32`] and holds `id`.
    pub fn row_f32(&self, id: ItemId) -> Option<&[f32]> {
        let row = *self.index.get(&id)? as usize;
        match &self.storage {
            Storage::F32(v) => Some(&v[row * self.dim..(row + 1) * self.dim]),
            _ => None,
        }
    }

    /// A copy of this table in another precision (rows are dequantised and
    /// stored again, so int8 → f32 does not recover lost precision). The
    /// fallback is kept.
    ///
    /// # Errors
    /// [`EmbedError::OutOfRange`] converting to f16 a value beyond its range.
    pub fn to_precision(&self, precision: Precision) -> Result<ItemTable, EmbedError> {
        let mut out = ItemTable::new(self.dim, precision)?;
        out.try_reserve(self.len())?;
        let mut buf = vec![0.0f32; self.dim];
        for (row, &id) in self.ids.iter().enumerate() {
            self.decode_row(row, &mut buf);
            out.insert(id, &buf)?;
        }
        out.fallback = self.fallback.clone();
        Ok(out)
    }

    /// Approximate heap memory of the table in bytes: row storage, the id
    /// list, the hash index (by capacity, ~13 bytes a slot) and the fallback.
    pub fn bytes(&self) -> usize {
        self.storage.bytes()
            + self.ids.capacity() * std::mem::size_of::<ItemId>()
            + self.index.capacity() * (std::mem::size_of::<(ItemId, u32)>() + 1)
            + self.fallback.as_ref().map_or(0, |f| f.len() * 4)
    }

    // ---- raw access for the file format (crate-internal) ----

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    pub(crate) fn id_slice(&self) -> &[ItemId] {
        &self.ids
    }

    /// Builds a table from already-encoded storage; the caller has checked
    /// that `storage` holds `ids.len() × dim` values. Duplicate ids are
    /// reported as the id.
    pub(crate) fn from_parts(
        dim: usize,
        ids: Vec<ItemId>,
        storage: Storage,
        fallback: Option<Vec<f32>>,
    ) -> Result<Self, EmbedError> {
        let precision = match &storage {
            Storage::F32(_) => Precision::F32,
            Storage::F16(_) => Precision::F16,
            Storage::Int8Global(_) => Precision::Int8Global,
            Storage::Int8PerRow { .. } => Precision::Int8PerRow,
        };
        let mut table = ItemTable::new(dim, precision)?;
        if u32::try_from(ids.len()).is_err() {
            return Err(EmbedError::InvalidArgument(format!(
                "item table: {} rows exceed the u32 row index",
                ids.len()
            )));
        }
        table.try_reserve(ids.len())?;
        for (row, &id) in ids.iter().enumerate() {
            if table.index.insert(id, row as u32).is_some() {
                return Err(EmbedError::DuplicateItem(id));
            }
        }
        table.ids = ids;
        table.storage = storage;
        table.set_fallback(fallback)?;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tol(p: Precision, scale: f32) -> f32 {
        match p {
            Precision::F32 => 0.0,
            Precision::F16 => 1e-3,
            Precision::Int8Global => INT8_GLOBAL_SCALE / 254.0 + 1e-6,
            Precision::Int8PerRow => scale / 254.0 + 1e-6,
        }
    }

    #[test]
    fn zero_dim_is_an_error() {
        assert!(matches!(
            ItemTable::new(0, Precision::F32),
            Err(EmbedError::InvalidArgument(_))
        ));
    }

    #[test]
    fn insert_get_overwrite_in_every_precision() {
        for p in Precision::ALL {
            let mut t = ItemTable::new(3, p).unwrap();
            assert!(t.is_empty());
            t.insert(5, &[0.1, -0.2, 0.3]).unwrap();
            t.insert(9, &[0.5, 0.0, -0.5]).unwrap();
            assert_eq!(t.len(), 2);
            assert_eq!((t.dim(), t.precision()), (3, p));
            assert!(t.contains(5) && t.contains(9) && !t.contains(6));
            assert_eq!(t.ids().collect::<Vec<_>>(), vec![5, 9]);

            let mut row = [0.0; 3];
            t.get_into(5, &mut row).unwrap();
            for (a, b) in row.iter().zip([0.1, -0.2, 0.3]) {
                assert!((a - b).abs() <= tol(p, 0.3), "{p}: {a} vs {b}");
            }
            // Overwrite keeps the row count and the order.
            t.insert(5, &[0.0, 0.0, 0.25]).unwrap();
            assert_eq!(t.len(), 2);
            t.get_into(5, &mut row).unwrap();
            assert!((row[2] - 0.25).abs() <= tol(p, 0.25), "{p}: {row:?}");
            assert!(row[0].abs() <= 1e-6);
            assert_eq!(t.get(9).unwrap().len(), 3);
            assert!(t.bytes() > 0);
        }
    }

    #[test]
    fn unknown_id_and_fallback() {
        let mut t = ItemTable::new(2, Precision::F32).unwrap();
        t.insert(1, &[1.0, 2.0]).unwrap();
        let mut row = [0.0; 2];
        let err = t.get_into(77, &mut row).unwrap_err();
        assert!(matches!(err, EmbedError::UnknownItem(77)));
        assert!(err.to_string().contains("77"), "{err}");
        assert!(matches!(
            t.gather(&[1, 78], &mut [0.0; 4]),
            Err(EmbedError::UnknownItem(78))
        ));

        let t = t.with_fallback(Some(vec![-1.0, -2.0])).unwrap();
        assert_eq!(t.fallback(), Some(&[-1.0, -2.0][..]));
        t.get_into(77, &mut row).unwrap();
        assert_eq!(row, [-1.0, -2.0]);
        assert!(!t.contains(77));
        let mut batch = [0.0; 6];
        t.gather(&[77, 1, 3], &mut batch).unwrap();
        assert_eq!(batch, [-1.0, -2.0, 1.0, 2.0, -1.0, -2.0]);

        let mut t = t;
        t.set_fallback(None).unwrap();
        assert!(t.get_into(77, &mut row).is_err());
        assert!(t.set_fallback(Some(vec![0.0; 3])).is_err());
        assert!(t.set_fallback(Some(vec![0.0, f32::NAN])).is_err());
        assert!(t.fallback().is_none());
    }

    #[test]
    fn wrong_dim_names_the_item() {
        let mut t = ItemTable::new(4, Precision::Int8PerRow).unwrap();
        let err = t.insert(123, &[1.0; 3]).unwrap_err();
        assert!(matches!(
            err,
            EmbedError::Dimension {
                expected: 4,
                got: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("item 123"), "{err}");
        assert!(t.is_empty());
        t.insert(1, &[1.0; 4]).unwrap();
        assert!(matches!(
            t.get_into(1, &mut [0.0; 5]),
            Err(EmbedError::Dimension { .. })
        ));
        assert!(matches!(
            t.gather(&[1], &mut [0.0; 3]),
            Err(EmbedError::Dimension { .. })
        ));
    }

    #[test]
    fn non_finite_and_f16_overflow_are_rejected() {
        for p in Precision::ALL {
            let mut t = ItemTable::new(3, p).unwrap();
            let err = t.insert(8, &[0.0, f32::NAN, 1.0]).unwrap_err();
            assert!(
                matches!(err, EmbedError::NonFinite { item: 8, index: 1 }),
                "{err}"
            );
            assert!(matches!(
                t.insert(8, &[0.0, 0.0, f32::NEG_INFINITY]),
                Err(EmbedError::NonFinite { item: 8, index: 2 })
            ));
            assert!(t.is_empty());
        }
        let mut t = ItemTable::new(2, Precision::F16).unwrap();
        assert!(matches!(
            t.insert(3, &[1.0, 1.0e5]),
            Err(EmbedError::OutOfRange {
                item: 3,
                index: 1,
                ..
            })
        ));
        // Overwriting with a bad row leaves the old row in place.
        t.insert(3, &[1.0, 2.0]).unwrap();
        assert!(t.insert(3, &[f32::NAN, 0.0]).is_err());
        assert_eq!(t.get(3).unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn from_rows_checks_duplicates_and_length() {
        let t = ItemTable::from_rows(2, Precision::F32, &[3, 1], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.get(1).unwrap(), vec![3.0, 4.0]);
        let err = ItemTable::from_rows(2, Precision::F16, &[3, 1, 3], &[0.0; 6]).unwrap_err();
        assert!(matches!(err, EmbedError::DuplicateItem(3)));
        assert!(err.to_string().contains('3'));
        assert!(matches!(
            ItemTable::from_rows(2, Precision::F32, &[1, 2], &[0.0; 5]),
            Err(EmbedError::Dimension {
                expected: 4,
                got: 5,
                ..
            })
        ));
        assert!(ItemTable::from_rows(0, Precision::F32, &[], &[]).is_err());
        let mut t = ItemTable::new(4, Precision::F32).unwrap();
        assert!(t.try_reserve(usize::MAX / 2).is_err());
        t.try_reserve(10).unwrap();
        let empty = ItemTable::from_rows(2, Precision::F32, &[], &[]).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn int8_rows_are_exposed() {
        let mut g = ItemTable::new(2, Precision::Int8Global).unwrap();
        g.insert(1, &[0.65, -0.325]).unwrap();
        let (q, s) = g.row_i8(1).unwrap();
        assert_eq!((q, s), (&[127i8, -64][..], 0.65)); // -63.5 -> -64
        assert!(g.row_i8(2).is_none());
        assert!(g.row_f32(1).is_none());

        let mut r = ItemTable::new(2, Precision::Int8PerRow).unwrap();
        r.insert(1, &[2.0, -1.0]).unwrap();
        let (q, s) = r.row_i8(1).unwrap();
        assert_eq!(s, 2.0);
        assert_eq!(q[0], 127);

        let f = ItemTable::from_rows(2, Precision::F32, &[1], &[1.0, 2.0]).unwrap();
        assert!(f.row_i8(1).is_none());
        assert_eq!(f.row_f32(1), Some(&[1.0, 2.0][..]));
    }

    #[test]
    fn global_int8_clamps_large_values() {
        let mut t = ItemTable::new(2, Precision::Int8Global).unwrap();
        t.insert(1, &[3.0, -3.0]).unwrap();
        assert_eq!(t.get(1).unwrap(), vec![0.65, -0.65]);
    }

    #[test]
    fn conversion_between_precisions() {
        let data = [0.1f32, -0.2, 0.3, 0.4, 0.5, -0.6];
        let t = ItemTable::from_rows(3, Precision::F32, &[10, 20], &data)
            .unwrap()
            .with_fallback(Some(vec![0.0; 3]))
            .unwrap();
        for p in Precision::ALL {
            let c = t.to_precision(p).unwrap();
            assert_eq!(c.precision(), p);
            assert_eq!(c.ids().collect::<Vec<_>>(), vec![10, 20]);
            assert!(c.fallback().is_some());
            let mut got = [0.0; 6];
            c.gather(&[10, 20], &mut got).unwrap();
            for (a, b) in got.iter().zip(&data) {
                assert!((a - b).abs() <= tol(p, 0.6), "{p}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
        assert!("int4".parse::<Precision>().is_err());
        for p in Precision::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
        }
        assert!(Precision::Int8PerRow.is_int8() && !Precision::F16.is_int8());
    }

    #[test]
    fn hasher_spreads_strided_ids() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<IdHasher>::default();
        let mut low = std::collections::HashSet::new();
        for i in 0..1024u64 {
            low.insert(b.hash_one(i << 20) & 1023);
        }
        // A poor hash would put multiples of 2^20 into very few buckets.
        assert!(low.len() > 500, "{}", low.len());
    }

    proptest! {
        #[test]
        fn gather_equals_per_id_get(
            p in prop::sample::select(Precision::ALL.to_vec()),
            rows in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 5), 1..20),
            picks in prop::collection::vec(0usize..40, 0..30),
        ) {
            let ids: Vec<u64> = (0..rows.len() as u64).map(|i| i * 1_000_003).collect();
            let data: Vec<f32> = rows.concat();
            let table = ItemTable::from_rows(5, p, &ids, &data)
                .unwrap()
                .with_fallback(Some(vec![9.0; 5]))
                .unwrap();
            // Picks past the end are unknown ids and hit the fallback.
            let query: Vec<u64> = picks.iter().map(|&i| i as u64 * 1_000_003).collect();
            let mut batch = vec![f32::NAN; query.len() * 5];
            table.gather(&query, &mut batch).unwrap();
            let mut row = [0.0f32; 5];
            for (i, &id) in query.iter().enumerate() {
                table.get_into(id, &mut row).unwrap();
                prop_assert_eq!(&batch[i * 5..(i + 1) * 5], &row[..]);
                if !table.contains(id) {
                    prop_assert_eq!(row, [9.0; 5]);
                }
            }
        }
    }

    #[test]
    fn gather_i8_copies_codes_and_scales_and_zeroes_unknown_ids() {
        for precision in [Precision::Int8Global, Precision::Int8PerRow] {
            let mut t = ItemTable::new(3, precision).unwrap();
            t.insert(1, &[0.1, -0.2, 0.3]).unwrap();
            t.insert(2, &[0.5, 0.0, -0.5]).unwrap();
            let mut codes = [1i8; 9];
            let mut scales = [9.0f32; 3];
            let unknown = t.gather_i8(&[2, 77, 1], &mut codes, &mut scales).unwrap();
            assert_eq!(unknown, 1);
            for (slot, id) in [(0, 2), (2, 1)] {
                let (row, scale) = t.row_i8(id).unwrap();
                assert_eq!(&codes[slot * 3..slot * 3 + 3], row);
                assert_eq!(scales[slot], scale);
            }
            assert_eq!(&codes[3..6], &[0, 0, 0]);
            assert_eq!(scales[1], 0.0);
            assert!(
                t.gather_i8(&[1], &mut codes[..2], &mut scales[..1])
                    .is_err()
            );
            assert!(
                t.gather_i8(&[1], &mut codes[..3], &mut scales[..2])
                    .is_err()
            );
        }
        let f = ItemTable::new(3, Precision::F32).unwrap();
        assert!(f.gather_i8(&[], &mut [], &mut []).is_err());
    }
}
