"""CLIP-TD distillation losses and methods (docs/method.md).

    method = resolve_method(cfg.method, seed=cfg.seed)          # preset applied once
    distiller = create_distiller(method, student_dim=192, teacher_dim=512)
    terms = distiller(student_out, teacher_out, batch, logits)   # {"tok_loss", "glob_loss", "ans_loss", "weights", ...}

L_distill = alpha * mean_i w_i * (L_tok(i) + beta * L_glob(i) + eta * L_ans(i)); the three
returned `*_loss` entries are those weighted terms (their sum is L_distill), so the training
loss is the sum of every `*_loss` key. The projections P_v, P_t, P_g live only here: the saved
student never holds them. All loss math runs in fp32.

teacher_out (from `TeacherCache.lookup` or `teacher_outputs`), per instance:
    patch_tokens (B, Nv, d), image_embed (B, d), text_embed (B, d) of the task text,
    token_feats (B, Nt, d), token_mask (B, Nt) bool, token_offsets (B, Nt, 2) of the task text,
    cand_logits (B, C) the teacher's zero-shot logits over the candidates, gold (B,) (-1 = none),
    optional cls_attention (B, Nv).
batch may hold `cand_mask` (B, C) bool (VQA: the answers of the question's type); the teacher's
distribution q_i is then renormalised over those candidates (the others get probability 0).
student_out: pooled (B, h), image_tokens (B, Ns, h), text_tokens (B, T, h) -- one sequence per
instance. batch: `offsets` (B, T, 2) of the student's tokens ((0, 0) = special) for the text term.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from clip_td.base.io import InputError
from clip_td.base.registry import Registry
from clip_td.lib.selection import NEEDS_STUDENT, SELECTORS
from clip_td.lib.text_align import align_teacher_tokens
from clip_td.lib.token_grid import grid_from_tokens, resample_grid
from clip_td.lib.weighting import MAX_WEIGHT, SCHEDULES, WEIGHTINGS, gold_confidence

METHODS = Registry("distillation method")


# ---- loss terms (pure functions) ----------------------------------------------------------------


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cos over the last dim, in fp32. (..., d), (..., d) -> (...)."""
    return 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-6)


def answer_bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float,
                        mask: Optional[torch.Tensor] = None, teacher_tau: Optional[float] = None) -> torch.Tensor:
    """The answer-level term for a sigmoid head (VQA's BCE on soft scores): each answer's student
    probability sigmoid(s_c) against the teacher's q_c = softmax(teacher / tau)_c, summed over the
    candidates the teacher scored (`mask`; all when None), as the task's BCE sums over answers:
    L_ans(i) = sum_c [BCE(sigmoid(s_ic), q_ic) - H(q_ic)] = sum_c KL(Bern(q_ic) || Bern(sigmoid(s_ic))),
    zero when the head matches the teacher. `teacher_tau` (default tau) is the temperature of q
    alone. teacher_logits, student_logits (B, C) -> (B,)."""
    q = F.softmax(teacher_logits.float() / (tau if teacher_tau is None else teacher_tau), dim=-1)
    bce = F.binary_cross_entropy_with_logits(student_logits.float(), q, reduction="none")
    entropy = -(torch.special.xlogy(q, q) + torch.special.xlogy(1 - q, 1 - q))
    per = bce - entropy
    if mask is not None:
        per = per * mask.to(per.device, per.dtype)
    return per.sum(-1)


ANSWER_LOSSES = ("auto", "kl", "bernoulli")
LABEL_FREE_COPIES = ("teacher", "trusted")  # method.label_free_copies values


