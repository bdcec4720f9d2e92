"""Teacher pretraining loop (accelerate-example shaped): `python -m pretrain` / pretrain_teacher.py.

Config = PretrainConfig <- YAML <- dotted overrides (docs/contracts.md section 1). Writes
`<output_dir>/config.yaml`, `teacher/` (open_clip local-dir), `metrics.json`, `cat_report.json`
(when CAT is on) and `checkpoints/step_<n>/` (accelerate state + run_state.json, written by
`clip_td.base.checkpoints` as fine-tuning's are). `train.resume` takes a checkpoint folder or
"latest" (the highest step by run_state.json); a checkpoint of a different run set-up (model
config, loss, concept head, data, batch layout) is refused with one message.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from clip_td.base.checkpoints import resolve_resume, save_checkpoint
from clip_td.base.config import parse_script_args, to_dict
from clip_td.base.io import InputError, write_json_atomic

from pretrain.alip_gates import ALIPGates
from pretrain.cat_filter import OCRS, PARSERS, CATRules, cat_filter, make_backends
from pretrain.clip_factory import BuiltModel, build_model
from pretrain.concepts import CONCEPT_TEACHERS, FrozenConceptTeacher, create_concept_teacher
from pretrain.config import PretrainConfig, load_pretrain_config  # noqa: F401  (PretrainConfig: the schema)
from pretrain.data import (CaptionDataset, FactCaptions, JunkWords, TextNegatives, concept_targets, make_collate,
                           read_captions, read_concepts)
from pretrain.export import export_teacher
from pretrain.image_init import concept_bce_steps, count_targets, fact_targets, phrase_targets
from pretrain.loop import ResumableLoop, start_run
from pretrain.losses import LOSSES, ConceptLoss, compute_losses, create_loss, total_loss
from pretrain.pretrain_model import PretrainModel
from pretrain.teacher_eval import evaluate_teacher

logger = logging.getLogger("pretrain")


# ---- set-up: data, models, losses --------------------------------------------------------------


def check_names(cfg: DictConfig) -> None:
    """Every registry name of the config, and keys that need others, checked before any data or model is built."""
    LOSSES.get(cfg.loss.name, key="loss.name")
    if cfg.cat.enabled:
        PARSERS.get(cfg.cat.parse_backend, key="cat.parse_backend")
        OCRS.get(cfg.cat.ocr_backend, key="cat.ocr_backend")
    if cfg.concept.weight > 0:
        CONCEPT_TEACHERS.get(cfg.concept.teacher.partition(":")[0], key="concept.teacher")
    if cfg.data.caption_sizes and not (cfg.data.fact_captions or cfg.data.place_captions):
        raise InputError("config key data.caption_sizes: names sizes in the fact and place captions, so it needs "
                         "data.fact_captions or data.place_captions above 0 (both are 0)")
    if cfg.data.junk_replaces and not cfg.data.junk_words:
        raise InputError(f"config key data.junk_replaces={cfg.data.junk_replaces}: a share of the junk strings of "
                         "data.junk_words, but data.junk_words is 0; set data.junk_words too")


def resolve_paths(cfg: DictConfig) -> Dict[str, Optional[Path]]:
    """Training / val / zero-shot / concepts paths; builds the synthetic world when neither
    data.root nor data.train is set."""
    root = None if cfg.data.root is None else Path(cfg.data.root)
    if root is None and cfg.data.train is None:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world(size=cfg.data.world_size, seed=0))
    pre = None if root is None else root / "pretrain"

    def pick(value: Optional[str], name: str, folder: bool = False) -> Optional[Path]:
        """The configured path, else `<root>/pretrain/<name>` when it exists (its folder if `folder`)."""
        if value is not None:
            return Path(value)
        if pre is None or not (pre / name).exists():
            return None
        return pre if folder else pre / name

    paths = {
        "train": pick(cfg.data.train, "train.tsv"),
        "val": pick(cfg.data.val, "val.tsv"),
        "zeroshot": pick(cfg.data.zeroshot, "zeroshot.json", folder=True),
        "concepts": pick(cfg.data.concepts, "concepts.json"),
    }
    if paths["train"] is None:
        raise InputError(f"config key data.train: no training captions file (looked in {pre})")
    return paths


def load_rows(cfg: DictConfig, train_file: Path, output_dir: Path, is_main: bool) -> List[Dict]:
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


@dataclass
class Setup:
    """What one run trains, built before `accelerator.prepare`."""

    paths: Dict[str, Optional[Path]]
    rows: List[Dict]
    built: BuiltModel  # the open_clip model, its configs, transforms and tokenizer
    dataset: CaptionDataset
    model: PretrainModel  # the CLIP + concept head: the one prepared module
    concept_teacher: Optional[FrozenConceptTeacher]  # frozen, outside the model
    gates: ALIPGates  # ALIP running means: training state, checkpointed
    losses: List[nn.Module]  # each has forward_outputs(out) -> {"*_loss": scalar, ...}
    image_init: Dict[str, float]  # the supervised image-init stage's first / last BCE ({} when off or resumed)


def build(cfg: DictConfig, accelerator: Accelerator) -> Setup:
    check_names(cfg)
    if cfg.loss.mask_duplicate_texts and cfg.loss.name != "infonce":
        raise InputError(f"config key loss.mask_duplicate_texts: works with loss.name=infonce, not {cfg.loss.name!r}")
    paths = resolve_paths(cfg)
    rows = load_rows(cfg, paths["train"], Path(cfg.output_dir), accelerator.is_main_process)
    facts = None
    if cfg.data.fact_captions or cfg.data.place_captions or cfg.data.count_captions or cfg.data.count_prefix:
        from tasks.synthetic.scene import REGIONS
        from tasks.synthetic.vocab import COLOUR_NAMES, SIZE_NAMES

        facts = FactCaptions(float(cfg.data.fact_captions), seed=int(cfg.seed), colours=COLOUR_NAMES,
                             source=str(paths["train"]), places=float(cfg.data.place_captions), regions=REGIONS,
                             sizes=SIZE_NAMES if cfg.data.caption_sizes else (),
                             counts=float(cfg.data.count_captions), count_prefix=float(cfg.data.count_prefix),
                             count_frames=list(cfg.data.count_frames))
    built = build_model(cfg.model.name, cfg.model.pretrained, cfg.model.model_cfg, cfg.model.preprocess_cfg,
                        tokenizer=fit_vocabulary(cfg, rows, facts))
    negatives = None
    if cfg.loss.text_negatives:
        if cfg.loss.name != "infonce":
            raise InputError(f"config key loss.text_negatives: works with loss.name=infonce, not {cfg.loss.name!r}")
        negatives = TextNegatives(rows, seed=int(cfg.seed), source=str(paths["train"]),
                                  swap=float(cfg.loss.text_negative_swap),
                                  relation=float(cfg.loss.text_negative_relation))
    junk = JunkWords(float(cfg.data.junk_words), seed=int(cfg.seed), words=corpus_words(rows, facts),
                     replaces=float(cfg.data.junk_replaces)) if cfg.data.junk_words else None
    dataset = CaptionDataset(rows, built.preprocess_train if cfg.data.augment else built.preprocess_val, negatives,
                             facts, junk)
    teacher = build_concept_teacher(cfg, built, CaptionDataset(rows, built.preprocess_val), rows, paths, accelerator)
    size = built.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    image_init = init_image_tower(cfg, built, rows, paths, size, accelerator)
    gates = ALIPGates(cfg.loss.alip_momentum, cfg.loss.alip_sharpness)
    losses = [create_loss(cfg.loss.name, key="loss.name", alpha=cfg.loss.alpha, beta=cfg.loss.beta, gates=gates,
                          mask_duplicates=bool(cfg.loss.mask_duplicate_texts))]
    if teacher is not None:
        losses.append(ConceptLoss(cfg.concept.weight, cfg.concept.temperature))
    model = PretrainModel(built.model, _num_concepts(teacher, size), lock_image=bool(cfg.image_init.lock))
    return Setup(paths, rows, built, dataset, model, teacher, gates, losses, image_init)


def corpus_words(rows: List[Dict], facts: Optional[FactCaptions] = None) -> set:
    """Every word the training texts can hold: those of the raw and synthetic captions, the place
    captions' and the count frames' (the fact captions' words are the raw captions')."""
    texts = [r["title"] for r in rows] + [r.get("synthetic_caption") or "" for r in rows]
    if facts is not None:
        texts += (facts.place_texts(rows) if facts.places > 0 else []) + list(facts.count_frames)
    return {w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower())}


def fit_vocabulary(cfg: DictConfig, rows: List[Dict], facts: Optional[FactCaptions] = None) -> Any:
    """`model.fitted_vocab_size > 0`: a deterministic WordPiece tokenizer fitted on the training
    captions (raw texts and synthetic captions, and the place captions of `data.place_captions`,
    so that the place words are whole tokens); None keeps CLIP's BPE."""
    size = int(cfg.model.fitted_vocab_size)
    if size <= 0:
        return None
    if cfg.model.name is not None:  # e.g. continuing from a teacher folder with the default recipe
        logger.warning("warning: model.fitted_vocab_size=%d ignored: model.name=%r keeps its own vocabulary",
                       size, cfg.model.name)
        return None
    from clip_td.base.wordpiece import build_wordpiece

    texts = [r["title"] for r in rows] + [r["synthetic_caption"] for r in rows if r.get("synthetic_caption")]
    if facts is not None and facts.places > 0:
        texts += facts.place_texts(rows)
    # every printable ASCII character stays spellable: task texts name objects ("triangle1") and
    # end with "?", which captions never do
    return build_wordpiece(texts, vocab_size=size, alphabet=string.ascii_lowercase + string.digits + string.punctuation)


