"""Task layer: official-format loaders, metrics and splits for VQA v2, SNLI-VE and VCR,
plus the built-in synthetic VL world (`tasks.synthetic`).

    from tasks import get_task
    task = get_task("vqa")                 # or get_task("vqa", paths={"image_dir": "{split}"})
    ds = task.load(root, "val")            # datasets.Dataset, one row per instance

Heavy imports (datasets, PIL) happen inside the task modules, on first `get_task`.
"""

from __future__ import annotations

from typing import Any

from tasks.base import TASKS, Task

TASK_NAMES = ("vqa", "snli_ve", "vcr")


def _register_all() -> None:
    # Importing a task module runs its @TASKS.register decorator.
    from tasks.snli_ve import task as _snli_ve  # noqa: F401
    from tasks.vcr import task as _vcr  # noqa: F401
    from tasks.vqa import task as _vqa  # noqa: F401


def get_task(name: str, **kwargs: Any) -> Task:
    """Build the task `name` (vqa | snli_ve | vcr); kwargs go to its constructor (e.g. `paths`)."""
    _register_all()
    return TASKS.create(name, **kwargs)


__all__ = ["TASKS", "TASK_NAMES", "Task", "get_task"]
