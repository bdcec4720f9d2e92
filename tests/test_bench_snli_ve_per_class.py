"""bench/snli_ve_per_class.py: per-class recall of SNLI-VE runs, checked on hand-made predictions."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLD = ["entailment", "entailment", "neutral", "neutral", "contradiction", "contradiction"]


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(folder, val_pred, shift_pred, task="snli_ve"):
    folder.mkdir(parents=True)
    files = {}
    for split, pred in (("val", val_pred), ("val_shift", shift_pred)):
        ann = _lines(folder / f"{split}_ann.jsonl", [{"pairID": f"p{i}", "gold_label": g} for i, g in enumerate(GOLD)])
        prd = _lines(folder / f"{split}_pred.jsonl", [{"pairID": f"p{i}", "label": lab} for i, lab in enumerate(pred)])
        files[split] = {"predictions": prd, "annotations": ann}
    (folder / "metrics.json").write_text(json.dumps({"task": task, "seed": 0, "files": files}))


def _bench(*args):
    return subprocess.run([sys.executable, str(REPO / "bench" / "snli_ve_per_class.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_recall_per_class_and_the_group_mean(tmp_path):
    right = GOLD
    # run a: val all right; val_shift says neutral for everything
    _run(tmp_path / "rows" / "a", right, ["neutral"] * 6)
    # run b: val misses one entailment (as contradiction); val_shift swaps entailment and contradiction
    _run(tmp_path / "rows" / "b", ["entailment", "contradiction", "neutral", "neutral", "contradiction", "contradiction"],
         ["contradiction", "contradiction", "neutral", "neutral", "entailment", "entailment"])
    _run(tmp_path / "rows" / "vqa", right, right, task="vqa")  # another task: skipped
    out = tmp_path / "out.json"
    proc = _bench(f"row={tmp_path / 'rows'}", "--out", out)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(json.loads(out.read_text())["groups"]["row"], key=lambda r: r["run"])
    assert len(runs) == 2
    a, b = runs
    assert a["val"]["recall"] == {"entailment": 100.0, "neutral": 100.0, "contradiction": 100.0}
    assert a["val_shift"]["recall"] == {"entailment": 0.0, "neutral": 100.0, "contradiction": 0.0}
    assert a["val_shift"]["predicted_share"]["neutral"] == 100.0 and a["val_shift"]["accuracy"] == 100.0 / 3
    assert b["val"]["recall"] == {"entailment": 50.0, "neutral": 100.0, "contradiction": 100.0}
    assert b["val"]["accuracy"] == 500.0 / 6 and b["val"]["predicted_share"]["contradiction"] == 50.0
    # the table: entailment recall over the two runs on val is 100 and 50: mean 75.0, sample std 35.4
    assert "| row | val | 2 | 91.7 +- 11.8 | 75.0 +- 35.4 | 100.0 +- 0.0 | 100.0 +- 0.0 | 33.3 +- 0.0 |" in proc.stdout


def test_missing_prediction_and_bad_spec_are_named(tmp_path):
    _run(tmp_path / "r", GOLD[:5], GOLD)  # val predicts 5 of 6 pairs
    proc = _bench(f"row={tmp_path / 'r'}", "--out", tmp_path / "o.json")
    assert proc.returncode != 0 and "no prediction for 1 pair(s)" in proc.stderr and "'p5'" in proc.stderr
    assert not (tmp_path / "o.json").exists()
    proc = _bench(str(tmp_path / "r"))
    assert proc.returncode != 0 and "expected NAME=RUNS" in proc.stderr
    proc = _bench(f"row={tmp_path / 'nothing'}")
    assert proc.returncode != 0 and "no such file or folder" in proc.stderr
