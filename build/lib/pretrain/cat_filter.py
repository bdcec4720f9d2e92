"""DiHT's CAT filter (Complexity, Action, Text-spotting) as a data step.

complexity = the largest number of children of any token in the caption's dependency parse;
actions = number of verbs that head an `nsubj` dependent; text spotting = word-level Jaccard
between OCR text and caption. Parse and OCR come from pluggable backends (`PARSERS`, `OCRS`):
the precomputed corpus columns (`parse`, `ocr_text`), spaCy, tesseract.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from clip_td.base.io import InputError
from clip_td.base.registry import Registry

PARSERS = Registry("parse backend")  # name -> factory(model_name) -> fn(row) -> parse
OCRS = Registry("ocr backend")  # name -> factory() -> fn(row) -> str

Parse = List[Tuple[str, str, str, int]]  # (text, pos, dep, head index; -1 = root)


@dataclass(frozen=True)
class CATRules:
    min_complexity: int = 1  # keep pairs whose parse has a token with >= this many children
    min_actions: int = 0  # keep pairs with >= this many verbs heading an nsubj
    max_ocr_jaccard: float = 0.2  # drop pairs whose OCR words overlap the caption this much (>=)


def complexity(parse: Parse) -> int:
    """Largest number of children of any token."""
    counts = Counter(head for _, _, _, head in parse if head >= 0)
    return max(counts.values(), default=0)


def actions(parse: Parse) -> int:
    """Number of distinct verbs (POS VERB/AUX) that head an `nsubj` / `nsubjpass` dependent."""
    heads = {head for _, _, dep, head in parse if dep in ("nsubj", "nsubjpass") and head >= 0}
    return sum(1 for h in heads if h < len(parse) and parse[h][1] in ("VERB", "AUX"))


def _words(text: str) -> set:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def ocr_jaccard(ocr: str, caption: str) -> float:
    """Word-level Jaccard overlap of two strings (0 when the OCR text is empty)."""
    a, b = _words(ocr), _words(caption)
    return len(a & b) / len(a | b) if a and b else 0.0


def cat_decision(parse: Parse, ocr: str, caption: str, rules: CATRules) -> Tuple[bool, str]:
    """(keep, reason): reason is "kept", "low_complexity", "no_action" or "text_spotting"."""
    if complexity(parse) < rules.min_complexity:
        return False, "low_complexity"
    if actions(parse) < rules.min_actions:
        return False, "no_action"
    if ocr_jaccard(ocr, caption) >= rules.max_ocr_jaccard:
        return False, "text_spotting"
    return True, "kept"


def _require(module: str, key: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise InputError(f"config key {key}: backend {what!r} needs the {module!r} package, which is not installed")


@PARSERS.register("column")
def _parse_column(model: Optional[str] = None) -> Callable[[Dict], Parse]:
    def parse(row: Dict) -> Parse:
        if "parse" not in row:
            raise InputError("config key cat.parse_backend: 'column' needs a 'parse' column in the corpus")
        try:
            return [(str(t), str(p), str(d), int(h)) for t, p, d, h in json.loads(row["parse"])]
        except (ValueError, TypeError) as e:
            raise InputError(f"corpus column 'parse' of {row.get('filepath')!r}: expected a JSON list of [text, pos, dep, head] ({e})") from None

    return parse


@PARSERS.register("spacy")
def _parse_spacy(model: str = "en_core_web_sm") -> Callable[[Dict], Parse]:
    _require("spacy", "cat.parse_backend", "spacy")
    import spacy

    try:
        nlp = spacy.load(model)
    except OSError as e:
        raise InputError(f"config key cat.spacy_model: cannot load spaCy model {model!r} ({e})") from None

    def parse(row: Dict) -> Parse:
        doc = nlp(row["title"])
        return [(t.text, t.pos_, t.dep_, -1 if t.head.i == t.i else t.head.i) for t in doc]

    return parse


@OCRS.register("column")
def _ocr_column() -> Callable[[Dict], str]:
    return lambda row: row.get("ocr_text", "")


@OCRS.register("none")
def _ocr_none() -> Callable[[Dict], str]:
    return lambda row: ""


@OCRS.register("tesseract")
def _ocr_tesseract() -> Callable[[Dict], str]:
    _require("pytesseract", "cat.ocr_backend", "tesseract")
    import pytesseract
    from PIL import Image

    def ocr(row: Dict) -> str:
        with Image.open(row["image"]) as im:
            return pytesseract.image_to_string(im)

    return ocr


def make_backends(parse_backend: str, ocr_backend: str, spacy_model: str = "en_core_web_sm"):
    """(parse_fn, ocr_fn) for the named backends; unknown or missing ones name the config key."""
    parse_factory = PARSERS.get(parse_backend, key="cat.parse_backend")
    ocr_factory = OCRS.get(ocr_backend, key="cat.ocr_backend")
    parse_fn = parse_factory(spacy_model) if parse_backend == "spacy" else parse_factory()
    return parse_fn, ocr_factory()


def cat_filter(rows: Sequence[Dict], rules: CATRules, parse_fn: Callable, ocr_fn: Callable) -> Tuple[List[Dict], Dict]:
    """Kept rows and a JSON-able report: counts per reason, thresholds and, when the corpus
    has the generator's `noise` column, precision/recall of the dropped set against it."""
    kept, reasons = [], []
    for row in rows:
        keep, why = cat_decision(parse_fn(row), ocr_fn(row), row["title"], rules)
        reasons.append(why)
        if keep:
            kept.append(row)
    report = {"rules": rules.__dict__, "total": len(rows), "kept": len(kept), "reasons": dict(Counter(reasons))}
    if rows and all("noise" in r for r in rows):
        report["vs_truth"] = truth_scores([r["noise"] for r in rows], [w != "kept" for w in reasons])
    return kept, report


def truth_scores(noise: Sequence[str], dropped: Sequence[bool]) -> Dict:
    """Precision (dropped pairs that are noisy) and recall (noisy pairs dropped), overall and
    per noise kind; "clean" is the negative class."""
    noisy = [n != "clean" for n in noise]
    tp = sum(d and y for d, y in zip(dropped, noisy))
    out = {
        "precision": tp / max(sum(dropped), 1),
        "recall": tp / max(sum(noisy), 1),
        "recall_per_kind": {},
    }
    for kind in sorted(set(noise) - {"clean"}):
        idx = [i for i, n in enumerate(noise) if n == kind]
        out["recall_per_kind"][kind] = sum(dropped[i] for i in idx) / len(idx)
    out["clean_dropped"] = sum(d for d, n in zip(dropped, noise) if n == "clean") / max(noise.count("clean"), 1)
    return out
