"""Build the whole synthetic world into a folder, atomically and reproducibly."""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from clip_td.base.io import InputError, PathLike, atomic_path, cache_root

from tasks.synthetic import pretrain_corpus, snli_gen, vcr_gen, vqa_gen
from tasks.synthetic.common import RenderJob, item_rng, job
from tasks.synthetic.render import encode_jpeg, render_scene
from tasks.synthetic.scene import sample_scene
from tasks.synthetic.vocab import COLOUR_NAMES, MOVIES, RELATIONS, SHAPES, SIZE_NAMES, movie_theme

GENERATOR_VERSION = 3  # 2: the pretraining corpus gained the `facts` column; 3: the `places` column
SPLITS = ("train", "val", "val_shift")
SPLIT_STYLE = {"train": "source", "val": "source", "val_shift": "shift"}

# Medium counts (the default benchmark); small = 1/20, large = 5x.
MEDIUM = {
    "pretrain": {"train": 20000, "val": 2000, "zeroshot": 600},
    "vqa": {"train": (8000, 2500), "val": (1500, 470), "val_shift": (1500, 470)},  # (questions, images)
    "snli_ve": {"train": 6000, "val": 1500, "val_shift": 1500},  # pairs, 3 per image
    "vcr": {"train": (4000, 2000), "val": (1000, 500), "val_shift": (1000, 500)},  # (questions, images)
}
SCALES = {"small": 0.05, "medium": 1.0, "large": 5.0}
IMAGE_ID_BASE = {"train": 0, "val": 1_000_000, "val_shift": 2_000_000}  # disjoint id ranges per split
FLICKR_ID_BASE = {"train": 1_000_000, "val": 2_000_000, "val_shift": 3_000_000}


