"""`sweep.py --config configs/sweep/smoke.yaml` in test-sized form: cells run as finetune
processes, the report is written, a rerun skips finished cells, a failed cell is recorded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path


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

    # a rerun skips the finished cell; a failing cell (unknown method) is recorded with its
    # error and the sweep goes on
    proc = _sweep(out, small_world, tiny_teacher, "grid.methods=[none,bogus]")
    assert proc.returncode == 0, proc.stderr
    assert "1 to run" in proc.stdout
    run = json.loads((out / "sweep_run.json").read_text())
    assert run["failed"] == ["snli_ve/bogus/f0.25/s0"] and run["skipped"] == 1
    failed = json.loads((out / "runs/snli_ve/bogus/f0.25/s0/failed.json").read_text())
    assert failed["error"].startswith("error: ") and "bogus" in failed["error"]
    assert failed["error"] in failed["log_tail"] and failed["attempts"] == 1 and failed["returncode"] == 2
    assert run["missing"] == ["snli_ve/bogus/f0.25/s0"]
    assert "## Missing runs" in (out / "summary.md").read_text()


# A stand-in for one finetune cell: writes a complete metrics.json, or, while `<flags>/fail-<seed>`
# exists, logs a few lines and fails the way finetune does (one `error: ` line, exit 2).
FAKE_CELL = r"""
import json, sys
from pathlib import Path
run_dir, seed, flags = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
print("loading the world")
print("training ...")
if (flags / f"fail-{seed}").exists():
    print(f"error: boom on seed {seed}", file=sys.stderr)
    sys.exit(2)
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "metrics.json").write_text(json.dumps({
    "task": "snli_ve", "method": "none", "train_fraction": 0.25, "seed": seed,
    "eval": {"val": {"accuracy": 50.0 + seed}}, "train": {"steps": 1, "samples_per_s": 1.0, "step_time_s": 1.0}}))
"""


def test_failed_cells_are_kept_retried_and_reported(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    import clip_td.app.sweep as sweep
    from clip_td.app.cli import main as cli_main

    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setattr(sweep, "_cell_command",
                        lambda cfg, cell, run_dir: [sys.executable, "-c", FAKE_CELL, str(run_dir), str(cell.seed), str(flags)])
    out = tmp_path / "sweep"

    def sweep_once(**extra):
        cfg = OmegaConf.structured(sweep.SweepConfig(output_dir=str(out), **extra, grid=sweep.GridConfig(
            tasks=["snli_ve"], methods=["none"], fractions=[0.25], seeds=[0, 1, 2])))
        return sweep.run_sweep(cfg)

    def report_exit(*args):
        code = cli_main(["report", str(out), *args])
        return code, capsys.readouterr().err

    cell = "snli_ve/none/f0.25/s1"
    (flags / "fail-1").touch()
    summary = sweep_once()
    assert (summary["ran"], summary["failed"], summary["missing"]) == (3, [cell], [cell])
    failed = json.loads((out / "runs" / cell / "failed.json").read_text())
    assert failed["error"] == "error: boom on seed 1" and failed["attempts"] == 1 and failed["returncode"] == 2
    assert set(failed["log_tail"]) == {"loading the world", "training ...", "error: boom on seed 1"}  # stdout + stderr
    text = (out / "summary.md").read_text()
    assert "| none | 25% | val | accuracy | 51.00 +- 1.41 | 2 of 3 \u2020 |  |  |" in text
    assert "\u2020 Fewer seeds than the sweep's grid asks" in text
    assert "| snli_ve | none | 25% | 1 | failed: error: boom on seed 1 |" in text
    code, err = report_exit()
    assert code == 1 and "1 of 3 grid cells have no complete metrics.json (snli_ve/none/f0.25/s1)" in err
    assert "--allow-missing" in err
    assert report_exit("--allow-missing")[0] == 0

    summary = sweep_once()  # a rerun retries the failed cell (only it), which fails again
    assert (summary["ran"], summary["skipped"], summary["failed"]) == (1, 2, [cell])
    assert json.loads((out / "runs" / cell / "failed.json").read_text())["attempts"] == 2
    assert (out / "runs" / cell / "log.txt").read_text().count("error: boom on seed 1") == 2  # both attempts kept
    summary = sweep_once(retry_failed=False)  # asked not to retry: left as it is, still reported
    assert (summary["ran"], summary["missing"]) == (0, [cell]) and (out / "runs" / cell / "failed.json").exists()
    assert report_exit()[0] == 1

    (flags / "fail-1").unlink()
    summary = sweep_once()  # fixed: the retry succeeds, failed.json goes, nothing is missing
    assert (summary["ran"], summary["failed"], summary["missing"]) == (1, [], [])
    assert not (out / "runs" / cell / "failed.json").exists()
    text = (out / "summary.md").read_text()
    assert "| none | 25% | val | accuracy | 51.00 +- 1.00 | 3 |  |  |" in text
    assert "\u2020" not in text and "Missing runs" not in text
    assert report_exit()[0] == 0


def test_a_cell_another_sweep_is_running_is_left_to_it(tmp_path, monkeypatch):
    """Two sweeps on one folder: a cell whose lock is held is skipped (not run twice, not failed),
    and a cell that finished between the scan and its turn is not run again."""
    import fcntl

    from omegaconf import OmegaConf

    import clip_td.app.sweep as sweep

    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setattr(sweep, "_cell_command",
                        lambda cfg, cell, run_dir: [sys.executable, "-c", FAKE_CELL, str(run_dir), str(cell.seed), str(flags)])
    out = tmp_path / "sweep"
    cfg = OmegaConf.structured(sweep.SweepConfig(output_dir=str(out), grid=sweep.GridConfig(
        tasks=["snli_ve"], methods=["none"], fractions=[0.25], seeds=[0, 1])))
    busy = out / "runs" / "snli_ve/none/f0.25/s1"
    busy.mkdir(parents=True)
    with open(busy / sweep.CELL_LOCK, "a") as held:  # "the other sweep" holds seed 1
        fcntl.flock(held, fcntl.LOCK_EX)
        summary = sweep.run_sweep(cfg)
    assert (summary["ran"], summary["elsewhere"], summary["failed"]) == (1, ["snli_ve/none/f0.25/s1"], [])
    assert summary["missing"] == ["snli_ve/none/f0.25/s1"]
    assert not (busy / "failed.json").exists() and not (busy / "log.txt").exists()
    # seed 0 finished (as if by the other sweep after this one's scan): its turn runs nothing
    done = out / "runs" / "snli_ve/none/f0.25/s0"
    before = (done / "metrics.json").stat().st_mtime_ns
    rec = sweep.run_cell(cfg, sweep.expand_grid(cfg.grid)[0], out, threads=1)
    assert rec == {"cell": "snli_ve/none/f0.25/s0", "seconds": 0.0, "elsewhere": "finished by another sweep meanwhile"}
    assert (done / "metrics.json").stat().st_mtime_ns == before
    summary = sweep.run_sweep(cfg)  # lock released: the rerun runs seed 1 only
    assert (summary["ran"], summary["skipped"], summary["elsewhere"], summary["missing"]) == (1, 1, [], [])


def test_sweep_script_user_error_is_one_line(tmp_path):
    """sweep.py shares the scripts' one error path: a bad key is one `error:` line, exit code 2."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "sweep.py"), "--config", str(repo / "configs/sweep/smoke.yaml"),
                           f"output_dir={tmp_path}", "grid.bogus=1"], capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "grid.bogus" in lines[0]


