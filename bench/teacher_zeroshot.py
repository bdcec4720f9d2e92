"""How good is the teacher on the tasks themselves? Its zero-shot answer-level accuracy.

    python bench/teacher_zeroshot.py [--teacher local-dir:DIR] [--tasks vqa snli_ve vcr]
                                     [--max-rows 1500] [--out bench/results/teacher_zeroshot.json]

CLIP-TD's answer term and its confidence weights read the teacher's distribution q_i over each
instance's candidates (clip_td.app.task_texts); this scores argmax q_i against the gold answer on
`val` and `val_shift` of the synthetic world (or `--data-root`), exactly as the distiller
builds q_i:
  vqa      VQA score min(1, #annotators / 3) of the argmax over the answer vocabulary of the
           full training split, with and without the question-type answer sets
           (`method.answer_sets`); plus the question-type prior (most frequent training answer
           of the type), which needs no image
  snli_ve  3-way accuracy over the label templates; and, since the three templates share the
           hypothesis h (the softmax cancels cos(image, h)), one-feature probes on cos(image, h)
           fitted on the first --max-rows training rows: 3-way, and entailment vs contradiction
           (the best training threshold; chance 50), with the mean cos(image, h) per label
  vcr      Q->A accuracy over the 4 answers, and QA->R over the 4 rationales (question + right
           answer + rationale, as the distiller scores the second stage); keys "qa2r: ..."
Also `by_group`: the main scorer's accuracy by question type (VQA, answer sets) or by the
question's first two words (choice tasks); for SNLI-VE each group also holds the entailment vs
contradiction threshold's accuracy on its entailed and its contradicted rows
("entailment vs contradiction | <label>": {"n", "accuracy"}), which kinds of statement it misjudges,
and the threshold-free "entailment above contradiction, AUC of cos(image, text)" of the group
(50: cos(image, h) does not tell the group's entailed statements from its contradicted ones). Also `concepts`: zero-shot colour / shape / size accuracy on the pretraining world's labelled
single-object images, per image style (prompt-ensembled class embeddings, as CLIP does).
Also the sharpness of q_i at the distiller's default temperature (tau = 2): the mean largest
probability and the mean probability of the gold candidate (c_i before the batch
normalisation of the confidence weight). Chance: SNLI-VE 33.3, VCR 25.0. Compare with the
students' low-shot scores to see how much a teacher of this quality can transfer.
Also `candidate_words` (choice tasks, per teacher stage): the words that tell a row's candidates
apart (in some of its candidates but not all), each with the rows it decides, the number of
tokens the teacher's tokenizer splits it into, and how many rows of the teacher's pretraining
captions (`--corpus`, default the synthetic world's pretrain/train.tsv: title, synthetic_caption
and facts, and places for a place-reading `recipe:` teacher; `--corpus-columns` sets them) contain it. A teacher cannot rank candidates by a word it never read: a stage whose
deciding words are missing from the corpus is one where its answer-level term carries no
information, whatever the gate is given. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.app.schema import FinetuneConfig  # noqa: E402
from clip_td.base.config import load_config  # noqa: E402
from clip_td.base.io import write_json_atomic  # noqa: E402
from clip_td.lib.distill import MethodConfig, masked_candidates  # noqa: E402
from clip_td.lib.teacher import FrozenTeacher  # noqa: E402
from clip_td.lib.teacher_cache import _load_image  # noqa: E402


def image_embeds(teacher: FrozenTeacher, rows: List[Dict[str, Any]], batch: int = 128) -> torch.Tensor:
    """(N, d) image embedding of each row, each distinct image encoded once."""
    transform = teacher.image_transform()
    paths = sorted({r["image"] for r in rows})
    where = {p: i for i, p in enumerate(paths)}
    chunks = [teacher.encode_images(torch.stack([_load_image(p, transform) for p in paths[s:s + batch]]))["image_embed"]
              for s in range(0, len(paths), batch)]
    embeds = torch.cat(chunks)
    return embeds[torch.tensor([where[r["image"]] for r in rows])]


def text_embeds(teacher: FrozenTeacher, texts: List[str], batch: int = 512) -> torch.Tensor:
    return torch.cat([teacher.encode_texts(texts[s:s + batch], with_tokens=False)["text_embed"]
                      for s in range(0, len(texts), batch)])


def sharpness(teacher: FrozenTeacher, cos: torch.Tensor, gold: torch.Tensor) -> Dict[str, float]:
    """Mean max q_i and mean q_i[gold] (percent) of q = softmax(logit_scale * cos / tau)."""
    q = torch.softmax(teacher.logit_scale * cos.float() / MethodConfig.tau, dim=-1)
    conf = q.gather(1, gold.clamp_min(0).view(-1, 1)).squeeze(1) * (gold >= 0).float()
    return {f"mean max q (tau={MethodConfig.tau:g})": 100.0 * q.max(1).values.mean().item(),
            f"mean q[gold] (tau={MethodConfig.tau:g})": 100.0 * conf.mean().item()}


def by_group(groups: List[str], right: List[float]) -> Dict[str, Dict[str, float]]:
    """{group: {"n", "accuracy"}} of the teacher's main scorer (VQA: answer sets, by question
    type; choice tasks: by the question's first two words)."""
    out: Dict[str, List[float]] = defaultdict(list)
    for g, r in zip(groups, right):
        out[g].append(r)
    return {g: {"n": len(v), "accuracy": 100.0 * sum(v) / len(v)} for g, v in sorted(out.items(), key=lambda kv: -len(kv[1]))}


