"""Checkpoints: resumable training state (accelerate `save_state`, safetensors weights) and the
inference weights of the best / final model.

    <output_dir>/checkpoints/<name>/   model.safetensors, optimizer.bin, scheduler.bin, RNG
                                       states (accelerate) + run_state.json (step, epoch, batch
                                       in epoch, best score, run signature)
    <output_dir>/best/, <output_dir>/model/   model.safetensors (student + head only) + meta.json

"latest" is found from run_state.json's step, never from folder names. A checkpoint written by a
different run set-up (task, student, method, vocabulary, LoRA...) is refused with one message.
With LoRA the saved weights are only the trainable ones (adapters, head, distiller projections);
the frozen student base comes back from its pretrained checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from clip_td.base.io import InputError, PathLike, atomic_path, read_json, write_json_atomic

RUN_STATE = "run_state.json"
WEIGHTS = "model.safetensors"


def adapter_only_hook(models: List[nn.Module], weights: List[Dict[str, Any]], _output_dir: str) -> None:
    """accelerate save-state pre-hook: keep only trainable parameters and head/distiller entries."""
    for model, state in zip(models, weights):
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        for name in list(state):
            if name not in keep and ".student." not in f".{name}":
                keep.add(name)  # head / distiller buffers
        for name in [n for n in state if n not in keep]:
            del state[name]


def list_checkpoints(output_dir: PathLike) -> List[Path]:
    """Finished checkpoints under `<output_dir>/checkpoints`, oldest step first."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("*") if (p / RUN_STATE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: read_json(p / RUN_STATE)["step"])


def resolve_resume(resume: Optional[str], output_dir: PathLike) -> Optional[Path]:
    """`train.resume` -> checkpoint folder: a path, "latest" (None if there is none yet), or None."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / RUN_STATE).is_file():
        raise InputError(f"train.resume={resume!r}: not a checkpoint folder (expected {path / RUN_STATE})")
    return path


def check_compatible(ckpt: Path, signature: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """The checkpoint's run state, after checking it was written by this run set-up."""
    state = read_json(ckpt / RUN_STATE)
    theirs = state.get("signature", {})
    diffs = [f"{k}: checkpoint {theirs.get(k)!r}, this run {v!r}" for k, v in signature.items() if theirs.get(k) != v]
    if diffs:
        raise InputError(f"train.resume: {ckpt} was written by an incompatible run ({'; '.join(diffs)})")
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    with safe_open(str(ckpt / WEIGHTS), framework="pt") as f:
        for name in f.keys():
            if name not in shapes or tuple(f.get_slice(name).get_shape()) != shapes[name]:
                raise InputError(f"train.resume: {ckpt / WEIGHTS} entry {name!r} does not fit this model")
    return state


def save_checkpoint(accelerator: Any, output_dir: PathLike, name: str, run_state: Dict[str, Any], keep: int) -> Path:
    """Save the full training state as `<output_dir>/checkpoints/<name>` (all processes call this)."""
    root = Path(output_dir) / "checkpoints"
    final, tmp = root / name, root / f".{name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / RUN_STATE, run_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # a crash before this line leaves only the hidden .tmp folder
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_weights(state: Dict[str, Any], out_dir: PathLike, meta: Dict[str, Any]) -> Path:
    """Inference weights (safetensors) + meta.json, written atomically as one folder."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / WEIGHTS))
        write_json_atomic(tmp / "meta.json", meta)
    return Path(out_dir)