def answer_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float,
              teacher_tau: Optional[float] = None, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_ans(i) = KL(q_i || softmax(student / tau)) * tau^2, q_i = softmax(teacher / tau_t), with
    tau_t = `teacher_tau` (default tau: the usual distillation KL). With `mask` (B, C) bool both
    softmaxes run over the row's allowed candidates only (the student's distribution conditioned
    on the candidates the teacher speaks to).

    teacher_logits, student_logits (B, C) -> (B,).
    """
    log_q = F.log_softmax(masked_candidates(teacher_logits, mask) / (tau if teacher_tau is None else teacher_tau), dim=-1)
    log_p = F.log_softmax(masked_candidates(student_logits, mask) / tau, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1) * tau**2


MASKED_LOGIT = -1e4  # exp(-1e4 / tau) is exactly 0 in fp32, and 0 * log 0 stays finite in the KL


def masked_candidates(cand_logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """fp32 teacher candidate logits with the candidates outside `mask` set to MASKED_LOGIT.

    cand_logits (B, C), mask (B, C) bool or None (no restriction) -> (B, C).
    """
    logits = cand_logits.float()
    if mask is None:
        return logits
    return logits.masked_fill(~mask.to(logits.device), MASKED_LOGIT)


def copy_trust(cand_logits: torch.Tensor, gold: torch.Tensor, copy_labelled: torch.Tensor,
               mask: Optional[torch.Tensor], tau: float) -> torch.Tensor:
    """`method.label_free_copies=trusted`: the weight of each label-free row's answer term. 1 on
    a row without a label; on an augmented copy of a labelled row (`copy_labelled`), the teacher's
    chance-corrected trust in the copy's gold label, t = clip((q[gold] - 1/K) / (1 - 1/K), 0, 1)
    with q the distribution the term distils (softmax at `tau` over the row's K candidates in
    `mask`): 0 where the teacher is at or below chance on it, or the gold label is not among its
    candidates (masked out of `cand_logits`, so q[gold] = 0): the `calibrated` weighting at gamma 1.
    cand_logits (B, C) masked, gold (B,), copy_labelled (B,) bool -> (B,) fp32."""
    q = F.softmax(cand_logits.float() / float(tau), dim=-1)
    n_cand = mask.sum(-1).to(q.device) if mask is not None else None
    trust = WEIGHTINGS.create("calibrated", teacher_probs=q, gold=gold, num_candidates=n_cand)
    return torch.where(copy_labelled.bool(), trust, torch.ones_like(trust))


def gold_allowed(mask: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the gold candidate lies inside the row's `mask` (B, C) bool; True where gold < 0
    (no gold candidate: nothing to check)."""
    inside = mask.bool().gather(1, gold.long().clamp_min(0)[:, None]).squeeze(1)
    return inside | (gold < 0)


def first_segment_offsets(offsets: torch.Tensor) -> torch.Tensor:
    """Keep the spans of the first text segment only; zero the rest.

    HF offsets of a pair restart at 0 in the second segment (VCR's answer), so only the first
    segment (the question / hypothesis, a prefix of the teacher's task text) can be aligned.
    offsets (B, T, 2) -> (B, T, 2).
    """
    special = offsets[..., 0] >= offsets[..., 1]  # (B, T): (0, 0) spans
    seen_content = (~special).long().cumsum(-1) > 0
    after_first = (special & seen_content).long().cumsum(-1) > 0  # from the first special after content
    keep = ~special & ~after_first
    return offsets * keep.unsqueeze(-1).to(offsets.dtype)


def _masked_distance_sum(proj: nn.Module, student: torch.Tensor, teacher: torch.Tensor,
                         mask: torch.Tensor, dense: Optional[bool] = None) -> torch.Tensor:
    """Per-instance sum of (1 - cos(P S[j], Z[j])) over masked j.

    student (B, N, h), teacher (B, N, d), mask (B, N) bool -> (B,). On the CPU only the masked
    tokens are projected; on a GPU (`dense`, default: the mask is on a GPU) every token is and the
    mask zeroes the rest: gathering the masked ones has a data-dependent shape, which makes the
    host wait for the GPU, and the extra projections cost less than that wait.
    """
    if mask.is_cuda if dense is None else dense:
        dist = cosine_distance(proj(student), teacher)  # (B, N)
        return torch.where(mask, dist, torch.zeros_like(dist)).sum(-1)
    rows, cols = mask.nonzero(as_tuple=True)
    dist = cosine_distance(proj(student[rows, cols]), teacher[rows, cols])  # (n_selected,)
    return torch.zeros(mask.shape[0], device=dist.device).index_add(0, rows, dist)


# ---- methods -----------------------------------------------------------------------------------


TRUST_GATES = ("group", "task", "off")  # method.trust_gate values (clip_td.lib.trust)
TEXT_SEGMENTS = ("all", "first")  # method.text_segments values
PROJECTORS = ("linear", "mlp")  # method.projector values


