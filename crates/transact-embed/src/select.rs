//! Nearest-neighbour selection of TransAct V2 on the CPU: for every
//! candidate, the `k` tokens of a user's history whose int8 item codes have
//! the largest scaled dot product with the candidate's codes.
//!
//! Exactness: a token's score is its integer dot product with the
//! candidate, computed exactly in i32, converted to f32 (exact below 2^24,
//! which every `dim ≤ 1,040` of codes in `[-127, 127]` stays under; rounded
//! to nearest otherwise, as `i64 as f32` does), then one f32 multiply by the
//! token's scale. Every device that follows the same rule selects the same
//! set (−0 and +0 compare equal).
//!
//! Order: higher score first, ties to the lower index — with histories
//! stored newest first, the more recent action.
//!
//! Work: the history is packed once per request (its rows as 32-bit words:
//! four int8 codes per word for the AVX-512 VNNI path, two i16 for the AVX2
//! path). Candidates go in blocks of [`LANES`], one candidate per vector
//! lane, split over the rayon pool. For each block a regular sample of the
//! history gives every candidate a first threshold; then every token of
//! the history is scored against the whole block at once (its words
//! broadcast, the block's codes held in registers), and a token is kept for
//! a candidate only when its score beats that candidate's running threshold
//! (the `k`-th best so far), which one vector compare per token decides.
//! Scores never go to memory.
//!
//! Paths, chosen at run time ([`SelectIsa`]): `vpdpbusd` (AVX-512 VNNI, 64
//! int8 products per instruction; the candidate side offset by 128 into
//! unsigned bytes and the offset taken back exactly through the token's code
//! sum), `vpmaddwd` on AVX2 (through `pulp`), and portable scalar code.
//! All three compute the same integers, hence the same scores and sets.

use rayon::prelude::*;

use crate::EmbedError;
use crate::kernels::exact;

/// Candidates per block: the vector lanes one history token is scored
/// against at once (two AVX-512 vectors, four AVX2 vectors).
pub const LANES: usize = 32;
/// Tokens in the sample a first threshold is taken from.
const SAMPLE: usize = 1_024;

/// The index of a padding slot in [`select_nearest_i8`]'s output.
pub const NO_TOKEN: u32 = u32::MAX;

/// Which kernel [`select_nearest_i8`] runs. Every path selects exactly the
/// same tokens; they differ only in speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SelectIsa {
    /// The fastest path this CPU has.
    #[default]
    Auto,
    /// AVX-512 with VNNI (`vpdpbusd`, x86-64 only).
    Avx512Vnni,
    /// AVX2 (`vpmaddwd`, x86-64 only).
    Avx2,
    /// Plain Rust, every target.
    Portable,
}

impl SelectIsa {
    /// Whether this CPU can run the path ([`SelectIsa::Auto`] and
    /// [`SelectIsa::Portable`] always can).
    pub fn is_available(self) -> bool {
        match self {
            Self::Auto | Self::Portable => true,
            Self::Avx512Vnni => has_vnni(),
            Self::Avx2 => has_avx2(),
        }
    }

    /// The path that runs when this one is asked for: itself if the CPU has
    /// it, else the next slower one it has (`Auto`: the fastest it has).
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto | Self::Avx512Vnni if has_vnni() => Self::Avx512Vnni,
            Self::Auto | Self::Avx512Vnni | Self::Avx2 if has_avx2() => Self::Avx2,
            _ => Self::Portable,
        }
    }

    /// A path by name (`auto`, `avx512vnni`, `avx2`, `portable`), for
    /// benchmarks and tools that force one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "avx512vnni" | "avx512-vnni" | "vnni" => Some(Self::Avx512Vnni),
            "avx2" => Some(Self::Avx2),
            "portable" | "scalar" => Some(Self::Portable),
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    pulp::x86::V3::try_new().is_some()
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

/// Reusable buffers of [`select_nearest_i8`] (the packed history, and per
/// block of candidates their packed codes, thresholds, sample scores and
/// kept tokens). Once they have grown to a request's shape, further
/// requests of that shape allocate nothing.
#[derive(Clone, Debug, Default)]
pub struct SelectScratch {
    isa: SelectIsa,
    history: Vec<i32>,
    code_sums: Vec<i32>,
    blocks: Vec<BlockScratch>,
}

impl SelectScratch {
    /// Scratch that runs the given path (or, if the CPU lacks it, the next
    /// slower one it has: see [`SelectIsa::resolve`]).
    pub fn with_isa(isa: SelectIsa) -> Self {
        Self {
            isa,
            ..Self::default()
        }
    }

    /// The path [`select_nearest_i8`] runs with this scratch.
    pub fn isa(&self) -> SelectIsa {
        self.isa.resolve()
    }
}

