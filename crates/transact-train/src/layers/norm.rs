//! LayerNorm over rows, with or without gain and bias.

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
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let yr = &mut y[r * d..(r + 1) * d];
        let mu = xr.iter().sum::<f32>() * inv_d;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() * inv_d;
        let rs = 1.0 / (var + eps).sqrt();
        mean[r] = mu;
        rstd[r] = rs;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - mu) * rs;
        }
        if let Some(g) = gain {
            yr.iter_mut().zip(g).for_each(|(o, &g)| *o *= g);
        }
        if let Some(b) = bias {
            yr.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
        }
    }
    Ok(())
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
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let dyr = &dy[r * d..(r + 1) * d];
        let dxr = &mut dx[r * d..(r + 1) * d];
        let (mu, rs) = (mean[r], rstd[r]);
        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        for j in 0..d {
            let xh = (xr[j] - mu) * rs;
            let g = dyr[j] * gain.map_or(1.0, |w| w[j]);
            sum_g += g;
            sum_gx += g * xh;
            if let Some(dg) = dgain.as_deref_mut() {
                dg[j] += dyr[j] * xh;
            }
            if let Some(db) = dbias.as_deref_mut() {
                db[j] += dyr[j];
            }
        }
        let mg = sum_g * inv_d;
        let mgx = sum_gx * inv_d;
        for j in 0..d {
            let xh = (xr[j] - mu) * rs;
            let g = dyr[j] * gain.map_or(1.0, |w| w[j]);
            dxr[j] += rs * (g - mg - xh * mgx);
        }
    }
    Ok(())
}
