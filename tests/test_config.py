from dataclasses import dataclass, field

import pytest

from clip_td.base.config import load_config, save_config
from clip_td.base.io import InputError
from clip_td.base.registry import Registry


@dataclass
class TrainCfg:
    lr: float = 1e-3
    max_steps: int | None = None


@dataclass
class Schema:
    output_dir: str = "runs/x"
    seed: int = 0
    train: TrainCfg = field(default_factory=TrainCfg)


def test_precedence_defaults_yaml_cli(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 3\ntrain:\n  lr: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\ntrain:\n  max_steps: 7\n")
    cfg = load_config(Schema, child, ["train.lr=0.25"])
    assert cfg.seed == 3 and cfg.train.lr == 0.25 and cfg.train.max_steps == 7
    assert cfg.output_dir == "runs/x"
    with pytest.raises(Exception):
        cfg.seed = 4  # read-only


def test_unknown_key_is_named(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  lrr: 1\n")
    with pytest.raises(InputError, match=r"train\.lrr"):
        load_config(Schema, y)
    with pytest.raises(InputError, match=r"command line: unknown config key 'train.nope'"):
        load_config(Schema, None, ["train.nope=1"])
    with pytest.raises(InputError, match="bad value for config key 'seed'"):
        load_config(Schema, None, ["seed=abc"])
    with pytest.raises(InputError, match="expected dotted.key=value"):
        load_config(Schema, None, ["seed"])


def test_save_config_roundtrip(tmp_path):
    cfg = load_config(Schema, None, ["seed=5"])
    path = save_config(cfg, tmp_path / "out")
    assert path.read_text().splitlines()[1] == "seed: 5"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml"]


def test_registry():
    reg = Registry("widget")

    @reg.register("a")
    def make_a(x=1):
        return ("a", x)

    assert reg.create("a", x=2) == ("a", 2)
    assert reg.names() == ["a"]
    with pytest.raises(KeyError, match="unknown widget 'b'; expected one of: a"):
        reg.get("b")
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("a")(make_a)
    with pytest.raises(InputError, match="^widget.name='b': unknown widget 'b'; expected one of: a$"):
        reg.get("b", key="widget.name")  # a user error: one line naming the config key
    reg.unregister("a")
    assert reg.names() == [] and "a" not in reg
