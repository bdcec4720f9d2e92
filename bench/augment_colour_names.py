"""Does the student's augmentation keep colour names? Objects renamed by each `data.augment_policy`.

    python bench/augment_colour_names.py [--scenes 200] [--draws 10] [--seed 0] [--out FILE]

Colour is a label in every task of the synthetic world ("what colour is the circle?", "There is a
brown square."), so an augmentation that moves an object's colour nearer to another colour's name
teaches the student a wrong label on that image. This renders `--scenes` fresh source-style scenes
at the world's image size, and for each policy augments each image `--draws` times (torch seed
`--seed`). An object's colour is the mean of its inner pixels: those whose 3 x 3 neighbourhood lies
inside the object at the world's drawing resolution, so neither anti-aliasing nor the blur mixes in
the background (objects with no such pixel, such as thin rings, are skipped). It counts as renamed
when that mean is nearer (RGB distance) to another entry of the world's palette than to its own.
The clean images are measured the same way (`clean`, one draw) as the floor of the measure, and
the same scenes rendered in the world's shifted style (`shift_style`, one draw: its dim warm light
and pixel noise, under which the world's labels keep each object's drawn colour).
Prints renamed objects per policy with the most frequent confusions; writes JSON (default
`bench/results/augment_colour_names.json`).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.app.batches import AUGMENT_POLICIES, photometric_augment  # noqa: E402
from clip_td.base.io import write_json_atomic  # noqa: E402
from tasks.synthetic.render import SUPERSAMPLE, object_map, render_scene  # noqa: E402
from tasks.synthetic.scene import sample_scene  # noqa: E402
from tasks.synthetic.vocab import nearest_colour  # noqa: E402


def inner_masks(scene: dict, image_size: int) -> List[Optional[np.ndarray]]:
    """Per object, the (image_size, image_size) bool mask of its inner pixels (None if empty)."""
    full = object_map(scene, image_size)
    blocks = full.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE)
    masks = []
    for k in range(len(scene["objects"])):
        whole = (blocks == k + 1).all(axis=(1, 3))  # every sub-pixel of the output pixel is the object's
        inner = whole.copy()
        inner[1:-1, 1:-1] = np.logical_and.reduce([whole[1 + dy:image_size - 1 + dy, 1 + dx:image_size - 1 + dx]
                                                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
        masks.append(inner if inner.any() else None)
    return masks


def count_renamed(images: List[Any], scenes: List[dict], masks: List[List[Optional[np.ndarray]]],
                  augment: Callable, draws: int) -> Dict[str, Any]:
    objects = renamed = 0
    confusions: Dict[str, int] = {}
    for image, scene, scene_masks in zip(images, scenes, masks):
        for _ in range(draws):
            pixels = np.asarray(augment(image), dtype=np.float64)
            for obj, mask in zip(scene["objects"], scene_masks):
                if mask is None:
                    continue
                objects += 1
                seen = nearest_colour(pixels[mask].mean(axis=0))
                if seen != obj["colour"]:
                    renamed += 1
                    key = f"{obj['colour']}->{seen}"
                    confusions[key] = confusions.get(key, 0) + 1
    top = dict(sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"objects": objects, "renamed": renamed, "renamed_pct": 100.0 * renamed / max(objects, 1),
            "confusions": top}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--draws", type=int, default=10, help="augmented copies of each image per policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64, help="the world's image size (default 64)")
    p.add_argument("--out", type=Path, default=Path("bench/results/augment_colour_names.json"))
    args = p.parse_args(argv)
    if args.scenes < 1 or args.draws < 1:
        raise SystemExit(f"--scenes and --draws: expected at least 1, got {args.scenes} and {args.draws}")
    rng = random.Random(args.seed)
    scenes = [sample_scene(rng) for _ in range(args.scenes)]
    shifted = [dict(s, style="shift") for s in scenes]
    seeds = [args.seed * 100_003 + i for i in range(args.scenes)]  # one render seed per scene, both styles
    images = [render_scene(s, args.image_size, seed=k) for s, k in zip(scenes, seeds)]
    masks = [inner_masks(s, args.image_size) for s in scenes]
    results = {"clean": count_renamed(images, scenes, masks, lambda im: im, 1),
               "shift_style": count_renamed([render_scene(s, args.image_size, seed=k) for s, k in zip(shifted, seeds)],
                                            shifted, masks, lambda im: im, 1)}
    for policy in AUGMENT_POLICIES:
        torch.manual_seed(args.seed)
        results[policy] = count_renamed(images, scenes, masks, photometric_augment(policy), args.draws)
    print(f"{args.scenes} source-style scenes, {args.draws} draws per image and policy, seed {args.seed}")
    print("| policy | objects | renamed | % | most frequent |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        top = ", ".join(f"{k} {v}" for k, v in list(r["confusions"].items())[:4]) or "-"
        print(f"| {name} | {r['objects']} | {r['renamed']} | {r['renamed_pct']:.1f} | {top} |")
    out = {"scenes": args.scenes, "draws": args.draws, "seed": args.seed, "image_size": args.image_size,
           "policies": results}
    write_json_atomic(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
