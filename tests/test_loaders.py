"""Loaders on tiny official-format samples: rows, columns, paths config, errors, predictions."""

import json

import pytest

from clip_td.base.io import InputError
from tasks import get_task
from test_loaders_data import write_snli_ve, write_vcr, write_vqa


def test_vqa_loader_rows(tmp_path):
    write_vqa(tmp_path)
    ds = get_task("vqa").load(tmp_path, "val")
    assert len(ds) == 3
    row = ds[1]
    assert row["uid"] == "2" and row["question_id"] == 2 and row["text"] == "How many dogs?"
    assert row["answers"] == ["two"] * 5 + ["2"] * 3 + ["3"] * 2
    assert row["question_type"] == "how many" and row["answer_type"] == "number"
    assert row["image"] == str((tmp_path / "images/val/COCO_val_000000000001.jpg").resolve())


def test_vqa_paths_config_real_layout(tmp_path):
    write_vqa(tmp_path, split="val2014")
    (tmp_path / "images" / "val2014").rename(tmp_path / "val2014")
    task = get_task("vqa", paths={"image_dir": "{subtype}", "split_names": {"val": "val2014"}})
    ds = task.load(tmp_path, "val")
    assert ds[0]["image"].endswith("val2014/COCO_val2014_000000000001.jpg")
    with pytest.raises(InputError, match="unknown VQAPaths key 'image_folder'"):
        get_task("vqa", paths={"image_folder": "x"})


def test_vqa_loader_first_problem(tmp_path):
    write_vqa(tmp_path)
    (tmp_path / "images/val/COCO_val_000000000002.jpg").unlink()
    with pytest.raises(InputError, match=r"annotations\[2\]: .*COCO_val_000000000002.jpg: image file not found"):
        get_task("vqa").load(tmp_path, "val")


def test_snli_ve_loader(tmp_path):
    write_snli_ve(tmp_path, split="dev")
    ds = get_task("snli_ve", paths={"split_names": {"val": "dev"}}).load(tmp_path, "val")
    assert ds["label"] == [0, 2, 1, 0]
    assert ds["label_name"][2] == "neutral" and ds["text"][0] == "A dog runs." and ds["uid"][3] == "p4"


def test_vcr_loader_renders_references(tmp_path):
    write_vcr(tmp_path)
    ds = get_task("vcr").load(tmp_path, "val")
    row = ds[0]
    assert row["text"] == "Why is person0 and person2 near dog1?"
    assert row["answers"][0] == "Because person0 likes dog1."
    assert row["rationales"][3] == "dog1 is calm."
    assert row["answer_label"] == 0 and row["rationale_label"] == 1 and row["movie"] == "m1"
    assert row["boxes"][1] == [1.0, 1.0, 5.0, 5.0, 0.8] and row["objects"] == ["person", "dog", "person"]


def test_vcr_unlabeled_test_split(tmp_path):
    write_vcr(tmp_path, split="test")
    lines = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    for rec in lines:
        del rec["answer_label"], rec["rationale_label"]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    ds = get_task("vcr").load(tmp_path, "test")
    assert ds["answer_label"] == [-1] * 4


@pytest.mark.parametrize("name", ["vqa", "snli_ve", "vcr"])
def test_write_predictions_scores_like_evaluate(tmp_path, name):
    write = {"vqa": write_vqa, "snli_ve": write_snli_ve, "vcr": write_vcr}[name]
    write(tmp_path / "data")
    task = get_task(name)
    ds = task.load(tmp_path / "data", "val")
    # official rule (a013f00): q2's GTs disagree, so "two" -> "2" everywhere: 2 x8, 3 x2, and every
    # annotator sees >= 3 other "2" -> q2 = 1; so (1 + 1 + 0) / 3
    preds = {"vqa": ["red", "2", "no"], "snli_ve": [0, 1, 1, 0], "vcr": [(0, 1), (1, 2), (0, 0), (3, 3)]}[name]
    files = task.write_predictions(ds, preds, tmp_path / "out", "val")
    expected = {"vqa": {"vqa_acc": 66.67}, "snli_ve": {"accuracy": 75.0},
                "vcr": {"q2a": 75.0, "qa2r": 50.0, "q2ar": 50.0}}[name]
    assert task.score_files(files) == pytest.approx(expected)
    assert set(task.metric_names) == set(expected)
    # a subset of the split is scored against matching, written annotation files
    sub = ds.select([0, 1])
    files = task.write_predictions(sub, preds[:2], tmp_path / "out2", "val")
    assert str(tmp_path / "out2") in files["annotations"]
    assert len(task.score_files(files)) == len(expected)


def test_unknown_task():
    with pytest.raises(KeyError, match="unknown task 'gqa'"):
        get_task("gqa")
