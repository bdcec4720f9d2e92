"""Grids of fine-tuning runs (tasks x methods x fractions x seeds x any config key) and their report.

`sweep.py --config configs/sweep/lowshot.yaml` runs every cell of the grid as a finetune run in
`<output_dir>/runs/<cell>/`, skipping cells whose metrics.json is complete (and whose saved config.yaml
is what the cell resolves to now: `stale` says what happens to one that is not) and recording each failed
cell in its `failed.json` (the error line, the log's tail, the attempt count) without stopping; a
rerun retries failed cells (`retry_failed: false` leaves them) and removes `failed.json` once the
cell succeeds. `report(dir)` (also `clip-td report DIR`) turns the metrics.json files into
results.csv (docs/contracts.md section 4), summary.md and PNG plots; with the sweep's saved
`<output_dir>/config.yaml` it knows the grid, marks every table row with fewer seeds than the grid
asks ("2 of 3 †") and lists the missing runs (`grid_status`), and `clip-td report` then exits 1
unless given `--allow-missing`.
"""

from __future__ import annotations

import csv
import fcntl
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from clip_td.base.config import load_config, parse_script_args, save_config
from clip_td.app.benchmark_targets import SHORT, seeds_short, targets_markdown
from clip_td.base.io import InputError, read_json, write_json_atomic, write_text_atomic
from clip_td.base.scripts import run_script
from tasks import find_task

#: Split and metric each task is summarised by in plots (all metrics go to the CSV and tables).


def primary_metric(task: str) -> Optional[str]:
    """The metric a task's plots and targets rank by (the task's `primary`)."""
    t = find_task(task)
    return t.primary if t is not None else None
BASELINE = "none"
CSV_COLUMNS = ("task", "method", "train_fraction", "seed", "split", "metric", "value")


@dataclass
class GridConfig:
    tasks: List[str] = field(default_factory=lambda: ["vqa"])  # task.name values
    methods: List[str] = field(default_factory=lambda: ["none", "naive_kd", "clip_td"])  # method.name values
    fractions: List[float] = field(default_factory=lambda: [0.01, 0.05, 0.25, 1.0])  # train.fraction values
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])  # seed values
    # any other finetune key -> list of values, e.g. {"method.rho": [0.25, 0.5]}; crossed with the rest
    extra: Dict[str, List[Any]] = field(default_factory=dict)


