"""Teacher-output cache: one per (dataset split, teacher), built once and read by every fraction,
seed, method and epoch that trains on that split.

    cache = TeacherCache.build(teacher, task.teacher_texts, full_train, cache_root, name="vqa-train",
                               process_index=acc.process_index, num_processes=acc.num_processes,
                               barrier=acc.wait_for_everyone)
    teacher_out = cache.lookup(batch["index"])      # split indices -> same keys as `teacher_outputs(...)`

Stored (memory-mapped `.npy`, token features in fp16, so a VQA-size cache need not fit in RAM):
per unique image `patch_tokens`, `image_embed` and `cls_attention` (whenever the teacher's last
block is nn.MultiheadAttention, so every selector reads the same cache); per row the task text's
`text_embed`, `token_feats`, `token_mask`, `token_offsets`, and `cand_logits` when every row has its
own candidate list (SNLI-VE, VCR). Nothing that depends on the run is stored: the gold indices, and
the logits over a candidate list shared by every row (VQA's answer vocabulary, built from the
low-shot rows) are computed when the cache is opened (that list's embeddings are kept beside the
arrays in `candidates-<hash>.npy`, so a reuse calls the teacher not at all).

The key (folder `<root>/<name>-<hash>`) hashes everything the stored values depend on:
  * the teacher's fingerprint (its config and every weight);
  * `code_version()`: CACHE_VERSION (layout), FEATURE_VERSION (bump by hand for a change the hashed
    sources do not show), a digest of the source (its AST: comments and docstrings ignored) of every
    function that computes stored values (`EXTRACTION_CODE`), and the open_clip version;
  * per cached row: its split index, the sha256 of its image file's bytes (the content: neither the
    path nor the mtime), its task text, and its candidate texts when those are stored per row.

Concurrent builders and crashes: builders of one key serialise on `<root>/.<key>.lock` (fcntl.flock,
as `pretrain.default_teacher` does; the kernel releases it when a builder dies). The holder (process 0
of a multi-process job) clears what dead builders left, then each of the job's W processes writes its
shard (rows r, r+W, ...) atomically into `<root>/.<key>.partial-w<W>/`; process 0 writes the manifest
last and renames the folder to `<root>/<key>` in one step, then lets the lock go. A job that waited
finds the complete cache and reads it. Only a folder whose manifest names shards and arrays that all
exist is taken as a cache, so a crash at any point leaves either no cache or a complete one (the next
builder reuses the finished shards of a killed build). Images shared by several rows (VQA: ~5
questions per image) are encoded and stored once per shard.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from clip_td.base.io import InputError, PathLike, atomic_path, sha256_file, write_json_atomic

CACHE_VERSION = 2  # on-disk layout (2: one cache per split; gold and shared-list logits computed on open)
FEATURE_VERSION = 1  # bump when stored values change for a reason the hashed sources (EXTRACTION_CODE) miss
IMAGE_ARRAYS = ("patch_tokens", "image_embed", "cls_attention")  # stored per unique image
ROW_ARRAYS = ("text_embed", "token_feats", "token_mask", "token_offsets", "cand_logits")
FP16 = {"patch_tokens", "token_feats", "cls_attention"}


# ---- computing teacher outputs (shared by the cache and the live teacher) ---------------------


def candidate_groups(lists: Sequence[List[str]], always: bool = False) -> Optional[tuple]:
    """(distinct lists, (N,) index of each row's list) when the rows' candidate lists recur -- the
    same list object for several rows: VQA's answer vocabulary (one list), or its question-conditioned
    candidates (one list per question) -- at most one distinct list per two rows; None when most rows
    have their own list (SNLI-VE, VCR: their logits are then stored per row), unless `always`
    (candidates that depend on the run, such as VQA's vocabulary, are never stored)."""
    seen: Dict[int, int] = {}
    distinct: List[List[str]] = []
    group = np.empty(len(lists), dtype=np.int64)
    for n, cands in enumerate(lists):
        g = seen.get(id(cands))
        if g is None:
            g = seen[id(cands)] = len(distinct)
            distinct.append(cands)
        group[n] = g
    if not always and len(distinct) > 1 and 2 * len(distinct) > len(lists):
        return None
    if len({len(c) for c in distinct}) > 1:
        raise InputError(f"candidate lists of {sorted({len(c) for c in distinct})} lengths; every row needs the same "
                         f"number of candidates")
    return distinct, group


class CandidateEncoder:
    """Candidate text embeddings, memoised when the same list recurs (VQA's answer vocabulary, or
    its question-conditioned candidates, one list object per question)."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher
        self._memo: Dict[int, tuple] = {}

    def encode(self, candidates: List[str]) -> torch.Tensor:
        """C strings -> (C, d) L2-normalised embeddings, not memoised."""
        return self.teacher.encode_texts(candidates, with_tokens=False)["text_embed"]

    def __call__(self, candidates: List[str]) -> torch.Tensor:
        """C strings -> (C, d) L2-normalised embeddings."""
        key = id(candidates)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1]
        emb = self.encode(candidates)
        if len(candidates) > 16:  # long lists are the shared vocabulary; per-row lists are short
            self._memo[key] = (candidates, emb)
        return emb


@torch.no_grad()
def encode_task_texts(teacher: Any, texts: Sequence[str], token_len: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """The teacher's view of B task texts: text_embed (B, d), token_feats (B, Nt, d) zeroed
    outside content tokens (so outputs do not depend on padding length), token_mask (B, Nt),
    token_offsets (B, Nt, 2) character spans of content tokens (-1 elsewhere). `token_len`
    cuts or zero-pads the token axis to that length."""
    txt = teacher.encode_texts(list(texts))
    feats = txt["token_feats"] * txt["token_mask"].unsqueeze(-1)
    mask = txt["token_mask"]
    nt = mask.shape[1] if token_len is None else token_len
    if nt != mask.shape[1]:
        n = min(nt, mask.shape[1])
        feats = torch.nn.functional.pad(feats[:, :n], (0, 0, 0, nt - n))
        mask = torch.nn.functional.pad(mask[:, :n], (0, nt - n))
    offsets = torch.full((len(texts), nt, 2), -1, dtype=torch.long)
    for i, spans in enumerate(txt["offsets"]):
        if spans:  # content tokens sit right after the start token, in order
            offsets[i, 1:1 + len(spans)] = torch.tensor(spans, dtype=torch.long)[: nt - 1]
    return {"text_embed": txt["text_embed"], "token_feats": feats, "token_mask": mask,
            "token_offsets": offsets.to(feats.device)}


def candidate_logits(teacher: Any, image_embed: torch.Tensor, candidates: Sequence[List[str]],
                     encoder: CandidateEncoder) -> torch.Tensor:
    """logit_scale * cos(image, candidate) for each row's candidate list. image_embed (B, d),
    B lists of C strings -> (B, C)."""
    emb = image_embed.to(teacher.device)
    return teacher.logit_scale * torch.stack([emb[i] @ encoder(c).T for i, c in enumerate(candidates)])


@torch.no_grad()
def teacher_outputs(teacher: Any, pixels: torch.Tensor, task_texts: Sequence[str],
                    candidates: Sequence[List[str]], gold: Sequence[int], cls_attention: bool = False,
                    candidate_encoder: Optional[CandidateEncoder] = None) -> Dict[str, Any]:
    """Everything the distiller reads, for a batch, straight from the teacher.

    pixels (B, 3, S, S) teacher-normalised; B task texts; B candidate lists of equal length C;
    B gold indices. -> patch_tokens (B, Nv, d), image_embed (B, d), text_embed (B, d),
    token_feats (B, Nt, d), token_mask (B, Nt), token_offsets (B, Nt, 2), cand_logits (B, C)
    (= logit_scale * cos), gold (B,) [, cls_attention (B, Nv)].
    """
    if candidate_encoder is None:  # one per teacher, so a shared vocabulary is encoded once per run
        if getattr(teacher, "_candidate_encoder", None) is None:
            teacher._candidate_encoder = CandidateEncoder(teacher)
        candidate_encoder = teacher._candidate_encoder
    img = teacher.encode_images(pixels, cls_attention=cls_attention)
    return {**img, **encode_task_texts(teacher, task_texts),
            "cand_logits": candidate_logits(teacher, img["image_embed"], candidates, candidate_encoder),
            "gold": torch.tensor(list(gold), dtype=torch.long)}


# ---- the key -----------------------------------------------------------------------------------


#: The definitions whose code decides a stored value, by module: hashed into `code_version`.
EXTRACTION_CODE = {
    "clip_td.lib.teacher_cache": ("CandidateEncoder", "encode_task_texts", "candidate_logits", "_load_image",
                                  "_build_shard", "_supports_cls_attention"),
    "clip_td.lib.teacher": ("FrozenTeacher.encode_images", "FrozenTeacher.encode_texts", "FrozenTeacher._text_tower",
                            "FrozenTeacher._content_mask", "FrozenTeacher.image_transform", "FrozenTeacher.tokenize",
                            "FrozenTeacher.logit_scale", "_attach_cls_attention_hook", "token_offsets",
                            "_special_ids", "_project", "_preprocess_settings", "_is_resnet",
                            "_resnet_pool_and_tokens", "_resnet_trunk", "_attach_last_input_hook",
                            "_vit_value_tokens", "FrozenTeacher.grid_size"),
}


def code_digest(source: str, names: Sequence[str]) -> str:
    """sha256 of the named definitions (`f`, `Class.method`) in a module's source text, as ASTs:
    comments, docstrings and layout do not count; a name not found counts as such."""
    tree = ast.parse(source)
    h = hashlib.sha256()
    for name in names:
        scope: Any = tree
        for part in name.split("."):
            scope = next((n for n in getattr(scope, "body", []) if getattr(n, "name", None) == part), None)
        if scope is None:
            h.update(f"missing {name}".encode())
            continue
        for node in ast.walk(scope):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(name.encode() + ast.dump(scope).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _extraction_digest() -> str:
    """Digest of EXTRACTION_CODE read from the module files (not the live objects, which a test
    may have patched); a module without source counts by its name only."""
    import importlib

    h = hashlib.sha256()
    for module, names in EXTRACTION_CODE.items():
        try:
            source = inspect.getsource(importlib.import_module(module))
        except (OSError, TypeError):
            source = ""
        h.update(module.encode() + code_digest(source, names).encode())
    return h.hexdigest()


def code_version() -> str:
    """Version of the feature extraction: layout + manual version + source digest + open_clip."""
    import open_clip

    return f"{CACHE_VERSION}.{FEATURE_VERSION}.{_extraction_digest()[:16]}.open_clip-{open_clip.__version__}"


def _file_digest(path: str) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({e.strerror or e})") from None


def image_digests(paths: Sequence[str]) -> Dict[str, str]:
    """path -> sha256 of the file's bytes, for each distinct path (read on a few threads)."""
    unique = sorted(set(paths))
    if len(unique) < 64:
        return {p: _file_digest(p) for p in unique}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(unique, pool.map(_file_digest, unique)))


def content_hash(indices: Sequence[int], image_hashes: Sequence[str], texts: Sequence[tuple],
                 shared_candidates: bool) -> str:
    """sha256 of every cached row's (split index, image content hash, task text, candidate texts
    when stored per row). The gold index is not stored, so it is not hashed."""
    h = hashlib.sha256(json.dumps({"shared_candidates": shared_candidates}).encode())
    seen: Dict[int, str] = {}
    for i, image, (text, cands, _gold) in zip(indices, image_hashes, texts):
        cand = None
        if not shared_candidates:
            if id(cands) not in seen:
                seen[id(cands)] = hashlib.sha256(json.dumps(list(cands)).encode()).hexdigest()
            cand = seen[id(cands)]
        h.update(json.dumps([int(i), image, text, cand]).encode())
    return h.hexdigest()


def cache_key(name: str, teacher_fp: str, data_hash: str) -> str:
    text = json.dumps([code_version(), teacher_fp, name, data_hash])
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _load_image(path: str, transform: Callable) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return transform(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read image ({e})") from None


def _supports_cls_attention(teacher: Any) -> bool:
    """Whether the teacher can give its last block's CLS attention (nn.MultiheadAttention)."""
    from clip_td.lib.teacher import _attach_cls_attention_hook

    visual = getattr(getattr(teacher, "model", None), "visual", None)
    try:
        _attach_cls_attention_hook(visual, {}, getattr(teacher, "name", "")).remove()
    except (InputError, AttributeError, IndexError, TypeError):
        return False
    return True


# ---- the cache ---------------------------------------------------------------------------------


class TeacherCache:
    """A built cache folder, opened read-only with memory maps.

    `build` also gives it what depends on the run (`gold` by split index, the shared candidate
    embeddings); a plain `TeacherCache(path)` looks up only what is stored."""

    def __init__(self, path: PathLike, gold: Optional[np.ndarray] = None,
                 candidate_embed: Optional[torch.Tensor] = None, logit_scale: float = 100.0,
                 cls_attention: bool = True) -> None:
        self.path = Path(path)
        if not _is_complete(self.path):
            raise InputError(f"{self.path}: not a complete teacher cache (manifest or arrays missing)")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.shards = [self._open_shard(self.path / name) for name in self.manifest["shards"]]
        self.token_len = max(sh["token_feats"].shape[1] for sh in self.shards)
        n = max(int(sh["index"].max()) for sh in self.shards if len(sh["index"])) + 1
        self._shard_of = np.full(n, -1, dtype=np.int64)
        self._row_of = np.full(n, -1, dtype=np.int64)
        for s, sh in enumerate(self.shards):
            self._shard_of[sh["index"]] = s
            self._row_of[sh["index"]] = np.arange(len(sh["index"]))
        self._gold = None if gold is None else np.asarray(gold, dtype=np.int64)
        self._candidate_embed = candidate_embed  # (C, d) L2-normalised, shared by every row
        self._group_of: Optional[np.ndarray] = None  # split index -> candidate list, when several recur
        self._logit_scale = float(logit_scale)
        self._cls_attention = cls_attention

    @staticmethod
    def _open_shard(folder: Path) -> Dict[str, np.ndarray]:
        return {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}

    def __len__(self) -> int:
        return int((self._shard_of >= 0).sum())

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*.npy"))

    # ---- building --------------------------------------------------------------------------

    @classmethod
    def build(cls, teacher: Any, texts_fn: Callable[[Dict[str, Any]], tuple], rows: Sequence[Dict[str, Any]],
              root: PathLike, name: str = "rows", indices: Optional[Sequence[int]] = None, batch_size: int = 64,
              process_index: int = 0, num_processes: int = 1, barrier: Callable[[], None] = lambda: None,
              cls_attention: bool = False, run_candidates: bool = False) -> "TeacherCache":
        """Open the cache of these rows, building it first if needed (every process calls this).

        `rows` is the split (a datasets.Dataset or a list of row dicts with an `image` path);
        `texts_fn(row)` gives the teacher's (task text, candidates, gold) (`Task.teacher_texts`);
        `indices` the split indices to cache (default: all: the cache then serves every low-shot
        subset of the split); lookups take those same split indices; `name` prefixes the folder.
        `cls_attention`: lookups return the teacher's CLS attention (InputError if it cannot).
        `run_candidates`: the candidate lists depend on the run (VQA's answer vocabulary, built
        from the low-shot rows), so their logits are never stored: each list is encoded on lookup
        and the split's cache serves every run.
        """
        if indices is None:
            indices, chosen = list(range(len(rows))), list(rows)
        else:
            indices = [int(i) for i in indices]
            chosen = [rows[i] for i in indices]
        if not chosen:
            raise InputError(f"teacher cache {name}: no rows to cache")
        texts = [texts_fn(r) for r in chosen]
        groups = candidate_groups([t[1] for t in texts], always=run_candidates)
        shared = groups is not None  # lists that recur across rows are encoded on open, not stored per row
        store_cls = _supports_cls_attention(teacher)
        if cls_attention and not store_cls:
            raise InputError(f"teacher {teacher.name!r}: no CLS attention (its last block is not "
                             f"nn.MultiheadAttention); use method.selection=relevance_topk instead")
        digests = image_digests([r["image"] for r in chosen])
        data = content_hash(indices, [digests[r["image"]] for r in chosen], texts, shared)
        root = Path(root)
        key = cache_key(name, teacher.fingerprint(), data)
        final = root / key
        if num_processes > 1 or not _is_complete(final):  # every process of a job takes the same path
            _build_locked(teacher, chosen, texts, indices, root, key, name, batch_size, process_index,
                          num_processes, barrier, store_cls, shared)
        gold = np.full(max(indices) + 1, -1, dtype=np.int64)
        gold[indices] = [int(t[2]) for t in texts]
        cache = cls(final, gold=gold, logit_scale=teacher.logit_scale, cls_attention=cls_attention)
        if groups is not None and len(groups[0]) == 1:
            cache._candidate_embed = cache._shared_candidate_embed(teacher, groups[0][0])
        elif groups is not None:
            cache._set_candidate_groups(teacher, groups[0], indices, groups[1])
        return cache

    def _set_candidate_groups(self, teacher: Any, lists: List[List[str]], indices: Sequence[int],
                              group: np.ndarray) -> None:
        """Rows share one of several candidate lists (VQA's question-conditioned candidates: one list
        per question): each list is encoded the first time a looked-up row needs it."""
        self._group_lists, self._group_teacher = lists, teacher
        self._group_of = np.full(max(indices) + 1, -1, dtype=np.int64)
        self._group_of[list(indices)] = group
        self._group_embed: Dict[int, torch.Tensor] = {}

    def _candidate_group_logits(self, idx: np.ndarray, image_embed: torch.Tensor) -> torch.Tensor:
        """logit_scale * cos(image, candidate) over each row's list, as `candidate_logits`. -> (B, C)"""
        teacher = self._group_teacher
        if getattr(teacher, "_candidate_encoder", None) is None:
            teacher._candidate_encoder = CandidateEncoder(teacher)
        for g in sorted({int(g) for g in self._group_of[idx]} - self._group_embed.keys()):
            self._group_embed[g] = teacher._candidate_encoder.encode(self._group_lists[g]).float().cpu()
        emb = torch.stack([self._group_embed[int(g)] for g in self._group_of[idx]])  # (B, C, d)
        return self._logit_scale * torch.einsum("bd,bcd->bc", image_embed, emb)

    def _shared_candidate_embed(self, teacher: Any, candidates: List[str]) -> torch.Tensor:
        """(C, d) embeddings of the candidate list every row shares, kept beside the arrays."""
        digest = hashlib.sha256(json.dumps(list(candidates)).encode()).hexdigest()[:20]
        path = self.path / f"candidates-{digest}.npy"
        with contextlib.suppress(OSError, ValueError):
            return torch.from_numpy(np.load(path))
        if getattr(teacher, "_candidate_encoder", None) is None:
            teacher._candidate_encoder = CandidateEncoder(teacher)
        emb = teacher._candidate_encoder(candidates).float().cpu()
        with contextlib.suppress(OSError):  # a read-only cache still works, re-encoding each run
            with atomic_path(path) as tmp:
                np.save(tmp, emb.numpy())
        return emb

    # ---- reading ---------------------------------------------------------------------------

    def lookup(self, indices: Any, as_stored: bool = False) -> Dict[str, torch.Tensor]:
        """Split row indices (B,) -> teacher outputs with the keys of `teacher_outputs` (fp32;
        with `as_stored` the stored arrays keep their fp16, half the bytes to copy to a GPU)."""
        idx = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64)
        if (idx >= len(self._shard_of)).any() or (self._shard_of[idx] < 0).any():
            missing = [int(i) for i in idx if i >= len(self._shard_of) or self._shard_of[i] < 0]
            raise KeyError(f"teacher cache {self.path.name}: no entry for row indices {missing[:5]}")
        shard_of, row_of = self._shard_of[idx], self._row_of[idx]
        out: Dict[str, torch.Tensor] = {}
        for s, sh in enumerate(self.shards):
            pos = np.nonzero(shard_of == s)[0]
            if not len(pos):
                continue
            rows = row_of[pos]
            images = np.asarray(sh["image_row"][rows])
            for key in ROW_ARRAYS + IMAGE_ARRAYS:
                if key not in sh or (key == "cls_attention" and not self._cls_attention):
                    continue
                a = np.asarray(sh[key][images if key in IMAGE_ARRAYS else rows])  # fancy index reads only these
                if key in ("token_feats", "token_mask", "token_offsets"):
                    a = _pad_rows(a, self.token_len, -1 if key == "token_offsets" else 0)
                if key not in out:
                    out[key] = torch.zeros((len(idx),) + a.shape[1:], dtype=_torch_dtype(a.dtype, as_stored))
                out[key][torch.from_numpy(pos)] = torch.from_numpy(a).to(out[key].dtype)
        out["token_mask"] = out["token_mask"].bool()
        out["token_offsets"] = out["token_offsets"].long()
        if self._candidate_embed is not None:  # the shared list: logit_scale * cos, as `candidate_logits`
            out["cand_logits"] = self._logit_scale * (out["image_embed"].float() @ self._candidate_embed.T)
        elif self._group_of is not None:
            out["cand_logits"] = self._candidate_group_logits(idx, out["image_embed"].float())
        if self._gold is not None:
            out["gold"] = torch.from_numpy(self._gold[idx])
        return out


def _torch_dtype(dt: np.dtype, as_stored: bool = False) -> torch.dtype:
    """fp16 storage comes back as fp32 (as stored with `as_stored`); integers as int64; masks as bool."""
    if dt == np.bool_:
        return torch.bool
    if np.issubdtype(dt, np.floating):
        return torch.from_numpy(np.zeros(0, dtype=dt)).dtype if as_stored else torch.float32
    return torch.long


def _pad_rows(a: np.ndarray, n: int, value: int) -> np.ndarray:
    """Pad the token axis (axis 1) of (B, L, ...) to n."""
    if a.shape[1] == n:
        return a
    pad = [(0, 0), (0, n - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(np.asarray(a), pad, constant_values=value)


# ---- building: lock, shards, manifest, rename ---------------------------------------------------


def _is_complete(folder: Path) -> bool:
    """A cache folder whose manifest (this layout version) and every array it names exist."""
    try:
        m = json.loads((folder / "manifest.json").read_text())
        return m.get("version") == CACHE_VERSION and all(
            (folder / shard / f"{a}.npy").is_file() for shard in m["shards"] for a in m["arrays"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _key_lock(root: Path, key: str) -> Iterator[None]:
    """Exclusive lock of one cache key across processes (released by the kernel on death)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # others block here until the holder is done
        except OSError as e:  # e.g. a file system without locks
            raise InputError(f"{root / f'.{key}.lock'}: cannot lock the teacher cache ({e.strerror or e}); "
                             f"put teacher.cache_dir on a local file system") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _clear_leftovers(root: Path, key: str, final: Path, work: Path) -> None:
    """Under the lock: remove what dead builders of `key` left (an incomplete final folder, other
    partial folders, temporaries inside `work`); finished shards in `work` are kept for reuse."""
    if final.exists():
        aside = root / f".{key}.broken-{os.getpid()}"
        os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    for p in root.glob(f".{key}.*"):
        if p.is_dir() and p != work:
            shutil.rmtree(p, ignore_errors=True)
    if work.is_dir():
        for p in work.iterdir():
            if p.name.startswith(".") or p.name == "manifest.json":
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def _build_locked(teacher: Any, chosen: List[Dict[str, Any]], texts: List[tuple], indices: List[int], root: Path,
                  key: str, name: str, batch_size: int, process_index: int, num_processes: int,
                  barrier: Callable[[], None], store_cls: bool, shared: bool) -> None:
    """Build `<root>/<key>` unless another builder already did (see the module docstring)."""
    final = root / key
    work = root / f".{key}.partial-w{num_processes}"
    with _key_lock(root, key) if process_index == 0 else contextlib.nullcontext():
        if process_index == 0 and not _is_complete(final):
            _clear_leftovers(root, key, final, work)
            work.mkdir(parents=True, exist_ok=True)
        barrier()  # from here until the last barrier, `final` changes only by our process 0
        if not _is_complete(final):
            shard = work / f"shard-{process_index}-of-{num_processes}"
            if not shard.is_dir():
                mine = list(range(process_index, len(indices), num_processes))
                _build_shard(teacher, [chosen[p] for p in mine], [texts[p] for p in mine],
                             [indices[p] for p in mine], shard, batch_size, store_cls, not shared,
                             len(texts[0][1]))
        barrier()
        if process_index == 0 and not _is_complete(final):
            arrays = ["index", "image_row", *IMAGE_ARRAYS[:2], *ROW_ARRAYS[:4]]
            arrays += (["cls_attention"] if store_cls else []) + ([] if shared else ["cand_logits"])
            write_json_atomic(work / "manifest.json", {
                "version": CACHE_VERSION, "code_version": code_version(), "name": name, "teacher": teacher.name,
                "teacher_fingerprint": teacher.fingerprint(), "rows": len(indices),
                "shards": [f"shard-{r}-of-{num_processes}" for r in range(num_processes)], "arrays": arrays,
                "cls_attention": store_cls, "shared_candidates": shared})
            os.rename(work, final)  # the one step that makes the cache visible
        barrier()


def _build_shard(teacher: Any, rows: List[Dict[str, Any]], texts: List[tuple], indices: List[int], out: Path,
                 batch_size: int, cls_attention: bool, row_candidates: bool, n_cand: int) -> None:
    """Encode `rows` (each unique image once) into memory-mapped arrays under `out`, atomically.
    `row_candidates`: store each row's candidate logits (its own candidate list)."""
    images = sorted({r["image"] for r in rows})
    image_row = {p: i for i, p in enumerate(images)}
    ids = teacher.tokenize([t[0] for t in texts]) if rows else torch.zeros(0, 2, dtype=torch.long)
    token_len = int((ids != 0).sum(1).max()) if rows else 1  # start + content + end; trailing padding dropped
    d, nv = teacher.embed_dim, teacher.grid_size[0] * teacher.grid_size[1]
    shapes = {"index": ((len(rows),), np.int64), "image_row": ((len(rows),), np.int64),
              "patch_tokens": ((len(images), nv, d), np.float16), "image_embed": ((len(images), d), np.float32),
              "text_embed": ((len(rows), d), np.float32), "token_feats": ((len(rows), token_len, d), np.float16),
              "token_mask": ((len(rows), token_len), np.bool_), "token_offsets": ((len(rows), token_len, 2), np.int32)}
    if row_candidates:
        shapes["cand_logits"] = ((len(rows), n_cand), np.float32)
    if cls_attention:
        shapes["cls_attention"] = ((len(images), nv), np.float16)
    transform = teacher.image_transform()
    encoder = CandidateEncoder(teacher)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        arr = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dt, shape=shape)
               for k, (shape, dt) in shapes.items()}
        arr["index"][:] = indices
        arr["image_row"][:] = [image_row[r["image"]] for r in rows]
        for start in range(0, len(images), batch_size):
            paths = images[start:start + batch_size]
            pixels = torch.stack([_load_image(p, transform) for p in paths])
            img = teacher.encode_images(pixels, cls_attention=cls_attention)
            for k in IMAGE_ARRAYS:
                if k in arr:
                    arr[k][start:start + len(paths)] = img[k].cpu().numpy()
        image_embed = torch.from_numpy(np.asarray(arr["image_embed"]))
        for start in range(0, len(rows), batch_size):
            chunk = texts[start:start + batch_size]
            sl = slice(start, start + len(chunk))
            txt = encode_task_texts(teacher, [c[0] for c in chunk], token_len)  # as teacher_outputs does
            for k in ("text_embed", "token_feats", "token_mask", "token_offsets"):
                arr[k][sl] = txt[k].cpu().numpy()
            if row_candidates:
                emb = image_embed[arr["image_row"][sl]]
                arr["cand_logits"][sl] = candidate_logits(teacher, emb, [c[1] for c in chunk], encoder).cpu().numpy()
        for a in arr.values():
            a.flush()
        del arr
