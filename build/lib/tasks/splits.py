"""Low-shot and domain-shift splits (docs/method.md, "Protocols"), as id lists.

Every order comes from a hash of (seed, uid), never from Python's random state or set order,
so the same seed and data give the same ids on every machine.

Low-shot: one fixed order per seed and the first round(fraction * n) items of it, so a
smaller fraction is always a prefix (nested). The order is stratified: within each label the
items are ranked by hash, and item of rank r in a label of size n_c gets key r / n_c; sorting
by key interleaves the labels in proportion, so every prefix holds each label's share within
rounding, and the first items (key 0) are one per label: every label is present as soon as
the budget allows.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

from clip_td.base.io import InputError, write_json_atomic


def hash_key(seed: int, uid: Any) -> int:
    """A 64-bit integer from sha256 of (seed, uid): stable across machines and Python runs."""
    digest = hashlib.sha256(f"{seed}\x00{uid}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _uids(n: int, uids: Optional[Sequence[Any]]) -> Sequence[Any]:
    if uids is None:
        return [str(i) for i in range(n)]
    if len(uids) != n:
        raise InputError(f"expected one uid per label, got {len(uids)} uids for {n} labels")
    return uids


def _ranked_by_label(labels: Sequence[Hashable], seed: int, uids: Sequence[Any]) -> Dict[Hashable, List[int]]:
    groups: Dict[Hashable, List[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        groups[lab].append(i)
    return {lab: sorted(idx, key=lambda i: (hash_key(seed, uids[i]), i)) for lab, idx in groups.items()}


def stratified_order(labels: Sequence[Hashable], seed: int, uids: Optional[Sequence[Any]] = None) -> List[int]:
    """All indices in the seed's stratified order (see the module docstring)."""
    uids = _uids(len(labels), uids)
    keyed = []
    for members in _ranked_by_label(labels, seed, uids).values():
        n_c = len(members)
        keyed.extend(((r / n_c, hash_key(seed, uids[i]), i) for r, i in enumerate(members)))
    return [i for _, _, i in sorted(keyed)]


def lowshot_indices(labels: Sequence[Hashable], fraction: float, seed: int, uids: Optional[Sequence[Any]] = None) -> List[int]:
    """Sorted indices of a stratified `fraction` of the items; nested in fraction for one seed."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction {fraction} is outside (0, 1]")
    n_keep = int(math.floor(fraction * len(labels) + 0.5))
    if n_keep == 0:
        raise InputError(f"fraction {fraction} of {len(labels)} items selects nothing (empty result)")
    return sorted(stratified_order(labels, seed, uids)[:n_keep])


def kshot_indices(labels: Sequence[Hashable], k: int, seed: int, uids: Optional[Sequence[Any]] = None) -> List[int]:
    """Sorted indices of min(k, n_c) items per label (hash order; nested in k for one seed)."""
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if not labels:
        raise InputError("k-shot split of an empty split (empty result)")
    ranked = _ranked_by_label(labels, seed, _uids(len(labels), uids))
    return sorted(i for members in ranked.values() for i in members[:k])


def prior_shift_split(records: Sequence[Dict[str, Any]], test_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """VQA-CP style: group records by (question_type, multiple_choice_answer) and give each whole
    group to train or test, per question type, to the side further below its target size.
    Each question type's answers then never appear on both sides, so answer priors differ.
    Returns sorted (train indices, test indices)."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test fraction {test_fraction} is outside (0, 1)")
    by_type: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        by_type[r["question_type"]][r["multiple_choice_answer"]].append(i)
    train: List[int] = []
    test: List[int] = []
    for qt in sorted(by_type):
        groups = by_type[qt]
        n_qt = sum(len(g) for g in groups.values())
        n_test = n_train = 0
        for ans in sorted(groups, key=lambda a: (hash_key(seed, f"{qt}\x00{a}"), a)):
            members = groups[ans]
            if test_fraction * n_qt - n_test > (1 - test_fraction) * n_qt - n_train:
                test.extend(members)
                n_test += len(members)
            else:
                train.extend(members)
                n_train += len(members)
    if not train or not test:
        raise InputError("prior-shift split left one side empty; use more data or another test fraction")
    return sorted(train), sorted(test)


