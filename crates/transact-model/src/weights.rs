//! Named tensors in and out of safetensors files.
//!
//! Every model in this crate converts itself to and from a [`TensorMap`]
//! (name → shape + f32 data). Files hold f32 tensors (f16, bf16 and f64 are
//! read and converted; i64 and i32 tensors are kept for inputs of parity
//! files) and a string → string metadata map, where models store their
//! config as JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::ModelError;

/// One tensor: row-major data and its shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// 32-bit floats.
    F32 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// 64-bit integers.
    I64 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<i64>,
    },
}

impl Tensor {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. } | Tensor::I64 { shape, .. } => shape,
        }
    }
}

/// A set of named tensors plus string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorMap {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Free-form metadata (models keep their config here as JSON).
    pub metadata: BTreeMap<String, String>,
}

impl TensorMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts an f32 tensor. Fails if `data.len()` does not match `shape`.
    pub fn insert_f32(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), ModelError> {
        let name = name.into();
        ModelError::check_len(&name, shape.iter().product(), data.len())?;
        self.tensors.insert(name, Tensor::F32 { shape, data });
        Ok(())
    }

    /// Inserts an i64 tensor. Fails if `data.len()` does not match `shape`.
    pub fn insert_i64(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<i64>,
    ) -> Result<(), ModelError> {
        let name = name.into();
        ModelError::check_len(&name, shape.iter().product(), data.len())?;
        self.tensors.insert(name, Tensor::I64 { shape, data });
        Ok(())
    }

    /// The f32 tensor `name`, checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<&[f32], ModelError> {
        match self.tensors.get(name) {
            None => Err(ModelError::MissingTensor(name.to_string())),
            Some(Tensor::F32 { shape: s, data }) if s.as_slice() == shape => Ok(data),
            Some(t) => Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.shape().to_vec(),
            }),
        }
    }

    /// The f32 tensor `name`, with whatever shape it has.
    pub fn f32_any(&self, name: &str) -> Result<(&[usize], &[f32]), ModelError> {
        match self.tensors.get(name) {
            Some(Tensor::F32 { shape, data }) => Ok((shape, data)),
            Some(Tensor::I64 { shape, .. }) => Err(ModelError::Format {
                path: name.to_string(),
                detail: format!("tensor `{name}` (shape {shape:?}) is i64, expected a float type"),
            }),
            None => Err(ModelError::MissingTensor(name.to_string())),
        }
    }

    /// The i64 tensor `name`, with whatever shape it has.
    pub fn i64_any(&self, name: &str) -> Result<(&[usize], &[i64]), ModelError> {
        match self.tensors.get(name) {
            Some(Tensor::I64 { shape, data }) => Ok((shape, data)),
            Some(Tensor::F32 { shape, .. }) => Err(ModelError::Format {
                path: name.to_string(),
                detail: format!("tensor `{name}` (shape {shape:?}) is a float type, expected i64"),
            }),
            None => Err(ModelError::MissingTensor(name.to_string())),
        }
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let (dtype, shape, bytes): (Dtype, &[usize], &[u8]) = match t {
                    Tensor::F32 { shape, data } => (Dtype::F32, shape, bytemuck::cast_slice(data)),
                    Tensor::I64 { shape, data } => (Dtype::I64, shape, bytemuck::cast_slice(data)),
                };
                TensorView::new(dtype, shape.to_vec(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| ModelError::Format {
                        path: name.clone(),
                        detail: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let meta: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Format {
            path: "<memory>".into(),
            detail: e.to_string(),
        })
    }

    /// Parses safetensors bytes; `origin` names the source in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, ModelError> {
        let fmt = |detail: String| ModelError::Format {
            path: origin.to_string(),
            detail,
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| fmt(e.to_string()))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
        let mut map = TensorMap::new();
        if let Some(meta) = header.metadata() {
            map.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let tensor = match view.dtype() {
                Dtype::F32 => Tensor::F32 {
                    shape,
                    data: read_le(raw, f32::from_le_bytes),
                },
                Dtype::F64 => Tensor::F32 {
                    shape,
                    data: read_le(raw, f64::from_le_bytes)
                        .into_iter()
                        .map(|x| x as f32)
                        .collect(),
                },
                Dtype::F16 => Tensor::F32 {
                    shape,
                    data: read_le(raw, u16::from_le_bytes)
                        .into_iter()
                        .map(|b| half::f16::from_bits(b).to_f32())
                        .collect(),
                },
                Dtype::BF16 => Tensor::F32 {
                    shape,
                    data: read_le(raw, u16::from_le_bytes)
                        .into_iter()
                        .map(|b| half::bf16::from_bits(b).to_f32())
                        .collect(),
                },
                Dtype::I64 => Tensor::I64 {
                    shape,
                    data: read_le(raw, i64::from_le_bytes),
                },
                Dtype::I32 => Tensor::I64 {
                    shape,
                    data: read_le(raw, i32::from_le_bytes)
                        .into_iter()
                        .map(i64::from)
                        .collect(),
                },
                other => {
                    return Err(fmt(format!(
                        "tensor `{name}` has unsupported dtype {other:?}"
                    )));
                }
            };
            map.tensors.insert(name, tensor);
        }
        Ok(map)
    }

    /// Writes a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a safetensors file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses metadata entry `key` as JSON.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, ModelError> {
        let text = self
            .metadata
            .get(key)
            .ok_or_else(|| ModelError::MissingTensor(format!("metadata `{key}`")))?;
        serde_json::from_str(text).map_err(|e| ModelError::Format {
            path: format!("metadata `{key}`"),
            detail: e.to_string(),
        })
    }
}

/// Decodes little-endian values of `N` bytes each (trailing bytes ignored;
/// safetensors validates sizes against shapes before we get here).
fn read_le<T, const N: usize>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_tensors_and_metadata() {
        let mut m = TensorMap::new();
        m.insert_f32("a.weight", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5])
            .unwrap();
        m.insert_i64("ids", vec![2], vec![-1, 7]).unwrap();
        m.metadata.insert("config".into(), "{\"x\":1}".into());
        let back = TensorMap::from_bytes(&m.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.f32("a.weight", &[2, 3]).unwrap()[5], -6.5);
        assert!(matches!(
            back.f32("a.weight", &[3, 2]),
            Err(ModelError::TensorShape { .. })
        ));
        assert!(matches!(
            back.f32("nope", &[1]),
            Err(ModelError::MissingTensor(_))
        ));
    }

    #[test]
    fn mismatched_length_is_an_error() {
        let mut m = TensorMap::new();
        assert!(m.insert_f32("x", vec![2, 2], vec![1.0; 3]).is_err());
    }
}
