"""Distillation terms on hand-computed values, method presets, and the distiller's gradients."""

import math
from pathlib import Path

import pytest
import torch

from clip_td.base.io import InputError

from clip_td.lib.distill import (METHODS, MethodConfig, NoDistillation, _masked_distance_sum, answer_kl, create_distiller,
                                 first_segment_offsets, masked_candidates, resolve_method)
from clip_td.lib.token_grid import resample_grid


def _linear(weight):
    """nn.Linear with the given (out, in) weight and zero bias."""
    layer = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.zero_()
    return layer


def test_masked_distance_sum_hand_case():
    # the per-instance token sum the distiller uses: sum over masked j of 1 - cos(P s_j, z_j)
    identity = _linear([[1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 0.0]]])
    z = torch.tensor([[[4.0, 3.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True], [False, True]])
    # row 0: 1 - 24/25 = 0.04 and 1 - 0 = 1; row 1: only token 2, parallel: 0
    torch.testing.assert_close(_masked_distance_sum(identity, s, z, mask), torch.tensor([1.04, 0.0]))
    # P = diag(2, 1): P s_00 = (6, 4) against (4, 3): cos = 36 / (sqrt(52) * 5) = 0.998460
    scaled = _masked_distance_sum(_linear([[2.0, 0.0], [0.0, 1.0]]), s, z, torch.tensor([[True, False], [False, False]]))
    torch.testing.assert_close(scaled, torch.tensor([1.0 - 36.0 / (math.sqrt(52.0) * 5.0), 0.0]))
    assert abs(scaled[0].item() - 0.0015395) < 1e-6
    # tokens outside the mask are never projected: a NaN there changes nothing
    s_nan = s.clone()
    s_nan[1, 0] = float("nan")
    torch.testing.assert_close(_masked_distance_sum(identity, s_nan, z, mask), torch.tensor([1.04, 0.0]))


@pytest.mark.parametrize("dense", [True, False])
def test_masked_distance_sum_gpu_form_matches_the_gather(dense):
    # the GPU form (every token projected, the mask zeroes the rest: no data-dependent shape)
    # gives the hand case's sums and, on random inputs, the gathered form's values and gradients
    identity = _linear([[1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 0.0]]])
    z = torch.tensor([[[4.0, 3.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True], [False, True]])
    torch.testing.assert_close(_masked_distance_sum(identity, s, z, mask, dense=dense), torch.tensor([1.04, 0.0]))
    g = torch.Generator().manual_seed(0)
    proj = torch.nn.Linear(6, 4)
    s, z = torch.randn(3, 5, 6, generator=g, requires_grad=True), torch.randn(3, 5, 4, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.5
    mask[2] = False  # a row with nothing selected sums to 0
    got = _masked_distance_sum(proj, s, z, mask, dense=dense)
    (g_s, g_w) = torch.autograd.grad(got.sum(), [s, proj.weight])
    ref = torch.stack([sum((1 - torch.cosine_similarity(proj(s[b, j]), z[b, j], dim=0)) for j in range(5) if mask[b, j])
                       if mask[b].any() else torch.tensor(0.0) for b in range(3)])
    (r_s, r_w) = torch.autograd.grad(ref.sum(), [s, proj.weight])
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(g_s, r_s)
    torch.testing.assert_close(g_w, r_w)
    assert got[2].item() == 0.0 and g_s[2].abs().sum().item() == 0.0


def _hand_case():
    """One instance, d = h = 2: one image token (1x1 grid), one aligned text token, and the globals.

    image: student (3, 4) vs teacher (4, 3): 1 - 24/25 = 0.04; text: student "red" (1, 0) vs the
    teacher's "red" (0, 1): 1 - 0 = 1; pooled (1, 0) vs image_embed (1, 0): 0, vs text_embed (0, 1): 1.
    """
    student = {"image_tokens": torch.tensor([[[3.0, 4.0]]], requires_grad=True),
               "text_tokens": torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]], requires_grad=True),
               "pooled": torch.tensor([[1.0, 0.0]], requires_grad=True)}
    teacher = {"patch_tokens": torch.tensor([[[4.0, 3.0]]]), "image_embed": torch.tensor([[1.0, 0.0]]),
               "text_embed": torch.tensor([[0.0, 1.0]]),
               "token_feats": torch.tensor([[[5.0, 5.0], [0.0, 1.0], [7.0, -2.0]]]),
               "token_mask": torch.tensor([[False, True, False]]),
               "token_offsets": torch.tensor([[[-1, -1], [0, 3], [-1, -1]]]),
               "cand_logits": torch.tensor([[0.0, math.log(3.0)]]), "gold": torch.tensor([0])}
    batch = {"offsets": torch.tensor([[[0, 0], [0, 3], [0, 0]]])}  # [CLS] red [SEP]
    return student, teacher, batch