def init_image_tower(cfg: DictConfig, built: BuiltModel, rows: List[Dict], paths, image_size: int,
                     accelerator: Accelerator) -> Dict[str, float]:
    """LiT-style supervised start of the image tower (`image_init.*`); skipped when resuming, since
    the checkpoint holds the weights. Returns the stage's first and last BCE ({} when off)."""
    ic = cfg.image_init
    if resolve_resume(cfg.train.resume, Path(cfg.output_dir)) is not None:
        return {}
    if ic.steps <= 0:
        if ic.lock and cfg.model.name is None and cfg.model.pretrained is None:
            logger.warning("warning: image_init.lock=true with image_init.steps=0 locks a randomly initialised image tower")
        return _standardise(cfg, built, rows, {})
    if paths["concepts"] is None:
        raise InputError("config key image_init.steps: the supervised image init needs data.concepts (concepts.json)")
    targets = concept_targets(rows, read_concepts(paths["concepts"]), str(paths["train"]))
    if ic.phrases:
        vocab, phrases = phrase_targets(rows, int(ic.phrase_min_count))
        if not vocab:
            raise InputError(f"config key image_init.phrases: no adjective-noun phrase occurs in "
                             f"image_init.phrase_min_count={ic.phrase_min_count} training captions of {paths['train']}")
        targets = torch.cat([targets, phrases], dim=1)
    if ic.facts:
        _, facts = fact_targets(rows, int(ic.fact_min_count), str(paths["train"]))
        targets = torch.cat([targets, facts], dim=1)
    if ic.places:
        _, places = fact_targets(rows, int(ic.fact_min_count), str(paths["train"]), column="places")
        targets = torch.cat([targets, places], dim=1)
    if ic.counts:
        targets = torch.cat([targets, count_targets(rows, str(paths["train"]))[1]], dim=1)
    stats = concept_bce_steps(built.model.visual, CaptionDataset(rows, built.preprocess_val), targets, steps=ic.steps,
                              lr=ic.lr, batch_size=ic.batch_size, seed=int(cfg.seed), image_size=image_size,
                              show_progress=accelerator.is_local_main_process)
    return _standardise(cfg, built, rows, stats)


