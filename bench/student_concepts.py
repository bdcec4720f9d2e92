"""What a pretrained student reads from the image: masked-word accuracy per concept kind.

    python bench/student_concepts.py RUN_DIR [RUN_DIR ...] [--rows 512] [--out FILE]

RUN_DIR is a `pretrain_student.py` output folder (config.yaml, student/, checkpoints/step_<n>/:
the last checkpoint holds the MLM head that the exported student drops). On the first `--rows`
source-style rows of the held-out captions (`data.val`, or the synthetic world's
pretrain/val.tsv), every word of a caption that names one of the image's concepts (the
`concepts` column) is masked on its own, all its word pieces, and the student predicts it from
the rest of the caption and the image. Accuracy is per kind of the synthetic world's vocabulary
(colour, shape, size): a word the image decides, so chance is one in the kind's size, and what
the caption around it says (a "large" before it, the other objects) narrows it only so far.
Prints a table and writes JSON (default `bench/results/student_concepts.json`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import InputError, write_json_atomic  # noqa: E402
from tasks.synthetic.vocab import COLOUR_NAMES, SHAPES, SIZE_NAMES  # noqa: E402

KINDS: Dict[str, str] = {**{c: "colour" for c in COLOUR_NAMES}, **{s: "shape" for s in SHAPES},
                         **{s: "size" for s in SIZE_NAMES}}
CHANCE = {"colour": 100.0 / len(COLOUR_NAMES), "shape": 100.0 / len(SHAPES), "size": 100.0 / len(SIZE_NAMES)}


def concept_word_accuracy(model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]],
                          kinds: Mapping[str, str] = KINDS) -> Dict[str, Dict[str, float]]:
    """{kind: {"accuracy": %, "words": n}} over `items` ({"pixel_values": (3,H,W), "text",
    "concepts": set of words}): each caption word in the item's concepts and in `kinds` is masked
    alone (every piece) and counts as right when the argmax at each of its pieces is that piece.
    `model` is a `StudentPretrainModel` (its `encode` and `mlm.mlm_score`)."""
    counts: Dict[str, List[int]] = {}
    model.eval()
    with torch.no_grad():
        for item in items:
            enc = tokenizer(item["text"], return_tensors="pt")
            ids = enc["input_ids"][0]
            words: Dict[int, List[int]] = {}
            for t, w in enumerate(enc.word_ids(0)):
                if w is not None:
                    words.setdefault(w, []).append(t)
            targets = []
            for w, positions in words.items():
                span = enc.word_to_chars(0, w)
                word = item["text"][span.start:span.end].lower()
                if word in item["concepts"] and word in kinds:
                    targets.append((kinds[word], positions))
            if not targets:
                continue
            batch = ids.repeat(len(targets), 1)
            for row, (_, positions) in enumerate(targets):
                batch[row, positions] = tokenizer.mask_token_id
            pixels = item["pixel_values"].unsqueeze(0).expand(len(targets), -1, -1, -1)
            text, _ = model.encode(pixels, batch, torch.ones_like(batch))
            predicted = model.mlm.mlm_score(text).argmax(-1)
            for row, (kind, positions) in enumerate(targets):
                right = bool((predicted[row, positions] == ids[positions]).all())
                c = counts.setdefault(kind, [0, 0])
                c[0] += int(right)
                c[1] += 1
    return {k: {"accuracy": 100.0 * r / n, "words": n} for k, (r, n) in sorted(counts.items())}


def last_checkpoint(run_dir: Path) -> Path:
    steps = sorted((p for p in (run_dir / "checkpoints").glob("step_*") if (p / "model.safetensors").is_file()),
                   key=lambda p: int(p.name.split("_")[1]))
    if not steps:
        raise InputError(f"{run_dir / 'checkpoints'}: no step_<n>/model.safetensors (the MLM head is only in the "
                         f"run's checkpoints, not in the exported student/)")
    return steps[-1] / "model.safetensors"


def load_run(run_dir: Path):
    """(model with its MLM head, tokenizer, config) of a pretrain_student.py output folder."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from pretrain.student.model import StudentPretrainModel, vilt_config

    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: no config.yaml; expected a pretrain_student.py output folder")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "student"))
    model = StudentPretrainModel(vilt_config(cfg.model, len(tokenizer), cfg.data.image_size))
    state = load_file(str(last_checkpoint(run_dir)))
    missing = model.load_state_dict(state, strict=False).missing_keys
    if any(k != "mlm.mlm_score.decoder.weight" for k in missing):  # the decoder is tied to the embeddings
        raise InputError(f"{run_dir}: checkpoint lacks {missing}")
    model.mlm.tie_weights()
    return model, tokenizer, cfg


def held_out_items(cfg: Any, rows: int) -> List[Dict[str, Any]]:
    from pretrain.student.data import PairDataset, resolve_paths, source_rows

    val = resolve_paths(cfg)["val"]
    if val is None:
        raise InputError("no held-out captions: set data.val in the run's config.yaml")
    data = PairDataset(source_rows(val, cfg.data.text_column, rows), cfg.data.text_column, cfg.data.image_size)
    return [data[i] for i in range(len(data))]


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--out", default="bench/results/student_concepts.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: Dict[str, Any] = {"chance": CHANCE, "rows": args.rows, "runs": {}}
    for run_dir in args.runs:
        model, tokenizer, cfg = load_run(run_dir)
        result["runs"][str(run_dir)] = concept_word_accuracy(model, tokenizer, held_out_items(cfg, args.rows))
    print(f"{'run':<36}" + "".join(f"{k:>16}" for k in CHANCE))
    print(f"{'(chance)':<36}" + "".join(f"{v:>16.1f}" for v in CHANCE.values()))
    for name, acc in result["runs"].items():
        print(f"{name:<36}" + "".join(f"{acc[k]['accuracy']:>9.1f} (n={acc[k]['words']})" if k in acc else f"{'-':>16}"
                                      for k in CHANCE))
    out = Path(args.out)
    write_json_atomic(out, result)  # (makes the folder)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
