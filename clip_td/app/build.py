"""Everything `finetune.py` builds before `prepare`: data (synthetic world or a root), the
low-shot training subset, the student tokenizer, the FinetuneModel, the frozen teacher and its
cache, and the DataLoaders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf, read_write
from torch.utils.data import DataLoader

from clip_td.app.batches import Collator, TaskDataset, photometric_augment, student_transform
from clip_td.app.finetune_model import FinetuneModel
from clip_td.base.io import InputError, PathLike
from clip_td.lib.distill import METHODS, MethodConfig, resolve_method
from clip_td.lib.students import add_lora

DEFAULT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ViLT's normalisation


@dataclass
class Built:
    task: Any  # tasks.Task, set up on the training rows
    method: MethodConfig  # the resolved method settings (preset applied)
    train_set: TaskDataset
    eval_sets: Dict[str, TaskDataset]
    eval_rows: Dict[str, Any]  # split -> datasets.Dataset (full eval split, row order = predictions order)
    model: FinetuneModel
    collator: Collator
    vocab_size: int
    num_outputs: int
    num_processes: int
    num_workers: int = 0
    teacher: Any = None  # FrozenTeacher, kept outside prepare
    teacher_fn: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = field(default=None, repr=False)
    teacher_trust: Optional[Dict[str, Any]] = None  # the trust gate's figures and decision (metrics.json)
    handover: Any = None  # method.handover: clip_td.lib.trust.StudentHandover (the trainer feeds it)
    holdout_set: Optional[TaskDataset] = None  # train.holdout: the held-out training rows (early stopping)
    holdout_rows: Any = None  # their datasets.Dataset (row order = predictions order)
    label_free_set: Optional[TaskDataset] = None  # method.label_free: the training split's unlabelled rows

    def loader(self, ds: TaskDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collator,
                          num_workers=self.num_workers)

    def teacher_outputs(self, batch: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return None if self.teacher_fn is None else self.teacher_fn(batch)

    def decode_predictions(self, preds: List[Any]) -> List[Any]:
        """Class indices -> what task.write_predictions takes (answer strings, ints, pairs)."""
        return self.task.decode(preds)


def with_method(cfg: DictConfig, method: MethodConfig) -> DictConfig:
    """`cfg` with its `method` section replaced by the resolved settings (read-only): what a
    preset sets (`method.name=clip_td_label_free` -> `method.answer_sets`, ...) reaches every
    reader of `cfg.method`, the tasks' `setup` included, as it reaches the distiller."""
    merged = OmegaConf.merge(cfg, {"method": asdict(method)})
    OmegaConf.set_readonly(merged, True)
    return merged


def check_settings(cfg: DictConfig) -> MethodConfig:
    """The resolved method; an unknown registry name or a bad fraction is one message naming the key."""
    method = resolve_method(cfg.method, seed=cfg.seed)
    if not 0.0 < cfg.train.fraction <= 1.0:
        raise InputError(f"train.fraction={cfg.train.fraction}; expected a number in (0, 1]")
    if cfg.train.holdout and cfg.train.eval_every <= 0:
        raise InputError(f"train.holdout={cfg.train.holdout} needs train.eval_every > 0 (how often the held-out "
                         f"rows are scored)")
    if cfg.train.patience and not cfg.train.holdout:
        raise InputError(f"train.patience={cfg.train.patience} needs train.holdout > 0: early stopping reads held-out "
                         f"training rows, never the val splits")
    if cfg.train.min_steps < 0 or (cfg.train.min_steps and not cfg.train.patience):
        raise InputError(f"train.min_steps={cfg.train.min_steps}: expected 0, or a step count with train.patience > 0 "
                         "(it delays early stopping)")
    if cfg.train.patience < 0:
        raise InputError(f"train.patience={cfg.train.patience}; expected an integer >= 0")
    return method


HOLDOUT_BY = ("row", "image")


