"""Fine-tune a VL student on VQA / SNLI-VE / VCR with CLIP Targeted Distillation (accelerate).

    accelerate launch finetune.py [--config PATH] [dotted.key=value ...]
    python -m clip_td.finetune ...            (the same, one process)

Shaped like accelerate's examples: `Accelerator(...)`, build, one `prepare(...)` of the
FinetuneModel (student + head + distiller; the frozen teacher stays outside), `accumulate`,
`gather_for_metrics`, `save_state` / `load_state` + `skip_first_batches`, `accelerator.log`.
Writes `<output_dir>/config.yaml`, `metrics.json` (DESIGN.md contract 2), the official-format
predictions of every eval split under `predictions/`, `checkpoints/`, `best/` and `model/`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import adapter_only_hook, check_compatible, resolve_resume, save_checkpoint, save_weights
from .config import load_config, parse_script_args, save_config, to_dict
from .finetune_build import Built, build
from .finetune_config import FinetuneConfig
from .io import InputError, write_json_atomic
from .model import inference_state_dict, total_loss


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the message gives the step and every loss term."""


def available_trackers() -> List[str]:
    """accelerate trackers whose packages are installed (none is fine: nothing is logged)."""
    from accelerate.utils import is_aim_available, is_comet_ml_available, is_mlflow_available
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    found = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "aim": is_aim_available,
             "comet_ml": is_comet_ml_available, "mlflow": is_mlflow_available}
    return [name for name, check in found.items() if check()]


def make_accelerator(cfg: DictConfig) -> Accelerator:
    trackers = available_trackers()
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=trackers or None,
        project_dir=cfg.output_dir,
        # data order depends only on (seed, epoch), so a resumed run sees the same batches
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        # `none` leaves distillation projections unused; DDP must not wait for their gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; no weight decay on biases and norms (1-d tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def kd_scale(schedule: str, step: int, total: int) -> float:
    """Factor on the distillation terms at optimizer step `step` of `total` (weighting.SCHEDULES)."""
    from .weighting import SCHEDULES

    if schedule not in SCHEDULES:
        raise InputError(f"method.schedule={schedule!r}; expected one of: {', '.join(SCHEDULES.names())}")
    return float(SCHEDULES.get(schedule)(step, total))


def loss_terms(result: Dict[str, Any]) -> Dict[str, float]:
    return {k: float(v.detach()) for k, v in result.items() if k.endswith("_loss")}


def check_finite(accelerator: Accelerator, loss: torch.Tensor, result: Dict[str, Any], step: int) -> None:
    """Stop every process on a NaN/inf loss with one message naming the step and each term."""
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        terms = ", ".join(f"{k}={v:.6g}" for k, v in loss_terms(result).items())
        raise TrainingDiverged(f"non-finite loss at step {step + 1}: {terms}")