def test_distiller_tok_and_glob_loss_and_their_gradients_hand_case():
    dist = _distiller("clip_td", {"selection": "all", "weighting": "uniform", "alpha": 1.0, "beta": 0.5,
                                  "eta": 0.0}, 2, 2)
    for p in (dist.proj_v, dist.proj_t, dist.proj_g):
        with torch.no_grad():
            p.weight.copy_(torch.eye(2))
            p.bias.zero_()
    student, teacher, batch = _hand_case()
    out = dist(student, teacher, batch, torch.zeros(1, 2))
    assert sorted(k for k in out if k.endswith("_loss")) == ["glob_loss", "tok_loss"]
    assert out["tok_loss"].item() == pytest.approx((0.04 + 1.0) / 2, abs=1e-6)  # mean over the 2 tokens = 0.52
    assert out["glob_loss"].item() == pytest.approx(0.5 * 0.5 * (0.0 + 1.0), abs=1e-6)  # alpha beta mean = 0.25
    (out["tok_loss"] + out["glob_loss"]).backward()
    # d/dh (1 - cos(h, z)) / 2 with h = (3, 4), z = (4, 3): -(z / 25 - 0.96 h / 25) / 2 = (-0.0224, 0.0168)
    torch.testing.assert_close(student["image_tokens"].grad, torch.tensor([[[-0.0224, 0.0168]]]))
    # text token (1, 0) vs (0, 1): -(z - 0 * s) / 2 = (0, -0.5); [CLS] and [SEP] align to nothing: 0
    torch.testing.assert_close(student["text_tokens"].grad, torch.tensor([[[0.0, 0.0], [0.0, -0.5], [0.0, 0.0]]]))
    # pooled g = (1, 0): 0.25 * d/dg [(1 - cos(g, (1, 0))) + (1 - cos(g, (0, 1)))] = 0.25 * ((0, 0) + (0, -1))
    torch.testing.assert_close(student["pooled"].grad, torch.tensor([[0.0, -0.25]]))
    # projection weights: outer(upstream gradient, input)
    torch.testing.assert_close(dist.proj_v.weight.grad, torch.tensor([[-0.0672, -0.0896], [0.0504, 0.0672]]))
    torch.testing.assert_close(dist.proj_t.weight.grad, torch.tensor([[0.0, 0.0], [-0.5, 0.0]]))
    torch.testing.assert_close(dist.proj_g.weight.grad, torch.tensor([[0.0, 0.0], [-0.25, 0.0]]))


def _two_row_case(dist):
    """`dist`'s projections set to the identity and the hand case repeated over a batch of two
    rows -> (student, teacher, batch); the student tensors are fresh leaves that need a gradient."""
    for p in (dist.proj_v, dist.proj_t, dist.proj_g):
        with torch.no_grad():
            p.weight.copy_(torch.eye(2))
            p.bias.zero_()
    student, teacher, batch = _hand_case()
    student = {k: v.detach().repeat(2, *([1] * (v.dim() - 1))).requires_grad_() for k, v in student.items()}
    teacher = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in teacher.items()}
    return student, teacher, {k: v.repeat(2, 1, 1) for k, v in batch.items()}


