"""Supervised initialisation of the image tower before contrastive training (LiT's recipe).

LiT (Zhai et al., CVPR 2022) starts contrastive image-text training from an image tower
pretrained on a labelled dataset, and often keeps it locked while the text tower learns to read
it. Here the labels are the corpus' `concepts` column (the shapes, colours and sizes present in
each image: multi-label, so BCE): the same labels the synthetic concept teacher of concept
distillation is trained on, used to train the CLIP image tower itself. `image_init.facts` adds the
`facts` column's scene graph (bound attributes and spatial relations, `fact_targets`), which a
pooled embedding trained on a bag of concepts never learns.

`image_init.steps=0` (the default) skips the stage. The stage runs before `accelerator.prepare`,
on every process with the same seed and data order; DDP then broadcasts rank 0's weights anyway.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from clip_td.base.io import InputError

logger = logging.getLogger("pretrain")


def caption_phrases(row: Dict[str, str]) -> List[str]:
    """Adjective-noun phrases of a caption, read off its `parse` column ([word, POS, dep, head]):
    one "<adj> <noun>" per adjective modifying a noun ("a large red star" -> "large star",
    "red star"). Bound attributes: which colour goes with which shape, that a bag of concepts
    cannot say. Empty when the row has no parse."""
    raw = row.get("parse") or ""
    if not raw:
        return []
    tokens = json.loads(raw)
    out = []
    for word, pos, _dep, head in tokens:
        if pos == "ADJ" and 0 <= int(head) < len(tokens) and tokens[int(head)][1] == "NOUN":
            out.append(f"{word.lower()} {tokens[int(head)][0].lower()}")
    return sorted(set(out))


def phrase_targets(rows: Sequence[Dict[str, str]], min_count: int = 5) -> Tuple[List[str], torch.Tensor]:
    """The phrases seen in at least `min_count` rows (sorted) and the (N, P) multi-hot targets:
    weak labels from the captions themselves (Joulin et al., 2016), as noisy as the captions."""
    return _multi_hot([caption_phrases(r) for r in rows], min_count)


def _multi_hot(per_row: Sequence[Sequence[str]], min_count: int) -> Tuple[List[str], torch.Tensor]:
    """The labels held by at least `min_count` rows (sorted; a label repeated in one row counts
    once) and the (N, L) multi-hot targets of `per_row` over them."""
    counts = Counter(label for labels in per_row for label in set(labels))
    vocab = sorted(label for label, n in counts.items() if n >= min_count)
    index = {label: i for i, label in enumerate(vocab)}
    out = torch.zeros(len(per_row), len(vocab))
    for n, labels in enumerate(per_row):
        for label in labels:
            if label in index:
                out[n, index[label]] = 1.0
    return vocab, out


def fact_targets(rows: Sequence[Dict[str, str]], min_count: int = 5, source: str = "corpus",
                 sep: str = "|", column: str = "facts") -> Tuple[List[str], torch.Tensor]:
    """Scene-graph labels from the `facts` column ("red circle|circle left of square|..."): the facts
    seen in at least `min_count` rows (sorted) and the (N, F) multi-hot targets. Unlike a bag of
    concepts they say which attribute goes with which object and where objects are relative to each
    other (annotations of the Visual Genome kind). `column="places"`: the same from the `places`
    column ("circle at top left": where each shape is in the picture)."""
    if rows and column not in rows[0]:
        raise InputError(f"{source}: image_init.{column}=true needs a `{column}` column (facts separated by {sep!r}); "
                         f"the columns are {sorted(rows[0])}")
    vocab, out = _multi_hot([[f.strip() for f in (r.get(column) or "").split(sep) if f.strip()] for r in rows],
                            min_count)
    if not vocab:
        raise InputError(f"{source}: no fact in the `{column}` column occurs in image_init.fact_min_count={min_count} rows")
    return vocab, out


def count_targets(rows: Sequence[Dict[str, str]], source: str = "corpus", sep: str = "|") -> Tuple[List[str], torch.Tensor]:
    """How many shapes each picture holds (one per entry of its `places` column), as ordinal labels
    "at least k shapes" for k = 1 .. the most any row holds, and the (N, K) targets: a picture of
    three shapes is on for k = 1, 2, 3. Ordinal, so a count of four is nearer three than six."""
    if rows and "places" not in rows[0]:
        raise InputError(f"{source}: image_init.counts=true needs a `places` column (one \"circle at top left\" "
                         f"entry per object, separated by {sep!r}); the columns are {sorted(rows[0])}")
    from pretrain.data import count_places

    n = torch.tensor([count_places(r.get("places") or "", sep) for r in rows])
    most = int(n.max()) if len(n) else 0
    if most == 0:
        raise InputError(f"{source}: image_init.counts=true, but no row's `places` column names an object")
    k = torch.arange(1, most + 1)
    return [f"at least {int(i)} shapes" for i in k], (n.unsqueeze(1) >= k.unsqueeze(0)).float()


def image_output_dim(visual: nn.Module, image_size: int) -> int:
    """Width of the image tower's pooled output (open_clip towers differ in where they keep it)."""
    dim = getattr(visual, "output_dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    with torch.no_grad():
        return int(visual(torch.zeros(1, 3, image_size, image_size)).shape[-1])


def concept_bce_steps(visual: nn.Module, dataset: Dataset, targets: torch.Tensor, steps: int, lr: float,
                      batch_size: int, seed: int, image_size: int, weight_decay: float = 1e-4,
                      warmup_frac: float = 0.05, show_progress: bool = True) -> Dict[str, float]:
    """Train `visual` in place with BCE on multi-hot `targets` (N, K) through a linear head on its
    pooled output (the head is thrown away afterwards). `dataset[i]` must give {"image": (3, H, W)}
    for row i. Linear warm-up over `warmup_frac` of the steps, then cosine decay. Returns {"first_loss", "last_loss"}
    (means over the first and the last 10 % of steps)."""
    if steps <= 0:
        return {}
    if targets.shape[0] != len(dataset):
        raise ValueError(f"targets has {targets.shape[0]} rows for a dataset of {len(dataset)}")
    if not bool(targets.any()):
        raise InputError("config key image_init.steps: the training rows have no concepts (empty `concepts` column)")
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(image_output_dim(visual, image_size), targets.shape[1])
    nn.init.zeros_(head.weight)  # a zero head: the first BCE is exactly log 2
    nn.init.zeros_(head.bias)
    params = [p for p in visual.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, min(steps - 1, max(1, round(warmup_frac * steps))), steps)
    batch_size = min(batch_size, len(dataset))
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=True, drop_last=True, generator=gen,
                        collate_fn=_collate)
    visual.train()
    losses: List[float] = []
    bar = tqdm(total=steps, desc="image init", disable=not show_progress)
    while len(losses) < steps:
        for batch in loader:
            logits = head(visual(batch["image"]))
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets[batch["index"]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(bce=f"{losses[-1]:.4f}")
            if len(losses) >= steps:
                break
    bar.close()
    tail = max(1, steps // 10)
    return {"first_loss": sum(losses[:tail]) / tail, "last_loss": sum(losses[-tail:]) / tail}


@torch.no_grad()
def standardise_output(visual: nn.Module, dataset: Dataset, rows: int = 4096, batch_size: int = 256) -> Dict[str, float]:
    """Fold a per-dimension standardisation of the tower's pooled output into its last linear
    layer: y' = (W x + b - mean) / std over the first `rows` images of `dataset`, so every output
    dimension has mean 0 and variance 1 on them: the shared offset of every image's embedding is
    removed and no dimension dominates the cosine with a text embedding (measured on the scene-graph
    teacher: better colour binding and size read zero-shot; docs/results/teacher_recipes section 7).
    The architecture is unchanged (only W and b are rewritten), so the exported
    folder loads as before. Needs a tower whose output is an nn.Linear with a bias (open_clip's
    ModifiedResNet: `attnpool.c_proj`). Returns the spread of the std before the fold."""
    proj = getattr(getattr(visual, "attnpool", None), "c_proj", None)
    if not isinstance(proj, nn.Linear) or proj.bias is None:
        raise InputError("config key image_init.standardise: needs an image tower whose output layer is a linear "
                         "layer with a bias (open_clip's ModifiedResNet, attnpool.c_proj)")
    was_training = visual.training
    visual.eval()
    n = min(rows, len(dataset))
    outs = []
    for start in range(0, n, batch_size):
        images = torch.stack([dataset[i]["image"] for i in range(start, min(n, start + batch_size))])
        outs.append(visual(images).float())
    y = torch.cat(outs)
    mean, std = y.mean(0), y.std(0).clamp_min(1e-6)
    proj.weight.div_(std.unsqueeze(1).to(proj.weight.dtype))
    proj.bias.sub_(mean.to(proj.bias.dtype)).div_(std.to(proj.bias.dtype))
    visual.train(was_training)
    return {"std_min": float(std.min()), "std_max": float(std.max()), "rows": n}


class _Indexed(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Dict:
        return {"image": self.dataset[i]["image"], "index": i}


def _collate(items: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    return {"image": torch.stack([it["image"] for it in items]), "index": torch.tensor([it["index"] for it in items])}
