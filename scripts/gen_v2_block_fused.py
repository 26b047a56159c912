"""Generates shaders/v2_block_fused.wgsl (the fused V2 block kernel).

    python scripts/gen_v2_block_fused.py > shaders/v2_block_fused.wgsl

Mesa's lavapipe neither unrolls loops nor keeps indexed private arrays in
registers, so the kernel holds each row in 16 named vec4 variables and spells
out the loops over them and over the 3 rows each invocation owns. This script
writes that repetition; edit it (and v2_block_fused.header.wgsl), not the
generated shader.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))

MD4 = 16
RQ = 3
R = range(RQ)
C = range(MD4)
o = []
w = o.append

def fmarow(acc, src, w4):
    # acc = acc + src.x*w0 + src.y*w1 + src.z*w2 + src.w*w3
    return (f"{acc} = fma(vec4<f32>({src}.x), {w4[0]}, fma(vec4<f32>({src}.y), {w4[1]}, "
            f"fma(vec4<f32>({src}.z), {w4[2]}, fma(vec4<f32>({src}.w), {w4[3]}, {acc}))));")

HEADER = open(os.path.join(HERE, 'v2_block_fused.header.wgsl')).read()
w(HEADER)
w("@compute @workgroup_size(64, 1, 1)")
w("fn v2_block(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {")
w("""    let d4 = D / 4u;
    let b = wid.y;
    let tw = wid.x * ROWS;
    let n = max(lens[b], 1u);
    let base = b * p.seq;
    if (tw >= n) {
        // No valid row in this workgroup (uniform): zeros only.
        for (var rr = 0u; rr < RQ; rr++) {
            let t = tw + rr * LANES + lid.x;
            if (t < p.seq) {
                for (var c = 0u; c < d4; c++) {
                    y[(base + t) * d4 + c] = vec4<st>(0.0);
                }
            }
        }
        return;
    }
    var kend = n;
    if (CAUSAL) {
        kend = min(n, tw + ROWS);
    }
