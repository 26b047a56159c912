//! The V2 block on AVX-512: register-blocked GEMM micro-kernels for the
//! small shapes of the block (`d`, `f` multiples of 16), and the chunk
//! driver built on them.
//!
//! Every product here has the form `C[rows × n] (+)= A[rows × k] · B[k × n]`
//! with `B` read row by row (`n` a multiple of 16, one 512-bit vector per 16
//! columns): the projections and the FFN multiply by weights stored input
//! dimension first, the scores multiply the queries by the transposed block
//! input `xᵀ [d × S]` (copied once per candidate and block), and the
//! attention output multiplies the probabilities by the values. The
//! micro-kernel keeps a `MR × 16·NV` tile of `C` in registers, loads `NV`
//! vectors of a `B` row per step and broadcasts one `A` value per row.
//!
//! Attention runs in blocks of [`ROW_BLOCK`] query rows: with the causal
//! mask a block multiplies only against the keys up to its last row
//! (rounded up to 16), so the skipped upper triangle is at most a few
//! percent of the work.

use transact_embed::EmbedError;

use super::block::{Scratch, V2Block, grow};
use super::math::{add_layer_norm_rows, layer_norm_rows, softmax_prefix, transpose};

/// Query rows per attention block (the micro-kernel height for `d = 64`).
const ROW_BLOCK: usize = 6;

/// Whether this CPU runs the kernels of this module.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Whether the block stack has the shapes this module handles.
pub(crate) fn supports(blocks: &[V2Block]) -> bool {
    blocks
        .iter()
        .all(|b| b.d_model() % 16 == 0 && b.dim_feedforward() % 16 == 0)
}

fn dim_err(what: &str, expected: usize, got: usize) -> EmbedError {
    EmbedError::Dimension {
        what: what.to_string(),
        expected,
        got,
    }
}

/// One 512-bit vector's worth of floats.
type V16 = [f32; 16];

/// One `MR × 16·NV` tile: `c (+)= a · b` over `k` steps.
///
/// Written with plain arrays and `mul_add` rather than intrinsics (the
/// AVX-512 intrinsics are newer than this workspace's MSRV): inlined into
/// [`mm`], which enables AVX-512F and FMA, the accumulators become `MR·NV`
/// zmm registers and the inner loop becomes FMAs with broadcast operands.
///
/// # Safety
///
/// `a` must be readable at `r·lda + p` for `r < MR`, `p < k`; `b` at
/// `p·ldb + j` for `p < k`, `j < 16·NV`; `c` readable and writable at
/// `r·ldc + j` for `r < MR`, `j < 16·NV`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const MR: usize, const NV: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[[0.0f32; 16]; NV]; MR];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, lane) in row.iter_mut().enumerate() {
                // SAFETY: within the C tile (caller's contract).
                *lane = unsafe { c.add(r * ldc + 16 * v).cast::<V16>().read_unaligned() };
            }
        }
    }
    for p in 0..k {
        // SAFETY: row p of B, columns below 16·NV (caller's contract).
        let bv = unsafe { b.add(p * ldb).cast::<[V16; NV]>().read_unaligned() };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: A[r][p] with r < MR, p < k (caller's contract).
            let av = unsafe { *a.add(r * lda + p) };
            for (lane, bl) in row.iter_mut().zip(bv.iter()) {
                for (o, &bx) in lane.iter_mut().zip(bl.iter()) {
                    *o = av.mul_add(bx, *o);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, lane) in row.iter().enumerate() {
            // SAFETY: within the C tile (caller's contract).
            unsafe { c.add(r * ldc + 16 * v).cast::<V16>().write_unaligned(*lane) };
        }
    }
}

/// All rows of one column strip of width `16·NV`, main tiles of `MR` rows.
///
/// # Safety
///
/// As [`tile`], for `rows` rows of `A` and `C`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const MR: usize, const NV: usize>(
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut r = 0;
    // SAFETY (all calls): row offsets stay below `rows`, as the caller allows.
    unsafe {
        while r + MR <= rows {
            tile::<MR, NV>(
                k,
                a.add(r * lda),
                lda,
                b,
                ldb,
                c.add(r * ldc),
                ldc,
                accumulate,
            );
            r += MR;
        }
        while r + 4 <= rows {
            tile::<4, NV>(
                k,
                a.add(r * lda),
                lda,
                b,
                ldb,
                c.add(r * ldc),
                ldc,
                accumulate,
            );
            r += 4;
        }
        match rows - r {
            3 => tile::<3, NV>(
                k,
                a.add(r * lda),
                lda,
                b,
                ldb,
                c.add(r * ldc),
                ldc,
                accumulate,
            ),
            2 => tile::<2, NV>(
                k,
                a.add(r * lda),
                lda,
                b,
                ldb,
                c.add(r * ldc),
                ldc,
                accumulate,
            ),
            1 => tile::<1, NV>(
                k,
                a.add(r * lda),
                lda,
                b,
                ldb,
                c.add(r * ldc),
                ldc,
                accumulate,
            ),
            _ => {}
        }
    }
}

