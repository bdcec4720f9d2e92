"""ViLT's patch tokens in grid order, shared by the ViLT student and its pretraining.

`transformers`' `ViltEmbeddings.visual_embed` returns the patches in a random order (it draws
them with `torch.multinomial`, even when it keeps every one). Attention does not care, but
anything that reads a patch token by its place in the image (distillation targets per patch,
per-patch labels) does.
"""

from __future__ import annotations

import torch


def grid_ordered(visual_embed):
    """Wrap ViltEmbeddings.visual_embed so its patch tokens come back in row-major grid order."""

    def ordered(pixel_values, pixel_mask, max_image_length=200):
        x, x_mask, (patch_index, (height, width)) = visual_embed(pixel_values, pixel_mask, max_image_length)
        order = (patch_index[..., 0] * width + patch_index[..., 1]).argsort(dim=1)  # (B, Nv)
        body = x[:, 1:].gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # x[:, 0] is the image CLS
        x = torch.cat([x[:, :1], body], dim=1)
        x_mask = torch.cat([x_mask[:, :1], x_mask[:, 1:].gather(1, order)], dim=1)
        patch_index = patch_index.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
        return x, x_mask, (patch_index, (height, width))

    return ordered
