"""Label-free distillation (method.label_free): the term on hand-computed cases, which rows it
reads, and a tiny run that trains on the unlabelled rows of the training split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clip_td.app.build import label_free_indices
from clip_td.app.finetune_model import FinetuneModel
from clip_td.app.trainer import main
from clip_td.base.io import InputError
from clip_td.lib.distill import MethodConfig, create_distiller, resolve_method
from test_finetune_helpers import read_metrics, tiny_overrides

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")


def _identity_distiller(**settings):
    dist = create_distiller(resolve_method(MethodConfig(**settings)), 2, 2)
    for p in (dist.proj_v, dist.proj_t, dist.proj_g):
        with torch.no_grad():
            p.weight.copy_(torch.eye(2))
            p.bias.zero_()
    return dist


def _free_case():
    # 2 images, 1 student token each (a 1x1 grid) against a 1x1 teacher grid
    student = {"image_tokens": torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]]),
               "pooled": torch.tensor([[1.0, 0.0], [1.0, 1.0]])}
    teacher = {"patch_tokens": torch.tensor([[[4.0, 3.0]], [[0.0, 2.0]]]),
               "image_embed": torch.tensor([[1.0, 0.0], [-1.0, -1.0]])}
    return student, teacher


def _stub_model(student_out, dist):
    """A FinetuneModel whose student always returns `student_out` and whose head is the identity
    (logits = pooled), with a 2-image batch of one sequence each."""

    class _Student(torch.nn.Module):
        def forward(self, pixels, ids, mask):
            return student_out

    class _Task:
        def outputs(self, scores, batch):
            return {"logits": scores}

        def distill_view(self, out, batch, result):
            return out, batch, result["logits"]

    batch = {"pixel_values": torch.zeros(2, 3, 4, 4), "input_ids": torch.zeros(2, 3, dtype=torch.long),
             "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    return FinetuneModel(_Task(), _Student(), torch.nn.Identity(), dist), batch


def test_label_free_term_hand_case():
    student, teacher = _free_case()
    dist = _identity_distiller(alpha=0.5, beta=0.5)
    # tokens: 1 - cos((3,4),(4,3)) = 1 - 24/25 = 0.04; 1 - cos((1,0),(0,2)) = 1
    # pooled: 1 - cos((1,0),(1,0)) = 0; 1 - cos((1,1),(-1,-1)) = 2
    # alpha * mean_i [tok_i + beta * glob_i] = 0.5 * ((0.04 + 0) + (1 + 0.5 * 2)) / 2 = 0.51
    assert dist.label_free(student, teacher).item() == pytest.approx(0.51, abs=1e-6)
    assert _identity_distiller(alpha=1.0, beta=0.0).label_free(student, teacher).item() == pytest.approx(0.52, abs=1e-6)


def test_the_model_adds_the_weighted_label_free_term_in_the_same_forward():
    student_out, teacher = _free_case()
    dist = _identity_distiller(alpha=1.0, beta=0.5)
    model, batch = _stub_model(student_out, dist)
    out = model(batch, None, kd_scale=0.5, unlabelled=(batch, teacher, 2.0))
    # 2.0 * 0.5 * ((0.04 + 0) + (1 + 0.5 * 2)) / 2
    assert out["free_loss"].item() == pytest.approx(1.02, abs=1e-6)
    assert "free_loss" not in model(batch, None)


def test_label_free_rows_are_the_unlabelled_ones_and_bad_settings_are_named():
    on = resolve_method(MethodConfig(label_free=1.0))
    assert label_free_indices(8, [0, 1, 2], [3], on, cache=True) == [4, 5, 6, 7]
    augment = resolve_method(MethodConfig(label_free=1.0, label_free_augment=True))
    assert label_free_indices(8, [0, 1, 2], [3], augment, cache=True) == [0, 1, 2, 4, 5, 6, 7]  # never held-out rows
    assert label_free_indices(8, [0, 1, 2], [], resolve_method(MethodConfig()), cache=True) == []  # off by default
    assert label_free_indices(8, [0], [], resolve_method(MethodConfig(name="none", label_free=1.0)), cache=True) == []
    with pytest.raises(InputError, match="method.label_free needs teacher.cache=true"):
        label_free_indices(8, [0], [], on, cache=False)
    with pytest.raises(InputError, match="set method.label_free_augment=true"):
        label_free_indices(4, [0, 1, 2, 3], [], on, cache=True)
    with pytest.raises(InputError, match="method.label_free=-1.0"):
        label_free_indices(4, [0], [], resolve_method(MethodConfig(label_free=-1.0)), cache=True)


def test_a_tiny_run_distils_on_the_unlabelled_rows(small_world, tiny_teacher, tmp_path):
    runs = {}
    for name, extra in (("off", {}), ("on", {"method.label_free": 1.0, "method.label_free_augment": "true"})):
        out = tmp_path / name
        args = tiny_overrides(small_world, tiny_teacher, out, **{
            "task.name": "snli_ve", "method.name": "clip_td", "train.fraction": 0.5, "train.max_steps": 2,
            "seed": 0, **extra})
        assert main(["--config", TINY, *args]) == 0
        runs[name] = read_metrics(out)
    from tasks import get_task

    n_train = len(get_task("snli_ve").load(small_world / "snli_ve", "train"))
    assert "label_free_rows" not in runs["off"]["train"]
    assert runs["on"]["train"]["label_free_rows"] == n_train  # augmented copies: the labelled rows too
    # same seed, same labelled batches: only the label-free term can make the students differ
    from safetensors.torch import load_file

    off, on = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("off", "on"))
    assert off.keys() == on.keys() and any(not torch.equal(off[k], on[k]) for k in off)


def test_free_augment_policy_reaches_the_label_free_copies_only(small_world, tiny_teacher, tmp_path, monkeypatch,
                                                                capsys):
    """data.free_augment_policy: the label-free term's copies pass through that policy and the
    gold-labelled images through data.augment_policy. At fraction 0.5 with augmented copies the
    label-free set holds every training row, so both augmentations run; the labelled rows (2 steps
    of 4, at most one batch read ahead) through photometric_safe alone. A bad value names its key."""
    from clip_td.app import build

    real = build.photometric_augment
    calls = {}

    def counting_augment(policy, key="data.augment_policy"):
        real(policy, key)  # the same check of the value
        calls.setdefault((policy, key), 0)

        def augment(image):
            calls[(policy, key)] += 1
            return image
        return augment

    monkeypatch.setattr(build, "photometric_augment", counting_augment)
    overrides = {"task.name": "snli_ve", "method.name": "clip_td", "train.fraction": 0.5, "train.max_steps": 2,
                 "train.batch_size": 4, "seed": 0, "method.label_free": 1.0, "method.label_free_augment": "true",
                 "data.augment": "true", "data.augment_policy": "photometric_safe"}
    args = tiny_overrides(small_world, tiny_teacher, tmp_path / "run", **overrides,
                          **{"data.free_augment_policy": "photometric"})
    assert main(["--config", TINY, *args]) == 0
    assert set(calls) == {("photometric_safe", "data.augment_policy"), ("photometric", "data.free_augment_policy")}
    assert calls[("photometric_safe", "data.augment_policy")] in (8, 12)
    assert calls[("photometric", "data.free_augment_policy")] >= 8

    calls.clear()  # not set: the copies follow data.augment_policy, one augmentation for both
    args = tiny_overrides(small_world, tiny_teacher, tmp_path / "same", **overrides)
    assert main(["--config", TINY, *args]) == 0
    assert set(calls) == {("photometric_safe", "data.augment_policy")}
    assert calls[("photometric_safe", "data.augment_policy")] >= 16

    args = tiny_overrides(small_world, tiny_teacher, tmp_path / "bad", **overrides,
                          **{"data.free_augment_policy": "wide"})
    capsys.readouterr()
    assert main(["--config", TINY, *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: config key data.free_augment_policy: one of photometric, photometric_noise, photometric_safe, "
        "photometric_augmix, photometric_randconv, got 'wide'")
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_label_free_answer_term_hand_case():
    """method.label_free_answers: alpha * eta * mean_u g_u KL(q_u || p_u) tau^2 on unlabelled rows,
    q_u = softmax(teacher / tau), no instance weight. Row 0: teacher logits (0, 2 ln 3) at tau 2 ->
    q = (1/4, 3/4); student logits 0 -> p = (1/2, 1/2); KL = 1/4 ln(1/2) + 3/4 ln(3/2); row 1:
    teacher = student -> 0; the gate keeps row 0 only in the second case."""
    import math

    dist = create_distiller(resolve_method(MethodConfig(alpha=0.5, eta=2.0, tau=2.0, answer_loss="kl")), 2, 2)
    teacher = {"cand_logits": torch.tensor([[0.0, 2 * math.log(3.0)], [1.0, -1.0]])}
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    kl0 = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) * 4.0
    assert dist.label_free_answers(logits, teacher).item() == pytest.approx(0.5 * 2.0 * kl0 / 2, abs=1e-6)
    gated = {**teacher, "answer_gate": torch.tensor([0.0, 1.0])}
    assert dist.label_free_answers(logits, gated).item() == pytest.approx(0.0, abs=1e-7)


def test_label_free_teacher_tau_sharpens_only_the_teacher_side():
    """method.label_free_teacher_tau: q_u = softmax(teacher / tau_t), the student side keeps tau.
    Row 0: teacher (0, 2 ln 3) at tau_t 1 -> q = (1/10, 9/10); student 0 at tau 2 -> (1/2, 1/2):
    KL = 0.1 ln 0.2 + 0.9 ln 1.8, times tau^2 = 4. Row 1: teacher (1, -1) at tau_t 1 against the
    same logits at tau 2 is no longer 0. Bernoulli head: each answer's KL(Bern(q_c) || Bern(1/2))
    is 0.1 ln 0.2 + 0.9 ln 1.8 for both answers. A temperature <= 0 is refused by name."""
    import math

    teacher = {"cand_logits": torch.tensor([[0.0, 2 * math.log(3.0)], [1.0, -1.0]])}
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    dist = create_distiller(resolve_method(MethodConfig(alpha=0.5, eta=2.0, tau=2.0, answer_loss="kl",
                                                        label_free_teacher_tau=1.0)), 2, 2)
    kl0 = (0.1 * math.log(0.2) + 0.9 * math.log(1.8)) * 4.0
    q0, p0 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))
    kl1 = (q0 * math.log(q0 / p0) + (1 - q0) * math.log((1 - q0) / (1 - p0))) * 4.0
    assert dist.label_free_answers(logits, teacher).item() == pytest.approx(0.5 * 2.0 * (kl0 + kl1) / 2, abs=1e-6)
    bern = create_distiller(resolve_method(MethodConfig(alpha=1.0, eta=1.0, tau=2.0, answer_loss="bernoulli",
                                                        label_free_teacher_tau=1.0)), 2, 2)
    one = 0.1 * math.log(0.2) + 0.9 * math.log(1.8)
    row0 = bern.label_free_answers(logits[:1], {"cand_logits": teacher["cand_logits"][:1]})
    assert row0.item() == pytest.approx(2 * one, abs=1e-6)
    for bad in (0.0, -1.0):
        with pytest.raises(InputError, match="method.label_free_teacher_tau"):
            resolve_method(MethodConfig(label_free_teacher_tau=bad))


def test_label_free_answers_settings_are_checked_and_a_vqa_run_trains(small_world, tiny_teacher, tmp_path):
    from clip_td.app.build import check_label_free_answers
    from tasks import get_task

    with pytest.raises(InputError, match="needs method.label_free > 0"):
        check_label_free_answers(resolve_method(MethodConfig(label_free_answers=True)))
    check_label_free_answers(resolve_method(MethodConfig(label_free=1.0, label_free_answers=True)), get_task("vcr"))
    runs = {}
    for name, extra in (("tokens", {}), ("answers", {"method.label_free_answers": "true"}),
                        ("sets", {"method.label_free_answers": "true", "method.answer_sets": "true"})):
        out = tmp_path / name
        args = tiny_overrides(small_world, tiny_teacher, out, **{
            "task.name": "vqa", "method.name": "clip_td", "train.fraction": 0.25, "train.max_steps": 2,
            "seed": 0, "method.label_free": 1.0, "method.trust_gate": "off", **extra})
        assert main(["--config", TINY, *args]) == 0
        runs[name] = read_metrics(out)
    from safetensors.torch import load_file

    # same seed, same batches: only the answer term on the unlabelled rows makes the students differ
    a, b, c = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("tokens", "answers", "sets"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(b[k], c[k]) for k in b)  # the answer sets change the teacher's targets


def test_label_free_answers_with_answer_sets_hand_case():
    """With a mask (VQA's answer sets) the teacher's distribution is over the allowed candidates
    and the Bernoulli KL sums over them alone. Teacher (0, 2 ln 3, 5), allowed (yes, yes, no), tau 2
    -> q = (1/4, 3/4, 0); student logits 0 -> sigmoid 1/2 each:
    KL(Bern(1/4) || Bern(1/2)) + KL(Bern(3/4) || Bern(1/2)) = 2 (1/4 ln 1/2 + 3/4 ln 3/2)."""
    import math

    dist = create_distiller(resolve_method(MethodConfig(alpha=1.0, eta=1.0, tau=2.0, answer_loss="bernoulli")), 2, 2)
    teacher = {"cand_logits": torch.tensor([[0.0, 2 * math.log(3.0), 5.0]])}
    logits, mask = torch.zeros(1, 3), torch.tensor([[True, True, False]])
    expected = 2 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert dist.label_free_answers(logits, teacher, mask).item() == pytest.approx(expected, abs=1e-6)
    assert dist.label_free_answers(logits, teacher).item() > expected + 0.5  # unmasked: the third answer dominates


def test_unlabelled_vqa_rows_carry_the_answer_set_of_their_question_type(small_world):
    """An unlabelled VQA row (method.label_free_answers with method.answer_sets) carries `cand_mask`,
    the answers its question's type takes in the labelled rows, and nothing of its own label."""
    from clip_td.app.batches import TaskDataset, student_transform
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config
    from tasks import get_task
    from tasks.vqa.answers import answer_set_mask

    task = get_task("vqa")
    ds = task.load(small_world / "vqa", "train")
    settings = load_config(FinetuneConfig, overrides=["method.answer_sets=true"])
    task.setup(ds.select(range(40)), settings)  # the labelled rows: the first 40
    free = TaskDataset(task, ds.select(range(40, 60)), student_transform(32, (0.5,) * 3, (0.5,) * 3),
                       source_index=list(range(40, 60)), label_free=True, free_answers=True, teacher_extras=True)
    n = len(task.answer_vocab)
    for j in range(20):
        item, row = free[j], ds[40 + j]
        assert set(item["targets"]) == {"cand_mask"}
        assert torch.equal(item["targets"]["cand_mask"], answer_set_mask(task.answer_sets, row["question_type"], n))
    assert any(not free[j]["targets"]["cand_mask"].all() for j in range(20))  # some types are restricted
    plain = TaskDataset(task, ds.select(range(40, 42)), student_transform(32, (0.5,) * 3, (0.5,) * 3),
                        label_free=True, free_answers=True)
    assert plain[0]["targets"] == {}


def test_label_free_features_off_leaves_only_the_answer_term():
    """method.label_free_features=false with label_free_answers: free_loss is weight * kd_scale *
    alpha * eta * mean KL(q || p) tau^2 over the unlabelled rows, nothing from tokens or pooled.
    Logits = the pooled vectors (identity head): row 0 (1, 0) against teacher (1, 0) -> 0; row 1
    (1, 1) (uniform) against teacher (0, 2 ln 3) at tau 2 -> q = (1/4, 3/4):
    KL = 1/4 ln(1/2) + 3/4 ln(3/2), times tau^2 = 4."""
    import math

    student_out, teacher = _free_case()
    teacher = {**teacher, "cand_logits": torch.tensor([[1.0, 0.0], [0.0, 2 * math.log(3.0)]])}
    dist = create_distiller(resolve_method(MethodConfig(alpha=1.0, eta=1.0, tau=2.0, answer_loss="kl",
                                                        label_free=1.0, label_free_answers=True,
                                                        label_free_features=False)), 2, 2)
    model, batch = _stub_model(student_out, dist)
    out = model(batch, None, kd_scale=0.5, unlabelled=(batch, teacher, 2.0))
    q0 = torch.softmax(torch.tensor([1.0, 0.0]) / 2, 0)
    p0 = torch.softmax(torch.tensor([1.0, 0.0]) / 2, 0)
    kl0 = float((q0 * (q0 / p0).log()).sum()) * 4.0  # 0: the student matches the teacher
    kl1 = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) * 4.0
    assert out["free_loss"].item() == pytest.approx(2.0 * 0.5 * (kl0 + kl1) / 2, abs=1e-6)
    from clip_td.app.build import check_label_free_answers

    with pytest.raises(InputError, match="method.label_free_features=false leaves the label-free term nothing"):
        check_label_free_answers(resolve_method(MethodConfig(label_free=1.0, label_free_features=False)))


