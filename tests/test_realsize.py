"""The real-size pairs end to end on CPU (slow: `pytest -m slow tests/test_realsize.py`).

A ViLT-B/32-shaped student (random weights, 384 px -> 12x12 = 144 image tokens) fine-tuned with
`clip_td` against open_clip ViT-B-32 (7x7 = 49 patches) and ViT-B-16 (14x14 = 196 patches), random
weights, on the small synthetic world rendered at 224 px (`clip-td data synth --image-size 224`):
the teacher cache is built, the distiller sees the real token counts, predictions are written and
scored. A few steps at batch 2 only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def world224(tmp_path_factory) -> Path:
    from tasks.synthetic import build_world

    out = tmp_path_factory.mktemp("world224") / "synth"
    build_world(out, seed=0, size="small", image_size=224, workers=2)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config, teacher_patches", [("realsize_vitb32", 49), ("realsize_vitb16", 196)])
def test_realsize_pair_end_to_end(world224, tmp_path, monkeypatch, config, teacher_patches):
    import numpy as np

    import clip_td.lib.distill as distill
    from clip_td.app.trainer import main
    from clip_td.app.cli import main as cli

    seen = []
    real_forward = distill.Distiller.forward

    def spy(self, student_out, teacher_out, batch, logits):
        terms = real_forward(self, student_out, teacher_out, batch, logits)
        seen.append((tuple(student_out["image_tokens"].shape), tuple(teacher_out["patch_tokens"].shape),
                     float(terms["tok_loss"].detach())))
        return terms

    monkeypatch.setattr(distill.Distiller, "forward", spy)
    out, cache = tmp_path / "run", tmp_path / "teacher_cache"
    overrides = {"output_dir": out, "data.root": world224, "teacher.cache_dir": cache, "method.name": "clip_td",
                 "train.fraction": 0.05, "train.max_steps": 2, "train.batch_size": 2, "eval.splits": "[val]",
                 "eval.batch_size": 25}
    code = main(["--config", str(REPO / "configs" / "finetune" / f"{config}.yaml"),
                 *[f"{k}={v}" for k, v in overrides.items()]])
    assert code == 0

    # distillation ran at the real token counts: 144 student image tokens (768 wide), the teacher's patches
    assert len(seen) == 2
    for student_shape, teacher_shape, tok_loss in seen:
        assert student_shape == (2, 144, 768) and teacher_shape == (2, teacher_patches, 512)
        assert np.isfinite(tok_loss) and tok_loss > 0
    # the teacher cache was built with those patches, once per image of the training split
    manifests = list(cache.glob("*/manifest.json"))
    assert len(manifests) == 1
    patches = [np.load(p, mmap_mode="r") for p in manifests[0].parent.glob("shard-*/patch_tokens.npy")]
    assert patches and all(p.shape[1:] == (teacher_patches, 512) for p in patches)
    # predictions written in the official format and scored to the metrics' number
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "clip_td" and m["train"]["steps"] == 2 and list(m["eval"]) == ["val"]
    files = m["files"]["val"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli(["evaluate", "vqa", "--questions", files["questions"], "--annotations", files["annotations"],
                    "--results", files["predictions"]]) == 0
    assert json.loads(buf.getvalue())["overall"] == m["eval"]["val"]["vqa_acc"]
    assert len(json.loads(Path(files["predictions"]).read_text())) == 75
