"""HN-NCE, InfoNCE and ALIP losses against open_clip and hand-computed references."""

import math
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from pretrain.alip_gates import ALIPGates
from clip_td.base.io import InputError
from pretrain.losses import ALIPLoss, ConceptLoss, HardNegativeNCELoss, InfoNCELoss, compute_losses, create_loss, total_loss


def _feats(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    b = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return a, b


def test_hn_nce_equals_clip_loss_at_alpha1_beta0():
    img, txt = _feats()
    scale = torch.tensor(7.5)
    ours = HardNegativeNCELoss(alpha=1.0, beta=0.0)(img, txt, scale)
    ref = ClipLoss()(img, txt, scale)
    assert torch.allclose(ours, ref, atol=1e-6), (ours, ref)
    assert torch.allclose(InfoNCELoss()(img, txt, scale), ref, atol=1e-6)


def _hn_nce_loops(x, y, scale, alpha, beta):
    """Explicit float64 loops over the HN-NCE formula of docs/method.md (independent of the vectorised code)."""
    x, y = x.double().tolist(), y.double().tolist()
    n = len(x)
    s = [[scale * sum(a * b for a, b in zip(x[i], y[j])) for j in range(n)] for i in range(n)]

    def one_side(s):
        total = 0.0
        for i in range(n):
            z = sum(math.exp(beta * s[i][k]) for k in range(n) if k != i)
            denom = alpha * math.exp(s[i][i])
            for j in range(n):
                if j != i:
                    w = (n - 1) * math.exp(beta * s[i][j]) / z
                    denom += w * math.exp(s[i][j])
            total += -math.log(math.exp(s[i][i]) / denom)
        return total / n

    st = [[s[j][i] for j in range(n)] for i in range(n)]
    return (one_side(s) + one_side(st)) / 2


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.5), (0.5, 2.0), (0.0, 1.0)])
def test_hn_nce_hand_computed_3x3(alpha, beta):
    img, txt = _feats(n=3, d=4, seed=1)
    scale = 3.0
    ours = HardNegativeNCELoss(alpha=alpha, beta=beta)(img, txt, torch.tensor(scale))
    ref = _hn_nce_loops(img, txt, scale, alpha, beta)
    assert abs(ours.item() - ref) < 1e-5, (ours.item(), ref)


def test_alip_gates_and_loss_hand_computed():
    # 2 samples in 2-d, unit vectors chosen so the similarities are easy to read
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gates = ALIPGates()
    gates.m_T.fill_(0.5)
    gates.m_x.fill_(0.5)
    gates.m_c.fill_(0.5)
    # s_T = [1, 0], s_x = [1, 0], s_c = [1, 1]
    w_s, w_x, w_c = gates(v, t, c)
    e = math.exp
    assert torch.allclose(w_s, torch.tensor([1.0, e(-1.0)]))  # min(exp(2(s_T - .5)), 1)
    assert torch.allclose(w_x, torch.tensor([1.0, e(-1.0)]))  # sample 0 consistent -> 1
    assert torch.allclose(w_c, torch.tensor([1.0, e(1.0)]))
    # running means moved by 1% toward the batch means
    assert gates.m_T.item() == pytest.approx(0.99 * 0.5 + 0.01 * 0.5)
    assert gates.m_c.item() == pytest.approx(0.99 * 0.5 + 0.01 * 1.0)

    gates = ALIPGates()
    for m in (gates.m_T, gates.m_x, gates.m_c):
        m.fill_(0.5)
    scale = 2.0
    loss = ALIPLoss(gates)(v, t, torch.tensor(scale), caption_features=c)
    # hand: logits V T^T = 2*[[1,1],[0,0]]; row CE is log 2 each; T V^T = 2*[[1,0],[1,0]]
    ce_vt = [math.log(2), math.log(2)]
    ce_tv = [-2 + math.log(e(2) + 1), -0 + math.log(e(2) + 1)]
    l = [(a + b) / 2 for a, b in zip(ce_vt, ce_tv)]
    # captions: V C^T = 2*I, symmetric -> CE = -2 + log(e^2 + 1) both rows and both directions
    lc = [-2 + math.log(e(2) + 1)] * 2
    ws, wx, wc = [1.0, e(-1)], [1.0, e(-1)], [1.0, e(1)]
    ref = sum(l[i] * ws[i] * wx[i] for i in range(2)) / 2 + sum(lc[i] * ws[i] * wc[i] for i in range(2)) / 2
    assert loss.item() == pytest.approx(ref, abs=1e-6)


def test_losses_read_the_output_dict():
    img, txt = _feats(n=4, d=3, seed=2)
    cap = _feats(n=4, d=3, seed=3)[0]
    scale = torch.tensor(5.0)
    out = {"image_features": img, "text_features": txt, "logit_scale": scale, "caption_features": cap,
           "concept_logits": torch.randn(4, 3), "concept_teacher_logits": torch.randn(4, 3)}
    hn = HardNegativeNCELoss(alpha=0.5, beta=1.0)
    assert torch.equal(hn.forward_outputs(out)["contrastive_loss"], hn(img, txt, scale))
    assert torch.allclose(InfoNCELoss().forward_outputs(out)["contrastive_loss"], ClipLoss()(img, txt, scale))
    gates = ALIPGates().eval()  # eval: the running means stay put, so both calls see the same gates
    alip = ALIPLoss(gates)
    got = alip.forward_outputs(out)
    assert torch.equal(got["contrastive_loss"], alip(img, txt, scale, caption_features=cap))
    assert {"w_s", "w_x", "w_c"} <= set(got)
    terms = compute_losses(out, [alip, ConceptLoss(weight=0.5, temperature=2.0)])
    assert set(terms) == {"contrastive_loss", "concept_loss", "w_s", "w_x", "w_c"}
    # the total is the sum of the `*_loss` entries only (the gate means are logged, not summed)
    assert torch.allclose(total_loss(terms), terms["contrastive_loss"] + terms["concept_loss"])


