"""Teacher cache: round trip equals the teacher, reuse without teacher calls, invalidation, shards."""

import threading
from pathlib import Path

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
    # as stored (the GPU path): the fp16 arrays as fp16, the same values; derived logits in fp32
    stored = cache.lookup(torch.tensor([6, 0, 3]), as_stored=True)
    assert stored["patch_tokens"].dtype == stored["token_feats"].dtype == torch.float16  # the token arrays are fp16
    assert got["patch_tokens"].dtype == torch.float32 and stored["cand_logits"].dtype == torch.float32
    for key, value in got.items():
        assert torch.equal(stored[key].to(value.dtype), value), key


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


def _copy_world(rows, folder):
    """The rows with their images copied under `folder` (a test may then overwrite them)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in rows:
        dst = folder / Path(r["image"]).name
        if not dst.exists():
            shutil.copy2(r["image"], dst)
        out.append({**r, "image": str(dst)})
    return out


def test_key_covers_teacher_texts_image_content_and_code_version(world, tmp_path, monkeypatch):
    import os

    import clip_td.lib.teacher_cache as tc

    _, base_rows, teacher_a, teacher_b = world
    rows = _copy_world(base_rows, tmp_path / "images")
    cache_dir = tmp_path / "cache"

    def build(teacher_dir=teacher_a, rs=rows):
        CountingTeacher.calls = 0
        cache = TeacherCache.build(_load(teacher_dir), teacher_texts, rs, cache_dir, batch_size=4)
        return cache, CountingTeacher.calls

    first, calls = build()
    assert calls > 0
    again, calls = build()  # nothing changed: reused, the teacher is not called at all
    assert calls == 0 and again.path == first.path
    moved, calls = build(rs=_copy_world(base_rows, tmp_path / "moved"))  # same bytes elsewhere: same cache
    assert calls == 0 and moved.path == first.path

    seen = {first.path}

    def assert_rebuilt(cache, calls):
        assert calls > 0 and cache.path not in seen
        seen.add(cache.path)

    assert_rebuilt(*build(teacher_dir=teacher_b))  # the teacher's weights
    texts = [dict(r) for r in rows]
    texts[5]["text"] = "a blue sphere"
    assert_rebuilt(*build(rs=texts))  # one row's teacher texts
    # one image overwritten with other pixels, its mtime put back: only the content differs
    path = Path(rows[1]["image"])
    stat = path.stat()
    pixels = np.asarray(Image.open(path)).copy()
    Image.fromarray(255 - pixels).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    new_image, calls = build()
    assert_rebuilt(new_image, calls)
    before, after = first.lookup([1])["patch_tokens"], new_image.lookup([1])["patch_tokens"]
    assert not torch.allclose(before, after)  # the stored values follow the new pixels
    torch.testing.assert_close(first.lookup([2])["text_embed"], new_image.lookup([2])["text_embed"])
    # the code version: the manual constant, and the digest of the extraction code
    monkeypatch.setattr(tc, "FEATURE_VERSION", tc.FEATURE_VERSION + 1)
    assert_rebuilt(*build())
    monkeypatch.undo()
    monkeypatch.setattr(tc, "_extraction_digest", lambda: "0" * 64)
    assert_rebuilt(*build())
    monkeypatch.undo()
    last, calls = build()  # back to the current image, teacher and code: the cache built just after the image change
    assert calls == 0 and last.path == new_image.path


def test_code_digest_follows_code_not_comments():
    """The derived code version ignores comments, docstrings and layout, not a change of code."""
    from clip_td.lib.teacher_cache import EXTRACTION_CODE, _extraction_digest, code_digest

    doc = "class T:\n    def f(self, x):\n        \"\"\"doc\"\"\"\n        return x + 1\n"
    comment = "class T:\n    def f(self, x):\n        # a comment\n\n        return x+1\n\n    def g(self):\n        pass\n"
    changed = "class T:\n    def f(self, x):\n        return x + 2\n"
    digests = [code_digest(src, ["T.f"]) for src in (doc, comment, changed)]
    assert digests[0] == digests[1] != digests[2]
    assert code_digest(changed, ["T.h"]) != code_digest(changed, ["T.f"])  # a renamed definition counts too
    import importlib
    import inspect

    for module, names in EXTRACTION_CODE.items():  # every listed definition exists
        source = inspect.getsource(importlib.import_module(module))
        for name in names:
            assert code_digest(source, [name]) != code_digest("", [name]), name
    assert len(_extraction_digest()) == 64


def test_shared_candidate_list_is_computed_on_open_not_keyed(world, tmp_path):
    """VQA's candidates are one answer vocabulary (built from the low-shot rows): the split's cache
    does not depend on it; each run's logits over its own vocabulary and its gold come on open."""
    _, rows, teacher_a, _ = world
    vocab_a = [f"answer {i}" for i in range(20)]
    vocab_b = vocab_a[:7] + ["something else"] + vocab_a[8:]

    def texts_for(vocab):
        return lambda row: (row["text"], vocab, row["label"] if row["label"] < 2 else -1)

    first = TeacherCache.build(_load(teacher_a), texts_for(vocab_a), rows, tmp_path, batch_size=4)
    CountingTeacher.calls = 0
    other = TeacherCache.build(_load(teacher_a), texts_for(vocab_b), rows, tmp_path, batch_size=4)
    assert other.path == first.path and CountingTeacher.calls == 1  # one call: the new vocabulary's texts
    CountingTeacher.calls = 0
    TeacherCache.build(_load(teacher_a), texts_for(vocab_b), rows, tmp_path, batch_size=4)
    assert CountingTeacher.calls == 0  # the vocabulary's embeddings are kept beside the arrays
    teacher = _load(teacher_a)
    transform = teacher.image_transform()
    pixels = torch.stack([transform(Image.open(r["image"]).convert("RGB")) for r in rows])
    for cache, vocab in ((first, vocab_a), (other, vocab_b)):
        ref = teacher_outputs(teacher, pixels, [r["text"] for r in rows], [vocab] * len(rows),
                              [texts_for(vocab)(r)[2] for r in rows])
        got = cache.lookup(torch.arange(len(rows)))
        torch.testing.assert_close(got["cand_logits"], ref["cand_logits"], atol=1e-4, rtol=1e-5)
        assert got["gold"].tolist() == [0, 1, -1, 0, 1, -1, 0] == ref["gold"].tolist()
    assert not torch.allclose(first.lookup([0])["cand_logits"][:, 7], other.lookup([0])["cand_logits"][:, 7])


