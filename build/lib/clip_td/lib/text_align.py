"""Sub-word alignment between two tokenizations of the same string (student vs teacher).

Tokenizers differ (WordPiece vs CLIP's BPE), so text tokens are matched by characters: each
student token takes the average of the teacher tokens whose character spans overlap its own.
A span with start >= end ((0, 0) for special/padding tokens in HF's offset mapping, (-1, -1)
for a teacher token that could not be placed) aligns to nothing.
"""

from __future__ import annotations

from typing import Tuple

import torch


def alignment_matrix(student_offsets: torch.Tensor, teacher_offsets: torch.Tensor,
                     teacher_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Row-normalised overlap matrix.

    student_offsets (B, Ts, 2), teacher_offsets (B, Tt, 2) character [start, end) spans;
    teacher_mask (B, Tt) bool (content tokens) or None. Returns A (B, Ts, Tt) float with
    A[b, i, j] = 1 / #overlaps(i) where spans i and j overlap, else 0 (rows with no overlap are 0).
    """
    s0, s1 = student_offsets[..., 0].unsqueeze(-1), student_offsets[..., 1].unsqueeze(-1)  # (B, Ts, 1)
    t0, t1 = teacher_offsets[..., 0].unsqueeze(-2), teacher_offsets[..., 1].unsqueeze(-2)  # (B, 1, Tt)
    overlap = (s0 < t1) & (t0 < s1) & (s0 < s1) & (t0 < t1) & (t0 >= 0)
    if teacher_mask is not None:
        overlap &= teacher_mask.bool().unsqueeze(-2)
    a = overlap.float()
    return a / a.sum(-1, keepdim=True).clamp_min(1.0)


def align_teacher_tokens(teacher_feats: torch.Tensor, teacher_offsets: torch.Tensor, teacher_mask: torch.Tensor,
                         student_offsets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher token features re-expressed on the student's tokens.

    teacher_feats (B, Tt, d), teacher_offsets (B, Tt, 2), teacher_mask (B, Tt) bool,
    student_offsets (B, Ts, 2) -> aligned (B, Ts, d), valid (B, Ts) bool (the student token
    overlaps at least one teacher content token).
    """
    a = alignment_matrix(student_offsets.to(teacher_offsets.device), teacher_offsets, teacher_mask)
    aligned = torch.bmm(a, teacher_feats.float())
    return aligned, a.sum(-1) > 0
