// Tiled matrix product C = A · B (or A · Bᵀ), optionally C += …, optionally
// ReLU, for any M, N, K.
//
// The host prepends `alias st = f32;` (or `enable f16; alias st = f16;`):
// buffers hold `st`, arithmetic is f32.
//
// A is [M × K] (row stride lda), B is [K × N] (row stride ldb) or, with
// TRANS_B, [N × K]; C is [M × N] (row stride ldc). Offsets are in elements.
// Each 8 × 8 workgroup computes a 32 × 32 block of C; each thread a 4 × 4
// sub-block kept in registers. K advances in slices of 16 staged in
// workgroup memory; loads outside the matrices read as zero and stores
// outside C are skipped, so no shape has to be a multiple of a tile.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// B is stored [N × K] (multiply by its transpose).
override TRANS_B: bool = false;
// Apply max(0, ·) to the result.
override RELU: bool = false;
// Add the result to what C holds (before the ReLU).
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<st>;
@group(0) @binding(2) var<storage, read> b: array<st>;
@group(0) @binding(3) var<storage, read_write> c: array<st>;

const BM: u32 = 32u;
const BN: u32 = 32u;
const BK: u32 = 16u;
const THREADS: u32 = 64u;

// A slice stored k-major ([BK][BM]) and B slice [BK][BN], so that the inner
// loop reads four consecutive values of each.
var<workgroup> a_tile: array<f32, 512>;
var<workgroup> b_tile: array<f32, 512>;

@compute @workgroup_size(8, 8, 1)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 8u + lid.x;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 8u; i++) {
            let e = tid + i * THREADS;
            // Consecutive threads read consecutive k of one row of A.
            let r = e / BK;
            let kk = e % BK;
            let gr = row0 + r;
            let gk = k0 + kk;
            var v = 0.0;
            if (gr < p.m && gk < p.k) {
                v = f32(a[p.a_off + gr * p.lda + gk]);
            }
            a_tile[kk * BM + r] = v;
        }
        for (var i = 0u; i < 8u; i++) {
            let e = tid + i * THREADS;
            var kk: u32;
            var cc: u32;
            if (TRANS_B) {
                cc = e / BK;
                kk = e % BK;
            } else {
                kk = e / BN;
                cc = e % BN;
            }
            let gk = k0 + kk;
            let gc = col0 + cc;
            var v = 0.0;
            if (gk < p.k && gc < p.n) {
                if (TRANS_B) {
                    v = f32(b[p.b_off + gc * p.ldb + gk]);
                } else {
                    v = f32(b[p.b_off + gk * p.ldb + gc]);
                }
            }
            b_tile[kk * BN + cc] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ab = kk * BM + lid.y * 4u;
            let bb = kk * BN + lid.x * 4u;
            let av = vec4<f32>(a_tile[ab], a_tile[ab + 1u], a_tile[ab + 2u], a_tile[ab + 3u]);
            let bv = vec4<f32>(b_tile[bb], b_tile[bb + 1u], b_tile[bb + 2u], b_tile[bb + 3u]);
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + lid.y * 4u + i;
        if (gr >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + lid.x * 4u + j;
            if (gc < p.n) {
                let idx = p.c_off + gr * p.ldc + gc;
                var v = acc[i][j];
                if (ACCUMULATE) {
                    v += f32(c[idx]);
                }
                if (RELU) {
                    v = max(v, 0.0);
                }
                c[idx] = st(v);
            }
        }
    }
}

// The naive product, kept as the baseline the tiled kernel is measured
// against (`transact bench kernels`): one invocation per element of C, a
// plain loop over K reading A and B from storage. Same parameters, options
// and results as `gemm`; dispatch ceil(N / 64) × M workgroups.
@compute @workgroup_size(64, 1, 1)
fn gemm_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= p.m || col >= p.n) {
        return;
    }
    var acc = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        let av = f32(a[p.a_off + row * p.lda + kk]);
        var bv: f32;
        if (TRANS_B) {
            bv = f32(b[p.b_off + col * p.ldb + kk]);
        } else {
            bv = f32(b[p.b_off + kk * p.ldb + col]);
        }
        acc += av * bv;
    }
    let ci = p.c_off + row * p.ldc + col;
    if (ACCUMULATE) {
        acc += f32(c[ci]);
    }
    if (RELU) {
        acc = max(acc, 0.0);
    }
    c[ci] = st(acc);
}
