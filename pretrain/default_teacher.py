"""The default teacher: trained once per resolved recipe, cached, shared by every process.

`ensure_default_teacher()` returns `<cache root>/teachers/<config hash>/teacher`, training it
on first use in a fresh subprocess (`python -m pretrain`, distributed env vars removed, so it
works from inside an Accelerate job). A file lock makes concurrent callers wait for one build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from omegaconf import OmegaConf

from clip_td.base.io import InputError, PathLike, cache_root

from pretrain.config import load_pretrain_config, recipe_path

# set by torchrun / accelerate launch; a child that inherits them would try to join the parent's group
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
              "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
              "TORCHELASTIC_MAX_RESTARTS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# thread counts are dropped too: a sweep cell runs with 1 thread, and the teacher it builds on
# first use must be the same bits as the one a plain run builds (MKL's sums depend on threads)


def clean_env() -> dict:
    """The current environment without distributed-launch variables."""
    return {k: v for k, v in os.environ.items() if k not in _DIST_VARS and not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))}


# Schema keys added after the shipped default teacher was built, with the value at which they
# change nothing: left out of the hash at that value, so adding an option does not invalidate the
# shipped teacher (and every cache built from it). Any other value is hashed as usual.
NEUTRAL_AT = {("loss", "text_negative_relation"): 0.0, ("image_init", "facts"): False,
              ("image_init", "fact_min_count"): 5, ("data", "fact_captions"): 0.0,
              ("image_init", "standardise"): False, ("image_init", "places"): False,
              ("data", "place_captions"): 0.0, ("data", "caption_sizes"): False,
              ("data", "count_captions"): 0.0, ("data", "count_prefix"): 0.0,
              ("loss", "mask_duplicate_texts"): False, ("image_init", "counts"): False,
              ("data", "count_frames"): ["{n}"], ("data", "junk_words"): 0.0,
              ("data", "junk_replaces"): 0.0}


# command-line keys that say where a run writes or resumes, not what it trains: never passed on
# to the first stage of a two-stage recipe (`init_from`)
_RUN_KEYS = ("output_dir", "train.resume", "train.resume_from", "train.tracker")


def stage_overrides(overrides: Sequence[str]) -> List[str]:
    """The overrides a two-stage recipe passes on to its first stage: all but where to write."""
    return [o for o in overrides if o.split("=", 1)[0].strip() not in _RUN_KEYS]


def recipe_hash(overrides: Sequence[str], recipe: str = "default") -> str:
    """Hash of the resolved recipe (default: the default recipe; output_dir excluded): the cache
    key. A two-stage recipe (`init_from`) hashes its first stage's recipe hash in place of the name."""
    cfg = OmegaConf.to_container(load_pretrain_config(recipe_path(recipe), list(overrides)), resolve=True)
    for (section, key), neutral in NEUTRAL_AT.items():
        if cfg.get(section, {}).get(key) == neutral:
            del cfg[section][key]
    base = cfg.pop("init_from", None)
    if base is not None:
        cfg["init_from"] = {"recipe": base, "hash": recipe_hash(stage_overrides(overrides), base)}
    return config_hash(cfg)


def config_hash(cfg: dict) -> str:
    """16 hex digits of the sha256 of a resolved config's YAML, `output_dir` left out."""
    cfg = {k: v for k, v in cfg.items() if k != "output_dir"}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(cfg)).encode()).hexdigest()[:16]


def ensure_default_teacher(data_root: Optional[PathLike] = None, overrides: Sequence[str] = (),
                           use_shipped: bool = True) -> Path:
    """Teacher dir (open_clip `local-dir:`) of the default recipe on `data_root` (None = the
    synthetic world, built on first use). `overrides` are extra dotted keys (tests, benchmarks).
    The plain default (no data_root, no overrides) is the copy shipped in the package when it
    verifies (pretrain.shipped); otherwise the recipe is trained once into the cache."""
    overrides = ([f"data.root={Path(data_root).resolve()}"] if data_root else []) + list(overrides)
    key = recipe_hash(overrides)
    if use_shipped and not overrides:
        from pretrain.shipped import shipped_default_teacher

        shipped = shipped_default_teacher(key)
        if shipped is not None:
            return shipped
    run_dir = cache_root() / "teachers" / key
    train_once(run_dir, lambda d: _train(d, overrides))
    return run_dir / "teacher"