def test_vcr_label_free_answers_read_the_q2a_stage_of_unlabelled_rows(small_world, tiny_teacher, tmp_path,
                                                                      monkeypatch):
    """VCR with method.label_free_answers: each unlabelled row is the question with each of its 4
    answers (no gold answer, no rationale), the student's 4 choice scores meet the teacher's
    Q->A distribution over the same 4 answers (stage 0's teacher row), and the run trains."""
    from tasks import get_task

    task = get_task("vcr")
    row = task.load(small_world / "vcr", "train")[0]
    assert task.label_free_texts(row) == [(row["text"], None)]
    assert task.label_free_texts(row, answers=True) == [(row["text"], a) for a in row["answers"]]
    out = tmp_path / "vcr"
    seen = _vcr_free_run(small_world, tiny_teacher, out, monkeypatch, **{"method.label_free_features": "false"})
    assert seen == [((4, 4), (4, 4), None)] * 2  # VCR has no answer sets
    assert read_metrics(out)["train"]["label_free_rows"] > 0


def test_vcr_label_free_rationales_texts_follow_the_teacher_answer(small_world):
    """With `_free_answer` (the teacher's answer index) an unlabelled VCR row adds the QA->R stage:
    the question + that answer with each rationale, never the gold answer; the teacher's
    candidates are the same strings joined."""
    from tasks import get_task

    task = get_task("vcr")
    row = next(r for r in task.load(small_world / "vcr", "train") if r["answer_label"] != 2)
    q, answers, rationales = row["text"], row["answers"], row["rationales"]
    texts = task.label_free_texts({**row, "_free_answer": 2}, answers=True)
    assert texts == [(q, a) for a in answers] + [(f"{q} {answers[2]}", r) for r in rationales]
    assert task.label_free_texts({**row, "_free_answer": -1}, answers=True) == [(q, a) for a in answers]
    assert task.free_rationale_candidates(row, 2) == [f"{q} {answers[2]} {r}" for r in rationales]
    # with the gold answer the candidates are exactly the cached QA->R stage's
    assert task.free_rationale_candidates(row, row["answer_label"]) == task.teacher_texts({**row, "_stage": 1})[1]


