"""`data check` finds every problem of a corrupted copy, each with its file and line."""

import json

from tasks.check import check_task
from test_loaders_data import write_captions, write_snli_ve, write_vcr, write_vqa


def test_clean_data_passes(tmp_path):
    write_vqa(tmp_path / "vqa")
    write_snli_ve(tmp_path / "snli_ve", split="train")
    write_vcr(tmp_path / "vcr")
    write_captions(tmp_path / "pre")
    counts, problems = check_task("vqa", tmp_path / "vqa")
    assert problems == [] and counts["splits"] == {"val": {"instances": 3, "images": 2}}
    counts, problems = check_task("snli_ve", tmp_path / "snli_ve")
    assert problems == [] and counts["splits"] == {"train": {"instances": 4, "images": 2}}
    counts, problems = check_task("vcr", tmp_path / "vcr")
    assert problems == [] and counts["splits"]["val"]["instances"] == 4
    counts, problems = check_task("captions", tmp_path / "pre")
    assert problems == [] and counts["files"] == {"train.tsv": {"rows": 3, "images": 3}}


def test_vqa_every_problem(tmp_path):
    write_vqa(tmp_path)
    a_path = tmp_path / "v2_mscoco_val_annotations.json"
    a = json.loads(a_path.read_text())
    a["annotations"][0]["answers"] = a["annotations"][0]["answers"][:9]
    del a["annotations"][1]["question_type"]
    a_path.write_text(json.dumps(a))
    (tmp_path / "images/val/COCO_val_000000000002.jpg").write_bytes(b"not a jpeg")
    _, problems = check_task("vqa", tmp_path)
    assert len(problems) == 4, problems
    assert "annotations[0].answers: expected 10 answers, found 9" in problems[0]
    assert "annotations[1]: missing field(s) question_type" in problems[1]
    assert "annotations[2]:" in problems[2] and "image does not decode" in problems[2]
    assert "question_id 2 has no annotation" in problems[3]


def test_snli_ve_every_problem(tmp_path):
    write_snli_ve(tmp_path)
    path = tmp_path / "snli_ve_val.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0][:-5]  # malformed JSON
    rec = json.loads(lines[1]); rec["gold_label"] = "maybe"; lines[1] = json.dumps(rec)
    rec = json.loads(lines[2]); del rec["sentence2"]; lines[2] = json.dumps(rec)
    rec = json.loads(lines[3]); rec["Flikr30kID"] = "404.jpg"; lines[3] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "snli_ve_empty.jsonl").write_text("")
    _, problems = check_task("snli_ve", tmp_path)
    assert len(problems) == 5, problems
    assert problems[0] == f"{tmp_path / 'snli_ve_empty.jsonl'}: empty split (no instances)"
    assert problems[1].startswith(f"{path}:1: invalid JSON line")
    assert problems[2] == f"{path}:2: unknown gold_label 'maybe'; expected one of entailment, neutral, contradiction"
    assert problems[3] == f"{path}:3: missing field(s) sentence2"
    assert problems[4].startswith(f"{path}:4: ") and "404.jpg: image file not found" in problems[4]


def test_vcr_every_problem(tmp_path):
    write_vcr(tmp_path)
    path = tmp_path / "val.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    recs[0]["question"][2] = [0, 7]
    recs[1]["answer_choices"] = recs[1]["answer_choices"][:3]
    recs[2]["answer_label"] = 4
    (tmp_path / "vcr1images" / recs[3]["metadata_fn"]).write_text(json.dumps({"boxes": [[0, 0, 1, 1, 1.0]]}))
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    _, problems = check_task("vcr", tmp_path)
    assert len(problems) == 4, problems
    assert problems[0] == f"{path}:1: question: token 2: object reference 7 out of range (objects has 3)"
    assert problems[1] == f"{path}:2: answer_choices: expected 4 choices, found 3"
    assert problems[2] == f"{path}:3: answer_label: expected an integer 0-3, got 4"
    assert problems[3].startswith(f"{path}:4: ") and problems[3].endswith("1 boxes for 3 objects")


def test_captions_every_problem(tmp_path):
    write_captions(tmp_path)
    path = tmp_path / "train.tsv"
    lines = path.read_text().splitlines()
    cells = lines[1].split("\t"); cells[1] = " "; cells[6] = "weird"; lines[1] = "\t".join(cells)
    cells = lines[2].split("\t"); cells[0] = "images/none.jpg"; cells[4] = "[[\"a\", \"DET\", \"det\", 5]]"; lines[2] = "\t".join(cells)
    cells = lines[3].split("\t"); cells[5] = "dog unicorn"; lines[3] = "\t".join(cells)
    lines.append("images/0.jpg\tonly two")
    path.write_text("\n".join(lines) + "\n")
    _, problems = check_task("captions", path)
    assert problems == [
        f"{path}:2: title: empty caption",
        f"{path}:2: style: 'weird' is not one of source, shift",
        f"{path}:3: filepath 'images/none.jpg': image file not found",
        f"{path}:3: parse: token 0: expected [text, pos, dep, head] with head in -1..0, got ['a', 'DET', 'det', 5]",
        f"{path}:4: concepts: unicorn not in concepts.json",
        f"{path}:5: expected 8 columns, found 2",
    ]
    _, problems = check_task("captions", tmp_path / "nowhere")
    assert problems == [f"{tmp_path / 'nowhere'}: not found"]


def test_missing_root_files(tmp_path):
    _, problems = check_task("vcr", tmp_path)
    assert problems == [f"{tmp_path}: no vcr split files found (expected names like {{split}}.jsonl)"]