@dataclass
class SweepConfig:
    output_dir: str = "runs/sweep"  # results.csv, summary.md, plots and runs/<cell>/ go here
    seed: int = 0  # unused by the grid itself (cells take grid.seeds); kept for the common script keys
    finetune_config: Optional[str] = None  # finetune YAML applied to every cell (path relative to the cwd)
    overrides: List[str] = field(default_factory=list)  # dotted finetune overrides for every cell
    # per-task dotted overrides, e.g. {"vcr": ["train.batch_size=16"]}
    task_overrides: Dict[str, List[str]] = field(default_factory=dict)
    # per-fraction dotted overrides (after the task's), keyed by a fraction in (0, 1] (a key the grid
    # does not hold applies to no cell), e.g. {1.0: ["train.max_steps=6000", "train.holdout=0.1",
    # "train.patience=4"]}: a step budget per fraction
    fraction_overrides: Dict[Any, List[str]] = field(default_factory=dict)
    grid: GridConfig = field(default_factory=GridConfig)
    parallel: int = 1  # cells run at once
    # threads per cell (OMP_NUM_THREADS / MKL_NUM_THREADS of its process); null: cpu_count // parallel.
    # Two sweeps sharing the cores: give each threads=1 (or parallel=cores) to avoid oversubscription
    threads: Optional[int] = None
    launcher: str = "python"  # "python" (one process per cell) or "accelerate" (accelerate launch per cell)
    launch_args: List[str] = field(default_factory=list)  # extra `accelerate launch` arguments, e.g. ["--num_processes", "2"]
    retry_failed: bool = True  # rerun cells recorded as failed (false: leave them, and their failed.json)
    # a finished cell whose saved config.yaml differs from what the cell resolves to now (a changed
    # default, an edited sweep config): "error" stops before anything runs and names the cells and
    # keys, "rerun" runs them again (their old results are replaced), "keep" keeps the old results
    stale: str = "error"
    report: bool = True  # write results.csv, summary.md and plots at the end


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    fraction: float
    seed: int
    extra: Tuple[Tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        parts = [self.task, self.method, f"f{self.fraction:g}", f"s{self.seed}"]
        parts += [f"{k}={v}" for k, v in self.extra]
        return "/".join(p.replace("/", "_") for p in parts)

    def overrides(self) -> List[str]:
        out = [f"task.name={self.task}", f"method.name={self.method}", f"train.fraction={self.fraction}", f"seed={self.seed}"]
        return out + [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in self.extra]


def expand_grid(grid: Any) -> List[Cell]:
    """All cells of the grid, in a stable order (task, fraction, seed, method, extra)."""
    for key in ("tasks", "methods", "fractions", "seeds"):
        if len(grid[key]) == 0:
            raise InputError(f"sweep config: grid.{key} is empty; expected at least one value")
    for f in grid.fractions:
        if not 0.0 < float(f) <= 1.0:
            raise InputError(f"sweep config: grid.fractions holds {f}; expected fractions in (0, 1]")
    extra_keys = sorted(grid.extra)
    extra_values = [list(grid.extra[k]) for k in extra_keys]
    cells = []
    for task, frac, seed, method in itertools.product(grid.tasks, grid.fractions, grid.seeds, grid.methods):
        for combo in itertools.product(*extra_values) if extra_keys else [()]:
            cells.append(Cell(str(task), str(method), float(frac), int(seed), tuple(zip(extra_keys, combo))))
    return cells


def fraction_overrides(cfg: Any) -> Dict[float, List[str]]:
    """cfg.fraction_overrides keyed by fraction (float). Every key must be a fraction in (0, 1]; a
    key the grid does not hold (a grid narrowed on the command line) applies to no cell."""
    out: Dict[float, List[str]] = {}
    for key, values in (cfg.get("fraction_overrides") or {}).items():
        try:
            frac = float(key)
        except ValueError:
            frac = math.nan
        if not 0.0 < frac <= 1.0:
            raise InputError(f"sweep config: fraction_overrides has key {key!r}; expected a training fraction "
                             f"in (0, 1], as in grid.fractions")
        out[frac] = [str(v) for v in values]
    return out


def is_complete(metrics_path: Path) -> bool:
    """A finished cell: metrics.json parses and holds every metric of its task for each eval split."""
    try:
        m = json.loads(metrics_path.read_text())
        metrics = find_task(m["task"]).metric_names
        return bool(m["eval"]) and all(
            isinstance(split_scores.get(k), (int, float)) for split_scores in m["eval"].values() for k in metrics
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _cell_overrides(cfg: Any, cell: Cell) -> List[str]:
    """The dotted finetune overrides of one cell, in the order they apply."""
    return (list(cfg.overrides) + list(cfg.task_overrides.get(cell.task, []))
            + fraction_overrides(cfg).get(cell.fraction, []) + cell.overrides())


def _cell_command(cfg: Any, cell: Cell, run_dir: Path) -> List[str]:
    args: List[str] = []
    if cfg.finetune_config:
        args += ["--config", str(cfg.finetune_config)]
    args += _cell_overrides(cfg, cell)
    args.append(f"output_dir={run_dir}")
    if cfg.launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", *cfg.launch_args, "-m", "clip_td.app.trainer", *args]
    if cfg.launcher == "python":
        return [sys.executable, "-m", "clip_td.app.trainer", *args]
    raise InputError(f"sweep config: launcher={cfg.launcher!r}; expected 'python' or 'accelerate'")


LOG_TAIL_LINES = 40  # lines of a failed cell's log kept in its failed.json


def _failure_reason(lines: List[str], returncode: int) -> str:
    """One line saying why a cell failed: its last `error: ...` line (run_script's message), else
    the log's last line (a traceback's exception), else the exit code."""
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1]
    if returncode != 0:
        last = [ln for ln in lines if ln.strip()]
        return last[-1].strip() if last else f"exit code {returncode}"
    return "exit code 0 but metrics.json is missing or incomplete"


STALE_MODES = ("error", "rerun", "keep")  # sweep key `stale`

#: keys a run writes into its config.yaml itself or that name where it ran, never compared
_RUN_KEYS = ("output_dir", "train.resume")


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def stale_keys(cfg: Any, cell: Cell, run_dir: Path) -> List[Tuple[str, Any, Any]]:
    """(key, value in the cell's saved config.yaml, value the cell resolves to now) for every
    finetune key that differs; empty when they agree or the run saved no config.yaml.

    The run fills three keys itself: `student.pretrained=default` becomes the student's folder (not
    compared while the cell asks for the default) and `student.default_recipe` that student's recipe
    hash (compared with today's default recipe; a run from before the key existed holds none and
    counts as another student), and `train.lr=null` the learning rate for a pretrained or a
    from-scratch student (compared as resolved). Any other key the saved config lacks (added to the
    schema after the run) or holds no more (removed) is not compared."""
    from omegaconf import OmegaConf

    from clip_td.app.schema import FinetuneConfig, default_lr
    from pretrain.student.default_student import DEFAULT, recipe_hash

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return []
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    except Exception as e:
        raise InputError(f"{saved_path}: not a readable config ({e}); remove the cell folder to rerun it") from None
    now = OmegaConf.to_container(load_config(FinetuneConfig, cfg.finetune_config or None,
                                             _cell_overrides(cfg, cell)), resolve=True)
    if now["train"]["lr"] is None:
        now["train"]["lr"] = default_lr(now["student"]["pretrained"])
    if now["student"]["pretrained"] == DEFAULT and now["student"]["name"] == "vilt":
        now["student"]["default_recipe"] = recipe_hash()
        saved.setdefault("student", {}).setdefault("default_recipe", None)
    saved_flat, now_flat = _flatten(saved), _flatten(now)
    out = []
    for key, value in now_flat.items():
        if key in _RUN_KEYS or key not in saved_flat:
            continue
        if key == "student.pretrained" and value == DEFAULT:
            continue
        if saved_flat[key] != value:
            out.append((key, saved_flat[key], value))
    return out


CELL_LOCK = ".cell.lock"  # held (fcntl.flock) by the sweep running a cell, released by the kernel on death


def run_cell(cfg: Any, cell: Cell, root: Path, threads: int, rerun: bool = False) -> Dict[str, Any]:
    """Run one cell in its own process; never raises for a failed run (the record says why).

    A failure writes `failed.json`: {cell, seconds, returncode, error (one line), log_tail (the
    last LOG_TAIL_LINES lines of log.txt), log (its path), attempts}; a success removes it. Two
    sweeps on one folder never run a cell at once: the cell's lock file is held while it runs, and
    a sweep that finds it held (or the cell finished meanwhile) leaves the cell to the other sweep
    (`elsewhere` in the record). `rerun`: the cell finished under another config (`stale=rerun`):
    unless another sweep has rerun it meanwhile, its metrics.json and checkpoints go first, so an
    interrupted rerun leaves an unfinished cell, never the old results under the new config."""
    run_dir = root / "runs" / cell.name
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / CELL_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"cell": cell.name, "seconds": 0.0, "elsewhere": "running in another sweep (its lock is held)"}
        try:
            if is_complete(run_dir / "metrics.json"):
                if not (rerun and stale_keys(cfg, cell, run_dir)):
                    return {"cell": cell.name, "seconds": 0.0, "elsewhere": "finished by another sweep meanwhile"}
                (run_dir / "metrics.json").unlink()
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            return _run_cell_locked(cfg, cell, run_dir, threads, lock.fileno())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_cell_locked(cfg: Any, cell: Cell, run_dir: Path, threads: int, lock_fd: int) -> Dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    start = time.time()
    log_path = run_dir / "log.txt"
    try:
        # appended, not replaced: a cell resumed from its checkpoints (train.resume=latest) or
        # retried after a failure keeps the log of its earlier attempts. The cell's process
        # inherits the lock's file descriptor (a flock belongs to the open file): a sweep killed
        # mid-cell leaves the lock held until the still-running cell exits, so a new sweep on the
        # folder leaves that cell alone instead of starting it a second time
        with open(log_path, "a") as log:
            returncode = subprocess.run(_cell_command(cfg, cell, run_dir), stdout=log, stderr=subprocess.STDOUT,
                                        env=env, pass_fds=(lock_fd,)).returncode
    except (OSError, InputError) as e:  # the cell could not even start
        with open(log_path, "a") as log:
            log.write(f"error: could not start the cell: {e}\n")
        returncode = -1
    record: Dict[str, Any] = {"cell": cell.name, "seconds": round(time.time() - start, 1), "returncode": returncode}
    failed = run_dir / "failed.json"
    if returncode != 0 or not is_complete(run_dir / "metrics.json"):
        lines = log_path.read_text(errors="replace").rstrip().splitlines() if log_path.is_file() else []
        attempts = 1
        if failed.is_file():
            try:
                attempts += int(read_json(failed).get("attempts", 1))
            except (InputError, AttributeError, TypeError, ValueError):
                pass
        record.update(error=_failure_reason(lines, returncode), log_tail=lines[-LOG_TAIL_LINES:],
                      log=str(log_path), attempts=attempts)
        write_json_atomic(failed, record)
    else:
        failed.unlink(missing_ok=True)
    return record


