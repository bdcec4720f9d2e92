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


def test_disagreement_topk_keeps_the_tokens_the_student_gets_most_wrong():
    # teacher tokens along x; student cosines to them: 1, 0, -1, 0.6 -> gaps 0, 1, 2, 0.4
    teacher = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.5, 0.0]]])
    student = torch.tensor([[[4.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [3.0, 4.0]]])
    mask = SELECTORS.create("disagreement_topk", teacher, student_tokens=student, rho=0.5)
    assert mask.tolist() == [[False, True, True, False]]


def test_distiller_selects_by_its_own_projection_of_the_student():
    """disagreement_topk inside the distiller: the token term averages 1 - cos over exactly the
    k tokens where P_v h_j is furthest from z_j (checked against the mean of the k largest)."""
    from clip_td.lib.distill import MethodConfig, create_distiller

    torch.manual_seed(0)
    m = MethodConfig(selection="disagreement_topk", rho=0.25, beta=0.0, eta=0.0, weighting="uniform",
                     text_tokens=False)
    dist = create_distiller(m, student_dim=6, teacher_dim=4)
    hv, zv = torch.randn(2, 16, 6), torch.randn(2, 16, 4)
    student_out = {"image_tokens": hv, "pooled": torch.randn(2, 6), "text_tokens": torch.randn(2, 3, 6)}
    teacher_out = {"patch_tokens": zv, "image_embed": torch.randn(2, 4), "text_embed": torch.randn(2, 4),
                   "cand_logits": torch.randn(2, 3), "gold": torch.tensor([0, 1])}
    out = dist(student_out, teacher_out, {}, torch.randn(2, 3))
    gap = 1 - torch.nn.functional.cosine_similarity(dist.proj_v(hv), zv, dim=-1)  # (2, 16)
    want = gap.topk(4, dim=1).values.mean()
    torch.testing.assert_close(out["tok_loss"], want, rtol=1e-5, atol=1e-6)