/// One block's buffers.
#[derive(Clone, Debug)]
struct BlockScratch {
    /// The block's codes, packed for the path: `[words × LANES]`.
    codes: Vec<i32>,
    threshold: [f32; LANES],
    /// Per lane, the tokens kept so far as [`key`]s, in index order: lane
    /// `l`'s list at `kept[l · cap ..][.. lens[l]]` (`cap` of the pass).
    kept: Vec<u64>,
    lens: [usize; LANES],
    /// Room for [`shrink`] to select in.
    spare: Vec<u64>,
}

impl Default for BlockScratch {
    fn default() -> Self {
        Self {
            codes: Vec::new(),
            threshold: [f32::NEG_INFINITY; LANES],
            kept: Vec::new(),
            lens: [0; LANES],
            spare: Vec::new(),
        }
    }
}

/// For each of the `b` candidates (`candidates`: `[b × dim]` int8 codes), the
/// indices of the `k` history tokens (`history`: `[n × dim]` codes, `scales`:
/// `[n]`) with the largest `scale_t · ⟨code_t, code_c⟩`, ties to the lower
/// index, written to `out[c·k .. (c+1)·k]` in increasing index order and
/// padded with [`NO_TOKEN`] when `n < k`.
///
/// Scores are expected to be finite (finite scales that do not overflow):
/// a token whose score is NaN or −∞ is never selected, so a candidate whose
/// history has fewer than `k` finite scores gets [`NO_TOKEN`] padding for the
/// rest.
///
/// Runs on the rayon pool, split over blocks of [`LANES`] candidates, with
/// the path of [`SelectScratch::isa`].
///
/// # Errors
/// [`EmbedError::InvalidArgument`] if `dim` is 0 or above 1,040 (where
/// scores of `[-127, 127]` codes would stop being exact in f32) or `n` does
/// not fit in `u32`; [`EmbedError::Dimension`] if a slice has the wrong
/// length.
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

    let isa = scratch.isa.resolve();
    let SelectScratch {
        history: packed,
        code_sums,
        blocks,
        ..
    } = scratch;
    let words = pack_history(isa, history, dim, packed, code_sums);
    let blocks_needed = b.div_ceil(LANES);
    if blocks.len() < blocks_needed {
        blocks.resize_with(blocks_needed, BlockScratch::default);
    }
    let job = Job {
        isa,
        n,
        dim,
        words,
        k,
        history,
        packed,
        code_sums,
        scales,
        uniform: scales
            .first()
            .copied()
            .filter(|&s0| s0 > 0.0 && s0.is_finite() && scales.iter().all(|&s| s == s0)),
    };
    out.par_chunks_mut(LANES * k)
        .zip(candidates.par_chunks(LANES * dim))
        .zip(blocks[..blocks_needed].par_iter_mut())
        .for_each(|((o, c), s)| select_block(&job, c, s, o));
    Ok(())
}

/// The history packed for `isa` into `packed` (`[n × words]`; for VNNI also
/// `−128 ·` each token's code sum into `code_sums`). Returns the words per
/// token (0 for the portable path, which reads the codes as they are).
fn pack_history(
    isa: SelectIsa,
    history: &[i8],
    dim: usize,
    packed: &mut Vec<i32>,
    code_sums: &mut Vec<i32>,
) -> usize {
    packed.clear();
    code_sums.clear();
    match isa {
        SelectIsa::Avx512Vnni => {
            let words = dim.div_ceil(4);
            packed.reserve(history.len() / dim * words);
            code_sums.reserve(history.len() / dim);
            if dim.is_multiple_of(4) {
                // Rows are whole words already.
                packed.extend(
                    history.chunks_exact(4).map(|q| {
                        i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
                    }),
                );
                code_sums.extend(
                    history
                        .chunks_exact(dim)
                        .map(|row| -128 * row.iter().map(|&h| i32::from(h)).sum::<i32>()),
                );
                return words;
            }
            for row in history.chunks_exact(dim) {
                let mut quads = row.chunks_exact(4);
                for q in &mut quads {
                    packed.push(i32::from_le_bytes([
                        q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8,
                    ]));
                }
                let rest = quads.remainder();
                if !rest.is_empty() {
                    let mut w = [0u8; 4];
                    for (d, &s) in w.iter_mut().zip(rest) {
                        *d = s as u8;
                    }
                    packed.push(i32::from_le_bytes(w));
                }
                code_sums.push(-128 * row.iter().map(|&h| i32::from(h)).sum::<i32>());
            }
            words
        }
        SelectIsa::Avx2 => {
            let words = dim.div_ceil(2);
            packed.reserve(history.len() / dim * words);
            for row in history.chunks_exact(dim) {
                let mut pairs = row.chunks_exact(2);
                for p in &mut pairs {
                    packed.push(pair(p[0], p[1]));
                }
                if let [last] = pairs.remainder() {
                    packed.push(pair(*last, 0));
                }
            }
            words
        }
        SelectIsa::Auto | SelectIsa::Portable => 0,
    }
}

