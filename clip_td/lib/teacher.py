"""The frozen CLIP teacher: any open_clip model, in eval mode, under no_grad, never trained.

Gives what CLIP-TD distils (docs/method.md), all in the joint embedding space:
patch tokens (ln_post + proj applied per token), text token features (ln_final +
text_projection per token), and L2-normalised global embeddings.

    teacher = FrozenTeacher.from_name("local-dir:/path/to/teacher")   # or "ViT-B-32", "laion2b_s34b_b79k"
    img = teacher.encode_images(pixels)        # {"patch_tokens": (B, Nv, d), "image_embed": (B, d)}
    txt = teacher.encode_texts(["a red cube"]) # {"token_feats", "token_mask", "text_embed", "offsets"}

The teacher is a plain `nn.Module` so `.to(device)` works, but it refuses to be put in
training mode and its parameters never require grad: keep it out of the optimizer and out of
`accelerator.prepare`.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from clip_td.base.io import InputError

Span = Tuple[int, int]

#: `teacher.dense`: how the patch tokens (the token term's targets, the relevance map) are built.
#:   auto    the tower's own: `tokens` for a ViT, `value` for a ResNet
#:   tokens  ViT: ln_post and proj applied to each output token of the last block
#:   value   the last attention's value path per token (MaskCLIP): ViT: out_proj(v(ln_1(x))) of the
#:           last block's input, then ln_post and proj, no query-key mixing, residual or MLP;
#:           ResNet: the attention pool's v_proj and c_proj at each position of the feature map
DENSE_MODES = ("auto", "tokens", "value")


class FrozenTeacher(nn.Module):
    """Wraps an open_clip CLIP-like model (a ViT or a ModifiedResNet image tower) as a frozen
    feature extractor."""

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess_cfg: Dict[str, Any], name: str = "") -> None:
        super().__init__()
        visual = getattr(model, "visual", None)
        vit = visual is not None and hasattr(visual, "conv1") and hasattr(visual, "ln_post")
        if not vit and not (visual is not None and _is_resnet(visual)):
            raise InputError(
                f"teacher {name!r}: token-level distillation needs an open_clip VisionTransformer or "
                f"ModifiedResNet image tower (got {type(visual).__name__}); pick a ViT or RN teacher"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.model_name, self.pretrained = name, None  # what from_name loaded (metrics.json `teacher`)
        self.preprocess = _preprocess_settings(preprocess_cfg, visual)
        self.model.requires_grad_(False)
        super().train(False)
        self._fingerprint: Optional[str] = None
        self._candidate_encoder: Any = None  # memoised candidate embeddings (clip_td.lib.teacher_cache)
        self._warned_truncation = False  # texts over the context length: warned once per teacher
        self.dense = "value" if _is_resnet(visual) else "tokens"  # DENSE_MODES, resolved (set_dense)
        self.dense_scale = 1  # the dense pass sees the image this many times larger (ResNet only)

    def set_dense(self, mode: str = "auto", scale: int = 1) -> "FrozenTeacher":
        """Choose how patch tokens are built (DENSE_MODES) and the dense pass's input scale: a
        ResNet at `scale` s reads the image resized s times larger (its pool's positional embedding
        resized bilinearly), so its patch grid is s times finer; the global embedding always comes
        from the native size. A non-default choice enters the fingerprint (the cache key)."""
        resnet = _is_resnet(self.model.visual)
        if mode not in DENSE_MODES:
            raise InputError(f"config key teacher.dense: unknown value {mode!r}; expected one of: "
                             f"{', '.join(DENSE_MODES)}")
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise InputError(f"config key teacher.dense_scale: expected an integer >= 1, got {scale!r}")
        if resnet and mode == "tokens":
            raise InputError(f"teacher {self.name!r}: teacher.dense=tokens needs a ViT image tower; a ResNet's "
                             f"patch tokens are its attention pool's value path (teacher.dense=value or auto)")
        if not resnet and scale != 1:
            raise InputError(f"teacher {self.name!r}: teacher.dense_scale={scale} needs a ResNet image tower "
                             f"(a ViT's positional embedding fixes its grid); use 1")
        self.dense = ("value" if resnet else "tokens") if mode == "auto" else mode
        self.dense_scale = int(scale)
        self._fingerprint = None
        return self

    @property
    def dense_text(self) -> str:
        """'' for the tower's own patch tokens at the native size, else e.g. 'dense=value,scale=2'."""
        default = "value" if _is_resnet(self.model.visual) else "tokens"
        if self.dense == default and self.dense_scale == 1:
            return ""
        return f"dense={self.dense},scale={self.dense_scale}"

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_name(cls, model_name: str, pretrained: Optional[str] = None, device: str = "cpu") -> "FrozenTeacher":
        """Load any open_clip model: `ViT-B-32` + tag or file, `hf-hub:org/repo`, `local-dir:/path`."""
        import open_clip

        _check_exists(model_name)
        quick_gelu = _tag_wants_quick_gelu(model_name, pretrained)
        try:
            model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device,
                                                                force_quick_gelu=quick_gelu)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, FileNotFoundError, OSError, KeyError) as e:
            where = f"{model_name!r}" + (f" (pretrained={pretrained!r})" if pretrained else "")
            raise InputError(f"teacher {where}: not a loadable open_clip model ({e})") from None
        cfg = open_clip.get_model_preprocess_cfg(model)
        teacher = cls(model, tokenizer, cfg, name=f"{model_name}|{pretrained or ''}")
        teacher._config_text = _model_config_text(model_name) + ("|quick_gelu" if quick_gelu else "")
        teacher.model_name, teacher.pretrained = model_name, pretrained or None
        return teacher

    # ---- frozen behaviour ---------------------------------------------------------------------

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """No-op on purpose: the teacher stays in eval whatever the caller's `.train()` says."""
        return super().train(False)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        for p in super().parameters(recurse):
            assert not p.requires_grad, "teacher parameters must stay frozen"
            yield p

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def grid_size(self) -> Tuple[int, int]:
        visual = self.model.visual
        if _is_resnet(visual):  # the attention pool's square feature map (image side / 32)
            n = int(round(math.sqrt(visual.attnpool.positional_embedding.shape[0] - 1))) * self.dense_scale
            return (n, n)
        g = visual.grid_size
        return (int(g[0]), int(g[1]))

    @property
    def logit_scale(self) -> float:
        """CLIP's learned inverse temperature (exp of the stored log value); 100 if absent."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp()) if scale is not None else 100.0

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    def fingerprint(self) -> str:
        """sha256 of the model config and every weight tensor: the teacher-cache key."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(getattr(self, "_config_text", self.name).encode())
            h.update(self.dense_text.encode())  # '' by default: the tower's own tokens keep their key
            for key, tensor in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # ---- images -------------------------------------------------------------------------------

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, S, S) resized (bilinear) and normalised for the teacher."""
        size = self.preprocess["image_size"]
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.preprocess["mean"], device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["std"], device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def image_transform(self) -> Any:
        """PIL image -> (3, S, S) teacher-normalised tensor (open_clip's eval transform)."""
        from open_clip import image_transform

        p = self.preprocess
        return image_transform(p["image_size"], is_train=False, mean=p["mean"], std=p["std"],
                               interpolation=p["interpolation"], resize_mode=p["resize_mode"])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, cls_attention: bool = False) -> Dict[str, torch.Tensor]:
        """Teacher-normalised pixels (B, 3, S, S) -> patch tokens and global embedding.

        Returns {"patch_tokens": (B, Nv, d) in the joint space (not normalised),
        "image_embed": (B, d) L2-normalised}, plus "cls_attention": (B, Nv) (the last block's
        CLS-to-patch attention, averaged over heads) when asked. The patch tokens follow
        `set_dense` (Nv = grid_size[0] * grid_size[1]).
        """
        visual = self.model.visual
        pixels = pixels.to(self.device, next(visual.parameters()).dtype)
        if _is_resnet(visual):
            if cls_attention:
                raise InputError(f"teacher {self.name!r}: cls_attention_topk needs a ViT image tower (this one is "
                                 f"a ResNet); use relevance_topk instead")
            pooled, tokens = _resnet_pool_and_tokens(visual, pixels, self.dense_scale)
            return {"patch_tokens": tokens.float(), "image_embed": F.normalize(pooled.float(), dim=-1)}
        x = visual._embeds(pixels)  # (B, 1 + Nv, width)
        captured: Dict[str, torch.Tensor] = {}
        hook = None
        if cls_attention:
            hook = _attach_cls_attention_hook(visual, captured, self.name)
        value_hook = _attach_last_input_hook(visual, captured) if self.dense == "value" else None
        try:
            x = visual.transformer(x)
        finally:
            for h in (hook, value_hook):
                if h is not None:
                    h.remove()
        pooled, tokens = visual._pool(x)  # pooled: (B, width), tokens: (B, Nv, width) after ln_post
        if self.dense == "value":
            tokens = _vit_value_tokens(visual, captured["last_input"], self.name)
        if visual.proj is not None:
            pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
        out = {"patch_tokens": tokens.float(), "image_embed": F.normalize(pooled.float(), dim=-1)}
        if cls_attention:
            out["cls_attention"] = captured["cls_attention"]
        return out

    # ---- texts --------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, context_length) token ids (longer texts are truncated; the first
        time that happens this teacher warns, naming how many and the context length)."""
        texts = list(texts)
        ids = self.tokenizer(texts)
        if not self._warned_truncation:
            n = self._count_truncated(texts, ids)
            if n:
                self._warned_truncation = True
                warnings.warn(
                    f"teacher {self.name!r}: {n} of {len(texts)} texts are longer than its context length of "
                    f"{self.context_length} tokens and were truncated (warned once per teacher)", stacklevel=3)
        return ids.to(self.device)

    def _count_truncated(self, texts: List[str], ids: torch.Tensor) -> int:
        """How many texts did not fit: only rows that fill the whole context are re-tokenised,
        with one more position (a text that fits exactly leaves that position empty)."""
        ctx = ids.shape[1]
        full = [i for i in range(len(texts)) if int(ids[i, -1]) != self._pad_id]
        if not full:
            return 0
        longer = self.tokenizer([texts[i] for i in full], context_length=ctx + 1)
        return int((longer[:, ctx] != self._pad_id).sum())

    @property
    def _pad_id(self) -> int:
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip HFTokenizer pads with its pad id
        pad = getattr(inner, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], with_tokens: bool = True) -> Dict[str, Any]:
        """B strings -> {"text_embed": (B, d) L2-normalised, "token_feats": (B, Nt, d) (Nt may
        stop at the batch's longest text), "token_mask": (B, Nt) bool (content tokens only: no start/end/padding),
        "offsets": B lists of (start, end) character spans in the input string, one per token
        ((-1, -1) where a token cannot be placed)}. `with_tokens=False` returns only text_embed.
        """
        ids = self.tokenize(texts)  # (B, Nt)
        tokens, pooled = self._text_tower(ids)
        ids = ids[:, : tokens.shape[1]]  # the tower may drop an all-padding tail
        out: Dict[str, Any] = {"text_embed": F.normalize(pooled.float(), dim=-1)}
        if not with_tokens:
            return out
        out["token_feats"] = tokens.float()
        out["token_mask"] = self._content_mask(ids)
        out["offsets"] = [token_offsets(self.tokenizer, t, int(n)) for t, n in zip(texts, out["token_mask"].sum(1))]
        return out

    def _text_tower(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, Nt) ids -> per-token features (B, Nt, d) and pooled (B, d), both projected."""
        model = self.model
        text = getattr(model, "text", None)
        if text is not None:  # CustomTextCLIP: a TextTransformer or an HF text tower
            if not hasattr(text, "output_tokens") or not hasattr(text, "ln_final"):
                raise InputError(f"teacher {self.name!r}: text tower {type(text).__name__} gives no token features")
            old = text.output_tokens
            text.output_tokens = True
            try:
                pooled, tokens = text(ids)
            finally:
                text.output_tokens = old
            return _project(tokens, text.text_projection), pooled
        # CLIP's text tower is causal: dropping the all-padding tail changes no kept position
        n = max(int((ids != 0).sum(1).max()), 1)
        ids = ids[:, :n]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast) + model.positional_embedding[:n].to(cast)
        mask = model.attn_mask[:n, :n] if model.attn_mask is not None else None
        x = model.ln_final(model.transformer(x, attn_mask=mask))  # (B, n, width)
        from open_clip.transformer import text_global_pool

        pooled = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        return _project(x, model.text_projection), _project(pooled, model.text_projection)

    def _content_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, Nt) ids -> (B, Nt) bool, False at start/end/padding/other special tokens."""
        special = set(_special_ids(self.tokenizer)) | {0}
        mask = torch.ones_like(ids, dtype=torch.bool)
        for sid in special:
            mask &= ids != sid
        return mask


# ---- helpers ----------------------------------------------------------------------------------


def _check_exists(model_name: str) -> None:
    if model_name.startswith("local-dir:"):
        path = Path(model_name[len("local-dir:"):])
        if not path.is_dir():
            raise InputError(f"teacher {model_name!r}: directory not found")
        if not (path / "open_clip_config.json").is_file():
            raise InputError(f"teacher {model_name!r}: not an open_clip model dir (no open_clip_config.json)")


def _tag_wants_quick_gelu(model_name: str, pretrained: Optional[str]) -> bool:
    """True when an open_clip pretrained tag was trained with QuickGELU but the model config uses
    GELU (e.g. `ViT-B-32` + `openai`): the weights then need QuickGELU to give OpenAI's features."""
    if not pretrained or ":" in model_name:
        return False
    import open_clip

    try:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
        model_cfg = open_clip.get_model_config(model_name) or {}
    except Exception:  # an unknown name or tag is reported by create_model_and_transforms
        return False
    return bool(tag_cfg.get("quick_gelu", False)) and not model_cfg.get("quick_gelu", False)


