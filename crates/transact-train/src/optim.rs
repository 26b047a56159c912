//! Adam / AdamW, the learning-rate schedule (linear warm-up, then cosine
//! decay) and gradient-norm clipping.
//!
//! Everything works on the flat parameter vector of [`crate::params`]: one
//! update loop, no per-tensor bookkeeping beyond the ranges that are exempt
//! from weight decay.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Adam hyper-parameters. `weight_decay > 0` makes it AdamW (decoupled
/// decay, applied to the ranges [`Adam::step`] is told to decay).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamConfig {
    /// First-moment decay β₁.
    pub beta1: f32,
    /// Second-moment decay β₂.
    pub beta2: f32,
    /// Added to `sqrt(v̂)`.
    pub eps: f32,
    /// Decoupled weight decay λ (0 = plain Adam).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// β₁ 0.9, β₂ 0.999, ε 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam state: first and second moments per parameter, and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Hyper-parameters.
    pub cfg: AdamConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Updates applied so far.
    pub t: u64,
}

impl Adam {
    /// Fresh state for `n` parameters.
    pub fn new(cfg: AdamConfig, n: usize) -> Self {
        Self {
            cfg,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `params` from `grads` with learning rate `lr`. Weight
    /// decay (when configured) applies only inside `decay` ranges.
    ///
    /// Lengths must match the state's; the trainer guarantees it.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, decay: &[Range<usize>]) {
        let n = self.m.len().min(params.len()).min(grads.len());
        self.t += 1;
        let c = self.cfg;
        let t = self.t as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let step = lr / bc1;
        let inv_bc2 = 1.0 / bc2;
        let (m, v) = (&mut self.m[..n], &mut self.v[..n]);
        for i in 0..n {
            let g = grads[i];
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
            params[i] -= step * m[i] / ((v[i] * inv_bc2).sqrt() + c.eps);
        }
        if c.weight_decay > 0.0 {
            let f = 1.0 - lr * c.weight_decay;
            for r in decay {
                let r = r.start.min(n)..r.end.min(n);
                params[r].iter_mut().for_each(|p| *p *= f);
            }
        }
    }
}

/// Learning rate over training: linear warm-up from 0 to `peak` over
/// `warmup` steps, then cosine decay to `peak · final_ratio` at `total`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f32,
    /// Warm-up steps.
    pub warmup: u64,
    /// Steps of the whole run (the cosine reaches its end here).
    pub total: u64,
    /// Final rate as a fraction of the peak.
    pub final_ratio: f32,
}

impl Schedule {
    /// The rate for update number `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.peak * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        let floor = f64::from(self.final_ratio);
        (f64::from(self.peak) * (floor + (1.0 - floor) * cos)) as f32
    }
}

/// Scales `grads` so that their L2 norm is at most `max_norm` (no-op when
/// `max_norm ≤ 0` or the norm is already below). Returns the norm before
/// clipping (summed in f64: the same for a given gradient on any machine).
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm && norm.is_finite() {
        let s = max_norm / norm;
        grads.iter_mut().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adam_step_moves_each_parameter_by_the_learning_rate() {
        // With bias correction, step 1 is lr · g / (|g| + ε) = ±lr.
        let mut adam = Adam::new(AdamConfig::default(), 3);
        let mut p = vec![1.0, -2.0, 0.5];
        adam.step(&mut p, &[0.3, -4.0, 0.0], 0.1, &[]);
        assert!((p[0] - 0.9).abs() < 1e-6, "{p:?}");
        assert!((p[1] + 1.9).abs() < 1e-6, "{p:?}");
        assert_eq!(p[2], 0.5);
        assert_eq!(adam.t, 1);
    }

    #[test]
    fn adam_minimises_a_badly_scaled_quadratic() {
        // f(x) = Σ a_i (x_i − c_i)², a spanning four orders of magnitude.
        let a = [100.0f32, 1.0, 0.01];
        let c = [1.0f32, -3.0, 2.0];
        let mut x = vec![0.0f32; 3];
        let mut adam = Adam::new(AdamConfig::default(), 3);
        let sched = Schedule {
            peak: 0.1,
            warmup: 10,
            total: 3000,
            final_ratio: 0.01,
        };
        for step in 0..3000 {
            let g: Vec<f32> = (0..3).map(|i| 2.0 * a[i] * (x[i] - c[i])).collect();
            adam.step(&mut x, &g, sched.lr(step), &[]);
        }
        for i in 0..3 {
            assert!((x[i] - c[i]).abs() < 2e-2, "x {x:?}");
        }
    }

    #[test]
    fn weight_decay_only_touches_the_given_ranges() {
        let cfg = AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::default()
        };
        let mut adam = Adam::new(cfg, 4);
        let mut p = vec![1.0; 4];
        let decay = [std::ops::Range { start: 1, end: 3 }];
        adam.step(&mut p, &[0.0; 4], 0.1, &decay);
        assert_eq!(p, vec![1.0, 0.95, 0.95, 1.0]);
    }

    #[test]
    fn schedule_warms_up_linearly_then_follows_a_cosine() {
        let s = Schedule {
            peak: 1.0,
            warmup: 4,
            total: 104,
            final_ratio: 0.1,
        };
        assert!((s.lr(0) - 0.25).abs() < 1e-6);
        assert!((s.lr(3) - 1.0).abs() < 1e-6);
        assert!((s.lr(4) - 1.0).abs() < 1e-6);
        assert!((s.lr(54) - 0.55).abs() < 1e-6, "{}", s.lr(54));
        assert!((s.lr(104) - 0.1).abs() < 1e-6);
        assert!((s.lr(10_000) - 0.1).abs() < 1e-6);
        for k in 4..104 {
            assert!(s.lr(k + 1) <= s.lr(k));
        }
    }

    #[test]
    fn clipping_caps_the_norm_and_keeps_the_direction() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.3, 0.4];
        assert!((clip_grad_norm(&mut small, 1.0) - 0.5).abs() < 1e-6);
        assert_eq!(small, vec![0.3, 0.4]);
        let mut off = vec![30.0, 40.0];
        clip_grad_norm(&mut off, 0.0);
        assert_eq!(off, vec![30.0, 40.0]);
    }
}
