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
