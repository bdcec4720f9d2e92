"""Losses of teacher pretraining: InfoNCE, HN-NCE (DiHT), ALIP's adaptive loss and the concept KL.

Every loss reads the model's output dict (`PretrainModel.forward`): `loss.forward_outputs(out)`
-> {"<name>_loss": scalar, ...}; the training loss is the sum of the `*_loss` entries
(`compute_losses`, `total_loss`). The contrastive ones are also called like open_clip's
`ClipLoss`: `loss(image_features, text_features, logit_scale)` -> scalar. Across processes each loss gathers the features *with gradients*
(open_clip's `gather_features(gather_with_grad=True)`) and computes the loss over the global
batch on every rank, so N processes x batch b give the same loss (and, after DDP's gradient
averaging, the same gradients) as one process x batch N*b. Loss math runs in float32.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.loss import ClipLoss, gather_features

from clip_td.base.registry import Registry

from pretrain.alip_gates import ALIPGates
from pretrain.concepts import concept_kl

LOSSES = Registry("contrastive loss")
Outputs = Dict[str, torch.Tensor]


def dist_info() -> Tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(*features: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Concatenate each (b, d) tensor over all processes -> (N*b, d), keeping gradients.

    Reuses open_clip's `gather_features` (pairs of tensors); a no-op in one process.
    """
    rank, world = dist_info()
    if world == 1:
        return features
    out = []
    for i in range(0, len(features), 2):
        pair = features[i : i + 2]
        if len(pair) == 1:
            pair = (pair[0], pair[0])
        a, b = gather_features(pair[0], pair[1], local_loss=False, gather_with_grad=True, rank=rank, world_size=world)
        out.extend([a, b][: len(features[i : i + 2])])
    return tuple(out)


@LOSSES.register("infonce")
class InfoNCELoss(ClipLoss):
    """open_clip's ClipLoss, set up for the current process group (global loss, gathered with grad).
    `mask_duplicates` (loss.mask_duplicate_texts): a pair (i, j), j != i, whose training texts are
    the same tokens is left out of both sides' softmax, since text j then describes image i as
    well as text i does; without it such true matches are pushed apart as negatives."""

    def __init__(self, mask_duplicates: bool = False, **_: object) -> None:
        rank, world = dist_info()
        super().__init__(local_loss=False, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world)
        self.mask_duplicates = bool(mask_duplicates)

    def forward_outputs(self, out: Outputs) -> Outputs:
        if "negative_features" in out or self.mask_duplicates:
            return {"contrastive_loss": infonce_with_text_negatives(
                out["image_features"], out["text_features"], out.get("negative_features"), out.get("negative_valid"),
                out["logit_scale"], text_ids=out["text_ids"] if self.mask_duplicates else None)}
        return {"contrastive_loss": self(out["image_features"], out["text_features"], out["logit_scale"])}


def duplicate_pairs(text_ids: torch.Tensor) -> torch.Tensor:
    """(N, L) token ids -> (N, N) bool: True where j != i and rows i and j hold the same tokens."""
    same = (text_ids.unsqueeze(1) == text_ids.unsqueeze(0)).all(-1)
    return same & ~torch.eye(len(text_ids), dtype=torch.bool, device=text_ids.device)


