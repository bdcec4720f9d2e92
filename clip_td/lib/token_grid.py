"""Patch-token grids: the square grid of a token count, and bilinear resampling between grids
(student and teacher patch grids differ when their image or patch sizes do)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F


def grid_from_tokens(n: int) -> Tuple[int, int]:
    """Square grid for n tokens (asserts n is a square)."""
    side = int(math.isqrt(n))
    assert side * side == n, f"{n} tokens do not form a square grid"
    return side, side


def resample_grid(tokens: torch.Tensor, src: Tuple[int, int], dst: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of a row-major token grid. (B, src_h*src_w, d) -> (B, dst_h*dst_w, d)."""
    if tuple(src) == tuple(dst):
        return tokens
    b, _, d = tokens.shape
    grid = tokens.float().transpose(1, 2).reshape(b, d, *src)
    out = F.interpolate(grid, size=dst, mode="bilinear", align_corners=False)
    return out.reshape(b, d, -1).transpose(1, 2)
