"""The teacher's pretraining corpus: noisy web-like pairs in both styles, plus clean held-out
pairs and zero-shot label sets (docs/internals.md gives the TSV columns).

Noise kinds (exclusive per pair; the `noise` column records the truth):
- mismatch: the caption of another scene.
- low_complexity: "a picture", "shapes", ...
- text_spotting: the caption's words are rendered into the image (`ocr_text`), while the
  caption itself describes another scene, so only reading links image and text.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

from tasks.synthetic.common import RenderJob, item_rng, job
from tasks.synthetic.language import caption, low_complexity, short_phrase, synthetic_caption
from tasks.synthetic.scene import clear_pairs, region, sample_scene
from tasks.synthetic.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES, STYLES

COLUMNS = ("filepath", "title", "synthetic_caption", "ocr_text", "parse", "concepts", "facts", "places", "style", "noise")
FACT_SEP = "|"  # separates the facts of one row in the `facts` column
ZEROSHOT_SETS = {
    "shape": (SHAPES, ("a photo of a {}.", "a {} shape.", "a drawing of a {}.", "a picture of a {}.")),
    "colour": (COLOUR_NAMES, ("a photo of a {} object.", "a {} shape.", "something {}.", "a drawing of a {} thing.")),
    "size": (SIZE_NAMES, ("a photo of a {} object.", "a {} shape.", "a drawing of a {} thing.")),
}


@dataclass(frozen=True)
class NoiseConfig:
    mismatch: float = 0.10  # fraction of pairs whose caption belongs to another scene
    low_complexity: float = 0.10  # fraction with a generic caption ("a picture", "shapes")
    text_spotting: float = 0.08  # fraction whose image carries the caption's words as text
    captioner_drop: float = 0.15  # synthetic caption leaves out an attribute or object
    captioner_wrong: float = 0.10  # synthetic caption names a confusable colour or shape

    def __post_init__(self) -> None:
        rates = (self.mismatch, self.low_complexity, self.text_spotting)
        if min(rates + (self.captioner_drop, self.captioner_wrong)) < 0 or sum(rates) > 1:
            raise ValueError(f"noise rates must be >= 0 and the pair noise must sum to <= 1: {self}")
        if self.captioner_drop + self.captioner_wrong > 1:
            raise ValueError(f"captioner error rates must sum to <= 1: {self}")

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def concepts_of(scene: Dict) -> List[str]:
    """Concept names present in the scene (shapes, colours, sizes), in vocabulary order."""
    present = {o[k] for o in scene["objects"] for k in ("shape", "colour", "size")}
    return [c for c in concept_vocab() if c in present]


def facts_of(scene: Dict) -> List[str]:
    """The scene graph as sorted phrases: each object's bound attributes ("red circle", "large
    circle") and every clear spatial relation between two objects ("circle left of square"; the
    relations VCR's questions ask about). What a bag of concepts cannot say: which colour goes with
    which shape, and where things are relative to each other. Annotations like Visual Genome's."""
    objs = scene["objects"]
    out = {f"{o[k]} {o['shape']}" for o in objs for k in ("colour", "size")}
    out |= {f"{objs[i]['shape']} {rel} {objs[j]['shape']}" for i, j, rel in clear_pairs(scene)}
    return sorted(out)


def places_of(scene: Dict) -> List[str]:
    """Where each object is in the picture, as sorted phrases "<shape> at <region>" over the 3x3
    grid ("circle at top left", "square at center"): what a caption such as "a red circle near the
    top left" states, and what the `facts` column (relations between objects) never says."""
    return sorted({f"{o['shape']} at {region(o)}" for o in scene["objects"]})


def concept_vocab() -> List[str]:
    return list(SHAPES) + list(COLOUR_NAMES) + list(SIZE_NAMES)


def _noise_kind(rng: random.Random, cfg: NoiseConfig) -> str:
    u = rng.random()
    for kind in ("mismatch", "low_complexity", "text_spotting"):
        rate = getattr(cfg, kind)
        if u < rate:
            return kind
        u -= rate
    return "clean"


def pair(seed: int, split: str, i: int, cfg: NoiseConfig, noisy: bool) -> Tuple[Dict, RenderJob]:
    """One corpus row and its image job."""
    rng = item_rng(seed, f"pretrain/{split}", i)
    scene = sample_scene(rng, style=rng.choice(STYLES))
    kind = _noise_kind(rng, cfg) if noisy else "clean"
    other = sample_scene(rng, style=scene["style"])  # drawn for every pair so streams stay aligned
    ocr = ""
    if kind == "mismatch":
        p = caption(other, rng)
    elif kind == "low_complexity":
        p = low_complexity(rng)
    elif kind == "text_spotting":
        p = short_phrase(rng.choice(other["objects"])) if rng.random() < 0.5 else caption(other, rng)
        ocr = " ".join([t[0] for t in p.tokens if t[1] in ("NOUN", "ADJ", "NUM")][:3])  # a short banner
    else:
        p = caption(scene, rng)
    relpath = f"images/{split}/{i:07d}.jpg"
    row = {
        "filepath": relpath,
        "title": p.text(),
        "synthetic_caption": synthetic_caption(scene, rng, cfg.captioner_drop, cfg.captioner_wrong),
        "ocr_text": ocr,
        "parse": json.dumps(p.tokens, separators=(",", ":")),
        "concepts": " ".join(concepts_of(scene)),
        "facts": FACT_SEP.join(facts_of(scene)),
        "places": FACT_SEP.join(places_of(scene)),
        "style": scene["style"],
        "noise": kind,
    }
    return row, job(f"pretrain/{relpath}", scene, rng, ocr)


def zeroshot_item(seed: int, i: int) -> Tuple[Dict, RenderJob]:
    """A single-object image with its shape, colour and size labels (both styles)."""
    rng = item_rng(seed, "pretrain/zeroshot", i)
    scene = sample_scene(rng, n_objects=1, style=STYLES[i % 2])
    obj = scene["objects"][0]
    relpath = f"images/zeroshot/{i:06d}.jpg"
    labels = {name: classes.index(obj[name]) for name, (classes, _) in ZEROSHOT_SETS.items()}
    return {"filepath": relpath, "style": scene["style"], **labels}, job(f"pretrain/{relpath}", scene, rng)
