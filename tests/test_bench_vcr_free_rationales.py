"""bench/vcr_free_rationales.py on the small world with a tiny teacher."""

from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_scores_every_row_and_the_two_picks_agree_where_the_answer_is_right(small_world, tiny_teacher, tmp_path):
    import vcr_free_rationales

    out = tmp_path / "r.json"
    got = vcr_free_rationales.main(["--teacher", f"local-dir:{tiny_teacher}", "--data-root", str(small_world),
                                    "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    from tasks import get_task

    n = len(get_task("vcr").load(small_world / "vcr", "train"))
    assert got["rows"] == n
    # a right teacher answer gives the own-answer candidates the gold answer's strings exactly
    assert got["agree_when_right"] == 100.0
    assert got["q2ar_own"] <= min(got["answer"], got["rationale_own_answer"])
    assert json.loads(out.read_text()) == got
    # the teacher's answers and its gold-answer rationale picks, through the trust gate's reader
    from omegaconf import OmegaConf

    from clip_td.app.teacher_setup import StagedRows, teacher_answers
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.lib.teacher_cache import TeacherCache

    task = get_task("vcr")
    rows = task.load(small_world / "vcr", "train")
    task.setup(rows, OmegaConf.create({"method": {"rationales": True}}))
    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    staged = StagedRows(rows, 2)
    cache = TeacherCache.build(teacher, task.teacher_texts, staged, tmp_path / "cache", name="vcr-train")
    for stage, key in ((0, "answer"), (1, "rationale_gold_answer")):
        logits, gold, _ = teacher_answers(teacher, task, staged, [2 * i + stage for i in range(n)], cache)
        assert got[key] == round(100.0 * (logits.argmax(-1) == gold).float().mean().item(), 2)
