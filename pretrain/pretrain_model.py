"""The training wrapper: the CLIP being pretrained plus its training-only concept head.

Only this module goes through `accelerator.prepare`; the frozen concept teacher and the ALIP
gates stay outside it. Export takes `.clip` alone, so the head is never exported. `forward`
returns the named outputs every loss reads (`loss.forward_outputs(out)`, pretrain.losses).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class PretrainModel(nn.Module):
    def __init__(self, clip: nn.Module, num_concepts: int = 0, lock_image: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.lock_image = lock_image  # LiT: the image tower stays frozen, batch-norm statistics included
        if lock_image:
            clip.visual.requires_grad_(False)
        embed_dim = clip.text_projection.shape[-1] if hasattr(clip, "text_projection") and clip.text_projection is not None else None
        if embed_dim is None:  # CustomTextCLIP: read the width off the image tower's output
            embed_dim = clip.visual.output_dim
        self.concept_head = nn.Linear(embed_dim, num_concepts) if num_concepts else None

    def train(self, mode: bool = True) -> "PretrainModel":
        super().train(mode)
        if self.lock_image:
            self.clip.visual.eval()
        return self

    def forward(self, image: torch.Tensor, text: torch.Tensor, caption: Optional[torch.Tensor] = None,
                negative: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """image (B, 3, H, W), text / caption (B, L) token ids -> {"image_features",
        "text_features"} (B, d) L2-normalised, "logit_scale" (exp'd scalar), "text_ids" (the text tokens), with a caption
        "caption_features" (B, d), with negatives "negative_features" (B, d) and, with a concept head, "concept_logits" (B, K)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.lock_image):
            raw = self.clip.encode_image(image)  # (B, d) before normalisation: the concept head reads this
        out = {
            "image_features": F.normalize(raw, dim=-1),
            "text_features": self.clip.encode_text(text, normalize=True),
            "logit_scale": self.clip.logit_scale.exp(),
            "text_ids": text,  # the loss's duplicate-text mask (loss.mask_duplicate_texts) reads it
        }
        if caption is not None:
            out["caption_features"] = self.clip.encode_text(caption, normalize=True)
        if negative is not None:  # hard negative texts (loss.text_negatives)
            out["negative_features"] = self.clip.encode_text(negative, normalize=True)
        if self.concept_head is not None:
            out["concept_logits"] = self.concept_head(raw)
        return out
