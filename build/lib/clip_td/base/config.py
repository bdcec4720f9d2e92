"""Config = dataclass schema defaults <- YAML (differences only) <- command line (dinov2 style).

Every entry script calls `load_config(Schema, argv)`. An unknown key anywhere is an
`InputError` naming the key and where it came from. The result is read-only: derived
values live in local variables, never written back into the config.

A YAML file may start from another one with `_base_: relative/or/absolute.yaml`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Type

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from clip_td.base.io import InputError, PathLike, write_text_atomic

BASE_KEY = "_base_"


def parse_script_args(argv: Optional[Sequence[str]] = None, description: str = "") -> Tuple[Optional[str], list]:
    """`script.py [--config PATH] [dotted.key=value ...]` -> (config_path, overrides)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML file holding differences from the defaults")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, applied last")
    args = parser.parse_args(argv)
    return args.config, list(args.overrides)


def packaged_configs() -> Path:
    """The folder of the shipped YAML configs (the installed `configs` package)."""
    import configs

    return Path(configs.__file__).resolve().parent


def resolve_config_path(path: PathLike) -> Path:
    """`path` as given when it exists; else a shipped config named `configs/<...>` or `<...>`
    relative to the packaged folder, so `--config configs/finetune/vcr.yaml` works from any
    folder after a plain (non-editable) install."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    rel = Path(*p.parts[1:]) if p.parts and p.parts[0] == "configs" else p
    shipped = packaged_configs() / rel
    return shipped if shipped.is_file() else p


def _load_yaml(path: Path, seen: tuple = ()) -> DictConfig:
    path = resolve_config_path(path).resolve()
    if path in seen:
        raise InputError(f"{path}: {BASE_KEY} chain loops back to itself")
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError carries the line in its text
        raise InputError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, DictConfig):
        raise InputError(f"{path}: expected a mapping of config keys at the top level")
    base = cfg.pop(BASE_KEY, None)
    if base is None:
        return cfg
    base_path = Path(str(base))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    return OmegaConf.merge(_load_yaml(base_path, seen + (path,)), cfg)


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        raise InputError(f"{source}: unknown config key {key!r}") from None
    except ValidationError as e:
        key = getattr(e, "full_key", None)
        raise InputError(f"{source}: bad value for config key {key!r}: {e.msg}") from None
    except OmegaConfBaseException as e:
        raise InputError(f"{source}: {e}") from None


def load_config(
    schema: Type[Any],
    config_path: Optional[PathLike] = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Build the read-only config: schema defaults <- YAML file <- dotted overrides."""
    cfg = OmegaConf.structured(schema)
    if config_path is not None:
        cfg = _merge(cfg, _load_yaml(Path(config_path)), str(config_path))
    for item in overrides:
        if "=" not in item:
            raise InputError(f"command line: expected dotted.key=value, got {item!r}")
    if overrides:
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise InputError(f"config: required key(s) not set: {', '.join(missing)}")
    OmegaConf.set_readonly(cfg, True)
    return cfg


def save_config(cfg: DictConfig, output_dir: PathLike) -> Path:
    """Write the resolved config to `<output_dir>/config.yaml` (atomically)."""
    path = Path(output_dir) / "config.yaml"
    write_text_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def to_dict(cfg: Any) -> Any:
    """Plain Python containers (for trackers, JSON, kwargs)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
