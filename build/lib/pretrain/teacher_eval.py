"""A trained teacher's evaluation report: retrieval on held-out pairs, zero-shot accuracy
per label set and the few-shot probes, on the synthetic world or any captions file.

    python -m pretrain.teacher_eval --teacher DIR --captions FILE [--zeroshot DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from clip_td.base.io import InputError

from pretrain.data import read_captions, read_zeroshot
from pretrain.metrics import encode_images, fewshot_probe, retrieval, zeroshot_accuracy, zeroshot_weights


def evaluate_teacher(clip, built, paths: Dict, eval_cfg, seed: int, device) -> Dict:
    """{"retrieval": {i2t_r1, i2t_r5, t2i_r1, t2i_r5, mean_r1}, "zeroshot": {set: acc},
    "fewshot": {set: {"plain": {"1shot": ..}, "diht": {..}}}}, all in percent."""
    clip = clip.to(device).eval()
    out: Dict = {}
    if paths.get("val") is not None:
        rows = read_captions(paths["val"])[: eval_cfg.max_pairs]
        out["retrieval"] = retrieval(clip, [r["image"] for r in rows], [r["title"] for r in rows],
                                     built.preprocess_val, built.tokenizer, device)
    if paths.get("zeroshot") is not None:
        out["zeroshot"], out["fewshot"] = {}, {}
        scale = clip.logit_scale.exp().item()
        cache: Dict[tuple, torch.Tensor] = {}  # label sets usually share their images: encode them once
        for name, spec in read_zeroshot(paths["zeroshot"]).items():
            key = tuple(spec["images"])
            if key not in cache:
                cache[key] = encode_images(clip, spec["images"], built.preprocess_val, device)
            img = cache[key]
            w = zeroshot_weights(clip, built.tokenizer, spec["classnames"], spec["templates"], device)
            out["zeroshot"][name] = zeroshot_accuracy(img, w, spec["labels"])
            out["fewshot"][name] = fewshot_probe(img, spec["labels"], w, scale, eval_cfg.probe_shots, seed,
                                                 eval_cfg.probe_delta, eval_cfg.probe_delta_b, eval_cfg.probe_steps)
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    import open_clip

    from pretrain.config import EvalConfig
    from pretrain.clip_factory import BuiltModel

    ap = argparse.ArgumentParser(description="Evaluate an open_clip teacher folder on a captions file")
    ap.add_argument("--teacher", required=True, help="open_clip local-dir folder (or any open_clip model name)")
    ap.add_argument("--captions", default=None, help="captions TSV/CSV (filepath, title) for retrieval")
    ap.add_argument("--zeroshot", default=None, help="folder holding zeroshot.json")
    args = ap.parse_args(argv)
    name = args.teacher if ":" in args.teacher or not Path(args.teacher).is_dir() else f"local-dir:{args.teacher}"
    try:
        model, _, pp_val = open_clip.create_model_and_transforms(name)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        raise InputError(f"--teacher {args.teacher!r}: cannot build an open_clip model ({e})") from None
    built = BuiltModel(model, {}, {}, pp_val, pp_val, open_clip.get_tokenizer(name))
    paths = {"val": None if args.captions is None else Path(args.captions),
             "zeroshot": None if args.zeroshot is None else Path(args.zeroshot)}
    res = evaluate_teacher(model, built, paths, EvalConfig(), 0, torch.device("cpu"))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    from clip_td.base.scripts import run_script

    sys.exit(run_script(main, sys.argv[1:]))
