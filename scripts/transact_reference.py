"""TransAct V1 as a PyTorch module, built from docs/model-spec.md section 2.

This mirrors the behaviour of Pinterest's published reference module
(same parameter names, same vocabulary lookup, same masks, same output
layout) so that its state_dict and outputs can be checked against the Rust
implementation. Used only by the scripts in this folder; the Rust tests do
not need PyTorch.
"""

import random
from dataclasses import dataclass, field, asdict

import warnings

import torch
import torch.nn as nn

# PyTorch warns that nested tensors are a prototype when it packs the tokens.
warnings.filterwarnings("ignore", message=".*nested tensors.*")


@dataclass
class Config:
    seq_len: int = 100
    time_window_ms: int = 60 * 60 * 1000
    latest_n_emb: int = 10
    concat_candidate_emb: bool = True
    concat_max_pool: bool = True
    action_vocab: list = field(default_factory=lambda: list(range(20)))
    action_emb_dim: int = 32
    item_emb_dim: int = 32
    num_layer: int = 2
    nhead: int = 2
    dim_feedforward: int = 32

    def metadata(self):
        """Each value as JSON text, the parity file's metadata format."""
        import json

        return {k: json.dumps(v) for k, v in asdict(self).items()}


class TransActReference(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.action_emb_dim + cfg.item_emb_dim * (2 if cfg.concat_candidate_emb else 1)
        # Raw id -1 (padding) lands on slot 0; the i-th smallest vocabulary id
        # maps to index i, so the smallest id shares index 0 with padding.
        lookup = torch.zeros(100, dtype=torch.long)
        for i, a in enumerate(sorted(cfg.action_vocab)):
            lookup[a + 1] = i
        self.register_buffer("action_type_lookup", lookup)
        self.action_emb_module = nn.Embedding(len(cfg.action_vocab), cfg.action_emb_dim, padding_idx=0)
        layer = nn.TransformerEncoderLayer(
            d_model=d, nhead=cfg.nhead, dim_feedforward=cfg.dim_feedforward, batch_first=True
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=cfg.num_layer)
        if cfg.concat_max_pool:
            self.out_linear = nn.Linear(d, d)

    def forward(self, action_type_seq, item_embedding_seq, action_time_seq, request_time, item_embedding):
        s = self.cfg.seq_len
        action_type_seq = action_type_seq[:, :s]
        item_embedding_seq = item_embedding_seq[:, :s, :]
        action_time_seq = action_time_seq[:, :s]
        idx = self.action_type_lookup[action_type_seq + 1]
        act = self.action_emb_module(idx)
        mask = idx <= 0
        req = request_time.unsqueeze(-1).expand(-1, s)
        if self.training:
            window = random.randint(0, self.cfg.time_window_ms)
            mask = mask | ((req - action_time_seq) < window)
        else:
            mask = mask | ((req - action_time_seq) < 0)
        mask[:, 0] = False
        float_mask = torch.zeros_like(mask, dtype=torch.float).masked_fill_(mask, float("-inf"))
        tokens = torch.cat((act, item_embedding_seq), dim=2)
        if self.cfg.concat_candidate_emb:
            tokens = torch.cat((tokens, item_embedding.unsqueeze(1).expand(-1, s, -1)), dim=-1)
        y = self.transformer_encoder(src=tokens, src_key_padding_mask=float_mask)
        parts = []
        if self.cfg.concat_max_pool:
            parts.append(self.out_linear(y.max(dim=1).values))
        if self.cfg.latest_n_emb > 0:
            y = y[:, : self.cfg.latest_n_emb]
        parts.append(y.flatten(1))
        return torch.cat(parts, dim=1)
