"""The student's image initialisation: supervised concept classification before MLM + ITM.

ViLT does not learn to see from its captions: its transformer starts from a ViT trained on
ImageNet-21k's labels. A ViT learns the synthetic world's shapes only from many labelled images
(`bench/shape_probe.py`: 53 % after 128,000 single-object images, where a small conv net needs
20,000 for 99 %), far more than the captions corpus holds. This stage is the synthetic world's
ImageNet: `image_init.steps` batches of freshly rendered scenes of the source style (never the
shifted one, which the students' data never shows), read by ViLT with an empty caption ([CLS]
[SEP]) and classified from its pooled output. Single-object scenes (`image_init.max_objects` 1)
are labelled with their object's colour, shape and size (three linear heads, the sum of three
cross-entropies); scenes of 1 to N objects with the set of what they show, every attribute and
bound pair (one multi-label head over LABELS, binary cross-entropy). With `image_init.dense`
every image patch is labelled instead: the colour, shape and size of the object drawn over most
of it, or background (three linear heads on each patch token, cross-entropy averaged over the
patches), as the region features of VL-BERT and UNITER come from a detector trained on Visual
Genome's boxes with object and attribute labels. The heads are dropped afterwards, as ViLT drops
ImageNet's classifier; MLM + ITM then start from the weights.

Scenes come from a `random.Random` seeded by (seed, step), so a batch is a function of those
alone; held-out scenes use a seed no training step uses.

The ViltModel the stage leaves is saved as `<output_dir>/image_init.safetensors`; another run
starts MLM + ITM from it with `image_init.weights=<that file>` instead of training the stage
again (as ViLT loads its ViT), to compare MLM + ITM recipes on one image initialisation.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from clip_td.base.io import InputError, atomic_path
from clip_td.base.vilt_order import grid_ordered
from tasks.synthetic.render import SUPERSAMPLE, object_map, render_scene
from tasks.synthetic.scene import sample_scene
from tasks.synthetic.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES

logger = logging.getLogger("pretrain.student")

#: The labelled attributes of a scene's one object and their classes, in head order.
ATTRIBUTES: Dict[str, Tuple[str, ...]] = {"colour": tuple(COLOUR_NAMES), "shape": tuple(SHAPES),
                                          "size": tuple(SIZE_NAMES)}
#: A patch's label (colour, shape, size indices) when no object covers it: one past each attribute's classes.
BACKGROUND: Tuple[int, ...] = tuple(len(classes) for classes in ATTRIBUTES.values())
HELD_OUT_SEED = -1  # the seed of the held-out scenes (training steps are >= 0)

#: Scenes of several objects (`image_init.max_objects` > 1) are labelled with the set of what they
#: show, multi-hot over these groups: each attribute alone and the bound pairs ("red circle",
#: "large circle"), which only a model that tells the objects apart can get right.
GROUPS: Dict[str, Tuple[str, ...]] = {
    **ATTRIBUTES,
    "colour_shape": tuple(f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES),
    "size_shape": tuple(f"{z} {s}" for z in SIZE_NAMES for s in SHAPES),
}
LABELS: Tuple[str, ...] = tuple(f"{g}:{name}" for g, names in GROUPS.items() for name in names)
_INDEX = {label: i for i, label in enumerate(LABELS)}


def scene_labels(objects: List[Dict[str, Any]]) -> torch.Tensor:
    """The multi-hot (len(LABELS),) target of a scene's objects."""
    y = torch.zeros(len(LABELS))
    for o in objects:
        for label in (f"colour:{o['colour']}", f"shape:{o['shape']}", f"size:{o['size']}",
                      f"colour_shape:{o['colour']} {o['shape']}", f"size_shape:{o['size']} {o['shape']}"):
            y[_INDEX[label]] = 1.0
    return y


#: A patch belongs to the object covering the largest share of it when that share is at least
#: this (a small object, 10 pixels across, covers at least 1/8 of one of the 8-pixel patches it
#: falls on); otherwise it is background.
MIN_COVER = 0.125


