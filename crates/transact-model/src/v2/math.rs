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
    // Taylor series of e^r on |r| ≤ ln2 / 2, degree 6.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    p * scale
}

/// Maximum of a non-empty slice (`-inf` for an empty one).
#[inline(always)]
pub(crate) fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Softmax over `row[..valid]` in place; `row[valid..]` is set to 0.
/// `valid` must be at least 1 and at most `row.len()`.
#[inline(always)]
pub(crate) fn softmax_prefix(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid);
    dead.fill(0.0);
    let max = max_of(live);
    let mut acc = [0.0f32; LANES];
    let mut chunks = live.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp_approx(c[i] - max);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut sum = 0.0f32;
    for v in chunks.into_remainder() {
        let e = exp_approx(*v - max);
        *v = e;
        sum += e;
    }
    sum += acc.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for v in live.iter_mut() {
        *v *= inv;
    }
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
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
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
    acc.iter().sum::<f32>()
        + chunks
            .remainder()
            .iter()
            .map(|&v| (v - mean) * (v - mean))
            .sum::<f32>()
}

/// `row = LayerNorm(row + add)` without gain or bias (biased variance, as
/// PyTorch). `add` must be at least as long as `row`.
#[inline(always)]
pub(crate) fn add_layer_norm(row: &mut [f32], add: &[f32], eps: f32) {
    for (v, &a) in row.iter_mut().zip(add) {
        *v += a;
    }
    layer_norm_plain(row, eps);
}

/// `row = LayerNorm(row)` without gain or bias.
#[inline(always)]
pub(crate) fn layer_norm_plain(row: &mut [f32], eps: f32) {
    let d = row.len();
    if d == 0 {
        return;
    }
    let inv_d = 1.0 / d as f32;
    let mean = sum_of(row) * inv_d;
    let var = sq_dev_of(row, mean) * inv_d;
    let rstd = 1.0 / (var + eps).sqrt();
    for v in row.iter_mut() {
        *v = (*v - mean) * rstd;
    }
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
        assert_eq!(max_of(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn layer_norm_plain_rows_have_zero_mean_unit_variance() {
        let mut r: Vec<f32> = (0..70)
            .map(|i| (i as f32 * 1.3).cos() * 3.0 + 2.0)
            .collect();
        layer_norm_plain(&mut r, 1e-5);
        let mean = r.iter().sum::<f32>() / 70.0;
        let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 70.0;
        assert!(mean.abs() < 1e-5, "{mean}");
        assert!((var - 1.0).abs() < 1e-3, "{var}");
    }
}
