"""Everything `finetune.py` builds before `prepare`: data (synthetic world or a root), the
low-shot training subset, the student tokenizer, the FinetuneModel, the frozen teacher and its
cache, and the DataLoaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from clip_td.app.batches import Collator, TaskDataset, corpus_texts, student_transform
from clip_td.app.schema import TASK_NAMES
from clip_td.base.io import InputError, PathLike
from clip_td.app.finetune_model import FinetuneModel, add_lora

NUM_SNLI_CLASSES = 3
DEFAULT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # ViLT's normalisation


@dataclass
class Built:
    task: Any  # tasks.Task
    train_set: TaskDataset
    eval_sets: Dict[str, TaskDataset]
    eval_rows: Dict[str, Any]  # split -> datasets.Dataset (full eval split, row order = predictions order)
    model: FinetuneModel
    collator: Collator
    vocab_size: int
    num_answers: int
    num_processes: int
    num_workers: int = 0
    answer_vocab: Any = None
    teacher: Any = None  # FrozenTeacher, kept outside prepare
    teacher_fn: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = field(default=None, repr=False)

    def loader(self, ds: TaskDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collator,
                          num_workers=self.num_workers)

    def teacher_outputs(self, batch: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return None if self.teacher_fn is None else self.teacher_fn(batch)

    def decode_predictions(self, preds: List[Any]) -> List[Any]:
        """Class indices -> what task.write_predictions takes (answer strings, ints, pairs)."""
        if self.task.name == "vqa":
            return [self.answer_vocab.decode(int(p)) for p in preds]
        if self.task.name == "vcr":
            return [(int(p[0]), int(p[1])) for p in preds]
        return [int(p) for p in preds]


def check_names(cfg: DictConfig) -> None:
    """Unknown task / method: one message naming the key and the allowed values."""
    if cfg.task.name not in TASK_NAMES:
        raise InputError(f"task.name={cfg.task.name!r}; expected one of: {', '.join(TASK_NAMES)}")
    from clip_td.lib.distill import METHODS

    from clip_td.lib.selection import SELECTORS
    from clip_td.lib.weighting import SCHEDULES, WEIGHTINGS

    for key, value, registry in (("method.name", cfg.method.name, METHODS),
                                 ("method.selection", cfg.method.selection, SELECTORS),
                                 ("method.weighting", cfg.method.weighting, WEIGHTINGS),
                                 ("method.schedule", cfg.method.schedule, SCHEDULES)):
        if value not in registry:
            raise InputError(f"{key}={value!r}; expected one of: {', '.join(registry.names())}")
    if not 0.0 < cfg.train.fraction <= 1.0:
        raise InputError(f"train.fraction={cfg.train.fraction}; expected a number in (0, 1]")


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


def answer_vocab(cfg: DictConfig, train_rows: Any, accelerator: Any) -> Any:
    """VQA answer vocabulary of the low-shot training rows, saved beside the run (reused on resume)."""
    from tasks.vqa.answers import AnswerVocab

    path = Path(cfg.output_dir) / "answers.json"
    with accelerator.main_process_first():
        if path.is_file():
            return AnswerVocab.load(path)
        vocab = AnswerVocab.build(train_rows, min_count=cfg.data.answer_min_count)
        if accelerator.is_main_process:
            vocab.save(path)
        return vocab


def build_student(cfg: DictConfig, vocab_size: int, image_size: int) -> torch.nn.Module:
    from clip_td.lib.students import create_student

    student = create_student(cfg.student.name, cfg.student, vocab_size=vocab_size, image_size=image_size)
    lora = cfg.student.lora
    if lora.enabled:
        student = add_lora(student, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    return student


def build_head(task: str, hidden: int, num_answers: int) -> torch.nn.Module:
    import tasks.heads as heads

    if task == "vqa":
        return heads.VQAHead(hidden, num_answers)
    if task == "snli_ve":
        return heads.ClassifierHead(hidden, NUM_SNLI_CLASSES)
    return heads.MultipleChoiceHead(hidden)


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

    check_names(cfg)
    root = data_root(cfg, accelerator)
    task = get_task(cfg.task.name)
    task_root = root / cfg.task.name
    full_train = task.load(task_root, cfg.data.train_split)
    train_idx = lowshot_subset(task, full_train, cfg.train.fraction, cfg.seed)
    train_rows = full_train.select(train_idx)
    eval_rows = {s: task.load(task_root, s) for s in eval_splits(cfg, task, task_root)}

    vocab = answer_vocab(cfg, train_rows, accelerator) if task.name == "vqa" else None
    with accelerator.main_process_first():
        tokenizer = student_tokenizer(cfg.student.pretrained, cfg.output_dir, corpus_texts(task.name, train_rows),
                                      vocab_size=cfg.student.vocab_size)
    side, mean, std = image_settings(cfg)
    torch.manual_seed(cfg.seed)  # same initial weights on every process and every run of a seed
    student = build_student(cfg, len(tokenizer), side)
    num_answers = len(vocab) if vocab is not None else 0
    head = build_head(task.name, student.hidden_size, num_answers)
    teacher_side = build_teacher_side(cfg, accelerator, root, task, full_train, train_idx, student, vocab)
    model = FinetuneModel(task.name, student, head, teacher_side.distiller)

    transform = student_transform(side, mean, std)
    answer_sets = None
    if vocab is not None and teacher_side.distiller is not None and cfg.method.answer_sets:
        from clip_td.app.task_texts import vqa_answer_sets

        answer_sets = vqa_answer_sets(train_rows, vocab)
    train_set = TaskDataset(task.name, train_rows, transform, source_index=train_idx, answer_vocab=vocab,
                            teacher_transform=teacher_side.image_transform, teacher_texts=teacher_side.texts_fn,
                            answer_sets=answer_sets)
    eval_sets = {s: TaskDataset(task.name, ds, transform, answer_vocab=vocab) for s, ds in eval_rows.items()}
    return Built(
        task=task, train_set=train_set, eval_sets=eval_sets, eval_rows=eval_rows, model=model,
        collator=Collator(tokenizer, cfg.student.max_text_len), vocab_size=len(tokenizer), num_answers=num_answers,
        num_processes=accelerator.num_processes, num_workers=cfg.data.num_workers, answer_vocab=vocab,
        teacher=teacher_side.teacher, teacher_fn=teacher_side.outputs,
    )


def load_for_inference(run_dir: PathLike) -> Dict[str, Any]:
    """The fine-tuned student of a finished run, without the teacher or the distiller.

    Reads `<run_dir>/config.yaml`, the tokenizer and answer vocabulary saved beside the run and
    `<run_dir>/model/model.safetensors` (adapters + head with LoRA, over the pretrained base).
    Returns {"model": FinetuneModel (eval mode), "collator", "transform", "answer_vocab", "cfg"}.
    """
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from clip_td.lib.tokenizer import student_tokenizer

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    vocab = None
    if cfg.task.name == "vqa":
        from tasks.vqa.answers import AnswerVocab

        vocab = AnswerVocab.load(run_dir / "answers.json")
    tokenizer = student_tokenizer(cfg.student.pretrained, run_dir, [])
    side, mean, std = image_settings(cfg)
    torch.manual_seed(cfg.seed)  # a from-scratch base under LoRA adapters is re-created, not saved
    student = build_student(cfg, len(tokenizer), side)
    head = build_head(cfg.task.name, student.hidden_size, len(vocab) if vocab is not None else 0)
    model = FinetuneModel(cfg.task.name, student, head)
    state = load_file(str(run_dir / "model" / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (not cfg.student.lora.enabled and missing):
        raise InputError(f"{run_dir / 'model'}: weights do not fit the run's config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return {"model": model.eval(), "collator": Collator(tokenizer, cfg.student.max_text_len),
            "transform": student_transform(side, mean, std), "answer_vocab": vocab, "cfg": cfg}