def test_recurring_candidate_lists_are_encoded_on_lookup(world, tmp_path):
    """VQA's question-conditioned candidates: one list object per question, recurring across rows.
    The split's cache is the one the shared vocabulary uses (no per-row logits stored), and each
    list is encoded once, when a looked-up row first needs it; the logits equal the live teacher's."""
    _, rows, teacher_a, _ = world
    vocab = [f"answer {i}" for i in range(5)]
    lists = {q: [f"{q} {a}" for a in vocab] for q in ("what colour", "how many")}

    def texts(row):
        return row["text"], lists["what colour" if row["label"] else "how many"], row["label"] - 1

    shared = TeacherCache.build(_load(teacher_a), lambda r: (r["text"], vocab, 0), rows, tmp_path, batch_size=4)
    teacher = _load(teacher_a)
    CountingTeacher.calls = 0
    cache = TeacherCache.build(teacher, texts, rows, tmp_path, batch_size=4)
    assert cache.path == shared.path and CountingTeacher.calls == 0  # same arrays; nothing encoded yet
    assert "cand_logits" not in cache.shards[0]
    got = cache.lookup(torch.tensor([0, 3, 6]))  # labels 0, 0, 0: one list ("how many")
    assert CountingTeacher.calls == 1
    got_all = cache.lookup(torch.arange(len(rows)))
    assert CountingTeacher.calls == 2  # the second list, once
    transform = teacher.image_transform()
    pixels = torch.stack([transform(Image.open(r["image"]).convert("RGB")) for r in rows])
    ref = teacher_outputs(teacher, pixels, *zip(*[texts(r) for r in rows]))
    torch.testing.assert_close(got_all["cand_logits"], ref["cand_logits"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got["cand_logits"], ref["cand_logits"][[0, 3, 6]], atol=1e-4, rtol=1e-5)
    assert got_all["gold"].tolist() == [r["label"] - 1 for r in rows]
    # rows with lists of their own (SNLI-VE, VCR) keep the logits stored per row ...
    own = TeacherCache.build(_load(teacher_a), lambda r: (r["text"], list(vocab), 0), rows, tmp_path, batch_size=4)
    assert own.path != shared.path and "cand_logits" in own.shards[0]
    # ... unless they depend on the run (VQA: every question asked once): encoded on lookup
    run = TeacherCache.build(_load(teacher_a), lambda r: (r["text"], [f"{r['text']} {a}" for a in vocab], 0), rows,
                             tmp_path, batch_size=4, run_candidates=True)
    assert run.path == shared.path and run.lookup([1, 2])["cand_logits"].shape == (2, len(vocab))


def test_an_incomplete_cache_folder_is_never_read(world, tmp_path):
    from clip_td.base.io import InputError

    _, rows, teacher_a, _ = world
    first = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path, batch_size=4)
    (first.path / "shard-0-of-1" / "token_feats.npy").unlink()  # e.g. a copy cut short
    with pytest.raises(InputError, match="not a complete teacher cache"):
        TeacherCache(first.path)
    CountingTeacher.calls = 0
    again = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path, batch_size=4)
    assert CountingTeacher.calls > 0 and again.path == first.path  # rebuilt in place, complete
    assert len(again.lookup(torch.arange(7))["token_feats"]) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, f".{first.path.name}.lock"])


def test_one_cache_serves_every_selector(world, tmp_path):
    """CLS attention is stored whenever the teacher has it, so cls_attention_topk reads the same cache."""
    _, rows, teacher_a, _ = world
    plain = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path, batch_size=4)
    CountingTeacher.calls = 0
    with_att = TeacherCache.build(_load(teacher_a), teacher_texts, rows, tmp_path, batch_size=4, cls_attention=True)
    assert with_att.path == plain.path and CountingTeacher.calls == 0
    assert "cls_attention" not in plain.lookup([0, 1])
    teacher = _load(teacher_a)
    pixels = teacher.image_transform()(Image.open(rows[3]["image"]).convert("RGB")).unsqueeze(0)
    ref = teacher.encode_images(pixels, cls_attention=True)["cls_attention"]
    torch.testing.assert_close(with_att.lookup([3])["cls_attention"], ref, atol=2e-3, rtol=2e-3)
