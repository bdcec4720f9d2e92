"""Dynamic per-instance weights and schedules on the total distillation weight.

`WEIGHTINGS` functions map teacher (and optionally student) answer distributions to w (B,),
normalised to mean 1 over the batch so they redistribute, not rescale, the distillation loss,
and then bounded: every weight is clamped to at most MAX_WEIGHT (= 4). Without the bound a batch
where only one row has its gold answer among the teacher's candidates (every other c_i = 0) would
give that row weight B (the batch size) and let it carry the whole distillation term; with it,
that row gets 4 and the batch's mean weight falls below 1 (such a batch distils less, not more).
`SCHEDULES` map (step, total_steps) to a factor on alpha.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from clip_td.base.registry import Registry

WEIGHTINGS = Registry("weighting")
SCHEDULES = Registry("weight schedule")


#: Upper bound of every per-instance weight, applied after the mean-1 normalisation.
MAX_WEIGHT = 4.0


def _mean_one(w: torch.Tensor) -> torch.Tensor:
    """w / mean(w), then clamped to at most MAX_WEIGHT (the mean is then <= 1)."""
    return (w / w.mean().clamp_min(1e-12)).clamp_max(MAX_WEIGHT)


def gold_confidence(teacher_probs: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """c_i = q_i[gold_i], the teacher's probability of the right answer; 0 where gold is -1 (the
    gold answer is not among the candidates). teacher_probs (B, C), gold (B,) -> (B,) fp32."""
    gold = gold.long()
    return teacher_probs.float().gather(1, gold.clamp_min(0).view(-1, 1)).squeeze(1) * (gold >= 0).float()


@WEIGHTINGS.register("confidence")
def confidence(teacher_probs: torch.Tensor, gold: torch.Tensor, gamma: float = 1.0, **_: object) -> torch.Tensor:
    """w_i = min(c_i^gamma / mean_b(c_b^gamma), MAX_WEIGHT) with c_i = q_i[gold_i] (the teacher's
    trust in the right answer).

    teacher_probs (B, C), gold (B,) long (-1: the gold answer is not a candidate, c_i = 0)
    -> (B,). gamma = 0 gives uniform weights.
    """
    return _mean_one(gold_confidence(teacher_probs, gold).clamp_min(1e-12) ** gamma)


def chance_corrected_trust(confidence: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """t_i = clip((c_i - 1/K_i) / (1 - 1/K_i), 0, 1): 0 for a teacher at or below chance on the
    instance, 1 for a one-hot right teacher. confidence (B,), num_candidates K_i (B,) -> (B,)."""
    chance = 1.0 / num_candidates.float().clamp_min(2.0)  # K_i = 1 would be a certain, uninformative "choice"
    return ((confidence.float() - chance) / (1.0 - chance)).clamp(0.0, 1.0)


@WEIGHTINGS.register("calibrated")
def calibrated(teacher_probs: torch.Tensor, gold: torch.Tensor, gamma: float = 1.0,
               num_candidates: Optional[torch.Tensor] = None, **_: object) -> torch.Tensor:
    """w_i = t_i^gamma with t_i the chance-corrected trust in the gold answer (`chance_corrected_trust`),
    NOT normalised over the batch: a teacher at chance on every instance contributes nothing, which a
    mean-1 normalisation would undo. Every w_i is in [0, 1].

    teacher_probs (B, C), gold (B,) (-1: not a candidate, w_i = 0), num_candidates K_i (B,)
    (default: C, every candidate scored) -> (B,).
    """
    if num_candidates is None:
        num_candidates = torch.full((teacher_probs.shape[0],), teacher_probs.shape[1], device=teacher_probs.device)
    trust = chance_corrected_trust(gold_confidence(teacher_probs, gold), num_candidates)
    return trust if gamma == 1 else trust ** gamma


@WEIGHTINGS.register("uniform")
def uniform(teacher_probs: torch.Tensor, **_: object) -> torch.Tensor:
    """w_i = 1. teacher_probs (B, C) -> (B,)."""
    return torch.ones(teacher_probs.shape[0], device=teacher_probs.device)


@WEIGHTINGS.register("agreement")
def agreement(teacher_probs: torch.Tensor, student_probs: Optional[torch.Tensor] = None, gamma: float = 1.0,
              **_: object) -> torch.Tensor:
    """w_i = (1 - TV(q_i, p_i))^gamma, mean-1 normalised, at most MAX_WEIGHT; TV = half the L1 distance.

    Trusts the teacher where student and teacher already roughly agree. teacher_probs,
    student_probs (B, C) -> (B,). The student distribution is treated as a constant.
    """
    assert student_probs is not None, "agreement weighting needs the student's probabilities"
    tv = 0.5 * (teacher_probs.float() - student_probs.detach().float()).abs().sum(-1)
    return _mean_one((1.0 - tv).clamp_min(1e-12) ** gamma)


@SCHEDULES.register("constant")
def constant(step: int, total_steps: int) -> float:
    return 1.0


@SCHEDULES.register("linear")
def linear(step: int, total_steps: int) -> float:
    """1 at step 0, falling linearly to 0 at total_steps."""
    return max(0.0, 1.0 - step / max(total_steps, 1))


@SCHEDULES.register("cosine")
def cosine(step: int, total_steps: int) -> float:
    """Half-cosine from 1 at step 0 to 0 at total_steps."""
    t = min(step / max(total_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * t))
