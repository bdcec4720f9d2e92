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

from typing import List, Optional

BUILTIN_TASKS = ("vqa", "snli_ve", "vcr")  # the task folders shipped here; more register with @TASKS.register


def _register_builtin() -> None:
    # Importing a task module runs its @TASKS.register decorator.
    import importlib

    for name in BUILTIN_TASKS:
        importlib.import_module(f"tasks.{name}.task")


def task_names() -> List[str]:
    """Every registered task: the built-in ones plus any registered by user code."""
    _register_builtin()
    return TASKS.names()


def get_task(name: str, **kwargs: Any) -> Task:
    """Build the registered task `name`; kwargs go to its constructor (e.g. `paths`)."""
    _register_builtin()
    return TASKS.create(name, key="task.name", **kwargs)


def find_task(name: str) -> Optional[Task]:
    """The registered task `name`, or None (a results folder may name a task not registered here)."""
    _register_builtin()
    return TASKS.create(name) if name in TASKS else None


__all__ = ["TASKS", "Task", "find_task", "get_task", "task_names"]
