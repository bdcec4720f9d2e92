"""`FinetuneModel`: student + task head + distiller, the one module `accelerator.prepare` wraps.

The frozen teacher is not in here: its outputs arrive as an argument, so it stays out of the
optimizer and of DDP, and the saved student runs without it. Outputs and losses share one
dict; the training loss is the sum of its `*_loss` entries (task loss + distillation terms).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_td.base.io import InputError

VCR_CHOICES = 4


def add_lora(student: nn.Module, r: int, alpha: int, dropout: float, target_modules: Iterable[str]) -> nn.Module:
    """Inject LoRA adapters (peft) into `student`; only the adapters stay trainable in it."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    try:
        return inject_adapter_in_model(cfg, student)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in student.named_modules() if isinstance(m, nn.Linear)})
        raise InputError(
            f"student.lora.target_modules={list(target_modules)}: {e}; linear layers of this student: {names}"
        ) from None


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on VQA soft scores, summed over answers (the usual VQA recipe).

    logits, targets: (B, A) -> scalar.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / logits.shape[0]


class FinetuneModel(nn.Module):
    """Student + head (+ distiller, training only). forward(batch, teacher_out) -> dict.

    Output keys: vqa / snli_ve `logits` (B, C); vcr `q2a_logits`, `qa2r_logits` (B, 4); with
    targets in the batch `task_loss`; with teacher outputs the distiller's `*_loss` terms.
    """

    def __init__(self, task: str, student: nn.Module, head: nn.Module, distiller: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.task = task
        self.student = student
        self.head = head
        self.distiller = distiller

    def forward(
        self, batch: Dict[str, Any], teacher_out: Optional[Dict[str, Any]] = None, kd_scale: float = 1.0
    ) -> Dict[str, Any]:
        pixels = batch["pixel_values"]  # (B, 3, H, W)
        n_seq = batch["input_ids"].shape[0] // pixels.shape[0]  # 1, or 8 for VCR
        if n_seq > 1:
            pixels = pixels.repeat_interleave(n_seq, dim=0)  # one image copy per candidate sequence
        out = self.student(pixels, batch["input_ids"], batch["attention_mask"])
        scores = self.head(out["pooled"])
        result = self._task_outputs(scores, batch)
        if self.distiller is not None and teacher_out is not None:
            view, view_batch, answer_logits = self._distill_view(out, batch, result)
            terms = self.distiller(view, teacher_out, view_batch, answer_logits)
            for key, value in terms.items():
                result[key] = value * kd_scale if key.endswith("_loss") else value
        return result

    def _task_outputs(self, scores: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, Any]:
        if self.task != "vcr":
            result: Dict[str, Any] = {"logits": scores}
            if "targets" in batch:
                result["task_loss"] = vqa_loss(scores, batch["targets"])
            elif "labels" in batch:
                result["task_loss"] = F.cross_entropy(scores.float(), batch["labels"])
            return result
        choices = scores.reshape(-1, 2, VCR_CHOICES)  # (B, [Q->A, QA->R], 4)
        result = {"q2a_logits": choices[:, 0], "qa2r_logits": choices[:, 1]}
        if "answer_label" in batch:
            result["task_loss"] = F.cross_entropy(choices[:, 0].float(), batch["answer_label"]) + F.cross_entropy(
                choices[:, 1].float(), batch["rationale_label"]
            )
        return result

    def _distill_view(self, out: Dict[str, torch.Tensor], batch: Dict[str, Any], result: Dict[str, Any]):
        """One student sequence per instance, the one matching the teacher's task text.

        VCR: the Q->A sequence of the gold answer (question + gold answer, as the teacher reads it);
        the answer-level term uses the Q->A logits over the 4 answers.
        """
        if self.task != "vcr":
            return out, batch, result["logits"]
        n = batch["pixel_values"].shape[0]
        rows = torch.arange(n, device=batch["input_ids"].device) * 2 * VCR_CHOICES + batch["answer_label"]
        view = {k: v[rows] for k, v in out.items()}
        view_batch = dict(batch)
        for key in ("input_ids", "attention_mask", "offsets"):
            view_batch[key] = batch[key][rows]
        return view, view_batch, result["q2a_logits"]

    def predict(self, result: Dict[str, Any]) -> torch.Tensor:
        """Predicted class per instance: (B,) for vqa / snli_ve, (B, 2) [answer, rationale] for vcr."""
        if self.task != "vcr":
            return result["logits"].argmax(-1)
        return torch.stack([result["q2a_logits"].argmax(-1), result["qa2r_logits"].argmax(-1)], dim=-1)


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
