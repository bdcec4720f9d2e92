"""Shared test set-up: no network, no hub downloads, deterministic threads."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

# The suite runs on pytest-xdist workers (`-n auto` in pyproject.toml), several jobs on the
# machine's cores at once: one OpenMP thread per worker (set before torch is imported, and
# inherited by the subprocesses a test starts), or the workers' spinning threads slow each
# other many times over.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.slow` tests are skipped unless the marker expression names them (-m slow)."""
    import pytest

    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each run builds its own Accelerator; accelerate keeps process-wide singletons, reset after
    every test so one test's Accelerator never leaks into the next."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def no_default_student_training(monkeypatch):
    """A test that reaches `student.pretrained=default` would train the real default student for
    minutes: fail it at once instead (tests use a from-scratch student or a tiny folder)."""
    from pretrain.student import default_student

    def refuse(run_dir, overrides):
        raise AssertionError("a test asked for the default pretrained student; set student.pretrained=null")

    monkeypatch.setattr(default_student, "_train", refuse)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """`clip-td data synth --size small` (64 px), built once per test session."""
    from tasks.synthetic import build_world

    out = tmp_path_factory.mktemp("world") / "synth"
    build_world(out, seed=0, size="small", image_size=64, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A random 1-layer open_clip ViT teacher (32 px, patch 8) saved as a local-dir."""
    from clip_td.testing.tiny_checkpoints import save_tiny_teacher

    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny", seed=0)
