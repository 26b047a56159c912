//! Nearest-neighbour selection of TransAct V2 on the CPU: for every
//! candidate, the `k` tokens of a user's history whose int8 item codes have
//! the largest dot product with the candidate's codes.
//!
//! Exactness: codes are integers in `[-127, 127]`, so each product is at
//! most 16,129 in magnitude and a 32-wide (indeed any up-to-1,040-wide) dot
//! product stays below 2^24: summed in f32 it is exact in any order. A
//! token's score is that integer times its scale (one f32 multiply), so
//! every device that follows the same rule selects the same set (−0 and +0
//! compare equal).
//!
//! Order: higher score first, ties to the lower index — with histories
//! stored newest first, the more recent action.
//!
//! Work: the history is converted to f32 once per request (tile-major and
//! transposed, `[tiles × d × TILE]`), then each thread takes a share of the
//! candidates and, tile by tile, computes their scores with the small GEMM
//! and keeps only scores above a running threshold (the `k`-th best so
//! far), so after the first tiles almost nothing is kept.

use rayon::prelude::*;

use crate::EmbedError;
use crate::kernels::exact;
use crate::small_gemm::matmul_kn;

/// Tokens per tile: a tile of the transposed history (`d × TILE` floats) and
/// one candidate block's scores stay in L1/L2.
const TILE: usize = 512;
/// Tokens in the sample a first threshold is taken from.
const SAMPLE: usize = 1_024;
/// Candidates per block of the score GEMM.
const BLOCK: usize = 32;
/// Scores checked against the threshold at a time.
const LANES: usize = 16;

/// The index of a padding slot in [`select_nearest_i8`]'s output.
pub const NO_TOKEN: u32 = u32::MAX;

/// Reusable buffers of [`select_nearest_i8`] (the history in f32, the
/// candidates in f32).
#[derive(Clone, Debug, Default)]
pub struct SelectScratch {
    history_t: Vec<f32>,
    sample_t: Vec<f32>,
    sample_scales: Vec<f32>,
    candidates: Vec<f32>,
}

