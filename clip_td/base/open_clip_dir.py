"""The one writer of open_clip's `local-dir:` format: `open_clip_config.json` (+ safetensors).

`open_clip.create_model_and_transforms("local-dir:<dir>")` reads exactly these two files.
`write_open_clip_config` writes the config alone (a config-only folder is how a declared
architecture goes through open_clip's own factory); `save_open_clip_dir` writes a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from clip_td.base.io import PathLike, atomic_path

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def write_open_clip_config(folder: PathLike, model_cfg: Dict[str, Any], preprocess_cfg: Dict[str, Any]) -> Path:
    """`<folder>/open_clip_config.json` = {"model_cfg", "preprocess_cfg"}; returns its path."""
    path = Path(folder) / CONFIG_NAME
    path.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    return path


def save_open_clip_dir(state: Dict[str, Any], model_cfg: Dict[str, Any], preprocess_cfg: Dict[str, Any],
                       out_dir: PathLike, extra: Optional[Callable[[str], Any]] = None) -> Path:
    """Write the config and the weights (`state`: name -> tensor) into `out_dir`, atomically (the
    folder appears complete or not at all). `extra(folder)` writes more files into it (a
    tokenizer's `save_pretrained`)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_open_clip_config(tmp, model_cfg, preprocess_cfg)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS_NAME))
        if extra is not None:
            extra(str(tmp))
    return out_dir
