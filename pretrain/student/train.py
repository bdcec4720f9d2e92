"""The student pretraining loop (accelerate): `python pretrain_student.py` / `python -m pretrain.student`.

Config = StudentPretrainConfig <- YAML <- dotted overrides. Writes `<output_dir>/config.yaml`,
`student/` (the ViLT folder fine-tuning loads, export.py), `metrics.json` and
`checkpoints/step_<n>/` (accelerate state + run_state.json, written by `clip_td.base.checkpoints`
as the teacher's and fine-tuning's are). `train.resume` takes a checkpoint folder or "latest";
a checkpoint of a different set-up is refused with one message. Masks and ITM negatives come
from a generator seeded by (seed, step, process), so a resumed run draws the same ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from clip_td.base.checkpoints import save_checkpoint
from clip_td.base.config import parse_script_args, to_dict
from clip_td.base.io import InputError, read_json, write_json_atomic
from clip_td.base.scripts import TrainingDiverged

from pretrain.loop import ResumableLoop, start_run
from pretrain.student.config import load_student_config, without_neutral, without_neutral_rehearsal
from pretrain.student.data import (CONCEPT_COLUMN, PairDataset, build_tokenizer, image_transform, make_collate,
                                   resolve_paths, source_rows)
from pretrain.student.export import export_student
from pretrain.student.image_init import (HELD_OUT_SEED, ImageClassifier, held_out_accuracy, image_init,
                                         load_image_init, save_image_init, scene_batch)
from pretrain.student.model import PATCH_POSITIONS, StudentPretrainModel, vilt_config
from pretrain.student.objectives import IGNORE, itm_negatives, mask_tokens, position_mask_prob
from pretrain.student.regions import descriptions, encode, region_inputs, vocabulary_texts

logger = logging.getLogger("pretrain.student")
IMAGE_INIT_FILE = "image_init.json"  # the image-initialisation stage's metrics (copied into metrics.json)
IMAGE_INIT_WEIGHTS = "image_init.safetensors"  # the ViltModel the stage left (image_init.weights= reads it)


# ---- set-up -------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What one run trains, built before `accelerator.prepare`."""

    paths: Dict[str, Optional[Path]]
    rows: List[Dict[str, str]]  # the source-style training rows
    val_rows: List[Dict[str, str]]  # the held-out slice (empty without a val file)
    tokenizer: Any  # WordPiece built on those rows' captions
    dataset: PairDataset
    model: StudentPretrainModel


