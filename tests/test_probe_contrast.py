"""method.probe_contrast: the SNLI-VE teacher speaks to entailment vs contradiction only."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from clip_td.app.trainer import main
from clip_td.base.io import InputError
from clip_td.lib.distill import MethodConfig, answer_kl, gold_allowed, resolve_method
from test_finetune_helpers import probe_rows, tiny_overrides


def test_masked_kl_is_the_kl_over_the_allowed_candidates():
    # teacher logits (1, 0, -1) with the middle candidate masked: q = softmax((1, -1) / 2) over two
    # labels; the student (0.5, 3, 0) likewise p = softmax((0.5, 0) / 2); L = KL(q || p) * tau^2
    t = torch.tensor([[1.0, 0.0, -1.0]])
    s = torch.tensor([[0.5, 3.0, 0.0]])
    mask = torch.tensor([[True, False, True]])
    q1 = 1 / (1 + torch.exp(torch.tensor(-1.0)))  # softmax(0.5, -0.5)[0]
    p1 = 1 / (1 + torch.exp(torch.tensor(-0.25)))  # softmax(0.25, 0)[0]
    hand = (q1 * torch.log(q1 / p1) + (1 - q1) * torch.log((1 - q1) / (1 - p1))) * 4.0
    torch.testing.assert_close(answer_kl(t, s, 2.0, mask=mask), hand.reshape(1))
    # the student's mass on the masked candidate does not matter
    s2 = s.clone()
    s2[0, 1] = -7.0
    torch.testing.assert_close(answer_kl(t, s2, 2.0, mask=mask), hand.reshape(1))
    # no mask: the plain three-way KL, unchanged
    q = torch.softmax(t / 2, -1)
    p = torch.softmax(s / 2, -1)
    torch.testing.assert_close(answer_kl(t, s, 2.0), ((q * (q / p).log()).sum(-1) * 4.0))


def test_gold_allowed_reads_the_mask_at_the_gold_candidate():
    mask = torch.tensor([[True, False, True]] * 4)
    assert gold_allowed(mask, torch.tensor([0, 1, 2, -1])).tolist() == [True, False, True, True]


def test_a_neutral_row_gets_no_answer_term():
    from clip_td.lib.distill import Distiller

    m = resolve_method(MethodConfig(weighting="uniform", beta=0.0, text_tokens=False, similarity_probe=True,
                                    probe_contrast=True))
    d = Distiller(m, 8, 4)
    b = 3
    student = {"image_tokens": torch.randn(b, 4, 8), "pooled": torch.randn(b, 8)}
    teacher = {"patch_tokens": torch.randn(b, 4, 4), "text_embed": torch.randn(b, 4),
               "image_embed": torch.randn(b, 4), "cand_logits": torch.tensor([[2.0, 0.0, -2.0]] * b),
               "gold": torch.tensor([0, 1, 2])}
    mask = torch.tensor([[True, False, True]] * b)
    logits = torch.tensor([[0.0, 5.0, 1.0]] * b)
    out = d(student, teacher, {"cand_mask": mask}, logits)
    per_row = answer_kl(teacher["cand_logits"], logits, 2.0, mask=mask)  # equal for the three rows
    # uniform weights: the mean over the batch of (row 0, 0 for the neutral row, row 2)
    torch.testing.assert_close(out["ans_loss"], (2 * per_row[0]) / 3)
    assert per_row[0] > 0


def test_contrast_needs_the_similarity_probe():
    with pytest.raises(InputError, match="method.probe_contrast: needs method.similarity_probe=true"):
        resolve_method(MethodConfig(probe_contrast=True, similarity_probe=False))


def test_probe_table_is_fitted_on_the_contrast_rows_alone():
    from clip_td.app.teacher_setup import contrast_rows, similarity_probe_logits
    from clip_td.lib.probe import cross_fitted_probs

    rows, cos_all, cache, task = probe_rows(15, seed=1)
    method = SimpleNamespace(tau=2.0, selection_seed=5)
    contrast = torch.tensor([True, False, True])
    labelled = list(range(12))
    pair = contrast_rows(task, rows, labelled, contrast)
    assert pair == [0, 2, 3, 5, 6, 8, 9, 11]  # labels 0 and 2
    table = similarity_probe_logits(None, task, rows, labelled, cache, method, contrast=contrast)
    cos = cos_all[pair]
    p = cross_fitted_probs(cos, torch.tensor([rows[i]["label"] for i in pair]), 3, seed=5)
    torch.testing.assert_close(table[pair], 2.0 * p.clamp_min(1e-6).log())
    assert table[[1, 4, 7, 10, 12, 13, 14]].abs().sum().item() == 0.0  # neutral and unlabelled rows: uniform


@pytest.mark.parametrize("method", [{"method.name": "clip_td", "method.probe_contrast": True},
                                    {"method.name": "clip_td_label_free"}])  # the preset sets probe_contrast
def test_snli_ve_run_with_contrast_labels(small_world, tiny_teacher, tmp_path, monkeypatch, method):
    import clip_td.app.teacher_setup as setup
    from clip_td.lib.distill import Distiller

    seen, calls = [], {}
    real, real_gate, real_table = Distiller.forward, setup.trust_gate, setup.similarity_probe_logits

    def distill(self, student_out, teacher_out, batch, logits):
        seen.append(batch["cand_mask"].clone())
        return real(self, student_out, teacher_out, batch, logits)

    def gate(teacher, task, full_train, idx, *a, **k):
        calls["gate"] = [int(full_train[i]["label"]) for i in idx]
        return real_gate(teacher, task, full_train, idx, *a, **k)

    def table(teacher, task, full_train, idx, *a, **k):
        calls["labelled"] = [int(full_train[i]["label"]) for i in idx]
        return real_table(teacher, task, full_train, idx, *a, **k)

    monkeypatch.setattr(Distiller, "forward", distill)
    monkeypatch.setattr(setup, "trust_gate", gate)
    monkeypatch.setattr(setup, "similarity_probe_logits", table)
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
    out = tmp_path / "run"
    overrides = tiny_overrides(small_world, tiny_teacher, out, **{
        "task.name": "snli_ve", "train.max_steps": 2, "method.trust_gate": "task",
        "method.trust_alpha": 1.0, "method.student_check": 0.0, **method})
    assert main(["--config", tiny, *overrides]) == 0
    trust = json.loads((out / "metrics.json").read_text())["teacher_trust"]
    assert trust["teacher_distribution"] == "similarity_probe, contrast labels"
    # the gate tested the labelled rows of entailment (0) and contradiction (2), every one of them
    assert 1 in calls["labelled"] and sorted(calls["gate"]) == sorted(y for y in calls["labelled"] if y != 1)
    assert trust["rows"] == len(calls["gate"])
    assert len(seen) == 2
    for mask in seen:
        assert mask.tolist() == [[True, False, True]] * len(mask)


def test_every_labelled_vqa_row_keeps_its_answer_term_under_answer_sets(small_world):
    """gold_allowed never drops a labelled VQA row: the answer sets are built from the labelled rows,
    so each row's gold answer is in its question type's set (rows whose answer is outside the
    vocabulary have gold -1 and are kept too)."""
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config
    from tasks import get_task

    task = get_task("vqa")
    rows = task.load(small_world / "vqa", "train").select(range(60))
    task.setup(rows, load_config(FinetuneConfig, overrides=["method.answer_sets=true", "data.answer_min_count=2"]))
    golds = torch.tensor([task.teacher_texts(r)[2] for r in rows])
    masks = torch.stack([task.teacher_extras(r)["cand_mask"] for r in rows])
    assert bool((golds < 0).any()) and not bool(masks.all())  # both cases occur in these rows
    assert gold_allowed(masks, golds).all()


def test_the_label_free_preset_reaches_the_tasks_setup(small_world):
    """`method.name=clip_td_label_free` sets answer_sets / probe_contrast through the preset, not the
    config's keys: the tasks read them from the resolved settings (`with_method`), as the distiller does."""
    from clip_td.app.build import with_method
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config
    from tasks import get_task

    cfg = load_config(FinetuneConfig, overrides=["method.name=clip_td_label_free", "data.answer_min_count=2"])
    assert cfg.method.answer_sets is False and cfg.method.probe_contrast is False  # the raw keys
    settings = with_method(cfg, resolve_method(cfg.method))
    assert settings.method.answer_sets is True and settings.method.label_free_teacher_tau == 0.5
    assert settings.data.answer_min_count == 2 and settings.method.name == "clip_td_label_free"
    vqa = get_task("vqa")
    vqa.setup(vqa.load(small_world / "vqa", "train").select(range(60)), settings)
    assert vqa.answer_sets is not None
    snli = get_task("snli_ve")
    snli.setup(snli.load(small_world / "snli_ve", "train").select(range(30)), settings)
    assert snli.contrast_mask.tolist() == [True, False, True]
    snli.setup(snli.load(small_world / "snli_ve", "train").select(range(30)), cfg)  # the raw config: no pair
    assert snli.contrast_mask is None