def _model_config_text(model_name: str) -> str:
    if model_name.startswith("local-dir:"):
        cfg = json.loads((Path(model_name[len("local-dir:"):]) / "open_clip_config.json").read_text())
        return json.dumps(cfg, sort_keys=True)
    return model_name


def _preprocess_settings(cfg: Dict[str, Any], visual: nn.Module) -> Dict[str, Any]:
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = (size, size) if isinstance(size, int) else tuple(size)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return {
        "image_size": tuple(int(s) for s in size),
        "mean": tuple(float(m) for m in cfg.get("mean", OPENAI_DATASET_MEAN)),
        "std": tuple(float(s) for s in cfg.get("std", OPENAI_DATASET_STD)),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "resize_mode": cfg.get("resize_mode", "shortest"),
    }


def _project(x: torch.Tensor, proj: Any) -> torch.Tensor:
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


def _special_ids(tokenizer: Any) -> List[int]:
    if hasattr(tokenizer, "all_special_ids"):
        return list(tokenizer.all_special_ids)
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip HFTokenizer
    return list(getattr(inner, "all_special_ids", []))


def _is_resnet(visual: nn.Module) -> bool:
    """open_clip's ModifiedResNet image tower (CLIP's RN50 family): conv trunk + attention pool."""
    return hasattr(visual, "attnpool") and hasattr(visual, "stem")


