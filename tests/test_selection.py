"""Token selectors on hand-computed cases."""

import pytest
import torch

from clip_td.base.io import InputError
from clip_td.lib.selection import SELECTORS, num_selected


def test_num_selected():
    assert [num_selected(10, r) for r in (0.0, 0.1, 0.25, 0.26, 1.0)] == [1, 1, 3, 3, 10]


def test_relevance_topk_hand_case():
    # task text along x; token cosines: 1, 0, -1, 0.6 (unnormalised lengths must not matter)
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [3.0, 4.0]]])
    mask = SELECTORS.create("relevance_topk", tokens, task_embed=torch.tensor([[1.0, 0.0]]), rho=0.5)
    assert mask.tolist() == [[True, False, False, True]]


def test_all_and_random_k():
    tokens = torch.zeros(2, 8, 3)
    assert SELECTORS.create("all", tokens).all()
    m1 = SELECTORS.create("random_k", tokens, rho=0.25, generator=torch.Generator().manual_seed(0))
    m2 = SELECTORS.create("random_k", tokens, rho=0.25, generator=torch.Generator().manual_seed(0))
    assert m1.sum(1).tolist() == [2, 2] and torch.equal(m1, m2)


def test_cls_attention_topk():
    att = torch.tensor([[0.1, 0.5, 0.2, 0.05]])
    mask = SELECTORS.create("cls_attention_topk", torch.zeros(1, 4, 2), cls_attention=att, rho=0.5)
    assert mask.tolist() == [[False, True, True, False]]
    with pytest.raises(InputError, match="no teacher CLS attention"):
        SELECTORS.create("cls_attention_topk", torch.zeros(1, 4, 2), rho=0.5)
