"""Student VL encoders (registry `STUDENTS`), each giving the same output dict:

    out = student(pixel_values (B, 3, H, W), input_ids (B, T), attention_mask (B, T))
    out["pooled"] (B, h), out["image_tokens"] (B, Nv, h) in row-major grid order, out["text_tokens"] (B, T, h)

Attributes: `hidden_size`, `image_grid` (rows, cols). LoRA target modules (peft) are the
attention projections, named "query" and "value" in both students.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from ..registry import Registry

STUDENTS = Registry("student")

LORA_TARGET_MODULES = ("query", "value")


@dataclass
class StudentConfig:
    name: str = "vilt"                    # vilt | dual_stream
    pretrained: Optional[str] = None      # vilt: checkpoint dir or hub id (e.g. dandelin/vilt-b32-mlm); None = from scratch
    hidden_size: int = 192                # transformer width (from scratch)
    num_layers: int = 4                   # layers (vilt; dual_stream: text layers)
    vision_layers: int = 2                # dual_stream: ViT image-encoder layers
    num_heads: int = 4                    # attention heads
    intermediate_size: int = 768          # MLP width
    patch_size: int = 8                   # image patch size in pixels
    max_text_len: int = 40                # text positions
    dropout: float = 0.1                  # hidden and attention dropout


def create_student(name: str, cfg: Any, vocab_size: int, image_size: int) -> nn.Module:
    """Build the student `name` from a StudentConfig-like `cfg` for `image_size` square inputs."""
    from . import dual_stream, vilt  # noqa: F401  (registers the students)

    return STUDENTS.create(name, cfg=cfg, vocab_size=vocab_size, image_size=image_size)
