"""The default pretrained student: the shipped student recipe, trained once and cached.

`ensure_default_student()` returns `<cache root>/students/<recipe hash>/student` (a ViLT folder
that `student.pretrained=` loads), training it on first use in a fresh subprocess
(`python -m pretrain.student`, with distributed and thread-count variables removed, so it works from
inside an Accelerate job and gives the same bits whoever asks first). Callers that arrive while it
trains wait on a file lock for that one build. Fine-tuning asks for it with
`student.pretrained=default` (the schema default); `student.pretrained=null` is the from-scratch
student.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from clip_td.base.io import cache_root

from pretrain.default_teacher import clean_env
from pretrain.student.config import default_recipe, load_student_config

#: The value of `student.pretrained` that names this student.
DEFAULT = "default"


def recipe_hash(overrides: Sequence[str] = ()) -> str:
    """Hash of the resolved default student recipe (output_dir excluded): the cache key."""
    cfg = OmegaConf.to_container(load_student_config(None, list(overrides)), resolve=True)
    cfg.pop("output_dir")
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(cfg)).encode()).hexdigest()[:16]


def ensure_default_student(overrides: Sequence[str] = ()) -> Path:
    """The default student's folder, trained into the cache when it is not there yet."""
    key = recipe_hash(overrides)
    run_dir = cache_root() / "students" / key
    student = run_dir / "student"
    if (run_dir / "metrics.json").is_file():
        return student
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # others block here until the first build is in place
        if not (run_dir / "metrics.json").is_file():
            _train(run_dir, overrides)
    return student


def _train(run_dir: Path, overrides: Sequence[str]) -> None:
    tmp = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"clip-td: training the default pretrained student once ({default_recipe().name}); "
          f"cached in {run_dir}", file=sys.stderr)
    cmd = [sys.executable, "-m", "pretrain.student", f"output_dir={tmp}", *overrides]
    subprocess.run(cmd, check=True, env=clean_env(), cwd=str(Path(__file__).resolve().parents[2]))
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)  # the cache keeps the student and its report only
    if run_dir.exists():
        shutil.rmtree(run_dir)
    os.replace(tmp, run_dir)