def _resnet_trunk(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))  # (B, C, H, W)


def _resnet_pool_and_tokens(visual: nn.Module, pixels: torch.Tensor,
                            scale: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """ModifiedResNet -> (pooled (B, d), dense tokens (B, H*W, d) row-major).

    The pooled embedding is the attention pool's output, as CLIP computes it. The dense tokens
    take each position of the final feature map through the pool's value path (v_proj then
    c_proj, with its positional embedding), as MaskCLIP does: the same projections that carry
    the pooled embedding into the joint space, so the tokens live in that space too. With
    `scale` s > 1 the dense tokens come from a second pass over the image resized s times
    larger (bilinear), the positional embedding resized to its (s H, s W) map (bilinear)."""
    x = _resnet_trunk(visual, pixels)
    pool = visual.attnpool
    pooled = pool(x)
    pos = pool.positional_embedding[1:].to(x.dtype)  # (HW, C)
    if scale != 1:
        h, w = x.shape[-2:]
        x = _resnet_trunk(visual, F.interpolate(pixels, scale_factor=scale, mode="bilinear", align_corners=False))
        grid = pos.transpose(0, 1).reshape(1, -1, h, w)
        pos = F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False).flatten(2)[0].T
    tokens = x.flatten(2).transpose(1, 2) + pos  # (B, HW, C)
    return pooled, pool.c_proj(pool.v_proj(tokens))


