"""The default pretrained student: the shipped student recipe, trained once and cached.

`ensure_default_student()` returns the copy shipped in the package (`pretrain.student.shipped`)
when one verifies against today's recipe, else `<cache root>/students/<recipe hash>/student` (a
ViLT folder that `student.pretrained=` loads), training it on first use in a fresh subprocess
(`python -m pretrain.student`, with distributed and thread-count variables removed, so it works from
inside an Accelerate job and gives the same bits whoever asks first). Callers that arrive while it
trains wait on a file lock for that one build. Fine-tuning asks for it with
`student.pretrained=default` (the schema default); `student.pretrained=null` is the from-scratch
student.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from clip_td.base.io import cache_root

from pretrain.default_teacher import config_hash, run_module_into, train_once
from pretrain.student.config import default_recipe, load_student_config, without_neutral, without_neutral_rehearsal

#: The value of `student.pretrained` that names this student.
DEFAULT = "default"


def recipe_hash(overrides: Sequence[str] = ()) -> str:
    """Hash of the resolved default student recipe (output_dir excluded): the cache key. Options
    added after the first default student was built are left out at the value where they change
    nothing (no concept masking, no image initialisation, no rehearsal, no region
    descriptions), so adding them keeps
    every cache valid."""
    cfg = OmegaConf.to_container(load_student_config(None, list(overrides)), resolve=True)
    if cfg["train"].get("concept_mask_prob") is None:
        cfg["train"].pop("concept_mask_prob", None)
    cfg["model"] = without_neutral(cfg["model"], "patch_positions", "zeros")
    ii = cfg["image_init"] = without_neutral_rehearsal(cfg["image_init"])
    if not cfg["regions"]["weight"]:  # no region descriptions: the recipe before they existed
        cfg.pop("regions")
    else:
        cfg["regions"] = without_neutral(cfg["regions"], "curriculum_steps", 0)
    if ii["steps"] == 0 and ii["weights"] is None and "rehearsal" not in ii:
        cfg.pop("image_init")
    return config_hash(cfg)


def ensure_default_student(overrides: Sequence[str] = (), use_shipped: bool = True) -> Path:
    """The default student's folder: the copy shipped in the package when it verifies against
    today's recipe (no overrides); otherwise trained into the cache when it is not there yet."""
    key = recipe_hash(overrides)
    if use_shipped and not overrides:
        from pretrain.student.shipped import shipped_default_student

        shipped = shipped_default_student(key)
        if shipped is not None:
            return shipped
    run_dir = cache_root() / "students" / key
    train_once(run_dir, lambda d: _train(d, overrides))
    return run_dir / "student"


def _train(run_dir: Path, overrides: Sequence[str]) -> None:
    print(f"clip-td: training the default pretrained student once ({default_recipe().name}); "
          f"cached in {run_dir}", file=sys.stderr)
    run_module_into(run_dir, ["pretrain.student", *overrides])
