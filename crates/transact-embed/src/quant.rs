//! Quantisation of embedding rows: int8 with the global TransAct V2 scale,
//! int8 with one scale per row, and IEEE half precision (f16).
//!
//! # Conventions
//!
//! An int8 row is a pair `(q, scale)` with dequantised value
//! `q[i] as f32 * scale / 127`. `scale` is therefore the magnitude mapped to
//! ±127: [`INT8_GLOBAL_SCALE`] (0.65) for the global scheme of model-spec §1,
//! `max |e|` of the row for the per-row scheme.
//!
//! # Rounding
//!
//! Both int8 schemes round to the nearest integer with halves rounded **away
//! from zero** (`f32::round`), so 0.5 → 1 and −0.5 → −1. PyTorch's
//! `torch.round` rounds halves to even instead; the two only differ when
//! `e / scale * 127` is exactly a half-integer, which real embeddings almost
//! never hit, and the error bounds below hold either way. The arithmetic is
//! done in f32 in the order the spec writes it (`e / scale * 127`, and
//! `q * scale / 127` back).
//!
//! # Error bounds
//!
//! - Global int8: for `|e| ≤ 0.65`, `|e − deq(q(e))| ≤ 0.65 / 254` (half a
//!   quantisation step), plus f32 rounding of a few ulps. Values beyond ±0.65
//!   **clamp** to ±127, i.e. dequantise to ±0.65, so their error is
//!   `|e| − 0.65 + 0.65/254` at most. NaN quantises to 0 and ±∞ to ±127.
//! - Per-row int8: every value has error `≤ scale / 254` (plus f32 rounding)
//!   where `scale = max |e|` of the row; nothing clamps. An all-zero row has
//!   scale 0 and quantises to zeros (no division by zero). Rows holding NaN
//!   or ±∞ are rejected.
//! - f16: round-to-nearest-even; relative error `≤ 2⁻¹¹` for normal
//!   magnitudes (`6.1e-5 ≤ |e| ≤ 65504`), absolute error `≤ 2⁻²⁵` below that.
//!   Finite values above 65504 in magnitude become ±∞ (table inserts reject
//!   them).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::EmbedError;
use crate::kernels::exact;

/// The global int8 scale of TransAct V2 (model-spec §1): `e` is mapped to
/// `clamp(round(e / 0.65 * 127), -127, 127)`.
pub const INT8_GLOBAL_SCALE: f32 = 0.65;

/// The largest int8 code used; −128 is never produced.
const QMAX: f32 = 127.0;

/// Quantises one value with a given scale: `clamp(round(e / scale * 127), ±127)`.
///
/// `scale` must be positive; NaN maps to 0 (the saturating `as` cast).
#[inline]
fn quantize_one(e: f32, scale: f32) -> i8 {
    round_code(e / scale * QMAX)
}

/// Rounds half away from zero and clamps to ±127 (NaN → 0 via the
/// saturating `as` cast).
#[inline]
fn round_code(x: f32) -> i8 {
    x.round().clamp(-QMAX, QMAX) as i8
}

/// Quantises one value with the global scale 0.65 (see the module docs for
/// rounding and clamping).
#[inline]
pub fn quantize_value_i8_global(e: f32) -> i8 {
    quantize_one(e, INT8_GLOBAL_SCALE)
}

/// Dequantises one int8 code: `q * scale / 127`.
#[inline]
pub fn dequantize_value_i8(q: i8, scale: f32) -> f32 {
    f32::from(q) * scale / QMAX
}

/// Quantises `src` with the global scale 0.65 into `dst` (same length).
///
/// Values beyond ±0.65 clamp to ±127; NaN becomes 0.
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ.
pub fn quantize_i8_global(src: &[f32], dst: &mut [i8]) -> Result<(), EmbedError> {
    exact("quantize_i8_global dst", src.len(), dst.len())?;
    quantize_i8_global_into(src, dst);
    Ok(())
}

/// Unchecked-length global quantisation (zips to the shorter slice).
#[inline]
pub(crate) fn quantize_i8_global_into(src: &[f32], dst: &mut [i8]) {
    for (q, &e) in dst.iter_mut().zip(src) {
        *q = quantize_one(e, INT8_GLOBAL_SCALE);
    }
}

/// Dequantises global-scale int8 codes: `dst[i] = src[i] * 0.65 / 127`.
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ.
pub fn dequantize_i8_global(src: &[i8], dst: &mut [f32]) -> Result<(), EmbedError> {
    dequantize_i8_scaled(src, INT8_GLOBAL_SCALE, dst)
}

