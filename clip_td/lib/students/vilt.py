"""ViLT student: transformers' single-stream ViltModel (from a ViltConfig or a checkpoint)."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn
from transformers import ViltConfig, ViltModel

from clip_td.base.io import InputError
from clip_td.base.vilt_order import grid_ordered
from clip_td.base.vilt_positions import PATCH_POSITIONS, use_sincos_patch_positions
from clip_td.lib.students import STUDENTS


class ViltStudent(nn.Module):
    """Wraps ViltModel; splits its last hidden state into text tokens, image CLS, patch tokens."""

    def __init__(self, model: ViltModel, image_size: int) -> None:
        super().__init__()
        # keep every patch in grid order: ViLT otherwise samples max_image_length patches at random
        model.config.max_image_length = -1
        # ...but even then ViltEmbeddings.visual_embed returns the patches in a random order
        # (torch.multinomial over all of them); restore row-major order so image tokens match
        # the teacher's patch grid by position and the forward is deterministic.
        model.embeddings.visual_embed = grid_ordered(model.embeddings.visual_embed)
        self.model = model
        self.hidden_size = int(model.config.hidden_size)
        side = image_size // int(model.config.patch_size)
        self.image_grid = (side, side)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """pixel_values (B, 3, H, W), input_ids/attention_mask (B, T) -> pooled (B, h),
        image_tokens (B, Nv, h), text_tokens (B, T, h)."""
        pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long,
                                device=pixel_values.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                         pixel_mask=pixel_mask)
        hidden = out.last_hidden_state  # (B, T + 1 + Nv, h): text, image CLS, patches
        t = input_ids.shape[1]
        return {"pooled": out.pooler_output, "image_tokens": hidden[:, t + 1:], "text_tokens": hidden[:, :t]}


def vilt_config(cfg: Any, vocab_size: int, image_size: int) -> ViltConfig:
    return ViltConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, image_size=image_size,
        patch_size=cfg.patch_size, max_position_embeddings=cfg.max_text_len, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, max_image_length=-1,
    )


def load_vilt(pretrained: str) -> ViltModel:
    """The ViltModel of a checkpoint folder or hub id; anything else is one InputError.

    transformers would load another model type's folder (or bare weights without config.json)
    into a randomly initialised ViltModel with only a warning: refuse a config whose model_type
    is not "vilt", and weights that leave any non-pooler parameter uninitialised."""
    from transformers import AutoConfig

    key = f"student.pretrained={pretrained!r}"
    if pretrained == "default":
        raise InputError(f"{key} names the default pretrained student, which fine-tuning resolves to its cached "
                         f"folder (clip_td.app.build.resolve_student); pass that folder, or null for a "
                         f"from-config student")
    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as e:
        raise InputError(f"{key}: not a loadable ViLT checkpoint (no usable config.json: {e})") from None
    if config.model_type != "vilt":
        raise InputError(f"{key}: a {config.model_type!r} checkpoint; expected a ViLT checkpoint (model_type 'vilt')")
    try:
        model, info = ViltModel.from_pretrained(pretrained, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{key}: not a loadable ViLT checkpoint ({e})") from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:
        raise InputError(f"{key}: the weights leave {len(missing)} ViLT parameters uninitialised "
                         f"(e.g. {', '.join(missing[:3])})")
    return model


@STUDENTS.register("vilt")
def create_vilt(cfg: Any, vocab_size: int, image_size: int) -> ViltStudent:
    pretrained = getattr(cfg, "pretrained", None)
    positions = getattr(cfg, "patch_positions", "zeros")
    if positions not in PATCH_POSITIONS:
        raise InputError(f"student.patch_positions={positions!r}: expected one of {', '.join(PATCH_POSITIONS)}")
    if not pretrained:
        model = ViltModel(vilt_config(cfg, vocab_size, image_size))
        if positions == "sincos":
            if cfg.hidden_size % 4:
                raise InputError(f"student.patch_positions='sincos' needs student.hidden_size divisible by 4, "
                                 f"got {cfg.hidden_size}")
            use_sincos_patch_positions(model)
        return ViltStudent(model, image_size)
    if positions != "zeros":
        raise InputError(f"student.patch_positions={positions!r} initialises a from-config student; "
                         f"student.pretrained={pretrained!r} brings its own positions (leave it 'zeros')")
    model = load_vilt(pretrained)
    if model.config.vocab_size != vocab_size:
        raise InputError(f"student.pretrained={pretrained!r}: vocab size {model.config.vocab_size} != tokenizer's "
                         f"{vocab_size}; use the checkpoint's own tokenizer")
    return ViltStudent(model, image_size)
