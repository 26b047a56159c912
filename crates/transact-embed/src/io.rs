//! Saving and loading [`ItemTable`]s as safetensors files.
//!
//! # File format
//!
//! A standard safetensors file with metadata
//! `{"format": "transact-item-table", "version": "1", "precision": <p>, "dim": <d>}`
//! (`<p>` one of `f32`, `f16`, `int8_global`, `int8_per_row`; every value is
//! a string, as safetensors requires) and the tensors
//!
//! | tensor          | dtype | shape      | present for            |
//! |-----------------|-------|------------|------------------------|
//! | `ids`           | I64   | `[N]`      | always                 |
//! | `embeddings`    | F32   | `[N, dim]` | `f32`                  |
//! | `embeddings`    | F16   | `[N, dim]` | `f16`                  |
//! | `embeddings_i8` | I8    | `[N, dim]` | `int8_global`, `int8_per_row` |
//! | `scales`        | F32   | `[N]`      | int8 (all 0.65 for `int8_global`) |
//! | `fallback`      | F32   | `[dim]`    | only if a fallback is set |
//!
//! Row `i` belongs to `ids[i]`. Ids are `u64` stored as the `i64` with the
//! same bits (ids above `i64::MAX` read back as negative numbers in other
//! tools). An int8 value is `code · scale / 127`. All data is little-endian.
//! Loading stores int8 codes and f16 values as found, so a save/load round
//! trip is bit-exact.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use crate::EmbedError;
use crate::quant::INT8_GLOBAL_SCALE;
use crate::table::{ItemTable, Precision, Storage};

/// The `format` metadata value of item table files.
pub const TABLE_FORMAT: &str = "transact-item-table";
/// The `version` metadata value written by this crate.
pub const TABLE_FORMAT_VERSION: &str = "1";

const IDS: &str = "ids";
const EMB: &str = "embeddings";
const EMB_I8: &str = "embeddings_i8";
const SCALES: &str = "scales";
const FALLBACK: &str = "fallback";

/// A tensor ready to write: name, dtype, shape, little-endian bytes.
type RawTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// Error helpers bound to one file.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn file(&self, detail: impl Into<String>) -> EmbedError {
        EmbedError::Format {
            path: self.path.to_path_buf(),
            tensor: None,
            detail: detail.into(),
        }
    }

    fn tensor(&self, tensor: &str, detail: impl Into<String>) -> EmbedError {
        EmbedError::Format {
            path: self.path.to_path_buf(),
            tensor: Some(tensor.to_string()),
            detail: detail.into(),
        }
    }
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&f(v));
    }
    out
}

fn read_le<T, const N: usize>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

