//! Dense layers `y = x·Wᵀ + b`, ReLU and a transpose helper.

use transact_embed::kernels::{self, Par, RhsLayout};

use super::{TrainError, kernel, need, sized};

/// `y[m × d_out] = x[m × d_in] · Wᵀ (+ b)`, `W` stored `[d_out × d_in]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    m: usize,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), TrainError> {
    need("linear x", m * d_in, x.len())?;
    need("linear w", d_out * d_in, w.len())?;
    need("linear y", m * d_out, y.len())?;
    if let Some(b) = b {
        need("linear b", d_out, b.len())?;
    }
    kernels::linear(m, d_in, d_out, x, w, b, y, Par::Seq).map_err(kernel)
}

/// Backward of [`linear_forward`]: `dx += dy·W` (when `dx` is given),
/// `dW += dyᵀ·x`, `db += Σ_rows dy` (when `db` is given). `scratch` holds
/// `dyᵀ` (grown as needed).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    m: usize,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) -> Result<(), TrainError> {
    need("linear x", m * d_in, x.len())?;
    need("linear w", d_out * d_in, w.len())?;
    need("linear dy", m * d_out, dy.len())?;
    need("linear dw", d_out * d_in, dw.len())?;
    if m == 0 {
        return Ok(());
    }
    if let Some(dx) = dx {
        need("linear dx", m * d_in, dx.len())?;
        kernels::matmul(m, d_in, d_out, dy, w, RhsLayout::KxN, dx, true, Par::Seq)
            .map_err(kernel)?;
    }
    let dyt = sized(scratch, d_out * m);
    transpose(&dy[..m * d_out], m, d_out, dyt);
    kernels::matmul(d_out, d_in, m, dyt, x, RhsLayout::KxN, dw, true, Par::Seq).map_err(kernel)?;
    if let Some(db) = db {
        need("linear db", d_out, db.len())?;
        add_column_sums(&dy[..m * d_out], d_out, db);
    }
    Ok(())
}

/// `acc[j] += Σ_r x[r][j]` over the rows of `x[rows × width]`.
pub fn add_column_sums(x: &[f32], width: usize, acc: &mut [f32]) {
    if width == 0 {
        return;
    }
    for row in x.chunks_exact(width) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// `dst[c × rows + r] = src[r × cols + c]` for `src [rows × cols]`
/// (`dst` must hold `rows · cols` values; nothing is written otherwise).
/// Works in 16 × 16 tiles (a destination row of a tile is one cache line).
// `c` picks one column across the tile's rows.
#[allow(clippy::needless_range_loop)]
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 16;
    let n = rows * cols;
    if src.len() < n || dst.len() < n {
        return;
    }
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let full_r = rows - rows % T;
    let full_c = cols - cols % T;
    for r0 in (0..full_r).step_by(T) {
        for c0 in (0..full_c).step_by(T) {
            let mut tile = [[0.0f32; T]; T];
            for (r, t) in tile.iter_mut().enumerate() {
                let s = (r0 + r) * cols + c0;
                t.copy_from_slice(&src[s..s + T]);
            }
            for c in 0..T {
                let d = (c0 + c) * rows + r0;
                let out = &mut dst[d..d + T];
                for (r, o) in out.iter_mut().enumerate() {
                    *o = tile[r][c];
                }
            }
        }
    }
    // Edges: the last `cols % T` columns of the full rows, then the last rows.
    for r in 0..full_r {
        for c in full_c..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    for r in full_r..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// ReLU in place: `x = max(x, 0)`.
pub fn relu_forward(x: &mut [f32]) {
    kernels::relu(x);
}

/// Backward of ReLU given its output `y` (or input; the sign is the same):
/// `dx = dy` where `y > 0`, else 0, in place on `dy`.
pub fn relu_backward(y: &[f32], dy: &mut [f32]) {
    for (g, &v) in dy.iter_mut().zip(y) {
        if v <= 0.0 {
            *g = 0.0;
        }
    }
}
