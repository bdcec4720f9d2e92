"""How much do the pieces a teacher never read in pretraining cost it on the tasks?

    python bench/teacher_unread_pieces.py [--teacher recipe:NAME | local-dir:DIR] [--max-rows 1000]
                                          [--out bench/results/teacher_unread_pieces.json]

A teacher with a fitted vocabulary (`model.fitted_vocab_size`) holds its corpus's words as tokens
and spells every other word piece by piece ("What" -> w ##h ##a ##t, "triangle1" -> triangle ##1).
Pieces that no pretraining text uses keep the embeddings they started with, yet each still moves
the text's embedding. This scores the task texts twice, as written and with every token that the
teacher's pretraining captions never produce left out (start, end and padding kept), on `val` and
`val_shift` of the synthetic world:
  vcr      Q->A accuracy over the 4 answers (question + answer, as the distiller scores it), by the
           question's first two words ("What color", "Where is") and over all rows
  snli_ve  the AUC of cos(image, hypothesis) putting the entailed rows above the contradicted ones
           (50 = no ranking), by the hypothesis's first two words and over all rows
  concepts zero-shot colour / shape / size on the pretraining world's labelled single-object
           images (both styles), with each prompt template alone and with their ensemble, as
           `bench/teacher_zeroshot.py` scores them ("a photo of a {} object." spells "object")
plus the share of the task texts' content tokens that the corpus never uses. Leaving tokens out
is a diagnosis, not a scorer the distiller uses: a large gain says the teacher is misled by what
it never learnt to read. The corpus is the synthetic world's pretrain/train.tsv (title,
synthetic_caption and facts; the large world's for a recipe trained on it). Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_td.base.io import write_json_atomic  # noqa: E402
from clip_td.lib.teacher import FrozenTeacher  # noqa: E402
from teacher_zeroshot import by_group, image_embeds, ranking_auc  # noqa: E402


def corpus_token_ids(teacher: FrozenTeacher, path: Path, columns: Sequence[str] = ("title", "synthetic_caption", "facts"),
                     chunk: int = 4096) -> Set[int]:
    """Every token id the teacher's tokenizer produces on the captions file `path` (`columns`; the
    facts column's "|"-separated facts read as words)."""
    from pretrain.data import read_captions

    texts = [row.get(c, "").replace("|", " ") for row in read_captions(path, required=("filepath",), check_images=False)
             for c in columns]
    used: Set[int] = set()
    for s in range(0, len(texts), chunk):
        used.update(int(i) for i in teacher.tokenize(texts[s:s + chunk]).unique())
    return used


def keep_read(teacher: FrozenTeacher, ids: torch.Tensor, used: Set[int]) -> torch.Tensor:
    """(B, L) ids with every content token outside `used` left out, the rest moved up and padded."""
    content = teacher._content_mask(ids)
    pad = teacher._pad_id
    out = torch.full_like(ids, pad)
    for b in range(ids.shape[0]):
        kept = [int(t) for t, c in zip(ids[b].tolist(), content[b].tolist()) if (not c or t in used) and t != pad]
        out[b, : len(kept)] = torch.tensor(kept, dtype=ids.dtype)
    return out


@torch.no_grad()
def embed(teacher: FrozenTeacher, texts: List[str], used: Set[int] | None, batch: int = 512) -> torch.Tensor:
    """(N, d) L2-normalised text embeddings, as written (`used` None) or with unread tokens left out."""
    out = []
    for s in range(0, len(texts), batch):
        ids = teacher.tokenize(texts[s:s + batch])
        if used is not None:
            ids = keep_read(teacher, ids, used)
        out.append(F.normalize(teacher._text_tower(ids)[1].float(), dim=-1))
    return torch.cat(out)


def unread_share(teacher: FrozenTeacher, texts: List[str], used: Set[int]) -> float:
    """Percent of the content tokens of `texts` that are not in `used`."""
    ids = teacher.tokenize(texts)
    content = teacher._content_mask(ids)
    unread = content & ~torch.isin(ids, torch.tensor(sorted(used), dtype=ids.dtype))
    return 100.0 * float(unread.sum()) / max(int(content.sum()), 1)


def group(text: str) -> str:
    return " ".join(str(text).split()[:2])


def score_choices(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], used: Set[int]) -> Dict[str, Any]:
    img = image_embeds(teacher, rows)
    texts = [task.teacher_texts(r) for r in rows]
    gold = torch.tensor([t[2] for t in texts])
    cands = [c for t in texts for c in t[1]]
    out: Dict[str, Any] = {"unread tokens (%)": unread_share(teacher, cands, used)}
    for name, keep in (("as written", None), ("unread tokens left out", used)):
        cand = embed(teacher, cands, keep).view(len(rows), len(texts[0][1]), -1)
        right = (torch.einsum("nd,ncd->nc", img, cand).argmax(1) == gold).float()
        out[name] = {"all": {"n": len(rows), "accuracy": 100.0 * float(right.mean())},
                     **by_group([group(r["text"]) for r in rows], right.tolist())}
    return out


