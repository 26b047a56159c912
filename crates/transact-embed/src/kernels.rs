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

fn check(name: &str, need: usize, got: usize) -> Result<(), EmbedError> {
    if got < need {
        Err(EmbedError::Dimension { what: name.to_string(), expected: need, got })
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
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2).collect();
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
        assert!(matmul(2, 2, 2, &[1.0; 3], &[1.0; 4], RhsLayout::KxN, &mut c, false, Par::Seq)
            .is_err());
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
}
