"""One-feature probes: what a single teacher score (say cos(image, hypothesis)) tells about a label.

Used to measure (and later to read) label information that a teacher's candidate softmax cancels:
on SNLI-VE all three label templates contain the hypothesis h, so cos(image, h) is a shared
offset of the three candidate scores, yet it is the one thing image-text similarity knows.

- `fit_threshold`: the 2-way rule  y = b if s > t else a  (or its mirror) that maximises training
  accuracy; t is the midpoint between two neighbouring training scores.
- `fit_scalar_softmax`: multinomial logistic regression on the standardised score (one weight and
  one bias per class), L2-regularised, fitted by L-BFGS: p(y | s) for K classes.
- `cross_fitted_probs`: p(y | s) for each training row from a probe fitted on the other folds, so a
  row's own label never shapes its prediction (the distiller's SNLI-VE teacher distribution).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def fit_threshold(s: torch.Tensor, y: torch.Tensor) -> Tuple[float, bool]:
    """s (N,) scores, y (N,) in {0, 1} -> (t, above_is_one): the rule predicting 1 where s > t
    (or where s <= t when `above_is_one` is False) with the highest training accuracy; ties go
    to the smallest t. Needs both classes."""
    s, y = s.double().flatten(), y.long().flatten()
    if s.numel() != y.numel() or s.numel() == 0:
        raise ValueError("fit_threshold: s and y must be non-empty and of one length")
    if not (bool((y == 0).any()) and bool((y == 1).any())):
        raise ValueError("fit_threshold: y must hold both classes")
    order = torch.argsort(s, stable=True)
    s, y = s[order], y[order]
    n1 = int(y.sum())
    # cut k: the first k sorted scores predicted 0 and the rest 1; ones_left = ones among the first k
    ones_left = torch.cat([torch.zeros(1, dtype=torch.long), y.cumsum(0)])
    k = torch.arange(s.numel() + 1)
    acc_up = (k - ones_left) + (n1 - ones_left)  # zeros left + ones right
    acc_down = s.numel() - acc_up
    valid = torch.ones_like(k, dtype=torch.bool)  # a cut between two equal scores cannot be realised
    valid[1:-1] = s[1:] > s[:-1]
    best_up = int(torch.where(valid, acc_up, -1).argmax())
    best_down = int(torch.where(valid, acc_down, -1).argmax())
    above, kk = (True, best_up) if acc_up[best_up] >= acc_down[best_down] else (False, best_down)
    if kk == 0:
        t = float(s[0]) - 1.0
    elif kk == s.numel():
        t = float(s[-1])
    else:
        t = float(s[kk - 1] + s[kk]) / 2.0
    return t, above


def threshold_predict(s: torch.Tensor, t: float, above_is_one: bool) -> torch.Tensor:
    above = s.double() > t
    return (above if above_is_one else ~above).long()


class ScalarSoftmax:
    """p(y | s) = softmax(w * z + b), z = (s - mean) / std of the training scores; w, b in R^K."""

    def __init__(self, mean: float, std: float, w: torch.Tensor, b: torch.Tensor) -> None:
        self.mean, self.std, self.w, self.b = mean, std, w, b

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        z = (s.double().flatten() - self.mean) / self.std
        return z[:, None] * self.w[None] + self.b[None]

    def probs(self, s: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(s), dim=-1).float()


def fit_scalar_softmax(s: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3,
                       max_iter: int = 200) -> ScalarSoftmax:
    """Maximum-likelihood (plus l2 * ||w||^2) multinomial logistic regression on one feature."""
    s, y = s.double().flatten(), y.long().flatten()
    if s.numel() != y.numel() or s.numel() == 0:
        raise ValueError("fit_scalar_softmax: s and y must be non-empty and of one length")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"fit_scalar_softmax: labels must lie in [0, {num_classes})")
    mean, std = float(s.mean()), float(s.std(unbiased=False)) or 1.0
    z = (s - mean) / std
    w = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z[:, None] * w[None] + b[None], y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return ScalarSoftmax(mean, std, w.detach(), b.detach())


def cross_fitted_probs(s: torch.Tensor, y: torch.Tensor, num_classes: int, folds: int = 5, seed: int = 0,
                       l2: float = 1e-3) -> torch.Tensor:
    """(N, K) p(y | s) of each row from a `fit_scalar_softmax` probe fitted on the rows of the
    other folds (rows dealt to `folds` folds in a seeded random order; fewer folds when N is
    small; one row: the uniform distribution)."""
    s, y = s.double().flatten(), y.long().flatten()
    n = s.numel()
    folds = min(folds, n)
    if folds < 2:
        return torch.full((n, num_classes), 1.0 / num_classes)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    out = torch.empty(n, num_classes)
    for f in range(folds):
        held = fold_of == f
        probe = fit_scalar_softmax(s[~held], y[~held], num_classes, l2=l2)
        out[held] = probe.probs(s[held])
    return out
