"""Cost of CLIP-TD per training step, and of building the teacher cache.

    python bench/bench_finetune_step.py [--steps 10] [--batch 32] [--rows 256] [--teacher local-dir:DIR] [--student default]
                                        [--out bench/results/finetune_step.json]

One process (CPU here, or the GPU if there is one). Student + VQA head (+ distiller) with the
default fine-tuning shapes (the default pretrained student: the shipped ViLT, 128 wide, 4 layers,
64 px, patch 8; `--student config`: the schema's two-layer from-config one) and the default teacher
(the shipped one unless `--teacher`), with the default method: VQA's question-conditioned
candidates ("<question> <answer>" for each of 100 answers, one list per question, encoded on
first lookup as fine-tuning does) and the per-answer Bernoulli answer term. Times one optimizer
step (forward + backward + AdamW) for:
  none            task loss only
  clip_td+cache   teacher outputs from TeacherCache.lookup (memory-mapped), then the distiller
  clip_td live    the teacher runs on the batch every step (teacher.cache=false)
  teacher         one teacher forward on the batch alone (images, task texts, candidates)
Targets: clip_td+cache / none <= 1.10; clip_td live / (none + teacher) <= 1.05 (the live path adds
nothing beyond the teacher's own forward). The trust gate and the weights are computed before
training, so no variant pays for them per step; the handover's and the held-back check's
per-step bookkeeping (row gates, label weights, the student's answers) is inside both clip_td
rows. Also reports the cache build throughput
(images/s) and its size per row. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from clip_td.lib.teacher_cache import TeacherCache, teacher_outputs  # noqa: E402
from clip_td.app.schema import StudentConfig  # noqa: E402
from clip_td.lib.distill import MethodConfig, create_distiller, for_task, resolve_method  # noqa: E402
from tasks.heads import MLPHead  # noqa: E402
from clip_td.lib.students import create_student  # noqa: E402
from tasks import get_task  # noqa: E402
from clip_td.lib.teacher import FrozenTeacher  # noqa: E402
from clip_td.lib.tokenizer import build_wordpiece, load_pretrained_tokenizer  # noqa: E402
from clip_td.lib.trust import StudentHandover  # noqa: E402
from tasks.vqa.task import vqa_bce  # noqa: E402
from clip_td.app.teacher_setup import _with_handover  # noqa: E402
from tasks.vqa.answers import AnswerVocab  # noqa: E402

WORDS = "red blue green cube sphere cone small big left right of the is there what color how many".split()


def make_rows(root: Path, n: int, rng: np.random.Generator) -> list:
    rows = []
    for i in range(n):
        path = root / f"img{i // 2}.png"  # two questions per image, as in VQA
        if not path.exists():
            Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(path)
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) + "?"
        rows.append({"image": str(path), "text": q, "multiple_choice_answer": f"ans{i % 100}"})
    return rows


def time_interleaved(variants: dict, steps: int, warmup: int = 3) -> dict:
    """Median step time per variant; variants alternate step by step so load drift hits all alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in variants}
    for _ in range(steps):
        for name, fn in variants.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--teacher", default=None, help="open_clip name / local-dir:DIR (default: the default teacher)")
    ap.add_argument("--student", choices=["default", "config"], default="default",
                    help="default: the default pretrained student finetune.py loads (the shipped four-layer ViLT); "
                         "config: the schema's from-config student (two layers)")
    ap.add_argument("--out", default="bench/results/finetune_step.json")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ft_"))
    rows = make_rows(tmp, args.rows, rng)
    vocab = AnswerVocab([f"ans{i}" for i in range(100)])
    from pretrain.default_teacher import default_teacher_name

    args.teacher = default_teacher_name(args.teacher)
    teacher = FrozenTeacher.from_name(args.teacher).to(device)

    t0 = time.perf_counter()
    task = get_task("vqa")
    task.set_answer_vocab(vocab)
    task.question_candidates = True  # the default method's VQA candidates
    cache = TeacherCache.build(teacher, task.teacher_texts, rows, tmp / "cache", name="vqa", batch_size=64,
                               run_candidates=task.run_candidates)
    build_s = time.perf_counter() - t0
    n_images = len({r["image"] for r in rows})

    if args.student == "default":  # what `finetune.py` fine-tunes by default (student.pretrained=default)
        from pretrain.student.default_student import ensure_default_student

        scfg = StudentConfig(pretrained=str(ensure_default_student()))
        tok = load_pretrained_tokenizer(scfg.pretrained)
    else:  # the schema's from-config student
        scfg = StudentConfig(pretrained=None)
        tok = build_wordpiece([r["text"] for r in rows], vocab_size=200)
    student = create_student("vilt", scfg, vocab_size=len(tok), image_size=64).to(device)
    head = MLPHead(student.hidden_size, len(vocab)).to(device)
    method = for_task(resolve_method(MethodConfig()), task)  # answer_loss=auto -> bernoulli (sigmoid head)
    distiller = create_distiller(method, student.hidden_size, teacher.embed_dim).to(device)
    params = list(student.parameters()) + list(head.parameters()) + list(distiller.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    idx = torch.arange(args.batch)
    chosen = [rows[i] for i in idx.tolist()]
    enc = tok([r["text"] for r in chosen], padding=True, truncation=True, max_length=40,
              return_offsets_mapping=True, return_tensors="pt")
    batch = {"offsets": enc["offset_mapping"].to(device)}
    pixels = torch.randn(args.batch, 3, 64, 64, device=device)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    targets = torch.rand(args.batch, len(vocab), device=device)
    transform = teacher.image_transform()
    teacher_pixels = torch.stack([transform(Image.open(r["image"]).convert("RGB")) for r in chosen]).to(device)
    texts = [task.teacher_texts(r) for r in chosen]

    # the default handover: its per-row gate on the teacher outputs and the trainer's observe call
    # (one group per 10 rows; the rows are re-seen every step, as any row after its first visit),
    # with the held-back check's rows (every 5th) waiting for a check that never comes: its
    # per-step work (label weights, gate, latest answers) runs every step
    handover = StudentHandover(torch.randint(0, 2, (len(rows),)), [i // 10 for i in range(len(rows))],
                               window=method.handover_window, held_back=torch.arange(len(rows)) % 5 == 0,
                               check_step=10 ** 9)

    def step(source):
        out = student(pixels, ids, mask)
        logits = head(out["pooled"])
        if source is None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / args.batch
        else:
            loss = vqa_bce(logits, targets, handover.label_weight(idx).to(device))
            teacher_out = _with_handover(lambda b: source(), handover, {"index": idx})
            terms = distiller(out, teacher_out, batch, logits)
            handover.observe(teacher_out["teacher_rows"], terms["answer_right"], 0)
            loss = loss + sum(v for k, v in terms.items() if k.endswith("_loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    live = lambda: teacher_outputs(teacher, teacher_pixels, *zip(*texts))  # noqa: E731
    timings = time_interleaved({
        "none": lambda: step(None),
        "clip_td_cache": lambda: step(lambda: cache.lookup(idx)),
        "clip_td_live": lambda: step(live),
        "teacher": live,
    }, args.steps)
    result = {
        "device": device, "batch": args.batch, "torch_threads": torch.get_num_threads(), "teacher": args.teacher,
        "student": args.student, "student_params": sum(p.numel() for p in student.parameters()),
        "step_time_s": timings,
        "ratio_cache_over_none": timings["clip_td_cache"] / timings["none"],
        "ratio_live_over_none": timings["clip_td_live"] / timings["none"],
        "ratio_live_over_none_plus_teacher": timings["clip_td_live"] / (timings["none"] + timings["teacher"]),
        "cache_build": {"rows": len(rows), "images": n_images, "seconds": build_s,
                        "images_per_s": n_images / build_s, "rows_per_s": len(rows) / build_s,
                        "bytes": cache.bytes, "bytes_per_row": cache.bytes / len(rows)},
    }
    print(f"student: {args.student} ({result['student_params'] / 1e6:.2f} M parameters), batch {args.batch}")
    print(f"{'variant':<16}{'step s':>10}{'x none':>9}")
    for name, t in timings.items():
        print(f"{name:<16}{t:>10.4f}{t / timings['none']:>9.3f}")
    print(f"clip_td live / (none + teacher) = {result['ratio_live_over_none_plus_teacher']:.3f}")
    cb = result["cache_build"]
    print(f"cache build: {cb['images']} images / {cb['rows']} rows in {cb['seconds']:.2f} s = "
          f"{cb['images_per_s']:.1f} images/s; {cb['bytes_per_row'] / 1024:.1f} KiB per row")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
