"""The default student shipped inside the package, verified by hash, rebuilt when it cannot be used.

`pretrain/shipped/default_student/` is the ViLT folder the default recipe writes (config,
safetensors weights, WordPiece tokenizer, image processor config), the run's report as
`pretrain_metrics.json`, and `manifest.json` (the recipe hash it was trained from and every file's
sha256), written by

    python -m pretrain.student.shipped     # train the default student recipe, then write the folder

`ensure_default_student()` uses it when its manifest names today's recipe and every file
matches; otherwise it says why in one line and trains the recipe into the cache, as for a
recipe that was never shipped. The same checks as the shipped teacher's (`pretrain.shipped`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from pretrain.shipped import shipped_dir, verified_copy, write_shipped

NAME = "default_student"
COMMAND = "python -m pretrain.student.shipped"
METRICS = "pretrain_metrics.json"  # the pretraining run's metrics.json, shipped beside the weights


def shipped_student_dir() -> Path:
    return shipped_dir(NAME)


def shipped_default_student(key: str, folder: Optional[Path] = None) -> Optional[Path]:
    """The shipped student folder if it verifies for recipe `key`, else None (with one warning
    line saying why, when a shipped folder exists at all)."""
    return verified_copy(shipped_student_dir() if folder is None else Path(folder), key, "default student")


def ship(student: Path, key: str, dest: Path) -> Path:
    """Write the ViLT folder `student` to `dest` with its manifest, atomically."""
    return write_shipped(student, key, dest, COMMAND, marker="preprocessor_config.json",
                         kind="a ViLT student folder of pretrain_student.py")


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """`python -m pretrain.student.shipped [--dest DIR]`: train the default student recipe (in a
    clean subprocess, as a first run would) and ship it."""
    from pretrain.default_teacher import run_module_into
    from pretrain.student.default_student import recipe_hash

    p = argparse.ArgumentParser(description="Train the default student recipe and write the shipped copy")
    p.add_argument("--dest", default=str(shipped_student_dir()), help="folder to write (default: the package's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    key = recipe_hash(())
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        run_module_into(run, ["pretrain.student"])
        shutil.copyfile(run / "metrics.json", run / "student" / METRICS)  # how the shipped student was trained
        dest = ship(run / "student", key, Path(args.dest))
    print(f"wrote {dest} (default student recipe {key})")
    return dest


if __name__ == "__main__":
    main()