/// Quantises one row with its own scale `max |e|` into `dst` (same length)
/// and returns that scale. An all-zero (or empty) row gets scale 0 and all
/// codes 0.
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ;
/// [`EmbedError::InvalidArgument`] if the row holds NaN or ±∞.
pub fn quantize_i8_per_row(src: &[f32], dst: &mut [i8]) -> Result<f32, EmbedError> {
    exact("quantize_i8_per_row dst", src.len(), dst.len())?;
    for (i, &e) in src.iter().enumerate() {
        if !e.is_finite() {
            return Err(EmbedError::InvalidArgument(format!(
                "per-row int8 quantisation: non-finite value at index {i}"
            )));
        }
    }
    Ok(quantize_i8_per_row_into(src, dst))
}

/// Per-row quantisation of a row already known to be finite (zips to the
/// shorter slice); returns the scale.
#[inline]
pub(crate) fn quantize_i8_per_row_into(src: &[f32], dst: &mut [i8]) -> f32 {
    let scale = src.iter().fold(0.0f32, |m, &e| m.max(e.abs()));
    if scale == 0.0 {
        dst.fill(0);
    } else {
        for (q, &e) in dst.iter_mut().zip(src) {
            *q = quantize_one(e, scale);
        }
    }
    scale
}

/// Dequantises int8 codes with an explicit scale: `dst[i] = src[i] * scale / 127`.
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ.
pub fn dequantize_i8_scaled(src: &[i8], scale: f32, dst: &mut [f32]) -> Result<(), EmbedError> {
    exact("dequantize_i8 dst", src.len(), dst.len())?;
    dequantize_i8_into(src, scale, dst);
    Ok(())
}

/// Unchecked-length dequantisation used on hot paths (zips to the shorter).
#[inline]
pub(crate) fn dequantize_i8_into(src: &[i8], scale: f32, dst: &mut [f32]) {
    for (v, &q) in dst.iter_mut().zip(src) {
        *v = dequantize_value_i8(q, scale);
    }
}

/// Converts `src` to f16 (round to nearest even) into `dst` (same length).
///
/// Magnitudes above 65504 become ±∞; callers that must not store infinities
/// check the result (as [`crate::ItemTable`] does).
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ.
pub fn quantize_f16(src: &[f32], dst: &mut [f16]) -> Result<(), EmbedError> {
    exact("quantize_f16 dst", src.len(), dst.len())?;
    dst.convert_from_f32_slice(src);
    Ok(())
}

