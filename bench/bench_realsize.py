"""Real-size CLIP-TD: a ViLT-B/32-shaped student with a ViT-B-32 / ViT-B-16 teacher at 224 px.

    python bench/bench_realsize.py [--pairs vitb32,vitb16] [--steps 5] [--batch 2] [--out bench/results/realsize.json]
    python bench/bench_realsize.py --devices cuda --batch 32 --sync-debug   # GPU rows only, with host-sync counts
    accelerate launch --num_processes 2 bench/bench_realsize.py ...     # 2 GPUs: 2 processes (DDP)

Per pair (configs/finetune/realsize_<pair>.yaml: ViLT-B/32 shapes, 768 wide, 12 layers, 384 px ->
12x12 = 144 image tokens; ViT-B-32 at 224 px -> 7x7 = 49 patches, ViT-B-16 -> 14x14 = 196), built
by the same `build()` finetune.py uses, on the small synthetic world at 224 px (built once under
$CLIP_TD_CACHE), with random weights unless `--set student.pretrained=... teacher.pretrained=openai`:

  training step (forward + backward + grad clipping + AdamW, the trainer's step) for
    none            task loss only
    clip_td_cache   teacher outputs from the memory-mapped TeacherCache
    clip_td_live    the frozen teacher runs on the batch every step (teacher.cache=false)
    teacher_fwd     one teacher forward on the same batch alone (for the live ratio)
  timed interleaved (variants alternate step by step, median), samples/s, and peak memory per
  variant from one more, untimed step (CPU: the process's peak RSS during it, reset through
  /proc/self/clear_refs, else getrusage's lifetime peak; GPU: torch.cuda.max_memory_allocated);
  targets: clip_td_cache / none <= 1.05, clip_td_live / (none + teacher_fwd) <= 1.05 (median over
  rounds of the within-round ratio), and the same ratios rebuilt from what clip_td adds to a step,
  each part timed alone over many reps (cache lookup, distiller forward + backward, AdamW on the
  projections): steadier than whole steps on a machine shared with other jobs;
  cache build images/s, MB per image and per question, and the estimate for VQA v2 train
  (82,783 images, 443,757 questions);
  inference latency of the saved student alone (its weights reloaded from the safetensors the
  trainer writes: no teacher, no projections) vs a `none` student's.

On CPU always; on a GPU too when torch.cuda.is_available(), with accelerate mixed_precision=bf16.
The student's word-embedding table gets ViLT-B/32's 30,522 rows (`--vocab`; the synthetic
WordPiece ids all fit) so every parameter has the real checkpoint's shape. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"vitb32": "realsize_vitb32.yaml", "vitb16": "realsize_vitb16.yaml"}
VQA_TRAIN = {"images": 82_783, "questions": 443_757, "answers": 3_129}  # VQA v2 train, the 3,129-answer vocabulary
VARIANTS = ("none", "clip_td_cache", "clip_td_live", "teacher_fwd")


# ---- memory ----------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one call: GPU allocated bytes, or the CPU process's peak RSS during the call."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.resettable = not self.cuda and self._reset_hwm()
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            self._trim = None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    @staticmethod
    def _status_kb(key: str) -> Optional[int]:
        try:
            m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
        except OSError:
            return None
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated"
        return "peak RSS per step (/proc/self/clear_refs + VmHWM)" if self.resettable else \
            "peak RSS of the process so far (resource.getrusage)"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        if self._trim is not None:
            self._trim(0)  # give freed heap back, so the step's own peak shows
        if self.resettable:
            self._reset_hwm()

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        hwm = self._status_kb("VmHWM") if self.resettable else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        return hwm / 1024


def time_interleaved(variants: Dict[str, Callable[[], Any]], steps: int, warmup: int,
                     mem: Optional[PeakMemory], sync: Callable[[], None]) -> Dict[str, Dict[str, Any]]:
    """Per variant: wall-clock and process CPU seconds of every timed call (rounds: the variants
    alternate call by call, so load drift from other jobs hits all of them alike), their medians,
    and (with `mem`) the peak memory of one more, untimed call each: measuring memory gives the
    freed heap back to the system, and re-faulting it must not be timed."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    wall: Dict[str, List[float]] = {n: [] for n in variants}
    cpu: Dict[str, List[float]] = {n: [] for n in variants}
    for _ in range(steps):
        for name, fn in variants.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    peaks: Dict[str, Optional[float]] = {n: None for n in variants}
    if mem is not None:
        for name, fn in variants.items():
            sync()
            mem.start()
            fn()
            sync()
            peaks[name] = mem.peak_mb()
    return {n: {"median_s": statistics.median(wall[n]), "min_s": min(wall[n]), "max_s": max(wall[n]),
                "cpu_median_s": statistics.median(cpu[n]), "wall_s": wall[n], "cpu_s": cpu[n],
                "peak_mem_mb": peaks[n]} for n in variants}