def group_shift_split(groups: Sequence[Hashable], holdout_fraction: float, seed: int) -> Tuple[List[int], List[int], List[str]]:
    """Hold out whole groups (in hash order) until at least `holdout_fraction` of the items are
    held out; at least one group on each side. Returns (train idx, test idx, held-out groups)."""
    if not 0 < holdout_fraction < 1:
        raise InputError(f"holdout fraction {holdout_fraction} is outside (0, 1)")
    members: Dict[str, List[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[str(g)].append(i)
    if len(members) < 2:
        raise InputError(f"group shift needs at least 2 groups, found {len(members)}")
    order = sorted(members, key=lambda g: (hash_key(seed, g), g))
    held: List[str] = []
    n_held = 0
    for g in order[:-1]:  # keep the last group for training, so neither side is empty
        if n_held >= holdout_fraction * len(groups):
            break
        held.append(g)
        n_held += len(members[g])
    held_set = set(held)
    train = [i for i, g in enumerate(groups) if str(g) not in held_set]
    test = [i for i, g in enumerate(groups) if str(g) in held_set]
    return train, test, sorted(held)


# ----------------------------------------------------------------------------- command line


def _task(args: Any) -> Any:
    from tasks import get_task

    paths = {}
    for item in args.path:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--path {item!r}: expected KEY=VALUE")
        paths[key] = value
    return get_task(getattr(args, "task", "vqa"), paths=paths or None)


def _write_ids(out: Path, name: str, ds: Any, idx: List[int], params: Dict[str, Any], label_key: str) -> Path:
    labels = ds[label_key]
    record = {**params, "counts": {"selected": len(idx), "total": len(ds), "labels": len({labels[i] for i in idx})},
              "ids": [ds[i]["uid"] for i in idx], "indices": idx}
    write_json_atomic(out / name, record)
    return out / name


def _run_lowshot(args: Any, out: Path) -> List[Path]:
    task = _task(args)
    ds = task.load(args.root, args.split)
    labels, uids = ds[task.label_key], ds["uid"]
    written = []
    for seed in args.seeds:
        for f in args.fractions:
            idx = lowshot_indices(labels, f, seed, uids)
            params = {"kind": "lowshot", "task": args.task, "split": args.split, "fraction": f, "seed": seed}
            written.append(_write_ids(out, f"lowshot_{args.task}_{args.split}_f{f:g}_s{seed}.json", ds, idx, params, task.label_key))
    return written


def _run_kshot(args: Any, out: Path) -> List[Path]:
    task = _task(args)
    ds = task.load(args.root, args.split)
    written = []
    for seed in args.seeds:
        for k in args.k:
            idx = kshot_indices(ds[task.label_key], k, seed, ds["uid"])
            params = {"kind": "kshot", "task": args.task, "split": args.split, "k": k, "seed": seed}
            written.append(_write_ids(out, f"kshot_{args.task}_{args.split}_k{k}_s{seed}.json", ds, idx, params, task.label_key))
    return written


def _run_group_shift(args: Any, out: Path) -> List[Path]:
    task = _task(args)
    ds = task.load(args.root, args.split)
    if args.key not in ds.column_names:
        raise InputError(f"--key {args.key!r} is not a {args.task} column; expected one of {', '.join(ds.column_names)}")
    train, test, held = group_shift_split(ds[args.key], args.holdout_fraction, args.seed)
    uids = ds["uid"]
    record = {"kind": "group_shift", "task": args.task, "split": args.split, "key": args.key,
              "holdout_fraction": args.holdout_fraction, "seed": args.seed, "heldout_groups": held,
              "counts": {"train": len(train), "test": len(test), "groups": len(set(ds[args.key]))},
              "train_ids": [uids[i] for i in train], "test_ids": [uids[i] for i in test]}
    path = out / f"group_shift_{args.task}_{args.split}_{args.key}_s{args.seed}.json"
    write_json_atomic(path, record)
    return [path]


def _read_vqa_pool(args: Any) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Dict[str, Any]]:
    """Pooled (questions, annotations, header) of the VQA splits; questions get `coco_split`."""
    from clip_td.base.io import read_json

    task = _task(args)
    questions, annotations, header = [], [], {}
    for split in args.splits:
        files = task.files(args.root, split)
        q, a = read_json(files["questions"]), read_json(files["annotations"])
        for path, obj, key in ((files["questions"], q, "questions"), (files["annotations"], a, "annotations")):
            if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
                raise InputError(f"{path}: expected a JSON object with a {key!r} list")
        subtype = q.get("data_subtype") or task.paths.split_names.get(split, split)
        header = {k: v for k, v in q.items() if k not in ("questions", "data_subtype")}
        questions += [{**x, "coco_split": x.get("coco_split", subtype)} for x in q["questions"]]
        for i, ann in enumerate(a["annotations"]):
            if not isinstance(ann, dict) or "question_type" not in ann or "multiple_choice_answer" not in ann:
                raise InputError(f"{files['annotations']}: annotations[{i}]: expected question_type and multiple_choice_answer")
        annotations += a["annotations"]
    return questions, annotations, header


def run_prior_shift(args: Any, out: Path) -> List[Path]:
    """Pool VQA splits, re-split by (question type, answer), write new questions/annotations
    files `<name>_train` / `<name>_test` (load them with paths image_root=<the source root>)
    and an id list with the parameters and counts."""
    questions, annotations, header = _read_vqa_pool(args)
    q_by_id = {q["question_id"]: q for q in questions}
    train, test = prior_shift_split(annotations, args.test_fraction, args.seed)
    written = []
    for side, idx in (("train", train), ("test", test)):
        name = f"{args.name}_{side}"
        anns = [annotations[i] for i in idx]
        qs = [q_by_id[a["question_id"]] for a in anns]
        q_path = out / f"v2_OpenEnded_mscoco_{name}_questions.json"
        a_path = out / f"v2_mscoco_{name}_annotations.json"
        write_json_atomic(q_path, {**header, "data_subtype": name, "questions": qs})
        write_json_atomic(a_path, {**header, "data_subtype": name, "annotations": anns})
        written += [q_path, a_path]
    record = {"kind": "prior_shift", "task": "vqa", "source_splits": list(args.splits), "test_fraction": args.test_fraction,
              "seed": args.seed, "counts": {"train": len(train), "test": len(test)},
              "train_ids": [str(annotations[i]["question_id"]) for i in train],
              "test_ids": [str(annotations[i]["question_id"]) for i in test]}
    path = out / f"prior_shift_{args.name}_s{args.seed}.json"
    write_json_atomic(path, record)
    return written + [path]


def run_cli(args: Any) -> int:
    """`clip-td split ...`: write the requested id lists under --out and print their paths."""
    import json

    out = Path(args.out)
    runners = {"lowshot": _run_lowshot, "kshot": _run_kshot, "group-shift": _run_group_shift,
               "prior-shift": run_prior_shift}
    written = runners[args.split_command](args, out)
    print(json.dumps({"written": [str(p) for p in written]}, indent=2))
    return 0
