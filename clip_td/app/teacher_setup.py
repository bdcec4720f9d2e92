"""The teacher's side of a fine-tuning run: the frozen teacher, the distiller (training-only
projections) and where each batch's teacher outputs come from (the cache, or the teacher live).

Nothing here is trained: the teacher stays outside `accelerator.prepare` and the optimizer.
`none` (or alpha = 0) builds no teacher at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig

from clip_td.base.io import cache_root

logger = logging.getLogger("clip_td")


@dataclass
class TeacherSide:
    teacher: Any = None  # FrozenTeacher
    distiller: Optional[torch.nn.Module] = None
    image_transform: Optional[Callable] = None  # PIL -> (3, S, S) teacher-normalised, live teacher only
    live_texts: bool = False  # the batches carry the teacher's texts (live teacher only)
    outputs: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None  # batch -> teacher_out
    trust: Optional[Dict[str, Any]] = None  # the trust gate's figures and decisions (metrics.json `teacher_trust`)
    handover: Any = None  # method.handover: clip_td.lib.trust.StudentHandover, fed by the trainer
    free_answer: Optional[torch.Tensor] = None  # method.label_free_rationales: the teacher's answer per split row (-1: none)


def teacher_name(cfg: DictConfig, accelerator: Any) -> str:
    """open_clip model name of the teacher; null = the default teacher, `recipe:<name>` = that
    pretraining recipe's teacher (both trained on first use when not shipped or cached)."""
    from pretrain.default_teacher import RECIPE_PREFIX, default_teacher_name

    model = cfg.teacher.model
    if model and not str(model).startswith(RECIPE_PREFIX):
        return str(model)

    with accelerator.main_process_first():  # one process trains it, the others then load it
        return default_teacher_name(str(model) if model else None)


def check_alignment(student: torch.nn.Module, teacher: Any, name: str) -> None:
    """Token distillation matches student image tokens to teacher patches on a grid."""
    from clip_td.lib.token_grid import check_grid_alignment

    teacher_grid = teacher.grid_size if teacher.embed_dim >= 1 else None
    check_grid_alignment(getattr(student, "image_grid", None), teacher_grid, teacher=name)