def test_staged_unlabelled_rows_read_every_stage_and_the_rationale_table():
    """_staged_index with free_stages=2 gives unlabelled rows both teacher rows (instance-major,
    like labelled rows); _with_free_rationales swaps the QA->R rows' candidate logits for the
    table's row of that instance, and leaves labelled batches alone."""
    from clip_td.app.teacher_setup import _staged_index, _with_free_rationales

    def inner(batch):  # cand_logits row r = [r, r, r, r]
        rows = torch.as_tensor(batch["index_host"])
        return {"cand_logits": rows.float().unsqueeze(1).repeat(1, 4), "rows": rows}

    table = torch.arange(40, dtype=torch.float32).reshape(10, 4) + 100
    outputs = lambda b: _staged_index(lambda c: _with_free_rationales(inner, table, 2, c), 2, b, free_stages=2)  # noqa: E731
    free = outputs({"index_host": [3, 7], "label_free": True})
    assert free["rows"].tolist() == [6, 7, 14, 15]
    assert free["cand_logits"].tolist() == [[6.0] * 4, table[3].tolist(), [14.0] * 4, table[7].tolist()]
    labelled = outputs({"index_host": [3, 7]})
    assert labelled["cand_logits"][:, 0].tolist() == [6.0, 7.0, 14.0, 15.0]
    first_only = _staged_index(inner, 2, {"index_host": [3, 7], "label_free": True})
    assert first_only["rows"].tolist() == [6, 14]


