//! The full-rank DCN v2 cross layer `x_{l+1} = x_0 ⊙ (W·x_l + b) + x_l`.

use super::linear::{linear_backward, linear_forward};
use super::{TrainError, need, sized};

/// Forward over `m` rows of width `n`: `t = x·Wᵀ + b` (cached) and
/// `out = x0 ⊙ t + x`.
#[allow(clippy::too_many_arguments)]
pub fn cross_forward(
    m: usize,
    n: usize,
    x0: &[f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    t: &mut [f32],
    out: &mut [f32],
) -> Result<(), TrainError> {
    need("cross x0", m * n, x0.len())?;
    need("cross out", m * n, out.len())?;
    linear_forward(m, n, n, x, w, Some(b), t)?;
    for i in 0..m * n {
        out[i] = x0[i] * t[i] + x[i];
    }
    Ok(())
}

/// Backward of [`cross_forward`]: `dx += dout + (dout ⊙ x0)·W`,
/// `dx0 += dout ⊙ t`, `dW += (dout ⊙ x0)ᵀ·x`, `db += Σ dout ⊙ x0`.
/// `dx` and `dx0` are separate buffers (for the first layer, where
/// `x = x0`, add them afterwards).
#[allow(clippy::too_many_arguments)]
pub fn cross_backward(
    m: usize,
    n: usize,
    x0: &[f32],
    x: &[f32],
    w: &[f32],
    t: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    dx0: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dt: &mut Vec<f32>,
    scratch: &mut Vec<f32>,
) -> Result<(), TrainError> {
    need("cross x0", m * n, x0.len())?;
    need("cross t", m * n, t.len())?;
    need("cross dout", m * n, dout.len())?;
    need("cross dx", m * n, dx.len())?;
    need("cross dx0", m * n, dx0.len())?;
    let dtv = sized(dt, m * n);
    for i in 0..m * n {
        dtv[i] = dout[i] * x0[i];
        dx0[i] += dout[i] * t[i];
        dx[i] += dout[i];
    }
    linear_backward(m, n, n, x, w, dtv, Some(dx), dw, Some(db), scratch)
}
