//! An allocation-free GEMM for the small, many-times-per-request products
//! of the encoder (per-candidate attention, per-chunk projections).
//!
//! `c[m×n] (+)= a[m×k] · b[k×n]`, all row-major. Written once over
//! [`pulp::Simd`] and dispatched at run time to the widest vector unit the
//! CPU has (AVX-512, AVX2+FMA, NEON, or scalar). It packs nothing and
//! allocates nothing: each block of rows of `c` is accumulated in registers
//! across the whole `k` and written once, which is the right shape when the
//! whole `b` fits in the L1/L2 cache (`k·n` up to a few tens of thousands
//! of floats). Large products belong to [`crate::kernels::matmul`].

use pulp::{Arch, Simd, WithSimd};

use crate::EmbedError;
use crate::kernels::check;

/// `c[m×n] = (accumulate ? c : 0) + a[m×k] · b[k×n]`.
///
/// Slices may be longer than needed; only the leading `m·k`, `k·n`, `m·n`
/// values are used. Never allocates.
#[allow(clippy::too_many_arguments)]
pub fn matmul_kn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), EmbedError> {
    run(m, n, k, a, b, None, c, accumulate)
}

/// A linear layer on a transposed weight: `c[m×n] = a[m×k] · b[k×n] + bias`
/// (`bias` of length `n` added to every row, in registers). Never allocates.
pub fn linear_kn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    c: &mut [f32],
) -> Result<(), EmbedError> {
    run(m, n, k, a, b, Some(bias), c, false)
}

/// Checks the lengths, then runs the kernel on the widest SIMD the CPU has.
#[allow(clippy::too_many_arguments)]
fn run(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), EmbedError> {
    check("small gemm lhs", m * k, a.len())?;
    check("small gemm rhs", k * n, b.len())?;
    check("small gemm dst", m * n, c.len())?;
    if let Some(bias) = bias {
        check("small gemm bias", n, bias.len())?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    Arch::new().dispatch(Kn {
        m,
        n,
        k,
        a: &a[..m * k],
        b: &b[..k * n],
        bias: bias.map(|b| &b[..n]),
        c: &mut c[..m * n],
        accumulate,
    });
    Ok(())
}

/// `dst[cols×rows] = srcᵀ` for a row-major `src[rows×cols]`.
pub fn transpose(rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) -> Result<(), EmbedError> {
    check("transpose src", rows * cols, src.len())?;
    check("transpose dst", rows * cols, dst.len())?;
    if cols == 0 {
        return Ok(());
    }
    // Eight source rows at a time: each destination row receives eight
    // consecutive values per pass.
    let src = &src[..rows * cols];
    let dst = &mut dst[..rows * cols];
    let mut r0 = 0;
    while r0 + 8 <= rows {
        let block: [&[f32]; 8] =
            core::array::from_fn(|i| &src[(r0 + i) * cols..(r0 + i + 1) * cols]);
        for (j, out) in dst.chunks_exact_mut(rows).enumerate() {
            let out = &mut out[r0..r0 + 8];
            for (o, row) in out.iter_mut().zip(&block) {
                *o = row[j];
            }
        }
        r0 += 8;
    }
    for r in r0..rows {
        for (j, &v) in src[r * cols..(r + 1) * cols].iter().enumerate() {
            dst[j * rows + r] = v;
        }
    }
    Ok(())
}

struct Kn<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    b: &'a [f32],
    bias: Option<&'a [f32]>,
    c: &'a mut [f32],
    accumulate: bool,
}

impl WithSimd for Kn<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Kn {
            m,
            n,
            k,
            a,
            b,
            bias,
            c,
            accumulate,
        } = self;
        let mut i = 0;
        // With 32 vector registers, 8 rows × 3 vectors of accumulators fit.
        if S::REGISTER_COUNT >= 32 {
            while i + 8 <= m {
                rows::<S, 8>(s, i, n, k, a, b, bias, c, accumulate);
                i += 8;
            }
        }
        while i + 4 <= m {
            rows::<S, 4>(s, i, n, k, a, b, bias, c, accumulate);
            i += 4;
        }
        while i < m {
            rows::<S, 1>(s, i, n, k, a, b, bias, c, accumulate);
            i += 1;
        }
    }
}

/// Rows `i0 .. i0 + MR` of `c`, in column panels of 3 vectors, then at most
/// one of 2, one of 1 and one partial vector.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows<S: Simd, const MR: usize>(
    s: S,
    i0: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    accumulate: bool,
) {
    let l = S::F32_LANES;
    let a_rows: [&[f32]; MR] = core::array::from_fn(|r| &a[(i0 + r) * k..(i0 + r + 1) * k]);
    let c_rows = &mut c[i0 * n..(i0 + MR) * n];
    let mut j = 0;
    while j + 3 * l <= n {
        panel::<S, MR, 3>(s, j, l, n, &a_rows, b, bias, c_rows, accumulate);
        j += 3 * l;
    }
    if j + 2 * l <= n {
        panel::<S, MR, 2>(s, j, l, n, &a_rows, b, bias, c_rows, accumulate);
        j += 2 * l;
    }
    if j + l <= n {
        panel::<S, MR, 1>(s, j, l, n, &a_rows, b, bias, c_rows, accumulate);
        j += l;
    }
    if j < n {
        panel::<S, MR, 1>(s, j, n - j, n, &a_rows, b, bias, c_rows, accumulate);
    }
}

