"""VCR in its official files: <split>.jsonl + vcr1images/<movie>/<name>.jpg and .json metadata."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from clip_td.base.io import InputError, write_text_atomic

from tasks.base import TASKS, ImageChecker, PathLike, Problems, Task, make_paths, read_source, row_mean, rows_to_dataset
from tasks.base import splits_from_template, write_jsonl_subset
from tasks.vcr.metrics import evaluate_files
from tasks.vcr.text import bad_references, render_tokens

FIELDS = ("annot_id", "movie", "objects", "img_fn", "metadata_fn", "question", "answer_choices", "rationale_choices")
LABEL_FIELDS = ("answer_label", "rationale_label")
N_CHOICES = 4


@dataclasses.dataclass
class VcrPaths:
    # jsonl file name under root; {split} is the file split name (after `split_names`)
    file: str = "{split}.jsonl"
    # folder under image_root that img_fn and metadata_fn are relative to
    image_dir: str = "vcr1images"
    # folder holding image_dir; None = the data root
    image_root: Optional[str] = None
    # splits whose file has no labels (official VCR test); their labels load as -1
    unlabeled_splits: List[str] = dataclasses.field(default_factory=lambda: ["test"])
    # split name -> file split name
    split_names: Dict[str, str] = dataclasses.field(default_factory=dict)


def _features() -> Any:
    import datasets

    s, i = datasets.Value("string"), datasets.Value("int64")
    return datasets.Features(
        {
            "uid": s, "image": s, "text": s, "annot_id": s, "movie": s,
            "answers": datasets.Sequence(s), "rationales": datasets.Sequence(s),
            "answer_label": i, "rationale_label": i,
            "objects": datasets.Sequence(s),
            "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
        }
    )


@TASKS.register("vcr")
class VcrTask(Task):
    name = "vcr"
    method_keys = ("method.rationales", "method.label_free_rationales")  # read by this task alone
    label_key = "answer_label"
    metric_names = ("q2a", "qa2r", "q2ar")
    primary_metric = "q2ar"
    sequences_per_instance = 2 * N_CHOICES  # 4 Q->A then 4 QA->R sequences

    def __init__(self, paths: Any = None) -> None:
        self.paths: VcrPaths = make_paths(VcrPaths, paths)

    def file(self, root: PathLike, split: str) -> Path:
        return Path(root).resolve() / self.paths.file.format(split=self.paths.split_names.get(split, split))

    def splits_found(self, root: PathLike) -> List[str]:
        return splits_from_template(root, self.paths.file)

    def _image_root(self, root: Path) -> Path:
        base = Path(self.paths.image_root).resolve() if self.paths.image_root else root
        return base / self.paths.image_dir

    def scan(self, root: PathLike, split: str, problems: Problems, decode_images: bool = False) -> List[Dict[str, Any]]:
        path = self.file(root, split)
        if not path.is_file():
            problems.add(f"{path}: file not found")
            return []
        labeled = split not in self.paths.unlabeled_splits
        ctx = {"images": self._image_root(Path(root).resolve()), "check_image": ImageChecker(decode_images),
               "meta": {}, "seen": set(), "labeled": labeled}
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    row = self._row(f"{path}:{lineno}", line, ctx, problems)
                    if row is not None:
                        rows.append(row)
        if not ctx["seen"]:
            problems.add(f"{path}: empty split (no instances)")
        self.images_checked = ctx["check_image"].count
        return rows

    def _row(self, where: str, line: str, ctx: Dict[str, Any], problems: Problems) -> Optional[Dict[str, Any]]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(f"{where}: invalid JSON line ({e.msg})")
            return None
        fields = FIELDS + (LABEL_FIELDS if ctx["labeled"] else ())
        miss = [k for k in fields if not isinstance(obj, dict) or k not in obj]
        if miss:
            problems.add(f"{where}: missing field(s) {', '.join(miss)}")
            return None
        aid = str(obj["annot_id"])
        if aid in ctx["seen"]:
            problems.add(f"{where}: duplicate annot_id {aid}")
            return None
        ctx["seen"].add(aid)
        n_bad = len(problems)
        self._check_text(where, obj, problems)
        labels = self._labels(where, obj, ctx["labeled"], problems)
        image = ctx["images"] / str(obj["img_fn"])
        bad = ctx["check_image"](image)
        if bad:
            problems.add(f"{where}: {image}: {bad}")
        boxes = self._boxes(where, ctx["images"] / str(obj["metadata_fn"]), len(obj["objects"]), ctx["meta"], problems)
        if len(problems) > n_bad or boxes is None or labels is None:
            return None
        objects = obj["objects"]
        return {
            "uid": aid, "image": str(image), "text": render_tokens(obj["question"], objects), "annot_id": aid,
            "movie": str(obj["movie"]),
            "answers": [render_tokens(c, objects) for c in obj["answer_choices"]],
            "rationales": [render_tokens(c, objects) for c in obj["rationale_choices"]],
            "answer_label": labels[0], "rationale_label": labels[1], "objects": list(objects), "boxes": boxes,
        }

    @staticmethod
    def _check_text(where: str, obj: Dict[str, Any], problems: Problems) -> None:
        objects = obj["objects"]
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            problems.add(f"{where}: objects: expected a list of class names")
            return
        for key in ("answer_choices", "rationale_choices"):
            if not isinstance(obj[key], list) or len(obj[key]) != N_CHOICES:
                n = len(obj[key]) if isinstance(obj[key], list) else "not a list"
                problems.add(f"{where}: {key}: expected {N_CHOICES} choices, found {n}")
                return
        texts = [("question", obj["question"])]
        texts += [(f"{k}[{j}]", c) for k in ("answer_choices", "rationale_choices") for j, c in enumerate(obj[k])]
        for key, tokens in texts:
            for msg in bad_references(tokens, len(objects)):
                problems.add(f"{where}: {key}: {msg}")

    @staticmethod
    def _labels(where: str, obj: Dict[str, Any], labeled: bool, problems: Problems) -> Optional[Tuple[int, int]]:
        if not labeled:
            return (-1, -1)
        vals = (obj["answer_label"], obj["rationale_label"])
        for key, v in zip(LABEL_FIELDS, vals):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < N_CHOICES:
                problems.add(f"{where}: {key}: expected an integer 0-{N_CHOICES - 1}, got {v!r}")
                return None
        return vals

    @staticmethod
    def _boxes(where: str, meta_path: Path, n_objects: int, cache: Dict[Path, Any], problems: Problems) -> Optional[list]:
        if meta_path not in cache:
            try:
                with open(meta_path, encoding="utf-8") as f:
                    cache[meta_path] = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                cache[meta_path] = f"metadata not readable ({type(e).__name__})"
        meta = cache[meta_path]
        if isinstance(meta, str):
            problems.add(f"{where}: {meta_path}: {meta}")
            return None
        boxes = meta.get("boxes") if isinstance(meta, dict) else None
        if not isinstance(boxes, list) or not all(isinstance(b, list) and len(b) == 5 for b in boxes):
            problems.add(f"{where}: {meta_path}: boxes: expected a list of [x1, y1, x2, y2, score]")
            return None
        if len(boxes) != n_objects:
            problems.add(f"{where}: {meta_path}: {len(boxes)} boxes for {n_objects} objects")
            return None
        return [[float(x) for x in b] for b in boxes]

    def load(self, root: PathLike, split: str) -> Any:
        rows = self.scan(root, split, Problems(strict=True))
        source = {"task": self.name, "split": split, "n": len(rows), "annotations": str(self.file(root, split))}
        return rows_to_dataset(rows, _features(), source)

    def write_predictions(self, ds: Any, preds: Sequence[Tuple[int, int]], out_dir: PathLike, split: str) -> Dict[str, str]:
        """Predictions jsonl {annot_id, answer, rationale} in ds order; a subset gets its own annotations."""
        if len(preds) != len(ds):
            raise InputError(f"expected {len(ds)} predictions for vcr split {split!r}, got {len(preds)}")
        source = read_source(ds)
        out = Path(out_dir)
        aids = list(ds["annot_id"])
        lines = [json.dumps({"annot_id": a, "answer": int(p[0]), "rationale": int(p[1])}) for a, p in zip(aids, preds)]
        files = {"predictions": out / f"vcr_{split}_predictions.jsonl", "annotations": Path(source["annotations"])}
        write_text_atomic(files["predictions"], "\n".join(lines) + "\n")
        if len(ds) != source["n"]:
            files["annotations"] = write_jsonl_subset(source["annotations"], "annot_id", aids, out / f"vcr_{split}_subset.jsonl")
        return {k: str(v) for k, v in files.items()}

    def score_files(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, float]:
        if rule is not None:
            raise InputError(f"--rule {rule}: vcr has one scoring rule")
        return evaluate_files(files["annotations"], files["predictions"])

    # ---- fine-tuning: Q->A and QA->R as 4-way multiple choice over (image, context, choice) ----

    def build_head(self, hidden: int) -> Any:
        from tasks.heads import MultipleChoiceHead

        return MultipleChoiceHead(hidden)

    def student_texts(self, row: Dict[str, Any]) -> List[Tuple[str, Optional[str]]]:
        """Q->A pairs the question with each answer; QA->R pairs question + gold answer with each
        rationale (the standard QA->R protocol conditions on the correct answer)."""
        q = row["text"]
        gold = row["answers"][row["answer_label"]] if row.get("answer_label", -1) >= 0 else row["answers"][0]
        return [(q, a) for a in row["answers"]] + [(f"{q} {gold}", r) for r in row["rationales"]]

    label_free_choices = True  # method.label_free_answers: the unlabelled rows' Q->A stage (label_free_texts)
    label_free_rationales = True  # method.label_free_rationales: their QA->R stage with the teacher's answer

    def label_free_texts(self, row: Dict[str, Any], answers: bool = False) -> List[Tuple[str, Optional[str]]]:
        """An unlabelled row: the question alone, or with `answers` the Q->A stage's 4 sequences
        (the question with each answer: inputs, not labels). The QA->R stage follows only when the
        row carries `_free_answer`, the index of the teacher's own answer
        (`method.label_free_rationales`): the question + that answer with each rationale. The gold
        answer is never read."""
        if not answers:
            return super().label_free_texts(row)
        q = row["text"]
        pairs: List[Tuple[str, Optional[str]]] = [(q, a) for a in row["answers"]]
        chosen = int(row.get("_free_answer", -1))
        if chosen >= 0:
            pairs += [(f"{q} {row['answers'][chosen]}", r) for r in row["rationales"]]
        return pairs

    def free_rationale_candidates(self, row: Dict[str, Any], answer: int) -> List[str]:
        """The teacher's QA->R candidates of a row with `answer` in place of the gold one: the
        question + that answer + each rationale, as `teacher_texts` writes stage 1."""
        qa = f"{row['text']} {row['answers'][int(answer)]}"
        return [f"{qa} {r}" for r in row["rationales"]]

    def corpus_texts(self, ds: Any) -> List[str]:
        out: List[str] = list(ds["text"])
        for answers, rationales in zip(ds["answers"], ds["rationales"]):
            out.extend(answers)
            out.extend(rationales)
        return out

    def targets(self, row: Dict[str, Any]) -> Dict[str, Any]:
        return {"answer_label": int(row["answer_label"]), "rationale_label": int(row["rationale_label"])}

    def outputs(self, scores: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
        import torch.nn.functional as F

        choices = scores.reshape(-1, 2, N_CHOICES)  # (B, [Q->A, QA->R], 4)
        result: Dict[str, Any] = {"q2a_logits": choices[:, 0], "qa2r_logits": choices[:, 1]}
        if "answer_label" in batch:
            result["task_loss"] = row_mean(F.cross_entropy(choices[:, 0].float(), batch["answer_label"], reduction="none")
                                           + F.cross_entropy(choices[:, 1].float(), batch["rationale_label"],
                                                             reduction="none"), batch)
        return result

    def predict(self, result: Dict[str, Any]) -> Any:
        import torch

        return torch.stack([result["q2a_logits"].argmax(-1), result["qa2r_logits"].argmax(-1)], dim=-1)

    def decode(self, preds: Sequence[Any]) -> List[Any]:
        return [(int(p[0]), int(p[1])) for p in preds]

    def setup(self, train_rows: Any, settings: Any, state_dir: Optional[PathLike] = None, save: bool = False) -> None:
        """`method.rationales` (default true): the teacher also scores the QA->R stage."""
        method = getattr(settings, "method", None)
        self.teacher_stages = 2 if method is None or bool(getattr(method, "rationales", True)) else 1

    def distill_view(self, student_out: Dict[str, Any], batch: Dict[str, Any], result: Dict[str, Any]):
        """The Q->A sequence of the gold answer (question + gold answer, as the teacher reads it)
        with the Q->A logits over the 4 answers; with two teacher stages also, right after it, the
        QA->R sequence of the gold rationale (question + gold answer + gold rationale) with the
        QA->R logits over the 4 rationales: (B * teacher_stages) rows, instance-major."""
        import torch

        n = batch["pixel_values"].shape[0]
        base = torch.arange(n, device=batch["input_ids"].device) * self.sequences_per_instance
        rows = [base + batch["answer_label"]]
        logits = [result["q2a_logits"]]
        if self.teacher_stages == 2:
            rows.append(base + N_CHOICES + batch["rationale_label"])
            logits.append(result["qa2r_logits"])
        rows_t = torch.stack(rows, dim=1).flatten()  # (B * stages,): instance 0's stages, then instance 1's, ...
        view = {k: v[rows_t] for k, v in student_out.items()}
        view_batch = dict(batch)
        for key in ("input_ids", "attention_mask", "offsets"):
            view_batch[key] = batch[key][rows_t]
        return view, view_batch, torch.stack(logits, dim=1).flatten(0, 1)

    def teacher_texts(self, row: Dict[str, Any]) -> tuple:
        """Stage 0 (Q->A): task text = question + right answer; candidates = question + each
        answer; gold = answer_label. Stage 1 (QA->R, row["_stage"] == 1): task text = question +
        right answer + right rationale; candidates = question + right answer + each rationale;
        gold = rationale_label."""
        q, answers, gold = row["text"], row["answers"], int(row["answer_label"])
        if row.get("_stage", 0) == 1:
            qa = f"{q} {answers[gold] if gold >= 0 else answers[0]}"
            r_gold = int(row["rationale_label"])
            rationales = row["rationales"]
            return f"{qa} {rationales[r_gold] if r_gold >= 0 else rationales[0]}", [f"{qa} {r}" for r in rationales], r_gold
        return f"{q} {answers[gold]}", [f"{q} {a}" for a in answers], gold

    def trust_group(self, row: Dict[str, Any]) -> Optional[str]:
        """With two teacher stages each has its own trust test: "q2a" and "qa2r"."""
        return ("q2a", "qa2r")[row.get("_stage", 0)] if self.teacher_stages == 2 else None
