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

The significance level is fixed (`method.trust_alpha_rule=fixed`, alpha = `method.trust_alpha`)
or set by the sample size (`balanced`): with few labelled rows a test at 0.05 rarely passes a
teacher that is truly better than the prior (40 rows cannot tell 60 % from 50 % at 0.05), and
with many rows it passes a teacher whose lead is too small to matter. The balanced rule fixes the
smallest lead worth detecting, d = `method.trust_effect`, and takes the critical count c that
minimises the sum of the two error rates at that lead,

    alpha(c) = P(X >= c | Binomial(n, p0)),   beta(c) = P(X < c | Binomial(n, min(1, p0 + d))),

trusting the teacher when k >= c (equivalently p <= alpha(c), the level recorded). It is the
"optimal alpha" of Mudge et al. (2012, PLoS ONE 7(2): e32734): alpha rises above 0.05 for small n
and falls far below it for large n. Ties in alpha + beta go to the larger c (the stricter test).
"""

from __future__ import annotations

import copy
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class TrustDecision:
    """What metrics.json records as `teacher_trust`."""

    rows: int  # labelled training rows the teacher answered
    teacher_accuracy: float  # % of them the teacher answers right (argmax of its candidate scores)
    prior_accuracy: float  # % the label prior answers right (most frequent gold per candidate set)
    p_value: float  # one-sided exact binomial test of teacher accuracy > prior
    alpha: float  # significance level (the balanced rule: alpha(c) of its critical count)
    trusted: bool  # p_value < alpha (balanced: k >= critical): the answer-level term stays on
    critical: Optional[int] = None  # the balanced rule: the critical count c (None: fixed alpha)
    effect: Optional[float] = None  # the balanced rule: the lead d over the prior it balances errors at
    power: Optional[float] = None  # the balanced rule: 1 - beta(c), P(trusted) for a teacher at p0 + d

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("teacher_accuracy", "prior_accuracy"):
            d[k] = round(d[k], 4)
        d["p_value"] = float(f"{self.p_value:.6g}")
        if self.critical is None:  # the fixed rule's record is unchanged
            for k in ("critical", "effect", "power"):
                d.pop(k)
        else:
            d["alpha"], d["power"] = float(f"{self.alpha:.6g}"), float(f"{self.power:.6g}")
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


ALPHA_RULES = ("fixed", "balanced")  # method.trust_alpha_rule


def balanced_critical(n: int, p0: float, effect: float) -> Tuple[int, float, float]:
    """The balanced rule's critical count -> (c, alpha(c), beta(c)): the c in 0..n+1 that minimises
    alpha(c) + beta(c) for X ~ Binomial(n, p0) under H0 and Binomial(n, p1 = min(1, p0 + effect))
    under the alternative (ties: the larger c). c = 0 trusts every teacher, c = n + 1 none.

    Lowering c by one adds P0(X = c) to alpha and takes P1(X = c) from beta, so the sum falls
    exactly while P1(X = c) > P0(X = c): the optimum is the smallest such c, and as the binomial
    likelihood ratio grows with c, that is the first count above
    j* = n log((1 - p0) / (1 - p1)) / (log(p1 / p0) + log((1 - p0) / (1 - p1))). Closed form, so
    exact at any n (a scan of the sums would lose the optimum to rounding once both errors are
    below 1e-16)."""
    if n < 0 or not 0.0 < float(effect) <= 1.0:
        raise ValueError(f"balanced_critical: expected n >= 0 and an effect in (0, 1], got n={n}, effect={effect}")
    p0 = float(p0)
    p1 = min(1.0, p0 + float(effect))
    if p0 >= 1.0:  # no teacher beats a prior that is always right
        c = n + 1
    elif p0 <= 0.0:  # any right answer beats a prior that is never right
        c = 1
    elif p1 >= 1.0:  # only the all-right count is likelier under the alternative
        c = n if n else 1  # no rows: never trusted
    else:
        lq, lp = math.log((1.0 - p0) / (1.0 - p1)), math.log(p1 / p0)
        j = n * lq / (lp + lq)
        c = min(n + 1, math.floor(j) + 1)  # an exact tie at j keeps the larger c
    return c, binomial_sf(c, n, p0), 1.0 - binomial_sf(c, n, p1)


def prior_correct(gold: Sequence[int], groups: Optional[Sequence[Hashable]] = None) -> int:
    """Rows the label prior gets right: in each group, the count of its most frequent gold label
    (rows whose gold is not among the candidates, gold < 0, are never right)."""
    by_group: Dict[Hashable, Counter] = defaultdict(Counter)
    for i, g in enumerate(gold):
        if g >= 0:
            by_group[None if groups is None else groups[i]][int(g)] += 1
    return sum(max(c.values()) for c in by_group.values())


def teacher_right(cand_logits: torch.Tensor, gold: torch.Tensor,
                  cand_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N,) bool: the teacher's top candidate (within the row's mask) is the gold one (gold < 0,
    not among the candidates, is never right)."""
    scores = cand_logits.float()
    if cand_mask is not None:
        scores = scores.masked_fill(~cand_mask.bool(), float("-inf"))
    pred = scores.argmax(-1)
    gold = gold.long().to(pred.device)
    return (pred == gold) & (gold >= 0)