impl ItemTable {
    /// Serialises the table to safetensors bytes (see [`crate::io`] for the
    /// layout).
    ///
    /// # Errors
    /// [`EmbedError::Format`] (with path `<memory>`) if safetensors rejects
    /// the tensors, which only happens for absurd sizes.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, EmbedError> {
        let path = Path::new("<memory>");
        let (tensors, meta) = self.encode();
        let views = views(&tensors, Ctx { path })?;
        safetensors::serialize(views, Some(meta)).map_err(|e| Ctx { path }.file(e.to_string()))
    }

    /// Writes the table to `path` as a safetensors file (see [`crate::io`]).
    /// The file is written to a temporary sibling and renamed into place.
    ///
    /// # Errors
    /// [`EmbedError::Io`] naming `path` if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), EmbedError> {
        let path = path.as_ref();
        let (tensors, meta) = self.encode();
        let views = views(&tensors, Ctx { path })?;
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(source) => EmbedError::Io {
                path: path.to_path_buf(),
                source,
            },
            other => Ctx { path }.file(other.to_string()),
        })
    }

    /// Reads a table written by [`ItemTable::save`].
    ///
    /// # Errors
    /// [`EmbedError::Io`] naming `path` if it cannot be read;
    /// [`EmbedError::Format`] naming `path` (and the tensor, when one is to
    /// blame) if the content is not a valid item table.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EmbedError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::from_safetensors_bytes(&bytes, path)
    }

    /// Parses a table from safetensors bytes; `origin` names the source in
    /// errors.
    ///
    /// # Errors
    /// As [`ItemTable::load`], without the I/O part.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &Path) -> Result<Self, EmbedError> {
        let cx = Ctx { path: origin };
        let st = SafeTensors::deserialize(bytes).map_err(|e| cx.file(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| cx.file(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| cx.file("no metadata"))?;
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| cx.tensor(key, "missing metadata entry (not an item table?)"))
        };
        let format = get("format")?;
        if format != TABLE_FORMAT {
            return Err(cx.tensor(
                "format",
                format!("metadata is `{format}`, expected `{TABLE_FORMAT}`"),
            ));
        }
        let precision: Precision = get("precision")?
            .parse()
            .map_err(|e: EmbedError| cx.tensor("precision", e.to_string()))?;
        let dim_text = get("dim")?;
        let dim: usize =
            dim_text.parse().ok().filter(|&d| d > 0).ok_or_else(|| {
                cx.tensor("dim", format!("`{dim_text}` is not a positive integer"))
            })?;

        let ids = read_ids(&st, IDS, &cx)?;
        let n = ids.len();
        let storage = match precision {
            Precision::F32 => {
                let v = matrix(&st, EMB, Dtype::F32, n, dim, &cx)?;
                let data = read_le(v.data(), f32::from_le_bytes);
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    return Err(non_finite(&cx, EMB, &ids, dim, i));
                }
                Storage::F32(data)
            }
            Precision::F16 => {
                let v = matrix(&st, EMB, Dtype::F16, n, dim, &cx)?;
                let data: Vec<f16> = read_le(v.data(), u16::from_le_bytes)
                    .into_iter()
                    .map(f16::from_bits)
                    .collect();
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    return Err(non_finite(&cx, EMB, &ids, dim, i));
                }
                Storage::F16(data)
            }
            Precision::Int8Global | Precision::Int8PerRow => {
                let v = matrix(&st, EMB_I8, Dtype::I8, n, dim, &cx)?;
                let codes: Vec<i8> = v.data().iter().map(|&b| b as i8).collect();
                if let Some(i) = codes.iter().position(|&c| c == i8::MIN) {
                    return Err(cx.tensor(
                        EMB_I8,
                        format!("code -128 at flat index {i} (codes are in -127..=127)"),
                    ));
                }
                let scales = vector(&st, SCALES, Dtype::F32, n, &cx)?;
                let scales = read_le(scales.data(), f32::from_le_bytes);
                if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
                    return Err(cx.tensor(
                        SCALES,
                        format!("scale {} of row {i} is not finite and ≥ 0", scales[i]),
                    ));
                }
                if precision == Precision::Int8Global {
                    if let Some(i) = scales.iter().position(|&s| s != INT8_GLOBAL_SCALE) {
                        return Err(cx.tensor(
                            SCALES,
                            format!("scale {} of row {i} is not the global 0.65", scales[i]),
                        ));
                    }
                    Storage::Int8Global(codes)
                } else {
                    Storage::Int8PerRow { codes, scales }
                }
            }
        };
        let fallback = match st.tensor(FALLBACK) {
            Ok(_) => {
                let v = vector(&st, FALLBACK, Dtype::F32, dim, &cx)?;
                Some(read_le(v.data(), f32::from_le_bytes))
            }
            Err(_) => None,
        };
        ItemTable::from_parts(dim, ids, storage, fallback).map_err(|e| match e {
            EmbedError::DuplicateItem(id) => cx.tensor(IDS, format!("duplicate item id {id}")),
            EmbedError::InvalidArgument(m) if m.contains("fallback") => cx.tensor(FALLBACK, m),
            other => cx.file(other.to_string()),
        })
    }

    /// Loads a plain embedding matrix from any safetensors file into an
    /// [`Precision::F32`] table: `ids_tensor` is 1-D `[N]` of I64 (read as
    /// the `u64` with the same bits), U64, I32 or U32 (32-bit ids must not be
    /// negative), and `emb_tensor` 2-D `[N, dim]` of F32 (F16, BF16 and F64
    /// are converted). Use [`ItemTable::to_precision`] to quantise afterwards.
    ///
    /// # Errors
    /// [`EmbedError::Io`] naming `path`; [`EmbedError::Format`] naming
    /// `path` and the tensor for a missing tensor, a wrong dtype or shape,
    /// a non-finite value or a duplicate id.
    pub fn load_f32(
        path: impl AsRef<Path>,
        ids_tensor: &str,
        emb_tensor: &str,
    ) -> Result<Self, EmbedError> {
        let path = path.as_ref();
        let cx = Ctx { path };
        let bytes = read_file(path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| cx.file(e.to_string()))?;
        let ids = read_ids(&st, ids_tensor, &cx)?;
        let v = st
            .tensor(emb_tensor)
            .map_err(|_| cx.tensor(emb_tensor, "not found in the file"))?;
        let (n, dim) = match *v.shape() {
            [n, dim] if dim > 0 => (n, dim),
            _ => {
                return Err(cx.tensor(
                    emb_tensor,
                    format!("shape {:?}, expected [N, dim] with dim > 0", v.shape()),
                ));
            }
        };
        if n != ids.len() {
            return Err(cx.tensor(
                emb_tensor,
                format!("{n} rows but `{ids_tensor}` holds {} ids", ids.len()),
            ));
        }
        let data: Vec<f32> = match v.dtype() {
            Dtype::F32 => read_le(v.data(), f32::from_le_bytes),
            Dtype::F16 => read_le(v.data(), u16::from_le_bytes)
                .into_iter()
                .map(|b| f16::from_bits(b).to_f32())
                .collect(),
            Dtype::BF16 => read_le(v.data(), u16::from_le_bytes)
                .into_iter()
                .map(|b| half::bf16::from_bits(b).to_f32())
                .collect(),
            Dtype::F64 => read_le(v.data(), f64::from_le_bytes)
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            other => {
                return Err(cx.tensor(
                    emb_tensor,
                    format!("dtype {other:?}, expected a float type"),
                ));
            }
        };
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(non_finite(&cx, emb_tensor, &ids, dim, i));
        }
        ItemTable::from_parts(dim, ids, Storage::F32(data), None).map_err(|e| match e {
            EmbedError::DuplicateItem(id) => {
                cx.tensor(ids_tensor, format!("duplicate item id {id}"))
            }
            other => cx.file(other.to_string()),
        })
    }

    /// Builds the tensors (name, dtype, shape, little-endian bytes) and the
    /// metadata of the file.
    fn encode(&self) -> (Vec<RawTensor>, HashMap<String, String>) {
        let (n, dim) = (self.len(), self.dim());
        let mut tensors = vec![(
            IDS,
            Dtype::I64,
            vec![n],
            le_bytes(self.id_slice(), |id: u64| (id as i64).to_le_bytes()),
        )];
        match self.storage() {
            Storage::F32(v) => {
                tensors.push((EMB, Dtype::F32, vec![n, dim], le_bytes(v, f32::to_le_bytes)))
            }
            Storage::F16(v) => tensors.push((
                EMB,
                Dtype::F16,
                vec![n, dim],
                le_bytes(v, |h: f16| h.to_bits().to_le_bytes()),
            )),
            Storage::Int8Global(codes) => {
                tensors.push((
                    EMB_I8,
                    Dtype::I8,
                    vec![n, dim],
                    codes.iter().map(|&c| c as u8).collect(),
                ));
                let scales = vec![INT8_GLOBAL_SCALE; n];
                tensors.push((
                    SCALES,
                    Dtype::F32,
                    vec![n],
                    le_bytes(&scales, f32::to_le_bytes),
                ));
            }
            Storage::Int8PerRow { codes, scales } => {
                tensors.push((
                    EMB_I8,
                    Dtype::I8,
                    vec![n, dim],
                    codes.iter().map(|&c| c as u8).collect(),
                ));
                tensors.push((
                    SCALES,
                    Dtype::F32,
                    vec![n],
                    le_bytes(scales, f32::to_le_bytes),
                ));
            }
        }
        if let Some(f) = self.fallback() {
            tensors.push((
                FALLBACK,
                Dtype::F32,
                vec![dim],
                le_bytes(f, f32::to_le_bytes),
            ));
        }
        let meta = HashMap::from([
            ("format".to_string(), TABLE_FORMAT.to_string()),
            ("version".to_string(), TABLE_FORMAT_VERSION.to_string()),
            (
                "precision".to_string(),
                self.precision().as_str().to_string(),
            ),
            ("dim".to_string(), dim.to_string()),
        ]);
        (tensors, meta)
    }
}

