"""Student VL encoders (registry `STUDENTS`), each giving the same output dict:

    out = student(pixel_values (B, 3, H, W), input_ids (B, T), attention_mask (B, T))
    out["pooled"] (B, h), out["image_tokens"] (B, Nv, h) in row-major grid order, out["text_tokens"] (B, T, h)

Attributes: `hidden_size`, `image_grid` (rows, cols). LoRA target modules (peft) are the
attention projections, named "query" and "value" in both students.
"""

from __future__ import annotations

from typing import Any, Iterable

from torch import nn

from clip_td.base.io import InputError
from clip_td.base.registry import Registry

STUDENTS = Registry("student")

LORA_TARGET_MODULES = ("query", "value")


def create_student(name: str, cfg: Any, vocab_size: int, image_size: int) -> nn.Module:
    """Build the student `name` from `cfg` (clip_td.app.schema.StudentConfig) for `image_size` square inputs."""
    from clip_td.lib.students import dual_stream, vilt  # noqa: F401  (registers the students)

    return STUDENTS.create(name, key="student.name", cfg=cfg, vocab_size=vocab_size, image_size=image_size)


def add_lora(student: nn.Module, r: int, alpha: int, dropout: float, target_modules: Iterable[str]) -> nn.Module:
    """Inject LoRA adapters (peft) into `student`; only the adapters stay trainable in it."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    try:
        return inject_adapter_in_model(cfg, student)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in student.named_modules() if isinstance(m, nn.Linear)})
        raise InputError(
            f"student.lora.target_modules={list(target_modules)}: {e}; linear layers of this student: {names}"
        ) from None
