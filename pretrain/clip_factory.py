"""Build the open_clip model being pretrained: any open_clip architecture (optionally from a
pretrained tag, `hf-hub:` id or `local-dir:` folder) or a small architecture declared in the
config. The training wrapper with the concept head is `pretrain.pretrain_model.PretrainModel`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import open_clip
import torch.nn as nn

from clip_td.base.io import InputError

from pretrain.export import write_open_clip_config

# The default teacher of the synthetic world: a tiny ViT that trains on 2 CPU cores in minutes.
TINY_MODEL_CFG: Dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
TINY_PREPROCESS_CFG: Dict[str, Any] = {"size": 64}


@dataclass
class BuiltModel:
    model: nn.Module  # open_clip CLIP / CustomTextCLIP
    model_cfg: Dict[str, Any]  # the architecture, as open_clip_config.json's "model_cfg"
    preprocess_cfg: Dict[str, Any]  # as open_clip_config.json's "preprocess_cfg"
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable


def _plain(obj: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(obj, resolve=True) if isinstance(obj, (DictConfig, ListConfig)) else obj


def fitted_text_cfg(text_cfg: Dict[str, Any], tokenizer: Any) -> Dict[str, Any]:
    """`text_cfg` for a text tower reading `tokenizer` (a fitted WordPiece vocabulary): its size,
    pooling at the [SEP] token (open_clip's `eos` pool; CLIP's `argmax` pool assumes the end
    token has the highest id) and its padding id. `hf_tokenizer_name` makes open_clip load the
    tokenizer stored in a `local-dir:` folder."""
    return {**text_cfg, "vocab_size": len(tokenizer), "hf_tokenizer_name": FITTED_TOKENIZER_NAME, "pool_type": "eos",
            "eos_id": int(tokenizer.sep_token_id), "pad_id": int(tokenizer.pad_token_id)}


FITTED_TOKENIZER_NAME = "clip-td-fitted-wordpiece"  # a marker: open_clip reads a local-dir's own tokenizer files


def build_model(name: Optional[str] = None, pretrained: Optional[str] = None, model_cfg: Optional[Dict] = None,
                preprocess_cfg: Optional[Dict] = None, tokenizer: Any = None) -> BuiltModel:
    """`name` (open_clip arch, `hf-hub:...`, `local-dir:...`) + `pretrained` tag/file, or, with
    no name, the declared `model_cfg` (random init) with `preprocess_cfg`. `tokenizer` (a
    transformers fast tokenizer, declared architectures only) replaces CLIP's BPE vocabulary:
    the text tower is sized to it (`fitted_text_cfg`) and the returned tokenizer reads it."""
    if name is not None:
        try:
            model, pp_train, pp_val = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            raise InputError(f"config key model.name / model.pretrained: cannot build {name!r} ({e})") from None
        arch = open_clip.get_model_config(name)
        if arch is None:
            raise InputError(f"config key model.name: no open_clip config for {name!r}")
        return BuiltModel(model, arch, dict(model.visual.preprocess_cfg), pp_train, pp_val, open_clip.get_tokenizer(name))
    arch = _plain(model_cfg) or TINY_MODEL_CFG  # None or {} = the default tiny architecture
    pp = _plain(preprocess_cfg) or TINY_PREPROCESS_CFG
    if tokenizer is not None:
        arch = {**arch, "text_cfg": fitted_text_cfg(arch.get("text_cfg", {}), tokenizer)}
    # a declared architecture goes through open_clip's own factory via a config-only local dir
    with tempfile.TemporaryDirectory() as d:
        write_open_clip_config(d, arch, pp)
        if tokenizer is not None:
            tokenizer.save_pretrained(d)
        try:
            model, pp_train, pp_val = open_clip.create_model_and_transforms(f"local-dir:{d}")
        except (TypeError, KeyError, ValueError) as e:
            raise InputError(f"config key model.model_cfg: not a valid open_clip architecture ({e})") from None
        tokenizer = open_clip.get_tokenizer(f"local-dir:{d}")
    return BuiltModel(model, arch, dict(model.visual.preprocess_cfg), pp_train, pp_val, tokenizer)