def build(cfg: DictConfig) -> Setup:
    if cfg.data.image_size % cfg.model.patch_size:
        raise InputError(f"config keys data.image_size={cfg.data.image_size} and model.patch_size="
                         f"{cfg.model.patch_size}: the image side must be a multiple of the patch side")
    paths = resolve_paths(cfg)
    rows = source_rows(paths["train"], cfg.data.text_column, cfg.data.max_rows)
    if cfg.train.concept_mask_prob is not None and any(CONCEPT_COLUMN not in r for r in rows):
        raise InputError(f"{paths['train']}: no column {CONCEPT_COLUMN!r} (the concept words of each image, space-"
                         f"separated), which config key train.concept_mask_prob needs; set it to null to mask "
                         f"every token with train.mask_prob")
    ii = cfg.image_init
    if ii.rehearsal < 0 or (ii.rehearsal and not ii.dense):
        raise InputError(f"config key image_init.rehearsal={ii.rehearsal}: expected 0 (off) or a positive weight "
                         f"of the dense patch loss, which needs image_init.dense=true")
    if ii.rehearsal and ii.rehearsal_scenes < 1:
        raise InputError(f"config key image_init.rehearsal_scenes={ii.rehearsal_scenes}: expected at least 1")
    if cfg.model.patch_positions not in PATCH_POSITIONS:
        raise InputError(f"config key model.patch_positions={cfg.model.patch_positions}: expected one of "
                         f"{', '.join(PATCH_POSITIONS)}")
    if cfg.model.patch_positions == "sincos" and cfg.model.hidden_size % 4:
        raise InputError(f"config keys model.patch_positions=sincos and model.hidden_size={cfg.model.hidden_size}: "
                         f"the sine-cosine code needs a width divisible by 4")
    rc = cfg.regions
    if rc.weight < 0 or (rc.weight and rc.scenes < 1):
        raise InputError(f"config keys regions.weight={rc.weight}, regions.scenes={rc.scenes}: expected weight 0 "
                         f"(off), or a positive weight with at least 1 scene a step")
    if rc.curriculum_steps < 0:
        raise InputError(f"config key regions.curriculum_steps={rc.curriculum_steps}: expected 0 (off) or the "
                         f"number of steps over which the described scenes grow to image_init.max_objects objects")
    for key in ("mask_prob", "place_mask_prob"):
        if not 0 <= rc[key] <= 1:
            raise InputError(f"config key regions.{key}={rc[key]}: expected a probability in [0, 1]")
    val = paths["val"]  # read now: a bad val file fails before training, not after
    val_rows = source_rows(val, cfg.data.text_column, cfg.eval.max_rows) if val is not None else []
    extra = vocabulary_texts(cfg.seed, rc.vocab_scenes, ii.max_objects) if rc.weight else []
    tokenizer = build_tokenizer(rows, list(cfg.data.vocab_columns) or [cfg.data.text_column], cfg.model.vocab_size,
                                source=str(paths["train"]), extra_texts=extra)
    patch_text = (tokenizer.cls_token_id, tokenizer.sep_token_id) if ii.rehearsal else None
    model = StudentPretrainModel(vilt_config(cfg.model, len(tokenizer), cfg.data.image_size), patch_text,
                                 cfg.model.patch_positions)
    return Setup(paths, rows, val_rows, tokenizer, PairDataset(rows, cfg.data.text_column, cfg.data.image_size), model)


def run_signature(cfg: DictConfig, setup: Setup, num_processes: int) -> Dict[str, Any]:
    """What a checkpoint must share with the run resuming from it (JSON-normalised)."""
    signature = {
        "model": without_neutral(to_dict(cfg.model), "patch_positions", "zeros"), "vocab_size": len(setup.tokenizer), "image_size": cfg.data.image_size,
        "text_column": cfg.data.text_column, "train_rows": len(setup.rows), "batch_size": cfg.train.batch_size,
        "num_processes": num_processes,
    }
    ii = cfg.image_init
    if ii.steps or ii.weights or ii.rehearsal:  # (absent without them: older checkpoints resume)
        signature["image_init"] = without_neutral_rehearsal(to_dict(ii))
    if cfg.regions.weight:
        signature["regions"] = without_neutral(to_dict(cfg.regions), "curriculum_steps", 0)
    return json.loads(json.dumps(signature))


