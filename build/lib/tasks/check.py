"""`clip-td data check`: validate a dataset folder and report EVERY problem, each naming the
file and line (or JSON key path) and what was expected.

Task data goes through the loaders' own scanning code (in collecting mode, with images
decoded), so check and load agree on what is valid. Captions follow the open_clip CSV/TSV
table of docs/internals.md.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from tasks.base import ImageChecker, Problems

PathLike = Union[str, Path]

STYLES = ("source", "shift")
NOISE = ("clean", "mismatch", "low_complexity", "text_spotting")
CAPTION_FILES = ("train.tsv", "val.tsv")


def check_task(task: str, root: PathLike) -> Tuple[Dict[str, Any], List[str]]:
    """(counts, problems) for vqa | snli_ve | vcr | captions data at `root`."""
    if task == "captions":
        return check_captions(root)
    from tasks import get_task

    t = get_task(task)
    root = Path(root)
    if not root.is_dir():
        return {}, [f"{root}: not a folder"]
    splits = t.splits_found(root)
    if not splits:
        return {}, [f"{root}: no {task} split files found (expected names like {_example(t)})"]
    counts: Dict[str, Any] = {"task": task, "root": str(root.resolve()), "splits": {}}
    problems = Problems(strict=False)
    for split in splits:
        rows = t.scan(root, split, problems, decode_images=True)
        counts["splits"][split] = {"instances": len(rows), "images": t.images_checked}
    return counts, problems.items


def _example(task: Any) -> str:
    p = task.paths
    return getattr(p, "questions", None) or p.file


def _caption_files(path: Path) -> List[Path]:
    if path.is_file():
        return [path]
    return [path / n for n in CAPTION_FILES if (path / n).is_file()]


def check_captions(path: PathLike) -> Tuple[Dict[str, Any], List[str]]:
    """Check an open_clip captions CSV/TSV (or a folder with train.tsv / val.tsv)."""
    path = Path(path)
    if not path.exists():
        return {}, [f"{path}: not found"]
    files = _caption_files(path)
    if not files:
        return {}, [f"{path}: no captions file (expected {' or '.join(CAPTION_FILES)}, or a .csv/.tsv file)"]
    problems = Problems(strict=False)
    counts: Dict[str, Any] = {"task": "captions", "files": {}}
    for f in files:
        counts["files"][f.name] = _check_caption_file(f, problems)
    return counts, problems.items


def _concept_vocab(folder: Path, problems: Problems) -> Optional[set]:
    path = folder / "concepts.json"
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["concepts"]
        return set(names)
    except (ValueError, KeyError, TypeError):
        problems.add(f"{path}: expected {{\"concepts\": [names...]}}")
        return None


def _check_caption_file(path: Path, problems: Problems) -> Dict[str, int]:
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    concepts = _concept_vocab(path.parent, problems)
    check_image = ImageChecker(decode=True)
    n_rows = 0
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        if header is None or not {"filepath", "title"} <= set(header):
            problems.add(f"{path}:1: header must name at least 'filepath' and 'title' columns, got {header}")
            return {"rows": 0, "images": 0}
        for values in reader:
            where = f"{path}:{reader.line_num}"
            if not values:
                continue
            n_rows += 1
            if len(values) != len(header):
                problems.add(f"{where}: expected {len(header)} columns, found {len(values)}")
                continue
            _check_caption_row(dict(zip(header, values)), where, path.parent, concepts, check_image, problems)
    if n_rows == 0:
        problems.add(f"{path}: empty (no caption rows)")
    return {"rows": n_rows, "images": check_image.count}


def _check_caption_row(row: Dict[str, str], where: str, folder: Path, concepts: Optional[set],
                       check_image: ImageChecker, problems: Problems) -> None:
    image = folder / row["filepath"]  # an absolute filepath replaces the folder
    bad = check_image(image)
    if bad:
        problems.add(f"{where}: filepath {row['filepath']!r}: {bad}")
    if not row["title"].strip():
        problems.add(f"{where}: title: empty caption")
    if "synthetic_caption" in row and not row["synthetic_caption"].strip():
        problems.add(f"{where}: synthetic_caption: empty caption")
    if "style" in row and row["style"] not in STYLES:
        problems.add(f"{where}: style: {row['style']!r} is not one of {', '.join(STYLES)}")
    if "noise" in row and row["noise"] not in NOISE:
        problems.add(f"{where}: noise: {row['noise']!r} is not one of {', '.join(NOISE)}")
    if "concepts" in row and concepts is not None:
        unknown = [c for c in row["concepts"].split() if c not in concepts]
        if unknown:
            problems.add(f"{where}: concepts: {', '.join(unknown)} not in concepts.json")
    if "parse" in row:
        msg = parse_problem(row["parse"])
        if msg:
            problems.add(f"{where}: parse: {msg}")


def parse_problem(text: str) -> Optional[str]:
    """What is wrong with a `parse` cell: a JSON list of [text, pos, dep, head], head an index
    into the list or -1 for the root (exactly one root when not empty)."""
    try:
        tokens = json.loads(text)
    except ValueError:
        return "expected a JSON list of [text, pos, dep, head]"
    if not isinstance(tokens, list):
        return "expected a JSON list of [text, pos, dep, head]"
    for k, tok in enumerate(tokens):
        ok = isinstance(tok, list) and len(tok) == 4 and all(isinstance(x, str) for x in tok[:3])
        if not ok or not isinstance(tok[3], int) or not -1 <= tok[3] < len(tokens):
            return f"token {k}: expected [text, pos, dep, head] with head in -1..{len(tokens) - 1}, got {tok!r}"
    roots = sum(1 for tok in tokens if tok[3] == -1)
    if tokens and roots != 1:
        return f"expected exactly one root token (head -1), found {roots}"
    return None