def make_projector(kind: str, student_dim: int, teacher_dim: int) -> nn.Module:
    """student width -> teacher width: one nn.Linear, or Linear -> GELU -> Linear (hidden width
    max(student_dim, teacher_dim))."""
    if kind == "mlp":
        hidden = max(student_dim, teacher_dim)
        return nn.Sequential(nn.Linear(student_dim, hidden), nn.GELU(), nn.Linear(hidden, teacher_dim))
    return nn.Linear(student_dim, teacher_dim)


@dataclass
class MethodConfig:
    """The `method` section of the fine-tuning config, and what the distiller reads.

    A preset (`name`) is applied once by `resolve_method`; the result is the one set of
    settings the run uses (naive_kd and the ablations override some fields)."""

    name: str = "clip_td"  # METHODS preset: none | naive_kd | clip_td | clip_td_nosel | clip_td_noweight | clip_td_label_free
    alpha: float = 1.0  # weight of the whole distillation term (0 = off)
    beta: float = 0.5  # weight of the global-embedding term
    eta: float = 1.0  # weight of the answer-level term
    tau: float = 2.0  # temperature of the answer-level term
    teacher_tau: Optional[float] = None  # temperature of the teacher's distribution in the labelled rows' answer-level term alone (null: method.tau; smaller sharpens it toward the teacher's top answer; the student side, the instance weights and the label-free term keep theirs)
    rho: float = 0.25  # fraction of teacher image tokens kept per instance
    gamma: float = 1.0  # confidence exponent of the dynamic weight
    selection: str = "relevance_topk"  # SELECTORS registry name (clip_td); the ablations override it
    weighting: str = "confidence"  # WEIGHTINGS registry name (clip_td); the ablations override it
    text_tokens: bool = True  # also distil the text tokens (content tokens, see text_segments)
    projector: str = "linear"  # P_v, P_t, P_g: linear (one nn.Linear each) | mlp (Linear -> GELU -> Linear, hidden width max(student, teacher)): more room to match the teacher in the projector rather than in the student's features
    rationales: bool = True  # VCR: the teacher also scores the QA->R stage (question + right answer + each rationale) and the gold rationale's sequence is distilled too
    text_segments: str = "all"  # student text tokens aligned with the teacher's: all (every segment of a pair, e.g. VCR's question and answer, placed in the joined text the teacher reads) | first (the first segment only)
    selection_seed: Optional[int] = None  # seed of random_k's generator; null = the run's seed
    question_candidates: bool = True  # VQA: the teacher scores "<question> <answer>" for each answer (false: the bare answer words)
    similarity_probe: bool = True  # SNLI-VE: the teacher's label distribution is p(label | cos(image, hypothesis)), a one-feature probe cross-fitted on the labelled rows (false: the softmax over label templates)
    probe_contrast: bool = False  # SNLI-VE with similarity_probe: the teacher speaks to the task's contrast labels only (entailment vs contradiction, what cos(image, hypothesis) can tell apart): a probe fitted on the labelled rows of those labels, the other label masked out of both distributions (the student's softmax over the pair), no answer term on a labelled row whose gold label is outside the pair, the trust gate and held-back check over the pair's rows
    answer_sets: bool = False  # VQA: restrict the teacher's answer distribution to the answers its question type takes in the training rows (measured worse at 5-100 %; README)
    schedule: str = "constant"  # SCHEDULES registry name, a factor on alpha over training: constant | linear | cosine
    trust_gate: str = "group"  # answer-level term only where the teacher beats the label prior on the labelled rows: group (per the task's trust groups) | task | off
    trust_alpha: float = 0.05  # significance level of the gate's one-sided binomial test (trust_alpha_rule=fixed), and of the handover's and held-back check's McNemar tests
    trust_alpha_rule: str = "fixed"  # the gate's level: fixed (trust_alpha) | balanced (set by each test's row count: the critical count minimising type I + type II errors for a teacher trust_effect above the prior; clip_td.lib.trust.balanced_critical)
    trust_effect: float = 0.10  # trust_alpha_rule=balanced: the teacher's lead over the label prior (a share) the gate's errors are balanced at
    handover: bool = True  # the answer-level term of a trust group is switched off once the student answers its labelled rows' first visits better than the teacher (a McNemar test per block of handover_window first visits; clip_td.lib.trust.StudentHandover)
    handover_window: int = 200  # first visits per handover test
    student_check: float = 0.2  # with handover: share of the labelled rows held back for the student-vs-teacher check (their labels and answer-level term wait until it; 0 = no check)
    student_check_at: float = 0.5  # the check's step, as a share of the run's steps
    student_check_every: float = 0.0  # with the held-back check: repeat it every this share of the run's steps after student_check_at (checks at at, at + every, ... below 1) until one turns the answer-level term off; the held-back rows' labels wait until then or the last check (0 = one check)
    student_check_test: str = "count"  # the check's rule: count (the answer-level term is off when the student answers at least as many held-back rows right as the teacher) | mcnemar (off only when the exact one-sided McNemar test on the held-back rows' discordant pairs finds the student better at trust_alpha, the rule of the handover blocks)
    handover_scope: str = "all"  # with handover: the answer-level terms a handover (a block's test or the held-back check) turns off. all: every row's, the label-free rows' too; labelled: the labelled rows' only, the label-free answer term (method.label_free_answers) keeps running after it (the trust gate's decision and the holding of the held-back rows' copies before the check still apply)
    check_features: bool = False  # with the held-back check: the token and global terms of the labelled rows wait for it too (none before `student_check_at`), and run after it only if the check keeps the answer-level term (the teacher answered more held-back rows right than the student)
    check_answers: bool = False  # with the held-back check: the answer-level term waits for it on every labelled row (not only the held-back ones); with check_features, nothing is distilled before the teacher has shown it answers better than the student
    weight_features: bool = False  # false (default): the token and global terms run unweighted and w_i scales the answer-level term alone (the teacher's confidence in the gold answer says whether to trust its answers, not its image features); true: w_i scales every term (the paper: L = mean_i w_i (L_tok + beta L_glob + eta L_ans))
    feature_gate: bool = False  # the token and global terms follow the trust gate too: an instance's feature terms run only where its answer-level term runs (its trust group passed the gate and has not handed over; none when the gate turned the answer term off for the run)
    answer_loss: str = "auto"  # answer-level term: kl (softmax head) | bernoulli (sigmoid head: per-answer KL) | auto (the task's head)
    label_free: float = 0.0  # weight of the label-free term on the training split's unlabelled images (0 = off: the paper's protocol)
    label_free_augment: bool = False  # the student sees a photometrically augmented copy of each unlabelled image, the teacher's target stays the clean one
    label_free_answers: bool = False  # with label_free: the answer-level term on the unlabelled rows too (the teacher's distribution over the row's candidates, which are inputs, not labels; unweighted; within the trust groups the gate passed; VCR: the Q->A stage, the question with each answer)
    label_free_teacher_tau: Optional[float] = None  # with label_free_answers: the temperature of the teacher's distribution in the label-free answer term alone (null: method.tau; smaller sharpens it toward the teacher's top answer, as pseudo-labelling does; the student side keeps method.tau)
    label_free_rationales: bool = False  # with label_free_answers on VCR: the QA->R stage of the unlabelled rows too, conditioned on the teacher's own Q->A answer (its argmax; never the gold one): the student reads the question + that answer with each rationale, the teacher's distribution is over the same 4 rationales
    label_free_copies: str = "teacher"  # with label_free_answers and label_free_augment: the answer term on the labelled rows' augmented copies. teacher: as on the unlabelled rows; trusted: weighted by the teacher's chance-corrected trust in the copy's gold label, t = clip((q[gold] - 1/K) / (1 - 1/K), 0, 1) at label_free_teacher_tau (0 where the teacher is at or below chance on it, or the gold label is not among its candidates)
    label_free_features: bool = True  # with label_free: the token and global terms on the unlabelled rows (false: only the answer term of label_free_answers)


