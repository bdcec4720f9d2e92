"""Task-level trust gate: is the teacher's answer distribution worth distilling for this run?

Before training, the teacher answers every labelled training row (argmax of its candidate
scores, restricted to the row's candidate mask when there is one). Its accuracy is compared with
the label prior: the accuracy of always answering the most frequent gold label among the rows
that share the same candidate set (one group when the candidates are shared; VQA with answer
sets: one group per question type). A one-sided exact binomial test asks whether the teacher
beats that prior:

    H0: P(teacher right) <= p0,   p = P(X >= k | X ~ Binomial(n, p0))

with k the teacher's correct rows out of n. Below significance (p >= alpha) the answer-level
term is switched off for the run (eta = 0); the token and global terms stay. A row whose gold
answer is not among the teacher's candidates counts as a teacher error.

With trust groups (a task's `trust_group`, e.g. VQA's question type) the test runs per group,
and the answer-level term is kept for the rows of the groups that pass it: a teacher can be
right about colours and guess at counts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Dict, Hashable, Optional, Sequence

import torch


@dataclass(frozen=True)
class TrustDecision:
    """What metrics.json records as `teacher_trust`."""

    rows: int  # labelled training rows the teacher answered
    teacher_accuracy: float  # % of them the teacher answers right (argmax of its candidate scores)
    prior_accuracy: float  # % the label prior answers right (most frequent gold per candidate set)
    p_value: float  # one-sided exact binomial test of teacher accuracy > prior
    alpha: float  # significance level
    trusted: bool  # p_value < alpha: the answer-level term stays on

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("teacher_accuracy", "prior_accuracy"):
            d[k] = round(d[k], 4)
        d["p_value"] = float(f"{self.p_value:.6g}")
        return d


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
            for j in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def prior_correct(gold: Sequence[int], groups: Optional[Sequence[Hashable]] = None) -> int:
    """Rows the label prior gets right: in each group, the count of its most frequent gold label
    (rows whose gold is not among the candidates, gold < 0, are never right)."""
    by_group: Dict[Hashable, Counter] = defaultdict(Counter)
    for i, g in enumerate(gold):
        if g >= 0:
            by_group[None if groups is None else groups[i]][int(g)] += 1
    return sum(max(c.values()) for c in by_group.values())


def trust_decision(cand_logits: torch.Tensor, gold: torch.Tensor, alpha: float = 0.05,
                   cand_mask: Optional[torch.Tensor] = None) -> TrustDecision:
    """The gate from the teacher's candidate scores of the labelled rows.

    cand_logits (N, C); gold (N,) index of the gold candidate or -1; cand_mask (N, C) bool or
    None (rows with the same mask form one prior group)."""
    n = int(gold.shape[0])
    if n == 0:
        return TrustDecision(0, 0.0, 0.0, 1.0, alpha, False)
    scores = cand_logits.float()
    groups = None
    if cand_mask is not None:
        scores = scores.masked_fill(~cand_mask.bool(), float("-inf"))
        groups = [bytes(row) for row in cand_mask.bool().cpu().numpy()]
    pred = scores.argmax(-1)
    gold = gold.long().to(pred.device)
    k = int(((pred == gold) & (gold >= 0)).sum())
    k0 = prior_correct(gold.tolist(), groups)
    p0 = k0 / n
    p = binomial_sf(k, n, p0)
    return TrustDecision(n, 100.0 * k / n, 100.0 * p0, p, alpha, p < alpha)


def group_decisions(cand_logits: torch.Tensor, gold: torch.Tensor, groups: Sequence[Hashable], alpha: float = 0.05,
                    cand_mask: Optional[torch.Tensor] = None) -> Dict[Hashable, TrustDecision]:
    """`trust_decision` for each trust group's rows. groups: one hashable per row."""
    members: Dict[Hashable, list] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = {}
    for g, rows in members.items():
        idx = torch.tensor(rows, dtype=torch.long)
        out[g] = trust_decision(cand_logits[idx], gold[idx], alpha, None if cand_mask is None else cand_mask[idx])
    return out
