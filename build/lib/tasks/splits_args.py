"""Arguments of `clip-td split` (argparse only: imported by the CLI before any heavy module)."""

from __future__ import annotations

import argparse

TASK_CHOICES = ("vqa", "snli_ve", "vcr")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="dataset folder in the official format")
    p.add_argument("--out", required=True, help="output folder for the id lists (written atomically)")
    p.add_argument("--path", action="append", default=[], metavar="KEY=VALUE",
                   help="task path setting, e.g. image_dir={subtype} (see the task's *Paths dataclass)")


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="split_command", required=True)

    p = sub.add_parser("lowshot", help="nested, label-stratified fractions of a split")
    p.add_argument("--task", choices=TASK_CHOICES, required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.25, 1.0],
                   help="fractions in (0, 1]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    _common(p)

    p = sub.add_parser("kshot", help="k instances per label (nested in k)")
    p.add_argument("--task", choices=TASK_CHOICES, required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--k", type=int, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    _common(p)

    p = sub.add_parser("prior-shift", help="VQA-CP style re-split of VQA-format data by (question type, answer)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="VQA splits pooled before re-splitting")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="cp", help="new split names: <name>_train, <name>_test")
    _common(p)

    p = sub.add_parser("group-shift", help="hold out whole groups of a metadata key (e.g. VCR movie)")
    p.add_argument("--task", choices=TASK_CHOICES, default="vcr")
    p.add_argument("--split", default="train")
    p.add_argument("--key", default="movie", help="row column whose values form the groups")
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    _common(p)