def split_holdout(task: Any, ds: Any, train_idx: List[int], share: float, seed: int, by: str = "row") -> tuple:
    """(training indices, held-out indices) of the low-shot rows `train_idx`: a stratified `share`
    of them (by the task's label, fixed per seed, drawn independently of the low-shot subset) is
    held out for early stopping; ([...], []) when share is 0. `by="image"` draws the share over the
    rows' images instead (`ds["image"]`; each image stratified by its first row's label) and holds
    out every low-shot row of a drawn image, so no held-out image is trained on."""
    if share == 0:
        return train_idx, []
    if not 0.0 < share < 1.0:
        raise InputError(f"train.holdout={share}; expected a share in [0, 1)")
    if by not in HOLDOUT_BY:
        raise InputError(f"train.holdout_by={by!r}; expected one of: {', '.join(HOLDOUT_BY)}")
    from tasks.splits import lowshot_indices

    column = ds[task.label_key]
    if by == "image":
        images = ds["image"]
        groups: Dict[Any, List[int]] = {}
        for k, i in enumerate(train_idx):
            groups.setdefault(images[i], []).append(k)
        members = list(groups.values())
        labels = [column[train_idx[g[0]]] for g in members]
    else:
        members = [[k] for k in range(len(train_idx))]
        labels = [column[i] for i in train_idx]
    try:
        picked = {k for g in lowshot_indices(labels, share, seed + 7919) for k in members[g]}  # another stream than the low-shot draw
    except InputError:
        picked = set()
    if not picked or len(picked) == len(train_idx):
        raise InputError(f"train.holdout={share} of the {len(train_idx)} training rows leaves "
                         f"{len(picked)} held out and {len(train_idx) - len(picked)} to train on; "
                         f"both need at least one row (raise train.fraction or change train.holdout)")
    return ([i for k, i in enumerate(train_idx) if k not in picked],
            [i for k, i in enumerate(train_idx) if k in picked])


def label_free_indices(n_rows: int, train_idx: List[int], holdout_idx: List[int], method: MethodConfig,
                       cache: bool) -> List[int]:
    """Rows of the training split the label-free term reads (`method.label_free` > 0): every row
    that is neither a labelled training row nor held out, plus the labelled rows themselves when
    `method.label_free_augment` shows the student augmented copies. [] when the term is off."""
    if not method.label_free or method.alpha == 0:
        return []
    if method.label_free < 0:
        raise InputError(f"method.label_free={method.label_free}; expected a weight >= 0")
    if not cache:
        raise InputError("method.label_free needs teacher.cache=true: the unlabelled rows' teacher features are "
                         "read from the cache of the whole training split")
    check_label_free_answers(method)
    held, labelled = set(holdout_idx), set(train_idx)
    rows = [i for i in range(n_rows) if i not in held and (i not in labelled or method.label_free_augment)]
    if not rows:
        raise InputError(f"method.label_free: train.fraction leaves no unlabelled rows of the {n_rows} in the training "
                         f"split; set method.label_free_augment=true to use augmented copies of the training images")
    return rows


def check_label_free_answers(method: MethodConfig, task: Any = None) -> None:
    """`method.label_free_answers` needs the label-free term, a task whose unlabelled rows it can
    read (single-sequence, or `Task.label_free_choices`: VCR's Q->A stage);
    `method.label_free_rationales` needs it too, and a task with a second teacher stage
    (`Task.label_free_rationales`: VCR with method.rationales)."""
    if not method.label_free_features and not method.label_free_answers:
        raise InputError("method.label_free_features=false leaves the label-free term nothing to distil; set "
                         "method.label_free_answers=true (the answer term alone) or keep the features")
    if not method.label_free_answers:
        if method.label_free_rationales:
            raise InputError("method.label_free_rationales=true needs method.label_free_answers=true (it extends "
                             "the label-free answer term to the QA->R stage)")
        return
    if not method.label_free:
        raise InputError("method.label_free_answers=true needs method.label_free > 0 (the unlabelled rows it reads)")
    multi = task is not None and getattr(task, "sequences_per_instance", 1) > 1
    if multi and not getattr(task, "label_free_choices", False):
        raise InputError(f"method.label_free_answers=true: task {task.name!r} reads each candidate as a sequence "
                         f"of its own and does not say which of them an unlabelled row can show "
                         f"(Task.label_free_choices); use it with vqa, snli_ve or vcr")
    if method.label_free_rationales and task is not None:
        if not getattr(task, "label_free_rationales", False):
            if METHODS.get(method.name)(MethodConfig()).label_free_rationales:
                return  # the preset sets it for every task and VCR alone reads it; set by hand elsewhere it is a mistake
            raise InputError(f"method.label_free_rationales=true: task {task.name!r} has no second stage to read "
                             f"with the teacher's answer; it is for vcr")
        if int(getattr(task, "teacher_stages", 1)) < 2:
            raise InputError("method.label_free_rationales=true needs method.rationales=true (the teacher scores "
                             "the QA->R stage)")