# ---- one batch's objectives ---------------------------------------------------------------------


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """The generator of one step's masks and negatives: a function of (seed, step, process) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1024 + process)


def objective_inputs(batch: Dict[str, torch.Tensor], generator: torch.Generator, tokenizer: Any,
                     mask_prob: float, itm_prob: float, concept_prob: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """The model's keyword inputs: masked captions for MLM, deranged captions for ITM. A pair
    whose borrowed caption comes from the same image file is labelled a match. With
    `concept_prob`, the tokens of the image's concept words are chosen for MLM with that
    probability instead of `mask_prob` (the draws are the same)."""
    prob = mask_prob
    if concept_prob is not None:
        prob = position_mask_prob(batch["concept_mask"], mask_prob, concept_prob)
    ids, labels = mask_tokens(batch["input_ids"], batch["special_mask"], len(tokenizer), prob, generator,
                              tokenizer.mask_token_id)
    perm, _ = itm_negatives(ids.shape[0], generator, itm_prob)
    perm = perm.to(ids.device)
    return {
        "pixel_values": batch["pixel_values"], "attention_mask": batch["attention_mask"],
        "mlm_ids": ids, "mlm_labels": labels,
        "itm_ids": batch["input_ids"][perm], "itm_attention_mask": batch["attention_mask"][perm],
        "itm_labels": (batch["image_id"][perm] == batch["image_id"]).long(),
    }


def rehearsal_batch(cfg: DictConfig, index: int, transform: Any):
    """The dense-labelled scenes of rehearsal batch `index` (step * processes + process): seeds
    -2, -3, ... of `scene_batch`, which neither the image init stage (>= 0) nor its held-out
    scenes (-1) use."""
    return scene_batch(cfg.seed, -2 - index, cfg.image_init.rehearsal_scenes, cfg.data.image_size, transform,
                       cfg.image_init.max_objects, cfg.model.patch_size)


def region_objects(cfg: DictConfig, step: int) -> int:
    """The most objects a described scene of `step` holds: image_init.max_objects (at least 1),
    or, with regions.curriculum_steps = N, 1 + (max - 1) * step // N until step N."""
    most, ramp = max(cfg.image_init.max_objects, 1), cfg.regions.curriculum_steps
    return min(most, 1 + (most - 1) * step // ramp) if ramp else most


def region_batch(cfg: DictConfig, index: int, transform: Any, tokenizer: Any,
                 generator: torch.Generator, step: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Region-description batch `index` (step * processes + process): `regions.scenes` fresh
    source-style scenes of 1 to `region_objects(cfg, step)` objects (scene stream "regions"; step
    None: the most), their descriptions and those descriptions' MLM masks (drawn from `generator`)."""
    rc = cfg.regions
    most = max(cfg.image_init.max_objects, 1) if step is None else region_objects(cfg, step)
    pixels, _, scenes = scene_batch(cfg.seed, index, rc.scenes, cfg.data.image_size, transform, most,
                                    stream="regions", return_scenes=True)
    inputs = region_inputs(descriptions(cfg.seed, index, scenes), tokenizer, cfg.model.max_text_len, rc.mask_prob,
                           rc.place_mask_prob, generator)
    inputs.pop("region_place")
    return {"region_pixels": pixels, **inputs}


# ---- the loop -----------------------------------------------------------------------------------


class StudentTrainer(ResumableLoop):
    """One run's training state: the prepared objects, the position (step, epoch, batch in
    epoch) and the step times. `fit()` runs the loop; the methods stay short."""

    desc = "pretrain student"
    log = logger

    def __init__(self, cfg: DictConfig, accelerator: Accelerator, setup: Setup) -> None:
        self.cfg, self.acc, self.setup, self.out = cfg, accelerator, setup, Path(cfg.output_dir)
        loader = DataLoader(setup.dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers,
                            collate_fn=make_collate(setup.tokenizer, cfg.model.max_text_len,
                                                    concept_mask=cfg.train.concept_mask_prob is not None))
        if len(loader) == 0:
            raise InputError(f"config key train.batch_size: {cfg.train.batch_size} exceeds the "
                             f"{len(setup.dataset)} source-style training pairs")
        n = accelerator.num_processes
        steps_per_epoch = max(len(loader) // n, 1)
        self.total_steps = cfg.train.max_steps if cfg.train.max_steps is not None else cfg.train.epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(setup.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        # the prepared scheduler advances once per process per step (accelerate's convention)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.train.warmup * self.total_steps) * n,
                                                    self.total_steps * n)
        self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(
            setup.model, optimizer, loader, scheduler)
        self.signature = run_signature(cfg, setup, n)
        self.pos: Dict[str, int] = {"step": 0, "epoch": 0, "batch": 0}
        self.times: List[float] = []
        self.last: Optional[Dict[str, float]] = None
        self.transform = image_transform(cfg.data.image_size)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        cfg, t0 = self.cfg.train, time.perf_counter()
        gen = step_generator(self.cfg.seed, self.pos["step"], self.acc.process_index)
        inputs = objective_inputs(batch, gen, self.setup.tokenizer, cfg.mask_prob, cfg.itm_prob, cfg.concept_mask_prob)
        ii, rc = self.cfg.image_init, self.cfg.regions
        index = self.pos["step"] * self.acc.num_processes + self.acc.process_index  # this process's scene batch
        if ii.rehearsal:
            pixels, labels = rehearsal_batch(self.cfg, index, self.transform)
            inputs.update(patch_pixels=pixels.to(self.acc.device), patch_labels=labels.to(self.acc.device))
        if rc.weight:
            inputs.update({k: v.to(self.acc.device) for k, v in
                           region_batch(self.cfg, index, self.transform, self.setup.tokenizer, gen,
                                        self.pos["step"]).items()})
        out = self.model(**inputs)
        self.acc.backward(out["mlm_loss"] + out["itm_loss"] + ii.rehearsal * out.get("patch_loss", 0.0)
                          + rc.weight * out.get("region_loss", 0.0))
        if cfg.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.times.append(time.perf_counter() - t0)
        return {k: float(v.detach()) for k, v in out.items() if k.endswith("_loss")}  # mlm, itm (+ patch, region)

    def after_step(self, terms: Dict[str, float], bar: Any) -> None:
        step, cfg = self.pos["step"], self.cfg.train
        if not all(math.isfinite(v) for v in terms.values()):
            raise TrainingDiverged(f"non-finite loss at step {step}: " + ", ".join(f"{k}={v:.6g}" for k, v in terms.items()))
        self.last = terms
        bar.update(1)
        if step % cfg.log_every == 0 or step == self.total_steps:
            self.acc.log({**terms, "loss": sum(terms.values()), "lr": self.scheduler.get_last_lr()[0]}, step=step)
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
            logger.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in terms.items()))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.total_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        save_checkpoint(self.acc, self.out, f"step_{self.pos['step']}", {**self.pos, "signature": self.signature},
                        self.cfg.train.keep_checkpoints)

    def stats(self) -> Dict[str, Any]:
        """Steady-state step time (the first steps are warm-up), throughput, the last losses."""
        steady = self.times[min(5, len(self.times) // 2):] or self.times or [float("nan")]
        step_time = sum(steady) / len(steady)
        samples = self.cfg.train.batch_size * self.acc.num_processes
        return {"steps": self.pos["step"], "rows": len(self.setup.rows), **(self.last or {}),
                "step_time_s": step_time, "samples_per_s": samples / step_time}


# ---- held-out evaluation ------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: StudentPretrainModel, cfg: DictConfig, tokenizer: Any, rows: Sequence[Dict[str, str]],
             device: Any) -> Dict:
    """MLM and ITM on held-out rows (the first `eval.max_rows` source-style rows of data.val)
    with fixed masks and negatives (a generator seeded by `seed`, always train.mask_prob, so
    recipes compare): losses, masked-token and ITM accuracy (%), and the masked-token accuracy
    on the image's concept words alone when the rows list them."""
    loader = DataLoader(PairDataset(rows, cfg.data.text_column, cfg.data.image_size), batch_size=cfg.eval.batch_size,
                        collate_fn=make_collate(tokenizer, cfg.model.max_text_len))
    gen = torch.Generator().manual_seed(cfg.seed)
    sums = {"mlm_loss": 0.0, "itm_loss": 0.0, "mlm_correct": 0, "masked": 0, "itm_correct": 0,
            "concept_correct": 0, "concept_masked": 0}
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        inputs = objective_inputs(batch, gen, tokenizer, cfg.train.mask_prob, cfg.train.itm_prob)
        out = model(**inputs)
        chosen = inputs["mlm_labels"] != IGNORE
        sums["masked"] += int(chosen.sum())
        sums["mlm_loss"] += float(out["mlm_loss"]) * int(chosen.sum())
        right = out["mlm_logits"].argmax(-1) == inputs["mlm_labels"]
        sums["mlm_correct"] += int(right[chosen].sum())
        concept = chosen & batch["concept_mask"]
        sums["concept_masked"] += int(concept.sum())
        sums["concept_correct"] += int(right[concept].sum())
        sums["itm_loss"] += float(out["itm_loss"]) * batch["image_id"].shape[0]
        sums["itm_correct"] += int((out["itm_logits"].argmax(-1) == inputs["itm_labels"]).sum())
    model.train(was_training)
    n, masked = len(rows), max(sums["masked"], 1)
    out = {"rows": n, "mlm_loss": sums["mlm_loss"] / masked, "itm_loss": sums["itm_loss"] / n,
           "mlm_accuracy": 100.0 * sums["mlm_correct"] / masked, "itm_accuracy": 100.0 * sums["itm_correct"] / n}
    if sums["concept_masked"]:  # the masked tokens of the image's concept words (same masks as above)
        out["mlm_concept_accuracy"] = 100.0 * sums["concept_correct"] / sums["concept_masked"]
        out["mlm_concept_tokens"] = sums["concept_masked"]
    return out


# ---- the run ------------------------------------------------------------------------------------


def rehearsal_accuracy(model: StudentPretrainModel, cfg: DictConfig, tokenizer: Any, device: Any) -> Dict:
    """The rehearsal heads on the image init stage's held-out scenes (same seed, same count), at
    the end of MLM + ITM: per attribute over object patches, and background (%)."""
    ii = cfg.image_init
    pixels, labels = scene_batch(cfg.seed, HELD_OUT_SEED, ii.eval_scenes, cfg.data.image_size,
                                 image_transform(cfg.data.image_size), ii.max_objects, cfg.model.patch_size)
    reader = ImageClassifier(model.mlm.vilt, tokenizer.cls_token_id, tokenizer.sep_token_id, dense=True,
                             patches=model.patch_heads)
    return {"weight": ii.rehearsal, "scenes_per_step": ii.rehearsal_scenes,
            "held_out": held_out_accuracy(reader, pixels.to(device), labels)}


@torch.no_grad()
def region_accuracy(model: StudentPretrainModel, cfg: DictConfig, tokenizer: Any, device: Any,
                    batch_size: int = 100) -> Dict:
    """Held-out place words: `image_init.eval_scenes` scenes no step draws (region batch -1),
    described, every place word's tokens masked ([MASK], nothing else masked); the share of those
    tokens the student predicts (%), and the share a text-only guess of the most frequent
    place token would get (the same masks, the majority label). `by_kind` splits the share:
    `region` (where one object is: "near the top left"), `relation` (the word right after "is":
    "is left of", "is above") and `lone_object` (the region words of one-object scenes, where
    nothing but the image's layout can tell them)."""
    rc, ii = cfg.regions, cfg.image_init
    transform = image_transform(cfg.data.image_size)
    pixels, _, scenes = scene_batch(cfg.seed, HELD_OUT_SEED, ii.eval_scenes, cfg.data.image_size, transform,
                                    max(ii.max_objects, 1), stream="regions", return_scenes=True)
    texts = descriptions(cfg.seed, HELD_OUT_SEED, scenes)
    is_id = tokenizer.convert_tokens_to_ids("is")
    was = model.training
    model.eval()
    hits, labels_all, kinds_all = [], [], []
    for i in range(0, len(texts), batch_size):
        enc, _, place = encode(texts[i:i + batch_size], tokenizer, cfg.model.max_text_len)
        original = enc["input_ids"]
        ids = torch.where(place, torch.full_like(original, tokenizer.mask_token_id), original)  # every place token
        with torch.no_grad():
            text, _ = model.encode(pixels[i:i + batch_size].to(device), ids.to(device), enc["attention_mask"].to(device))
        pred = model.mlm.mlm_score(text).argmax(-1).cpu()
        relation = torch.zeros_like(place)
        relation[:, 1:] = original[:, :-1] == is_id
        lone = torch.tensor([len(s["objects"]) == 1 for s in scenes[i:i + batch_size]])[:, None].expand_as(place)
        hits.append((pred == original)[place])
        labels_all.append(original[place])
        kinds_all.append(torch.stack([relation[place], lone[place]], dim=-1))
    model.train(was)
    labels, hit, kinds = torch.cat(labels_all), torch.cat(hits), torch.cat(kinds_all)
    majority = int(torch.bincount(labels).max()) if len(labels) else 0
    n = max(len(labels), 1)
    share = lambda m: {"tokens": int(m.sum()), "accuracy": 100.0 * float(hit[m].sum()) / max(int(m.sum()), 1)}  # noqa: E731
    by_kind = {"region": share(~kinds[:, 0]), "relation": share(kinds[:, 0]), "lone_object": share(kinds[:, 1] & ~kinds[:, 0])}
    return {"weight": rc.weight, "scenes_per_step": rc.scenes, "place_mask_prob": rc.place_mask_prob,
            "held_out": {"scenes": len(texts), "place_tokens": len(labels), "place_accuracy": 100.0 * float(hit.sum()) / n,
                         "majority_place_token": 100.0 * majority / n, "by_kind": by_kind}}


def make_accelerator(cfg: DictConfig) -> Accelerator:
    return Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=cfg.train.tracker,
                       project_dir=cfg.output_dir, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))


