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


def test_stays_frozen_through_a_real_training_step(teacher):
    """Student + distiller train on the teacher's outputs: a real backward and optimizer step leave
    every teacher parameter without a gradient and its weights unchanged."""
    from clip_td.app.schema import StudentConfig
    from clip_td.lib.distill import create_distiller, resolve_method
    from clip_td.lib.students import create_student
    from clip_td.lib.teacher_cache import teacher_outputs

    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    torch.manual_seed(0)
    cfg = StudentConfig(hidden_size=32, num_layers=1, vision_layers=1, num_heads=2, intermediate_size=64, patch_size=8,
                        pretrained=None)
    student = create_student("vilt", cfg, vocab_size=50, image_size=32)
    head = torch.nn.Linear(32, 3)
    distiller = create_distiller(resolve_method({"name": "clip_td", "tau": 1.0}), 32, teacher.embed_dim)
    params = [*student.parameters(), *head.parameters(), *distiller.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.5)

    pixels = torch.randn(2, 3, 32, 32)
    teacher_pixels = pixels.clone().requires_grad_(True)  # even an input that wants a gradient gets none
    t_out = teacher_outputs(teacher, teacher_pixels, ["a red cube", "a dog"], [["yes", "no", "maybe"]] * 2, [0, 2])
    assert all(not v.requires_grad for v in t_out.values() if torch.is_tensor(v))
    s_out = student(pixels, torch.randint(5, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long))
    logits = head(s_out["pooled"])
    terms = distiller(s_out, t_out, {}, logits)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    loss = loss + sum(v for k, v in terms.items() if k.endswith("_loss"))
    assert sorted(k for k in terms if k.endswith("_loss")) == ["ans_loss", "glob_loss", "tok_loss"]
    loss.backward()
    optimizer.step()
    assert distiller.proj_v.weight.grad.abs().sum() > 0  # the backward really reached the student side
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert teacher_pixels.grad is None
    for name, p in teacher.model.named_parameters():
        assert p.grad is None and not p.requires_grad, name
    after = teacher.model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def _open_clip_image_forward(teacher, x):
    """open_clip's own `encode_image`, with a hook on ln_post (applied to every token in this
    open_clip, before pooling): -> (pooled embedding from open_clip, ln_post output (B, 1 + Nv, width))."""
    visual = teacher.model.visual
    assert not visual.final_ln_after_pool and visual.attn_pool is None
    seen = {}
    handle = visual.ln_post.register_forward_hook(lambda m, i, o: seen.__setitem__("ln_post", o.detach()))
    try:
        with torch.no_grad():
            pooled = teacher.model.encode_image(x)
    finally:
        handle.remove()
    return pooled, seen["ln_post"]


def test_image_outputs_match_open_clip(teacher):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    out = teacher.encode_images(x)
    assert out["patch_tokens"].shape == (2, 16, 32) and teacher.grid_size == (4, 4) and teacher.embed_dim == 32
    pooled, ln_post = _open_clip_image_forward(teacher, x)
    proj = teacher.model.visual.proj
    torch.testing.assert_close(ln_post[:, 0] @ proj, pooled)  # the hook saw the forward open_clip pooled
    torch.testing.assert_close(out["image_embed"], torch.nn.functional.normalize(pooled, dim=-1))
    # patch tokens = the same forward's ln_post outputs of the 16 patches, projected, in grid order
    torch.testing.assert_close(out["patch_tokens"], ln_post[:, 1:] @ proj)
    # and by hand: a patch's token depends on its own 8x8 pixels through conv1; changing the pixels
    # of patch (row 1, col 2) only changes the open_clip forward and our token 1 * 4 + 2 the most
    y = x.clone()
    y[:, :, 8:16, 16:24] += 3.0
    moved = (teacher.encode_images(y)["patch_tokens"] - out["patch_tokens"]).norm(dim=-1)  # (2, 16)
    assert moved.argmax(dim=1).tolist() == [6, 6]


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


