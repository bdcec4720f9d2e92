"""finetune.py end to end on the small synthetic world: metrics.json (contract 2), prediction
files that `clip-td evaluate` scores to the same numbers, every task, and the one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from clip_td.app.trainer import main
from clip_td.base.io import cpu_model
from test_finetune_helpers import read_metrics, tiny_overrides

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
TASK_METRICS = {"vqa": ["vqa_acc"], "snli_ve": ["accuracy"], "vcr": ["q2a", "qa2r", "q2ar"]}


def run(world, teacher, out, **overrides) -> int:
    return main(["--config", TINY, *tiny_overrides(world, teacher, out, **overrides)])


def evaluate_cli(task: str, files: dict) -> dict:
    from clip_td.app.cli import main as cli

    args = ["evaluate", task, "--annotations", files["annotations"]]
    if task == "vqa":
        args += ["--questions", files["questions"], "--results", files["predictions"]]
    else:
        args += ["--predictions", files["predictions"]]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli(args) == 0
    return json.loads(buf.getvalue())


def test_metrics_schema_and_files_score_the_same(small_world, tiny_teacher, tmp_path):
    out = tmp_path / "run"
    assert run(small_world, tiny_teacher, out, **{"method.name": "none", "seed": 3}) == 0
    m = read_metrics(out)
    assert list(m) == ["task", "method", "train_fraction", "seed", "eval", "train", "files"]
    assert (m["task"], m["method"], m["train_fraction"], m["seed"]) == ("vqa", "none", 0.25, 3)
    assert sorted(m["eval"]) == ["val", "val_shift"]
    assert all(list(scores) == ["vqa_acc"] for scores in m["eval"].values())
    assert list(m["train"]) == ["steps", "samples_per_s", "step_time_s", "threads", "device"] and m["train"]["steps"] == 4
    assert m["train"]["samples_per_s"] > 0 and m["train"]["step_time_s"] > 0
    assert m["train"]["threads"] == torch.get_num_threads()  # in-process: this process's count
    assert m["train"]["device"] == cpu_model()  # the tests run on the CPU
    for split, files in m["files"].items():
        assert sorted(files) == ["annotations", "predictions", "questions"]
        assert evaluate_cli("vqa", files)["overall"] == m["eval"][split]["vqa_acc"]
        results = json.loads(Path(files["predictions"]).read_text())
        assert len(results) == len(json.loads(Path(files["questions"]).read_text())["questions"])
    assert (out / "config.yaml").is_file() and (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("task", ["snli_ve", "vcr"])
def test_other_tasks_end_to_end(small_world, tiny_teacher, tmp_path, task):
    out = tmp_path / task
    assert run(small_world, tiny_teacher, out, **{"task.name": task, "method.name": "none",
                                                   "train.max_steps": 2, "train.eval_every": 1}) == 0
    m = read_metrics(out)
    assert m["task"] == task and m["train"]["steps"] == 2
    for split in ("val", "val_shift"):
        assert list(m["eval"][split]) == TASK_METRICS[task]
        assert sorted(m["files"][split]) == ["annotations", "predictions"]
        scored = evaluate_cli(task, m["files"][split])
        assert {k: scored[k] for k in TASK_METRICS[task]} == m["eval"][split]
        assert all(0.0 <= v <= 100.0 for v in m["eval"][split].values())
    best = json.loads((out / "best" / "meta.json").read_text())  # kept by the per-step evaluation of val
    assert best["step"] in (1, 2) and best["best"] >= 0 and (out / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.bogus": 1}, "unknown config key 'train.bogus'"),
        ({"task.name": "gqa"}, "task.name='gqa': unknown task 'gqa'; expected one of: snli_ve, vcr, vqa"),
        ({"method.name": "magic"}, "method.name='magic': unknown distillation method 'magic'; expected one of: clip_td, clip_td_label_free, clip_td_nosel"),
        ({"train.fraction": 0.0001, "method.name": "none"}, "train.fraction=0.0001: the low-shot split"),
    ],
)
def test_user_errors_are_one_line(small_world, tiny_teacher, tmp_path, capsys, overrides, message):
    assert run(small_world, tiny_teacher, tmp_path / "bad", **overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_non_finite_loss_stops_with_step_and_terms(small_world, tiny_teacher, tmp_path, capsys, monkeypatch):
    import torch

    import clip_td.app.finetune_model as model_mod

    real = model_mod.FinetuneModel.forward
    calls = {"n": 0}

    def poisoned(self, batch, teacher_out=None, kd_scale=1.0):
        out = real(self, batch, teacher_out, kd_scale)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:  # the third optimizer step's loss becomes NaN
                out["task_loss"] = out["task_loss"] * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(model_mod.FinetuneModel, "forward", poisoned)
    assert run(small_world, tiny_teacher, tmp_path / "nan", **{"method.name": "clip_td", "method.trust_gate": "off"}) == 3
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")][-1]
    assert err.startswith("error: non-finite loss at step 3: task_loss=nan, tok_loss=")
    assert "glob_loss=" in err and "ans_loss=" in err
    assert not (tmp_path / "nan" / "metrics.json").exists()


def test_cpu_model_reads_the_first_model_name_and_falls_back_to_platform(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.00GHz  \n\n"
                    "processor\t: 1\nmodel name\t: Other CPU\n")
    assert cpu_model(info) == "Example CPU @ 2.00GHz"  # the first one, trailing blanks dropped
    import platform

    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # ARM: no model name line
    assert cpu_model(info) == "aarch64"
    assert cpu_model(tmp_path / "absent") == "aarch64"
    monkeypatch.setattr(platform, "machine", lambda: "")
    assert cpu_model(tmp_path / "absent") == "unknown"
