"""`FinetuneConfig`: the schema of `finetune.py` (defaults <- YAML <- dotted overrides).

The defaults are the out-of-the-box run: synthetic VQA, 10 % of the training split, `clip_td`
with the default teacher, sized to finish on 2 CPU cores in a few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from clip_td.lib.distill import MethodConfig  # the method section is the distiller's own settings


@dataclass
class TaskConfig:
    name: str = "vqa"  # a registered task (tasks.TASKS): vqa | snli_ve | vcr | any task registered by user code


@dataclass
class DataConfig:
    root: Optional[str] = None  # folder holding vqa/ snli_ve/ vcr/ in the official formats; null = synthetic world
    size: str = "medium"  # synthetic world size (small | medium | large) when root is null (the default teacher's world)
    image_size: int = 64  # synthetic world image side in pixels when root is null
    world_seed: int = 0  # synthetic world generator seed when root is null
    train_split: str = "train"  # split the model trains on (subset by train.fraction)
    answer_min_count: int = 1  # VQA: an answer enters the vocabulary if it is the top answer this often
    num_workers: int = 0  # DataLoader worker processes
    # photometric augmentation (brightness, contrast, saturation, a small hue shift, blur; the
    # label-free term's) of the student's copy of each labelled training image; the teacher reads
    # the clean image, evaluation never augments
    augment: bool = False
    # the augmentation of data.augment and of method.label_free_augment's copies: photometric (the
    # above) | photometric_noise (the above, then Gaussian pixel noise on half of the images) |
    # photometric_safe (brightness, contrast, saturation within 0.9-1.1, no hue change, the blur:
    # every colour of the synthetic palette keeps its name) | photometric_augmix (photometric, then
    # AugMix over its pixel-level operations: posterize, solarize, equalize, sharpness and the like)
    # | photometric_randconv (photometric, then a random convolution mixed with the image: RandConv)
    augment_policy: str = "photometric"
    # the augmentation of method.label_free_augment's copies alone, which the student reads with the
    # teacher's targets on the clean image, never a gold label: one of data.augment_policy's values;
    # null: data.augment_policy (for instance photometric_safe for the gold-labelled images and the
    # wide photometric jitter for the teacher-labelled copies)
    free_augment_policy: Optional[str] = None
    # the augmented view of train.consistency (one of data.augment_policy's values), drawn from the
    # clean image of each labelled training row
    consistency_policy: str = "photometric_augmix"


@dataclass
class LoraConfig:
    enabled: bool = False  # train LoRA adapters (peft) instead of the full student
    r: int = 8  # adapter rank
    alpha: int = 16  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: List[str] = field(default_factory=lambda: ["query", "value"])  # module-name suffixes to adapt


@dataclass
class StudentConfig:
    name: str = "vilt"  # STUDENTS registry name: vilt | dual_stream
    # checkpoint folder or hub id (e.g. dandelin/vilt-b32-mlm); "default" = the default pretrained student
    # (pretrain_student.py's recipe on the synthetic world, trained once and cached); null = from config
    pretrained: Optional[str] = "default"
    # filled by the run (a given value is overwritten): the recipe hash of the default pretrained
    # student it loaded (with pretrained=default), so config.yaml says which default it was
    default_recipe: Optional[str] = None
    hidden_size: int = 128  # transformer width (from-config students)
    num_layers: int = 2  # transformer depth (vilt; dual_stream: text layers) (from-config students)
    vision_layers: int = 2  # dual_stream: ViT image-encoder layers (from-config students)
    num_heads: int = 4  # attention heads (from-config students)
    intermediate_size: int = 256  # MLP width (from-config students)
    patch_size: int = 8  # image patch side in pixels (from-config students)
    # vilt, from config: the patch position embeddings start at zeros (transformers' ViltEmbeddings,
    # made for a checkpoint to overwrite) or sincos (a 2-D sine-cosine code, as the default student's recipe)
    patch_positions: str = "zeros"
    image_size: Optional[int] = None  # student input side; null = the checkpoint's, else the data's image size
    max_text_len: int = 40  # text tokens per sequence (longer ones are truncated)
    vocab_size: int = 2000  # WordPiece vocabulary built for the synthetic world (no checkpoint)
    dropout: float = 0.0  # hidden / attention dropout (from-config students)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TeacherConfig:
    # open_clip name, "hf-hub:<id>", "local-dir:<dir>" or "recipe:<pretraining recipe>" (trained once
    # into the cache, e.g. recipe:lit_scene_place); null = the default teacher
    model: Optional[str] = None
    pretrained: Optional[str] = None  # open_clip pretrained tag or weights file (with an open_clip model name)
    cache: bool = True  # precompute teacher outputs once per (data, split, teacher) and reuse them
    # patch tokens (token-term targets, relevance map): auto (the tower's own) | tokens (ViT: ln_post + proj
    # per output token) | value (the last attention's value path per token, as MaskCLIP; a ResNet's auto)
    dense: str = "auto"
    dense_scale: int = 1  # ResNet: the dense pass reads the image this many times larger (a finer patch grid)
    cache_dir: Optional[str] = None  # where the cache lives; null = <cache root>/teacher_cache


#: `train.lr=null` with a pretrained student (its image and language features are there to keep;
#: at 1e-3 the default student's in-domain VQA was 10 points lower and its shape features were lost)
PRETRAINED_LR = 3e-4
#: `train.lr=null` with a from-scratch student (`student.pretrained=null`)
SCRATCH_LR = 1e-3


def default_lr(pretrained: Optional[str]) -> float:
    """What `train.lr=null` resolves to for a student loaded from `pretrained` (None: from scratch)."""
    return PRETRAINED_LR if pretrained is not None else SCRATCH_LR


@dataclass
class TrainConfig:
    fraction: float = 0.1  # low-shot fraction of the training split (1.0 = all), stratified by label
    epochs: int = 8  # passes over the (low-shot) training split when max_steps is unset
    max_steps: Optional[int] = None  # stop after this many optimizer steps; null = epochs
    batch_size: int = 32  # per-process batch size
    # peak AdamW learning rate; null = PRETRAINED_LR for a pretrained student, SCRATCH_LR from scratch
    lr: Optional[float] = None
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: float = 0.1  # linear warm-up, as a fraction of the total steps
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    resume: Optional[str] = None  # checkpoint folder or "latest" (newest under <output_dir>/checkpoints)
    checkpoint_every: int = 0  # save a checkpoint every this many optimizer steps (0 = only at the end)
    eval_every: int = 0  # evaluate (and keep the best checkpoint) every this many steps (0 = only at the end)
    # share of the low-shot training rows kept out of training (stratified by label, fixed per seed) to
    # stop on: every eval_every steps the student is scored on them, the best weights are kept, and the
    # run ends with those (the val splits never choose anything); 0 = no held-out rows
    holdout: float = 0.0
    # what the held-out share is drawn over: "row" (each row on its own) or "image" (every row of a
    # drawn image goes with it, so the held-out rows show images the student never trains on, as the
    # val splits do; VCR asks two questions of each image and VQA several: with "row" a held-out
    # row's image is mostly trained on through its sibling questions)
    holdout_by: str = "row"
    patience: int = 0  # with holdout: stop after this many evaluations without a better held-out score (0 = never)
    # with patience: no early stop before this step; the evaluations up to it keep the best weights
    # but do not count towards patience (a noisy early peak cannot end the run); 0 = count from the start
    min_steps: int = 0
    keep_checkpoints: int = 2  # periodic checkpoints kept on disk (oldest removed first)
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    # weight of the consistency term (AugMix's, with one augmented view): the Jensen-Shannon divergence
    # between the student's answer distributions on a labelled image and on its data.consistency_policy
    # copy, same texts, no label read (0 = off; one more student pass on the labelled batch when on)
    consistency: float = 0.0
    log_every: int = 10  # log losses to the trackers every this many optimizer steps


@dataclass
class EvalConfig:
    batch_size: int = 64  # per-process eval batch size
    splits: List[str] = field(default_factory=lambda: ["val", "val_shift"])  # evaluated when present
    best_split: str = "val"  # split whose primary metric (the task's `primary_metric`, VCR: q2ar) picks the best checkpoint


@dataclass
class FinetuneConfig:
    output_dir: str = "runs/finetune"  # metrics.json, config.yaml, predictions/, checkpoints/ go here
    seed: int = 0  # seeds the low-shot split, initialisation and data order
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