def finish(cfg: DictConfig, trainer: StudentTrainer, stats: Dict[str, Any]) -> Dict:
    """Export the ViltModel (no MLM / ITM heads), evaluate it on held-out rows, write metrics.json."""
    acc, out, setup = trainer.acc, trainer.out, trainer.setup
    acc.wait_for_everyone()
    metrics: Dict = {}
    if acc.is_main_process:
        model = acc.unwrap_model(trainer.model)
        folder = export_student(model.mlm.vilt, setup.tokenizer, cfg.data.image_size, out / "student")
        ev = {}
        if setup.val_rows:
            ev = {"file": str(setup.paths["val"]), **evaluate(model, cfg, setup.tokenizer, setup.val_rows, acc.device)}
        metrics = {"student": str(folder), "vocab_size": len(setup.tokenizer), "train": stats, "eval": ev}
        if (out / IMAGE_INIT_FILE).is_file():
            metrics["image_init"] = read_json(out / IMAGE_INIT_FILE)
        if cfg.image_init.rehearsal:
            metrics["rehearsal"] = rehearsal_accuracy(model, cfg, setup.tokenizer, acc.device)
        if cfg.regions.weight:
            metrics["regions"] = region_accuracy(model, cfg, setup.tokenizer, acc.device)
        write_json_atomic(out / "metrics.json", metrics)
        logger.info("metrics: %s", json.dumps(ev))
    acc.end_training()
    return metrics


