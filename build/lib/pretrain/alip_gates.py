"""ALIP's Language Consistency Gate (LCG) and Description Consistency Gate (DCG).

The running means m_T, m_x, m_c are training state: they live in buffers and in
`state_dict()`, so registering the gates with `accelerator.register_for_checkpointing`
saves and restores them with `save_state` / `load_state`.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn


class ALIPGates(nn.Module):
    """Sample weight W_s and pair weights W_x, W_c from per-sample similarities (no grad).

    s_T = t.c, s_x = v.t, s_c = v.c. Gates use the running means from *before* this batch,
    then the means update m <- momentum m + (1 - momentum) mean(s) (in training mode only).
    """

    def __init__(self, momentum: float = 0.99, sharpness: float = 2.0) -> None:
        super().__init__()
        self.momentum = momentum
        self.sharpness = sharpness
        self.register_buffer("m_T", torch.ones(()))
        self.register_buffer("m_x", torch.ones(()))
        self.register_buffer("m_c", torch.ones(()))

    @torch.no_grad()
    def forward(self, image: torch.Tensor, text: torch.Tensor, caption: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image, text, caption: (B, d) L2-normalised over the global batch -> W_s, W_x, W_c each (B,)."""
        s_t = (text.float() * caption.float()).sum(-1)
        s_x = (image.float() * text.float()).sum(-1)
        s_c = (image.float() * caption.float()).sum(-1)
        lcg = torch.exp(self.sharpness * (s_t - self.m_T))
        w_s = lcg.clamp(max=1.0)
        inconsistent = lcg < 1  # raw text and caption disagree: trust each pair by its own similarity
        w_x = torch.where(inconsistent, torch.exp(self.sharpness * (s_x - self.m_x)), torch.ones_like(s_x))
        w_c = torch.where(inconsistent, torch.exp(self.sharpness * (s_c - self.m_c)), torch.ones_like(s_c))
        if self.training:
            for buf, s in ((self.m_T, s_t), (self.m_x, s_x), (self.m_c, s_c)):
                buf.mul_(self.momentum).add_((1 - self.momentum) * s.mean())
        return w_s, w_x, w_c
