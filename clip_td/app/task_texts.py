"""What the teacher reads for an instance: the task text and the answer-level candidates.

    task_text, candidates, gold = teacher_texts(task, row, answer_vocab)

- vqa: task text = question + gold answer; candidates = the answer vocabulary (one short text per
  answer, the same list for every question, so their text embeddings are computed once and
  shared); gold = the vocabulary index of `multiple_choice_answer` (-1 if it is not in the
  vocabulary: the confidence weight then trusts the teacher with nothing). The image-answer
  similarity alone does not depend on the question; with `method.answer_sets=true` (default off)
  the teacher's distribution is restricted per question to the answers its question type takes
  in the training rows (`vqa_answer_sets` -> `answer_set_mask`, applied by the distiller), as
  zero-shot CLIP VQA does.
- snli_ve: task text = hypothesis; candidates = the hypothesis under three templates, one per
  label (entailment: the hypothesis as stated; neutral: hedged; contradiction: negated), so the
  teacher's image-text similarity of each reading gives q_i over the 3 labels; gold = label.
- vcr (Q->A): task text = question + right answer; candidates = question + each answer;
  gold = answer_label.

The task text always starts with the student's own first text segment (question / hypothesis):
CLIP's text tower is causal, so the teacher token features of that prefix do not depend on the
appended answer, and they align with the student's tokens by character span.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

SNLI_TEMPLATES = ("{h}", "perhaps {h}", "it is not true that {h}")  # entailment, neutral, contradiction


def teacher_texts(task: str, row: Dict[str, Any], answer_vocab: Any = None) -> Tuple[str, List[str], int]:
    """-> (task_text, candidate texts, index of the gold candidate or -1)."""
    if task == "vqa":
        answer = row["multiple_choice_answer"]
        gold = answer_vocab.encode(answer) if answer_vocab is not None else None
        return f"{row['text']} {answer}", vqa_candidates(answer_vocab), -1 if gold is None else int(gold)
    if task == "snli_ve":
        hyp = row["text"]
        return hyp, [t.format(h=hyp) for t in SNLI_TEMPLATES], int(row["label"])
    if task == "vcr":
        q, answers, gold = row["text"], row["answers"], int(row["answer_label"])
        return f"{q} {answers[gold]}", [f"{q} {a}" for a in answers], gold
    raise KeyError(f"unknown task {task!r}; expected vqa, snli_ve or vcr")


def vqa_answer_sets(rows: Any, answer_vocab: Any) -> Dict[str, Tuple[int, ...]]:
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


def answer_set_mask(answer_sets: Dict[str, Tuple[int, ...]], question_type: str, n_answers: int) -> "torch.Tensor":
    """(n_answers,) bool: the answers of this question type (all of them for an unseen type)."""
    import torch

    allowed = answer_sets.get(question_type)
    if not allowed:
        return torch.ones(n_answers, dtype=torch.bool)
    mask = torch.zeros(n_answers, dtype=torch.bool)
    mask[list(allowed)] = True
    return mask


_VQA_CANDIDATES: Dict[int, Tuple[Any, List[str]]] = {}  # id -> (vocab kept alive, so ids stay unique, texts)


def vqa_candidates(answer_vocab: Optional[Any]) -> List[str]:
    """The answer strings of the vocabulary, one list object shared by every question."""
    if answer_vocab is None:
        return []
    key = id(answer_vocab)
    if key not in _VQA_CANDIDATES:
        _VQA_CANDIDATES[key] = (answer_vocab, [answer_vocab.decode(i) for i in range(len(answer_vocab))])
    return _VQA_CANDIDATES[key][1]
