"""Teacher cache under concurrency and crashes: two jobs building one key at once, a builder
killed mid-way, a crash just before the cache is put in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clip_td.lib.teacher_cache as tc
from clip_td.lib.teacher import FrozenTeacher
from clip_td.lib.teacher_cache import TeacherCache
from clip_td.testing.tiny_checkpoints import save_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]

# One builder process: waits for the `go` file, builds, prints what it got. `delay` slows every
# image batch (so a second builder arrives mid-build); `marker` makes it announce the second image
# batch and then hang there (so the test can SIGKILL it while it writes its shard).
CHILD = r"""
import hashlib, json, os, sys, time
import torch
from clip_td.lib.teacher import FrozenTeacher
from clip_td.lib.teacher_cache import TeacherCache

args = json.loads(sys.argv[1])
real = FrozenTeacher.encode_images
calls = {"n": 0}

def encode_images(self, *a, **kw):
    calls["n"] += 1
    if args.get("marker") and calls["n"] == 2:
        open(args["marker"], "w").close()
        time.sleep(600)
    time.sleep(args.get("delay", 0.0))
    return real(self, *a, **kw)

FrozenTeacher.encode_images = encode_images
teacher = FrozenTeacher.from_name("local-dir:" + args["teacher"])
rows = json.loads(open(args["rows"]).read())
while args.get("go") and not os.path.exists(args["go"]):
    time.sleep(0.01)
texts = lambda r: (r["text"], [f"{t} {r['text']}" for t in ("yes", "no", "maybe")], r["label"])
cache = TeacherCache.build(teacher, texts, rows, args["root"], batch_size=1)
out = cache.lookup(torch.arange(len(rows)))
digest = hashlib.sha256(b"".join(out[k].numpy().tobytes() for k in sorted(out))).hexdigest()
print(json.dumps({"path": str(cache.path), "image_calls": calls["n"], "digest": digest}))
"""


def texts(row):
    """The children's teacher texts (kept free of the `tasks` imports so they start quickly)."""
    return row["text"], [f"{t} {row['text']}" for t in ("yes", "no", "maybe")], row["label"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_conc")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        path = root / f"img{i}.png"
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(path)
        rows.append({"image": str(path), "text": f"a small cube number {i}", "label": i % 3})
    (root / "rows.json").write_text(json.dumps(rows))
    return root, rows, save_tiny_teacher(root / "teacher")


def _spawn(world, cache_root: Path, **extra) -> subprocess.Popen:
    root, _, teacher = world
    args = {"teacher": str(teacher), "rows": str(root / "rows.json"), "root": str(cache_root), **extra}
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reference(world, where: Path) -> dict:
    _, rows, teacher = world
    cache = TeacherCache.build(FrozenTeacher.from_name(f"local-dir:{teacher}"), texts, rows, where, batch_size=1)
    return cache.lookup(torch.arange(len(rows)))


def test_two_jobs_building_one_key_at_once_get_one_identical_cache(world, tmp_path):
    cache_root, go = tmp_path / "cache", tmp_path / "go"
    procs = [_spawn(world, cache_root, go=str(go), delay=0.3) for _ in range(2)]
    time.sleep(0.5)
    go.touch()  # both start building at the same moment
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["path"] == results[1]["path"] and results[0]["digest"] == results[1]["digest"]
    # one built it (6 images, one per batch); the other waited for the lock, then only read
    assert sorted(r["image_calls"] for r in results) == [0, 6]
    key = Path(results[0]["path"]).name
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([key, f".{key}.lock"])  # nothing stray
    cache = TeacherCache(results[0]["path"])  # opened plainly: what is stored (no per-run gold)
    assert len(cache) == 6 and not list(cache.path.rglob("*.tmp"))
    ref = _reference(world, tmp_path / "ref")
    got = cache.lookup(torch.arange(6))
    assert set(got) == set(ref) - {"gold"} | {"cls_attention"}
    for k in set(got) & set(ref):
        torch.testing.assert_close(got[k], ref[k], msg=k)


def test_a_builder_killed_mid_way_leaves_no_cache_and_the_next_build_succeeds(world, tmp_path):
    cache_root, marker = tmp_path / "cache", tmp_path / "writing"
    proc = _spawn(world, cache_root, marker=str(marker))
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the builder never reached its second image batch"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of writing its shard, holding the lock
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = list(cache_root.iterdir())
    assert not [p for p in left if (p / "manifest.json").exists()]  # nothing looks like a cache
    assert [p for p in cache_root.glob(".*.partial-w1/.shard-*.tmp")]  # the half-written shard is really there
    # the kernel released the dead builder's lock: a new build runs, clears the leftovers, succeeds
    _, rows, teacher = world
    cache = TeacherCache.build(FrozenTeacher.from_name(f"local-dir:{teacher}"), texts, rows, cache_root,
                               batch_size=1)
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([cache.path.name, f".{cache.path.name}.lock"])
    ref = _reference(world, tmp_path / "ref")
    got = cache.lookup(torch.arange(6))
    for k in got:
        torch.testing.assert_close(got[k], ref[k], msg=k)


def test_a_crash_before_the_final_rename_leaves_no_cache_and_finished_shards_are_reused(world, tmp_path, monkeypatch):
    _, rows, teacher_dir = world
    teacher = FrozenTeacher.from_name(f"local-dir:{teacher_dir}")

    def crash(src, dst):
        raise KeyboardInterrupt("killed just before the rename")

    monkeypatch.setattr(tc.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        TeacherCache.build(teacher, texts, rows, tmp_path, batch_size=2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []  # no cache folder
    work = next(tmp_path.glob(".*.partial-w1"))
    assert (work / "manifest.json").is_file()  # the crash came after the manifest, before the rename
    calls = {"n": 0}
    real = FrozenTeacher.encode_images
    monkeypatch.setattr(FrozenTeacher, "encode_images",
                        lambda self, *a, **kw: calls.__setitem__("n", calls["n"] + 1) or real(self, *a, **kw))
    cache = TeacherCache.build(teacher, texts, rows, tmp_path, batch_size=2)
    assert calls["n"] == 0 and len(cache) == 6  # the finished shard was put in place, not re-encoded
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache.path.name, f".{cache.path.name}.lock"])