def test_a_finished_cell_run_under_another_config_is_named_rerun_or_kept(tmp_path, monkeypatch):
    """A changed default or sweep config does not silently keep old cells: the sweep stops before
    anything runs and names each cell and key (`stale=error`), or reruns them (`stale=rerun`), or
    keeps them (`stale=keep`). Two keys a run fills itself (the default student's folder, the
    learning rate for a pretrained student) and keys the saved config lacks are not differences;
    the third (the default student's recipe hash) is."""
    import pytest
    from omegaconf import OmegaConf

    import clip_td.app.sweep as sweep
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config, save_config
    from clip_td.base.io import InputError
    from pretrain.student import default_student
    from pretrain.student.default_student import recipe_hash

    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setattr(sweep, "_cell_command",
                        lambda cfg, cell, run_dir: [sys.executable, "-c", FAKE_CELL, str(run_dir), str(cell.seed), str(flags)])
    out = tmp_path / "sweep"

    def sweep_once(overrides=(), **extra):
        cfg = OmegaConf.structured(sweep.SweepConfig(output_dir=str(out), overrides=list(overrides), **extra,
                                                     grid=sweep.GridConfig(tasks=["snli_ve"], methods=["none"],
                                                                           fractions=[0.25], seeds=[0, 1])))
        return sweep.run_sweep(cfg)

    assert sweep_once()["ran"] == 2
    cells = sweep.expand_grid(OmegaConf.structured(sweep.GridConfig(tasks=["snli_ve"], methods=["none"],
                                                                    fractions=[0.25], seeds=[0, 1])))
    key = recipe_hash()
    for cell in cells:  # what the trainer saves: the default student's folder and recipe, the resolved lr
        run_dir = out / "runs" / cell.name
        resolved = load_config(FinetuneConfig, None, [*cell.overrides(), f"output_dir={run_dir}",
                                                      "student.pretrained=/cache/students/default",
                                                      f"student.default_recipe={key}", "train.lr=0.0003"])
        save_config(resolved, run_dir)
    assert sweep_once()["ran"] == 0  # same config: nothing is stale

    # another default student recipe (the shipped student replaced), or a run from before the key
    # was recorded: the cell ran with another student
    default_cfg = OmegaConf.structured(sweep.SweepConfig())
    with monkeypatch.context() as m:
        m.setattr(default_student, "recipe_hash", lambda overrides=(): "0123456789abcdef")
        assert sweep.stale_keys(default_cfg, cells[0], out / "runs" / cells[0].name) == [
            ("student.default_recipe", key, "0123456789abcdef")]
    old_run = tmp_path / "old_run"
    old_run.mkdir()
    saved = OmegaConf.load(out / "runs" / cells[0].name / "config.yaml")
    del saved.student["default_recipe"]
    OmegaConf.save(saved, old_run / "config.yaml")
    assert sweep.stale_keys(default_cfg, cells[0], old_run) == [("student.default_recipe", None, key)]

    sweep_cfg = out / "config.yaml"
    before = sweep_cfg.read_text()
    with pytest.raises(InputError) as e:
        sweep_once(overrides=["method.eta=0.5", "train.lr=0.001"])
    msg = str(e.value)
    assert msg.startswith(f"{out}: 2 finished cell(s) ran with a config that differs")
    assert "  snli_ve/none/f0.25/s0: method.eta was 1.0, now 0.5; train.lr was 0.0003, now 0.001" in msg
    assert "  snli_ve/none/f0.25/s1: " in msg and "stale=rerun" in msg and "stale=keep" in msg
    assert sweep_cfg.read_text() == before  # nothing written

    # the from-scratch student: its folder, its recipe and its learning rate (resolved to SCRATCH_LR) differ
    diff = sweep.stale_keys(OmegaConf.structured(sweep.SweepConfig(overrides=["student.pretrained=null"])),
                            cells[0], out / "runs" / cells[0].name)
    assert diff == [("student.pretrained", "/cache/students/default", None), ("student.default_recipe", key, None),
                    ("train.lr", 0.0003, 0.001)]

    # a key the run's config does not hold (added to the schema since) is not compared
    saved = OmegaConf.load(out / "runs" / cells[1].name / "config.yaml")
    del saved.method["eta"]
    OmegaConf.save(saved, out / "runs" / cells[1].name / "config.yaml")
    assert sweep.stale_keys(OmegaConf.structured(sweep.SweepConfig(overrides=["method.eta=0.5"])),
                            cells[1], out / "runs" / cells[1].name) == []

    summary = sweep_once(overrides=["method.eta=0.5"], stale="keep")
    assert (summary["ran"], summary["skipped"], summary["missing"]) == (0, 2, [])
    summary = sweep_once(overrides=["method.eta=0.5"], stale="rerun")  # only seed 0 differs now
    assert (summary["ran"], summary["skipped"]) == (1, 1)
    with pytest.raises(InputError, match="stale='later'; expected 'error', 'rerun' or 'keep'"):
        sweep_once(stale="later")