def oversubscription_warning(load: float, cores: int, parallel: int, threads: int) -> Optional[str]:
    """The warning for threads chosen automatically (cpu_count // parallel) on a machine that is
    already busy: `load` (the 1-minute load average) plus this sweep's parallel * threads threads
    would exceed the cores by more than half a core. None when they fit or a run has one thread."""
    if threads <= 1 or load + parallel * threads <= cores + 0.5:
        return None
    return (f"sweep: the load average is {load:.1f} on {cores} cores before this sweep starts, and each of its "
            f"{parallel} run(s) gets {threads} threads (cpu_count // parallel): with the work already running "
            f"that oversubscribes the cores, which slows every run several times over; pass threads=1 "
            f"(or stop the other work)")


def run_sweep(cfg: Any) -> Dict[str, Any]:
    """Run the missing cells of the grid and write the report; returns a summary of what ran."""
    cells = expand_grid(cfg.grid)
    fraction_overrides(cfg)  # a key that is no fraction fails before anything is written
    if cfg.threads is not None and int(cfg.threads) < 1:
        raise InputError(f"sweep config: threads={cfg.threads}; expected a positive integer or null "
                         "(null: cpu_count // parallel)")
    if cfg.stale not in STALE_MODES:
        raise InputError(f"sweep config: stale={cfg.stale!r}; expected " + ", ".join(map(repr, STALE_MODES[:-1]))
                         + f" or {STALE_MODES[-1]!r}")
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    todo, stale = [], []
    for cell in cells:
        run_dir = root / "runs" / cell.name
        if is_complete(run_dir / "metrics.json"):
            diff = stale_keys(cfg, cell, run_dir) if cfg.stale != "keep" else []
            if diff:
                stale.append((cell, diff))
                if cfg.stale == "rerun":
                    todo.append(cell)
            continue
        if (run_dir / "failed.json").exists() and not cfg.retry_failed:
            continue
        todo.append(cell)
    if stale and cfg.stale == "error":
        lines = [f"  {cell.name}: " + "; ".join(f"{k} was {old!r}, now {new!r}" for k, old, new in diff[:4])
                 + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "") for cell, diff in stale[:10]]
        more = f"\n  ... and {len(stale) - 10} more cells" if len(stale) > 10 else ""
        raise InputError(f"{root}: {len(stale)} finished cell(s) ran with a config that differs from what they "
                         f"resolve to now (a changed default or sweep config):\n" + "\n".join(lines) + more
                         + "\nRun with stale=rerun to run them again (their results are replaced), or "
                         "stale=keep to keep them as they are")
    save_config(cfg, root)
    parallel = max(1, int(cfg.parallel))
    threads = int(cfg.threads) if cfg.threads is not None else max(1, (os.cpu_count() or 1) // parallel)
    if cfg.threads is None and todo and hasattr(os, "getloadavg"):
        warning = oversubscription_warning(os.getloadavg()[0], os.cpu_count() or 1, parallel, threads)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    print(f"sweep: {len(cells)} cells, {len(cells) - len(todo)} done or failed before, {len(todo)} to run"
          + (f" ({len(stale)} finished under another config, {'rerun' if cfg.stale == 'rerun' else 'kept'})"
             if stale else ""), flush=True)
    records: List[Dict[str, Any]] = []
    start = time.time()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        rerun = {cell for cell, _ in stale}
        futures = [pool.submit(run_cell, cfg, cell, root, threads, cell in rerun) for cell in todo]
        for i, fut in enumerate(futures, start=1):
            rec = fut.result()
            records.append(rec)
            status = ("FAILED: " + rec["error"].splitlines()[-1] if "error" in rec
                      else "skipped: " + rec["elsewhere"] if "elsewhere" in rec else "ok")
            print(f"[{i}/{len(todo)}] {rec['cell']} ({rec['seconds']} s) {status}", flush=True)
    missing = [c.name for c in cells if not is_complete(root / "runs" / c.name / "metrics.json")]
    summary = {
        "cells": len(cells),
        "ran": sum("elsewhere" not in r for r in records),
        "failed": [r["cell"] for r in records if "error" in r],
        "elsewhere": [r["cell"] for r in records if "elsewhere" in r],  # left to another sweep on this folder
        "skipped": len(cells) - len(todo),
        "missing": missing,  # every grid cell without a complete metrics.json now (failed before or now)
        "wall_s": round(time.time() - start, 1),
    }
    write_json_atomic(root / "sweep_run.json", summary)
    if missing:
        print(f"sweep: {len(missing)} of {len(cells)} cells have no complete metrics.json (their failed.json "
              f"says why; a rerun retries them): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
              file=sys.stderr, flush=True)
    if cfg.report:
        report(root)
    return summary


# ---------------------------------------------------------------------------------------------
# Report


def collect_rows(root: Path) -> List[Dict[str, Any]]:
    """results.csv rows from every complete `runs/**/metrics.json` under `root`."""
    rows = []
    for path in sorted((Path(root) / "runs").rglob("metrics.json")):
        if not is_complete(path):
            continue
        m = read_json(path)
        method = m["method"]
        tag = _extra_tag(path.parent, root)
        if tag:
            method = f"{method}[{tag}]"
        for split, scores in m["eval"].items():
            for metric, value in scores.items():
                rows.append(
                    {"task": m["task"], "method": method, "train_fraction": float(m["train_fraction"]),
                     "seed": int(m["seed"]), "split": split, "metric": metric, "value": float(value)}
                )
    return rows


def read_results_csv(path: Path) -> List[Dict[str, Any]]:
    """The rows of a saved results.csv (contract columns), checked line by line."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or list(reader.fieldnames) != list(CSV_COLUMNS):
            raise InputError(f"{path}:1: header {reader.fieldnames}; expected {','.join(CSV_COLUMNS)}")
        for line, r in enumerate(reader, start=2):
            try:
                rows.append({**r, "train_fraction": float(r["train_fraction"]), "seed": int(r["seed"]),
                             "value": float(r["value"])})
            except (TypeError, ValueError):
                raise InputError(f"{path}:{line}: train_fraction, seed and value must be numbers; got "
                                 f"{r.get('train_fraction')!r}, {r.get('seed')!r}, {r.get('value')!r}") from None
    return rows


def _extra_tag(run_dir: Path, root: Path) -> str:
    """Extra grid keys are the path parts after task/method/fraction/seed."""
    parts = run_dir.relative_to(Path(root) / "runs").parts
    return ",".join(parts[4:])


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(rows: Iterable[Dict[str, Any]]) -> Dict[Tuple[str, str, float, str, str], Dict[str, Any]]:
    """(task, method, fraction, split, metric) -> {mean, std, n, seeds}."""
    groups: Dict[Tuple[str, str, float, str, str], Dict[int, float]] = {}
    for r in rows:
        key = (r["task"], r["method"], r["train_fraction"], r["split"], r["metric"])
        groups.setdefault(key, {})[r["seed"]] = r["value"]
    out = {}
    for key, by_seed in groups.items():
        mean, std = mean_std([by_seed[s] for s in sorted(by_seed)])
        out[key] = {"mean": mean, "std": std, "n": len(by_seed), "seeds": sorted(by_seed)}
    return out


def _gain(agg, key) -> Optional[Tuple[float, float]]:
    """(absolute, relative %) gain of key's method over `none` on the same cell; None if no baseline."""
    task, method, frac, split, metric = key
    base = agg.get((task, BASELINE, frac, split, metric))
    if base is None or method == BASELINE:
        return None
    diff = agg[key]["mean"] - base["mean"]
    rel = 100.0 * diff / base["mean"] if base["mean"] else float("nan")
    return diff, rel


@dataclass
class GridStatus:
    """What the sweep's grid asked for, and which of its cells have no complete metrics.json."""

    seeds: Dict[Tuple[str, str, float], List[int]]  # (task, method label as in results.csv, fraction) -> seeds
    missing: List[Dict[str, Any]]  # {cell, task, method, fraction, seed, reason}
    cells: int


def _method_label(cell: Cell) -> str:
    """The cell's method as `collect_rows` labels it: `method[extra tag]` with extra grid keys."""
    tag = ",".join(cell.name.split("/")[4:])
    return f"{cell.method}[{tag}]" if tag else cell.method


def grid_status(root: Any) -> Optional[GridStatus]:
    """The grid of the sweep's saved `<root>/config.yaml` checked against `runs/` and the folder's
    results.csv; None without a config. A cell is present when its run has a complete metrics.json
    or results.csv holds its rows: `report` writes that file from the runs and the `--include`d rows
    before it calls this (and a results folder kept without its runs/ has only the file)."""
    root = Path(root)
    path = root / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), OmegaConf.load(path))
        cells = expand_grid(cfg.grid)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:  # YAML or schema errors of a hand-edited file
        raise InputError(f"{path}: not a sweep config ({str(e).splitlines()[0]})") from None
    seeds: Dict[Tuple[str, str, float], List[int]] = {}
    missing = []
    held = set()  # the cells results.csv holds: this folder's runs and the included rows
    if (root / "results.csv").is_file():
        held = {(r["task"], r["method"], r["train_fraction"], r["seed"]) for r in read_results_csv(root / "results.csv")}
    for cell in cells:
        seeds.setdefault((cell.task, _method_label(cell), cell.fraction), []).append(cell.seed)
        run_dir = root / "runs" / cell.name
        if (cell.task, _method_label(cell), cell.fraction, cell.seed) in held or is_complete(run_dir / "metrics.json"):
            continue
        reason = "not run (or its metrics.json is incomplete)"
        if (run_dir / "failed.json").is_file():
            try:
                reason = "failed: " + (str(read_json(run_dir / "failed.json").get("error", "")).splitlines() or [""])[-1]
            except (InputError, AttributeError):
                reason = "failed (unreadable failed.json)"
        missing.append({"cell": cell.name, "task": cell.task, "method": _method_label(cell),
                        "fraction": cell.fraction, "seed": cell.seed, "reason": reason})
    return GridStatus(seeds=seeds, missing=missing, cells=len(cells))