@METHODS.register("none")
def method_none(m: MethodConfig) -> MethodConfig:
    return replace(m, alpha=0.0)


@METHODS.register("naive_kd")
def method_naive_kd(m: MethodConfig) -> MethodConfig:
    return replace(m, selection="all", weighting="uniform", eta=0.0)


@METHODS.register("clip_td")
def method_clip_td(m: MethodConfig) -> MethodConfig:
    return m


@METHODS.register("clip_td_nosel")
def method_clip_td_nosel(m: MethodConfig) -> MethodConfig:
    return replace(m, selection="all")


@METHODS.register("clip_td_noweight")
def method_clip_td_noweight(m: MethodConfig) -> MethodConfig:
    return replace(m, weighting="uniform")


@METHODS.register("clip_td_label_free")
def method_clip_td_label_free(m: MethodConfig) -> MethodConfig:
    """Beyond the paper's protocol: clip_td plus the teacher's sharpened answers (tau_t 0.5) on the
    training split's unlabelled rows, with each task's answer distribution that carries label
    information there (VQA: the question type's answer set; SNLI-VE: entailment vs contradiction;
    VCR: the QA->R stage too, conditioned on the teacher's own answer; each key is read by its task
    alone), the student reading augmented copies of the images in that term, and the held-back
    check as McNemar's test. The label-free token and global terms stay off. These are the keys of
    the benchmark's best-measured row (docs/method.md)."""
    return replace(m, label_free=1.0, label_free_answers=True, label_free_features=False,
                   label_free_teacher_tau=0.5, answer_sets=True, probe_contrast=True,
                   label_free_rationales=True, label_free_augment=True, student_check_test="mcnemar")