def test_sweep_configs_pin_the_weighting_their_results_ran_with():
    """method.weight_features defaults to false; the sweep configs whose clip_td rows were measured
    with the paper's weighting pin true (cell overrides come last, so a grid value still wins),
    and budget_holdout_image.yaml, benchmark_place.yaml and its label-free row run the new default."""
    from clip_td.app.sweep import SweepConfig, _cell_overrides, expand_grid
    from clip_td.base.config import load_config
    from clip_td.lib.distill import MethodConfig

    assert MethodConfig().weight_features is False
    repo = Path(__file__).resolve().parents[1]

    def weighting(name):
        cfg = load_config(SweepConfig, str(repo / "configs/sweep" / name), [])
        out = {}
        for cell in expand_grid(cfg.grid):
            keys = [o.split("=", 1)[1] for o in _cell_overrides(cfg, cell) if o.startswith("method.weight_features=")]
            out[(cell.method, cell.fraction, tuple(cell.overrides()))] = keys[-1].lower() if keys else None
        return set(out.values())

    for legacy in ("lowshot.yaml", "benchmark.yaml", "benchmark_budget.yaml", "budget_converged25.yaml"):
        assert weighting(legacy) == {"true"}, legacy
    assert weighting("budget_weight_features.yaml") == {"false"}  # its grid value overrides the pin
    assert weighting("budget_holdout_image.yaml") == {None}
    assert weighting("benchmark_place.yaml") == {None}  # the rerun on the place-reading student: today's default
    assert weighting("benchmark_place_label_free.yaml") == {None}  # its label-free row, same folder


