"""Does the teacher know which attribute goes with which object, and where objects are?

    python bench/teacher_relations.py [--teacher local-dir:DIR] [--max-rows 800] [--probe-rows 20000]
                                      [--out bench/results/teacher_relations.json]

Reads the pretraining corpus' `facts` column (the scene graph of each image) on the clean held-out
pairs (`pretrain/val.tsv`) and asks 4-, 10- and K-way questions per image:
  relation  for every clear relation "A rel B" between two different shapes: which of the four
            relations (left of, right of, above, below) does the teacher pick?  chance 25
  binding   for every shape bound to exactly one colour in the image: which of the ten colours
            ("a red circle", ...)?  chance 10
  count     how many shapes does the picture hold (one per entry of its `places` column), among
            1 to K, the most any held-out or probe row holds ("three shapes")?  chance 100 / K
Two readers of the same frozen image embedding:
  zero-shot the teacher's text tower, caption-style texts ("a circle to the left of a square");
  probe     a linear multi-label head on the frozen image embeddings, fitted on the first
            --probe-rows training rows' facts (BCE, full-batch L-BFGS): what the image tower
            encodes, whatever the text tower reads.
The gap between them is what the contrastive stage failed to teach the text tower. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import write_json_atomic  # noqa: E402

from pretrain.data import RELATION_PHRASES as PHRASE, count_phrase, count_places, split_facts  # noqa: E402

RELATIONS = tuple(PHRASE)  # left of, right of, above, below


def parse_facts(row: Dict[str, str], shapes: Sequence[str], colours: Sequence[str]):
    """-> (relations [(a, rel, b)] with a != b, bindings {shape: colour} for shapes bound to one
    colour, the number of shapes: `places` entries, None without that column)."""
    rels, bound = split_facts(row.get("facts") or "", colours)
    count = count_places(row["places"]) if row.get("places") else None
    return rels, {s: c[0] for s, c in bound.items() if s in shapes and len(set(c)) == 1}, count


def score(embed_fn, rows_facts, colours, counts: Sequence[int] = ()) -> Dict[str, float]:
    """embed_fn(n, texts, keys) -> (len(texts),) scores of image n. Accuracy of the argmax per
    question; `counts` are the count question's answers (none: no count question)."""
    rel_ok = rel_n = col_ok = col_n = num_ok = num_n = 0
    for n, (rels, bound, count) in enumerate(rows_facts):
        if counts and count in counts:
            s = embed_fn(n, [count_phrase(k) for k in counts], [("count", str(k)) for k in counts])
            num_ok += int(counts[int(s.argmax())] == count)
            num_n += 1
        for a, rel, b in rels:
            s = embed_fn(n, [f"a {a} {PHRASE[r]} a {b}" for r in RELATIONS], [(a, r, b) for r in RELATIONS])
            rel_ok += int(RELATIONS[int(s.argmax())] == rel)
            rel_n += 1
        for shape, colour in bound.items():
            s = embed_fn(n, [f"a {c} {shape}" for c in colours], [(c, shape) for c in colours])
            col_ok += int(colours[int(s.argmax())] == colour)
            col_n += 1
    out = {"relation": 100.0 * rel_ok / max(rel_n, 1), "relation_n": rel_n,
           "binding": 100.0 * col_ok / max(col_n, 1), "binding_n": col_n}
    if counts:
        out.update({"count": 100.0 * num_ok / max(num_n, 1), "count_n": num_n, "count_chance": 100.0 / len(counts)})
    return out


@torch.no_grad()
def image_embeds(teacher, rows: List[Dict], batch: int = 256) -> torch.Tensor:
    from clip_td.lib.teacher_cache import _load_image

    tf = teacher.image_transform()
    out = []
    for k in range(0, len(rows), batch):
        pixels = torch.stack([_load_image(r["image"], tf) for r in rows[k:k + batch]])
        out.append(teacher.encode_images(pixels)["image_embed"].float())
    return torch.cat(out)


def fit_probe(x: torch.Tensor, y: torch.Tensor, steps: int = 500, l2: float = 1e-6) -> torch.nn.Module:
    """A linear multi-label head on fixed features (standardised with the training rows' mean and
    std), full-batch L-BFGS on BCE + a small L2."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.nn.Sequential(_Standardise(mean, std), head)


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="open_clip name / local-dir:DIR (default: the default teacher)")
    p.add_argument("--data-root", default=None, help="a world folder holding pretrain/ (default: the synthetic world)")
    p.add_argument("--max-rows", type=int, default=800, help="held-out pairs scored")
    p.add_argument("--probe-rows", type=int, default=20000, help="training rows the linear probe is fitted on")
    p.add_argument("--out", default="bench/results/teacher_relations.json")
    args = p.parse_args(argv)

    from clip_td.lib.teacher import FrozenTeacher
    from pretrain.data import read_captions
    from tasks.synthetic.vocab import COLOUR_NAMES, SHAPES

    if args.data_root is None:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world())
    else:
        root = Path(args.data_root)
    from pretrain.default_teacher import default_teacher_name

    args.teacher = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(args.teacher)
    colours = list(COLOUR_NAMES)
    val = read_captions(root / "pretrain" / "val.tsv")[:args.max_rows]
    if not val or "facts" not in val[0]:
        raise SystemExit(f"error: {root / 'pretrain' / 'val.tsv'}: no `facts` column (a world written by the "
                         f"generator version 2 or later has it)")
    val_facts = [parse_facts(r, SHAPES, colours) for r in val]
    train = read_captions(root / "pretrain" / "train.tsv")[:args.probe_rows] if args.probe_rows > 0 else []
    train_counts = [parse_facts(r, SHAPES, colours)[2] for r in train]
    seen = [f[2] for f in val_facts] + train_counts
    counts = list(range(1, max(seen) + 1)) if seen and None not in seen else []
    val_x = image_embeds(teacher, val)

    @torch.no_grad()
    def zero_shot(n, texts, _keys):
        t = teacher.encode_texts(texts, with_tokens=False)["text_embed"].float()
        return t @ val_x[n]

    results = {"teacher": args.teacher, "rows": len(val), "zero_shot": score(zero_shot, val_facts, colours, counts)}
    if train:
        vocab = sorted({f"{a} {r} {b}" for a in SHAPES for r in RELATIONS for b in SHAPES if a != b}
                       | {f"{c} {s}" for c in colours for s in SHAPES} | {f"count {k}" for k in counts})
        index = {f: i for i, f in enumerate(vocab)}
        y = torch.zeros(len(train), len(vocab))
        for n, r in enumerate(train):
            for f in (r.get("facts") or "").split("|"):
                if f in index:
                    y[n, index[f]] = 1.0
            if counts and train_counts[n] is not None:
                y[n, index[f"count {train_counts[n]}"]] = 1.0
        head = fit_probe(image_embeds(teacher, train), y)
        with torch.no_grad():
            logits = head(val_x)

        def probe(n, _texts, keys):
            return torch.stack([logits[n, index[" ".join(k)]] for k in keys])

        results["probe"] = {**score(probe, val_facts, colours, counts), "train_rows": len(train)}
    print(f"{'reader':<10} {'relation (chance 25)':>22} {'binding (chance 10)':>21}"
          + (f" {'count (chance %.1f)' % (100.0 / len(counts)):>22}" if counts else ""))
    for name in ("zero_shot", "probe"):
        if name in results:
            r = results[name]
            print(f"{name:<10} {r['relation']:>15.1f} (n={r['relation_n']}) {r['binding']:>14.1f} (n={r['binding_n']})"
                  + (f" {r['count']:>15.1f} (n={r['count_n']})" if counts else ""))
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