def _standardise(cfg: DictConfig, built: BuiltModel, rows: List[Dict], stats: Dict[str, float]) -> Dict[str, float]:
    """`image_init.standardise`: fold a per-dimension standardisation into the image tower's output."""
    if not cfg.image_init.standardise:
        return stats
    from pretrain.image_init import standardise_output

    spread = standardise_output(built.model.visual, CaptionDataset(rows, built.preprocess_val))
    return {**stats, **{f"standardise_{k}": v for k, v in spread.items()}}


def run_signature(cfg: DictConfig, setup: Setup, num_processes: int) -> Dict[str, Any]:
    """What a checkpoint must share with the run resuming from it (JSON-normalised)."""
    head = setup.model.concept_head
    return json.loads(json.dumps({
        "model_cfg": setup.built.model_cfg, "model_name": cfg.model.name, "loss": cfg.loss.name,
        "text_negatives": bool(cfg.loss.text_negatives), "text_negative_swap": float(cfg.loss.text_negative_swap),
        "text_negative_relation": float(cfg.loss.text_negative_relation),
        "num_concepts": 0 if head is None else head.out_features, "train_rows": len(setup.rows),
        "image_init": {"steps": int(cfg.image_init.steps), "lock": bool(cfg.image_init.lock),
                       "phrases": bool(cfg.image_init.phrases), "facts": bool(cfg.image_init.facts),
                       **({"places": True} if cfg.image_init.places else {}),
                       "standardise": bool(cfg.image_init.standardise)},
        "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum, "num_processes": num_processes,
    }))


