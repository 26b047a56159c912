//! CPU math kernels: GEMM (through the `gemm` crate), LayerNorm, softmax, ReLU.
//!
//! Every matrix is row-major and dense. The GEMM entry points check slice
//! lengths and return an error instead of reading out of bounds.

use crate::EmbedError;

/// Whether a GEMM call may split its work over the rayon thread pool.
///
/// Use [`Par::Seq`] inside code that is already parallel over candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Single-threaded.
    Seq,
    /// Use every thread of the current rayon pool.
    Rayon,
}

impl Par {
    fn to_gemm(self) -> gemm::Parallelism {
        match self {
            Par::Seq => gemm::Parallelism::None,
            Par::Rayon => gemm::Parallelism::Rayon(rayon::current_num_threads().max(1)),
        }
    }
}

/// Layout of the right-hand operand of [`matmul`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RhsLayout {
    /// `b` is `[k × n]`.
    KxN,
    /// `b` is `[n × k]` (a PyTorch `Linear` weight `[out, in]`): computes `a · bᵀ`.
    NxK,
}

/// A length that must match exactly, or [`EmbedError::Dimension`] naming it.
pub(crate) fn exact(what: &str, expected: usize, got: usize) -> Result<(), EmbedError> {
    if expected == got {
        Ok(())
    } else {
        Err(EmbedError::Dimension {
            what: what.to_string(),
            expected,
            got,
        })
    }
}

pub(crate) fn check(name: &str, need: usize, got: usize) -> Result<(), EmbedError> {
    if got < need {
        Err(EmbedError::Dimension {
            what: name.to_string(),
            expected: need,
            got,
        })
    } else {
        Ok(())
    }
}

/// `c[m×n] = (accumulate ? c : 0) + a[m×k] · b`, with `b` laid out as `rhs`.
///
/// Slices may be longer than needed; only the leading `m·k`, `k·n`, `m·n`
/// values are used.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    rhs: RhsLayout,
    c: &mut [f32],
    accumulate: bool,
    par: Par,
) -> Result<(), EmbedError> {
    check("matmul lhs", m * k, a.len())?;
    check("matmul rhs", k * n, b.len())?;
    check("matmul dst", m * n, c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return Ok(());
    }
    let (rhs_cs, rhs_rs) = match rhs {
        RhsLayout::KxN => (1isize, n as isize),
        RhsLayout::NxK => (k as isize, 1isize),
    };
    // SAFETY: the lengths were checked above against the strides used: every
    // index gemm forms is below m·k for `a`, k·n for `b` and m·n for `c`; `c`
    // is a unique borrow, and `a`/`b` are shared borrows that cannot alias it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par.to_gemm(),
        );
    }
    Ok(())
}

/// A linear layer: `y[m×out] = x[m×in] · Wᵀ + bias`, `W` stored `[out × in]`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    m: usize,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    par: Par,
) -> Result<(), EmbedError> {
    check("linear dst", m * d_out, y.len())?;
    match bias {
        Some(b) => {
            check("linear bias", d_out, b.len())?;
            for row in y[..m * d_out].chunks_exact_mut(d_out) {
                row.copy_from_slice(&b[..d_out]);
            }
            matmul(m, d_out, d_in, x, w, RhsLayout::NxK, y, true, par)
        }
        None => matmul(m, d_out, d_in, x, w, RhsLayout::NxK, y, false, par),
    }
}

/// LayerNorm over each row of `x[rows × d]`, in place, with optional gain
/// and bias (`None` = no affine transform).
pub fn layer_norm(
    x: &mut [f32],
    d: usize,
    gain: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Result<(), EmbedError> {
    if d == 0 {
        return Ok(());
    }
    if let Some(g) = gain {
        check("layer_norm gain", d, g.len())?;
    }
    if let Some(b) = bias {
        check("layer_norm bias", d, b.len())?;
    }
    for row in x.chunks_exact_mut(d) {
        layer_norm_row(row, gain, bias, eps);
    }
    Ok(())
}

/// LayerNorm of one row in place (lengths of `gain`/`bias` must be ≥ `row.len()`).
#[inline]
pub fn layer_norm_row(row: &mut [f32], gain: Option<&[f32]>, bias: Option<&[f32]>, eps: f32) {
    let d = row.len();
    let inv_d = 1.0 / d as f32;
    let mean = row.iter().sum::<f32>() * inv_d;
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() * inv_d;
    let rstd = 1.0 / (var + eps).sqrt();
    match (gain, bias) {
        (Some(g), Some(b)) => {
            for ((v, &g), &b) in row.iter_mut().zip(g).zip(b) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
        (Some(g), None) => {
            for (v, &g) in row.iter_mut().zip(g) {
                *v = (*v - mean) * rstd * g;
            }
        }
        (None, Some(b)) => {
            for (v, &b) in row.iter_mut().zip(b) {
                *v = (*v - mean) * rstd + b;
            }
        }
        (None, None) => {
            for v in row.iter_mut() {
                *v = (*v - mean) * rstd;
            }
        }
    }
}

/// Softmax of one row in place. `-inf` entries get probability 0; a row of
/// only `-inf` becomes all zeros (callers never produce one: position 0 is
/// never masked).
#[inline]
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Softmax over each row of `x[rows × cols]`, in place.
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        softmax_row(row);
    }
}

