import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [(1, "what color is the", "red"), (2, "what color is the", "blue"),
             (3, "how many", "2"), (4, "how many", "3")]
# per run: which of questions 1-4 it answers right (every annotator gave the same answer: 100 or 0)
RIGHT = {("none", "s0"): {1, 3, 4}, ("none", "s1"): {3}, ("clip_td", "s0"): {1, 2}, ("clip_td", "s1"): {1, 3, 4}}


def _sweep(tmp_path):
    q = tmp_path / "q.json"
    a = tmp_path / "a.json"
    q.write_text(json.dumps({"questions": [{"question_id": i, "image_id": 0, "question": t} for i, t, _ in QUESTIONS]}))
    a.write_text(json.dumps({"annotations": [
        {"question_id": i, "image_id": 0, "question_type": t, "answer_type": "other", "multiple_choice_answer": ans,
         "answers": [{"answer": ans, "answer_id": k + 1} for k in range(10)]} for i, t, ans in QUESTIONS]}))
    for (method, seed), right in RIGHT.items():
        run = tmp_path / "sweep" / "runs" / "vqa" / method / "f1" / seed
        run.mkdir(parents=True)
        preds = run / "val.json"
        preds.write_text(json.dumps([{"question_id": i, "answer": ans if i in right else "no"}
                                     for i, _, ans in QUESTIONS]))
        files = {"val": {"questions": str(q), "annotations": str(a), "predictions": str(preds)}}
        (run / "metrics.json").write_text(json.dumps({"task": "vqa", "files": files}))
    tagged = tmp_path / "sweep" / "runs" / "vqa" / "none" / "f1" / "s0" / "method.eta=0"  # a tagged cell: not read
    tagged.mkdir()
    (tagged / "metrics.json").write_text("{}")
    return tmp_path / "sweep"


def test_scores_per_question_type_and_the_difference(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from vqa_question_types import per_type_scores, table

    sweep = _sweep(tmp_path)
    got = per_type_scores(sweep, ["none", "clip_td"], 1.0)
    assert got["seeds"] == {"none": ["s0", "s1"], "clip_td": ["s0", "s1"]}
    val = got["scores"]["val"]
    assert val["what color is the"] == {"none": [50.0, 0.0], "clip_td": [100.0, 50.0]}
    assert val["how many"] == {"none": [100.0, 50.0], "clip_td": [0.0, 100.0]}
    text = table(got, ["none", "clip_td"])
    assert "| how many | 75.00 +- 35.36 (n=2) | 50.00 +- 70.71 (n=2) | -25.00 |" in text
    assert "| what color is the | 25.00 +- 35.36 (n=2) | 75.00 +- 35.36 (n=2) | +50.00 |" in text


def test_a_moved_sweep_reads_each_runs_own_predictions(tmp_path):
    """metrics.json records the predictions' path as the run saw it; after the sweep folder moves,
    the file of the same name in the run's predictions/ is read instead."""
    sys.path.insert(0, str(REPO / "bench"))
    from vqa_question_types import per_type_scores

    sweep = _sweep(tmp_path)
    for run in (sweep / "runs" / "vqa").glob("*/f1/s*"):
        (run / "predictions").mkdir()
        (run / "val.json").rename(run / "predictions" / "val.json")
    moved = sweep.rename(tmp_path / "moved")
    got = per_type_scores(moved, ["none", "clip_td"], 1.0)
    assert got["scores"]["val"]["how many"] == {"none": [100.0, 50.0], "clip_td": [0.0, 100.0]}


def test_cli_writes_json_and_names_a_missing_cell(tmp_path):
    sweep = _sweep(tmp_path)
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "vqa_question_types.py"), str(sweep), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["scores"]["val"]["how many"]["none"] == [100.0, 50.0]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "vqa_question_types.py"), str(sweep),
                           "--methods", "none", "naive_kd"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {sweep / 'runs' / 'vqa' / 'naive_kd' / 'f1'}: no finished run " \
                                  f"of 'naive_kd' (expected s<seed>/metrics.json)"


@pytest.fixture(autouse=True)
def _drop_bench_path():
    yield
    if str(REPO / "bench") in sys.path:
        sys.path.remove(str(REPO / "bench"))


def test_a_tagged_cell_is_read_by_its_label_and_from_another_folder(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from vqa_question_types import per_type_scores

    sweep = _sweep(tmp_path)
    # the variant: clip_td's seed-0 run, stored as a tagged cell of another sweep folder
    other = tmp_path / "other"
    src = sweep / "runs" / "vqa" / "clip_td" / "f1" / "s0"
    run = other / "runs" / "vqa" / "clip_td" / "f1" / "s0" / "method.feature_gate=True"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text((src / "metrics.json").read_text())
    label = f"clip_td[method.feature_gate=True]@{other}"
    got = per_type_scores(sweep, ["none", label], 1.0)
    assert got["seeds"][label] == ["method.feature_gate=True"]  # one seed: s0's tagged run
    assert got["scores"]["val"]["what color is the"][label] == [100.0]  # clip_td s0 answers 1 and 2
    with pytest.raises(Exception, match=r"no finished run of 'clip_td\[method.eta=0\]'"):
        per_type_scores(sweep, ["clip_td[method.eta=0]"], 1.0)


def test_a_cell_prints_mean_std_and_n_and_a_single_seed_without_std():
    sys.path.insert(0, str(REPO / "bench"))
    from vqa_question_types import _cell

    assert _cell([50.0, 52.0, 54.0]) == "52.00 +- 2.00 (n=3)"
    assert _cell([69.65]) == "69.65 (n=1)"
