"""bench/teacher_zeroshot.py's `concepts`: per-style zero-shot accuracy, checked against the
pretraining package's own zero-shot evaluation (open_clip's classifier builder) on all rows."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from test_finetune_helpers import small_world, tiny_teacher  # noqa: E402,F401


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