/// For each of the `b` candidates (`candidates`: `[b × dim]` int8 codes), the
/// indices of the `k` history tokens (`history`: `[n × dim]` codes, `scales`:
/// `[n]`) with the largest `scale_t · ⟨code_t, code_c⟩`, ties to the lower
/// index, written to `out[c·k .. (c+1)·k]` in increasing index order and
/// padded with [`NO_TOKEN`] when `n < k`.
///
/// Runs on the rayon pool, split over candidates.
///
/// # Errors
/// [`EmbedError::InvalidArgument`] if `dim` is 0 or above 1,040 (where f32
/// sums would stop being exact) or `n` does not fit in `u32`;
/// [`EmbedError::Dimension`] if a slice has the wrong length.
#[allow(clippy::too_many_arguments)]
pub fn select_nearest_i8(
    history: &[i8],
    scales: &[f32],
    candidates: &[i8],
    dim: usize,
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut [u32],
) -> Result<(), EmbedError> {
    if dim == 0 || dim > 1_040 {
        return Err(EmbedError::InvalidArgument(format!(
            "selection width {dim} is outside 1..=1040"
        )));
    }
    let n = scales.len();
    if u32::try_from(n).is_err() {
        return Err(EmbedError::InvalidArgument(format!(
            "{n} history tokens do not fit u32 indices"
        )));
    }
    exact("selection history (n × dim)", n * dim, history.len())?;
    if !candidates.len().is_multiple_of(dim) {
        return Err(EmbedError::InvalidArgument(format!(
            "{} candidate codes are not a multiple of width {dim}",
            candidates.len()
        )));
    }
    let b = candidates.len() / dim;
    exact("selection output (b × k)", b * k, out.len())?;
    if b == 0 || k == 0 {
        return Ok(());
    }
    out.fill(NO_TOKEN);
    if n == 0 {
        return Ok(());
    }

    // The history once per request, f32, tile-major and transposed.
    let tiles = n.div_ceil(TILE);
    let ht = &mut scratch.history_t;
    ht.clear();
    ht.resize(tiles * dim * TILE, 0.0);
    // Tile by tile, writing each transposed row contiguously (the tile's
    // 16 KiB of codes stay in L1 while they are read with a stride).
    for (tile, block) in ht.chunks_exact_mut(dim * TILE).enumerate() {
        let start = tile * TILE;
        let width = TILE.min(n - start);
        let codes = &history[start * dim..(start + width) * dim];
        for (j, dst) in block.chunks_exact_mut(TILE).enumerate() {
            for (o, row) in dst.iter_mut().zip(codes.chunks_exact(dim)) {
                *o = f32::from(row[j]);
            }
        }
    }
    // A regular sample of the history, transposed, for a first threshold.
    let stride = (n / SAMPLE).max(1);
    let m = n.div_ceil(stride);
    let st = &mut scratch.sample_t;
    st.clear();
    st.resize(dim * m, 0.0);
    for (i, row) in history.chunks_exact(dim).step_by(stride).enumerate() {
        for (j, &q) in row.iter().enumerate() {
            st[j * m + i] = f32::from(q);
        }
    }
    let sample_scales = &mut scratch.sample_scales;
    sample_scales.clear();
    sample_scales.extend(scales.iter().step_by(stride));
    let cf = &mut scratch.candidates;
    cf.clear();
    cf.extend(candidates.iter().map(|&q| f32::from(q)));
    let uniform = scales
        .first()
        .is_some_and(|&s0| s0 > 0.0 && scales.iter().all(|&s| s == s0));
    let sample = Sample {
        codes_t: st,
        scales: sample_scales,
        len: m,
        uniform,
    };
    let (ht, cf): (&[f32], &[f32]) = (ht, cf);

    out.par_chunks_mut(BLOCK * k)
        .zip(cf.par_chunks(BLOCK * dim))
        .try_for_each(|(o, c)| select_block(ht, scales, n, &sample, c, dim, k, o))
}

/// Every `stride`-th token of the history, transposed (`[dim × len]`).
struct Sample<'a> {
    codes_t: &'a [f32],
    scales: &'a [f32],
    len: usize,
    /// Every scale the same positive number.
    uniform: bool,
}

/// Scores in place: times their tokens' scales. Skipped when every scale is
/// the same positive number (the global int8 scheme), which orders tokens
/// exactly as the bare dot products do. (−0 and +0 compare equal under
/// every rule used here.)
#[inline]
fn scale_scores(row: &mut [f32], scales: &[f32], uniform: bool) {
    if !uniform {
        for (s, &sc) in row.iter_mut().zip(scales) {
            *s *= sc;
        }
    }
}

