"""Caption grammar with its own dependency parse, and the imperfect "synthetic captioner".

The generator knows the grammar it speaks, so every caption comes with a parse in spaCy's
label set: a list of `[text, pos, dep, head]` with head = index of the head token, -1 for the
root. Phrasing and complexity vary (bare noun phrases, "a photo of ...", counts, "there is
...", and verb-headed clauses such as "a red circle sits to the left of a blue square", whose
verb heads an nsubj, so DiHT's action rule has something to find).
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence

from tasks.synthetic.scene import clear_pairs
from tasks.synthetic.vocab import NEAR_COLOUR, NEAR_SHAPE, NUMBER_WORDS, SHAPE_PLURALS, article

Token = List  # [text, pos, dep, head]

VERBS = ("sits", "rests", "floats", "hovers", "stands", "lies", "appears")
PHOTO_NOUNS = ("photo", "image", "drawing", "picture", "render")
BACKGROUNDS = {"source": ("plain", "white", "light", "clean"), "shift": ("textured", "noisy", "striped", "busy")}
LOW_COMPLEXITY = (("a", "picture"), ("an", "image"), ("a", "photo"), ("shapes",), ("image",), ("untitled",),
                  ("art",), ("a", "drawing"), ("objects",), ("my", "picture"))


class Parse:
    """A growing token list; heads may be set after the head token exists."""

    def __init__(self) -> None:
        self.tokens: List[Token] = []

    def add(self, text: str, pos: str, dep: str, head: int = -1) -> int:
        self.tokens.append([text, pos, dep, head])
        return len(self.tokens) - 1

    def attach(self, child: int, head: int) -> None:
        self.tokens[child][3] = head

    def text(self) -> str:
        out = ""
        for tok in self.tokens:
            out += tok[0] if tok[2] == "punct" or not out else " " + tok[0]
        return out


def add_np(p: Parse, obj: Dict, dep: str, head: int = -1, keys: Sequence[str] = ("size", "colour"),
           det: Optional[str] = None) -> int:
    """Append "[det] [size] [colour] shape" and return the noun's index."""
    words = [obj[k] for k in ("size", "colour") if k in keys]
    det = det if det is not None else article((words + [obj["shape"]])[0])
    mods = [p.add(det, "DET", "det")] + [p.add(w, "ADJ", "amod") for w in words]
    noun = p.add(obj["shape"], "NOUN", dep, head)
    for m in mods:
        p.attach(m, noun)
    return noun


def add_coordination(p: Parse, objs: Sequence[Dict], dep: str, head: int, keys_list: Sequence[Sequence[str]]) -> int:
    """"NP, NP and NP": conjuncts attach to the first noun (spaCy's convention)."""
    first = add_np(p, objs[0], dep, head, keys_list[0])
    for k, obj in enumerate(objs[1:], start=1):
        if k == len(objs) - 1:
            p.add("and", "CCONJ", "cc", first)
        else:
            p.add(",", "PUNCT", "punct", first)
        add_np(p, obj, "conj", first, keys_list[k])
    return first


def _keys(rng: random.Random) -> tuple:
    return rng.choice((("colour",), ("colour",), ("size", "colour"), ("size", "colour"), ()))


def _coord_keys(objs: Sequence[Dict], rng: random.Random) -> List[tuple]:
    """Attribute keys per listed object; a repeated shape always gets its colour."""
    shapes = [o["shape"] for o in objs]
    return [k if k or shapes.count(o["shape"]) == 1 else ("colour",) for o, k in zip(objs, (_keys(rng) for _ in objs))]


def _salient(scene: Dict, rng: random.Random, k_max: int = 3) -> List[Dict]:
    """Up to k_max objects, largest first (what a web caption would mention)."""
    order = sorted(scene["objects"], key=lambda o: -o["r"])
    return order[: rng.randint(1, min(k_max, len(order)))]


