"""Students: output shapes for both students and all three heads, checkpoints, LoRA via peft."""

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import ViltModel

from clip_td.app.schema import StudentConfig
from tasks.heads import MLPHead, MultipleChoiceHead
from clip_td.base.io import InputError
from clip_td.lib.students import LORA_TARGET_MODULES, STUDENTS, create_student
from clip_td.lib.students.vilt import vilt_config

CFG = StudentConfig(hidden_size=32, num_layers=2, vision_layers=1, num_heads=2, intermediate_size=64, patch_size=8,
                    pretrained=None)


def _inputs(b=3, t=7):
    ids = torch.randint(5, 50, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 5:] = 0
    return torch.randn(b, 3, 32, 32), ids, mask


@pytest.mark.parametrize("name", ["vilt", "dual_stream"])
def test_shapes_and_heads(name):
    torch.manual_seed(0)
    student = create_student(name, CFG, vocab_size=50, image_size=32)
    assert name in STUDENTS and student.hidden_size == 32 and student.image_grid == (4, 4)
    out = student(*_inputs())
    assert out["pooled"].shape == (3, 32)
    assert out["image_tokens"].shape == (3, 16, 32) and out["text_tokens"].shape == (3, 7, 32)
    assert MLPHead(32, 11)(out["pooled"]).shape == (3, 11)
    assert MLPHead(32, 3)(out["pooled"]).shape == (3, 3)
    assert MultipleChoiceHead(32)(out["pooled"]).shape == (3,)


def test_dual_stream_text_is_bidirectional_and_sees_the_image():
    torch.manual_seed(0)
    student = create_student("dual_stream", CFG, vocab_size=50, image_size=32).eval()
    px, ids, mask = _inputs()
    base = student(px, ids, mask)["text_tokens"][0, 0]
    later = ids.clone()
    later[0, 4] = 3  # a later token changes the first token's output: no causal mask
    assert not torch.allclose(student(px, later, mask)["text_tokens"][0, 0], base)
    assert not torch.allclose(student(px + 1.0, ids, mask)["text_tokens"][0, 0], base)


def test_vilt_from_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    ViltModel(vilt_config(CFG, 50, 32)).save_pretrained(tmp_path / "vilt")
    cfg = StudentConfig(**{**CFG.__dict__, "pretrained": str(tmp_path / "vilt")})
    student = create_student("vilt", cfg, vocab_size=50, image_size=64)  # other input size: pos-embeds interpolate
    out = student(torch.randn(2, 3, 64, 64), torch.randint(5, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long))
    assert out["image_tokens"].shape == (2, 64, 32) and student.image_grid == (8, 8)
    with pytest.raises(InputError, match="vocab size 50"):
        create_student("vilt", cfg, vocab_size=99, image_size=32)
    with pytest.raises(InputError, match="not a loadable ViLT checkpoint"):
        create_student("vilt", StudentConfig(pretrained=str(tmp_path / "nothing")), vocab_size=50, image_size=32)


@pytest.mark.parametrize("name", ["vilt", "dual_stream"])
def test_lora_only_adapters_trainable(name):
    torch.manual_seed(0)
    student = create_student(name, CFG, vocab_size=50, image_size=32)
    student = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGET_MODULES)),
                                      student)
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(".query." in n for n in trainable) and any(".value." in n for n in trainable)
    out = student(*_inputs())
    (out["pooled"].sum() + out["image_tokens"].sum()).backward()
    assert all(p.grad is not None for n, p in student.named_parameters() if "lora_B" in n)


def _patch_image(grid=4, patch=8):
    """(1, 3, 32, 32): patch (r, c) is the constant r * grid + c + 1 (channels alike)."""
    values = torch.arange(1.0, grid * grid + 1).view(grid, grid)
    return values.repeat_interleave(patch, 0).repeat_interleave(patch, 1).expand(1, 3, -1, -1).clone(), values