/// Higher score first (−0 equal to +0; scores are finite), then lower index.
fn better(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// A first threshold per candidate from the sample: a score that, by the
/// sample's ranks, about twice `k` tokens of the whole history exceed (−∞
/// when the history is short). Any threshold is correct as long as at least
/// `k` tokens end above it; [`select_block`] rescans a candidate otherwise.
fn sample_thresholds(
    sample: &Sample<'_>,
    n: usize,
    cands: &[f32],
    dim: usize,
    k: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<(), EmbedError> {
    let (m, bc) = (sample.len, out.len());
    let rank = (2 * k * m).div_ceil(n) + 1;
    if n <= 4 * k || rank >= m {
        out.fill(f32::NEG_INFINITY);
        return Ok(());
    }
    scores.clear();
    scores.resize(bc * m, 0.0);
    matmul_kn(bc, m, dim, cands, sample.codes_t, scores, false)?;
    for (row, thr) in scores.chunks_exact_mut(m).zip(out.iter_mut()) {
        scale_scores(row, sample.scales, sample.uniform);
        let (_, &mut r, _) = row.select_nth_unstable_by(rank - 1, |a, b| {
            b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal)
        });
        *thr = r;
    }
    Ok(())
}

/// One block of candidates: a first threshold from the sample, every tile
/// scanned against it, and a rescan without it for a candidate that kept
/// fewer than `k`.
#[allow(clippy::too_many_arguments)]
fn select_block(
    ht: &[f32],
    scales: &[f32],
    n: usize,
    sample: &Sample<'_>,
    cands: &[f32],
    dim: usize,
    k: usize,
    out: &mut [u32],
) -> Result<(), EmbedError> {
    let bc = cands.len() / dim;
    let mut scores = vec![0.0f32; bc * TILE];
    let mut kept: Vec<Vec<(f32, u32)>> = (0..bc).map(|_| Vec::with_capacity(4 * k)).collect();
    let mut threshold = vec![f32::NEG_INFINITY; bc];
    let mut sample_scores = Vec::new();
    sample_thresholds(sample, n, cands, dim, k, &mut sample_scores, &mut threshold)?;
    let uniform = sample.uniform;
    scan(
        ht,
        (scales, uniform),
        n,
        cands,
        dim,
        k,
        &mut scores,
        &mut kept,
        &mut threshold,
    )?;
    for c in 0..bc {
        if kept[c].len() < k.min(n) {
            // The sample's threshold was too high for this candidate.
            let cand = &cands[c * dim..(c + 1) * dim];
            let (buf, thr) = (&mut kept[c..=c], &mut threshold[c..=c]);
            buf[0].clear();
            thr[0] = f32::NEG_INFINITY;
            scan(
                ht,
                (scales, uniform),
                n,
                cand,
                dim,
                k,
                &mut scores,
                buf,
                thr,
            )?;
        }
    }
    for (c, buf) in kept.iter_mut().enumerate() {
        shrink(buf, k);
        let o = &mut out[c * k..(c + 1) * k];
        for (slot, &(_, idx)) in o.iter_mut().zip(buf.iter()) {
            *slot = idx;
        }
        o[..buf.len().min(k)].sort_unstable();
    }
    Ok(())
}

/// Every tile for the candidates of `cands`: keeps each candidate's tokens
/// above its threshold in `kept`, raising the threshold to the `k`-th best
/// kept as the list grows.
#[allow(clippy::too_many_arguments)]
fn scan(
    ht: &[f32],
    (scales, uniform): (&[f32], bool),
    n: usize,
    cands: &[f32],
    dim: usize,
    k: usize,
    scores: &mut [f32],
    kept: &mut [Vec<(f32, u32)>],
    threshold: &mut [f32],
) -> Result<(), EmbedError> {
    let bc = cands.len() / dim;
    for (tile, block) in ht.chunks_exact(dim * TILE).enumerate() {
        let start = tile * TILE;
        let width = TILE.min(n - start);
        matmul_kn(bc, TILE, dim, cands, block, scores, false)?;
        let tile_scales = &scales[start..start + width];
        for c in 0..bc {
            let row = &mut scores[c * TILE..c * TILE + width];
            scale_scores(row, tile_scales, uniform);
            let (buf, thr) = (&mut kept[c], &mut threshold[c]);
            for (chunk_i, chunk) in row.chunks(LANES).enumerate() {
                if !any_above(chunk, *thr) {
                    continue;
                }
                for (i, &s) in chunk.iter().enumerate() {
                    // Later tokens never win a tie, so `>` is the rule.
                    if s > *thr {
                        buf.push((s, (start + chunk_i * LANES + i) as u32));
                    }
                }
                if buf.len() >= 2 * k {
                    *thr = shrink(buf, k).max(*thr);
                }
            }
        }
    }
    Ok(())
}

/// Whether any score of `chunk` is above `thr` (a full chunk is one vector
/// compare: no early exit, so the compiler vectorises it).
#[inline(always)]
fn any_above(chunk: &[f32], thr: f32) -> bool {
    match <&[f32; LANES]>::try_from(chunk) {
        Ok(full) => full.iter().fold(false, |any, &s| any | (s > thr)),
        Err(_) => chunk.iter().any(|&s| s > thr),
    }
}

/// Keeps the best `k` of `buf` (score descending, then index ascending) and
/// returns the threshold a later token must beat: the `k`-th score, or −∞
/// while fewer than `k` are kept.
fn shrink(buf: &mut Vec<(f32, u32)>, k: usize) -> f32 {
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, better);
        buf.truncate(k);
    }
    if buf.len() < k {
        f32::NEG_INFINITY
    } else {
        buf.iter().map(|x| x.0).fold(f32::INFINITY, f32::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: sort every token by (score desc, index asc), keep k.
    fn naive(history: &[i8], scales: &[f32], cands: &[i8], dim: usize, k: usize) -> Vec<u32> {
        let n = scales.len();
        let mut out = Vec::new();
        for c in cands.chunks_exact(dim) {
            let mut all: Vec<(i64, f32, u32)> = (0..n)
                .map(|t| {
                    let dot: i64 = history[t * dim..(t + 1) * dim]
                        .iter()
                        .zip(c)
                        .map(|(&a, &b)| i64::from(a) * i64::from(b))
                        .sum();
                    (dot, dot as f32 * scales[t] + 0.0, t as u32)
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
            let mut keep: Vec<u32> = all.iter().take(k).map(|x| x.2).collect();
            keep.sort_unstable();
            keep.resize(k, NO_TOKEN);
            out.extend(keep);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn selects_what_the_definition_selects(
            n in 0usize..1_300,
            b in 1usize..40,
            dim in 1usize..40,
            k in 1usize..120,
            narrow in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut x = seed | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            // Narrow codes make many ties.
            let span = if narrow { 3 } else { 255 };
            let mut code = || ((next() % span) as i64 - (span as i64) / 2) as i8;
            let history: Vec<i8> = (0..n * dim).map(|_| code()).collect();
            let cands: Vec<i8> = (0..b * dim).map(|_| code()).collect();
            let scales: Vec<f32> = (0..n).map(|t| if t % 7 == 3 { 0.0 } else { 0.65 }).collect();
            let mut out = vec![0u32; b * k];
            let mut scratch = SelectScratch::default();
            select_nearest_i8(&history, &scales, &cands, dim, k, &mut scratch, &mut out).unwrap();
            prop_assert_eq!(out, naive(&history, &scales, &cands, dim, k));
        }
    }

    #[test]
    fn long_histories_take_the_sampled_threshold_and_still_select_exactly() {
        for (seed, span) in [(1u64, 255u64), (2, 255), (3, 3), (4, 2)] {
            let (n, b, dim, k) = (5_000, 8, 32, 96);
            let mut x = seed;
            let mut code = move || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (((x >> 33) % span) as i64 - (span / 2) as i64) as i8
            };
            let history: Vec<i8> = (0..n * dim).map(|_| code()).collect();
            let cands: Vec<i8> = (0..b * dim).map(|_| code()).collect();
            let scales = vec![0.65; n];
            let mut out = vec![0u32; b * k];
            let mut scratch = SelectScratch::default();
            select_nearest_i8(&history, &scales, &cands, dim, k, &mut scratch, &mut out).unwrap();
            assert_eq!(out, naive(&history, &scales, &cands, dim, k), "seed {seed}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut s = SelectScratch::default();
        let mut out = [0u32; 2];
        assert!(select_nearest_i8(&[0; 4], &[1.0; 2], &[0; 2], 0, 1, &mut s, &mut out).is_err());
        assert!(select_nearest_i8(&[0; 3], &[1.0; 2], &[0; 2], 2, 2, &mut s, &mut out).is_err());
        assert!(select_nearest_i8(&[0; 4], &[1.0; 2], &[0; 3], 2, 2, &mut s, &mut out).is_err());
        assert!(select_nearest_i8(&[0; 4], &[1.0; 2], &[0; 2], 2, 1, &mut s, &mut out).is_err());
    }
}
