"""What every task shares: the TASKS registry, the Task base class, the problem collector
that lets one scanning routine serve both loaders (raise on the first problem) and
`clip-td data check` (collect every problem), and image / path-config helpers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from clip_td.base.io import InputError
from clip_td.base.registry import Registry

TASKS = Registry("task")

PathLike = Union[str, Path]
TextPair = Tuple[str, Optional[str]]  # (text, second segment or None): one student sequence


class Problems:
    """Collects user-facing problems; in strict mode the first one raises `InputError`.

    Loaders scan with `strict=True` (fail fast, one clear message); `data check` scans with
    `strict=False` and reports the whole list.
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: List[str] = []

    def add(self, msg: str) -> None:
        if self.strict:
            raise InputError(msg)
        self.items.append(msg)

    def __len__(self) -> int:
        return len(self.items)


def image_problem(path: Path, decode: bool) -> Optional[str]:
    """None if the image exists (and, with `decode`, decodes with PIL); else what is wrong."""
    if not path.is_file():
        return "image file not found"
    if not decode:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode; `verify()` misses truncated pixel data
    except Exception as e:  # PIL raises many types for bad files
        return f"image does not decode ({type(e).__name__}: {e})"
    return None


class ImageChecker:
    """Checks each distinct image once (VQA has several questions per image)."""

    def __init__(self, decode: bool) -> None:
        self.decode = decode
        self._seen: Dict[Path, Optional[str]] = {}

    def __call__(self, path: Path) -> Optional[str]:
        if path not in self._seen:
            self._seen[path] = image_problem(path, self.decode)
        return self._seen[path]

    @property
    def count(self) -> int:
        return len(self._seen)


def make_paths(cls: type, paths: Union[None, Mapping[str, Any], Any]) -> Any:
    """Build a task's path dataclass from None (defaults), an instance or a mapping of overrides."""
    if paths is None:
        return cls()
    if isinstance(paths, cls):
        return paths
    if not isinstance(paths, Mapping):
        # OmegaConf DictConfig and other mappings-with-attributes
        paths = dict(paths)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in paths:
        if key not in known:
            raise InputError(f"unknown {cls.__name__} key {key!r}; expected one of: {', '.join(sorted(known))}")
    return cls(**{k: (dict(v) if k == "split_names" else v) for k, v in paths.items()})


def attach_source(info_obj: Dict[str, Any], features: Any = None) -> Any:
    """A datasets.DatasetInfo carrying where the rows came from (survives `select`/`filter`)."""
    import datasets

    return datasets.DatasetInfo(description=json.dumps(info_obj), features=features)


def read_source(ds: Any) -> Dict[str, Any]:
    """The source record `attach_source` stored on a dataset built by a task loader."""
    try:
        return json.loads(ds.info.description)
    except (AttributeError, TypeError, ValueError):
        raise InputError("dataset has no source record; expected a dataset returned by task.load()") from None



def row_mean(per_row: Any, batch: Mapping[str, Any]) -> Any:
    """Mean of a task loss's per-row values (B,). With `batch["label_weight"]` (B,), the rows whose
    labels count (0: held back by `method.student_check`), the weighted mean over their total
    weight (0 when no row counts)."""
    weight = batch.get("label_weight")
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row.device, per_row.dtype)
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)

