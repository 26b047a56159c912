// TransAct V2 nearest-neighbour selection: for each candidate, the `k`
// history tokens with the largest `scale_t · ⟨code_t, code_c⟩`, ties to the
// lower index, written in increasing index order (padded with NO_TOKEN when
// n < k). Same rule as `transact_embed::select::select_nearest_i8`.
//
// One workgroup of WG invocations per candidate:
//
// 1. Scores. FUSED: the int8 codes (four per u32, byte j of word w is code
//    4w + j) of the history — one copy per request, read by every
//    candidate — and of the candidate give an exact i32 dot product
//    (`dot4I8Packed` when DOT4, else unpacked with shifts); the score is
//    f32(dot) · scale_t, one multiply. Not FUSED: the dot products come
//    from a score matrix `[b × n]` (f32, exact integers) that a GEMM wrote.
//    Each score becomes an order-preserving u32 key (−0 and +0 share one
//    key), kept in the `keys` scratch row of the candidate.
// 2. A first threshold, when the host asks for one (`stride > 0`): the
//    `rank`-th largest key of every `stride`-th token (radix select as in
//    3). It is used only if at least `k` keys reach it, so it never changes
//    the result, only how many keys the exact pass looks at.
// 3. Exact radix select of the k-th largest key T among the keys at or
//    above the threshold: four passes of 8 bits, each a 256-bin histogram
//    (workgroup atomics) of the keys that match the digits chosen so far.
//    It also gives `need`, how many keys equal to T are taken.
// 4. Collect: every invocation owns a contiguous range of tokens; counts of
//    keys above T and equal to T, prefix-summed over invocations, place each
//    selected index at its rank in index order (ties: the first `need` in
//    index order). No sort needed.
//
// Bindings: 1 src (FUSED: history codes [n × WORDS] u32; else dot products
// [b × n] as f32 bit patterns), 2 scales [n] f32, 3 candidate codes
// [B × WORDS] u32, 4 keys scratch [b × n] u32, 5 out [B × k] u32. `b` is the
// number of candidates of this dispatch, from candidate `cand_base` on.

struct Params {
    n: u32,
    k: u32,
    b: u32,
    cand_base: u32,
    groups_x: u32,
    stride: u32,
    sample_len: u32,
    sample_rank: u32,
}

// Invocations per workgroup (must match the host).
const WG: u32 = 256u;
const NO_TOKEN: u32 = 0xffffffffu;
// Most u32 words of one code row (dim ≤ 256).
const MAX_WORDS: u32 = 64u;

// u32 words per code row, dim / 4.
override WORDS: u32 = 8u;
// Compute the dot products here (else read them from `src`).
override FUSED: bool = true;
// Use dot4I8Packed (else shifts and an i32 vector dot).
override DOT4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read> cands: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> lane_gt: array<u32, WG>;
var<workgroup> lane_eq: array<u32, WG>;
var<workgroup> state: array<u32, 4>;

var<private> cw: array<u32, MAX_WORDS>;
var<private> cv: array<vec4<i32>, MAX_WORDS>;

// The four signed bytes of `w`, lowest first.
fn unpack_i8(w: u32) -> vec4<i32> {
    return vec4<i32>(
        bitcast<i32>(w << 24u) >> 24u,
        bitcast<i32>(w << 16u) >> 24u,
        bitcast<i32>(w << 8u) >> 24u,
        bitcast<i32>(w) >> 24u,
    );
}

// Order-preserving key of a finite (or infinite) score: larger score,
// larger key; −0 maps to the key of +0. Integer operations only, so no
// float rule of the compiler can move a value.
fn key_of(s: f32) -> u32 {
    let bits = bitcast<u32>(s);
    var key = bits | 0x80000000u;
    if ((bits & 0x80000000u) != 0u) {
        key = ~bits;
    }
    if (key == 0x7fffffffu) {
        key = 0x80000000u;
    }
    return key;
}

fn score(local: u32, t: u32) -> f32 {
    if (FUSED) {
        let base = t * WORDS;
        var acc = 0i;
        for (var j = 0u; j < WORDS; j++) {
            if (DOT4) {
                acc += dot4I8Packed(src[base + j], cw[j]);
            } else {
                acc += dot(unpack_i8(src[base + j]), cv[j]);
            }
        }
        return f32(acc) * scales[t];
    }
    return bitcast<f32>(src[local * p.n + t]) * scales[t];
}

