"""SNLI-VE in its official files: snli_ve_<split>.jsonl + Flickr30k images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from clip_td.base.io import InputError, write_text_atomic

from tasks.base import TASKS, ImageChecker, PathLike, Problems, Task, make_paths, read_source, rows_to_dataset
from tasks.base import splits_from_template, write_jsonl_subset
from tasks.snli_ve.metrics import LABELS, evaluate_files

FIELDS = ("Flikr30kID", "sentence2", "gold_label", "pairID")
# The teacher reads the hypothesis under one template per label, in LABELS order (entailment:
# as stated; neutral: hedged; contradiction: negated); its image-text similarity of each reading
# gives its distribution over the 3 labels.
TEACHER_TEMPLATES = ("{h}", "perhaps {h}", "it is not true that {h}")


@dataclasses.dataclass
class SnliVePaths:
    # jsonl file name under root; {split} is the file split name (after `split_names`)
    file: str = "snli_ve_{split}.jsonl"
    # image folder under image_root holding <Flikr30kID>; real data: "flickr30k-images"
    image_dir: str = "images"
    # folder holding image_dir; None = the data root
    image_root: Optional[str] = None
    # split name -> file split name, e.g. {"val": "dev"}
    split_names: Dict[str, str] = dataclasses.field(default_factory=dict)


def _features() -> Any:
    import datasets

    return datasets.Features(
        {
            "uid": datasets.Value("string"),
            "image": datasets.Value("string"),
            "text": datasets.Value("string"),
            "pairID": datasets.Value("string"),
            "label": datasets.Value("int64"),
            "label_name": datasets.Value("string"),
        }
    )


@TASKS.register("snli_ve")
class SnliVeTask(Task):
    name = "snli_ve"
    label_key = "label"
    similarity_probe = True  # the task text is the hypothesis alone
    method_keys = ("method.similarity_probe", "method.probe_contrast")  # read by this task alone
    metric_names = ("accuracy",)
    num_classes = len(LABELS)
    label_names = LABELS  # the meaning of label k is the same on every row
    # the two labels image-text similarity can tell apart (what neutral adds is not in the image)
    contrast_labels = ("entailment", "contradiction")
    lowshot_target_gain = 5.0

    def __init__(self, paths: Any = None) -> None:
        self.paths: SnliVePaths = make_paths(SnliVePaths, paths)
        self.contrast_mask: Optional[Any] = None  # method.probe_contrast: (K,) bool, the contrast labels

    def setup(self, train_rows: Any, settings: Any, state_dir: Optional[PathLike] = None, save: bool = False) -> None:
        """With `method.probe_contrast`, the teacher's candidates are the contrast labels only."""
        self.contrast_mask = None
        if getattr(getattr(settings, "method", None), "probe_contrast", False):
            import torch

            self.contrast_mask = torch.tensor([name in self.contrast_labels for name in self.label_names])

    def teacher_extras(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """With `method.probe_contrast`: `cand_mask` (K,) bool, entailment and contradiction (the same
        on every row: it reads no label)."""
        return {} if self.contrast_mask is None else {"cand_mask": self.contrast_mask.clone()}

    def file(self, root: PathLike, split: str) -> Path:
        return Path(root).resolve() / self.paths.file.format(split=self.paths.split_names.get(split, split))

    def splits_found(self, root: PathLike) -> List[str]:
        return splits_from_template(root, self.paths.file)

    def _image_path(self, root: Path, image_id: str) -> Path:
        image_root = Path(self.paths.image_root).resolve() if self.paths.image_root else root
        name = image_id if Path(image_id).suffix else image_id + ".jpg"
        return image_root / self.paths.image_dir / name

    def scan(self, root: PathLike, split: str, problems: Problems, decode_images: bool = False) -> List[Dict[str, Any]]:
        path = self.file(root, split)
        if not path.is_file():
            problems.add(f"{path}: file not found")
            return []
        rows: List[Dict[str, Any]] = []
        seen: set = set()
        check_image = ImageChecker(decode_images)
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    row = self._row(path, lineno, line, Path(root).resolve(), seen, check_image, problems)
                    if row is not None:
                        rows.append(row)
        if not seen:
            problems.add(f"{path}: empty split (no instances)")
        self.images_checked = check_image.count
        return rows

    def _row(self, path, lineno, line, root, seen, check_image, problems) -> Optional[Dict[str, Any]]:
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(f"{where}: invalid JSON line ({e.msg})")
            return None
        miss = [k for k in FIELDS if not isinstance(obj, dict) or k not in obj]
        if miss:
            problems.add(f"{where}: missing field(s) {', '.join(miss)}")
            return None
        pid = str(obj["pairID"])
        if pid in seen:
            problems.add(f"{where}: duplicate pairID {pid}")
            return None
        seen.add(pid)
        if obj["gold_label"] not in LABELS:
            problems.add(f"{where}: unknown gold_label {obj['gold_label']!r}; expected one of {', '.join(LABELS)}")
            return None
        image = self._image_path(root, str(obj["Flikr30kID"]))
        bad = check_image(image)
        if bad:
            problems.add(f"{where}: {image}: {bad}")
            return None
        label = obj["gold_label"]
        return {"uid": pid, "image": str(image), "text": obj["sentence2"], "pairID": pid,
                "label": LABELS.index(label), "label_name": label}

    def load(self, root: PathLike, split: str) -> Any:
        rows = self.scan(root, split, Problems(strict=True))
        source = {"task": self.name, "split": split, "n": len(rows), "annotations": str(self.file(root, split))}
        return rows_to_dataset(rows, _features(), source)

    def write_predictions(self, ds: Any, preds: Sequence[int], out_dir: PathLike, split: str) -> Dict[str, str]:
        """Predictions jsonl {pairID, label name} in ds order; a subset ds gets its own annotations."""
        if len(preds) != len(ds):
            raise InputError(f"expected {len(ds)} predictions for snli_ve split {split!r}, got {len(preds)}")
        source = read_source(ds)
        out = Path(out_dir)
        pids = list(ds["pairID"])
        lines = [json.dumps({"pairID": pid, "label": LABELS[int(p)]}) for pid, p in zip(pids, preds)]
        files = {"predictions": out / f"snli_ve_{split}_predictions.jsonl", "annotations": Path(source["annotations"])}
        write_text_atomic(files["predictions"], "\n".join(lines) + "\n")
        if len(ds) != source["n"]:
            files["annotations"] = write_jsonl_subset(source["annotations"], "pairID", pids, out / f"snli_ve_{split}_subset.jsonl")
        return {k: str(v) for k, v in files.items()}

    def score_files(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, float]:
        if rule is not None:
            raise InputError(f"--rule {rule}: snli_ve has one scoring rule")
        return evaluate_files(files["annotations"], files["predictions"])

    def teacher_texts(self, row: Dict[str, Any]) -> tuple:
        """Task text = the hypothesis; candidates = the hypothesis under TEACHER_TEMPLATES; gold = label."""
        hyp = row["text"]
        return hyp, [t.format(h=hyp) for t in TEACHER_TEMPLATES], int(row["label"])
