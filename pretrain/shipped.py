"""The default teacher shipped inside the package, verified by hash, rebuilt when it cannot be used.

`pretrain/shipped/default_teacher/` is an open_clip `local-dir:` folder (config, safetensors
weights, fitted tokenizer) plus `manifest.json`: the hash of the resolved default recipe it was
trained from, the sha256 of every file, and the command that wrote it:

    python -m pretrain.shipped            # train the default recipe, then write the folder
    python -m pretrain.shipped --recipe lit_scene_place   # a recipe teacher: pretrain/shipped/recipe_<name>/

`shipped_default_teacher(key)` returns the folder only when the manifest's recipe hash is `key`
(the recipe `ensure_default_teacher` would train) and every file's sha256 matches; otherwise it
says why in one line and returns None, and the caller trains the recipe into the cache instead.
A recipe teacher (`teacher.model=recipe:<name>`) is shipped the same way in
`pretrain/shipped/recipe_<name>/`; `shipped_recipe_teacher` checks it against the recipe's hash.
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
        command = manifest.get("command") or "python -m pretrain.shipped"
        return (f"{manifest_path}: built from recipe hash {built_from}, but the recipe's hash is now {key} "
                f"(rerun `{command}` to ship the new one)")
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


def recipe_dir(recipe: str) -> Path:
    """The package's folder of the shipped teacher of pretraining recipe `recipe` (one that
    `teacher.model=recipe:<recipe>` names), present only for the recipes that are shipped."""
    return shipped_dir(f"recipe_{recipe}")


def shipped_recipe_teacher(recipe: str, key: str) -> Optional[Path]:
    """The shipped teacher of `recipe` if it verifies for recipe hash `key`; else None (with one
    warning line when a shipped folder exists)."""
    return verified_copy(recipe_dir(recipe), key, f"{recipe} teacher")


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
    """`python -m pretrain.shipped [--recipe NAME] [--dest DIR]`: train the default recipe on the
    synthetic world (in the cache, as a first run would) and ship it; with `--recipe`, the teacher
    that `teacher.model=recipe:NAME` uses (trained once into the cache unless it is there) is
    shipped as `pretrain/shipped/recipe_NAME/`."""
    from pretrain.config import recipe_path
    from pretrain.default_teacher import ensure_recipe_teacher, recipe_hash, train_default_teacher

    p = argparse.ArgumentParser(description="Train the default teacher recipe and write the shipped copy")
    p.add_argument("--recipe", default=None, help="ship this recipe's teacher (configs/pretrain/<NAME>.yaml) "
                                                  "instead of the default teacher")
    p.add_argument("--dest", default=None, help="folder to write (default: the package's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.recipe is not None:
        recipe_path(args.recipe)  # an unknown recipe: one error naming the known ones
        key = recipe_hash((), args.recipe)
        dest = Path(args.dest) if args.dest else recipe_dir(args.recipe)
        teacher = ensure_recipe_teacher(args.recipe)
        with tempfile.TemporaryDirectory() as d:  # the source may be the folder being rewritten
            staged = Path(d) / "teacher"
            shutil.copytree(teacher, staged)
            write_shipped(staged, key, dest, f"python -m pretrain.shipped --recipe {args.recipe}")
        print(f"wrote {dest} (recipe {args.recipe}, {key})")
        return dest
    key = recipe_hash(())
    with tempfile.TemporaryDirectory() as d:
        teacher = train_default_teacher(Path(d) / "run")
        dest = write_shipped(teacher, key, Path(args.dest or shipped_dir()), "python -m pretrain.shipped")
    print(f"wrote {dest} (default recipe {key})")
    return dest


if __name__ == "__main__":
    main()
