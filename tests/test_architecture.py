"""The layout's rules, checked on the source: the import direction between packages, no branch
on a task name outside tasks/, and a fourth task added by registration alone, trained end to
end with `clip_td` through finetune.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from test_finetune_helpers import read_metrics, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("clip_td", "tasks", "pretrain", "configs")
BUILTIN_TASKS = {"vqa", "snli_ve", "vcr"}

# package prefix -> the project packages its modules may import (their own included)
ALLOWED = {
    "clip_td.base": ("clip_td.base", "configs"),
    "clip_td.lib": ("clip_td.base", "clip_td.lib"),
    "clip_td.testing": ("clip_td.base", "clip_td.lib", "clip_td.testing"),
    "clip_td.app": ("clip_td", "tasks", "pretrain", "configs"),
    "tasks": ("clip_td.base", "tasks"),
    "pretrain": ("clip_td.base", "tasks", "pretrain", "configs"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module) of every import in the file, inside functions too."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from clip_td import app` imports clip_td.app
                yield node.lineno, f"{name}.{alias.name}"


def rule_for(mod: str) -> Tuple[str, ...]:
    for prefix in sorted(ALLOWED, key=len, reverse=True):
        if mod == prefix or mod.startswith(prefix + "."):
            return ALLOWED[prefix]
    return ("clip_td.base",)  # clip_td/__init__.py


def within(name: str, prefixes: Tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def source_files(*folders: str) -> List[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def test_import_direction_of_every_module():
    bad = []
    for path in source_files("clip_td", "tasks", "pretrain"):
        mod = module_name(path)
        allowed = rule_for(mod)
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top in PROJECT and name != "clip_td" and not within(name, allowed):
                bad.append(f"{path.relative_to(REPO)}:{line}: {mod} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_direction_check_catches_a_wrong_import(tmp_path, monkeypatch):
    """The checker itself: a library module importing the application is reported."""
    fake = REPO / "clip_td" / "lib" / "_direction_probe.py"
    assert not fake.exists()
    assert not within("clip_td.app.trainer", rule_for("clip_td.lib._direction_probe"))
    assert not within("clip_td.lib.teacher", rule_for("tasks.vqa.task"))
    assert within("clip_td.base.io", rule_for("pretrain.train"))


def task_name_branches(path: Path) -> Iterator[str]:
    """Comparisons with, membership in, and dict keys of built-in task names."""

    def is_name(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in BUILTIN_TASKS

    def holds_name(node: ast.AST) -> bool:
        return is_name(node) or (isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_name, node.elts)))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and any(holds_name(n) for n in [node.left, *node.comparators]):
            yield f"{path.relative_to(REPO)}:{node.lineno}: compares with a task name"
        if isinstance(node, ast.Dict) and any(k is not None and is_name(k) for k in node.keys):
            yield f"{path.relative_to(REPO)}:{node.lineno}: a dict keyed by task names"


def test_no_branch_on_a_task_name_outside_tasks():
    files = source_files("clip_td", "bench") + [REPO / n for n in ("finetune.py", "sweep.py", "pretrain_teacher.py")]
    found = [hit for path in files for hit in task_name_branches(path)]
    assert not found, "\n".join(found)


def test_the_branch_check_catches_a_branch(tmp_path):
    probe = REPO / "clip_td" / "_probe_branch.py"
    try:
        probe.write_text('def f(task):\n    if task == "vcr":\n        return {"vqa": 1}\n')
        assert len(list(task_name_branches(probe))) == 2
    finally:
        probe.unlink()


# ---- a fourth task, registered here and nowhere else ---------------------------------------


def _register_pair_match():
    """Two-choice image-caption matching: which of two captions describes the image?"""
    import datasets
    import torch
    import torch.nn.functional as F

    from tasks import TASKS, Task
    from tasks.base import rows_to_dataset
    from tasks.heads import MultipleChoiceHead

    if "pair_match" in TASKS:
        return

    @TASKS.register("pair_match")
    class PairMatchTask(Task):
        name = "pair_match"
        label_key = "label"
        metric_names = ("accuracy",)
        sequences_per_instance = 2

        def load(self, root, split):
            path = Path(root) / f"{split}.jsonl"
            rows = [json.loads(x) for x in path.read_text().splitlines()]
            features = datasets.Features({"uid": datasets.Value("string"), "image": datasets.Value("string"),
                                          "text": datasets.Value("string"),
                                          "captions": datasets.Sequence(datasets.Value("string")),
                                          "label": datasets.Value("int64")})
            return rows_to_dataset(rows, features, {"task": self.name, "annotations": str(path), "n": len(rows)})

        def splits_found(self, root):
            return sorted(p.stem for p in Path(root).glob("*.jsonl"))

        def build_head(self, hidden):
            return MultipleChoiceHead(hidden)

        def student_texts(self, row):
            return [(c, None) for c in row["captions"]]

        def corpus_texts(self, ds):
            return [c for caps in ds["captions"] for c in caps]

        def outputs(self, scores, batch):
            logits = scores.view(-1, 2)
            out = {"logits": logits}
            if "labels" in batch:
                out["task_loss"] = F.cross_entropy(logits.float(), batch["labels"])
            return out

        def distill_view(self, student_out, batch, result):
            rows = torch.arange(batch["pixel_values"].shape[0]) * 2 + batch["labels"]  # the gold caption
            view_batch = {**batch, **{k: batch[k][rows] for k in ("input_ids", "attention_mask", "offsets")}}
            return {k: v[rows] for k, v in student_out.items()}, view_batch, result["logits"]

        def teacher_texts(self, row):
            return row["captions"][row["label"]], list(row["captions"]), int(row["label"])

        def write_predictions(self, ds, preds, out_dir, split):
            path = Path(out_dir) / f"pair_match_{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"uid": u, "label": int(p)}) + "\n" for u, p in zip(ds["uid"], preds)))
            from tasks.base import read_source

            return {"predictions": str(path), "annotations": read_source(ds)["annotations"]}

        def score_files(self, files, rule=None):
            gold = {r["uid"]: r["label"] for r in map(json.loads, Path(files["annotations"]).read_text().splitlines())}
            pred = [json.loads(x) for x in Path(files["predictions"]).read_text().splitlines()]
            return {"accuracy": round(100.0 * sum(gold[p["uid"]] == p["label"] for p in pred) / len(pred), 2)}


def _write_pair_match(world: Path, out: Path) -> Dict[str, int]:
    """Pairs from the synthetic SNLI-VE rows: an entailed hypothesis of the image against the
    hypothesis of a different image, in a seeded random order."""
    import random

    from tasks import get_task

    counts = {}
    snli = get_task("snli_ve")
    for split in ("train", "val"):
        ds = snli.load(world / "snli_ve", split)
        ent = [r for r in ds if r["label_name"] == "entailment"]
        rng = random.Random(split)
        lines = []
        for i, r in enumerate(ent):
            other = next(o for o in ent[i + 1:] + ent[:i] if o["image"] != r["image"])
            label = rng.randrange(2)
            captions = [r["text"], other["text"]] if label == 0 else [other["text"], r["text"]]
            lines.append(json.dumps({"uid": f"{split}-{i}", "image": r["image"], "text": captions[label],
                                     "captions": captions, "label": label}))
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def test_a_fourth_task_trains_end_to_end_with_clip_td(small_world, tiny_teacher, tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    from clip_td.app.trainer import main

    _register_pair_match()
    data = tmp_path / "data"
    (data / "pair_match").mkdir(parents=True)
    counts = _write_pair_match(small_world, data / "pair_match")
    assert counts["train"] > 20 and counts["val"] > 5
    from tasks import TASKS

    out = tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "finetune" / "tiny.yaml")]
    argv += tiny_overrides(data, tiny_teacher, out, **{"task.name": "pair_match", "method.name": "clip_td",
                                                      "train.fraction": 1.0, "train.max_steps": 3})
    try:
        assert main(argv) == 0
    finally:
        TASKS.unregister("pair_match")  # later tests see the built-in tasks only
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    m = read_metrics(out)
    assert (m["task"], m["method"]) == ("pair_match", "clip_td") and list(m["eval"]) == ["val"]
    assert 0.0 <= m["eval"]["val"]["accuracy"] <= 100.0 and m["train"]["steps"] == 3
    # the teacher's cache holds the new task's rows: distillation ran on them
    caches = list((tmp_path / "teacher_cache").glob("pair_match-*"))
    assert len(caches) == 1
    preds = Path(m["files"]["val"]["predictions"]).read_text().splitlines()
    assert len(preds) == counts["val"]