def ask_unlisted(status: GridStatus, keys: Iterable[Tuple[Any, ...]]) -> List[Tuple[str, str, float]]:
    """Rows the grid does not list (an included sweep's rows with extra keys, or a method the grid
    never named) are asked for every seed the grid asks of their task, so that a row with fewer
    seeds is marked like a grid row. Adds them to `status.seeds` and returns their keys; a task
    the grid does not hold asks nothing."""
    per_task: Dict[str, set] = {}
    for (task, _method, _frac), seeds in status.seeds.items():
        per_task.setdefault(task, set()).update(seeds)
    added = []
    for key in keys:
        task, method, frac = key[0], key[1], float(key[2])
        if (task, method, frac) not in status.seeds and task in per_task:
            status.seeds[(task, method, frac)] = sorted(per_task[task])
            added.append((task, method, frac))
    return added


def _n_text(entry: Dict[str, Any], asked: Optional[List[int]]) -> str:
    """n, or "n of N †" when the grid asked for N > n seeds."""
    wanted = seeds_short(entry, asked)
    return f"{entry['n']} of {wanted} {SHORT}" if wanted else str(entry["n"])


def summary_markdown(agg, status: Optional[GridStatus] = None) -> str:
    """Per-task tables of mean +- std, n and gain; with the grid's `status`, rows with fewer seeds
    than asked show "n of N †" (a footnote says so) and the missing runs are listed."""
    lines = ["# Sweep summary", "",
             "Mean +- sample std over seeds (n = number of seeds). Gain = method minus `none` on the",
             "same task, fraction and split (absolute points, and relative %).", ""]
    tasks = sorted({k[0] for k in agg})
    short = False
    for task in tasks:
        lines += [f"## {task}", "", "| method | fraction | split | metric | mean +- std | n | gain vs none | rel. gain |",
                  "|---|---|---|---|---|---|---|---|"]
        keys = sorted((k for k in agg if k[0] == task), key=lambda k: (k[4], k[3], k[2], _method_order(k[1])))
        for key in keys:
            a = agg[key]
            g = _gain(agg, key)
            gain = f"{g[0]:+.2f}" if g else ""
            rel = f"{g[1]:+.1f}%" if g and not math.isnan(g[1]) else ""
            n = _n_text(a, status.seeds.get(key[:3]) if status else None)
            short = short or SHORT in n
            spread = f"+- {a['std']:.2f}" if a["n"] > 1 else "(one seed: no std)"
            lines.append(f"| {key[1]} | {key[2] * 100:g}% | {key[3]} | {key[4]} | {a['mean']:.2f} {spread} | {n} | {gain} | {rel} |")
        lines.append("")
    if short:
        lines += [f"{SHORT} Fewer seeds than the sweep's grid asks (a row the grid does not list, such as an",
                  "included sweep's, is asked for the seeds the grid asks of its task): mean and std cover only",
                  "the seeds that finished (see Missing runs for the grid's own cells).", ""]
    if status and status.missing:
        lines += ["## Missing runs", "",
                  f"{len(status.missing)} of {status.cells} grid cells have no complete metrics.json "
                  "(a rerun of the sweep retries failed cells):", "",
                  "| task | method | fraction | seed | reason |", "|---|---|---|---|---|"]
        for m in status.missing:
            reason = m["reason"].replace("|", "\\|")
            lines.append(f"| {m['task']} | {m['method']} | {m['fraction'] * 100:g}% | {m['seed']} | {reason} |")
        lines.append("")
    return "\n".join(lines) + "\n"