def _attach_last_input_hook(visual: nn.Module, captured: Dict[str, torch.Tensor]):
    """Record the last block's input as (B, 1 + Nv, width) under captured["last_input"]."""
    transformer = visual.transformer

    def hook(_module: nn.Module, args: Tuple[Any, ...]) -> None:
        x = args[0]
        captured["last_input"] = x if getattr(transformer, "batch_first", True) else x.transpose(0, 1)

    return transformer.resblocks[-1].register_forward_pre_hook(hook)


def _vit_value_tokens(visual: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """MaskCLIP's dense tokens of a ViT: the last block's value path applied to each patch token
    of its input, out_proj(v(ln_1(x))) (times the block's layer scale), then ln_post; no
    query-key attention, residual or MLP. x (B, 1 + Nv, width) -> (B, Nv, width) (before proj)."""
    block = visual.transformer.resblocks[-1]
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise InputError(f"teacher {name!r}: teacher.dense=value needs nn.MultiheadAttention with a packed input "
                         f"projection in the last block (got {type(attn).__name__}); use teacher.dense=tokens")
    if getattr(visual, "attn_pool", None) is not None:
        raise InputError(f"teacher {name!r}: teacher.dense=value needs a class-token ViT (this one has an "
                         f"attention pool); use teacher.dense=tokens")
    width = attn.embed_dim
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(x[:, 1:]), attn.in_proj_weight[2 * width:], bias)
    out = block.ls_1(attn.out_proj(v)) if hasattr(block, "ls_1") else attn.out_proj(v)
    return visual.ln_post(out)


