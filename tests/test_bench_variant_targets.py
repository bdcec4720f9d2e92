"""bench/variant_targets.py on hand-built results rows: the variant takes clip_td's place in the
target checks, only on the cells it has, and a folder with several rows asks which."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from variant_targets import compare, markdown  # noqa: E402

from clip_td.base.io import InputError  # noqa: E402


def _rows(method, frac, val, shift):
    """Three seeds per split: the values given (mean and sample std follow by hand)."""
    return [{"task": "vqa", "method": method, "train_fraction": frac, "seed": s, "split": split,
             "metric": "vqa_acc", "value": v}
            for split, values in (("val", val), ("val_shift", shift)) for s, v in enumerate(values)]


BASE = (_rows("none", 0.01, [40, 41, 42], [30, 31, 32]) + _rows("naive_kd", 0.01, [41, 41, 41], [30, 30, 30])
        + _rows("clip_td", 0.01, [41, 42, 43], [30, 31, 32])
        + _rows("none", 0.05, [50, 50, 50], [45, 45, 45]) + _rows("clip_td", 0.05, [49, 50, 51], [45, 45, 45])
        + _rows("clip_td[method.eta=0.0]", 0.01, [90, 90, 90], [90, 90, 90]))  # a tagged row: never read
VARIANT = _rows("clip_td[method.feature_gate=True]", 0.01, [44, 45, 46], [36, 37, 38])


def test_the_variant_replaces_clip_td_on_its_own_cells():
    got = compare(BASE, VARIANT)
    assert got["variant"] == "clip_td[method.feature_gate=True]"
    (cell,) = got["cells"]  # only VQA 1 %: the variant has no 5 % cell, so 5 % is not judged
    assert (cell["task"], cell["fraction"]) == ("vqa", 0.01)
    assert cell["none_val"] == {"mean": 41.0, "std": 1.0, "n": 3}
    assert cell["clip_td_val"]["mean"] == 42.0 and cell["variant_val"] == {"mean": 45.0, "std": 1.0, "n": 3}
    assert cell["variant_val_shift"]["mean"] == 37.0
    # clip_td: gain +1 is not above the std 1 (T1 no), +1 < +10 (T2 no), 42 > 41 (T3 yes), shift gain 0 < 1 (T4 no)
    assert got["targets"]["clip_td"] == {"T1": [0, 1], "T2": [0, 1], "T3": [1, 1], "T4": [0, 1], "T5": [0, 0]}
    # variant: +4 > 1 (T1), +4 < 10 (T2 no), 45 > 41 (T3), shift gain +6 >= +4 (T4)
    assert got["targets"]["variant"] == {"T1": [1, 1], "T2": [0, 1], "T3": [1, 1], "T4": [1, 1], "T5": [0, 0]}
    # one judged cell: the mean gain is that cell's gain over none
    assert got["mean_gain"] == {"clip_td": {"val": 1.0, "val_shift": 0.0}, "variant": {"val": 4.0, "val_shift": 6.0}}
    md = markdown(got)
    assert "| mean gain over none, val_shift | +0.00 | +6.00 |" in md
    assert "| vqa 1 % | 41.00 +- 1.00 (n=3) / 31.00 +- 1.00 (n=3) |" in md
    assert "| T1 | 0 of 1 | 1 of 1 |" in md


def test_a_folder_with_two_rows_needs_the_variant_named():
    two = VARIANT + _rows("clip_td[method.feature_gate=False]", 0.01, [1, 2, 3], [1, 2, 3])
    with pytest.raises(InputError, match="holds 2 method rows"):
        compare(BASE, two)
    with pytest.raises(InputError, match="not in the variant folder"):
        compare(BASE, two, "clip_td[x=1]")
    assert compare(BASE, two, "clip_td[method.feature_gate=False]")["cells"][0]["variant_val"]["mean"] == 2.0