def trust_decision(cand_logits: torch.Tensor, gold: torch.Tensor, alpha: float = 0.05,
                   cand_mask: Optional[torch.Tensor] = None, effect: Optional[float] = None) -> TrustDecision:
    """The gate from the teacher's candidate scores of the labelled rows.

    cand_logits (N, C); gold (N,) index of the gold candidate or -1; cand_mask (N, C) bool or
    None (rows with the same mask form one prior group); effect: None for the fixed level `alpha`,
    else the balanced rule's lead over the prior (a share, e.g. 0.1; `balanced_critical`)."""
    n = int(gold.shape[0])
    if n == 0:
        return TrustDecision(0, 0.0, 0.0, 1.0, alpha, False)
    groups = None if cand_mask is None else [bytes(row) for row in cand_mask.bool().cpu().numpy()]
    k = int(teacher_right(cand_logits, gold, cand_mask).sum())
    k0 = prior_correct(gold.long().tolist(), groups)
    p0 = k0 / n
    p = binomial_sf(k, n, p0)
    if effect is None:
        return TrustDecision(n, 100.0 * k / n, 100.0 * p0, p, alpha, p < alpha)
    c, a, b = balanced_critical(n, p0, effect)
    return TrustDecision(n, 100.0 * k / n, 100.0 * p0, p, a, k >= c, critical=c, effect=float(effect), power=1.0 - b)


def group_decisions(cand_logits: torch.Tensor, gold: torch.Tensor, groups: Sequence[Hashable], alpha: float = 0.05,
                    cand_mask: Optional[torch.Tensor] = None,
                    effect: Optional[float] = None) -> Dict[Hashable, TrustDecision]:
    """`trust_decision` for each trust group's rows. groups: one hashable per row."""
    members: Dict[Hashable, list] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = {}
    for g, rows in members.items():
        idx = torch.tensor(rows, dtype=torch.long)
        out[g] = trust_decision(cand_logits[idx], gold[idx], alpha, None if cand_mask is None else cand_mask[idx],
                                effect=effect)
    return out


CHECK_TESTS = ("count", "mcnemar")  # method.student_check_test
HANDOVER_SCOPES = ("all", "labelled")  # method.handover_scope


def mcnemar_p(b: int, c: int) -> float:
    """Exact one-sided McNemar test that the student is better: b = teacher right and student
    wrong, c = the reverse; p = P(X >= c | X ~ Binomial(b + c, 1/2))."""
    return binomial_sf(c, b + c, 0.5)


def check_steps(at: float, every: float, total_steps: int) -> List[int]:
    """The held-back check's steps: `at`, `at + every`, `at + 2 every`, ... (shares of the run's
    `total_steps`, each below 1), as steps; one check when `every` is 0. Repeated steps (a short
    run) are dropped."""
    shares, k = [float(at)], 1
    while every > 0 and float(at) + k * float(every) < 1.0 - 1e-9:
        shares.append(float(at) + k * float(every))
        k += 1
    return sorted({int(share * int(total_steps)) for share in shares})


