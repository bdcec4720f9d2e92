"""Early stopping on held-out training rows (train.holdout, train.patience): the split, the
patience rule on a scripted score sequence, and a tiny run that ends with its best weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from clip_td.app import trainer as trainer_mod
from clip_td.app.build import split_holdout
from clip_td.app.trainer import Trainer, main
from clip_td.base.io import InputError
from test_finetune_helpers import read_metrics, tiny_overrides

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")


class _Labels:
    label_key = "label"


def test_holdout_is_a_stratified_disjoint_share_of_the_lowshot_rows():
    ds = {"label": [k % 3 for k in range(60)]}
    train_idx = list(range(0, 60, 2))  # 30 low-shot rows, 10 per label
    fit, held = split_holdout(_Labels(), ds, train_idx, 0.2, seed=0)
    assert len(held) == 6 and len(fit) == 24
    assert sorted(fit + held) == train_idx and not set(fit) & set(held)
    assert sorted(ds["label"][i] for i in held) == [0, 0, 1, 1, 2, 2]  # 2 per label
    assert split_holdout(_Labels(), ds, train_idx, 0.2, seed=0) == (fit, held)  # fixed per seed
    assert split_holdout(_Labels(), ds, train_idx, 0.2, seed=1) != (fit, held)
    assert split_holdout(_Labels(), ds, train_idx, 0.0, seed=0) == (train_idx, [])
    with pytest.raises(InputError, match="train.holdout=1.0"):
        split_holdout(_Labels(), ds, train_idx, 1.0, seed=0)
    with pytest.raises(InputError, match="both need at least one row"):
        split_holdout(_Labels(), ds, [0], 0.5, seed=0)


def test_holdout_by_image_holds_out_whole_images():
    """`train.holdout_by=image`: every low-shot row of a drawn image is held out with it, so no
    held-out image is trained on (with `row`, most held-out rows share their image with a trained
    sibling question); the share is drawn over images, stratified by each image's first label."""
    images = [f"img{k // 2}.png" for k in range(80)]  # two questions per image, as VCR asks
    ds = {"label": [(k // 2) % 4 for k in range(80)], "image": images}
    train_idx = list(range(80))
    fit, held = split_holdout(_Labels(), ds, train_idx, 0.25, seed=0, by="image")
    assert len(held) == 20 and sorted(fit + held) == train_idx  # 10 of the 40 images, both rows each
    assert not {images[i] for i in fit} & {images[i] for i in held}
    per_label = Counter(ds["label"][i] for i in held[::2])  # 10 images over 4 labels of 10 images each
    assert sorted(per_label.values()) == [2, 2, 3, 3]
    assert split_holdout(_Labels(), ds, train_idx, 0.25, seed=0, by="image") == (fit, held)
    fit_r, held_r = split_holdout(_Labels(), ds, train_idx, 0.25, seed=0, by="row")
    assert len(held_r) == 20 and {images[i] for i in fit_r} & {images[i] for i in held_r}
    with pytest.raises(InputError, match="train.holdout_by='scene'; expected one of: row, image"):
        split_holdout(_Labels(), ds, train_idx, 0.25, seed=0, by="scene")


def _fake_trainer(patience: int, tmp_path: Path, primary: str = "acc", min_steps: int = 0, handover=None):
    acc = SimpleNamespace(is_main_process=True, num_processes=1, log=lambda *a, **k: None)
    cfg = SimpleNamespace(train=SimpleNamespace(patience=patience, min_steps=min_steps))
    fake = SimpleNamespace(acc=acc, cfg=cfg, model=None, out=tmp_path, holdout_dl=None, stop=False,
                           built=SimpleNamespace(holdout_rows=[], task=SimpleNamespace(primary=primary),
                                                 handover=handover),
                           pos={"step": 0, "best": None, "best_step": None, "bad_evals": 0})
    fake.score_and_keep = lambda *args: Trainer.score_and_keep(fake, *args)
    return fake


def test_patience_counts_evaluations_without_a_better_held_out_score(tmp_path, monkeypatch):
    scores = iter([50.0, 55.0, 55.0, 54.0, 60.0, 59.0, 58.0])  # a tie is no improvement
    saved = []
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: ({"holdout": {"acc": next(scores)}}, {}))
    monkeypatch.setattr(trainer_mod, "save_best", lambda acc, model, cfg, out, pos: saved.append(pos["step"]))
    fake = _fake_trainer(patience=2, tmp_path=tmp_path)
    history = []
    for step in range(10, 80, 10):
        fake.pos["step"] = step
        Trainer.keep_best_holdout(fake)
        history.append((fake.pos["best"], fake.pos["best_step"], fake.pos["bad_evals"], fake.stop))
    assert history == [(50.0, 10, 0, False), (55.0, 20, 0, False), (55.0, 20, 1, False), (55.0, 20, 2, True),
                       (60.0, 50, 0, False), (60.0, 50, 1, False), (60.0, 50, 2, True)]
    assert saved == [10, 20, 50]
    assert fake.pos["history"] == [[10, 50.0], [20, 55.0], [30, 55.0], [40, 54.0], [50, 60.0], [60, 59.0], [70, 58.0]]


def test_min_steps_keeps_an_early_peak_from_ending_the_run(tmp_path, monkeypatch):
    """The same scores with train.min_steps=40: the evaluations at steps 10-40 keep the best
    weights but count no patience, so the dip at 30-40 does not stop the run."""
    scores = iter([50.0, 55.0, 55.0, 54.0, 53.0, 52.0, 60.0])
    saved = []
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: ({"holdout": {"acc": next(scores)}}, {}))
    monkeypatch.setattr(trainer_mod, "save_best", lambda acc, model, cfg, out, pos: saved.append(pos["step"]))
    fake = _fake_trainer(patience=2, tmp_path=tmp_path, min_steps=40)
    history = []
    for step in range(10, 80, 10):
        fake.pos["step"] = step
        Trainer.keep_best_holdout(fake)
        history.append((fake.pos["best"], fake.pos["best_step"], fake.pos["bad_evals"], fake.stop))
        if fake.stop:
            break
    assert history == [(50.0, 10, 0, False), (55.0, 20, 0, False), (55.0, 20, 0, False), (55.0, 20, 0, False),
                       (55.0, 20, 1, False), (55.0, 20, 2, True)]
    assert saved == [10, 20]


def test_evaluations_while_rows_are_held_back_for_the_check_count_no_patience(tmp_path, monkeypatch):
    """The held-back check's rows give their labels only at the check: until then (`holding`) a
    falling held-out score must not end the run, or the check and those labels never come. The
    check at step 45 releases them; from the evaluation at 50 on, patience counts again."""
    scores = iter([50.0, 55.0, 54.0, 53.0, 52.0, 51.0, 50.0])
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: ({"holdout": {"acc": next(scores)}}, {}))
    monkeypatch.setattr(trainer_mod, "save_best", lambda *a: None)
    handover = SimpleNamespace(holding=True)
    fake = _fake_trainer(patience=2, tmp_path=tmp_path, handover=handover)
    history = []
    for step in range(10, 80, 10):
        handover.holding = step < 45
        fake.pos["step"] = step
        Trainer.keep_best_holdout(fake)
        history.append((fake.pos["best_step"], fake.pos["bad_evals"], fake.stop))
        if fake.stop:
            break
    # without the rule the run would stop at step 40 (two evaluations below step 20's 55)
    assert history == [(10, 0, False), (20, 0, False), (20, 0, False), (20, 0, False),
                       (20, 1, False), (20, 2, True)]


