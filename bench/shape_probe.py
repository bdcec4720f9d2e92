"""Can an image tower learn the synthetic world's shapes at all, given clean labels?

    python bench/shape_probe.py [--towers vit_p8 vit_p4 resnet cnn] [--steps 300] [--batch 64]
                                [--out bench/results/shape_probe.json]

A supervised 8-way shape classification of single-object images (both styles, random size,
colour and position; rendered on the fly with the world's own renderer, 64 px), trained from
scratch for `--steps` AdamW steps, scored on 400 held-out images. Towers:
  vit_p8   the default teacher's open_clip ViT (4 layers, width 128, patch 8)
  vit_p4   the same ViT with patch 4 (4x the tokens)
  resnet   an open_clip ModifiedResNet (one block per stage, stem width 16), as a teacher could use
  cnn      a plain 4-block conv net (reference)
This separates "the contrastive corpus does not ask for shape" from "the tower cannot learn
shape in this budget". One thread per run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import write_json_atomic  # noqa: E402
from tasks.synthetic.render import render_scene  # noqa: E402
from tasks.synthetic.scene import sample_scene  # noqa: E402
from tasks.synthetic.vocab import SHAPES, STYLES  # noqa: E402


def batch(rng: random.Random, n: int, size: int = 64):
    xs, ys = [], []
    for _ in range(n):
        scene = sample_scene(rng, n_objects=1, style=rng.choice(STYLES))
        img = np.asarray(render_scene(scene, size, rng.getrandbits(32)), dtype=np.float32) / 255.0
        xs.append(torch.from_numpy(img).permute(2, 0, 1))
        ys.append(SHAPES.index(scene["objects"][0]["shape"]))
    return (torch.stack(xs) - 0.5) / 0.25, torch.tensor(ys)


def tower(name: str) -> nn.Module:
    """(B, 3, 64, 64) -> (B, F) features."""
    if name == "cnn":
        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())
    from pretrain.clip_factory import TINY_MODEL_CFG, build_model

    cfg = copy.deepcopy(TINY_MODEL_CFG)
    if name == "vit_p4":
        cfg["vision_cfg"]["patch_size"] = 4
    elif name == "resnet":
        cfg["vision_cfg"] = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16}
    elif name != "vit_p8":
        raise SystemExit(f"error: unknown tower {name!r}; expected vit_p8, vit_p4, resnet or cnn")
    return build_model(model_cfg=cfg).model.visual


def probe(name: str, steps: int, bs: int, seed: int = 0) -> Dict[str, Any]:
    torch.manual_seed(seed)
    model = tower(name)
    with torch.no_grad():
        dim = model(torch.zeros(2, 3, 64, 64)).shape[-1]
    head = nn.Linear(dim, len(SHAPES))
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=0.05)
    rng, (xt, yt) = random.Random(seed), batch(random.Random(10_000 + seed), 400)
    curve, t0 = {}, time.time()
    for step in range(1, steps + 1):
        model.train()
        x, y = batch(rng, bs)
        loss = nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                curve[step] = 100.0 * (head(model(xt)).argmax(1) == yt).float().mean().item()
    return {"tower": name, "steps": steps, "batch": bs, "accuracy_by_step": curve, "final": curve[steps],
            "seconds": round(time.time() - t0, 1), "chance": 100.0 / len(SHAPES)}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--towers", nargs="+", default=["vit_p8", "resnet", "cnn"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="bench/results/shape_probe.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [probe(t, args.steps, args.batch) for t in args.towers]
    print(f"{'tower':<8}{'steps':>6}  " + "  ".join(f"@{s:<5}" for s in rows[0]["accuracy_by_step"]) + "   seconds")
    for r in rows:
        print(f"{r['tower']:<8}{r['steps']:>6}  " + "  ".join(f"{v:5.1f} " for v in r["accuracy_by_step"].values())
              + f"   {r['seconds']:.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"chance": 100.0 / len(SHAPES), "image_size": 64, "runs": rows}
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
