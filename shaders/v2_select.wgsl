// TransAct V2 nearest-neighbour selection: for each candidate, the `k`
// history tokens with the largest `scale_t · ⟨code_t, code_c⟩`, ties to the
// lower index, written in increasing index order (padded with NO_TOKEN when
// n < k). Same rule as `transact_embed::select::select_nearest_i8`. Scores
// become order-preserving u32 keys (−0 and +0 share one key); "the k-th
// largest key T and how many of its ties are taken" decides the set.
//
// Three entry points.
//
// `select_fused` (the work of the fused path, one dispatch): FWG candidates
// per workgroup, one per invocation. The invocations walk the history
// together, token by token, so every history read is the same address for
// the whole workgroup (one load, shared; the user's history is uploaded
// once per request and read by every workgroup); each invocation dots the
// token's int8 codes (four per u32, byte j of word w is code 4w + j, rows
// zero-padded to whole vec4s) with its own candidate's codes held in
// registers — exact i32 arithmetic, `dot4I8Packed` when DOT4, else shifts
// and an i32 vector dot — and multiplies the f32 dot by the token's scale
// (one multiply).
//   1. A threshold from a sample (every `stride`-th token, when the host
//      asks for one): the `rank`-th largest sample key, kept in a small
//      sorted list per invocation.
//   2. One pass over the history appends every token whose key reaches the
//      threshold, as (key, index) in index order, to the invocation's list
//      (`cap` entries in the `lists` scratch).
//   3. If at least k and at most `cap` tokens reached it, a radix select
//      over the list (four 8-bit passes, a 256-bin histogram per
//      invocation) gives T and `need`, and a walk over the list writes the
//      selected indices in index order.
//   4. Otherwise (a bad sample, or ties past `cap`) the candidate is
//      flagged, for `select_codes`.
//
// `select_codes` (the fused path's second dispatch, empty unless a
// candidate was flagged): one workgroup of CWG invocations per candidate;
// a flagged one computes all its keys into its `keys` row and runs the
// cooperative select below.
//
// `select_scores` (the unfused path's top-k): one workgroup of TWG
// invocations per candidate over a score matrix a GEMM wrote (dot products
// as f32, exact integers): keys into the `keys` scratch row, then the
// cooperative select: an optional threshold from a sample (radix select of
// the sample's keys; kept only if k keys reach it, so it never changes the
// result), the exact radix select among the keys at or above it (workgroup
// atomics), and a collect in which every invocation owns a contiguous range
// of tokens and prefix sums of the counts above and equal to T place each
// selected index at its rank in index order. No sort anywhere.
//
// lavapipe (Mesa 22.3) ends every loop of an invocation once the
// invocation has run 65,535 loop iterations in all, so loops that scale
// with n either take eight or four elements per iteration or are split
// over 256 invocations; the host bounds n on CPU adapters accordingly.
//
// Bindings: 1 src, read as vec4<u32> (history codes [n × WORDS] u32, or
// for `select_scores` the dot products [b × n] as f32 bit patterns; whole
// vec4s), 2 scales [n] f32, 3 keys u32 (`select_fused`: flags [b];
// otherwise keys scratch [b × n]), 4 out [B × k] u32, 5 candidate codes
// [B × WORDS] u32 (not `select_scores`), 6 `select_fused`: lists scratch
// [b × cap] (key, index) u32 pairs; `select_codes`: the flags. `b` is the
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
    cap: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

// Candidates (invocations) per workgroup of `select_fused` (must match the
// host): lavapipe's SIMD width.
const FWG: u32 = 8u;
// Invocations per workgroup of `select_scores` (must match the host).
const TWG: u32 = 256u;
// Invocations per workgroup of `select_codes`: few, since most of its
// workgroups only read a flag and return.
const CWG: u32 = 64u;
// Largest sample rank `select_fused` keeps per invocation.
const RMAX: u32 = 64u;
const NO_TOKEN: u32 = 0xffffffffu;

// u32 words per code row: dim / 4 rounded up to whole vec4s (rows are
// zero-padded), at most 32 (dim ≤ 128).
override WORDS: u32 = 8u;
// Use dot4I8Packed (else shifts and an i32 vector dot).
override DOT4: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> keys: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(0) @binding(5) var<storage, read> cands: array<u32>;
@group(0) @binding(6) var<storage, read_write> lists: array<u32>;

// Cooperative select.
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> lane_gt: array<u32, TWG>;
var<workgroup> lane_eq: array<u32, TWG>;
var<workgroup> state: array<u32, 4>;
// Per-invocation select of `select_fused`.
var<workgroup> lhist: array<u32, 2048>; // FWG × 256
var<workgroup> top: array<u32, 512>; // FWG × RMAX

var<private> cq: array<vec4<u32>, 8>;

