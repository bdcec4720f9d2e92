"""Teacher-pretraining benchmark: step time of our losses vs open_clip's ClipLoss, and the
recipe table (InfoNCE, HN-NCE, ALIP, CAT-filtered InfoNCE, DiHT) on the noisy medium
synthetic corpus with the same budget and seeds. Prints tables, writes JSON.

    python bench/bench_pretrain.py steptime [--batch-size 128 --rounds 8]
    python bench/bench_pretrain.py recipes [--steps 300 --batch-size 128 --seeds 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES = {  # name -> (shipped recipe, extra overrides)
    "infonce": ("clip", []),
    "hn_nce": ("clip", ["loss.name=hn_nce", "loss.beta=0.5"]),
    "alip": ("alip", []),
    "cat_infonce": ("clip", ["cat.enabled=true"]),
    "diht": ("diht", []),
}


def _step_variants(model, batch, caption):
    from open_clip.loss import ClipLoss

    from pretrain.alip_gates import ALIPGates
    from pretrain.losses import ALIPLoss, HardNegativeNCELoss, InfoNCELoss

    def contrastive(loss_fn):
        def step():
            img, txt, scale = model(batch["image"], batch["text"])
            return loss_fn(img, txt, scale)
        return step

    gates = ALIPGates()

    def alip_bipath():
        img, txt, scale = model(batch["image"], batch["text"])
        cap = model.encode_text(caption, normalize=True)
        return ALIPLoss(gates)(img, txt, scale, caption_features=cap)

    return {
        "open_clip_ClipLoss": contrastive(ClipLoss()),
        "infonce": contrastive(InfoNCELoss()),
        "hn_nce": contrastive(HardNegativeNCELoss(alpha=1.0, beta=0.5)),
        "alip_loss_only": contrastive(lambda i, t, s: ALIPLoss(gates)(i, t, s, caption_features=t)),
        "alip_bipath": alip_bipath,
    }


def steptime(args) -> dict:
    """Full optimizer steps (forward, loss, backward, AdamW) on one model and batch, variants
    interleaved round-robin so machine load hits them alike; median per variant."""
    from pretrain.clip_factory import build_model

    torch.manual_seed(0)
    built = build_model()
    model = built.model.train()
    texts = [f"a {c} {s} left of a small {c2} ring" for c, s, c2 in zip(["red", "blue", "green", "pink"] * 64, ["star", "cross"] * 128, ["cyan", "black"] * 128)]
    batch = {"image": torch.randn(args.batch_size, 3, 64, 64), "text": built.tokenizer(texts[: args.batch_size])}
    caption = built.tokenizer([t.replace("left of", "and") for t in texts[: args.batch_size]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    variants = _step_variants(model, batch, caption)
    times = {k: [] for k in variants}
    for r in range(args.rounds + 1):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            loss = fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            if r > 0:  # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        # per-round ratios, median: the shared machine's load drifts between rounds, less within one
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    res = {"batch_size": args.batch_size, "rounds": args.rounds, "threads": torch.get_num_threads(),
           "median_step_s": med, "step_s": times,
           "ratio_infonce_vs_open_clip": ratio("infonce", "open_clip_ClipLoss"),
           "ratio_hn_nce_vs_infonce": ratio("hn_nce", "infonce"),
           "ratio_alip_loss_vs_infonce": ratio("alip_loss_only", "infonce"),
           "ratio_alip_bipath_vs_infonce": ratio("alip_bipath", "infonce")}
    print(f"{'variant':<22}{'median step (s)':>16}")
    for k, v in med.items():
        print(f"{k:<22}{v:>16.4f}")
    for k, v in res.items():
        if k.startswith("ratio"):
            print(f"{k:<34}{v:.3f}")
    return res


def recipes(args) -> dict:
    from pretrain.config import recipe_path
    from pretrain.train import main

    rows = []
    for seed in args.seeds:
        for name in args.only or RECIPES:
            config, extra = RECIPES[name]
            out = Path(args.out_dir) / f"{name}-s{seed}"
            t0 = time.perf_counter()
            m = main(["--config", str(recipe_path(config)), f"output_dir={out}", f"seed={seed}",
                      f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
                      f"eval.max_pairs={args.eval_pairs}", *extra])
            ev = m["eval"]
            rows.append({"recipe": name, "seed": seed, "steps": args.steps, "batch_size": args.batch_size,
                         "wall_s": time.perf_counter() - t0, "step_time_s": m["train"]["step_time_s"],
                         **{k: ev["retrieval"][k] for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")},
                         **{f"zs_{k}": v for k, v in ev["zeroshot"].items()},
                         **{f"probe8_{p}_{k}": v[p].get("8shot") for k, v in ev["fewshot"].items() for p in ("plain", "diht")}})
            cat = out / "cat_report.json"
            if cat.is_file():
                rows[-1]["cat"] = json.loads(cat.read_text())["vs_truth"]
    cols = ["recipe", "seed", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"] + sorted(k for k in rows[0] if k.startswith("zs_")) + ["wall_s"]
    print(f"budget: {args.steps} steps x batch {args.batch_size}, seeds {args.seeds}, retrieval on {args.eval_pairs} "
          "held-out pairs, medium synthetic corpus (noise on)")
    print(" | ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>10.2f}" if isinstance(r[c], float) else f"{r[c]!s:>10}" for c in cols))
    return {"budget": {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds, "eval_pairs": args.eval_pairs},
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["steptime", "recipes"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-pairs", type=int, default=2000, help="held-out pairs for retrieval")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="+", choices=list(RECIPES), default=None)
    ap.add_argument("--out-dir", default="runs/bench_pretrain")
    ap.add_argument("--json", default=None, help="result file (default bench/results/pretrain_<what>.json)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # open_clip warns about random init of declared architectures
    res = steptime(args) if args.what == "steptime" else recipes(args)
    path = Path(args.json or REPO / "bench" / "results" / f"pretrain_{args.what}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
