"""Patch-token grids: the square grid of a token count, bilinear resampling between grids
(student and teacher patch grids differ when their image or patch sizes do), and the check that
a teacher's grid can be mapped onto a student's at all."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from clip_td.base.io import InputError


def _grid_text(grid: Optional[Sequence[int]]) -> str:
    return "none" if not grid else "x".join(str(int(g)) for g in grid)


def check_grid_alignment(student_grid: Optional[Sequence[Any]], teacher_grid: Optional[Sequence[Any]],
                         teacher: str = "teacher") -> None:
    """Raise InputError unless the teacher's patch grid can be resampled onto the student's.

    Token distillation infers each grid from its token count (`grid_from_tokens`) and resamples
    bilinearly between them, so both must be square (rows == cols >= 1); any two square sizes
    map (e.g. ViT-B-32 at 224 px: 7x7, ViT-B-16: 14x14, onto ViLT-B/32 at 384 px: 12x12).
    `student_grid` / `teacher_grid`: (rows, cols) or None (no patch tokens).
    """
    s = tuple(int(g) for g in student_grid) if student_grid else ()
    t = tuple(int(g) for g in teacher_grid) if teacher_grid else ()
    if len(s) != 2 or min(s) < 1:
        raise InputError(f"student has no image-token grid (got {_grid_text(s)}); it cannot be aligned with "
                         f"teacher {teacher!r}, whose patch grid is {_grid_text(t)}")
    if len(t) != 2 or min(t) < 1:
        raise InputError(f"teacher {teacher!r} gives no patch tokens (grid {_grid_text(t)}); it cannot be aligned "
                         f"with the student's {_grid_text(s)} image-token grid")
    if s[0] != s[1] or t[0] != t[1]:
        raise InputError(f"teacher {teacher!r} patch grid {_grid_text(t)} cannot be mapped to the student's "
                         f"{_grid_text(s)} image-token grid: token distillation resamples square grids only "
                         f"(use square image sizes for both)")


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