/// ReLU in place.
#[inline]
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `acc[i] += x[i]`.
#[inline]
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Dot product of two equal-length slices (the shorter length is used).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0.0f32; 8];
    let n = a.len().min(b.len());
    let (a8, a_tail) = a[..n].split_at(n - n % 8);
    let (b8, b_tail) = b[..n].split_at(n - n % 8);
    for (ca, cb) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in a_tail.iter().zip(b_tail) {
        s += x * y;
    }
    s
}

/// `exp(x)` to about 2 ulp, written so that loops over it vectorise
/// (no libm call): Cephes' polynomial on `x - n·ln2`, scaled by `2^n`
/// built from the exponent bits. Inputs below -87 give 0 (so `-inf` maps
/// to 0); inputs above 88 saturate at `exp(88)`; NaN gives a finite value
/// (callers pass finite inputs or `-inf`).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // max/min rather than clamp: a NaN input must not panic or poison the bit tricks.
    #[allow(clippy::manual_clamp)]
    let xc = x.max(-87.0).min(88.0);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_bits = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    let pow2 = f32::from_bits(((n_bits + 127) << 23) as u32);
    if x < -87.0 { 0.0 } else { y * pow2 }
}

/// Sum of a slice with eight independent partial sums (vectorises; the
/// rounding differs slightly from a left-to-right sum).
#[inline]
pub fn sum_fast(x: &[f32]) -> f32 {
    sum8(x)
}

/// Maximum of a slice (`-inf` for an empty one), with eight lanes.
#[inline]
pub fn max_fast(x: &[f32]) -> f32 {
    max8(x)
}

#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in tail {
        s += v;
    }
    s
}

#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in tail {
        m = m.max(v);
    }
    m
}

/// Softmax of one row in place using [`exp_approx`]: same contract as
/// [`softmax_row`] (`-inf` → 0, an all-`-inf` row → zeros), several times faster.
#[inline]
pub fn softmax_row_fast(row: &mut [f32]) {
    softmax_rows_fast(row, row.len());
}

