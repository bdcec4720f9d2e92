"""DiHT's concept distillation: a frozen unimodal image teacher's soft concept distribution,
matched with KL by a training-only linear head on the CLIP image tower.

Teachers (`CONCEPT_TEACHERS`): `synthetic` (a small CNN trained on the corpus' `concepts`
column, cached), `timm:<arch>` and `torchvision:<arch>` (any classifier; weights from a local
file, its classes are the concept vocabulary).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from clip_td.base.io import InputError, atomic_path, cache_root
from clip_td.base.registry import Registry

CONCEPT_TEACHERS = Registry("concept teacher")


def concept_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean; logits (B, K) -> scalar (float32)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class SmallConceptNet(nn.Module):
    """A few conv layers -> (B, K) multi-label concept logits; the synthetic world's unimodal teacher."""

    def __init__(self, num_concepts: int, width: int = 32) -> None:
        super().__init__()
        layers, c = [], 3
        for w in (width, width * 2, width * 4):
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, num_concepts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, K)."""
        return self.head(self.features(x))


class FrozenConceptTeacher(nn.Module):
    """Eval-mode, no-grad wrapper; re-normalises CLIP-normalised pixels to the teacher's input."""

    def __init__(self, net: nn.Module, clip_mean: Sequence[float], clip_std: Sequence[float],
                 mean: Sequence[float], std: Sequence[float], size: Optional[int] = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        view = lambda v: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)  # noqa: E731
        self.register_buffer("scale", view(clip_std) / view(std), persistent=False)
        self.register_buffer("shift", (view(clip_mean) - view(mean)) / view(std), persistent=False)
        self.size = size

    def train(self, mode: bool = True) -> "FrozenConceptTeacher":
        return self  # stays in eval mode inside a training model

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, H, W) normalised with the CLIP mean/std -> (B, K) teacher logits."""
        x = pixels.float() * self.scale + self.shift
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x).float()


def _fingerprint(train_file: str, num_concepts: int, steps: int, seed: int) -> str:
    st = Path(train_file).stat()
    key = json.dumps([str(Path(train_file).resolve()), st.st_size, st.st_mtime_ns, num_concepts, steps, seed])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def train_synthetic_teacher(dataset, targets: torch.Tensor, steps: int = 300, batch_size: int = 128,
                            lr: float = 3e-3, seed: int = 0) -> SmallConceptNet:
    """Fit SmallConceptNet with BCE on multi-hot targets (N, K); `dataset` yields {"image", "index"}."""
    torch.manual_seed(seed)
    net = SmallConceptNet(targets.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # never larger than the corpus, so an epoch always holds at least one batch
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed), collate_fn=_collate_images)
    step = 0
    while step < steps:
        for batch in loader:
            loss = F.binary_cross_entropy_with_logits(net(batch["image"]), targets[batch["index"]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return net.eval()


def _collate_images(items):
    return {"image": torch.stack([it["image"] for it in items]), "index": torch.tensor([it["index"] for it in items])}


@CONCEPT_TEACHERS.register("synthetic")
def synthetic_teacher(train_file: str, dataset, targets: torch.Tensor, steps: int, seed: int, **_) -> nn.Module:
    """Train (once, then cached by corpus fingerprint) the small concept classifier."""
    path = cache_root() / "concept_teachers" / f"{_fingerprint(train_file, targets.shape[1], steps, seed)}.safetensors"
    net = SmallConceptNet(targets.shape[1])
    if path.is_file():
        net.load_state_dict(load_file(str(path)))
        return net.eval()
    net = train_synthetic_teacher(dataset, targets, steps=steps, seed=seed)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    return net


@CONCEPT_TEACHERS.register("timm")
def timm_teacher(arch: str, weights: Optional[str] = None, num_classes: int = 0, **_) -> nn.Module:
    """Any timm classifier; weights from a local file (safetensors or torch), no download."""
    import timm

    if weights is not None and not Path(weights).is_file():
        raise InputError(f"config key concept.teacher_weights: file not found: {weights}")
    kwargs = {"num_classes": num_classes} if num_classes else {}
    try:
        return timm.create_model(arch, pretrained=False, checkpoint_path="" if weights is None else weights, **kwargs)
    except RuntimeError as e:
        raise InputError(f"config key concept.teacher: {arch!r} is not a timm model ({e})") from None


@CONCEPT_TEACHERS.register("torchvision")
def torchvision_teacher(arch: str, weights: Optional[str] = None, num_classes: int = 0, **_) -> nn.Module:
    """Any torchvision classifier; weights from a local file (safetensors or torch, weights_only)."""
    import torchvision

    kwargs = {"num_classes": num_classes} if num_classes else {}
    try:
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
    except ValueError as e:
        raise InputError(f"config key concept.teacher: {arch!r} is not a torchvision model ({e})") from None
    if weights is not None:
        if not Path(weights).is_file():
            raise InputError(f"config key concept.teacher_weights: file not found: {weights}")
        state = load_file(weights) if weights.endswith(".safetensors") else torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return net


def create_concept_teacher(spec: str, **kwargs) -> nn.Module:
    """`synthetic`, `timm:<arch>` or `torchvision:<arch>` -> the bare classifier; an unknown kind
    is an InputError naming `concept.teacher` and the choices."""
    kind, _, arch = spec.partition(":")
    factory = CONCEPT_TEACHERS.get(kind, key="concept.teacher")
    if kind != "synthetic" and not arch:
        raise InputError(f"concept.teacher={spec!r}: expected {kind}:<arch>")
    return factory(arch=arch, **kwargs)