def _scaled(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def plan_counts(size: str) -> Dict:
    if size not in SCALES:
        raise InputError(f"--size: expected one of {', '.join(SCALES)}, got {size!r}")
    s = SCALES[size]
    return {
        "pretrain": {k: _scaled(v, s) for k, v in MEDIUM["pretrain"].items()},
        "vqa": {k: (_scaled(q, s), _scaled(i, s)) for k, (q, i) in MEDIUM["vqa"].items()},
        "snli_ve": {k: _scaled(v // 3, s) for k, v in MEDIUM["snli_ve"].items()},  # images
        "vcr": {k: (_scaled(q, s), _scaled(i, s)) for k, (q, i) in MEDIUM["vcr"].items()},
    }


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _write_jsonl(path: Path, rows: Iterable[Dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_tsv(path: Path, columns: Tuple[str, ...], rows: Iterable[Mapping]) -> None:
    lines = ["\t".join(columns)]
    for r in rows:
        fields = [str(r[c]) for c in columns]
        assert not any("\t" in f or "\n" in f for f in fields), fields
        lines.append("\t".join(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _spread(total: int, parts: int, k: int) -> int:
    """How many of `total` items the k-th of `parts` buckets gets (differ by at most one)."""
    return (k + 1) * total // parts - k * total // parts


# ---------------------------------------------------------------------------- generators


def gen_pretrain(root: Path, seed: int, n: Dict[str, int], noise: pretrain_corpus.NoiseConfig) -> List[RenderJob]:
    jobs: List[RenderJob] = []
    for split in ("train", "val"):
        rows = []
        for i in range(n[split]):
            row, jb = pretrain_corpus.pair(seed, split, i, noise, noisy=split == "train")
            rows.append(row)
            jobs.append(jb)
        _write_tsv(root / "pretrain" / f"{split}.tsv", pretrain_corpus.COLUMNS, rows)
    zs_rows = []
    for i in range(n["zeroshot"]):
        row, jb = pretrain_corpus.zeroshot_item(seed, i)
        zs_rows.append(row)
        jobs.append(jb)
    index = {}
    for name, (classes, templates) in pretrain_corpus.ZEROSHOT_SETS.items():
        fname = f"zeroshot_{name}.tsv"
        _write_tsv(root / "pretrain" / fname, ("filepath", "label", "style"),
                   [{"filepath": r["filepath"], "label": r[name], "style": r["style"]} for r in zs_rows])
        index[name] = {"classnames": list(classes), "templates": list(templates), "file": fname}
    (root / "pretrain" / "zeroshot.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    concepts = {"concepts": pretrain_corpus.concept_vocab()}
    (root / "pretrain" / "concepts.json").write_text(json.dumps(concepts, indent=2) + "\n")
    return jobs


def gen_vqa(root: Path, seed: int, split: str, n_questions: int, n_images: int) -> List[RenderJob]:
    questions, annotations, jobs = [], [], []
    for k in range(n_images):
        rng = item_rng(seed, f"vqa/{split}", k)
        scene = sample_scene(rng, style=SPLIT_STYLE[split])
        image_id = IMAGE_ID_BASE[split] + k + 1
        jobs.append(job(f"vqa/images/{split}/COCO_{split}_{image_id:012d}.jpg", scene, rng))
        seen = set()
        for q in range(_spread(n_questions, n_images, k)):
            text, qtype, atype, answer, kind = vqa_gen.ask(scene, rng)
            for _ in range(10):  # avoid asking the same question twice about one image
                if text not in seen:
                    break
                text, qtype, atype, answer, kind = vqa_gen.ask(scene, rng)
            seen.add(text)
            qid = image_id * 1000 + q
            questions.append({"question_id": qid, "image_id": image_id, "question": text})
            answers = vqa_gen.annotate(answer, kind, rng)
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": qtype,
                                "answer_type": atype, "multiple_choice_answer": answer, "answers": answers})
    header = {"info": {"description": "clip-td synthetic world (VQA v2 format)", "version": str(GENERATOR_VERSION)},
              "license": {"name": "CC0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
              "data_type": "mscoco", "data_subtype": split}
    (root / "vqa").mkdir(parents=True, exist_ok=True)
    (root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
        _dumps({**header, "task_type": "Open-Ended", "questions": questions}))
    (root / "vqa" / f"v2_mscoco_{split}_annotations.json").write_text(_dumps({**header, "annotations": annotations}))
    return jobs


def gen_snli_ve(root: Path, seed: int, split: str, n_images: int) -> List[RenderJob]:
    from tasks.synthetic.language import caption

    rows, jobs = [], []
    for k in range(n_images):
        rng = item_rng(seed, f"snli_ve/{split}", k)
        scene = sample_scene(rng, style=SPLIT_STYLE[split])
        image = f"{FLICKR_ID_BASE[split] + k}.jpg"
        jobs.append(job(f"snli_ve/images/{image}", scene, rng))
        premise = caption(scene, rng).text()
        labels = list(snli_gen.LABELS)
        rng.shuffle(labels)
        for r, gold in enumerate(labels):
            rows.append({"Flikr30kID": image, "captionID": f"{image}#0", "pairID": f"{image}#0r{r}",
                         "sentence1": premise, "sentence2": snli_gen.hypothesis(scene, gold, rng),
                         "gold_label": gold,
                         "annotator_labels": snli_gen.annotator_labels(gold, rng, 1 if split == "train" else 5)})
    _write_jsonl(root / "snli_ve" / f"snli_ve_{split}.jsonl", rows)
    return jobs


def gen_vcr(root: Path, seed: int, split: str, n_questions: int, n_images: int, image_size: int) -> List[RenderJob]:
    rows, jobs = [], []
    for k in range(n_images):
        rng = item_rng(seed, f"vcr/{split}", k)
        movie = MOVIES[k % len(MOVIES)]
        scene = sample_scene(rng, style=SPLIT_STYLE[split], theme=movie_theme(movie))
        name = f"{movie}/{split}_{k:06d}"
        jobs.append(job(f"vcr/vcr1images/{name}.jpg", scene, rng))
        meta_path = root / "vcr" / "vcr1images" / f"{name}.json"
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(_dumps(vcr_gen.metadata(scene, image_size, rng)))
        for q in range(_spread(n_questions, n_images, k)):
            item = vcr_gen.make_item(scene, rng)
            rows.append({
                "annot_id": f"{split}-{len(rows)}", "movie": movie, "objects": [o["shape"] for o in scene["objects"]],
                "img_fn": f"{name}.jpg", "metadata_fn": f"{name}.json", "img_id": f"{split}-{k}",
                "question_number": q, **item,
                "question_orig": vcr_gen.orig_string(item["question"]),
                "answer_orig": vcr_gen.orig_string(item["answer_choices"][item["answer_label"]]),
                "rationale_orig": vcr_gen.orig_string(item["rationale_choices"][item["rationale_label"]]),
            })
    _write_jsonl(root / "vcr" / f"{split}.jsonl", rows)
    return jobs


# ---------------------------------------------------------------------------- rendering


def _render_one(args: Tuple[str, RenderJob, int]) -> int:
    root, jb, image_size = args
    path = Path(root) / jb.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_jpeg(render_scene(jb.scene, image_size, jb.seed, jb.text))
    path.write_bytes(data)
    return len(data)


def _render_all(root: Path, jobs: List[RenderJob], image_size: int, workers: int) -> int:
    args = [(str(root), jb, image_size) for jb in jobs]
    if workers <= 1:
        return sum(map(_render_one, args))
    # fork keeps start-up cheap; every job carries its own seed, so order is irrelevant.
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        return sum(pool.imap_unordered(_render_one, args, chunksize=64))


# ---------------------------------------------------------------------------- entry points


def build_world(out: PathLike, seed: int = 0, size: str = "medium", image_size: int = 64,
                workers: Optional[int] = None,
                noise: Optional[Union[pretrain_corpus.NoiseConfig, Mapping[str, float]]] = None) -> Dict:
    """Write the synthetic world to `out` (replacing it atomically); return a summary.

    noise: a NoiseConfig or a mapping of overrides of its defaults (pretraining corpus).
    """
    start = time.perf_counter()
    counts = plan_counts(size)
    if image_size < 16:
        raise InputError(f"--image-size: expected at least 16 pixels, got {image_size}")
    noise_cfg = _noise(noise)
    workers = workers or os.cpu_count() or 1
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        jobs = gen_pretrain(tmp, seed, counts["pretrain"], noise_cfg)
        for split in SPLITS:
            jobs += gen_vqa(tmp, seed, split, *counts["vqa"][split])
            jobs += gen_snli_ve(tmp, seed, split, counts["snli_ve"][split])
            jobs += gen_vcr(tmp, seed, split, *counts["vcr"][split], image_size)
        image_bytes = _render_all(tmp, jobs, image_size, workers)
        world = _world_json(seed, size, image_size, counts, noise_cfg)
        (tmp / "world.json").write_text(json.dumps(world, indent=2, sort_keys=True) + "\n")
        total = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    return {"out": str(Path(out).resolve()), "seed": seed, "size": size, "image_size": image_size,
            "counts": world["counts"], "images": len(jobs), "image_bytes": image_bytes, "bytes": total,
            "seconds": round(time.perf_counter() - start, 2), "workers": workers}


def _noise(noise) -> pretrain_corpus.NoiseConfig:
    if noise is None:
        return pretrain_corpus.NoiseConfig()
    if isinstance(noise, pretrain_corpus.NoiseConfig):
        return noise
    known = set(pretrain_corpus.NoiseConfig().as_dict())
    unknown = set(noise) - known
    if unknown:
        raise InputError(f"noise: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    try:
        return replace(pretrain_corpus.NoiseConfig(), **{k: float(v) for k, v in noise.items()})
    except ValueError as e:
        raise InputError(f"noise: {e}") from None


def _world_json(seed: int, size: str, image_size: int, counts: Dict, noise: pretrain_corpus.NoiseConfig) -> Dict:
    return {
        "generator": "clip-td synthetic world", "version": GENERATOR_VERSION, "seed": seed, "size": size,
        "image_size": image_size,
        "styles": {"source": "flat light background, flat fills", "shift": "textured striped background, outlines, "
                   "dim warm lighting, pixel noise (same palette hues)"},
        "split_styles": SPLIT_STYLE,
        "vocab": {"shapes": list(SHAPES), "colours": list(COLOUR_NAMES), "sizes": list(SIZE_NAMES),
                  "relations": list(RELATIONS), "movies": list(MOVIES)},
        "noise": noise.as_dict(),
        "counts": {
            "pretrain": dict(counts["pretrain"]),
            "vqa": {s: {"questions": q, "images": i} for s, (q, i) in counts["vqa"].items()},
            "snli_ve": {s: {"pairs": 3 * i, "images": i} for s, i in counts["snli_ve"].items()},
            "vcr": {s: {"questions": q, "images": i} for s, (q, i) in counts["vcr"].items()},
        },
        "zeroshot_label": "integer index into the label set's classnames",
    }




def _current(root: Path) -> bool:
    """Whether `root` holds a complete world written by this generator version."""
    try:
        return json.loads((root / "world.json").read_text()).get("version") == GENERATOR_VERSION
    except (OSError, ValueError):
        return False


def ensure_world(size: str = "medium", seed: int = 0, image_size: int = 64) -> Path:
    """Build the world once under the cache root and return its folder.

    Safe under concurrency: builders serialise on a lock file and the build lands by an
    atomic rename, so a waiting process finds the winner's complete output and reuses it.
    """
    root = cache_root() / "synthetic" / f"{size}-s{seed}-{image_size}px"
    if _current(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _current(root):  # missing, or written by an older generator: rebuilt in place, atomically
                build_world(root, seed=seed, size=size, image_size=image_size)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root
