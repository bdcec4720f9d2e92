"""Teacher-output cache: computed once per (rows, their teacher texts, teacher), reused by
every epoch and run that reads the same rows.

    cache = TeacherCache.build(teacher, task.teacher_texts, train_rows, cache_root, name="vqa",
                               process_index=acc.process_index, num_processes=acc.num_processes,
                               barrier=acc.wait_for_everyone)
    teacher_out = cache.lookup(batch["index"])      # same keys as `teacher_outputs(...)`

Layout: `<root>/<key>/manifest.json` + `shard-<r>-of-<W>/<array>.npy`. Arrays are memory-mapped
(token features in fp16) so a VQA-size cache need not fit in RAM. Each of W processes builds the
rows r, r+W, ...; every shard is written under a temporary name and renamed into place; the
main process then renames the whole folder to its key, so a crash leaves nothing that looks
built. The key hashes the teacher fingerprint, the rows (their JSON) and every row's teacher
texts (task text, candidates, gold), so changing any of them builds a new cache. Images shared by several
rows (VQA: ~5 questions per image) are encoded and stored once per shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from clip_td.base.io import InputError, PathLike, atomic_path, read_json, write_json_atomic

CACHE_VERSION = 1
IMAGE_ARRAYS = ("patch_tokens", "image_embed", "cls_attention")  # stored per unique image
ROW_ARRAYS = ("text_embed", "token_feats", "token_mask", "token_offsets", "cand_logits", "gold")
FP16 = {"patch_tokens", "token_feats", "cls_attention"}


# ---- computing teacher outputs (shared by the cache and the live teacher) ---------------------


class CandidateEncoder:
    """Candidate text embeddings, memoised when the same list recurs (VQA's answer vocabulary)."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher
        self._memo: Dict[int, tuple] = {}

    def __call__(self, candidates: List[str]) -> torch.Tensor:
        """C strings -> (C, d) L2-normalised embeddings."""
        key = id(candidates)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is candidates:
            return hit[1]
        emb = self.teacher.encode_texts(candidates, with_tokens=False)["text_embed"]
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


# ---- the cache ---------------------------------------------------------------------------------


def rows_hash(rows: Any) -> str:
    """sha256 of the rows' JSON (any change of text, labels, image paths or order changes it)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    return h.hexdigest()


def texts_hash(texts: Sequence[tuple]) -> str:
    """sha256 of every row's (task text, candidates, gold); a candidate list shared by many rows
    (VQA's vocabulary) is hashed once."""
    h = hashlib.sha256()
    seen: Dict[int, str] = {}
    for text, cands, gold in texts:
        if id(cands) not in seen:
            seen[id(cands)] = hashlib.sha256(json.dumps(list(cands)).encode()).hexdigest()
        h.update(json.dumps([text, seen[id(cands)], int(gold)]).encode())
    return h.hexdigest()


def cache_key(name: str, teacher_fp: str, data_hash: str, text_hash: str, cls_attention: bool) -> str:
    text = json.dumps([CACHE_VERSION, teacher_fp, name, data_hash, text_hash, cls_attention])
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _load_image(path: str, transform: Callable) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return transform(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read image ({e})") from None


class TeacherCache:
    """A built cache folder, opened read-only with memory maps."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_json(self.path / "manifest.json")
        self.shards = [self._open_shard(self.path / name) for name in self.manifest["shards"]]
        self.token_len = max(sh["token_feats"].shape[1] for sh in self.shards)
        n = max(int(sh["index"].max()) for sh in self.shards if len(sh["index"])) + 1
        self._shard_of = np.full(n, -1, dtype=np.int64)
        self._row_of = np.full(n, -1, dtype=np.int64)
        for s, sh in enumerate(self.shards):
            self._shard_of[sh["index"]] = s
            self._row_of[sh["index"]] = np.arange(len(sh["index"]))

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
              cls_attention: bool = False) -> "TeacherCache":
        """Open the cache of these rows, building it first if needed (every process calls this).

        `rows` is the split (a datasets.Dataset or a list of row dicts); `texts_fn(row)` gives
        the teacher's (task text, candidates, gold) (`Task.teacher_texts`); `indices` the row
        indices to cache (default: all); lookups take those same split indices; `name` prefixes
        the folder (the task name).
        """
        indices = list(range(len(rows))) if indices is None else [int(i) for i in indices]
        chosen = [rows[i] for i in indices]
        texts = [texts_fn(r) for r in chosen]
        key = cache_key(name, teacher.fingerprint(),
                        rows_hash([{"_i": i, **r} for i, r in zip(indices, chosen)]), texts_hash(texts), cls_attention)
        final = Path(root) / key
        if not (final / "manifest.json").is_file():
            partial = Path(root) / f"{key}.partial-w{num_processes}"
            mine = list(range(process_index, len(indices), num_processes))
            shard = partial / f"shard-{process_index}-of-{num_processes}"
            if not shard.is_dir():
                _build_shard(teacher, [chosen[p] for p in mine], [texts[p] for p in mine],
                             [indices[p] for p in mine], shard, batch_size, cls_attention)
            barrier()
            if process_index == 0 and not (final / "manifest.json").is_file():
                names = [f"shard-{r}-of-{num_processes}" for r in range(num_processes)]
                write_json_atomic(partial / "manifest.json", {
                    "version": CACHE_VERSION, "name": name, "teacher": teacher.name,
                    "teacher_fingerprint": teacher.fingerprint(), "rows": len(indices), "shards": names,
                    "cls_attention": cls_attention})
                try:
                    os.rename(partial, final)
                except OSError:  # another job finished the same cache first
                    shutil.rmtree(partial, ignore_errors=True)
            barrier()
        return cls(final)

    # ---- reading ---------------------------------------------------------------------------

    def lookup(self, indices: Any) -> Dict[str, torch.Tensor]:
        """Split row indices (B,) -> teacher outputs with the keys of `teacher_outputs` (fp32)."""
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
                if key not in sh:
                    continue
                a = np.asarray(sh[key][images if key in IMAGE_ARRAYS else rows])  # fancy index reads only these
                if key in ("token_feats", "token_mask", "token_offsets"):
                    a = _pad_rows(a, self.token_len, -1 if key == "token_offsets" else 0)
                if key not in out:
                    out[key] = torch.zeros((len(idx),) + a.shape[1:], dtype=_torch_dtype(a.dtype))
                out[key][torch.from_numpy(pos)] = torch.from_numpy(a).to(out[key].dtype)
        out["token_mask"] = out["token_mask"].bool()
        out["token_offsets"] = out["token_offsets"].long()
        out["gold"] = out["gold"].long()
        return out


def _torch_dtype(dt: np.dtype) -> torch.dtype:
    """fp16 storage comes back as fp32; integers as int64; masks as bool."""
    if dt == np.bool_:
        return torch.bool
    return torch.float32 if np.issubdtype(dt, np.floating) else torch.long


def _pad_rows(a: np.ndarray, n: int, value: int) -> np.ndarray:
    """Pad the token axis (axis 1) of (B, L, ...) to n."""
    if a.shape[1] == n:
        return a
    pad = [(0, 0), (0, n - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(np.asarray(a), pad, constant_values=value)


def _build_shard(teacher: Any, rows: List[Dict[str, Any]], texts: List[tuple], indices: List[int], out: Path,
                 batch_size: int, cls_attention: bool) -> None:
    """Encode `rows` (each unique image once) into memory-mapped arrays under `out`, atomically."""
    images = sorted({r["image"] for r in rows})
    image_row = {p: i for i, p in enumerate(images)}
    ids = teacher.tokenize([t[0] for t in texts]) if rows else torch.zeros(0, 2, dtype=torch.long)
    token_len = int((ids != 0).sum(1).max()) if rows else 1  # start + content + end; trailing padding dropped
    d, nv, n_cand = teacher.embed_dim, teacher.grid_size[0] * teacher.grid_size[1], len(texts[0][1]) if rows else 0
    shapes = {"index": ((len(rows),), np.int64), "image_row": ((len(rows),), np.int64),
              "patch_tokens": ((len(images), nv, d), np.float16), "image_embed": ((len(images), d), np.float32),
              "text_embed": ((len(rows), d), np.float32), "token_feats": ((len(rows), token_len, d), np.float16),
              "token_mask": ((len(rows), token_len), np.bool_), "token_offsets": ((len(rows), token_len, 2), np.int32),
              "cand_logits": ((len(rows), n_cand), np.float32), "gold": ((len(rows),), np.int64)}
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
            for k in ("patch_tokens", "image_embed", "cls_attention"):
                if k in arr:
                    arr[k][start:start + len(paths)] = img[k].cpu().numpy()
        image_embed = torch.from_numpy(np.asarray(arr["image_embed"]))
        for start in range(0, len(rows), batch_size):
            chunk = texts[start:start + batch_size]
            sl = slice(start, start + len(chunk))
            txt = encode_task_texts(teacher, [c[0] for c in chunk], token_len)  # as teacher_outputs does
            for k in ("text_embed", "token_feats", "token_mask", "token_offsets"):
                arr[k][sl] = txt[k].cpu().numpy()
            emb = image_embed[arr["image_row"][sl]]
            arr["cand_logits"][sl] = candidate_logits(teacher, emb, [c[1] for c in chunk], encoder).cpu().numpy()
            arr["gold"][sl] = [c[2] for c in chunk]
        for a in arr.values():
            a.flush()
        del arr