def patch_labels(scene: Dict[str, Any], image_size: int, patch_size: int) -> torch.Tensor:
    """(G * G, 3) long, G = image_size // patch_size, patches in row-major order: the colour,
    shape and size index of the object drawn over each patch, len(classes) for background."""
    drawn = object_map(scene, image_size)
    g, cell = image_size // patch_size, patch_size * SUPERSAMPLE
    cells = drawn[: g * cell, : g * cell].reshape(g, cell, g, cell).transpose(0, 2, 1, 3).reshape(g * g, -1)
    table = np.array([BACKGROUND] + [[ATTRIBUTES[a].index(o[a]) for a in ATTRIBUTES] for o in scene["objects"]])
    counts = np.stack([(cells == k).sum(axis=1) for k in range(len(table))], axis=1)  # (G * G, 1 + objects)
    counts[:, 0] = 0  # background pixels never win a patch: it is background when no object covers enough
    owner = np.where(counts.max(axis=1) >= MIN_COVER * cell * cell, counts.argmax(axis=1), 0)
    return torch.from_numpy(table[owner]).long()


def scene_batch(seed: int, step: int, n: int, image_size: int, transform: Any,
                max_objects: int = 1, patch_size: int = 0, stream: str = "image-init",
                return_scenes: bool = False) -> Tuple:
    """(pixels (n, 3, side, side), labels) of `n` source-style scenes drawn from
    `random.Random((stream, seed, step))`. With `patch_size` (dense labels): 1 to `max_objects`
    objects, labels (n, G * G, 3) from `patch_labels`. Otherwise one object each (`max_objects`
    1): labels (n, 3), its colour, shape and size indices; or 1 to `max_objects` objects: labels
    (n, len(LABELS)) multi-hot. `return_scenes` adds the scenes (their objects and places) third.
    Another `stream` draws other scenes for the same (seed, step)."""
    rng = random.Random(f"student-{stream}/{seed}/{step}")
    scenes = []
    images, labels = [], []
    for _ in range(n):
        if patch_size:
            scene = sample_scene(rng, style="source", min_objects=1, max_objects=max_objects)
            labels.append(patch_labels(scene, image_size, patch_size))
        elif max_objects == 1:
            scene = sample_scene(rng, n_objects=1, style="source")
            obj = scene["objects"][0]
            labels.append(torch.tensor([ATTRIBUTES[a].index(obj[a]) for a in ATTRIBUTES]))
        else:
            scene = sample_scene(rng, style="source", min_objects=1, max_objects=max_objects)
            labels.append(scene_labels(scene["objects"]))
        images.append(transform(render_scene(scene, image_size, rng.getrandbits(32))))
        scenes.append(scene)
    if return_scenes:
        return torch.stack(images), torch.stack(labels), scenes
    return torch.stack(images), torch.stack(labels)


