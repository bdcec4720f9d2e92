"""bench/teacher_localisation.py: the referenced objects, their grid cells and the coverage of a
top-k selection on hand-computed cases, and a run on the small world."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))



def test_referenced_objects_are_the_named_indices():
    from teacher_localisation import referenced

    objects = ["circle", "square", "circle"]
    assert referenced("Where is circle2 relative to square1? circle2 is left of square1.", objects) == [1, 2]
    assert referenced("What color is square0?", objects) == []  # object 0 is a circle: not a reference
    assert referenced("What color is circle0?", objects) == [0]


def test_object_cells_and_coverage_hand_case():
    from teacher_localisation import coverage, object_cells

    # 64 px, 4x4 grid of 16 px cells (centres 8, 24, 40, 56): a box over x 0-30, y 0-30 holds the
    # centres of cells (0, 0), (0, 1), (1, 0), (1, 1); a 4 px box at (60, 60) holds no centre ->
    # the cell holding its own centre, (3, 3)
    boxes = [[0, 0, 30, 30, 1.0], [58, 58, 62, 62, 1.0]]
    cells = object_cells(boxes, [0], (64, 64), 4).view(4, 4)
    assert cells.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert object_cells(boxes, [1], (64, 64), 4).nonzero().flatten().tolist() == [15]
    # rho 0.25 of 16 -> k = 4; the scores' top 4 hold 3 of the object's 4 cells -> 0.75
    objects = cells.flatten().unsqueeze(0)
    scores = torch.zeros(1, 16)
    scores[0, [0, 1, 4, 9]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert coverage(scores, objects, 0.25).tolist() == [pytest.approx(0.75)]


def test_bench_runs_on_the_small_world(small_world, tmp_path):
    """A ResNet teacher at 64 px: value@1 is its 2x2 grid, value@2 a 4x4 one; random is rho."""
    from teacher_localisation import main

    from clip_td.testing.tiny_checkpoints import save_tiny_teacher

    teacher = save_tiny_teacher(tmp_path / "rn", resnet=True, image_size=64, width=64)
    out = tmp_path / "loc.json"
    res = main(["--teacher", f"local-dir:{teacher}", "--data-root", str(small_world), "--variants", "value@1",
                "value@2", "--splits", "val", "--max-rows", "12", "--out", str(out)])
    assert json.loads(out.read_text()) == res
    assert (res["selected"], res["random"]) == (16, 25.0)
    got = res["splits"]["val"]["variants"]
    assert [got[v]["teacher_grid"] for v in ("value@1", "value@2")] == [2, 4]
    assert 0 < res["splits"]["val"]["rows"] <= 12
    for v in got.values():
        assert 0.0 <= v["question"] <= 100.0 and 0.0 <= v["task"] <= 100.0 and v["oracle"] == pytest.approx(100.0)
