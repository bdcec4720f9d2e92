"""What VCR's label-free QA->R rows teach (`method.label_free_rationales`): the teacher's own answers
and its rationale picks given them, scored against the annotation.

    python bench/vcr_free_rationales.py [--teacher recipe:lit_scene_place] [--split train]
                                        [--data-root DIR] [--cache-dir DIR] [--out FILE.json]

For every row of a VCR split, from the teacher cache fine-tuning reads (built here if missing):
the teacher's Q->A answer (its argmax over the 4 answers), its QA->R pick given that answer (the
rationale distribution the label-free term distils; `clip_td.app.teacher_setup.free_rationale_logits`)
and its QA->R pick given the right answer (the labelled rows' QA->R stage). The labels are read
only to score. Prints a table and writes JSON: accuracies in %, `rows`, and `agree_when_right`,
the share of rows with a right teacher answer whose two picks agree (100 by construction: the
candidates are then the same strings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from clip_td.base.io import cache_root, write_json_atomic  # noqa: E402


def free_rationale_scores(teacher: Any, task: Any, rows: Any, cache: Any) -> Dict[str, Any]:
    """The figures of the module docstring for the split `rows` (the cache over its two stages)."""
    from clip_td.app.teacher_setup import free_rationale_logits

    n = len(rows)
    answer, own = free_rationale_logits(teacher, task, rows, list(range(n)), cache, stages=2)
    gold_pick = torch.cat([cache.lookup(torch.arange(s, min(s + 512, n)) * 2 + 1)["cand_logits"].float().argmax(-1)
                           for s in range(0, n, 512)])
    own_pick = own.argmax(-1)
    a_gold = torch.tensor(list(rows["answer_label"]))
    r_gold = torch.tensor(list(rows["rationale_label"]))
    right = answer == a_gold

    def pct(x: torch.Tensor) -> float:
        return round(100.0 * x.float().mean().item(), 2) if x.numel() else float("nan")

    return {"rows": n, "answer": pct(right), "rationale_own_answer": pct(own_pick == r_gold),
            "rationale_gold_answer": pct(gold_pick == r_gold), "q2ar_own": pct(right & (own_pick == r_gold)),
            "rationale_own_answer_when_wrong": pct((own_pick == r_gold)[~right]),
            "agree_when_right": pct((own_pick == gold_pick)[right])}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default=None, help="open_clip name / local-dir:DIR / recipe:NAME (default: the default teacher)")
    p.add_argument("--split", default="train")
    p.add_argument("--data-root", default=None, help="folder holding vcr/ (default: the synthetic world)")
    p.add_argument("--cache-dir", default=None, help="teacher cache root (default: the one fine-tuning uses)")
    p.add_argument("--out", default="bench/results/vcr_free_rationales.json")
    args = p.parse_args(argv)

    from omegaconf import OmegaConf

    from clip_td.app.teacher_setup import StagedRows
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import TeacherCache
    from pretrain.default_teacher import default_teacher_name
    from tasks import get_task

    if args.data_root:
        root = Path(args.data_root)
    else:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world("medium"))
    name = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(name)
    task = get_task("vcr")
    rows = task.load(root / "vcr", args.split)
    task.setup(rows, OmegaConf.create({"method": {"rationales": True}}))
    cache_dir = Path(args.cache_dir) if args.cache_dir else cache_root() / "teacher_cache"
    cache = TeacherCache.build(teacher, task.teacher_texts, StagedRows(rows, 2), cache_dir, name=f"vcr-{args.split}")
    result = {"teacher": name, "split": args.split, "data_root": str(root), **free_rationale_scores(teacher, task, rows, cache)}
    for key, value in result.items():
        print(f"{key:34s} {value}")
    write_json_atomic(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
