"""Small file helpers shared by every package: atomic writes and clear input errors."""

from __future__ import annotations

import hashlib

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


class InputError(ValueError):
    """A problem with user-supplied input (file, line, key); the message says what was expected."""


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `path` only if the block succeeds.

    Works for files and directories: whatever the block creates at the yielded path
    replaces `path` in one rename, so a crash never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: PathLike, obj: Any, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json(path: PathLike) -> Any:
    """Read a JSON file; a parse error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, object) for each non-empty line; a bad line names file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON line ({e.msg})") from None


def cache_root() -> Path:
    """Where built data, teachers and teacher caches live: `$CLIP_TD_CACHE`, else `~/.cache/clip_td`."""
    import os

    return Path(os.environ.get("CLIP_TD_CACHE") or Path.home() / ".cache" / "clip_td")


def cpu_model(cpuinfo: PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (the first `model name` line of /proc/cpuinfo), else what `platform`
    knows of it (the processor, else the machine type), else "unknown"."""
    import platform
    import re

    try:
        found = re.search(r"^model name\s*:\s*(.+?)\s*$", Path(cpuinfo).read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else (platform.processor() or platform.machine() or "unknown")


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
