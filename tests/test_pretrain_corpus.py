"""A tiny corpus of the synthetic world's pretraining layout (docs/internals.md), for tests."""

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SHAPES = ("circle", "square")
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_OVERRIDES = [
    "model.model_cfg.embed_dim=32", "model.model_cfg.vision_cfg.image_size=32", "model.model_cfg.vision_cfg.layers=1",
    "model.model_cfg.vision_cfg.width=32", "model.model_cfg.vision_cfg.head_width=16",
    "model.model_cfg.text_cfg.context_length=16", "model.model_cfg.text_cfg.width=32",
    "model.model_cfg.text_cfg.heads=2", "model.model_cfg.text_cfg.layers=1", "model.preprocess_cfg.size=32",
]


def _parse(colour, shape):
    # "a red circle" -> det/amod under the noun root: the noun has 2 children
    return [["a", "DET", "det", 2], [colour, "ADJ", "amod", 2], [shape, "NOUN", "ROOT", -1]]


def _image(path: Path, colour: str, shape: str) -> None:
    im = Image.new("RGB", (32, 32), (240, 240, 240))
    d = ImageDraw.Draw(im)
    box = (6, 6, 26, 26)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_tiny_corpus(root: Path, n_train: int = 48, n_val: int = 12, seed: int = 0, facts: bool = False) -> Path:
    """<root>/pretrain/{train,val}.tsv, images, concepts.json, zeroshot.json (+ TSV); with `facts`
    also the scene-graph column ("<colour> <shape>|<shape> left of square")."""
    rng = random.Random(seed)
    pre = root / "pretrain"
    cols = ["filepath", "title", "synthetic_caption", "ocr_text", "parse", "concepts", "style", "noise"] + ["facts"] * facts
    for split, n in (("train", n_train), ("val", n_val)):
        lines = ["\t".join(cols)]
        for i in range(n):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            rel = f"images/{split}/{i:04d}.jpg"
            _image(pre / rel, colour, shape)
            noise = "low_complexity" if split == "train" and i % 6 == 5 else "clean"
            title = "a picture" if noise == "low_complexity" else f"a {colour} {shape}"
            parse = [["a", "DET", "det", 1], ["picture", "NOUN", "ROOT", -1]] if noise != "clean" else _parse(colour, shape)
            lines.append("\t".join([rel, title, f"a {colour} {shape}", "", json.dumps(parse), f"{shape} {colour}", "source", noise]
                                   + [f"{colour} {shape}|{shape} left of square"] * facts))
        (pre / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    (pre / "concepts.json").write_text(json.dumps({"concepts": list(SHAPES) + list(COLOURS)}))
    zs = ["filepath\tlabel"]
    for i in range(12):
        shape = SHAPES[i % 2]
        rel = f"images/zeroshot/{i:04d}.jpg"
        _image(pre / rel, rng.choice(list(COLOURS)), shape)
        zs.append(f"{rel}\t{i % 2}")
    (pre / "zeroshot_shape.tsv").write_text("\n".join(zs) + "\n")
    (pre / "zeroshot.json").write_text(json.dumps({"shape": {"classnames": list(SHAPES), "templates": ["a {}."], "file": "zeroshot_shape.tsv"}}))
    return root


# --- the captions reader on the tiny corpus and on bad input ---

import pytest  # noqa: E402

from clip_td.base.io import InputError  # noqa: E402
from pretrain.data import read_captions, read_zeroshot  # noqa: E402


def test_reads_tiny_corpus(tmp_path):
    root = write_tiny_corpus(tmp_path, n_train=6, n_val=2)
    rows = read_captions(root / "pretrain" / "train.tsv")
    assert len(rows) == 6
    assert Path(rows[0]["image"]).is_file() and rows[0]["title"].startswith("a ")
    zs = read_zeroshot(root / "pretrain")
    assert zs["shape"]["labels"] == [i % 2 for i in range(12)]


def _write(path, text):
    path.write_text(text)
    return path


def test_missing_column_names_file_and_column(tmp_path):
    f = _write(tmp_path / "c.tsv", "filepath\tcaption\nx.jpg\thello\n")
    with pytest.raises(InputError, match=r"c\.tsv: missing column\(s\) \['title'\]"):
        read_captions(f)


def test_empty_caption_names_line(tmp_path):
    _image(tmp_path / "x.jpg", "red", "circle")
    f = _write(tmp_path / "c.tsv", "filepath\ttitle\nx.jpg\ta red circle\nx.jpg\t  \n")
    with pytest.raises(InputError, match=r"c\.tsv:3: empty value in column 'title'"):
        read_captions(f)


def test_missing_image_names_line(tmp_path):
    _image(tmp_path / "x.jpg", "red", "circle")
    f = _write(tmp_path / "c.csv", "filepath,title\nx.jpg,a red circle\ngone.jpg,a blue square\n")
    with pytest.raises(InputError, match=r"c\.csv:3: column 'filepath': image not found"):
        read_captions(f)
