"""VQA accuracy as the official GT-Vision-Lab/VQA evaluation tool
(`PythonEvaluationTools/vqaEvaluation/vqaEval.py`) computes it, as plain functions, plus
`evaluate_files` (what `clip-td evaluate vqa` calls).

Two rules, both reproduced exactly (see `leave_one_out_accuracies`):

- ``"official"`` (default): the tool's current master, commit a013f00 (a013f0043c1e, 2021-03-11,
  "Fixed processing answers bug"). The prediction and all ground truths are whitespace-cleaned;
  only when the cleaned ground truths are not all identical do the ground truths and the
  prediction get the full normalisation (punctuation, then digits/articles/contractions).
- ``"legacy"``: the last version before that fix, commit 458a8b2 (458a8b268b1a, 2016-10-08,
  "fixed the apostrophe symbol issue in contractions dictionary"). The prediction is always
  whitespace-cleaned and fully normalised; the ground truths are used as stored (no whitespace
  cleaning) and get only the punctuation step, and only when they are not all identical.

Under both rules a question scores the mean over its annotators i of
min(1, #{j != i : gt_j == pred} / 3), and overall, per question type and per answer type are
100 x the mean of these per-question scores (every version since f8b1ce3, 2015-09-24; before it
the per-type lists held the last annotator's value), summed in annotation-file order and rounded
to 2 decimals the way the tool's Python 2 `round` does (exact halves away from zero).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from clip_td.base.io import InputError, read_json

from tasks.base import check_same_ids
from tasks.vqa.normalize import clean_whitespace, normalize_answer, process_punctuation

PathLike = Union[str, Path]


RULES = ("official", "legacy")


def check_rule(rule: str) -> str:
    """`rule` if it is one of RULES, else an InputError naming it and the choices."""
    if rule not in RULES:
        raise InputError(f"unknown VQA accuracy rule {rule!r}; expected one of {', '.join(map(repr, RULES))}")
    return rule


def leave_one_out_accuracies(prediction: str, gt_answers: Sequence[str], rule: str = "official") -> List[float]:
    """min(1, #{j != i : gt_j == pred} / 3) for each ground truth i, in annotation order.

    rule "official" (vqaEval.py a013f00, current master): the prediction and the ground truths
    are whitespace-cleaned; if the cleaned ground truths are not all identical, all of them and
    the prediction are fully normalised (punctuation, then digits/articles/contractions), else
    nothing more is done (so "Yes" does not match ten "yes").
    rule "legacy" (vqaEval.py 458a8b2, before 2021): the prediction is whitespace-cleaned and
    fully normalised; the ground truths are used as stored and, only if they are not all
    identical, get the punctuation step (never the digit/article/contraction step).
    """
    check_rule(rule)
    if rule == "official":
        gts = [clean_whitespace(a) for a in gt_answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [normalize_answer(a) for a in gts]
            pred = normalize_answer(pred)
    else:
        gts = list(gt_answers)
        pred = normalize_answer(clean_whitespace(prediction))
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        accs.append(min(1.0, float(matches) / 3))
    return accs


def question_accuracy(prediction: str, gt_answers: Sequence[str], rule: str = "official") -> float:
    """Accuracy of one answer in [0, 1]: the mean of `leave_one_out_accuracies`."""
    accs = leave_one_out_accuracies(prediction, gt_answers, rule)
    return float(sum(accs)) / len(accs)


def round_half_away(x: float, ndigits: int = 2) -> float:
    """Python 2's `round` (which vqaEval.py runs under): the exact binary value rounded to
    `ndigits` decimals, exact halves away from zero (Python 3 rounds them to even:
    round(3.125, 2) is 3.12 there, 3.13 in the tool)."""
    q = Decimal(x).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)
    return float(q)


def _pct(values: List[float]) -> float:
    return round_half_away(100 * float(sum(values)) / len(values), 2)


def aggregate(accs: Sequence[float], question_types: Sequence[str], answer_types: Sequence[str]) -> Dict[str, Any]:
    """{"overall", "perQuestionType", "perAnswerType"}: 100 x the mean of the per-question
    accuracies, overall and per type, summed in the given (annotation file) order and rounded
    to 2 decimals as the official tool does (same for both rules)."""
    by_q: Dict[str, List[float]] = defaultdict(list)
    by_a: Dict[str, List[float]] = defaultdict(list)
    for acc, qt, at in zip(accs, question_types, answer_types):
        by_q[qt].append(acc)
        by_a[at].append(acc)
    return {
        "overall": _pct(list(accs)),
        "perQuestionType": {k: _pct(v) for k, v in by_q.items()},
        "perAnswerType": {k: _pct(v) for k, v in by_a.items()},
    }


def vqa_accuracy(
    predictions: Sequence[str],
    gt_answers: Sequence[Sequence[str]],
    question_types: Optional[Sequence[str]] = None,
    answer_types: Optional[Sequence[str]] = None,
    rule: str = "official",
) -> Dict[str, Any]:
    """Official VQA scores for aligned lists of predictions and ground-truth answer lists."""
    check_rule(rule)
    if len(predictions) != len(gt_answers) or not predictions:
        raise InputError(f"expected as many predictions as ground truths (>0), got {len(predictions)} and {len(gt_answers)}")
    n = len(predictions)
    accs = [question_accuracy(p, g, rule) for p, g in zip(predictions, gt_answers)]
    return aggregate(accs, question_types or [""] * n, answer_types or [""] * n)


def _ids_of(items: Any, path: PathLike, key: str) -> List[Any]:
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON list under {key!r}")
    ids = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "question_id" not in item:
            raise InputError(f"{path}: {key}[{i}]: expected an object with 'question_id'")
        ids.append(item["question_id"])
    return ids


def evaluate_files(questions: PathLike, annotations: PathLike, results: PathLike, rule: str = "official") -> Dict[str, Any]:
    """Score a results file [{question_id, answer}] against official questions/annotations
    under `rule` ("official": vqaEval.py master a013f00; "legacy": 458a8b2, before 2021).

    Like the official `loadRes`, the results must answer exactly the annotated questions:
    a missing question, an unknown id or a duplicate is an InputError naming file and id.
    """
    check_rule(rule)
    q = read_json(questions)
    a = read_json(annotations)
    r = read_json(results)
    if not isinstance(q, dict) or "questions" not in q:
        raise InputError(f"{questions}: expected a JSON object with a 'questions' list")
    if not isinstance(a, dict) or "annotations" not in a:
        raise InputError(f"{annotations}: expected a JSON object with an 'annotations' list")
    q_ids = set(_ids_of(q["questions"], questions, "questions"))
    anns = a["annotations"]
    ann_ids = _ids_of(anns, annotations, "annotations")
    for qid in ann_ids:
        if qid not in q_ids:
            raise InputError(f"{annotations}: question_id {qid} has no question in {questions}")
    res_ids = _ids_of(r, results, "results")
    answers: Dict[Any, str] = {}
    for i, (qid, item) in enumerate(zip(res_ids, r)):
        if qid in answers:
            raise InputError(f"{results}: [{i}]: duplicate question_id {qid}")
        if not isinstance(item.get("answer"), str):
            raise InputError(f"{results}: [{i}]: expected a string 'answer' for question_id {qid}")
        answers[qid] = item["answer"]
    check_same_ids(answers, ann_ids, "question_id", results, annotations, noun="answer")
    preds, gts, qts, ats = [], [], [], []
    for i, ann in enumerate(anns):
        try:
            gts.append([x["answer"] for x in ann["answers"]])
            qts.append(ann["question_type"])
            ats.append(ann["answer_type"])
        except (KeyError, TypeError):
            raise InputError(
                f"{annotations}: annotations[{i}]: expected 'answers' [{{answer}}], 'question_type', 'answer_type'"
            ) from None
        preds.append(answers[ann["question_id"]])
    return vqa_accuracy(preds, gts, qts, ats, rule)
