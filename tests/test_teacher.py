"""FrozenTeacher: frozen behaviour, joint-space outputs equal open_clip's, clear load errors."""

import pytest
import torch

from clip_td.base.io import InputError
from clip_td.lib.teacher import FrozenTeacher, token_offsets
from clip_td.testing.tiny_checkpoints import save_tiny_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    d = save_tiny_teacher(tmp_path_factory.mktemp("t") / "teacher")
    return FrozenTeacher.from_name(f"local-dir:{d}")


def test_stays_frozen_and_in_eval(teacher):
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = teacher.encode_images(x)
    assert not out["patch_tokens"].requires_grad and x.grad is None


def test_image_outputs_match_open_clip(teacher):
    x = torch.randn(2, 3, 32, 32)
    out = teacher.encode_images(x)
    assert out["patch_tokens"].shape == (2, 16, 32) and teacher.grid_size == (4, 4) and teacher.embed_dim == 32
    ref = teacher.model.encode_image(x, normalize=True)
    torch.testing.assert_close(out["image_embed"], ref)
    # patch tokens = ln_post + proj of the trunk's patch outputs (independent recomputation)
    v = teacher.model.visual
    trunk = v.transformer(v._embeds(x))
    torch.testing.assert_close(out["patch_tokens"], v.ln_post(trunk[:, 1:]) @ v.proj)


def test_text_outputs(teacher):
    texts = ["What color is the CUBE?", "a dog"]
    out = teacher.encode_texts(texts)
    torch.testing.assert_close(out["text_embed"], teacher.model.encode_text(teacher.tokenize(texts), normalize=True))
    assert out["token_mask"].sum(1).tolist() == [6, 2]  # what, color, is, the, cube, ? / a, dog
    assert out["offsets"][0] == [(0, 4), (5, 10), (11, 13), (14, 17), (18, 22), (22, 23)]
    assert out["offsets"][1] == [(0, 1), (2, 5)]
    # token features at the end-of-text position, projected, equal the pooled embedding
    eot = int(out["token_mask"][1].sum()) + 1
    pooled = torch.nn.functional.normalize(out["token_feats"][1, eot], dim=-1)
    torch.testing.assert_close(pooled, out["text_embed"][1])


def test_subword_offsets_split_a_word(teacher):
    # a rare word splits into several BPE pieces whose spans tile the word
    spans = token_offsets(teacher.tokenizer, "zxqvbnm", 10)
    pieces = [s for s in spans if s != (-1, -1)]
    assert len(pieces) > 1 and pieces[0][0] == 0 and pieces[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_cls_attention(teacher):
    att = teacher.encode_images(torch.randn(2, 3, 32, 32), cls_attention=True)["cls_attention"]
    assert att.shape == (2, 16) and (att >= 0).all() and (att.sum(1) < 1).all()


def test_fingerprint_changes_with_weights(tmp_path, teacher):
    other = FrozenTeacher.from_name(f"local-dir:{save_tiny_teacher(tmp_path / 'b', seed=1)}")
    assert other.fingerprint() != teacher.fingerprint()
    assert teacher.fingerprint() == teacher.fingerprint()


def test_bad_paths_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="directory not found"):
        FrozenTeacher.from_name(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an open_clip model dir"):
        FrozenTeacher.from_name(f"local-dir:{tmp_path / 'empty'}")
    with pytest.raises(InputError, match="not a loadable open_clip model"):
        FrozenTeacher.from_name("no-such-architecture")