FIXED_COLOURS = {"none": "tab:blue", "naive_kd": "tab:orange", "clip_td": "tab:green"}


def _palette(methods: Iterable[str]) -> Dict[str, Any]:
    """One distinct colour per method across every panel and plot: none / naive_kd / clip_td keep
    theirs, the other rows take the rest of tab10, then tab20's, in `_method_order`."""
    import matplotlib

    methods = set(methods)
    fixed = set(FIXED_COLOURS.values())
    free = [c for c in (f"tab:{n}" for n in ("red", "purple", "brown", "pink", "olive", "cyan", "gray")) if c not in fixed]
    free += list(matplotlib.colormaps["tab20"].colors[1::2])
    others = [m for m in sorted(methods, key=_method_order) if m not in FIXED_COLOURS]
    out: Dict[str, Any] = {m: free[i % len(free)] for i, m in enumerate(others)}
    return {**out, **{m: c for m, c in FIXED_COLOURS.items() if m in methods}}


def _legend_label(method: str, width: int = 36) -> str:
    """A plot legend's label for a method row: `clip_td[method.a=1,method.b=2]` is shown as
    `clip_td[a=1, b=2]` wrapped to `width` characters a line, so that long rows (the label-free
    row's five keys) leave room for the axes."""
    import textwrap

    return textwrap.fill(method.replace("method.", "").replace(",", ", "), width)


