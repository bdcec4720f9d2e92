"""Do the teacher's dense targets point at what the instance is about?

    python bench/teacher_localisation.py [--teacher local-dir:DIR] [--variants value@1 value@2 value@4]
                                         [--rho 0.25] [--grid 8] [--max-rows 1000]
                                         [--out bench/results/teacher_localisation.json]

On the synthetic VCR val and val_shift splits (every object's box is in the official metadata,
and every question names its objects, e.g. "circle0"), CLIP-TD's relevance selection is run as
fine-tuning runs it: the teacher's patch tokens are resampled onto the student's patch grid
(`--grid`, 8x8 for the default student at 64 px), each scored by r_j = cos(z_j, e(text)), and the
top k = ceil(rho N) kept. The figure is the share of the referenced objects' patches (grid cells
whose centre lies in one of their boxes) that the selected set covers, averaged over questions:
`rho` itself for a random selection, 100 for a perfect one when the objects fit in k cells
(`oracle` gives that ceiling per question). Two texts: the question alone, and the task text
the cache uses (question + gold answer).

A variant is `<dense>@<scale>` (`teacher.dense` and `teacher.dense_scale`: `tokens@1`, `value@1`,
`value@2`, ...) or `cls_attention` (ViT: the last block's CLS-to-patch attention, text-free).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import InputError, write_json_atomic  # noqa: E402
from clip_td.lib.selection import num_selected  # noqa: E402
from clip_td.lib.token_grid import grid_from_tokens, resample_grid  # noqa: E402


def referenced(text: str, objects: Sequence[str]) -> List[int]:
    """Indices of the objects a rendered VCR text names ("circle0" -> 0)."""
    names = set(re.findall(r"\b([A-Za-z]+)(\d+)\b", text))
    return sorted(int(i) for name, i in names if int(i) < len(objects) and objects[int(i)] == name)


def object_cells(boxes: Sequence[Sequence[float]], indices: Sequence[int], size: Tuple[float, float],
                 grid: int) -> torch.Tensor:
    """(grid * grid,) bool, row-major: cells whose centre lies in one of the boxes; a box that
    holds no cell centre marks the cell holding its own centre."""
    w, h = size
    cx = (torch.arange(grid) + 0.5) * w / grid
    cy = (torch.arange(grid) + 0.5) * h / grid
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    for i in indices:
        x1, y1, x2, y2 = boxes[i][:4]
        inside = ((cy >= y1) & (cy <= y2)).unsqueeze(1) & ((cx >= x1) & (cx <= x2)).unsqueeze(0)
        if not inside.any():
            r = min(int((y1 + y2) / 2 * grid / h), grid - 1)
            c = min(int((x1 + x2) / 2 * grid / w), grid - 1)
            inside[r, c] = True
        mask |= inside
    return mask.flatten()


def coverage(scores: torch.Tensor, objects: torch.Tensor, rho: float) -> torch.Tensor:
    """scores (B, N), objects (B, N) bool -> (B,) share of each row's object cells in its top-k."""
    k = num_selected(scores.shape[1], rho)
    top = torch.zeros_like(objects).scatter_(1, scores.topk(k, dim=1).indices, True)
    return (top & objects).sum(1).float() / objects.sum(1).clamp_min(1).float()


def parse_variant(v: str) -> Tuple[str, int]:
    if v == "cls_attention":
        return v, 1
    m = re.fullmatch(r"(auto|tokens|value)@(\d+)", v)
    if not m:
        raise InputError(f"--variants: {v!r} is not <auto|tokens|value>@<scale> or cls_attention")
    return m.group(1), int(m.group(2))


def load_rows(root: Path, split: str, max_rows: int) -> List[Dict]:
    from tasks import get_task

    ds = get_task("vcr").load(root / "vcr", split)
    rows = []
    for row in ds.select(range(min(max_rows, len(ds)))):
        idx = referenced(row["text"], row["objects"])
        if idx:
            rows.append({**row, "refs": idx})
    return rows


