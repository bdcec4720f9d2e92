"""The task-level trust gate on hand-computed cases, and in a fine-tuning run's metrics.json."""

import json
import math
from pathlib import Path

import pytest
import torch

from clip_td.app.trainer import main
from clip_td.base.io import InputError
from clip_td.lib.trust import balanced_critical, binomial_sf, group_decisions, prior_correct, trust_decision
from test_finetune_helpers import probe_rows, tiny_overrides


def test_binomial_tail_hand_computed():
    # n = 3, p = 1/2: P(X >= 2) = (3 + 1) / 8; P(X >= 3) = 1/8; P(X >= 0) = 1; P(X >= 4) = 0
    assert binomial_sf(2, 3, 0.5) == pytest.approx(0.5)
    assert binomial_sf(3, 3, 0.5) == pytest.approx(0.125)
    assert binomial_sf(0, 3, 0.5) == 1.0 and binomial_sf(4, 3, 0.5) == 0.0
    # n = 10, p = 0.3, k = 7: sum_{j=7}^{10} C(10, j) 0.3^j 0.7^(10-j)
    exact = sum(math.comb(10, j) * 0.3 ** j * 0.7 ** (10 - j) for j in range(7, 11))
    assert binomial_sf(7, 10, 0.3) == pytest.approx(exact, rel=1e-12)
    # large n stays finite and in [0, 1] (log-space sum): 600 of 1000 at p = 0.5 is far out in the tail
    tail = binomial_sf(600, 1000, 0.5)
    assert 0.0 < tail < 1e-9
    assert binomial_sf(1, 5, 0.0) == 0.0 and binomial_sf(1, 5, 1.0) == 1.0


def test_prior_is_the_most_frequent_gold_per_candidate_set():
    gold = [0, 0, 1, 2, 2, 2, -1]
    assert prior_correct(gold) == 3  # label 2, three times; the -1 row is never right
    # two groups: (0, 0, 1) -> 2 right, (2, 2, 2, -1) -> 3 right
    assert prior_correct(gold, ["a", "a", "a", "b", "b", "b", "b"]) == 5


def test_a_teacher_at_chance_is_not_trusted_and_a_right_one_is():
    gold = torch.tensor([0, 1, 2] * 10)  # prior: 10 of 30
    right = torch.nn.functional.one_hot(gold, 3).float() * 5.0
    d = trust_decision(right, gold, alpha=0.05)
    # 30 of 30 against p0 = 1/3: p = (1/3)^30
    assert (d.rows, d.teacher_accuracy, d.trusted) == (30, 100.0, True)
    assert d.prior_accuracy == pytest.approx(100.0 / 3)
    assert d.p_value == pytest.approx((1 / 3) ** 30, rel=1e-9)
    chance = torch.nn.functional.one_hot(torch.tensor([0, 2, 1] * 10), 3).float()  # right on 10 of 30
    d = trust_decision(chance, gold, alpha=0.05)
    assert d.teacher_accuracy == pytest.approx(100.0 / 3) and not d.trusted
    assert d.p_value == pytest.approx(binomial_sf(10, 30, 1 / 3))
    assert d.p_value > 0.5


def test_the_mask_restricts_the_teacher_and_groups_the_prior():
    # 4 rows, 3 candidates; the teacher's raw argmax is always candidate 0, which the mask of
    # rows 2-3 forbids: restricted, it answers 1 there (right on both)
    logits = torch.tensor([[3.0, 1.0, 0.0]] * 4)
    gold = torch.tensor([0, 2, 1, 1])
    mask = torch.tensor([[True, True, True], [True, True, True], [False, True, True], [False, True, True]])
    d = trust_decision(logits, gold, alpha=0.5, cand_mask=mask)
    assert d.teacher_accuracy == pytest.approx(75.0)  # rows 0, 2, 3
    assert d.prior_accuracy == pytest.approx(75.0)  # group 1: one of (0, 2); group 2: both 1s
    assert d.p_value == pytest.approx(binomial_sf(3, 4, 0.75))
    d_unmasked = trust_decision(logits, gold, alpha=0.5)
    assert d_unmasked.teacher_accuracy == pytest.approx(25.0)


def test_gold_outside_the_candidates_counts_as_an_error():
    logits = torch.tensor([[1.0, 0.0]] * 4)
    gold = torch.tensor([0, 0, -1, -1])
    d = trust_decision(logits, gold)
    assert d.teacher_accuracy == pytest.approx(50.0) and d.prior_accuracy == pytest.approx(50.0)
    assert trust_decision(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)).trusted is False


def test_group_decisions_test_each_group_on_its_own_rows():
    # group "colour": teacher right on 10 of 10 (prior 5 of 10); group "count": right on 2 of 10
    # (prior 10 of 10, every gold 0)
    gold = torch.tensor([0, 1] * 5 + [0] * 10)
    pred = torch.cat([gold[:10], torch.tensor([0, 0] + [1] * 8)])
    logits = torch.nn.functional.one_hot(pred, 2).float()
    d = group_decisions(logits, gold, ["colour"] * 10 + ["count"] * 10, alpha=0.05)
    assert d["colour"].trusted and not d["count"].trusted
    assert d["colour"].p_value == pytest.approx(0.5 ** 10)
    assert (d["count"].teacher_accuracy, d["count"].prior_accuracy, d["count"].p_value) == (20.0, 100.0, 1.0)


def _errors(c, n, p0, p1):
    """alpha(c) + beta(c) summed term by term with math.comb: the independent reference."""
    pmf = lambda j, p: math.comb(n, j) * p ** j * (1 - p) ** (n - j)  # noqa: E731
    return sum(pmf(j, p0) for j in range(c, n + 1)) + sum(pmf(j, p1) for j in range(0, c))