def build_teacher_side(cfg: DictConfig, method: Any, accelerator: Any, task: Any, full_train: Any,
                       train_idx: List[int], student: torch.nn.Module,
                       free_idx: Sequence[int] = ()) -> TeacherSide:
    """Teacher, distiller and teacher-output source for the resolved `method` (empty when it
    distils nothing: `none`, or alpha = 0). `task` has been set up on the training rows;
    `free_idx` are the split rows the label-free term reads (`build.label_free_indices`).

    With `teacher.cache` the cache holds the whole training split (`full_train`), built once per
    (split, teacher) and shared by every fraction, seed and method; the low-shot rows `train_idx`
    are looked up in it by split index (`batch["index"]`)."""
    from clip_td.lib.distill import create_distiller, for_task
    from clip_td.lib.selection import needs_cls_attention

    if method.alpha == 0:
        return TeacherSide()
    from clip_td.lib.teacher import FrozenTeacher

    stages = int(getattr(task, "teacher_stages", 1))
    split_rows = full_train
    if stages > 1:  # every stage of an instance is a teacher row of its own (StagedRows)
        full_train, train_idx = StagedRows(full_train, stages), [i * stages + s for i in train_idx for s in range(stages)]
    name = teacher_name(cfg, accelerator)
    teacher = FrozenTeacher.from_name(name, cfg.teacher.pretrained)
    teacher.set_dense(str(cfg.teacher.dense), cfg.teacher.dense_scale)
    check_alignment(student, teacher, name)
    cls_attention = needs_cls_attention(method.selection)
    cache = None
    if cfg.teacher.cache:
        from clip_td.lib.teacher_cache import TeacherCache

        root = Path(cfg.teacher.cache_dir) if cfg.teacher.cache_dir else cache_root() / "teacher_cache"
        # the whole training split, once per (split, teacher): every fraction, seed and method of a
        # sweep reads its low-shot rows (`train_idx`, split indices) from the same cache
        cache = TeacherCache.build(teacher, task.teacher_texts, full_train, root,
                                   name=f"{task.name}-{cfg.data.train_split}",
                                   process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                                   barrier=accelerator.wait_for_everyone, cls_attention=cls_attention,
                                   run_candidates=getattr(task, "run_candidates", False))
    trust, gate, table = None, None, None
    every_row = bool(method.label_free and method.label_free_answers)  # the answer term reads unlabelled rows too
    contrast = getattr(task, "contrast_mask", None) if method.probe_contrast else None
    if method.eta and method.similarity_probe and getattr(task, "similarity_probe", False):
        table = similarity_probe_logits(teacher, task, full_train, train_idx, cache, method, every_row=every_row,
                                        contrast=contrast)
    handover, features_off = None, False
    if method.eta:
        # method.probe_contrast: the teacher is tested (and checked against the student) on the rows
        # whose gold label it speaks to
        gate_idx = contrast_rows(task, full_train, train_idx, contrast) if contrast is not None else train_idx
        trust, gate = trust_gate(teacher, task, full_train, gate_idx, cache, method, table, every_row=every_row,
                                 seed=int(cfg.seed), stages=stages)
        handover = trust.pop("_handover", None)
        if table is not None:
            trust["teacher_distribution"] = "similarity_probe" + (", contrast labels" if contrast is not None else "")
        if method.trust_gate == "off":  # recorded, not applied (the ablation)
            trust["answer_term"], gate = True, None
        elif not trust["answer_term"]:
            logger.info("trust gate: the teacher answers %.1f %% of the %d labelled rows against the label "
                        "prior's %.1f %% (p = %.3g): the answer-level term is off for this run",
                        trust["teacher_accuracy"], trust["rows"], trust["prior_accuracy"], trust["p_value"])
            method = replace(method, eta=0.0)
            handover = None
            if method.feature_gate:  # the feature terms follow the gate: off for every row
                gate = torch.zeros(len(full_train))
            features_off = bool(method.check_features)  # nothing to check: the teacher never earned them
        elif gate is not None:
            logger.info("trust gate: the answer-level term is kept for %.1f %% of the labelled rows (groups %s)",
                        trust["answer_term_rows"], ", ".join(g for g, d in trust["groups"].items() if d["trusted"]))
    free_answer, free_table = None, None
    if method.label_free_rationales and method.label_free and method.eta and cache is not None and stages > 1:
        # every label-free row, the labelled rows' augmented copies too (method.label_free_augment):
        # each reads the teacher's own answer, never the gold one
        free_answer, free_table = free_rationale_logits(teacher, task, split_rows, list(free_idx), cache, stages)
    distiller = create_distiller(for_task(method, task), student.hidden_size, teacher.embed_dim)
    on_gpu = cache is not None and accelerator.device.type == "cuda"  # fp16 as stored to the GPU, fp32 there
    if cache is not None:
        outputs = lambda batch: cache.lookup(host_index(batch), as_stored=on_gpu)  # noqa: E731
        side = TeacherSide(teacher=teacher, distiller=distiller, outputs=outputs, trust=trust)
    else:
        side = TeacherSide(teacher=teacher, distiller=distiller, image_transform=teacher.image_transform(),
                           live_texts=True, outputs=partial(live_outputs, teacher, cls_attention=cls_attention),
                           trust=trust)
    if table is not None:
        side.outputs = partial(_with_candidate_table, side.outputs, table)
    if free_table is not None:
        side.outputs = partial(_with_free_rationales, side.outputs, free_table, stages)
        side.free_answer = free_answer
    if gate is not None:
        side.outputs = partial(_with_answer_gate, side.outputs, gate)
    if handover is not None:
        side.outputs = partial(_with_handover, side.outputs, handover)
        side.handover = handover
    if features_off:
        side.outputs = partial(_without_features, side.outputs)
    if method.label_free and method.label_free_copies != "teacher":
        labelled = torch.zeros(len(full_train), dtype=torch.bool)  # by teacher row
        labelled[torch.as_tensor(train_idx, dtype=torch.long)] = True
        side.outputs = partial(_with_copy_labels, side.outputs, labelled)
    if stages > 1:
        side.outputs = partial(_staged_index, side.outputs, stages, free_stages=stages if free_table is not None else 1)
    if on_gpu:  # outermost: every wrapper above reads host tensors
        side.outputs = partial(_to_device, side.outputs, accelerator.device)
    return side


def host_index(batch: Dict[str, Any]) -> torch.Tensor:
    """The batch's split row indices on the host (B,): `index_host` when the collator gave it
    (device placement leaves a list alone), else `index` copied back (a device sync on a GPU)."""
    if batch.get("index_host") is not None:
        return torch.as_tensor(batch["index_host"], dtype=torch.long)
    return torch.as_tensor(batch["index"]).cpu().long()


