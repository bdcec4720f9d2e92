"""Concept distillation pieces and the few-shot probes."""

import math

import pytest
import torch
from safetensors.torch import save_file

from clip_td.base.io import InputError
from pretrain.concepts import FrozenConceptTeacher, concept_kl, create_concept_teacher
from pretrain.metrics import fit_probe, kshot_split, recall_at_k


def test_concept_kl_hand_computed():
    s = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> (1/4, 3/4)
    t = torch.tensor([[0.0, 0.0]])  # (1/2, 1/2)
    ref = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert concept_kl(s, t, 1.0).item() == pytest.approx(ref, abs=1e-6)
    # at T=2 the logits halve and the KL is scaled by T^2
    s2, t2 = torch.tensor([[0.0, 2 * math.log(3.0)]]), t
    assert concept_kl(s2, t2, 2.0).item() == pytest.approx(4 * ref, abs=1e-6)


def test_timm_teacher_from_local_weights(tmp_path):
    import timm

    ref = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    net = create_concept_teacher("timm:resnet10t", weights=str(path), num_classes=5)
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    teacher = FrozenConceptTeacher(net, mean, std, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    raw = torch.rand(2, 3, 32, 32)
    clip_px = (raw - 0.5) / 0.25
    tv_px = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(teacher(clip_px), ref(tv_px), atol=1e-4)
    teacher.train()
    assert not teacher.net.training and not any(p.requires_grad for p in teacher.parameters())


def test_torchvision_teacher_and_bad_specs(tmp_path):
    import torchvision

    ref = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=4).eval()
    path = tmp_path / "mb.pt"
    torch.save(ref.state_dict(), path)
    net = create_concept_teacher("torchvision:mobilenet_v3_small", weights=str(path), num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x))
    with pytest.raises(InputError, match="concept.teacher"):
        create_concept_teacher("keras:vgg")
    with pytest.raises(InputError, match="concept.teacher_weights"):
        create_concept_teacher("timm:resnet10t", weights=str(tmp_path / "missing.pt"))


def test_recall_at_k_hand():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.0, 0.1, 0.2]])
    r = recall_at_k(sim, [{0}, {1}, {0}], ks=(1, 2))
    assert r[1] == pytest.approx(100 * 1 / 3) and r[2] == pytest.approx(100 * 2 / 3)


def test_kshot_split_is_per_class_and_seeded():
    labels = [0, 1, 0, 1, 0, 1, 2, 2]
    tr, te = kshot_split(labels, 1, seed=0)
    assert sorted(labels[i] for i in tr) == [0, 1, 2]
    assert sorted(tr + te) == list(range(8))
    assert kshot_split(labels, 1, seed=0) == (tr, te)


def test_diht_probe_stays_in_the_ball():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    w0 = torch.randn(4, 3, generator=g)
    predict = fit_probe(x, y, w0, delta=0.1, delta_b=0.05, steps=50, lr=0.5)
    eye = torch.eye(4)
    w_plus_b = predict(eye)  # rows: W[i] + b
    bias = predict(torch.zeros(1, 4))[0]
    assert (bias.norm() <= 0.05 + 1e-6)
    assert ((w_plus_b - bias) - w0).norm() <= 0.1 + 1e-5
    # an unbounded probe moves further and fits the shots
    free = fit_probe(x, y, w0, steps=200, lr=0.5)
    assert (free(x).argmax(1) == y).all()