// The `rank`-th largest (1-based) of the keys `keys[row + i·stride]`,
// i < len, that are at least `floor`, and how many keys equal to it the
// rank reaches into: (T, rank − #keys above T). The caller guarantees that
// at least `rank` keys qualify.
fn radix_select(row: u32, len: u32, stride: u32, rank: u32, floor: u32, lid: u32) -> vec2<u32> {
    var prefix = 0u;
    var mask = 0u;
    var remaining = rank;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        for (var i = lid; i < len; i += WG) {
            let key = keys[row + i * stride];
            if (key >= floor && (key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var acc = 0u;
            var chosen = 0u;
            var rem = remaining;
            for (var bin = 255i; bin >= 0; bin--) {
                let h = atomicLoad(&hist[bin]);
                if (acc + h >= remaining) {
                    chosen = u32(bin);
                    rem = remaining - acc;
                    break;
                }
                acc += h;
            }
            state[0] = chosen;
            state[1] = rem;
        }
        let chosen = workgroupUniformLoad(&state[0]);
        remaining = workgroupUniformLoad(&state[1]);
        prefix |= chosen << shift;
        mask |= 0xffu << shift;
    }
    return vec2<u32>(prefix, remaining);
}

// Sum over the workgroup of each invocation's `v` (every invocation gets it).
fn workgroup_sum(v: u32, lid: u32) -> u32 {
    lane_gt[lid] = v;
    workgroupBarrier();
    if (lid == 0u) {
        var s = 0u;
        for (var i = 0u; i < WG; i++) {
            s += lane_gt[i];
        }
        state[2] = s;
    }
    return workgroupUniformLoad(&state[2]);
}

@compute @workgroup_size(256)
fn select_nearest(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let local = wid.x + wid.y * p.groups_x;
    if (local >= p.b) {
        return;
    }
    let c = p.cand_base + local;
    let n = p.n;
    let k = p.k;
    let orow = c * k;
    if (n <= k) {
        // Every token, then padding.
        for (var i = lid; i < k; i += WG) {
            out[orow + i] = select(NO_TOKEN, i, i < n);
        }
        return;
    }
    let row = local * n;

    // 1. Keys.
    if (FUSED) {
        for (var j = 0u; j < WORDS; j++) {
            let w = cands[c * WORDS + j];
            cw[j] = w;
            cv[j] = unpack_i8(w);
        }
    }
    for (var t = lid; t < n; t += WG) {
        keys[row + t] = key_of(score(local, t));
    }
    storageBarrier();

    // 2. A first threshold from a sample, kept only if k keys reach it.
    var floor = 0u;
    if (p.stride > 0u) {
        let guess = radix_select(row, p.sample_len, p.stride, p.sample_rank, 0u, lid).x;
        var reach = 0u;
        for (var t = lid; t < n; t += WG) {
            reach += u32(keys[row + t] >= guess);
        }
        let total = workgroup_sum(reach, lid);
        if (total >= k) {
            floor = guess;
        }
    }

    // 3. The k-th largest key and how many of its ties are taken.
    let sel = radix_select(row, n, 1u, k, floor, lid);
    let thr = sel.x;
    let need = sel.y;

    // 4. Collect in index order over contiguous ranges.
    let chunk = (n + WG - 1u) / WG;
    let start = min(lid * chunk, n);
    let end = min(start + chunk, n);
    var gt = 0u;
    var eq = 0u;
    for (var t = start; t < end; t++) {
        let key = keys[row + t];
        gt += u32(key > thr);
        eq += u32(key == thr);
    }
    workgroupBarrier();
    lane_gt[lid] = gt;
    lane_eq[lid] = eq;
    workgroupBarrier();
    if (lid == 0u) {
        var g = 0u;
        var e = 0u;
        for (var i = 0u; i < WG; i++) {
            let a = lane_gt[i];
            let b = lane_eq[i];
            lane_gt[i] = g;
            lane_eq[i] = e;
            g += a;
            e += b;
        }
    }
    workgroupBarrier();
    var g = lane_gt[lid];
    var e = lane_eq[lid];
    for (var t = start; t < end; t++) {
        let key = keys[row + t];
        if (key > thr) {
            out[orow + g + min(e, need)] = t;
            g += 1u;
        } else if (key == thr) {
            if (e < need) {
                out[orow + g + e] = t;
            }
            e += 1u;
        }
    }
}
