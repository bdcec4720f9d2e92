"""The VQA answer vocabulary and its soft targets (score = min(1, count / 3))."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

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
