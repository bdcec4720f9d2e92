"""The synthetic world: determinism, layout and counts, style split, format rules, noise truth."""

import collections
import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_td.base.io import InputError
from tasks.synthetic import NoiseConfig, build_world, ensure_world
from tasks.synthetic import world as world_mod
from tasks.synthetic.pretrain_corpus import pair
from tasks.vqa.normalize import normalize_answer


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    start = time.perf_counter()
    summary = build_world(out, seed=0, size="small", workers=2)
    assert time.perf_counter() - start < 20
    assert summary["images"] == sum(1 for p in out.rglob("*.jpg"))
    return out


def read_tsv(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    cols = lines[0].split("\t")
    return [dict(zip(cols, line.split("\t"))) for line in lines[1:]]


def jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def flatness(path: Path) -> float:
    """Share of horizontal neighbour pairs within 1 grey level: high on the flat source style,
    low on the textured, noisy shifted style (independent of the generator's own bookkeeping)."""
    a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return float(np.mean(np.abs(np.diff(a, axis=1)) <= 1))


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    build_world(tmp_path / "again", seed=0, size="small", workers=1)  # worker count must not matter
    assert tree_hash(tmp_path / "again") == tree_hash(small)
    build_world(tmp_path / "other", seed=1, size="small", workers=2)
    assert tree_hash(tmp_path / "other") != tree_hash(small)


def test_counts_in_world_json_match_files(small):
    counts = json.loads((small / "world.json").read_text())["counts"]
    assert len(read_tsv(small / "pretrain/train.tsv")) == counts["pretrain"]["train"] == 1000
    assert len(read_tsv(small / "pretrain/val.tsv")) == counts["pretrain"]["val"] == 100
    for split in ("train", "val", "val_shift"):
        qs = json.loads((small / f"vqa/v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"]
        ann = json.loads((small / f"vqa/v2_mscoco_{split}_annotations.json").read_text())["annotations"]
        assert len(qs) == len(ann) == counts["vqa"][split]["questions"]
        assert len(list((small / "vqa/images" / split).glob("*.jpg"))) == counts["vqa"][split]["images"]
        assert len({q["image_id"] for q in qs}) == counts["vqa"][split]["images"]
        snli = jsonl(small / f"snli_ve/snli_ve_{split}.jsonl")
        assert len(snli) == counts["snli_ve"][split]["pairs"] == 3 * counts["snli_ve"][split]["images"]
        vcr = jsonl(small / f"vcr/{split}.jsonl")
        assert len(vcr) == counts["vcr"][split]["questions"]
        assert len({r["img_fn"] for r in vcr}) == counts["vcr"][split]["images"]
    assert counts["vqa"]["train"] == {"questions": 400, "images": 125}


def test_style_split_rules(small):
    for task_glob in ("vqa/images/{s}/*.jpg", "snli_ve/images/{b}*.jpg", "vcr/vcr1images/*/{s}_[0-9]*.jpg"):
        for split, base in (("train", "1"), ("val", "2"), ("val_shift", "3")):
            paths = sorted(small.glob(task_glob.format(s=split, b=base)))
            assert paths, task_glob
            values = [flatness(p) for p in paths]
            if split == "val_shift":
                assert max(values) < 0.25, (task_glob, split)
            else:
                assert min(values) > 0.35, (task_glob, split)
    # the pretrain corpus mixes both styles and its style column tells the truth
    rows = read_tsv(small / "pretrain/train.tsv")[:200]
    styles = collections.Counter(r["style"] for r in rows)
    assert 60 < styles["shift"] < 140
    for r in rows:
        assert (flatness(small / "pretrain" / r["filepath"]) < 0.3) == (r["style"] == "shift")


def test_vqa_answers(small):
    ann = json.loads((small / "vqa/v2_mscoco_train_annotations.json").read_text())["annotations"]
    qs = {q["question_id"]: q["question"] for q in
          json.loads((small / "vqa/v2_OpenEnded_mscoco_train_questions.json").read_text())["questions"]}
    yes = no = 0
    for a in ann:
        raw = [x["answer"] for x in a["answers"]]
        assert len(raw) == 10 and [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        tally = collections.Counter(raw)
        assert tally[a["multiple_choice_answer"]] == max(tally.values())
        assert list(tally.values()).count(max(tally.values())) == 1
        assert qs[a["question_id"]].lower().startswith(a["question_type"])
        # format variants fold to the canonical answer under the official normalisation
        folded = sum(normalize_answer(x) == a["multiple_choice_answer"] for x in raw)
        assert folded >= tally[a["multiple_choice_answer"]]
        if a["answer_type"] == "yes/no":
            yes += a["multiple_choice_answer"] == "yes"
            no += a["multiple_choice_answer"] == "no"
        elif a["answer_type"] == "number":
            assert a["multiple_choice_answer"] in {str(k) for k in range(7)}
    assert 0.4 < yes / (yes + no) < 0.6
    # annotators disagree sometimes, and variants such as "two" / "Yes" / "a circle" occur
    variants = sum(x["answer"] != a["multiple_choice_answer"] and normalize_answer(x["answer"]) ==
                   a["multiple_choice_answer"] for a in ann for x in a["answers"])
    assert 0.05 < variants / (10 * len(ann)) < 0.25
    others = collections.Counter(a["multiple_choice_answer"] for a in ann if a["answer_type"] == "other")
    assert max(others.values()) / sum(others.values()) < 0.15


def test_snli_ve_balanced_and_fields(small):
    rows = jsonl(small / "snli_ve/snli_ve_val.jsonl")
    keys = {"Flikr30kID", "sentence1", "sentence2", "gold_label", "pairID", "captionID", "annotator_labels"}
    assert all(keys <= set(r) for r in rows)
    per_image = collections.defaultdict(list)
    for r in rows:
        per_image[r["Flikr30kID"]].append(r["gold_label"])
        assert len(r["annotator_labels"]) == 5 and r["annotator_labels"].count(r["gold_label"]) >= 3
    assert all(sorted(v) == ["contradiction", "entailment", "neutral"] for v in per_image.values())
    assert len({r["pairID"] for r in rows}) == len(rows)


def test_vcr_refs_and_boxes(small):
    rows = jsonl(small / "vcr/train.jsonl")
    for r in rows:
        meta = json.loads((small / "vcr/vcr1images" / r["metadata_fn"]).read_text())
        assert len(meta["boxes"]) == len(meta["segms"]) == len(r["objects"])
        assert all(len(b) == 5 and 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64 for b in meta["boxes"])
        texts = [r["question"]] + r["answer_choices"] + r["rationale_choices"]
        assert len(r["answer_choices"]) == len(r["rationale_choices"]) == 4
        assert r["answer_label"] in range(4) and r["rationale_label"] in range(4)
        refs = [k for t in texts for tok in t if isinstance(tok, list) for k in tok]
        assert refs and all(0 <= k < len(r["objects"]) for k in refs)
        assert len({json.dumps(c) for c in r["answer_choices"]}) == 4
        assert r["movie"] == r["img_fn"].split("/")[0]
    labels = collections.Counter(r["answer_label"] for r in rows)
    assert len(labels) == 4 and max(labels.values()) < 0.4 * len(rows)


def _valid_tree(parse) -> bool:
    n = len(parse)
    heads = [t[3] for t in parse]
    if heads.count(-1) != 1 or not all(-1 <= h < n and h != i for i, h in enumerate(heads)):
        return False
    for i in range(n):  # every token reaches the root without a cycle
        seen, k = set(), i
        while k != -1:
            if k in seen:
                return False
            seen.add(k)
            k = heads[k]
    return parse[heads.index(-1)][2] == "ROOT"


def test_parse_column_is_a_tree_of_the_title(small):
    rows = read_tsv(small / "pretrain/train.tsv")
    verbs_with_subject = 0
    for r in rows:
        parse = json.loads(r["parse"])
        assert _valid_tree(parse), r["title"]
        assert [t[0] for t in parse] == r["title"].replace(",", " ,").split()
        verbs_with_subject += any(t[1] == "VERB" and any(c[2] == "nsubj" and c[3] == i for c in parse)
                                  for i, t in enumerate(parse))
    assert 0.1 < verbs_with_subject / len(rows) < 0.6


def test_noise_rates_and_truth(small):
    rows = read_tsv(small / "pretrain/train.tsv")
    freq = collections.Counter(r["noise"] for r in rows)
    cfg = NoiseConfig()
    for kind in ("mismatch", "low_complexity", "text_spotting"):
        assert abs(freq[kind] / len(rows) - getattr(cfg, kind)) < 0.035, kind
    for r in rows:
        assert bool(r["ocr_text"]) == (r["noise"] == "text_spotting")
        if r["ocr_text"]:
            assert set(r["ocr_text"].split()) <= set(r["title"].replace(",", " ").split())
        if r["noise"] == "clean":  # clean captions only name concepts the image holds
            named = {w for w in r["title"].split() if w in json.loads((small / "pretrain/concepts.json").read_text())["concepts"]}
            assert named <= set(r["concepts"].split()), r
    assert all(r["noise"] == "clean" for r in read_tsv(small / "pretrain/val.tsv"))
    # overrides change the rates
    cfg = NoiseConfig(mismatch=0.4, low_complexity=0.0, text_spotting=0.0)
    kinds = collections.Counter(pair(0, "train", i, cfg, noisy=True)[0]["noise"] for i in range(600))
    assert kinds["low_complexity"] == kinds["text_spotting"] == 0 and abs(kinds["mismatch"] / 600 - 0.4) < 0.06


def test_zeroshot_sets(small):
    index = json.loads((small / "pretrain/zeroshot.json").read_text())
    assert {"shape", "colour"} <= set(index)
    for name, spec in index.items():
        rows = read_tsv(small / "pretrain" / spec["file"])
        assert rows and all(0 <= int(r["label"]) < len(spec["classnames"]) for r in rows)
        assert all("{}" in t for t in spec["templates"])


def test_data_check_passes(small):
    check = pytest.importorskip("tasks.check")
    for task, sub in (("vqa", "vqa"), ("snli_ve", "snli_ve"), ("vcr", "vcr"), ("captions", "pretrain")):
        counts, problems = check.check_task(task, small / sub)
        assert problems == [], (task, problems[:5])


def test_bad_input_and_atomic_failure(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="--size"):
        build_world(tmp_path / "x", size="huge")
    with pytest.raises(InputError, match="noise"):
        build_world(tmp_path / "x", size="small", noise={"mismatchh": 0.1})

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(world_mod, "_render_all", boom)
    with pytest.raises(RuntimeError):
        build_world(tmp_path / "x", size="small")
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temp folder left


def test_ensure_world_builds_once_under_concurrency(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path))
    calls = []

    def fake_build(out, seed, size, image_size):
        calls.append(out)
        time.sleep(0.3)  # long enough for the other caller to arrive and wait on the lock
        Path(out).mkdir(parents=True)
        (Path(out) / "world.json").write_text(json.dumps({"version": world_mod.GENERATOR_VERSION}))

    monkeypatch.setattr(world_mod, "build_world", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_world("small", 3, 32))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / "synthetic" / "small-s3-32px"] * 3


def test_ensure_world_rebuilds_a_world_of_an_older_generator(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path))
    root = tmp_path / "synthetic" / "small-s3-32px"
    root.mkdir(parents=True)
    (root / "world.json").write_text(json.dumps({"version": world_mod.GENERATOR_VERSION - 1}))
    calls = []

    def fake_build(out, seed, size, image_size):
        calls.append(out)
        (Path(out) / "world.json").write_text(json.dumps({"version": world_mod.GENERATOR_VERSION}))

    monkeypatch.setattr(world_mod, "build_world", fake_build)
    assert ensure_world("small", 3, 32) == root and calls == [root]
    assert ensure_world("small", 3, 32) == root and calls == [root]  # current now: not rebuilt again
