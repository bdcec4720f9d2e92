"""Shared fixtures of the fine-tuning tests (imported by test_data/test_finetune/...).

A small synthetic world is built once per session and a tiny open_clip teacher is saved in
`local-dir:` format, so no test trains the default teacher or downloads anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """`clip-td data synth --size small` (64 px), built once per test session."""
    from tasks.synthetic import build_world

    out = tmp_path_factory.mktemp("world") / "synth"
    build_world(out, seed=0, size="small", image_size=64, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A random 1-layer open_clip ViT teacher (32 px, patch 8) saved as a local-dir."""
    from clip_td.testing.tiny_checkpoints import save_tiny_teacher

    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny", seed=0)


def tiny_overrides(world: Path, teacher: Path, out: Path, **extra) -> list:
    """Dotted overrides of a tiny, seconds-long fine-tuning run on the small world."""
    base = {
        "output_dir": str(out),
        "data.root": str(world),
        "teacher.model": f"local-dir:{teacher}",
        "teacher.cache_dir": str(out.parent / "teacher_cache"),
    }
    base.update({k: v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def read_metrics(out: Path) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())