def _to_device(outputs: Callable, device: torch.device, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Cached teacher outputs (host tensors) copied to the GPU in one go, from pinned memory and
    without blocking, so the copies overlap the student's forward; floating arrays become fp32
    there (the cache stores fp16); `teacher_rows` stays on the host for the handover."""
    out = outputs(batch)
    moved = {}
    for k, v in out.items():
        if torch.is_tensor(v) and k != "teacher_rows":
            v = v.pin_memory().to(device, non_blocking=True)
            v = v.float() if v.is_floating_point() else v
        moved[k] = v
    return moved


class StagedRows:
    """A split as the teacher sees a task with several stages per instance (VCR: Q->A, QA->R):
    teacher row i * stages + s is split row i with "_stage": s, so the cache, the trust gate
    and the candidate tables index stages like rows."""

    def __init__(self, rows: Any, stages: int) -> None:
        self.rows, self.stages = rows, int(stages)

    def __len__(self) -> int:
        return len(self.rows) * self.stages

    def __getitem__(self, j: int) -> Dict[str, Any]:
        i, stage = divmod(int(j), self.stages)
        return {**self.rows[i], "_stage": stage}

    def __iter__(self):
        return (self[j] for j in range(len(self)))


def _staged_index(outputs: Callable, stages: int, batch: Dict[str, Any], free_stages: int = 1) -> Dict[str, Any]:
    """Teacher outputs of every stage of the batch's instances, instance-major (B * stages rows,
    as `Task.distill_view` orders the student's), by teacher row index; unlabelled rows
    (`method.label_free`) read their first `free_stages` stages (1: the first stage alone, which
    holds the image features; `method.label_free_rationales`: every stage)."""
    index = host_index(batch)
    staged = (index.unsqueeze(1) * stages + torch.arange(free_stages if batch.get("label_free") else stages)).flatten()
    return outputs({**batch, "index": staged, "index_host": staged})


@torch.no_grad()
def free_rationale_logits(teacher: Any, task: Any, rows: Any, indices: List[int], cache: Any, stages: int,
                          batch_size: int = 128) -> Tuple[torch.Tensor, torch.Tensor]:
    """`method.label_free_rationales`: for the split rows `indices`, the teacher's own Q->A answer
    (the argmax of its cached first-stage candidate logits) and its logits over the row's
    rationales with that answer in place of the gold one (`Task.free_rationale_candidates`):
    logit_scale * cos(image, question + answer + rationale), the form of every cached candidate
    logit. No label is read. -> (answer (N,) long, -1 outside `indices`; logits (N, C) float,
    0 outside `indices`), N = len(rows)."""
    import time

    answer = torch.full((len(rows),), -1, dtype=torch.long)
    table: Optional[torch.Tensor] = None
    start_time = time.time()
    for start in range(0, len(indices), batch_size):
        idx = torch.tensor(indices[start:start + batch_size], dtype=torch.long)
        out = cache.lookup(idx * stages)
        chosen = out["cand_logits"].float().argmax(-1)
        lists = [task.free_rationale_candidates(rows[int(i)], int(a)) for i, a in zip(idx, chosen)]
        n_cand = len(lists[0])
        if any(len(c) != n_cand for c in lists):
            raise ValueError(f"{task.name}: rows with different numbers of rationales ({sorted({len(c) for c in lists})})")
        emb = teacher.encode_texts([c for cs in lists for c in cs], with_tokens=False)["text_embed"].float()
        emb = emb.reshape(len(lists), n_cand, -1)
        image = out["image_embed"].float().to(emb.device)
        logits = teacher.logit_scale * torch.einsum("bd,bcd->bc", image, emb)
        if table is None:
            table = torch.zeros(len(rows), n_cand)
        table[idx], answer[idx] = logits.cpu(), chosen
    logger.info("label-free rationales: the teacher's logits over the rationales given its own answer, %d rows "
                "(%.1f s)", len(indices), time.time() - start_time)
    return answer, table if table is not None else torch.zeros(len(rows), 0)


def _with_free_rationales(outputs: Callable, table: torch.Tensor, stages: int, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs whose unlabelled rows' later-stage rows (VCR's QA->R) take `cand_logits`
    from `table` (by split row: the teacher's logits over the rationales given its own answer,
    `free_rationale_logits`) instead of the cache's, which condition on the gold answer."""
    out = outputs(batch)
    if batch.get("label_free"):
        rows = host_index(batch)
        later = rows % stages != 0
        if bool(later.any()):
            cand = out["cand_logits"].clone()
            cand[later] = table[rows[later] // stages].to(cand.dtype)
            out["cand_logits"] = cand
    return out


def _with_candidate_table(outputs: Callable, table: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs with `cand_logits` read from a per-split-row table (the similarity probe)."""
    out = outputs(batch)
    out["cand_logits"] = table[host_index(batch)]
    return out


@torch.no_grad()
def task_text_similarity(teacher: Any, task: Any, full_train: Any, train_idx: List[int], cache: Any = None,
                         batch_size: int = 256) -> torch.Tensor:
    """(N,) cos(image, task text) of the labelled rows `train_idx`: from the cache when there is
    one, else one teacher pass."""
    from clip_td.lib.teacher_cache import _load_image

    transform = None if cache is not None else teacher.image_transform()
    out = []
    for start in range(0, len(train_idx), batch_size):
        idx = list(train_idx[start:start + batch_size])
        if cache is not None:
            got = cache.lookup(idx)
            image, text = got["image_embed"], got["text_embed"]
        else:
            rows = [full_train[i] for i in idx]
            pixels = torch.stack([_load_image(r["image"], transform) for r in rows]).to(teacher.device)
            image = teacher.encode_images(pixels)["image_embed"]
            text = teacher.encode_texts([task.teacher_texts(r)[0] for r in rows], with_tokens=False)["text_embed"]
        out.append(torch.nn.functional.cosine_similarity(image.float().cpu(), text.float().cpu(), dim=-1))
    return torch.cat(out) if out else torch.zeros(0)


def contrast_rows(task: Any, full_train: Any, train_idx: List[int], contrast: torch.Tensor) -> List[int]:
    """The labelled rows whose gold label is one of the contrast labels (`contrast` (K,) bool)."""
    return [i for i in train_idx if bool(contrast[int(task.teacher_texts(full_train[i])[2])])]


def similarity_probe_logits(teacher: Any, task: Any, full_train: Any, train_idx: List[int], cache: Any,
                            method: Any, every_row: bool = False, contrast: Optional[torch.Tensor] = None
                            ) -> torch.Tensor:
    """`method.similarity_probe`: the teacher's answer distribution of each labelled row is
    p(label | cos(image, task text)), a one-feature softmax probe cross-fitted on the labelled rows
    (5 folds: a row's own label never shapes its target). -> (len(full_train), K) candidate
    logits tau * log p (so the distiller's softmax(logits / tau) is p); 0 (uniform) elsewhere, or
    with `every_row` the probe fitted on all the labelled rows applied to every other row (the
    task text is an input, the hypothesis: no label of those rows is read). `contrast` (K,) bool
    (`method.probe_contrast`): the probe is fitted on the labelled rows of those labels alone
    (the others keep 0 or, with `every_row`, that probe's output; the distiller masks the other
    labels out and gives their rows no answer term)."""
    from clip_td.lib.probe import cross_fitted_probs, fit_scalar_softmax

    texts = [task.teacher_texts(full_train[i]) for i in train_idx]
    k = len(texts[0][1]) if texts else 1
    table = torch.zeros(len(full_train), k)
    if not texts:
        return table
    labelled = torch.tensor(list(train_idx), dtype=torch.long)
    gold = torch.tensor([t[2] for t in texts])
    rows = list(range(len(full_train))) if every_row else list(train_idx)
    sims = task_text_similarity(teacher, task, full_train, rows, cache)  # one pass over the rows it needs
    labelled_sims = sims[labelled] if every_row else sims
    fit = torch.ones(len(gold), dtype=torch.bool) if contrast is None else contrast[gold]
    if not bool(fit.any()):
        return table
    if every_row:
        probe = fit_scalar_softmax(labelled_sims[fit].double(), gold[fit], k)
        table[:] = method.tau * probe.probs(sims.double()).clamp_min(1e-6).log()
    p = cross_fitted_probs(labelled_sims[fit], gold[fit], k, seed=int(method.selection_seed or 0))
    table[labelled[fit]] = method.tau * p.clamp_min(1e-6).log()
    return table


def _with_answer_gate(outputs: Callable, gate: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs plus `answer_gate` (B,): 1 where the row's trust group passed the gate."""
    out = outputs(batch)
    out["answer_gate"] = gate[host_index(batch)]
    return out


def _with_copy_labels(outputs: Callable, labelled: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs of a label-free batch plus `copy_labelled` (B,) bool: the row is an
    augmented copy of a labelled training row, whose gold label `method.label_free_copies` may
    read (an unlabelled row's never is). Labelled batches pass through unchanged."""
    out = outputs(batch)
    if batch.get("label_free"):
        out["copy_labelled"] = labelled[host_index(batch)]
    return out


def _without_features(outputs: Callable, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs with `feature_on` 0 for every row (`method.check_features` when the trust
    gate turned the answer-level term off for the run: no check, so no feature terms)."""
    out = outputs(batch)
    out["feature_on"] = torch.zeros(len(host_index(batch)))
    return out


def _with_handover(outputs: Callable, handover: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Teacher outputs with `answer_gate` also 0 for the rows whose trust group has handed over to
    the labels (`method.handover`), and `teacher_rows` (B,), the rows' indices, for the trainer."""
    out = outputs(batch)
    rows = host_index(batch)
    gate = handover.gate(rows, label_free=bool(batch.get("label_free")))
    if out.get("answer_gate") is not None:
        gate = gate * torch.as_tensor(out["answer_gate"]).cpu().float()
    out["answer_gate"], out["teacher_rows"] = gate, rows
    if handover.check_features:  # method.check_features: the feature terms follow the held-back check
        out["feature_on"] = torch.full((len(rows),), float(handover.features_on))
    return out


def held_back_rows(train_idx: List[int], share: float, seed: int) -> List[int]:
    """`method.student_check`: the labelled rows held back for the student-vs-teacher check,
    round(share * n) of them (at least 1 when share > 0 and n >= 2), drawn by the run's seed;
    sorted split indices."""
    n = len(train_idx)
    if share <= 0 or n < 2:
        return []
    k = min(n - 1, max(1, round(share * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919))[:k]
    return sorted(int(train_idx[i]) for i in order.tolist())


def trust_gate(teacher: Any, task: Any, full_train: Any, train_idx: List[int], cache: Any,
               method: Any, table: Optional[torch.Tensor] = None, every_row: bool = False,
               seed: int = 0, stages: int = 1) -> Tuple[Dict[str, Any], Optional[torch.Tensor]]:
    """The trust gate of a run -> (metrics.json's `teacher_trust`, per-split-row gate or None).

    `task`: one test over every labelled row. `group`: one test per trust group of the task
    (`Task.trust_group`); the answer-level term then runs for the rows of the groups that pass
    (a gate of 0/1 over the split's rows, None when every group passes or none does). `table`:
    the candidate logits of every split row, when they do not come from the teacher's candidates
    (`similarity_probe_logits`). `every_row`: the gate covers every row of the split by its trust
    group (a group no labelled row tested gets 0), for the label-free answer term. With
    `method.handover` the trust dict also carries `_handover`, the run's `StudentHandover` over
    the same groups (taken out by `teacher_setup`), with the held-back check
    (`method.student_check`) over a share of the instances whose answer term the gate kept
    (`held_back_rows`, drawn by `seed`; every one of an instance's `stages` teacher rows)."""
    from clip_td.lib.trust import StudentHandover, group_decisions, teacher_right, trust_decision

    logits, gold, mask = teacher_answers(teacher, task, full_train, train_idx, cache, table=table)
    effect = float(method.trust_effect) if method.trust_alpha_rule == "balanced" else None
    overall = trust_decision(logits, gold, method.trust_alpha, mask, effect=effect)
    trust: Dict[str, Any] = {**overall.as_dict(), "gate": method.trust_gate, "answer_term": overall.trusted}
    groups = [task.trust_group(full_train[i]) for i in train_idx] if method.trust_gate == "group" else []
    grouped = bool(groups) and not all(g is None for g in groups)
    decisions = group_decisions(logits, gold, groups, method.trust_alpha, mask, effect=effect) if grouped else {}
    kept = [decisions[g].trusted for g in groups] if grouped else []
    if method.handover and len(train_idx):
        labelled = torch.tensor(list(train_idx), dtype=torch.long)
        right = torch.full((len(full_train),), -1, dtype=torch.long)
        right[labelled] = teacher_right(logits, gold, mask).long()
        row_groups = [task.trust_group(full_train[i]) if grouped else None for i in range(len(full_train))]
        eligible = torch.zeros(len(full_train), dtype=torch.bool)  # the rows whose answer term the gate kept
        eligible[labelled] = torch.tensor(kept) if grouped else True
        instances = sorted({i // stages for i in train_idx if eligible[i]})
        held = torch.zeros(len(full_train), dtype=torch.bool)
        for i in held_back_rows(instances, method.student_check, seed):
            held[i * stages:(i + 1) * stages] = True
        trust["_handover"] = StudentHandover(right, ["all" if g is None else g for g in row_groups],
                                             window=method.handover_window, alpha=method.trust_alpha,
                                             held_back=held, eligible=eligible, stages=stages,
                                             check_features=bool(method.check_features),
                                             check_answers=bool(method.check_answers),
                                             check_test=str(method.student_check_test),
                                             scope=str(method.handover_scope))
    if not grouped:
        return trust, None
    trust.update(answer_term=any(kept), answer_term_rows=round(100.0 * sum(kept) / len(kept), 4),
                 groups={str(g): d.as_dict() for g, d in sorted(decisions.items(), key=lambda kv: str(kv[0]))})
    if every_row and any(kept):
        trusted = {g for g, d in decisions.items() if d.trusted}
        return trust, torch.tensor([float(task.trust_group(full_train[i]) in trusted) for i in range(len(full_train))])
    if all(kept) or not any(kept):
        return trust, None
    gate = torch.zeros(len(full_train))
    gate[torch.tensor([i for i, k in zip(train_idx, kept) if k], dtype=torch.long)] = 1.0
    return trust, gate


@torch.no_grad()
def teacher_answers(teacher: Any, task: Any, full_train: Any, train_idx: List[int], cache: Any = None,
                    batch_size: int = 256, table: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The teacher's candidate scores of the labelled training rows -> (cand_logits (N, C), gold
    (N,), cand_mask (N, C) or None): read from `table` (candidate logits by split row) when given,
    else from the cache when there is one, else one teacher pass."""
    from clip_td.lib.teacher_cache import CandidateEncoder, _load_image, candidate_logits

    logits, gold, masks = [], [], []
    live = table is None and cache is None
    encoder = CandidateEncoder(teacher) if live else None
    transform = teacher.image_transform() if live else None
    for start in range(0, len(train_idx), batch_size):
        idx = list(train_idx[start:start + batch_size])
        rows = [full_train[i] for i in idx]
        if table is not None:
            logits.append(table[torch.tensor(idx, dtype=torch.long)])
            gold.append(torch.tensor([task.teacher_texts(r)[2] for r in rows], dtype=torch.long))
        elif cache is not None:
            out = cache.lookup(idx)
            logits.append(out["cand_logits"].float().cpu())
            gold.append(out["gold"].long().cpu())
        else:
            texts = [task.teacher_texts(r) for r in rows]
            pixels = torch.stack([_load_image(r["image"], transform) for r in rows]).to(teacher.device)
            embed = teacher.encode_images(pixels)["image_embed"]
            logits.append(candidate_logits(teacher, embed, [t[1] for t in texts], encoder).float().cpu())
            gold.append(torch.tensor([t[2] for t in texts], dtype=torch.long))
        extras = [task.teacher_extras(r).get("cand_mask") for r in rows]
        if all(m is not None for m in extras):
            masks.append(torch.stack([torch.as_tensor(m) for m in extras]))
    cand_mask = torch.cat(masks) if masks and len(masks) == len(logits) else None
    if not logits:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), None
    return torch.cat(logits), torch.cat(gold), cand_mask


@torch.no_grad()
def live_outputs(teacher: Any, batch: Dict[str, Any], cls_attention: bool = False) -> Dict[str, Any]:
    """Teacher outputs of one batch computed on the fly (teacher.cache=false)."""
    from clip_td.lib.teacher_cache import teacher_outputs

    pixels = batch["teacher_pixels"]
    if len(batch["teacher_text"]) > pixels.shape[0]:  # several teacher stages per instance, instance-major
        pixels = pixels.repeat_interleave(len(batch["teacher_text"]) // pixels.shape[0], dim=0)
    return teacher_outputs(teacher, pixels.to(teacher.device), batch["teacher_text"],
                           batch["teacher_candidates"], batch["teacher_gold"], cls_attention=cls_attention)
