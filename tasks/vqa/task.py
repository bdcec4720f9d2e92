"""VQA v2 in its official files: questions JSON + annotations JSON + COCO images."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from clip_td.base.io import InputError, read_json, write_json_atomic

from tasks.base import TASKS, ImageChecker, PathLike, Problems, Task, make_paths, read_source, row_mean, rows_to_dataset
from tasks.base import splits_from_template
from tasks.vqa.answers import AnswerVocab, answer_set_mask, vqa_answer_sets
from tasks.vqa.metrics import evaluate_files

N_ANSWERS = 10
QUESTION_FIELDS = ("question_id", "image_id", "question")
ANNOTATION_FIELDS = ("question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers")


@dataclasses.dataclass
class VQAPaths:
    # questions file name under root; {split} is the file split name (after `split_names`)
    questions: str = "v2_OpenEnded_mscoco_{split}_questions.json"
    # annotations file name under root
    annotations: str = "v2_mscoco_{split}_annotations.json"
    # image folder under image_root; {subtype} = the questions file's data_subtype (or a
    # question's own `coco_split`, as VQA-CP files have), else the split. Real COCO: "{subtype}"
    image_dir: str = "images/{subtype}"
    # image file name, as COCO names them
    image_name: str = "COCO_{subtype}_{image_id:012d}.jpg"
    # folder holding image_dir; None = the data root
    image_root: Optional[str] = None
    # split name -> file split name, e.g. {"train": "train2014", "val": "val2014"}
    split_names: Dict[str, str] = dataclasses.field(default_factory=dict)


def _features() -> Any:
    import datasets

    return datasets.Features(
        {
            "uid": datasets.Value("string"),
            "image": datasets.Value("string"),
            "text": datasets.Value("string"),
            "question_id": datasets.Value("int64"),
            "question_type": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "multiple_choice_answer": datasets.Value("string"),
        }
    )


def _read_list(path: Path, key: str, problems: Problems) -> Optional[tuple]:
    """(top-level object, list under key) or None after reporting the problem."""
    try:
        obj = read_json(path)
    except InputError as e:
        problems.add(str(e))
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        problems.add(f"{path}: expected a JSON object with a {key!r} list")
        return None
    return obj, obj[key]


def _missing(item: Any, fields: Sequence[str]) -> List[str]:
    if not isinstance(item, dict):
        return list(fields)
    return [f for f in fields if f not in item]


def _check_answers(ann: Dict[str, Any], where: str, problems: Problems) -> Optional[List[str]]:
    answers = ann["answers"]
    if not isinstance(answers, list) or len(answers) != N_ANSWERS:
        n = len(answers) if isinstance(answers, list) else "not a list"
        problems.add(f"{where}.answers: expected {N_ANSWERS} answers, found {n}")
        return None
    out = []
    for k, a in enumerate(answers):
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            problems.add(f"{where}.answers[{k}]: expected an object with a string 'answer'")
            return None
        out.append(a["answer"])
    return out


@TASKS.register("vqa")
class VQATask(Task):
    name = "vqa"
    method_keys = ("method.answer_sets", "method.question_candidates")  # read by this task alone
    label_key = "multiple_choice_answer"
    metric_names = ("vqa_acc",)
    answer_head = "sigmoid"  # BCE on soft scores over the answers (vqa_bce)
    run_candidates = True  # the answer vocabulary comes from the low-shot rows
    state_file = "answers.json"  # the answer vocabulary, saved beside the run

    def __init__(self, paths: Any = None) -> None:
        self.paths: VQAPaths = make_paths(VQAPaths, paths)
        self.answer_vocab: Optional[AnswerVocab] = None  # set by setup / load_state
        self.answer_sets: Optional[Dict[str, tuple]] = None  # method.answer_sets: question_type -> answer ids
        self.answer_words: List[str] = []  # the vocabulary's answers in index order (set_answer_vocab)
        self.question_candidates = False  # method.question_candidates: the teacher scores "<question> <answer>"
        self._question_lists: Dict[str, List[str]] = {}

    def files(self, root: PathLike, split: str) -> Dict[str, Path]:
        s = self.paths.split_names.get(split, split)
        root = Path(root).resolve()
        return {"questions": root / self.paths.questions.format(split=s), "annotations": root / self.paths.annotations.format(split=s)}

    def splits_found(self, root: PathLike) -> List[str]:
        return splits_from_template(root, self.paths.questions)

    def _image_path(self, root: Path, subtype: str, image_id: int) -> Path:
        image_root = Path(self.paths.image_root).resolve() if self.paths.image_root else root
        name = self.paths.image_name.format(subtype=subtype, image_id=image_id)
        return image_root / self.paths.image_dir.format(subtype=subtype) / name

    def scan(self, root: PathLike, split: str, problems: Problems, decode_images: bool = False) -> List[Dict[str, Any]]:
        files = self.files(root, split)
        qpath, apath = files["questions"], files["annotations"]
        got_q = _read_list(qpath, "questions", problems)
        got_a = _read_list(apath, "annotations", problems)
        if got_q is None or got_a is None:
            return []
        qobj, questions = got_q
        default_subtype = qobj.get("data_subtype") or self.paths.split_names.get(split, split)
        by_id: Dict[Any, Dict[str, Any]] = {}
        for i, q in enumerate(questions):
            where = f"{qpath}: questions[{i}]"
            miss = _missing(q, QUESTION_FIELDS)
            if miss:
                problems.add(f"{where}: missing field(s) {', '.join(miss)}")
            elif not isinstance(q["question_id"], int) or not isinstance(q["image_id"], int):
                problems.add(f"{where}: expected integer question_id and image_id")
            elif q["question_id"] in by_id:
                problems.add(f"{where}: duplicate question_id {q['question_id']}")
            else:
                by_id[q["question_id"]] = q
        rows, seen, check_image = [], set(), ImageChecker(decode_images)
        for i, ann in enumerate(got_a[1]):
            where = f"{apath}: annotations[{i}]"
            miss = _missing(ann, ANNOTATION_FIELDS)
            if miss:
                problems.add(f"{where}: missing field(s) {', '.join(miss)}")
                continue
            qid = ann["question_id"]
            answers = _check_answers(ann, where, problems)
            if qid not in by_id:
                problems.add(f"{where}: question_id {qid} is not in {qpath}")
                continue
            if qid in seen:
                problems.add(f"{where}: duplicate question_id {qid}")
                continue
            seen.add(qid)
            q = by_id[qid]
            if ann["image_id"] != q["image_id"]:
                problems.add(f"{where}: image_id {ann['image_id']} differs from the question's {q['image_id']}")
                continue
            image = self._image_path(Path(root).resolve(), q.get("coco_split", default_subtype), q["image_id"])
            bad = check_image(image)
            if bad:
                problems.add(f"{where}: {image}: {bad} (question_id {qid})")
                continue
            if answers is None:
                continue
            rows.append(
                {
                    "uid": str(qid),
                    "image": str(image),
                    "text": q["question"],
                    "question_id": qid,
                    "question_type": ann["question_type"],
                    "answer_type": ann["answer_type"],
                    "answers": answers,
                    "multiple_choice_answer": ann["multiple_choice_answer"],
                }
            )
        for qid in by_id:
            if qid not in seen:
                problems.add(f"{qpath}: question_id {qid} has no annotation in {apath}")
        if not questions:
            problems.add(f"{qpath}: empty split (no questions)")
        self.images_checked = check_image.count
        return rows

    def load(self, root: PathLike, split: str) -> Any:
        rows = self.scan(root, split, Problems(strict=True))
        files = self.files(root, split)
        source = {"task": self.name, "split": split, "n": len(rows), **{k: str(v) for k, v in files.items()}}
        return rows_to_dataset(rows, _features(), source)

    def write_predictions(self, ds: Any, preds: Sequence[str], out_dir: PathLike, split: str) -> Dict[str, str]:
        """Results JSON [{question_id, answer}] in ds order; returns the files it is scored against.
        When ds is a subset of its split, matching questions/annotations files are written too."""
        if len(preds) != len(ds):
            raise InputError(f"expected {len(ds)} predictions for vqa split {split!r}, got {len(preds)}")
        out = Path(out_dir)
        source = read_source(ds)
        qids = list(ds["question_id"])
        results = [{"question_id": int(q), "answer": str(p)} for q, p in zip(qids, preds)]
        files = {"predictions": out / f"v2_OpenEnded_mscoco_{split}_clip-td_results.json"}
        write_json_atomic(files["predictions"], results)
        if len(ds) == source["n"]:
            files.update(questions=Path(source["questions"]), annotations=Path(source["annotations"]))
        else:
            files.update(self._write_subset(source, set(qids), out, split))
        return {k: str(v) for k, v in files.items()}

    @staticmethod
    def _write_subset(source: Mapping[str, Any], keep: set, out: Path, split: str) -> Dict[str, Path]:
        q = read_json(source["questions"])
        a = read_json(source["annotations"])
        q["questions"] = [x for x in q["questions"] if x["question_id"] in keep]
        a["annotations"] = [x for x in a["annotations"] if x["question_id"] in keep]
        files = {
            "questions": out / f"v2_OpenEnded_mscoco_{split}_subset_questions.json",
            "annotations": out / f"v2_mscoco_{split}_subset_annotations.json",
        }
        write_json_atomic(files["questions"], q)
        write_json_atomic(files["annotations"], a)
        return files

    def official_scores(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, Any]:
        """{"overall", "perQuestionType", "perAnswerType"} as the official tool reports them."""
        kwargs = {} if rule is None else {"rule": rule}
        return evaluate_files(files["questions"], files["annotations"], files["predictions"], **kwargs)

    def score_files(self, files: Mapping[str, str], rule: Optional[str] = None) -> Dict[str, float]:
        return {"vqa_acc": self.official_scores(files, rule)["overall"]}

    # ---- fine-tuning: multi-label answer classification over the training answers ----------

    def setup(self, train_rows: Any, settings: Any, state_dir: Optional[PathLike] = None, save: bool = False) -> None:
        """Answer vocabulary of the low-shot training rows (`data.answer_min_count`), reused from
        `state_dir` when saved there (resume); with `method.answer_sets`, the answers each
        question type takes in those rows."""
        path = Path(state_dir) / self.state_file if state_dir is not None else None
        if path is not None and path.is_file():
            vocab = AnswerVocab.load(path)
        else:
            vocab = AnswerVocab.build(train_rows, min_count=settings.data.answer_min_count)
            if path is not None and save:
                vocab.save(path)
        self.set_answer_vocab(vocab)
        if settings.method.answer_sets:
            self.answer_sets = vqa_answer_sets(train_rows, vocab)
        self.question_candidates = bool(settings.method.question_candidates)

    def load_state(self, state_dir: PathLike, settings: Any = None) -> None:
        self.set_answer_vocab(AnswerVocab.load(Path(state_dir) / self.state_file))

    def set_answer_vocab(self, vocab: AnswerVocab) -> None:
        """Use `vocab` as the answer vocabulary (setup and load_state call this)."""
        self.answer_vocab = vocab
        # one list object shared by every question: the teacher encodes it once per run
        self.answer_words = [vocab.decode(i) for i in range(len(vocab))]
        self._question_lists = {}

    @property
    def num_outputs(self) -> int:
        return len(self.answer_vocab)

    def targets(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """VQA's soft scores over the vocabulary, (A,)."""
        target = torch.zeros(len(self.answer_vocab))
        for idx, score in self.answer_vocab.soft_scores(row["answers"]).items():
            target[idx] = score
        return {"targets": target}

    def outputs(self, scores: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = {"logits": scores}
        if "targets" in batch:
            result["task_loss"] = vqa_bce(scores, batch["targets"], batch.get("label_weight"))
        return result

    def decode(self, preds: Sequence[Any]) -> List[Any]:
        return [self.answer_vocab.decode(int(p)) for p in preds]

    def teacher_texts(self, row: Dict[str, Any]) -> tuple:
        """Task text = question + gold answer; candidates = the answer vocabulary (the same list
        for every question), or with `method.question_candidates` "<question> <answer>" for every
        answer of the vocabulary (one list object per question, in vocabulary order, so the
        teacher's scores depend on what is asked); gold = the vocabulary index of the answer (-1 if
        not in it: the confidence weight then trusts the teacher with nothing)."""
        answer = row["multiple_choice_answer"]
        gold = self.answer_vocab.encode(answer)
        candidates = self.answer_words
        if self.question_candidates:
            question = str(row["text"])
            candidates = self._question_lists.get(question)
            if candidates is None:
                candidates = self._question_lists[question] = [f"{question} {a}" for a in self.answer_words]
        return f"{row['text']} {answer}", candidates, -1 if gold is None else int(gold)

    def teacher_extras(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """With `method.answer_sets`: `cand_mask` (A,) bool, the answers of the row's question type
        (the teacher's distribution is restricted to them, as zero-shot CLIP VQA does)."""
        if self.answer_sets is None:
            return {}
        return {"cand_mask": answer_set_mask(self.answer_sets, row["question_type"], len(self.answer_vocab))}

    def trust_group(self, row: Dict[str, Any]) -> Optional[str]:
        """The trust gate tests the teacher per question type (it may know colours, not counts)."""
        return str(row["question_type"])


def vqa_bce(logits: torch.Tensor, targets: torch.Tensor, label_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Binary cross-entropy on VQA soft scores, summed over answers (the usual VQA recipe).

    logits, targets: (B, A) -> scalar. label_weight (B,): the rows whose targets count (0 = held
    back, `method.student_check`); the mean is then over their total weight.
    """
    if label_weight is None:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / logits.shape[0]
    per_row = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").sum(-1)
    return row_mean(per_row, {"label_weight": label_weight})