def _method_order(method: str) -> Tuple[int, str]:
    order = {"none": 0, "naive_kd": 1, "clip_td": 2}
    return order.get(method, 3), method


def write_results_csv(rows: List[Dict[str, Any]], path: Path) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    key = lambda r: (r["task"], _method_order(r["method"]), r["train_fraction"], r["seed"], r["split"], r["metric"])
    for r in sorted(rows, key=key):
        writer.writerow({**r, "value": f"{r['value']:.4f}"})
    write_text_atomic(path, buf.getvalue())


def plot(agg, out_dir: Path) -> List[Path]:
    """metric-vs-fraction panels (task x split) with std bands, and an in-domain vs shifted gain plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tasks = sorted({k[0] for k in agg})
    splits = sorted({k[3] for k in agg}, key=lambda s: (s != "val", s))
    colour = _palette(k[1] for k in agg)
    fig, axes = plt.subplots(len(splits), len(tasks), figsize=(4.2 * len(tasks), 3.4 * len(splits)), squeeze=False)
    for c, task in enumerate(tasks):
        metric = primary_metric(task)
        for r, split in enumerate(splits):
            ax = axes[r][c]
            methods = sorted({k[1] for k in agg if k[0] == task and k[3] == split}, key=_method_order)
            for method in methods:
                fr = sorted(k[2] for k in agg if k[:2] == (task, method) and k[3:] == (split, metric))
                if not fr:
                    continue
                mean = [agg[(task, method, f, split, metric)]["mean"] for f in fr]
                std = [agg[(task, method, f, split, metric)]["std"] for f in fr]
                x = [100 * f for f in fr]
                ax.plot(x, mean, marker="o", label=_legend_label(method), color=colour[method])
                ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2, color=colour[method])
            ax.set_xscale("log")
            ax.set_xlabel("training fraction (%)")
            ax.set_ylabel(f"{metric} (%)")
            ax.set_title(f"{task} / {split}")
            ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    paths.append(_save_fig(fig, out_dir / "metric_vs_fraction.png"))
    plt.close(fig)

    # gain over `none` on val vs val_shift, per task and method, one point per fraction
    if {"val", "val_shift"} <= set(splits):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
        for c, task in enumerate(tasks):
            ax = axes[0][c]
            metric = primary_metric(task)
            for method in sorted({k[1] for k in agg if k[0] == task and k[1] != BASELINE}, key=_method_order):
                pts = []
                for f in sorted({k[2] for k in agg if k[:2] == (task, method)}):
                    g_in = _gain(agg, (task, method, f, "val", metric)) if (task, method, f, "val", metric) in agg else None
                    g_sh = _gain(agg, (task, method, f, "val_shift", metric)) if (task, method, f, "val_shift", metric) in agg else None
                    if g_in and g_sh:
                        pts.append((g_in[0], g_sh[0], f))
                if pts:
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=_legend_label(method), color=colour[method])
                    for p in pts:
                        ax.annotate(f"{100 * p[2]:g}%", (p[0], p[1]), fontsize=7)
            lims = ax.get_xlim() + ax.get_ylim()
            lo, hi = min(lims), max(lims)
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
            ax.set_xlabel("gain over none, val (points)")
            ax.set_ylabel("gain over none, val_shift (points)")
            ax.set_title(f"{task} ({metric})")
            ax.grid(alpha=0.3)
        _figure_legend(fig, axes)
        paths.append(_save_fig(fig, out_dir / "gain_shift_vs_indomain.png"))
        plt.close(fig)
    return paths


def _figure_legend(fig, axes) -> None:
    """One legend for the whole figure, right of the panels (every method once, none / naive_kd /
    clip_td first): per-panel legends of long method rows would cover the curves."""
    handles: Dict[str, Any] = {}
    for ax in (a for row in axes for a in row):
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.tight_layout()
    if handles:
        labels = sorted(handles, key=_method_order)
        fig.legend([handles[k] for k in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)


def _save_fig(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _row_key(r: Dict[str, Any]) -> Tuple[str, str, float, int, str, str]:
    return r["task"], r["method"], r["train_fraction"], r["seed"], r["split"], r["metric"]


def include_rows(rows: List[Dict[str, Any]], paths: Sequence[Any]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """`rows` plus the rows of other sweeps' results.csv files (a file, or a folder holding one)
    that `rows` lacks: a run of `rows` always wins over an included row of the same task, method,
    fraction, seed, split and metric. Returns the merged rows and one markdown line per file
    (how many rows it added, how many it held that were already there and of those how many
    disagreed)."""
    merged = list(rows)
    seen = {_row_key(r): r["value"] for r in rows}
    notes = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "results.csv"
        if not path.is_file():
            raise InputError(f"{p}: no results.csv to include (expected a sweep's results.csv or a folder holding one)")
        added = dup = differ = 0
        for r in read_results_csv(path):
            k = _row_key(r)
            if k in seen:
                dup += 1
                differ += abs(seen[k] - r["value"]) > 5e-5
                continue
            seen[k] = r["value"]
            merged.append(r)
            added += 1
        notes.append(f"- `{p}`: {added} rows added, {dup} already here (kept this folder's"
                     f"{f'; {differ} of them differ' if differ else ''})")
    return merged, notes


def report(root: Any, include: Sequence[Any] = ()) -> Dict[str, Path]:
    """Re-render results.csv, summary.md and plots from the metrics.json files under `root/runs`
    (summary.md marks what the grid of `root/config.yaml` asked for and did not get: `grid_status`).
    A results folder kept without its runs (results.csv + config.yaml) re-renders from its
    results.csv, which is left as it is unless `include` adds rows. `include`: other sweeps'
    results.csv files (or their folders) whose cells this folder lacks, reported beside its own
    (`include_rows`; results.csv then holds them too and summary.md lists where they came from)."""
    root = Path(root)
    if (root / "runs").is_dir():
        rows = collect_rows(root)
        if not rows:
            raise InputError(f"{root / 'runs'}: no complete metrics.json found")
        fresh = True
    elif (root / "results.csv").is_file():
        rows = read_results_csv(root / "results.csv")
        if not rows:
            raise InputError(f"{root / 'results.csv'}: no result rows")
        fresh = False
    else:
        raise InputError(f"{root}: not a sweep folder (expected {root / 'runs'}/ with finetune runs, or a "
                         f"results.csv)")
    rows, notes = include_rows(rows, include)
    if fresh or include:
        write_results_csv(rows, root / "results.csv")
    agg = aggregate(rows)

    status = grid_status(root)
    if status:
        ask_unlisted(status, agg)
    targets = targets_markdown(agg, status.seeds if status else None)
    included = ("\n## Included results\n\nRows of other sweeps reported beside this folder's runs:\n"
                + "\n".join(notes) + "\n") if notes else ""
    write_text_atomic(root / "summary.md",
                      summary_markdown(agg, status) + included + ("\n" + targets if targets else ""))
    out = {"results": root / "results.csv", "summary": root / "summary.md"}
    for p in plot(agg, root):
        out[p.stem] = p
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    config_path, overrides = parse_script_args(argv, description="Run a grid of finetune runs")
    cfg = load_config(SweepConfig, config_path, overrides)
    summary = run_sweep(cfg)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