RECIPE_PREFIX = "recipe:"  # teacher.model=recipe:<name>: that pretraining recipe's teacher, cached


def default_teacher_name(name: Optional[str] = None) -> str:
    """The open_clip name of a teacher: `name` as given, `recipe:<recipe>` as the teacher of
    `configs/pretrain/<recipe>.yaml` (`local-dir:<its folder>`, trained once into the cache), and
    None as the default teacher (shipped, or built on first use as `ensure_default_teacher`
    does): what `teacher.model` and the benches' `--teacher` take."""
    if not name:
        return f"local-dir:{ensure_default_teacher()}"
    if name.startswith(RECIPE_PREFIX):
        recipe = name[len(RECIPE_PREFIX):]
        recipe_path(recipe)  # an unknown recipe: one error naming the known ones, before any work
        return f"local-dir:{ensure_recipe_teacher(recipe)}"
    return name


def ensure_recipe_teacher(recipe: str, overrides: Sequence[str] = ()) -> Path:
    """Teacher dir of any recipe (`configs/pretrain/<recipe>.yaml`) with `overrides` (those that
    say where to write are dropped), trained once into `<cache root>/teachers/<hash>`: the first
    stage of a two-stage recipe (`init_from`). Without overrides, a copy shipped in the package
    (`python -m pretrain.shipped --recipe <recipe>`) is used when it verifies for the recipe."""
    overrides = stage_overrides(overrides)
    key = recipe_hash(overrides, recipe)
    if not overrides:
        from pretrain.shipped import shipped_default_teacher, shipped_recipe_teacher

        shipped = shipped_recipe_teacher(recipe, key)
        if shipped is None and key == recipe_hash(()):  # the default recipe by its own name (lit_scene, or
            shipped = shipped_default_teacher(key)      # a later stage's init_from): the shipped default teacher
        if shipped is not None:
            return shipped
    run_dir = cache_root() / "teachers" / key
    train_once(run_dir, lambda d: run_module_into(d, ["pretrain", "--config", str(recipe_path(recipe)), *overrides]))
    return run_dir / "teacher"


def train_once(run_dir: Path, train: Callable[[Path], None]) -> None:
    """`train(run_dir)` unless `run_dir/metrics.json` exists; concurrent callers wait on a file
    lock beside it (`.<name>.lock`) for that one build, then find it done."""
    if (run_dir / "metrics.json").is_file():
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # others block here until the first build is in place
        if not (run_dir / "metrics.json").is_file():
            train(run_dir)


def run_module_into(run_dir: Path, args: Sequence[str]) -> None:
    """`python -m <args> output_dir=<temporary folder>` in a clean environment, then the folder
    (without its checkpoints) moved to `run_dir` in one step: it appears complete or not at all."""
    tmp = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", *args, f"output_dir={tmp}"]
    try:
        subprocess.run(cmd, check=True, env=clean_env(), cwd=str(Path(__file__).resolve().parent.parent))
    except subprocess.CalledProcessError as e:  # its own messages are above; leave nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"`python -m {' '.join(args)}` (building {run_dir}) failed with exit status "
                         f"{e.returncode}; its messages are above") from None
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)  # the cache keeps the model and its report only
    if run_dir.exists():
        shutil.rmtree(run_dir)
    os.replace(tmp, run_dir)


def train_default_teacher(run_dir: Path) -> Path:
    """Train the plain default recipe into `run_dir` now (no shipped copy, no cache); returns
    `run_dir/teacher`. What `python -m pretrain.shipped` ships."""
    _train(Path(run_dir), ())
    return Path(run_dir) / "teacher"


def _train(run_dir: Path, overrides: Sequence[str]) -> None:
    run_module_into(run_dir, ["pretrain", "--config", str(recipe_path()), *overrides])
