//! Element-wise helpers of the V2 block, written so that the compiler
//! vectorises them (fixed-width lane accumulators instead of sequential
//! float reductions, no calls into libm).
//!
//! They are `#[inline(always)]` on purpose: the block's per-chunk driver is
//! compiled several times with different target features (see
//! [`super::block`]), and these loops are inlined into each copy.

/// Lanes of the partial sums (a multiple of every SIMD width we target).
const LANES: usize = 16;

/// `1.5 · 2²³`: adding it to a float of magnitude below 2²² rounds the value
/// to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x` for `x ≤ 0` (and moderately positive `x`), relative error about
/// `2e-7`; inputs below −87 return a tiny positive number instead of 0
/// (harmless next to the softmax's maximum term, which is 1).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and a correction.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let shifted = x * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    // Integer value of n, read from the mantissa of `shifted`.
    let n_int = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r on |r| ≤ ln2 / 2, degree 6, in Horner form
    // (`mul_add` becomes one FMA instruction where the CPU has FMA).
    let p = (1.0f32 / 720.0).mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    p * scale
}

/// Softmax over `row[..valid]` in place; `row[valid..]` is set to 0.
/// `valid` must be at least 1 and at most `row.len()`.
///
/// Whole 16-value chunks are processed with a lane mask (`j < valid`)
/// instead of a scalar tail, so a row padded to a multiple of 16 runs fully
/// vectorised whatever `valid` is.
#[inline(always)]
pub(crate) fn softmax_prefix(row: &mut [f32], valid: usize) {
    let whole = row.len() - row.len() % LANES;
    let (body, tail) = row.split_at_mut(whole);
    // Maximum over the valid entries.
    let mut macc = [f32::NEG_INFINITY; LANES];
    for (c, chunk) in body.chunks_exact(LANES).enumerate() {
        for i in 0..LANES {
            let live = c * LANES + i < valid;
            let v = if live { chunk[i] } else { f32::NEG_INFINITY };
            macc[i] = if v > macc[i] { v } else { macc[i] };
        }
    }
    let mut max = hmax(macc);
    for &v in tail.iter().take(valid.saturating_sub(whole)) {
        max = if v > max { v } else { max };
    }
    // Exponentials (masked entries become exact zeros) and their sum.
    let mut sacc = [0.0f32; LANES];
    for (c, chunk) in body.chunks_exact_mut(LANES).enumerate() {
        for i in 0..LANES {
            let live = c * LANES + i < valid;
            let e = exp_approx(chunk[i] - max);
            let e = if live { e } else { 0.0 };
            chunk[i] = e;
            sacc[i] += e;
        }
    }
    let mut sum = 0.0f32;
    for (i, v) in tail.iter_mut().enumerate() {
        let e = if whole + i < valid {
            exp_approx(*v - max)
        } else {
            0.0
        };
        *v = e;
        sum += e;
    }
    sum += hsum(sacc);
    let inv = 1.0 / sum;
    for v in row[..valid].iter_mut() {
        *v *= inv;
    }
}

/// Transposes `src [rows × cols]` (row stride `cols`) into
/// `dst [cols × ld]` (row stride `ld ≥ rows`): `dst[c][r] = src[r][c]`.
/// Works in 16 × 16 tiles so that reads and writes stay contiguous.
#[inline(always)]
// `c` picks one column across the tile's rows.
#[allow(clippy::needless_range_loop)]
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], ld: usize) {
    const T: usize = 16;
    let mut r0 = 0;
    while r0 < rows {
        let rn = (rows - r0).min(T);
        let mut c0 = 0;
        while c0 < cols {
            let cn = (cols - c0).min(T);
            if rn == T && cn == T {
                let mut tile = [[0.0f32; T]; T];
                for (r, t) in tile.iter_mut().enumerate() {
                    let s = (r0 + r) * cols + c0;
                    t.copy_from_slice(&src[s..s + T]);
                }
                for c in 0..T {
                    let d = (c0 + c) * ld + r0;
                    let out = &mut dst[d..d + T];
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = tile[r][c];
                    }
                }
            } else {
                for r in 0..rn {
                    for c in 0..cn {
                        dst[(c0 + c) * ld + r0 + r] = src[(r0 + r) * cols + c0 + c];
                    }
                }
            }
            c0 += cn;
        }
        r0 += rn;
    }
}

/// Sum of the lanes, as a tree (short dependency chains, vectorisable).
#[inline(always)]
fn hsum(mut a: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

/// Maximum of the lanes, as a tree.
#[inline(always)]
fn hmax(mut a: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            a[i] = if a[i + w] > a[i] { a[i + w] } else { a[i] };
        }
        w /= 2;
    }
    a[0]
}

/// Sum of a slice with lane accumulators.
#[inline(always)]
fn sum_of(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    hsum(acc) + chunks.remainder().iter().sum::<f32>()
}

/// Sum of squared deviations from `mean`, with lane accumulators.
#[inline(always)]
fn sq_dev_of(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let t = c[i] - mean;
            acc[i] += t * t;
        }
    }
    hsum(acc)
        + chunks
            .remainder()
            .iter()
            .map(|&v| (v - mean) * (v - mean))
            .sum::<f32>()
}

