"""Does a pretrained student read where things are? Held-out place words, by kind.

    python bench/student_place_words.py RUN_DIR [RUN_DIR ...] [--scenes 400] [--out FILE]

RUN_DIR is a `pretrain_student.py` output folder (config.yaml, student/, checkpoints/step_<n>/
with the MLM head). The measure is the one its metrics.json reports when `regions.weight` > 0
(`pretrain.student.train.region_accuracy`): `--scenes` freshly rendered source-style scenes that no
training step draws are described ("the small red circle is near the top left. ... the red circle
is left of the blue star."), every place word (top, bottom, left, right, center, above, below) is
masked at once and the student predicts it from the image and the rest of the text. It works on
any student folder, also one pretrained without region descriptions (its vocabulary may then
spell the place words in pieces; each piece counts). Reported per kind:
- `region`: the words saying where one object is ("near the top left"; "center" follows "in
  the" and is guessed from the text alone);
- `relation`: the word after "is" in a relation sentence ("is left of", "is above");
- `lone_object`: the region words of one-object scenes, where only the image's layout can tell
  top from bottom and left from right (2-way each, so 50 % is chance for all but "center").
Prints a table and writes JSON (default `bench/results/student_place_words.json`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_td.base.io import InputError, write_json_atomic  # noqa: E402
from student_concepts import load_run  # noqa: E402

KINDS = ("region", "relation", "lone_object")


def place_words(run_dir: Path, scenes: int) -> Dict[str, Any]:
    """`region_accuracy` of the run's last checkpoint on `scenes` held-out scenes."""
    from pretrain.student.config import load_student_config
    from pretrain.student.train import region_accuracy

    model, tokenizer, _ = load_run(run_dir)
    cfg = load_student_config(run_dir / "config.yaml", [f"image_init.eval_scenes={scenes}"])
    return region_accuracy(model, cfg, tokenizer, torch.device("cpu"))["held_out"]


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--scenes", type=int, default=400)
    p.add_argument("--out", default="bench/results/student_place_words.json")
    args = p.parse_args(argv)
    if args.scenes < 1:
        raise InputError(f"--scenes {args.scenes}: expected at least 1")
    result: Dict[str, Any] = {"scenes": args.scenes, "runs": {}}
    for run_dir in args.runs:
        result["runs"][str(run_dir)] = place_words(run_dir, args.scenes)
    print(f"{'run':<40}{'all':>16}{'majority':>10}" + "".join(f"{k:>20}" for k in KINDS))
    for name, r in result["runs"].items():
        cells = "".join(f"{r['by_kind'][k]['accuracy']:>11.1f} (n={r['by_kind'][k]['tokens']:>4})" for k in KINDS)
        print(f"{name:<40}{r['place_accuracy']:>7.1f} (n={r['place_tokens']:>4}){r['majority_place_token']:>10.1f}{cells}")
    out = Path(args.out)
    write_json_atomic(out, result)  # (makes the folder)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
