"""The `clip-td` command line (docs/contracts.md section 5).

Each sub-command is a thin shim over a library function; heavy imports happen only
inside the handler so `clip-td --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from clip_td.base.io import InputError
from clip_td.base.scripts import run_script


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
    """Score official-format files with the task's own scorer (`Task.score_files`)."""
    from tasks import get_task

    task = get_task(args.task)
    files = {"annotations": args.annotations, "predictions": args.results or args.predictions,
             "questions": args.questions}
    missing = [f"--{k}" for k, v in (("annotations", args.annotations), ("predictions or --results", files["predictions"]))
               if not v]
    if missing:
        raise InputError(f"evaluate {args.task}: expected {' and '.join(missing)}")
    try:
        scores = task.official_scores({k: v for k, v in files.items() if v}, rule=args.rule)
    except KeyError as e:  # a file kind this task needs was not given
        raise InputError(f"evaluate {args.task}: expected --{e.args[0]}") from None
    _print_json(scores)
    return 0


def _split(args: argparse.Namespace) -> int:
    from tasks.splits import run_cli

    return run_cli(args)


def _report(args: argparse.Namespace) -> int:
    """Write the report; exit 1 when the sweep's grid (its saved config.yaml) has cells with neither
    a complete metrics.json nor rows from --include, unless --allow-missing."""
    from clip_td.app.sweep import grid_status, report

    _print_json({k: str(v) for k, v in report(args.dir, include=args.include).items()})
    status = grid_status(args.dir)  # after report: results.csv holds the runs and the included rows
    if status is None or not status.missing:
        return 0
    first = ", ".join(m["cell"] for m in status.missing[:3]) + (" ..." if len(status.missing) > 3 else "")
    print(f"{'warning' if args.allow_missing else 'error'}: {len(status.missing)} of {status.cells} grid cells "
          f"have no complete metrics.json ({first}); summary.md marks them; rerun the sweep (it retries "
          f"failed cells){'' if args.allow_missing else ' or pass --allow-missing'}", file=sys.stderr)
    return 0 if args.allow_missing else 1


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
    p.add_argument("task", help="a registered task (vqa, snli_ve, vcr, ...) or captions")
    p.add_argument("--root", required=True, help="dataset folder (for captions: a folder or a .csv/.tsv file)")
    p.set_defaults(func=_data_check)

    p = sub.add_parser("evaluate", help="score official-format predictions")
    p.add_argument("task", help="a registered task: vqa, snli_ve, vcr, ...")
    p.add_argument("--questions", help="VQA questions JSON")
    p.add_argument("--annotations", help="annotations (VQA JSON, VCR/SNLI-VE jsonl)")
    p.add_argument("--results", help="VQA results JSON [{question_id, answer}]")
    p.add_argument("--predictions", help="VCR/SNLI-VE predictions jsonl")
    p.add_argument("--rule", default=None,
                   help="VQA: official (current GT-Vision-Lab/VQA master, the default) or legacy (the pre-2021 tool)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("split", help="low-shot and domain-shift splits as id lists")
    from tasks.splits_args import add_split_arguments  # argparse only, no heavy imports

    add_split_arguments(p)
    p.set_defaults(func=_split)

    p = sub.add_parser("report", help="re-render results.csv, summary.md and plots of a sweep folder")
    p.add_argument("dir")
    p.add_argument("--include", action="append", default=[], metavar="RESULTS_CSV",
                   help="another sweep's results.csv (or its folder) whose cells this folder lacks, reported "
                        "beside them (repeatable; this folder's own runs win)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even when cells of the sweep's grid have no complete metrics.json (default: exit 1)")
    p.set_defaults(func=_report)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    code = 0

    def _call(_: object) -> None:
        nonlocal code
        code = func(args)

    return run_script(_call) or code


if __name__ == "__main__":
    sys.exit(main())
