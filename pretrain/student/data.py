"""The student's data: the source-style rows of a captions corpus, the WordPiece tokenizer
built on them, and (image, caption) batches with the special-token mask MLM needs."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset

from clip_td.base.io import InputError, PathLike
from clip_td.base.wordpiece import build_wordpiece

from pretrain.data import read_captions

SOURCE_STYLE = "source"
MEAN_STD = (0.5, 0.5, 0.5)  # ViLT's normalisation (what fine-tuning uses for ViLT students)


def source_rows(path: PathLike, text_column: str = "title", max_rows: int = 0) -> List[Dict[str, str]]:
    """Rows of the captions file whose `style` is "source" (the first `max_rows`, 0 = all).

    The file must have `filepath`, the text column and `style`; a file without any
    source-style row is an InputError naming it."""
    rows = read_captions(path, required=("filepath", text_column, "style"))
    kept = [r for r in rows if r["style"].strip() == SOURCE_STYLE]
    if not kept:
        styles = sorted({r["style"] for r in rows})
        raise InputError(f"{path}: no source-style rows (column 'style' == {SOURCE_STYLE!r}; found {styles}); "
                         "the student pretrains on the source style only")
    return kept[:max_rows] if max_rows else kept


#: Always spellable by the student's tokenizer, whatever the captions showed: the task texts name
#: objects ("circle0") and end in "?" or ".".
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def build_tokenizer(rows: Sequence[Dict[str, str]], columns: Sequence[str], vocab_size: int,
                    source: str = "the captions file", extra_texts: Sequence[str] = ()):
    """The WordPiece tokenizer fitted on the rows' text in `columns` and `extra_texts`
    (deterministic: a resume rebuilds the same one), every character of ALPHABET included. A
    column missing from the rows is an InputError naming the file (`source`) and the key."""
    texts = []
    for column in columns:
        if any(column not in r for r in rows):
            raise InputError(f"{source}: no column {column!r}, which config key data.vocab_columns asks the "
                             f"student's vocabulary to be fitted on")
        texts.extend(r[column] for r in rows)
    texts.extend(extra_texts)
    return build_wordpiece(texts, vocab_size=vocab_size, alphabet=ALPHABET)


def image_transform(image_size: int) -> Callable:
    """PIL image -> (3, side, side), as fine-tuning's `student_transform` with ViLT's mean/std."""
    return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      T.ToTensor(), T.Normalize(MEAN_STD, MEAN_STD)])


#: The corpus column listing, space-separated, the concept words each image shows ("ring yellow medium").
CONCEPT_COLUMN = "concepts"


class PairDataset(Dataset):
    """Items: {"pixel_values": (3, H, W), "text": str, "image_id": int (same file, same id),
    "concepts": frozenset of the row's concept words (empty when the rows have no `concepts`)}."""

    def __init__(self, rows: Sequence[Dict[str, str]], text_column: str, image_size: int) -> None:
        self.rows, self.text_column = list(rows), text_column
        self.transform = image_transform(image_size)
        ids: Dict[str, int] = {}
        self.image_ids = [ids.setdefault(r["image"], len(ids)) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Dict:
        with Image.open(self.rows[i]["image"]) as im:
            pixels = self.transform(im.convert("RGB"))
        concepts = frozenset(self.rows[i].get(CONCEPT_COLUMN, "").lower().split())
        return {"pixel_values": pixels, "text": self.rows[i][self.text_column], "image_id": self.image_ids[i],
                "concepts": concepts}


def make_collate(tokenizer: Callable, max_len: int, concept_mask: bool = True) -> Callable:
    """Batch: pixel_values (B,3,H,W), input_ids / attention_mask / special_mask / concept_mask
    (B,T), image_id (B,). `special_mask` is True at [CLS], [SEP] and padding: the positions MLM
    never masks; `concept_mask` (left out with `concept_mask=False`: a training run without
    concept masking never reads it) at every token of a word in the item's `concepts`."""

    def collate(items: List[Dict]) -> Dict[str, torch.Tensor]:
        texts = [it["text"] for it in items]
        enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_len,
                        return_special_tokens_mask=True, return_tensors="pt")
        batch = {
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "special_mask": enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0),
            "image_id": torch.tensor([it["image_id"] for it in items]),
        }
        if concept_mask:
            batch["concept_mask"] = concept_token_mask(enc, texts, [it.get("concepts", frozenset()) for it in items])
        return batch

    return collate


def concept_token_mask(enc: Any, texts: Sequence[str], concepts: Sequence[frozenset]) -> torch.Tensor:
    """(B, T) bool: True at each token of a word (as the tokenizer's pre-tokenizer splits the text,
    lower-cased) that is in that item's concept set. Needs a fast tokenizer's word alignment."""
    mask = torch.zeros(enc["input_ids"].shape, dtype=torch.bool)
    for b, (text, wanted) in enumerate(zip(texts, concepts)):
        if not wanted:
            continue
        for t, w in enumerate(enc.word_ids(b)):
            if w is not None:
                span = enc.word_to_chars(b, w)
                mask[b, t] = text[span.start:span.end].lower() in wanted
    return mask


def resolve_paths(cfg) -> Dict[str, Path]:
    """{"train": path, "val": path or None}; builds / reuses the synthetic world when neither
    data.root nor data.train is set."""
    root = None if cfg.data.root is None else Path(cfg.data.root)
    if root is None and cfg.data.train is None:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world(size=cfg.data.size, seed=cfg.data.world_seed, image_size=cfg.data.image_size))
    pre = None if root is None else root / "pretrain"
    train = Path(cfg.data.train) if cfg.data.train is not None else pre / "train.tsv"
    val = Path(cfg.data.val) if cfg.data.val is not None else (pre / "val.tsv" if pre is not None else None)
    if cfg.data.val is None and val is not None and not val.is_file():
        val = None
    return {"train": train, "val": val}
