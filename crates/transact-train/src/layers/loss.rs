//! Losses: sigmoid binary cross-entropy on logits and the sampled softmax
//! of the Next Action Loss.

use super::{TrainError, need};

/// `BCE(y, σ(z)) = softplus(z) − y·z`, computed without overflow, and its
/// derivative `σ(z) − y`.
pub fn bce_with_logits(z: f32, y: f32) -> (f64, f32) {
    let zf = f64::from(z);
    let loss = zf.max(0.0) - zf * f64::from(y) + (-zf.abs()).exp().ln_1p();
    (loss, transact_model::heads::sigmoid(z) - y)
}

/// Weighted BCE over `logits [n]`: returns `scale·Σ_i w_i·BCE(y_i, σ(z_i))`
/// and adds `scale·w_i·(σ(z_i) − y_i)` to `dlogits[i]`. Terms with zero
/// weight are skipped.
pub fn bce_forward_backward(
    logits: &[f32],
    labels: &[f32],
    weights: &[f32],
    scale: f32,
    dlogits: &mut [f32],
) -> Result<f64, TrainError> {
    let n = logits.len();
    need("bce labels", n, labels.len())?;
    need("bce weights", n, weights.len())?;
    need("bce dlogits", n, dlogits.len())?;
    let mut total = 0.0f64;
    for i in 0..n {
        let w = weights[i];
        if w == 0.0 {
            continue;
        }
        let (l, g) = bce_with_logits(logits[i], labels[i]);
        total += f64::from(w) * l;
        dlogits[i] += scale * w * g;
    }
    Ok(total * f64::from(scale))
}

/// Sampled softmax of a query `u [dim]` against `targets [n × dim]` whose
/// row 0 is the positive: returns `scale·(−log softmax(T·u)_0)`, adds its
/// gradient to `du` and to `dtargets` (same layout as `targets`).
/// `extra` holds the scores of further negatives computed elsewhere (NaN:
/// not a negative); on return each holds the loss's gradient with respect
/// to that score (0 where it was NaN). `scores` is a buffer of at least `n`
/// values. With `n = 0` the loss is 0.
#[allow(clippy::too_many_arguments)]
pub fn sampled_softmax(
    dim: usize,
    n: usize,
    u: &[f32],
    targets: &[f32],
    extra: &mut [f32],
    scale: f32,
    du: &mut [f32],
    dtargets: &mut [f32],
    scores: &mut [f32],
) -> Result<f64, TrainError> {
    need("sampled softmax u", dim, u.len())?;
    need("sampled softmax targets", n * dim, targets.len())?;
    need("sampled softmax du", dim, du.len())?;
    need("sampled softmax dtargets", n * dim, dtargets.len())?;
    need("sampled softmax scores", n, scores.len())?;
    if n == 0 {
        return Ok(0.0);
    }
    let mut max = f32::NEG_INFINITY;
    for (s, t) in scores
        .iter_mut()
        .zip(targets.chunks_exact(dim.max(1)))
        .take(n)
    {
        *s = transact_embed::kernels::dot(u, t);
        max = max.max(*s);
    }
    for &s in extra.iter().filter(|s| !s.is_nan()) {
        max = max.max(s);
    }
    let ex = |s: f32| f64::from(s - max).exp();
    // The positive, the extra negatives, then the other targets.
    let mut sum = ex(scores[0]);
    for &s in extra.iter().filter(|s| !s.is_nan()) {
        sum += ex(s);
    }
    for &s in &scores[1..n] {
        sum += ex(s);
    }
    let loss = sum.ln() + f64::from(max) - f64::from(scores[0]);
    for s in extra.iter_mut() {
        *s = if s.is_nan() {
            0.0
        } else {
            scale * (ex(*s) / sum) as f32
        };
    }
    for (i, t) in targets.chunks_exact(dim.max(1)).take(n).enumerate() {
        let p = (ex(scores[i]) / sum) as f32;
        let g = scale * (p - if i == 0 { 1.0 } else { 0.0 });
        for j in 0..dim {
            du[j] += g * t[j];
            dtargets[i * dim + j] += g * u[j];
        }
    }
    Ok(loss * f64::from(scale))
}
