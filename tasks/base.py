"""What every task shares: the TASKS registry, the Task base class, the problem collector
that lets one scanning routine serve both loaders (raise on the first problem) and
`clip-td data check` (collect every problem), and image / path-config helpers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from clip_td.base.io import InputError
from clip_td.base.registry import Registry

TASKS = Registry("task")

PathLike = Union[str, Path]


class Problems:
    """Collects user-facing problems; in strict mode the first one raises `InputError`.

    Loaders scan with `strict=True` (fail fast, one clear message); `data check` scans with
    `strict=False` and reports the whole list.
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: List[str] = []

    def add(self, msg: str) -> None:
        if self.strict:
            raise InputError(msg)
        self.items.append(msg)

    def __len__(self) -> int:
        return len(self.items)


def image_problem(path: Path, decode: bool) -> Optional[str]:
    """None if the image exists (and, with `decode`, decodes with PIL); else what is wrong."""
    if not path.is_file():
        return "image file not found"
    if not decode:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode; `verify()` misses truncated pixel data
    except Exception as e:  # PIL raises many types for bad files
        return f"image does not decode ({type(e).__name__}: {e})"
    return None


class ImageChecker:
    """Checks each distinct image once (VQA has several questions per image)."""

    def __init__(self, decode: bool) -> None:
        self.decode = decode
        self._seen: Dict[Path, Optional[str]] = {}

    def __call__(self, path: Path) -> Optional[str]:
        if path not in self._seen:
            self._seen[path] = image_problem(path, self.decode)
        return self._seen[path]

    @property
    def count(self) -> int:
        return len(self._seen)


def make_paths(cls: type, paths: Union[None, Mapping[str, Any], Any]) -> Any:
    """Build a task's path dataclass from None (defaults), an instance or a mapping of overrides."""
    if paths is None:
        return cls()
    if isinstance(paths, cls):
        return paths
    if not isinstance(paths, Mapping):
        # OmegaConf DictConfig and other mappings-with-attributes
        paths = dict(paths)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in paths:
        if key not in known:
            raise InputError(f"unknown {cls.__name__} key {key!r}; expected one of: {', '.join(sorted(known))}")
    return cls(**{k: (dict(v) if k == "split_names" else v) for k, v in paths.items()})


def attach_source(info_obj: Dict[str, Any], features: Any = None) -> Any:
    """A datasets.DatasetInfo carrying where the rows came from (survives `select`/`filter`)."""
    import datasets

    return datasets.DatasetInfo(description=json.dumps(info_obj), features=features)


def read_source(ds: Any) -> Dict[str, Any]:
    """The source record `attach_source` stored on a dataset built by a task loader."""
    try:
        return json.loads(ds.info.description)
    except (AttributeError, TypeError, ValueError):
        raise InputError("dataset has no source record; expected a dataset returned by task.load()") from None


class Task:
    """The Task API of docs/internals.md. Subclasses set the class attributes and implement
    `scan`, `write_predictions` and `score_files`."""

    name: str = ""
    label_key: str = ""
    metric_names: Sequence[str] = ()

    def load(self, root: PathLike, split: str) -> Any:
        """Rows of `split` under `root` as a datasets.Dataset (image = absolute path string)."""
        raise NotImplementedError

    def splits_found(self, root: PathLike) -> List[str]:
        """Split names whose files exist under `root` (used by data check)."""
        raise NotImplementedError

    def scan(self, root: PathLike, split: str, problems: Problems, decode_images: bool) -> List[Dict[str, Any]]:
        """Parse and validate one split; report problems to `problems`; return the good rows."""
        raise NotImplementedError

    def write_predictions(self, ds: Any, preds: Sequence[Any], out_dir: PathLike, split: str) -> Dict[str, str]:
        raise NotImplementedError

    def score_files(self, files: Mapping[str, str]) -> Dict[str, float]:
        raise NotImplementedError


def rows_to_dataset(rows: List[Dict[str, Any]], features: Any, source: Dict[str, Any]) -> Any:
    """Rows -> in-memory Arrow datasets.Dataset with fixed features and a source record."""
    import datasets

    return datasets.Dataset.from_list(rows, features=features, info=attach_source(source, features))


def check_count(ds_len: int, path: PathLike, problems: Problems) -> None:
    if ds_len == 0:
        problems.add(f"{path}: empty split (no instances)")


def splits_from_template(root: PathLike, template: str) -> List[str]:
    """Split names whose file exists under root, for a file name template with `{split}`."""
    import re

    if "{split}" not in template:
        return []
    pattern = re.compile("^" + re.escape(template).replace(re.escape("{split}"), "(.+)") + "$")
    found = []
    for p in sorted(Path(root).glob(template.replace("{split}", "*"))):
        m = pattern.match(p.relative_to(root).as_posix())
        if m and p.is_file():
            found.append(m.group(1))
    return found


def write_jsonl_subset(src: PathLike, key: str, keep: Sequence[Any], dest: Path) -> Path:
    """Copy the lines of annotation file `src` whose `key` is in `keep` to `dest` (atomically),
    so predictions on a subset of a split are scored against exactly that subset."""
    from clip_td.base.io import write_text_atomic

    wanted = {str(k) for k in keep}
    with open(src, encoding="utf-8") as f:
        subset = [ln for ln in f if ln.strip() and str(json.loads(ln)[key]) in wanted]
    write_text_atomic(dest, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in subset))
    return dest
