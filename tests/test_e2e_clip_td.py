"""`clip_td` end to end on SNLI-VE and VCR (VCR's distillation view included), and the teacher cache
shared by every fraction and seed of a split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clip_td.app.trainer import main
from test_finetune_helpers import read_metrics, tiny_overrides

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")


def run(world, teacher, out, **overrides) -> int:
    return main(["--config", TINY, *tiny_overrides(world, teacher, out, **overrides)])


@pytest.mark.parametrize("task", ["snli_ve", "vcr"])
def test_clip_td_end_to_end(small_world, tiny_teacher, tmp_path, monkeypatch, task):
    import clip_td.app.finetune_model as model_mod
    from clip_td.lib.distill import Distiller

    steps, views = [], []
    real_forward, real_distill = model_mod.FinetuneModel.forward, Distiller.forward

    def forward(self, batch, teacher_out=None, kd_scale=1.0):
        out = real_forward(self, batch, teacher_out, kd_scale)
        if self.training:
            steps.append({k: float(v.detach()) for k, v in out.items() if k.endswith("_loss")})
        return out

    def distill(self, student_out, teacher_out, batch, logits):
        views.append({"instances": batch["pixel_values"].shape[0], "student": student_out["image_tokens"].shape[0],
                      "text": student_out["text_tokens"].shape[0], "ids": batch["input_ids"].shape[0],
                      "teacher": teacher_out["patch_tokens"].shape[0], "logits": tuple(logits.shape)})
        return real_distill(self, student_out, teacher_out, batch, logits)

    monkeypatch.setattr(model_mod.FinetuneModel, "forward", forward)
    monkeypatch.setattr(Distiller, "forward", distill)
    out = tmp_path / task
    # the gate off: every term runs whatever the tiny teacher's accuracy (tests/test_trust.py tests the gate)
    assert run(small_world, tiny_teacher, out, **{"task.name": task, "method.name": "clip_td",
                                                   "train.max_steps": 3, "method.trust_gate": "off"}) == 0
    m = read_metrics(out)
    assert (m["task"], m["method"], m["train"]["steps"]) == (task, "clip_td", 3)
    assert all(0.0 <= v <= 100.0 for scores in m["eval"].values() for v in scores.values())
    assert len(steps) == 3
    for terms in steps:  # every training step carried the three distillation terms, finite
        assert set(terms) == {"task_loss", "tok_loss", "glob_loss", "ans_loss"}, terms
        assert all(math.isfinite(v) and v >= 0.0 for v in terms.values()), terms
        assert terms["tok_loss"] > 0.0 and terms["glob_loss"] > 0.0
    # the distiller saw one student sequence per instance and teacher stage, matched with one teacher
    # row each; VCR: 8 sequences per instance go in, the gold answer's and the gold rationale's
    # sequences and their 4-way logits come out (method.rationales: two teacher stages)
    n_cand, stages = (3, 1) if task == "snli_ve" else (4, 2)
    for v in views:
        assert v["student"] == v["text"] == v["ids"] == v["teacher"] == v["logits"][0] == stages * v["instances"], v
        assert v["logits"][1] == n_cand
    if task == "vcr":  # the trust figures count teacher rows: two stages per labelled instance
        assert m["teacher_trust"]["rows"] == 2 * 50  # 25 % of the small world's 200 VCR training instances


def test_vcr_stages_live_teacher_equals_the_cache(small_world, tiny_teacher, tmp_path, monkeypatch):
    """VCR with both teacher stages: the first step's distillation terms are the same whether the
    teacher runs live on each batch or is read from the cache (which stores token features in
    fp16), so the staged rows line up the same way on both paths."""
    import clip_td.app.finetune_model as model_mod

    first = {}
    real_forward = model_mod.FinetuneModel.forward

    def forward(self, batch, teacher_out=None, kd_scale=1.0):
        out = real_forward(self, batch, teacher_out, kd_scale)
        if self.training and self._tag not in first:
            first[self._tag] = {k: float(v.detach()) for k, v in out.items() if k.endswith("_loss")}
        return out

    monkeypatch.setattr(model_mod.FinetuneModel, "forward", forward)
    for tag, cache in (("cache", "true"), ("live", "false")):
        monkeypatch.setattr(model_mod.FinetuneModel, "_tag", tag, raising=False)
        assert run(small_world, tiny_teacher, tmp_path / tag, **{
            "task.name": "vcr", "method.name": "clip_td", "train.max_steps": 1, "method.trust_gate": "off",
            "teacher.cache": cache, "train.eval_every": 0, "eval.splits": "[val]"}) == 0
    assert set(first["cache"]) == {"task_loss", "tok_loss", "glob_loss", "ans_loss"}
    for key, value in first["cache"].items():
        assert first["live"][key] == pytest.approx(value, rel=2e-3, abs=1e-4), key


def test_one_cache_per_split_shared_by_fractions_and_seeds(small_world, tiny_teacher, tmp_path, monkeypatch):
    """VQA (its answer vocabulary, the teacher's candidates, depends on the low-shot rows): runs of
    two fractions and seeds build the training split's cache once; the second encodes no image."""
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import TeacherCache
    from tasks import get_task

    calls = {"images": 0}
    real = FrozenTeacher.encode_images

    def encode_images(self, *a, **kw):
        calls["images"] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(FrozenTeacher, "encode_images", encode_images)
    common = {"method.name": "clip_td", "train.max_steps": 1, "train.eval_every": 0}
    assert run(small_world, tiny_teacher, tmp_path / "a", **common, **{"train.fraction": 0.25, "seed": 0}) == 0
    first = calls["images"]
    assert first > 0
    assert run(small_world, tiny_teacher, tmp_path / "b", **common, **{"train.fraction": 0.5, "seed": 1}) == 0
    assert calls["images"] == first  # the second run read the first one's cache
    vocab_a = json.loads((tmp_path / "a" / "answers.json").read_text())
    vocab_b = json.loads((tmp_path / "b" / "answers.json").read_text())
    assert vocab_a != vocab_b  # different candidates, one cache
    caches = [p for p in (tmp_path / "teacher_cache").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1 and caches[0].name.startswith("vqa-train-")
    n_train = len(get_task("vqa").load(small_world / "vqa", "train"))
    assert len(TeacherCache(caches[0])) == n_train  # the whole split, not a low-shot subset
    assert json.loads((caches[0] / "manifest.json").read_text())["shared_candidates"] is True