def ranking_auc(high: Sequence[float], low: Sequence[float]) -> float:
    """100 x the probability that a value of `high` exceeds one of `low` (ties count half): the
    area under the ROC curve of a score that should put `high` above `low`; 50 = no ranking."""
    h, lo = torch.tensor(list(high), dtype=torch.float64), torch.tensor(list(low), dtype=torch.float64)
    diff = h.unsqueeze(1) - lo.unsqueeze(0)
    return 100.0 * float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def score_open_answers(teacher: FrozenTeacher, task: Any, train: Any, rows: List[Dict[str, Any]]) -> Tuple[Dict, Dict]:
    """VQA-style tasks (one shared answer vocabulary): all answers, answer sets, and the prior."""
    vocab = task.answer_vocab
    # the bare answer words, whatever method.question_candidates says: teacher_texts(row) would
    # give one row's question in front of every answer, scored against every image
    logits = image_embeds(teacher, rows) @ text_embeds(teacher, task.answer_words).T  # (N, A)
    mask = torch.stack([task.teacher_extras(r)["cand_mask"] for r in rows])
    scores = [vocab.soft_scores(r["answers"]) for r in rows]

    def acc(pred: torch.Tensor) -> float:
        return 100.0 * sum(s.get(int(p), 0.0) for s, p in zip(scores, pred)) / len(rows)

    by_type: Dict[str, Counter] = defaultdict(Counter)
    for qtype, answer in zip(train["question_type"], train["multiple_choice_answer"]):
        idx = vocab.encode(answer)
        if idx is not None:
            by_type[qtype][idx] += 1
    prior = torch.tensor([by_type[r["question_type"]].most_common(1)[0][0] if by_type[r["question_type"]] else 0
                          for r in rows])
    gold = torch.tensor([-1 if (i := vocab.encode(r["multiple_choice_answer"])) is None else i for r in rows])
    masked = masked_candidates(logits, mask)
    groups = by_group([r["question_type"] for r in rows], [s.get(int(p), 0.0) for s, p in zip(scores, masked.argmax(1))])
    return {"teacher, all answers": acc(logits.argmax(1)),
            "teacher, answer sets": acc(masked.argmax(1)),
            "teacher, question + answer, answer sets": acc(question_conditioned(teacher, task, rows, mask)),
            "question-type prior (no image)": acc(prior), **sharpness(teacher, masked, gold)}, groups