def test_balanced_critical_count_hand_computed():
    # n = 5, p0 = 0.6, lead 0.1 (p1 = 0.7): c = 3 gives 0.68256 + 0.16308, c = 4 gives 0.33696 + 0.47178,
    # c = 5 gives 0.07776 + 0.83193: c = 4
    c, a, b = balanced_critical(5, 0.6, 0.1)
    assert c == 4
    assert a == pytest.approx(5 * 0.6 ** 4 * 0.4 + 0.6 ** 5, rel=1e-12)
    assert b == pytest.approx(1 - (5 * 0.7 ** 4 * 0.3 + 0.7 ** 5), rel=1e-12)
    # 40 rows at p0 = 1/2 (SNLI-VE's pair at 1 %): the argmin over every c of the comb-summed errors
    for n, p0, d in [(40, 0.5, 0.1), (40, 0.325, 0.1), (13, 2 / 13, 0.1), (200, 0.5, 0.1), (40, 0.5, 0.15)]:
        ref = min(range(n + 2), key=lambda k: (round(_errors(k, n, p0, min(1.0, p0 + d)), 12), -k))
        c, a, b = balanced_critical(n, p0, d)
        assert c == ref
        assert a + b == pytest.approx(_errors(c, n, p0, min(1.0, p0 + d)), rel=1e-9)
    assert balanced_critical(40, 0.5, 0.1)[0] == 23 and balanced_critical(40, 0.5, 0.1)[1] == pytest.approx(0.2148, abs=1e-4)
    # the level falls with n: 200 rows -> about 0.069, 1,000 rows -> below 0.001
    assert 0.05 < balanced_critical(200, 0.5, 0.1)[1] < 0.07
    assert balanced_critical(1000, 0.5, 0.1)[1] < 1e-3
    # at 16,000 rows both errors are far below float precision; the optimum is still where the
    # likelihood ratio crosses 1: the smallest count likelier under p1 = 0.4 than under p0 = 0.3
    def logpmf(j, n, p):
        return math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)

    c, a, b = balanced_critical(16000, 0.3, 0.1)
    assert logpmf(c, 16000, 0.4) > logpmf(c, 16000, 0.3) and logpmf(c - 1, 16000, 0.4) <= logpmf(c - 1, 16000, 0.3)
    assert 0.34 < c / 16000 < 0.36 and a < 1e-30 and b < 1e-30
    # a prior of 1 cannot be beaten: c = n + 1 (never trusted); ties keep the stricter count
    assert balanced_critical(3, 1.0, 0.1) == (4, 0.0, 1.0)
    assert balanced_critical(0, 0.5, 0.1) == (1, 0.0, 1.0) and balanced_critical(0, 0.95, 0.1)[0] == 1
    assert balanced_critical(4, 0.95, 0.1)[0] == 4  # p0 + d >= 1: only the all-right count
    with pytest.raises(ValueError, match="effect"):
        balanced_critical(10, 0.5, 0.0)


def test_balanced_rule_passes_what_40_rows_cannot_show_at_005_and_refuses_a_small_lead_on_many():
    gold = torch.tensor([0, 1] * 20)  # prior: 20 of 40
    pred = gold.clone()
    pred[:16] = 1 - pred[:16]  # right on 24 of 40 (60 %)
    logits = torch.nn.functional.one_hot(pred, 2).float()
    fixed = trust_decision(logits, gold, alpha=0.05)
    balanced = trust_decision(logits, gold, alpha=0.05, effect=0.1)
    assert fixed.p_value == balanced.p_value == pytest.approx(binomial_sf(24, 40, 0.5))
    assert not fixed.trusted and balanced.trusted
    assert (balanced.critical, balanced.effect) == (23, 0.1)
    assert balanced.alpha == pytest.approx(binomial_sf(23, 40, 0.5))
    assert balanced.power == pytest.approx(binomial_sf(23, 40, 0.6))
    assert set(fixed.as_dict()) == {"rows", "teacher_accuracy", "prior_accuracy", "p_value", "alpha", "trusted"}
    assert balanced.as_dict()["critical"] == 23 and "power" in balanced.as_dict()
    # 1,000 rows, right on 537 (p about 0.01): the fixed level trusts a 3.7-point lead, the balanced rule does not
    gold = torch.tensor([0, 1] * 500)
    pred = gold.clone()
    pred[:463] = 1 - pred[:463]
    logits = torch.nn.functional.one_hot(pred, 2).float()
    assert trust_decision(logits, gold, alpha=0.05).trusted
    assert not trust_decision(logits, gold, alpha=0.05, effect=0.1).trusted
    # per group: each group's own row count sets its level
    d = group_decisions(logits[:40], gold[:40], ["a"] * 40, alpha=0.05, effect=0.1)
    assert d["a"].critical == balanced_critical(40, 0.5, 0.1)[0]


@pytest.mark.parametrize("key,value,match", [("method.trust_alpha_rule", "bayes", "method.trust_alpha_rule"),
                                             ("method.trust_effect", 0.0, "method.trust_effect")])
def test_bad_gate_rule_keys_are_refused_by_name(key, value, match):
    from omegaconf import OmegaConf

    from clip_td.lib.distill import resolve_method

    with pytest.raises(InputError, match=match):
        resolve_method(OmegaConf.create({"name": "clip_td", key.split(".", 1)[1]: value}))


def test_balanced_rule_is_recorded_in_metrics_and_decides_by_the_critical_count(small_world, tiny_teacher,
                                                                              tmp_path, monkeypatch):
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 0.05,
             **{"method.trust_alpha_rule": "balanced", "method.trust_effect": 0.2})
    n, k = t["rows"], round(t["teacher_accuracy"] * t["rows"] / 100)
    c, a, b = balanced_critical(n, t["prior_accuracy"] / 100, 0.2)
    assert (t["critical"], t["effect"]) == (c, 0.2)
    # the recorded prior is rounded to 4 decimals of a percent: the level agrees to 1e-3
    assert t["alpha"] == pytest.approx(a, rel=1e-3) and t["power"] == pytest.approx(1 - b, rel=1e-3)
    assert t["trusted"] == (k >= c) == t["answer_term"]


@pytest.mark.parametrize("gate", ["task", "off"])
def test_metrics_record_the_gate_and_it_switches_the_answer_term(small_world, tiny_teacher, tmp_path, monkeypatch,
                                                                   gate):
    """At trust_alpha = 0 no teacher is significant: the gate drops the answer-level term from every
    step and says so in metrics.json; with the gate off the term stays (the figures are recorded)."""
    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", gate, 0.0)
    assert (t["trusted"], t["gate"], t["answer_term"], t["alpha"]) == (False, gate, gate == "off", 0.0)
    assert t["rows"] > 0 and 0.0 <= t["teacher_accuracy"] <= 100.0 and 0.0 < t["prior_accuracy"] <= 100.0
    expected = ["glob_loss", "task_loss", "tok_loss"] + (["ans_loss"] if gate == "off" else [])
    assert terms["names"] == [sorted(expected)] * 2


