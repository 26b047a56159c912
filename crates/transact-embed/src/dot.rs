//! Batched dot products: f32 queries against f32 keys (through the GEMM of
//! [`crate::kernels`]) and one f32 query against int8 keys with the
//! dequantisation done inside the loop.

use crate::EmbedError;
use crate::kernels::{self, Par, RhsLayout, exact};

fn invalid(msg: String) -> EmbedError {
    EmbedError::InvalidArgument(msg)
}

/// All dot products between `n` queries and `m` keys of width `d`:
/// `out[i·m + j] = ⟨queries[i], keys[j]⟩`, single-threaded.
///
/// `queries` is `[n × d]` and `keys` `[m × d]`, both row-major; `n` and `m`
/// are taken from the slice lengths. `out` must be exactly `[n × m]`.
///
/// # Errors
/// [`EmbedError::InvalidArgument`] if `d == 0` or a slice length is not a
/// multiple of `d`; [`EmbedError::Dimension`] if `out` has the wrong length.
pub fn dot_batched(
    queries: &[f32],
    keys: &[f32],
    d: usize,
    out: &mut [f32],
) -> Result<(), EmbedError> {
    dot_batched_par(queries, keys, d, out, Par::Seq)
}

/// [`dot_batched`] with a choice of parallelism for the underlying GEMM
/// (use [`Par::Seq`] inside code already parallel over requests).
///
/// # Errors
/// As [`dot_batched`].
pub fn dot_batched_par(
    queries: &[f32],
    keys: &[f32],
    d: usize,
    out: &mut [f32],
    par: Par,
) -> Result<(), EmbedError> {
    if d == 0 {
        return Err(invalid("dot_batched: width d must be positive".into()));
    }
    if !queries.len().is_multiple_of(d) {
        return Err(invalid(format!(
            "dot_batched: queries length {} is not a multiple of d = {d}",
            queries.len()
        )));
    }
    if !keys.len().is_multiple_of(d) {
        return Err(invalid(format!(
            "dot_batched: keys length {} is not a multiple of d = {d}",
            keys.len()
        )));
    }
    let (n, m) = (queries.len() / d, keys.len() / d);
    exact("dot_batched out (n × m)", n * m, out.len())?;
    kernels::matmul(n, m, d, queries, keys, RhsLayout::NxK, out, false, par)
}

/// One f32 query against `m` int8 keys with per-key scales:
/// `out[j] = Σ_i query[i] · keys[j·d + i] · scales[j] / 127`, `d = query.len()`.
///
/// The int8 convention is that of [`crate::quant`]: a code `q` with scale `s`
/// stands for `q · s / 127`. For the global scheme pass
/// [`crate::INT8_GLOBAL_SCALE`] for every key, or use
/// [`dot_i8_batched_uniform`]. `m` is `scales.len()`; `keys` must be exactly
/// `[m × d]` and `out` exactly `[m]`.
///
/// The products are accumulated in f32 over 16 independent lanes (a shape
/// the compiler vectorises), then multiplied by `scale / 127` once per key.
///
/// # Errors
/// [`EmbedError::InvalidArgument`] if `d == 0`; [`EmbedError::Dimension`] if
/// `keys` or `out` has the wrong length.
pub fn dot_i8_batched(
    query: &[f32],
    keys: &[i8],
    scales: &[f32],
    out: &mut [f32],
) -> Result<(), EmbedError> {
    let d = query.len();
    if d == 0 {
        return Err(invalid("dot_i8_batched: the query is empty".into()));
    }
    let m = scales.len();
    exact("dot_i8_batched keys (m × d)", m * d, keys.len())?;
    exact("dot_i8_batched out (m)", m, out.len())?;
    i8_rows(query, keys, out, |j| scales[j] / 127.0);
    Ok(())
}

/// [`dot_i8_batched`] with one scale shared by every key (for example
/// [`crate::INT8_GLOBAL_SCALE`]); `m = out.len()`.
///
/// # Errors
/// [`EmbedError::InvalidArgument`] if the query is empty;
/// [`EmbedError::Dimension`] if `keys` is not `[out.len() × query.len()]`.
pub fn dot_i8_batched_uniform(
    query: &[f32],
    keys: &[i8],
    scale: f32,
    out: &mut [f32],
) -> Result<(), EmbedError> {
    let d = query.len();
    if d == 0 {
        return Err(invalid("dot_i8_batched_uniform: the query is empty".into()));
    }
    exact(
        "dot_i8_batched_uniform keys (m × d)",
        out.len() * d,
        keys.len(),
    )?;
    let factor = scale / 127.0;
    i8_rows(query, keys, out, |_| factor);
    Ok(())
}

/// `out[j] = factor(j) · Σ_i query[i] · keys[j·d + i]`, `d = query.len() > 0`.
///
/// On x86-64 with AVX2 (checked at run time, cached by std) the same loop is
/// compiled a second time with AVX2 enabled, which turns the int8 → f32
/// conversions into single `vpmovsxbd`/`vcvtdq2ps` instructions.
#[inline]
fn i8_rows<F: Fn(usize) -> f32>(query: &[f32], keys: &[i8], out: &mut [f32], factor: F) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; the callee
            // does nothing else that needs checking.
            unsafe { i8_rows_avx2(query, keys, out, factor) };
            return;
        }
    }
    i8_rows_generic(query, keys, out, factor);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn i8_rows_avx2<F: Fn(usize) -> f32>(
    query: &[f32],
    keys: &[i8],
    out: &mut [f32],
    factor: F,
) {
    i8_rows_generic(query, keys, out, factor);
}

