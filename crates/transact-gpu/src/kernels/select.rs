//! TransAct V2 nearest-neighbour selection on the GPU
//! (`shaders/v2_select.wgsl`, `shaders/int8_to_f32.wgsl`): for each
//! candidate, the `k` history tokens with the largest
//! `scale_t · ⟨code_t, code_c⟩` over int8 codes, the same set, bit for bit,
//! as `transact_embed::select::select_nearest_i8` on the CPU.
//!
//! # The rule
//!
//! The integer dot product is exact (i32 on the device), then one f32
//! multiply by the token's scale gives the score; −0 equals +0; higher
//! scores first, ties to the lower index; each candidate's `k` indices in
//! increasing order, padded with [`NO_TOKEN`] when the history has fewer
//! than `k` tokens.
//!
//! # Two paths, one result
//!
//! - [`Variant::Fused`]: the work in one dispatch (`select_fused`). The
//!   user's history (four codes per u32, rows padded to whole 16-byte
//!   vectors, [`pack_codes`]) is uploaded once per request and read by
//!   every workgroup (request-level de-duplication). Eight candidates per
//!   workgroup, one per invocation, walk the history together, so each
//!   history read is one address for the workgroup; each invocation dots the
//!   token with its candidate's codes held in registers (`dot4I8Packed`, or
//!   shifts and an i32 dot with [`SelectOptions::packed_dot`] off), turns
//!   the score into an order-preserving u32 key, and lists the tokens whose
//!   key reaches a threshold taken from a sample of the history (the
//!   sample only narrows the search: about `2k` tokens reach it). A radix
//!   select over the list (four 8-bit histogram passes) finds the `k`-th
//!   largest key, and a walk of the list, which is in index order, writes
//!   the selected indices — no sort. A candidate whose list is too short (a
//!   bad sample) or overflows (ties) is flagged; a second dispatch
//!   (`select_codes`, one 256-invocation workgroup per candidate, returning
//!   at once for the others) selects it over all its keys.
//! - [`Variant::Unfused`], for comparison on the same adapter: codes to f32
//!   (`int8_to_f32`), the crate's tiled GEMM for the dot products (exact in
//!   f32: integer products and sums stay below 2^24 for `dim ≤ 1040`), then
//!   a top-k dispatch over the GEMM's output (`select_scores`: one
//!   workgroup per candidate, radix select with workgroup atomics, a
//!   prefix-sum collect in index order).
//!
//! Both record into a [`Request`], so the `[candidates × k]` indices can
//! stay on the device for the next kernels of the request;
//! [`select_nearest`] uploads, runs and reads them back.
//!
//! # Inputs the device cannot take
//!
//! `dim` must be a multiple of 4 in `4..=`[`SELECT_MAX_DIM`]. Scales must
//! be finite and either zero or normal: GPUs (lavapipe among them) may flush
//! subnormal floats to zero, which would change the order, so the host
//! entry points reject subnormal scales rather than return a different set.
//! On a CPU adapter the fused path takes up to [`CPU_FUSED_MAX_TOKENS`]
//! history tokens (lavapipe ends an invocation's loops after 65,535
//! iterations in all; the kernels take eight or four elements per
//! iteration to stay within it).

use super::gemm::{GemmOptions, GemmShape, record_gemm};
use super::{check_fits, flat_groups, to_u32};
use crate::context::Shader;
use crate::{GpuContext, GpuError, KernelSpec, PooledBuffer, Readback, Request, Variant};

/// `shaders/v2_select.wgsl`.
pub const V2_SELECT: Shader = Shader {
    name: "v2_select",
    source: include_str!("../../../../shaders/v2_select.wgsl"),
};

/// `shaders/int8_to_f32.wgsl`.
pub const INT8_TO_F32: Shader = Shader {
    name: "int8_to_f32",
    source: include_str!("../../../../shaders/int8_to_f32.wgsl"),
};

/// The index of a padding slot in the output (equal to
/// `transact_embed::select::NO_TOKEN`).
pub const NO_TOKEN: u32 = u32::MAX;

/// Most tokens kept per candidate (a loop over `k` stays within lavapipe's
/// loop budget of 65,535 iterations per invocation).
pub const SELECT_MAX_K: usize = 65_535;