def test_feature_gate_keeps_the_feature_terms_to_the_rows_the_answer_term_reads():
    """Two copies of the hand case; the gate passes row 1 only. With method.feature_gate the token
    and global terms of row 0 are 0 (value and gradient) and row 1 keeps its own: the means over the
    batch halve. Without it the gate touches only the answer term."""
    for feature_gate in (True, False):
        dist = _distiller("clip_td", {"selection": "all", "weighting": "uniform", "alpha": 1.0, "beta": 0.5,
                                      "eta": 0.0, "feature_gate": feature_gate}, 2, 2)
        student, teacher, batch = _two_row_case(dist)
        teacher["answer_gate"] = torch.tensor([0.0, 1.0])
        out = dist(student, teacher, batch, torch.zeros(2, 2))
        share = 0.5 if feature_gate else 1.0  # rows whose terms count, over the batch of 2
        assert out["tok_loss"].item() == pytest.approx(share * 0.52, abs=1e-6)  # hand case: 0.52 per row
        assert out["glob_loss"].item() == pytest.approx(share * 0.25, abs=1e-6)  # hand case: 0.25 per row
        torch.testing.assert_close(out["weights"], torch.ones(2))  # the instance weight itself is not gated
        (out["tok_loss"] + out["glob_loss"]).backward()
        # the hand case's gradients (batch of 1) divided by the batch of 2, row 0 zeroed by the gate
        row0 = 0.0 if feature_gate else 0.5
        torch.testing.assert_close(student["image_tokens"].grad[:, 0],
                                   torch.tensor([[-0.0224, 0.0168], [-0.0224, 0.0168]]) * torch.tensor([[row0], [0.5]]))
        torch.testing.assert_close(student["pooled"].grad, torch.tensor([[0.0, -0.25 * row0], [0.0, -0.125]]))


def test_weight_features_false_leaves_the_feature_terms_unweighted():
    """Two rows of the hand case, tau 1: row 0's teacher gives the gold answer 1/4, row 1's 3/4, so
    the confidence weights (mean 1 over the batch) are 0.5 and 1.5; row 1's student image token
    equals the teacher's, so its token term is (0 + 1) / 2 = 0.5 against row 0's 0.52. Weighted
    (the paper): tok_loss = (0.5 * 0.52 + 1.5 * 0.5) / 2 = 0.505; with method.weight_features=false
    the plain mean, 0.51. The weights and the answer-level term are the same either way."""
    got = {}
    for weight_features in (True, False):
        dist = _distiller("clip_td", {"selection": "all", "weighting": "confidence", "alpha": 1.0, "beta": 0.5,
                                      "eta": 1.0, "tau": 1.0, "weight_features": weight_features,
                                      "trust_gate": "off"}, 2, 2)
        student, teacher, batch = _two_row_case(dist)
        with torch.no_grad():
            student["image_tokens"][1, 0] = torch.tensor([4.0, 3.0])
        teacher["cand_logits"] = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
        got[weight_features] = dist(student, teacher, batch, torch.zeros(2, 2))
    for out in got.values():
        torch.testing.assert_close(out["weights"], torch.tensor([0.5, 1.5]))
        assert out["glob_loss"].item() == pytest.approx(0.25, abs=1e-6)  # same 0.5 per row: mean(w) = 1 either way
    assert got[True]["tok_loss"].item() == pytest.approx(0.505, abs=1e-6)
    assert got[False]["tok_loss"].item() == pytest.approx(0.51, abs=1e-6)
    assert got[True]["ans_loss"].item() == pytest.approx(got[False]["ans_loss"].item(), abs=1e-7)
    assert got[True]["ans_loss"].item() > 0


def test_distiller_weights_are_bounded_hand_case():
    # 4 instances; only the first has its gold answer among the candidates (the others: gold -1).
    # confidence weights: c = (0.25, 0, 0, 0) -> mean-1 would give (4, 0, 0, 0) = B; with B = 4 the
    # bound (4) is just reached; with 8 instances it binds: (8 -> 4, 0, ...).
    for b in (4, 8):
        dist = _distiller("clip_td", {"selection": "all", "tau": 1.0, "alpha": 1.0, "beta": 0.0, "eta": 1.0}, 2, 2)
        student, teacher, batch = _hand_case()
        rep = lambda t: t.detach().repeat(b, *([1] * (t.dim() - 1)))
        student = {k: rep(v) for k, v in student.items()}
        teacher = {k: rep(v) for k, v in teacher.items()}
        teacher["gold"] = torch.tensor([0] + [-1] * (b - 1))
        batch = {k: rep(v) for k, v in batch.items()}
        out = dist(student, teacher, batch, torch.zeros(b, 2))  # student p = (0.5, 0.5)
        expected = torch.zeros(b)
        expected[0] = 4.0
        torch.testing.assert_close(out["weights"], expected)
        # q = (0.25, 0.75): KL(q || p) = 0.25 ln 0.5 + 0.75 ln 1.5; mean over b of w * KL = 4 KL / b
        kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
        assert out["ans_loss"].item() == pytest.approx(4.0 * kl / b, rel=1e-5)


