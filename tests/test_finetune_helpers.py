"""Shared helpers of the fine-tuning tests (imported by test_data/test_finetune/...).

The `small_world` and `tiny_teacher` fixtures live in conftest.py, so that each is built once per
session (a fixture imported into a test module is a new fixture there, built again per module).
"""

from __future__ import annotations

import json
from pathlib import Path


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


def probe_rows(n: int, seed: int):
    """A stand-in for the similarity probe's inputs: n SNLI-VE-like rows (label i % 3), a cache
    whose `lookup` gives random unit image and text embeddings, and a task reading the label as
    the gold candidate -> (rows, cos(image, text) (n,), cache, task)."""
    from types import SimpleNamespace

    import torch

    rows = [{"text": f"h{i}", "label": i % 3} for i in range(n)]
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    cache = SimpleNamespace(lookup=lambda idx: {"image_embed": image[idx], "text_embed": text[idx]})
    task = SimpleNamespace(teacher_texts=lambda r: (r["text"], ["e", "n", "c"], r["label"]))
    return rows, (image * text).sum(-1), cache, task