/// Two codes as the two i16 halves of a word (`lo` in the low half).
#[inline(always)]
fn pair(lo: i8, hi: i8) -> i32 {
    (i32::from(hi) << 16) | i32::from(lo as i16 as u16)
}

/// One request's shared, read-only inputs.
// The packed history is read only by the x86-64 kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Job<'a> {
    isa: SelectIsa,
    n: usize,
    dim: usize,
    /// Packed words per token (0 on the portable path).
    words: usize,
    k: usize,
    history: &'a [i8],
    packed: &'a [i32],
    code_sums: &'a [i32],
    scales: &'a [f32],
    /// The scale of every token when they are all the same positive
    /// finite number (the global int8 scheme).
    uniform: Option<f32>,
}

/// Tokens whose scores the AVX2 kernel logs before handing them to
/// [`Keep::drain`] (the log of one window stays in L1).
#[cfg(target_arch = "x86_64")]
const WINDOW: usize = 64;

/// The tokens the AVX2 kernel saw beat some lane's threshold: their scores
/// for the whole block, which lanes beat it, and the token's index. Entries
/// are written for every token and the length advanced only for hits, so
/// the kernel's loop has no data-dependent branch.
#[cfg(target_arch = "x86_64")]
struct Log {
    scores: [[f32; LANES]; WINDOW],
    masks: [u32; WINDOW],
    tokens: [u32; WINDOW],
}

#[cfg(target_arch = "x86_64")]
impl Log {
    fn new() -> Self {
        Self {
            scores: [[0.0; LANES]; WINDOW],
            masks: [0; WINDOW],
            tokens: [0; WINDOW],
        }
    }
}

/// Keeps each lane's tokens above its threshold (in the order offered), and
/// when a lane's list reaches `cap`, cuts it to the best `k` and raises the
/// threshold to the `k`-th best.
struct Keep<'a> {
    /// `LANES × cap` keys.
    kept: &'a mut [u64],
    lens: &'a mut [usize; LANES],
    spare: &'a mut Vec<u64>,
    k: usize,
    /// More than `k`, or more than the tokens a pass can offer.
    cap: usize,
}

impl Keep<'_> {
    /// Token `t` with score `s` for `lane`, kept if it beats the lane's
    /// threshold (which may have risen since a kernel saw it). No branch
    /// on the outcome: the key is written either way and the length
    /// advanced only if kept.
    #[inline]
    fn offer(&mut self, lane: usize, s: f32, t: u32, thr: &mut [f32; LANES]) {
        let lane = lane % LANES;
        let len = self.lens[lane];
        if let Some(slot) = self.kept.get_mut(lane * self.cap + len) {
            *slot = key(s, t);
        }
        let len = len + usize::from(s > thr[lane]);
        self.lens[lane] = len;
        if len >= self.cap {
            self.cut(lane, thr);
        }
    }

    /// Cuts a full lane to its best `k`.
    #[cold]
    fn cut(&mut self, lane: usize, thr: &mut [f32; LANES]) {
        let start = lane * self.cap;
        if let Some(list) = self.kept.get_mut(start..start + self.lens[lane]) {
            let (len, r) = shrink(list, self.spare, self.k);
            self.lens[lane] = len;
            thr[lane] = r.max(thr[lane]);
        }
    }

    /// Lane `lane`'s list, cut to its best `k` (in index order).
    fn best(&mut self, lane: usize) -> &[u64] {
        let start = lane * self.cap;
        let len = self.lens[lane];
        match self.kept.get_mut(start..start + len) {
            Some(list) => {
                let (len, _) = shrink(list, self.spare, self.k);
                &list[..len]
            }
            None => &[],
        }
    }

    /// The first `len` entries of a kernel's log.
    #[cfg(target_arch = "x86_64")]
    fn drain(&mut self, log: &Log, len: usize, thr: &mut [f32; LANES]) {
        for ((scores, &mask), &t) in log.scores.iter().zip(&log.masks).zip(&log.tokens).take(len) {
            let mut mask = mask;
            while mask != 0 {
                let lane = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                self.offer(lane, scores[lane % LANES], t, thr);
            }
        }
    }
}

