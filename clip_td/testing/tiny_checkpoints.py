"""Tiny open_clip teachers saved in the real `local-dir:` format, for tests and benchmarks.

Nothing here downloads: the model is built from a small `model_cfg` dict and written as
`open_clip_config.json` + `open_clip_model.safetensors`, exactly what `pretrain.export` and
`open_clip.create_model_and_transforms("local-dir:<dir>")` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from clip_td.base.io import PathLike
from clip_td.base.open_clip_dir import save_open_clip_dir


def tiny_clip_config(image_size: int = 32, patch_size: int = 8, width: int = 32, embed_dim: int = 32,
                     context_length: int = 24, layers: int = 1, resnet: bool = False) -> Dict[str, Any]:
    """An open_clip `model_cfg` for a small ViT (or, `resnet`, a ModifiedResNet with stem width
    `width // 4`, one block per stage and a one-head attention pool) + text transformer."""
    vision = {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
              "head_width": 32 if width >= 64 else width // 2}
    if resnet:
        vision = {"image_size": image_size, "layers": [1, 1, 1, 1], "width": width // 4, "head_width": width * 8}
    return {
        "embed_dim": embed_dim,
        "vision_cfg": vision,
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width,
                     "heads": max(2, width // 32), "layers": layers},
    }


def save_tiny_teacher(out_dir: PathLike, seed: int = 0, **cfg_kwargs: Any) -> Path:
    """Build a random tiny open_clip CLIP and save it as a `local-dir:` teacher; returns the dir."""
    import open_clip

    model_cfg = tiny_clip_config(**cfg_kwargs)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    size = model_cfg["vision_cfg"]["image_size"]
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {"size": size, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    return save_open_clip_dir(model.state_dict(), config["model_cfg"], config["preprocess_cfg"], out_dir)
