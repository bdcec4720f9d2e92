"""Export a trained CLIP as an open_clip `local-dir:` folder (the writer itself is
`clip_td.base.open_clip_dir`, shared with the tiny test checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch.nn as nn

from clip_td.base.io import PathLike
from clip_td.base.open_clip_dir import CONFIG_NAME, WEIGHTS_NAME, save_open_clip_dir, write_open_clip_config

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_teacher", "write_open_clip_config"]


def export_teacher(model: nn.Module, model_cfg: Dict[str, Any], preprocess_cfg: Dict[str, Any], out_dir: PathLike,
                   tokenizer: Optional[Any] = None) -> Path:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `out_dir`, atomically
    (the folder appears complete or not at all). `model` must be the bare open_clip model:
    training-only heads are not exported. A fitted vocabulary (`model_cfg.text_cfg` names an HF
    tokenizer) travels with the weights: `tokenizer.save_pretrained` writes its files there too."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    fitted = bool(model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"))
    if fitted and not hasattr(tokenizer, "save_pretrained"):
        raise ValueError("export_teacher: the text tower reads a fitted vocabulary; pass its tokenizer")
    extra = tokenizer.save_pretrained if fitted else None
    return save_open_clip_dir(state, model_cfg, preprocess_cfg, Path(out_dir), extra=extra)
