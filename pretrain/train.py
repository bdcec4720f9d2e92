"""Teacher pretraining loop (accelerate-example shaped): `python -m pretrain` / pretrain_teacher.py.

Config = PretrainConfig <- YAML <- dotted overrides (DESIGN.md contract 1). Writes
`<output_dir>/config.yaml`, `teacher/` (open_clip local-dir), `metrics.json`, `cat_report.json`
(when CAT is on) and `checkpoints/step_<n>/` (accelerate state + progress.json).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clip_td.base.config import load_config, parse_script_args, save_config, to_dict
from clip_td.base.io import InputError, read_json, write_json_atomic

from pretrain.alip_gates import ALIPGates
from pretrain.cat_filter import CATRules, cat_filter, make_backends
from pretrain.concepts import FrozenConceptTeacher, concept_kl, create_concept_teacher
from pretrain.config import DEFAULT_RECIPE, PretrainConfig
from pretrain.data import CaptionDataset, concept_targets, make_collate, read_captions, read_concepts
from pretrain.eval_report import evaluate_teacher
from pretrain.export import export_teacher
from pretrain.losses import create_loss
from pretrain.models import BuiltModel, build_model
from pretrain.training_model import PretrainModel

logger = logging.getLogger("pretrain")


def resolve_paths(cfg) -> Dict[str, Optional[Path]]:
    """Training / val / zero-shot / concepts paths; builds the synthetic world when no root or train file is given."""
    root = Path(cfg.data.root) if cfg.data.root else None
    if root is None and not cfg.data.train:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world(size=cfg.data.world_size, seed=0))
    pre = root / "pretrain" if root else None

    def pick(value: str, default: Optional[Path]) -> Optional[Path]:
        if value:
            return Path(value)
        return default if default is not None and default.exists() else None

    paths = {
        "train": pick(cfg.data.train, pre / "train.tsv" if pre else None),
        "val": pick(cfg.data.val, pre / "val.tsv" if pre else None),
        "zeroshot": pick(cfg.data.zeroshot, pre if pre and (pre / "zeroshot.json").exists() else None),
        "concepts": pick(cfg.data.concepts, pre / "concepts.json" if pre else None),
    }
    if paths["train"] is None:
        raise InputError(f"config key data.train: no training captions file (looked in {pre})")
    return paths


def load_rows(cfg, train_file: Path, output_dir: Path, is_main: bool) -> List[Dict]:
    """Read, truncate and (optionally) CAT-filter the training pairs; writes cat_report.json."""
    rows = read_captions(train_file)
    if cfg.data.max_train_rows:
        rows = rows[: cfg.data.max_train_rows]
    if not cfg.cat.enabled:
        return rows
    parse_fn, ocr_fn = make_backends(cfg.cat.parse_backend, cfg.cat.ocr_backend, cfg.cat.spacy_model)
    rules = CATRules(cfg.cat.min_complexity, cfg.cat.min_actions, cfg.cat.max_ocr_jaccard)
    kept, report = cat_filter(rows, rules, parse_fn, ocr_fn)
    if is_main:
        write_json_atomic(output_dir / "cat_report.json", {"file": str(train_file), **report})
    if not kept:
        raise InputError(f"config keys cat.*: the CAT filter dropped every pair of {train_file}")
    return kept


def build_concept_teacher(cfg, built: BuiltModel, dataset, rows, paths, accelerator) -> Optional[FrozenConceptTeacher]:
    if cfg.concept.weight <= 0:
        return None
    pp = built.preprocess_cfg
    if cfg.concept.teacher == "synthetic":
        if paths["concepts"] is None:
            raise InputError("config key data.concepts: concept distillation with the synthetic teacher needs concepts.json")
        targets = concept_targets(rows, read_concepts(paths["concepts"]), str(paths["train"]))
        with accelerator.main_process_first():  # the first process trains and caches it, the others read the cache
            net = create_concept_teacher("synthetic", train_file=str(paths["train"]), dataset=dataset, targets=targets,
                                         steps=cfg.concept.teacher_steps, seed=cfg.seed)
        return FrozenConceptTeacher(net, pp["mean"], pp["std"], pp["mean"], pp["std"])
    net = create_concept_teacher(cfg.concept.teacher, weights=cfg.concept.teacher_weights, num_classes=cfg.concept.num_classes)
    return FrozenConceptTeacher(net, pp["mean"], pp["std"], cfg.concept.teacher_mean, cfg.concept.teacher_std,
                                size=cfg.concept.teacher_size or None)


def _num_concepts(teacher: Optional[FrozenConceptTeacher], image_size: int) -> int:
    if teacher is None:
        return 0
    return teacher(torch.zeros(1, 3, image_size, image_size)).shape[-1]


def find_checkpoint(value: str, output_dir: Path) -> Path:
    if value != "latest":
        return Path(value)
    ckpts = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    if not ckpts:
        raise InputError(f"config key train.resume_from: 'latest' but no checkpoint under {output_dir / 'checkpoints'}")
    return ckpts[-1]


def check_resume(ckpt: Path, model_cfg: Dict) -> int:
    """Completed optimizer steps of a checkpoint; a different architecture is an InputError naming the file."""
    arch_file, progress_file = ckpt / "model_cfg.json", ckpt / "progress.json"
    if not progress_file.is_file():
        raise InputError(f"config key train.resume_from: {ckpt} is not a checkpoint of this script (no progress.json)")
    saved = read_json(arch_file)
    if json.loads(json.dumps(model_cfg)) != saved:
        raise InputError(f"{arch_file}: checkpoint architecture differs from config model.* "
                         f"(checkpoint {json.dumps(saved, sort_keys=True)[:200]}...)")
    return int(read_json(progress_file)["step"])


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, model_cfg: Dict) -> None:
    ckpt = output_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        write_json_atomic(ckpt / "model_cfg.json", model_cfg)
        write_json_atomic(ckpt / "progress.json", {"step": step})  # written last: marks the folder complete


def compute_losses(out: Dict, batch: Dict, loss_fn, teacher, cfg) -> Dict[str, torch.Tensor]:
    """Named `*_loss` terms of one micro-batch (the total is their sum)."""
    args = (out["image_features"], out["text_features"], out["logit_scale"])
    if cfg.loss.name == "alip":
        losses = {"contrastive_loss": loss_fn(*args, caption_features=out["caption_features"])}
    else:
        losses = {"contrastive_loss": loss_fn(*args)}
    if teacher is not None:
        t_logits = teacher(batch["image"])
        losses["concept_loss"] = cfg.concept.weight * concept_kl(out["concept_logits"], t_logits, cfg.concept.temperature)
    return losses


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    config_path, overrides = parse_script_args(argv, description="Pretrain a CLIP teacher (CLIP / DiHT / ALIP recipes)")
    cfg = load_config(PretrainConfig, config_path or DEFAULT_RECIPE, overrides)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum, mixed_precision=cfg.train.mixed_precision,
        log_with=cfg.train.tracker or None, project_dir=cfg.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(asctime)s %(message)s")
    set_seed(cfg.seed)
    output_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir)

    paths = resolve_paths(cfg)
    rows = load_rows(cfg, paths["train"], output_dir, accelerator.is_main_process)
    built = build_model(cfg.model.name, cfg.model.pretrained, cfg.model.model_cfg, cfg.model.preprocess_cfg)
    dataset = CaptionDataset(rows, built.preprocess_train if cfg.data.augment else built.preprocess_val)
    teacher = build_concept_teacher(cfg, built, CaptionDataset(rows, built.preprocess_val), rows, paths, accelerator)
    image_size = built.model.visual.image_size[0] if isinstance(built.model.visual.image_size, (tuple, list)) else built.model.visual.image_size
    model = PretrainModel(built.model, _num_concepts(teacher, image_size))
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.num_workers, collate_fn=make_collate(built.tokenizer))
    if len(loader) == 0:
        raise InputError(f"config key train.batch_size: {cfg.train.batch_size} exceeds the {len(dataset)} training pairs")
    steps_per_epoch = max(len(loader) // (cfg.train.grad_accum * accelerator.num_processes), 1)
    total_steps = cfg.train.max_steps if cfg.train.max_steps is not None else cfg.train.epochs * steps_per_epoch

    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(cfg.train.warmup_steps, total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    gates = ALIPGates(cfg.loss.alip_momentum, cfg.loss.alip_sharpness).to(accelerator.device)
    accelerator.register_for_checkpointing(gates)  # ALIP running means are training state
    if teacher is not None:
        teacher.to(accelerator.device)
    loss_fn = create_loss(cfg.loss.name, alpha=cfg.loss.alpha, beta=cfg.loss.beta, gates=gates)
    if cfg.train.tracker:
        accelerator.init_trackers("pretrain", config=to_dict(cfg))

    step = 0
    if cfg.train.resume_from:
        ckpt = find_checkpoint(cfg.train.resume_from, output_dir)
        step = check_resume(ckpt, built.model_cfg)
        accelerator.load_state(str(ckpt))
        logger.info("resumed from %s at step %d", ckpt, step)

    stats = run_training(cfg, accelerator, model, optimizer, loader, scheduler, loss_fn, teacher, step, total_steps, built, output_dir)
    return finish(cfg, accelerator, model, built, paths, output_dir, stats)


def run_training(cfg, accelerator, model, optimizer, loader, scheduler, loss_fn, teacher, step, total_steps, built, output_dir) -> Dict:
    """The optimisation loop; returns step-time statistics."""
    micro_per_epoch = len(loader)
    epoch, skip = divmod(step * cfg.train.grad_accum, micro_per_epoch)
    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process, desc="pretrain")
    use_caption = cfg.loss.name == "alip"
    times, last = [], None
    model.train()
    while step < total_steps:
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in epoch_loader:
            t0 = time.perf_counter()
            with accelerator.accumulate(model):
                out = model(batch["image"], batch["text"], batch["caption"] if use_caption else None)
                losses = compute_losses(out, batch, loss_fn, teacher, cfg)
                total = sum(losses.values())
                accelerator.backward(total)
                if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            times.append(time.perf_counter() - t0)
            if not accelerator.sync_gradients:
                continue
            with torch.no_grad():  # open_clip clamps the temperature to at most 100
                accelerator.unwrap_model(model).clip.logit_scale.clamp_(0, math.log(100))
            step += 1
            last = {k: v.item() for k, v in losses.items()}
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total_steps:
                accelerator.log({**last, "lr": scheduler.get_last_lr()[0]}, step=step)
                bar.set_postfix(loss=f"{total.item():.3f}")
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                save_checkpoint(accelerator, output_dir, step, built.model_cfg)
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    save_checkpoint(accelerator, output_dir, step, built.model_cfg)
    steady = times[min(5, len(times) // 2):] or times or [float("nan")]
    step_time = sum(steady) / len(steady) * cfg.train.grad_accum
    return {"steps": step, "step_time_s": step_time,
            "samples_per_s": cfg.train.batch_size * cfg.train.grad_accum * accelerator.num_processes / step_time,
            "last_losses": last}


def finish(cfg, accelerator, model, built, paths, output_dir, stats) -> Dict:
    """Export the bare CLIP (no training-only heads), evaluate it, write metrics.json."""
    accelerator.wait_for_everyone()
    metrics: Dict = {}
    if accelerator.is_main_process:
        clip = accelerator.unwrap_model(model).clip.eval()
        export_teacher(clip, built.model_cfg, built.preprocess_cfg, output_dir / "teacher")
        ev = evaluate_teacher(clip, built, paths, cfg.eval, cfg.seed, accelerator.device) if cfg.eval.enabled else {}
        metrics = {"eval": ev, "train": stats, "recipe": {"loss": cfg.loss.name, "cat": cfg.cat.enabled,
                                                            "concept_weight": cfg.concept.weight}}
        write_json_atomic(output_dir / "metrics.json", metrics)
        logger.info("metrics: %s", json.dumps(ev))
    accelerator.end_training()
    return metrics