/// Widest code row the kernels take (eight vec4s of codes in registers).
pub const SELECT_MAX_DIM: usize = 128;

/// Tokens in the sample a first threshold is taken from.
const SAMPLE: usize = 1_024;
/// Most history tokens of the fused path on a CPU adapter: lavapipe ends
/// an invocation's loops after 65,535 iterations in all, and the fused
/// kernel's invocation walks the whole history (eight tokens per
/// iteration) besides its list work.
pub const CPU_FUSED_MAX_TOKENS: usize = 262_144;
/// Candidates per workgroup of the fused kernel (the shader's `FWG`).
const FUSED_CANDIDATES: usize = 8;
/// Largest sample rank the fused kernel keeps (the shader's `RMAX`).
const FUSED_MAX_RANK: usize = 64;
/// Entries of a candidate's list of tokens at or above its threshold in the
/// fused kernel; a candidate with more (ties) is selected the cooperative
/// way, over all its keys.
const LIST_CAP: usize = 2_048;
/// Largest `keys` (and, unfused, score) scratch per dispatch, bytes; more
/// candidates run in several dispatches.
const SCRATCH_BYTES: u64 = 64 << 20;

/// The sizes of one selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectShape {
    /// History tokens `n`.
    pub tokens: usize,
    /// Codes per token and per candidate (a multiple of 4).
    pub dim: usize,
    /// Candidates `b`.
    pub candidates: usize,
    /// Tokens kept per candidate.
    pub k: usize,
}

impl SelectShape {
    /// u32 words per code row on the device: `dim / 4` rounded up to whole
    /// 16-byte vectors (rows are zero-padded; zeros add nothing to a dot
    /// product).
    pub fn words(&self) -> usize {
        self.dim.div_ceil(16) * 4
    }

    /// Length of the output, `candidates × k`.
    pub fn out_len(&self) -> usize {
        self.candidates * self.k
    }

    /// Checks that the kernel takes this shape: `dim` a multiple of 4 in
    /// `4..=`[`SELECT_MAX_DIM`], `k` up to [`SELECT_MAX_K`], and every count
    /// and offset within `u32`.
    pub fn validate(&self) -> Result<(), GpuError> {
        if self.dim == 0 || !self.dim.is_multiple_of(4) || self.dim > SELECT_MAX_DIM {
            return Err(GpuError::Unsupported(format!(
                "selection width {} (the GPU kernel takes multiples of 4 up to {SELECT_MAX_DIM})",
                self.dim
            )));
        }
        if self.k > SELECT_MAX_K {
            return Err(GpuError::Unsupported(format!(
                "k = {} (the GPU kernels keep up to {SELECT_MAX_K} tokens per candidate)",
                self.k
            )));
        }
        to_u32("tokens × dim", self.tokens * self.dim)?;
        to_u32("candidates × dim", self.candidates * self.dim)?;
        to_u32("candidates × k", self.out_len())?;
        Ok(())
    }
}

/// How the selection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectOptions {
    /// Fused (one dispatch) or unfused (int8 → f32, GEMM, top-k).
    pub variant: Variant,
    /// Fused path: `dot4I8Packed` (native on devices with integer dot
    /// products, otherwise expanded by the shader compiler) rather than
    /// unpacking the bytes with shifts. Same result either way.
    pub packed_dot: bool,
}

impl Default for SelectOptions {
    /// Fused, `dot4I8Packed`.
    fn default() -> Self {
        Self {
            variant: Variant::Fused,
            packed_dot: true,
        }
    }
}

impl From<Variant> for SelectOptions {
    fn from(variant: Variant) -> Self {
        Self {
            variant,
            ..Self::default()
        }
    }
}

/// The device buffers of one selection (contents as [`pack_codes`] and the
/// host entry points write them).
#[derive(Clone, Copy, Debug)]
pub struct SelectBuffers<'a> {
    /// History codes, `tokens ×` [`SelectShape::words`] u32 words
    /// ([`pack_codes`]).
    pub history: &'a wgpu::Buffer,
    /// Token scales, `tokens` f32 (finite, zero or normal).
    pub scales: &'a wgpu::Buffer,
    /// Candidate codes, `candidates ×` [`SelectShape::words`] words.
    pub candidates: &'a wgpu::Buffer,
    /// Output, `candidates × k` u32 indices.
    pub out: &'a wgpu::Buffer,
}