def test_unknown_loss_name_names_config_key_and_choices():
    with pytest.raises(InputError, match=r"^loss\.name='nope': .*expected one of: alip, hn_nce, infonce$"):
        create_loss("nope", gates=ALIPGates())
    assert isinstance(create_loss("hn_nce", alpha=1.0, beta=0.0, gates=ALIPGates()), HardNegativeNCELoss)


def test_alip_gates_state_round_trip():
    g = ALIPGates()
    g.m_x.fill_(0.3)
    h = ALIPGates()
    h.load_state_dict(g.state_dict())
    assert h.m_x.item() == pytest.approx(0.3)


def _make_loss(name):
    if name == "infonce":
        return InfoNCELoss()
    if name == "hn_nce":
        return HardNegativeNCELoss(alpha=0.7, beta=0.8)
    gates = ALIPGates()
    for m in (gates.m_T, gates.m_x, gates.m_c):
        m.fill_(0.2)
    return ALIPLoss(gates)


def _run_loss(name, x, w, scale):
    """A linear 'tower' (w) shared by images, texts and captions -> loss on its features."""
    feats = [F.normalize(x[k] @ w, dim=-1) for k in range(3)]
    loss_fn = _make_loss(name)
    if name == "alip":
        return loss_fn(feats[0], feats[1], scale, caption_features=feats[2])
    return loss_fn(feats[0], feats[1], scale)


def _worker(rank, world, init_file, names, x, w0, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    b = x.shape[1] // world
    for name in names:
        w = w0.clone().requires_grad_(True)
        loss = _run_loss(name, x[:, rank * b : (rank + 1) * b], w, torch.tensor(4.0))
        loss.backward()
        torch.distributed.all_reduce(w.grad)  # what DDP does: average the parameter gradients
        w.grad /= world
        torch.save({"loss": loss.detach(), "grad": w.grad}, os.path.join(out_dir, f"{name}_{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_gathered_losses_match_single_process_two_ranks():
    names = ["infonce", "hn_nce", "alip"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 8, 6, generator=g)  # (image/text/caption, global batch, in-dim)
    w0 = torch.randn(6, 4, generator=g)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(2, os.path.join(d, "init"), names, x, w0, d), nprocs=2, join=True)
        for name in names:
            w = w0.clone().requires_grad_(True)
            ref = _run_loss(name, x, w, torch.tensor(4.0))
            ref.backward()
            for rank in range(2):
                got = torch.load(os.path.join(d, f"{name}_{rank}.pt"), weights_only=True)
                assert torch.allclose(got["loss"], ref.detach(), atol=1e-5), (name, got["loss"], ref)
                assert torch.allclose(got["grad"], w.grad, atol=1e-5), name


def test_mask_duplicate_texts_leaves_same_token_pairs_out_of_both_softmaxes_hand_computed():
    s = 2.0
    img = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    txt = F.normalize(torch.tensor([[1.0, 0.2], [0.9, 0.3], [0.1, 1.0]]), dim=-1)
    ids = torch.tensor([[5, 7, 0], [5, 7, 0], [5, 8, 0]])  # rows 0 and 1 read the same text
    out = {"image_features": img, "text_features": txt, "logit_scale": torch.tensor(s), "text_ids": ids}
    got = InfoNCELoss(mask_duplicates=True).forward_outputs(out)["contrastive_loss"]
    # by hand: row 0 ranks texts {0, 2}, row 1 texts {1, 2}, row 2 all three; the same for text -> image
    sim = (img @ txt.T).tolist()

    def ce(row, keep, gold):
        return -(s * row[gold] - math.log(sum(math.exp(s * row[j]) for j in keep)))

    cols = [[sim[i][j] for i in range(3)] for j in range(3)]
    i2t = ce(sim[0], (0, 2), 0) + ce(sim[1], (1, 2), 1) + ce(sim[2], (0, 1, 2), 2)
    t2i = ce(cols[0], (0, 2), 0) + ce(cols[1], (1, 2), 1) + ce(cols[2], (0, 1, 2), 2)
    assert got.item() == pytest.approx((i2t + t2i) / 6, rel=1e-5)
    # off, or with no two texts alike, it is open_clip's ClipLoss
    plain = ClipLoss()(img, txt, torch.tensor(s))
    assert InfoNCELoss().forward_outputs(out)["contrastive_loss"].item() == pytest.approx(plain.item(), rel=1e-6)
    distinct = dict(out, text_ids=torch.tensor([[5, 7, 0], [5, 7, 1], [5, 8, 0]]))
    assert InfoNCELoss(mask_duplicates=True).forward_outputs(distinct)["contrastive_loss"].item() == \
        pytest.approx(plain.item(), rel=1e-6)


def test_mask_duplicate_texts_is_refused_with_other_losses_and_neutral_when_off(tmp_path):
    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.default_teacher import recipe_hash
    from pretrain.train import build

    cfg = load_pretrain_config(recipe_path("diht"), ["loss.mask_duplicate_texts=true", f"output_dir={tmp_path}"])
    with pytest.raises(InputError, match="config key loss.mask_duplicate_texts: works with loss.name=infonce, "
                                         "not 'hn_nce'"):
        build(cfg, None)
    assert recipe_hash(["loss.mask_duplicate_texts=false"], "lit_scene_count") == recipe_hash([], "lit_scene_count")
    assert recipe_hash([], "lit_scene_count_dedup") != recipe_hash([], "lit_scene_count")