/// `row = LayerNorm(row)` without gain or bias (biased variance, as
/// PyTorch); one row of [`layer_norm_rows`].
#[cfg(test)]
fn layer_norm_plain(row: &mut [f32], eps: f32) {
    let d = row.len();
    if d == 0 {
        return;
    }
    layer_norm_rows(row, d, eps);
}

/// LayerNorm without gain or bias over every row of `x [rows × d]`.
///
/// Rows go in groups of 16: the statistics of a group are independent
/// chains the CPU overlaps, and the `1/√(var + ε)` of the whole group is one
/// vector square root and division.
#[inline(always)]
pub(crate) fn layer_norm_rows(x: &mut [f32], d: usize, eps: f32) {
    if d == 0 {
        return;
    }
    let inv_d = 1.0 / d as f32;
    for group in x.chunks_mut(LANES * d) {
        let mut mean = [0.0f32; LANES];
        let mut rstd = [0.0f32; LANES];
        for (m, row) in mean.iter_mut().zip(group.chunks_exact(d)) {
            *m = sum_of(row) * inv_d;
        }
        for ((s, &m), row) in rstd.iter_mut().zip(&mean).zip(group.chunks_exact(d)) {
            *s = sq_dev_of(row, m) * inv_d;
        }
        for s in rstd.iter_mut() {
            *s = 1.0 / (*s + eps).sqrt();
        }
        for ((row, &m), &s) in group.chunks_exact_mut(d).zip(&mean).zip(&rstd) {
            for v in row.iter_mut() {
                *v = (*v - m) * s;
            }
        }
    }
}

/// `x = LayerNorm(x + add)` row by row over `x [rows × d]` (`add` at least
/// as long as `x`).
#[inline(always)]
pub(crate) fn add_layer_norm_rows(x: &mut [f32], add: &[f32], d: usize, eps: f32) {
    for (v, &a) in x.iter_mut().zip(add) {
        *v += a;
    }
    layer_norm_rows(x, d, eps);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_close_to_exp() {
        let mut worst = 0.0f32;
        let mut x = -80.0f32;
        while x <= 20.0 {
            let rel = (exp_approx(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert!(exp_approx(-1e30) >= 0.0 && exp_approx(-1e30) < 1e-37);
        assert_eq!(exp_approx(0.0), 1.0);
    }

    #[test]
    fn softmax_prefix_zeroes_the_tail_and_sums_to_one() {
        let mut r: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let orig = r.clone();
        softmax_prefix(&mut r, 23);
        let m = orig[..23].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = orig[..23].iter().map(|v| (v - m).exp()).sum();
        for i in 0..23 {
            assert!((r[i] - (orig[i] - m).exp() / s).abs() < 1e-6);
        }
        assert!(r[23..].iter().all(|&v| v == 0.0));
        // Every split of whole chunks and tail, including valid = 1 and all.
        for len in [1usize, 15, 16, 17, 32, 40] {
            for valid in 1..=len {
                let orig: Vec<f32> = (0..len).map(|i| (i as f32 * 0.71).cos() * 4.0).collect();
                let mut r = orig.clone();
                softmax_prefix(&mut r, valid);
                let m = orig[..valid]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = orig[..valid].iter().map(|v| (v - m).exp()).sum();
                for i in 0..len {
                    let want = if i < valid {
                        (orig[i] - m).exp() / s
                    } else {
                        0.0
                    };
                    assert!((r[i] - want).abs() < 1e-6, "len {len} valid {valid} [{i}]");
                }
            }
        }
    }

    #[test]
    fn transpose_handles_partial_tiles() {
        for (rows, cols, ld) in [
            (1, 1, 1),
            (16, 16, 16),
            (37, 20, 48),
            (5, 64, 16),
            (33, 17, 33),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; cols * ld];
            transpose(&src, rows, cols, &mut dst, ld);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * ld + r], src[r * cols + c]);
                }
            }
            for c in 0..cols {
                assert!(dst[c * ld + rows..(c + 1) * ld].iter().all(|&v| v == -1.0));
            }
        }
    }

    #[test]
    fn layer_norm_plain_rows_have_zero_mean_unit_variance() {
        let mut r: Vec<f32> = (0..70)
            .map(|i| (i as f32 * 1.3).cos() * 3.0 + 2.0)
            .collect();
        let orig = r.clone();
        layer_norm_plain(&mut r, 1e-5);
        let mean = r.iter().sum::<f32>() / 70.0;
        let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 70.0;
        assert!(mean.abs() < 1e-5, "{mean}");
        assert!((var - 1.0).abs() < 1e-3, "{var}");
        // The grouped version over 37 rows (two groups, one partial) agrees
        // with the single-row one on every row.
        let d = 10;
        let rows: Vec<f32> = (0..37 * d)
            .map(|i| (i as f32 * 0.91).sin() * (1 + i % 7) as f32)
            .collect();
        let add: Vec<f32> = (0..37 * d).map(|i| (i as f32 * 0.37).cos()).collect();
        let mut grouped = rows.clone();
        add_layer_norm_rows(&mut grouped, &add, d, 1e-5);
        for (r, (g, (x, a))) in grouped
            .chunks(d)
            .zip(rows.chunks(d).zip(add.chunks(d)))
            .enumerate()
        {
            let mut one: Vec<f32> = x.iter().zip(a).map(|(x, a)| x + a).collect();
            layer_norm_plain(&mut one, 1e-5);
            assert_eq!(g, &one[..], "row {r}");
        }
        let _ = orig;
    }
}
