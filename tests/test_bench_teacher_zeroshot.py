"""bench/teacher_zeroshot.py's `concepts`: per-style zero-shot accuracy, checked against the
pretraining package's own zero-shot evaluation (open_clip's classifier builder) on all rows."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))



def test_concepts_per_style_agree_with_the_pretraining_zero_shot(small_world, tiny_teacher):
    from teacher_zeroshot import concept_scores

    from clip_td.lib.teacher import FrozenTeacher
    from pretrain.data import read_zeroshot
    from pretrain.metrics import encode_images, zeroshot_accuracy, zeroshot_weights

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    root = small_world / "pretrain"
    scores = concept_scores(teacher, root)
    sets = read_zeroshot(root)
    assert set(scores) == {"source", "shift"} and all(set(v) == set(sets) for v in scores.values())
    for name, spec in sets.items():
        w = zeroshot_weights(teacher.model, teacher.tokenizer, spec["classnames"], spec["templates"], "cpu")
        img = encode_images(teacher.model, spec["images"], teacher.image_transform(), "cpu")
        overall = zeroshot_accuracy(img, w, spec["labels"])
        n = {s: spec["styles"].count(s) for s in ("source", "shift")}
        mixed = sum(scores[s][name] * n[s] for s in n) / sum(n.values())
        assert mixed == pytest.approx(overall, abs=1e-3)


def test_distinguishing_words_are_those_some_candidates_lack():
    from teacher_zeroshot import distinguishing_words, words

    assert words("Diamond0 is near the top-left.") == ["diamond", "is", "near", "the", "top", "left"]
    cands = ["d is near the top left.", "d is near the bottom.", "d is in the center.", "d is near the left."]
    assert distinguishing_words(cands) == ["bottom", "center", "in", "left", "near", "top"]
    assert distinguishing_words(["a red circle", "a red circle"]) == []
    assert distinguishing_words([]) == []


def test_corpus_word_rows_counts_rows_over_the_caption_columns(tmp_path):
    from teacher_zeroshot import corpus_word_rows

    path = tmp_path / "train.tsv"
    path.write_text("filepath\ttitle\tsynthetic_caption\tother\n"
                    "a.jpg\ta red circle\tred red square\ttop\n"
                    "b.jpg\tcircle left of square\t\ttop\n")
    counts = corpus_word_rows(path)
    assert counts["red"] == 1 and counts["circle"] == 2 and counts["square"] == 2 and counts["left"] == 1
    assert counts["top"] == 0  # not a caption column
    assert corpus_word_rows(path, ("title", "other"))["top"] == 2
    # the places column counts as the place captions written from it
    path.write_text("filepath\ttitle\tplaces\n"
                    "a.jpg\ta red circle\tcircle at top left|square at center\n"
                    "b.jpg\ta square\tsquare at bottom\n")
    placed = corpus_word_rows(path, ("title", "places"))
    assert (placed["near"], placed["top"], placed["in"], placed["center"], placed["square"]) == (2, 1, 1, 1, 2)
    assert placed["at"] == 0 and corpus_word_rows(path)["near"] == 0


def test_corpus_columns_follow_the_teachers_recipe():
    from teacher_zeroshot import CAPTION_COLUMNS, corpus_columns

    assert CAPTION_COLUMNS == ("title", "synthetic_caption", "facts")
    assert corpus_columns(None) == corpus_columns("ViT-B-32") == CAPTION_COLUMNS
    assert corpus_columns("recipe:lit_scene") == CAPTION_COLUMNS  # place_captions 0
    assert corpus_columns("recipe:lit_scene_place") == CAPTION_COLUMNS + ("places",)  # 0.25, from its _base_


def test_candidate_words_with_the_shipped_teachers_fitted_vocabulary():
    """The shipped teacher's WordPiece vocabulary holds "left" whole and spells "top" and
    "bottom" in pieces (to ##p; b ##o ##t ##t ##o ##m)."""
    from collections import Counter

    from teacher_zeroshot import candidate_words

    from clip_td.lib.teacher import FrozenTeacher
    from pretrain.shipped import shipped_dir

    class TwoStage:
        def teacher_texts(self, row):
            if row["_stage"] == 1:
                return "", [f"x near the {w}" for w in row["regions"]], 0
            return "", ["x is left", "x is right"], 0

    teacher = FrozenTeacher.from_name(f"local-dir:{shipped_dir('default_teacher')}")
    rows = [{"regions": ["top", "left"]}, {"regions": ["bottom", "left"]}, {"regions": ["left", "right"]}]
    corpus = Counter({"left": 5, "right": 4})
    got = candidate_words(teacher, TwoStage(), rows, 1, corpus)
    assert got["rows"] == 3
    assert got["rows decided by words absent from the corpus"] == pytest.approx(200.0 / 3)
    assert got["words"] == {"left": {"rows": 3, "tokens": 1, "corpus rows": 5},
                            "bottom": {"rows": 1, "tokens": 6, "corpus rows": 0},
                            "right": {"rows": 1, "tokens": 1, "corpus rows": 4},
                            "top": {"rows": 1, "tokens": 2, "corpus rows": 0}}
    assert list(got["words"]) == ["left", "bottom", "right", "top"]  # by rows decided, then by word
    first = candidate_words(teacher, TwoStage(), rows, 0, None)
    assert "rows decided by words absent from the corpus" not in first
    assert first["words"] == {"left": {"rows": 3, "tokens": 1}, "right": {"rows": 3, "tokens": 1}}


def test_vcr_scores_qa2r_over_the_rationales(small_world, tiny_teacher):
    """`qa2r: teacher` is the argmax over question + right answer + each rationale, recomputed
    here row by row from the teacher's own encoders."""
    import torch
    from teacher_zeroshot import score_choice

    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import _load_image
    from tasks import get_task

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    task = get_task("vcr")
    task.setup(None, None)
    ds = task.load(small_world / "vcr", "val")
    rows = [ds[i] for i in range(12)]
    out, _ = score_choice(teacher, task, rows)
    transform, right = teacher.image_transform(), 0
    for r in rows:
        img = teacher.encode_images(_load_image(r["image"], transform)[None])["image_embed"][0]
        gold = r["answers"][r["answer_label"]]
        cands = [f"{r['text']} {gold} {x}" for x in r["rationales"]]
        right += int((teacher.encode_texts(cands)["text_embed"] @ img).argmax()) == r["rationale_label"]
    assert out["qa2r: chance"] == 25.0
    assert out["qa2r: teacher"] == pytest.approx(100.0 * right / len(rows))


def test_vqa_bare_answer_rows_score_the_answer_words_alone(small_world, tiny_teacher):
    """`teacher, all answers` / `teacher, answer sets` rank cos(image, bare answer word), whatever
    method.question_candidates says (a run's default prefixes each row's own question, which a
    bench over many rows must not take from the first row); recomputed row by row here."""
    import torch
    from teacher_zeroshot import score_open_answers

    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import _load_image
    from tasks import get_task

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    task = get_task("vqa")
    train = task.load(small_world / "vqa", "train")
    settings = load_config(FinetuneConfig, overrides=["method.answer_sets=true"])
    assert settings.method.question_candidates  # the default this bench must not follow
    task.setup(train, settings)
    ds = task.load(small_world / "vqa", "val")
    rows = [ds[i] for i in range(12)]
    out, _ = score_open_answers(teacher, task, train, rows)
    vocab, transform = task.answer_vocab, teacher.image_transform()
    words = teacher.encode_texts([vocab.decode(i) for i in range(len(vocab))])["text_embed"]
    full = in_set = 0.0
    for r in rows:
        img = teacher.encode_images(_load_image(r["image"], transform)[None])["image_embed"][0]
        cos = words @ img
        mask = task.teacher_extras(r)["cand_mask"]
        scores = vocab.soft_scores(r["answers"])
        full += scores.get(int(cos.argmax()), 0.0)
        in_set += scores.get(int(cos.masked_fill(~mask, -torch.inf).argmax()), 0.0)
    assert out["teacher, all answers"] == pytest.approx(100.0 * full / len(rows))
    assert out["teacher, answer sets"] == pytest.approx(100.0 * in_set / len(rows))


def test_snli_ve_contrast_is_broken_down_by_group_and_gold_label(small_world, tiny_teacher):
    """The entailment-vs-contradiction threshold's accuracy per hypothesis group and gold label
    adds back up to the overall figure, row for row."""
    from teacher_zeroshot import probe_inputs, score_choice

    from clip_td.lib.teacher import FrozenTeacher
    from tasks import get_task

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    task = get_task("snli_ve")
    train = task.load(small_world / "snli_ve", "train")
    task.setup(train, None)
    fit = probe_inputs(teacher, task, [train[i] for i in range(min(60, len(train)))])
    ds = task.load(small_world / "snli_ve", "val")
    rows = [ds[i] for i in range(min(40, len(ds)))]
    out, groups = score_choice(teacher, task, rows, fit)
    key = "entailment vs contradiction"
    parts = [res for g in groups.values() for k, res in g.items() if k.startswith(f"{key} | ")]
    gold = [task.teacher_texts(r)[2] for r in rows]
    names = list(task.label_names)
    assert sum(p["n"] for p in parts) == sum(names[y] in ("entailment", "contradiction") for y in gold)
    right = sum(p["n"] * p["accuracy"] / 100.0 for p in parts)
    assert 100.0 * right / sum(p["n"] for p in parts) == pytest.approx(out[f"{key}, threshold on cos(image, text)"], abs=1e-4)
    for g, res in groups.items():
        n_entailed = sum(1 for r, y in zip(rows, gold) if " ".join(str(r["text"]).split()[:2]) == g and names[y] == "entailment")
        assert res.get(f"{key} | entailment", {"n": 0})["n"] == n_entailed
    # the per-group AUC, recomputed from cos(image, h) row by row
    from teacher_zeroshot import image_embeds, task_text_cos

    cos = task_text_cos(teacher, task, rows, image_embeds(teacher, rows)).tolist()
    seen = 0
    for g, res in groups.items():
        hi = [c for c, r, y in zip(cos, rows, gold) if " ".join(str(r["text"]).split()[:2]) == g and names[y] == "entailment"]
        lo = [c for c, r, y in zip(cos, rows, gold) if " ".join(str(r["text"]).split()[:2]) == g and names[y] == "contradiction"]
        auc = res.get("entailment above contradiction, AUC of cos(image, text)")
        assert (auc is None) == (not hi or not lo)
        if auc is not None:
            seen += 1
            wins = sum((h > l) + 0.5 * (h == l) for h in hi for l in lo)
            assert auc == pytest.approx(100.0 * wins / (len(hi) * len(lo)), abs=1e-3)
    assert seen >= 1


def test_ranking_auc_hand_computed():
    from teacher_zeroshot import ranking_auc

    assert ranking_auc([3.0, 1.0], [2.0, 0.0]) == pytest.approx(75.0)  # 3>2, 3>0, 1>0; 1<2
    assert ranking_auc([1.0], [1.0, 0.0]) == pytest.approx(75.0)  # a tie counts half
    assert ranking_auc([0.0], [1.0]) == 0.0
