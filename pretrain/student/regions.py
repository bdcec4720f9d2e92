"""Region descriptions: grounded text the student pretrains on, as UNITER and VL-BERT pretrain on
Visual Genome's region descriptions.

The captions corpus says what an image shows, never where: its captions name colours, shapes,
sizes and (in the titles) relations between two objects, but no place in the frame. A student
pretrained on them alone reads colour and shape but not position, which VCR's rationales ask
about ("circle0 is the red shape near the top left."). The synthetic world knows every object's
place, as Visual Genome's annotators wrote it down; this module writes it as text:

    "the small red circle is near the top left. the blue square is in the center.
     the red circle is left of the blue square."

one sentence per object (up to `MAX_OBJECTS`, in random order, its size named half the time) and
one relation between a clearly separated pair when the scene has one. The student reads the
scene's image with this text and predicts masked words; the place words (`PLACE_WORDS`) are
masked with a higher probability, since only the image can tell them (config section `regions`).
Descriptions come from their own `random.Random`, seeded by (seed, batch), so the scenes (and the
rehearsal batches drawn with them) are the ones the recipe draws without this stage.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Sequence, Tuple

import torch

from pretrain.student.objectives import mask_tokens, position_mask_prob
from tasks.synthetic.scene import clear_pairs, region, sample_scene
from tasks.synthetic.vcr_gen import where

MAX_OBJECTS = 2  # objects described per scene (the text stays under the student's 40 tokens)
#: The words only the image's layout can tell: regions of the 3x3 grid and the relations.
PLACE_WORDS = frozenset({"top", "bottom", "left", "right", "center", "above", "below"})
VOCAB_SEED = -1  # the description batch of the vocabulary's texts (training batches are >= 0)


def _name(obj: Dict[str, Any], rng: random.Random) -> List[str]:
    size = [obj["size"]] if rng.random() < 0.5 else []
    return ["the", *size, obj["colour"], obj["shape"]]


def describe(scene: Dict[str, Any], rng: random.Random) -> str:
    """The region description of one scene (see the module docstring)."""
    objs = scene["objects"]
    order = list(range(len(objs)))
    rng.shuffle(order)
    sentences = [[*_name(objs[i], rng), "is", *where(region(objs[i]))] for i in order[:MAX_OBJECTS]]
    pairs = clear_pairs(scene)
    if pairs:
        i, j, rel = rng.choice(pairs)
        sentences.append([*_name(objs[i], rng), "is", *rel.split(), *_name(objs[j], rng)])
    return " ".join(" ".join(s) + "." for s in sentences)


def descriptions(seed: int, index: int, scenes: Sequence[Dict[str, Any]]) -> List[str]:
    """The descriptions of description batch `index`: a function of (seed, index, scenes) alone."""
    rng = random.Random(f"student-region-text/{seed}/{index}")
    return [describe(s, rng) for s in scenes]


def vocabulary_texts(seed: int, n: int, max_objects: int) -> List[str]:
    """Descriptions of `n` sampled (not rendered) source-style scenes, for the WordPiece
    vocabulary: the place words become whole words, as the task texts use them."""
    rng = random.Random(f"student-region-vocab/{seed}")
    scenes = [sample_scene(rng, style="source", min_objects=1, max_objects=max_objects) for _ in range(n)]
    return descriptions(seed, VOCAB_SEED, scenes)


def encode(texts: Sequence[str], tokenizer: Any, max_len: int) -> Tuple[Any, torch.Tensor, torch.Tensor]:
    """(the tokenizer's encoding, special (B, T): [CLS] / [SEP] / padding, place (B, T): the
    tokens of the place words) of the descriptions."""
    from pretrain.student.data import concept_token_mask

    texts = list(texts)
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_len,
                    return_special_tokens_mask=True, return_tensors="pt")
    special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
    return enc, special, concept_token_mask(enc, texts, [PLACE_WORDS] * len(texts))


def region_inputs(texts: Sequence[str], tokenizer: Any, max_len: int, mask_prob: float, place_prob: float,
                  generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """The MLM inputs of the descriptions: region_ids (masked), region_attention_mask,
    region_labels (-100 where not chosen) and region_place (True at the place words' tokens).
    Place words are chosen with `place_prob`, the other tokens with `mask_prob`; BERT's
    80/10/10 replacement (`mask_tokens`)."""
    enc, special, place = encode(texts, tokenizer, max_len)
    ids, labels = mask_tokens(enc["input_ids"], special, len(tokenizer), position_mask_prob(place, mask_prob, place_prob),
                              generator, tokenizer.mask_token_id)
    return {"region_ids": ids, "region_attention_mask": enc["attention_mask"], "region_labels": labels,
            "region_place": place}