/// `C[rows × n] (+)= A[rows × k] · B[k × n]` with row strides `lda`, `ldb`,
/// `ldc`; `n` must be a multiple of 16. Checks every slice bound first, and
/// that the CPU has the instructions (a cached flag read).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm(
    rows: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), EmbedError> {
    if !available() {
        return Err(dim_err(
            "avx512 mm on a CPU without AVX-512F/FMA (feature count)",
            1,
            0,
        ));
    }
    // SAFETY: the CPU has AVX-512F and FMA (checked just above).
    unsafe { mm_checked(rows, n, k, a, lda, b, ldb, c, ldc, accumulate) }
}

/// [`mm`] without the CPU check.
///
/// # Safety
///
/// The CPU must have AVX-512F and FMA ([`available`]).
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn mm_checked(
    rows: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), EmbedError> {
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if !n.is_multiple_of(16) {
        return Err(dim_err(
            "avx512 mm: columns (multiple of 16)",
            n.next_multiple_of(16),
            n,
        ));
    }
    if lda < k || ldc < n || (k > 0 && ldb < n) {
        return Err(dim_err(
            "avx512 mm: row strides (at least the row widths)",
            k.max(n),
            lda.min(ldc),
        ));
    }
    let need_a = if k == 0 { 0 } else { (rows - 1) * lda + k };
    let need_b = if k == 0 { 0 } else { (k - 1) * ldb + n };
    let need_c = (rows - 1) * ldc + n;
    if a.len() < need_a {
        return Err(dim_err("avx512 mm lhs", need_a, a.len()));
    }
    if b.len() < need_b {
        return Err(dim_err("avx512 mm rhs", need_b, b.len()));
    }
    if c.len() < need_c {
        return Err(dim_err("avx512 mm dst", need_c, c.len()));
    }
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut col = 0;
    while col < n {
        let width = (n - col).min(64);
        // SAFETY: the bounds were checked above: every tile reads A rows
        // below `rows` and columns below `k`, B rows below `k` and columns
        // below `n`, and writes C inside `rows × n` (strides as checked).
        unsafe {
            let (b_s, c_s) = (bp.add(col), cp.add(col));
            match width {
                64 => strip::<6, 4>(rows, k, ap, lda, b_s, ldb, c_s, ldc, accumulate),
                48 => strip::<8, 3>(rows, k, ap, lda, b_s, ldb, c_s, ldc, accumulate),
                32 => strip::<12, 2>(rows, k, ap, lda, b_s, ldb, c_s, ldc, accumulate),
                _ => strip::<12, 1>(rows, k, ap, lda, b_s, ldb, c_s, ldc, accumulate),
            }
        }
        col += width;
    }
    Ok(())
}

