"""Task heads on the student's pooled feature (B, h).

VQA: multi-label logits over the answer vocabulary (trained with BCE on soft scores);
SNLI-VE: 3-way logits; VCR: one scalar per (image, text + choice) sequence, reshaped by the
caller into (B, 4) choice logits. MLP shape as in ViLT's VQA classifier.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.GELU(), nn.Linear(2 * hidden, out))


class VQAHead(nn.Module):
    """pooled (B, h) -> answer logits (B, A)."""

    def __init__(self, hidden: int, num_answers: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, num_answers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)


class ClassifierHead(nn.Module):
    """pooled (B, h) -> class logits (B, C) (SNLI-VE: C = 3)."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)


class MultipleChoiceHead(nn.Module):
    """pooled (N, h) for N = B * choices sequences -> scores (N,); reshape to (B, choices)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled).squeeze(-1)