# ---- the loop ------------------------------------------------------------------------------------


class PretrainTrainer(ResumableLoop):
    """One run's training state: the prepared objects, the position (step, epoch, micro-batch in
    epoch) and the step times. `fit()` runs the loop; the methods stay short."""

    desc = "pretrain"
    log = logger

    def __init__(self, cfg: DictConfig, accelerator: Accelerator, setup: Setup) -> None:
        self.cfg, self.acc, self.setup, self.out = cfg, accelerator, setup, Path(cfg.output_dir)
        loader = DataLoader(setup.dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers, collate_fn=make_collate(setup.built.tokenizer))
        if len(loader) == 0:
            raise InputError(f"config key train.batch_size: {cfg.train.batch_size} exceeds the {len(setup.dataset)} training pairs")
        steps_per_epoch = max(len(loader) // (cfg.train.grad_accum * accelerator.num_processes), 1)
        self.total_steps = cfg.train.max_steps if cfg.train.max_steps is not None else cfg.train.epochs * steps_per_epoch
        optimizer = torch.optim.AdamW([p for p in setup.model.parameters() if p.requires_grad], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        # the prepared scheduler advances once per process per step (accelerate's convention)
        n = accelerator.num_processes
        scheduler = get_cosine_schedule_with_warmup(optimizer, min(cfg.train.warmup_steps, self.total_steps) * n,
                                                    self.total_steps * n)
        self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(
            setup.model, optimizer, loader, scheduler)
        setup.gates.to(accelerator.device)
        accelerator.register_for_checkpointing(setup.gates)  # ALIP running means are training state
        if setup.concept_teacher is not None:
            setup.concept_teacher.to(accelerator.device)
        self.bipath = any(getattr(loss, "needs_caption", False) for loss in setup.losses)
        self.signature = run_signature(cfg, setup, n)
        self.pos: Dict[str, int] = {"step": 0, "epoch": 0, "batch": 0}
        self.times: List[float] = []  # seconds per micro-batch
        self.last: Optional[Dict[str, float]] = None


    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The model's named outputs, plus the frozen concept teacher's logits when distilling."""
        out = self.model(batch["image"], batch["text"], batch["caption"] if self.bipath else None,
                         batch.get("negative"))
        if "negative_valid" in batch:
            out["negative_valid"] = batch["negative_valid"]
        if self.setup.concept_teacher is not None:
            out["concept_teacher_logits"] = self.setup.concept_teacher(batch["image"])
        return out

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        acc, t0 = self.acc, time.perf_counter()
        with acc.accumulate(self.model):
            terms = compute_losses(self.forward(batch), self.setup.losses)
            acc.backward(total_loss(terms))
            if acc.sync_gradients and self.cfg.train.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.times.append(time.perf_counter() - t0)
        return terms

    def after_step(self, terms: Dict[str, torch.Tensor], bar: Any) -> None:
        with torch.no_grad():  # open_clip clamps the temperature to at most 100
            self.acc.unwrap_model(self.model).clip.logit_scale.clamp_(0, math.log(100))
        step, cfg = self.pos["step"], self.cfg.train
        values = {k: float(v.detach()) for k, v in terms.items()}
        self.last = {k: v for k, v in values.items() if k.endswith("_loss")}
        bar.update(1)
        if step % cfg.log_every == 0 or step == self.total_steps:
            self.acc.log({**values, "lr": self.scheduler.get_last_lr()[0]}, step=step)
            bar.set_postfix(loss=f"{sum(self.last.values()):.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.total_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        save_checkpoint(self.acc, self.out, f"step_{self.pos['step']}", {**self.pos, "signature": self.signature},
                        self.cfg.train.keep_checkpoints)

    def stats(self) -> Dict[str, Any]:
        """Steady-state step time (the first micro-batches are warm-up), throughput, last losses."""
        steady = self.times[min(5, len(self.times) // 2):] or self.times or [float("nan")]
        step_time = sum(steady) / len(steady) * self.cfg.train.grad_accum
        samples = self.cfg.train.batch_size * self.cfg.train.grad_accum * self.acc.num_processes
        return {"steps": self.pos["step"], "step_time_s": step_time, "samples_per_s": samples / step_time,
                "last_losses": self.last}


# ---- the run -------------------------------------------------------------------------------------


def make_accelerator(cfg: DictConfig) -> Accelerator:
    return Accelerator(
        gradient_accumulation_steps=cfg.train.grad_accum, mixed_precision=cfg.train.mixed_precision,
        log_with=cfg.train.tracker, project_dir=cfg.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def finish(cfg: DictConfig, trainer: PretrainTrainer, stats: Dict[str, Any]) -> Dict:
    """Export the bare CLIP (no training-only heads), evaluate it, write metrics.json."""
    acc, out, setup = trainer.acc, trainer.out, trainer.setup
    acc.wait_for_everyone()
    metrics: Dict = {}
    if acc.is_main_process:
        clip = acc.unwrap_model(trainer.model).clip.eval()
        export_teacher(clip, setup.built.model_cfg, setup.built.preprocess_cfg, out / "teacher", setup.built.tokenizer)
        ev = evaluate_teacher(clip, setup.built, setup.paths, cfg.eval, cfg.seed, acc.device) if cfg.eval.enabled else {}
        metrics = {"eval": ev, "train": {**stats, "image_init": setup.image_init},
                   "recipe": {"loss": cfg.loss.name, "cat": cfg.cat.enabled, "concept_weight": cfg.concept.weight,
                              "image_init_steps": int(cfg.image_init.steps), "image_lock": bool(cfg.image_init.lock)}}
        write_json_atomic(out / "metrics.json", metrics)
        logger.info("metrics: %s", json.dumps(ev))
    acc.end_training()
    return metrics


def run(cfg: DictConfig) -> Dict:
    """Build, train (resuming when asked), export, evaluate; returns metrics.json's content."""
    accelerator = make_accelerator(cfg)
    start_run(cfg, accelerator)
    trainer = PretrainTrainer(cfg, accelerator, build(cfg, accelerator))
    if cfg.train.tracker is not None:
        accelerator.init_trackers("pretrain", config=to_dict(cfg))
    return finish(cfg, trainer, trainer.fit())


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Entry point of pretrain_teacher.py / `python -m pretrain` (wrapped in `run_script`)."""
    config_path, overrides = parse_script_args(argv, description="Pretrain a CLIP teacher (CLIP / DiHT / ALIP recipes)")
    cfg = load_pretrain_config(config_path, overrides)
    if cfg.init_from:  # a two-stage recipe: the first stage's teacher, trained once and cached
        from pretrain.default_teacher import ensure_recipe_teacher

        if cfg.model.name is not None or cfg.model.pretrained is not None:
            raise InputError(f"config key init_from={cfg.init_from!r} sets the starting teacher; model.name="
                             f"{cfg.model.name!r} / model.pretrained={cfg.model.pretrained!r} cannot also be set")
        check_names(cfg)  # a bad name is reported before the first stage trains
        base = ensure_recipe_teacher(str(cfg.init_from), overrides)
        cfg = load_pretrain_config(config_path, [*overrides, f"model.name=local-dir:{base}"])
    return run(cfg)