#[inline(always)]
fn i8_rows_generic<F: Fn(usize) -> f32>(query: &[f32], keys: &[i8], out: &mut [f32], factor: F) {
    let d = query.len();
    for (j, (o, key)) in out.iter_mut().zip(keys.chunks_exact(d)).enumerate() {
        *o = dot_f32_i8(query, key) * factor(j);
    }
}

/// Raw `Σ a[i] · b[i]` of an f32 and an int8 slice (shorter length used).
#[inline(always)]
pub(crate) fn dot_f32_i8(a: &[f32], b: &[i8]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; L];
    let mut ac = a.chunks_exact(L);
    let mut bc = b.chunks_exact(L);
    for (ca, cb) in (&mut ac).zip(&mut bc) {
        for i in 0..L {
            acc[i] += ca[i] * f32::from(cb[i]);
        }
    }
    let mut tail = 0.0f32;
    for (&x, &q) in ac.remainder().iter().zip(bc.remainder()) {
        tail += x * f32::from(q);
    }
    // Pairwise reduction of the lanes.
    let mut width = L;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn small_example() {
        let q = [1.0, 2.0, 0.0, -1.0, 0.5, 0.5];
        let k = [1.0, 1.0, 1.0, 0.0, 2.0, 0.0, -1.0, 0.0, 3.0];
        let mut out = [0.0; 6];
        dot_batched(&q, &k, 3, &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0, -1.0, 0.0, 1.0, 2.5]);
    }

    #[test]
    fn argument_errors() {
        let mut out = [0.0; 4];
        assert!(dot_batched(&[1.0; 4], &[1.0; 4], 0, &mut out).is_err());
        assert!(dot_batched(&[1.0; 5], &[1.0; 4], 2, &mut out).is_err());
        assert!(dot_batched(&[1.0; 4], &[1.0; 5], 2, &mut out).is_err());
        assert!(matches!(
            dot_batched(&[1.0; 4], &[1.0; 4], 2, &mut out[..3]),
            Err(EmbedError::Dimension {
                expected: 4,
                got: 3,
                ..
            })
        ));
        let mut o2 = [0.0; 2];
        assert!(dot_i8_batched(&[], &[], &[], &mut []).is_err());
        assert!(dot_i8_batched(&[1.0; 3], &[1; 5], &[1.0; 2], &mut o2).is_err());
        assert!(dot_i8_batched(&[1.0; 3], &[1; 6], &[1.0; 2], &mut o2[..1]).is_err());
        assert!(dot_i8_batched_uniform(&[1.0; 3], &[1; 5], 1.0, &mut o2).is_err());
        assert!(dot_i8_batched_uniform(&[], &[], 1.0, &mut o2).is_err());
    }

    #[test]
    fn empty_batches_are_fine() {
        dot_batched(&[], &[1.0; 4], 2, &mut []).unwrap();
        dot_i8_batched(&[1.0; 2], &[], &[], &mut []).unwrap();
    }

    #[test]
    fn i8_matches_dequantised_dot() {
        let q = [0.5f32, -1.0, 2.0];
        let keys = [127i8, 0, -127, 10, 20, 30];
        let scales = [0.65f32, 2.0];
        let mut out = [0.0; 2];
        dot_i8_batched(&q, &keys, &scales, &mut out).unwrap();
        let deq = |qv: i8, s: f32| f32::from(qv) * s / 127.0;
        for j in 0..2 {
            let want: f32 = (0..3).map(|i| q[i] * deq(keys[j * 3 + i], scales[j])).sum();
            assert!((out[j] - want).abs() < 1e-5, "{} vs {want}", out[j]);
        }
        let mut uni = [0.0; 2];
        dot_i8_batched_uniform(&q, &keys, 0.65, &mut uni).unwrap();
        assert!((uni[0] - out[0]).abs() < 1e-6);
    }

    proptest! {
        #[test]
        fn dot_batched_matches_naive(
            (d, queries, keys) in (1usize..20, 0usize..6, 0usize..9).prop_flat_map(|(d, n, m)| (
                Just(d),
                prop::collection::vec(-2.0f32..2.0, n * d),
                prop::collection::vec(-2.0f32..2.0, m * d),
            ))
        ) {
            let (n, m) = (queries.len() / d, keys.len() / d);
            let mut out = vec![f32::NAN; n * m];
            dot_batched(&queries, &keys, d, &mut out).unwrap();
            for i in 0..n {
                for j in 0..m {
                    let want = naive_dot(&queries[i * d..(i + 1) * d], &keys[j * d..(j + 1) * d]);
                    prop_assert!((out[i * m + j] - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }

        #[test]
        fn dot_i8_matches_naive(
            (query, keys, scales) in (1usize..70, 0usize..10).prop_flat_map(|(d, m)| (
                prop::collection::vec(-3.0f32..3.0, d),
                prop::collection::vec(-127i8..=127, m * d),
                prop::collection::vec(0.0f32..2.0, m),
            ))
        ) {
            let d = query.len();
            let mut out = vec![f32::NAN; scales.len()];
            dot_i8_batched(&query, &keys, &scales, &mut out).unwrap();
            for (j, &s) in scales.iter().enumerate() {
                let deq: Vec<f32> =
                    keys[j * d..(j + 1) * d].iter().map(|&q| f32::from(q) * s / 127.0).collect();
                let want = naive_dot(&query, &deq);
                let mag: f32 = query.iter().zip(&deq).map(|(a, b)| (a * b).abs()).sum();
                prop_assert!((out[j] - want).abs() <= 1e-5 * (1.0 + mag), "{} vs {}", out[j], want);
            }
        }
    }
}
