"""SNLI-VE and VCR metrics by hand, file scoring errors, and the `evaluate` modules loaded
offline from their local folders giving the same numbers as the plain functions."""

import json
import os
from pathlib import Path

import pytest

from clip_td.base.io import InputError
from tasks.snli_ve.metrics import accuracy, evaluate_files as snli_files
from tasks.vcr.metrics import evaluate_files as vcr_files, vcr_scores
from tasks.vqa.metrics import vqa_accuracy

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


def test_snli_ve_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 0]) == 50.0
    assert accuracy(["neutral"], ["neutral"]) == 100.0


def test_vcr_scores_per_instance():
    # both right only on the first instance; answers right on 3/4, rationales on 2/4
    out = vcr_scores([(0, 1), (2, 3), (1, 0), (3, 2)], [(0, 1), (2, 0), (1, 1), (0, 2)])
    assert out == {"q2a": 75.0, "qa2r": 50.0, "q2ar": 25.0}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_vcr_files(tmp_path):
    ann = _jsonl(tmp_path / "a.jsonl", [{"annot_id": "x", "answer_label": 1, "rationale_label": 2},
                                         {"annot_id": "y", "answer_label": 0, "rationale_label": 0}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"annot_id": "y", "answer": 0, "rationale": 3},
                                          {"annot_id": "x", "answer": 1, "rationale": 2}])
    assert vcr_files(ann, pred) == {"q2a": 100.0, "qa2r": 50.0, "q2ar": 50.0}
    bad = _jsonl(tmp_path / "b.jsonl", [{"annot_id": "x", "answer": 1, "rationale": 2}])
    with pytest.raises(InputError, match="b.jsonl: no prediction for annot_id y"):
        vcr_files(ann, bad)
    bad = _jsonl(tmp_path / "c.jsonl", [{"annot_id": "x", "answer": 1, "rationale": 7}])
    with pytest.raises(InputError, match="c.jsonl:1: answer and rationale must be integers 0-3"):
        vcr_files(ann, bad)


def test_snli_ve_files(tmp_path):
    ann = _jsonl(tmp_path / "a.jsonl", [{"pairID": "p1", "gold_label": "neutral"}, {"pairID": "p2", "gold_label": "entailment"},
                                         {"pairID": "p3", "gold_label": "contradiction"}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"pairID": "p1", "label": "neutral"}, {"pairID": "p2", "label": "neutral"},
                                          {"pairID": "p3", "label": "contradiction"}])
    assert snli_files(ann, pred) == {"accuracy": pytest.approx(200 / 3)}
    bad = _jsonl(tmp_path / "b.jsonl", [{"pairID": "p1", "label": "neutral"}, {"pairID": "zz", "label": "neutral"}])
    with pytest.raises(InputError, match="b.jsonl: pairID zz is not in"):
        snli_files(ann, bad)
    bad = _jsonl(tmp_path / "c.jsonl", [{"pairID": "p1", "label": "maybe"}])
    with pytest.raises(InputError, match="c.jsonl:1: label 'maybe' is not one of"):
        snli_files(ann, bad)


@pytest.fixture
def offline_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    import evaluate

    return evaluate


def test_evaluate_modules_match_functions(offline_evaluate):
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    preds, refs = ["two", "Yes.", "cat"], [["2"] * 3 + ["3"] * 7, ["yes"] * 10, ["cat"] * 10]
    qts, ats = ["how many", "is", "what"], ["number", "yes/no", "other"]
    m = offline_evaluate.load(str(TASKS_DIR / "vqa" / "vqa_accuracy"))
    got = m.compute(predictions=preds, references=refs, question_types=qts, answer_types=ats)
    assert got == vqa_accuracy(preds, refs, qts, ats) and got["overall"] == 63.33  # (0.9 + 0 + 1) / 3
    got = m.compute(predictions=preds, references=refs, rule="legacy")
    assert got["overall"] == 96.67  # legacy normalises "Yes." to match the identical "yes" GTs
    m = offline_evaluate.load(str(TASKS_DIR / "vcr" / "vcr_accuracy"))
    assert m.compute(predictions=[[0, 1], [2, 2]], references=[[0, 1], [2, 0]]) == {"q2a": 100.0, "qa2r": 50.0, "q2ar": 50.0}
    m = offline_evaluate.load(str(TASKS_DIR / "snli_ve" / "snli_ve_accuracy"))
    assert m.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 1]) == {"accuracy": 75.0}
