"""VQA accuracy against hand-computed cases of the official vqaEval.py rules."""

import json

import pytest

from clip_td.base.io import InputError
from tasks.vqa.answers import AnswerVocab
from tasks.vqa.metrics import evaluate_files, question_accuracy, vqa_accuracy
from tasks.vqa.normalize import normalize_answer, process_digit_article, process_punctuation


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1,000", "1000"),  # a comma between digits: every punctuation mark is deleted
        ("yes, sir", "yes sir"),  # punctuation next to a space is deleted
        ("a,b", "a b"),  # otherwise it becomes a space
        ("left-right", "left right"),
        ("hi.", "hi"),  # a period not before a digit goes
        ("2.5", "2.5"),  # a decimal point stays
        ("3.14.", "3.14"),
        ("." * 40, "." * 8),  # vqaEval passes re.UNICODE (32) as `count`: at most 32 removed
    ],
)
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("Two Dogs", "2 dogs"), ("none", "0"), ("the cat", "cat"), ("an apple a day", "apple day"),
     ("dont", "don't"), ("Im", "im"), ("ten", "10")],
)
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


def test_normalize_answer_combines_both():
    assert normalize_answer("Yes.") == "yes"
    assert normalize_answer("The two dogs!") == "2 dogs"


def test_identical_ground_truths_skip_normalisation():
    # legacy vqaEval.py (458a8b2): the prediction is always normalised, identical GTs are used as stored
    assert question_accuracy("Yes.", ["yes"] * 10, rule="legacy") == 1.0
    assert question_accuracy("yes", ["Yes"] * 10, rule="legacy") == 0.0  # "Yes" GTs are never lower-cased
    assert question_accuracy("yes\n", ["yes"] * 10, rule="legacy") == 1.0  # the prediction's whitespace is cleaned
    # official (master a013f00) normalises nothing when the GTs agree, both sides when they differ
    assert question_accuracy("Yes.", ["yes"] * 10) == 0.0
    assert question_accuracy("Yes.", ["yes"] * 9 + ["yes."]) == 1.0
    # legacy: differing GTs get only the punctuation step, so "yes." -> "yes" too
    assert question_accuracy("Yes.", ["yes"] * 9 + ["yes."], rule="legacy") == 1.0


def test_number_words_differ_between_rules():
    # legacy: GT "two" keeps its word form (no digit step on GTs), the prediction becomes "2"
    assert question_accuracy("two", ["two"] * 4 + ["three"] * 6, rule="legacy") == 0.0
    # official: GTs become "2" x4, "3" x6; each leave-one-out subset holds >= 3 matches
    assert question_accuracy("two", ["two"] * 4 + ["three"] * 6) == 1.0
    with pytest.raises(InputError, match="unknown VQA accuracy rule 'loose'"):
        question_accuracy("a", ["a"] * 10, rule="loose")


@pytest.mark.parametrize("rule", ["official", "legacy"])
def test_leave_one_out_hand_computed(rule):
    # "two" -> "2": GT i="2" (3 of them) sees 2 matches -> 2/3; GT i="3" sees 3 -> 1
    assert question_accuracy("two", ["2"] * 3 + ["3"] * 7, rule) == pytest.approx((3 * 2 / 3 + 7) / 10)
    # articles dropped from the prediction: "the dog" == "dog" -> (2 * 1/3 + 8 * 2/3) / 10
    assert question_accuracy("the dog", ["dog"] * 2 + ["cat"] * 8, rule) == pytest.approx(0.6)
    assert question_accuracy("dont", ["don't"] * 4 + ["no"] * 6, rule) == 1.0
    # "1,000" -> "1000" on both sides (comma between digits)
    assert question_accuracy("1,000", ["1000"] * 3 + ["1,000"] + ["lots"] * 6, rule) == 1.0
    assert question_accuracy("blue", ["blue"] + ["red"] * 9, rule) == pytest.approx(9 * (1 / 3) / 10)


def test_vqa_accuracy_aggregates_rounded():
    out = vqa_accuracy(["yes", "no", "2"], [["yes"] * 10, ["yes"] * 10, ["2"] * 10],
                       ["is the", "is the", "how many"], ["yes/no", "yes/no", "number"])
    assert out == {"overall": 66.67, "perQuestionType": {"is the": 50.0, "how many": 100.0},
                   "perAnswerType": {"yes/no": 50.0, "number": 100.0}}


