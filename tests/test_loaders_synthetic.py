"""The synthetic world (tasks.synthetic.build_world, small) passes data check for all three
tasks and captions, and loads through the official-format loaders."""

import pytest

from tasks import get_task
from tasks.check import check_task
from tasks.splits import lowshot_indices


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tasks.synthetic import build_world

    out = tmp_path_factory.mktemp("world") / "w"
    build_world(out, seed=0, size="small", image_size=32, workers=1)
    return out


@pytest.mark.parametrize("task,sub", [("vqa", "vqa"), ("snli_ve", "snli_ve"), ("vcr", "vcr"), ("captions", "pretrain")])
def test_world_passes_data_check(world, task, sub):
    counts, problems = check_task(task, world / sub)
    assert problems == []
    if task != "captions":
        assert set(counts["splits"]) == {"train", "val", "val_shift"}
        assert all(c["instances"] > 0 for c in counts["splits"].values())
    else:
        assert set(counts["files"]) == {"train.tsv", "val.tsv"}


@pytest.mark.parametrize("name", ["vqa", "snli_ve", "vcr"])
def test_world_loads_and_scores_gold(world, tmp_path, name):
    task = get_task(name)
    ds = task.load(world / name, "val")
    assert len(ds) > 0 and all(p.endswith(".jpg") for p in ds["image"])
    if name == "vcr":
        assert not any("[" in t for t in ds["text"])  # object references rendered as words
    gold = {"vqa": lambda: ds["multiple_choice_answer"], "snli_ve": lambda: ds["label"],
            "vcr": lambda: list(zip(ds["answer_label"], ds["rationale_label"]))}[name]()
    scores = task.score_files(task.write_predictions(ds, gold, tmp_path, "val"))
    if name == "vqa":
        assert scores["vqa_acc"] > 90.0  # the consensus answer is not always 100% by the 3-of-10 rule
    else:
        assert all(v == 100.0 for v in scores.values())
    train = task.load(world / name, "train")
    idx = lowshot_indices(train[task.label_key], 0.1, 0, train["uid"])
    assert len(idx) == round(0.1 * len(train))
