"""The `clip-td` command line (DESIGN.md contract 5).

Each sub-command is a thin shim over a library function; heavy imports happen only
inside the handler so `clip-td --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from clip_td.base.io import InputError

TASKS = ("vqa", "snli_ve", "vcr")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _data_synth(args: argparse.Namespace) -> int:
    from tasks.synthetic import build_world

    summary = build_world(args.out, seed=args.seed, size=args.size, image_size=args.image_size, workers=args.workers)
    _print_json(summary)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from tasks.check import check_task

    counts, problems = check_task(args.task, args.root)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {args.root}", file=sys.stderr)
        return 1
    _print_json(counts)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.task == "vqa":
        from tasks.vqa.metrics import evaluate_files

        if not (args.questions and args.annotations and args.results):
            raise InputError("evaluate vqa: expected --questions, --annotations and --results")
        scores = evaluate_files(args.questions, args.annotations, args.results)
    else:
        if args.task == "vcr":
            from tasks.vcr.metrics import evaluate_files
        else:
            from tasks.snli_ve.metrics import evaluate_files
        if not (args.annotations and args.predictions):
            raise InputError(f"evaluate {args.task}: expected --annotations and --predictions")
        scores = evaluate_files(args.annotations, args.predictions)
    _print_json(scores)
    return 0


def _split(args: argparse.Namespace) -> int:
    from tasks.splits import run_cli

    return run_cli(args)


def _report(args: argparse.Namespace) -> int:
    from clip_td.app.sweep import report

    _print_json({k: str(v) for k, v in report(args.dir).items()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-td", description="CLIP Targeted Distillation tools")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or check datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write the built-in synthetic VL world")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "medium", "large"), default="medium")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (224 for real-size models)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPU count)")
    p.set_defaults(func=_data_synth)
    p = data.add_parser("check", help="validate a dataset folder in its official format")
    p.add_argument("task", choices=TASKS + ("captions",))
    p.add_argument("--root", required=True, help="dataset folder (for captions: a folder or a .csv/.tsv file)")
    p.set_defaults(func=_data_check)

    p = sub.add_parser("evaluate", help="score official-format predictions")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--questions", help="VQA questions JSON")
    p.add_argument("--annotations", help="annotations (VQA JSON, VCR/SNLI-VE jsonl)")
    p.add_argument("--results", help="VQA results JSON [{question_id, answer}]")
    p.add_argument("--predictions", help="VCR/SNLI-VE predictions jsonl")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("split", help="low-shot and domain-shift splits as id lists")
    from tasks.splits_args import add_split_arguments  # argparse only, no heavy imports

    add_split_arguments(p)
    p.set_defaults(func=_split)

    p = sub.add_parser("report", help="re-render results.csv, summary.md and plots of a sweep folder")
    p.add_argument("dir")
    p.set_defaults(func=_report)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
