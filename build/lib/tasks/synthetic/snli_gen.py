"""SNLI-VE-format hypotheses about synthetic scenes: one entailment, one neutral and one
contradiction per image (balanced, as SNLI's collection protocol gives).

- entailment: a true claim (existence, count, relation, attribute).
- contradiction: the same claim templates made false (absent colour/shape, wrong count,
  flipped relation, wrong colour); half of them also carry an unknowable clause about an
  object that is not there ("the green star is made of wood"), so a clause alone never
  reveals the label.
- neutral: an unknowable clause (material, intent, what happens next, who drew it) about an
  object that is in the image.
A hypothesis-only reader can reach about 2/3 (clause vs no clause); the rest needs the image.
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional

from tasks.synthetic.scene import clear_pairs, count, ref_phrase, unique_ref
from tasks.synthetic.vocab import COLOUR_NAMES, NUMBER_WORDS, OPPOSITE, SHAPES, article

LABELS = ("entailment", "neutral", "contradiction")
UNKNOWABLE = (
    "The {x} is made of wood.",
    "The {x} is made of plastic.",
    "The {x} was drawn by a child.",
    "The {x} is about to move.",
    "Someone is going to pick up the {x}.",
    "The {x} is heavier than it looks.",
    "The artist likes the {x} best.",
    "The {x} will be painted over tomorrow.",
    "The {x} was the last shape to be drawn.",
    "The {x} is warm to the touch.",
)

PICTURE_UNKNOWABLE = ("The picture was drawn by a child.", "The shapes are made of wood.",
                      "The shapes are about to move.")


def hypothesis(scene: Dict, label: str, rng: random.Random) -> str:
    for _ in range(30):
        h = _make(scene, label, rng)
        if h:
            return h
    raise AssertionError("no hypothesis could be formed")  # every scene has >= 1 object


def _make(scene: Dict, label: str, rng: random.Random) -> Optional[str]:
    if label == "neutral":
        return _clause(scene, rng, present=True)
    if label == "contradiction" and rng.random() < 0.5:
        return _clause(scene, rng, present=False)
    claim = rng.choice((_existence, _counting, _relation, _attribute))
    return claim(scene, rng, label == "entailment")


def _clause(scene: Dict, rng: random.Random, present: bool) -> Optional[str]:
    obj = rng.choice(scene["objects"])
    attrs = {"colour": obj["colour"], "shape": obj["shape"]}
    if present and count(scene, attrs) > 1:
        attrs = unique_ref(scene, scene["objects"].index(obj), (("colour", "shape"), ("size", "colour", "shape")))
        if attrs is None:  # identical twins: speak about the picture as a whole
            return rng.choice(PICTURE_UNKNOWABLE)
    if not present:
        key = rng.choice(("colour", "shape"))
        attrs[key] = rng.choice([v for v in (COLOUR_NAMES if key == "colour" else SHAPES) if v != obj[key]])
    if count(scene, attrs) != (1 if present else 0):
        return None
    return rng.choice(UNKNOWABLE).format(x=ref_phrase(attrs))


def _existence(scene: Dict, rng: random.Random, true: bool) -> Optional[str]:
    obj = rng.choice(scene["objects"])
    attrs = {"colour": obj["colour"], "shape": obj["shape"]}
    if not true:
        attrs["colour"] = rng.choice([c for c in COLOUR_NAMES if c != obj["colour"]])
        if count(scene, attrs):
            return None
    phrase = ref_phrase(attrs)
    return rng.choice(("There is {a} {p}.", "The picture contains {a} {p}.", "{A} {p} is visible.")).format(
        a=article(phrase), A=article(phrase).capitalize(), p=phrase)


def _counting(scene: Dict, rng: random.Random, true: bool) -> Optional[str]:
    n = len(scene["objects"])
    k = n if true else max(1, n + rng.choice((-2, -1, 1, 2)))
    if k == n and not true:
        return None
    noun = "shape" if k == 1 else "shapes"
    return rng.choice(("There {v} {k} {noun} in the picture.", "The image shows exactly {k} {noun}.")).format(
        v="is" if k == 1 else "are", k=NUMBER_WORDS[k], noun=noun)


def _relation(scene: Dict, rng: random.Random, true: bool) -> Optional[str]:
    pairs = clear_pairs(scene)
    if not pairs:
        return None
    i, j, rel = rng.choice(pairs)
    ri, rj = unique_ref(scene, i), unique_ref(scene, j)
    if ri is None or rj is None:
        return None
    said = rel if true else OPPOSITE[rel]
    return f"The {ref_phrase(ri)} is {said} the {ref_phrase(rj)}."


def _attribute(scene: Dict, rng: random.Random, true: bool) -> Optional[str]:
    i = rng.randrange(len(scene["objects"]))
    ref = unique_ref(scene, i, (("shape",), ("size", "shape")))
    if ref is None:
        return None
    colour = scene["objects"][i]["colour"]
    said = colour if true else rng.choice([c for c in COLOUR_NAMES if c != colour])
    return f"The {ref_phrase(ref)} is {said}."


def annotator_labels(gold: str, rng: random.Random, n: int) -> List[str]:
    """n labels whose strict majority is gold (n = 1 for train, 5 for eval, as in SNLI)."""
    while True:
        labels = [gold if rng.random() < 0.85 else rng.choice([x for x in LABELS if x != gold]) for _ in range(n)]
        if labels.count(gold) * 2 > n:
            return labels


__all__ = ["LABELS", "hypothesis", "annotator_labels"]