/// The block stack over one chunk of candidates, on AVX-512 (`d` and `f`
/// multiples of 16, see [`supports`]); the same contract as
/// [`super::block::run_chunk`].
///
/// # Safety
///
/// The CPU must have AVX-512F, AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(crate) unsafe fn run_chunk(
    blocks: &[V2Block],
    x: &mut [f32],
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    s: &mut Scratch,
) -> Result<(), EmbedError> {
    let Some(first) = blocks.first() else {
        return Ok(());
    };
    let d = first.d_model();
    let rows = lens.len() * seq;
    let cand_len = seq * d;
    let spad = seq.next_multiple_of(16);
    for (xc, &len) in x.chunks_exact_mut(cand_len).zip(lens) {
        xc[len.max(1) * d..].fill(0.0);
    }
    for blk in blocks {
        let f = blk.dim_feedforward();
        let qp = grow(&mut s.qp, rows * d);
        mm(rows, d, d, x, d, blk.qk(), d, qp, d, false)?;
        let v = grow(&mut s.v, rows * d);
        mm(rows, d, d, x, d, blk.wv(), d, v, d, false)?;
        let scores = grow(&mut s.scores, ROW_BLOCK * spad);
        let att = grow(&mut s.att, seq * d);
        let xt = grow(&mut s.xt, d * spad);
        for (b, &len) in lens.iter().enumerate() {
            let n = len.max(1);
            let np = n.next_multiple_of(16);
            let base = b * cand_len;
            // Keys transposed, [d × np], zero past the last valid token.
            transpose(&x[base..base + n * d], n, d, xt, np);
            for xt_row in xt.chunks_exact_mut(np).take(d) {
                xt_row[n..].fill(0.0);
            }
            let qb = &qp[base..base + n * d];
            let vb = &v[base..base + n * d];
            let mut r0 = 0;
            while r0 < n {
                let r1 = (r0 + ROW_BLOCK).min(n);
                let m = r1 - r0;
                let kend = if causal { r1 } else { n };
                let kp = kend.next_multiple_of(16);
                let sc = &mut scores[..m * kp];
                mm(m, kp, d, &qb[r0 * d..], d, xt, np, sc, kp, false)?;
                for (r, row) in sc.chunks_exact_mut(kp).enumerate() {
                    softmax_prefix(row, if causal { r0 + r + 1 } else { n });
                }
                mm(
                    m,
                    d,
                    kend,
                    sc,
                    kp,
                    vb,
                    d,
                    &mut att[r0 * d..r1 * d],
                    d,
                    false,
                )?;
                r0 = r1;
            }
            let xb = &mut x[base..base + n * d];
            add_layer_norm_rows(xb, att, d, eps);
        }
        let h = grow(&mut s.h, rows * f);
        mm(rows, f, d, x, d, blk.w1(), f, h, f, false)?;
        for hv in h.iter_mut() {
            *hv = if *hv > 0.0 { *hv } else { 0.0 };
        }
        mm(rows, d, f, h, f, blk.w2(), d, x, d, true)?;
        for (xc, &len) in x.chunks_exact_mut(cand_len).zip(lens) {
            let n = len.max(1);
            layer_norm_rows(&mut xc[..n * d], d, eps);
            xc[n * d..].fill(0.0);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mm_matches_naive_with_strides_and_tails() {
        if !available() {
            return;
        }
        for (rows, n, k) in [
            (1, 16, 1),
            (7, 48, 5),
            (13, 64, 64),
            (6, 80, 33),
            (23, 32, 17),
            (5, 144, 9),
        ] {
            let (lda, ldb, ldc) = (k + 3, n + 16, n + 5);
            let a: Vec<f32> = (0..rows * lda)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * ldb)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
                .collect();
            for accumulate in [false, true] {
                let mut c: Vec<f32> = (0..rows * ldc).map(|i| i as f32 * 0.01).collect();
                let c0 = c.clone();
                mm(rows, n, k, &a, lda, &b, ldb, &mut c, ldc, accumulate).unwrap();
                for r in 0..rows {
                    for j in 0..ldc {
                        let got = c[r * ldc + j];
                        if j >= n {
                            assert_eq!(got, c0[r * ldc + j], "wrote outside the {n} columns");
                            continue;
                        }
                        let mut want = if accumulate { c0[r * ldc + j] } else { 0.0 };
                        for p in 0..k {
                            want += a[r * lda + p] * b[p * ldb + j];
                        }
                        assert!(
                            (got - want).abs() < 1e-4,
                            "({rows},{n},{k}) [{r},{j}] {got} vs {want}"
                        );
                    }
                }
            }
        }
        // Bad shapes are errors, not crashes.
        let mut c = vec![0.0; 16];
        assert!(mm(1, 15, 1, &[1.0], 1, &[1.0; 16], 16, &mut c, 16, false).is_err());
        assert!(mm(2, 16, 1, &[1.0], 1, &[1.0; 16], 16, &mut c, 16, false).is_err());
        assert!(mm(1, 16, 2, &[1.0; 2], 2, &[1.0; 16], 16, &mut c, 16, false).is_err());
    }
}
