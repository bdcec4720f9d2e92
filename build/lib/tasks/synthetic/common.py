"""Helpers shared by the generators: per-item seeded RNGs and render jobs."""

from __future__ import annotations

import random
from typing import Dict, NamedTuple


class RenderJob(NamedTuple):
    """One image to draw: where (relative to the world root), what, and its noise seed."""

    relpath: str
    scene: Dict
    seed: int
    text: str = ""


def item_rng(seed: int, namespace: str, index: int) -> random.Random:
    """An RNG owned by one item, so output does not depend on worker count or order.

    String seeds are hashed with SHA-512 by `random.Random`, stable across processes.
    """
    return random.Random(f"clip-td-synth|{seed}|{namespace}|{index}")


def job(relpath: str, scene: Dict, rng: random.Random, text: str = "") -> RenderJob:
    return RenderJob(relpath, scene, rng.getrandbits(63), text)