def test_the_best_weights_are_picked_by_the_primary_metric_not_the_first(tmp_path, monkeypatch):
    """VCR scores q2a, qa2r, q2ar in that order and ranks by q2ar: a better Q->A with a worse
    Q->AR is no improvement."""
    scores = iter([{"q2a": 40.0, "qa2r": 30.0, "q2ar": 12.0}, {"q2a": 45.0, "qa2r": 25.0, "q2ar": 11.0},
                   {"q2a": 39.0, "qa2r": 35.0, "q2ar": 14.0}])
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: ({"holdout": next(scores)}, {}))
    monkeypatch.setattr(trainer_mod, "save_best", lambda *a: None)
    fake = _fake_trainer(patience=0, tmp_path=tmp_path, primary="q2ar")
    history = []
    for step in (10, 20, 30):
        fake.pos["step"] = step
        Trainer.keep_best_holdout(fake)
        history.append((fake.pos["best"], fake.pos["best_step"], fake.pos["bad_evals"]))
    assert history == [(12.0, 10, 0), (12.0, 10, 1), (14.0, 30, 0)]


def test_a_run_with_holdout_ends_with_its_best_weights(small_world, tiny_teacher, tmp_path):
    out = tmp_path / "run"
    args = tiny_overrides(small_world, tiny_teacher, out, **{
        "method.name": "none", "train.fraction": 1.0, "train.max_steps": 6, "train.eval_every": 2,
        "train.holdout": 0.2, "train.patience": 0})
    assert main(["--config", TINY, *args]) == 0
    m = read_metrics(out)
    h = m["train"]["holdout"]
    assert list(m["train"]) == ["steps", "samples_per_s", "step_time_s", "threads", "device", "holdout"]
    assert h["best_step"] in (2, 4, 6) and h["stopped_early"] is False and m["train"]["steps"] == 6
    assert h["rows"] > 0 and h["best"] is not None
    assert [step for step, _ in h["history"]] == [2, 4, 6]  # every held-out evaluation, in order
    assert max(score for _, score in h["history"]) == pytest.approx(h["best"], abs=1e-4)
    assert dict(map(tuple, h["history"]))[h["best_step"]] == pytest.approx(h["best"], abs=1e-4)
    final, best = load_file(str(out / "model" / "model.safetensors")), load_file(str(out / "best" / "model.safetensors"))
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)
    assert sorted(m["eval"]) == ["val", "val_shift"]  # the held-out rows are not an eval split


def test_patience_without_holdout_and_holdout_without_eval_every_are_refused(small_world, tiny_teacher, tmp_path,
                                                                             capsys):
    for extra, needle in (({"train.patience": 2}, "train.patience=2 needs train.holdout"),
                          ({"train.holdout": 0.2}, "train.holdout=0.2 needs train.eval_every"),
                          ({"train.min_steps": 5}, "train.min_steps=5: expected 0, or a step count with train.patience > 0")):
        code = main(["--config", TINY, *tiny_overrides(small_world, tiny_teacher, tmp_path / "x", **extra)])
        assert code != 0 and needle in capsys.readouterr().err