def paired_ratio(timing: Dict[str, Dict[str, Any]], num: str, den: List[str], key: str = "wall_s") -> float:
    """Median over rounds of num_i / sum(den_i): each round's variants ran back to back, so a
    ratio within a round cancels most of the load other jobs put on the machine."""
    rounds = zip(timing[num][key], *[timing[d][key] for d in den])
    return statistics.median(n / sum(ds) for n, *ds in rounds)


# ---- one pair ----------------------------------------------------------------------------------------


def to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def cache_sizes(cache: Any) -> Dict[str, Any]:
    """Bytes per unique image and per row (question) of a built TeacherCache, from its arrays, and
    the files every row shares (a shared candidate list's embeddings, VQA's answer vocabulary)."""
    import numpy as np

    from clip_td.lib.teacher_cache import IMAGE_ARRAYS

    img_bytes = row_bytes = n_images = n_rows = n_cand = token_len = 0
    for shard in cache.shards:
        n_images += int(shard["image_embed"].shape[0])
        n_rows += int(shard["index"].shape[0])
        if "cand_logits" in shard:  # per-row candidate lists (SNLI-VE, VCR; VQA in older layouts)
            n_cand = int(shard["cand_logits"].shape[1])
        token_len = max(token_len, int(shard["token_feats"].shape[1]))
        for key, arr in shard.items():
            nbytes = int(np.prod(arr.shape)) * arr.dtype.itemsize
            if key in IMAGE_ARRAYS:
                img_bytes += nbytes
            else:
                row_bytes += nbytes
    shared = [np.load(p, mmap_mode="r") for p in cache.path.glob("*.npy")]  # beside the shards
    shared_bytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in shared)
    per_image, per_row = img_bytes / max(n_images, 1), row_bytes / max(n_rows, 1)
    sh0 = cache.shards[0]
    per_token = sum(int(np.prod(sh0[k].shape[2:])) * sh0[k].dtype.itemsize
                    for k in ("token_feats", "token_mask", "token_offsets") if k in sh0)
    # VQA v2 has 3,129 answers: per-row candidate logits (fp32) or one shared (C, d) fp32 embedding table grow with it
    if n_cand:
        per_row_vqa, shared_vqa = per_row + (VQA_TRAIN["answers"] - n_cand) * 4, shared_bytes
    else:
        per_row_vqa = per_row
        shared_vqa = sum(VQA_TRAIN["answers"] * a.shape[1] * a.dtype.itemsize for a in shared if a.ndim == 2)
    est = VQA_TRAIN["images"] * per_image + VQA_TRAIN["questions"] * per_row + shared_bytes
    est_vqa = VQA_TRAIN["images"] * per_image + VQA_TRAIN["questions"] * per_row_vqa + shared_vqa
    cand = (f"per-row candidate logits over {n_cand} answers re-sized to 3,129" if n_cand else
            "the answer vocabulary's embeddings are shared by every question (one table), re-sized to 3,129 answers")
    return {"images": n_images, "rows": n_rows, "token_len": token_len, "candidates_per_row": n_cand,
            "mb_per_image": per_image / 2**20, "mb_per_question": per_row / 2**20, "mb_shared": shared_bytes / 2**20,
            "cache_mb": (img_bytes + row_bytes + shared_bytes) / 2**20,
            "vqa_train_estimate": {
                **VQA_TRAIN, "gb_as_measured": est / 2**30, "gb_with_3129_answers": est_vqa / 2**30,
                # fp16 features + mask + int32 offsets for one more padded text token, every question
                "gb_per_extra_text_token": VQA_TRAIN["questions"] * per_token / 2**30,
                "note": f"measured bytes per image and per question x VQA v2 train counts; {cand}; text tokens "
                        f"as measured (the token axis is padded to the longest text of a shard: {token_len} here)"}}


