"""The student's initial patch position embeddings (config key model.patch_positions): the
2-D sine-cosine table on a hand-computed case, the model's initial weights, the cache key, the
resume signature and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from clip_td.base.io import InputError
from pretrain.student import load_student_config
from pretrain.student.model import StudentPretrainModel, sincos_patch_positions, vilt_config
from pretrain.student.train import main
from test_pretrain_student import CAPTIONS_ONLY, TINY, write_corpus


def test_the_sine_cosine_table_codes_row_then_column():
    # width 4: one frequency (1 / 10000^0 = 1); a patch (r, c) is [sin r, cos r, sin c, cos c]
    table = sincos_patch_positions(2, 4)
    s, c = math.sin(1.0), math.cos(1.0)
    expected = torch.tensor([[[0, 0, 0, 0],  # the image's [CLS] slot
                              [0, 1, 0, 1], [0, 1, s, c],  # row 0: columns 0 and 1
                              [s, c, 0, 1], [s, c, s, c]]], dtype=torch.float32)  # row 1
    torch.testing.assert_close(table, expected)
    # width 8: frequencies 1 and 1 / 100; the row code of row 3 is [sin 3, sin .03, cos 3, cos .03]
    row3 = sincos_patch_positions(4, 8)[0, 1 + 3 * 4, :4]
    torch.testing.assert_close(row3, torch.tensor([math.sin(3), math.sin(0.03), math.cos(3), math.cos(0.03)]))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_patch_positions(2, 6)


def test_the_model_starts_from_the_chosen_positions():
    class M:  # the `model` section
        hidden_size, num_layers, num_heads, intermediate_size, patch_size, max_text_len = 8, 1, 2, 16, 8, 16

    config = vilt_config(M, 30, 16)  # 2 x 2 patches
    zeros = StudentPretrainModel(config).mlm.vilt.embeddings.position_embeddings
    assert zeros.shape == (1, 5, 8) and not zeros.any()
    sincos = StudentPretrainModel(config, patch_positions="sincos").mlm.vilt.embeddings.position_embeddings
    torch.testing.assert_close(sincos.detach(), sincos_patch_positions(2, 8))
    assert sincos.requires_grad  # an initialisation, still trained
    with pytest.raises(ValueError, match="patch_positions='learned'"):
        StudentPretrainModel(config, patch_positions="learned")


def test_zeros_keep_the_captions_only_students_cache_key_and_sincos_changes_it():
    from pretrain.student.default_student import recipe_hash

    off = [k for k in CAPTIONS_ONLY if not k.startswith("model.patch_positions")]
    key = recipe_hash([*off, "model.patch_positions=zeros"])
    assert key == "9cae16cce95a1e91"  # the key it had before the option existed
    assert recipe_hash(off) != key  # the default recipe starts from sine-cosine positions
    assert recipe_hash([*off, "model.patch_positions=sincos"]) == recipe_hash(off) != key


def test_a_checkpoint_resumes_only_with_the_same_positions(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", *TINY, f"output_dir={tmp_path / 'a'}"]
    main([*base, "train.max_steps=2", "train.checkpoint_every=2"])
    with pytest.raises(InputError, match="incompatible run"):
        main([*base, "train.max_steps=3", "train.resume=latest", "model.patch_positions=sincos"])
    assert main([*base, "train.max_steps=3", "train.resume=latest"])["train"]["steps"] == 3


@pytest.mark.parametrize("bad, match", [
    (["model.patch_positions=learned"], r"model.patch_positions=learned: expected one of zeros, sincos"),
    (["model.patch_positions=sincos", "model.hidden_size=30", "model.num_heads=2"],
     r"model.hidden_size=30: the sine-cosine code needs a width divisible by 4"),
])
def test_bad_position_settings_are_one_message_each(tmp_path, bad, match):
    from pretrain.student.train import build

    with pytest.raises(InputError, match=match):
        build(load_student_config(None, [f"data.root={write_corpus(tmp_path)}", *TINY, *bad]))