def test_teacher_tau_sharpens_the_labelled_rows_teacher_side_only():
    """method.teacher_tau: the answer term's q = softmax(teacher / tau_t) on labelled rows; the
    student side keeps tau and the instance weights keep q at tau. Hand case, 4 rows, only row 0 with
    its gold (candidate 0) among the candidates: teacher logits (0, ln 3), student (0, 0) at tau 2 ->
    p = (1/2, 1/2). tau_t = 1: q = (1/4, 3/4), L_ans = KL(q || p) * tau^2; default (tau_t = tau = 2):
    q = (1, sqrt 3) / (1 + sqrt 3). Row 0's weight is the bound (4) either way: mean of w L = L."""
    def ans_loss(**extra):
        dist = _distiller("clip_td", {"selection": "all", "tau": 2.0, "alpha": 1.0, "beta": 0.0, "eta": 1.0,
                                      "answer_loss": "kl", **extra}, 2, 2)
        student, teacher, batch = _hand_case()
        rep = lambda t: t.detach().repeat(4, *([1] * (t.dim() - 1)))
        student, teacher, batch = ({k: rep(v) for k, v in d.items()} for d in (student, teacher, batch))
        teacher["gold"] = torch.tensor([0, -1, -1, -1])
        out = dist(student, teacher, batch, torch.zeros(4, 2))
        torch.testing.assert_close(out["weights"], torch.tensor([4.0, 0.0, 0.0, 0.0]))
        return out["ans_loss"].item()

    kl = lambda q0: q0 * math.log(2 * q0) + (1 - q0) * math.log(2 * (1 - q0))
    assert ans_loss(teacher_tau=1.0) == pytest.approx(4.0 * kl(0.25), rel=1e-5)
    assert ans_loss() == pytest.approx(4.0 * kl(1 / (1 + math.sqrt(3.0))), rel=1e-5)
    for bad in (0.0, -0.5):
        with pytest.raises(InputError, match="method.teacher_tau"):
            resolve_method(MethodConfig(teacher_tau=bad))


