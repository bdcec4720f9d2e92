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

Assembled rows: a key that one task alone reads (`Task.method_keys`: VQA's answer sets, SNLI-VE's
contrast pair, VCR's rationales) cannot be set on a sweep over every task (VCR's label-free
rationales are refused elsewhere), so one recipe runs under a different label per task. Rows whose
labels agree on every other key are joined, per task, into one judged row
`clip_td[<every key>] (assembled)` whose cells are those of the source labels (`assembled_rows`).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from tasks import find_task

LOW_SHOT_MAX = 0.25

Agg = Dict[Tuple[str, str, float, str, str], Dict[str, Any]]
Asked = Dict[Tuple[str, str, float], List[int]]  # (task, method, fraction) -> the seeds the grid asks
# Means of metrics kept to 0.1 differ by float rounding (1e-15) where they are equal: a difference
# within TIE counts as a tie (">=" holds, ">" does not)
TIE = 1e-9
SHORT = "\u2020"  # marks a cell, or a check reading one, with fewer seeds than the grid asks
ASSEMBLED = " (assembled)"  # suffix of a row joined across tasks from labels that differ only in task-read keys


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
        out += [m for m in [name] + sorted(x for x in labels if x.startswith(name + "[") and not x.endswith(ASSEMBLED))
                if m in labels]
    return out + sorted(x for x in labels if x.endswith(ASSEMBLED))


def split_label(label: str) -> Tuple[str, Dict[str, str]]:
    """`clip_td[method.a=1,teacher.model=recipe:x]` -> ("clip_td", {"method.a": "1", "teacher.model": "recipe:x"})."""
    m = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", label)
    if m is None:
        return label, {}
    base, tag = m.group(1), m.group(2)
    keys = dict(part.split("=", 1) for part in re.split(r",(?=[\w.]+=)", tag)) if tag else {}
    return base, keys


def join_label(base: str, keys: Dict[str, str]) -> str:
    return f"{base}[{','.join(f'{k}={v}' for k, v in sorted(keys.items()))}]" if keys else base


def assembled_rows(agg: Agg) -> Dict[str, Dict[str, str]]:
    """{assembled label: {task: source label}}: the judged labels grouped by method and by their
    keys outside every task's `method_keys`; within a group, one row per choice of the task-read
    keys each task ran with (one source label per task and distinct setting; of several labels
    with the same setting, the one with most fractions, then the first by name). A row is kept when
    it joins at least two tasks from at least two labels; its label holds every key of its sources'
    settings, with each task-read key taken from the task that reads it."""
    tasks = sorted({k[0] for k in agg if find_task(k[0]) is not None})
    owned = {t: set(getattr(find_task(t), "method_keys", ())) for t in tasks}
    task_read = set().union(*owned.values()) if owned else set()
    fracs: Dict[Tuple[str, str], set] = {}
    for k in agg:
        if k[0] in owned:
            fracs.setdefault((k[0], k[1]), set()).add(k[2])
    # (base, common keys) -> task -> own setting -> candidate labels
    groups: Dict[Tuple[str, FrozenSet], Dict[str, Dict[FrozenSet, List[str]]]] = {}
    judged = set(judged_methods(agg))
    for (task, label), _ in sorted(fracs.items()):
        if label not in judged or label.endswith(ASSEMBLED):
            continue
        base, keys = split_label(label)
        common = frozenset((k, v) for k, v in keys.items() if k not in task_read)
        own = frozenset((k, v) for k, v in keys.items() if k in owned[task])
        groups.setdefault((base, common), {}).setdefault(task, {}).setdefault(own, []).append(label)
    out: Dict[str, Dict[str, str]] = {}
    existing = {k[1] for k in agg}
    for (base, common), per_task in sorted(groups.items(), key=lambda kv: join_label(kv[0][0], dict(kv[0][1]))):
        if len(per_task) < 2:
            continue
        names = sorted(per_task)
        choices = [[(own, sorted(labels, key=lambda x: (-len(fracs[(t, x)]), x))[0])
                    for own, labels in sorted(per_task[t].items(), key=lambda kv: sorted(kv[0]))] for t in names]
        for combo in itertools.product(*choices):
            sources = {t: label for t, (_, label) in zip(names, combo)}
            if len(set(sources.values())) < 2:
                continue
            keys = dict(common)
            for own, _ in combo:
                keys.update(own)
            label = join_label(base, keys)
            if label in existing and all((t, label) in fracs for t in names):
                continue
            out[label + ASSEMBLED] = sources
    return out


