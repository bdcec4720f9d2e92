"""The VQA answer vocabulary and its soft targets (score = min(1, count / 3))."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from clip_td.base.io import InputError, read_json, write_json_atomic

from tasks.vqa.normalize import clean_whitespace, normalize_answer


def canonical(answer: str) -> str:
    """The form answers are stored in: whitespace-cleaned and vqaEval-normalised."""
    return normalize_answer(clean_whitespace(answer))


class AnswerVocab:
    """Answers (canonical form) <-> class indices.

    Built from the training split's `multiple_choice_answer` column, keeping answers seen at
    least `min_count` times, most frequent first (ties by text, so the order is stable)."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers: List[str] = list(answers)
        self.index: Dict[str, int] = {a: i for i, a in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            raise InputError("answer vocabulary has duplicate entries")

    @classmethod
    def build(cls, train_ds: Any, min_count: int = 1) -> "AnswerVocab":
        counts = Counter(canonical(a) for a in train_ds["multiple_choice_answer"])
        kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
        if not kept:
            raise InputError(f"no answer occurs at least {min_count} times in the training split")
        return cls(kept)

    def __len__(self) -> int:
        return len(self.answers)

    def encode(self, answer: str) -> Optional[int]:
        return self.index.get(canonical(answer))

    def decode(self, index: int) -> str:
        return self.answers[index]

    def soft_scores(self, answers: Iterable[str]) -> Dict[int, float]:
        """{index: min(1, count / 3)} over the annotators' answers found in the vocabulary."""
        counts = Counter(canonical(a) for a in answers)
        return {self.index[a]: min(1.0, c / 3) for a, c in counts.items() if a in self.index}

    def save(self, path: Union[str, Path]) -> None:
        write_json_atomic(path, {"answers": self.answers})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "AnswerVocab":
        obj = read_json(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("answers"), list):
            raise InputError(f"{path}: expected {{\"answers\": [...]}}")
        return cls(obj["answers"])


def vqa_answer_sets(rows: Any, answer_vocab: "AnswerVocab") -> Dict[str, Tuple[int, ...]]:
    """question_type -> sorted vocabulary ids of the top answers that type takes in `rows`.

    Built from the (low-shot) training rows, so it uses no label the run does not train on.
    """
    if isinstance(rows, list):
        qtypes, answers = [r["question_type"] for r in rows], [r["multiple_choice_answer"] for r in rows]
    else:  # a datasets.Dataset: read the two columns only
        qtypes, answers = rows["question_type"], rows["multiple_choice_answer"]
    sets: Dict[str, set] = {}
    for qtype, answer in zip(qtypes, answers):
        idx = answer_vocab.encode(answer)
        if idx is not None:
            sets.setdefault(qtype, set()).add(int(idx))
    return {k: tuple(sorted(v)) for k, v in sets.items()}


def answer_set_mask(answer_sets: Dict[str, Tuple[int, ...]], question_type: str, n_answers: int) -> torch.Tensor:
    """(n_answers,) bool: the answers of this question type (all of them for an unseen type)."""
    allowed = answer_sets.get(question_type)
    if not allowed:
        return torch.ones(n_answers, dtype=torch.bool)
    mask = torch.zeros(n_answers, dtype=torch.bool)
    mask[list(allowed)] = True
    return mask