def test_free_rationale_logits_match_the_cache_scoring_path(small_world, tiny_teacher):
    """The teacher's answer is the argmax of its stage-0 logits; its rationale logits equal
    `candidate_logits` (the cache's own scoring, one row at a time) on the candidates built from
    that answer; rows outside the list stay -1 / 0."""
    from clip_td.app.teacher_setup import free_rationale_logits
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import CandidateEncoder, candidate_logits
    from tasks import get_task

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    task = get_task("vcr")
    rows = task.load(small_world / "vcr", "train").select(range(6))
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, teacher.embed_dim, generator=g), dim=-1)
    stage0 = torch.randn(12, 4, generator=g)

    class _Cache:
        def lookup(self, idx):
            idx = torch.as_tensor(idx)
            assert bool((idx % 2 == 0).all())  # only the Q->A rows are read
            return {"cand_logits": stage0[idx], "image_embed": image[idx // 2]}

    answer, table = free_rationale_logits(teacher, task, rows, [1, 4, 5], _Cache(), stages=2, batch_size=2)
    want = stage0[torch.tensor([2, 8, 10])].argmax(-1)
    assert answer.tolist() == [-1, int(want[0]), -1, -1, int(want[1]), int(want[2])]
    lists = [task.free_rationale_candidates(rows[i], int(a)) for i, a in zip((1, 4, 5), want)]
    ref = candidate_logits(teacher, image[torch.tensor([1, 4, 5])], lists, CandidateEncoder(teacher))
    assert torch.allclose(table[torch.tensor([1, 4, 5])], ref, atol=1e-5)
    assert table[torch.tensor([0, 2, 3])].abs().sum().item() == 0.0


def test_vcr_label_free_rationales_settings_are_checked_and_a_run_trains(small_world, tiny_teacher, tmp_path,
                                                                         monkeypatch):
    """method.label_free_rationales: named errors for a missing answer term, a task without a
    second stage and method.rationales=false; a VCR run distils both stages of each unlabelled
    row (8 of the student's choice scores against 8 teacher rows for 4 rows: Q->A then QA->R)."""
    from omegaconf import OmegaConf

    from clip_td.app.build import check_label_free_answers
    from tasks import get_task

    vcr = get_task("vcr")
    vcr.setup(None, OmegaConf.create({"method": {"rationales": True}}))
    with pytest.raises(InputError, match="method.label_free_rationales=true needs method.label_free_answers=true"):
        check_label_free_answers(resolve_method(MethodConfig(label_free=1.0, label_free_rationales=True)), vcr)
    both = resolve_method(MethodConfig(label_free=1.0, label_free_answers=True, label_free_rationales=True))
    check_label_free_answers(both, vcr)
    with pytest.raises(InputError, match="task 'vqa' has no second stage"):
        check_label_free_answers(both, get_task("vqa"))
    preset = resolve_method({"name": "clip_td_label_free"})  # sets it for every task: VCR alone reads it
    assert preset.label_free_rationales and check_label_free_answers(preset, get_task("vqa")) is None
    vcr.setup(None, OmegaConf.create({"method": {"rationales": False}}))
    with pytest.raises(InputError, match="needs method.rationales=true"):
        check_label_free_answers(both, vcr)

    seen = _vcr_free_run(small_world, tiny_teacher, tmp_path / "vcr", monkeypatch,
                         **{"method.label_free_rationales": "true"})
    assert [s[:2] for s in seen] == [((8, 4), (8, 4))] * 2
    # with augmented copies the labelled rows are label-free rows too: they get the QA->R stage
    # from the teacher's own answer as well (at half the rows labelled, every batch holds some)
    seen = _vcr_free_run(small_world, tiny_teacher, tmp_path / "vcr_augment", monkeypatch,
                         **{"method.label_free_rationales": "true", "method.label_free_augment": "true",
                            "train.fraction": 0.5})
    assert [s[:2] for s in seen] == [((8, 4), (8, 4))] * 2


def _vcr_free_run(small_world, tiny_teacher, out, monkeypatch, **extra):
    """A 2-step VCR run with the label-free answer term (trust gate and held-back check off);
    -> (logits shape, teacher cand_logits shape, mask) per label-free answer call."""
    from clip_td.lib.distill import Distiller

    seen = []
    real = Distiller.label_free_answers

    def spy(self, logits, teacher_out, mask=None):
        seen.append((tuple(logits.shape), tuple(teacher_out["cand_logits"].shape), mask))
        return real(self, logits, teacher_out, mask)

    monkeypatch.setattr(Distiller, "label_free_answers", spy)
    args = tiny_overrides(small_world, tiny_teacher, out, **{
        "task.name": "vcr", "method.name": "clip_td", "train.fraction": 0.25, "train.max_steps": 2,
        "train.batch_size": 4, "seed": 0, "method.label_free": 1.0, "method.label_free_answers": "true",
        "method.trust_gate": "off", "method.student_check": 0.0, **extra})
    assert main(["--config", TINY, *args]) == 0
    return seen


def test_label_free_copies_trusted_weights_a_labelled_rows_copy_by_the_teachers_trust_in_its_label():
    """method.label_free_copies=trusted, hand case at tau 2. Row 0, a copy whose gold label is the
    teacher's top answer: teacher logits (0, 2 ln 3) -> q = (1/4, 3/4), gold 1: t = (3/4 - 1/2) /
    (1/2) = 1/2. Row 1, a copy the teacher gets wrong (gold 0): t = 0. Row 2, an unlabelled row:
    weight 1. Row 3, a copy whose gold label (2) is outside the row's candidates: t = 0. The
    student logits are 0, so each row's KL is that of q against (1/2, 1/2)."""
    import math

    from clip_td.lib.distill import copy_trust

    dist = create_distiller(resolve_method(MethodConfig(alpha=1.0, eta=1.0, tau=2.0, answer_loss="kl",
                                                        label_free=1.0, label_free_answers=True,
                                                        label_free_augment=True, label_free_copies="trusted")), 2, 2)
    row = [0.0, 2 * math.log(3.0), -50.0]
    mask = torch.tensor([[True, True, False]] * 4)
    teacher = {"cand_logits": torch.tensor([row] * 4), "gold": torch.tensor([1, 0, 1, 2]),
               "copy_labelled": torch.tensor([True, True, False, True])}
    logits = torch.zeros(4, 3)
    kl = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) * 4.0
    weights = copy_trust(teacher["cand_logits"], teacher["gold"], teacher["copy_labelled"], mask, 2.0)
    assert weights.tolist() == pytest.approx([0.5, 0.0, 1.0, 0.0], abs=1e-6)
    assert dist.label_free_answers(logits, teacher, mask).item() == pytest.approx((0.5 + 1.0) * kl / 4, abs=1e-5)
    plain = create_distiller(resolve_method(MethodConfig(alpha=1.0, eta=1.0, tau=2.0, answer_loss="kl")), 2, 2)
    assert plain.label_free_answers(logits, teacher, mask).item() == pytest.approx(kl, abs=1e-5)  # teacher: every row
    with pytest.raises(InputError, match=r"method.label_free_copies='trusted': needs .*label_free_augment=true"):
        resolve_method(MethodConfig(label_free=1.0, label_free_answers=True, label_free_copies="trusted"))
    with pytest.raises(InputError, match=r"method.label_free_copies: unknown value 'gold'; expected one of: teacher, trusted"):
        resolve_method(MethodConfig(label_free_copies="gold"))


def test_only_the_copies_of_labelled_rows_are_marked_for_their_labels():
    from functools import partial

    from clip_td.app.teacher_setup import _with_copy_labels

    outputs = partial(_with_copy_labels, lambda batch: {"gold": torch.zeros(len(batch["index"]))},
                      torch.tensor([True, False, True, False]))
    assert outputs({"index": torch.tensor([3, 2, 1]), "label_free": True})["copy_labelled"].tolist() == [False, True, False]
    assert "copy_labelled" not in outputs({"index": torch.tensor([0, 2])})  # a labelled batch: its own term reads gold


def test_a_tiny_run_with_trusted_copies_trains_a_different_student(small_world, tiny_teacher, tmp_path):
    from safetensors.torch import load_file

    for name, copies in (("teacher", "teacher"), ("trusted", "trusted")):
        args = tiny_overrides(small_world, tiny_teacher, tmp_path / name, **{
            "task.name": "snli_ve", "method.name": "clip_td", "train.fraction": 1.0, "train.max_steps": 2,
            "seed": 0, "method.label_free": 1.0, "method.label_free_augment": "true",
            "method.label_free_answers": "true", "method.label_free_features": "false", "method.student_check": 0.0,
            "method.trust_gate": "off",
            "method.label_free_copies": copies})
        assert main(["--config", TINY, *args]) == 0
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("teacher", "trusted"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
