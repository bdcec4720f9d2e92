"""Per-instance token selection (docs/method.md): which teacher image tokens to distil.

Each selector is a pure function returning a (B, N) bool mask; `SELECTORS` names them for the
config (`method.selector`). All take the same keyword arguments and use what they need.
Text tokens are not selected here: the text term keeps content tokens only (see text_align).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from clip_td.base.io import InputError
from clip_td.base.registry import Registry

SELECTORS = Registry("token selector")
NEEDS_CLS_ATTENTION = {"cls_attention_topk"}  # selectors that read the teacher's [CLS] attention
NEEDS_STUDENT = {"disagreement_topk"}  # selectors that read the student's projected image tokens


def needs_cls_attention(selection: str) -> bool:
    """Whether the teacher outputs must carry `cls_attention` for selector `selection`."""
    return selection in NEEDS_CLS_ATTENTION


def num_selected(n: int, rho: float) -> int:
    """k = ceil(rho * n), kept within [1, n]."""
    return max(1, min(n, math.ceil(rho * n - 1e-9)))


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores (B, N) -> (B, N) bool, True at each row's k largest."""
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


@SELECTORS.register("relevance_topk")
def relevance_topk(patch_tokens: torch.Tensor, task_embed: Optional[torch.Tensor] = None, rho: float = 0.5,
                   **_: object) -> torch.Tensor:
    """Keep the k = ceil(rho N) tokens with the largest r_j = cos(Z_v[j], e_txt(task text)).

    patch_tokens (B, N, d), task_embed (B, d) -> (B, N) bool.
    """
    assert task_embed is not None, "relevance_topk needs the task-text embedding"
    scores = F.cosine_similarity(patch_tokens.float(), task_embed.float().unsqueeze(1), dim=-1)  # (B, N)
    return _topk_mask(scores, num_selected(patch_tokens.shape[1], rho))


@SELECTORS.register("all")
def all_tokens(patch_tokens: torch.Tensor, **_: object) -> torch.Tensor:
    """Every token (the naive baseline). patch_tokens (B, N, d) -> (B, N) bool, all True."""
    return torch.ones(patch_tokens.shape[:2], dtype=torch.bool, device=patch_tokens.device)


@SELECTORS.register("random_k")
def random_k(patch_tokens: torch.Tensor, rho: float = 0.5, generator: Optional[torch.Generator] = None,
             **_: object) -> torch.Tensor:
    """k = ceil(rho N) tokens drawn uniformly per instance (seeded by `generator`)."""
    b, n = patch_tokens.shape[:2]
    scores = torch.rand(b, n, generator=generator).to(patch_tokens.device)
    return _topk_mask(scores, num_selected(n, rho))


@SELECTORS.register("cls_attention_topk")
def cls_attention_topk(patch_tokens: torch.Tensor, cls_attention: Optional[torch.Tensor] = None, rho: float = 0.5,
                       **_: object) -> torch.Tensor:
    """Keep the k tokens the teacher's [CLS] attends to most. cls_attention (B, N) -> (B, N) bool."""
    if cls_attention is None:
        raise InputError(
            "method.selection=cls_attention_topk: no teacher CLS attention available (the teacher cache "
            "must be built with cls_attention=True, from a teacher whose last block is nn.MultiheadAttention)"
        )
    return _topk_mask(cls_attention.float(), num_selected(patch_tokens.shape[1], rho))


@SELECTORS.register("disagreement_topk")
def disagreement_topk(patch_tokens: torch.Tensor, student_tokens: Optional[torch.Tensor] = None, rho: float = 0.5,
                      **_: object) -> torch.Tensor:
    """Selection by the student's own need: keep the k tokens where the student's projected image
    token P_v h_j is furthest from the teacher's z_j (largest 1 - cos), recomputed every step.
    patch_tokens (B, N, d), student_tokens (B, N, d) (detached) -> (B, N) bool."""
    assert student_tokens is not None, "disagreement_topk needs the student's projected image tokens"
    gap = 1.0 - F.cosine_similarity(student_tokens.float(), patch_tokens.float(), dim=-1)  # (B, N)
    return _topk_mask(gap, num_selected(patch_tokens.shape[1], rho))
