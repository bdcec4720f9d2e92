"""`PretrainConfig`: the schema of pretrain_teacher.py (defaults <- YAML <- command line).

The recipes (`configs/pretrain/*.yaml`, read from the installed `configs` package) hold only
their differences from these defaults. `load_pretrain_config` is the one loader: it also
accepts the deprecated `train.resume_from` as `train.resume`, with a one-line warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from clip_td.base.config import load_config, packaged_configs
from clip_td.base.io import InputError, PathLike

from pretrain.clip_factory import TINY_MODEL_CFG, TINY_PREPROCESS_CFG

logger = logging.getLogger("pretrain")


def recipes_dir() -> Path:
    """The shipped pretraining recipes: `<configs package>/pretrain`."""
    return packaged_configs() / "pretrain"


def recipe_path(name: str = "default") -> Path:
    """A shipped recipe by name (`default`, `clip`, `diht`, `alip`)."""
    path = recipes_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml")))
        raise InputError(f"pretraining recipe {name!r} not found; expected one of: {known}")
    return path


@dataclass
class DataConfig:
    root: Optional[str] = None  # a synthetic-world-shaped folder (holds pretrain/); null = build/reuse the synthetic world
    world_size: str = "medium"  # synthetic world size used when root (and train) are null
    train: Optional[str] = None  # captions TSV/CSV; null = <root>/pretrain/train.tsv
    val: Optional[str] = None  # held-out captions for retrieval; null = <root>/pretrain/val.tsv when present
    zeroshot: Optional[str] = None  # folder holding zeroshot.json; null = <root>/pretrain when present
    concepts: Optional[str] = None  # concepts.json; null = <root>/pretrain/concepts.json
    max_train_rows: int = 0  # use only the first N training rows (0 = all)
    num_workers: int = 0  # DataLoader worker processes
    augment: bool = False  # open_clip's train transform (random resized crop); off = exact resume, positions kept
    fact_captions: float = 0.0  # share of rows whose text is written from their `facts` ("a red circle to the left of a blue square")
    place_captions: float = 0.0  # a further share whose text says where one object is, from `places` ("a red circle near the top left")
    count_captions: float = 0.0  # a further share whose text says how many shapes the picture holds, one per `places` entry ("three shapes")
    # the sentences the count captions are written in, each with one "{n}" for the count phrase
    # ("a picture of {n}" -> "a picture of three shapes"); one is drawn per row, its negative in the same frame
    count_frames: List[str] = field(default_factory=lambda: ["{n}"])
    count_prefix: float = 0.0  # share of the fact and place captions that begin with the picture's count ("three shapes: a red circle ..."; negative: another count)
    caption_sizes: bool = False  # the fact and place captions name each object's size too, where its facts give one ("a large red circle near the top left")
    # share of rows whose text and hard negative carry one to three strings that are no corpus word
    # ("xq", "7", glued as in "circle7"): the tower learns that pieces a fitted vocabulary spells out say nothing
    junk_words: float = 0.0
    junk_replaces: float = 0.0  # share of those strings that take the place of a word the text and its negative share ("a red xq")


@dataclass
class ModelConfig:
    name: Optional[str] = None  # open_clip arch, "hf-hub:org/repo" or "local-dir:/path"; null = model_cfg below
    pretrained: Optional[str] = None  # open_clip pretrained tag or checkpoint file (with a plain arch name)
    model_cfg: Dict[str, Any] = field(default_factory=lambda: dict(TINY_MODEL_CFG))  # declared architecture
    preprocess_cfg: Dict[str, Any] = field(default_factory=lambda: dict(TINY_PREPROCESS_CFG))
    # > 0: replace CLIP's 49,408-token BPE with a WordPiece vocabulary of at most this many tokens
    # fitted on the training captions (declared architectures only); it is saved in the teacher folder
    fitted_vocab_size: int = 0


@dataclass
class LossConfig:
    name: str = "infonce"  # LOSSES registry name: infonce | hn_nce | alip
    alpha: float = 1.0  # HN-NCE: weight of the positive in the denominator
    beta: float = 0.0  # HN-NCE: hardness of the negative importance weights (0 = uniform)
    alip_momentum: float = 0.99  # ALIP: running-mean momentum of the gate similarities
    alip_sharpness: float = 2.0  # ALIP: the 2 in exp(2 (s - m))
    text_negatives: bool = False  # infonce: NegCLIP hard negative texts (one noun/adjective of the caption's parse swapped)
    text_negative_swap: float = 0.0  # share of those negatives that exchange two words of one part of speech (binding)
    mask_duplicate_texts: bool = False  # infonce: pairs whose training texts are the same tokens are not each other's negatives
    text_negative_relation: float = 0.0  # share of those negatives that reverse the caption's spatial relation (layout)


@dataclass
class CATConfig:
    enabled: bool = False  # filter the training pairs with DiHT's CAT rules first
    parse_backend: str = "column"  # PARSERS registry name: column (the corpus' `parse`) | spacy
    ocr_backend: str = "column"  # OCRS registry name: column (the corpus' `ocr_text`) | tesseract | none
    spacy_model: str = "en_core_web_sm"  # used by the spacy backend
    min_complexity: int = 2  # keep pairs whose parse has a token with >= this many children
    min_actions: int = 0  # keep pairs with >= this many verbs heading an nsubj
    max_ocr_jaccard: float = 0.2  # drop pairs whose OCR words overlap the caption at least this much


@dataclass
class ConceptConfig:
    weight: float = 0.0  # weight of the concept-distillation KL (0 = off)
    temperature: float = 2.0  # softmax temperature of teacher and head
    teacher: str = "synthetic"  # CONCEPT_TEACHERS name: synthetic | timm:<arch> | torchvision:<arch>
    teacher_weights: Optional[str] = None  # local weights file for timm/torchvision teachers; null = random init
    num_classes: int = 0  # timm/torchvision head size (0 = the arch default)
    teacher_steps: int = 300  # training steps of the synthetic concept classifier
    teacher_size: int = 0  # teacher input resolution (0 = the CLIP image size)
    teacher_mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # timm/torchvision input norm
    teacher_std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class ImageInitConfig:
    steps: int = 0  # supervised BCE steps on the corpus' `concepts` column before the contrastive stage (LiT-style init; 0 = off)
    lr: float = 2e-3  # peak learning rate of that stage (warm-up, then cosine decay)
    batch_size: int = 128
    lock: bool = False  # keep the image tower frozen in the contrastive stage (LiT's locked image)
    phrases: bool = False  # also predict the captions' adjective-noun phrases (bound attributes, from the `parse` column)
    phrase_min_count: int = 5  # a phrase is a label when at least this many training captions hold it
    facts: bool = False  # also predict the `facts` column's scene graph ("red circle", "circle left of square")
    fact_min_count: int = 5  # a fact is a label when at least this many training rows hold it
    places: bool = False  # also predict the `places` column ("circle at top left": where each shape is in the picture)
    counts: bool = False  # also predict how many shapes the picture holds ("at least k shapes", one per `places` entry)
    standardise: bool = False  # then rescale the tower's pooled output to mean 0, variance 1 per dimension (folded into its last layer)


@dataclass
class TrainConfig:
    epochs: int = 1  # passes over the (filtered) corpus when max_steps is unset
    max_steps: Optional[int] = None  # stop after this many optimizer steps
    batch_size: int = 128  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    max_grad_norm: float = 1.0  # 0 = no clipping
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    checkpoint_every: int = 0  # save a checkpoint every N optimizer steps (0 = only at the end)
    keep_checkpoints: int = 0  # checkpoints kept on disk, oldest removed first (0 = all)
    resume: Optional[str] = None  # checkpoint folder or "latest" (highest step under <output_dir>/checkpoints)
    log_every: int = 10  # optimizer steps between log lines
    tracker: Optional[str] = None  # accelerate tracker name (tensorboard, wandb, ...) when installed; null = none


@dataclass
class EvalConfig:
    enabled: bool = True
    max_pairs: int = 2000  # retrieval on at most this many held-out pairs
    probe_shots: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    probe_delta: float = 0.5  # DiHT probe: ||W - W0|| <= probe_delta * ||W0||
    probe_delta_b: float = 1.0  # DiHT probe: ||b|| bound
    probe_steps: int = 100


@dataclass
class PretrainConfig:
    output_dir: str = "runs/pretrain"
    seed: int = 0
    # a recipe name (configs/pretrain/<name>.yaml) to continue from: it is trained first (once per
    # resolved recipe, cached like the default teacher, with this run's command-line overrides) and
    # this run starts from its teacher folder, as model.name=local-dir:<its teacher> would
    init_from: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cat: CATConfig = field(default_factory=CATConfig)
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    image_init: ImageInitConfig = field(default_factory=ImageInitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---- loading ------------------------------------------------------------------------------------

DEPRECATED_KEYS = {"train.resume_from": "train.resume"}


@dataclass
class _TrainWithAliases(TrainConfig):
    resume_from: Optional[str] = None  # deprecated: train.resume


@dataclass
class _LoadSchema(PretrainConfig):
    """PretrainConfig plus the deprecated keys, for loading only (they never reach the result)."""

    train: _TrainWithAliases = field(default_factory=_TrainWithAliases)


def _warn_deprecated(old: str, new: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process
        logger.warning("warning: config key %s is deprecated; use %s", old, new)


def load_pretrain_config(config_path: Optional[PathLike] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """PretrainConfig <- recipe (default: the shipped `default` recipe) <- dotted overrides;
    read-only. A deprecated key moves to its new name (a warning); both set differently is an error."""
    raw = load_config(_LoadSchema, recipe_path() if config_path is None else config_path, overrides)
    data = OmegaConf.to_container(raw, resolve=True)
    for old, new in DEPRECATED_KEYS.items():
        (old_sec, old_key), (new_sec, new_key) = old.split("."), new.split(".")
        value = data[old_sec].pop(old_key)
        if value is None:
            continue
        _warn_deprecated(old, new)
        if data[new_sec][new_key] not in (None, value):
            raise InputError(f"config keys {old} (deprecated) and {new} are both set, to different values")
        data[new_sec][new_key] = value
    cfg = OmegaConf.merge(OmegaConf.structured(PretrainConfig), data)
    OmegaConf.set_readonly(cfg, True)
    return cfg
