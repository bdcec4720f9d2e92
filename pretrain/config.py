"""`PretrainConfig`: the schema of pretrain_teacher.py (defaults <- YAML <- command line).

Recipe files in configs/pretrain/ hold only their differences from these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from pretrain.models import TINY_MODEL_CFG, TINY_PREPROCESS_CFG

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs" / "pretrain"
DEFAULT_RECIPE = RECIPES_DIR / "default.yaml"


@dataclass
class DataConfig:
    root: str = ""  # a synthetic-world-shaped folder (holds pretrain/); "" = build/reuse the synthetic world
    world_size: str = "medium"  # synthetic world size used when root is ""
    train: str = ""  # captions TSV/CSV; "" = <root>/pretrain/train.tsv
    val: str = ""  # held-out captions for retrieval; "" = <root>/pretrain/val.tsv when present
    zeroshot: str = ""  # folder holding zeroshot.json; "" = <root>/pretrain when present
    concepts: str = ""  # concepts.json; "" = <root>/pretrain/concepts.json
    max_train_rows: int = 0  # use only the first N training rows (0 = all)
    num_workers: int = 0  # DataLoader worker processes
    augment: bool = False  # open_clip's train transform (random resized crop); off = exact resume, positions kept


@dataclass
class ModelConfig:
    name: str = ""  # open_clip arch, "hf-hub:org/repo" or "local-dir:/path"; "" = model_cfg below
    pretrained: str = ""  # open_clip pretrained tag or checkpoint file (with a plain arch name)
    model_cfg: Dict[str, Any] = field(default_factory=lambda: dict(TINY_MODEL_CFG))  # declared architecture
    preprocess_cfg: Dict[str, Any] = field(default_factory=lambda: dict(TINY_PREPROCESS_CFG))


@dataclass
class LossConfig:
    name: str = "infonce"  # infonce | hn_nce | alip
    alpha: float = 1.0  # HN-NCE: weight of the positive in the denominator
    beta: float = 0.0  # HN-NCE: hardness of the negative importance weights (0 = uniform)
    alip_momentum: float = 0.99  # ALIP: running-mean momentum of the gate similarities
    alip_sharpness: float = 2.0  # ALIP: the 2 in exp(2 (s - m))


@dataclass
class CATConfig:
    enabled: bool = False  # filter the training pairs with DiHT's CAT rules first
    parse_backend: str = "column"  # column (the corpus' `parse`) | spacy
    ocr_backend: str = "column"  # column (the corpus' `ocr_text`) | tesseract | none
    spacy_model: str = "en_core_web_sm"  # used by the spacy backend
    min_complexity: int = 2  # keep pairs whose parse has a token with >= this many children
    min_actions: int = 0  # keep pairs with >= this many verbs heading an nsubj
    max_ocr_jaccard: float = 0.2  # drop pairs whose OCR words overlap the caption at least this much


@dataclass
class ConceptConfig:
    weight: float = 0.0  # weight of the concept-distillation KL (0 = off)
    temperature: float = 2.0  # softmax temperature of teacher and head
    teacher: str = "synthetic"  # synthetic | timm:<arch> | torchvision:<arch>
    teacher_weights: str = ""  # local weights file for timm/torchvision teachers
    num_classes: int = 0  # timm/torchvision head size (0 = the arch default)
    teacher_steps: int = 300  # training steps of the synthetic concept classifier
    teacher_size: int = 0  # teacher input resolution (0 = the CLIP image size)
    teacher_mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # timm/torchvision input norm
    teacher_std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


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
    checkpoint_every: int = 0  # save_state every N optimizer steps (0 = only at the end)
    resume_from: str = ""  # a checkpoint folder, or "latest" (newest under <output_dir>/checkpoints)
    log_every: int = 10  # optimizer steps between log lines
    tracker: str = ""  # accelerate tracker name (tensorboard, wandb, ...) when installed; "" = none


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
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cat: CATConfig = field(default_factory=CATConfig)
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