class StudentHandover:
    """`method.handover`: the answer-level term hands over to the labels once the student answers
    better than the teacher.

    The trust gate asks, before training, whether the teacher beats the label prior. With many
    labels that is the wrong bar: the student soon learns more from its labels than the teacher
    knows, and the teacher's distribution then pulls it back. So the answers are compared during
    training, on the rows where the comparison is honest: a labelled row's first visit, before any
    update on it, is a held-out prediction for the student (prequential evaluation), and the
    teacher's answer to the same row is fixed. Per trust group, each block of `window` first
    visits is one exact one-sided McNemar test on its discordant rows,

        b = teacher right, student wrong;  c = student right, teacher wrong;
        p = P(X >= c | X ~ Binomial(b + c, 1/2)),

    and at the first block with p < alpha the group's answer-level term is off for the rest of
    the run (it never comes back: the student only learns more). A right answer is the argmax of
    the row's candidate scores equal to its gold candidate, for the student and the teacher alike.
    With few labels a group's first visits end before a block fills (1 % of a split rarely fills
    one). For those runs the held-back check (`method.student_check`, a share of the labelled
    rows) compares the two on rows the student has not learnt the labels of: their labels (and the
    answer-level term on them) wait until step `check_step`; every visit before it is a held-out
    prediction of the student, and at `check_step` the student's latest answers to them are
    compared with the teacher's on the same rows, pooled over the rows whose answer-level term the
    gate kept (`eligible`). `check_test` says when the term is then off for the rest of the run
    (every group's `off_step` is the check step): `count`, when the student answers at least as
    many of them right as the teacher; `mcnemar`, when the exact one-sided McNemar test of the
    blocks, on the held-back rows' discordant pairs, finds the student better at `alpha` (a tie or
    a lead of one on a few rows keeps the teacher, as a block would). Either way the
    held-back rows' labels then count as every other row's. No eligible held-back row seen: no
    evidence, the term stays as the gate left it. With several check steps (`check_steps`,
    `method.student_check_every`) the held-back rows stay held back after a check that keeps the
    term, and the next check compares the student's latest answers to them again; the first check
    that turns the term off, or the last one, ends the holding.
    """

    def __init__(self, teacher_right: torch.Tensor, groups: Sequence[Hashable], window: int = 200,
                 alpha: float = 0.05, held_back: Optional[torch.Tensor] = None, check_step: int = 0,
                 eligible: Optional[torch.Tensor] = None, stages: int = 1, check_features: bool = False,
                 check_answers: bool = False, check_test: str = "count", scope: str = "all") -> None:
        """teacher_right (N,) over the teacher rows: 1 right, 0 wrong, -1 unlabelled (never
        counted); groups: one hashable per teacher row (its trust group). held_back (N,) bool: the
        teacher rows of the held-back check (None: no check); check_step: the step it runs at;
        eligible (N,) bool: the rows whose answer-level term the trust gate kept (None: all);
        stages: teacher rows per instance (VCR's 2), for `label_weight` by instance index;
        check_features: the feature terms follow the check too (`features_on`); check_answers: the
        answer-level term of every row waits for the check (`gate`); check_test: the check's rule,
        count | mcnemar (`method.student_check_test`); scope: the answer-level terms a handover (a
        block's test or the check) turns off, all | labelled (`method.handover_scope`: the
        label-free rows' answer term keeps running after it)."""
        if int(window) < 1:
            raise ValueError(f"method.handover_window must be >= 1, got {window}")
        if check_test not in CHECK_TESTS:
            raise ValueError(f"method.student_check_test must be one of {', '.join(CHECK_TESTS)}, got {check_test!r}")
        if scope not in HANDOVER_SCOPES:
            raise ValueError(f"method.handover_scope must be one of {', '.join(HANDOVER_SCOPES)}, got {scope!r}")
        self.check_test, self.scope = str(check_test), str(scope)
        self.teacher_right = torch.as_tensor(teacher_right).long().cpu()
        names = sorted({str(g) for g in groups})
        self.names = names
        index = {g: i for i, g in enumerate(names)}
        self.group = torch.tensor([index[str(g)] for g in groups], dtype=torch.long)
        self.window, self.alpha = int(window), float(alpha)
        self.seen = torch.zeros(len(self.teacher_right), dtype=torch.bool)
        self.block: Dict[int, list] = {i: [] for i in range(len(names))}  # (student right, teacher right) pairs
        self.tests: Dict[int, list] = {i: [] for i in range(len(names))}  # every block's figures
        self.off_step: Dict[int, Optional[int]] = {i: None for i in range(len(names))}
        n = len(self.teacher_right)
        self.held_back = (torch.zeros(n, dtype=torch.bool) if held_back is None
                          else torch.as_tensor(held_back).bool().cpu())
        self.eligible = torch.ones(n, dtype=torch.bool) if eligible is None else torch.as_tensor(eligible).bool().cpu()
        self.check_steps = [int(check_step)]  # the checks' steps, ascending (`check_steps(...)`)
        self.checks: list = []  # the record of every check done so far
        self.stages = int(stages)
        self.check_features, self.check_answers = bool(check_features), bool(check_answers)
        self.latest = torch.full((n,), -1, dtype=torch.long)  # held-back rows: the student's latest answer (1/0)
        self.check: Optional[Dict[str, Any]] = self._unchecked()

    def describe_check(self, record: Dict[str, Any]) -> str:
        """One line for the log: a check's figures and what it decided (`record`, one of `checks`)."""
        test = (f" (McNemar b={record['b']}, c={record['c']}, p={record['p_value']:.3g})"
                if record.get("test") == "mcnemar" else "")
        if not record["answer_term"]:
            decision = "the answer-level term is off from here, the held-back labels count"
        elif record is self.check:
            decision = "the answer-level term stays on, the held-back labels count"
        else:
            decision = "the answer-level term stays on, the rows stay held back for the next check"
        return (f"held-back check at step {record['step']}: student {record['student_right']}, teacher "
                f"{record['teacher_right']} of {record['rows']} held-back rows right{test}: {decision}")

    def _unchecked(self) -> Optional[Dict[str, Any]]:
        """`check` before the check step: None (pending), or skipped when nothing is held back."""
        return None if bool(self.held_back.any()) else {"skipped": True}

    @property
    def check_step(self) -> int:
        """The step of the next check (the last one's once every check is done)."""
        return self.check_steps[min(len(self.checks), len(self.check_steps) - 1)]

    @check_step.setter
    def check_step(self, step: int) -> None:
        self.check_steps = [int(step)]

    @property
    def holding(self) -> bool:
        """The held-back rows' labels still wait for the check."""
        return self.check is None

    def label_weight(self, index: torch.Tensor) -> Optional[torch.Tensor]:
        """(B,) float for a batch's split indices: 0 for a held-back instance before the check,
        else 1; None once nothing is held back (the task loss then runs unweighted)."""
        if not self.holding:
            return None
        rows = torch.as_tensor(index).cpu().long() * self.stages
        return (~self.held_back[rows]).float()

    @property
    def features_on(self) -> bool:
        """`method.check_features`: the token and global terms run once the check is done (or
        skipped: nothing held back) and only if it kept the answer-level term."""
        return self.check is not None and bool(self.check.get("skipped") or self.check["answer_term"])

    def gate(self, rows: torch.Tensor, label_free: bool = False) -> torch.Tensor:
        """(R,) float: 0 for the rows whose group has handed over, else 1. `label_free`: the rows
        of a label-free batch (unlabelled rows, labelled rows' augmented copies), whose answer term
        a handover leaves on under scope `labelled`; the holding before the check still applies."""
        rows = torch.as_tensor(rows).cpu().long()
        g = self.group[rows]
        off = torch.tensor([self.off_step[i] is not None for i in range(len(self.names))], dtype=torch.bool)
        if label_free and self.scope == "labelled":
            off = torch.zeros_like(off)
        on = ~off[g]
        if self.holding and self.check_answers:  # method.check_answers: no row is taught before the check
            on = torch.zeros_like(on)
        elif self.holding:  # the answer term would teach the held-back rows the teacher's answers
            on = on & ~self.held_back[rows]
        return on.float()

    def observe(self, rows: torch.Tensor, student_right: torch.Tensor, step: int) -> None:
        """Record the student's answers to the batch's teacher rows (before the update on them)
        and run the test of every block that fills. rows (R,) teacher row indices; student_right (R,)."""
        rows = torch.as_tensor(rows).cpu().long()
        right = torch.as_tensor(student_right).cpu().bool()
        if self.holding and step >= self.check_step:
            self._check(step)  # before this batch: its answers come after check_step updates
        if self.holding:
            held = self.held_back[rows]
            self.latest[rows[held]] = right[held].long()
        for r, s in zip(rows.tolist(), right.tolist()):
            t = int(self.teacher_right[r])
            if self.seen[r] or t < 0:
                continue
            self.seen[r] = True
            g = int(self.group[r])
            if self.off_step[g] is not None:
                continue
            self.block[g].append((int(s), t))
            if len(self.block[g]) == self.window:
                self._test(g, step)

    def _check(self, step: int) -> None:
        seen = self.held_back & self.eligible & (self.latest >= 0) & (self.teacher_right >= 0)
        s, t = self.latest[seen].bool(), self.teacher_right[seen].bool()
        student, teacher, n = int(s.sum()), int(t.sum()), int(seen.sum())
        b, c = int((t & ~s).sum()), int((s & ~t).sum())
        p = mcnemar_p(b, c)
        if self.check_test == "mcnemar":
            off = n > 0 and p < self.alpha
        else:
            off = n > 0 and student >= teacher
        record = {"step": int(step), "held_back": int(self.held_back[self.teacher_right >= 0].sum()), "rows": n,
                  "student_right": student, "teacher_right": teacher, "answer_term": not off}
        if self.check_test != "count":  # the count rule's record is unchanged
            record.update(test=self.check_test, b=b, c=c, p_value=float(f"{p:.6g}"))
        self.checks.append(record)
        if not off and len(self.checks) < len(self.check_steps):
            return  # the teacher keeps its lead: the rows stay held back for the next check
        self.check = record
        if off:
            for g in self.off_step:
                if self.off_step[g] is None:
                    self.off_step[g] = int(step)

    def _test(self, g: int, step: int) -> None:
        pairs, self.block[g] = self.block[g], []
        b = sum(1 for s, t in pairs if t and not s)
        c = sum(1 for s, t in pairs if s and not t)
        p = mcnemar_p(b, c)
        self.tests[g].append({"step": int(step), "rows": len(pairs), "student_right": sum(s for s, _ in pairs),
                              "teacher_right": sum(t for _, t in pairs), "b": b, "c": c,
                              "p_value": float(f"{p:.6g}")})
        if p < self.alpha:
            self.off_step[g] = int(step)

    def as_dict(self) -> Dict[str, Any]:
        """metrics.json `teacher_trust.handover`: per group the step it handed over at (null: never)
        and every block's test."""
        return {"window": self.window, "alpha": self.alpha, "check": self.check,
                **({"check_steps": self.check_steps, "checks": self.checks} if len(self.check_steps) > 1 else {}),
                "check_features": self.check_features, "check_answers": self.check_answers,
                **({"scope": self.scope} if self.scope != "all" else {}),
                "groups": {name: {"off_step": self.off_step[i], "first_visits": int(self.seen[self.group == i].sum()),
                                  "tests": self.tests[i]} for i, name in enumerate(self.names)}}

    def state_dict(self) -> Dict[str, Any]:
        """JSON-able state (a checkpoint's run state), enough to resume the same decisions."""
        return copy.deepcopy({"seen": torch.nonzero(self.seen).flatten().tolist(),
                              "block": {self.names[g]: v for g, v in self.block.items()},
                              "tests": {self.names[g]: v for g, v in self.tests.items()},
                              "off_step": {self.names[g]: v for g, v in self.off_step.items()},
                              "latest": {str(r): int(self.latest[r])
                                         for r in torch.nonzero(self.latest >= 0).flatten().tolist()},
                              "check": self.check, "checks": self.checks})

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        index = {n: i for i, n in enumerate(self.names)}
        self.seen.zero_()
        self.seen[torch.tensor(state["seen"], dtype=torch.long)] = True
        for name, i in index.items():
            self.block[i] = [tuple(p) for p in state["block"].get(name, [])]
            self.tests[i] = list(state["tests"].get(name, []))
            self.off_step[i] = state["off_step"].get(name)
        self.latest.fill_(-1)
        for r, v in state.get("latest", {}).items():
            self.latest[int(r)] = int(v)
        self.check = state.get("check", self._unchecked())
        decided = [self.check] if self.check and "step" in self.check else []  # a checkpoint from before `checks`
        self.checks = list(state.get("checks", decided))