/// One block of up to [`LANES`] candidates: a first threshold from a
/// sample of the history, the whole history scanned against it, and a
/// rescan without it for candidates that kept fewer than `k`.
fn select_block(job: &Job<'_>, cands: &[i8], s: &mut BlockScratch, out: &mut [u32]) {
    let (n, k) = (job.n, job.k);
    let lanes = cands.len() / job.dim;
    pack_block(job, cands, &mut s.codes);
    let block = Block {
        job,
        cands,
        codes: &s.codes,
    };
    // Lanes past the block's candidates never beat +∞.
    s.threshold = [f32::INFINITY; LANES];
    s.threshold[..lanes].fill(f32::NEG_INFINITY);

    // A first threshold per candidate from a regular sample: its `rank`-th
    // best score, which by the sample's ranks about 2.5 `k` tokens of the
    // whole history reach (a score reached, not beaten: ties never push a
    // candidate below `k`). Any threshold is correct as long as at least
    // `k` tokens reach it; a candidate left with fewer is rescanned below.
    let stride = (n / SAMPLE).max(1);
    let m = n.div_ceil(stride);
    let rank = (5 * k * m).div_ceil(2 * n) + 1;
    let sampled = n > 4 * k && rank < m;
    // The sample's threshold lets through about 2.5 k tokens: lists are cut
    // only past 4 k, so most are cut once, at the end. A pass offers a lane
    // each token once, so `n + 1` is never reached.
    let cap = (4 * k).min(n + 1);
    let sample_cap = 4 * rank;
    let room = LANES * if sampled { cap.max(sample_cap) } else { cap };
    if s.kept.len() < room {
        s.kept.resize(room, 0);
    }
    s.lens = [0; LANES];
    if sampled {
        let mut keep = Keep {
            kept: &mut s.kept,
            lens: &mut s.lens,
            spare: &mut s.spare,
            k: rank,
            cap: sample_cap,
        };
        block.scan(stride, &mut s.threshold, &mut keep);
        for (lane, t) in s.threshold[..lanes].iter_mut().enumerate() {
            let r = match keep.best(lane) {
                list if list.len() == rank => list.iter().copied().min().map(score_of),
                _ => None,
            };
            // The largest float below `r`: beating it is reaching `r`.
            *t = match r {
                Some(r) if r.is_finite() => r.next_down(),
                _ => f32::NEG_INFINITY,
            };
        }
        s.lens = [0; LANES];
    }

    let mut keep = Keep {
        kept: &mut s.kept,
        lens: &mut s.lens,
        spare: &mut s.spare,
        k,
        cap,
    };
    block.scan(1, &mut s.threshold, &mut keep);

    // Candidates the sample's threshold was too high for: all of them again
    // in one pass, from −∞, every other lane shut.
    let mut again = false;
    let mut thr = [f32::INFINITY; LANES];
    for ((t, len), _) in thr.iter_mut().zip(keep.lens.iter_mut()).zip(0..lanes) {
        if *len < k.min(n) {
            *len = 0;
            *t = f32::NEG_INFINITY;
            again = true;
        }
    }
    if again {
        block.scan(1, &mut thr, &mut keep);
    }

    // Tokens were offered in index order and cuts keep that order.
    for (lane, o) in out.chunks_exact_mut(k).enumerate() {
        for (slot, &key) in o.iter_mut().zip(keep.best(lane)) {
            *slot = token_of(key);
        }
    }
}

/// A block's candidates packed for the path: word `w` of lane `l` at
/// `codes[w · LANES + l]`. VNNI: four codes offset by 128 into unsigned
/// bytes (padding dimensions and lanes: code 0, i.e. byte 128, against a
/// history padded with 0). AVX2: two codes as i16 (padding 0).
fn pack_block(job: &Job<'_>, cands: &[i8], codes: &mut Vec<i32>) {
    let (dim, words) = (job.dim, job.words);
    codes.clear();
    match job.isa {
        SelectIsa::Avx512Vnni => {
            codes.resize(words * LANES, i32::from_le_bytes([0x80; 4]));
            for (l, row) in cands.chunks_exact(dim).enumerate() {
                for (w, q) in row.chunks(4).enumerate() {
                    let mut bytes = [0x80u8; 4];
                    for (d, &c) in bytes.iter_mut().zip(q) {
                        *d = (c as u8) ^ 0x80;
                    }
                    codes[w * LANES + l] = i32::from_le_bytes(bytes);
                }
            }
        }
        SelectIsa::Avx2 => {
            codes.resize(words * LANES, 0);
            for (l, row) in cands.chunks_exact(dim).enumerate() {
                for (w, p) in row.chunks(2).enumerate() {
                    codes[w * LANES + l] = pair(p[0], p.get(1).copied().unwrap_or(0));
                }
            }
        }
        SelectIsa::Auto | SelectIsa::Portable => {}
    }
}

/// One block of candidates against the request's history.
struct Block<'a> {
    job: &'a Job<'a>,
    /// The block's codes as given (`[lanes × dim]`).
    cands: &'a [i8],
    /// The block's codes packed for the path.
    codes: &'a [i32],
}