def _warn_overridden(given: MethodConfig, preset: MethodConfig) -> None:
    """A preset's keys win over the same keys in the config: warn, naming the key, where the config
    set one to a value other than its default and the preset replaced it (a key set to its default
    cannot be told from one left alone)."""
    for f in fields(MethodConfig):
        mine, theirs = getattr(given, f.name), getattr(preset, f.name)
        if mine != theirs and mine != f.default:
            warnings.warn(f"method.{f.name}={mine!r} is replaced by the preset method.name={given.name} "
                          f"({theirs!r}); to vary it, use method.name=clip_td with the preset's keys "
                          f"(docs/method.md)", stacklevel=3)


def resolve_method(cfg: Any, seed: int = 0) -> MethodConfig:
    """The run's method settings: `cfg` (a DictConfig / mapping / MethodConfig of the `method`
    section) with its preset applied and every registry name checked; `seed` fills a null
    `selection_seed`."""
    if isinstance(cfg, MethodConfig):
        m = cfg
    else:
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        known = {f.name for f in fields(MethodConfig)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise InputError(f"unknown config key(s) method.{unknown[0]}; expected one of: {', '.join(sorted(known))}")
        m = MethodConfig(**items)
    given = m
    m = METHODS.create(m.name, m, key="method.name")
    _warn_overridden(given, m)
    SELECTORS.get(m.selection, key="method.selection")
    WEIGHTINGS.get(m.weighting, key="method.weighting")
    SCHEDULES.get(m.schedule, key="method.schedule")
    if str(m.trust_gate).lower() in ("false", "off", "no"):  # YAML reads a bare `off` as false
        m = replace(m, trust_gate="off")
    if str(m.trust_gate) not in TRUST_GATES:
        raise InputError(f"config key method.trust_gate: unknown value {m.trust_gate!r}; expected one of: "
                         f"{', '.join(TRUST_GATES)}")
    from clip_td.lib.trust import ALPHA_RULES

    if m.trust_alpha_rule not in ALPHA_RULES:
        raise InputError(f"config key method.trust_alpha_rule: unknown value {m.trust_alpha_rule!r}; expected one of: "
                         f"{', '.join(ALPHA_RULES)}")
    if not 0.0 < float(m.trust_effect) <= 1.0:
        raise InputError(f"config key method.trust_effect: expected a lead over the label prior in (0, 1], "
                         f"got {m.trust_effect!r}")
    if m.projector not in PROJECTORS:
        raise InputError(f"config key method.projector: unknown value {m.projector!r}; expected one of: "
                         f"{', '.join(PROJECTORS)}")
    if m.text_segments not in TEXT_SEGMENTS:
        raise InputError(f"config key method.text_segments: unknown value {m.text_segments!r}; expected one of: "
                         f"{', '.join(TEXT_SEGMENTS)}")
    if int(m.handover_window) < 1:
        raise InputError(f"config key method.handover_window: expected a positive number of rows, got {m.handover_window!r}")
    if not 0.0 <= float(m.student_check) < 1.0:
        raise InputError(f"config key method.student_check: expected a share in [0, 1), got {m.student_check!r}")
    if not 0.0 < float(m.student_check_at) < 1.0:
        raise InputError(f"config key method.student_check_at: expected a share of the run's steps in (0, 1), "
                         f"got {m.student_check_at!r}")
    from clip_td.lib.trust import CHECK_TESTS

    if not 0.0 <= float(m.student_check_every) < 1.0:
        raise InputError(f"config key method.student_check_every: expected a share of the run's steps in [0, 1), "
                         f"got {m.student_check_every!r}")
    if m.student_check_test not in CHECK_TESTS:
        raise InputError(f"config key method.student_check_test: unknown value {m.student_check_test!r}; expected one "
                         f"of: {', '.join(CHECK_TESTS)}")
    from clip_td.lib.trust import HANDOVER_SCOPES

    if m.handover_scope not in HANDOVER_SCOPES:
        raise InputError(f"config key method.handover_scope: unknown value {m.handover_scope!r}; expected one of: "
                         f"{', '.join(HANDOVER_SCOPES)}")
    if m.handover_scope != "all" and not (m.handover and m.label_free and m.label_free_answers):
        raise InputError(f"config key method.handover_scope={m.handover_scope!r}: needs the handover and the label-free "
                         f"answer term (method.handover=true, method.label_free > 0, method.label_free_answers=true), "
                         f"got handover={m.handover!r}, label_free={m.label_free!r}, "
                         f"label_free_answers={m.label_free_answers!r}")
    for key in ("check_features", "check_answers"):
        if getattr(m, key) and not (m.handover and float(m.student_check) > 0):
            raise InputError(f"config key method.{key}: needs the held-back check (method.handover=true and "
                             f"method.student_check > 0), got handover={m.handover!r}, student_check={m.student_check!r}")
    for key in ("teacher_tau", "label_free_teacher_tau"):
        if getattr(m, key) is not None and not float(getattr(m, key)) > 0:
            raise InputError(f"config key method.{key}: expected a temperature > 0 or null, got {getattr(m, key)!r}")
    if m.probe_contrast and not m.similarity_probe:
        raise InputError("config key method.probe_contrast: needs method.similarity_probe=true (the pair's "
                         "distribution is the similarity probe's), got similarity_probe=false")
    if m.label_free_copies not in LABEL_FREE_COPIES:
        raise InputError(f"config key method.label_free_copies: unknown value {m.label_free_copies!r}; expected one of: "
                         f"{', '.join(LABEL_FREE_COPIES)}")
    if m.label_free_copies != "teacher" and not (m.label_free_augment and m.label_free_answers):
        raise InputError(f"config key method.label_free_copies={m.label_free_copies!r}: needs the labelled rows' "
                         f"augmented copies in the label-free answer term (method.label_free_augment=true and "
                         f"method.label_free_answers=true), got label_free_augment={m.label_free_augment!r}, "
                         f"label_free_answers={m.label_free_answers!r}")
    if m.answer_loss not in ANSWER_LOSSES:
        raise InputError(f"config key method.answer_loss: unknown value {m.answer_loss!r}; expected one of: "
                         f"{', '.join(ANSWER_LOSSES)}")
    if m.selection_seed is None:
        m = replace(m, selection_seed=int(seed))
    return m


def for_task(m: MethodConfig, task: Any) -> MethodConfig:
    """`method.answer_loss=auto` resolved by the task's head: bernoulli for a sigmoid head (VQA),
    kl for a softmax head."""
    if m.answer_loss != "auto":
        return m
    return replace(m, answer_loss="bernoulli" if getattr(task, "answer_head", "softmax") == "sigmoid" else "kl")


def create_distiller(method: MethodConfig, student_dim: int, teacher_dim: int) -> nn.Module:
    """The training-only distillation module of a resolved method (`resolve_method`)."""
    if method.alpha == 0.0:
        return NoDistillation()
    return Distiller(method, student_dim, teacher_dim)


class NoDistillation(nn.Module):
    """`none`: no projections, no terms."""

    def forward(self, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
        return {}


class Distiller(nn.Module):
    """Projections P_v, P_t, P_g and the weighted CLIP-TD terms."""

    def __init__(self, settings: MethodConfig, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.settings = settings
        self.proj_v = make_projector(settings.projector, student_dim, teacher_dim)
        self.proj_t = make_projector(settings.projector, student_dim, teacher_dim)
        self.proj_g = make_projector(settings.projector, student_dim, teacher_dim)
        self.generator = torch.Generator().manual_seed(settings.selection_seed or 0)

    def forward(self, student_out: Dict[str, torch.Tensor], teacher_out: Dict[str, Any], batch: Dict[str, Any],
                logits: torch.Tensor) -> Dict[str, torch.Tensor]:
        """-> {"tok_loss", "glob_loss", "ans_loss" (scalars, already weighted; a term whose weight
        is 0 is left out), "weights" (B,) w_i, "teacher_conf" (B,) c_i, "selected_frac", and with
        the answer term "answer_right" (B,) bool: the student's top candidate is the gold one}."""
        s = self.settings
        t = {k: v.to(logits.device) if torch.is_tensor(v) else v for k, v in teacher_out.items()}
        cand_logits = masked_candidates(t["cand_logits"], batch.get("cand_mask"))
        q = F.softmax(cand_logits / s.tau, dim=-1)  # (B, C)
        gold = t["gold"].long()
        conf = gold_confidence(q, gold)
        student_probs = F.softmax(logits.detach().float() / s.tau, dim=-1)
        mask = batch.get("cand_mask")  # K_i: the candidates the teacher scored for instance i
        n_cand = mask.sum(-1) if mask is not None else torch.full_like(gold, q.shape[1])
        w = WEIGHTINGS.create(s.weighting, teacher_probs=q, gold=gold, student_probs=student_probs, gamma=s.gamma,
                              num_candidates=n_cand.to(q.device))
        w = w.detach().clamp(0.0, MAX_WEIGHT)  # every weighting is bounded (weighting.MAX_WEIGHT)

        w_feat = w if s.weight_features else torch.ones_like(w)  # method.weight_features
        # method.feature_gate: the feature terms only where the answer-level term runs
        if s.feature_gate and t.get("answer_gate") is not None:
            w_feat = w * t["answer_gate"].to(w.device, w.dtype)
        if t.get("feature_on") is not None:  # method.check_features: the held-back check's decision
            w_feat = w_feat * t["feature_on"].to(w.device, w.dtype)
        tok, frac = self._token_term(student_out, t, batch)
        out: Dict[str, torch.Tensor] = {"tok_loss": s.alpha * (w_feat * tok).mean()}
        if s.beta:
            g = self.proj_g(student_out["pooled"]).float()  # (B, d)
            glob = 0.5 * (cosine_distance(g, t["image_embed"]) + cosine_distance(g, t["text_embed"]))
            out["glob_loss"] = s.alpha * s.beta * (w_feat * glob).mean()
        if s.eta:
            ans = self._answer_term(cand_logits, logits, mask, teacher_tau=s.teacher_tau)
            if t.get("answer_gate") is not None:  # the trust gate's per-row decision (trust groups)
                ans = ans * t["answer_gate"].to(ans.dtype)
            if mask is not None:  # no term on a row whose gold candidate the teacher does not speak to
                ans = ans * gold_allowed(mask.to(ans.device), gold).to(ans.dtype)
            out["ans_loss"] = s.alpha * s.eta * (w * ans).mean()
            # the student's answer vs the gold candidate, for method.handover (read by the trainer)
            out["answer_right"] = (masked_candidates(logits.detach(), mask).argmax(-1) == gold)
        out.update(weights=w, teacher_conf=conf.detach(), selected_frac=frac)
        return out

    def label_free(self, student_out: Dict[str, torch.Tensor], teacher_out: Dict[str, Any]) -> torch.Tensor:
        """L_free = alpha * mean_i [mean_j (1 - cos(P_v h_ij, z_ij)) + beta * (1 - cos(P_g g_i, e_i))] on
        unlabelled images: every image token against the teacher's patch grid and the pooled output
        against the teacher's image embedding, with the projections of the labelled terms. Nothing
        here reads a label or a task text that holds one (no gold, no relevance to the answer, no
        instance weight), so it runs on any image. -> scalar (not yet scaled by method.label_free)."""
        s = self.settings
        hv = student_out["image_tokens"]  # (B, Ns, h)
        zv = teacher_out["patch_tokens"].to(hv.device).float()
        zv = resample_grid(zv, grid_from_tokens(zv.shape[1]), grid_from_tokens(hv.shape[1]))
        tok = cosine_distance(self.proj_v(hv), zv).mean(-1)  # (B,)
        if s.beta:
            g = self.proj_g(student_out["pooled"])
            tok = tok + s.beta * cosine_distance(g, teacher_out["image_embed"].to(hv.device))
        return s.alpha * tok.mean()

    def label_free_answers(self, logits: torch.Tensor, teacher_out: Dict[str, Any],
                           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """L_free_ans = alpha * eta * mean_u g_u L_ans(u) on unlabelled rows: the answer-level term
        of the labelled rows (the same KL form) against the teacher's distribution over the row's
        candidates (at temperature `label_free_teacher_tau` when set), without an instance weight
        (c_i needs the gold label) and with the trust gate's per-row decision g_u (1 when there is
        none). `mask` (B, C) bool: the candidates each row may take (VQA's answer sets, from the
        question's type), as on the labelled rows. logits (B, C) -> scalar (not yet scaled by
        method.label_free)."""
        s = self.settings
        cand = masked_candidates(teacher_out["cand_logits"].to(logits.device), mask)
        ans = self._answer_term(cand, logits, mask, teacher_tau=s.label_free_teacher_tau)
        gate = teacher_out.get("answer_gate")
        if gate is not None:
            ans = ans * gate.to(ans.device, ans.dtype)
        copies = teacher_out.get("copy_labelled")
        if s.label_free_copies == "trusted" and copies is not None:
            ans = ans * copy_trust(cand, teacher_out["gold"].to(ans.device), copies.to(ans.device), mask,
                                   s.label_free_teacher_tau or s.tau).to(ans.dtype)
        return s.alpha * s.eta * ans.mean()

    def _answer_term(self, cand_logits: torch.Tensor, logits: torch.Tensor, mask: Optional[torch.Tensor] = None,
                     teacher_tau: Optional[float] = None) -> torch.Tensor:
        """L_ans per row in the form of the task's head (`method.answer_loss`): the Bernoulli KL
        for a sigmoid head (over the `mask`ed candidates), else the softmax KL. -> (B,)"""
        if self.settings.answer_loss == "bernoulli":
            return answer_bernoulli_kl(cand_logits, logits, self.settings.tau, mask, teacher_tau=teacher_tau)
        return answer_kl(cand_logits, logits, self.settings.tau, teacher_tau=teacher_tau, mask=mask)

    def _token_term(self, student_out: Dict[str, torch.Tensor], t: Dict[str, Any],
                    batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """L_tok(i) over the selected image tokens and the aligned text tokens. -> (B,), scalar."""
        s = self.settings
        hv = student_out["image_tokens"]  # (B, Ns, h)
        zv, n_teacher = t["patch_tokens"].float(), t["patch_tokens"].shape[1]
        dst = grid_from_tokens(hv.shape[1])
        zv = resample_grid(zv, grid_from_tokens(n_teacher), dst)  # (B, Ns, d)
        cls_att = t.get("cls_attention")
        if cls_att is not None and cls_att.shape[1] != hv.shape[1]:
            cls_att = resample_grid(cls_att.float().unsqueeze(-1), grid_from_tokens(n_teacher), dst).squeeze(-1)
        student_tokens = None
        if s.selection in NEEDS_STUDENT:
            with torch.no_grad():
                student_tokens = self.proj_v(hv)
        mask_v = SELECTORS.create(s.selection, zv, task_embed=t["text_embed"], cls_attention=cls_att, rho=s.rho,
                                  generator=self.generator, student_tokens=student_tokens)
        dist_sum = _masked_distance_sum(self.proj_v, hv, zv, mask_v)
        count = mask_v.float().sum(-1)
        if s.text_tokens and "offsets" in batch and "token_feats" in t:
            offsets = batch["offsets"].to(hv.device)  # pairs: already placed in the joined text (batches.joined_offsets)
            if s.text_segments == "first":
                offsets = first_segment_offsets(offsets)
            aligned, valid = align_teacher_tokens(t["token_feats"], t["token_offsets"], t["token_mask"], offsets)
            dist_sum = dist_sum + _masked_distance_sum(self.proj_t, student_out["text_tokens"], aligned, valid)
            count = count + valid.float().sum(-1)
        return dist_sum / count.clamp_min(1.0), mask_v.float().mean().detach()