def test_resnet_tower_gives_value_path_tokens_and_clip_embedding(tmp_path):
    """A ModifiedResNet teacher (CLIP's RN family): image_embed is open_clip's, and the dense
    tokens are the attention pool's value path, checked through the pool's own output: with one
    head the pooled vector is sum_j a_j c_proj(v_j) over the mean token and the positions, with
    a = softmax(q_0 . k_j / sqrt(C)) computed here by hand."""
    import open_clip

    d = save_tiny_teacher(tmp_path / "rn", resnet=True, image_size=64, width=64)
    t = FrozenTeacher.from_name(f"local-dir:{d}")
    visual = t.model.visual
    assert visual.attnpool.num_heads == 1 and t.grid_size == (2, 2)
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 64, 64)
    out = t.encode_images(pixels)
    assert out["patch_tokens"].shape == (3, 4, t.embed_dim)
    ref = open_clip.create_model_and_transforms(f"local-dir:{d}")[0].eval()
    with torch.no_grad():
        torch.testing.assert_close(out["image_embed"], torch.nn.functional.normalize(ref.encode_image(pixels), dim=-1),
                                   rtol=1e-4, atol=1e-5)
        pool = visual.attnpool
        fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))
        x = torch.cat([fmap.flatten(2).mean(-1, keepdim=True), fmap.flatten(2)], dim=2).transpose(1, 2)
        x = x + pool.positional_embedding  # (B, 1 + HW, C)
        q, k = pool.q_proj(x[:, :1]), pool.k_proj(x)
        a = torch.softmax((q @ k.transpose(1, 2)) / x.shape[-1] ** 0.5, dim=-1)  # (B, 1, 1 + HW)
        mean_token = pool.c_proj(pool.v_proj(x[:, :1]))  # (B, 1, d)
        values = torch.cat([mean_token, out["patch_tokens"]], dim=1)
        torch.testing.assert_close((a @ values).squeeze(1), pool(fmap), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="use relevance_topk"):
        t.encode_images(pixels, cls_attention=True)


def test_vit_value_path_tokens_equal_self_only_attention(tmp_path):
    """teacher.dense=value on a one-block ViT: each patch token is what the block's own attention
    module gives when every token may attend only to itself (out_proj(v_j)), times the layer
    scale, then ln_post and proj; the global embedding is unchanged."""
    d = save_tiny_teacher(tmp_path / "vit", image_size=32, patch_size=8, width=32, layers=1)
    t = FrozenTeacher.from_name(f"local-dir:{d}")
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    base = t.encode_images(pixels)
    fp = t.fingerprint()
    t.set_dense("value")
    out = t.encode_images(pixels)
    assert out["patch_tokens"].shape == base["patch_tokens"].shape == (2, 16, t.embed_dim)
    torch.testing.assert_close(out["image_embed"], base["image_embed"])
    visual = t.model.visual
    block = visual.transformer.resblocks[0]
    with torch.no_grad():
        y = block.ln_1(visual._embeds(pixels))  # the only block's input, normalised
        n = y.shape[1]
        self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
        attended = block.attn(y, y, y, attn_mask=self_only, need_weights=False)[0]
        ref = visual.ln_post(block.ls_1(attended)[:, 1:]) @ visual.proj
    torch.testing.assert_close(out["patch_tokens"], ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out["patch_tokens"], base["patch_tokens"], atol=1e-3)
    assert t.fingerprint() != fp and t.dense_text == "dense=value,scale=1"
    assert t.set_dense("auto").fingerprint() == fp  # the tower's own tokens keep the old cache key
    with pytest.raises(InputError, match="teacher.dense_scale=2 needs a ResNet"):
        t.set_dense("value", 2)
    with pytest.raises(InputError, match="teacher.dense: unknown value 'pixels'"):
        t.set_dense("pixels")


def test_resnet_dense_scale_gives_a_finer_grid_from_a_larger_pass(tmp_path):
    """teacher.dense_scale=2 on a ResNet (64 px, 2x2 grid): a 4x4 grid whose tokens are the value
    path of the trunk run at 128 px (checked on an independently loaded open_clip model, with
    the positional embedding zeroed so the resizing drops out); image_embed stays the native one."""
    import open_clip

    d = save_tiny_teacher(tmp_path / "rn", resnet=True, image_size=64, width=64)
    t = FrozenTeacher.from_name(f"local-dir:{d}")
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    base = t.encode_images(pixels)
    fp = t.fingerprint()
    t.set_dense("auto", 2)
    assert t.grid_size == (4, 4) and t.fingerprint() != fp
    out = t.encode_images(pixels)
    assert out["patch_tokens"].shape == (2, 16, t.embed_dim)
    torch.testing.assert_close(out["image_embed"], base["image_embed"])
    ref = open_clip.create_model_and_transforms(f"local-dir:{d}")[0].eval().visual
    with torch.no_grad():
        for v in (t.model.visual, ref):
            v.attnpool.positional_embedding.zero_()
        out = t.encode_images(pixels)
        big = torch.nn.functional.interpolate(pixels, size=(128, 128), mode="bilinear", align_corners=False)
        fmap = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.stem(big)))))  # (2, C, 4, 4)
        want = ref.attnpool.c_proj(ref.attnpool.v_proj(fmap.flatten(2).transpose(1, 2)))
    torch.testing.assert_close(out["patch_tokens"], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="teacher.dense=tokens needs a ViT"):
        t.set_dense("tokens")
    with pytest.raises(InputError, match="teacher.dense_scale: expected an integer >= 1"):
        t.set_dense("auto", 0)
