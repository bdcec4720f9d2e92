"""Initial patch position embeddings of a ViLT built from a config (no checkpoint).

transformers' `ViltEmbeddings` starts its patch position embeddings at zero, for a pretrained
checkpoint to overwrite; a ViLT trained from there on the synthetic world never learns where an
object is. Student pretraining (`model.patch_positions`) and a from-config fine-tuning student
(`student.patch_positions`) can start them from a 2-D sine-cosine code instead (still trained).
"""

from __future__ import annotations

import torch

#: `student.patch_positions` (from-config ViLT students) and the student pretraining recipe's
#: `model.patch_positions`: transformers' zeros, or a 2-D sine-cosine code (still trained)
PATCH_POSITIONS = ("zeros", "sincos")


def sincos_patch_positions(grid: int, dim: int) -> torch.Tensor:
    """(1, 1 + grid * grid, dim) position embeddings for ViltEmbeddings: row 0 ([CLS] of the image)
    zeros, then the patches in row-major order, each the concatenation of a 1-D sine-cosine code
    of its row and one of its column (dim / 2 each: dim / 4 frequencies 1 / 10000^(k / (dim / 4)),
    sines then cosines), as MAE's 2-D sine-cosine embedding."""
    if dim % 4:
        raise ValueError(f"sine-cosine patch positions need a width divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * freqs[None]  # (grid, dim / 4)
    code = torch.cat([pos.sin(), pos.cos()], dim=1)  # (grid, dim / 2)
    rows = code[:, None, :].expand(grid, grid, -1)
    cols = code[None, :, :].expand(grid, grid, -1)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).unsqueeze(0).float()


def use_sincos_patch_positions(vilt) -> None:
    """Overwrite the patch position embeddings of a ViltModel (`vilt.config`, `vilt.embeddings`)
    with the sine-cosine table of its patch grid and width, in place."""
    c = vilt.config
    with torch.no_grad():
        vilt.embeddings.position_embeddings.copy_(sincos_patch_positions(c.image_size // c.patch_size, c.hidden_size))