/// [`softmax_row_fast`] over each row of `x[rows × cols]`, in place, compiled
/// for AVX2 + FMA when the CPU has them (checked once per call).
pub fn softmax_rows_fast(x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        Simd::Avx512 => {
            // SAFETY: the CPU supports AVX-512F (checked at run time by `simd_level`).
            unsafe { softmax_rows_avx512(x, cols) };
            return;
        }
        Simd::Avx2 => {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time by `simd_level`).
            unsafe { softmax_rows_avx2(x, cols) };
            return;
        }
        Simd::None => {}
    }
    softmax_rows_body::<8>(x, cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_rows_avx512(x: &mut [f32], cols: usize) {
    softmax_rows_body::<16>(x, cols);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(x: &mut [f32], cols: usize) {
    softmax_rows_body::<8>(x, cols);
}

#[inline(always)]
fn softmax_rows_body<const L: usize>(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        // Plain comparisons (no NaN bookkeeping) so the max vectorises.
        let mut lanes = [f32::NEG_INFINITY; L];
        let chunks = row.chunks_exact(L);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..L {
                lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
            }
        }
        let mut max = f32::NEG_INFINITY;
        for &v in lanes.iter().chain(tail) {
            max = if v > max { v } else { max };
        }
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        for v in row.iter_mut() {
            *v = exp_approx(*v - max);
        }
        let mut acc = [0.0f32; L];
        let chunks = row.chunks_exact(L);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..L {
                acc[i] += c[i];
            }
        }
        let sum: f32 = acc.iter().chain(tail).sum();
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// LayerNorm of one row in place, like [`layer_norm_row`] but with lane-wise
/// partial sums so that it vectorises (d = 64–96 rows are the common case).
/// Missing or short `gain`/`bias` entries leave the tail unscaled/unshifted.
#[inline]
pub fn layer_norm_row_fast(row: &mut [f32], gain: Option<&[f32]>, bias: Option<&[f32]>, eps: f32) {
    layer_norm_rows_fast(row, row.len(), gain, bias, eps);
}

/// [`layer_norm_row_fast`] over each row of `x[rows × d]`, in place, compiled
/// for AVX2 + FMA when the CPU has them (checked once per call).
pub fn layer_norm_rows_fast(
    x: &mut [f32],
    d: usize,
    gain: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) {
    if d == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // Eight lanes measured faster than sixteen for d = 64–96 rows.
        Simd::Avx512 | Simd::Avx2 => {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time by `simd_level`).
            unsafe { layer_norm_rows_avx2(x, d, gain, bias, eps) };
            return;
        }
        Simd::None => {}
    }
    layer_norm_rows_body(x, d, gain, bias, eps);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_rows_avx2(
    x: &mut [f32],
    d: usize,
    gain: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) {
    if let (Some(g), Some(b)) = (gain, bias)
        && g.len() >= d
        && b.len() >= d
    {
        for row in x.chunks_exact_mut(d) {
            // SAFETY: this function only runs on CPUs with AVX2 and FMA.
            let (mean, rstd) = unsafe { row_moments_avx2(row, eps) };
            for ((v, &g), &b) in row.iter_mut().zip(g).zip(b) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
        return;
    }
    layer_norm_rows_body(x, d, gain, bias, eps);
}

/// [`row_moments`] with explicit AVX2 (the compiler does not reliably
/// vectorise the two running sums when the row length is not a constant).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_moments_avx2(row: &[f32], eps: f32) -> (f32, f32) {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm256_sub_ps,
    };
    let n = row.len();
    let Some(&shift) = row.first() else {
        return (0.0, 0.0);
    };
    let full = n / 8;
    let mut lanes1 = [0.0f32; 8];
    let mut lanes2 = [0.0f32; 8];
    // SAFETY: the loads read row[8·i .. 8·i + 8] with 8·i + 8 ≤ n; the stores
    // write the two local 8-float arrays.
    unsafe {
        let vs = _mm256_set1_ps(shift);
        let mut a1 = _mm256_setzero_ps();
        let mut a2 = _mm256_setzero_ps();
        for i in 0..full {
            let t = _mm256_sub_ps(_mm256_loadu_ps(row.as_ptr().add(i * 8)), vs);
            a1 = _mm256_add_ps(a1, t);
            a2 = _mm256_fmadd_ps(t, t, a2);
        }
        _mm256_storeu_ps(lanes1.as_mut_ptr(), a1);
        _mm256_storeu_ps(lanes2.as_mut_ptr(), a2);
    }
    let mut s1: f32 = lanes1.iter().sum();
    let mut s2: f32 = lanes2.iter().sum();
    for &v in &row[full * 8..] {
        let t = v - shift;
        s1 += t;
        s2 += t * t;
    }
    let inv_d = 1.0 / n as f32;
    let mean_shifted = s1 * inv_d;
    let var = (s2 * inv_d - mean_shifted * mean_shifted).max(0.0);
    (shift + mean_shifted, 1.0 / (var + eps).sqrt())
}

/// Mean and reciprocal standard deviation of one row, in one pass: sums of
/// `v - v₀` and its square (shifting by the first value keeps the variance
/// accurate when the mean is large). `row` must not be empty.
#[inline(always)]
fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    const L: usize = 8;
    let inv_d = 1.0 / row.len() as f32;
    let shift = row[0];
    let mut acc = [0.0f32; L];
    let mut acc2 = [0.0f32; L];
    for c in row.chunks_exact(L) {
        for i in 0..L {
            let t = c[i] - shift;
            acc[i] += t;
            acc2[i] += t * t;
        }
    }
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for i in 0..L {
        s1 += acc[i];
        s2 += acc2[i];
    }
    for &v in row.chunks_exact(L).remainder() {
        let t = v - shift;
        s1 += t;
        s2 += t * t;
    }
    let mean_shifted = s1 * inv_d;
    let var = (s2 * inv_d - mean_shifted * mean_shifted).max(0.0);
    (shift + mean_shifted, 1.0 / (var + eps).sqrt())
}