def caption(scene: Dict, rng: random.Random) -> Parse:
    """A clean, true caption of `scene` in one of several phrasings."""
    forms = ["np", "photo", "count", "there"] + ["action"] * 3 * bool(clear_pairs(scene))
    form = rng.choice(forms)
    p = Parse()
    if form == "action":
        i, j, rel = rng.choice(clear_pairs(scene))
        a, b = scene["objects"][i], scene["objects"][j]
        subj = add_np(p, a, "nsubj", -1, _keys(rng) or ("colour",))
        verb = p.add(rng.choice(VERBS), "VERB", "ROOT")
        p.attach(subj, verb)
        _add_relation(p, rel, verb, b, _keys(rng) or ("colour",))
    elif form == "photo":
        p.add("a", "DET", "det", 1)
        root = p.add(rng.choice(PHOTO_NOUNS), "NOUN", "ROOT")
        prep = p.add("of", "ADP", "prep", root)
        objs = _salient(scene, rng)
        add_coordination(p, objs, "pobj", prep, _coord_keys(objs, rng))
    elif form == "count":
        n = len(scene["objects"])
        num = p.add(NUMBER_WORDS[n] if n > 1 else "one", "NUM", "nummod")
        root = p.add("shapes" if n > 1 else "shape", "NOUN", "ROOT")
        p.attach(num, root)
        prep = p.add("on", "ADP", "prep", root)
        det = p.add("a", "DET", "det")
        adj = p.add(rng.choice(BACKGROUNDS[scene["style"]]), "ADJ", "amod")
        bg = p.add("background", "NOUN", "pobj", prep)
        p.attach(det, bg)
        p.attach(adj, bg)
    elif form == "there":
        expl = p.add("there", "PRON", "expl")
        objs = _salient(scene, rng)
        root = p.add("is" if len(objs) == 1 else "are", "AUX", "ROOT")
        p.attach(expl, root)
        add_coordination(p, objs, "attr", root, _coord_keys(objs, rng))
    else:
        objs = _salient(scene, rng)
        add_coordination(p, objs, "ROOT", -1, _coord_keys(objs, rng))
    return p


def _add_relation(p: Parse, rel: str, verb: int, obj: Dict, keys: Sequence[str]) -> None:
    if rel in ("left of", "right of"):
        to = p.add("to", "ADP", "prep", verb)
        the = p.add("the", "DET", "det")
        side = p.add(rel.split()[0], "NOUN", "pobj", to)
        p.attach(the, side)
        of = p.add("of", "ADP", "prep", side)
        add_np(p, obj, "pobj", of, keys)
    else:
        prep = p.add(rel, "ADP", "prep", verb)
        add_np(p, obj, "pobj", prep, keys)


def low_complexity(rng: random.Random) -> Parse:
    words = rng.choice(LOW_COMPLEXITY)
    p = Parse()
    if len(words) == 2:
        p.add(words[0], "DET" if words[0] != "my" else "PRON", "det" if words[0] != "my" else "poss", 1)
        p.add(words[1], "NOUN", "ROOT")
    else:
        p.add(words[0], "NOUN", "ROOT")
    return p


def short_phrase(obj: Dict) -> Parse:
    """"red star": the kind of words rendered into text-spotting images."""
    p = Parse()
    adj = p.add(obj["colour"], "ADJ", "amod")
    p.attach(adj, p.add(obj["shape"], "NOUN", "ROOT"))
    return p


def synthetic_caption(scene: Dict, rng: random.Random, p_drop: float, p_wrong: float) -> str:
    """An imperfect captioner's description of this very scene (ALIP's second path).

    Lists up to three objects, largest first; with probability p_drop it leaves out an
    attribute or an object, with p_wrong it names a confusable colour or shape instead.
    """
    objs = [dict(o) for o in sorted(scene["objects"], key=lambda o: -o["r"])[:3]]
    keys = [["size", "colour"] for _ in objs]
    u = rng.random()
    if u < p_drop:
        k = rng.randrange(len(objs))
        if len(objs) > 1 and rng.random() < 0.3:
            del objs[k], keys[k]
        else:
            keys[k].remove(rng.choice(keys[k]))
    elif u < p_drop + p_wrong:
        obj = rng.choice(objs)
        if rng.random() < 0.6:
            obj["colour"] = rng.choice(NEAR_COLOUR[obj["colour"]])
        else:
            obj["shape"] = rng.choice(NEAR_SHAPE[obj["shape"]])
    p = Parse()
    add_coordination(p, objs, "ROOT", -1, keys)
    return p.text()


def plural(shape: str) -> str:
    return SHAPE_PLURALS[shape]
