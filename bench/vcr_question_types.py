"""Where a VCR method gains or loses: Q->A, QA->R and Q->AR per question type, method against method.

    python bench/vcr_question_types.py runs/sweep_budget [--fraction 1.0] [--methods none clip_td]
                                       [--out FILE.json]

Reads every finished VCR run of a sweep folder (runs/vcr/<method>/f<fraction>/s<seed>/; the method
names follow bench/vqa_question_types.py: `name[key=value,...]` for a cell with extra grid keys,
`name@FOLDER` for another sweep folder), scores each split's saved predictions per question type
(the question's first two words: the synthetic world's "what color" items ask the colour of an
object, its "where is" items where one object is relative to another; real VCR's types are "why
is", "what is", ...), and prints, per split, type and score, each method's mean +- sample std over
seeds (n per cell) and the difference to the first method. Writes JSON.

On the synthetic world the per-type table tells which part of VCR a student reads: every
rationale of a "what color" item repeats the right colour and differs only in where the object
is (the 3x3 cell of its centre), so QA->R there is chance (25 %) for a student that does not read
position, whatever its Q->A.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_td.base.io import InputError, read_json  # noqa: E402
from vqa_question_types import _predictions, _runs, run_cli  # noqa: E402

SCORES = (("q2a", "Q->A"), ("qa2r", "QA->R"), ("q2ar", "Q->AR"))


def per_type_scores(sweep: Path, methods: List[str], fraction: float) -> Dict[str, Any]:
    """{"scores": {split: {"<type> <score>": {method: [per seed]}}}, "n": {split: {type: rows}},
    "seeds": {method: [seed folders]}}."""
    from tasks.vcr.metrics import evaluate_files_by_type

    scores: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    rows: Dict[str, Dict[str, int]] = {}
    seeds: Dict[str, List[str]] = {}
    for method in methods:
        runs = _runs(sweep, method, fraction, task="vcr")
        seeds[method] = [p.name for p in runs]
        for run in runs:
            for split, f in read_json(run / "metrics.json").get("files", {}).items():
                try:
                    got = evaluate_files_by_type(f["annotations"], _predictions(run, f["predictions"]))
                except KeyError as e:
                    raise InputError(f"{run / 'metrics.json'}: files.{split} has no {e.args[0]!r}") from None
                for qtype, values in got.items():
                    rows.setdefault(split, {})[qtype] = int(values["n"])
                    for key, name in SCORES:
                        scores.setdefault(split, {}).setdefault(f"{qtype} {name}", {}).setdefault(method, []).append(
                            values[key])
    return {"scores": scores, "n": rows, "seeds": seeds}


def _row_counts(result: Dict[str, Any]) -> None:
    for split, by_type in result["n"].items():
        print(f"{split}: " + ", ".join(f"{t} {n} rows" for t, n in sorted(by_type.items())))


if __name__ == "__main__":
    run_cli(__doc__, per_type_scores, "vcr", preamble=_row_counts)