def test_vilt_image_tokens_are_row_major_patches():
    """A hand-made image whose 8x8 patches are distinct constants: the student's image tokens come
    in row-major patch order (what `image_tokens` and the teacher's patch grid assume), every time."""
    torch.manual_seed(0)
    student = create_student("vilt", CFG, vocab_size=50, image_size=32).eval()
    emb = student.model.embeddings
    with torch.no_grad():  # patch embedding = the patch's mean in every channel; nothing else added
        emb.patch_embeddings.projection.weight.fill_(1.0 / (3 * 8 * 8))
        emb.patch_embeddings.projection.bias.zero_()
        emb.position_embeddings.zero_()
        emb.cls_token.zero_()
        emb.token_type_embeddings.weight.zero_()
    image, values = _patch_image()
    ids, mask = torch.randint(5, 50, (1, 5)), torch.ones(1, 5, dtype=torch.long)
    seen = []
    handle = emb.register_forward_hook(lambda m, i, o: seen.append(o[0].detach()))
    try:
        with torch.no_grad():
            out = [student(image, ids, mask) for _ in range(3)]
    finally:
        handle.remove()
    expected = values.flatten()  # 1, 2, ..., 16: row 0 left to right, then row 1, ...
    for embeddings in seen:  # (1, T + 1 + 16, h): text, image CLS, patches
        patches = embeddings[0, 5 + 1:]
        assert patches.shape == (16, 32)
        torch.testing.assert_close(patches, expected.view(16, 1).expand(16, 32))
    # `image_tokens` are the outputs at exactly those positions, identical on every forward
    assert out[0]["image_tokens"].shape == (1, 16, 32)
    assert all(torch.equal(o["image_tokens"], out[0]["image_tokens"]) for o in out[1:])
    # moving one patch's pixels moves the image token at that patch's row-major position
    other = image.clone()
    other[:, :, 16:24, 8:16] = 40.0  # patch (row 2, col 1) -> token 2 * 4 + 1 = 9
    with torch.no_grad():
        handle = emb.register_forward_hook(lambda m, i, o: seen.append(o[0].detach()))
        student(other, ids, mask)
        handle.remove()
    changed = ((seen[-1][0, 6:, 0] - expected).abs() > 1e-3).nonzero().flatten().tolist()
    assert changed == [9]


def test_from_config_vilt_patch_positions_zeros_or_sine_cosine(tmp_path):
    import math

    from clip_td.base.vilt_positions import sincos_patch_positions

    torch.manual_seed(0)
    zeros = create_student("vilt", CFG, vocab_size=50, image_size=32).model.embeddings.position_embeddings
    assert zeros.shape == (1, 17, 32) and not zeros.any()  # transformers' initialisation, the default
    cfg = StudentConfig(**{**CFG.__dict__, "patch_positions": "sincos"})
    table = create_student("vilt", cfg, vocab_size=50, image_size=32).model.embeddings.position_embeddings
    torch.testing.assert_close(table.detach(), sincos_patch_positions(4, 32))
    # patch (row 1, col 2) = token 1 + 1 * 4 + 2: its row code first, sin(1 * 1) and cos(1 * 1) at frequency 1
    assert table[0, 7, 0].item() == pytest.approx(math.sin(1.0)) and table[0, 7, 8].item() == pytest.approx(math.cos(1.0))
    assert table[0, 7, 16].item() == pytest.approx(math.sin(2.0)) and table.requires_grad
    with pytest.raises(InputError, match=r"student.patch_positions='learned': expected one of zeros, sincos"):
        create_student("vilt", StudentConfig(**{**CFG.__dict__, "patch_positions": "learned"}), vocab_size=50, image_size=32)
    with pytest.raises(InputError, match=r"needs student.hidden_size divisible by 4, got 30"):
        create_student("vilt", StudentConfig(**{**CFG.__dict__, "hidden_size": 30, "num_heads": 2,
                                                 "patch_positions": "sincos"}), vocab_size=50, image_size=32)
    ViltModel(vilt_config(CFG, 50, 32)).save_pretrained(tmp_path / "vilt")
    with pytest.raises(InputError, match=r"student.pretrained=.*brings its own positions"):
        create_student("vilt", StudentConfig(**{**CFG.__dict__, "pretrained": str(tmp_path / "vilt"),
                                                 "patch_positions": "sincos"}), vocab_size=50, image_size=32)