impl Block<'_> {
    /// Tokens `0, step, 2·step, …` of the history against the block, on the
    /// request's path.
    fn scan(&self, step: usize, thr: &mut [f32; LANES], keep: &mut Keep<'_>) {
        match self.job.isa {
            #[cfg(target_arch = "x86_64")]
            SelectIsa::Avx512Vnni if has_vnni() => {
                // SAFETY: the CPU has AVX-512 F, BW, VL and VNNI (checked
                // just above), every feature the kernel enables.
                unsafe {
                    match (self.job.words, self.job.uniform) {
                        (8, Some(scale)) => x86::scan_vnni::<8, true>(self, step, scale, thr, keep),
                        (8, None) => x86::scan_vnni::<8, false>(self, step, 1.0, thr, keep),
                        (_, Some(scale)) => x86::scan_vnni::<0, true>(self, step, scale, thr, keep),
                        (_, None) => x86::scan_vnni::<0, false>(self, step, 1.0, thr, keep),
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SelectIsa::Avx2 => {
                if let Some(simd) = pulp::x86::V3::try_new() {
                    x86::scan_avx2(simd, self, step, thr, keep);
                } else {
                    self.scan_portable(step, thr, keep);
                }
            }
            _ => self.scan_portable(step, thr, keep),
        }
    }

    /// The scalar kernel (and the definition the vector ones follow).
    fn scan_portable(&self, step: usize, thr: &mut [f32; LANES], keep: &mut Keep<'_>) {
        let job = self.job;
        let rows = job.history.chunks_exact(job.dim).zip(job.scales);
        for (t, (row, &scale)) in rows.enumerate().step_by(step) {
            for (lane, cand) in self.cands.chunks_exact(job.dim).enumerate() {
                let dot: i32 = row
                    .iter()
                    .zip(cand)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                keep.offer(lane, dot as f32 * scale, t as u32, thr);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use pulp::x86::V3;

    use super::{Block, Keep, LANES, Log, WINDOW};

    /// The AVX-512 VNNI kernel: per token, its packed words broadcast
    /// against the block's 32 lanes (two vectors of unsigned bytes), 16
    /// `vpdpbusd` per token at `dim` = 32 (`WORDS` = 8, the block's codes
    /// then held in registers; `WORDS` = 0 reads any width from memory).
    ///
    /// `UNIFORM` (every token's scale is `scale`, positive and finite):
    /// the i32 dot products are compared with integer thresholds instead
    /// of being scaled first, which is exact (see [`dot_threshold`]), and
    /// only hits are scaled.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,popcnt,bmi1,bmi2,lzcnt")]
    pub(super) fn scan_vnni<const WORDS: usize, const UNIFORM: bool>(
        block: &Block<'_>,
        step: usize,
        scale: f32,
        thr: &mut [f32; LANES],
        keep: &mut Keep<'_>,
    ) {
        let job = block.job;
        let words = if WORDS > 0 { WORDS } else { job.words };
        let (codes, _) = block.codes.as_chunks::<16>();
        let codes = &codes[..2 * words];
        let held: [[__m512i; 2]; WORDS] =
            std::array::from_fn(|w| [load_i(&codes[2 * w]), load_i(&codes[2 * w + 1])]);
        // The thresholds as vectors: f32, or (`UNIFORM`) the i32 dot a
        // token must exceed.
        let mut dots = [i32::MAX; LANES];
        let mut seen = [f32::NAN; LANES];
        let (mut t0, mut t1) = load_thr(thr);
        let (mut d0, mut d1) = if UNIFORM {
            load_dots(thr, &mut seen, &mut dots, scale)
        } else {
            (_mm512_setzero_si512(), _mm512_setzero_si512())
        };
        // Hits (lane, score or dot, token), compressed out of the vectors:
        // no branch on whether a token hit.
        let mut hit_values = [0u32; HITS + LANES];
        let mut hit_lanes = [0u32; HITS + LANES];
        let mut hit_tokens = [0u32; HITS + LANES];
        let mut hits = 0;
        let ids0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let ids1 = _mm512_add_epi32(ids0, _mm512_set1_epi32(16));
        let rows = job
            .packed
            .chunks_exact(words)
            .zip(job.code_sums)
            .zip(job.scales);
        for (t, ((row, &sum), &token_scale)) in rows.enumerate().step_by(step) {
            let start = _mm512_set1_epi32(sum);
            let (mut a0, mut a1) = (start, start);
            if WORDS > 0 {
                if let Ok(row) = <&[i32; WORDS]>::try_from(row) {
                    for w in 0..WORDS {
                        let h = _mm512_set1_epi32(row[w]);
                        a0 = _mm512_dpbusd_epi32(a0, held[w][0], h);
                        a1 = _mm512_dpbusd_epi32(a1, held[w][1], h);
                    }
                }
            } else {
                for (h, c) in row.iter().zip(codes.chunks_exact(2)) {
                    let h = _mm512_set1_epi32(*h);
                    a0 = _mm512_dpbusd_epi32(a0, load_i(&c[0]), h);
                    a1 = _mm512_dpbusd_epi32(a1, load_i(&c[1]), h);
                }
            }
            let (v0, v1, m0, m1) = if UNIFORM {
                let m0 = _mm512_cmpgt_epi32_mask(a0, d0);
                let m1 = _mm512_cmpgt_epi32_mask(a1, d1);
                (a0, a1, m0, m1)
            } else {
                let token_scale = _mm512_set1_ps(token_scale);
                let s0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a0), token_scale);
                let s1 = _mm512_mul_ps(_mm512_cvtepi32_ps(a1), token_scale);
                let m0 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s0, t0);
                let m1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s1, t1);
                (_mm512_castps_si512(s0), _mm512_castps_si512(s1), m0, m1)
            };
            let token = _mm512_set1_epi32(t as i32);
            for (v, m, ids) in [(v0, m0, ids0), (v1, m1, ids1)] {
                put(&mut hit_values, hits, _mm512_maskz_compress_epi32(m, v));
                put(&mut hit_lanes, hits, _mm512_maskz_compress_epi32(m, ids));
                put(&mut hit_tokens, hits, token);
                hits += m.count_ones() as usize;
            }
            if hits >= HITS {
                offer_hits::<UNIFORM>(keep, &hit_lanes, &hit_values, &hit_tokens, hits, scale, thr);
                hits = 0;
                if UNIFORM {
                    (d0, d1) = load_dots(thr, &mut seen, &mut dots, scale);
                } else {
                    (t0, t1) = load_thr(thr);
                }
            }
        }
        offer_hits::<UNIFORM>(keep, &hit_lanes, &hit_values, &hit_tokens, hits, scale, thr);
    }

    /// Hits gathered before they are offered to [`Keep`] (thresholds are
    /// raised only then).
    const HITS: usize = 256;

    /// Writes a vector's 16 words at `dst[at..]` (dropped if out of room,
    /// which the callers' sizes rule out).
    #[inline(always)]
    fn put(dst: &mut [u32], at: usize, v: __m512i) {
        if let Some(d) = dst.get_mut(at..).and_then(|d| d.first_chunk_mut::<16>()) {
            *d = pulp::cast(v);
        }
    }

    /// Offers the gathered hits; `UNIFORM`: the values are dot products,
    /// scored here (`dot as f32 · scale`), else f32 scores.
    fn offer_hits<const UNIFORM: bool>(
        keep: &mut Keep<'_>,
        lanes: &[u32],
        values: &[u32],
        tokens: &[u32],
        hits: usize,
        scale: f32,
        thr: &mut [f32; LANES],
    ) {
        for ((&lane, &v), &t) in lanes.iter().zip(values).zip(tokens).take(hits) {
            let s = if UNIFORM {
                v as i32 as f32 * scale
            } else {
                f32::from_bits(v)
            };
            keep.offer(lane as usize, s, t, thr);
        }
    }

    /// The dot thresholds of `thr` (recomputed for the lanes whose
    /// threshold changed since `seen`), as two vectors.
    #[inline(always)]
    fn load_dots(
        thr: &[f32; LANES],
        seen: &mut [f32; LANES],
        dots: &mut [i32; LANES],
        scale: f32,
    ) -> (__m512i, __m512i) {
        for ((&t, s), d) in thr.iter().zip(seen.iter_mut()).zip(dots.iter_mut()) {
            if t.to_bits() != s.to_bits() {
                *s = t;
                *d = super::dot_threshold(t, scale);
            }
        }
        let [a, b]: [__m512i; 2] = pulp::cast(*dots);
        (a, b)
    }

    #[inline(always)]
    fn load_i(v: &[i32; 16]) -> __m512i {
        pulp::cast(*v)
    }

    #[inline(always)]
    fn load_thr(thr: &[f32; LANES]) -> (__m512, __m512) {
        let [a, b]: [__m512; 2] = pulp::cast(*thr);
        (a, b)
    }

    /// The AVX2 kernel: per token, each packed word (two i16 codes)
    /// broadcast against the block's 32 lanes (four vectors of i16 pairs),
    /// `vpmaddwd` and an add per word and vector.
    #[inline(always)]
    pub(super) fn scan_avx2(
        simd: V3,
        block: &Block<'_>,
        step: usize,
        thr: &mut [f32; LANES],
        keep: &mut Keep<'_>,
    ) {
        simd.vectorize(
            #[inline(always)]
            || {
                let job = block.job;
                let words = job.words;
                let (codes, _) = block.codes.as_chunks::<8>();
                let codes = &codes[..4 * words];
                let mut tv: [__m256; 4] = pulp::cast(*thr);
                let mut log = Log::new();
                let mut len = 0;
                let rows = job.packed.chunks_exact(words).zip(job.scales);
                for (t, (row, &scale)) in rows.enumerate().step_by(step) {
                    let mut acc = [simd.avx._mm256_setzero_si256(); 4];
                    for (h, c) in row.iter().zip(codes.chunks_exact(4)) {
                        let h = simd.avx._mm256_set1_epi32(*h);
                        for (a, c) in acc.iter_mut().zip(c) {
                            let p = simd.avx2._mm256_madd_epi16(h, pulp::cast(*c));
                            *a = simd.avx2._mm256_add_epi32(*a, p);
                        }
                    }
                    let scale = simd.avx._mm256_set1_ps(scale);
                    let s: [__m256; 4] = std::array::from_fn(|g| {
                        simd.avx
                            ._mm256_mul_ps(simd.avx._mm256_cvtepi32_ps(acc[g]), scale)
                    });
                    let mut mask = 0u32;
                    for (g, (s, t)) in s.iter().zip(&tv).enumerate() {
                        let gt = simd.avx._mm256_cmp_ps::<_CMP_GT_OQ>(*s, *t);
                        mask |= (simd.avx._mm256_movemask_ps(gt) as u32) << (8 * g);
                    }
                    let slot = len % WINDOW;
                    log.scores[slot] = pulp::cast(s);
                    log.masks[slot] = mask;
                    log.tokens[slot] = t as u32;
                    len = slot + usize::from(mask != 0);
                    if len == WINDOW {
                        keep.drain(&log, len, thr);
                        len = 0;
                        tv = pulp::cast(*thr);
                    }
                }
                keep.drain(&log, len, thr);
            },
        );
    }
}

/// For a positive finite `scale`, the largest i32 `D` such that a dot
/// product `d` beats `thr` (`d as f32 · scale > thr`) exactly when `d > D`.
/// The score is non-decreasing in `d`, so the dots that beat `thr` are all
/// those from some point on: found by bisection on the definition itself.
/// (Every dot of `dim ≤ 1,040` int8 codes is far inside the i32 range.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn dot_threshold(thr: f32, scale: f32) -> i32 {
    let beats = |d: i64| (d as f32) * scale > thr;
    let (mut lo, mut hi) = (i64::from(i32::MIN), i64::from(i32::MAX));
    if beats(lo) {
        return i32::MIN;
    }
    if !beats(hi) {
        return i32::MAX;
    }
    // beats(hi) and !beats(lo): the first dot that beats is in (lo, hi].
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if beats(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo as i32
}

/// A kept token as one integer, larger for the better token: the score's
/// bits in an order-preserving form (−0 taken as +0) above the complement of
/// the index (the lower index wins a tie). Scores are never NaN here (a NaN
/// beats no threshold).
#[inline]
fn key(s: f32, t: u32) -> u64 {
    let bits = (s + 0.0).to_bits();
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    (u64::from(ordered) << 32) | u64::from(!t)
}

/// The score of a [`key`].
#[inline]
fn score_of(key: u64) -> f32 {
    let ordered = (key >> 32) as u32;
    f32::from_bits(if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    })
}