class Task:
    """Everything task-specific, in one object: what fine-tuning, the teacher, the sweep, the
    report and the command line ask a task (docs/internals.md, "Adding a task").

    Data: `load`, `splits_found`, `scan`, `write_predictions`, `score_files`.
    Fine-tuning: `setup` (state fitted on the training rows, e.g. VQA's answer vocabulary),
    `build_head`, `student_texts`, `corpus_texts`, `targets`, `outputs` (logits + task loss),
    `predict`, `decode`, `distill_view`. Teacher: `teacher_texts`, `teacher_extras`.

    The defaults below are those of a single-sequence classification task whose label is the
    integer column `label_key` with `num_classes` classes (SNLI-VE); a task overrides what
    differs. Instances are made per run by `tasks.get_task`, so `setup` may keep state.
    """

    name: str = ""
    label_key: str = ""  # column that stratifies low-shot splits (and the label of the default targets)
    metric_names: Sequence[str] = ()  # metrics.json names, in percent
    primary_metric: str = ""  # the metric sweeps, plots and targets rank by (default: the first)
    num_classes: int = 0  # default head width (single-sequence classification)
    sequences_per_instance: int = 1  # student sequences per instance (VCR: 8)
    lowshot_target_gain: float = 10.0  # benchmark target: points over `none` at the lowest fraction
    similarity_probe: bool = False  # the teacher's task text holds no label, so cos(image, task text) may feed method.similarity_probe
    run_candidates: bool = False  # the teacher's candidates depend on the run (set up on the low-shot rows): never stored in the split's cache
    answer_head: str = "softmax"  # how the task loss reads the head's logits: softmax (one answer) | sigmoid (VQA's soft scores)
    # config keys this task alone reads (every other task ignores them, or refuses them where they
    # would be a mistake, as VCR's method.label_free_rationales): `clip-td report` joins the rows of
    # different tasks that differ only in such keys into one assembled row for the targets
    method_keys: Tuple[str, ...] = ()

    # ---- data ------------------------------------------------------------------------------

    def load(self, root: PathLike, split: str) -> Any:
        """Rows of `split` under `root` as a datasets.Dataset (image = absolute path string)."""
        raise NotImplementedError

    def splits_found(self, root: PathLike) -> List[str]:
        """Split names whose files exist under `root` (used by data check)."""
        raise NotImplementedError

    def scan(self, root: PathLike, split: str, problems: Problems, decode_images: bool) -> List[Dict[str, Any]]:
        """Parse and validate one split; report problems to `problems`; return the good rows."""
        raise NotImplementedError

    def write_predictions(self, ds: Any, preds: Sequence[Any], out_dir: PathLike, split: str) -> Dict[str, str]:
        raise NotImplementedError

    def score_files(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, float]:
        """metric -> percent for the official-format files `write_predictions` wrote; `rule`
        picks a scoring rule where the task has several (VQA)."""
        raise NotImplementedError

    def official_scores(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, Any]:
        """What `clip-td evaluate <task>` prints: the official tool's report (default: score_files)."""
        return self.score_files(files, rule=rule)

    @property
    def primary(self) -> str:
        return self.primary_metric or self.metric_names[0]

    # ---- fine-tuning -------------------------------------------------------------------------

    def setup(self, train_rows: Any, settings: Any, state_dir: Optional[PathLike] = None, save: bool = False) -> None:
        """Fit what the task needs from the (low-shot) training rows; `settings` is the run's
        config. With `state_dir`, state saved there is reused (resume), else saved when `save`."""

    def load_state(self, state_dir: PathLike, settings: Any = None) -> None:
        """Restore what `setup` saved beside a finished run (inference without training rows)."""

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def build_head(self, hidden: int) -> Any:
        """The trainable head on the student's pooled feature (B, hidden) -> (B, num_outputs)."""
        from tasks.heads import MLPHead

        return MLPHead(hidden, self.num_outputs)

    def student_texts(self, row: Dict[str, Any]) -> List[TextPair]:
        """What the student reads for one row: `sequences_per_instance` (text, second) pairs."""
        return [(row["text"], None)]

    def label_free_text(self, row: Dict[str, Any]) -> str:
        """The student's text for an unlabelled row (`method.label_free`): the question or the
        hypothesis (`text`), which needs no annotation; never an answer."""
        return str(row["text"])

    def label_free_texts(self, row: Dict[str, Any], answers: bool = False) -> List[Tuple[str, Optional[str]]]:
        """The student's sequences for an unlabelled row: `label_free_text` alone; with `answers`
        (`method.label_free_answers`) a multiple-choice task returns one sequence per candidate its
        first stage reads without a label (VCR: the question with each answer)."""
        return [(self.label_free_text(row), None)]

    def corpus_texts(self, ds: Any) -> List[str]:
        """Every string the student reads on `ds` (a tokenizer's training corpus)."""
        return list(ds["text"])

    def targets(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """Training targets of one row: ints become (B,) long tensors, tensors are stacked."""
        return {"labels": int(row[self.label_key])}

    def outputs(self, scores: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Head scores (B * sequences_per_instance, ...) -> {"logits", "task_loss" when the batch has targets}."""
        import torch.nn.functional as F

        result: Dict[str, Any] = {"logits": scores}
        if "labels" in batch:
            result["task_loss"] = row_mean(F.cross_entropy(scores.float(), batch["labels"], reduction="none"), batch)
        return result

    def predict(self, result: Dict[str, Any]) -> Any:
        """Predicted class per instance, (B,) or (B, k)."""
        return result["logits"].argmax(-1)

    def decode(self, preds: Sequence[Any]) -> List[Any]:
        """`predict` outputs (as lists) -> what `write_predictions` takes."""
        return [int(p) for p in preds]

    def distill_view(self, student_out: Dict[str, Any], batch: Dict[str, Any],
                     result: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Any]:
        """(student outputs, batch, answer logits) with one student sequence per instance: the
        one whose text is the teacher's task text; the logits are over the teacher's candidates."""
        return student_out, batch, result["logits"]

    #: teacher rows per instance: a task whose instance has several stages, each answered by its
    #: own student sequence (VCR: Q->A and QA->R), sets this in `setup`; teacher_texts then
    #: reads the stage from row["_stage"] (0 .. teacher_stages - 1) and distill_view returns
    #: teacher_stages student rows per instance, stage-major within each instance
    teacher_stages: int = 1

    def teacher_texts(self, row: Dict[str, Any]) -> Tuple[str, List[str], int]:
        """(task text, candidate texts, index of the gold candidate or -1) for the teacher.

        The task text is the student's distilled sequence as one string (a pair joined by a
        space), so the teacher's token features align with the student's tokens by character
        span."""
        raise NotImplementedError(f"task {self.name!r} gives the teacher no texts")

    def teacher_extras(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """Extra per-row tensors the distiller reads (VQA: `cand_mask`, the allowed answers). The
        label-free answer term reads them on unlabelled rows too, so they must not depend on the
        row's label (VQA's depend on the question's type, which the question's first words give)."""
        return {}

    def trust_group(self, row: Dict[str, Any]) -> Optional[str]:
        """The group whose rows share one trust-gate test (`method.trust_gate=group`); None = the
        whole task is one group."""
        return None


def check_same_ids(predicted: Any, gold: Sequence[Any], id_name: str, predictions: PathLike,
                   annotations: PathLike, noun: str = "prediction") -> None:
    """Every predicted id is in the annotations and every annotated id has a prediction; else
    one InputError naming the file and the first offending id."""
    known = set(gold)
    for i in predicted:
        if i not in known:
            raise InputError(f"{predictions}: {id_name} {i} is not in {annotations}")
    have = set(predicted)
    for i in gold:
        if i not in have:
            raise InputError(f"{predictions}: no {noun} for {id_name} {i} of {annotations}")


def rows_to_dataset(rows: List[Dict[str, Any]], features: Any, source: Dict[str, Any]) -> Any:
    """Rows -> in-memory Arrow datasets.Dataset with fixed features and a source record."""
    import datasets

    return datasets.Dataset.from_list(rows, features=features, info=attach_source(source, features))


def check_count(ds_len: int, path: PathLike, problems: Problems) -> None:
    if ds_len == 0:
        problems.add(f"{path}: empty split (no instances)")


def splits_from_template(root: PathLike, template: str) -> List[str]:
    """Split names whose file exists under root, for a file name template with `{split}`."""
    import re

    if "{split}" not in template:
        return []
    pattern = re.compile("^" + re.escape(template).replace(re.escape("{split}"), "(.+)") + "$")
    found = []
    for p in sorted(Path(root).glob(template.replace("{split}", "*"))):
        m = pattern.match(p.relative_to(root).as_posix())
        if m and p.is_file():
            found.append(m.group(1))
    return found


def write_jsonl_subset(src: PathLike, key: str, keep: Sequence[Any], dest: Path) -> Path:
    """Copy the lines of annotation file `src` whose `key` is in `keep` to `dest` (atomically),
    so predictions on a subset of a split are scored against exactly that subset."""
    from clip_td.base.io import write_text_atomic

    wanted = {str(k) for k in keep}
    with open(src, encoding="utf-8") as f:
        subset = [ln for ln in f if ln.strip() and str(json.loads(ln)[key]) in wanted]
    write_text_atomic(dest, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in subset))
    return dest
