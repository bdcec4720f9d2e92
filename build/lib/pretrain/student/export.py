"""The pretrained student folder, laid out as a ViLT hub checkpoint (e.g. dandelin/vilt-b32-mlm):

    config.json, model.safetensors     the ViltModel (`save_pretrained`; no MLM / ITM heads)
    tokenizer.json, tokenizer_config.json   the WordPiece tokenizer (AutoTokenizer loads it)
    preprocessor_config.json           ViltImageProcessor: size = the training image side, mean/std 0.5

so fine-tuning takes it as `student.pretrained=<folder>`: `ViltModel.from_pretrained`, its
`load_pretrained_tokenizer` and `image_settings` read these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ViltImageProcessor, ViltModel

from clip_td.base.io import PathLike, atomic_path

from pretrain.student.data import MEAN_STD


def image_processor(image_size: int, patch_size: int) -> ViltImageProcessor:
    return ViltImageProcessor(size={"shortest_edge": image_size}, size_divisor=patch_size,
                              image_mean=list(MEAN_STD), image_std=list(MEAN_STD))


def export_student(vilt: ViltModel, tokenizer: Any, image_size: int, out_dir: PathLike) -> Path:
    """Write the folder atomically (it appears complete or not at all)."""
    with atomic_path(out_dir) as tmp:
        vilt.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        image_processor(image_size, int(vilt.config.patch_size)).save_pretrained(str(tmp))
    return Path(out_dir)
