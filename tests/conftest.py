"""Shared test set-up: no network, no hub downloads, deterministic threads."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


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
