"""VCR-format multiple-choice items: question, 4 answers, 4 rationales, object references.

Objects are the scene's shapes (`objects` holds their class names, as VCR holds "person");
text refers to them by index lists, e.g. ["What", "color", "is", [0], "?"].
Families:
- colour: "What color is [i] ?" -> "[i] is red ." (wrong answers: other colours in the
  scene first, then neighbouring ones). Rationales all agree with the right answer ("[i] is
  the red shape near the top left .") and differ only in where it is, so QA->R needs the image.
- relation: "Where is [i] relative to [j] ?" -> "[i] is left of [j] ." (the 4 relations).
  Rationales give both objects' grid cells; the wrong ones are cells consistent with the
  right answer but not the true ones.
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

from tasks.synthetic.scene import REGIONS, clear_pairs, region, region_cell
from tasks.synthetic.vocab import COLOUR_NAMES, NEAR_COLOUR, RELATIONS

Tokens = List  # words and [index] references


def where(obj_region: str) -> List[str]:
    return ["in", "the", "center"] if obj_region == "center" else ["near", "the", *obj_region.split()]


def make_item(scene: Dict, rng: random.Random) -> Dict:
    """Question, shuffled choices and labels for one VCR item."""
    pairs = clear_pairs(scene)
    if pairs and rng.random() < 0.5:
        return _relation_item(scene, rng, rng.choice(pairs))
    return _colour_item(scene, rng, rng.randrange(len(scene["objects"])))


def _shuffle(right: Tokens, wrong: List[Tokens], rng: random.Random) -> Tuple[List[Tokens], int]:
    choices = [right] + wrong
    order = list(range(4))
    rng.shuffle(order)
    return [choices[k] for k in order], order.index(0)


def _colour_item(scene: Dict, rng: random.Random, i: int) -> Dict:
    objs = scene["objects"]
    colour = objs[i]["colour"]
    pool = sorted({o["colour"] for o in objs} - {colour})
    rng.shuffle(pool)
    near = [c for c in NEAR_COLOUR[colour] if c not in pool]
    rest = [c for c in COLOUR_NAMES if c != colour and c not in pool and c not in near]
    rng.shuffle(rest)
    wrong = (pool + near + rest)[:3]
    answers, a_label = _shuffle([[i], "is", colour, "."], [[[i], "is", c, "."] for c in wrong], rng)
    true_region = region(objs[i])
    others = [r for r in REGIONS if r != true_region]
    rng.shuffle(others)
    mk = lambda reg: [[i], "is", "the", colour, "shape", *where(reg), "."]  # noqa: E731
    rationales, r_label = _shuffle(mk(true_region), [mk(r) for r in others[:3]], rng)
    return {"question": ["What", "color", "is", [i], "?"], "answer_choices": answers, "answer_label": a_label,
            "rationale_choices": rationales, "rationale_label": r_label}


def _consistent(rel: str, ra: str, rb: str) -> bool:
    (ya, xa), (yb, xb) = region_cell(ra), region_cell(rb)
    return {"left of": xa < xb, "right of": xa > xb, "above": ya < yb, "below": ya > yb}[rel]


def _relation_item(scene: Dict, rng: random.Random, pair: Tuple[int, int, str]) -> Dict:
    i, j, rel = pair
    objs = scene["objects"]
    mk_a = lambda r: [[i], "is", *r.split(), [j], "."]  # noqa: E731
    answers, a_label = _shuffle(mk_a(rel), [mk_a(r) for r in RELATIONS if r != rel], rng)
    truth = (region(objs[i]), region(objs[j]))
    options = [(a, b) for a in REGIONS for b in REGIONS if _consistent(rel, a, b) and (a, b) != truth]
    picks = rng.sample(options, 3)
    mk_r = lambda ra, rb: [[i], "is", *where(ra), "and", [j], "is", *where(rb), "."]  # noqa: E731
    rationales, r_label = _shuffle(mk_r(*truth), [mk_r(a, b) for a, b in picks], rng)
    return {"question": ["Where", "is", [i], "relative", "to", [j], "?"], "answer_choices": answers,
            "answer_label": a_label, "rationale_choices": rationales, "rationale_label": r_label}


def orig_string(tokens: Tokens) -> str:
    """Flat text with references written as 1-based numbers, like VCR's `*_orig` fields."""
    words = [" and ".join(str(k + 1) for k in t) if isinstance(t, list) else t for t in tokens]
    out = ""
    for w in words:
        out += w if (w in ".?!," or not out) else " " + w
    return out


def metadata(scene: Dict, image_size: int, rng: random.Random) -> Dict:
    """VCR metadata: one box [x1, y1, x2, y2, score] and one polygon per object, in pixels."""
    boxes, segms = [], []
    for o in scene["objects"]:
        cx, cy, r = o["x"] * image_size, o["y"] * image_size, o["r"] * image_size
        boxes.append([round(cx - r, 2), round(cy - r, 2), round(cx + r, 2), round(cy + r, 2),
                      round(rng.uniform(0.9, 1.0), 4)])
        octagon = [[round(cx + r * dx, 2), round(cy + r * dy, 2)] for dx, dy in
                   ((1, 0), (0.7, 0.7), (0, 1), (-0.7, 0.7), (-1, 0), (-0.7, -0.7), (0, -1), (0.7, -0.7))]
        segms.append([octagon])
    return {"boxes": boxes, "segms": segms, "width": image_size, "height": image_size, "names": [o["shape"] for o in scene["objects"]]}