@torch.no_grad()
def predict_split(accelerator: Accelerator, model: Any, loader: DataLoader, n: int) -> List[Any]:
    """Predictions of the student alone for every row of an eval split, in row order."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    preds: List[Any] = [None] * n
    for batch in loader:
        pred = unwrapped.predict(model(batch))
        index, pred = accelerator.gather_for_metrics((batch["index"], pred))
        for i, p in zip(index.tolist(), pred.tolist()):
            preds[i] = p
    model.train()
    assert all(p is not None for p in preds), "an eval row got no prediction"
    return preds


def evaluate(accelerator: Accelerator, model: Any, built: Built, loaders: Dict[str, DataLoader], out_dir: Path):
    """Predict, write official-format files, score them with the task's scorer (main process).

    Returns ({split: {metric: percent}}, {split: {file kind: path}}) on the main process.
    """
    scores: Dict[str, Dict[str, float]] = {}
    files: Dict[str, Dict[str, str]] = {}
    for split, loader in loaders.items():
        preds = predict_split(accelerator, model, loader, len(built.eval_rows[split]))
        if accelerator.is_main_process:
            decoded = built.decode_predictions(preds)
            files[split] = built.task.write_predictions(built.eval_rows[split], decoded, out_dir, split)
            scores[split] = {k: float(v) for k, v in built.task.score_files(files[split]).items()}
    return scores, files


def run_signature(cfg: DictConfig, built: Built) -> Dict[str, Any]:
    """What a checkpoint must share with the run resuming from it."""
    return {
        "task": cfg.task.name, "method": cfg.method.name, "student": cfg.student.name,
        "pretrained": cfg.student.pretrained, "vocab_size": built.vocab_size, "num_answers": built.num_answers,
        "lora": bool(cfg.student.lora.enabled), "train_rows": len(built.train_set),
        "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
        "num_processes": built.num_processes,
    }


def train(cfg: DictConfig, accelerator: Accelerator, built: Built) -> Dict[str, Any]:
    """The training loop; returns the train figures of metrics.json."""
    out = Path(cfg.output_dir)
    train_dl = built.loader(built.train_set, cfg.train.batch_size, shuffle=True)
    eval_dls = {s: built.loader(ds, cfg.eval.batch_size, shuffle=False) for s, ds in built.eval_sets.items()}
    optimizer = make_optimizer(built.model, cfg)
    # each process gets ceil(batches / processes) batches (accelerate pads the last round)
    steps_per_epoch = math.ceil(math.ceil(len(train_dl) / accelerator.num_processes) / cfg.train.grad_accum)
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    from transformers import get_scheduler

    # the prepared scheduler advances once per process per step (accelerate's convention)
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=int(cfg.train.warmup * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    model, optimizer, train_dl, scheduler, *eval_list = accelerator.prepare(
        built.model, optimizer, train_dl, scheduler, *eval_dls.values()
    )
    eval_dls = dict(zip(eval_dls, eval_list))
    if cfg.student.lora.enabled:
        accelerator.register_save_state_pre_hook(adapter_only_hook)
    signature = run_signature(cfg, built)
    pos = {"step": 0, "epoch": 0, "batch": 0, "best": None}
    ckpt = resolve_resume(cfg.train.resume, out)
    if ckpt is not None:
        pos.update(check_compatible(ckpt, signature, model))
        accelerator.load_state(str(ckpt), strict=not cfg.student.lora.enabled)
        accelerator.print(f"resumed from {ckpt} at step {pos['step']}")
    start_step = pos["step"]
    if built.teacher is not None:
        built.teacher.to(accelerator.device)

    def checkpoint(name: str) -> None:
        state = {k: pos[k] for k in ("step", "epoch", "batch", "best")}
        save_checkpoint(accelerator, out, name, {**state, "signature": signature}, cfg.train.keep_checkpoints)

    def maybe_best() -> None:
        scores, _ = evaluate(accelerator, model, built, {cfg.eval.best_split: eval_dls[cfg.eval.best_split]},
                             out / "predictions")
        if accelerator.is_main_process:
            score = next(iter(scores[cfg.eval.best_split].values()))
            accelerator.log({f"eval/{cfg.eval.best_split}": score}, step=pos["step"])
            if pos["best"] is None or score > pos["best"]:
                pos["best"] = score
                save_best(accelerator, model, built, cfg, out / "best", pos)
        pos["best"] = broadcast_float(accelerator, pos["best"])

    n_epochs = math.ceil(total_steps / steps_per_epoch)
    bar = tqdm(total=total_steps, initial=pos["step"], desc="train", disable=not accelerator.is_local_main_process)
    model.train()
    samples, train_time = 0, 0.0
    done = pos["step"] >= total_steps
    for epoch in range(pos["epoch"], n_epochs):
        if done:
            break
        train_dl.set_epoch(epoch)
        skip = pos["batch"] if epoch == pos["epoch"] else 0
        loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        tick = time.perf_counter()
        for batch_i, batch in enumerate(loader, start=skip):
            with accelerator.accumulate(model):
                teacher_out = built.teacher_outputs(batch)
                result = model(batch, teacher_out, kd_scale(cfg.method.schedule, pos["step"], total_steps))
                loss = total_loss(result)
                check_finite(accelerator, loss, result, pos["step"])
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            samples += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            pos.update(step=pos["step"] + 1, epoch=epoch, batch=batch_i + 1)
            bar.update(1)
            if pos["step"] % cfg.train.log_every == 0 or pos["step"] == total_steps:
                terms = loss_terms(result)
                bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
                accelerator.log({**{f"train/{k}": v for k, v in terms.items()}, "lr": scheduler.get_last_lr()[0]},
                                step=pos["step"])
            pause = time.perf_counter()
            train_time += pause - tick
            if cfg.train.eval_every and pos["step"] % cfg.train.eval_every == 0 and cfg.eval.best_split in eval_dls:
                maybe_best()
            if cfg.train.checkpoint_every and pos["step"] % cfg.train.checkpoint_every == 0:
                checkpoint(f"step_{pos['step']}")
            tick = time.perf_counter()
            if pos["step"] >= total_steps:
                done = True
                break
        train_time += time.perf_counter() - tick
        if not done:
            pos.update(epoch=epoch + 1, batch=0)
    bar.close()
    checkpoint(f"step_{pos['step']}")
    steps_run = max(pos["step"] - start_step, 1)
    return {"model": model, "eval_dls": eval_dls, "steps": pos["step"],
            "samples_per_s": samples / max(train_time, 1e-9), "step_time_s": train_time / steps_run}


def broadcast_float(accelerator: Accelerator, value: Optional[float]) -> Optional[float]:
    """The main process's value on every process (None travels as NaN)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    t = torch.tensor([float("nan") if value is None else value], device=accelerator.device)
    t = broadcast(t, from_process=0)
    return None if math.isnan(t.item()) else t.item()


