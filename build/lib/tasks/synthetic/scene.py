"""Scenes: 1-6 objects with shape, colour, size and position; relations and referring phrases.

A scene is a plain dict (JSON-able, picklable) so it can travel to rendering workers:
`{"objects": [{"shape", "colour", "size", "x", "y", "r"}], "style"}`; x, y are the centre in
[0, 1] image coordinates (y grows downwards), r the radius as a fraction of the side.
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Tuple

from tasks.synthetic.vocab import COLOUR_NAMES, OPPOSITE, SHAPES, SIZE_NAMES, SIZES, THEMES

Obj = Dict[str, object]
Scene = Dict[str, object]

MARGIN = 0.02
# A relation is stated only when the offset on its axis is clear and dominates the other axis.
REL_MIN_OFFSET = 0.12


def sample_scene(rng: random.Random, n_objects: Optional[int] = None, style: str = "source",
                 theme: Optional[str] = None, min_objects: int = 1, max_objects: int = 6) -> Scene:
    """Sample a scene with non-overlapping objects; `theme` biases the colour prior."""
    n = n_objects if n_objects is not None else rng.randint(min_objects, max_objects)
    weights = [3.0 if theme and c in THEMES[theme] else 1.0 for c in COLOUR_NAMES]
    objects: List[Obj] = []
    for _ in range(n):
        shape = rng.choice(SHAPES)
        colour = rng.choices(COLOUR_NAMES, weights)[0]
        size = rng.choice(SIZE_NAMES)
        pos = _place(rng, SIZES[size], objects)
        if pos is None:  # crowded: fall back to the smallest size, then give up on this object
            size = "small"
            pos = _place(rng, SIZES[size], objects)
            if pos is None:
                continue
        objects.append({"shape": shape, "colour": colour, "size": size, "x": pos[0], "y": pos[1], "r": SIZES[size]})
    return {"objects": objects, "style": style}


def _place(rng: random.Random, r: float, objects: Sequence[Obj], tries: int = 60) -> Optional[Tuple[float, float]]:
    lo, hi = r + MARGIN, 1.0 - r - MARGIN
    for _ in range(tries):
        x, y = round(rng.uniform(lo, hi), 4), round(rng.uniform(lo, hi), 4)
        if all((x - o["x"]) ** 2 + (y - o["y"]) ** 2 >= (r + o["r"] + MARGIN) ** 2 for o in objects):
            return x, y
    return None


def relation(a: Obj, b: Obj) -> Optional[str]:
    """The clear spatial relation of a to b ("left of", ...), or None when ambiguous."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy) * 1.5 and abs(dx) >= REL_MIN_OFFSET:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= abs(dx) * 1.5 and abs(dy) >= REL_MIN_OFFSET:
        return "above" if dy < 0 else "below"
    return None


def holds(a: Obj, b: Obj, rel: str) -> bool:
    """Whether `a rel b` is true in the loose sense (sign of the offset on rel's axis)."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    return {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[rel]


def clear_pairs(scene: Scene) -> List[Tuple[int, int, str]]:
    objs = scene["objects"]
    out = []
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            rel = relation(a, b) if i != j else None
            if rel:
                out.append((i, j, rel))
    return out


def matches(obj: Obj, attrs: Dict[str, str]) -> bool:
    return all(obj[k] == v for k, v in attrs.items())


def count(scene: Scene, attrs: Dict[str, str]) -> int:
    return sum(matches(o, attrs) for o in scene["objects"])


# Attribute sets tried in order to refer to one object uniquely.
REF_KEYS = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))


def unique_ref(scene: Scene, i: int, keys_options: Sequence[Sequence[str]] = REF_KEYS) -> Optional[Dict[str, str]]:
    """The first attribute subset that picks out object i alone, or None."""
    obj = scene["objects"][i]
    for keys in keys_options:
        attrs = {k: obj[k] for k in keys}
        if count(scene, attrs) == 1:
            return attrs
    return None


def ref_phrase(attrs: Dict[str, str], noun: str = "object") -> str:
    """{"size": "small", "colour": "red"} -> "small red object"; shape replaces the noun."""
    words = [attrs[k] for k in ("size", "colour") if k in attrs]
    return " ".join(words + [attrs.get("shape", noun)])


def region(obj: Obj) -> str:
    """Which cell of a 3x3 grid holds the object's centre ("top left", "center", ...)."""
    col = ("left", "", "right")[min(int(obj["x"] * 3), 2)]
    row = ("top", "", "bottom")[min(int(obj["y"] * 3), 2)]
    return " ".join(w for w in (row, col) if w) or "center"


REGIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")


def region_cell(name: str) -> Tuple[int, int]:
    """(row, col) in 0..2 of a region name."""
    k = REGIONS.index(name)
    return k // 3, k % 3


__all__ = ["sample_scene", "relation", "holds", "clear_pairs", "count", "unique_ref", "ref_phrase", "region",
           "REGIONS", "region_cell", "OPPOSITE"]