def run(cfg: DictConfig) -> Dict:
    """Build, train (resuming when asked), export, evaluate; returns metrics.json's content."""
    accelerator = make_accelerator(cfg)
    start_run(cfg, accelerator)
    if cfg.image_init.weights and cfg.image_init.steps:
        raise InputError(f"config keys image_init.weights={cfg.image_init.weights} and image_init.steps="
                         f"{cfg.image_init.steps}: the weights are a finished image initialisation; set "
                         f"image_init.steps=0 to start from them, or image_init.weights=null to train one")
    setup = build(cfg)
    out = Path(cfg.output_dir)
    if cfg.image_init.weights and cfg.train.resume is None:
        load_image_init(setup.model.mlm.vilt, cfg.image_init.weights)
        source = Path(cfg.image_init.weights).with_name(IMAGE_INIT_FILE)  # the stage's metrics, when beside it
        init = {**(read_json(source) if source.is_file() else {}), "weights": str(cfg.image_init.weights)}
        if accelerator.is_main_process:
            write_json_atomic(out / IMAGE_INIT_FILE, init)
    elif cfg.image_init.steps and cfg.train.resume is None:  # a resumed run's checkpoint holds the result
        init = image_init(accelerator, setup.model.mlm.vilt, setup.tokenizer, cfg, image_transform(cfg.data.image_size))
        if accelerator.is_main_process:
            write_json_atomic(out / IMAGE_INIT_FILE, init)
            save_image_init(setup.model.mlm.vilt, out / IMAGE_INIT_WEIGHTS)
    trainer = StudentTrainer(cfg, accelerator, setup)
    if cfg.train.tracker is not None:
        accelerator.init_trackers("pretrain_student", config=to_dict(cfg))
    return finish(cfg, trainer, trainer.fit())


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Entry point of pretrain_student.py / `python -m pretrain.student` (wrapped in `run_script`)."""
    config_path, overrides = parse_script_args(argv, description="Pretrain a ViLT student (MLM + ITM, source style)")
    return run(load_student_config(config_path, overrides))
