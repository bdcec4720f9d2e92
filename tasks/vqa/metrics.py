"""VQA accuracy exactly as the official tool (vqaEval.py) computes it, as plain functions,
plus `evaluate_files` (what `clip-td evaluate vqa` calls)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from clip_td.base.io import InputError, read_json

from tasks.vqa.normalize import clean_whitespace, normalize_answer, process_punctuation

PathLike = Union[str, Path]


RULES = ("official", "symmetric")


def leave_one_out_accuracies(prediction: str, gt_answers: Sequence[str], rule: str = "official") -> List[float]:
    """min(1, #{j != i : gt_j == pred} / 3) for each ground truth i, in annotation order.

    rule "official" is GT-Vision-Lab/VQA vqaEval.py (master): the prediction is always
    whitespace-cleaned and fully normalised (punctuation, then digits/articles/contractions);
    the ground truths are used as stored, and only when they are not all identical do they
    get the punctuation step (not the digit/article step).
    rule "symmetric" is the variant that METHODS.md describes (found in several copies of the
    tool): everything whitespace-cleaned, and only when the ground truths are not all
    identical are both they and the prediction fully normalised.
    """
    if rule == "official":
        gts = list(gt_answers)
        pred = normalize_answer(clean_whitespace(prediction))
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    elif rule == "symmetric":
        gts = [clean_whitespace(a) for a in gt_answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [normalize_answer(a) for a in gts]
            pred = normalize_answer(pred)
    else:
        raise InputError(f"unknown VQA accuracy rule {rule!r}; expected one of {', '.join(RULES)}")
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        accs.append(min(1.0, float(matches) / 3))
    return accs


def question_accuracy(prediction: str, gt_answers: Sequence[str], rule: str = "official") -> float:
    """Accuracy of one answer in [0, 1]: the mean of `leave_one_out_accuracies`."""
    accs = leave_one_out_accuracies(prediction, gt_answers, rule)
    return float(sum(accs)) / len(accs)


def _pct(values: List[float]) -> float:
    return round(100 * float(sum(values)) / len(values), 2)


def aggregate(
    accs: Sequence[float],
    question_types: Sequence[str],
    answer_types: Sequence[str],
    type_accs: Optional[Sequence[float]] = None,
) -> Dict[str, Any]:
    """{"overall", "perQuestionType", "perAnswerType"}: 100 x mean, rounded to 2 decimals,
    summed in the given (annotation file) order as the official tool does.

    `type_accs` are the values the per-type means average. The official tool appends the
    loop variable `acc` left over from the leave-one-out loop (the accuracy against the last
    nine annotators), not the question's mean; `vqa_accuracy` passes exactly that so the
    per-type numbers match the tool. Defaults to `accs`.
    """
    by_q: Dict[str, List[float]] = defaultdict(list)
    by_a: Dict[str, List[float]] = defaultdict(list)
    for acc, qt, at in zip(accs if type_accs is None else type_accs, question_types, answer_types):
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
    if len(predictions) != len(gt_answers) or not predictions:
        raise InputError(f"expected as many predictions as ground truths (>0), got {len(predictions)} and {len(gt_answers)}")
    n = len(predictions)
    loo = [leave_one_out_accuracies(p, g, rule) for p, g in zip(predictions, gt_answers)]
    accs = [float(sum(x)) / len(x) for x in loo]
    return aggregate(accs, question_types or [""] * n, answer_types or [""] * n, type_accs=[x[-1] for x in loo])


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
    """Score a results file [{question_id, answer}] against official questions/annotations.

    Like the official `loadRes`, the results must answer exactly the annotated questions:
    a missing question, an unknown id or a duplicate is an InputError naming file and id.
    """
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
    known = set(ann_ids)
    for qid in answers:
        if qid not in known:
            raise InputError(f"{results}: question_id {qid} is not in {annotations}")
    for qid in ann_ids:
        if qid not in answers:
            raise InputError(f"{results}: no answer for question_id {qid} of {annotations}")
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
