"""The default teacher shipped inside the package, verified by hash, rebuilt when it cannot be used.

`pretrain/shipped/default_teacher/` is an open_clip `local-dir:` folder (config, safetensors
weights, fitted tokenizer) plus `manifest.json`: the hash of the resolved default recipe it was
trained from, the sha256 of every file, and the command that wrote it:

    python -m pretrain.shipped            # train the default recipe, then write the folder

`shipped_default_teacher(key)` returns the folder only when the manifest's recipe hash is `key`
(the recipe `ensure_default_teacher` would train) and every file's sha256 matches; otherwise it
says why in one line and returns None, and the caller trains the recipe into the cache instead.
Weights are read with safetensors only, so a tampered file can never run code; the hash check
catches a corrupted or stale one before open_clip reads it.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from clip_td.base.io import InputError, atomic_path, read_json, sha256_file, write_json_atomic


MANIFEST = "manifest.json"


def shipped_dir(name: str = "default_teacher") -> Path:
    """The package's folder of shipped model `name` (default_teacher, default_student)."""
    return Path(__file__).resolve().parent / "shipped" / name


def verify(folder: Path, key: str) -> Optional[str]:
    """None when `folder` holds the teacher of recipe `key` with every file intact; else the
    reason, naming the file and what was expected."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return f"{manifest_path}: not found"
    try:
        manifest = read_json(manifest_path)
        files: Dict[str, str] = dict(manifest["files"])
        built_from = str(manifest["recipe_hash"])
    except (InputError, KeyError, TypeError, ValueError) as e:
        return f"{manifest_path}: not a shipped-teacher manifest ({e})"
    if built_from != key:
        return (f"{manifest_path}: built from default recipe {built_from}, but the default recipe is now {key} "
                f"(rerun `python -m pretrain.shipped` to ship the new one)")
    if not files:
        return f"{manifest_path}: lists no files"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{path}: missing (listed in {MANIFEST})"
        actual = sha256_file(path)
        if actual != expected:
            return f"{path}: sha256 {actual} does not match {expected} recorded in {MANIFEST}"
    return None


def shipped_default_teacher(key: str, folder: Optional[Path] = None) -> Optional[Path]:
    """The shipped teacher folder if it verifies for recipe `key`; None (with one warning line
    saying why, when a shipped folder exists at all) otherwise."""
    return verified_copy(shipped_dir() if folder is None else Path(folder), key, "default teacher")


def verified_copy(folder: Path, key: str, what: str) -> Optional[Path]:
    """`folder` if it exists and verifies for recipe `key`; else None, with one warning line
    naming `what` and why when the folder exists."""
    if not folder.exists():
        return None
    problem = verify(folder, key)
    if problem is None:
        return folder
    print(f"warning: not using the shipped {what}: {problem}; training it instead", file=sys.stderr)
    return None


def write_shipped(source: Path, key: str, dest: Path, command: str, marker: str = "open_clip_config.json",
                  kind: str = "an open_clip local-dir folder") -> Path:
    """Copy the model folder `source` (`kind`, recognised by its file `marker`) to `dest` with
    its manifest, atomically."""
    source, dest = Path(source), Path(dest)
    names = sorted(p.name for p in source.iterdir() if p.is_file() and p.name != MANIFEST)
    if marker not in names:
        raise InputError(f"{source}: not {kind} (no {marker})")
    with atomic_path(dest) as tmp:
        tmp.mkdir(parents=True)
        for name in names:
            shutil.copyfile(source / name, tmp / name)
        write_json_atomic(tmp / MANIFEST, {
            "recipe_hash": key,
            "files": {name: sha256_file(tmp / name) for name in names},
            "command": command,
            "built_on": {"python": platform.python_version(), "machine": platform.machine(),
                         "torch": _torch_version()},
        })
    return dest


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """`python -m pretrain.shipped [--dest DIR]`: train the default recipe on the synthetic world
    (in the cache, as a first run would) and ship it."""
    from pretrain.default_teacher import recipe_hash, train_default_teacher

    p = argparse.ArgumentParser(description="Train the default teacher recipe and write the shipped copy")
    p.add_argument("--dest", default=str(shipped_dir()), help="folder to write (default: the package's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    key = recipe_hash(())
    with tempfile.TemporaryDirectory() as d:
        teacher = train_default_teacher(Path(d) / "run")
        dest = write_shipped(teacher, key, Path(args.dest), "python -m pretrain.shipped")
    print(f"wrote {dest} (default recipe {key})")
    return dest


if __name__ == "__main__":
    main()