@torch.no_grad()
def measure(teacher, rows: List[Dict], variant: str, rho: float, grid: int, batch: int = 64) -> Dict[str, float]:
    """Mean coverage (percent) for the question text and the task text under one variant."""
    from PIL import Image

    from tasks import get_task

    task = get_task("vcr")
    dense, scale = parse_variant(variant)
    teacher.set_dense("auto" if dense == "cls_attention" else dense, scale)
    transform = teacher.image_transform()
    sums = {"question": 0.0, "task": 0.0, "oracle": 0.0}
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        images, sizes = [], []
        for r in chunk:
            with Image.open(r["image"]) as im:
                images.append(transform(im.convert("RGB")))
                sizes.append(im.size)
        out = teacher.encode_images(torch.stack(images), cls_attention=dense == "cls_attention")
        objects = torch.stack([object_cells(r["boxes"], r["refs"], sz, grid) for r, sz in zip(chunk, sizes)])
        n_obj = objects.sum(1).float()
        sums["oracle"] += float((n_obj.clamp_max(num_selected(grid * grid, rho)) / n_obj).sum())
        src = grid_from_tokens(out["patch_tokens"].shape[1])
        if dense == "cls_attention":
            att = resample_grid(out["cls_attention"].unsqueeze(-1), src, (grid, grid)).squeeze(-1)
            share = float(coverage(att, objects, rho).sum())
            sums["question"] += share
            sums["task"] += share
            continue
        z = resample_grid(out["patch_tokens"], src, (grid, grid))  # (B, N, d)
        texts = {"question": [r["text"] for r in chunk], "task": [task.teacher_texts(r)[0] for r in chunk]}
        for key, tx in texts.items():
            e = teacher.encode_texts(tx, with_tokens=False)["text_embed"]
            rel = F.cosine_similarity(z, e.unsqueeze(1), dim=-1)
            sums[key] += float(coverage(rel, objects, rho).sum())
    n = max(len(rows), 1)
    return {k: 100.0 * v / n for k, v in sums.items()}


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="open_clip name / local-dir:DIR (default: the default teacher)")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag, with an open_clip model name")
    p.add_argument("--data-root", default=None, help="a world folder holding vcr/ (default: the synthetic world)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="<dense>@<scale> or cls_attention (default: value@1 value@2 value@4 for a ResNet, "
                        "tokens@1 value@1 cls_attention for a ViT)")
    p.add_argument("--splits", nargs="+", default=["val", "val_shift"])
    p.add_argument("--rho", type=float, default=0.25, help="share of the student's patches selected")
    p.add_argument("--grid", type=int, default=8, help="the student's patch grid side")
    p.add_argument("--max-rows", type=int, default=1000, help="questions per split")
    p.add_argument("--out", default="bench/results/teacher_localisation.json")
    args = p.parse_args(argv)

    from clip_td.lib.teacher import FrozenTeacher, _is_resnet

    if args.data_root is None:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world())
    else:
        root = Path(args.data_root)
    from pretrain.default_teacher import default_teacher_name

    args.teacher = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(args.teacher, args.pretrained)
    resnet = _is_resnet(teacher.model.visual)
    variants = args.variants or (["value@1", "value@2", "value@4"] if resnet else
                                 ["tokens@1", "value@1", "cls_attention"])
    k = num_selected(args.grid * args.grid, args.rho)
    results: Dict = {"teacher": args.teacher, "rho": args.rho, "grid": args.grid, "selected": k,
                     "random": 100.0 * k / args.grid ** 2, "splits": {}}
    print(f"rho {args.rho}: {k} of {args.grid}x{args.grid} student patches selected; random covers "
          f"{results['random']:.1f} % of an object's patches")
    print(f"{'split':<10} {'variant':<14} {'grid':>5} {'question':>9} {'q+answer':>9} {'oracle':>7} {'n':>6}")
    for split in args.splits:
        rows = load_rows(root, split, args.max_rows)
        results["splits"][split] = {"rows": len(rows), "variants": {}}
        for v in variants:
            r = measure(teacher, rows, v, args.rho, args.grid)
            r["teacher_grid"] = teacher.grid_size[0]
            results["splits"][split]["variants"][v] = r
            print(f"{split:<10} {v:<14} {r['teacher_grid']:>5} {r['question']:>9.1f} {r['task']:>9.1f} "
                  f"{r['oracle']:>7.1f} {len(rows):>6}")
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
