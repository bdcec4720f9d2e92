"""The low-shot benchmark's targets, checked on a sweep's aggregate (`clip_td.app.sweep.aggregate`).

    lines = targets_markdown(agg)     # "" unless the sweep has `none` and `clip_td`

Each target is checked per task on its primary metric (VQA accuracy, SNLI-VE accuracy, VCR
Q->AR), mean over seeds, for `clip_td` and for every clip_td row with extra grid keys (a method
label `clip_td[...]`, e.g. the label-free row), each against the same `none` and `naive_kd` cells:
  T1  clip_td - none > max(std) on val, at every fraction <= 25 %
  T2  clip_td - none >= the task's lowshot_target_gain on val, at the lowest fraction
  T3  clip_td > naive_kd on val, at every fraction <= 25 %
  T4  gain over none on val_shift >= gain on val, at every fraction
  T5  clip_td >= none - max(std) on val, at 100 %
With the grid's asked seeds (`GridStatus.seeds`), a check that reads a cell with fewer seeds than
the grid asks is marked provisional (`short`; "yes †" / "no †" in the markdown).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from tasks import find_task

LOW_SHOT_MAX = 0.25

Agg = Dict[Tuple[str, str, float, str, str], Dict[str, Any]]
Asked = Dict[Tuple[str, str, float], List[int]]  # (task, method, fraction) -> the seeds the grid asks
# Means of metrics kept to 0.1 differ by float rounding (1e-15) where they are equal: a difference
# within TIE counts as a tie (">=" holds, ">" does not)
TIE = 1e-9
SHORT = "\u2020"  # marks a cell, or a check reading one, with fewer seeds than the grid asks


def _above(a: float, b: float) -> bool:
    """a > b, a tie (within TIE) not counting."""
    return a - b > TIE


def _at_least(a: float, b: float) -> bool:
    """a >= b, a tie (within TIE) counting."""
    return a - b >= -TIE


def seeds_short(entry: Dict[str, Any], asked: Optional[List[int]]) -> int:
    """How many distinct seeds the grid asks (`asked`) for a cell with n = entry["n"] finished, or 0
    when the cell has them all (or the grid asks none)."""
    wanted = len(set(asked)) if asked else 0
    return wanted if entry["n"] < wanted else 0


def _cell(agg: Agg, task: str, method: str, frac: float, split: str) -> Dict[str, Any] | None:
    return agg.get((task, method, frac, split, find_task(task).primary))


def judged_methods(agg: Agg) -> List[str]:
    """The method labels the targets judge: `clip_td` first, then its rows with extra grid keys
    (`clip_td[...]`) in sorted order, then the label-free preset and its rows
    (`clip_td_label_free`, `clip_td_label_free[...]`). The ablation presets (clip_td_nosel, ...)
    are not judged."""
    labels = {k[1] for k in agg}
    out = []
    for name in ("clip_td", "clip_td_label_free"):
        out += [m for m in [name] + sorted(x for x in labels if x.startswith(name + "[")) if m in labels]
    return out


def check_targets(agg: Agg, asked: Optional[Asked] = None) -> List[Dict[str, Any]]:
    """One row per (method, target, task, fraction): {"method", "target", "task", "fraction",
    "value", "needed", "holds", "short"}, for each label of `judged_methods`; `short` is True where a
    cell the check reads has fewer seeds than `asked` lists for it."""
    out: List[Dict[str, Any]] = []
    tasks = sorted({k[0] for k in agg if find_task(k[0]) is not None})
    methods = judged_methods(agg)
    for method in methods:
        out += [dict(method=method, **r, short=_short(agg, asked, task, method, r["target"], r["fraction"]))
                for task in tasks for r in _check_task(agg, task, method)]
    order = {"T1": 0, "T2": 1, "T3": 2, "T4": 3, "T5": 4}
    rank = {m: i for i, m in enumerate(methods)}
    return sorted(out, key=lambda r: (rank[r["method"]], order[r["target"]], r["task"], r["fraction"]))


def _short(agg: Agg, asked: Optional[Asked], task: str, method: str, target: str, frac: float) -> bool:
    """Whether a cell the check reads (the row, `none`, and `naive_kd` for T3) has fewer seeds than
    the grid asks for it."""
    if not asked:
        return False
    cells = ((m, _cell(agg, task, m, frac, "val")) for m in (method, "naive_kd" if target == "T3" else "none"))
    return any(cell is not None and seeds_short(cell, asked.get((task, m, frac))) for m, cell in cells)


def _check_task(agg: Agg, task: str, method: str) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    fracs = sorted({k[2] for k in agg if k[0] == task and k[1] == method})
    lowest = min((k[2] for k in agg if k[0] == task and k[1] == "none"), default=None)  # T2's fraction
    for f in fracs:
        td, none, kd = (_cell(agg, task, m, f, "val") for m in (method, "none", "naive_kd"))
        if td is None or none is None:
            continue
        gain = td["mean"] - none["mean"]
        noise = max(td["std"], none["std"])
        if f <= LOW_SHOT_MAX:
            out.append(dict(target="T1", task=task, fraction=f, value=gain, needed=f"> {noise:.2f}",
                            holds=_above(gain, noise)))
            if kd is not None:
                out.append(dict(target="T3", task=task, fraction=f, value=td["mean"] - kd["mean"],
                                needed="> 0", holds=_above(td["mean"], kd["mean"])))
        if f == lowest:
            need = find_task(task).lowshot_target_gain
            out.append(dict(target="T2", task=task, fraction=f, value=gain, needed=f">= {need:g}",
                            holds=_at_least(gain, need)))
        td_s, none_s = _cell(agg, task, method, f, "val_shift"), _cell(agg, task, "none", f, "val_shift")
        if td_s is not None and none_s is not None:
            shift_gain = td_s["mean"] - none_s["mean"]
            out.append(dict(target="T4", task=task, fraction=f, value=shift_gain, needed=f">= {gain:.2f}",
                            holds=_at_least(shift_gain, gain)))
        if f == 1.0:
            out.append(dict(target="T5", task=task, fraction=f, value=gain, needed=f">= {-noise:.2f}",
                            holds=_at_least(gain, -noise)))
    return out


TARGET_TEXT = {
    "T1": "clip_td above none by more than the seeds' std (val, fractions <= 25 %)",
    "T2": "gain over none at the lowest fraction (val): +10 VQA / VCR Q->AR, +5 SNLI-VE",
    "T3": "clip_td above naive_kd (val, fractions <= 25 %)",
    "T4": "gain on val_shift at least the gain on val",
    "T5": "at 100 %, clip_td not below none by more than the std (val)",
}


def _count(rows: List[Dict[str, Any]], target: str, method: str) -> str:
    """"k of n" for one method's checks of one target ("" when it has none), with "(s †)" when s of
    them read cells with fewer seeds than the grid asks."""
    mine = [r for r in rows if r["target"] == target and r["method"] == method]
    short = sum(r["short"] for r in mine)
    return (f"{sum(r['holds'] for r in mine)} of {len(mine)}" + (f" ({short} {SHORT})" if short else "")) if mine else ""


def targets_markdown(agg: Agg, asked: Optional[Asked] = None) -> str:
    """A "Targets" section for summary.md ("" when the sweep has no `none` / `clip_td` cells): one
    line per target with `clip_td`'s count; with other judged labels (`clip_td[...]`) a table of
    every label's counts, one row each; then every check in a table. With `asked`, checks on cells
    with fewer seeds than the grid asks are marked and counted apart."""
    rows = check_targets(agg, asked)
    if not rows:
        return ""
    lines = ["## Targets", "",
             "Primary metric per task (VQA accuracy, SNLI-VE accuracy, VCR Q->AR), means over seeds; "
             "value = the difference the target is about (points). Each clip_td row (`clip_td`, "
             "`clip_td[...]` with extra grid keys, and the label-free preset `clip_td_label_free` and its "
             "rows) is judged against the same `none` and `naive_kd` cells.", ""]
    methods = judged_methods(agg)
    counts = {m: {t: _count(rows, t, m) for t in TARGET_TEXT} for m in methods}
    for target, text in TARGET_TEXT.items():
        if counts.get("clip_td", {}).get(target):
            lines.append(f"- **{target}** {text}: holds in {counts['clip_td'][target]}")
        elif any(c[target] for c in counts.values()):
            lines.append(f"- **{target}** {text}")
    if methods != ["clip_td"]:
        lines += ["", "Targets held, per judged row (k of n checks; - : no cell to judge):", "",
                  "| method | " + " | ".join(TARGET_TEXT) + " |", "|---|" + "---|" * len(TARGET_TEXT)]
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(counts[method][t] or "-" for t in TARGET_TEXT) + " |")
    lines += ["", "| method | target | task | fraction | value | needed | holds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['target']} | {r['task']} | {r['fraction'] * 100:g}% | {r['value']:+.2f} | "
                     f"{r['needed']} | {'yes' if r['holds'] else 'no'}{' ' + SHORT if r['short'] else ''} |")
    if any(r["short"] for r in rows):
        lines += ["", f"{SHORT} Judged on a cell with fewer seeds than the grid asks (provisional; \"(s {SHORT})\": s of "
                  "the checks counted are such)."]
    return "\n".join(lines) + "\n"