""")
w("    // Rows (dead rows read row n - 1), key limits, input rows x{rr}_{c}.")
for r in R:
    w(f"    let t{r} = tw + {r}u * LANES + lid.x;")
    w(f"    let row{r} = base + min(t{r}, n - 1u);")
    w(f"    var lim{r} = n;")
    w(f"    if (CAUSAL) {{ lim{r} = min(n, t{r} + 1u); }}")
    w(f"    var m{r} = NEG;")
    w(f"    var l{r} = 0.0;")
for r in R:
    for c in C:
        w(f"    var x{r}_{c} = vec4<f32>(0.0);")
for c in C:
    w(f"    if ({c}u < d4) {{ " + " ".join(f"x{r}_{c} = vec4<f32>(x[row{r} * d4 + {c}u]);" for r in R) + " }")
w("""
    // Phase 1: q = x_t A (the score scale is folded into A), one output
    // vec4 c at a time into qt, then into registers q{rr}_{c}.
    var qt: array<array<vec4<f32>, MAX_D4>, RQ>;
    for (var c = 0u; c < d4; c++) {""")
for r in R:
    w(f"        var s{r} = vec4<f32>(0.0);")
for k in C:
    w(f"        if ({k}u < d4) {{")
    w(f"            let r0 = {4*k}u * d4 + c;")
    w(f"            let w0 = wu[r0]; let w1 = wu[r0 + d4]; let w2 = wu[r0 + 2u * d4]; let w3 = wu[r0 + 3u * d4];")
    for r in R:
        w("            " + fmarow(f"s{r}", f"x{r}_{k}", ["w0", "w1", "w2", "w3"]))
    w("        }")
for r in R:
    w(f"        qt[{r}][c] = s{r};")
w("    }")
for r in R:
    for c in C:
        w(f"    let q{r}_{c} = qt[{r}][{c}];")
for r in R:
    for c in C:
        w(f"    var a{r}_{c} = vec4<f32>(0.0);")
w("""
    // Phase 2: per-key online softmax over key tiles; keys and values are
    // both the input rows; each key row is read once into k{c}. Row block
    // rr (rows tw + 64·rr + i) is live if its first row is below n; live
    // blocks need keys below e{rr} (its last row + 1 with CAUSAL, else
    // kend), so a key j is needed by the live blocks rr with j < e{rr}:
    // a suffix of the live blocks, one loop per such set.
    let nl = min(RQ, (n - tw + LANES - 1u) / LANES);
    var e0 = kend;
    var e1 = kend;
    let e2 = kend;
    if (CAUSAL) {
        e0 = min(kend, tw + LANES);
        e1 = min(kend, tw + 2u * LANES);
    }
    for (var j0 = 0u; j0 < kend; j0 += KT) {
        let cnt = min(KT, kend - j0);
        for (var e = lid.x; e < cnt * d4; e += LANES) {
            k_tile[e] = vec4<f32>(x[(base + j0) * d4 + e]);
        }
        workgroupBarrier();
        // Key segments by the set of row blocks that need them (see the
        // header); a loop per set, empty unless that set applies.
""")
for (L, lo) in [(3, 0), (3, 1), (3, 2), (2, 0), (2, 1), (1, 0)]:
    S = list(range(lo, L))
    st = "0u" if lo == 0 else f"e{lo-1}"
    w(f"        // Row blocks {S} (of {L} live).")
    w(f"        for (var j = max({st}, j0); j < select(0u, min(e{lo}, j0 + cnt), nl == {L}u); j++) {{")
    w(f"            let kb = (j - j0) * d4;")
    for c in C:
        w(f"            let k{c} = select(vec4<f32>(0.0), k_tile[kb + {c}u], {c}u < d4);")
    for r in S:
        expr = "vec4<f32>(0.0)"
        for c in reversed(C):
            expr = f"fma(q{r}_{c}, k{c}, {expr})"
        w(f"            let d{r} = {expr};")
    for r in S:
        w(f"            {{")
        w(f"                let s = hsum(d{r});")
        w(f"                let valid = j < lim{r};")
        w(f"                let mn = select(m{r}, max(m{r}, s), valid);")
        w(f"                let sc = vec4<f32>(exp(m{r} - mn));")
        w(f"                let pj = select(0.0, exp(s - mn), valid);")
        w(f"                l{r} = fma(l{r}, sc.x, pj);")
        w(f"                m{r} = mn;")
        w(f"                let pv = vec4<f32>(pj);")
        for c in C:
            w(f"                if ({c}u < d4) {{ a{r}_{c} = fma(pv, k{c}, a{r}_{c} * sc); }}")
        w(f"            }}")
    w("        }")
w("""        workgroupBarrier();
    }

    // Phase 3: x1 = LN(x + (a / l) Wv), one output vec4 c at a time.""")
for r in R:
    w(f"    let inv{r} = vec4<f32>(1.0 / l{r});")
    for c in C:
        w(f"    a{r}_{c} *= inv{r};")
w("""    let wv = D * d4;
    var ht: array<array<vec4<f32>, MAX_D4>, RQ>;
    for (var c = 0u; c < d4; c++) {""")
for r in R:
    w(f"        var s{r} = vec4<f32>(x[row{r} * d4 + c]);")
for k in C:
    w(f"        if ({k}u < d4) {{")
    w(f"            let r0 = wv + {4*k}u * d4 + c;")
    w(f"            let w0 = wu[r0]; let w1 = wu[r0 + d4]; let w2 = wu[r0 + 2u * d4]; let w3 = wu[r0 + 3u * d4];")
    for r in R:
        w("            " + fmarow(f"s{r}", f"a{r}_{k}", ["w0", "w1", "w2", "w3"]))
    w("        }")
for r in R:
    w(f"        ht[{r}][c] = s{r};")
w("    }")

def layer_norm(src, dst, r, decl):
    # src(c) expression -> dst{r}_{c} named vars
    w(f"    {{")
    w(f"        var sum = vec4<f32>(0.0);")
    for c in C:
        w(f"        if ({c}u < d4) {{ {dst}{r}_{c} = {src(c)}; sum += {dst}{r}_{c}; }}")
    w(f"        let mean = vec4<f32>(hsum(sum) / f32(D));")
    w(f"        var sq = vec4<f32>(0.0);")
    for c in C:
        w(f"        if ({c}u < d4) {{ {dst}{r}_{c} -= mean; sq = fma({dst}{r}_{c}, {dst}{r}_{c}, sq); }}")
    w(f"        let rstd = inverseSqrt(hsum(sq) / f32(D) + p.eps);")
    for c in C:
        w(f"        {dst}{r}_{c} *= rstd;")
    w(f"    }}")

w("    // x1 in h{rr}_{c}; the FFN output accumulates on it in a{rr}_{c}.")
for r in R:
    for c in C:
        w(f"    var h{r}_{c} = vec4<f32>(0.0);")
for r in R:
    layer_norm(lambda c, r=r: f"ht[{r}][{c}]", "h", r, True)
for r in R:
    for c in C:
        w(f"    a{r}_{c} = h{r}_{c};")
w("""
    // Phase 4: y = LN(x1 + relu(x1 W1) W2), one hidden unit at a time
    // (W1ᵀ rows, then W2 rows, each D/4 vec4s).
    let w1 = 2u * D * d4;
    let w2 = w1 + F * d4;
    for (var jh = 0u; jh < F; jh++) {
        let r1 = w1 + jh * d4;
        let r2 = w2 + jh * d4;""")
for r in R:
    w(f"        var z{r} = vec4<f32>(0.0);")
for k in C:
    w(f"        if ({k}u < d4) {{ let wk = wu[r1 + {k}u]; " + " ".join(f"z{r} = fma(h{r}_{k}, wk, z{r});" for r in R) + " }")
for r in R:
    w(f"        let zz{r} = vec4<f32>(max(hsum(z{r}), 0.0));")
for c in C:
    w(f"        if ({c}u < d4) {{ let wc = wu[r2 + {c}u]; " + " ".join(f"a{r}_{c} = fma(zz{r}, wc, a{r}_{c});" for r in R) + " }")
w("    }")
for r in R:
    layer_norm(lambda c, r=r: f"a{r}_{c}", "a", r, False)
w("    // Rows past n get zeros; rows past seq do not exist.")
for r in R:
    w(f"    if (t{r} < p.seq) {{")
    w(f"        let live = t{r} < n;")
    w(f"        let ob = (base + t{r}) * d4;")
    for c in C:
        w(f"        if ({c}u < d4) {{ y[ob + {c}u] = vec4<st>(select(vec4<f32>(0.0), a{r}_{c}, live)); }}")
    w(f"    }}")
w("}")
print("\n".join(o))
