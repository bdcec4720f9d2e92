"""`sweep.py --config configs/sweep/smoke.yaml` in test-sized form: cells run as finetune
processes, the report is written, a rerun skips finished cells, a failed cell is recorded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from test_finetune_helpers import small_world, tiny_teacher  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _sweep(out: Path, world: Path, teacher: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = ("[train.max_steps=2,eval.batch_size=128,"
                 f"data.root={world},teacher.model=local-dir:{teacher},teacher.cache_dir={out}/cache]")
    args = [sys.executable, "sweep.py", "--config", "configs/sweep/smoke.yaml", f"output_dir={out}",
            f"overrides={overrides}", "grid.tasks=[snli_ve]", "grid.methods=[none,clip_td]", *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_smoke_sweep_runs_reports_and_skips(small_world, tiny_teacher, tmp_path):
    out = tmp_path / "sweep"
    proc = _sweep(out, small_world, tiny_teacher, "parallel=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads((out / "sweep_run.json").read_text())
    assert (run["cells"], run["ran"], run["skipped"], run["failed"]) == (2, 2, 0, [])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["method"], r["split"], r["metric"]) for r in rows} == {
        (m, s, "accuracy") for m in ("none", "clip_td") for s in ("val", "val_shift")}
    assert "## snli_ve" in (out / "summary.md").read_text()
    assert (out / "metric_vs_fraction.png").stat().st_size > 0

    # a rerun skips both finished cells; a new seed adds only its own cells
    proc = _sweep(out, small_world, tiny_teacher, "grid.seeds=[0]")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "sweep_run.json").read_text())["skipped"] == 2
    assert "0 to run" in proc.stdout

    # a failing cell (unknown method) is recorded with its error and the sweep goes on
    proc = _sweep(out, small_world, tiny_teacher, "grid.methods=[none,bogus]")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "sweep_run.json").read_text())
    assert run["failed"] == ["snli_ve/bogus/f0.25/s0"] and run["skipped"] == 1
    failed = json.loads((out / "runs/snli_ve/bogus/f0.25/s0/failed.json").read_text())
    assert "bogus" in failed["error"]
