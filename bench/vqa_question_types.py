"""Where a VQA method gains or loses: official accuracy per question type, method against method.

    python bench/vqa_question_types.py runs/sweep_benchmark_converged [--fraction 1.0]
                                       [--methods none clip_td] [--out FILE.json]
    python bench/vqa_question_types.py runs/sweep_benchmark --fraction 0.01 \
        --methods none clip_td 'clip_td[method.feature_gate=True]@runs/sweep_feature_gate'

Reads every finished VQA run of a sweep folder (runs/vqa/<method>/f<fraction>/s<seed>/; a method
named as results.csv labels a cell with extra grid keys, `clip_td[method.eta=0.0]`, reads those
runs instead, and `<method>@<folder>` reads it from another sweep folder), scores each
split's saved predictions with the official tool's per-question-type accuracy (the same scorer
as `clip-td evaluate vqa`), and prints, per split and question type, each method's mean +-
sample std over seeds (n per cell) and the difference to the first method. Writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import InputError, read_json, write_json_atomic  # noqa: E402


def per_type_scores(sweep: Path, methods: List[str], fraction: float) -> Dict[str, Any]:
    """{split: {question_type: {method: [score per seed]}}} and the seeds read per method."""
    from tasks.vqa.metrics import evaluate_files

    scores: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    seeds: Dict[str, List[str]] = {}
    for method in methods:
        runs = _runs(sweep, method, fraction)
        seeds[method] = [p.name for p in runs]
        for run in runs:
            files = read_json(run / "metrics.json").get("files", {})
            for split, f in files.items():
                try:
                    got = evaluate_files(f["questions"], f["annotations"], _predictions(run, f["predictions"]))
                except KeyError as e:
                    raise InputError(f"{run / 'metrics.json'}: files.{split} has no {e.args[0]!r}") from None
                for qtype, value in got["perQuestionType"].items():
                    scores.setdefault(split, {}).setdefault(qtype, {}).setdefault(method, []).append(value)
    return {"scores": scores, "seeds": seeds}


def _predictions(run: Path, recorded: str) -> str:
    """The predictions file metrics.json records (a path as the run saw it); when that path is gone
    (the sweep folder was moved or copied), the file of the same name in the run's `predictions/`."""
    moved = run / "predictions" / Path(recorded).name
    return recorded if Path(recorded).is_file() or not moved.is_file() else str(moved)


def _runs(sweep: Path, method: str, fraction: float, task: str = "vqa") -> List[Path]:
    """The finished run folders of one method: `name`, `name[key=value,...]` (a cell with extra grid
    keys, as results.csv labels it) and either one `@FOLDER` to read it from another sweep."""
    label, _, other = method.partition("@")
    root = Path(other) if other else sweep
    name, _, tag = label.partition("[")
    extra = [p for p in tag.rstrip("]").split(",") if p] if tag else []
    cell = root / "runs" / task / name / f"f{fraction:g}"
    runs = sorted(p.joinpath(*extra) for p in cell.glob("s*") if p.joinpath(*extra, "metrics.json").is_file())
    if not runs:
        where = "/".join(["s<seed>", *extra, "metrics.json"])
        raise InputError(f"{cell}: no finished run of {label!r} (expected {where})")
    return runs


def _cell(values: List[float]) -> str:
    """mean +- sample std (n); a single seed has no std, so none is printed."""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} (n={len(values)})"


def table(result: Dict[str, Any], methods: List[str]) -> str:
    base = methods[0]
    lines = []
    for split, by_type in result["scores"].items():
        lines += [f"### {split}", "", "| question type | " + " | ".join(methods) + " | "
                  + " | ".join(f"{m} - {base}" for m in methods[1:]) + " |",
                  "|---" * (2 * len(methods)) + "|"]
        for qtype in sorted(by_type):
            got = by_type[qtype]
            cells = [_cell(got[m]) if m in got else "-" for m in methods]
            diffs = [f"{statistics.mean(got[m]) - statistics.mean(got[base]):+.2f}" if m in got and base in got else "-"
                     for m in methods[1:]]
            lines.append(f"| {qtype} | " + " | ".join(cells + diffs) + " |")
        lines.append("")
    return "\n".join(lines)


def run_cli(doc: str, scores_fn, task: str, preamble=None) -> None:
    """The command line of the per-question-type benches: `scores_fn(sweep, methods, fraction)`
    scores a sweep folder's runs of `task`; `preamble(result)` prints lines before the table."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("sweep", help=f"a sweep output folder (holds runs/{task}/...)")
    ap.add_argument("--fraction", type=float, default=1.0, help="train.fraction of the cells to read")
    ap.add_argument("--methods", nargs="+", default=["none", "clip_td"], help="the first is the reference")
    ap.add_argument("--out", default=None,
                    help=f"JSON output (default: <sweep>/{task}_question_types_f<fraction>.json)")
    args = ap.parse_args()
    try:
        result = scores_fn(Path(args.sweep), args.methods, args.fraction)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if preamble is not None:
        preamble(result)
    print(table(result, args.methods))
    out = Path(args.out) if args.out else Path(args.sweep) / f"{task}_question_types_f{args.fraction:g}.json"
    write_json_atomic(out, {"sweep": str(args.sweep), "fraction": args.fraction, "methods": args.methods, **result})
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(__doc__, per_type_scores, "vqa")
