"""Dual-stream student: a ViT image encoder, then a BERT text encoder whose layers cross-attend
to the image tokens (an ALBEF/METER-like family, built from transformers components).

BertLayer only builds cross-attention when `is_decoder=True`, which would also make its
self-attention causal; the text side here is bidirectional, so the self-attention modules
are switched back to non-causal and the masks are built as bidirectional.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel
from transformers.masking_utils import create_bidirectional_mask

from clip_td.lib.students import STUDENTS


class DualStreamStudent(nn.Module):
    def __init__(self, cfg: Any, vocab_size: int, image_size: int) -> None:
        super().__init__()
        common = dict(hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_heads,
                      intermediate_size=cfg.intermediate_size, hidden_dropout_prob=cfg.dropout,
                      attention_probs_dropout_prob=cfg.dropout)
        self.vision = ViTModel(ViTConfig(image_size=image_size, patch_size=cfg.patch_size,
                                         num_hidden_layers=cfg.vision_layers, **common), add_pooling_layer=False)
        text_cfg = BertConfig(vocab_size=vocab_size, num_hidden_layers=cfg.num_layers,
                              max_position_embeddings=cfg.max_text_len, is_decoder=True,
                              add_cross_attention=True, use_cache=False, **common)
        self.text = BertModel(text_cfg, add_pooling_layer=True)
        for layer in self.text.encoder.layer:
            layer.attention.self.is_causal = False  # bidirectional text self-attention
        self.hidden_size = int(cfg.hidden_size)
        side = image_size // int(cfg.patch_size)
        self.image_grid = (side, side)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """pixel_values (B, 3, H, W), input_ids/attention_mask (B, T) -> pooled (B, h) from the
        text CLS, image_tokens (B, Nv, h) (ViT patches, CLS dropped), text_tokens (B, T, h)."""
        image = self.vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + Nv, h)
        emb = self.text.embeddings(input_ids=input_ids)  # (B, T, h)
        mask = create_bidirectional_mask(config=self.text.config, inputs_embeds=emb, attention_mask=attention_mask)
        text = self.text.encoder(emb, attention_mask=mask, encoder_hidden_states=image,
                                 use_cache=False).last_hidden_state  # (B, T, h)
        return {"pooled": self.text.pooler(text), "image_tokens": image[:, 1:], "text_tokens": text}


@STUDENTS.register("dual_stream")
def create_dual_stream(cfg: Any, vocab_size: int, image_size: int) -> DualStreamStudent:
    return DualStreamStudent(cfg, vocab_size, image_size)