def test_feature_gate_turns_the_feature_terms_off_where_the_gate_drops_the_teacher(small_world, tiny_teacher,
                                                                                    tmp_path, monkeypatch):
    """At trust_alpha = 0 the gate drops the answer-level term for the run; with method.feature_gate
    the token and global terms follow it: the distiller sees a gate of 0 on every row and both terms
    are exactly 0 at every step (without it they are not: the test above)."""
    import clip_td.app.finetune_model as model_mod

    terms = _capture_loss_terms(monkeypatch)
    values = []
    captured = model_mod.FinetuneModel.forward

    def forward(self, batch, teacher_out=None, kd_scale=1.0):
        out = captured(self, batch, teacher_out, kd_scale)
        if self.training:
            values.append((out["tok_loss"].item(), out["glob_loss"].item(), out["task_loss"].item()))
        return out

    monkeypatch.setattr(model_mod.FinetuneModel, "forward", forward)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "group", 0.0, **{"method.feature_gate": True})
    assert (t["trusted"], t["answer_term"]) == (False, False)
    assert terms["names"] == [["glob_loss", "task_loss", "tok_loss"]] * 2
    assert len(terms["gates"]) == 2 and all(set(g) == {0.0} for g, _ in terms["gates"])
    assert [v[:2] for v in values] == [(0.0, 0.0)] * 2 and all(v[2] > 0 for v in values)


def test_group_gate_keeps_the_answer_term_for_the_rows_of_trusted_groups(small_world, tiny_teacher, tmp_path,
                                                                          monkeypatch):
    """VQA's trust groups are its question types. At trust_alpha = 1 every group whose p-value is
    below 1 passes: the per-row gate the distiller sees is 1 exactly for the rows of those groups."""
    from tasks import get_task

    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "vqa", "group", 1.0)
    groups = t["groups"]
    task = get_task("vqa")
    qtype = [str(q) for q in task.load(small_world / "vqa", "train")["question_type"]]  # by split index
    assert set(groups) <= set(qtype) and len(groups) >= 2
    assert sum(g["rows"] for g in groups.values()) == t["rows"]
    kept = sum(g["rows"] for g in groups.values() if g["trusted"])
    assert all(g["trusted"] == (g["p_value"] < 1.0) for g in groups.values())
    assert t["answer_term_rows"] == pytest.approx(round(100.0 * kept / t["rows"], 4))
    assert t["answer_term"] == (kept > 0)
    if 0 < kept < t["rows"]:
        assert len(terms["gates"]) == 2
    for gate, index in terms["gates"]:  # every batch: gate 1 exactly for rows of trusted groups
        assert gate == [1.0 if groups[qtype[i]]["trusted"] else 0.0 for i in index]


def _capture_loss_terms(monkeypatch):
    import clip_td.app.finetune_model as model_mod
    from clip_td.lib.distill import Distiller

    seen = {"names": [], "gates": [], "features": []}
    real_forward, real_distill = model_mod.FinetuneModel.forward, Distiller.forward

    def forward(self, batch, teacher_out=None, kd_scale=1.0):
        out = real_forward(self, batch, teacher_out, kd_scale)
        if self.training:
            seen["names"].append(sorted(k for k in out if k.endswith("_loss")))
        return out

    def distill(self, student_out, teacher_out, batch, logits):
        if teacher_out.get("answer_gate") is not None:
            seen["gates"].append((teacher_out["answer_gate"].tolist(), batch["index"].tolist()))
        out = real_distill(self, student_out, teacher_out, batch, logits)
        if teacher_out.get("feature_on") is not None:
            seen["features"].append((teacher_out["feature_on"].tolist(), float(out["tok_loss"].detach())))
        return out

    monkeypatch.setattr(model_mod.FinetuneModel, "forward", forward)
    monkeypatch.setattr(Distiller, "forward", distill)
    return seen