// Word i of `src`.
fn word(i: u32) -> u32 {
    return src[i >> 2u][i & 3u];
}

// The four signed bytes of `w`, lowest first.
fn unpack_i8(w: u32) -> vec4<i32> {
    return vec4<i32>(
        bitcast<i32>(w << 24u) >> 24u,
        bitcast<i32>(w << 16u) >> 24u,
        bitcast<i32>(w << 8u) >> 24u,
        bitcast<i32>(w) >> 24u,
    );
}

// Order-preserving key of a non-NaN score: larger score, larger key (never
// 0); −0 maps to the key of +0. Integer operations only, so no float rule
// of the compiler can move a value.
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

// Key of token t against the candidate in this invocation's registers.
fn own_key(t: u32) -> u32 {
    let b4 = t * (WORDS / 4u);
    var acc = 0i;
    for (var q = 0u; q < WORDS / 4u; q++) {
        let h = src[b4 + q];
        let c = cq[q];
        if (DOT4) {
            acc += dot4I8Packed(h.x, c.x) + dot4I8Packed(h.y, c.y)
                + dot4I8Packed(h.z, c.z) + dot4I8Packed(h.w, c.w);
        } else {
            acc += dot(unpack_i8(h.x), unpack_i8(c.x)) + dot(unpack_i8(h.y), unpack_i8(c.y))
                + dot(unpack_i8(h.z), unpack_i8(c.z)) + dot(unpack_i8(h.w), unpack_i8(c.w));
        }
    }
    return key_of(f32(acc) * scales[t]);
}

// Key of token t against candidate c, codes read from memory.
fn code_key(t: u32, c: u32) -> u32 {
    let b4 = t * (WORDS / 4u);
    var acc = 0i;
    for (var q = 0u; q < WORDS / 4u; q++) {
        let h = src[b4 + q];
        let w = c * WORDS + 4u * q;
        acc += dot4I8Packed(h.x, cands[w]) + dot4I8Packed(h.y, cands[w + 1u])
            + dot4I8Packed(h.z, cands[w + 2u]) + dot4I8Packed(h.w, cands[w + 3u]);
    }
    return key_of(f32(acc) * scales[t]);
}

// ---- Cooperative select (all `lanes` invocations on one candidate) ----

// One key into the histogram of the current digit, if it qualifies.
fn count_key(key: u32, floor: u32, mask: u32, prefix: u32, shift: u32) {
    if (key >= floor && (key & mask) == prefix) {
        atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
    }
}

// Counts of keys above and equal to `thr`, accumulated.
fn tally(key: u32, thr: u32, gt: ptr<function, u32>, eq: ptr<function, u32>) {
    *gt += u32(key > thr);
    *eq += u32(key == thr);
}

// Writes token t if selected, at its rank in index order (`g` keys above
// `thr` and `e` equal to it before it).
fn place(key: u32, t: u32, thr: u32, need: u32, orow: u32, g: ptr<function, u32>, e: ptr<function, u32>) {
    if (key > thr) {
        out[orow + *g + min(*e, need)] = t;
        *g += 1u;
    } else if (key == thr) {
        if (*e < need) {
            out[orow + *g + *e] = t;
        }
        *e += 1u;
    }
}

