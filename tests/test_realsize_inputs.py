"""Bad input on the real-size path, one clear message each: a teacher patch grid that cannot be
mapped onto the student's, texts longer than the teacher's context (truncated, warned once), and
bf16 asked on a CPU without bf16. Plus the shipped real-size configs resolve to ViLT-B/32 shapes."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from clip_td.base.io import InputError
from clip_td.lib.token_grid import check_grid_alignment
from test_finetune_helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "finetune" / "tiny.yaml")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_finetune(world, teacher, out, **overrides) -> int:
    from clip_td.app.trainer import main

    return main(["--config", TINY, *tiny_overrides(world, teacher, out, **overrides)])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---- teacher grid vs student grid ---------------------------------------------------------------


@pytest.mark.parametrize("student, teacher", [((12, 12), (7, 7)), ((12, 12), (14, 14)), ((4, 4), (4, 4)),
                                              ((2, 2), (16, 16))])
def test_square_grids_of_any_sizes_map(student, teacher):
    check_grid_alignment(student, teacher, teacher="ViT-B-32")  # no error


@pytest.mark.parametrize(
    "student, teacher, message",
    [
        ((12, 12), (14, 7), "teacher 'T' patch grid 14x7 cannot be mapped to the student's 12x12 image-token grid: "
                            "token distillation resamples square grids only (use square image sizes for both)"),
        ((12, 6), (7, 7), "teacher 'T' patch grid 7x7 cannot be mapped to the student's 12x6 image-token grid"),
        (None, (7, 7), "student has no image-token grid (got none); it cannot be aligned with teacher 'T', "
                       "whose patch grid is 7x7"),
        ((0, 0), (7, 7), "student has no image-token grid (got 0x0)"),
        ((12, 12), (0, 0), "teacher 'T' gives no patch tokens (grid 0x0); it cannot be aligned with the "
                           "student's 12x12 image-token grid"),
        ((12, 12), None, "teacher 'T' gives no patch tokens (grid none)"),
    ],
)
def test_unmappable_grids_name_both_sizes(student, teacher, message):
    with pytest.raises(InputError) as e:
        check_grid_alignment(student, teacher, teacher="T")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_check_alignment_uses_the_grid_check():
    from clip_td.app.teacher_setup import check_alignment

    student = SimpleNamespace(image_grid=(12, 12))
    check_alignment(student, SimpleNamespace(embed_dim=512, grid_size=(7, 7)), "ViT-B-32")
    with pytest.raises(InputError, match="patch grid 7x14 cannot be mapped to the student's 12x12"):
        check_alignment(student, SimpleNamespace(embed_dim=512, grid_size=(7, 14)), "wide")
    with pytest.raises(InputError, match="student has no image-token grid"):
        check_alignment(SimpleNamespace(), SimpleNamespace(embed_dim=512, grid_size=(7, 7)), "ViT-B-32")
    with pytest.raises(InputError, match="gives no patch tokens"):
        check_alignment(student, SimpleNamespace(embed_dim=0, grid_size=(7, 7)), "no-proj")


def test_non_square_teacher_is_one_error_line(small_world, tmp_path, capsys):
    from clip_td.testing.tiny_checkpoints import save_tiny_teacher

    wide = save_tiny_teacher(tmp_path / "wide", image_size=[32, 16])  # a 4x2 patch grid
    assert run_finetune(small_world, wide, tmp_path / "run", **{"method.name": "clip_td"}) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: teacher 'local-dir:{wide}' patch grid 4x2 cannot be mapped to the student's "
                           "4x4 image-token grid")


# ---- texts longer than the teacher's context ----------------------------------------------------


@pytest.fixture()
def ctx24_teacher(tmp_path):
    from clip_td.lib.teacher import FrozenTeacher
    from clip_td.testing.tiny_checkpoints import save_tiny_teacher

    return FrozenTeacher.from_name(f"local-dir:{save_tiny_teacher(tmp_path / 't', context_length=24)}")


def test_long_texts_are_truncated_with_one_warning(ctx24_teacher):
    fits = " ".join("abcdefghijklmnopqrstuv")  # 22 single-letter tokens + start + end = 24: fits exactly
    over = " ".join("abcdefghijklmnopqrstuvw")  # 25 tokens
    longer = "a red cube left of a blue sphere " * 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ctx24_teacher.encode_texts([fits, "a dog"])
        assert not caught  # nothing was cut
        out = ctx24_teacher.encode_texts([over, fits, longer, "a dog"])
        ctx24_teacher.encode_texts([longer])  # warned once per teacher
    messages = [str(w.message) for w in caught]
    assert messages == [f"teacher {ctx24_teacher.name!r}: 2 of 4 texts are longer than its context length of 24 "
                        "tokens and were truncated (warned once per teacher)"]
    assert out["token_feats"].shape[1] <= 24 and int(out["token_mask"][0].sum()) == 22  # start/end kept


def test_openai_tag_switches_quick_gelu_on():
    from clip_td.lib.teacher import _tag_wants_quick_gelu

    assert _tag_wants_quick_gelu("ViT-B-32", "openai") and _tag_wants_quick_gelu("ViT-B-16", "openai")
    assert not _tag_wants_quick_gelu("ViT-B-32-quickgelu", "openai")  # already QuickGELU
    assert not _tag_wants_quick_gelu("ViT-B-32", None) and not _tag_wants_quick_gelu("ViT-B-32", "/w/model.pt")


# ---- bf16 on a CPU without it --------------------------------------------------------------------


def test_bf16_on_a_cpu_without_bf16_is_one_error_line(small_world, tiny_teacher, tmp_path, capsys, monkeypatch):
    import clip_td.app.trainer as trainer

    monkeypatch.setattr(trainer, "training_on_cpu", lambda: True)
    monkeypatch.setattr(trainer, "cpu_supports_bf16", lambda: False)
    code = run_finetune(small_world, tiny_teacher, tmp_path / "bf16", **{"train.mixed_precision": "bf16"})
    assert code == 2
    assert one_error_line(capsys) == ("error: train.mixed_precision=bf16: this CPU has no bf16 support (no oneDNN "
                                      "bf16 kernels: needs AVX512-BF16, AMX or AVX512); use train.mixed_precision=no")
    assert not (tmp_path / "bf16" / "metrics.json").exists()


def test_bf16_check_passes_where_supported(monkeypatch):
    import clip_td.app.trainer as trainer

    monkeypatch.setattr(trainer, "training_on_cpu", lambda: True)
    monkeypatch.setattr(trainer, "cpu_supports_bf16", lambda: True)
    trainer.check_mixed_precision("bf16")
    monkeypatch.setattr(trainer, "cpu_supports_bf16", lambda: False)
    trainer.check_mixed_precision("no")  # only bf16 is probed


def test_cpu_bf16_probe_agrees_with_onednn():
    from clip_td.app.trainer import cpu_supports_bf16

    assert cpu_supports_bf16() == bool(torch.backends.mkldnn.is_available()
                                       and torch.ops.mkldnn._is_mkldnn_bf16_supported())


# ---- the shipped real-size configs -----------------------------------------------------------------


@pytest.mark.parametrize("name, teacher, teacher_grid", [("realsize_vitb32", "ViT-B-32", (7, 7)),
                                                         ("realsize_vitb16", "ViT-B-16", (14, 14))])
def test_realsize_configs_resolve_to_vilt_b32_shapes(name, teacher, teacher_grid):
    from clip_td.app.build import image_settings
    from clip_td.app.schema import FinetuneConfig
    from clip_td.base.config import load_config

    cfg = load_config(FinetuneConfig, str(REPO / "configs" / "finetune" / f"{name}.yaml"), [])
    s = cfg.student
    assert (s.name, s.hidden_size, s.num_layers, s.num_heads, s.intermediate_size, s.patch_size, s.max_text_len) == \
        ("vilt", 768, 12, 12, 3072, 32, 40)
    assert image_settings(cfg)[0] == 384 and cfg.data.image_size == 224 and cfg.task.name == "vqa"
    assert cfg.teacher.model == teacher and cfg.teacher.pretrained is None and s.pretrained is None
    # the open_clip config of the teacher gives the grid the distiller resamples from
    import open_clip

    vision = open_clip.get_model_config(teacher)["vision_cfg"]
    assert (vision["image_size"] // vision["patch_size"],) * 2 == teacher_grid
    check_grid_alignment((384 // s.patch_size,) * 2, teacher_grid, teacher=teacher)
