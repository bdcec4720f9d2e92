"""The low-shot benchmark's targets, checked on a sweep's aggregate (`clip_td.app.sweep.aggregate`).

    lines = targets_markdown(agg)     # "" unless the sweep has `none` and `clip_td`

Each target is checked per task on its primary metric (VQA accuracy, SNLI-VE accuracy, VCR
Q->AR), mean over seeds:
  T1  clip_td - none > max(std) on val, at every fraction <= 25 %
  T2  clip_td - none >= the task's lowshot_target_gain on val, at the lowest fraction
  T3  clip_td > naive_kd on val, at every fraction <= 25 %
  T4  gain over none on val_shift >= gain on val, at every fraction
  T5  clip_td >= none - max(std) on val, at 100 %
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from tasks import find_task

LOW_SHOT_MAX = 0.25

Agg = Dict[Tuple[str, str, float, str, str], Dict[str, Any]]


def _cell(agg: Agg, task: str, method: str, frac: float, split: str) -> Dict[str, Any] | None:
    return agg.get((task, method, frac, split, find_task(task).primary))


def check_targets(agg: Agg) -> List[Dict[str, Any]]:
    """One row per (target, task, fraction): {"target", "task", "fraction", "value", "needed", "holds"}."""
    out: List[Dict[str, Any]] = []
    tasks = sorted({k[0] for k in agg if find_task(k[0]) is not None})
    for task in tasks:
        fracs = sorted({k[2] for k in agg if k[0] == task and k[1] == "clip_td"})
        for f in fracs:
            td, none, kd = (_cell(agg, task, m, f, "val") for m in ("clip_td", "none", "naive_kd"))
            if td is None or none is None:
                continue
            gain = td["mean"] - none["mean"]
            noise = max(td["std"], none["std"])
            if f <= LOW_SHOT_MAX:
                out.append(dict(target="T1", task=task, fraction=f, value=gain, needed=f"> {noise:.2f}",
                                holds=gain > noise))
                if kd is not None:
                    out.append(dict(target="T3", task=task, fraction=f, value=td["mean"] - kd["mean"],
                                    needed="> 0", holds=td["mean"] > kd["mean"]))
            if f == fracs[0]:
                need = find_task(task).lowshot_target_gain
                out.append(dict(target="T2", task=task, fraction=f, value=gain, needed=f">= {need:g}",
                                holds=gain >= need))
            td_s, none_s = _cell(agg, task, "clip_td", f, "val_shift"), _cell(agg, task, "none", f, "val_shift")
            if td_s is not None and none_s is not None:
                shift_gain = td_s["mean"] - none_s["mean"]
                out.append(dict(target="T4", task=task, fraction=f, value=shift_gain, needed=f">= {gain:.2f}",
                                holds=shift_gain >= gain))
            if f == 1.0:
                out.append(dict(target="T5", task=task, fraction=f, value=gain, needed=f">= {-noise:.2f}",
                                holds=gain >= -noise))
    order = {"T1": 0, "T2": 1, "T3": 2, "T4": 3, "T5": 4}
    return sorted(out, key=lambda r: (order[r["target"]], r["task"], r["fraction"]))


TARGET_TEXT = {
    "T1": "clip_td above none by more than the seeds' std (val, fractions <= 25 %)",
    "T2": "gain over none at the lowest fraction (val): +10 VQA / VCR Q->AR, +5 SNLI-VE",
    "T3": "clip_td above naive_kd (val, fractions <= 25 %)",
    "T4": "gain on val_shift at least the gain on val",
    "T5": "at 100 %, clip_td not below none by more than the std (val)",
}


def targets_markdown(agg: Agg) -> str:
    """A "Targets" section for summary.md ("" when the sweep has no `none` / `clip_td` cells)."""
    rows = check_targets(agg)
    if not rows:
        return ""
    lines = ["## Targets", "",
             "Primary metric per task (VQA accuracy, SNLI-VE accuracy, VCR Q->AR), means over seeds; "
             "value = the difference the target is about (points).", ""]
    for target, text in TARGET_TEXT.items():
        mine = [r for r in rows if r["target"] == target]
        if mine:
            lines.append(f"- **{target}** {text}: holds in {sum(r['holds'] for r in mine)} of {len(mine)}")
    lines += ["", "| target | task | fraction | value | needed | holds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['task']} | {r['fraction'] * 100:g}% | {r['value']:+.2f} | {r['needed']} | "
                     f"{'yes' if r['holds'] else 'no'} |")
    return "\n".join(lines) + "\n"