/// The token of a [`key`].
#[inline]
fn token_of(key: u64) -> u32 {
    !(key as u32)
}

/// Keeps the best `k` of `list` at its front, in their order (selected in
/// `spare`, so the list keeps index order). Returns the new length and the
/// threshold a later token must beat: the `k`-th score, or −∞ while fewer
/// than `k` are kept.
fn shrink(list: &mut [u64], spare: &mut Vec<u64>, k: usize) -> (usize, f32) {
    let len = list.len();
    if len < k || k == 0 {
        return (len, f32::NEG_INFINITY);
    }
    let kth = if len == k {
        list.iter().copied().min().unwrap_or(0)
    } else {
        spare.clear();
        spare.extend_from_slice(list);
        let (_, &mut kth, _) = spare.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        // Keys are distinct (they hold the index): exactly `k` stay. No
        // branch on the outcome: each key is written, the end advanced if
        // it stays.
        let mut end = 0;
        for i in 0..len {
            let x = list[i];
            list[end] = x;
            end += usize::from(x >= kth);
        }
        kth
    };
    (k, score_of(kth))
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

    /// Every path this CPU can run.
    fn paths() -> Vec<SelectIsa> {
        [SelectIsa::Portable, SelectIsa::Avx2, SelectIsa::Avx512Vnni]
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    /// Runs every available path (each with a fresh and a reused scratch)
    /// and checks each against the definition.
    fn check_all(
        history: &[i8],
        scales: &[f32],
        cands: &[i8],
        dim: usize,
        k: usize,
        reused: &mut [SelectScratch],
    ) -> Result<(), String> {
        let want = naive(history, scales, cands, dim, k);
        for (isa, scratch) in paths().into_iter().zip(reused) {
            assert_eq!(scratch.isa(), isa);
            let mut out = vec![0u32; want.len()];
            select_nearest_i8(history, scales, cands, dim, k, scratch, &mut out)
                .map_err(|e| e.to_string())?;
            if out != want {
                return Err(format!("{isa:?} differs from the definition"));
            }
        }
        Ok(())
    }

    fn scratches() -> Vec<SelectScratch> {
        paths().into_iter().map(SelectScratch::with_isa).collect()
    }

    /// A xorshift stream.
    fn stream(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn selects_what_the_definition_selects(
            n in 0usize..1_300,
            b in 1usize..72,
            dim in 1usize..72,
            k in 1usize..120,
            codes in 0usize..3,
            scaling in 0usize..4,
            uniform in 0usize..5,
            seed in any::<u64>(),
        ) {
            let mut next = stream(seed);
            // Narrow codes make many ties; the full range includes −128.
            let (span, low) = [(3i64, -1i64), (255, -127), (256, -128)][codes];
            let mut code = || ((next() % span as u64) as i64 + low) as i8;
            let history: Vec<i8> = (0..n * dim).map(|_| code()).collect();
            let cands: Vec<i8> = (0..b * dim).map(|_| code()).collect();
            let mut next = stream(seed ^ 0x5555);
            let scales: Vec<f32> = (0..n)
                .map(|t| match scaling {
                    // Global, with zeros (−0 ties +0).
                    0 => if t % 7 == 3 { 0.0 } else { 0.65 },
                    // Per token, positive.
                    1 => (next() % 1000 + 1) as f32 / 997.0,
                    // One scale for all, some small or large enough that
                    // distinct dot products round to the same score.
                    2 => [0.65, 1e-44, 3e-39, 1e30, 1.0 / 3.0][uniform],
                    // Per token, any sign.
                    _ => ((next() % 2001) as f32 - 1000.0) / 997.0,
                })
                .collect();
            let mut reused = scratches();
            check_all(&history, &scales, &cands, dim, k, &mut reused)
                .map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn long_histories_take_the_sampled_threshold_and_still_select_exactly() {
        // One scratch per path, reused across shapes.
        let mut reused = scratches();
        for (seed, span, dim) in [
            (1u64, 255u64, 32),
            (2, 255, 32),
            (3, 3, 32),
            (4, 2, 32),
            (5, 256, 31),
            (6, 256, 7),
            (7, 255, 64),
        ] {
            let (n, b, k) = (5_000, 40, 96);
            let mut x = seed;
            let mut code = move || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (((x >> 33) % span) as i64 - (span / 2) as i64) as i8
            };
            let history: Vec<i8> = (0..n * dim).map(|_| code()).collect();
            let cands: Vec<i8> = (0..b * dim).map(|_| code()).collect();
            let scales = vec![0.65; n];
            check_all(&history, &scales, &cands, dim, k, &mut reused)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }

    #[test]
    fn the_widest_codes_select_exactly() {
        // dim = 1,040 with codes of ±127 and −128: dot products past 2^24,
        // rounded to f32 the same way by every path and the definition.
        let mut reused = scratches();
        let (n, b, dim, k) = (300, 5, 1_040, 17);
        let mut next = stream(9);
        let history: Vec<i8> = (0..n * dim)
            .map(|i| match next() % 4 {
                0 => -128,
                1 => 127,
                2 => -127,
                _ => (i % 256) as u8 as i8,
            })
            .collect();
        let cands: Vec<i8> = (0..b * dim)
            .map(|_| if next().is_multiple_of(2) { -128 } else { 127 })
            .collect();
        let scales: Vec<f32> = (0..n).map(|t| 1.0 + (t % 5) as f32 / 8.0).collect();
        check_all(&history, &scales, &cands, dim, k, &mut reused).unwrap();
    }

    #[test]
    fn dot_thresholds_split_the_dots_where_the_scores_do() {
        for scale in [0.65f32, 1.0 / 3.0, 1e-44, 3e-39, 1e30, 7.0] {
            for d in [
                -600_000i64,
                -1_000,
                -3,
                -1,
                0,
                1,
                2,
                5,
                77,
                123_456,
                600_000,
            ] {
                let score = d as f32 * scale;
                for thr in [
                    score,
                    score.next_down(),
                    score.next_up(),
                    f32::NEG_INFINITY,
                    f32::INFINITY,
                    f32::NAN,
                ] {
                    let dt = i64::from(dot_threshold(thr, scale));
                    for e in d - 3..=d + 3 {
                        assert_eq!(
                            e > dt,
                            (e as f32) * scale > thr,
                            "scale {scale} thr {thr} dot {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn paths_resolve_to_what_the_cpu_has() {
        assert_eq!(SelectIsa::Portable.resolve(), SelectIsa::Portable);
        assert_ne!(SelectIsa::Auto.resolve(), SelectIsa::Auto);
        for isa in paths() {
            assert_eq!(isa.resolve(), isa);
        }
        assert_eq!(SelectIsa::from_name("AVX2"), Some(SelectIsa::Avx2));
        assert_eq!(SelectIsa::from_name("sse"), None);
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
