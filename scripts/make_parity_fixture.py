"""Records the reference TransAct V1 module's inference output for parity checks.

    python scripts/make_parity_fixture.py tests/fixtures

writes two safetensors files, each holding the module's state_dict under its
own parameter names, the inputs (`input.*`), the expected output
(`expected.output`) and the config in the metadata (each value JSON text):

- parity_v1.safetensors: B = 8, S = 32, padded tails, future actions in the
  middle of sequences, a row that is all padding, raw action id 0 (which the
  reference's vocabulary lookup treats as padding). Because some masks are
  not "left aligned", PyTorch runs its ordinary path and masked rows of the
  encoder output are computed like any other row.
- parity_v1_left_aligned.safetensors: B = 6, inputs of length 24 truncated to
  seq_len = 20, padding only at the tails. Every mask is left aligned, so
  PyTorch packs the valid tokens (nested tensors) and masked rows come out as
  zeros.

`transact parity FILE` must reproduce both within 1e-4. Needs torch,
safetensors and numpy (in a virtualenv; not needed by the Rust tests).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from transact_reference import Config, TransActReference


def record(cfg, inputs, path, seed):
    torch.manual_seed(seed)
    module = TransActReference(cfg).eval()
    with torch.no_grad():
        expected = module(*inputs)
    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    names = ["action_type_seq", "item_embedding_seq", "action_time_seq", "request_time", "item_embedding"]
    for name, value in zip(names, inputs):
        tensors[f"input.{name}"] = value.contiguous()
    tensors["expected.output"] = expected.contiguous()
    meta = cfg.metadata()
    meta["torch_version"] = json.dumps(torch.__version__)
    save_file(tensors, str(path), metadata=meta)
    print(f"{path}: output {tuple(expected.shape)}")


def future_and_padding(cfg, gen):
    b, s, d = 8, cfg.seq_len, cfg.item_emb_dim
    actions = torch.randint(0, 20, (b, s), generator=gen)
    request = torch.full((b,), 1_700_000_000_000, dtype=torch.long)
    ages = torch.randint(1, 3_600_000, (b, s), generator=gen).cumsum(dim=1)
    times = request.unsqueeze(1) - ages  # newest first, all in the past
    lengths = [32, 17, 1, 0, 5, 32, 9, 23]
    for row, n in enumerate(lengths):
        actions[row, n:] = -1
    times[1, 0:3] = request[1] + 5_000  # future at position 0 (never masked), 1 and 2
    times[4, 2] = request[4] + 1  # one future action in the middle
    times[6, 4:6] = request[6] + 60_000
    times[7, 10] = request[7]  # exactly at request time: kept
    actions[5, 7] = 0  # the smallest vocabulary id: padding in the reference lookup
    items = torch.randn(b, s, d, generator=gen) * 0.5
    cands = torch.randn(b, d, generator=gen) * 0.5
    return (actions, items, times, request, cands)


def left_aligned(cfg, gen):
    b, s, d = 6, 24, cfg.item_emb_dim
    actions = torch.randint(1, 20, (b, s), generator=gen)
    request = torch.tensor([1_650_000_000_000 + 1000 * i for i in range(b)], dtype=torch.long)
    ages = torch.randint(0, 600_000, (b, s), generator=gen).cumsum(dim=1)
    times = request.unsqueeze(1) - ages
    for row, n in enumerate([24, 20, 13, 1, 0, 7]):
        actions[row, n:] = -1
    items = torch.randn(b, s, d, generator=gen)
    cands = torch.randn(b, d, generator=gen)
    return (actions, items, times, request, cands)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(2023)
    cfg = Config(seq_len=32)
    record(cfg, future_and_padding(cfg, gen), out / "parity_v1.safetensors", seed=7)
    cfg = Config(seq_len=20, latest_n_emb=6, nhead=4)
    record(cfg, left_aligned(cfg, gen), out / "parity_v1_left_aligned.safetensors", seed=11)


if __name__ == "__main__":
    main()