/// Converts f16 values back to f32 (exact) into `dst` (same length).
///
/// # Errors
/// [`EmbedError::Dimension`] if the lengths differ.
pub fn dequantize_f16(src: &[f16], dst: &mut [f32]) -> Result<(), EmbedError> {
    exact("dequantize_f16 dst", src.len(), dst.len())?;
    src.convert_to_f32_slice(dst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GLOBAL_BOUND: f32 = INT8_GLOBAL_SCALE / 254.0;

    #[test]
    fn global_matches_spec_examples() {
        assert_eq!(quantize_value_i8_global(0.0), 0);
        assert_eq!(quantize_value_i8_global(0.65), 127);
        assert_eq!(quantize_value_i8_global(-0.65), -127);
        // Beyond ±0.65 clamps, never −128.
        assert_eq!(quantize_value_i8_global(10.0), 127);
        assert_eq!(quantize_value_i8_global(-10.0), -127);
        assert_eq!(quantize_value_i8_global(f32::NEG_INFINITY), -127);
        assert_eq!(quantize_value_i8_global(f32::NAN), 0);
        // One step is 0.65 / 127.
        let step = 0.65f32 / 127.0;
        assert_eq!(quantize_value_i8_global(3.0 * step), 3);
        assert_eq!(quantize_value_i8_global(-3.0 * step), -3);
        assert_eq!(dequantize_value_i8(127, INT8_GLOBAL_SCALE), 0.65);
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(round_code(0.5), 1);
        assert_eq!(round_code(-0.5), -1);
        assert_eq!(round_code(1.5), 2);
        assert_eq!(round_code(2.5), 3);
        assert_eq!(round_code(0.49), 0);
        assert_eq!(round_code(127.5), 127);
        assert_eq!(round_code(-200.0), -127);
    }

    #[test]
    fn global_round_trip_and_length_errors() {
        let src = [0.1f32, -0.3, 0.65, -0.7, 0.0];
        let mut q = [0i8; 5];
        quantize_i8_global(&src, &mut q).unwrap();
        let mut back = [0.0f32; 5];
        dequantize_i8_global(&q, &mut back).unwrap();
        for (i, (&e, &d)) in src.iter().zip(&back).enumerate() {
            let want = e.clamp(-0.65, 0.65);
            assert!(
                (want - d).abs() <= GLOBAL_BOUND + 1e-6,
                "index {i}: {e} -> {d}"
            );
        }
        assert!(matches!(
            quantize_i8_global(&src, &mut [0i8; 4]),
            Err(EmbedError::Dimension {
                expected: 5,
                got: 4,
                ..
            })
        ));
        assert!(dequantize_i8_global(&q, &mut [0.0; 6]).is_err());
        assert!(quantize_i8_per_row(&src, &mut [0i8; 2]).is_err());
        assert!(dequantize_i8_scaled(&q, 1.0, &mut [0.0; 2]).is_err());
        assert!(quantize_f16(&src, &mut [f16::ZERO; 1]).is_err());
        assert!(dequantize_f16(&[f16::ZERO; 1], &mut [0.0; 3]).is_err());
    }

    #[test]
    fn per_row_zero_row_and_max_element() {
        let mut q = [5i8; 3];
        assert_eq!(quantize_i8_per_row(&[0.0, -0.0, 0.0], &mut q).unwrap(), 0.0);
        assert_eq!(q, [0, 0, 0]);
        let mut back = [1.0f32; 3];
        dequantize_i8_scaled(&q, 0.0, &mut back).unwrap();
        assert_eq!(back, [0.0, 0.0, 0.0]);

        let scale = quantize_i8_per_row(&[2.0, -4.0, 1.0], &mut q).unwrap();
        assert_eq!(scale, 4.0);
        assert_eq!(q[1], -127);
        assert_eq!(q[0], 64); // 2/4*127 = 63.5 -> 64 (half away from zero)
        assert!(quantize_i8_per_row(&[], &mut []).is_ok());
    }

    #[test]
    fn per_row_rejects_non_finite() {
        let mut q = [0i8; 2];
        assert!(matches!(
            quantize_i8_per_row(&[1.0, f32::NAN], &mut q),
            Err(EmbedError::InvalidArgument(m)) if m.contains("index 1")
        ));
        assert!(quantize_i8_per_row(&[f32::INFINITY, 1.0], &mut q).is_err());
    }

    #[test]
    fn f16_overflow_becomes_infinite() {
        let mut h = [f16::ZERO; 2];
        quantize_f16(&[1.0e6, 1.0], &mut h).unwrap();
        assert!(h[0].is_infinite());
        assert_eq!(h[1].to_f32(), 1.0);
    }

    proptest! {
        #[test]
        fn global_error_bound(row in prop::collection::vec(-0.65f32..=0.65, 1..64)) {
            let mut q = vec![0i8; row.len()];
            let mut back = vec![0.0f32; row.len()];
            quantize_i8_global(&row, &mut q).unwrap();
            dequantize_i8_global(&q, &mut back).unwrap();
            for (&e, &d) in row.iter().zip(&back) {
                prop_assert!((e - d).abs() <= GLOBAL_BOUND + 1e-6, "{} -> {}", e, d);
            }
        }

        #[test]
        fn global_clamps_beyond_range(e in 0.65f32..100.0) {
            prop_assert_eq!(quantize_value_i8_global(e), 127);
            prop_assert_eq!(quantize_value_i8_global(-e), -127);
        }

        #[test]
        fn per_row_error_bound(row in prop::collection::vec(-50.0f32..50.0, 1..64)) {
            let mut q = vec![0i8; row.len()];
            let mut back = vec![0.0f32; row.len()];
            let scale = quantize_i8_per_row(&row, &mut q).unwrap();
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(scale, max);
            dequantize_i8_scaled(&q, scale, &mut back).unwrap();
            let bound = scale / 254.0 + scale * 4.0 * f32::EPSILON;
            for (&e, &d) in row.iter().zip(&back) {
                prop_assert!((e - d).abs() <= bound, "{} -> {} (scale {})", e, d, scale);
            }
        }

        #[test]
        fn f16_relative_bound(row in prop::collection::vec(-60000.0f32..60000.0, 1..64)) {
            let mut h = vec![f16::ZERO; row.len()];
            let mut back = vec![0.0f32; row.len()];
            quantize_f16(&row, &mut h).unwrap();
            dequantize_f16(&h, &mut back).unwrap();
            for (&e, &d) in row.iter().zip(&back) {
                let bound = (e.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                prop_assert!((e - d).abs() <= bound, "{} -> {}", e, d);
            }
        }

        #[test]
        fn f16_small_values(e in -1.0e-4f32..1.0e-4) {
            let mut h = [f16::ZERO];
            let mut back = [0.0f32];
            quantize_f16(&[e], &mut h).unwrap();
            dequantize_f16(&h, &mut back).unwrap();
            let bound = (e.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            prop_assert!((e - back[0]).abs() <= bound, "{} -> {}", e, back[0]);
        }
    }
}
