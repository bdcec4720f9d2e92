"""Captions corpus (open_clip's CSV/TSV form) -> validated rows -> a torch Dataset.

A real corpus needs only `filepath` and `title`; `synthetic_caption`, `ocr_text`, `parse`,
`concepts`, `style` and `noise` are used when present (docs/internals.md). Every problem a
user can cause (missing column, empty caption, missing image) is an `InputError` naming the
file, line and column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from clip_td.base.io import InputError, PathLike

REQUIRED = ("filepath", "title")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".txt") else ","


def read_captions(path: PathLike, required: Sequence[str] = REQUIRED, check_images: bool = True) -> List[Dict[str, str]]:
    """Rows of a captions file as dicts, with `image` set to the absolute image path.

    Image paths are relative to the file's folder. Raises InputError naming the file, line and
    column for a missing column, an empty value in a required column or a missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: captions file not found")
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8", newline="") as f:
        # default quoting reads both raw and quoted fields, as pandas (open_clip's reader) does
        reader = csv.DictReader(f, delimiter=_delimiter(path))
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; header has {header}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            for col in required:
                if not (row.get(col) or "").strip():
                    raise InputError(f"{path}:{lineno}: empty value in column {col!r}")
            image = (path.parent / row["filepath"]).resolve()
            if check_images and not image.is_file():
                raise InputError(f"{path}:{lineno}: column 'filepath': image not found: {image}")
            row = {k: (v if v is not None else "") for k, v in row.items()}
            row["image"] = str(image)
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def read_concepts(path: PathLike) -> List[str]:
    """The concept vocabulary of `concepts.json` ({"concepts": [names...]})."""
    from clip_td.base.io import read_json

    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("concepts"), list):
        raise InputError(f"{path}: expected {{\"concepts\": [names...]}}")
    return [str(c) for c in obj["concepts"]]


def concept_targets(rows: Sequence[Dict[str, str]], vocab: Sequence[str], source: str = "corpus") -> torch.Tensor:
    """Multi-hot (N, K) float tensor from each row's space-separated `concepts` column."""
    index = {c: i for i, c in enumerate(vocab)}
    out = torch.zeros(len(rows), len(vocab))
    for n, row in enumerate(rows):
        for name in (row.get("concepts") or "").split():
            if name not in index:
                raise InputError(f"{source}: row {n + 1}: concept {name!r} is not in the vocabulary")
            out[n, index[name]] = 1.0
    return out


class CaptionDataset(Dataset):
    """Items: {"image": (3, H, W), "text": str, "caption": str, "index": int}.

    `caption` is the synthetic caption (ALIP's second path) or the raw text when absent.
    """

    def __init__(self, rows: Sequence[Dict[str, str]], transform: Callable) -> None:
        self.rows = list(rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Dict:
        row = self.rows[i]
        with Image.open(row["image"]) as im:
            image = self.transform(im.convert("RGB"))
        return {"image": image, "text": row["title"], "caption": row.get("synthetic_caption") or row["title"], "index": i}


def make_collate(tokenizer: Callable) -> Callable:
    """Batch items and tokenise both text paths: image (B,3,H,W), text/caption (B, L), index (B,)."""

    def collate(items: List[Dict]) -> Dict[str, torch.Tensor]:
        return {
            "image": torch.stack([it["image"] for it in items]),
            "text": tokenizer([it["text"] for it in items]),
            "caption": tokenizer([it["caption"] for it in items]),
            "index": torch.tensor([it["index"] for it in items]),
        }

    return collate


def read_zeroshot(root: PathLike) -> Dict[str, Dict]:
    """Label sets of `<root>/zeroshot.json`: name -> {"classnames", "templates", "images", "labels"}."""
    from clip_td.base.io import read_json

    root = Path(root)
    spec = read_json(root / "zeroshot.json")
    sets = {}
    for name, entry in spec.items():
        for key in ("classnames", "templates", "file"):
            if key not in entry:
                raise InputError(f"{root / 'zeroshot.json'}: label set {name!r} lacks key {key!r}")
        rows = read_captions(root / entry["file"], required=("filepath", "label"))
        classes = list(entry["classnames"])
        labels = []
        for n, r in enumerate(rows, start=2):
            lab = r["label"].strip()
            if lab.lstrip("-").isdigit() and 0 <= int(lab) < len(classes):
                labels.append(int(lab))
            elif lab in classes:
                labels.append(classes.index(lab))
            else:
                raise InputError(f"{root / entry['file']}:{n}: column 'label': {lab!r} is neither a class index nor a class name")
        sets[name] = {"classnames": classes, "templates": list(entry["templates"]), "images": [r["image"] for r in rows], "labels": labels}
    return sets