// The `rank`-th largest (1-based) of the keys `keys[row + i·stride]`,
// i < len, that are at least `floor`, and how many keys equal to it the
// rank reaches into: (T, rank − #keys above T). The caller guarantees that
// at least `rank` keys qualify.
fn radix_select(row: u32, len: u32, stride: u32, rank: u32, floor: u32, lid: u32, lanes: u32) -> vec2<u32> {
    var prefix = 0u;
    var mask = 0u;
    var remaining = rank;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        for (var b = lid; b < 256u; b += lanes) {
            atomicStore(&hist[b], 0u);
        }
        workgroupBarrier();
        var i = lid;
        for (; i + 3u * lanes < len; i += 4u * lanes) {
            count_key(keys[row + i * stride], floor, mask, prefix, shift);
            count_key(keys[row + (i + lanes) * stride], floor, mask, prefix, shift);
            count_key(keys[row + (i + 2u * lanes) * stride], floor, mask, prefix, shift);
            count_key(keys[row + (i + 3u * lanes) * stride], floor, mask, prefix, shift);
        }
        for (; i < len; i += lanes) {
            count_key(keys[row + i * stride], floor, mask, prefix, shift);
        }
        workgroupBarrier();
        if (lid == 0u) {
            // No `break` (a data-dependent exit from a loop in divergent
            // code selected wrong values on lavapipe).
            var acc = 0u;
            var chosen = 0u;
            var rem = remaining;
            var found = false;
            for (var bin = 255i; bin >= 0; bin--) {
                let h = atomicLoad(&hist[bin]);
                if (!found && acc + h >= remaining) {
                    chosen = u32(bin);
                    rem = remaining - acc;
                    found = true;
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
fn workgroup_sum(v: u32, lid: u32, lanes: u32) -> u32 {
    lane_gt[lid] = v;
    workgroupBarrier();
    if (lid == 0u) {
        var s = 0u;
        for (var i = 0u; i < lanes; i++) {
            s += lane_gt[i];
        }
        state[2] = s;
    }
    return workgroupUniformLoad(&state[2]);
}

// The selection of one candidate from its keys `keys[row .. row + n]`
// (n > k), written to `out[orow ..]`; with `sampled`, first a threshold
// from every `stride`-th key.
fn cooperative_select(row: u32, orow: u32, sampled: bool, lid: u32, lanes: u32) {
    let n = p.n;
    let k = p.k;
    var floor = 0u;
    if (sampled && p.stride > 0u) {
        let guess = radix_select(row, p.sample_len, p.stride, p.sample_rank, 0u, lid, lanes).x;
        var reach = 0u;
        for (var t = lid; t < n; t += lanes) {
            reach += u32(keys[row + t] >= guess);
        }
        let total = workgroup_sum(reach, lid, lanes);
        if (total >= k) {
            floor = guess;
        }
    }
    let sel = radix_select(row, n, 1u, k, floor, lid, lanes);
    let thr = sel.x;
    let need = sel.y;

    // Collect in index order over contiguous ranges.
    let chunk = (n + lanes - 1u) / lanes;
    let start = min(lid * chunk, n);
    let end = min(start + chunk, n);
    var gt = 0u;
    var eq = 0u;
    var t = start;
    for (; t + 4u <= end; t += 4u) {
        tally(keys[row + t], thr, &gt, &eq);
        tally(keys[row + t + 1u], thr, &gt, &eq);
        tally(keys[row + t + 2u], thr, &gt, &eq);
        tally(keys[row + t + 3u], thr, &gt, &eq);
    }
    for (; t < end; t++) {
        tally(keys[row + t], thr, &gt, &eq);
    }
    workgroupBarrier();
    lane_gt[lid] = gt;
    lane_eq[lid] = eq;
    workgroupBarrier();
    if (lid == 0u) {
        var g = 0u;
        var e = 0u;
        for (var i = 0u; i < lanes; i++) {
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
    t = start;
    for (; t + 4u <= end; t += 4u) {
        place(keys[row + t], t, thr, need, orow, &g, &e);
        place(keys[row + t + 1u], t + 1u, thr, need, orow, &g, &e);
        place(keys[row + t + 2u], t + 2u, thr, need, orow, &g, &e);
        place(keys[row + t + 3u], t + 3u, thr, need, orow, &g, &e);
    }
    for (; t < end; t++) {
        place(keys[row + t], t, thr, need, orow, &g, &e);
    }
    workgroupBarrier();
}

// Every token, then padding (n ≤ k).
fn take_all(orow: u32) {
    for (var i = 0u; i < p.k; i++) {
        out[orow + i] = select(NO_TOKEN, i, i < p.n);
    }
}

@compute @workgroup_size(256)
fn select_scores(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let local = wid.x + wid.y * p.groups_x;
    if (local >= p.b) {
        return;
    }
    let c = p.cand_base + local;
    let n = p.n;
    if (n <= p.k) {
        if (lid == 0u) {
            take_all(c * p.k);
        }
        return;
    }
    let row = local * n;
    for (var t = lid; t < n; t += TWG) {
        keys[row + t] = key_of(bitcast<f32>(word(row + t)) * scales[t]);
    }
    storageBarrier();
    cooperative_select(row, c * p.k, true, lid, TWG);
}

// ---- Per-invocation select of `select_fused` ----

// The `rank`-th largest of the `len` keys of list `lrow`, and how many of
// its ties the rank reaches into (as `radix_select`), with this
// invocation's own histogram.
fn list_select(lrow: u32, len: u32, rank: u32, lid: u32) -> vec2<u32> {
    let hb = lid * 256u;
    var prefix = 0u;
    var mask = 0u;
    var remaining = rank;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        for (var b = 0u; b < 256u; b++) {
            lhist[hb + b] = 0u;
        }
        for (var i = 0u; i < len; i++) {
            let key = lists[2u * (lrow + i)];
            if ((key & mask) == prefix) {
                let b = hb + ((key >> shift) & 0xffu);
                lhist[b] = lhist[b] + 1u;
            }
        }
        // No `break`: see radix_select.
        var acc = 0u;
        var chosen = 0u;
        var rem = remaining;
        var found = false;
        for (var bin = 255i; bin >= 0; bin--) {
            let h = lhist[hb + u32(bin)];
            if (!found && acc + h >= remaining) {
                chosen = u32(bin);
                rem = remaining - acc;
                found = true;
            }
            acc += h;
        }
        remaining = rem;
        prefix |= chosen << shift;
        mask |= 0xffu << shift;
    }
    return vec2<u32>(prefix, remaining);
}

// Writes the selected entries of list `lrow` (keys above `thr`, and the
// first `need` equal to it) to `out[orow ..]`, in list (index) order.
fn list_collect(lrow: u32, len: u32, thr: u32, need: u32, orow: u32) {
    var pos = 0u;
    var ties = 0u;
    for (var i = 0u; i < len; i++) {
        let key = lists[2u * (lrow + i)];
        if (key > thr) {
            out[orow + pos] = lists[2u * (lrow + i) + 1u];
            pos += 1u;
        } else if (key == thr) {
            if (ties < need) {
                out[orow + pos] = lists[2u * (lrow + i) + 1u];
                pos += 1u;
            }
            ties += 1u;
        }
    }
}

// Token t into this invocation's list if its key reaches `floor`.
fn visit(t: u32, floor: u32, live: bool, lrow: u32, len: ptr<function, u32>) {
    let key = own_key(t);
    if (key >= floor) {
        if (live && *len < p.cap) {
            lists[2u * (lrow + *len)] = key;
            lists[2u * (lrow + *len) + 1u] = t;
        }
        *len += 1u;
    }
}

@compute @workgroup_size(8)
fn select_fused(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * p.groups_x;
    if (g * FWG >= p.b) {
        return;
    }
    let n = p.n;
    let k = p.k;
    let local = g * FWG + lid;
    let live = local < p.b;
    // An idle invocation (past the last candidate) shadows the last one.
    let c = p.cand_base + min(local, p.b - 1u);
    if (n <= k) {
        if (live) {
            take_all(c * k);
            keys[local] = 0u;
        }
        return;
    }
    for (var j = 0u; j < WORDS; j++) {
        let w = cands[c * WORDS + j];
        cq[j >> 2u][j & 3u] = w;
    }

    // 1. Threshold: the rank-th largest key of the sample.
    var floor = 0u;
    if (p.stride > 0u) {
        let r = min(p.sample_rank, RMAX);
        let tb = lid * RMAX;
        var filled = 0u;
        var cut = 0u;
        for (var i = 0u; i < p.sample_len; i++) {
            let key = own_key(i * p.stride);
            if (filled < r || key > cut) {
                var j = min(filled, r - 1u);
                filled = min(filled + 1u, r);
                while (j > 0u && top[tb + j - 1u] < key) {
                    top[tb + j] = top[tb + j - 1u];
                    j -= 1u;
                }
                top[tb + j] = key;
                if (filled == r) {
                    cut = top[tb + r - 1u];
                }
            }
        }
        if (filled == r) {
            floor = cut;
        }
    }

    // 2. Every token at or above the threshold, in index order.
    let lrow = min(local, p.b - 1u) * p.cap;
    var len = 0u;
    var t = 0u;
    for (; t + 8u <= n; t += 8u) {
        visit(t, floor, live, lrow, &len);
        visit(t + 1u, floor, live, lrow, &len);
        visit(t + 2u, floor, live, lrow, &len);
        visit(t + 3u, floor, live, lrow, &len);
        visit(t + 4u, floor, live, lrow, &len);
        visit(t + 5u, floor, live, lrow, &len);
        visit(t + 6u, floor, live, lrow, &len);
        visit(t + 7u, floor, live, lrow, &len);
    }
    for (; t < n; t++) {
        visit(t, floor, live, lrow, &len);
    }

    // 3. Exact select over the list, or the cooperative way below.
    let ok = len >= k && len <= p.cap;
    if (live && ok) {
        let sel = list_select(lrow, len, k, lid);
        list_collect(lrow, len, sel.x, sel.y, c * k);
    }
    // 4. Flag a candidate the list could not take for `select_codes`.
    if (live) {
        keys[local] = u32(!ok);
    }
}

// The candidates `select_fused` flagged (binding 6 holds the flags), one
// workgroup of CWG invocations each: keys of every token into the `keys`
// row, then the cooperative select over all of them. A workgroup whose
// candidate is not flagged returns at once.
@compute @workgroup_size(64)
fn select_codes(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let local = wid.x + wid.y * p.groups_x;
    if (local >= p.b) {
        return;
    }
    if (lid == 0u) {
        state[3] = lists[local];
    }
    if (workgroupUniformLoad(&state[3]) == 0u) {
        return;
    }
    let c = p.cand_base + local;
    let n = p.n;
    let row = local * n;
    for (var t = lid; t < n; t += CWG) {
        keys[row + t] = code_key(t, c);
    }
    storageBarrier();
    cooperative_select(row, c * p.k, false, lid, CWG);
}
