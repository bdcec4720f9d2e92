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
    got = {(r["target"], r["fraction"]): (round(r["value"], 4), r["holds"]) for r in check_targets(agg)
           if r["method"] == "clip_td"}
    assert got == {
        ("T1", 0.01): (11.0, True), ("T1", 0.25): (1.0, False),   # 1.0 is not above the std 1.5
        ("T2", 0.01): (11.0, True),                              # VQA needs +10 at the lowest fraction
        ("T3", 0.01): (6.0, True), ("T3", 0.25): (-1.0, False),
        ("T4", 0.01): (12.0, True), ("T4", 0.25): (0.5, False),  # shifted gain 0.5 < in-domain gain 1.0
        ("T5", 1.0): (-1.5, True),                                # -1.5 is within the std 1.5
    }
    md = targets_markdown(agg)
    assert "**T1** clip_td above none by more than the seeds' std (val, fractions <= 25 %): holds in 1 of 2" in md
    assert "| clip_td | T4 | vqa | 25% | +0.50 | >= 1.00 | no |" in md
    assert "| method | T1 |" not in md  # one judged row: its counts are on the target lines alone


def test_targets_judge_each_clip_td_row_against_the_same_baselines():
    """A clip_td row with extra grid keys is judged on its own cells against the same none and
    naive_kd; ablation presets are not judged; T2 sits at none's lowest fraction even where the
    row has no cell there."""
    row = "clip_td[method.teacher_tau=0.5]"
    agg = _agg({
        ("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (45.0, 0.5), ("clip_td", 0.01, "val"): (41.0, 2.0),
        ("none", 0.05, "val"): (50.0, 1.0), ("naive_kd", 0.05, "val"): (52.0, 1.0),
        ("none", 0.05, "val_shift"): (44.0, 1.0),
        (row, 0.05, "val"): (53.5, 0.5), (row, 0.05, "val_shift"): (46.0, 2.0),
        ("clip_td_nosel", 0.01, "val"): (60.0, 0.1),
    })
    got = {(r["method"], r["target"], r["fraction"]): (round(r["value"], 4), r["holds"]) for r in check_targets(agg)}
    assert got == {
        ("clip_td", "T1", 0.01): (1.0, False), ("clip_td", "T2", 0.01): (1.0, False), ("clip_td", "T3", 0.01): (-4.0, False),
        (row, "T1", 0.05): (3.5, True), (row, "T3", 0.05): (1.5, True),
        (row, "T4", 0.05): (2.0, False),  # shifted gain 2.0 < in-domain gain 3.5; no T2: 5 % is not none's lowest
    }
    md = targets_markdown(agg)
    assert "- **T1** clip_td above none by more than the seeds' std (val, fractions <= 25 %): holds in 0 of 1\n" in md
    assert "| method | T1 | T2 | T3 | T4 | T5 | not run |" in md
    # the last column: the cells none has (1 and 5 %) that the row has not
    assert "| clip_td | 0 of 1 | 0 of 1 | 0 of 1 | - | - | vqa 5 % |" in md
    assert f"| {row} | 1 of 1 | - | 1 of 1 | 0 of 1 | - | vqa 1 % |" in md
    assert f"| {row} | T3 | vqa | 5% | +1.50 | > 0 | yes |" in md
    assert "clip_td_nosel" not in md


def test_targets_judge_the_label_free_preset_after_the_clip_td_rows():
    """`clip_td_label_free` (and its rows with extra grid keys) is judged like a clip_td row, listed
    after them; the headline counts stay `clip_td`'s."""
    free, free_row = "clip_td_label_free", "clip_td_label_free[method.label_free_augment=True]"
    agg = _agg({
        ("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (45.0, 0.5), ("clip_td", 0.01, "val"): (41.0, 2.0),
        ("none", 0.01, "val_shift"): (30.0, 1.0),
        (free, 0.01, "val"): (52.0, 1.5), (free, 0.01, "val_shift"): (39.0, 1.0),
        (free_row, 0.01, "val"): (43.0, 3.5),
    })
    rows = check_targets(agg)
    assert list(dict.fromkeys(r["method"] for r in rows)) == ["clip_td", free, free_row]
    got = {(r["method"], r["target"]): (round(r["value"], 4), r["holds"]) for r in rows if r["method"] != "clip_td"}
    assert got == {
        (free, "T1"): (12.0, True), (free, "T2"): (12.0, True), (free, "T3"): (7.0, True),
        (free, "T4"): (9.0, False),                               # shifted gain 9 < in-domain gain 12
        (free_row, "T1"): (3.0, False), (free_row, "T2"): (3.0, False), (free_row, "T3"): (-2.0, False),
    }
    md = targets_markdown(agg)
    assert "holds in 0 of 1\n" in md and f"| {free} | 1 of 1 | 1 of 1 | 1 of 1 | 0 of 1 | - | - |" in md


def test_no_targets_without_baseline_or_clip_td():
    agg = _agg({("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (41.0, 1.0)})
    assert check_targets(agg) == [] and targets_markdown(agg) == ""
    other = {(t, m, 0.01, "val", "x"): {"mean": 1.0, "std": 0.0} for t in ("my_task",) for m in ("none", "clip_td")}
    assert check_targets(other) == []  # tasks without a known primary metric are not judged


def test_targets_on_cells_with_fewer_seeds_than_asked_are_marked():
    """A check reading a cell with fewer seeds than the grid asks is marked `short` ("no †") and
    counted apart; the same aggregate without the asked seeds is not marked."""
    agg = _agg({
        ("none", 0.01, "val"): (40.0, 1.0), ("naive_kd", 0.01, "val"): (45.0, 0.5), ("clip_td", 0.01, "val"): (51.0, 2.0),
        ("none", 0.05, "val"): (50.0, 1.0), ("naive_kd", 0.05, "val"): (52.0, 1.0), ("clip_td", 0.05, "val"): (50.5, 1.0),
    })
    agg[("vqa", "clip_td", 0.05, "val", "vqa_acc")].update(n=1, seeds=[0])
    asked = {("vqa", m, f): [0, 1, 2] for m in ("none", "naive_kd", "clip_td") for f in (0.01, 0.05)}
    short = {(r["target"], r["fraction"]): r["short"] for r in check_targets(agg, asked)}
    assert short == {("T1", 0.01): False, ("T2", 0.01): False, ("T3", 0.01): False,
                     ("T1", 0.05): True, ("T3", 0.05): True}
    md = targets_markdown(agg, asked)
    assert "holds in 1 of 2 (1 \u2020)" in md  # T1: 0.01 holds (+11 > 2), 0.05 does not and is short
    assert "| clip_td | T3 | vqa | 5% | -1.50 | > 0 | no \u2020 |" in md
    assert "| clip_td | T1 | vqa | 1% | +11.00 | > 2.00 | yes |" in md
    assert "\u2020" not in targets_markdown(agg)


def test_equal_gains_from_float_means_are_a_tie():
    """The VCR 100 % case: both gains are -1.6333 but the float means differ in the 15th digit
    (-1.6333333333333329 on val against a shifted gain a few 1e-16 lower); T4 (>=) holds on a
    tie, T1 (>) would not."""
    val_td, val_none = (45.4 + 45.5 + 46.6) / 3, (48.8 + 46.5 + 47.1) / 3
    sh_td, sh_none = (9.4 + 5.3 + 9.1) / 3, (8.1 + 12.3 + 8.3) / 3
    assert (sh_td - sh_none) != (val_td - val_none)  # the rounding the check has to see through
    agg = _agg({("none", 1.0, "val"): (val_none, 1.19), ("clip_td", 1.0, "val"): (val_td, 0.67),
                ("none", 1.0, "val_shift"): (sh_none, 2.37), ("clip_td", 1.0, "val_shift"): (sh_td, 2.29),
                ("none", 0.25, "val"): (50.0, 1.0), ("clip_td", 0.25, "val"): (51.0 + 1e-13, 0.0)})
    got = {(r["target"], r["fraction"]): r["holds"] for r in check_targets(agg) if r["method"] == "clip_td"}
    assert got[("T4", 1.0)] is True
    assert got[("T5", 1.0)] is False  # -1.63 is below -1.19
    assert got[("T1", 0.25)] is False  # +1.0000000000001 is not above the std 1.0


def test_rows_that_differ_only_in_keys_one_task_reads_are_assembled_into_one_row():
    """VQA's answer sets, SNLI-VE's contrast pair and VCR's label-free rationales are each read by
    one task alone, so one recipe runs under three labels; the report joins them per task into one
    judged row (and the SNLI-VE cells without the pair into another), leaving apart a label whose
    other keys differ."""
    from clip_td.app.benchmark_targets import ASSEMBLED, assembled_rows, split_label

    metric = {"vqa": "vqa_acc", "snli_ve": "accuracy", "vcr": "q2ar"}
    lv = "clip_td[method.answer_sets=True,method.label_free=1.0]"
    ls = "clip_td[method.answer_sets=True,method.label_free=1.0,method.probe_contrast=True]"
    lr = "clip_td[method.label_free=1.0,method.label_free_rationales=True]"
    other = "clip_td[method.label_free=0.5]"
    cells = {("vqa", "none"): (40.0, 1.0), ("vqa", lv): (47.0, 1.0),
             ("snli_ve", "none"): (50.0, 2.0), ("snli_ve", lv): (49.0, 1.0), ("snli_ve", ls): (58.0, 1.5),
             ("vcr", "none"): (10.0, 0.5), ("vcr", lr): (25.0, 1.0), ("vcr", other): (30.0, 1.0)}
    agg = {(t, m, 0.01, "val", metric[t]): {"mean": mean, "std": std, "n": 3, "seeds": [0, 1, 2]}
           for (t, m), (mean, std) in cells.items()}
    both = "method.answer_sets=True,method.label_free=1.0,method.label_free_rationales=True"
    a1 = f"clip_td[{both}]{ASSEMBLED}"
    a2 = f"clip_td[{both},method.probe_contrast=True]{ASSEMBLED}"
    assert assembled_rows(agg) == {a1: {"snli_ve": lv, "vcr": lr, "vqa": lv}, a2: {"snli_ve": ls, "vcr": lr, "vqa": lv}}
    t2 = {(r["method"], r["task"]): (r["value"], r["holds"]) for r in check_targets(agg) if r["target"] == "T2"}
    # +10 VQA and VCR Q->AR, +5 SNLI-VE
    assert t2[(a2, "vqa")] == (7.0, False) and t2[(a2, "snli_ve")] == (8.0, True) and t2[(a2, "vcr")] == (15.0, True)
    assert t2[(a1, "snli_ve")] == (-1.0, False)
    assert (other, "vcr") in t2 and not any(m.endswith(ASSEMBLED) and "0.5" in m for m, _ in t2)
    md = targets_markdown(agg)
    assert f"| {a2} | 3 of 3 | 2 of 3 | - | - | - | - |" in md  # gains 7, 8, 15 above the stds 1, 2, 1
    assert f"| {other} | 1 of 1 | 1 of 1 | - | - | - | snli_ve 1 %; vqa 1 % |" in md  # VCR alone: +20 > 1
    assert f"| {a2} | snli_ve | {ls} |" in md
    assert split_label("clip_td[method.a=1,teacher.model=recipe:x_y]") == ("clip_td", {"method.a": "1", "teacher.model": "recipe:x_y"})


def test_the_keys_a_task_alone_reads_are_method_config_fields():
    import dataclasses

    from clip_td.lib.distill import MethodConfig
    from tasks import get_task

    fields = {f.name for f in dataclasses.fields(MethodConfig)}
    owners = {}
    for name in ("vqa", "snli_ve", "vcr"):
        for key in get_task(name).method_keys:
            assert key.startswith("method.") and key[len("method."):] in fields, key
            assert owners.setdefault(key, name) == name  # one task each
    assert owners == {"method.answer_sets": "vqa", "method.question_candidates": "vqa",
                      "method.similarity_probe": "snli_ve", "method.probe_contrast": "snli_ve",
                      "method.rationales": "vcr", "method.label_free_rationales": "vcr"}


def test_cells_not_run_lists_none_s_cells_the_row_lacks_by_task():
    from clip_td.app.benchmark_targets import _not_run_text, cells_not_run

    metric = {"vqa": "vqa_acc", "vcr": "q2ar"}
    have = {("vqa", "none", f) for f in (0.01, 0.05, 0.25, 1.0)} | {("vcr", "none", f) for f in (0.01, 0.05, 0.25, 1.0)}
    have |= {("vqa", "clip_td", f) for f in (0.01, 0.05, 0.25)} | {("vcr", "clip_td", 0.01)}
    agg = {(t, m, f, "val", metric[t]): {"mean": 1.0, "std": 0.0, "n": 3, "seeds": [0, 1, 2]} for t, m, f in have}
    agg[("vcr", "clip_td", 0.05, "val_shift", "q2ar")] = {"mean": 1.0, "std": 0.0, "n": 3, "seeds": [0, 1, 2]}  # val only counts
    assert cells_not_run(agg, "clip_td") == [("vcr", 0.05), ("vcr", 0.25), ("vcr", 1.0), ("vqa", 1.0)]
    assert _not_run_text(cells_not_run(agg, "clip_td")) == "vcr 5, 25, 100 %; vqa 100 %"
    assert cells_not_run(agg, "none") == [] and _not_run_text([]) == "-"