def question_conditioned(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], mask: torch.Tensor) -> torch.Tensor:
    """(N,) argmax over each row's answer set of cos(image, "<question> <answer>"): candidates that
    depend on the question (the teacher's task text has this form), against bare answer words."""
    vocab = task.answer_vocab
    img = image_embeds(teacher, rows)
    preds = []
    for n, row in enumerate(rows):
        idx = mask[n].nonzero().flatten()
        texts = [f"{row['text']} {vocab.decode(int(i))}" for i in idx]
        preds.append(int(idx[(text_embeds(teacher, texts) @ img[n]).argmax()]))
    return torch.tensor(preds)


def stage_name(task: Any, row: Dict[str, Any], stage: int) -> str:
    """A teacher stage's name in the output: the task's trust group of it (VCR: q2a, qa2r), else "stage <s>"."""
    return task.trust_group({**row, "_stage": stage}) or f"stage {stage}"


def stage_logits(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], img: torch.Tensor,
                 stage: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, C) cos(image, candidate) of teacher stage `stage` of each row (as the distiller scores
    it) and the (N,) gold candidates."""
    texts = [task.teacher_texts({**r, "_stage": stage}) for r in rows]
    cand = text_embeds(teacher, [c for t in texts for c in t[1]]).view(len(rows), len(texts[0][1]), -1)
    return torch.einsum("nd,ncd->nc", img, cand), torch.tensor([t[2] for t in texts])


def choice_scores(teacher: FrozenTeacher, logits: torch.Tensor, gold: torch.Tensor) -> Dict[str, float]:
    """Accuracy of the argmax candidate, chance, and the sharpness of q_i."""
    return {"teacher": 100.0 * (logits.argmax(1) == gold).float().mean().item(), "chance": 100.0 / logits.shape[1],
            **sharpness(teacher, logits, gold)}


def score_choice(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]],
                 fit: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Tuple[Dict, Dict]:
    """Accuracy over each row's candidates, its sharpness, and (with `fit`, the training rows'
    cos(image, task text) and labels from `probe_inputs`) the one-feature probes; plus the
    accuracy by the question's first two words (and, for a task with `contrast_labels`, the pair's
    threshold accuracy in each group, by gold label: which kinds of statement the teacher misjudges).
    Later teacher stages (VCR: QA->R) add the same scores under "<stage name>: "."""
    img = image_embeds(teacher, rows)
    logits, gold = stage_logits(teacher, task, rows, img)
    names = [" ".join(str(r["text"]).split()[:2]) for r in rows]
    groups = by_group(names, (logits.argmax(1) == gold).float().tolist())
    out = choice_scores(teacher, logits, gold)
    if fit is not None:  # fixed label meanings: what cos(image, task text) alone says
        pair_right: Dict[int, bool] = {}
        pair_cos: Dict[int, float] = {}
        out.update(scalar_probes(teacher, task, rows, img, logits, gold, *fit, pair_right=pair_right,
                                 pair_cos=pair_cos))
        pair = getattr(task, "contrast_labels", None)
        for label in pair or ():
            k = list(task.label_names).index(label)
            mine = [i for i in pair_right if int(gold[i]) == k]
            for g, res in by_group([names[i] for i in mine], [float(pair_right[i]) for i in mine]).items():
                groups[g][f"{pair[0]} vs {pair[1]} | {label}"] = res
        if pair:  # threshold-free: does cos(image, text) rank the group's first-label rows above its second's?
            first = list(task.label_names).index(pair[0])
            split: Dict[str, Tuple[List[float], List[float]]] = defaultdict(lambda: ([], []))
            for i, c in pair_cos.items():  # the pair's rows: each is of the first label or the second
                split[names[i]][0 if int(gold[i]) == first else 1].append(c)
            for g, (hi, lo) in split.items():
                if hi and lo:
                    groups[g][f"{pair[0]} above {pair[1]}, AUC of cos(image, text)"] = ranking_auc(hi, lo)
    for stage in range(1, int(getattr(task, "teacher_stages", 1))):
        scores = choice_scores(teacher, *stage_logits(teacher, task, rows, img, stage))
        out.update({f"{stage_name(task, rows[0], stage)}: {k}": v for k, v in scores.items()})
    return out, groups


def words(text: str) -> List[str]:
    """Lower-cased runs of letters: "diamond0 is near the top." -> [diamond, is, near, the, top]."""
    return re.findall(r"[a-z]+", text.lower())


def distinguishing_words(candidates: Sequence[str]) -> List[str]:
    """The words (sorted) that occur in some of `candidates` but not in all: what a reader of the
    candidates must understand to rank them."""
    bags = [set(words(c)) for c in candidates]
    return sorted(set().union(*bags) - set.intersection(*bags)) if bags else []


CAPTION_COLUMNS = ("title", "synthetic_caption", "facts")


def corpus_word_rows(path: Path, columns: Sequence[str] = CAPTION_COLUMNS) -> Counter:
    """{word: rows of the captions file `path` whose `columns` (those it has) contain it}. The
    `places` column counts as the place captions written from it ("circle at top left" -> "circle
    near the top left", `pretrain.data.place_phrase`), the words a place-reading teacher reads."""
    from pretrain.data import place_phrase, read_captions, split_places

    def text(row: Dict[str, str], column: str) -> str:
        if column != "places":
            return row.get(column, "")
        return " ".join(f"{shape} {place_phrase(r)}" for shape, regions in split_places(row.get(column, "")).items()
                        for r in regions)

    counts: Counter = Counter()
    for row in read_captions(path, required=("filepath",), check_images=False):
        counts.update(set(words(" ".join(text(row, c) for c in columns))))
    return counts


def corpus_columns(teacher: Optional[str]) -> Tuple[str, ...]:
    """The caption columns a teacher read in pretraining: title, synthetic_caption and facts, and
    `places` too when it is `recipe:<name>` whose recipe sets data.place_captions > 0 (the
    place-reading teachers: their place captions are written from that column)."""
    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.default_teacher import RECIPE_PREFIX

    if not teacher or not teacher.startswith(RECIPE_PREFIX):
        return CAPTION_COLUMNS
    cfg = load_pretrain_config(recipe_path(teacher[len(RECIPE_PREFIX):]))
    return CAPTION_COLUMNS + (("places",) if float(cfg.data.place_captions) > 0 else ())


def candidate_words(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], stage: int,
                    corpus: Optional[Counter]) -> Dict[str, Any]:
    """What the candidates of `rows` at teacher stage `stage` differ by, and whether the teacher
    can have learned it: {"rows", "rows decided by words absent from the corpus" (%, with a
    corpus), "words": {word: {"rows", "tokens", "corpus rows"}}}, words by rows decided."""
    per_row = [distinguishing_words(task.teacher_texts({**r, "_stage": stage})[1]) for r in rows]
    decided = Counter(w for ws in per_row for w in ws)
    out: Dict[str, Any] = {"rows": len(rows)}
    if corpus is not None:
        unseen = sum(any(corpus[w] == 0 for w in ws) for ws in per_row)
        out["rows decided by words absent from the corpus"] = 100.0 * unseen / max(len(rows), 1)
    out["words"] = {}
    for w, n in sorted(decided.items(), key=lambda kv: (-kv[1], kv[0])):
        pieces = int(teacher._content_mask(teacher.tokenize([w]).cpu()).sum())
        out["words"][w] = {"rows": n, "tokens": pieces, **({"corpus rows": corpus[w]} if corpus is not None else {})}
    return out