fn views<'a>(
    tensors: &'a [RawTensor],
    cx: Ctx<'_>,
) -> Result<Vec<(&'static str, TensorView<'a>)>, EmbedError> {
    tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (*name, v))
                .map_err(|e| cx.tensor(name, e.to_string()))
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Names the item and column of the first non-finite value at flat index `i`.
fn non_finite(cx: &Ctx<'_>, tensor: &str, ids: &[u64], dim: usize, i: usize) -> EmbedError {
    let row = i / dim;
    let id = ids.get(row).copied().unwrap_or_default();
    cx.tensor(
        tensor,
        format!(
            "non-finite value for item {id} (row {row}) at index {}",
            i % dim
        ),
    )
}

/// The id tensor `name` as `u64`s.
fn read_ids(st: &SafeTensors<'_>, name: &str, cx: &Ctx<'_>) -> Result<Vec<u64>, EmbedError> {
    let v = st
        .tensor(name)
        .map_err(|_| cx.tensor(name, "not found in the file"))?;
    if v.shape().len() != 1 {
        return Err(cx.tensor(name, format!("shape {:?}, expected [N]", v.shape())));
    }
    let raw = v.data();
    match v.dtype() {
        Dtype::I64 => Ok(read_le(raw, i64::from_le_bytes)
            .into_iter()
            .map(|x| x as u64)
            .collect()),
        Dtype::U64 => Ok(read_le(raw, u64::from_le_bytes)),
        Dtype::U32 => Ok(read_le(raw, u32::from_le_bytes)
            .into_iter()
            .map(u64::from)
            .collect()),
        Dtype::I32 => read_le(raw, i32::from_le_bytes)
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                u64::try_from(x)
                    .map_err(|_| cx.tensor(name, format!("negative id {x} at index {i}")))
            })
            .collect(),
        other => Err(cx.tensor(
            name,
            format!("dtype {other:?}, expected I64, U64, I32 or U32"),
        )),
    }
}