/// One `MR × (NR vectors)` block of `c` at column `j`; `width` is the
/// number of columns when the block is a single partial vector (`NR = 1`),
/// and `F32_LANES` otherwise.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn panel<S: Simd, const MR: usize, const NR: usize>(
    s: S,
    j: usize,
    width: usize,
    n: usize,
    a_rows: &[&[f32]; MR],
    b: &[f32],
    bias: Option<&[f32]>,
    c_rows: &mut [f32],
    accumulate: bool,
) {
    let l = S::F32_LANES;
    let full = width == l;
    let span = if full { NR * l } else { width };
    let init: [S::f32s; NR] = match bias {
        Some(bias) => {
            let seg = &bias[j..j + span];
            core::array::from_fn(|v| {
                if full {
                    load::<S>(&seg[v * l..(v + 1) * l])
                } else {
                    s.partial_load_f32s(seg)
                }
            })
        }
        None => [s.splat_f32s(0.0); NR],
    };
    let mut acc = [init; MR];
    for (p, brow) in b.chunks_exact(n).enumerate() {
        let seg = &brow[j..j + span];
        let bv: [S::f32s; NR] = core::array::from_fn(|v| {
            if full {
                load::<S>(&seg[v * l..(v + 1) * l])
            } else {
                s.partial_load_f32s(seg)
            }
        });
        for (acc_r, a_r) in acc.iter_mut().zip(a_rows) {
            let av = s.splat_f32s(a_r[p]);
            for (acc_v, &b_v) in acc_r.iter_mut().zip(&bv) {
                *acc_v = s.mul_add_e_f32s(av, b_v, *acc_v);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = &mut c_rows[r * n + j..r * n + j + span];
        for (v, &acc_v) in acc_r.iter().enumerate() {
            let dst = if full {
                &mut row[v * l..(v + 1) * l]
            } else {
                &mut row[..]
            };
            let val = if accumulate {
                let prev = if full {
                    load::<S>(dst)
                } else {
                    s.partial_load_f32s(dst)
                };
                s.add_f32s(acc_v, prev)
            } else {
                acc_v
            };
            if full {
                store::<S>(dst, val);
            } else {
                s.partial_store_f32s(dst, val);
            }
        }
    }
}

/// One full vector from the first `F32_LANES` values of `src`, unaligned.
#[inline(always)]
fn load<S: Simd>(src: &[f32]) -> S::f32s {
    assert!(src.len() >= S::F32_LANES);
    // SAFETY: `src` holds at least `F32_LANES` floats, i.e. the size of
    // `S::f32s`, a plain-old-data vector of f32; the read is unaligned.
    unsafe { core::ptr::read_unaligned(src.as_ptr().cast::<S::f32s>()) }
}

/// One full vector into the first `F32_LANES` values of `dst`, unaligned.
#[inline(always)]
fn store<S: Simd>(dst: &mut [f32], v: S::f32s) {
    assert!(dst.len() >= S::F32_LANES);
    // SAFETY: as in `load`; `dst` is a unique borrow of that many floats.
    unsafe { core::ptr::write_unaligned(dst.as_mut_ptr().cast::<S::f32s>(), v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], acc: bool) {
        for i in 0..m {
            for j in 0..n {
                let mut s = if acc { c[i * n + j] } else { 0.0 };
                for p in 0..k {
                    s += a[i * k + p] * b[p * n + j];
                }
                c[i * n + j] = s;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_the_naive_product(
            m in 0usize..21, n in 0usize..70, k in 0usize..40, acc: bool, seed in 0u32..1000,
        ) {
            let val = |i: usize| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0;
            let a: Vec<f32> = (0..m * k).map(val).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i + 7)).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| val(i + 13)).collect();
            let mut want = c0.clone();
            naive(m, n, k, &a, &b, &mut want, acc);
            let mut got = c0;
            matmul_kn(m, n, k, &a, &b, &mut got, acc).unwrap();
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
            // With a bias: the product plus the bias on every row.
            let bias: Vec<f32> = (0..n).map(|i| val(i + 29)).collect();
            let mut want = vec![0.0; m * n];
            naive(m, n, k, &a, &b, &mut want, false);
            let mut got = vec![f32::NAN; m * n];
            linear_kn(m, n, k, &a, &b, &bias, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let w = w + bias[i % n];
                prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn short_slices_are_errors() {
        let mut c = [0.0; 4];
        assert!(matmul_kn(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut c, false).is_err());
        assert!(matmul_kn(2, 2, 2, &[0.0; 4], &[0.0; 3], &mut c, false).is_err());
        assert!(matmul_kn(2, 2, 2, &[0.0; 4], &[0.0; 4], &mut c[..3], false).is_err());
        assert!(linear_kn(2, 2, 2, &[0.0; 4], &[0.0; 4], &[0.0; 1], &mut c).is_err());
        assert!(transpose(2, 3, &[0.0; 5], &mut [0.0; 6]).is_err());
    }

    #[test]
    fn transposes() {
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = [0.0; 6];
        transpose(2, 3, &src, &mut dst).unwrap();
        assert_eq!(dst, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
