"""A 2-process CPU run through `accelerate launch` completes and writes the same metrics schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_finetune import TASK_METRICS, TINY, evaluate_cli
from test_finetune_helpers import read_metrics, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_cpu_run(small_world, tiny_teacher, tmp_path):
    out = tmp_path / "ddp"
    # `--cpu` picks accelerate's single-process launcher; torchrun (--multi_gpu) with
    # ACCELERATE_USE_CPU gives 2 gloo processes on a CPU-only machine
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "finetune.py"), "--config", TINY,
           *tiny_overrides(small_world, tiny_teacher, out, **{"method.name": "clip_td", "train.max_steps": 2,
                                                                "eval.splits": "[val]"})]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(out)
    assert list(m) == ["task", "method", "train_fraction", "seed", "eval", "train", "files", "teacher", "teacher_trust"]
    assert list(m["teacher"]) == ["name", "pretrained", "fingerprint"] and len(m["teacher"]["fingerprint"]) == 16
    assert m["train"]["steps"] == 2 and m["method"] == "clip_td" and list(m["eval"]) == ["val"]
    for split, scores in m["eval"].items():
        assert list(scores) == TASK_METRICS["vqa"]
        # every eval row predicted exactly once across the two processes
        assert evaluate_cli("vqa", m["files"][split])["overall"] == scores["vqa_acc"]
    assert proc.stdout.count("metrics: ") == 1  # printed by the main process only
    state = json.loads((out / "checkpoints" / "step_2" / "run_state.json").read_text())
    assert state["step"] == 2 and state["signature"]["num_processes"] == 2
