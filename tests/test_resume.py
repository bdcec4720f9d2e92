"""Kill-and-resume gives the run an uninterrupted one gives; incompatible checkpoints are refused;
the saved student runs without the teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import clip_td.app.trainer as ft
from test_finetune import TINY
from test_finetune_helpers import read_metrics, tiny_overrides

SETTINGS = {"method.name": "clip_td", "train.max_steps": 6, "train.batch_size": 32, "train.checkpoint_every": 3}


class Killed(Exception):
    pass


def run(world, teacher, out, **extra) -> int:
    return ft.main(["--config", TINY, *tiny_overrides(world, teacher, out, **{**SETTINGS, **extra})])


# the second case keeps the answer term (alpha 1) and fills handover blocks of 8 first visits, so
# the handover's state crosses the checkpoint
@pytest.mark.parametrize("extra", [{}, {"method.trust_alpha": 1.0, "method.handover_window": 8}], ids=["default", "handover"])
def test_kill_and_resume_matches_uninterrupted(small_world, tiny_teacher, tmp_path, monkeypatch, extra):
    run = lambda world, teacher, out, **more: globals()["run"](world, teacher, out, **extra, **more)  # noqa: E731
    assert run(small_world, tiny_teacher, tmp_path / "full") == 0

    real_save = ft.save_checkpoint

    def save_then_die(*args, **kwargs):  # the process "dies" right after the step-3 checkpoint
        path = real_save(*args, **kwargs)
        raise Killed(str(path))

    monkeypatch.setattr(ft, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(small_world, tiny_teacher, tmp_path / "resumed")
    monkeypatch.setattr(ft, "save_checkpoint", real_save)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step_3" / "run_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch"]) == (3, 0, 3)  # 100 rows / 32 = 4 batches per epoch

    assert run(small_world, tiny_teacher, tmp_path / "resumed", **{"train.resume": "latest"}) == 0
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert resumed["eval"] == full["eval"] and resumed["train"]["steps"] == 6
    assert resumed.get("teacher_trust") == full.get("teacher_trust")
    if extra:
        tests = full["teacher_trust"]["handover"]["groups"]
        assert sum(len(g["tests"]) for g in tests.values()) >= 1  # a block was tested (on either side of the kill)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k


def test_incompatible_checkpoint_is_refused(small_world, tiny_teacher, tmp_path, capsys):
    assert run(small_world, tiny_teacher, tmp_path / "a", **{"train.max_steps": 3}) == 0
    ckpt = tmp_path / "a" / "checkpoints" / "step_3"
    code = run(small_world, tiny_teacher, tmp_path / "b", **{"train.resume": str(ckpt), "task.name": "snli_ve"})
    err = capsys.readouterr().err
    assert code == 2 and "incompatible run" in err and "task: checkpoint 'vqa', this run 'snli_ve'" in err
    code = run(small_world, tiny_teacher, tmp_path / "c", **{"train.resume": str(tmp_path / "nowhere")})
    assert code == 2 and "not a checkpoint folder" in capsys.readouterr().err


def test_saved_student_predicts_without_the_teacher(small_world, tiny_teacher, tmp_path):
    out = tmp_path / "run"
    assert run(small_world, tiny_teacher, out, **{"train.max_steps": 3}) == 0
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert weights and all(k.startswith(("student.", "head.")) for k in weights)  # no distiller, no teacher
    preds_file = read_metrics(out)["files"]["val"]["predictions"]
    script = f"""
import json, sys, torch
from tasks import get_task
from clip_td.app.batches import TaskDataset
from clip_td.app.build import load_for_inference
run = load_for_inference({str(out)!r})
ds = get_task("vqa").load({str(small_world / "vqa")!r}, "val")
data = TaskDataset(run["task"], ds, run["transform"])
batch = run["collator"]([data[i] for i in range(len(data))])
assert batch["index_host"] == batch["index"].tolist() == list(range(len(data))), "index_host"
with torch.no_grad():
    pred = run["model"].predict(run["model"](batch))
answers = run["task"].decode(pred.tolist())
saved = [r["answer"] for r in json.load(open({preds_file!r}))]
assert "clip_td.lib.teacher" not in sys.modules and "open_clip" not in sys.modules, "teacher imported"
print(sum(a == b for a, b in zip(answers, saved)), len(saved))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    same, total = map(int, proc.stdout.split())
    assert same == total > 0
