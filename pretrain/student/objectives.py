"""ViLT's pretraining objectives as pure functions of a `torch.Generator`: BERT masking for MLM
and the caption derangement for image-text matching. Same generator state, same result."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

IGNORE = -100  # label of every position the MLM loss skips (torch's cross-entropy default)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the remaining 0.1 keep their id


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, vocab_size: int,
                prob: Union[float, torch.Tensor], generator: torch.Generator,
                mask_token_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """BERT masking -> (masked input_ids, labels); the inputs are not modified.

    `prob` is one probability for every position or a tensor of input_ids' shape, one per
    position (concept masking: a higher one for the tokens of the words the image shows).
    Draws, in this order and always all three: `u = rand(shape)`, `v = rand(shape)`,
    `r = randint(vocab_size, shape)`. A position is chosen iff `u < prob` and it is not special
    (`special_mask` True: [CLS], [SEP], padding). A chosen position becomes `mask_token_id` if
    `v < 0.8`, `r` if `0.8 <= v < 0.9`, and keeps its id otherwise; its label is the original id.
    Every other label is -100.
    """
    shape, device = input_ids.shape, input_ids.device
    u = torch.rand(shape, generator=generator, device=generator.device).to(device)
    v = torch.rand(shape, generator=generator, device=generator.device).to(device)
    r = torch.randint(vocab_size, shape, generator=generator, device=generator.device).to(device)
    prob = prob.to(device) if isinstance(prob, torch.Tensor) else prob
    chosen = (u < prob) & ~special_mask.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    ids = torch.where(chosen & (v < MASK_SHARE), torch.full_like(input_ids, mask_token_id), input_ids)
    ids = torch.where(chosen & (v >= MASK_SHARE) & (v < MASK_SHARE + RANDOM_SHARE), r, ids)
    return ids, labels


def itm_negatives(batch_size: int, generator: torch.Generator, prob: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """(perm, is_match): pair i gets caption `perm[i]`; `is_match[i]` is `perm[i] == i`.

    `round(prob * batch_size)` positions, chosen at random (at least 2 when prob > 0 and the
    batch has 2 pairs, since one pair alone cannot swap), pass their captions round one random
    cycle: a derangement of those positions, so a negative never keeps its own caption; the
    others keep theirs.
    """
    n = min(batch_size, round(prob * batch_size))
    if prob > 0 and batch_size >= 2:
        n = max(n, 2)
    if n < 2:
        n = 0
    chosen = torch.randperm(batch_size, generator=generator, device=generator.device).cpu()[:n]
    perm = torch.arange(batch_size)
    perm[chosen] = chosen.roll(1)  # chosen[t] takes chosen[t-1]'s caption: one cycle, no fixed point
    return perm, perm == torch.arange(batch_size)


def position_mask_prob(concept_mask: torch.Tensor, prob: float, concept_prob: Optional[float]) -> Union[float, torch.Tensor]:
    """The per-position MLM probability: `concept_prob` on the concept tokens (`concept_mask`
    True), `prob` elsewhere; just `prob` when `concept_prob` is None (plain BERT masking)."""
    if concept_prob is None:
        return prob
    return torch.where(concept_mask.bool(), torch.tensor(float(concept_prob)), torch.tensor(float(prob)))