def _attach_cls_attention_hook(visual: nn.Module, captured: Dict[str, torch.Tensor], name: str):
    """Record the last block's CLS->patch attention (B, Nv), averaged over heads."""
    block = visual.transformer.resblocks[-1]
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention):
        raise InputError(
            f"teacher {name!r}: cls_attention_topk needs nn.MultiheadAttention in the last block "
            f"(got {type(attn).__name__}); use relevance_topk instead"
        )

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        q = output if attn.batch_first else output.transpose(0, 1)  # (B, 1 + Nv, width)
        _, weights = attn(q, q, q, need_weights=True, average_attn_weights=True)  # (B, L, L)
        captured["cls_attention"] = weights[:, 0, 1:].float()

    return block.ln_1.register_forward_hook(hook)


def token_offsets(tokenizer: Any, text: str, n_content: int) -> List[Span]:
    """Character spans in `text` of the first `n_content` content tokens the teacher sees.

    open_clip's SimpleTokenizer has no offset mapping: re-run its word regex on the cleaned text
    and split each word's span by its BPE pieces; then place each word in the original string
    by a case-insensitive search from a moving cursor. HF tokenizers give offsets directly.
    """
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and getattr(inner, "is_fast", False):
        enc = inner(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(s) for s in enc["offset_mapping"][:n_content]]
    if not hasattr(tokenizer, "bpe"):
        return [(-1, -1)] * n_content
    cleaned = tokenizer.clean_fn(text)
    lower = text.lower()
    spans: List[Span] = []
    cursor = 0
    for match in tokenizer.pat.finditer(cleaned):  # a `regex` pattern, not `re`
        word = match.group(0)
        start = lower.find(word, cursor)
        encoded = "".join(tokenizer.byte_encoder[b] for b in word.encode("utf-8"))
        pieces = [p.replace("</w>", "") for p in tokenizer.bpe(encoded).split(" ")]
        if start < 0:
            spans.extend([(-1, -1)] * len(pieces))
            continue
        pos = start
        for piece in pieces:
            # a piece's characters are bytes of the word; clamp so non-ASCII stays inside it
            end = min(pos + len(piece), start + len(word))
            spans.append((pos, max(end, pos)))
            pos = end
        cursor = start + len(word)
    return (spans + [(-1, -1)] * n_content)[:n_content]
