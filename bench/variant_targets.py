"""The benchmark's targets with a variant's cells in place of `clip_td`.

    python bench/variant_targets.py runs/sweep_benchmark runs/sweep_feature_gate
                                    [--variant 'clip_td[method.feature_gate=True]'] [--out FILE.json]

BASE is the benchmark's sweep folder (its `none`, `naive_kd` and `clip_td` cells); VARIANT a sweep
folder holding one method row of its own (a method with extra grid keys, e.g. `clip_td` with
`method.feature_gate=true`, over some or all of the benchmark's tasks and fractions). The targets
T1-T5 (the same check as summary.md) are computed twice, once with BASE's `clip_td` and once with
the variant in its place, on the cells the variant has. Prints, per cell, `none`, `clip_td` and the
variant (val / val_shift, mean +- sample std, n), the two target counts and each arm's mean gain
over `none` across those cells (points, per split); writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.app.benchmark_targets import TARGET_TEXT  # noqa: E402
from clip_td.base.io import InputError, write_json_atomic  # noqa: E402

TARGETS = tuple(TARGET_TEXT)  # T1 .. T5, in summary.md's order


def compare(base_rows: Sequence[Dict[str, Any]], variant_rows: Sequence[Dict[str, Any]],
            variant: Optional[str] = None) -> Dict[str, Any]:
    """results.csv rows of BASE and VARIANT -> {"variant", "cells", "targets": {"clip_td", "variant"}}.

    Only the (task, fraction) cells the variant has are judged, for both arms."""
    from clip_td.app.benchmark_targets import check_targets
    from clip_td.app.sweep import aggregate, primary_metric

    labels = sorted({r["method"] for r in variant_rows})
    if variant is None:
        if len(labels) != 1:
            raise InputError(f"the variant folder holds {len(labels)} method rows ({', '.join(labels) or 'none'}); "
                             f"name one with --variant")
        variant = labels[0]
    if variant not in labels:
        raise InputError(f"--variant {variant!r}: not in the variant folder (it holds {', '.join(labels) or 'nothing'})")
    cells = sorted({(r["task"], r["train_fraction"]) for r in variant_rows if r["method"] == variant})
    keep = set(cells)
    base = [r for r in base_rows if (r["task"], r["train_fraction"]) in keep and "[" not in r["method"]]
    mine = [{**r, "method": "clip_td"} for r in variant_rows if r["method"] == variant]
    with_base = aggregate(base)
    with_variant = aggregate([r for r in base if r["method"] != "clip_td"] + mine)
    table = []
    for task, frac in cells:
        metric = primary_metric(task)
        row = {"task": task, "fraction": frac, "metric": metric}
        for split in ("val", "val_shift"):
            for name, agg, method in (("none", with_base, "none"), ("clip_td", with_base, "clip_td"),
                                      ("variant", with_variant, "clip_td")):
                got = agg.get((task, method, frac, split, metric))
                row[f"{name}_{split}"] = None if got is None else {k: got[k] for k in ("mean", "std", "n")}
        table.append(row)
    counts = {}
    for name, agg in (("clip_td", with_base), ("variant", with_variant)):
        checks = check_targets(agg)
        counts[name] = {t: [sum(r["holds"] for r in checks if r["target"] == t),
                            sum(1 for r in checks if r["target"] == t)] for t in TARGETS}
    gains = {}
    for name in ("clip_td", "variant"):
        gains[name] = {}
        for split in ("val", "val_shift"):
            diffs = [r[f"{name}_{split}"]["mean"] - r[f"none_{split}"]["mean"] for r in table
                     if r[f"{name}_{split}"] is not None and r[f"none_{split}"] is not None]
            gains[name][split] = sum(diffs) / len(diffs) if diffs else None
    return {"variant": variant, "cells": table, "targets": counts, "mean_gain": gains}


def _fmt(cell: Optional[Dict[str, Any]]) -> str:
    if cell is None:
        return "-"
    return f"{cell['mean']:.2f} +- {cell['std']:.2f} (n={cell['n']})"


def markdown(result: Dict[str, Any]) -> str:
    lines = [f"variant: `{result['variant']}`", "",
             "| task, fraction | none | clip_td | variant |", "|---|---|---|---|"]
    for r in result["cells"]:
        cells = [f"{_fmt(r[f'{m}_val'])} / {_fmt(r[f'{m}_val_shift'])}" for m in ("none", "clip_td", "variant")]
        lines.append(f"| {r['task']} {r['fraction'] * 100:g} % | " + " | ".join(cells) + " |")
    lines += ["", "| target | clip_td | variant |", "|---|---|---|"]
    for t in TARGETS:
        a, b = result["targets"]["clip_td"][t], result["targets"]["variant"][t]
        lines.append(f"| {t} | {a[0]} of {a[1]} | {b[0]} of {b[1]} |")
    for split in ("val", "val_shift"):
        a, b = result["mean_gain"]["clip_td"][split], result["mean_gain"]["variant"][split]
        if a is not None and b is not None:
            lines.append(f"| mean gain over none, {split} | {a:+.2f} | {b:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the benchmark's sweep folder (none / naive_kd / clip_td cells)")
    ap.add_argument("variant_dir", help="a sweep folder with the variant's cells")
    ap.add_argument("--variant", default=None, help="the variant's method label as in results.csv (default: the "
                                                    "folder's only one)")
    ap.add_argument("--out", default=None, help="JSON output (default: <variant_dir>/variant_targets.json)")
    args = ap.parse_args(argv)
    from clip_td.app.sweep import collect_rows

    try:
        for d in (args.base, args.variant_dir):
            if not (Path(d) / "runs").is_dir():
                raise InputError(f"{d}: not a sweep folder (expected {Path(d) / 'runs'}/)")
        result = compare(collect_rows(Path(args.base)), collect_rows(Path(args.variant_dir)), args.variant)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(result))
    out = Path(args.out) if args.out else Path(args.variant_dir) / "variant_targets.json"
    write_json_atomic(out, {"base": str(args.base), "variant_dir": str(args.variant_dir), **result})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
