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


def test_weights_are_bounded_after_normalisation():
    from clip_td.lib.weighting import MAX_WEIGHT

    assert MAX_WEIGHT == 4.0
    # batch of 8 where only row 2 has its gold answer among the candidates: c = (0, 0, 0.6, 0, ...).
    # mean-1 alone would give row 2 weight 0.6 / (0.6 / 8) = 8 = B; the bound makes it 4
    q = torch.tensor([[0.4, 0.6]] * 8)
    gold = torch.tensor([-1, -1, 1, -1, -1, -1, -1, -1])
    w = WEIGHTINGS.create("confidence", teacher_probs=q, gold=gold, gamma=1.0)
    expected = torch.zeros(8)
    expected[2] = 4.0
    torch.testing.assert_close(w, expected, atol=1e-6, rtol=0)
    # below the bound nothing changes: c = (0.9, 0.05, 0.05) -> mean 1/3 -> w = (2.7, 0.15, 0.15)
    q3 = torch.tensor([[0.9, 0.1], [0.95, 0.05], [0.95, 0.05]])
    w3 = WEIGHTINGS.create("confidence", teacher_probs=q3, gold=torch.tensor([0, 1, 1]), gamma=1.0)
    torch.testing.assert_close(w3, torch.tensor([2.7, 0.15, 0.15]))
    # c = (1, 0.1, 0.1, 0.1, 0.1): mean 0.28 -> (3.5714, 0.3571, ...): 1 / 0.28 = 3.571 < 4, kept
    q5 = torch.tensor([[1.0, 0.0]] + [[0.9, 0.1]] * 4)
    w5 = WEIGHTINGS.create("confidence", teacher_probs=q5, gold=torch.tensor([0, 1, 1, 1, 1]), gamma=1.0)
    torch.testing.assert_close(w5, torch.tensor([1 / 0.28] + [0.1 / 0.28] * 4))
    # agreement: 5 rows, only the first agrees with the student (TV 0; the others TV 1): 5 -> 4
    qa = torch.tensor([[1.0, 0.0]] * 5)
    pa = torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 4)
    wa = WEIGHTINGS.create("agreement", teacher_probs=qa, student_probs=pa, gamma=1.0)
    torch.testing.assert_close(wa, torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_calibrated_weights_hand_cases():
    """t = clip((q[gold] - 1/K) / (1 - 1/K), 0, 1), w = t^gamma, no batch normalisation."""
    from clip_td.lib.weighting import calibrated

    q = torch.tensor([[1 / 3, 1 / 3, 1 / 3],   # uniform teacher: at chance -> 0
                      [0.0, 1.0, 0.0],         # one-hot right -> 1
                      [1.0, 0.0, 0.0],         # confident and wrong -> 0
                      [0.2, 0.6, 0.2],         # (0.6 - 1/3) / (2/3) = 0.4
                      [0.5, 0.5, 0.0]])        # gold not a candidate (-1) -> 0
    gold = torch.tensor([0, 1, 2, 1, -1])
    w = calibrated(q, gold, gamma=1.0)
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 0.0, 0.4, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(calibrated(q, gold, gamma=2.0)[3], torch.tensor(0.16), atol=1e-6, rtol=0)
    # K_i from the scored candidates: q = (0.5, 0.5, 0) over K = 2 is at chance -> 0; over K = 3, (0.5 - 1/3) / (2/3) = 0.25
    q2 = torch.tensor([[0.5, 0.5, 0.0]] * 2)
    w2 = calibrated(q2, torch.tensor([0, 0]), num_candidates=torch.tensor([2, 3]))
    torch.testing.assert_close(w2, torch.tensor([0.0, 0.25]), atol=1e-6, rtol=0)
    # a whole batch at chance distils nothing (a mean-1 normalisation would have given every row 1)
    assert calibrated(torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0])).sum().item() == 0.0
