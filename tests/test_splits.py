"""Low-shot / k-shot / prior-shift / group-shift splits: nesting, stratification,
determinism (fixed expected ids, so a change across machines fails) and shift properties."""

from collections import Counter

import pytest

from clip_td.base.io import InputError
from tasks.splits import group_shift_split, hash_key, kshot_indices, lowshot_indices, prior_shift_split

LABELS = [["yes", "no", "2", "red"][i % 4] if i % 7 else "yes" for i in range(40)]
UIDS = [f"q{i}" for i in range(40)]


def test_fixed_ids_for_fixed_seed():
    # sha256-derived order: these literals must hold on every machine and Python version
    assert hash_key(0, "q0") == 10530319900905113483
    assert lowshot_indices(LABELS, 0.1, 0, UIDS) == [13, 36, 38, 39]
    assert lowshot_indices(LABELS, 0.25, 0, UIDS) == [5, 8, 10, 13, 24, 31, 35, 36, 38, 39]
    assert lowshot_indices(LABELS, 0.1, 1, UIDS) == [15, 24, 25, 30]
    assert kshot_indices(LABELS, 2, 0, UIDS) == [5, 10, 13, 31, 35, 36, 38, 39]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_lowshot_nested_and_stratified(seed):
    labels = ["a"] * 500 + ["b"] * 300 + ["c"] * 150 + ["d"] * 50
    full = Counter(labels)
    previous: set = set()
    for f in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        idx = lowshot_indices(labels, f, seed)
        assert len(idx) == round(f * len(labels)) and idx == sorted(idx)
        assert previous <= set(idx)  # nested
        previous = set(idx)
        got = Counter(labels[i] for i in idx)
        for lab, n in full.items():
            assert got[lab] >= 1  # every label present once the budget allows
            assert abs(got[lab] - f * n) <= 1  # each label's share within rounding


def test_lowshot_at_least_one_per_label_and_errors():
    labels = ["x"] * 97 + ["rare1", "rare2", "rare3"]
    assert {labels[i] for i in lowshot_indices(labels, 0.04, 3)} == {"x", "rare1", "rare2", "rare3"}
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="outside \\(0, 1\\]"):
            lowshot_indices(labels, bad, 0)
    with pytest.raises(InputError, match="empty result"):
        lowshot_indices(labels, 0.001, 0)


def test_kshot_per_label_and_nested():
    labels = ["a"] * 10 + ["b"] * 2 + ["c"] * 5
    k1, k3 = kshot_indices(labels, 1, 0), kshot_indices(labels, 3, 0)
    assert Counter(labels[i] for i in k3) == {"a": 3, "b": 2, "c": 3}
    assert Counter(labels[i] for i in k1) == {"a": 1, "b": 1, "c": 1}
    assert set(k1) <= set(k3)
    with pytest.raises(InputError, match="k must be at least 1"):
        kshot_indices(labels, 0, 0)


def test_prior_shift_groups_answers_apart():
    recs = [{"question_type": qt, "multiple_choice_answer": ans}
            for qt, answers in (("what color", ["red"] * 20 + ["blue"] * 15 + ["green"] * 10 + ["white"] * 5),
                                ("is this", ["yes"] * 30 + ["no"] * 25), ("how many", ["2"] * 12 + ["3"] * 8 + ["1"] * 6))
            for ans in answers]
    train, test = prior_shift_split(recs, 0.3, seed=0)
    assert sorted(train + test) == list(range(len(recs))) and not set(train) & set(test)
    for qt in ("what color", "is this", "how many"):
        tr = Counter(recs[i]["multiple_choice_answer"] for i in train if recs[i]["question_type"] == qt)
        te = Counter(recs[i]["multiple_choice_answer"] for i in test if recs[i]["question_type"] == qt)
        assert not set(tr) & set(te)  # each (type, answer) group lies wholly on one side
        assert tr and te  # so the answer priors per type differ between the sides
    assert 0.2 < len(test) / len(recs) < 0.45
    assert prior_shift_split(recs, 0.3, seed=0) == (train, test)


def test_group_shift_holds_out_whole_groups():
    groups = ["m1"] * 5 + ["m2"] * 3 + ["m3"] * 4 + ["m4"] * 8
    train, test, held = group_shift_split(groups, 0.25, seed=0)
    assert {groups[i] for i in test} == set(held) and not {groups[i] for i in train} & set(held)
    assert len(test) >= 0.25 * len(groups) and train
    assert group_shift_split(groups, 0.25, seed=0) == (train, test, held)
    with pytest.raises(InputError, match="at least 2 groups"):
        group_shift_split(["m1"] * 3, 0.5, 0)
