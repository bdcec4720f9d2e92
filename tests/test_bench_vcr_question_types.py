import json
import subprocess
import sys
from pathlib import Path

import pytest

from clip_td.base.io import InputError
from tasks.vcr.metrics import evaluate_files_by_type, question_type

REPO = Path(__file__).resolve().parents[1]
# annot_id, question, (answer_label, rationale_label)
ROWS = [("a", ["What", "color", "is", [0], "?"], (0, 1)), ("b", ["What", "color", "is", [1], "?"], (2, 3)),
        ("c", ["Where", "is", [0], "relative", "to", [1], "?"], (1, 0)),
        ("d", [[0], "is", "near", "what", "?"], (3, 3))]
# per run: (answer, rationale) predicted for a, b, c, d
PRED = {("none", "s0"): [(0, 0), (2, 3), (1, 0), (0, 3)], ("none", "s1"): [(0, 1), (0, 3), (2, 0), (3, 3)],
        ("clip_td", "s0"): [(0, 1), (2, 3), (1, 1), (3, 2)]}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _annotations(tmp_path):
    return _write(tmp_path / "val.jsonl", [{"annot_id": i, "question": q, "answer_label": a, "rationale_label": r}
                                            for i, q, (a, r) in ROWS])


def test_question_type_is_the_first_two_words_with_references_written_obj():
    assert question_type(["What", "color", "is", [0], "?"]) == "what color"
    assert question_type([[0, 2], "is", "near"]) == "<obj> is"


def test_scores_per_question_type_by_hand(tmp_path):
    ann = _annotations(tmp_path)
    preds = _write(tmp_path / "p.jsonl", [{"annot_id": i, "answer": a, "rationale": r}
                                          for (i, _, _), (a, r) in zip(ROWS, PRED[("none", "s0")])])
    got = evaluate_files_by_type(ann, preds)
    # what color: a answer right, rationale wrong; b both right -> Q->A 100, QA->R 50, Q->AR 50
    assert got["what color"] == {"q2a": 100.0, "qa2r": 50.0, "q2ar": 50.0, "n": 2}
    assert got["where is"] == {"q2a": 100.0, "qa2r": 100.0, "q2ar": 100.0, "n": 1}
    assert got["<obj> is"] == {"q2a": 0.0, "qa2r": 100.0, "q2ar": 0.0, "n": 1}


def test_annotations_without_a_question_list_name_the_line(tmp_path):
    ann = _write(tmp_path / "val.jsonl", [{"annot_id": "a", "question": "What?", "answer_label": 0,
                                           "rationale_label": 0}])
    preds = _write(tmp_path / "p.jsonl", [{"annot_id": "a", "answer": 0, "rationale": 0}])
    with pytest.raises(InputError, match=r"val.jsonl:1: expected 'question' as a list"):
        evaluate_files_by_type(ann, preds)


def test_bench_script_tables_methods_over_seeds(tmp_path):
    ann = _annotations(tmp_path)
    for (method, seed), pred in PRED.items():
        run = tmp_path / "sweep" / "runs" / "vcr" / method / "f1" / seed
        (run / "predictions").mkdir(parents=True)
        p = _write(run / "predictions" / "vcr_val_predictions.jsonl",
                   [{"annot_id": i, "answer": a, "rationale": r} for (i, _, _), (a, r) in zip(ROWS, pred)])
        (run / "metrics.json").write_text(json.dumps({"task": "vcr", "files": {
            "val": {"annotations": str(ann), "predictions": str(p)}}}))
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "vcr_question_types.py"), str(tmp_path / "sweep"),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert got["seeds"] == {"none": ["s0", "s1"], "clip_td": ["s0"]}
    assert got["n"] == {"val": {"what color": 2, "where is": 1, "<obj> is": 1}}
    # what color QA->R: none s0 50 (b), s1 100; clip_td s0 100
    assert got["scores"]["val"]["what color QA->R"] == {"none": [50.0, 100.0], "clip_td": [100.0]}
    assert "| what color QA->R | 75.00 +- 35.36 (n=2) | 100.00 (n=1) | +25.00 |" in proc.stdout
    # where is Q->AR: none s0 both right, s1 answer wrong -> 100, 0; clip_td s0 rationale wrong -> 0
    assert "| where is Q->AR | 50.00 +- 70.71 (n=2) | 0.00 (n=1) | -50.00 |" in proc.stdout
