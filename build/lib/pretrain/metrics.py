"""Teacher evaluation metrics: image-text retrieval (R@1/R@5), zero-shot classification and DiHT's
few-shot linear probe (zero-shot initialised, ||W - W0|| <= delta) beside a plain probe.
`pretrain.teacher_eval` runs them on a trained teacher."""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from open_clip import build_zero_shot_classifier
from PIL import Image


@torch.no_grad()
def encode_images(model, paths: Sequence[str], transform: Callable, device, batch_size: int = 256) -> torch.Tensor:
    """Image files -> (N, d) L2-normalised embeddings."""
    out = []
    for i in range(0, len(paths), batch_size):
        ims = []
        for p in paths[i : i + batch_size]:
            with Image.open(p) as im:
                ims.append(transform(im.convert("RGB")))
        out.append(model.encode_image(torch.stack(ims).to(device), normalize=True).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], tokenizer: Callable, device, batch_size: int = 512) -> torch.Tensor:
    """Strings -> (N, d) L2-normalised embeddings."""
    out = [model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device), normalize=True).float().cpu()
           for i in range(0, len(texts), batch_size)]
    return torch.cat(out)


def recall_at_k(sim: torch.Tensor, gt: List[set], ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """sim: (Q, N) scores; gt[q] = set of correct columns -> {k: percent of queries with a hit in the top k}."""
    top = sim.topk(max(ks), dim=1).indices.tolist()
    return {k: 100.0 * sum(bool(set(t[:k]) & g) for t, g in zip(top, gt)) / len(gt) for k in ks}


def retrieval(model, image_paths: Sequence[str], captions: Sequence[str], transform, tokenizer, device) -> Dict[str, float]:
    """Pairs (image_paths[i], captions[i]) -> i2t/t2i R@1 and R@5 in percent; repeated images
    are encoded once and count every one of their captions as correct."""
    uniq = list(dict.fromkeys(image_paths))
    col = {p: i for i, p in enumerate(uniq)}
    img = encode_images(model, uniq, transform, device)  # (I, d)
    txt = encode_texts(model, captions, tokenizer, device)  # (T, d)
    img_of_text = [col[p] for p in image_paths]
    texts_of_img = [set() for _ in uniq]
    for t, i in enumerate(img_of_text):
        texts_of_img[i].add(t)
    sim = img @ txt.T
    i2t = recall_at_k(sim, texts_of_img)
    t2i = recall_at_k(sim.T, [{i} for i in img_of_text])
    return {"i2t_r1": i2t[1], "i2t_r5": i2t[5], "t2i_r1": t2i[1], "t2i_r5": t2i[5],
            "mean_r1": (i2t[1] + t2i[1]) / 2}


def zeroshot_weights(model, tokenizer, classnames: Sequence[str], templates: Sequence[str], device) -> torch.Tensor:
    """(d, C) class embeddings from prompt ensembles (open_clip's builder)."""
    return build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device).float().cpu()


def zeroshot_accuracy(img: torch.Tensor, weights: torch.Tensor, labels: Sequence[int]) -> float:
    """img (N, d), weights (d, C) -> top-1 accuracy in percent."""
    pred = (img @ weights).argmax(1)
    return 100.0 * (pred == torch.tensor(labels)).float().mean().item()


def kshot_split(labels: Sequence[int], k: int, seed: int):
    """k train indices per class (seeded), the rest for testing."""
    g = torch.Generator().manual_seed(seed)
    train = []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        train += [idx[j] for j in torch.randperm(len(idx), generator=g)[:k].tolist()]
    chosen = set(train)
    return sorted(train), [i for i in range(len(labels)) if i not in chosen]


def _project(t: torch.Tensor, radius: float) -> torch.Tensor:
    """Project onto the L2 (Frobenius) ball of the given radius."""
    n = t.norm()
    return t * (radius / n) if n > radius else t


def fit_probe(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, delta: float = float("inf"),
              delta_b: float = float("inf"), steps: int = 200, lr: float = 0.05, weight_decay: float = 0.0) -> Callable:
    """Linear probe W = W0 + D, logits = x W + b, trained by projected gradient descent with
    ||D|| <= delta and ||b|| <= delta_b (DiHT); delta = inf and W0 = 0 is a plain probe.
    x: (n, d), y: (n,), w0: (d, C) -> predict(x) -> (m, C) logits."""
    d_mat = torch.zeros_like(w0, requires_grad=True)
    b = torch.zeros(w0.shape[1], requires_grad=True)
    opt = torch.optim.Adam([d_mat, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(x @ (w0 + d_mat) + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            d_mat.copy_(_project(d_mat, delta))
            b.copy_(_project(b, delta_b))
    w, bias = (w0 + d_mat).detach(), b.detach()
    return lambda z: z @ w + bias


def fewshot_probe(img: torch.Tensor, labels: Sequence[int], zs_weights: torch.Tensor, logit_scale: float,
                  shots: Sequence[int] = (1, 2, 4, 8), seed: int = 0, delta: float = 1.0, delta_b: float = 0.5,
                  steps: int = 200) -> Dict[str, Dict[str, float]]:
    """Accuracy (percent) on the non-shot images of a plain probe and DiHT's zero-shot
    initialised, norm-bounded probe at each k; img (N, d), zs_weights (d, C)."""
    y = torch.tensor(labels)
    out: Dict[str, Dict[str, float]] = {"plain": {}, "diht": {}}
    w0 = zs_weights * logit_scale  # the zero-shot classifier's own logits as the starting point
    for k in shots:
        tr, te = kshot_split(labels, k, seed)
        if not te:
            continue
        plain = fit_probe(img[tr], y[tr], torch.zeros_like(w0), steps=steps, weight_decay=1e-4)
        diht = fit_probe(img[tr], y[tr], w0, delta=delta * w0.norm().item(), delta_b=delta_b, steps=steps)
        for name, fn in (("plain", plain), ("diht", diht)):
            out[name][f"{k}shot"] = 100.0 * (fn(img[te]).argmax(1) == y[te]).float().mean().item()
    return out