/// Rows of `dim` int8 codes packed for the kernels: four codes per u32
/// (code `4w + j` of a row in byte `j` of its word `w`), each row
/// zero-padded to [`SelectShape::words`] words (whole 16-byte vectors).
/// A partial last row is padded like the others.
pub fn pack_codes(codes: &[i8], dim: usize) -> Vec<u32> {
    if dim == 0 {
        return Vec::new();
    }
    let words = dim.div_ceil(16) * 4;
    let mut out = Vec::with_capacity(codes.len().div_ceil(dim) * words);
    for row in codes.chunks(dim) {
        let start = out.len();
        out.extend(row.chunks(4).map(|c| {
            let mut b = [0u8; 4];
            for (o, &v) in b.iter_mut().zip(c) {
                *o = v.cast_unsigned();
            }
            u32::from_le_bytes(b)
        }));
        out.resize(start + words, 0);
    }
    out
}

/// Host inputs of one selection, as `select_nearest_i8` takes them.
#[derive(Clone, Copy, Debug)]
pub struct SelectInput<'a> {
    /// `[n × dim]` history codes.
    pub history: &'a [i8],
    /// `[n]` token scales.
    pub scales: &'a [f32],
    /// `[b × dim]` candidate codes.
    pub candidates: &'a [i8],
    /// Codes per row.
    pub dim: usize,
    /// Tokens kept per candidate.
    pub k: usize,
}

impl SelectInput<'_> {
    /// The shape, after checking every length, the width and the scales
    /// (finite, zero or normal; the first bad one is named).
    pub fn shape(&self) -> Result<SelectShape, GpuError> {
        let dim = self.dim;
        let n = self.scales.len();
        if dim == 0 || !self.candidates.len().is_multiple_of(dim) {
            return Err(GpuError::bad(
                "candidates",
                format!(
                    "{} codes are not a whole number of rows of width {dim}",
                    self.candidates.len()
                ),
            ));
        }
        let shape = SelectShape {
            tokens: n,
            dim,
            candidates: self.candidates.len() / dim,
            k: self.k,
        };
        shape.validate()?;
        if self.history.len() != n * dim {
            return Err(GpuError::len(
                "history (tokens × dim)",
                n * dim,
                self.history.len(),
            ));
        }
        if let Some(i) = self
            .scales
            .iter()
            .position(|s| !(s.is_finite() && (*s == 0.0 || s.is_normal())))
        {
            return Err(GpuError::bad(
                "scales",
                format!(
                    "scale {} of token {i} is not finite, or subnormal (the device may flush it to zero)",
                    self.scales[i]
                ),
            ));
        }
        Ok(shape)
    }
}

/// A selection's inputs uploaded for one request: the history once, its
/// scales and the candidates. Create it after the [`Request`] (see
/// [`GpuContext::request`]).
#[derive(Debug)]
pub struct SelectUpload {
    /// The checked shape.
    pub shape: SelectShape,
    /// History codes (packed).
    pub history: PooledBuffer,
    /// Token scales.
    pub scales: PooledBuffer,
    /// Candidate codes (packed).
    pub candidates: PooledBuffer,
}

impl SelectUpload {
    /// Checks `input` ([`SelectInput::shape`]) and uploads it.
    pub fn new(ctx: &GpuContext, input: &SelectInput<'_>) -> Result<Self, GpuError> {
        let shape = input.shape()?;
        Ok(Self {
            shape,
            history: ctx.upload(&pack_codes(input.history, shape.dim))?,
            scales: ctx.upload(input.scales)?,
            candidates: ctx.upload(&pack_codes(input.candidates, shape.dim))?,
        })
    }

