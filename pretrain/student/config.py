"""`StudentPretrainConfig`: the schema of pretrain_student.py (defaults <- YAML <- command line).

The shipped recipe `configs/pretrain_student/default.yaml` (read from the installed `configs`
package) holds only its differences from these defaults. The model defaults are those of
fine-tuning's from-scratch student (`clip_td.app.schema.StudentConfig`), so a pretrained
student drops into a default fine-tuning run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import DictConfig

from clip_td.base.config import load_config, packaged_configs
from clip_td.base.io import PathLike


def default_recipe() -> Path:
    """The shipped recipe: `<configs package>/pretrain_student/default.yaml`."""
    return packaged_configs() / "pretrain_student" / "default.yaml"


@dataclass
class DataConfig:
    root: Optional[str] = None  # a synthetic-world-shaped folder (holds pretrain/); null = build/reuse the synthetic world
    size: str = "medium"  # synthetic world size (small | medium | large) when root and train are null
    image_size: int = 64  # student input side; also the synthetic world's image size when it is built
    world_seed: int = 0  # synthetic world generator seed when root and train are null
    train: Optional[str] = None  # captions TSV/CSV (filepath, title, style, ...); null = <root>/pretrain/train.tsv
    val: Optional[str] = None  # held-out captions; null = <root>/pretrain/val.tsv when present (none: no evaluation)
    text_column: str = "title"  # the caption column: title | synthetic_caption
    # the columns whose text the WordPiece vocabulary is fitted on ([] = text_column); digits and
    # punctuation are always in it
    vocab_columns: List[str] = field(default_factory=list)
    max_rows: int = 0  # use only the first N source-style training rows (0 = all)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ModelConfig:
    hidden_size: int = 128  # transformer width
    num_layers: int = 2  # transformer depth
    num_heads: int = 4  # attention heads
    intermediate_size: int = 256  # MLP width
    patch_size: int = 8  # image patch side in pixels
    max_text_len: int = 40  # text tokens per sequence (longer captions are truncated)
    vocab_size: int = 2000  # WordPiece vocabulary size built on the source-style captions (an upper bound)
    # initial patch position embeddings: "zeros" (transformers' ViltEmbeddings, made to be overwritten
    # by a pretrained checkpoint) or "sincos" (2-D sine-cosine of the patch's row and column, as MAE;
    # still trained). From zeros the patches' places stay nearly indistinguishable: a region student
    # started there does not read where even a lone object is (docs/results/student_pretrained/)
    patch_positions: str = "zeros"


@dataclass
class TrainConfig:
    epochs: int = 1  # passes over the source-style rows when max_steps is unset
    max_steps: Optional[int] = None  # stop after this many optimizer steps; null = epochs
    batch_size: int = 32  # per process
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.01
    warmup: float = 0.1  # linear warm-up, as a fraction of the total steps (then cosine decay)
    max_grad_norm: float = 1.0  # 0 = no clipping
    mask_prob: float = 0.15  # MLM: fraction of content tokens chosen (80 % [MASK], 10 % random, 10 % kept)
    # MLM: the probability for the tokens of the words the corpus' `concepts` column lists for the
    # image (its colours, shapes, sizes), which only the image can tell; null = mask_prob for all
    concept_mask_prob: Optional[float] = None
    itm_prob: float = 0.5  # ITM: fraction of pairs given another image's caption
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    resume: Optional[str] = None  # checkpoint folder or "latest" (highest step under <output_dir>/checkpoints)
    checkpoint_every: int = 0  # save a checkpoint every N optimizer steps (0 = only at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk, oldest removed first (0 = all)
    log_every: int = 10  # optimizer steps between log lines
    tracker: Optional[str] = None  # accelerate tracker name (tensorboard, wandb, ...) when installed; null = none


@dataclass
class ImageInitConfig:
    # supervised steps on freshly rendered source-style single-object scenes (colour, shape, size
    # labels) before MLM + ITM, as ViLT starts from an ImageNet-trained ViT; 0 = none
    steps: int = 0
    batch_size: int = 64  # scenes per step (per process)
    lr: float = 1e-3  # peak AdamW learning rate (warm-up train.warmup, then cosine)
    eval_every: int = 500  # steps between held-out accuracy measurements
    eval_scenes: int = 400  # held-out scenes (a seed no training step uses)
    # objects per scene: 1 = one object, labelled by its colour, shape and size (three softmax
    # heads); N > 1 = 1 to N objects, labelled multi-hot with every colour, shape, size and bound
    # pair ("red circle", "large circle") the scene shows (one multi-label head)
    max_objects: int = 1
    # label every image patch (colour, shape and size of the object drawn over most of it, or
    # background; three heads on the patch tokens) instead of the scene, on scenes of 1 to
    # max_objects objects: the synthetic world's region labels, as a detector's for VL-BERT
    dense: bool = False
    # a run's image_init.safetensors (the ViltModel the stage left): start MLM + ITM from it
    # instead of running the stage (steps must then be 0); null = none
    weights: Optional[str] = None
    # keep the dense objective during MLM + ITM (needs dense=true): every step adds this weight
    # times the patch loss of `rehearsal_scenes` freshly rendered scenes (fresh heads), so that the
    # language stage cannot erase what the patches learnt; 0 = off
    rehearsal: float = 0.0
    rehearsal_scenes: int = 32  # scenes per step (per process) of the rehearsal


@dataclass
class RegionsConfig:
    # MLM on region descriptions of freshly rendered scenes during MLM + ITM (where each object is:
    # "the red circle is near the top left.", and one relation), weighted by this; 0 = off.
    # The corpus' captions never say where an object is; these teach the student the place words
    weight: float = 0.0
    scenes: int = 32  # described scenes per step (per process): the rehearsal's scenes when it is on
    mask_prob: float = 0.15  # MLM probability of the descriptions' other tokens
    place_mask_prob: float = 0.5  # MLM probability of the place words (top, left, center, above, ...)
    vocab_scenes: int = 2000  # descriptions of this many scenes join the texts the vocabulary is fitted on
    # objects per described scene grow from 1 to image_init.max_objects over the first N steps
    # (linearly; 0 = 1 to max_objects from the first step). A student that meets crowded scenes
    # first learns the place words from the text around them, not from the image
    curriculum_steps: int = 0


@dataclass
class EvalConfig:
    max_rows: int = 512  # the held-out slice: the first N source-style rows of data.val
    batch_size: int = 64


@dataclass
class StudentPretrainConfig:
    output_dir: str = "runs/pretrain_student"  # student/, metrics.json, config.yaml, checkpoints/ go here
    seed: int = 0  # initialisation, data order, masks and ITM negatives
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    image_init: ImageInitConfig = field(default_factory=ImageInitConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


REHEARSAL_KEYS = ("rehearsal", "rehearsal_scenes")


def without_neutral_rehearsal(image_init: dict) -> dict:
    """The `image_init` section (a plain dict) without the rehearsal keys when rehearsal is off:
    what cache keys and resume signatures compare, so that adding the keys changed neither."""
    if image_init.get("rehearsal"):
        return image_init
    return {k: v for k, v in image_init.items() if k not in REHEARSAL_KEYS}


def without_neutral(section: dict, key: str, neutral: object) -> dict:
    """`section` (a plain dict) without `key` when it holds `neutral`, the behaviour before the key
    existed (model.patch_positions "zeros", regions.curriculum_steps 0): what cache keys and
    resume signatures compare, so that adding the key changed neither."""
    if section.get(key, neutral) != neutral:
        return section
    return {k: v for k, v in section.items() if k != key}


def load_student_config(config_path: Optional[PathLike] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """StudentPretrainConfig <- recipe (default: the shipped one) <- dotted overrides; read-only."""
    return load_config(StudentPretrainConfig, default_recipe() if config_path is None else config_path, overrides)