def task_text_cos(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], img: torch.Tensor) -> torch.Tensor:
    """(N,) cos(image, task text): the image-text similarity of each row's own text (SNLI-VE: h)."""
    return (img * text_embeds(teacher, [task.teacher_texts(r)[0] for r in rows])).sum(-1)


def probe_inputs(teacher: FrozenTeacher, task: Any, train_rows: List[Dict[str, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The probes' training data: (N,) cos(image, task text) of `train_rows` and their (N,) labels."""
    s_tr = task_text_cos(teacher, task, train_rows, image_embeds(teacher, train_rows))
    return s_tr, torch.tensor([task.teacher_texts(r)[2] for r in train_rows])


def scalar_probes(teacher: FrozenTeacher, task: Any, rows: List[Dict[str, Any]], img: torch.Tensor,
                  logits: torch.Tensor, gold: torch.Tensor, s_tr: torch.Tensor, y_tr: torch.Tensor,
                  pair_right: Optional[Dict[int, bool]] = None,
                  pair_cos: Optional[Dict[int, float]] = None) -> Dict[str, float]:
    """One-feature probes on s = cos(image, task text), fitted on training rows (`s_tr`, `y_tr`) and scored on `rows`:
    all classes (multinomial logistic regression on s) and the task's `contrast_labels` pair (the
    best training threshold, scored on the rows of those two labels); plus the label templates'
    argmax restricted to that pair, for comparison. Chance of the pair: 50. `pair_right`, when
    given, receives {row index: whether the threshold is right} for the pair's rows, and `pair_cos`
    {row index: s} for the same rows."""
    from clip_td.lib.probe import fit_scalar_softmax, fit_threshold, threshold_predict

    names = list(task.label_names)
    s = task_text_cos(teacher, task, rows, img)
    probe = fit_scalar_softmax(s_tr, y_tr, len(names))
    out = {f"probe on cos(image, text), {len(names)}-way": 100.0 * (probe.probs(s).argmax(1) == gold).float().mean().item()}
    pair = getattr(task, "contrast_labels", None)
    if pair:
        a, b = names.index(pair[0]), names.index(pair[1])
        tr, ev = (y_tr == a) | (y_tr == b), (gold == a) | (gold == b)
        t, above = fit_threshold(s_tr[tr], (y_tr[tr] == b).long())
        pred = threshold_predict(s[ev], t, above)
        right = pred == (gold[ev] == b).long()
        out[f"{pair[0]} vs {pair[1]}, threshold on cos(image, text)"] = 100.0 * right.float().mean().item()
        if pair_right is not None:
            pair_right.update(zip(torch.nonzero(ev).flatten().tolist(), right.tolist()))
        if pair_cos is not None:
            pair_cos.update(zip(torch.nonzero(ev).flatten().tolist(), s[ev].tolist()))
        tmpl = torch.where(logits[ev, b] > logits[ev, a], b, a)
        out[f"{pair[0]} vs {pair[1]}, label templates"] = 100.0 * (tmpl == gold[ev]).float().mean().item()
    for k, name in enumerate(names):
        if bool((gold == k).any()):
            out[f"mean cos(image, text) | {name}"] = float(s[gold == k].mean())
    return out


def concept_scores(teacher: FrozenTeacher, zeroshot_root: Path) -> Dict[str, Dict[str, float]]:
    """{style: {label set: accuracy %}} over `<zeroshot_root>/zeroshot.json`'s label sets."""
    from pretrain.data import read_zeroshot
    from pretrain.metrics import zeroshot_weights

    out: Dict[str, Dict[str, float]] = {}
    for name, spec in read_zeroshot(zeroshot_root).items():
        weights = zeroshot_weights(teacher.model, teacher.tokenizer, spec["classnames"], spec["templates"],
                                   teacher.device)  # (d, K), open_clip's prompt-ensemble builder
        pred = (image_embeds(teacher, [{"image": p} for p in spec["images"]]).cpu() @ weights).argmax(1)
        right = pred == torch.tensor(spec["labels"])
        styles = spec["styles"]
        for style in sorted(set(styles)):
            sel = torch.tensor([s == style for s in styles])
            out.setdefault(style or "all", {})[name] = 100.0 * right[sel].float().mean().item()
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default=None, help="open_clip name / local-dir:DIR (default: the default teacher)")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag or weights file")
    p.add_argument("--data-root", default=None, help="folder holding vqa/ snli_ve/ vcr/ (default: the synthetic world)")
    p.add_argument("--tasks", nargs="+", default=["vqa", "snli_ve", "vcr"])
    p.add_argument("--max-rows", type=int, default=1500, help="rows scored per split (the first N)")
    p.add_argument("--corpus", default=None,
                   help="the teacher's pretraining captions file, for `candidate_words` (default: the synthetic world's pretrain/train.tsv)")
    p.add_argument("--corpus-columns", nargs="+", default=None,
                   help="the caption columns the teacher read (default: title, synthetic_caption, facts, and places "
                        "for a recipe:<name> teacher whose recipe writes place captions)")
    p.add_argument("--out", default="bench/results/teacher_zeroshot.json")
    args = p.parse_args(argv)

    from tasks import get_task

    if args.data_root:
        root = Path(args.data_root)
    else:
        from tasks.synthetic import ensure_world

        root = Path(ensure_world("medium"))
    from pretrain.default_teacher import default_teacher_name

    name = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(name, args.pretrained)
    results: Dict[str, Any] = {"teacher": name, "data_root": str(root), "max_rows": args.max_rows, "tasks": {}}
    corpus_path = Path(args.corpus) if args.corpus else root / "pretrain" / "train.tsv"
    if args.corpus and not corpus_path.is_file():
        raise SystemExit(f"--corpus {corpus_path}: file not found")
    columns = tuple(args.corpus_columns) if args.corpus_columns else corpus_columns(args.teacher)
    corpus = corpus_word_rows(corpus_path, columns) if corpus_path.is_file() else None
    results["corpus"] = str(corpus_path) if corpus is not None else None
    results["corpus_columns"] = list(columns) if corpus is not None else None
    settings = load_config(FinetuneConfig, overrides=["method.answer_sets=true"])
    for task_name in args.tasks:
        task = get_task(task_name)
        train = task.load(root / task_name, "train")
        task.setup(train, settings)  # e.g. VQA's answer vocabulary and answer sets
        open_answers = getattr(task, "answer_vocab", None) is not None  # one shared answer vocabulary
        fit = None
        if not open_answers and getattr(task, "label_names", None):  # the probes' training rows, encoded once
            fit = probe_inputs(teacher, task, [train[i] for i in range(min(args.max_rows, len(train)))])
        for split in ("val", "val_shift"):
            ds = task.load(root / task_name, split)
            rows = [ds[i] for i in range(min(args.max_rows, len(ds)))]
            res, groups = (score_open_answers(teacher, task, train, rows) if open_answers
                           else score_choice(teacher, task, rows, fit))
            results["tasks"].setdefault(task_name, {})[split] = res
            results.setdefault("by_group", {}).setdefault(task_name, {})[split] = groups
            if not open_answers:
                results.setdefault("candidate_words", {}).setdefault(task_name, {})[split] = {
                    stage_name(task, rows[0], s): candidate_words(teacher, task, rows, s, corpus)
                    for s in range(int(getattr(task, "teacher_stages", 1)))}

    if (root / "pretrain" / "zeroshot.json").is_file():
        results["concepts"] = concept_scores(teacher, root / "pretrain")
        for style, accs in results["concepts"].items():
            print(f"concepts ({style}): " + ", ".join(f"{k} {v:.1f}" for k, v in accs.items()))
    width = max(len(k) for splits in results["tasks"].values() for res in splits.values() for k in res) + 2
    print(f"{'task':<9}{'split':<11}{'scorer':<{width}}{'score':>7}")
    for task_name, splits in results["tasks"].items():
        for split, res in splits.items():
            for scorer, value in res.items():
                fmt = ".3f" if scorer.startswith("mean cos") else ".1f"
                print(f"{task_name:<9}{split:<11}{scorer:<{width}}{value:>7{fmt}}")
    for task_name, splits in results.get("candidate_words", {}).items():
        for stage, res in splits.get("val", {}).items():
            top = ", ".join(f"{w} ({v['rows']} rows, {v['tokens']} tokens"
                            + (f", {v['corpus rows']} corpus rows)" if "corpus rows" in v else ")")
                            for w, v in list(res["words"].items())[:8])
            absent = res.get("rows decided by words absent from the corpus")
            print(f"{task_name} val {stage}: deciding words {top}"
                  + ("" if absent is None else f"; rows decided by words absent from the corpus {absent:.1f} %"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
