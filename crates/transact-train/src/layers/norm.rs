//! LayerNorm over rows, with or without gain and bias.

use transact_embed::kernels::sum_fast;

use super::{TrainError, need};

/// `y = (x − mean)·rstd (·gain) (+ bias)` per row of `x [rows × d]`, with
/// `rstd = 1/sqrt(var + eps)` (biased variance); caches `mean` and `rstd`
/// (`rows` values each) for the backward. `x` and `y` may not alias; use
/// [`layer_norm_forward`] on a copy for in-place needs.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    rows: usize,
    d: usize,
    x: &[f32],
    gain: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<(), TrainError> {
    need("layer_norm x", rows * d, x.len())?;
    need("layer_norm y", rows * d, y.len())?;
    need("layer_norm mean", rows, mean.len())?;
    need("layer_norm rstd", rows, rstd.len())?;
    if let Some(g) = gain {
        need("layer_norm gain", d, g.len())?;
    }
    if let Some(b) = bias {
        need("layer_norm bias", d, b.len())?;
    }
    if d == 0 {
        return Ok(());
    }
    let inv_d = 1.0 / d as f32;
    let rows_x = x[..rows * d].chunks_exact(d);
    let rows_y = y[..rows * d].chunks_exact_mut(d);
    for (r, (xr, yr)) in rows_x.zip(rows_y).enumerate() {
        let mu = sum_fast(xr) * inv_d;
        let var = sum_sq_dev(xr, mu) * inv_d;
        let rs = 1.0 / (var + eps).sqrt();
        mean[r] = mu;
        rstd[r] = rs;
        match (gain, bias) {
            (Some(g), Some(b)) => {
                for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(g).zip(b) {
                    *o = (v - mu) * rs * g + b;
                }
            }
            (Some(g), None) => {
                for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(g) {
                    *o = (v - mu) * rs * g;
                }
            }
            (None, Some(b)) => {
                for ((o, &v), &b) in yr.iter_mut().zip(xr).zip(b) {
                    *o = (v - mu) * rs + b;
                }
            }
            (None, None) => {
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o = (v - mu) * rs;
                }
            }
        }
    }
    Ok(())
}

/// `Σ (x − mu)²` with eight partial sums (vectorises).
fn sum_sq_dev(x: &[f32], mu: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let t = c[i] - mu;
            acc[i] += t * t;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in tail {
        s += (v - mu) * (v - mu);
    }
    s
}

/// Backward of [`layer_norm_forward`]: with `x̂ = (x − mean)·rstd` and
/// `g = dy (⊙ gain)`, `dx += rstd·(g − mean(g) − x̂·mean(g ⊙ x̂))`,
/// `dgain += Σ_rows dy ⊙ x̂`, `dbias += Σ_rows dy`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    rows: usize,
    d: usize,
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gain: Option<&[f32]>,
    dy: &[f32],
    dx: &mut [f32],
    mut dgain: Option<&mut [f32]>,
    mut dbias: Option<&mut [f32]>,
) -> Result<(), TrainError> {
    need("layer_norm x", rows * d, x.len())?;
    need("layer_norm dy", rows * d, dy.len())?;
    need("layer_norm dx", rows * d, dx.len())?;
    need("layer_norm mean", rows, mean.len())?;
    need("layer_norm rstd", rows, rstd.len())?;
    if let Some(g) = gain {
        need("layer_norm gain", d, g.len())?;
    }
    if let Some(g) = dgain.as_deref() {
        need("layer_norm dgain", d, g.len())?;
    }
    if let Some(b) = dbias.as_deref() {
        need("layer_norm dbias", d, b.len())?;
    }
    if d == 0 {
        return Ok(());
    }
    let inv_d = 1.0 / d as f32;
    let ones = [1.0f32; 64];
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let dyr = &dy[r * d..(r + 1) * d];
        let dxr = &mut dx[r * d..(r + 1) * d];
        let (mu, rs) = (mean[r], rstd[r]);
        if let Some(dg) = dgain.as_deref_mut() {
            for ((a, &g), &v) in dg[..d].iter_mut().zip(dyr).zip(xr) {
                *a += g * (v - mu) * rs;
            }
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (a, &g) in db[..d].iter_mut().zip(dyr) {
                *a += g;
            }
        }
        // Sums of g = dy ⊙ gain and of g ⊙ x̂, in blocks of 64 columns.
        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        for c0 in (0..d).step_by(64) {
            let c1 = (c0 + 64).min(d);
            let gw = gain.map_or(&ones[..c1 - c0], |w| &w[c0..c1]);
            let mut a1 = [0.0f32; 8];
            let mut a2 = [0.0f32; 8];
            for (j, ((&dyv, &w), &xv)) in dyr[c0..c1].iter().zip(gw).zip(&xr[c0..c1]).enumerate() {
                let g = dyv * w;
                a1[j % 8] += g;
                a2[j % 8] += g * (xv - mu) * rs;
            }
            sum_g += a1.iter().sum::<f32>();
            sum_gx += a2.iter().sum::<f32>();
        }
        let mg = sum_g * inv_d;
        let mgx = sum_gx * inv_d;
        for c0 in (0..d).step_by(64) {
            let c1 = (c0 + 64).min(d);
            let gw = gain.map_or(&ones[..c1 - c0], |w| &w[c0..c1]);
            for (((o, &dyv), &w), &xv) in dxr[c0..c1]
                .iter_mut()
                .zip(&dyr[c0..c1])
                .zip(gw)
                .zip(&xr[c0..c1])
            {
                let xh = (xv - mu) * rs;
                *o += rs * (dyv * w - mg - xh * mgx);
            }
        }
    }
    Ok(())
}