/// Tensor `name`, checked to be `dtype` with shape `[n, dim]`.
fn matrix<'d>(
    st: &SafeTensors<'d>,
    name: &str,
    dtype: Dtype,
    n: usize,
    dim: usize,
    cx: &Ctx<'_>,
) -> Result<TensorView<'d>, EmbedError> {
    checked(st, name, dtype, &[n, dim], cx)
}

/// Tensor `name`, checked to be `dtype` with shape `[n]`.
fn vector<'d>(
    st: &SafeTensors<'d>,
    name: &str,
    dtype: Dtype,
    n: usize,
    cx: &Ctx<'_>,
) -> Result<TensorView<'d>, EmbedError> {
    checked(st, name, dtype, &[n], cx)
}

fn checked<'d>(
    st: &SafeTensors<'d>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    cx: &Ctx<'_>,
) -> Result<TensorView<'d>, EmbedError> {
    let v = st
        .tensor(name)
        .map_err(|_| cx.tensor(name, "not found in the file"))?;
    if v.dtype() != dtype {
        return Err(cx.tensor(name, format!("dtype {:?}, expected {dtype:?}", v.dtype())));
    }
    if v.shape() != shape {
        return Err(cx.tensor(name, format!("shape {:?}, expected {shape:?}", v.shape())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p: Precision) -> ItemTable {
        let data: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.1).collect();
        ItemTable::from_rows(3, p, &[u64::MAX, 0, 17, 1 << 40], &data).unwrap()
    }

    fn assert_same(a: &ItemTable, b: &ItemTable) {
        assert_eq!(a.precision(), b.precision());
        assert_eq!(a.dim(), b.dim());
        assert_eq!(a.ids().collect::<Vec<_>>(), b.ids().collect::<Vec<_>>());
        assert_eq!(a.fallback(), b.fallback());
        let ids: Vec<u64> = a.ids().collect();
        let (mut x, mut y) = (vec![0.0; ids.len() * 3], vec![0.0; ids.len() * 3]);
        a.gather(&ids, &mut x).unwrap();
        b.gather(&ids, &mut y).unwrap();
        // Bit-exact: the stored codes are kept, not re-quantised.
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        for &id in &ids {
            assert_eq!(a.row_i8(id), b.row_i8(id));
        }
    }

    #[test]
    fn round_trip_in_every_precision() {
        let dir = tempfile::tempdir().unwrap();
        for p in Precision::ALL {
            for fallback in [None, Some(vec![0.25, -0.5, 1.0])] {
                let t = sample(p).with_fallback(fallback).unwrap();
                let path = dir.path().join(format!("{p}.safetensors"));
                t.save(&path).unwrap();
                let back = ItemTable::load(&path).unwrap();
                assert_same(&t, &back);
                let mem =
                    ItemTable::from_safetensors_bytes(&t.to_safetensors_bytes().unwrap(), &path)
                        .unwrap();
                assert_same(&t, &mem);
            }
        }
    }

    #[test]
    fn empty_table_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        for p in Precision::ALL {
            let t = ItemTable::new(5, p).unwrap();
            t.save(&path).unwrap();
            let back = ItemTable::load(&path).unwrap();
            assert!(back.is_empty());
            assert_eq!((back.dim(), back.precision()), (5, p));
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.safetensors");
        let err = ItemTable::load(&path).unwrap_err();
        assert!(matches!(err, EmbedError::Io { .. }));
        assert!(err.to_string().contains("nope.safetensors"), "{err}");
        let err = ItemTable::load_f32(&path, "ids", "emb").unwrap_err();
        assert!(err.to_string().contains("nope.safetensors"), "{err}");
        let err = sample(Precision::F32)
            .save(dir.path().join("no/such/dir/t.safetensors"))
            .unwrap_err();
        assert!(err.to_string().contains("t.safetensors"), "{err}");
    }

    #[test]
    fn corrupt_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.safetensors");
        std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
        let err = ItemTable::load(&path).unwrap_err();
        assert!(matches!(err, EmbedError::Format { .. }));
        assert!(err.to_string().contains("corrupt.safetensors"), "{err}");

        // A truncated real file.
        let good = sample(Precision::Int8PerRow)
            .to_safetensors_bytes()
            .unwrap();
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        let err = ItemTable::load(&path).unwrap_err();
        assert!(err.to_string().contains("corrupt.safetensors"), "{err}");
    }

    fn write_raw(
        path: &Path,
        tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>,
        meta: Option<HashMap<String, String>>,
    ) {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, meta, path).unwrap();
    }

    fn table_meta(p: &str, dim: &str) -> Option<HashMap<String, String>> {
        Some(HashMap::from([
            ("format".to_string(), TABLE_FORMAT.to_string()),
            ("precision".to_string(), p.to_string()),
            ("dim".to_string(), dim.to_string()),
        ]))
    }

    #[test]
    fn bad_content_names_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let ids = le_bytes(&[1i64, 2], i64::to_le_bytes);
        let emb = le_bytes(&[0.0f32; 6], f32::to_le_bytes);

        // Missing embeddings tensor.
        write_raw(
            &path,
            vec![("ids", Dtype::I64, vec![2], ids.clone())],
            table_meta("f32", "3"),
        );
        let err = ItemTable::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("`embeddings`"),
            "{err}"
        );

        // Wrong shape.
        write_raw(
            &path,
            vec![
                ("ids", Dtype::I64, vec![2], ids.clone()),
                ("embeddings", Dtype::F32, vec![3, 2], emb.clone()),
            ],
            table_meta("f32", "3"),
        );
        let err = ItemTable::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("`embeddings`") && err.contains("shape"),
            "{err}"
        );

        // Duplicate ids.
        let dup = le_bytes(&[4i64, 4], i64::to_le_bytes);
        write_raw(
            &path,
            vec![
                ("ids", Dtype::I64, vec![2], dup),
                ("embeddings", Dtype::F32, vec![2, 3], emb.clone()),
            ],
            table_meta("f32", "3"),
        );
        let err = ItemTable::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("`ids`") && err.contains("duplicate item id 4"),
            "{err}"
        );

        // Not an item table / unknown precision / bad dim.
        write_raw(&path, vec![("ids", Dtype::I64, vec![2], ids.clone())], None);
        assert!(
            ItemTable::load(&path)
                .unwrap_err()
                .to_string()
                .contains("bad.safetensors")
        );
        write_raw(
            &path,
            vec![("ids", Dtype::I64, vec![2], ids.clone())],
            table_meta("int4", "3"),
        );
        assert!(
            ItemTable::load(&path)
                .unwrap_err()
                .to_string()
                .contains("`precision`")
        );
        write_raw(
            &path,
            vec![("ids", Dtype::I64, vec![2], ids.clone())],
            table_meta("f32", "0"),
        );
        assert!(
            ItemTable::load(&path)
                .unwrap_err()
                .to_string()
                .contains("`dim`")
        );

        // Non-finite value names the item.
        let nan = le_bytes(&[0.0f32, 0.0, 0.0, 0.0, f32::NAN, 0.0], f32::to_le_bytes);
        write_raw(
            &path,
            vec![
                ("ids", Dtype::I64, vec![2], ids.clone()),
                ("embeddings", Dtype::F32, vec![2, 3], nan),
            ],
            table_meta("f32", "3"),
        );
        let err = ItemTable::load(&path).unwrap_err().to_string();
        assert!(err.contains("item 2") && err.contains("index 1"), "{err}");

        // int8_global with a wrong scale.
        write_raw(
            &path,
            vec![
                ("ids", Dtype::I64, vec![2], ids),
                ("embeddings_i8", Dtype::I8, vec![2, 3], vec![0u8; 6]),
                (
                    "scales",
                    Dtype::F32,
                    vec![2],
                    le_bytes(&[0.65f32, 1.0], f32::to_le_bytes),
                ),
            ],
            table_meta("int8_global", "3"),
        );
        let err = ItemTable::load(&path).unwrap_err().to_string();
        assert!(err.contains("`scales`"), "{err}");
    }

    #[test]
    fn load_f32_by_tensor_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.safetensors");
        let ids = le_bytes(&[10i64, 20], i64::to_le_bytes);
        let emb = le_bytes(&[1.0f32, 2.0, 3.0, 4.0], f32::to_le_bytes);
        let emb16 = le_bytes(&[f16::from_f32(1.5); 4], |h: f16| h.to_bits().to_le_bytes());
        write_raw(
            &path,
            vec![
                ("item_ids", Dtype::I64, vec![2], ids),
                ("item_emb", Dtype::F32, vec![2, 2], emb),
                ("half_emb", Dtype::F16, vec![2, 2], emb16),
                ("flat", Dtype::F32, vec![4], vec![0u8; 16]),
            ],
            None,
        );
        let t = ItemTable::load_f32(&path, "item_ids", "item_emb").unwrap();
        assert_eq!(t.precision(), Precision::F32);
        assert_eq!(t.get(20).unwrap(), vec![3.0, 4.0]);
        let h = ItemTable::load_f32(&path, "item_ids", "half_emb").unwrap();
        assert_eq!(h.get(10).unwrap(), vec![1.5, 1.5]);

        let err = ItemTable::load_f32(&path, "item_ids", "missing")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain.safetensors") && err.contains("`missing`"),
            "{err}"
        );
        let err = ItemTable::load_f32(&path, "nope", "item_emb")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`"), "{err}");
        let err = ItemTable::load_f32(&path, "item_ids", "flat")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`flat`") && err.contains("shape"), "{err}");
        let err = ItemTable::load_f32(&path, "item_emb", "item_emb")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`item_emb`"), "{err}");
    }
}