def _run(world, teacher, tmp_path, task, gate, alpha, **extra):
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
    out = tmp_path / "run"
    overrides = tiny_overrides(world, teacher, out, **{
        "task.name": task, "method.name": "clip_td", "train.max_steps": 2,
        "method.trust_gate": gate, "method.trust_alpha": alpha, "method.student_check": 0.0, **extra})
    assert main(["--config", tiny, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())["teacher_trust"]


def test_similarity_probe_table_is_the_cross_fitted_probe_of_cos_image_text():
    """method.similarity_probe: each labelled row's teacher distribution is p(label | cos(image, h))
    from a probe fitted on the other folds; the table holds tau * log p there and 0 elsewhere."""
    from types import SimpleNamespace

    from clip_td.app.teacher_setup import similarity_probe_logits
    from clip_td.lib.probe import cross_fitted_probs

    rows, cos_all, cache, task = probe_rows(12, seed=0)
    method = SimpleNamespace(tau=2.0, selection_seed=3)
    labelled = [1, 2, 4, 5, 7, 8, 9, 10, 11]
    table = similarity_probe_logits(None, task, rows, labelled, cache, method)
    cos = cos_all[labelled]
    p = cross_fitted_probs(cos, torch.tensor([rows[i]["label"] for i in labelled]), 3, seed=3)
    torch.testing.assert_close(table[labelled], 2.0 * p.clamp_min(1e-6).log())  # no -inf for a certain probe
    assert table[[0, 3, 6]].abs().sum().item() == 0.0
    torch.testing.assert_close(torch.softmax(table[labelled] / 2.0, -1), p, atol=1e-5, rtol=0)
    # every_row (label-free answers): the unlabelled rows get the probe fitted on every labelled row
    from clip_td.lib.probe import fit_scalar_softmax

    full = similarity_probe_logits(None, task, rows, labelled, cache, method, every_row=True)
    torch.testing.assert_close(full[labelled], table[labelled])
    probe = fit_scalar_softmax(cos.double(), torch.tensor([rows[i]["label"] for i in labelled]), 3)
    other = cos_all[[0, 3, 6]]
    torch.testing.assert_close(full[[0, 3, 6]], 2.0 * probe.probs(other.double()).clamp_min(1e-6).log())


def test_snli_ve_run_with_the_similarity_probe_distils_probabilities(small_world, tiny_teacher, tmp_path, monkeypatch):
    from clip_td.lib.distill import Distiller

    seen = []
    real = Distiller.forward

    def distill(self, student_out, teacher_out, batch, logits):
        seen.append(teacher_out["cand_logits"].clone())
        return real(self, student_out, teacher_out, batch, logits)

    monkeypatch.setattr(Distiller, "forward", distill)
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
    out = tmp_path / "run"
    overrides = tiny_overrides(small_world, tiny_teacher, out, **{
        "task.name": "snli_ve", "method.name": "clip_td", "train.max_steps": 2, "method.trust_gate": "off",
        "method.similarity_probe": True})
    assert main(["--config", tiny, *overrides]) == 0
    trust = json.loads((out / "metrics.json").read_text())["teacher_trust"]
    assert trust["teacher_distribution"] == "similarity_probe" and trust["answer_term"]
    assert len(seen) == 2
    for cand in seen:  # tau * log p: the distiller's softmax(cand / tau) is a probability row
        torch.testing.assert_close(torch.logsumexp(cand / 2.0, -1), torch.zeros(len(cand)), atol=1e-5, rtol=0)


def test_handover_tests_each_block_of_first_visits_with_an_exact_mcnemar_test():
    from clip_td.lib.trust import StudentHandover

    # rows 0-9 group "a", 10-13 group "b", row 14 unlabelled (-1: never counted)
    teacher_right = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    groups = ["a"] * 10 + ["b"] * 4 + ["a"]
    h = StudentHandover(teacher_right, groups, window=5, alpha=0.05)
    # block 1 of "a": rows 0-4, student right on 0, 1, 2 (teacher wrong) and wrong on 3, 4 (teacher right):
    # b = 2, c = 3, p = P(X >= 3 | Bin(5, 1/2)) = (10 + 5 + 1) / 32 = 0.5 -> kept
    h.observe(torch.tensor([0, 1, 2, 3, 4, 14]), torch.tensor([1, 1, 1, 0, 0, 1]), step=3)
    t = h.as_dict()["groups"]["a"]
    assert t["off_step"] is None and t["first_visits"] == 5
    assert t["tests"] == [{"step": 3, "rows": 5, "student_right": 3, "teacher_right": 2, "b": 2, "c": 3,
                           "p_value": 0.5}]
    # second visits never count: rows 0-4 again (all right now) leave the next block empty
    h.observe(torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 1, 1, 1, 1]), step=4)
    assert h.block[h.names.index("a")] == [] and len(h.as_dict()["groups"]["a"]["tests"]) == 1
    state = h.state_dict()
    # block 2 of "a": rows 5-9, student right on all, teacher wrong on all: b = 0, c = 5, p = 1/32 -> off
    h.observe(torch.tensor([5, 6, 7, 8, 9, 10, 11]), torch.ones(7), step=7)
    a, b = h.as_dict()["groups"]["a"], h.as_dict()["groups"]["b"]
    assert a["off_step"] == 7 and a["tests"][-1]["p_value"] == pytest.approx(1 / 32) and a["tests"][-1]["c"] == 5
    assert b["off_step"] is None and b["tests"] == [] and b["first_visits"] == 2  # its block has 2 of 5
    assert h.gate(torch.tensor([0, 9, 10, 13, 14])).tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    # a resumed run restores the state and takes the same decision on the same rows
    h2 = StudentHandover(teacher_right, groups, window=5, alpha=0.05)
    h2.load_state_dict(json.loads(json.dumps(state)))
    h2.observe(torch.tensor([5, 6, 7, 8, 9, 10, 11]), torch.ones(7), step=7)
    assert h2.as_dict() == h.as_dict()


def test_handover_run_switches_the_answer_term_off_from_the_step_it_records(small_world, tiny_teacher, tmp_path,
                                                                             monkeypatch):
    """A run with method.handover records every block's test in metrics.json (b - c = teacher right -
    student right in each), and from the recorded step on, the distiller's per-row gate is 0."""
    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 1.0,
             **{"method.handover": True, "method.handover_window": 4, "train.max_steps": 6})
    h = t["handover"]
    assert (h["window"], h["alpha"], list(h["groups"])) == (4, 1.0, ["all"])
    g = h["groups"]["all"]
    assert g["first_visits"] >= 4 * len(g["tests"]) and len(g["tests"]) >= 1
    for test in g["tests"]:
        assert test["rows"] == 4 and test["b"] + test["c"] <= 4
        assert test["b"] - test["c"] == test["teacher_right"] - test["student_right"]
        assert test["p_value"] == pytest.approx(binomial_sf(test["c"], test["b"] + test["c"], 0.5), rel=1e-5)
    first_off = next((x["step"] for x in g["tests"] if x["p_value"] < 1.0), None)
    assert g["off_step"] == first_off
    gates = [gate for gate, _ in terms["gates"]]
    assert len(gates) == 6  # one per step: the handover always sets the gate
    for step, gate in enumerate(gates):  # the test after step s's forward switches steps s + 1 on
        off = first_off is not None and step > first_off
        assert gate == [0.0 if off else 1.0] * len(gate)


