"""Task heads on the student's pooled feature, shared by the tasks (each task picks one).

`MLPHead`: class / answer logits (VQA: multi-label over the answer vocabulary, trained with BCE
on soft scores; SNLI-VE: 3-way). `MultipleChoiceHead`: one scalar per (image, text + choice)
sequence, reshaped by the task into (B, choices). MLP shape as in ViLT's VQA classifier.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.GELU(), nn.Linear(2 * hidden, out))


class MLPHead(nn.Module):
    """pooled (B, h) -> logits (B, C)."""

    def __init__(self, hidden: int, num_outputs: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)


class MultipleChoiceHead(nn.Module):
    """pooled (N, h) for N = B * choices sequences -> scores (N,); reshape to (B, choices)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled).squeeze(-1)
