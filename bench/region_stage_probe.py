"""What lets a student learn where things are? The region-description objective alone, fast.

    python bench/region_stage_probe.py IMAGE_INIT [--steps 1000] [--max-objects 6] [--curriculum 0]
        [--eval-objects 6] [--place-mask-prob 0.5] [--eval-every 250] [--eval-scenes 400]
        [--seed 0] [--threads 1] [--set KEY=VALUE ...] [--out FILE]

IMAGE_INIT is a `pretrain_student.py` run's `image_init.safetensors` (the ViltModel its image
stage left: patches that know colour, shape and size). Starting from it, the script trains only
the MLM on region descriptions (`pretrain.student.regions`; no captions, no ITM, no rehearsal),
`regions.scenes` (32) fresh scenes a step of 1 to `--max-objects` objects (with `--curriculum N`,
1 to 1 + (max - 1) * step // N until step N, as `regions.curriculum_steps`), the place words
masked with `--place-mask-prob` (1 = every place word of every description), AdamW at a constant
1e-3 (weight decay 0.01, gradients clipped at 1). Every `--eval-every` steps it reports the
held-out place words of `pretrain.student.train.region_accuracy` on `--eval-scenes` scenes of 1 to
`--eval-objects` objects, by kind (`region`, `relation`, `lone_object`; see
bench/student_place_words.py). A few minutes a row on one core, against 40 for a full student
pretraining (`--set` passes further pretrain_student.py keys, e.g. data.root, the model's size,
which must be those of the run that wrote IMAGE_INIT): the knobs of the region stage (the initial patch positions, which the image
initialisation file carries; the masking; the curriculum) compared on one budget.
Prints a table and writes JSON (default `bench/results/region_stage_probe.json`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import InputError, write_json_atomic  # noqa: E402

KINDS = ("region", "relation", "lone_object")


def probe(args: argparse.Namespace) -> Dict[str, Any]:
    from pretrain.student.config import load_student_config
    from pretrain.student.data import image_transform
    from pretrain.student.image_init import load_image_init
    from pretrain.student.model import masked_lm_loss
    from pretrain.student.train import build, region_accuracy, region_batch, step_generator

    common = ["image_init.steps=0", f"image_init.weights={args.image_init}", f"seed={args.seed}", "regions.weight=1",
              f"regions.place_mask_prob={args.place_mask_prob}", f"image_init.eval_scenes={args.eval_scenes}",
              *args.set]
    train_cfg = load_student_config(None, [*common, f"image_init.max_objects={args.max_objects}",
                                           f"regions.curriculum_steps={args.curriculum}"])
    eval_cfg = load_student_config(None, [*common, f"image_init.max_objects={args.eval_objects}"])
    torch.manual_seed(args.seed)  # the fresh MLM head
    setup = build(train_cfg)
    model, tokenizer = setup.model, setup.tokenizer
    load_image_init(model.mlm.vilt, args.image_init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    transform = image_transform(train_cfg.data.image_size)
    rows, t0 = [], time.perf_counter()
    for step in range(args.steps):
        batch = region_batch(train_cfg, step, transform, tokenizer, step_generator(args.seed, step), step=step)
        text, _ = model.encode(batch["region_pixels"], batch["region_ids"], batch["region_attention_mask"])
        loss = masked_lm_loss(model.mlm.mlm_score(text), batch["region_labels"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            held = region_accuracy(model, eval_cfg, tokenizer, torch.device("cpu"))["held_out"]
            row = {"step": step + 1, "loss": loss.item(), "seconds": time.perf_counter() - t0,
                   "place_accuracy": held["place_accuracy"], **{k: held["by_kind"][k] for k in KINDS}}
            rows.append(row)
            print(f"{row['step']:>6}{row['place_accuracy']:>8.1f}" + "".join(f"{row[k]['accuracy']:>14.1f}" for k in KINDS)
                  + f"{row['loss']:>8.3f}{row['seconds']:>8.0f}", flush=True)
    return {"image_init": str(args.image_init), "max_objects": args.max_objects, "curriculum": args.curriculum,
            "eval_objects": args.eval_objects, "place_mask_prob": args.place_mask_prob, "seed": args.seed,
            "eval_scenes": args.eval_scenes, "tokens": {k: rows[-1][k]["tokens"] for k in KINDS} if rows else {},
            "rows": rows}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("image_init", type=Path)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--max-objects", type=int, default=6)
    p.add_argument("--curriculum", type=int, default=0)
    p.add_argument("--eval-objects", type=int, default=6)
    p.add_argument("--place-mask-prob", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-scenes", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more pretrain_student.py keys")
    p.add_argument("--out", default="bench/results/region_stage_probe.json")
    args = p.parse_args(argv)
    for name in ("steps", "max_objects", "eval_objects", "eval_every", "eval_scenes", "threads"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    torch.set_num_threads(args.threads)
    print(f"{'step':>6}{'all':>8}" + "".join(f"{k:>14}" for k in KINDS) + f"{'loss':>8}{'s':>8}")
    result = probe(args)
    out = Path(args.out)
    write_json_atomic(out, result)  # (makes the folder)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
