"""Teacher cache: round trip equals the teacher, reuse without teacher calls, invalidation, shards."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from clip_td.lib.teacher_cache import TeacherCache, teacher_outputs
from tasks.snli_ve.task import TEACHER_TEMPLATES as SNLI_TEMPLATES
from clip_td.lib.teacher import FrozenTeacher
from clip_td.testing.tiny_checkpoints import save_tiny_teacher


def teacher_texts(row):
    """SNLI-VE's teacher texts (the registered task's own)."""
    from tasks import get_task

    return get_task("snli_ve").teacher_texts(row)


class CountingTeacher(FrozenTeacher):
    """The tiny teacher, counting image and text encoder calls."""

    calls = 0

    def encode_images(self, *a, **kw):
        CountingTeacher.calls += 1
        return super().encode_images(*a, **kw)

    def encode_texts(self, *a, **kw):
        CountingTeacher.calls += 1
        return super().encode_texts(*a, **kw)


def _load(path):
    t = FrozenTeacher.from_name(f"local-dir:{path}")
    t.__class__ = CountingTeacher
    return t


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        path = root / f"img{i % 4}.png"  # 4 images shared by 7 rows
        if not path.exists():
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(path)
        rows.append({"image": str(path), "text": f"a red cube number {i}" + " big" * i, "label": i % 3})
    return root, rows, save_tiny_teacher(root / "teacher_a"), save_tiny_teacher(root / "teacher_b", seed=1)


def test_round_trip_equals_teacher(world, tmp_path):
    root, rows, teacher_a, _ = world
    teacher = _load(teacher_a)
    cache = TeacherCache.build(teacher, teacher_texts, rows, tmp_path, batch_size=3, indices=[0, 2, 3, 4, 5, 6])
    assert len(cache) == 6 and cache.shards[0]["patch_tokens"].shape[0] == 4  # unique images stored once
    assert cache.shards[0]["patch_tokens"].dtype == np.float16
    got = cache.lookup(torch.tensor([6, 0, 3]))
    transform = teacher.image_transform()
    pixels = torch.stack([transform(Image.open(rows[i]["image"]).convert("RGB")) for i in (6, 0, 3)])
    texts = [teacher_texts(rows[i]) for i in (6, 0, 3)]
    ref = teacher_outputs(teacher, pixels, *zip(*texts))
    assert set(got) == set(ref)
    for key, value in got.items():
        want = ref[key][:, : value.shape[1]] if key.startswith("token_") else ref[key]
        assert value.shape == want.shape, key
        tol = 2e-3 if key in ("patch_tokens", "token_feats") else 1e-5
        torch.testing.assert_close(value.float(), want.float(), atol=tol, rtol=tol, msg=key)
    assert got["token_mask"].sum(1).tolist() == [5 + 6, 5, 5 + 3]  # "a red cube number 6" + " big" * 6
    assert got["gold"].tolist() == [0, 0, 0] and got["cand_logits"].shape == (3, len(SNLI_TEMPLATES))
    with pytest.raises(KeyError, match="no entry for row indices"):
        cache.lookup([1])


def test_reuse_and_invalidation(world, tmp_path):
    root, rows, teacher_a, teacher_b = world
    teacher = _load(teacher_a)
    CountingTeacher.calls = 0
    first = TeacherCache.build(teacher, teacher_texts, rows, tmp_path, batch_size=4)
    assert CountingTeacher.calls > 0
    CountingTeacher.calls = 0
    again = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path, batch_size=4)
    assert CountingTeacher.calls == 0 and again.path == first.path  # second build: no teacher call
    other = TeacherCache.build(_load(teacher_b), teacher_texts, rows, tmp_path, batch_size=4)
    assert CountingTeacher.calls > 0 and other.path != first.path  # teacher changed -> rebuilt
    changed = [dict(r) for r in rows]
    changed[2]["text"] = "a blue sphere"
    data = TeacherCache.build(_load(teacher_a), teacher_texts, changed, tmp_path, batch_size=4)
    assert data.path != first.path  # data changed -> rebuilt
    assert not any(p.name.endswith(".tmp") or ".partial" in p.name for p in tmp_path.iterdir())


def test_sharded_build_matches_single_process(world, tmp_path):
    root, rows, teacher_a, _ = world
    barrier = threading.Barrier(2)
    caches = {}

    def run(rank):
        caches[rank] = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path / "multi", batch_size=2,
                                          process_index=rank, num_processes=2, barrier=barrier.wait)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    single = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path / "single", batch_size=5)
    assert len(caches[0].shards) == 2 and caches[0].path == caches[1].path
    idx = torch.arange(7)
    a, b = caches[1].lookup(idx), single.lookup(idx)
    for key in b:  # batch composition differs, so fp16 entries may differ by one rounding step
        tol = 2e-3 if key in ("patch_tokens", "token_feats") else 1e-5
        torch.testing.assert_close(a[key], b[key], atol=tol, rtol=tol, msg=lambda m: f"{key}: {m}")