/// LayerNorm rows with a full-length gain and bias, one fused output pass.
#[inline(always)]
fn layer_norm_rows_affine(x: &mut [f32], d: usize, gain: &[f32], bias: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(d) {
        let (mean, rstd) = row_moments(row, eps);
        for ((v, &g), &b) in row.iter_mut().zip(gain).zip(bias) {
            *v = (*v - mean) * rstd * g + b;
        }
    }
}

/// LayerNorm rows with optional (possibly short) gain and bias.
#[inline(always)]
fn layer_norm_rows_body(
    x: &mut [f32],
    d: usize,
    gain: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) {
    if let (Some(g), Some(b)) = (gain, bias)
        && g.len() >= d
        && b.len() >= d
    {
        layer_norm_rows_affine(x, d, g, b, eps);
        return;
    }
    for row in x.chunks_exact_mut(d) {
        let (mean, rstd) = row_moments(row, eps);
        for v in row.iter_mut() {
            *v = (*v - mean) * rstd;
        }
        if let Some(g) = gain {
            for (v, &g) in row.iter_mut().zip(g) {
                *v *= g;
            }
        }
        if let Some(b) = bias {
            for (v, &b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

/// The widest vector extension the elementwise kernels may use.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    None,
}

/// Detected once per call (the standard library caches the CPUID query).
#[cfg(target_arch = "x86_64")]
#[inline]
fn simd_level() -> Simd {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx2") && has!("fma") {
        Simd::Avx512
    } else if has!("avx2") && has!("fma") {
        Simd::Avx2
    } else {
        Simd::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], rhs: RhsLayout) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let bv = match rhs {
                        RhsLayout::KxN => b[p * n + j],
                        RhsLayout::NxK => b[j * k + p],
                    };
                    s += a[i * k + p] * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn matmul_matches_naive_in_both_layouts() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
            .collect();
        for rhs in [RhsLayout::KxN, RhsLayout::NxK] {
            for par in [Par::Seq, Par::Rayon] {
                let mut c = vec![1.0; m * n];
                matmul(m, n, k, &a, &b, rhs, &mut c, true, par).unwrap();
                let want = naive(m, n, k, &a, &b, rhs);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - (y + 1.0)).abs() < 1e-5, "{x} vs {}", y + 1.0);
                }
            }
        }
    }

    #[test]
    fn short_slices_are_an_error_not_a_crash() {
        let mut c = vec![0.0; 4];
        assert!(
            matmul(
                2,
                2,
                2,
                &[1.0; 3],
                &[1.0; 4],
                RhsLayout::KxN,
                &mut c,
                false,
                Par::Seq
            )
            .is_err()
        );
    }

    #[test]
    fn layer_norm_without_affine_has_zero_mean_unit_variance() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 8.0, 2.0];
        layer_norm(&mut x, 4, None, None, 1e-5).unwrap();
        for row in x.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-5);
            assert!((var - 1.0).abs() < 1e-3);
        }
    }

    #[test]
    fn softmax_ignores_masked_entries() {
        let mut r = vec![0.0, f32::NEG_INFINITY, 0.0];
        softmax_row(&mut r);
        assert_eq!(r, vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), want);
    }

    #[test]
    fn exp_approx_is_close_to_exp() {
        let mut worst = 0.0f32;
        for i in -8700..8799 {
            let x = i as f32 * 0.01 + 0.003;
            let want = x.exp();
            let rel = ((exp_approx(x) - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_approx(0.0), 1.0);
    }

    #[test]
    fn fast_softmax_and_layer_norm_match_the_plain_ones() {
        let base: Vec<f32> = (0..37)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.7)
            .collect();
        let mut a = base.clone();
        let mut b = base.clone();
        a[3] = f32::NEG_INFINITY;
        b[3] = f32::NEG_INFINITY;
        softmax_row(&mut a);
        softmax_row_fast(&mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
        assert_eq!(b[3], 0.0);
        let g: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
        let bias: Vec<f32> = (0..37).map(|i| i as f32 * -0.02).collect();
        let mut a = base.clone();
        let mut b = base;
        layer_norm_row(&mut a, Some(&g), Some(&bias), 1e-5);
        layer_norm_row_fast(&mut b, Some(&g), Some(&bias), 1e-5);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert_eq!(max_fast(&[]), f32::NEG_INFINITY);
        assert_eq!(sum_fast(&[1.0; 19]), 19.0);
    }
}
