"""`FinetuneModel`: student + task head + distiller, the one module `accelerator.prepare` wraps.

The frozen teacher is not in here: its outputs arrive as an argument, so it stays out of the
optimizer and of DDP, and the saved student runs without it. Outputs and losses share one
dict; the training loss is the sum of its `*_loss` entries (task loss + distillation terms).
What the head's scores mean, the task loss and the distillation view come from the task.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class FinetuneModel(nn.Module):
    """Student + head (+ distiller, training only). forward(batch, teacher_out) -> dict.

    Output keys: the task's (`logits` (B, C); VCR `q2a_logits`, `qa2r_logits` (B, 4)), with
    targets in the batch `task_loss`; with teacher outputs the distiller's `*_loss` terms; with
    `consistency` > 0 and the batch's `pixel_values_aug`, `consistency_loss`.
    """

    def __init__(self, task: Any, student: nn.Module, head: nn.Module, distiller: Optional[nn.Module] = None,
                 consistency: float = 0.0) -> None:
        super().__init__()
        self.task = task  # tasks.Task: not a module, holds no parameters
        self.student = student
        self.head = head
        self.distiller = distiller
        # train.consistency: weight of the student's own clean-vs-augmented agreement (needs the
        # batch's `pixel_values_aug`, which the training set adds when the weight is > 0)
        self.consistency = float(consistency)

    def forward(
        self, batch: Dict[str, Any], teacher_out: Optional[Dict[str, Any]] = None, kd_scale: float = 1.0,
        unlabelled: Optional[Tuple[Dict[str, Any], Dict[str, Any], float]] = None,
    ) -> Dict[str, Any]:
        """`unlabelled` = (batch of unlabelled rows, their teacher outputs, weight): adds
        `free_loss`, the label-free term (`Distiller.label_free`), computed in this same forward so
        that one backward (and one DDP reduction) covers both batches."""
        out, _ = self._read(batch["pixel_values"], batch)
        result = self.task.outputs(self.head(out["pooled"]), batch)
        if self.consistency and "pixel_values_aug" in batch:
            aug_out, _ = self._read(batch["pixel_values_aug"], batch)  # the same texts
            aug_result = self.task.outputs(self.head(aug_out["pooled"]), {})  # logits only
            sigmoid = getattr(self.task, "answer_head", "softmax") == "sigmoid"
            result["consistency_loss"] = self.consistency * consistency_jsd(result, aug_result, sigmoid)
        if self.distiller is not None and teacher_out is not None:
            view, view_batch, answer_logits = self.task.distill_view(out, batch, result)
            terms = self.distiller(view, teacher_out, view_batch, answer_logits)
            for key, value in terms.items():
                result[key] = value * kd_scale if key.endswith("_loss") else value
        if unlabelled is not None and self.distiller is not None:
            free_batch, free_teacher, weight = unlabelled
            free_out, free_seq = self._read(free_batch["pixel_values"], free_batch)  # VCR's answers: one per choice
            settings = self.distiller.settings
            free = 0.0
            if settings.label_free_features:  # one sequence per image: the first choice's
                # the teacher's rows of one image (VCR with method.label_free_rationales: one per
                # stage) share its image features: its first row's
                t_rows = free_teacher["image_embed"].shape[0] // free_batch["pixel_values"].shape[0]
                image_teacher = {k: free_teacher[k][::t_rows] for k in ("patch_tokens", "image_embed")}
                free = self.distiller.label_free({k: v[::free_seq] for k, v in free_out.items()}, image_teacher)
            if settings.label_free_answers and settings.eta:
                if free_seq > 1:  # multiple-choice stages: the head's score of each choice, one row per stage
                    free_logits = self.head(free_out["pooled"]).reshape(-1, free_teacher["cand_logits"].shape[-1])
                else:
                    free_result = self.task.outputs(self.head(free_out["pooled"]), {})  # no targets: logits only
                    _, _, free_logits = self.task.distill_view(free_out, free_batch, free_result)
                free = free + self.distiller.label_free_answers(free_logits, free_teacher, free_batch.get("cand_mask"))
            result["free_loss"] = weight * kd_scale * torch.as_tensor(free, dtype=torch.float32)
        return result

    def _read(self, pixels: torch.Tensor, batch: Dict[str, Any]) -> Tuple[Dict[str, Any], int]:
        """The student on `pixels` (B, 3, H, W) with the batch's texts, each image repeated once
        per candidate sequence (task.sequences_per_instance) -> (student outputs, that count)."""
        n_seq = batch["input_ids"].shape[0] // pixels.shape[0]
        if n_seq > 1:
            pixels = pixels.repeat_interleave(n_seq, dim=0)
        return self.student(pixels, batch["input_ids"], batch["attention_mask"]), n_seq

    def predict(self, result: Dict[str, Any]) -> torch.Tensor:
        """Predicted class per instance: (B,) or, for VCR, (B, 2) [answer, rationale]."""
        return self.task.predict(result)


def jensen_shannon(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """JS(p_1..p_n) = (1/n) sum_i KL(p_i || m), m = mean_i p_i, over the last dimension, one value
    per row (the mixture is clamped at 1e-7 before its log, as AugMix does). -> (...,)."""
    m = torch.stack(list(probs)).mean(0).clamp_min(1e-7).log()
    return sum(F.kl_div(m, p, reduction="none").sum(-1) for p in probs) / len(probs)


def consistency_jsd(clean: Dict[str, Any], augmented: Dict[str, Any], sigmoid: bool = False) -> torch.Tensor:
    """The student's agreement with itself across the clean and the augmented view of a labelled
    image (AugMix's consistency, with one augmented view): the Jensen-Shannon divergence of the two
    answer distributions, averaged over rows and summed over the task's logit outputs (VCR: the Q->A
    and QA->R stages). A softmax head's distribution is its softmax; a sigmoid head's (VQA's soft
    scores) is one Bernoulli per answer, averaged over the answers. No gold label is read."""
    total = torch.zeros((), dtype=torch.float32)
    for key, logits in clean.items():
        if not key.endswith("logits") or key not in augmented:
            continue
        a, b = logits.float(), augmented[key].float()
        if sigmoid:
            pa, pb = torch.sigmoid(a), torch.sigmoid(b)
            js = jensen_shannon([torch.stack([pa, 1 - pa], -1), torch.stack([pb, 1 - pb], -1)]).mean(-1)
        else:
            js = jensen_shannon([a.softmax(-1), b.softmax(-1)])
        total = total.to(js.device) + js.mean()
    return total


def total_loss(result: Dict[str, Any]) -> torch.Tensor:
    """Sum of every `*_loss` entry (a weight of 0 upstream turns a term off)."""
    return sum(v for k, v in result.items() if k.endswith("_loss"))


def inference_state_dict(model: FinetuneModel, lora: bool) -> Dict[str, torch.Tensor]:
    """What inference needs: the student (only its adapters when LoRA is on) and the head.

    The distiller's projections exist only for training and are left out; the teacher is never
    part of the model.
    """
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("distiller."):
            continue
        if lora and name.startswith("student.") and "lora_" not in name:
            continue  # the frozen base comes from the pretrained checkpoint
        state[name] = tensor.detach().cpu().contiguous()
    return state