    /// These buffers with `out` as the output.
    pub fn buffers<'a>(&'a self, out: &'a wgpu::Buffer) -> SelectBuffers<'a> {
        SelectBuffers {
            history: &self.history,
            scales: &self.scales,
            candidates: &self.candidates,
            out,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SelectParams {
    n: u32,
    k: u32,
    b: u32,
    cand_base: u32,
    groups_x: u32,
    stride: u32,
    sample_len: u32,
    sample_rank: u32,
    cap: u32,
    pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WordsParams {
    words: u32,
    pad: [u32; 3],
}

/// The sample a first threshold is taken from: `(stride, len, rank)`, or
/// zeros when the history is too short for one to pay off. About `2k`
/// tokens of the history are expected to reach the `rank`-th best of the
/// sample (as on the CPU); a threshold that fewer than `k` reach is dropped
/// by the kernel, so the sample never changes the result.
fn sample_plan(n: usize, k: usize) -> (usize, usize, usize) {
    if n < 2 * SAMPLE || n <= 4 * k {
        return (0, 0, 0);
    }
    let stride = n / SAMPLE;
    let len = n.div_ceil(stride);
    let rank = (2 * k * len).div_ceil(n) + 1;
    if rank >= len {
        return (0, 0, 0);
    }
    (stride, len, rank)
}

/// Candidates per dispatch: every scratch (`[chunk × n]` keys and scores,
/// `[chunk × LIST_CAP]` lists) within the device's binding limit and
/// [`SCRATCH_BYTES`].
fn chunk_candidates(ctx: &GpuContext, s: &SelectShape) -> Result<usize, GpuError> {
    let lim = ctx.limits();
    let max = lim
        .max_storage_buffer_binding_size
        .min(lim.max_buffer_size)
        .min(SCRATCH_BYTES);
    let row = (4 * s.tokens.max(1) as u64).max(8 * LIST_CAP as u64);
    let per = (max / row) as usize;
    if per == 0 {
        return Err(GpuError::Unsupported(format!(
            "{} history tokens: one candidate's {row}-byte scratch row exceeds the device limit of {max}",
            s.tokens
        )));
    }
    Ok(per.min(s.candidates))
}

/// A workgroup grid of `groups` workgroups, split over x and y within the
/// per-dimension limit: `(x, y)`.
fn grid(ctx: &GpuContext, groups: usize) -> Result<(u32, u32), GpuError> {
    let max_x = (ctx.limits().max_compute_workgroups_per_dimension as usize).max(1);
    let gx = groups.min(max_x);
    let gy = groups.div_ceil(gx.max(1));
    Ok((to_u32("workgroups", gx)?, to_u32("workgroups", gy)?))
}

/// Records the selection for `shape` on `bufs` into `req` (see the
/// [module docs](self)): `options.variant` picks the fused dispatch or the
/// unfused three steps; either writes `candidates × k` u32 indices to
/// `bufs.out`, which later dispatches of the request may read. Scratch
/// buffers are taken from the pool and kept by the request.
///
/// The scales on the device must be finite, zero or normal (the host entry
/// points check this; here they are not read back).
///
/// Fails on a shape the kernel does not take ([`SelectShape::validate`]),
/// a buffer smaller than the shape needs, or a device limit.
pub fn record_select_nearest(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    shape: SelectShape,
    options: SelectOptions,
    bufs: SelectBuffers<'_>,
) -> Result<(), GpuError> {
    shape.validate()?;
    let s = shape;
    let words = s.words();
    check_fits("select history", bufs.history, s.tokens * words, 4)?;
    check_fits("select scales", bufs.scales, s.tokens, 4)?;
    check_fits(
        "select candidates",
        bufs.candidates,
        s.candidates * words,
        4,
    )?;
    check_fits("select out", bufs.out, s.out_len(), 4)?;
    if s.candidates == 0 || s.k == 0 {
        return Ok(());
    }
    let chunk = chunk_candidates(ctx, &s)?;
    let n = s.tokens.max(1);
    let (stride, sample_len, sample_rank) = sample_plan(s.tokens, s.k);
    let params = |base: usize, bc: usize, gx: u32, fused: bool| -> Result<SelectParams, GpuError> {
        // The fused kernel keeps at most FUSED_MAX_RANK sample keys per
        // candidate; past that it runs without a sample.
        let (stride, sample_len, sample_rank) = if fused && sample_rank > FUSED_MAX_RANK {
            (0, 0, 0)
        } else {
            (stride, sample_len, sample_rank)
        };
        Ok(SelectParams {
            n: to_u32("tokens", s.tokens)?,
            k: to_u32("k", s.k)?,
            b: to_u32("candidates", bc)?,
            cand_base: to_u32("candidate", base)?,
            groups_x: gx,
            stride: to_u32("stride", stride)?,
            sample_len: to_u32("sample", sample_len)?,
            sample_rank: to_u32("rank", sample_rank)?,
            cap: to_u32("cap", LIST_CAP)?,
            pad: [0; 3],
        })
    };
    let consts = [
        ("WORDS", words as f64),
        ("DOT4", f64::from(u8::from(options.packed_dot))),
    ];
    let spec = |entry| {
        let mut spec = KernelSpec::new(V2_SELECT, entry).constants(&consts);
        // Every workgroup table is written before it is read.
        spec.zero_workgroup_memory = false;
        spec
    };

    if options.variant == Variant::Fused {
        if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu
            && s.tokens > CPU_FUSED_MAX_TOKENS
        {
            return Err(GpuError::Unsupported(format!(
                "{} history tokens: the fused selection on a CPU adapter (lavapipe ends an \
                 invocation's loops after 65,535 iterations) takes up to {CPU_FUSED_MAX_TOKENS}",
                s.tokens
            )));
        }
        let fused = ctx.kernel(&spec("select_fused"))?;
        let codes = ctx.kernel(&spec("select_codes"))?;
        let flags = ctx.storage((chunk * 4) as u64)?;
        let lists = ctx.storage((chunk * LIST_CAP * 8) as u64)?;
        let keys = ctx.storage((chunk * n * 4) as u64)?;
        let mut base = 0;
        while base < s.candidates {
            let bc = chunk.min(s.candidates - base);
            let (gx, gy) = grid(ctx, bc.div_ceil(FUSED_CANDIDATES))?;
            req.dispatch(
                &fused,
                &params(base, bc, gx, true)?,
                &[
                    bufs.history,
                    bufs.scales,
                    &flags,
                    bufs.out,
                    bufs.candidates,
                    &lists,
                ],
                [gx, gy, 1],
            )?;
            // The candidates whose lists could not take them (rare).
            let (gx, gy) = grid(ctx, bc)?;
            req.dispatch(
                &codes,
                &params(base, bc, gx, true)?,
                &[
                    bufs.history,
                    bufs.scales,
                    &keys,
                    bufs.out,
                    bufs.candidates,
                    &flags,
                ],
                [gx, gy, 1],
            )?;
            base += bc;
        }
        for b in [flags, lists, keys] {
            req.keep(b);
        }
        return Ok(());
    }

    // Unfused: every code as f32 once, then per chunk a GEMM and the top-k.
    let kernel = ctx.kernel(&spec("select_scores"))?;
    // Rows of `dimp` floats (the padded codes: zeros beyond `dim`).
    let dimp = 4 * words;
    let hist_f = ctx.storage((s.tokens * dimp).max(1) as u64 * 4)?;
    let cand_f = ctx.storage((s.candidates * dimp) as u64 * 4)?;
    let dq = ctx.kernel(&KernelSpec::new(INT8_TO_F32, "int8_to_f32"))?;
    for (src, dst, rows) in [
        (bufs.history, &hist_f, s.tokens),
        (bufs.candidates, &cand_f, s.candidates),
    ] {
        let w = rows * words;
        let p = WordsParams {
            words: to_u32("words", w)?,
            pad: [0; 3],
        };
        req.dispatch(&dq, &p, &[src, dst], flat_groups(ctx, w)?)?;
    }
    let scores = ctx.storage((chunk * n * 4) as u64)?;
    let keys = ctx.storage((chunk * n * 4) as u64)?;
    let mut base = 0;
    while base < s.candidates {
        let bc = chunk.min(s.candidates - base);
        if s.tokens > s.k {
            // scores[c, t] = ⟨code_c, code_t⟩ for this chunk's candidates.
            let g = GemmShape {
                a_off: base * dimp,
                ..GemmShape::dense(bc, s.tokens, dimp, true)
            };
            let o = GemmOptions {
                trans_b: true,
                ..GemmOptions::default()
            };
            record_gemm(ctx, req, g, o, &cand_f, &hist_f, &scores)?;
        }
        let (gx, gy) = grid(ctx, bc)?;
        req.dispatch(
            &kernel,
            &params(base, bc, gx, false)?,
            &[&scores, bufs.scales, &keys, bufs.out],
            [gx, gy, 1],
        )?;
        base += bc;
    }
    for b in [hist_f, cand_f, scores, keys] {
        req.keep(b);
    }
    Ok(())
}

/// Uploads `input`, runs the selection and reads back `candidates × k`
/// indices: what `transact_embed::select::select_nearest_i8` writes for the
/// same input.
///
/// Fails on a wrong length, an unsupported width, a non-finite or
/// subnormal scale ([`SelectInput::shape`]), or a device error.
pub fn select_nearest(
    ctx: &GpuContext,
    input: &SelectInput<'_>,
    options: SelectOptions,
) -> Result<Vec<u32>, GpuError> {
    Ok(select_nearest_timed(ctx, input, options, false)?.data)
}

/// [`select_nearest`], also returning the wall time of the submission and,
/// with `timing` on a device with timestamp queries, the GPU time.
pub fn select_nearest_timed(
    ctx: &GpuContext,
    input: &SelectInput<'_>,
    options: SelectOptions,
    timing: bool,
) -> Result<Readback<u32>, GpuError> {
    let shape = input.shape()?;
    if shape.out_len() == 0 {
        return Ok(Readback {
            data: Vec::new(),
            gpu_time: None,
            wall_time: std::time::Duration::ZERO,
        });
    }
    let mut req = ctx.request("v2 select").with_timing(timing);
    let up = SelectUpload::new(ctx, input)?;
    let out = ctx.storage(shape.out_len() as u64 * 4)?;
    record_select_nearest(ctx, &mut req, shape, options, up.buffers(&out))?;
    req.finish_read::<u32>(&out, shape.out_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pack_lowest_byte_first() {
        assert_eq!(pack_codes(&[1, -1, 2, -128], 4), vec![0x8002_ff01, 0, 0, 0]);
        // Two rows of 6 codes, each padded to four words.
        let two = pack_codes(&[-2, 3, 0, 0, 5, 6, 1, 1, 1, 1, 1, 1], 6);
        assert_eq!(
            two,
            vec![0x0000_03fe, 0x0605, 0, 0, 0x0101_0101, 0x0101, 0, 0]
        );
    }

    #[test]
    fn the_sample_is_skipped_on_short_histories() {
        assert_eq!(sample_plan(1_000, 10), (0, 0, 0));
        assert_eq!(sample_plan(4_000, 1_000), (0, 0, 0));
        let (stride, len, rank) = sample_plan(16_384, 96);
        assert_eq!((stride, len), (16, 1_024));
        assert_eq!(rank, 13);
        assert!((len - 1) * stride < 16_384);
    }

    #[test]
    fn bad_inputs_are_errors_before_any_device_work() {
        let ok = SelectInput {
            history: &[0; 8],
            scales: &[1.0; 2],
            candidates: &[0; 4],
            dim: 4,
            k: 1,
        };
        assert!(ok.shape().is_ok());
        let cases = [
            SelectInput { dim: 3, ..ok },
            SelectInput { dim: 0, ..ok },
            SelectInput {
                history: &[0; 7],
                ..ok
            },
            SelectInput {
                candidates: &[0; 5],
                ..ok
            },
            SelectInput {
                scales: &[1.0, f32::NAN],
                ..ok
            },
            SelectInput {
                scales: &[1.0, f32::INFINITY],
                ..ok
            },
            SelectInput {
                scales: &[1.0, 1e-40],
                ..ok
            },
            SelectInput { k: 70_000, ..ok },
            SelectInput {
                history: &[0; 520],
                scales: &[1.0; 2],
                candidates: &[0; 260],
                dim: 260,
                k: 1,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(c.shape().is_err(), "case {i} accepted");
        }
    }
}