def with_assembled(agg: Agg, asked: Optional[Asked] = None,
                   rows: Optional[Dict[str, Dict[str, str]]] = None) -> Tuple[Agg, Optional[Asked]]:
    """`agg` (and `asked`) with the cells of every assembled row (`rows`, default
    `assembled_rows(agg)`) added under its label."""
    rows = assembled_rows(agg) if rows is None else rows
    if not rows:
        return agg, asked
    agg = dict(agg)
    asked = dict(asked) if asked else asked
    for label, sources in rows.items():
        for k, v in list(agg.items()):
            if k[0] in sources and k[1] == sources[k[0]]:
                agg[(k[0], label) + k[2:]] = v
                if asked and (k[0], k[1], k[2]) in asked:
                    asked[(k[0], label, k[2])] = asked[(k[0], k[1], k[2])]
    return agg, asked


def check_targets(agg: Agg, asked: Optional[Asked] = None) -> List[Dict[str, Any]]:
    """One row per (method, target, task, fraction): {"method", "target", "task", "fraction",
    "value", "needed", "holds", "short"}, for each label of `judged_methods` and each assembled row
    (`assembled_rows`, after them); `short` is True where a cell the check reads has fewer seeds
    than `asked` lists for it."""
    return _checks(*with_assembled(agg, asked))


def _checks(agg: Agg, asked: Optional[Asked]) -> List[Dict[str, Any]]:
    """`check_targets` on an aggregate that already holds its assembled rows."""
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


def cells_not_run(agg: Agg, method: str) -> List[Tuple[str, float]]:
    """(task, fraction) of every cell `none` has on val and `method` has not, sorted: the cells the
    targets cannot judge the row on until it runs there."""
    base = sorted({(k[0], k[2]) for k in agg if k[1] == "none" and k[3] == "val" and find_task(k[0]) is not None})
    return [(task, f) for task, f in base if _cell(agg, task, method, f, "val") is None]


def _not_run_text(cells: List[Tuple[str, float]]) -> str:
    """"vcr 5, 25, 100 %; vqa 100 %" for `cells_not_run`'s list ("-" when it is empty)."""
    tasks = sorted({t for t, _ in cells})
    return "; ".join(f"{t} " + ", ".join(f"{f * 100:g}" for x, f in cells if x == t) + " %" for t in tasks) or "-"


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
    assembled = assembled_rows(agg)
    agg, asked = with_assembled(agg, asked, assembled)
    rows = _checks(agg, asked)
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
        lines += ["", "Targets held, per judged row (k of n checks; - : no cell to judge; not run: the cells "
                  "`none` has and the row has not, where no target judges it yet):", "",
                  "| method | " + " | ".join(TARGET_TEXT) + " | not run |", "|---|" + "---|" * (len(TARGET_TEXT) + 1)]
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(counts[method][t] or "-" for t in TARGET_TEXT)
                         + f" | {_not_run_text(cells_not_run(agg, method))} |")
    if assembled:
        lines += ["", f"Assembled rows (\"{ASSEMBLED.strip()}\"): one recipe whose keys read by one task alone "
                  "(VQA's answer sets, SNLI-VE's contrast pair, VCR's rationales) put it under a different label "
                  "per task; each task's cells are those of its source label, which ran with every key of the "
                  "row that the task reads:", "", "| assembled row | task | source label |", "|---|---|---|"]
        for label, sources in assembled.items():
            for task, source in sorted(sources.items()):
                lines.append(f"| {label} | {task} | {source} |")
    lines += ["", "| method | target | task | fraction | value | needed | holds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['target']} | {r['task']} | {r['fraction'] * 100:g}% | {r['value']:+.2f} | "
                     f"{r['needed']} | {'yes' if r['holds'] else 'no'}{' ' + SHORT if r['short'] else ''} |")
    if any(r["short"] for r in rows):
        lines += ["", f"{SHORT} Judged on a cell with fewer seeds than the grid asks (provisional; \"(s {SHORT})\": s of "
                  "the checks counted are such)."]
    return "\n".join(lines) + "\n"
