"""Writers of tiny official-format samples (VQA v2, SNLI-VE, VCR, captions TSV) for the task tests."""

import json
from pathlib import Path

from PIL import Image


def tiny_image(path: Path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def write_vqa(root: Path, split: str = "val", n_images: int = 2) -> None:
    """3 questions on 2 images; q 3 has all-identical answers."""
    for i in range(1, n_images + 1):
        tiny_image(root / "images" / split / f"COCO_{split}_{i:012d}.jpg")
    qs = [{"question_id": 1, "image_id": 1, "question": "What color is it?"},
          {"question_id": 2, "image_id": 1, "question": "How many dogs?"},
          {"question_id": 3, "image_id": 2, "question": "Is it red?"}]
    answers = {1: ["red"] * 6 + ["dark red"] * 4, 2: ["two"] * 5 + ["2"] * 3 + ["3"] * 2, 3: ["yes"] * 10}
    types = {1: ("what color is the", "other", "red"), 2: ("how many", "number", "2"), 3: ("is it", "yes/no", "yes")}
    anns = [{"question_id": q, "image_id": 1 if q < 3 else 2, "question_type": types[q][0], "answer_type": types[q][1],
             "multiple_choice_answer": types[q][2],
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers[q])]}
            for q in (1, 2, 3)]
    head = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split, "license": {}}
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps({**head, "questions": qs}))
    (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps({**head, "annotations": anns}))


SNLI_ROWS = [("1.jpg", "A dog runs.", "entailment", "p1"), ("1.jpg", "A cat.", "contradiction", "p2"),
             ("2.jpg", "It is noon.", "neutral", "p3"), ("2.jpg", "Two people.", "entailment", "p4")]


def write_snli_ve(root: Path, split: str = "val") -> None:
    for name in ("1.jpg", "2.jpg"):
        tiny_image(root / "images" / name)
    lines = [json.dumps({"Flikr30kID": img, "sentence1": "premise", "sentence2": hyp, "gold_label": lab,
                         "pairID": pid, "captionID": img + "#0", "annotator_labels": [lab]})
             for img, hyp, lab, pid in SNLI_ROWS]
    (root / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")


def vcr_record(k: int, movie: str, answer_label: int, rationale_label: int) -> dict:
    return {
        "annot_id": f"{movie}-{k}", "movie": movie, "objects": ["person", "dog", "person"],
        "img_fn": f"{movie}/img{k}.jpg", "metadata_fn": f"{movie}/img{k}.json",
        "question": ["Why", "is", [0, 2], "near", [1], "?"],
        "answer_choices": [["Because", [0], "likes", [1], "."], ["No", "."], ["Yes", "."], ["Maybe", "."]],
        "rationale_choices": [["It", "smiles", "."], ["Dark", "."], ["Cold", "."], [[1], "is", "calm", "."]],
        "answer_label": answer_label, "rationale_label": rationale_label,
        "question_orig": "q", "answer_orig": "a", "rationale_orig": "r",
    }


def write_vcr(root: Path, split: str = "val", movies=("m1", "m1", "m2", "m3")) -> None:
    recs = []
    for k, movie in enumerate(movies):
        tiny_image(root / "vcr1images" / movie / f"img{k}.jpg")
        meta = {"boxes": [[0, 0, 4, 4, 0.9], [1, 1, 5, 5, 0.8], [2, 2, 6, 6, 0.7]], "segms": [], "width": 8, "height": 8}
        (root / "vcr1images" / movie / f"img{k}.json").write_text(json.dumps(meta))
        recs.append(vcr_record(k, movie, k % 4, (k + 1) % 4))
    (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")


def write_captions(folder: Path, n: int = 3) -> None:
    parse = json.dumps([["a", "DET", "det", 1], ["dog", "NOUN", "ROOT", -1]])
    rows = ["filepath\ttitle\tsynthetic_caption\tocr_text\tparse\tconcepts\tstyle\tnoise"]
    for i in range(n):
        tiny_image(folder / "images" / f"{i}.jpg")
        rows.append(f"images/{i}.jpg\ta dog\ta dog on grass\t\t{parse}\tdog\tsource\tclean")
    (folder / "concepts.json").write_text(json.dumps({"concepts": ["dog", "cat"]}))
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