def _blank_text(text: torch.Tensor, b: int) -> Dict[str, torch.Tensor]:
    ids = text.unsqueeze(0).expand(b, -1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class PatchHeads(nn.Module):
    """The dense labels' heads: one linear layer per attribute (its classes + background) on
    every patch token of a ViltModel reading the image with the text [CLS] [SEP]. The patches
    are read in row-major grid order: ViLT's embedding is wrapped for the call only (ViLT draws
    its patch order at random; attention does not care, a per-patch label does)."""

    def __init__(self, hidden: int, cls_id: int, sep_id: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden, b + 1) for b in BACKGROUND)
        self.register_buffer("text", torch.tensor([cls_id, sep_id]), persistent=False)

    def forward(self, vilt: nn.Module, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        """[(B, G * G, classes + 1) per attribute]."""
        emb = vilt.embeddings
        wrapped = "visual_embed" not in vars(emb)
        if wrapped:
            emb.visual_embed = grid_ordered(emb.visual_embed)
        try:
            b = pixel_values.shape[0]
            pixel_mask = torch.ones(b, *pixel_values.shape[-2:], dtype=torch.long, device=pixel_values.device)
            out = vilt(**_blank_text(self.text, b), pixel_values=pixel_values, pixel_mask=pixel_mask)
        finally:
            if wrapped:
                del emb.visual_embed
        return [head(out.last_hidden_state[:, len(self.text) + 1:]) for head in self.heads]  # after the image CLS


class ImageClassifier(nn.Module):
    """A ViltModel with linear heads; the text is [CLS] [SEP]. On the pooled output: one head per
    attribute (single objects), or one multi-label head over LABELS (`multi`). With `dense`:
    `PatchHeads` on every patch token, in grid order (`patches`: heads trained elsewhere, to
    measure them)."""

    def __init__(self, vilt: nn.Module, cls_id: int, sep_id: int, multi: bool = False, dense: bool = False,
                 patches: Optional["PatchHeads"] = None) -> None:
        super().__init__()
        self.vilt = vilt
        hidden = vilt.config.hidden_size
        if dense:
            self.patches = patches if patches is not None else PatchHeads(hidden, cls_id, sep_id)
        else:
            sizes = [len(LABELS)] if multi else [len(classes) for classes in ATTRIBUTES.values()]
            self.heads = nn.ModuleList(nn.Linear(hidden, k) for k in sizes)
            self.register_buffer("text", torch.tensor([cls_id, sep_id]), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        if hasattr(self, "patches"):
            return self.patches(self.vilt, pixel_values)
        b = pixel_values.shape[0]
        pixel_mask = torch.ones(b, *pixel_values.shape[-2:], dtype=torch.long, device=pixel_values.device)
        out = self.vilt(**_blank_text(self.text, b), pixel_values=pixel_values, pixel_mask=pixel_mask)
        return [head(out.pooler_output) for head in self.heads]


def classification_loss(logits: List[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The sum of the attributes' cross-entropies (per patch, averaged over the patches, when the
    labels are dense (B, N, 3)), or the multi-label BCE (mean over labels)."""
    if labels.is_floating_point():
        return F.binary_cross_entropy_with_logits(logits[0].float(), labels)
    return sum(F.cross_entropy(lg.float().flatten(0, -2), labels[..., k].flatten()) for k, lg in enumerate(logits))


@torch.no_grad()
def held_out_accuracy(model: ImageClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 100) -> Dict[str, float]:
    """Accuracy (%) on held-out scenes: per attribute (single objects); per group of LABELS the
    share of scenes whose predicted set (logit > 0) is exactly the true one (several objects); or
    per attribute over the patches an object covers, and `background` (every head says
    background) over the rest (dense labels)."""
    was = model.training
    model.eval()
    multi, dense = labels.is_floating_point(), labels.dim() == 3
    if dense:
        bg = torch.tensor(BACKGROUND)
        on_object = labels[..., 1] != bg[1]
        names = [*ATTRIBUTES, "background"]
        right, total = torch.zeros(len(names)), torch.tensor([float(on_object.sum())] * 3 + [float((~on_object).sum())])
    else:
        names = list(GROUPS) if multi else list(ATTRIBUTES)
        right, total = torch.zeros(len(names)), torch.full((len(names),), float(len(labels)))
    for i in range(0, len(labels), batch_size):
        logits, y = model(pixels[i:i + batch_size]), labels[i:i + batch_size]
        if dense:
            pred = torch.stack([lg.argmax(-1).cpu() for lg in logits], dim=-1)  # (b, N, 3)
            obj = y[..., 1] != bg[1]
            right[:3] += ((pred == y) & obj.unsqueeze(-1)).sum(dim=(0, 1))
            right[3] += ((pred == bg).all(-1) & ~obj).sum()
        elif multi:
            hit = (logits[0].cpu() > 0) == y.bool()
            start = 0
            for g, group in enumerate(GROUPS.values()):
                right[g] += hit[:, start:start + len(group)].all(dim=1).sum()
                start += len(group)
        else:
            right += torch.stack([(lg.argmax(-1).cpu() == y[:, k]).sum() for k, lg in enumerate(logits)])
    model.train(was)
    return {name: 100.0 * float(right[k]) / max(float(total[k]), 1.0) for k, name in enumerate(names)}


def image_init(accelerator: Any, vilt: nn.Module, tokenizer: Any, cfg: Any, transform: Any) -> Dict[str, Any]:
    """Train `vilt` in place for `cfg.image_init.steps` steps; returns the stage's metrics
    (held-out accuracy per attribute every `eval_every` steps and at the end, step time)."""
    ic = cfg.image_init
    patch_size = int(vilt.config.patch_size) if ic.dense else 0
    model = ImageClassifier(vilt, tokenizer.cls_token_id, tokenizer.sep_token_id, multi=ic.max_objects > 1,
                            dense=ic.dense)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ic.lr, weight_decay=cfg.train.weight_decay)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.train.warmup * ic.steps), ic.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    n = accelerator.num_processes
    held_pixels, held_labels = scene_batch(cfg.seed, HELD_OUT_SEED, ic.eval_scenes, cfg.data.image_size, transform,
                                           ic.max_objects, patch_size)
    held_pixels = held_pixels.to(accelerator.device)
    curve: Dict[str, Dict[str, float]] = {}  # by str(step), as metrics.json holds it
    times: List[float] = []
    bar = tqdm(total=ic.steps, desc="student image init", disable=not accelerator.is_main_process)
    for step in range(1, ic.steps + 1):
        t0 = time.perf_counter()
        # each process renders its own share of the step's batch: (step, process) seeds differ
        pixels, labels = scene_batch(cfg.seed, (step - 1) * n + accelerator.process_index, ic.batch_size,
                                     cfg.data.image_size, transform, ic.max_objects, patch_size)
        loss = classification_loss(model(pixels.to(accelerator.device)), labels.to(accelerator.device))
        accelerator.backward(loss)
        if cfg.train.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
        value = float(loss.detach())
        if not np.isfinite(value):
            from clip_td.base.scripts import TrainingDiverged

            raise TrainingDiverged(f"image init: non-finite loss at step {step}")
        bar.update(1)
        if step % ic.eval_every == 0 or step == ic.steps:
            acc = curve[str(step)] = held_out_accuracy(accelerator.unwrap_model(model), held_pixels, held_labels)
            bar.set_postfix({"loss": f"{value:.3f}", **{a: f"{v:.1f}" for a, v in acc.items()}})
            logger.info("image init step %d: loss=%.4f held-out %s", step, value, acc)
    bar.close()
    # forget the classifier and its optimizer, so that the run's checkpoints hold the MLM + ITM
    # model alone (model.safetensors) and a resumed run, which skips this stage, matches them
    accelerator.free_memory()
    steady = times[min(5, len(times) // 2):] or times
    return {"steps": ic.steps, "batch_size": ic.batch_size, "held_out_scenes": ic.eval_scenes,
            "accuracy_by_step": curve, "final": curve[str(ic.steps)], "step_time_s": sum(steady) / len(steady),
            "max_objects": ic.max_objects, "dense": ic.dense,
            "chance": ({a: 100.0 / len(c) for a, c in ATTRIBUTES.items()}
                       if ic.max_objects == 1 or ic.dense else None)}


def save_image_init(vilt: nn.Module, path: Path) -> None:
    """Write the ViltModel's weights (safetensors), all at once or not at all."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in vilt.state_dict().items()}, str(tmp))


def load_image_init(vilt: nn.Module, path: str) -> None:
    """Load `save_image_init`'s file into `vilt` (every tensor, same shapes); one InputError
    naming the file and key otherwise. safetensors holds tensors only: opening runs no code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = f"config key image_init.weights={path}"
    if not Path(path).is_file():
        raise InputError(f"{where}: file not found (a run's image_init.safetensors)")
    try:
        state = load_file(path)
    except SafetensorError as e:
        raise InputError(f"{where}: not a safetensors file ({e})") from None
    own = vilt.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        detail = "; ".join(f"{what}: {keys[:3]}" for what, keys in
                           (("missing", missing), ("unexpected", extra), ("other shape", wrong)) if keys)
        raise InputError(f"{where}: not the image initialisation of this student ({detail}); it must come "
                         f"from a run with the same model.* keys, data.image_size and vocabulary")
    vilt.load_state_dict(state)
