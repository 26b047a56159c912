//! A small gradient checker: central finite differences against an
//! analytic gradient.
//!
//! The loss is evaluated in `f32` (the layers' precision) and accumulated in
//! `f64`. Near a kink (ReLU at 0, a max-pool tie) the one-sided differences
//! disagree; such coordinates are skipped, and the report counts them.

/// Tolerances of [`check_gradient`]: a coordinate passes when
/// `|analytic − numeric| ≤ atol + rtol·max(|analytic|, |numeric|)`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Step of the central difference.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for Tolerance {
    /// `eps = 3e-3`, `atol = 3e-3`, `rtol = 3e-2`: right for f32 layers with
    /// values and losses of order 1.
    fn default() -> Self {
        Self {
            eps: 3e-3,
            atol: 3e-3,
            rtol: 3e-2,
        }
    }
}

/// What a check compared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckReport {
    /// Coordinates compared.
    pub checked: usize,
    /// Coordinates skipped at a kink.
    pub skipped: usize,
    /// Largest `|analytic − numeric|` among compared coordinates.
    pub max_abs_err: f64,
}

/// Checks `analytic[i] ≈ ∂loss/∂x[i]` by central differences for every `i`
/// in `indices` (all when `None`); `loss` reads the current `x` (restored
/// after each probe). Returns an error naming the first failing coordinate,
/// or if more than a quarter of the coordinates sit at kinks.
pub fn check_gradient(
    name: &str,
    x: &mut [f32],
    analytic: &[f32],
    indices: Option<&[usize]>,
    tol: Tolerance,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Result<CheckReport, String> {
    if analytic.len() != x.len() {
        return Err(format!(
            "{name}: analytic gradient has {} values, the tensor {}",
            analytic.len(),
            x.len()
        ));
    }
    let all: Vec<usize> = (0..x.len()).collect();
    let idx = indices.unwrap_or(&all);
    let mut rep = CheckReport::default();
    let base = loss(x);
    for &i in idx {
        if i >= x.len() {
            return Err(format!("{name}: index {i} out of range"));
        }
        let orig = x[i];
        x[i] = orig + tol.eps;
        let hi = loss(x);
        x[i] = orig - tol.eps;
        let lo = loss(x);
        x[i] = orig;
        // The actual steps taken in f32.
        let h_hi = f64::from((orig + tol.eps) - orig);
        let h_lo = f64::from(orig - (orig - tol.eps));
        let numeric = (hi - lo) / (h_hi + h_lo);
        let fwd = (hi - base) / h_hi;
        let bwd = (base - lo) / h_lo;
        let a = f64::from(analytic[i]);
        let err = (a - numeric).abs();
        let bound = tol.atol + tol.rtol * a.abs().max(numeric.abs());
        // A kink between the probes makes the one-sided slopes disagree by
        // more than smooth curvature does; if it goes undetected, the central
        // difference is off by at most half that disagreement, within `bound`.
        if (fwd - bwd).abs() > 2.0 * bound {
            rep.skipped += 1;
            continue;
        }
        rep.checked += 1;
        rep.max_abs_err = rep.max_abs_err.max(err);
        if err > bound {
            return Err(format!(
                "{name}[{i}]: analytic {a:.6e}, numeric {numeric:.6e} (one-sided {fwd:.4e} / {bwd:.4e})"
            ));
        }
    }
    if rep.skipped * 4 > idx.len() {
        return Err(format!(
            "{name}: {} of {} coordinates sit at kinks",
            rep.skipped,
            idx.len()
        ));
    }
    Ok(rep)
}
