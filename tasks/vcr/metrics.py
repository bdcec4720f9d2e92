"""VCR Q->A, QA->R and Q->AR (both right, per instance), `evaluate_files` and
`evaluate_files_by_type` (the same scores per question type)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

from clip_td.base.io import InputError, iter_jsonl

from tasks.base import check_same_ids


def vcr_scores(predictions: Sequence[Tuple[int, int]], references: Sequence[Tuple[int, int]]) -> Dict[str, float]:
    """Percent scores from (answer, rationale) pairs: q2a, qa2r and q2ar (both right)."""
    if len(predictions) != len(references) or not predictions:
        raise InputError(f"expected as many predictions as references (>0), got {len(predictions)} and {len(references)}")
    n = len(references)
    a_ok = [int(p[0]) == int(r[0]) for p, r in zip(predictions, references)]
    r_ok = [int(p[1]) == int(r[1]) for p, r in zip(predictions, references)]
    return {
        "q2a": 100.0 * sum(a_ok) / n,
        "qa2r": 100.0 * sum(r_ok) / n,
        "q2ar": 100.0 * sum(a and r for a, r in zip(a_ok, r_ok)) / n,
    }


def _pairs(path: Union[str, Path], keys: Tuple[str, str]) -> Dict[str, Tuple[int, int]]:
    out: Dict[str, Tuple[int, int]] = {}
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "annot_id" not in obj or any(k not in obj for k in keys):
            raise InputError(f"{path}:{lineno}: expected fields 'annot_id', {keys[0]!r}, {keys[1]!r}")
        vals = tuple(obj[k] for k in keys)
        if any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 3 for v in vals):
            raise InputError(f"{path}:{lineno}: {keys[0]} and {keys[1]} must be integers 0-3, got {vals}")
        key = str(obj["annot_id"])
        if key in out:
            raise InputError(f"{path}:{lineno}: duplicate annot_id {key}")
        out[key] = vals  # type: ignore[assignment]
    return out


def evaluate_files(annotations: Union[str, Path], predictions: Union[str, Path]) -> Dict[str, float]:
    """Score predictions jsonl {annot_id, answer, rationale} against a labelled VCR jsonl."""
    gold = _pairs(annotations, ("answer_label", "rationale_label"))
    pred = _pairs(predictions, ("answer", "rationale"))
    check_same_ids(pred, list(gold), "annot_id", predictions, annotations)
    ids = list(gold)
    return vcr_scores([pred[i] for i in ids], [gold[i] for i in ids])


def question_type(question: Sequence) -> str:
    """A VCR question's type: its first two words, lower-cased, an object reference (a list of
    indices) written `<obj>`: "why is", "what color", "where is"."""
    words = ["<obj>" if isinstance(w, list) else str(w).lower() for w in question]
    return " ".join(words[:2])


def evaluate_files_by_type(annotations: Union[str, Path], predictions: Union[str, Path]) -> Dict[str, Dict[str, float]]:
    """`evaluate_files` per question type: {type: {q2a, qa2r, q2ar, n}}; the annotations need
    `question` (VCR's token list) as well as the labels."""
    gold = _pairs(annotations, ("answer_label", "rationale_label"))
    pred = _pairs(predictions, ("answer", "rationale"))
    check_same_ids(pred, list(gold), "annot_id", predictions, annotations)
    groups: Dict[str, list] = {}
    for lineno, obj in iter_jsonl(annotations):
        if not isinstance(obj.get("question"), list):
            raise InputError(f"{annotations}:{lineno}: expected 'question' as a list of words and object references")
        groups.setdefault(question_type(obj["question"]), []).append(str(obj["annot_id"]))
    out: Dict[str, Dict[str, float]] = {}
    for qtype, ids in sorted(groups.items()):
        out[qtype] = {**vcr_scores([pred[i] for i in ids], [gold[i] for i in ids]), "n": len(ids)}
    return out