def save_best(accelerator: Accelerator, model: Any, built: Built, cfg: DictConfig, out_dir: Path, pos: Dict) -> None:
    """Student + head weights (adapters + head with LoRA); no distiller, no teacher."""
    state = inference_state_dict(accelerator.unwrap_model(model), lora=bool(cfg.student.lora.enabled))
    meta = {"step": pos["step"], "best": pos.get("best"), "task": cfg.task.name, "student": cfg.student.name,
            "lora": bool(cfg.student.lora.enabled)}
    save_weights(state, out_dir, meta)


def write_metrics(cfg: DictConfig, figures: Dict[str, Any], scores: Dict, files: Dict) -> Path:
    """`<output_dir>/metrics.json`, exactly DESIGN.md contract 2."""
    metrics = {
        "task": cfg.task.name,
        "method": cfg.method.name,
        "train_fraction": float(cfg.train.fraction),
        "seed": int(cfg.seed),
        "eval": scores,
        "train": {"steps": int(figures["steps"]), "samples_per_s": round(float(figures["samples_per_s"]), 3),
                  "step_time_s": round(float(figures["step_time_s"]), 5)},
        "files": files,
    }
    path = Path(cfg.output_dir) / "metrics.json"
    write_json_atomic(path, metrics)
    return path


def run(cfg: DictConfig) -> Path:
    """Build, train, evaluate every split, write metrics and predictions; returns metrics.json."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    built = build(cfg, accelerator)
    if accelerator.trackers:
        accelerator.init_trackers("clip-td", config=to_dict(cfg))
    figures = train(cfg, accelerator, built)
    model = figures["model"]
    scores, files = evaluate(accelerator, model, built, figures["eval_dls"], out / "predictions")
    path = out / "metrics.json"
    if accelerator.is_main_process:
        save_best(accelerator, model, built, cfg, out / "model", {"step": figures["steps"]})
        path = write_metrics(cfg, figures, scores, files)
        summary = ", ".join(f"{s}: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()) for s, m in scores.items())
        print(f"{cfg.task.name} / {cfg.method.name}: {summary}")
        print(f"metrics: {path}")
        print(f"predictions: {out / 'predictions'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `finetune.py` and `python -m clip_td.finetune`; returns the exit code."""
    try:
        config_path, overrides = parse_script_args(argv, description=__doc__.splitlines()[0])
        run(load_config(FinetuneConfig, config_path, overrides))
    except (InputError, TrainingDiverged) as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, InputError) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