def resolve_student(cfg: DictConfig, accelerator: Any) -> None:
    """`student.pretrained=default` (the schema default) -> the folder of the default pretrained
    student (pretrain_student.py's shipped recipe on the synthetic world, trained once and cached),
    written into `cfg` so config.yaml names the folder that was loaded. The default pretrained
    student is a ViLT: with `student.name=dual_stream` "default" means from scratch (there is no
    dual-stream pretraining recipe). The default student's recipe hash goes into
    `cfg.student.default_recipe`, so config.yaml says which default was loaded. Then
    `train.lr=null` -> PRETRAINED_LR for a pretrained student, SCRATCH_LR from scratch, also
    written into `cfg`."""
    from pretrain.student.default_student import DEFAULT, ensure_default_student, recipe_hash

    from clip_td.app.schema import default_lr

    if cfg.student.pretrained == DEFAULT:
        path = recipe = None
        if cfg.student.name == "vilt":
            with accelerator.main_process_first():  # one process trains it, the others then load it
                path, recipe = str(ensure_default_student()), recipe_hash()
        with read_write(cfg):
            cfg.student.pretrained, cfg.student.default_recipe = path, recipe
    if cfg.train.lr is None:
        with read_write(cfg):
            cfg.train.lr = default_lr(cfg.student.pretrained)


def data_root(cfg: DictConfig, accelerator: Any) -> Path:
    """The folder holding vqa/ snli_ve/ vcr/: data.root, or the synthetic world (built once)."""
    if cfg.data.root is not None:
        root = Path(cfg.data.root)
        if not (root / cfg.task.name).is_dir():
            raise InputError(f"data.root={cfg.data.root!r}: no {cfg.task.name}/ folder in it")
        return root
    from tasks.synthetic import ensure_world

    with accelerator.main_process_first():
        return Path(ensure_world(size=cfg.data.size, seed=cfg.data.world_seed, image_size=cfg.data.image_size))


def lowshot_subset(task: Any, ds: Any, fraction: float, seed: int) -> List[int]:
    """Stratified, nested low-shot indices of the training split (all rows at fraction 1)."""
    if fraction >= 1.0:
        return list(range(len(ds)))
    from tasks.splits import lowshot_indices

    try:
        idx = list(lowshot_indices(list(ds[task.label_key]), fraction, seed))
    except InputError:
        idx = []  # the split layer refuses an empty selection; say which key caused it
    if not idx:
        raise InputError(
            f"train.fraction={fraction}: the low-shot split of {task.name} {len(ds)} training rows is empty "
            f"(seed {seed}); use a larger fraction"
        )
    return idx


def eval_splits(cfg: DictConfig, task: Any, root: Path) -> List[str]:
    found = set(task.splits_found(root))
    splits = [s for s in cfg.eval.splits if s in found]
    if not splits:
        raise InputError(f"eval.splits={list(cfg.eval.splits)}: none found under {root} (found: {sorted(found)})")
    return splits


