"""One-feature probes (clip_td.lib.probe) on hand-computed cases."""

import math

import pytest
import torch

from clip_td.lib.probe import fit_scalar_softmax, fit_threshold, threshold_predict


def test_threshold_by_hand():
    s = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3])
    y = torch.tensor([1, 0, 0, 0, 1])  # sorted by s: 0 0 1 0 1 -> cuts after 0.2 or after 0.4 both get 4/5
    t, above = fit_threshold(s, y)
    assert above is True and t == pytest.approx(0.25)  # ties go to the smallest t
    assert threshold_predict(s, t, above).tolist() == [1, 0, 1, 0, 1]


def test_mirrored_labels_give_the_mirrored_rule():
    s = torch.tensor([0.1, 0.2, 0.3, 0.4])
    t, above = fit_threshold(s, torch.tensor([1, 1, 0, 0]))
    assert above is False and t == pytest.approx(0.25)
    assert threshold_predict(s, t, above).tolist() == [1, 1, 0, 0]


def test_equal_scores_are_never_split():
    # 0 and 1 at the same score: the only realisable cuts are around the pair
    s = torch.tensor([0.0, 1.0, 1.0, 2.0])
    t, above = fit_threshold(s, torch.tensor([0, 0, 1, 1]))
    assert t in (pytest.approx(0.5), pytest.approx(1.5)) and above is True
    assert (threshold_predict(s, t, above) == torch.tensor([0, 0, 1, 1])).sum() == 3


def test_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_threshold(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_scalar_softmax_matches_the_closed_form_on_two_symmetric_classes():
    # s = -1 / +1 with labels 0 / 1, each point twice wrong in 4: the MLE of p(1 | s = 1) is 3/4,
    # so w1 - w0 = log 3 (z = s, since mean 0 and std 1) with equal biases (up to the tiny L2 term)
    s = torch.tensor([-1.0] * 4 + [1.0] * 4)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    m = fit_scalar_softmax(s, y, 2, l2=0.0)
    p = m.probs(torch.tensor([-1.0, 1.0]))
    assert p[1, 1].item() == pytest.approx(0.75, abs=1e-5) and p[0, 0].item() == pytest.approx(0.75, abs=1e-5)
    assert (m.w[1] - m.w[0]).item() == pytest.approx(math.log(3), abs=1e-5)


def test_scalar_softmax_orders_three_classes_by_score():
    s = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])
    m = fit_scalar_softmax(s, torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    assert m.probs(torch.tensor([0.0, 1.0, 2.0])).argmax(1).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fit_scalar_softmax(s, torch.tensor([0, 0, 1, 1, 2, 3]), 3)


def test_cross_fitted_probs_never_see_the_row_they_predict():
    """Leave-one-out (folds = N) on two score values: each row's p(y | s) is the label frequency at
    its score among the *other* rows (the exact MLE of a two-point logistic fit)."""
    from clip_td.lib.probe import cross_fitted_probs

    s = torch.tensor([-1.0] * 6 + [1.0] * 6)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    p = cross_fitted_probs(s, y, 2, folds=12, l2=0.0)
    assert p.shape == (12, 2)
    # a left-out 0 at s = -1 leaves 3 zeros and 2 ones there; a left-out 1 leaves 4 zeros and 1 one
    assert p[0, 0].item() == pytest.approx(3 / 5, abs=1e-4) and p[4, 0].item() == pytest.approx(4 / 5, abs=1e-4)
    assert p[6, 1].item() == pytest.approx(3 / 5, abs=1e-4) and p[10, 1].item() == pytest.approx(4 / 5, abs=1e-4)
    torch.testing.assert_close(p.sum(1), torch.ones(12))
    torch.testing.assert_close(cross_fitted_probs(s[:1], y[:1], 3), torch.full((1, 3), 1 / 3))  # one row: nothing to fit on
