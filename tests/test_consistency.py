"""train.consistency: the student's Jensen-Shannon agreement with itself across a labelled image
and its augmented copy (AugMix's consistency term), on hand-computed cases, the dataset's second
view, and a tiny run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clip_td.app.finetune_model import FinetuneModel, consistency_jsd, jensen_shannon
from clip_td.app.trainer import main
from test_finetune_helpers import read_metrics, tiny_overrides

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_jensen_shannon_hand_cases():
    # disjoint one-hots: m = (0.5, 0.5), each KL is log 2
    assert jensen_shannon([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]).item() == pytest.approx(math.log(2))
    assert jensen_shannon([torch.tensor([0.3, 0.7])] * 2).item() == pytest.approx(0.0, abs=1e-7)
    p, q, m = (0.5, 0.5), (0.9, 0.1), (0.7, 0.3)
    want = (_kl(p, m) + _kl(q, m)) / 2  # 0.0823...
    assert jensen_shannon([torch.tensor(p), torch.tensor(q)]).item() == pytest.approx(want, rel=1e-6)
    # three distributions, one value per row of a batch
    rows = jensen_shannon([torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [0.5, 0.5]]),
                           torch.tensor([[0.5, 0.5], [0.5, 0.5]])])
    m3 = (0.5, 0.5)
    assert rows.shape == (2,)
    assert rows[0].item() == pytest.approx((_kl((1, 0), m3) + _kl((0, 1), m3) + 0) / 3, rel=1e-6)
    assert rows[1].item() == pytest.approx(0.0, abs=1e-7)


def test_consistency_jsd_sums_the_stages_and_reads_a_sigmoid_head_per_answer():
    lg = math.log(9.0)  # softmax([log 9, 0]) = (0.9, 0.1)
    clean = {"q2a_logits": torch.tensor([[0.0, 0.0], [lg, 0.0]]), "qa2r_logits": torch.tensor([[lg, 0.0], [0.0, 0.0]]),
             "task_loss": torch.tensor(5.0)}
    aug = {"q2a_logits": torch.tensor([[lg, 0.0], [lg, 0.0]]), "qa2r_logits": torch.tensor([[lg, 0.0], [lg, 0.0]])}
    js = (_kl((0.5, 0.5), (0.7, 0.3)) + _kl((0.9, 0.1), (0.7, 0.3))) / 2
    # Q->A: rows (js, 0) -> js / 2; QA->R: rows (0, js) -> js / 2; the task loss is not a distribution
    assert consistency_jsd(clean, aug).item() == pytest.approx(js, rel=1e-5)
    # sigmoid: logit 0 is p = 0.5, logit log 9 is p = 0.9: one Bernoulli per answer, mean over answers
    sig = consistency_jsd({"logits": torch.tensor([[0.0, 0.0]])}, {"logits": torch.tensor([[lg, 0.0]])}, sigmoid=True)
    assert sig.item() == pytest.approx(js / 2, rel=1e-5)


def test_the_model_adds_the_weighted_consistency_term_only_with_an_augmented_view():
    class _Student(torch.nn.Module):  # pooled = the first image's two channel means
        def forward(self, pixels, ids, mask):
            return {"pooled": pixels.mean(dim=(2, 3))[:, :2]}

    class _Task:
        answer_head = "softmax"

        def outputs(self, scores, batch):
            return {"logits": scores}

    clean = torch.zeros(1, 3, 2, 2)
    aug = torch.zeros(1, 3, 2, 2)
    aug[:, 0] = math.log(9.0)  # softmax -> (0.9, 0.1) against the clean (0.5, 0.5)
    batch = {"pixel_values": clean, "pixel_values_aug": aug, "input_ids": torch.zeros(1, 3, dtype=torch.long),
             "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    js = (_kl((0.5, 0.5), (0.7, 0.3)) + _kl((0.9, 0.1), (0.7, 0.3))) / 2
    model = FinetuneModel(_Task(), _Student(), torch.nn.Identity(), consistency=12.0)
    assert model(batch)["consistency_loss"].item() == pytest.approx(12.0 * js, rel=1e-5)
    assert "consistency_loss" not in model({k: v for k, v in batch.items() if k != "pixel_values_aug"})
    assert "consistency_loss" not in FinetuneModel(_Task(), _Student(), torch.nn.Identity())(batch)


def test_the_training_set_adds_an_augmented_view_of_the_clean_image(small_world):
    from PIL import ImageOps

    from clip_td.app.batches import Collator, TaskDataset, load_rgb, student_transform
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config
    from clip_td.base.wordpiece import build_wordpiece
    from tasks import get_task

    task = get_task("vqa")
    ds = task.load(small_world / "vqa", "train").select(range(2))
    task.setup(ds, load_config(FinetuneConfig))
    transform = student_transform(32, (0.5,) * 3, (0.5,) * 3)
    data = TaskDataset(task, ds, transform, augment=ImageOps.mirror, consistency_augment=ImageOps.invert)
    item, image = data[1], load_rgb(ds[1]["image"])
    assert torch.equal(item["pixel_values"], transform(ImageOps.mirror(image)))  # data.augment's copy
    assert torch.equal(item["pixel_values_aug"], transform(ImageOps.invert(image)))  # from the clean image
    assert "pixel_values_aug" not in TaskDataset(task, ds, transform)[1]
    collate = Collator(build_wordpiece(task.corpus_texts(ds), vocab_size=200), 16)
    batch = collate([data[0], data[1]])
    assert batch["pixel_values_aug"].shape == batch["pixel_values"].shape == (2, 3, 32, 32)


def test_a_tiny_run_trains_with_the_consistency_term_and_bad_settings_are_named(small_world, tiny_teacher, tmp_path,
                                                                                 capsys):
    base = {"task.name": "vcr", "method.name": "none", "train.fraction": 0.5, "train.max_steps": 2, "seed": 0,
            "train.batch_size": 4}
    runs = {}
    for name, extra in (("off", {}), ("on", {"train.consistency": 12.0})):
        out = tmp_path / name
        assert main(["--config", TINY, *tiny_overrides(small_world, tiny_teacher, out, **base, **extra)]) == 0
        runs[name] = read_metrics(out)
    from safetensors.torch import load_file

    off, on = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("off", "on"))
    assert off.keys() == on.keys() and any(not torch.equal(off[k], on[k]) for k in off)
    for key, value, message in (
            ("train.consistency", -1.0, "error: config key train.consistency: expected a weight >= 0 (0 = off), got -1.0"),
            ("data.consistency_policy", "wide", "error: config key data.consistency_policy: one of photometric, "
             "photometric_noise, photometric_safe, photometric_augmix, photometric_randconv, got 'wide'")):
        out = tmp_path / "bad"
        capsys.readouterr()
        bad = {key: value} if key == "train.consistency" else {key: value, "train.consistency": 12.0}
        assert main(["--config", TINY, *tiny_overrides(small_world, tiny_teacher, out, **base, **bad)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == message
        assert not (out / "metrics.json").exists()