def run_pair(pair: str, args: argparse.Namespace, accelerator: Any, work: Path) -> Dict[str, Any]:
    from safetensors.torch import load_file

    from clip_td.app.build import build, build_student, data_root, image_settings
    from clip_td.app.finetune_model import FinetuneModel, inference_state_dict, total_loss
    from clip_td.app.schema import FinetuneConfig
    from clip_td.app.teacher_setup import live_outputs
    from clip_td.app.trainer import make_optimizer
    from clip_td.base.checkpoints import save_weights
    from clip_td.base.config import load_config
    from clip_td.lib.selection import needs_cls_attention
    from clip_td.lib.teacher_cache import TeacherCache

    device = accelerator.device
    out_dir = work / f"{pair}-{device.type}"
    overrides = [f"output_dir={out_dir}", "method.name=clip_td", "teacher.cache=false",  # live batches; cache below
                 f"data.size={args.data_size}", "data.image_size=224", f"train.fraction={args.fraction}",
                 f"train.batch_size={args.batch}", *args.set]
    cfg = load_config(FinetuneConfig, str(REPO / "configs" / "finetune" / PAIRS[pair]), overrides)
    log = accelerator.print
    log(f"[{pair}/{device.type}] building (data, student, teacher) ...")
    torch.manual_seed(0)
    built = build(cfg, accelerator)
    task, teacher = built.task, built.teacher.to(device)
    side = image_settings(cfg)[0]
    vocab = built.vocab_size
    if args.vocab and not cfg.student.pretrained and args.vocab > vocab:
        vocab = args.vocab  # ViLT-B/32's table: every parameter at the checkpoint's shape
        torch.manual_seed(0)
        built.model.student = build_student(cfg, vocab, side)
    cls_attention = needs_cls_attention(built.method.selection)

    # teacher cache of the low-shot training rows (what clip_td_cache reads), timed
    root = data_root(cfg, accelerator)  # the synthetic world built by build() (or data.root)
    full_train = task.load(root / task.name, cfg.data.train_split)
    indices = built.train_set.source_index[: args.cache_rows] if args.cache_rows else built.train_set.source_index
    log(f"[{pair}/{device.type}] building the teacher cache of {len(indices)} rows ...")
    accelerator.wait_for_everyone()
    t0 = time.perf_counter()
    cache = TeacherCache.build(teacher, task.teacher_texts, full_train, work / f"cache-{pair}-{device.type}",
                               name=task.name, indices=indices, batch_size=32,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                               barrier=accelerator.wait_for_everyone, cls_attention=cls_attention)
    build_s = time.perf_counter() - t0
    sizes = cache_sizes(cache)
    cache_build = {"seconds": build_s, "images_per_s": sizes["images"] / build_s,
                   "questions_per_s": sizes["rows"] / build_s, **sizes}

    # one training batch of cached rows (the live teacher sees the same images and texts)
    batch = to_device(built.collator([built.train_set[p] for p in range(min(args.batch, len(indices)))]), device)
    with torch.no_grad():
        student_tokens = int(built.model.student.to(device)(batch["pixel_values"][:1], batch["input_ids"][:1],
                                                            batch["attention_mask"][:1])["image_tokens"].shape[1])
    n_text = int(batch["input_ids"].shape[1])
    optimizer = make_optimizer(built.model, cfg)
    model, optimizer = accelerator.prepare(built.model, optimizer)
    model.train()

    def step(source: Optional[Callable[[], Dict[str, Any]]]) -> None:
        teacher_out = source() if source is not None else None
        result = model(batch, teacher_out, 1.0)
        accelerator.backward(total_loss(result))
        if cfg.train.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()

    live = lambda: live_outputs(teacher, batch, cls_attention=cls_attention)  # noqa: E731
    cached = lambda: lookup_on(cache, device, batch)  # noqa: E731  # the trainer's path: host index, one copy
    variants = {"none": lambda: step(None), "clip_td_cache": lambda: step(cached),
                "clip_td_live": lambda: step(live), "teacher_fwd": live}
    mem = PeakMemory(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    syncs = count_syncs(variants) if device.type == "cuda" and args.sync_debug else None
    log(f"[{pair}/{device.type}] timing {args.steps} interleaved steps (+{args.warmup} warm-up) ...")
    timing = time_interleaved(variants, args.steps, args.warmup, mem, sync)
    t = {k: v["median_s"] for k, v in timing.items()}
    ratios = {"cache_over_none": paired_ratio(timing, "clip_td_cache", ["none"]),
              "live_over_none_plus_teacher": paired_ratio(timing, "clip_td_live", ["none", "teacher_fwd"]),
              "live_over_none": paired_ratio(timing, "clip_td_live", ["none"]),
              "cpu_time": {"cache_over_none": paired_ratio(timing, "clip_td_cache", ["none"], "cpu_s"),
                           "live_over_none_plus_teacher": paired_ratio(timing, "clip_td_live",
                                                                       ["none", "teacher_fwd"], "cpu_s")},
              "of_medians": {"cache_over_none": t["clip_td_cache"] / t["none"],
                             "live_over_none_plus_teacher": t["clip_td_live"] / (t["none"] + t["teacher_fwd"])},
              "method": "wall clock, median over rounds of the within-round ratio"}
    teacher_patches = int(teacher.grid_size[0] * teacher.grid_size[1])
    log(f"[{pair}/{device.type}] profiling what clip_td adds to a step ({args.profile_reps} reps) ...")
    overhead = profile_overhead(accelerator.unwrap_model(model), batch, cache, args.profile_reps, sync, cfg, device)
    o = overhead["ms"]
    extra_s = (o["cache_lookup"] + o["distiller_fwd_bwd"] + o["adamw_distiller"]) / 1e3
    ratios["from_components"] = {
        "cache_over_none": (t["none"] + extra_s) / t["none"],
        "live_over_none_plus_teacher": (t["none"] + t["teacher_fwd"] + extra_s - o["cache_lookup"] / 1e3)
        / (t["none"] + t["teacher_fwd"]),
        "method": "(none + what clip_td adds, each part timed alone over many reps) / the end-to-end medians"}

    # inference: the saved student (safetensors, as the trainer writes model/) vs a `none` student
    unwrapped = accelerator.unwrap_model(model)
    state = inference_state_dict(unwrapped, lora=False)
    saved = save_weights(state, out_dir / "model", {"pair": pair})
    n_params = {"student": sum(p.numel() for p in unwrapped.student.parameters()),
                "head": sum(p.numel() for p in unwrapped.head.parameters()),
                "distiller_training_only": sum(p.numel() for p in unwrapped.distiller.parameters()),
                "teacher_frozen": sum(p.numel() for p in teacher.parameters())}
    del model, optimizer, unwrapped, state
    accelerator.free_memory()

    def fresh_model() -> FinetuneModel:
        torch.manual_seed(1)
        student = build_student(cfg, vocab, side)
        return FinetuneModel(task, student, task.build_head(student.hidden_size))  # no distiller, no teacher

    reloaded = fresh_model()
    missing, unexpected = reloaded.load_state_dict(load_file(str(saved / "model.safetensors")), strict=True)
    reloaded, baseline = reloaded.to(device).eval(), fresh_model().to(device).eval()
    rows = built.eval_sets["val"]
    infer_batch = to_device(built.collator([rows[i] for i in range(min(args.infer_batch, len(rows)))]), device)

    def infer(m: FinetuneModel) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad(), accelerator.autocast():
                return m.predict(m(infer_batch))
        return run

    inf = time_interleaved({"saved_clip_td_student": infer(reloaded), "none_student": infer(baseline)},
                           args.steps, 1, None, sync)
    inference = {"batch": int(infer_batch["pixel_values"].shape[0]),
                 "saved_file_mb": (saved / "model.safetensors").stat().st_size / 2**20,
                 "saved_has_distiller": any(k.startswith("distiller.") for k in load_file(str(saved / "model.safetensors"))),
                 **{f"{k}_s": v["median_s"] for k, v in inf.items()},
                 "ratio": paired_ratio(inf, "saved_clip_td_student", ["none_student"])}
    world = accelerator.num_processes
    result = {
        "pair": pair, "config": f"configs/finetune/{PAIRS[pair]}", "teacher": cfg.teacher.model,
        "teacher_pretrained": cfg.teacher.pretrained, "student_pretrained": cfg.student.pretrained,
        "device": device.type, "mixed_precision": accelerator.mixed_precision, "num_processes": world,
        "batch_per_process": args.batch, "vocab": vocab,
        "tokens": {"student_image": student_tokens, "student_text": n_text, "teacher_patches": teacher_patches},
        "params": n_params,
        "step_time_s": t, "step_spread_s": {k: [v["min_s"], v["max_s"]] for k, v in timing.items()},
        "step_times_s": {k: v["wall_s"] for k, v in timing.items()},
        "step_cpu_s": {k: v["cpu_s"] for k, v in timing.items()},
        "samples_per_s": {k: args.batch * world / v for k, v in t.items() if k != "teacher_fwd"},
        "peak_mem_mb": {k: v["peak_mem_mb"] for k, v in timing.items()}, "memory_method": mem.method,
        "ratios": ratios,
        "targets": {"cache_over_none<=1.05": ratios["cache_over_none"] <= 1.05,
                    "live_over_none_plus_teacher<=1.05": ratios["live_over_none_plus_teacher"] <= 1.05},
        "cache_build": cache_build, "inference": inference, "clip_td_overhead": overhead,
        **({"host_syncs": syncs} if syncs is not None else {}),
    }
    del reloaded, baseline, built, teacher, cache, batch
    gc.collect()
    return result


def lookup_on(cache: Any, device: torch.device, batch: Dict[str, Any]) -> Dict[str, Any]:
    """Cached teacher outputs of the batch as the trainer gets them: looked up by the host copy of
    the indices, then (on a GPU) one pinned, non-blocking copy."""
    from clip_td.app.teacher_setup import _to_device, host_index

    lookup = lambda b: cache.lookup(host_index(b), as_stored=device.type == "cuda")  # noqa: E731
    return _to_device(lookup, device, batch) if device.type == "cuda" else lookup(batch)


def count_syncs(variants: Dict[str, Callable[[], Any]]) -> Dict[str, Any]:
    """One step of each variant under torch.cuda.set_sync_debug_mode("warn"): how many times the
    host waited for the GPU, and where (file:line of the Python frame that asked)."""
    import warnings

    out: Dict[str, Any] = {}
    for name, fn in variants.items():
        fn()  # warm: first-call allocations are not the step's
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        where: Dict[str, int] = {}
        for w in caught:
            if "synchroniz" in str(w.message).lower():
                key = f"{Path(w.filename).name}:{w.lineno}"
                where[key] = where.get(key, 0) + 1
        out[name] = {"count": sum(where.values()), "where": where}
    return out


def profile_overhead(model: Any, batch: Dict[str, Any], cache: Any, reps: int, sync: Callable[[], None],
                     cfg: Any, device: torch.device) -> Dict[str, Any]:
    """What a clip_td step does beyond `none`'s, each part timed alone (interleaved, many reps: the
    parts take milliseconds, so their medians hold up where whole seconds-long steps are noisy):
    the cache lookup, the distiller's forward + backward on the student's real outputs (the
    projections, token selection, text alignment, the three terms), and AdamW + clipping on the
    distiller's parameters (the rest of the optimizer step is `none`'s)."""
    from clip_td.app.finetune_model import total_loss

    task, student, head, distiller = model.task, model.student, model.head, model.distiller
    with torch.no_grad():
        out = student(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    teacher_out = lookup_on(cache, device, batch)
    params = [p for p in distiller.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def distill() -> None:
        leaf = {k: v.detach().requires_grad_(True) for k, v in out.items()}
        result = task.outputs(head(leaf["pooled"]), batch)
        view, view_batch, answer_logits = task.distill_view(leaf, batch, result)
        terms = distiller(view, teacher_out, view_batch, answer_logits)
        total_loss(terms).backward()

    def adamw() -> None:
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()

    distill()  # gradients in place for the optimizer part
    timing = time_interleaved({"cache_lookup": lambda: lookup_on(cache, device, batch), "distiller_fwd_bwd": distill,
                               "adamw_distiller": adamw}, reps, 2, None, sync)
    for p in list(student.parameters()) + list(head.parameters()) + params:
        p.grad = None
    return {"ms": {k: v["median_s"] * 1e3 for k, v in timing.items()}, "reps": reps,
            "distiller_params": sum(p.numel() for p in params)}


# ---- report ------------------------------------------------------------------------------------------


def print_table(results: List[Dict[str, Any]]) -> None:
    hdr = f"{'pair':<8}{'device':<7}{'variant':<15}{'step s':>9}{'samples/s':>11}{'peak MB':>10}{'ratio':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        t, ratios = r["step_time_s"], r["ratios"]
        shown = {"none": "", "clip_td_cache": f"{ratios['cache_over_none']:.3f}",
                 "clip_td_live": f"{ratios['live_over_none_plus_teacher']:.3f}", "teacher_fwd": ""}
        for v in VARIANTS:
            sps = r["samples_per_s"].get(v)
            print(f"{r['pair']:<8}{r['device']:<7}{v:<15}{t[v]:>9.3f}{(f'{sps:.2f}' if sps else '-'):>11}"
                  f"{r['peak_mem_mb'][v]:>10.0f}{shown[v]:>8}")
    print("ratio: clip_td_cache / none; clip_td_live / (none + teacher_fwd) (median of within-round ratios); "
          "targets <= 1.05")
    for r in results:
        cb, inf, tok = r["cache_build"], r["inference"], r["tokens"]
        est = cb["vqa_train_estimate"]
        print(f"{r['pair']}/{r['device']}: tokens student {tok['student_image']} image + {tok['student_text']} text, "
              f"teacher {tok['teacher_patches']} patches; targets "
              f"{'held' if all(r['targets'].values()) else 'MISSED: ' + ', '.join(k for k, ok in r['targets'].items() if not ok)}")
        cpu, comp, o = r["ratios"]["cpu_time"], r["ratios"]["from_components"], r["clip_td_overhead"]["ms"]
        print(f"  same ratios in process CPU time: cache/none {cpu['cache_over_none']:.3f}, "
              f"live/(none+teacher) {cpu['live_over_none_plus_teacher']:.3f}")
        print(f"  clip_td adds (each part alone, median of {r['clip_td_overhead']['reps']}): cache lookup "
              f"{o['cache_lookup']:.1f} ms, distiller fwd+bwd {o['distiller_fwd_bwd']:.1f} ms, AdamW+clip on the "
              f"projections {o['adamw_distiller']:.1f} ms -> ratios from components: cache/none "
              f"{comp['cache_over_none']:.4f}, live/(none+teacher) {comp['live_over_none_plus_teacher']:.4f}")
        print(f"  cache build: {cb['images']} images / {cb['rows']} questions in {cb['seconds']:.1f} s = "
              f"{cb['images_per_s']:.2f} images/s; {cb['mb_per_image']:.4f} MB per image, "
              f"{cb['mb_per_question']:.4f} MB per question")
        print(f"  VQA v2 train cache ({est['images']:,} images, {est['questions']:,} questions): "
              f"{est['gb_as_measured']:.1f} GB as measured, {est['gb_with_3129_answers']:.1f} GB with 3,129 answers; "
              f"+{est['gb_per_extra_text_token']:.2f} GB per padded text token beyond {cb['token_len']}")
        print(f"  inference (batch {inf['batch']}): saved clip_td student {inf['saved_clip_td_student_s']:.3f} s vs "
              f"none {inf['none_student_s']:.3f} s (x{inf['ratio']:.3f}); saved {inf['saved_file_mb']:.0f} MB, "
              f"distiller in file: {inf['saved_has_distiller']}")
        if "host_syncs" in r:
            print("  host syncs in one step: " + "; ".join(
                f"{k} {v['count']}" + (f" ({', '.join(f'{w} x{n}' for w, n in v['where'].items())})" if v["where"] else "")
                for k, v in r["host_syncs"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="vitb32,vitb16", help="comma-separated: " + ", ".join(PAIRS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (interleaved)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    ap.add_argument("--batch", type=int, default=2, help="training batch per process")
    ap.add_argument("--infer-batch", type=int, default=8, help="inference latency batch")
    ap.add_argument("--profile-reps", type=int, default=20, help="reps of each part of clip_td's extra work")
    ap.add_argument("--fraction", type=float, default=0.1, help="train.fraction (the cached rows)")
    ap.add_argument("--cache-rows", type=int, default=0, help="cache at most this many rows (0 = the fraction's)")
    ap.add_argument("--data-size", default="small", help="synthetic world size (at 224 px)")
    ap.add_argument("--vocab", type=int, default=30522, help="student word-embedding rows (0 = the tokenizer's)")
    ap.add_argument("--devices", default=None, help="cpu and/or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--sync-debug", action="store_true",
                    help="GPU: count the host syncs in one step of each variant (torch.cuda.set_sync_debug_mode)")
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted config overrides (e.g. teacher.pretrained=openai)")
    ap.add_argument("--out", default="bench/results/realsize.json")
    args = ap.parse_args()
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    devices = args.devices.split(",") if args.devices else (["cpu"] * (not multi) + ["cuda"] * torch.cuda.is_available())
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or not devices:
        print(f"error: --pairs {','.join(unknown)}: expected some of {', '.join(PAIRS)}" if unknown
              else "error: no device to run on", file=sys.stderr)
        sys.exit(2)
    # runs, saved students, caches: removed at the end; one folder for all processes of a launch
    if multi:
        work = Path(tempfile.gettempdir()) / f"bench_realsize_{os.environ.get('MASTER_PORT', 'launch')}"
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench_realsize_"))
    try:
        results, notes, acc = run_devices(devices, pairs, args, work)
        acc.wait_for_everyone()
    finally:
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(work, ignore_errors=True)
    if not acc.is_main_process:
        return
    report_and_write(results, notes, args)


def run_devices(devices: List[str], pairs: List[str], args: argparse.Namespace, work: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    from clip_td.app.trainer import check_mixed_precision
    from clip_td.base.io import InputError

    results: List[Dict[str, Any]] = []
    notes: List[str] = []
    acc = None
    for dev in devices:
        mp = "bf16" if dev == "cuda" else "no"
        try:
            if dev == "cuda":
                check_mixed_precision(mp)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        acc = Accelerator(cpu=dev == "cpu", mixed_precision=mp,
                          kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        if dev == "cuda" and acc.num_processes == 1 and torch.cuda.device_count() >= 2:
            notes.append("2 GPUs visible: 2 processes are measured with "
                         "`accelerate launch --num_processes 2 bench/bench_realsize.py` (samples/s counts both)")
        for pair in pairs:
            results.append(run_pair(pair, args, acc, work))
    if not any(r["device"] == "cuda" for r in results):
        notes.append("GPU rows: not measured (no GPU visible: torch.cuda.is_available() is False)")
    if not PeakMemory(torch.device("cpu")).resettable:
        notes.append("CPU peak memory is the process's lifetime peak (no /proc/self/clear_refs)")
    return results, notes, acc


def report_and_write(results: List[Dict[str, Any]], notes: List[str], args: argparse.Namespace) -> None:
    from clip_td.base.io import cpu_model

    cpu_name = cpu_model()
    report = {
        "hardware": {"cpu": cpu_name, "machine": platform.machine(), "cpu_cores": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "torch": torch.__version__},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results, "notes": notes,
    }
    print_table(results)
    for n in notes:
        print(f"note: {n}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
