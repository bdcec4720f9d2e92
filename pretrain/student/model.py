"""`StudentPretrainModel`: transformers' `ViltForMaskedLM` (the ViltModel + its MLM head) plus
the image-text matching head, one prepared module whose forward returns the named losses.

As in ViLT, each step runs two passes over the same images: MLM on the masked captions with
their own images, ITM on the unmasked captions with half of them swapped for another image's.
The ITM head is ViLT's: a `nn.Linear(hidden, 2)` on the pooled output with cross-entropy
(label 1 = the caption belongs to the image). With `patch_text` (image_init.rehearsal), a third
pass classifies every patch of other, labelled scenes (`PatchHeads`, the dense image init's
objective) so that MLM + ITM keep what the patches learnt; with region descriptions
(`pretrain.student.regions`), a fourth pass is MLM on them with their own scenes. Only `mlm.vilt` (a ViltModel) is exported.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViltConfig, ViltForMaskedLM

from clip_td.base.vilt_positions import PATCH_POSITIONS, use_sincos_patch_positions
from clip_td.base.vilt_positions import sincos_patch_positions  # noqa: F401 (the table, importable from here)
from pretrain.student.image_init import PatchHeads, classification_loss
from pretrain.student.objectives import IGNORE


def vilt_config(model_cfg: Any, vocab_size: int, image_size: int) -> ViltConfig:
    """The ViltConfig of the student (`model_cfg`: the `model` section), keeping every patch."""
    return ViltConfig(
        vocab_size=vocab_size, hidden_size=model_cfg.hidden_size, num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads, intermediate_size=model_cfg.intermediate_size,
        image_size=image_size, patch_size=model_cfg.patch_size, max_position_embeddings=model_cfg.max_text_len,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_image_length=-1,
    )


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions; 0 (with a graph) when none is labelled."""
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
    return total / labels.ne(IGNORE).sum().clamp(min=1)


class StudentPretrainModel(nn.Module):
    def __init__(self, config: ViltConfig, patch_text: Optional[Tuple[int, int]] = None,
                 patch_positions: str = "zeros") -> None:
        super().__init__()
        self.mlm = ViltForMaskedLM(config)
        if patch_positions == "sincos":
            use_sincos_patch_positions(self.mlm.vilt)
        elif patch_positions != "zeros":
            raise ValueError(f"patch_positions={patch_positions!r}: expected one of {PATCH_POSITIONS}")
        self.itm_head = nn.Linear(config.hidden_size, 2)
        if patch_text is not None:  # ([CLS], [SEP]) ids: the blank text the patch pass reads images with
            self.patch_heads = PatchHeads(config.hidden_size, *patch_text)

    def encode(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(text hidden states (B, T, h), pooled (B, h)) of ViLT over the pairs."""
        pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long,
                                device=pixel_values.device)
        out = self.mlm.vilt(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                            pixel_mask=pixel_mask)
        return out.last_hidden_state[:, : input_ids.shape[1]], out.pooler_output

    def forward(self, pixel_values: torch.Tensor, attention_mask: torch.Tensor, mlm_ids: torch.Tensor,
                mlm_labels: torch.Tensor, itm_ids: torch.Tensor, itm_attention_mask: torch.Tensor,
                itm_labels: torch.Tensor, patch_pixels: Optional[torch.Tensor] = None,
                patch_labels: Optional[torch.Tensor] = None, region_pixels: Optional[torch.Tensor] = None,
                region_ids: Optional[torch.Tensor] = None, region_attention_mask: Optional[torch.Tensor] = None,
                region_labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """mlm_loss, itm_loss and the logits they come from (mlm (B, T, V), itm (B, 2)); with
        `patch_pixels` and their dense `patch_labels` (B', G * G, 3), also patch_loss; with
        `region_pixels` and their masked descriptions (`pretrain.student.regions`), region_loss
        (MLM through the same head) and region_logits."""
        text, _ = self.encode(pixel_values, mlm_ids, attention_mask)
        mlm_logits = self.mlm.mlm_score(text)
        _, pooled = self.encode(pixel_values, itm_ids, itm_attention_mask)
        itm_logits = self.itm_head(pooled)
        out = {
            "mlm_loss": masked_lm_loss(mlm_logits, mlm_labels),
            "itm_loss": F.cross_entropy(itm_logits.float(), itm_labels),
            "mlm_logits": mlm_logits,
            "itm_logits": itm_logits,
        }
        if patch_pixels is not None:
            out["patch_loss"] = classification_loss(self.patch_heads(self.mlm.vilt, patch_pixels), patch_labels)
        if region_pixels is not None:
            text, _ = self.encode(region_pixels, region_ids, region_attention_mask)
            out["region_logits"] = self.mlm.mlm_score(text)
            out["region_loss"] = masked_lm_loss(out["region_logits"], region_labels)
        return out
