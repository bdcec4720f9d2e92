"""bench/student_patch_probe.py: linear probes of the object under each patch token."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from clip_td.base.io import InputError

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("student_patch_probe", REPO / "bench" / "student_patch_probe.py")
pp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pp)


def test_a_probe_reads_a_linearly_coded_label_and_not_an_absent_one():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (800,), generator=g)
    x = torch.cat([torch.nn.functional.one_hot(y, 4).float(), torch.randn(800, 6, generator=g)], dim=1)
    assert pp.fit_probe(x[:600], y[:600], x[600:], y[600:], 4) == 100.0
    noise = torch.randn(800, 10, generator=g)
    assert 10.0 < pp.fit_probe(noise[:600], y[:600], noise[600:], y[600:], 4) < 40.0  # chance 25


def test_probe_layer_splits_by_scene_and_scores_object_patches_only():
    g = torch.Generator().manual_seed(1)
    scenes, patches = 40, 16
    labels = torch.stack([torch.randint(0, 10, (scenes, patches), generator=g),
                          torch.randint(0, 9, (scenes, patches), generator=g),  # 8 = background
                          torch.randint(0, 3, (scenes, patches), generator=g)], dim=-1)
    # the features code colour and size exactly and nothing of shape
    x = torch.cat([torch.nn.functional.one_hot(labels[..., 0], 10), torch.nn.functional.one_hot(labels[..., 2], 3),
                   torch.randn(scenes, patches, 4, generator=g)], dim=-1).float()
    on = labels[..., 1] != 8
    r = pp.probe_layer(x, labels)
    assert r["train_patches"] == int(on[:30].sum()) and r["test_patches"] == int(on[30:].sum())
    assert r["colour"] == 100.0 and r["size"] == 100.0 and r["shape"] < 30.0  # chance 12.5


def _tiny_student(folder: Path):
    from transformers import ViltConfig, ViltModel

    from pretrain.student.data import build_tokenizer

    tok = build_tokenizer([{"c": "a red circle"}], ["c"], vocab_size=100)
    vilt = ViltModel(ViltConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, image_size=32, patch_size=8, max_image_length=-1))
    vilt.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return vilt


def test_the_bench_reads_a_folder_and_an_image_init_file_beside_its_run(tmp_path):
    from pretrain.student.image_init import save_image_init

    vilt = _tiny_student(tmp_path / "run" / "student")
    with torch.no_grad():
        for p in vilt.parameters():
            p.add_(0.5)
    save_image_init(vilt, tmp_path / "run" / "image_init.safetensors")
    folder_model, _ = pp.load_student(tmp_path / "run" / "student")
    init_model, _ = pp.load_student(tmp_path / "run" / "image_init.safetensors")
    name, param = next(iter(vilt.state_dict().items()))
    assert torch.equal(init_model.state_dict()[name], param) and not torch.equal(folder_model.state_dict()[name], param)
    out = tmp_path / "probe.json"
    result = pp.main([str(tmp_path / "run" / "student"), str(tmp_path / "run" / "image_init.safetensors"),
                      "--scenes", "16", "--layers", "0", "-1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result)) and saved["chance"]["shape"] == 12.5
    assert sorted(saved["students"][str(tmp_path / "run" / "student")]) == ["-1", "0"]
    r = saved["students"][str(tmp_path / "run" / "image_init.safetensors")]["-1"]
    assert r["test_patches"] > 0 and all(0.0 <= r[a] <= 100.0 for a in ("colour", "shape", "size"))
    with pytest.raises(InputError, match="expected a ViLT folder"):
        pp.main([str(tmp_path), "--out", str(tmp_path / "x.json")])
