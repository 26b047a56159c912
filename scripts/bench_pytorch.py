"""PyTorch peers for `transact bench cpu --json`, same cases, same output format.

    python scripts/bench_pytorch.py [--threads 2] [--runs 20]

prints one JSON object per line:
{"case": "v1-b256-s100" | "v2-b256-s192" | "nn-16k-x256-top96", "impl": "pytorch", "median_ms": ..., "candidates_per_s": ...}

- v1-b256-s100: the reference TransAct module (scripts/transact_reference.py)
  in inference mode, B = 256 candidates of one user (the same sequence
  repeated, as the reference has no request-level de-duplication), S = 100,
  d = 96, L = 2, K = 10.
- v2-b256-s192: two V2 blocks (one head, no biases, LayerNorm without affine,
  causal) written with scaled_dot_product_attention + layer_norm,
  B = 256, S = 192, d = 64, FFN 32.
- nn-16k-x256-top96: TransAct V2's nearest-neighbour selection, one user's
  16,384 int8 item codes (d = 32, global scale 0.65) dequantised, multiplied
  by 256 candidates' embeddings, top-96 per candidate.
- v2-rank-b256-16k: a whole TransAct V2 request, eager, the history already
  in memory as int8 codes with per-row scales (16,384 lifelong tokens, the
  100-action realtime sequence, 4,096 impressions): per part dequantise,
  score, top-k (k_LL 96, the newest 32 realtime kept + 32 of the rest,
  k_imp 32), order each candidate's 192 tokens by time, gather them, add
  the multi-hot action, surface and position embeddings, two causal V2
  blocks, compression (max-pool projection + 10 newest rows), the default
  heads (DCN v2 with 2 full-rank cross layers, MLP 256 → 64, 3 logits),
  sigmoid, utility and the sort.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from transact_reference import Config, TransActReference


def timed(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def v1_case(runs):
    cfg = Config()
    module = TransActReference(cfg).eval()
    b, s = 256, 100
    gen = torch.Generator().manual_seed(1)
    actions = torch.randint(1, 20, (1, s), generator=gen).expand(b, s).contiguous()
    items = torch.randn(1, s, 32, generator=gen).expand(b, s, 32).contiguous()
    request = torch.full((b,), 10_000_000, dtype=torch.long)
    times = (request[:1].unsqueeze(1) - torch.arange(1, s + 1) * 1000).expand(b, s).contiguous()
    cands = torch.randn(b, 32, generator=gen)

    def run():
        with torch.inference_mode():
            module(actions, items, times, request, cands)

    return timed(run, runs), b


def v2_case(runs):
    b, s, d, f, layers = 256, 192, 64, 32, 2
    gen = torch.Generator().manual_seed(2)
    ws = [
        [torch.randn(d, d, generator=gen) / d**0.5 for _ in range(3)]
        + [torch.randn(d, f, generator=gen) / d**0.5, torch.randn(f, d, generator=gen) / f**0.5]
        for _ in range(layers)
    ]
    x0 = torch.randn(b, s, d, generator=gen)

    def run():
        with torch.inference_mode():
            x = x0
            for wq, wk, wv, w1, w2 in ws:
                a = F.scaled_dot_product_attention(
                    (x @ wq).unsqueeze(1), (x @ wk).unsqueeze(1), (x @ wv).unsqueeze(1), is_causal=True
                ).squeeze(1)
                x = F.layer_norm(x + a, (d,))
                x = F.layer_norm(x + torch.relu(x @ w1) @ w2, (d,))

    return timed(run, runs), b


def nn_case(runs):
    n, b, d, k = 16_384, 256, 32, 96
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(-127, 128, (n, d), generator=gen, dtype=torch.int8)
    cands = torch.randint(-127, 128, (b, d), generator=gen, dtype=torch.int8).float() * (0.65 / 127)

    def run():
        with torch.inference_mode():
            hist = codes.float() * (0.65 / 127)
            torch.topk(cands @ hist.T, k, dim=1)

    return timed(run, runs), b


def v2_rank_case(runs):
    b, di, d, f, layers, keep = 256, 32, 64, 32, 2, 10
    n_ll, n_rt, n_imp, r = 16_384, 100, 4_096, 32
    k_ll, k_rt, k_imp = 96, 32, 32
    s = k_ll + r + k_rt + k_imp
    n_act, n_surf = 20, 8
    gen = torch.Generator().manual_seed(4)

    def part(n):
        return (
            torch.randint(-127, 128, (n, di), generator=gen, dtype=torch.int8),
            torch.rand(n, generator=gen) * 0.5 + 0.25,
            torch.randint(0, 1 << 3, (n,), generator=gen),
            torch.randint(0, n_surf, (n,), generator=gen),
        )

    ll, rt, imp = part(n_ll), part(n_rt), part(n_imp)
    # Times: newest first within each part, the lifelong part older than the
    # realtime one, impressions interleaved.
    t_ll = -torch.arange(n_rt, n_rt + n_ll, dtype=torch.float64)
    t_rt = -torch.arange(n_rt, dtype=torch.float64)
    t_imp = -torch.arange(n_imp, dtype=torch.float64) * 4.0
    cand_codes = torch.randint(-127, 128, (b, di), generator=gen, dtype=torch.int8)
    cand_scale = torch.rand(b, generator=gen) * 0.5 + 0.25
    heads_cand = torch.randn(b, di, generator=gen)
    e_act = torch.randn(n_act, d, generator=gen) * 0.05
    e_surf = torch.randn(n_surf, d, generator=gen) * 0.05
    e_pos = torch.randn(s, d, generator=gen) * 0.05
    ws = [
        [torch.randn(d, d, generator=gen) / d**0.5 for _ in range(3)]
        + [torch.randn(d, f, generator=gen) / d**0.5, torch.randn(f, d, generator=gen) / f**0.5]
        for _ in range(layers)
    ]
    w_o, b_o = torch.randn(d, d, generator=gen) / d**0.5, torch.zeros(d)
    n_feat = (keep + 1) * d + di
    cross = [(torch.randn(n_feat, n_feat, generator=gen) / n_feat**0.5, torch.zeros(n_feat)) for _ in range(2)]
    mlp = [
        (torch.randn(256, n_feat, generator=gen) / n_feat**0.5, torch.zeros(256)),
        (torch.randn(64, 256, generator=gen) / 16.0, torch.zeros(64)),
    ]
    out_w, out_b = torch.randn(3, 64, generator=gen) / 8.0, torch.zeros(3)
    utility = torch.tensor([1.0, 0.5, -2.0])
    bits = 1 << torch.arange(n_act)

    def run():
        with torch.inference_mode():
            c = cand_codes.float() * (cand_scale / 127).unsqueeze(1)
            picks, embs, masks, surfs, times = [], [], [], [], []
            for (codes, scale, mask, surf), tt, k in [(ll, t_ll, k_ll), (imp, t_imp, k_imp)]:
                e = codes.float() * (scale / 127).unsqueeze(1)
                idx = torch.topk(c @ e.T, k, dim=1).indices
                picks.append((e, mask, surf, tt, idx))
            e_rt = rt[0].float() * (rt[1] / 127).unsqueeze(1)
            idx_rest = torch.topk(c @ e_rt[r:].T, k_rt, dim=1).indices + r
            idx_rt = torch.cat([torch.arange(r).expand(b, r), idx_rest], dim=1)
            picks.insert(1, (e_rt, rt[2], rt[3], t_rt, idx_rt))
            for e, mask, surf, tt, idx in picks:
                embs.append(e[idx])
                masks.append(mask[idx])
                surfs.append(surf[idx])
                times.append(tt[idx])
            order = torch.argsort(torch.cat(times, dim=1), dim=1)
            emb = torch.gather(torch.cat(embs, 1), 1, order.unsqueeze(2).expand(b, s, di))
            mask = torch.gather(torch.cat(masks, 1), 1, order)
            surf = torch.gather(torch.cat(surfs, 1), 1, order)
            multi_hot = ((mask.unsqueeze(2) & bits) != 0).float()
            x = torch.cat([emb, c.unsqueeze(1).expand(b, s, di)], dim=2)
            x = x + multi_hot @ e_act + e_surf[surf] + e_pos.flip(0)
            for wq, wk, wv, w1, w2 in ws:
                a = F.scaled_dot_product_attention(
                    (x @ wq).unsqueeze(1), (x @ wk).unsqueeze(1), (x @ wv).unsqueeze(1), is_causal=True
                ).squeeze(1)
                x = F.layer_norm(x + a, (d,))
                x = F.layer_norm(x + torch.relu(x @ w1) @ w2, (d,))
            pooled = F.linear(x.max(dim=1).values, w_o, b_o)
            newest = x[:, -keep:, :].flip(1).reshape(b, keep * d)
            x0 = torch.cat([pooled, newest, heads_cand], dim=1)
            xl = x0
            for w, bias in cross:
                xl = x0 * F.linear(xl, w, bias) + xl
            h = xl
            for w, bias in mlp:
                h = torch.relu(F.linear(h, w, bias))
            p = torch.sigmoid(F.linear(h, out_w, out_b))
            torch.argsort(p @ utility, descending=True)

    return timed(run, runs), b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for case, fn in [
        ("v1-b256-s100", v1_case),
        ("v2-b256-s192", v2_case),
        ("nn-16k-x256-top96", nn_case),
        ("v2-rank-b256-16k", v2_rank_case),
    ]:
        ms, b = fn(args.runs)
        print(json.dumps({
            "case": case,
            "impl": f"pytorch-{torch.__version__}",
            "threads": args.threads,
            "median_ms": round(ms, 3),
            "candidates_per_s": round(b / (ms / 1000.0), 1),
        }))


if __name__ == "__main__":
    main()
