"""LoRA through peft on a ViLT checkpoint: only adapters and the head train; the checkpoints hold
only those (the frozen base comes back from the pretrained checkpoint)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from test_finetune import TINY
from test_finetune_helpers import read_metrics, tiny_overrides


@pytest.fixture(scope="module")
def tiny_vilt(tmp_path_factory):
    """A tiny ViLT checkpoint in the Hugging Face format (model + tokenizer + image processor)."""
    from transformers import ViltConfig, ViltImageProcessor, ViltModel

    from clip_td.lib.tokenizer import build_wordpiece

    out = tmp_path_factory.mktemp("vilt") / "ckpt"
    tok = build_wordpiece(["what color size shape is the how many are there"] * 3, vocab_size=100)
    torch.manual_seed(0)
    cfg = ViltConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, image_size=32, patch_size=16, max_position_embeddings=48)
    ViltModel(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    ViltImageProcessor(size={"shortest_edge": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(str(out))
    return out, load_file(str(out / "model.safetensors"))


def test_lora_trains_adapters_and_head_only(small_world, tiny_teacher, tiny_vilt, tmp_path):
    ckpt, base = tiny_vilt
    out = tmp_path / "lora"
    from clip_td.app.trainer import main

    code = main(["--config", TINY, *tiny_overrides(small_world, tiny_teacher, out, **{
        "student.pretrained": str(ckpt), "student.lora.enabled": "true", "student.lora.r": 2,
        "method.name": "clip_td", "train.lr": 0.01})])
    assert code == 0 and read_metrics(out)["train"]["steps"] == 4
    assert not (out / "tokenizer").exists()  # the checkpoint's own tokenizer was used

    resume_state = load_file(str(out / "checkpoints" / "step_4" / "model.safetensors"))
    assert resume_state and all("lora_" in k or k.startswith(("head.", "distiller.")) for k in resume_state)
    assert any(k.startswith("distiller.") for k in resume_state)

    final = load_file(str(out / "model" / "model.safetensors"))
    assert final and all("lora_" in k or k.startswith("head.") for k in final)
    # LoRA's B starts at zero: non-zero after training means the adapters were trained
    assert any(v.abs().sum() > 0 for k, v in final.items() if "lora_B" in k)
    n_adapter = sum(v.numel() for k, v in final.items() if "lora_" in k)
    assert 0 < n_adapter < sum(v.numel() for v in base.values()) / 10

    # the frozen base is untouched: the fresh inference model (checkpoint base + saved adapters)
    from clip_td.app.build import load_for_inference

    model = load_for_inference(out)["model"]
    for name, tensor in model.student.model.state_dict().items():
        key = name.replace(".base_layer", "")
        if "lora_" not in name and key in base:
            assert torch.equal(tensor, base[key]), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)


def test_bad_target_modules_name_the_key(small_world, tiny_teacher, tiny_vilt, tmp_path, capsys):
    from clip_td.app.trainer import main

    code = main(["--config", TINY, *tiny_overrides(small_world, tiny_teacher, tmp_path / "x", **{
        "student.pretrained": str(tiny_vilt[0]), "student.lora.enabled": "true",
        "student.lora.target_modules": "[nonexistent]", "method.name": "none"})])
    assert code == 2 and "student.lora.target_modules" in capsys.readouterr().err
