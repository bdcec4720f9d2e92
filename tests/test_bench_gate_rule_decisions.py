"""bench/gate_rule_decisions.py: past runs' recorded gate figures, decided again under the balanced rule."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(folder, trust):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"val": {"accuracy": 50.0}, **({"teacher_trust": trust} if trust else {})}))


def test_it_lists_exactly_the_decisions_the_balanced_rule_changes(tmp_path):
    # SNLI-VE-like: 24 of 40 right against a prior of 50 %: refused at 0.05 (p 0.134); balanced at
    # d = 0.1 needs 23 (passes), at d = 0.2 needs 25 (refused, as recorded)
    _run(tmp_path / "runs" / "snli" / "s0", {"rows": 40, "teacher_accuracy": 60.0, "prior_accuracy": 50.0,
                                              "p_value": 0.134094, "alpha": 0.05, "trusted": False, "gate": "group"})
    # per group: colour 9 of 10 right against 20 % (passes either way); count 1 of 8 against 50 % (refused
    # either way)
    _run(tmp_path / "runs" / "vqa" / "s0", {
        "rows": 18, "teacher_accuracy": 55.5556, "prior_accuracy": 33.3333, "p_value": 0.04, "alpha": 0.05,
        "trusted": True, "gate": "group",
        "groups": {"colour": {"rows": 10, "teacher_accuracy": 90.0, "prior_accuracy": 20.0, "p_value": 4.2e-6,
                              "trusted": True},
                   "count": {"rows": 8, "teacher_accuracy": 12.5, "prior_accuracy": 50.0, "p_value": 0.996,
                             "trusted": False}}})
    _run(tmp_path / "runs" / "none" / "s0", None)  # no answer-level term: skipped
    out = tmp_path / "decisions.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gate_rule_decisions.py"), str(tmp_path / "runs"),
                           "--effect", "0.1", "0.2", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 2
    snli = next(r for r in result["runs"] if r["run"].endswith("snli/s0"))
    (d,) = snli["decisions"]
    assert (d["test"], d["rows"], d["teacher_right"], d["recorded"], d["fixed"]) == ("(task)", 40, 24, False, False)
    assert d["balanced"]["0.1"]["critical"] == 23 and d["balanced"]["0.1"]["trusted"] is True
    assert d["balanced"]["0.2"]["critical"] == 25 and d["balanced"]["0.2"]["trusted"] is False
    vqa = next(r for r in result["runs"] if r["run"].endswith("vqa/s0"))
    assert [(g["test"], g["teacher_right"], g["fixed"]) for g in vqa["decisions"]] == [("colour", 9, True),
                                                                                       ("count", 1, False)]
    assert result["summary"]["0.1"] == {"changed_decisions": 1, "changed_runs": [snli["run"]]}
    assert result["summary"]["0.2"] == {"changed_decisions": 0, "changed_runs": []}
    assert "True" not in proc.stdout.split("0.2", 1)[1]  # nothing listed under d = 0.2


def test_a_missing_folder_is_named(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gate_rule_decisions.py"), str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and f"{tmp_path / 'nope'}: no such file or folder" in proc.stderr
