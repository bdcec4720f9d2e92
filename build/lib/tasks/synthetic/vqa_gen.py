"""VQA v2-format questions and 10-annotator answers about synthetic scenes.

Families: attributes (colour, shape, size), counting, existence, spatial relations. Targets
are drawn so answer priors stay natural but not degenerate: yes/no questions are yes or no
with equal chance, counts are drawn from a flat target over 0-6 before looking for a query
with that count. Question text names only the referent, never the answer.

Annotators: most give the canonical answer, some a format variant that the official
normalisation folds ("two", "Yes", "a circle", "red."), some a near miss (off-by-one count,
neighbouring colour, confusable shape), a few a random answer of the same kind. The
canonical answer is always the strict mode, so `multiple_choice_answer` is the truth.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from tasks.synthetic.scene import clear_pairs, count, sample_scene, holds, ref_phrase, relation, unique_ref
from tasks.synthetic.vocab import (COLOUR_NAMES, NEAR_COLOUR, NEAR_SHAPE, NEAR_SIZE, NUMBER_WORDS, OPPOSITE, SHAPES, SIZE_NAMES,
                    article)
from tasks.synthetic.language import plural

# (text, question_type, answer_type, answer, kind); kind drives annotator near misses.
Question = Tuple[str, str, str, str, str]

FAMILY_WEIGHTS = {"colour": 0.15, "shape": 0.12, "size": 0.08, "count": 0.35, "exist": 0.20, "spatial": 0.20}
ANSWER_SETS = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": SIZE_NAMES, "number": tuple(str(k) for k in range(7)),
               "yesno": ("yes", "no")}
MAX_COUNT = 6


def ask(scene: Dict, rng: random.Random) -> Question:
    """One question about `scene` (retries other families when one does not fit)."""
    for _ in range(20):
        family = rng.choices(list(FAMILY_WEIGHTS), list(FAMILY_WEIGHTS.values()))[0]
        q = FAMILIES[family](scene, rng)
        if q is not None:
            return q
    return _count(scene, rng, force_total=True)


def _attr_question(scene: Dict, rng: random.Random, target: str) -> Optional[Question]:
    i = rng.randrange(len(scene["objects"]))
    keys = {"colour": (("shape",), ("size", "shape")), "shape": (("colour",), ("size", "colour")),
            "size": (("shape",), ("colour", "shape"))}[target]
    attrs = unique_ref(scene, i, keys)
    if attrs is None:
        return None
    ref = ref_phrase(attrs)
    answer = scene["objects"][i][target]
    if target == "colour":
        if rng.random() < 0.7:
            return f"What color is the {ref}?", "what color is the", "other", answer, "colour"
        return f"What is the color of the {ref}?", "what is the color of the", "other", answer, "colour"
    if target == "shape":
        return f"What shape is the {ref}?", "what shape is the", "other", answer, "shape"
    return f"What size is the {ref}?", "what size is the", "other", answer, "size"


def _count(scene: Dict, rng: random.Random, force_total: bool = False) -> Optional[Question]:
    objs = scene["objects"]
    target = len(objs) if force_total else rng.choices(range(MAX_COUNT + 1), _target_weights())[0]
    queries: List[Dict[str, str]] = [{}]
    queries += [{"colour": c} for c in COLOUR_NAMES] + [{"shape": s} for s in SHAPES]
    queries += [{"colour": o["colour"], "shape": o["shape"]} for o in objs]
    kind = rng.choice(("all", "colour", "shape", "both"))
    fits = [q for q in queries if count(scene, q) == target and _kind(q) == kind]
    fits = fits or [q for q in queries if count(scene, q) == target]
    if not fits:
        return None
    q = rng.choice(fits)
    if not q:
        text = rng.choice(("How many objects are there?", "How many shapes are in the picture?",
                           "How many shapes are there?"))
    else:
        noun = plural(q["shape"]) if "shape" in q else rng.choice(("objects", "shapes"))
        adj = q.get("colour", "")
        text = f"How many {adj + ' ' if adj else ''}{noun} are there?"
    return text, "how many", "number", str(target), "number"


@lru_cache(maxsize=1)
def _target_weights() -> Tuple[float, ...]:
    """Inverse of how often each count can be asked about in a random scene, so the counts
    that reach the data are flat over 0-6 (large counts are rarer in scenes than small ones)."""
    rng = random.Random(0)
    hits = [0] * (MAX_COUNT + 1)
    for _ in range(2000):
        scene = sample_scene(rng)
        objs = scene["objects"]
        queries = [{}] + [{"colour": o["colour"]} for o in objs] + [{"shape": o["shape"]} for o in objs]
        queries += [{"colour": o["colour"], "shape": o["shape"]} for o in objs]
        for t in {count(scene, q) for q in queries} | {0}:
            hits[t] += 1
    return tuple(1.0 / max(h, 1) for h in hits)


def _kind(q: Dict[str, str]) -> str:
    return {0: "all", 2: "both"}.get(len(q), next(iter(q)) if q else "all")


def _exist(scene: Dict, rng: random.Random) -> Optional[Question]:
    obj = rng.choice(scene["objects"])
    keys = rng.choice((("colour", "shape"), ("colour", "shape"), ("shape",), ("size", "shape")))
    attrs = {k: obj[k] for k in keys}
    want_yes = rng.random() < 0.5
    if not want_yes:  # a near-miss combination that is absent from the scene
        k = rng.choice(keys)
        options = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": SIZE_NAMES}[k]
        attrs = dict(attrs, **{k: rng.choice([v for v in options if v != obj[k]])})
        if count(scene, attrs) > 0:
            return None
    phrase = ref_phrase(attrs)
    if rng.random() < 0.7:
        text, qtype = f"Is there {article(phrase)} {phrase}?", "is there a"
    else:
        words = phrase.split()
        text, qtype = f"Are there any {' '.join(words[:-1] + [plural(words[-1])])}?", "are there any"
    return text, qtype, "yes/no", "yes" if want_yes else "no", "yesno"


def _spatial(scene: Dict, rng: random.Random) -> Optional[Question]:
    pairs = clear_pairs(scene)
    if not pairs:
        return None
    i, j, rel = rng.choice(pairs)
    ref_j = unique_ref(scene, j)
    if ref_j is None:
        return None
    if rng.random() < 0.5:
        ref_i = unique_ref(scene, i)
        if ref_i is None:
            return None
        want_yes = rng.random() < 0.5
        asked = rel if want_yes else OPPOSITE[rel]
        text = f"Is the {ref_phrase(ref_i)} {asked} the {ref_phrase(ref_j)}?"
        return text, "is the", "yes/no", "yes" if want_yes else "no", "yesno"
    # "What color/shape is the object left of X?" only when exactly one object is on that side.
    objs = scene["objects"]
    side = [k for k in range(len(objs)) if k != j and holds(objs[k], objs[j], rel)]
    if side != [i] or relation(objs[i], objs[j]) != rel:
        return None
    if rng.random() < 0.5:
        text = f"What color is the object {rel} the {ref_phrase(ref_j)}?"
        return text, "what color is the", "other", objs[i]["colour"], "colour"
    text = f"What shape is {rel} the {ref_phrase(ref_j)}?"
    return text, "what shape is", "other", objs[i]["shape"], "shape"


FAMILIES = {
    "colour": lambda s, r: _attr_question(s, r, "colour"),
    "shape": lambda s, r: _attr_question(s, r, "shape"),
    "size": lambda s, r: _attr_question(s, r, "size"),
    "count": _count,
    "exist": _exist,
    "spatial": _spatial,
}


def _variant(answer: str, kind: str, rng: random.Random) -> str:
    """A format variant that the official VQA normalisation maps back to `answer`."""
    if kind == "number":
        return rng.choice((NUMBER_WORDS[int(answer)], answer + ".", " " + answer))
    if kind == "yesno":
        return rng.choice((answer.capitalize(), answer + ".", answer + "!"))
    return rng.choice((f"{article(answer)} {answer}", answer.capitalize(), answer + ".", f"the {answer}"))


def _near_miss(answer: str, kind: str, rng: random.Random) -> str:
    if kind == "number":
        k = int(answer)
        return str(k + 1 if k == 0 or rng.random() < 0.5 else k - 1)
    if kind == "yesno":
        return "no" if answer == "yes" else "yes"
    table = {"colour": NEAR_COLOUR, "shape": NEAR_SHAPE, "size": NEAR_SIZE}[kind]
    return rng.choice(table[answer])


def annotate(answer: str, kind: str, rng: random.Random) -> List[Dict]:
    """Ten annotator answers; the canonical answer is the strict raw mode."""
    while True:
        answers = []
        for _ in range(10):
            u = rng.random()
            if u < 0.70:
                ans, conf = answer, "yes" if rng.random() < 0.9 else "maybe"
            elif u < 0.82:
                ans, conf = _variant(answer, kind, rng), "yes"
            elif u < 0.96:
                ans, conf = _near_miss(answer, kind, rng), rng.choice(("maybe", "maybe", "yes", "no"))
            else:
                ans, conf = rng.choice(ANSWER_SETS[kind]), rng.choice(("maybe", "no"))
            answers.append((ans, conf))
        tally = {a: sum(x == a for x, _ in answers) for a, _ in answers}
        best = tally.get(answer, 0)
        if all(n < best for a, n in tally.items() if a != answer):
            return [{"answer": a, "answer_confidence": c, "answer_id": k + 1} for k, (a, c) in enumerate(answers)]
