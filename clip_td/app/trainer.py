"""Fine-tune a VL student on VQA / SNLI-VE / VCR with CLIP Targeted Distillation (accelerate).

    accelerate launch finetune.py [--config PATH] [dotted.key=value ...]
    python -m clip_td.app.trainer ...            (the same, one process)

Shaped like accelerate's examples: `Accelerator(...)`, build, one `prepare(...)` of the
FinetuneModel (student + head + distiller; the frozen teacher stays outside), `accumulate`,
`gather_for_metrics`, `save_state` / `load_state` + `skip_first_batches`, `accelerator.log`.
Writes `<output_dir>/config.yaml`, `metrics.json` (docs/contracts.md section 2), the official-format
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

from clip_td.base.checkpoints import adapter_only_hook, check_compatible, resolve_resume, save_checkpoint, save_weights
from clip_td.base.config import load_config, parse_script_args, save_config, to_dict
from clip_td.app.build import Built, build, resolve_student
from clip_td.app.schema import FinetuneConfig
from clip_td.base.io import InputError, cpu_model, write_json_atomic
from clip_td.base.scripts import TrainingDiverged, run_script
from clip_td.lib.trust import check_steps
from clip_td.lib.weighting import SCHEDULES
from clip_td.app.finetune_model import inference_state_dict, total_loss
from clip_td.app.teacher_setup import host_index


def available_trackers() -> List[str]:
    """accelerate trackers whose packages are installed (none is fine: nothing is logged)."""
    from accelerate.utils import is_aim_available, is_comet_ml_available, is_mlflow_available
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    found = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "aim": is_aim_available,
             "comet_ml": is_comet_ml_available, "mlflow": is_mlflow_available}
    return [name for name, check in found.items() if check()]


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 natively: oneDNN's bf16 kernels (AVX512-BF16, AMX or AVX512 cores),
    then a tiny bf16 matmul under CPU autocast that must run and give the fp32 answer."""
    try:
        if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        a = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = a @ a
        return out.dtype == torch.bfloat16 and torch.allclose(out.float(), a @ a, atol=0.05)
    except (RuntimeError, AttributeError):
        return False


def training_on_cpu() -> bool:
    """What accelerate will pick: the CPU when no GPU is visible or ACCELERATE_USE_CPU is set."""
    from accelerate.utils import str_to_bool

    return bool(str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))) or not torch.cuda.is_available()


def check_mixed_precision(mixed_precision: str) -> None:
    """`train.mixed_precision=bf16` on hardware without bf16 is one message naming the key."""
    if str(mixed_precision) != "bf16":
        return
    if training_on_cpu():
        if not cpu_supports_bf16():
            raise InputError("train.mixed_precision=bf16: this CPU has no bf16 support (no oneDNN bf16 kernels: "
                             "needs AVX512-BF16, AMX or AVX512); use train.mixed_precision=no")
    elif not torch.cuda.is_bf16_supported():
        raise InputError(f"train.mixed_precision=bf16: GPU {torch.cuda.get_device_name()} has no bf16 support; "
                         f"use train.mixed_precision=fp16 or no")


def make_accelerator(cfg: DictConfig) -> Accelerator:
    check_mixed_precision(cfg.train.mixed_precision)
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
    return float(SCHEDULES.get(schedule, key="method.schedule")(step, total))


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


def evaluate(accelerator: Accelerator, model: Any, built: Built, loaders: Dict[str, DataLoader], out_dir: Path,
             rows: Optional[Dict[str, Any]] = None):
    """Predict, write official-format files, score them with the task's scorer (main process).
    `rows`: split -> its rows (default: `built.eval_rows`).

    Returns ({split: {metric: percent}}, {split: {file kind: path}}) on the main process.
    """
    rows = built.eval_rows if rows is None else rows
    scores: Dict[str, Dict[str, float]] = {}
    files: Dict[str, Dict[str, str]] = {}
    for split, loader in loaders.items():
        preds = predict_split(accelerator, model, loader, len(rows[split]))
        if accelerator.is_main_process:
            decoded = built.decode_predictions(preds)
            files[split] = built.task.write_predictions(rows[split], decoded, out_dir, split)
            scores[split] = {k: float(v) for k, v in built.task.score_files(files[split]).items()}
    return scores, files


