"""SNLI-VE per-class recall of finished runs: where a row's accuracy is won or lost, by gold label.

    python bench/snli_ve_per_class.py NAME=RUNS [NAME=RUNS ...] [--out bench/results/snli_ve_per_class.json]

Each NAME=RUNS is a label for the table and a run folder, a folder of runs or a glob (quote it);
every SNLI-VE metrics.json under it counts as one run (other tasks' runs are skipped). For each run
and split (val, val_shift) it reads the predictions and the annotations that metrics.json names
(`files.<split>`), and computes the recall of each gold label (the share of its rows predicted as
that label) and the share of all rows predicted as each label. Prints mean +- sample std over each
group's runs (n per row); writes every run's figures to JSON.

The 3-way accuracy is the class-size-weighted mean of the recalls, so a gain or a loss between two
rows can be read off by class: for instance a row that gains under the style shift by keeping
`neutral` recognisable, or one that loses in-domain on `entailment`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_td.app.sweep import mean_std  # noqa: E402
from clip_td.base.io import InputError, read_json, write_json_atomic  # noqa: E402
from gate_rule_decisions import metrics_files  # noqa: E402
from tasks.snli_ve.metrics import LABELS, accuracy, labels_by_id  # noqa: E402

TASK = "snli_ve"  # the one task whose runs this reads (its labels: tasks.snli_ve.metrics.LABELS)
SPLITS = ("val", "val_shift")


def split_figures(predictions: Path, annotations: Path) -> Dict[str, Any]:
    """Recall of each gold label and the share of rows predicted as each label, in percent."""
    gold = labels_by_id(annotations, "pairID", "gold_label")
    pred = labels_by_id(predictions, "pairID", "label")
    missing = sorted(set(gold) - set(pred))
    if missing:
        raise SystemExit(f"{predictions}: no prediction for {len(missing)} pair(s) of {annotations}, "
                         f"first {missing[0]!r}")
    recall, share = {}, {}
    for label in LABELS:
        rows = [p for p in gold if gold[p] == label]
        recall[label] = 100.0 * sum(pred[p] == label for p in rows) / len(rows) if rows else None
        share[label] = 100.0 * sum(pred[p] == label for p in gold) / len(gold)
    return {"rows": len(gold), "accuracy": accuracy([pred[p] for p in gold], list(gold.values())),
            "recall": recall, "predicted_share": share}


def run_figures(metrics_path: Path) -> Dict[str, Any] | None:
    """Both splits' figures of one run, or None when the run is not an SNLI-VE run."""
    m = read_json(metrics_path)
    if m.get("task") != TASK:
        return None
    files = m.get("files") or {}
    out = {"run": str(metrics_path.parent), "seed": m.get("seed")}
    for split in SPLITS:
        if split not in files:
            raise SystemExit(f"{metrics_path}: no files.{split} (expected the predictions and annotations it scored)")
        out[split] = split_figures(Path(files[split]["predictions"]), Path(files[split]["annotations"]))
    return out


def _mean_std(values: List[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f}" + (f" +- {std:.1f}" if len(values) > 1 else "")


def table(groups: Dict[str, List[Dict[str, Any]]]) -> str:
    """Markdown: one line per group and split, mean +- std over its runs."""
    head = ["row", "split", "n", "accuracy"] + [f"{label} recall" for label in LABELS] + ["predicted neutral"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in groups.items():
        for split in SPLITS:
            cells = [name, split, str(len(runs)), _mean_std([r[split]["accuracy"] for r in runs])]
            cells += [_mean_std([r[split]["recall"][label] for r in runs if r[split]["recall"][label] is not None])
                      for label in LABELS]
            cells.append(_mean_std([r[split]["predicted_share"]["neutral"] for r in runs]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("groups", nargs="+", metavar="NAME=RUNS",
                   help="a label and a run folder, a folder of runs or a glob (quote it)")
    p.add_argument("--out", default="bench/results/snli_ve_per_class.json")
    args = p.parse_args(argv)
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for spec in args.groups:
        name, sep, pattern = spec.partition("=")
        if not sep or not name or not pattern:
            raise SystemExit(f"{spec!r}: expected NAME=RUNS (a label, '=', then a run folder or a glob)")
        try:
            runs = [f for f in map(run_figures, metrics_files([pattern])) if f is not None]
        except InputError as err:  # a missing or malformed file: its name and line, no traceback
            raise SystemExit(str(err)) from None
        if not runs:
            raise SystemExit(f"{spec!r}: no finished SNLI-VE run (metrics.json with task snli_ve) under {pattern}")
        groups[name] = runs
    print(table(groups))
    write_json_atomic(args.out, {"labels": list(LABELS), "groups": groups})
    print(f"wrote {args.out}")
    return groups


if __name__ == "__main__":
    main()
