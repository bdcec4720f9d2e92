"""Task rows -> model tensors: lazy image decoding and transforms, student tokenisation, VCR
multiple-choice expansion, VQA soft targets, and the row index for teacher-cache lookup.

A batch (dict) holds, for every task:
    index         (B,)         row index in the full split (teacher-cache key)
    pixel_values  (B, 3, H, W) student image
    input_ids     (B*K, T)     K = 1 (vqa, snli_ve) or 8 (vcr: 4 Q->A then 4 QA->R sequences)
    attention_mask(B*K, T)
    offsets       (B*K, T, 2)  character span of each student token in its text (0, 0 = special)
and the targets: vqa `targets` (B, A) soft scores; snli_ve `labels` (B,); vcr
`answer_label`, `rationale_label` (B,); when distilling VQA, `cand_mask` (B, A) bool, the
answers the teacher's distribution is restricted to. With the teacher running live (no cache) it also
holds `teacher_pixels` (B, 3, H', W') and the teacher's texts as lists of strings.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from clip_td.app.task_texts import answer_set_mask

TextPair = Tuple[str, Optional[str]]
NUM_CHOICES = 4  # VCR answer / rationale candidates


def student_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """PIL image -> (3, image_size, image_size) float tensor, normalised like the student's checkpoint."""
    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def student_texts(task: str, row: Dict[str, Any]) -> List[TextPair]:
    """What the student reads for one row: one (text, None) or VCR's 8 (context, choice) pairs.

    VCR: Q->A pairs the question with each answer; QA->R pairs question + gold answer with each
    rationale (the standard QA->R protocol conditions on the correct answer).
    """
    if task != "vcr":
        return [(row["text"], None)]
    q = row["text"]
    gold = row["answers"][row["answer_label"]] if row.get("answer_label", -1) >= 0 else row["answers"][0]
    q2a = [(q, a) for a in row["answers"]]
    qa2r = [(f"{q} {gold}", r) for r in row["rationales"]]
    return q2a + qa2r


def corpus_texts(task: str, ds: Any) -> List[str]:
    """Every string the student reads on `ds` (the tokenizer's training corpus)."""
    out: List[str] = list(ds["text"])
    if task == "vcr":
        for answers, rationales in zip(ds["answers"], ds["rationales"]):
            out.extend(answers)
            out.extend(rationales)
    return out


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class TaskDataset(Dataset):
    """One item per task row; images are decoded only when the item is read.

    `source_index[i]` is the row's index in the full split (the low-shot subset keeps it), so
    teacher-cache entries are shared by every fraction and seed.
    """

    def __init__(
        self,
        task: str,
        ds: Any,
        transform: Callable,
        source_index: Optional[Sequence[int]] = None,
        answer_vocab: Any = None,
        teacher_transform: Optional[Callable] = None,
        teacher_texts: Optional[Callable[[Dict[str, Any]], Tuple[str, List[str], int]]] = None,
        answer_sets: Optional[Dict[str, Tuple[int, ...]]] = None,
    ) -> None:
        self.task, self.ds, self.transform = task, ds, transform
        self.source_index = list(source_index) if source_index is not None else list(range(len(ds)))
        self.answer_vocab = answer_vocab
        self.teacher_transform, self.teacher_texts = teacher_transform, teacher_texts
        self.answer_sets = answer_sets  # VQA: question_type -> answer ids the teacher may choose from

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        row = self.ds[i]
        image = load_rgb(row["image"])
        item: Dict[str, Any] = {
            "index": self.source_index[i],
            "pixel_values": self.transform(image),
            "texts": student_texts(self.task, row),
        }
        item.update(self._targets(row))
        if self.answer_sets is not None:
            item["cand_mask"] = answer_set_mask(self.answer_sets, row["question_type"], len(self.answer_vocab))
        if self.teacher_transform is not None:
            item["teacher_pixels"] = self.teacher_transform(image)
        if self.teacher_texts is not None:
            text, candidates, gold = self.teacher_texts(row)
            item.update(teacher_text=text, teacher_candidates=candidates, teacher_gold=gold)
        return item

    def _targets(self, row: Dict[str, Any]) -> Dict[str, Any]:
        if self.task == "vqa":
            target = torch.zeros(len(self.answer_vocab))
            for idx, score in self.answer_vocab.soft_scores(row["answers"]).items():
                target[idx] = score
            return {"targets": target}
        if self.task == "snli_ve":
            return {"labels": int(row["label"])}
        return {"answer_label": int(row["answer_label"]), "rationale_label": int(row["rationale_label"])}


def joined_offsets(enc: Any, firsts: Sequence[str]) -> torch.Tensor:
    """Offsets of a pair encoding re-expressed in the joined string `first + " " + second`.

    The teacher reads the pair as one string (e.g. question + gold answer), so the sub-word
    alignment needs the second segment's spans shifted past the first. -> (N, T, 2).
    """
    offsets = enc["offset_mapping"].clone()
    for i, first in enumerate(firsts):
        seq = torch.tensor([s if s is not None else -1 for s in enc.sequence_ids(i)])
        second = (seq == 1) & (offsets[i, :, 1] > offsets[i, :, 0])
        offsets[i][second] += len(first) + 1
    return offsets


class Collator:
    """Stack images and targets, tokenise every (text, pair) with padding and character offsets."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:
        self.tokenizer, self.max_len = tokenizer, max_len

    def tokenize(self, pairs: Sequence[TextPair]) -> Dict[str, torch.Tensor]:
        firsts = [a for a, _ in pairs]
        seconds = [b for _, b in pairs]
        kwargs = dict(
            padding=True, truncation=True, max_length=self.max_len, return_offsets_mapping=True, return_tensors="pt"
        )
        if all(b is None for b in seconds):
            enc = self.tokenizer(firsts, **kwargs)
        else:
            # Truncate the context first: VCR candidates must stay readable.
            enc = self.tokenizer(firsts, [b or "" for b in seconds], **{**kwargs, "truncation": "only_first"})
            enc["offset_mapping"] = joined_offsets(enc, firsts)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "offsets": enc["offset_mapping"],
        }

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        batch: Dict[str, Any] = {
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        }
        batch.update(self.tokenize([p for it in items for p in it["texts"]]))
        for key in ("labels", "answer_label", "rationale_label"):
            if key in items[0]:
                batch[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
        for key in ("targets", "cand_mask"):
            if key in items[0]:
                batch[key] = torch.stack([it[key] for it in items])
        if "teacher_pixels" in items[0]:
            batch["teacher_pixels"] = torch.stack([it["teacher_pixels"] for it in items])
        for key in ("teacher_text", "teacher_candidates", "teacher_gold"):
            if key in items[0]:
                batch[key] = [it[key] for it in items]
        return batch