def _files(tmp_path, results):
    qs = {"questions": [{"question_id": i, "image_id": 1, "question": "q"} for i in (1, 2)]}
    anns = {"annotations": [
        {"question_id": 1, "image_id": 1, "question_type": "what", "answer_type": "other", "multiple_choice_answer": "red",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k} for k, a in enumerate(["red"] * 2 + ["blue"] * 8)]},
        {"question_id": 2, "image_id": 1, "question_type": "how many", "answer_type": "number", "multiple_choice_answer": "2",
         "answers": [{"answer": "2", "answer_confidence": "yes", "answer_id": k} for k in range(10)]},
    ]}
    paths = [tmp_path / n for n in ("q.json", "a.json", "r.json")]
    for p, obj in zip(paths, (qs, anns, results)):
        p.write_text(json.dumps(obj))
    return [str(p) for p in paths]


def test_evaluate_files(tmp_path):
    q, a, r = _files(tmp_path, [{"question_id": 2, "answer": "2"}, {"question_id": 1, "answer": "red"}])
    # q1: 2 "red" -> i=red sees 1 (1/3), i=blue sees 2 (2/3): (2/3 + 16/3) / 10 = 0.6
    # Overall averages question means: (0.6 + 1) / 2 = 80. Per type, vqaEval.py (every version
    # since 2015) averages the same per-question means: what = 60, how many = 100.
    assert evaluate_files(q, a, r) == {"overall": 80.0, "perQuestionType": {"what": 60.0, "how many": 100.0},
                                       "perAnswerType": {"other": 60.0, "number": 100.0}}


@pytest.mark.parametrize(
    "results,match",
    [([{"question_id": 1, "answer": "red"}], r"r.json: no answer for question_id 2"),
     ([{"question_id": 1, "answer": "x"}, {"question_id": 2, "answer": "x"}, {"question_id": 9, "answer": "x"}],
      r"r.json: question_id 9 is not in"),
     ([{"question_id": 1, "answer": "x"}, {"question_id": 1, "answer": "y"}], r"r.json: \[1\]: duplicate question_id 1")],
)
def test_evaluate_files_bad_results(tmp_path, results, match):
    with pytest.raises(InputError, match=match):
        evaluate_files(*_files(tmp_path, results))


def test_answer_vocab(tmp_path):
    ds = {"multiple_choice_answer": ["yes", "no", "Yes", "two", "2", "cat"]}
    vocab = AnswerVocab.build(ds, min_count=2)
    assert vocab.answers == ["2", "yes"]  # canonical forms, most frequent first, ties by text
    assert vocab.decode(1) == "yes" and vocab.encode("Two") == 0 and vocab.encode("cat") is None
    assert vocab.soft_scores(["yes"] * 2 + ["two"] * 5 + ["cat"] * 3) == {1: pytest.approx(2 / 3), 0: 1.0}
    vocab.save(tmp_path / "v.json")
    assert AnswerVocab.load(tmp_path / "v.json").answers == vocab.answers


def test_question_conditioned_teacher_candidates():
    """method.question_candidates: the teacher scores "<question> <answer>" for every answer of the
    vocabulary, one list object per question (so the cache encodes it once), gold unchanged."""
    from types import SimpleNamespace

    from tasks import get_task

    task = get_task("vqa")
    rows = {"multiple_choice_answer": ["red", "two", "red", "blue"], "question_type": ["what color"] * 4}
    settings = SimpleNamespace(data=SimpleNamespace(answer_min_count=1),
                               method=SimpleNamespace(answer_sets=False, question_candidates=True))
    task.setup(rows, settings)
    assert task.answer_vocab.answers == ["red", "2", "blue"]  # canonical forms, ties by text
    a = {"text": "what color is the circle?", "multiple_choice_answer": "blue"}
    b = {"text": "what color is the circle?", "multiple_choice_answer": "green"}
    c = {"text": "how many squares are there?", "multiple_choice_answer": "two"}
    (text_a, cands_a, gold_a), (_, cands_b, gold_b), (_, cands_c, gold_c) = map(task.teacher_texts, (a, b, c))
    assert text_a == "what color is the circle? blue" and (gold_a, gold_b, gold_c) == (2, -1, 1)
    assert cands_a == ["what color is the circle? red", "what color is the circle? 2", "what color is the circle? blue"]
    assert cands_b is cands_a and cands_c is not cands_a and cands_c[1] == "how many squares are there? 2"
    settings.method.question_candidates = False
    task.setup(rows, settings)
    assert task.teacher_texts(a)[1] == ["red", "2", "blue"]