def test_held_back_check_compares_the_students_latest_held_out_answers_with_the_teachers():
    from clip_td.lib.trust import StudentHandover

    # 8 teacher rows in 2 groups; rows 1, 2, 5, 6 held back; row 6 not eligible (its group failed the gate)
    teacher_right = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1])
    held = torch.tensor([0, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    eligible = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    h = StudentHandover(teacher_right, ["a"] * 4 + ["b"] * 4, window=100, held_back=held, eligible=eligible)
    h.check_step = 3
    # before the check: the held-back rows' labels and answer term wait
    assert h.holding and h.label_weight(torch.tensor([0, 1, 2, 5, 7])).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert h.gate(torch.tensor([0, 1, 6, 7])).tolist() == [1.0, 0.0, 0.0, 1.0]
    h.observe(torch.tensor([1, 2, 5, 6]), torch.tensor([0, 0, 1, 1]), step=1)
    h.observe(torch.tensor([1, 0]), torch.tensor([1, 0]), step=2)  # row 1 again: its latest answer is right
    state = h.state_dict()
    # at step 3: eligible held-back rows seen = 1, 2, 5: student right on 1, 5 (2), teacher on 1, 2 (2): tie -> off
    h.observe(torch.tensor([3]), torch.tensor([0]), step=3)
    assert h.as_dict()["check"] == {"step": 3, "held_back": 4, "rows": 3, "student_right": 2, "teacher_right": 2,
                                    "answer_term": False}
    assert {g["off_step"] for g in h.as_dict()["groups"].values()} == {3}
    assert not h.holding and h.label_weight(torch.tensor([1, 2])) is None
    assert h.gate(torch.tensor([0, 1, 7])).tolist() == [0.0, 0.0, 0.0]
    # a resumed run takes the same decision; with the teacher ahead the term stays on
    h2 = StudentHandover(teacher_right, ["a"] * 4 + ["b"] * 4, window=100, held_back=held, eligible=eligible)
    h2.check_step = 3
    h2.load_state_dict(json.loads(json.dumps(state)))
    h2.observe(torch.tensor([3]), torch.tensor([0]), step=3)
    assert h2.as_dict() == h.as_dict()
    h3 = StudentHandover(teacher_right, ["a"] * 4 + ["b"] * 4, window=100, held_back=held, eligible=eligible)
    h3.check_step = 3
    h3.observe(torch.tensor([1, 2, 5]), torch.tensor([1, 0, 0]), step=0)
    h3.observe(torch.tensor([0]), torch.tensor([1]), step=5)
    assert h3.as_dict()["check"]["answer_term"] and h3.as_dict()["check"]["student_right"] == 1
    assert h3.gate(torch.tensor([1, 2, 6])).tolist() == [1.0, 1.0, 1.0]
    # no eligible held-back row seen before the check: no evidence, the term stays
    h4 = StudentHandover(teacher_right, ["a"] * 8, held_back=held, eligible=eligible)
    h4.check_step = 1
    h4.observe(torch.tensor([6]), torch.tensor([1]), step=0)
    h4.observe(torch.tensor([0]), torch.tensor([1]), step=1)
    assert h4.as_dict()["check"]["rows"] == 0 and h4.as_dict()["check"]["answer_term"]
    # nothing held back: no check, the labels count from the start
    h5 = StudentHandover(teacher_right, ["a"] * 8)
    assert not h5.holding and h5.as_dict()["check"] == {"skipped": True}
    # two teacher rows per instance (VCR's stages): instance i's rows are 2i and 2i + 1
    h6 = StudentHandover(teacher_right, ["a"] * 8, held_back=torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]).bool(), stages=2)
    assert h6.label_weight(torch.tensor([0, 1, 2, 3])).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_check_steps_are_shares_of_the_run_below_its_end():
    from clip_td.lib.trust import check_steps

    assert check_steps(0.5, 0.0, 1200) == [600]
    assert check_steps(0.5, 0.25, 1200) == [600, 900]
    assert check_steps(0.25, 0.25, 1200) == [300, 600, 900]  # 1.0 is the run's end, not a check
    assert check_steps(0.4, 0.3, 10) == [4, 7]
    assert check_steps(0.5, 0.1, 4) == [2, 3]  # 0.5, 0.6, 0.7 -> 2, 2, 2; 0.8, 0.9 -> 3, 3


def test_repeated_check_keeps_the_rows_back_while_the_teacher_leads_and_stops_at_the_first_student_lead():
    from clip_td.lib.trust import StudentHandover

    teacher_right = torch.tensor([1, 1, 0, 1, 1, 0])
    held = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)

    def handover():
        h = StudentHandover(teacher_right, ["a"] * 6, window=100, held_back=held)
        h.check_steps = [2, 4, 6]
        return h

    h = handover()
    h.observe(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), step=0)  # student 1 right, teacher 2
    h.observe(torch.tensor([3]), torch.tensor([1]), step=2)  # first check: the teacher leads, 2 to 1
    assert h.holding and h.check is None and h.check_step == 4
    assert h.checks == [{"step": 2, "held_back": 3, "rows": 3, "student_right": 1, "teacher_right": 2,
                         "answer_term": True}]
    assert h.label_weight(torch.tensor([0, 3])).tolist() == [0.0, 1.0]  # the labels still wait
    assert h.gate(torch.tensor([0, 3])).tolist() == [0.0, 1.0]
    h.observe(torch.tensor([0, 1]), torch.tensor([1, 1]), step=3)  # latest answers: rows 0, 1, 2 right
    state = json.loads(json.dumps(h.state_dict()))
    h.observe(torch.tensor([4]), torch.tensor([1]), step=4)  # second check: the student leads, 3 to 2: off
    assert not h.holding and h.check == {"step": 4, "held_back": 3, "rows": 3, "student_right": 3,
                                         "teacher_right": 2, "answer_term": False}
    record = h.as_dict()
    assert record["check_steps"] == [2, 4, 6] and [c["step"] for c in record["checks"]] == [2, 4]
    assert record["groups"]["a"]["off_step"] == 4 and h.gate(torch.tensor([0, 3])).tolist() == [0.0, 0.0]
    h.observe(torch.tensor([5]), torch.tensor([0]), step=6)  # no third check once the term is off
    assert len(h.checks) == 2
    # resumed between the checks: the same decisions
    h2 = handover()
    h2.load_state_dict(state)
    h2.observe(torch.tensor([4]), torch.tensor([1]), step=4)
    assert h2.as_dict() == record
    # the teacher leads at every check: the last one ends the holding and the term stays on
    h3 = handover()
    h3.observe(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), step=0)
    for step in (2, 4):
        h3.observe(torch.tensor([3]), torch.tensor([1]), step=step)
        assert h3.holding
    h3.observe(torch.tensor([3]), torch.tensor([1]), step=6)
    assert not h3.holding and h3.check["step"] == 6 and h3.check["answer_term"] and len(h3.checks) == 3
    assert h3.gate(torch.tensor([0, 3])).tolist() == [1.0, 1.0] and h3.label_weight(torch.tensor([0])) is None


def test_held_back_rows_are_a_seeded_share_of_the_labelled_rows():
    from clip_td.app.teacher_setup import held_back_rows

    rows = list(range(100, 160))
    held = held_back_rows(rows, 0.2, seed=3)
    assert len(held) == 12 and held == sorted(held) and set(held) <= set(rows)
    assert held == held_back_rows(rows, 0.2, seed=3) and held != held_back_rows(rows, 0.2, seed=4)
    assert held_back_rows(rows, 0.0, 3) == [] and held_back_rows([5], 0.5, 3) == []
    assert len(held_back_rows(rows[:3], 0.01, 0)) == 1 and len(held_back_rows(rows[:2], 0.9, 0)) == 1


