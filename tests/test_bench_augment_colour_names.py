"""bench/augment_colour_names.py: objects whose colour an augmentation moves nearer another name."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import augment_colour_names as bench  # noqa: E402

SQUARE = {"style": "source", "objects": [
    # a square of half-side 0.82 r (render._draw_shape): r = 0.25 at 16 px spans x, y in [4.7, 11.3)
    {"shape": "square", "colour": "orange", "size": "large", "x": 0.5, "y": 0.5, "r": 0.25},
]}


def test_inner_mask_keeps_the_pixels_whose_neighbours_are_all_inside_the_object():
    """At 16 px (drawn at 32 and box-downsampled) the square covers output pixels 5..10 fully
    (pixels 4 and 11 only in part); the inner mask drops one more ring: pixels 6..9, a 4 x 4 block."""
    (mask,) = bench.inner_masks(SQUARE, 16)
    ys, xs = np.nonzero(mask)
    assert mask.sum() == 16
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (6, 9, 6, 9)


def test_count_renamed_reads_the_mean_inner_colour_against_the_palette():
    """The rendered orange square stays orange; darkened to 0.6 it is nearest brown (0.6 * (245,
    140, 25) = (147, 84, 15): 31 from brown, 113 from orange; the world's colour jitter is +-12), so
    every draw counts once as orange->brown."""
    from tasks.synthetic.render import render_scene

    image = render_scene(SQUARE, 16, seed=0)
    masks = [bench.inner_masks(SQUARE, 16)]
    clean = bench.count_renamed([image], [SQUARE], masks, lambda im: im, draws=3)
    assert (clean["objects"], clean["renamed"]) == (3, 0)
    dark = bench.count_renamed([image], [SQUARE], masks, lambda im: ImageEnhance.Brightness(im).enhance(0.6), draws=3)
    assert (dark["objects"], dark["renamed"], dark["renamed_pct"]) == (3, 3, 100.0)
    assert dark["confusions"] == {"orange->brown": 3}


def test_main_writes_one_entry_per_policy_and_the_clean_floor(tmp_path):
    out = tmp_path / "names.json"
    result = bench.main(["--scenes", "4", "--draws", "2", "--out", str(out)])
    from clip_td.app.batches import AUGMENT_POLICIES

    assert list(result["policies"]) == ["clean", "shift_style", *AUGMENT_POLICIES]
    assert out.exists()
    clean = result["policies"]["clean"]
    assert clean["renamed"] == 0
    assert result["policies"]["shift_style"]["objects"] == clean["objects"]
    assert all(result["policies"][k]["objects"] == 2 * clean["objects"] for k in AUGMENT_POLICIES)