def build_student(cfg: DictConfig, vocab_size: int, image_size: int) -> torch.nn.Module:
    from clip_td.lib.students import create_student

    student = create_student(cfg.student.name, cfg.student, vocab_size=vocab_size, image_size=image_size)
    lora = cfg.student.lora
    if lora.enabled:
        student = add_lora(student, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    return student


def _size_field(size: Any, key: str) -> Any:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def image_settings(cfg: DictConfig) -> tuple:
    """(side, mean, std) of the student's input: the checkpoint's processor, else the data's size."""
    mean, std = DEFAULT_MEAN_STD
    size = cfg.student.image_size or cfg.data.image_size
    if cfg.student.pretrained:
        from transformers import AutoImageProcessor

        try:
            proc = AutoImageProcessor.from_pretrained(cfg.student.pretrained)
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
            if not cfg.student.image_size:
                s = proc.size  # an int, a dict or (transformers 5) a SizeDict
                size = int(s) if isinstance(s, int) else int(_size_field(s, "shortest_edge") or _size_field(s, "height"))
        except (OSError, ValueError):
            pass  # no image processor saved: ViLT defaults
    return int(size), mean, std


def build(cfg: DictConfig, accelerator: Any) -> Built:
    """Data, tokenizer, model and teacher for one run (every process calls this)."""
    from tasks import get_task

    from clip_td.app.teacher_setup import build_teacher_side
    from clip_td.lib.tokenizer import student_tokenizer

    method = check_settings(cfg)
    resolve_student(cfg, accelerator)
    task = get_task(cfg.task.name)
    root = data_root(cfg, accelerator)
    task_root = root / cfg.task.name
    full_train = task.load(task_root, cfg.data.train_split)
    train_idx = lowshot_subset(task, full_train, cfg.train.fraction, cfg.seed)
    train_idx, holdout_idx = split_holdout(task, full_train, train_idx, cfg.train.holdout, cfg.seed, cfg.train.holdout_by)
    train_rows = full_train.select(train_idx)
    eval_rows = {s: task.load(task_root, s) for s in eval_splits(cfg, task, task_root)}

    with accelerator.main_process_first():  # state saved beside the run (reused on resume)
        task.setup(train_rows, with_method(cfg, method), state_dir=cfg.output_dir, save=accelerator.is_main_process)
        tokenizer = student_tokenizer(cfg.student.pretrained, cfg.output_dir, task.corpus_texts(train_rows),
                                      vocab_size=cfg.student.vocab_size)
    side, mean, std = image_settings(cfg)
    torch.manual_seed(cfg.seed)  # same initial weights on every process and every run of a seed
    student = build_student(cfg, len(tokenizer), side)
    head = task.build_head(student.hidden_size)
    check_label_free_answers(method, task)
    free_idx = label_free_indices(len(full_train), train_idx, holdout_idx, method, bool(cfg.teacher.cache))
    teacher_side = build_teacher_side(cfg, method, accelerator, task, full_train, train_idx, student, free_idx)
    if cfg.train.consistency < 0:
        raise InputError(f"config key train.consistency: expected a weight >= 0 (0 = off), got {cfg.train.consistency!r}")
    model = FinetuneModel(task, student, head, teacher_side.distiller, consistency=cfg.train.consistency)

    transform = student_transform(side, mean, std)
    augment = photometric_augment(cfg.data.augment_policy)  # checks the key even where nothing is augmented
    free_augment = (augment if cfg.data.free_augment_policy is None
                    else photometric_augment(cfg.data.free_augment_policy, key="data.free_augment_policy"))
    consistency_augment = (photometric_augment(cfg.data.consistency_policy, key="data.consistency_policy")
                           if cfg.train.consistency else None)  # checked where the term is on
    train_set = TaskDataset(task, train_rows, transform, source_index=train_idx,
                            teacher_transform=teacher_side.image_transform, teacher_texts=teacher_side.live_texts,
                            teacher_extras=teacher_side.distiller is not None,
                            augment=augment if cfg.data.augment else None,
                            consistency_augment=consistency_augment)
    eval_sets = {s: TaskDataset(task, ds, transform) for s, ds in eval_rows.items()}
    holdout_rows = full_train.select(holdout_idx) if holdout_idx else None
    free_set = None
    if free_idx:
        free_set = TaskDataset(task, full_train.select(free_idx), transform, source_index=free_idx, label_free=True,
                               augment=free_augment if method.label_free_augment else None,
                               free_answers=bool(method.label_free_answers), teacher_extras=True,
                               free_answer=teacher_side.free_answer)
    return Built(
        task=task, method=method, train_set=train_set, eval_sets=eval_sets, eval_rows=eval_rows, model=model,
        collator=Collator(tokenizer, cfg.student.max_text_len), vocab_size=len(tokenizer),
        num_outputs=task.num_outputs, num_processes=accelerator.num_processes, num_workers=cfg.data.num_workers,
        teacher=teacher_side.teacher, teacher_fn=teacher_side.outputs, teacher_trust=teacher_side.trust,
        handover=teacher_side.handover, holdout_rows=holdout_rows,
        holdout_set=None if holdout_rows is None else TaskDataset(task, holdout_rows, transform),
        label_free_set=free_set,
    )


def load_for_inference(run_dir: PathLike) -> Dict[str, Any]:
    """The fine-tuned student of a finished run, without the teacher or the distiller.

    Reads `<run_dir>/config.yaml`, the tokenizer and answer vocabulary saved beside the run and
    `<run_dir>/model/model.safetensors` (adapters + head with LoRA, over the pretrained base).
    Returns {"model": FinetuneModel (eval mode), "collator", "transform", "task" (set up), "cfg"}.
    """
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from clip_td.lib.tokenizer import student_tokenizer

    from tasks import get_task

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = get_task(cfg.task.name)
    task.load_state(run_dir, cfg)
    tokenizer = student_tokenizer(cfg.student.pretrained, run_dir, [])
    side, mean, std = image_settings(cfg)
    torch.manual_seed(cfg.seed)  # a from-scratch base under LoRA adapters is re-created, not saved
    student = build_student(cfg, len(tokenizer), side)
    head = task.build_head(student.hidden_size)
    model = FinetuneModel(task, student, head)
    state = load_file(str(run_dir / "model" / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (not cfg.student.lora.enabled and missing):
        raise InputError(f"{run_dir / 'model'}: weights do not fit the run's config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return {"model": model.eval(), "collator": Collator(tokenizer, cfg.student.max_text_len),
            "transform": student_transform(side, mean, std), "task": task, "cfg": cfg}