def test_task_losses_leave_out_the_held_back_rows_labels():
    from tasks.base import row_mean
    from tasks.vqa.task import vqa_bce

    ce = torch.tensor([0.5, 2.0, 1.0])
    assert row_mean(ce, {}).item() == pytest.approx(3.5 / 3)
    assert row_mean(ce, {"label_weight": torch.tensor([1.0, 0.0, 1.0])}).item() == pytest.approx(0.75)
    assert row_mean(ce, {"label_weight": torch.zeros(3)}).item() == 0.0
    logits, targets = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
    row0 = bce(0.0, 1.0) + bce(1.0, 0.0)
    row1 = bce(2.0, 0.0) + bce(-1.0, 0.5)
    assert vqa_bce(logits, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert vqa_bce(logits, targets, torch.tensor([0.0, 1.0])).item() == pytest.approx(row1, rel=1e-5)


def test_student_check_runs_at_its_step_and_holds_the_rows_back_until_then(small_world, tiny_teacher, tmp_path,
                                                                           monkeypatch):
    """method.student_check: metrics.json records the check; before it the held-back rows'
    answer gate is 0, after it every row's gate follows the decision."""
    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 1.0,
             **{"method.student_check": 0.5, "method.student_check_at": 0.5, "method.handover_window": 1000,
                "train.max_steps": 6})
    check = t["handover"]["check"]
    assert check["step"] == 3 and check["held_back"] == round(0.5 * t["rows"])
    assert 0 < check["rows"] <= check["held_back"]
    assert check["answer_term"] == (check["student_right"] < check["teacher_right"])
    gates = [gate for gate, _ in terms["gates"]]
    assert len(gates) == 6
    held_zeros = [gate.count(0.0) for gate in gates[:3]]
    assert sum(held_zeros) > 0  # some held-back rows were in the first batches, gated off
    for gate in gates[4:]:  # after the check (decided in step 3's forward, before its update)
        assert gate == [float(check["answer_term"])] * len(gate)


def test_student_check_every_schedules_the_checks_of_a_run(small_world, tiny_teacher, tmp_path):
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 1.0,
             **{"method.student_check": 0.5, "method.student_check_at": 0.5, "method.student_check_every": 0.25,
                "method.handover_window": 1000, "train.max_steps": 8})
    handover = t["handover"]
    assert handover["check_steps"] == [4, 6]
    steps = [c["step"] for c in handover["checks"]]
    assert steps == ([4] if not handover["checks"][0]["answer_term"] else [4, 6])
    assert handover["check"] == handover["checks"][-1]


def test_check_features_waits_for_the_check_and_follows_its_decision():
    from clip_td.lib.trust import StudentHandover

    teacher_right = torch.tensor([1, 0, 1, 1])
    held = torch.tensor([0, 1, 1, 0], dtype=torch.bool)
    # the teacher is right on 1 of the 2 held-back rows, the student on 2: student ahead -> off
    h = StudentHandover(teacher_right, ["a"] * 4, held_back=held, check_step=2, check_features=True)
    assert not h.features_on and h.as_dict()["check_features"]
    h.observe(torch.tensor([1, 2]), torch.tensor([1, 1]), step=0)
    h.observe(torch.tensor([0]), torch.tensor([1]), step=2)
    assert h.check["answer_term"] is False and not h.features_on
    # the teacher ahead (student right on 0 of 2) -> on from the check
    h = StudentHandover(teacher_right, ["a"] * 4, held_back=held, check_step=2, check_features=True)
    h.observe(torch.tensor([1, 2]), torch.tensor([0, 0]), step=0)
    assert not h.features_on
    h.observe(torch.tensor([0]), torch.tensor([1]), step=2)
    assert h.check["answer_term"] is True and h.features_on
    # nothing held back: no check to wait for
    assert StudentHandover(teacher_right, ["a"] * 4, check_features=True).features_on


def test_check_features_run_gates_the_feature_terms_until_the_check(small_world, tiny_teacher, tmp_path, monkeypatch):
    """method.check_features: feature_on is 0 (and the token term 0) for every row before the
    check and equals the check's answer_term after it."""
    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "off", 1.0,
             **{"method.student_check": 0.5, "method.student_check_at": 0.5, "method.handover_window": 1000,
                "method.check_features": True, "train.max_steps": 6})
    check = t["handover"]["check"]
    assert check["step"] == 3 and t["handover"]["check_features"] is True
    features = terms["features"]
    assert len(features) == 6
    for on, tok in features[:4]:  # up to the check's own step (decided after its forward)
        assert on == [0.0] * len(on) and tok == 0.0
    for on, tok in features[4:]:
        assert on == [float(check["answer_term"])] * len(on)
        assert (tok > 0) == check["answer_term"]


def test_check_features_needs_the_check():
    from clip_td.base.io import InputError
    from clip_td.lib.distill import MethodConfig, resolve_method

    with pytest.raises(InputError, match="method.check_features"):
        resolve_method(MethodConfig(check_features=True, student_check=0.0))
    with pytest.raises(InputError, match="method.check_features"):
        resolve_method(MethodConfig(check_features=True, handover=False))
    assert resolve_method(MethodConfig(check_features=True)).check_features
    with pytest.raises(InputError, match="method.check_answers"):
        resolve_method(MethodConfig(check_answers=True, student_check=0.0))


def test_check_features_are_off_for_the_run_when_the_gate_turns_the_answer_term_off(small_world, tiny_teacher,
                                                                                    tmp_path, monkeypatch):
    terms = _capture_loss_terms(monkeypatch)
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 1e-12,
             **{"method.student_check": 0.5, "method.check_features": True, "train.max_steps": 3})
    assert t["answer_term"] is False
    assert [tok for _, tok in terms["features"]] == [0.0] * 3
    assert all(on == [0.0] * len(on) for on, _ in terms["features"])


def test_check_answers_holds_every_rows_answer_term_until_the_check():
    from clip_td.lib.trust import StudentHandover

    teacher_right = torch.tensor([1, 0, 1, 1])
    held = torch.tensor([0, 1, 1, 0], dtype=torch.bool)
    plain = StudentHandover(teacher_right, ["a"] * 4, held_back=held, check_step=2)
    assert plain.gate(torch.arange(4)).tolist() == [1.0, 0.0, 0.0, 1.0]
    h = StudentHandover(teacher_right, ["a"] * 4, held_back=held, check_step=2, check_answers=True)
    assert h.gate(torch.arange(4)).tolist() == [0.0] * 4 and h.as_dict()["check_answers"]
    h.observe(torch.tensor([1, 2]), torch.tensor([0, 0]), step=0)  # teacher 1 of 2, student 0: teacher ahead
    assert h.gate(torch.arange(4)).tolist() == [0.0] * 4
    h.observe(torch.tensor([0]), torch.tensor([1]), step=2)
    assert h.check["answer_term"] and h.gate(torch.arange(4)).tolist() == [1.0] * 4
    h = StudentHandover(teacher_right, ["a"] * 4, held_back=held, check_step=2, check_answers=True)
    h.observe(torch.tensor([1, 2]), torch.tensor([1, 1]), step=0)  # student ahead: never taught
    h.observe(torch.tensor([0]), torch.tensor([1]), step=2)
    assert not h.check["answer_term"] and h.gate(torch.arange(4)).tolist() == [0.0] * 4