def score_contrast(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], used: Set[int]) -> Dict[str, Any]:
    first, second = task.contrast_labels
    k_first, k_second = list(task.label_names).index(first), list(task.label_names).index(second)
    rows = [r for r in rows if int(r["label"]) in (k_first, k_second)]
    img = image_embeds(teacher, rows)
    hyps = [str(r["text"]) for r in rows]
    out: Dict[str, Any] = {"unread tokens (%)": unread_share(teacher, hyps, used)}
    for name, keep in (("as written", None), ("unread tokens left out", used)):
        cos = (img * embed(teacher, hyps, keep)).sum(-1).tolist()
        split: Dict[str, tuple] = defaultdict(lambda: ([], []))
        for r, c in zip(rows, cos):
            for g in ("all", group(r["text"])):
                split[g][0 if int(r["label"]) == k_first else 1].append(c)
        out[name] = {g: {"n": len(hi) + len(lo), f"{first} above {second}, AUC": ranking_auc(hi, lo)}
                     for g, (hi, lo) in sorted(split.items()) if hi and lo}
    return out


def score_concepts(teacher: FrozenTeacher, zeroshot_root: Path, used: Set[int]) -> Dict[str, Any]:
    """{label set: {template or "ensemble": {"as written", "unread tokens left out"}}}: zero-shot
    accuracy with each template alone and with all of them."""
    from pretrain.data import read_zeroshot
    from pretrain.metrics import encode_images, zeroshot_accuracy, zeroshot_weights

    left_out = lambda texts: keep_read(teacher, teacher.tokenizer(texts), used)  # noqa: E731
    out: Dict[str, Any] = {}
    for name, spec in read_zeroshot(zeroshot_root).items():
        img = encode_images(teacher.model, spec["images"], teacher.image_transform(), "cpu")
        out[name] = {}
        for key, templates in [(t, [t]) for t in spec["templates"]] + [("ensemble", list(spec["templates"]))]:
            out[name][key] = {label: zeroshot_accuracy(img, zeroshot_weights(teacher.model, tok, spec["classnames"],
                                                                               templates, "cpu"), spec["labels"])
                              for label, tok in (("as written", teacher.tokenizer), ("unread tokens left out", left_out))}
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default=None, help="recipe:NAME / local-dir:DIR (default: the default teacher)")
    p.add_argument("--tasks", nargs="+", default=["vcr", "snli_ve"], help="choice tasks to score")
    p.add_argument("--max-rows", type=int, default=1000, help="rows scored per split (the first N)")
    p.add_argument("--out", default="bench/results/teacher_unread_pieces.json")
    args = p.parse_args(argv)

    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.default_teacher import RECIPE_PREFIX, default_teacher_name
    from tasks import get_task
    from tasks.synthetic import ensure_world

    root = Path(ensure_world("medium"))
    world = "medium"
    if args.teacher and args.teacher.startswith(RECIPE_PREFIX):
        world = str(load_pretrain_config(recipe_path(args.teacher[len(RECIPE_PREFIX):])).data.world_size)
    name = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(name, None)
    corpus = Path(ensure_world(world)) / "pretrain" / "train.tsv"
    used = corpus_token_ids(teacher, corpus)
    results: Dict[str, Any] = {"teacher": name, "corpus": str(corpus), "corpus tokens": len(used), "tasks": {}}
    for task_name in args.tasks:
        task = get_task(task_name)
        # a task whose two labels cos(image, text) can tell apart (SNLI-VE) is scored by ranking; the
        # other choice tasks (VCR) by their candidates
        scorer = score_contrast if getattr(task, "contrast_labels", None) else score_choices
        for split in ("val", "val_shift"):
            ds = task.load(root / task_name, split)
            rows = [ds[i] for i in range(min(args.max_rows, len(ds)))]
            results["tasks"].setdefault(task_name, {})[split] = scorer(teacher, task, rows, used)

    if (root / "pretrain" / "zeroshot.json").is_file():
        results["concepts"] = score_concepts(teacher, root / "pretrain", used)

    print(f"teacher {name}: {len(used)} token ids occur in {corpus}")
    for set_name, by_template in results.get("concepts", {}).items():
        for key, v in by_template.items():
            print(f"concepts {set_name:<7}{key:<28}{v['as written']:>12.1f}{v['unread tokens left out']:>10.1f}")
    print(f"{'task':<9}{'split':<11}{'group':<16}{'n':>6}{'as written':>12}{'left out':>10}")
    for task_name, splits in results["tasks"].items():
        for split, res in splits.items():
            print(f"{task_name:<9}{split:<11}{'unread tokens':<16}{'':>6}{res['unread tokens (%)']:>11.1f}%")
            for g, v in res["as written"].items():
                if v["n"] < 40 and g != "all":  # the small groups are in the JSON
                    continue
                key = next(k for k in v if k != "n")
                print(f"{task_name:<9}{split:<11}{g:<16}{v['n']:>6}{v[key]:>12.1f}"
                      f"{res['unread tokens left out'][g][key]:>10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
