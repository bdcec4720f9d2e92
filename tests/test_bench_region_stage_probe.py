"""bench/region_stage_probe.py: the region objective alone from an image initialisation, on a tiny run."""

import importlib.util
import json
from pathlib import Path

import pytest

from clip_td.base.io import InputError
from pretrain.student.train import main as pretrain
from test_pretrain_student import TINY, write_corpus
from test_pretrain_student_regions import REGIONS_ON

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("region_stage_probe", REPO / "bench" / "region_stage_probe.py")
rsp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rsp)


def test_the_probe_trains_from_the_image_init_and_reports_each_kind(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    keys = [f"data.root={root}", *TINY, *REGIONS_ON, "model.max_text_len=40"]
    pretrain([*keys, "train.max_steps=1", f"output_dir={tmp_path / 'init'}", "image_init.steps=2",
              "image_init.batch_size=4", "image_init.eval_scenes=4", "image_init.eval_every=2"])
    weights = tmp_path / "init" / "image_init.safetensors"
    args = [str(weights), "--steps", "3", "--eval-every", "2", "--eval-scenes", "5", "--max-objects", "3",
            "--curriculum", "2", "--eval-objects", "2", "--place-mask-prob", "1", "--set",
            *[k for k in keys if not k.startswith(("image_init.max_objects", "image_init.eval_scenes"))]]
    a = rsp.main([*args, "--out", str(tmp_path / "a.json")])
    assert [r["step"] for r in a["rows"]] == [2, 3]  # every 2 steps and the last
    assert (a["max_objects"], a["curriculum"], a["eval_objects"], a["place_mask_prob"]) == (3, 2, 2, 1.0)
    last = a["rows"][-1]
    assert last["region"]["tokens"] + last["relation"]["tokens"] == sum(a["tokens"][k] for k in ("region", "relation"))
    assert all(0 <= last[k]["accuracy"] <= 100 for k in rsp.KINDS)
    # one seed, one thread: the same numbers again, and the file holds them
    b = rsp.main([*args, "--out", str(tmp_path / "b.json")])
    assert [r["place_accuracy"] for r in a["rows"]] == [r["place_accuracy"] for r in b["rows"]]
    assert [r["loss"] for r in a["rows"]] == [r["loss"] for r in b["rows"]]
    assert json.loads((tmp_path / "a.json").read_text())["rows"][-1]["place_accuracy"] == last["place_accuracy"]


def test_a_count_below_one_is_one_message():
    with pytest.raises(InputError, match="--steps 0: expected at least 1"):
        rsp.main(["x.safetensors", "--steps", "0"])