def test_mcnemar_check_needs_a_significant_student_lead_where_the_count_rule_takes_any_lead():
    from clip_td.lib.trust import StudentHandover

    def check(test, teacher, student):
        n = len(teacher)
        h = StudentHandover(torch.tensor(teacher), ["a"] * n, window=100, held_back=torch.ones(n, dtype=torch.bool),
                            check_test=test)
        h.check_step = 1
        h.observe(torch.arange(n), torch.tensor(student), step=0)
        h.observe(torch.tensor([0]), torch.tensor([0]), step=1)
        return h.as_dict()["check"], h.gate(torch.arange(n)).tolist()

    # student 4 right, teacher 3: b = 1 (row 1), c = 2 (rows 2, 3); p = P(X >= 2 | Bin(3, 1/2)) = 4/8
    teacher, student = [1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 1, 0]
    counted, gate = check("count", teacher, student)
    assert counted == {"step": 1, "held_back": 6, "rows": 6, "student_right": 4, "teacher_right": 3,
                       "answer_term": False} and gate == [0.0] * 6
    tested, gate = check("mcnemar", teacher, student)
    assert tested == {"step": 1, "held_back": 6, "rows": 6, "student_right": 4, "teacher_right": 3,
                      "answer_term": True, "test": "mcnemar", "b": 1, "c": 2, "p_value": 0.5} and gate == [1.0] * 6
    # the student right on 5 rows the teacher gets wrong: p = 1/32 < 0.05, off; on 4 of them: p = 1/16, kept
    five, gate = check("mcnemar", [0] * 5, [1] * 5)
    assert (five["c"], five["p_value"], five["answer_term"], gate) == (5, 0.03125, False, [0.0] * 5)
    four, _ = check("mcnemar", [0] * 4 + [1], [1] * 4 + [1])
    assert (four["b"], four["c"], four["p_value"], four["answer_term"]) == (0, 4, 0.0625, True)
    with pytest.raises(ValueError, match="student_check_test"):
        StudentHandover(torch.tensor([1]), ["a"], check_test="vote")


def test_each_check_is_described_in_one_log_line_with_its_decision():
    from clip_td.lib.trust import StudentHandover

    h = StudentHandover(torch.tensor([1, 1, 0, 1]), ["a"] * 4, window=100,
                        held_back=torch.tensor([1, 1, 1, 0], dtype=torch.bool), check_test="mcnemar")
    h.check_steps = [2, 4]
    h.observe(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), step=0)  # student 1 right, teacher 2
    h.observe(torch.tensor([3]), torch.tensor([1]), step=2)  # first check: b = 2 (rows 0, 1), c = 1 (row 2)
    assert h.describe_check(h.checks[0]) == (
        "held-back check at step 2: student 1, teacher 2 of 3 held-back rows right (McNemar b=2, c=1, p=0.875): "
        "the answer-level term stays on, the rows stay held back for the next check")
    h.observe(torch.tensor([3]), torch.tensor([1]), step=4)  # the last check ends the holding, the teacher kept
    assert h.describe_check(h.checks[1]).endswith(": the answer-level term stays on, the held-back labels count")
    # the count rule: a student lead turns the term off, and the line has no McNemar figures
    off = StudentHandover(torch.tensor([0, 0]), ["a"] * 2, window=100, held_back=torch.ones(2, dtype=torch.bool))
    off.check_step = 1
    off.observe(torch.tensor([0, 1]), torch.tensor([1, 0]), step=0)
    off.observe(torch.tensor([0]), torch.tensor([1]), step=1)
    assert off.describe_check(off.check) == (
        "held-back check at step 1: student 1, teacher 0 of 2 held-back rows right: "
        "the answer-level term is off from here, the held-back labels count")


def test_the_label_free_copies_of_held_back_rows_get_no_teacher_answer_before_the_check():
    """With method.label_free_augment the label-free batch holds augmented copies of labelled rows
    under the same split index; the handover's gate reaches them through the teacher outputs, so
    the check's held-back rows are taught the teacher's answers on no copy before the check."""
    from functools import partial

    from clip_td.app.teacher_setup import _with_handover
    from clip_td.lib.trust import StudentHandover

    h = StudentHandover(torch.tensor([1, 1, 0, 1]), ["a"] * 4, window=100,
                        held_back=torch.tensor([0, 1, 0, 1], dtype=torch.bool), check_test="mcnemar")
    h.check_step = 5
    outputs = partial(_with_handover, lambda batch: {"answer_gate": torch.tensor([1.0, 1.0, 0.0, 1.0])[batch["index"]]}, h)
    free = {"index": torch.tensor([3, 0, 1, 2]), "label_free": True}
    assert outputs(free)["answer_gate"].tolist() == [0.0, 1.0, 0.0, 0.0]  # rows 3, 1 held back; row 2 refused by the gate
    h.observe(torch.tensor([1, 3]), torch.tensor([1, 1]), step=0)
    h.observe(torch.tensor([0]), torch.tensor([1]), step=5)  # the check: student 2, teacher 2 of 2: the term stays
    assert not h.holding and outputs(free)["answer_gate"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_student_check_test_is_checked_by_name():
    from clip_td.lib.distill import MethodConfig, resolve_method

    assert resolve_method(MethodConfig(student_check_test="mcnemar")).student_check_test == "mcnemar"
    with pytest.raises(InputError, match="method.student_check_test: unknown value 'vote'"):
        resolve_method(MethodConfig(student_check_test="vote"))
    assert resolve_method(MethodConfig(student_check_every=0.25)).student_check_every == 0.25
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match=rf"method.student_check_every: expected a share of the run's steps "
                                             rf"in \[0, 1\), got {bad}"):
            resolve_method(MethodConfig(student_check_every=bad))


