"""What a ViLT student's patch tokens carry: linear probes of the object under each patch.

    python bench/student_patch_probe.py STUDENT [STUDENT ...] [--scenes 512] [--layers 0 -1] [--out FILE]

STUDENT is a ViLT folder (`pretrain_student.py`'s `student/`, or any folder `student.pretrained=`
reads), or a run's `image_init.safetensors` (the ViltModel the image initialisation left, before
MLM + ITM; the architecture and tokenizer come from the run's `student/` beside it). Comparing the
two says what MLM + ITM kept of the image initialisation.

Fresh source-style scenes of 1 to 6 objects, as the tasks draw them, are rendered at the
student's image size (a generator no training run uses), read with an empty caption ([CLS]
[SEP]) and the patch tokens taken at each `--layers` index of the hidden states (0: the
embeddings, -1: the last layer), in grid order. Every patch that an object covers (the object
drawn over at least 1/8 of it, as `image_init.dense` labels it) is labelled with that object's
colour, shape and size; a multinomial logistic regression per attribute (standardised features,
L2, L-BFGS) is fitted on the patches of the first 3/4 of the scenes and scored on the rest, so
no object is on both sides. Prints a table and writes JSON (default
`bench/results/student_patch_probe.json`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_td.base.io import InputError, write_json_atomic  # noqa: E402

ATTRIBUTES = ("colour", "shape", "size")
PROBE_SEED = 7_000_003  # scene_batch's seed for the probe scenes (training runs use cfg.seed, small)
MAX_OBJECTS = 6  # as the tasks' scenes


def fit_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
              classes: int, l2: float = 1e-3, max_iter: int = 200) -> float:
    """Test accuracy (%) of an L2-regularised multinomial logistic regression fitted on
    standardised `x_train` (mean and std of the training rows only)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y_train) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float(((b @ w + bias).argmax(-1) == y_test).float().mean())


def load_student(path: Path) -> Tuple[Any, Any]:
    """(ViltModel in eval mode with patches in grid order, tokenizer) of a folder or an
    image_init.safetensors beside a run's student/."""
    from transformers import AutoTokenizer, ViltModel

    from clip_td.base.vilt_order import grid_ordered
    from pretrain.student.image_init import load_image_init

    folder = path.parent / "student" if path.suffix == ".safetensors" else path
    if not (folder / "config.json").is_file():
        raise InputError(f"{path}: expected a ViLT folder (config.json, model.safetensors, tokenizer) or a run's "
                         f"image_init.safetensors with the run's student/ beside it")
    model = ViltModel.from_pretrained(str(folder))
    if path.suffix == ".safetensors":
        load_image_init(model, str(path))
    model.embeddings.visual_embed = grid_ordered(model.embeddings.visual_embed)
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


@torch.no_grad()
def patch_features(model: Any, tokenizer: Any, scenes: int, layers: Sequence[int],
                   batch_size: int = 64) -> Tuple[Dict[int, torch.Tensor], torch.Tensor]:
    """({layer: (scenes, G*G, h)}, labels (scenes, G*G, 3)) on the probe scenes."""
    from pretrain.student.data import image_transform
    from pretrain.student.image_init import scene_batch

    size, patch = int(model.config.image_size), int(model.config.patch_size)
    transform = image_transform(size)
    feats: Dict[int, List[torch.Tensor]] = {layer: [] for layer in layers}
    labels = []
    for step, start in enumerate(range(0, scenes, batch_size)):
        pixels, y = scene_batch(PROBE_SEED, step, min(batch_size, scenes - start), size, transform, MAX_OBJECTS, patch)
        ids = torch.tensor([[tokenizer.cls_token_id, tokenizer.sep_token_id]]).expand(len(pixels), -1)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                    pixel_mask=torch.ones(len(pixels), size, size, dtype=torch.long), output_hidden_states=True)
        for layer in layers:
            feats[layer].append(out.hidden_states[layer][:, ids.shape[1] + 1:])  # after the text and image CLS
        labels.append(y)
    return {layer: torch.cat(v) for layer, v in feats.items()}, torch.cat(labels)


def probe_layer(x: torch.Tensor, labels: torch.Tensor) -> Dict[str, Any]:
    """Per-attribute test accuracy on the object patches; scenes split 3/4 train, 1/4 test."""
    from pretrain.student.image_init import ATTRIBUTES as CLASSES
    from pretrain.student.image_init import BACKGROUND

    cut = x.shape[0] * 3 // 4
    on = labels[..., 1] != BACKGROUND[1]  # object patches
    train, test = on.clone(), on.clone()
    train[cut:], test[:cut] = False, False
    out: Dict[str, Any] = {"train_patches": int(train.sum()), "test_patches": int(test.sum())}
    for k, name in enumerate(ATTRIBUTES):
        out[name] = fit_probe(x[train], labels[train][:, k], x[test], labels[test][:, k], len(CLASSES[name]))
    return out


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    from pretrain.student.image_init import ATTRIBUTES as CLASSES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("students", nargs="+", type=Path)
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--layers", type=int, nargs="+", default=[0, -1])
    p.add_argument("--out", default="bench/results/student_patch_probe.json")
    args = p.parse_args(argv)
    if args.scenes < 8:
        raise InputError(f"--scenes {args.scenes}: need at least 8 (3/4 to fit, 1/4 to score)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    chance = {a: 100.0 / len(CLASSES[a]) for a in ATTRIBUTES}
    result: Dict[str, Any] = {"chance": chance, "scenes": args.scenes, "max_objects": MAX_OBJECTS, "students": {}}
    for path in args.students:
        model, tokenizer = load_student(path)
        feats, labels = patch_features(model, tokenizer, args.scenes, args.layers)
        result["students"][str(path)] = {str(layer): probe_layer(x, labels) for layer, x in feats.items()}
    print(f"{'student':<56}{'layer':>6}" + "".join(f"{a:>9}" for a in ATTRIBUTES) + f"{'patches':>9}")
    print(f"{'(chance)':<56}{'':>6}" + "".join(f"{chance[a]:>9.1f}" for a in ATTRIBUTES))
    for name, by_layer in result["students"].items():
        for layer, r in by_layer.items():
            print(f"{name[-56:]:<56}{layer:>6}" + "".join(f"{r[a]:>9.1f}" for a in ATTRIBUTES) + f"{r['test_patches']:>9}")
    out = Path(args.out)
    write_json_atomic(out, result)  # (makes the folder)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
