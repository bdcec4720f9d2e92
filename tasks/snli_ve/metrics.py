"""SNLI-VE accuracy, and `evaluate_files` (what `clip-td evaluate snli_ve` calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Union

from clip_td.base.io import InputError, iter_jsonl

from tasks.base import check_same_ids

LABELS = ("entailment", "neutral", "contradiction")


def accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Percent of predictions equal to their reference (label names or ints alike)."""
    if len(predictions) != len(references) or not predictions:
        raise InputError(f"expected as many predictions as references (>0), got {len(predictions)} and {len(references)}")
    return 100.0 * sum(int(p == r) for p, r in zip(predictions, references)) / len(references)


def labels_by_id(path: Union[str, Path], id_key: str, label_key: str) -> Dict[str, str]:
    """id -> label of every line of an SNLI-VE JSON-lines file (annotations or predictions); a
    missing field, an unknown label or a repeated id names the file and line."""
    out: Dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or id_key not in obj or label_key not in obj:
            raise InputError(f"{path}:{lineno}: expected fields {id_key!r} and {label_key!r}")
        if obj[label_key] not in LABELS:
            raise InputError(f"{path}:{lineno}: {label_key} {obj[label_key]!r} is not one of {', '.join(LABELS)}")
        key = str(obj[id_key])
        if key in out:
            raise InputError(f"{path}:{lineno}: duplicate {id_key} {key}")
        out[key] = obj[label_key]
    return out


def evaluate_files(annotations: Union[str, Path], predictions: Union[str, Path]) -> Dict[str, float]:
    """{"accuracy": percent} of predictions jsonl {pairID, label} against the split's jsonl."""
    gold = labels_by_id(annotations, "pairID", "gold_label")
    pred = labels_by_id(predictions, "pairID", "label")
    check_same_ids(pred, list(gold), "pairID", predictions, annotations)
    ids = list(gold)
    return {"accuracy": accuracy([pred[i] for i in ids], [gold[i] for i in ids])}