def run_signature(cfg: DictConfig, built: Built) -> Dict[str, Any]:
    """What a checkpoint must share with the run resuming from it."""
    return {
        "task": cfg.task.name, "method": cfg.method.name, "student": cfg.student.name,
        "pretrained": cfg.student.pretrained, "vocab_size": built.vocab_size, "num_answers": built.num_outputs,
        "lora": bool(cfg.student.lora.enabled), "train_rows": len(built.train_set),
        "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
        "num_processes": built.num_processes,
    }


class Trainer:
    """One run's training state: the prepared objects, the position (step, epoch, batch in
    epoch, best score) and the timing figures. `fit()` runs the loop; the methods stay short."""

    def __init__(self, cfg: DictConfig, accelerator: Accelerator, built: Built) -> None:
        self.cfg, self.acc, self.built, self.out = cfg, accelerator, built, Path(cfg.output_dir)
        train_dl = built.loader(built.train_set, cfg.train.batch_size, shuffle=True)
        eval_dls = {s: built.loader(ds, cfg.eval.batch_size, shuffle=False) for s, ds in built.eval_sets.items()}
        optimizer = make_optimizer(built.model, cfg)
        # each process gets ceil(batches / processes) batches (accelerate pads the last round)
        self.steps_per_epoch = math.ceil(math.ceil(len(train_dl) / accelerator.num_processes) / cfg.train.grad_accum)
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        from transformers import get_scheduler

        # the prepared scheduler advances once per process per step (accelerate's convention)
        scheduler = get_scheduler(
            "linear", optimizer, num_warmup_steps=int(cfg.train.warmup * self.total_steps) * accelerator.num_processes,
            num_training_steps=self.total_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.train_dl, self.scheduler, *eval_list = accelerator.prepare(
            built.model, optimizer, train_dl, scheduler, *eval_dls.values()
        )
        self.eval_dls = dict(zip(eval_dls, eval_list))
        self.holdout_dl = None  # train.holdout: scored every eval_every steps to keep the best and stop
        if built.holdout_set is not None:
            self.holdout_dl = accelerator.prepare(built.loader(built.holdout_set, cfg.eval.batch_size, shuffle=False))
        self.free_dl, self.free_iter = None, None  # method.label_free: unlabelled rows, drawn one batch per micro-batch
        if built.label_free_set is not None:
            self.free_dl = accelerator.prepare(built.loader(built.label_free_set, cfg.train.batch_size, shuffle=True))
            self.free_epoch = 0
        if cfg.student.lora.enabled:
            accelerator.register_save_state_pre_hook(adapter_only_hook)
        self.signature = run_signature(cfg, built)
        self.pos: Dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None,
                                    "bad_evals": 0, "history": []}  # history: the held-out curve
        self.stop = False  # early stopping: train.patience evaluations without a better held-out score
        self.samples, self.train_time = 0, 0.0
        if built.teacher is not None:
            built.teacher.to(accelerator.device)
        if built.handover is not None:  # method.student_check: the held-back rows wait until these steps
            built.handover.check_steps = check_steps(built.method.student_check_at, built.method.student_check_every,
                                                     self.total_steps)

    def resume(self) -> None:
        ckpt = resolve_resume(self.cfg.train.resume, self.out)
        if ckpt is not None:
            self.pos.update(check_compatible(ckpt, self.signature, self.model))
            if self.built.handover is not None and "handover" in self.pos:
                self.built.handover.load_state_dict(self.pos.pop("handover"))
            self.acc.load_state(str(ckpt), strict=not self.cfg.student.lora.enabled)
            self.acc.print(f"resumed from {ckpt} at step {self.pos['step']}")
        self.start_step = self.pos["step"]
        patience = self.cfg.train.patience
        self.stop = bool(patience) and self.pos.get("bad_evals", 0) >= patience  # a run that had stopped stays stopped

    def fit(self) -> Dict[str, Any]:
        """Train to `total_steps`; returns the train figures of metrics.json."""
        self.resume()
        n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        bar = tqdm(total=self.total_steps, initial=self.pos["step"], desc="train",
                   disable=not self.acc.is_local_main_process)
        self.model.train()
        try:
            for epoch in range(self.pos["epoch"], n_epochs):
                if self.pos["step"] >= self.total_steps or self.stop or self.run_epoch(epoch, bar):
                    break
                self.pos.update(epoch=epoch + 1, batch=0)
        finally:
            bar.close()  # before any error message, so it stays on its own line
        self.checkpoint()
        steps_run = max(self.pos["step"] - self.start_step, 1)
        figures = {"steps": self.pos["step"], "samples_per_s": self.samples / max(self.train_time, 1e-9),
                   "step_time_s": self.train_time / steps_run, "device": device_name(self.acc.device)}
        if self.holdout_dl is not None:
            figures["holdout"] = self.finish_holdout()
        if self.built.label_free_set is not None:
            figures["label_free_rows"] = len(self.built.label_free_set)
        return figures

    def finish_holdout(self) -> Dict[str, Any]:
        """Score the last weights on the held-out rows too (unless the last step was just scored),
        end with the best weights seen, and return metrics.json's `train.holdout` figures."""
        if self.pos["step"] % self.cfg.train.eval_every != 0:
            self.keep_best_holdout(count_patience=False)
        if self.pos["best_step"] is not None and self.pos["best_step"] != self.pos["step"]:
            from safetensors.torch import load_file

            self.acc.wait_for_everyone()
            state = load_file(str(self.out / "best" / "model.safetensors"))
            self.acc.unwrap_model(self.model).load_state_dict(state, strict=False)
        return {"rows": len(self.built.holdout_rows), "best": self.pos["best"], "best_step": self.pos["best_step"],
                "stopped_early": bool(self.stop), "history": self.pos["history"]}

    def keep_best_holdout(self, count_patience: bool = True) -> None:
        """Score the held-out training rows and keep the best weights (`score_and_keep`); after
        `train.patience` evaluations without improvement (those up to `train.min_steps`, and those
        while the held-back check's rows still wait for it, do not count), stop. Each score joins
        `pos["history"]` as [step, score] (metrics.json's `train.holdout.history`) and is printed
        on its own line."""
        score = self.score_and_keep("holdout", self.holdout_dl, self.built.holdout_rows,
                                    self.out / "predictions" / "holdout")
        if self.acc.is_main_process and score is not None:
            self.pos.setdefault("history", []).append([self.pos["step"], round(float(score), 4)])
            tqdm.write(f"held-out {self.built.task.primary} at step {self.pos['step']}: {score:.2f} "
                       f"(best {self.pos['best']:.2f} at step {self.pos['best_step']})")
        if count_patience:
            # train.min_steps: the evaluations up to it never count towards patience; nor do those
            # while method.student_check's rows are held back (their labels wait for the check), so
            # early stopping cannot end a run before its check
            handover = self.built.handover
            improved = (self.pos["best_step"] == self.pos["step"] or self.pos["step"] <= self.cfg.train.min_steps
                        or (handover is not None and handover.holding))
            self.pos["bad_evals"] = 0 if improved else self.pos["bad_evals"] + 1
            patience = self.cfg.train.patience
            self.stop = bool(patience) and self.pos["bad_evals"] >= patience

    def run_epoch(self, epoch: int, bar: Any) -> bool:
        """One pass (the rest of it when resuming mid-epoch); True once total_steps is reached."""
        self.train_dl.set_epoch(epoch)  # the data order depends only on (seed, epoch)
        skip = self.pos["batch"] if epoch == self.pos["epoch"] else 0
        loader = self.acc.skip_first_batches(self.train_dl, skip) if skip else self.train_dl
        tick = time.perf_counter()
        for batch_i, batch in enumerate(loader, start=skip):
            result = self.train_step(batch)
            if not self.acc.sync_gradients:
                continue
            self.pos.update(step=self.pos["step"] + 1, epoch=epoch, batch=batch_i + 1)
            self.train_time += time.perf_counter() - tick
            self.after_step(result, bar)  # evaluation and checkpoints are not training time
            tick = time.perf_counter()
            if self.pos["step"] >= self.total_steps or self.stop:
                return True
        self.train_time += time.perf_counter() - tick
        return False

    def next_unlabelled(self) -> Optional[tuple]:
        """(batch, teacher outputs, weight) of the label-free term, or None when it is off. The
        unlabelled rows are cycled on their own (their order depends on the seed and their own
        epoch; a resumed run starts their pass afresh)."""
        if self.free_dl is None:
            return None
        while True:
            if self.free_iter is None:
                self.free_dl.set_epoch(self.free_epoch)
                self.free_iter = iter(self.free_dl)
            try:
                free = next(self.free_iter)
                break
            except StopIteration:
                self.free_iter, self.free_epoch = None, self.free_epoch + 1
        return free, self.built.teacher_outputs(free), float(self.built.method.label_free)

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        cfg, acc = self.cfg, self.acc
        with acc.accumulate(self.model):
            teacher_out = self.built.teacher_outputs(batch)  # frozen teacher or its cache, outside the model
            batch = self.hold_back_labels(batch)
            free = self.next_unlabelled()  # passed only when the label-free term is on
            result = self.model(batch, teacher_out, kd_scale(self.built.method.schedule, self.pos["step"], self.total_steps),
                                **({"unlabelled": free} if free is not None else {}))
            self.observe_answers(teacher_out, result)
            loss = total_loss(result)
            acc.backward(loss)
            check_finite(acc, loss, result, self.pos["step"])  # before the update; after backward is queued
            if acc.sync_gradients and cfg.train.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.samples += batch["pixel_values"].shape[0] * acc.num_processes
        return result

    def hold_back_labels(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """`method.student_check`: until the check, the held-back rows' labels do not count
        (`label_weight` 0 in the task loss)."""
        handover = self.built.handover
        weight = None if handover is None else handover.label_weight(host_index(batch))
        if weight is None:
            return batch
        return {**batch, "label_weight": weight.to(batch["pixel_values"].device)}

    def observe_answers(self, teacher_out: Optional[Dict[str, Any]], result: Dict[str, Any]) -> None:
        """`method.handover`: the student's answers to this batch's labelled teacher rows, before
        the update on them, go to the handover test (gathered from every process, so each one
        takes the same decisions)."""
        handover = self.built.handover
        if handover is None or teacher_out is None or "answer_right" not in result:
            return
        rows, right = teacher_out["teacher_rows"].cpu(), result["answer_right"].detach().cpu()
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object

            pairs = gather_object([(rows.tolist(), right.tolist())])
            rows = torch.tensor([r for rs, _ in pairs for r in rs], dtype=torch.long)
            right = torch.tensor([x for _, xs in pairs for x in xs], dtype=torch.bool)
        done = len(handover.checks)
        handover.observe(rows, right, self.pos["step"])
        if self.acc.is_main_process:
            for record in handover.checks[done:]:
                tqdm.write(handover.describe_check(record))

    def after_step(self, result: Dict[str, Any], bar: Any) -> None:
        cfg, step = self.cfg.train, self.pos["step"]
        bar.update(1)
        if step % cfg.log_every == 0 or step == self.total_steps:
            terms = loss_terms(result)
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
            self.acc.log({**{f"train/{k}": v for k, v in terms.items()}, "lr": self.scheduler.get_last_lr()[0]},
                         step=step)
        if cfg.eval_every and step % cfg.eval_every == 0:
            if self.holdout_dl is not None:
                self.keep_best_holdout()
            elif self.cfg.eval.best_split in self.eval_dls:
                self.keep_best()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.total_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        state = {k: self.pos[k] for k in ("step", "epoch", "batch", "best", "best_step", "bad_evals", "history")}
        if self.built.handover is not None:
            state["handover"] = self.built.handover.state_dict()
        save_checkpoint(self.acc, self.out, f"step_{self.pos['step']}", {**state, "signature": self.signature},
                        self.cfg.train.keep_checkpoints)

    def keep_best(self) -> None:
        """Evaluate `eval.best_split`; save the student + head as `<output_dir>/best` when it improves."""
        split = self.cfg.eval.best_split
        self.score_and_keep(split, self.eval_dls[split], self.built.eval_rows[split], self.out / "predictions")

    def score_and_keep(self, split: str, loader: DataLoader, rows: Any, pred_dir: Path) -> Optional[float]:
        """Score `split` by the task's primary metric; when it beats `pos["best"]` (ties keep the
        earlier step), record the score and the step and save the student + head as `<output_dir>/best`. Every process ends with
        the main process's `best` and `best_step`. -> the score on the main process, else None."""
        scores, _ = evaluate(self.acc, self.model, self.built, {split: loader}, pred_dir, rows={split: rows})
        score: Optional[float] = None
        if self.acc.is_main_process:
            score = scores[split][self.built.task.primary]  # the metric sweeps rank by (VCR: Q->AR)
            self.acc.log({f"eval/{split}": score}, step=self.pos["step"])
            if self.pos["best"] is None or score > self.pos["best"]:
                self.pos.update(best=score, best_step=self.pos["step"])
                save_best(self.acc, self.model, self.cfg, self.out / "best", self.pos)
        self.pos["best"] = broadcast_float(self.acc, self.pos["best"])
        best_step = broadcast_float(self.acc, None if self.pos["best_step"] is None else float(self.pos["best_step"]))
        self.pos["best_step"] = None if best_step is None else int(best_step)
        return score


def broadcast_float(accelerator: Accelerator, value: Optional[float]) -> Optional[float]:
    """The main process's value on every process (None travels as NaN)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    t = torch.tensor([float("nan") if value is None else value], device=accelerator.device)
    t = broadcast(t, from_process=0)
    return None if math.isnan(t.item()) else t.item()


def save_best(accelerator: Accelerator, model: Any, cfg: DictConfig, out_dir: Path, pos: Dict) -> None:
    """Student + head weights (adapters + head with LoRA); no distiller, no teacher."""
    state = inference_state_dict(accelerator.unwrap_model(model), lora=bool(cfg.student.lora.enabled))
    meta = {"step": pos["step"], "best": pos.get("best"), "task": cfg.task.name, "student": cfg.student.name,
            "lora": bool(cfg.student.lora.enabled)}
    save_weights(state, out_dir, meta)


def device_name(device: torch.device) -> str:
    """The processor a run computes on, for metrics.json: the GPU's name on CUDA, else the CPU model
    (runs reproduce bit for bit only on the same one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def write_metrics(cfg: DictConfig, figures: Dict[str, Any], scores: Dict, files: Dict,
                  teacher_trust: Optional[Dict[str, Any]] = None, teacher: Any = None) -> Path:
    """`<output_dir>/metrics.json`, exactly docs/contracts.md section 2 (`teacher` when the run
    distils a teacher: its resolved name and the fingerprint of its weights, which tells two builds
    of one recipe apart; `teacher_trust` when the run has an answer-level term)."""
    metrics = {
        "task": cfg.task.name,
        "method": cfg.method.name,
        "train_fraction": float(cfg.train.fraction),
        "seed": int(cfg.seed),
        "eval": scores,
        "train": {"steps": int(figures["steps"]), "samples_per_s": round(float(figures["samples_per_s"]), 3),
                  "step_time_s": round(float(figures["step_time_s"]), 5),
                  "threads": int(torch.get_num_threads()),
                  **({"device": figures["device"]} if "device" in figures else {}),
                  **({"holdout": figures["holdout"]} if "holdout" in figures else {}),
                  **({"label_free_rows": int(figures["label_free_rows"])} if "label_free_rows" in figures else {})},
        "files": files,
    }
    if teacher is not None:
        metrics["teacher"] = {"name": teacher.model_name, "pretrained": teacher.pretrained,
                              "fingerprint": teacher.fingerprint()[:16]}
    if teacher_trust is not None:
        metrics["teacher_trust"] = teacher_trust
    path = Path(cfg.output_dir) / "metrics.json"
    write_json_atomic(path, metrics)
    return path


def run(cfg: DictConfig) -> Path:
    """Build, train, evaluate every split, write metrics and predictions; returns metrics.json."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    resolve_student(cfg, accelerator)  # config.yaml names the student folder actually loaded
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    built = build(cfg, accelerator)
    if accelerator.trackers:
        accelerator.init_trackers("clip-td", config=to_dict(cfg))
    trainer = Trainer(cfg, accelerator, built)
    figures = trainer.fit()
    model = trainer.model
    scores, files = evaluate(accelerator, model, built, trainer.eval_dls, out / "predictions")
    path = out / "metrics.json"
    if built.handover is not None:
        built.teacher_trust["handover"] = built.handover.as_dict()
    if accelerator.is_main_process:
        save_best(accelerator, model, cfg, out / "model", {"step": figures["steps"]})
        path = write_metrics(cfg, figures, scores, files, built.teacher_trust, built.teacher)
        summary = ", ".join(f"{s}: " + " ".join(f"{k}={v:.2f}" for k, v in m.items()) for s, m in scores.items())
        print(f"{cfg.task.name} / {cfg.method.name}: {summary}")
        print(f"metrics: {path}")
        print(f"predictions: {out / 'predictions'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `finetune.py` and `python -m clip_td.app.trainer`; returns the exit code."""

    def _run(args: Optional[Sequence[str]]) -> Path:
        config_path, overrides = parse_script_args(args, description=__doc__.splitlines()[0])
        return run(load_config(FinetuneConfig, config_path, overrides))

    return run_script(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