def test_metrics_name_the_teacher_build_by_its_weights_fingerprint(small_world, tiny_teacher, tmp_path):
    """metrics.json `teacher`: the resolved name and the first 16 hex digits of the teacher's
    fingerprint (config and every weight); no `teacher` when nothing is distilled."""
    from clip_td.lib.teacher import FrozenTeacher

    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
    runs = {}
    for method in ("clip_td", "none"):
        out = tmp_path / method
        assert main(["--config", tiny, *tiny_overrides(small_world, tiny_teacher, out, **{
            "task.name": "vqa", "method.name": method, "train.max_steps": 1, "eval.splits": "[val]"})]) == 0
        runs[method] = json.loads((out / "metrics.json").read_text())
    name = f"local-dir:{tiny_teacher}"
    expected = FrozenTeacher.from_name(name).fingerprint()[:16]
    assert runs["clip_td"]["teacher"] == {"name": name, "pretrained": None, "fingerprint": expected}
    assert len(expected) == 16 and int(expected, 16) >= 0
    assert "teacher" not in runs["none"]


def test_early_stopping_waits_for_the_held_back_check(small_world, tiny_teacher, tmp_path, capsys):
    """train.patience=1 with an evaluation every step would stop the run at its first evaluation
    without a better held-out score; while method.student_check's rows are held back those
    evaluations count no patience, so the run reaches its check at step 6 of 8."""
    t = _run(small_world, tiny_teacher, tmp_path, "snli_ve", "task", 1.0,
             **{"method.student_check": 0.5, "method.student_check_at": 0.75, "method.handover_window": 1000,
                "train.max_steps": 8, "train.holdout": 0.25, "train.patience": 1, "train.eval_every": 1})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = metrics["train"]["holdout"]["history"]
    assert t["handover"]["check"] is not None and t["handover"]["check"]["step"] == 6
    assert capsys.readouterr().out.count("held-back check at step 6: student ") == 1  # the trainer logs it
    assert metrics["train"]["steps"] >= 7 and [step for step, _ in history][:6] == [1, 2, 3, 4, 5, 6]
    scores = [score for _, score in history]
    # a run that stops before the end stops at the first evaluation after the check that is not a new best
    if metrics["train"]["holdout"]["stopped_early"]:
        stop = metrics["train"]["steps"]
        assert stop > 6 and scores[stop - 1] <= max(scores[:stop - 1])


def test_handover_scope_labelled_keeps_the_label_free_answer_term_after_the_check_turns_it_off():
    """method.handover_scope=labelled: the check (student 3 of 3 right where the teacher has 0, p =
    1/8 < 0.2) turns the labelled rows' answer term off; a label-free batch of the same rows keeps
    it, still within the gate's decision (row 2 refused) and, before the check, without the
    held-back rows' copies (rows 1, 3). Scope `all` turns both off."""
    from functools import partial

    from clip_td.app.teacher_setup import _with_handover
    from clip_td.lib.trust import StudentHandover

    def run(scope):
        h = StudentHandover(torch.tensor([0, 0, 1, 0]), ["a"] * 4, window=100, alpha=0.2,
                            held_back=torch.tensor([0, 1, 0, 1], dtype=torch.bool), check_test="mcnemar", scope=scope)
        h.check_step = 5
        gated = {"answer_gate": torch.tensor([1.0, 1.0, 0.0, 1.0])}
        outputs = partial(_with_handover, lambda batch: {k: v[batch["index"]] for k, v in gated.items()}, h)
        free = {"index": torch.tensor([3, 0, 1, 2]), "label_free": True}
        labelled = {"index": torch.tensor([3, 0, 1, 2])}
        before = (outputs(labelled)["answer_gate"].tolist(), outputs(free)["answer_gate"].tolist())
        h.observe(torch.tensor([1, 3]), torch.tensor([1, 1]), step=0)
        h.observe(torch.tensor([0]), torch.tensor([1]), step=5)  # b = 0, c = 2 on rows 1, 3: p = 1/4 >= 0.2
        return h, before, outputs(labelled)["answer_gate"].tolist(), outputs(free)["answer_gate"].tolist()

    for scope in ("all", "labelled"):
        h, before, _, _ = run(scope)
        assert before == ([0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    h, _, labelled, free = run("labelled")
    assert h.check["answer_term"] and labelled == free == [1.0, 1.0, 1.0, 0.0]  # kept: the scope changes nothing
    # the student right on all three rows the teacher gets wrong: p = 1/8 < 0.2, the term off
    for scope, free_after in (("all", [0.0, 0.0, 0.0, 0.0]), ("labelled", [1.0, 1.0, 1.0, 0.0])):
        h = StudentHandover(torch.tensor([0, 0, 1, 0]), ["a"] * 4, window=100, alpha=0.2,
                            held_back=torch.tensor([1, 1, 0, 1], dtype=torch.bool), check_test="mcnemar", scope=scope)
        h.check_step = 5
        outputs = partial(_with_handover, lambda batch: {"answer_gate": torch.tensor([1.0, 1.0, 0.0, 1.0])[batch["index"]]}, h)
        h.observe(torch.tensor([0, 1, 3]), torch.tensor([1, 1, 1]), step=0)
        h.observe(torch.tensor([2]), torch.tensor([1]), step=5)
        assert (h.check["b"], h.check["c"], h.check["p_value"], h.check["answer_term"]) == (0, 3, 0.125, False)
        assert outputs({"index": torch.tensor([3, 0, 1, 2])})["answer_gate"].tolist() == [0.0] * 4
        assert outputs({"index": torch.tensor([3, 0, 1, 2]), "label_free": True})["answer_gate"].tolist() == free_after
        assert h.as_dict().get("scope") == (None if scope == "all" else "labelled")
    with pytest.raises(ValueError, match="handover_scope"):
        StudentHandover(torch.tensor([1]), ["a"], scope="unlabelled")


def test_handover_scope_is_checked_by_name_and_needs_the_label_free_answer_term():
    from clip_td.lib.distill import MethodConfig, resolve_method

    ok = MethodConfig(label_free=1.0, label_free_answers=True, handover_scope="labelled")
    assert resolve_method(ok).handover_scope == "labelled"
    with pytest.raises(InputError, match="method.handover_scope: unknown value 'free'; expected one of: all, labelled"):
        resolve_method(MethodConfig(handover_scope="free"))
    with pytest.raises(InputError, match=r"method.handover_scope='labelled': needs the handover and the label-free "
                                         r"answer term .* label_free_answers=False"):
        resolve_method(MethodConfig(label_free=1.0, handover_scope="labelled"))
    with pytest.raises(InputError, match=r"got handover=False"):
        resolve_method(MethodConfig(label_free=1.0, label_free_answers=True, handover=False, handover_scope="labelled"))