def test_answer_kl_hand_case():
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # q = (0.25, 0.75) at tau = 1
    student = torch.zeros(1, 2)  # p = (0.5, 0.5)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert answer_kl(teacher, student, 1.0).item() == pytest.approx(kl, rel=1e-5)
    # at tau = 2 the same q needs doubled logits, and the term is scaled by tau^2
    assert answer_kl(2 * teacher, student, 2.0).item() == pytest.approx(4 * kl, rel=1e-5)
    assert answer_kl(teacher, teacher, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_resample_grid():
    tokens = torch.arange(8.0).view(1, 4, 2)  # 2x2 grid, d = 2
    assert torch.equal(resample_grid(tokens, (2, 2), (2, 2)), tokens)
    up = resample_grid(tokens, (2, 2), (4, 4))
    assert up.shape == (1, 16, 2)
    torch.testing.assert_close(up[0, [0, 3, 12, 15]], tokens[0])  # corners keep the corner tokens
    const = resample_grid(torch.ones(1, 1, 3), (1, 1), (3, 3))
    torch.testing.assert_close(const, torch.ones(1, 9, 3))


def test_first_segment_offsets():
    off = torch.tensor([[[0, 0], [0, 3], [4, 7], [0, 0], [0, 2], [3, 5], [0, 0]]])
    kept = first_segment_offsets(off)
    assert kept[0].tolist() == [[0, 0], [0, 3], [4, 7], [0, 0], [0, 0], [0, 0], [0, 0]]


def _inputs(b=4, ns=16, nt=4, d=8, h=6, c=3):
    g = torch.Generator().manual_seed(0)
    student = {"pooled": torch.randn(b, h, generator=g), "image_tokens": torch.randn(b, ns, h, generator=g),
               "text_tokens": torch.randn(b, 5, h, generator=g)}
    for v in student.values():
        v.requires_grad_(True)
    teacher = {"patch_tokens": torch.randn(b, nt, d, generator=g), "image_embed": torch.randn(b, d, generator=g),
               "text_embed": torch.randn(b, d, generator=g), "token_feats": torch.randn(b, 4, d, generator=g),
               "token_mask": torch.tensor([[False, True, True, False]] * b),
               "token_offsets": torch.tensor([[[-1, -1], [0, 3], [4, 8], [-1, -1]]] * b),
               "cand_logits": torch.randn(b, c, generator=g), "gold": torch.tensor([0, 1, 2, 0][:b])}
    batch = {"offsets": torch.tensor([[[0, 0], [0, 3], [4, 8], [0, 0], [0, 0]]] * b)}
    return student, teacher, batch, torch.randn(b, c, generator=g)


def _distiller(name, settings, student_dim, teacher_dim):
    """The distiller of method `name` with `settings` over the defaults (preset resolved once)."""
    return create_distiller(resolve_method({"name": name, **settings}), student_dim, teacher_dim)


def test_method_presets():
    assert METHODS.names() == ["clip_td", "clip_td_label_free", "clip_td_nosel", "clip_td_noweight", "naive_kd", "none"]
    none = _distiller("none", {}, 6, 8)
    assert isinstance(none, NoDistillation) and not list(none.parameters()) and none() == {}
    naive = _distiller("naive_kd", {"rho": 0.25}, 6, 8)
    s = naive.settings
    assert (s.selection, s.weighting, s.eta) == ("all", "uniform", 0.0)
    out = naive(*_inputs())
    assert sorted(k for k in out if k.endswith("_loss")) == ["glob_loss", "tok_loss"]
    assert out["weights"].tolist() == [1.0] * 4 and out["selected_frac"].item() == 1.0
    assert _distiller("clip_td_nosel", {}, 6, 8).settings.selection == "all"
    assert _distiller("clip_td_noweight", {}, 6, 8).settings.weighting == "uniform"
    free = resolve_method({"name": "clip_td_label_free", "eta": 0.5})
    assert (free.label_free, free.label_free_answers, free.label_free_features, free.label_free_teacher_tau,
            free.answer_sets, free.probe_contrast) == (1.0, True, False, 0.5, True, True)
    assert (free.label_free_rationales, free.label_free_augment, free.student_check_test) == (True, True, "mcnemar")
    assert (free.eta, free.selection, free.weighting, free.similarity_probe) == (0.5, "relevance_topk", "confidence", True)
    with pytest.raises(InputError, match="method.probe_contrast: needs method.similarity_probe=true"):
        resolve_method({"name": "clip_td_label_free", "similarity_probe": False})
    with pytest.raises(KeyError, match="method.selection='nope': unknown token selector"):
        _distiller("clip_td", {"selection": "nope"}, 6, 8)
    with pytest.raises(InputError, match="method.name='nope': unknown distillation method"):
        _distiller("nope", {}, 6, 8)
    with pytest.raises(InputError, match="method.rhoo"):
        _distiller("clip_td", {"rhoo": 0.1}, 6, 8)


def test_the_label_free_preset_is_the_benchmarks_assembled_recipe_row():
    """`clip_td_label_free` resolves to what `clip_td` with the keys of the committed sweep configs
    of the benchmark's assembled recipe row resolves to (the VCR config and the SNLI-VE config hold
    between them every key of the row; teacher.model is not a method key)."""
    from dataclasses import replace as dc_replace

    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "configs" / "sweep"
    keys = {}
    for name in ("benchmark_place_teacher_place_label_free_rationales_mcnemar_augment.yaml",
                 "benchmark_place_teacher_place_label_free_augment_contrast.yaml"):
        extra = OmegaConf.to_container(OmegaConf.load(root / name).grid.extra)
        for key, values in extra.items():
            assert len(values) == 1, (name, key)
            if key.startswith("method."):
                keys[key.split(".", 1)[1]] = values[0]
    assert sorted(keys) == ["answer_sets", "label_free", "label_free_answers", "label_free_augment",
                            "label_free_features", "label_free_rationales", "label_free_teacher_tau",
                            "probe_contrast", "student_check_test"]
    explicit = resolve_method({"name": "clip_td", **keys})
    assert resolve_method({"name": "clip_td_label_free"}) == dc_replace(explicit, name="clip_td_label_free")
    assert resolve_method({"name": "clip_td"}) != dc_replace(explicit, name="clip_td")


def test_a_preset_warns_when_it_replaces_a_key_the_config_set():
    import warnings

    with pytest.warns(UserWarning, match=r"method.label_free_teacher_tau=1.0 is replaced by the preset "
                                         r"method.name=clip_td_label_free \(0.5\)"):
        free = resolve_method({"name": "clip_td_label_free", "label_free_teacher_tau": 1.0})
    assert free.label_free_teacher_tau == 0.5
    with pytest.warns(UserWarning, match=r"method.selection='random_k' is replaced by the preset method.name=naive_kd"):
        assert resolve_method({"name": "naive_kd", "selection": "random_k"}).selection == "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a key at its default, or one the preset does not set: silent
        assert resolve_method({"name": "clip_td_label_free", "answer_sets": False, "eta": 0.5}).eta == 0.5
        assert resolve_method({"name": "naive_kd", "selection": "all"}).selection == "all"


def test_selection_seed_defaults_to_the_run_seed_and_is_settable():
    assert resolve_method({"name": "clip_td"}, seed=7).selection_seed == 7
    assert resolve_method({"name": "clip_td", "selection_seed": 3}, seed=7).selection_seed == 3
    a = _distiller("clip_td", {"selection": "random_k", "selection_seed": 1}, 6, 8)
    b = _distiller("clip_td", {"selection": "random_k", "selection_seed": 2}, 6, 8)
    assert not torch.equal(torch.rand(8, generator=a.generator), torch.rand(8, generator=b.generator))


def test_clip_td_terms_match_formula():
    torch.manual_seed(0)
    dist = _distiller("clip_td", {"alpha": 2.0, "beta": 0.5, "eta": 1.0, "tau": 2.0, "rho": 0.25}, 6, 8)
    student, teacher, batch, logits = _inputs()
    out = dist(student, teacher, batch, logits)
    w = out["weights"]
    assert out["selected_frac"].item() == pytest.approx(4 / 16)
    ans = answer_kl(teacher["cand_logits"], logits, 2.0)
    assert out["ans_loss"].item() == pytest.approx((2.0 * w * ans).mean().item(), rel=1e-5)
    # w_i follows the teacher's confidence in the gold candidate
    q = torch.softmax(teacher["cand_logits"] / 2.0, -1)
    c = q[torch.arange(4), teacher["gold"]]
    assert c.max() / c.mean() < 4.0  # below the bound: plain mean-1 weights
    torch.testing.assert_close(w, c / c.mean())
    # the answer term's gradient w.r.t. the student logits: alpha eta w_i tau (p_i - q_i) / B
    logits.requires_grad_(True)
    out = dist(student, teacher, batch, logits)
    out["ans_loss"].backward()
    p = torch.softmax(logits.detach() / 2.0, -1)
    torch.testing.assert_close(logits.grad, 2.0 * w.unsqueeze(1) * 2.0 * (p - q) / 4)


def test_token_term_uses_resampled_teacher_grid_and_text():
    # identity projections: student tokens equal to the upsampled teacher tokens give zero token loss
    dist = _distiller("clip_td", {"selection": "all", "beta": 0.0, "eta": 0.0, "weighting": "uniform"}, 8, 8)
    for p in (dist.proj_v, dist.proj_t):
        torch.nn.init.eye_(p.weight)
        torch.nn.init.zeros_(p.bias)
    _, teacher, batch, logits = _inputs(h=8)
    up = resample_grid(teacher["patch_tokens"], (2, 2), (4, 4))
    text = torch.zeros(4, 5, 8)
    text[:, 1], text[:, 2] = teacher["token_feats"][:, 1], teacher["token_feats"][:, 2]
    student = {"pooled": torch.randn(4, 8), "image_tokens": up, "text_tokens": text}
    out = dist(student, teacher, batch, logits)
    assert sorted(k for k in out if k.endswith("_loss")) == ["tok_loss"]
    assert out["tok_loss"].item() == pytest.approx(0.0, abs=1e-5)
    # a wrong text token adds (1 - cos) / (16 image + 2 text tokens) per instance
    text[:, 1] = -teacher["token_feats"][:, 1]
    out = dist({**student, "text_tokens": text}, teacher, batch, logits)
    assert out["tok_loss"].item() == pytest.approx(2.0 / 18, rel=1e-4)


def test_answer_bernoulli_kl_hand_case():
    """Sigmoid head (VQA): teacher [0, ln 3] at tau 1 -> q = [1/4, 3/4]; student logits 0 -> p = 1/2 each.
    KL(Bern(1/4) || Bern(1/2)) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812, the same for q = 3/4."""
    from clip_td.lib.distill import answer_bernoulli_kl

    teacher = torch.tensor([[0.0, math.log(3.0)]])
    one = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert one == pytest.approx(0.130812, abs=1e-6)
    assert answer_bernoulli_kl(teacher, torch.zeros(1, 2), 1.0).item() == pytest.approx(2 * one, rel=1e-5)
    masked = answer_bernoulli_kl(teacher, torch.zeros(1, 2), 1.0, torch.tensor([[True, False]]))
    assert masked.item() == pytest.approx(one, rel=1e-5)
    matched = torch.tensor([[math.log(0.25 / 0.75), math.log(0.75 / 0.25)]])  # logit(q)
    assert answer_bernoulli_kl(teacher, matched, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_answer_loss_follows_the_task_head():
    from clip_td.lib.distill import for_task
    from tasks import get_task

    m = resolve_method({"name": "clip_td"})
    assert for_task(m, get_task("vqa")).answer_loss == "bernoulli"
    assert for_task(m, get_task("snli_ve")).answer_loss == "kl" == for_task(m, get_task("vcr")).answer_loss
    assert for_task(resolve_method({"answer_loss": "kl"}), get_task("vqa")).answer_loss == "kl"
    with pytest.raises(InputError, match="method.answer_loss: unknown value 'mse'"):
        resolve_method({"answer_loss": "mse"})


def test_answer_set_mask_restricts_the_teacher_distribution():
    # hand case: 3 answers, the question type allows {0, 2}; teacher logits (tau = 1) 0, 5, ln 3
    teacher = torch.tensor([[0.0, 5.0, math.log(3.0)]])
    mask = torch.tensor([[True, False, True]])
    q = torch.softmax(masked_candidates(teacher, mask), -1)
    torch.testing.assert_close(q, torch.tensor([[0.25, 0.0, 0.75]]))
    student = torch.zeros(1, 3)  # p = 1/3 each; KL = 0.25 ln(0.75) + 0.75 ln(2.25), finite
    kl = answer_kl(masked_candidates(teacher, mask), student, 1.0)
    assert kl.item() == pytest.approx(0.25 * math.log(0.75) + 0.75 * math.log(2.25), rel=1e-5)
    assert torch.equal(masked_candidates(teacher, None), teacher)
    # the distiller reads batch["cand_mask"]: confidence weights come from the restricted q
    dist = _distiller("clip_td", {"tau": 1.0}, 6, 8)
    student_out, t, batch, logits = _inputs()
    t = {**t, "cand_logits": torch.tensor([[0.0, 5.0, math.log(3.0)]] * 4),
         "gold": torch.tensor([0, 2, 0, 2])}
    logits = torch.zeros(4, 3, requires_grad=True)
    out = dist(student_out, t, {**batch, "cand_mask": mask.expand(4, 3)}, logits)
    torch.testing.assert_close(out["teacher_conf"], torch.tensor([0.25, 0.75, 0.25, 0.75]))
    torch.testing.assert_close(out["weights"], torch.tensor([0.5, 1.5, 0.5, 1.5]))


def test_vqa_answer_sets_from_training_rows():
    from tasks.vqa.answers import answer_set_mask, vqa_answer_sets
    from tasks.vqa.answers import AnswerVocab

    rows = [{"question_type": "what color is the", "multiple_choice_answer": a} for a in ("red", "blue", "red")]
    rows += [{"question_type": "is there a", "multiple_choice_answer": a} for a in ("yes", "no", "maybe")]
    vocab = AnswerVocab(["red", "yes", "no", "blue", "two"])  # "maybe" is not in the vocabulary
    sets = vqa_answer_sets(rows, vocab)
    assert sets == {"what color is the": (0, 3), "is there a": (1, 2)}
    assert answer_set_mask(sets, "is there a", 5).tolist() == [False, True, True, False, False]
    assert answer_set_mask(sets, "how many", 5).tolist() == [True] * 5  # unseen type: no restriction


def test_calibrated_weighting_counts_only_the_scored_candidates():
    # teacher logits (tau = 1) 0, 5, ln 3 restricted to {0, 2}: q = (0.25, 0, 0.75) over K = 2 candidates;
    # gold 0: (0.25 - 1/2) / (1/2) < 0 -> 0; gold 2: (0.75 - 1/2) / (1/2) = 0.5
    dist = _distiller("clip_td", {"tau": 1.0, "weighting": "calibrated"}, 6, 8)
    student_out, t, batch, _ = _inputs()
    t = {**t, "cand_logits": torch.tensor([[0.0, 5.0, math.log(3.0)]] * 4), "gold": torch.tensor([0, 2, 0, 2])}
    mask = torch.tensor([[True, False, True]]).expand(4, 3)
    out = dist(student_out, t, {**batch, "cand_mask": mask}, torch.zeros(4, 3, requires_grad=True))
    torch.testing.assert_close(out["weights"], torch.tensor([0.0, 0.5, 0.0, 0.5]), atol=1e-6, rtol=0)


def test_text_segments_all_aligns_the_second_segment_of_a_pair():
    """A VCR-style pair "red ?" + "cube" read by the teacher as "red ? cube": the student's
    [CLS] red [SEP] cube [SEP] with joined offsets (cube at 6-10). text_segments=all aligns
    both content tokens: image 0.04, red 1 - 0 = 1, cube 1 - 1 = 0 -> mean (0.04 + 1 + 0) / 3;
    text_segments=first drops cube -> (0.04 + 1) / 2."""
    student, teacher, _ = _hand_case()
    student["text_tokens"] = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])
    teacher.update(token_feats=torch.tensor([[[5.0, 5.0], [0.0, 1.0], [3.0, 0.0], [7.0, -2.0]]]),
                   token_mask=torch.tensor([[False, True, True, False]]),
                   token_offsets=torch.tensor([[[-1, -1], [0, 3], [6, 10], [-1, -1]]]))
    batch = {"offsets": torch.tensor([[[0, 0], [0, 3], [0, 0], [6, 10], [0, 0]]])}
    for segments, want in (("all", (0.04 + 1.0 + 0.0) / 3), ("first", (0.04 + 1.0) / 2)):
        dist = _distiller("clip_td", {"selection": "all", "weighting": "uniform", "beta": 0.0, "eta": 0.0,
                                      "text_segments": segments}, 2, 2)
        for p in (dist.proj_v, dist.proj_t):
            with torch.no_grad():
                p.weight.copy_(torch.eye(2))
                p.bias.zero_()
        out = dist(student, teacher, batch, torch.zeros(1, 2))
        assert out["tok_loss"].item() == pytest.approx(want, abs=1e-6), segments
    with pytest.raises(InputError, match="method.text_segments: unknown value 'second'"):
        resolve_method({"text_segments": "second"})


