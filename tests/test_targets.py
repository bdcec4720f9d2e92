"""The benchmark's target checks on a hand-built aggregate."""

from clip_td.app.benchmark_targets import check_targets, targets_markdown


def _agg(cells):
    """{(method, fraction, split): (mean, std)} for VQA -> the shape of sweep.aggregate's output."""
    return {("vqa", m, f, s, "vqa_acc"): {"mean": mean, "std": std, "n": 3, "seeds": [0, 1, 2]}
            for (m, f, s), (mean, std) in cells.items()}


def test_targets_hand_case():
    agg = _agg({
        ("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (45.0, 0.5), ("clip_td", 0.01, "val"): (51.0, 2.0),
        ("none", 0.01, "val_shift"): (38.0, 1.0), ("clip_td", 0.01, "val_shift"): (50.0, 1.0),
        ("none", 0.25, "val"): (50.0, 1.5), ("naive_kd", 0.25, "val"): (52.0, 0.5), ("clip_td", 0.25, "val"): (51.0, 0.5),
        ("none", 0.25, "val_shift"): (48.0, 1.0), ("clip_td", 0.25, "val_shift"): (48.5, 1.0),
        ("none", 1.0, "val"): (60.0, 1.0), ("naive_kd", 1.0, "val"): (60.0, 1.0), ("clip_td", 1.0, "val"): (58.5, 1.5),
    })
    got = {(r["target"], r["fraction"]): (round(r["value"], 4), r["holds"]) for r in check_targets(agg)}
    assert got == {
        ("T1", 0.01): (11.0, True), ("T1", 0.25): (1.0, False),   # 1.0 is not above the std 1.5
        ("T2", 0.01): (11.0, True),                              # VQA needs +10 at the lowest fraction
        ("T3", 0.01): (6.0, True), ("T3", 0.25): (-1.0, False),
        ("T4", 0.01): (12.0, True), ("T4", 0.25): (0.5, False),  # shifted gain 0.5 < in-domain gain 1.0
        ("T5", 1.0): (-1.5, True),                                # -1.5 is within the std 1.5
    }
    md = targets_markdown(agg)
    assert "**T1** clip_td above none by more than the seeds' std (val, fractions <= 25 %): holds in 1 of 2" in md
    assert "| T4 | vqa | 25% | +0.50 | >= 1.00 | no |" in md


def test_no_targets_without_baseline_or_clip_td():
    agg = _agg({("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (41.0, 1.0)})
    assert check_targets(agg) == [] and targets_markdown(agg) == ""
    other = {(t, m, 0.01, "val", "x"): {"mean": 1.0, "std": 0.0} for t in ("my_task",) for m in ("none", "clip_td")}
    assert check_targets(other) == []  # tasks without a known primary metric are not judged
