"""Task rows -> model tensors: lazy image decoding and transforms, student tokenisation, the
task's targets, and the row index for teacher-cache lookup.

A batch (dict) holds, for every task:
    index         (B,)         row index in the full split (teacher-cache key)
    pixel_values  (B, 3, H, W) student image
    input_ids     (B*K, T)     K = task.sequences_per_instance (VCR: 4 Q->A then 4 QA->R sequences)
    attention_mask(B*K, T)
    offsets       (B*K, T, 2)  character span of each student token in its text (0, 0 = special)
plus the task's targets (`task.targets(row)`: ints become (B,) long tensors, tensors are
stacked; e.g. vqa `targets` (B, A), snli_ve `labels` (B,), vcr `answer_label`, `rationale_label`)
and the task's teacher extras (vqa with answer sets: `cand_mask` (B, A) bool). With the teacher
running live (no cache) it also holds `teacher_pixels` (B, 3, H', W') and the teacher's texts as
lists of B * task.teacher_stages entries, instance-major. Unlabelled batches (`method.label_free`)
carry `label_free`: True.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF
from torchvision.transforms import v2

from clip_td.base.io import InputError

logger = logging.getLogger("clip_td")


TextPair = Tuple[str, Optional[str]]


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


AUGMENT_POLICIES = ("photometric", "photometric_noise", "photometric_safe", "photometric_augmix",
                    "photometric_randconv")

# AugMix's geometric operations: they would move the objects whose positions and sizes are labels,
# and away from the patches the teacher's targets were computed on (the teacher reads the clean image)
GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


class PixelAugMix(T.AugMix):
    """torchvision's AugMix (Hendrycks et al., 2020: chains of operations mixed with Dirichlet
    weights, then with the original under a Beta weight) over its pixel-level operations alone:
    posterize, solarize, autocontrast, equalize, brightness, colour, contrast, sharpness."""

    def _augmentation_space(self, num_bins, image_size):
        space = super()._augmentation_space(num_bins, image_size)
        return {name: value for name, value in space.items() if name not in GEOMETRIC_OPS}


class RandConv(nn.Module):
    """Random convolution, mixed (Xu et al., ICLR 2021, "RandConv_mix"), the single-source domain
    generalisation recipe for shifts of local texture and colour that keep shapes: a convolution
    3 -> 3 channels with a kernel side drawn from `kernel_sizes` and weights drawn from
    N(0, 1 / (3 k^2)) (Kaiming-normal, fan-in 3 k^2), reflect-padded so that the image keeps its
    size and a flat region stays flat, mixed with the image as alpha * x + (1 - alpha) * conv(x),
    alpha ~ U(0, 1). As in the paper it acts on centred pixels, here x = 2 p - 1 in [-1, 1] for p in
    [0, 1] (ViLT's normalisation, mean and std 0.5), and the output is clipped to that range (as
    the authors' code can clamp to the input's range). A fresh draw for every image.
    It recolours (k = 1 is a random linear map of the three channels) and re-textures edges; a
    drawn kernel is not symmetric, so an edge can move within its radius (3 pixels at k = 7), but
    the kernel is centred and its distribution symmetric: nothing moves on average."""

    def __init__(self, kernel_sizes: Sequence[int] = (1, 3, 5, 7)) -> None:
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"RandConv kernel sizes must be odd and positive, got {tuple(kernel_sizes)}")
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)

    @staticmethod
    def mix(x: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
        """x (3, H, W) in [-1, 1], weight (3, 3, k, k) -> alpha * x + (1 - alpha) * conv(x), clipped to [-1, 1]."""
        pad = weight.shape[-1] // 2
        padded = F.pad(x[None], (pad, pad, pad, pad), mode="reflect") if pad else x[None]
        return (alpha * x + (1.0 - alpha) * F.conv2d(padded, weight)[0]).clamp(-1.0, 1.0)

    def forward(self, img: Image.Image) -> Image.Image:
        k = self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), ()))]
        weight = torch.randn(3, 3, k, k) / (3 * k * k) ** 0.5
        alpha = float(torch.rand(()))
        x = TF.pil_to_tensor(img).float() / 127.5 - 1.0
        return TF.to_pil_image(((self.mix(x, weight, alpha) + 1.0) * 127.5).round().to(torch.uint8))


def photometric_augment(policy: str = "photometric", key: str = "data.augment_policy") -> Callable:
    """PIL -> PIL: the student's augmentation of a training image (`data.augment_policy`; the
    label-free copies' `data.free_augment_policy` where set, named by `key` in the error).

    photometric: brightness, contrast, saturation, a small hue shift, blur. Not modelled on any
        evaluation style. Hues move at most 0.03 of the wheel, but brightness, contrast and
        saturation range over 0.6-1.4, wider than colour names allow: at brightness 0.6 the
        synthetic world's orange is nearer its brown than its orange.
    photometric_noise: the same, then, on half of the images, additive Gaussian pixel noise at
        torchvision's default sigma (0.1 of the pixel range, clipped), the corruption-robustness
        recipe of training on noise.
    photometric_safe: label-preserving jitter for tasks that name colours: brightness, contrast and
        saturation within 0.9-1.1 and no hue change, then the same blur. At every corner of that
        range (any order of the three) each colour of the synthetic world's palette stays nearest
        to its own name.
    photometric_augmix: photometric, then AugMix (torchvision's defaults: severity 3, three chains
        of depth 1-3, alpha 1) over its pixel-level operations (`PixelAugMix`): histogram and
        texture changes (posterize, solarize, equalize, sharpness) beyond colour and light, the
        field's generic recipe for robustness to unseen corruptions, not modelled on any style.
    photometric_randconv: photometric, then a random convolution mixed with the image
        (`RandConv`): random recolouring and re-texturing of edges that keeps shapes, and places
        on average, the field's generic recipe for single-source domain generalisation, not
        modelled on any style. It renames many colours: meant for the label-free copies, whose
        targets the teacher computes on the clean image.
    No geometric op in any: positions and sizes are labels."""
    if policy not in AUGMENT_POLICIES:
        raise InputError(f"config key {key}: one of {', '.join(AUGMENT_POLICIES)}, got {policy!r}")
    jitter = (T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1) if policy == "photometric_safe"
              else T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.03))
    ops: List[Callable] = [jitter, T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.5)]
    if policy == "photometric_noise":
        ops.append(T.RandomApply([v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                                              v2.GaussianNoise(), v2.ToPILImage()])], p=0.5))
    if policy == "photometric_augmix":
        ops.append(PixelAugMix())
    if policy == "photometric_randconv":
        ops.append(RandConv())
    return T.Compose(ops)


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
        task: Any,
        ds: Any,
        transform: Callable,
        source_index: Optional[Sequence[int]] = None,
        teacher_transform: Optional[Callable] = None,
        teacher_texts: bool = False,
        teacher_extras: bool = False,
        label_free: bool = False,
        augment: Optional[Callable] = None,
        free_answers: bool = False,
        free_answer: Optional[Any] = None,
        consistency_augment: Optional[Callable] = None,
    ) -> None:
        self.task, self.ds, self.transform = task, ds, transform  # task: tasks.Task after setup
        self.source_index = list(source_index) if source_index is not None else list(range(len(ds)))
        self.teacher_transform = teacher_transform  # live teacher: its image input
        self.teacher_texts = teacher_texts  # live teacher: its texts (task.teacher_texts)
        self.teacher_extras = teacher_extras  # distilling: task.teacher_extras (e.g. VQA cand_mask)
        # unlabelled rows (method.label_free): one text per row, `task.label_free_text` (the question
        # or hypothesis, never an answer), no targets; `augment` (PIL -> PIL) applies to the student's
        # copy of every row (labelled rows: data.augment), never to the teacher's
        self.label_free, self.augment = label_free, augment
        self.free_answers = free_answers  # method.label_free_answers: the candidates' sequences (Task.label_free_texts)
        # method.label_free_rationales: the teacher's answer index per split row (-1: none), which
        # the task's label-free texts condition the next stage on
        self.free_answer = free_answer
        # train.consistency: a second, augmented student copy of each labelled row's clean image
        self.consistency_augment = consistency_augment

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        row = self.ds[i]
        image = load_rgb(row["image"])
        shown = self.augment(image) if self.augment is not None else image
        if self.label_free:
            # no targets; with the answer term the task's extras (VQA's answer set: the question's
            # type, never its answer), which the teacher's distribution is restricted to
            extras = self.task.teacher_extras(row) if self.free_answers and self.teacher_extras else {}
            if self.free_answer is not None:
                row = {**row, "_free_answer": int(self.free_answer[self.source_index[i]])}
            return {"index": self.source_index[i], "pixel_values": self.transform(shown),
                    "texts": self.task.label_free_texts(row, answers=self.free_answers), "targets": extras,
                    "label_free": True}
        item: Dict[str, Any] = {
            "index": self.source_index[i],
            "pixel_values": self.transform(shown),
            "texts": self.task.student_texts(row),
            "targets": self.task.targets(row),
        }
        if self.consistency_augment is not None:
            item["pixel_values_aug"] = self.transform(self.consistency_augment(image))
        if self.teacher_extras:
            item["targets"].update(self.task.teacher_extras(row))
        if self.teacher_transform is not None:
            item["teacher_pixels"] = self.teacher_transform(image)
        if self.teacher_texts:  # one entry per teacher stage of the task (Task.teacher_stages)
            stages = [self.task.teacher_texts({**row, "_stage": s} if s else row)
                      for s in range(int(getattr(self.task, "teacher_stages", 1)))]
            item.update(teacher_text=[t[0] for t in stages], teacher_candidates=[t[1] for t in stages],
                        teacher_gold=[t[2] for t in stages])
        return item


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
        self._warned = False

    def _warn_truncated(self) -> None:
        if not self._warned:
            logger.warning("a text pair's second segment alone is longer than student.max_text_len=%d tokens: both "
                           "segments are cut (longest first) in such batches; a tokenizer that knows the task's "
                           "words, or a larger max_text_len, avoids it", self.max_len)
            self._warned = True

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
            seconds = [b or "" for b in seconds]
            try:
                enc = self.tokenizer(firsts, seconds, **{**kwargs, "truncation": "only_first"})
            except Exception as e:  # the tokenizers library raises a bare Exception
                if "Truncation error" not in str(e):
                    raise
                # a candidate that does not fit on its own (a tokenizer that spells unseen words
                # piece by piece): cut the longer segment first rather than fail the batch
                self._warn_truncated()
                enc = self.tokenizer(firsts, seconds, **{**kwargs, "truncation": "longest_first"})
            enc["offset_mapping"] = joined_offsets(enc, firsts)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "offsets": enc["offset_mapping"],
        }

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        batch: Dict[str, Any] = {
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            # the same indices as a list, which device placement leaves on the host: the teacher
            # cache and the trust gates read them without waiting for the GPU
            "index_host": [int(it["index"]) for it in items],
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        }
        batch.update(self.tokenize([p for it in items for p in it["texts"]]))
        for key, first in items[0]["targets"].items():  # the task's targets and teacher extras
            values = [it["targets"][key] for it in items]
            batch[key] = torch.stack(values) if torch.is_tensor(first) else torch.tensor(values, dtype=torch.long)
        if "pixel_values_aug" in items[0]:
            batch["pixel_values_aug"] = torch.stack([it["pixel_values_aug"] for it in items])
        if "teacher_pixels" in items[0]:
            batch["teacher_pixels"] = torch.stack([it["teacher_pixels"] for it in items])
        for key in ("teacher_text", "teacher_candidates", "teacher_gold"):  # instance-major over stages
            if key in items[0]:
                batch[key] = [x for it in items for x in it[key]]
        if items[0].get("label_free"):
            batch["label_free"] = True
        return batch
