"""Would another trust-gate rule change the decisions of runs already made?

    python bench/gate_rule_decisions.py RUN_DIR_OR_GLOB [...] [--effect 0.05 0.1 0.15 0.2]
                                        [--out bench/results/gate_rule_decisions.json]

Every fine-tuning run records its trust gate in metrics.json (`teacher_trust`: the labelled rows
the teacher answered, its accuracy, the label prior's, the p-value and the decision; per trust
group too). From those figures alone this recomputes each decision under the balanced rule
(`method.trust_alpha_rule=balanced`) at each `--effect`, with `clip_td.lib.trust.balanced_critical`
as fine-tuning calls it, and under the fixed rule at `--alpha` (the p-value does not depend on the
rule, so a run made with either rule says what the other would have decided). A run whose
decisions are all unchanged would train exactly as it did (the gate's decision is the only thing
the rule reads), so only the runs listed as changed need a rerun.

Prints the changed decisions and a count per effect; writes JSON with every decision. Runs with no
`teacher_trust` (no answer-level term: `none`, `naive_kd`, eta = 0) are skipped; runs with
`trust_gate=off` are listed with `applied: false` (their decisions were recorded, not applied).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import write_json_atomic  # noqa: E402
from clip_td.lib.trust import balanced_critical  # noqa: E402


def metrics_files(patterns: List[str]) -> List[Path]:
    """Every metrics.json under each pattern (a run folder, a folder of runs or a glob), sorted."""
    found = set()
    for pattern in patterns:
        hits = glob.glob(pattern, recursive=True)
        if not hits:
            raise SystemExit(f"{pattern}: no such file or folder (expected a run folder, a folder of runs or a glob)")
        for hit in map(Path, hits):
            found.update([hit] if hit.name == "metrics.json" else hit.rglob("metrics.json"))
    return sorted(found)


def run_decisions(trust: Dict[str, Any], effects: List[float], alpha: float = 0.05) -> List[Dict[str, Any]]:
    """One record per gate test of a run's `teacher_trust` (the task-level one, or one per trust
    group): the recorded figures and decision, the fixed rule's at `alpha` (p < alpha) and the
    balanced rule's at each effect."""
    tests = trust.get("groups") or {"(task)": trust}
    out = []
    for name, d in sorted(tests.items()):
        n = int(d["rows"])
        k = round(float(d["teacher_accuracy"]) * n / 100.0)
        p0 = float(d["prior_accuracy"]) / 100.0
        rec = {"test": name, "rows": n, "teacher_right": k, "prior": round(p0, 6), "p_value": d["p_value"],
               "recorded": bool(d["trusted"]), "fixed": float(d["p_value"]) < alpha, "balanced": {}}
        for e in effects:
            c, a, _ = balanced_critical(n, p0, e)
            rec["balanced"][f"{e:g}"] = {"critical": c, "alpha": float(f"{a:.4g}"), "trusted": k >= c}
        out.append(rec)
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders, folders of runs or globs (quote them)")
    p.add_argument("--effect", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2],
                   help="the balanced rule's leads over the prior (method.trust_effect) to recompute at")
    p.add_argument("--alpha", type=float, default=0.05, help="the fixed rule's level (method.trust_alpha) recorded as `fixed`")
    p.add_argument("--out", default="bench/results/gate_rule_decisions.json")
    args = p.parse_args(argv)
    for e in args.effect:
        if not 0.0 < e <= 1.0:
            raise SystemExit(f"--effect: expected leads in (0, 1], got {e}")
    runs = []
    for f in metrics_files(args.runs):
        try:
            trust = json.loads(f.read_text()).get("teacher_trust")
        except json.JSONDecodeError as err:
            raise SystemExit(f"{f}: not valid JSON (line {err.lineno}): {err.msg}") from None
        if not trust or "rows" not in trust:
            continue
        runs.append({"run": str(f.parent), "gate": trust.get("gate"), "applied": trust.get("gate") != "off",
                     "rule": "balanced" if "critical" in trust else "fixed",
                     "decisions": run_decisions(trust, args.effect, args.alpha)})
    summary = {}
    print(f"{'effect':>6}  changed decisions  runs changed (of {len(runs)}, gate applied)")
    for e in args.effect:
        key = f"{e:g}"
        changed = [(r, d) for r in runs for d in r["decisions"] if d["balanced"][key]["trusted"] != d["recorded"]]
        changed_runs = sorted({r["run"] for r, _ in changed if r["applied"]})
        summary[key] = {"changed_decisions": len(changed), "changed_runs": changed_runs}
        print(f"{e:>6g}  {len(changed):>17}  {len(changed_runs)}")
        for r, d in changed:
            b = d["balanced"][key]
            print(f"        {r['run']}  [{d['test']}] {d['teacher_right']}/{d['rows']} right, prior {d['prior']:.3f}, "
                  f"p {d['p_value']:.3g}: {d['recorded']} -> {b['trusted']} (c {b['critical']}, alpha {b['alpha']:.3g})"
                  + ("" if r["applied"] else "  (gate off: not applied)"))
    result = {"effects": args.effect, "runs": runs, "summary": summary}
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