def infonce_with_text_negatives(image: torch.Tensor, text: torch.Tensor, negative: Optional[torch.Tensor],
                                valid: Optional[torch.Tensor], logit_scale: torch.Tensor,
                                text_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric InfoNCE whose image-to-text side also ranks each image's hard negative texts
    (NegCLIP): row i of the image-to-text logits is [S v_i.t_j for all j] + [S v_i.n_j for valid j].
    image, text, negative (b, d) L2-normalised; valid (b,) bool; gathered over processes; without
    negatives (None) it is plain InfoNCE. With `text_ids` (b, L), the pairs whose texts are the same
    tokens (`duplicate_pairs`) are masked out of both sides (the diagonal is kept)."""
    scale = logit_scale.float()
    if negative is not None:
        img, txt, neg, val = gather_with_grad(image, text, negative, valid.to(image.dtype).unsqueeze(-1))
        i2t = scale * img.float() @ torch.cat([txt, neg]).float().T  # (N, 2N)
        mask = torch.cat([torch.ones_like(val.squeeze(-1), dtype=torch.bool), val.squeeze(-1) > 0.5])
        i2t = i2t.masked_fill(~mask.unsqueeze(0), float("-inf"))
    else:
        img, txt = gather_with_grad(image, text)
        i2t = scale * img.float() @ txt.float().T  # (N, N)
    labels = torch.arange(img.shape[0], device=img.device)
    t2i = scale * txt.float() @ img.float().T
    if text_ids is not None:
        ids = gather_with_grad(text_ids.float())[0]  # token ids < 2**24: exact in float32
        dup = duplicate_pairs(ids)
        i2t[:, : len(dup)] = i2t[:, : len(dup)].masked_fill(dup, float("-inf"))
        t2i = t2i.masked_fill(dup, float("-inf"))
    return (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2


def hn_nce_rows(logits: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Per-row HN-NCE of a (B, B) logit matrix whose positives are on the diagonal -> (B,).

    l_i = -s_ii + log(alpha e^{s_ii} + sum_{j!=i} w_ij e^{s_ij}),
    w_ij = (B-1) e^{beta s_ij} / sum_{k!=i} e^{beta s_ik}, computed in log space.
    """
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    pos = logits.diagonal()  # (B,)
    off = logits.masked_fill(eye, float("-inf"))  # (B, B), diagonal excluded
    # normalise over row i itself (keepdim): the public-copy bug divides by row j's sum instead
    tilted = (beta * logits).masked_fill(eye, float("-inf"))  # beta * s_ij, j != i (0 * -inf would be nan)
    log_w = math.log(max(n - 1, 1)) + tilted - torch.logsumexp(tilted, dim=1, keepdim=True)
    neg_terms = (log_w + off).masked_fill(eye, float("-inf"))
    if alpha > 0:
        terms = torch.cat([(math.log(alpha) + pos).unsqueeze(1), neg_terms], dim=1)  # (B, B+1)
    else:
        terms = neg_terms
    return torch.logsumexp(terms, dim=1) - pos


@LOSSES.register("hn_nce")
class HardNegativeNCELoss(nn.Module):
    """DiHT's HN-NCE: InfoNCE whose negatives are importance-weighted by exp(beta * s_ij).

    alpha scales the positive in the denominator; alpha=1, beta=0 equals `open_clip.ClipLoss()`.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 0.0, **_: object) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"HardNegativeNCELoss: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
        output_dict: bool = False,
    ):
        """image_features, text_features: (b, d) L2-normalised; logit_scale: scalar (already exp'd)."""
        img, txt = gather_with_grad(image_features, text_features)
        logits = logit_scale.float() * img.float() @ txt.float().T  # (B, B)
        loss = (hn_nce_rows(logits, self.alpha, self.beta).mean() + hn_nce_rows(logits.T, self.alpha, self.beta).mean()) / 2
        return {"contrastive_loss": loss} if output_dict else loss

    def forward_outputs(self, out: Outputs) -> Outputs:
        return self(out["image_features"], out["text_features"], out["logit_scale"], output_dict=True)


def clip_ce_rows(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Per-sample symmetric InfoNCE of (B, d) features -> (B,): (CE_i(S V T^T) + CE_i(S T V^T)) / 2."""
    logits = logit_scale.float() * image.float() @ text.float().T  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels, reduction="none") + F.cross_entropy(logits.T, labels, reduction="none")) / 2


@LOSSES.register("alip")
class ALIPLoss(nn.Module):
    """ALIP's adaptive loss over the bi-path input (raw text and synthetic caption).

    L = mean_i(l_i W_s,i W_x,i) + mean_i(l'_i W_s,i W_c,i), weights from `ALIPGates` (no grad).
    Called with `caption_features` as a fourth argument; without it, it is plain InfoNCE.
    """

    needs_caption = True  # the trainer passes the synthetic caption through the model

    def __init__(self, gates: ALIPGates, **_: object) -> None:
        super().__init__()
        self.gates = gates

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
        caption_features: Optional[torch.Tensor] = None, output_dict: bool = False,
    ):
        """Features: (b, d) L2-normalised; returns the scalar loss (or a dict with the gate means)."""
        if caption_features is None:
            img, txt = gather_with_grad(image_features, text_features)
            loss = clip_ce_rows(img, txt, logit_scale).mean()
            return {"contrastive_loss": loss} if output_dict else loss
        img, txt, cap = gather_with_grad(image_features, text_features, caption_features)
        w_s, w_x, w_c = self.gates(img, txt, cap)
        loss = (clip_ce_rows(img, txt, logit_scale) * w_s * w_x).mean() + (clip_ce_rows(img, cap, logit_scale) * w_s * w_c).mean()
        if output_dict:
            return {"contrastive_loss": loss, "w_s": w_s.mean().detach(), "w_x": w_x.mean().detach(), "w_c": w_c.mean().detach()}
        return loss

    def forward_outputs(self, out: Outputs) -> Outputs:
        """Bi-path when `out` holds "caption_features"; adds the gate means w_s, w_x, w_c."""
        return self(out["image_features"], out["text_features"], out["logit_scale"],
                    caption_features=out.get("caption_features"), output_dict=True)


class ConceptLoss(nn.Module):
    """DiHT's concept distillation term: weight * KL(teacher || head) at `temperature`, from the
    outputs "concept_logits" (the head) and "concept_teacher_logits" (the frozen teacher)."""

    def __init__(self, weight: float, temperature: float) -> None:
        super().__init__()
        self.weight, self.temperature = float(weight), float(temperature)

    def forward_outputs(self, out: Outputs) -> Outputs:
        kl = concept_kl(out["concept_logits"], out["concept_teacher_logits"], self.temperature)
        return {"concept_loss": self.weight * kl}


def create_loss(name: str, key: Optional[str] = "loss.name", **kwargs: object) -> nn.Module:
    """Build a registered contrastive loss by name (infonce | hn_nce | alip); an unknown name is
    an InputError naming the config `key` and the choices."""
    return LOSSES.create(name, key=key, **kwargs)


def compute_losses(out: Outputs, losses: Sequence[nn.Module]) -> Outputs:
    """Every loss's `forward_outputs(out)`, merged: named `*_loss` terms plus any logged extras."""
    terms: Outputs = {}
    for loss in losses:
        terms.update(loss.forward_outputs(out))
    return terms


def total_loss(terms: Outputs) -> torch.Tensor:
    """The training loss: the sum of the `*_loss` entries."""
    return sum(v for k, v in terms.items() if k.endswith("_loss"))