def test_mlp_projector_shapes_and_token_term():
    """method.projector=mlp: P_v, P_t, P_g are Linear(6, 6) -> GELU -> Linear(6, 4); the token term
    is 1 - cos(P_v h_j, z_j) averaged over every token (selection all, uniform weights), computed
    here with a hand-written GELU MLP from the same weights."""
    torch.manual_seed(0)
    dist = _distiller("clip_td", {"projector": "mlp", "selection": "all", "weighting": "uniform", "beta": 0.0,
                                  "eta": 0.0, "text_tokens": False}, 6, 4)
    for p in (dist.proj_v, dist.proj_t, dist.proj_g):
        assert [tuple(m.weight.shape) for m in p if isinstance(m, torch.nn.Linear)] == [(6, 6), (4, 6)]
    hv, zv = torch.randn(2, 4, 6), torch.randn(2, 4, 4)
    out = dist({"image_tokens": hv, "pooled": torch.randn(2, 6), "text_tokens": torch.randn(2, 3, 6)},
               {"patch_tokens": zv, "image_embed": torch.randn(2, 4), "text_embed": torch.randn(2, 4),
                "cand_logits": torch.randn(2, 3), "gold": torch.tensor([0, 1])}, {}, torch.randn(2, 3))
    first, last = dist.proj_v[0], dist.proj_v[2]
    x = hv @ first.weight.T + first.bias
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    y = x @ last.weight.T + last.bias
    want = (1 - torch.nn.functional.cosine_similarity(y, zv, dim=-1)).mean()
    torch.testing.assert_close(out["tok_loss"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="method.projector: unknown value 'deep'"):
        resolve_method({"projector": "deep"})
