"""The one writer of open_clip's `local-dir:` format: `open_clip_config.json` (+ safetensors).

`write_open_clip_config` writes the config file alone (a config-only folder is how a declared
architecture goes through open_clip's own factory); `export_teacher` writes a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import torch.nn as nn
from safetensors.torch import save_file

from clip_td.base.io import PathLike, atomic_path

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def write_open_clip_config(folder: PathLike, model_cfg: Dict[str, Any], preprocess_cfg: Dict[str, Any]) -> Path:
    """`<folder>/open_clip_config.json` = {"model_cfg", "preprocess_cfg"}; returns its path."""
    path = Path(folder) / CONFIG_NAME
    path.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    return path


def export_teacher(model: nn.Module, model_cfg: Dict[str, Any], preprocess_cfg: Dict[str, Any], out_dir: PathLike) -> Path:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `out_dir`, atomically
    (the folder appears complete or not at all). `model` must be the bare open_clip model:
    training-only heads are not exported."""
    out_dir = Path(out_dir)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_open_clip_config(tmp, model_cfg, preprocess_cfg)
        save_file(state, str(tmp / WEIGHTS_NAME))
    return out_dir