def test_every_committed_sweep_config_loads_and_expands():
    """Each configs/sweep/*.yaml resolves (its `_base_` chain included) to a grid with at least one
    cell, and every cell's overrides are `key=value` strings: a config the README points at
    cannot be broken by a base it inherits from."""
    from clip_td.app.sweep import SweepConfig, _cell_overrides, expand_grid
    from clip_td.base.config import load_config

    repo = Path(__file__).resolve().parents[1]
    configs = sorted((repo / "configs" / "sweep").glob("*.yaml"))
    assert len(configs) >= 70
    for path in configs:
        cfg = load_config(SweepConfig, str(path), [])
        cells = expand_grid(cfg.grid)
        assert cells, path.name
        for cell in cells:
            assert all("=" in o for o in _cell_overrides(cfg, cell)), path.name
    place = load_config(SweepConfig, str(repo / "configs/sweep/place_answer_sets.yaml"), [])
    assert place.output_dir == "runs/sweep_budget_place"
    assert len(expand_grid(place.grid)) == 3 * 3  # three fractions x three seeds, one method


# A stand-in for a long cell: records its pid and OMP_NUM_THREADS, waits for `<flags>/go` (at most
# 60 s), then writes a complete metrics.json.
SLOW_CELL = r"""
import json, os, sys, time
from pathlib import Path
run_dir, seed, flags = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
(flags / f"pid-{seed}").write_text(f"{os.getpid()} {os.environ['OMP_NUM_THREADS']}")
end = time.time() + 60
while not (flags / "go").exists() and time.time() < end:
    time.sleep(0.05)
(run_dir / "metrics.json").write_text(json.dumps({
    "task": "snli_ve", "method": "none", "train_fraction": 0.25, "seed": seed,
    "eval": {"val": {"accuracy": 50.0}}, "train": {"steps": 1, "samples_per_s": 1.0, "step_time_s": 1.0}}))
"""

SWEEP_DRIVER = r"""
import sys
from omegaconf import OmegaConf
import clip_td.app.sweep as sweep
out, flags, cell_src = sys.argv[1], sys.argv[2], sys.argv[3]
sweep._cell_command = lambda cfg, cell, run_dir: [sys.executable, "-c", cell_src, str(run_dir), str(cell.seed), flags]
cfg = OmegaConf.structured(sweep.SweepConfig(output_dir=out, threads=3, report=False, grid=sweep.GridConfig(
    tasks=["snli_ve"], methods=["none"], fractions=[0.25], seeds=[0])))
sweep.run_sweep(cfg)
"""


def test_a_killed_sweep_leaves_its_running_cell_locked(tmp_path, monkeypatch):
    """A sweep killed mid-cell (its cell process goes on, orphaned) does not release the cell: a
    new sweep on the folder leaves it to the running process instead of starting it twice, and
    skips it once that process has written its metrics. `threads` sets the cell's OMP_NUM_THREADS."""
    import fcntl
    import signal
    import time

    import pytest
    from omegaconf import OmegaConf

    import clip_td.app.sweep as sweep
    from clip_td.base.io import InputError

    out, flags = tmp_path / "sweep", tmp_path / "flags"
    flags.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", SWEEP_DRIVER, str(out), str(flags), SLOW_CELL], cwd=ROOT)
    pid_file = flags / "pid-0"
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    cell_pid, threads = map(int, pid_file.read_text().split())
    assert threads == 3
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    lock_path = out / "runs/snli_ve/none/f0.25/s0" / sweep.CELL_LOCK
    with open(lock_path, "a") as probe, pytest.raises(BlockingIOError):
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the orphaned cell process

    monkeypatch.setattr(sweep, "_cell_command",
                        lambda cfg, cell, run_dir: [sys.executable, "-c", SLOW_CELL, str(run_dir), str(cell.seed), str(flags)])
    cfg = OmegaConf.structured(sweep.SweepConfig(output_dir=str(out), report=False, grid=sweep.GridConfig(
        tasks=["snli_ve"], methods=["none"], fractions=[0.25], seeds=[0])))
    summary = sweep.run_sweep(cfg)
    assert (summary["ran"], summary["elsewhere"]) == (0, ["snli_ve/none/f0.25/s0"])
    assert pid_file.read_text().split()[0] == str(cell_pid)  # not started a second time

    (flags / "go").write_text("")
    deadline = time.time() + 60
    with open(lock_path, "a") as probe:
        while time.time() < deadline:  # the lock goes with the cell process's exit
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
                break
            except BlockingIOError:
                time.sleep(0.05)
    summary = sweep.run_sweep(cfg)
    assert (summary["ran"], summary["skipped"], summary["missing"]) == (0, 1, [])

    with pytest.raises(InputError, match="threads=0"):
        sweep.run_sweep(OmegaConf.merge(cfg, {"threads": 0}))
