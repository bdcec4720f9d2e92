"""Dynamic weights and schedules on hand-computed cases."""

import math

import pytest
import torch

from clip_td.lib.weighting import SCHEDULES, WEIGHTINGS


def test_confidence_gamma_one_and_two():
    q = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]])
    gold = torch.tensor([0, 1, 0])  # c = 0.8, 0.4, 0.5
    w = WEIGHTINGS.create("confidence", teacher_probs=q, gold=gold, gamma=1.0)
    torch.testing.assert_close(w, torch.tensor([0.8, 0.4, 0.5]) / (1.7 / 3))
    w2 = WEIGHTINGS.create("confidence", teacher_probs=q, gold=gold, gamma=2.0)
    torch.testing.assert_close(w2, torch.tensor([0.64, 0.16, 0.25]) / (1.05 / 3))
    w0 = WEIGHTINGS.create("confidence", teacher_probs=q, gold=gold, gamma=0.0)
    torch.testing.assert_close(w0, torch.ones(3))


def test_confidence_gold_not_a_candidate_gets_no_weight():
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    w = WEIGHTINGS.create("confidence", teacher_probs=q, gold=torch.tensor([-1, 0]), gamma=1.0)
    assert w[0].item() == pytest.approx(0.0, abs=1e-9) and w[1].item() == pytest.approx(2.0)


def test_uniform_and_agreement():
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert WEIGHTINGS.create("uniform", teacher_probs=q).tolist() == [1.0, 1.0]
    p = torch.tensor([[0.0, 1.0], [0.5, 0.5]])  # TV = 1 and 0 -> agreement 0 and 1
    w = WEIGHTINGS.create("agreement", teacher_probs=q, student_probs=p, gamma=1.0)
    torch.testing.assert_close(w, torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)


def test_schedules():
    assert SCHEDULES.create("constant", 7, 10) == 1.0
    assert SCHEDULES.create("linear", 3, 10) == pytest.approx(0.7)
    assert SCHEDULES.create("cosine", 5, 10) == pytest.approx(0.5)
    assert SCHEDULES.create("cosine", 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert SCHEDULES.create("linear", 12, 10) == 0.0
