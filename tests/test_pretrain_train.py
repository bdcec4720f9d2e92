"""A short pretrain_teacher run on a tiny corpus, its export, metrics and a resume."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from clip_td.base.io import InputError
from pretrain.config import recipe_path
from pretrain.train import main
from test_pretrain_corpus import TINY_OVERRIDES, write_tiny_corpus

REPO = Path(__file__).resolve().parent.parent


def _args(root, out, *extra, recipe="lit"):
    # default lit.yaml, the one-stage LiT recipe (the default recipe is two-stage: init_from trains a first stage)
    return ["--config", str(recipe_path(recipe)), f"data.root={root}", f"output_dir={out}", "train.batch_size=8",
            "train.max_steps=3",
            "eval.probe_shots=[1,2]", "eval.probe_steps=5", *TINY_OVERRIDES, *extra]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = main(_args(corpus, out, "train.checkpoint_every=2", recipe="clip"))
    return out, metrics


def test_run_writes_metrics_and_config(run):
    out, metrics = run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    ret = saved["eval"]["retrieval"]
    for k in ("i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5"):
        assert 0.0 <= ret[k] <= 100.0
    assert set(saved["eval"]["zeroshot"]) == {"shape"}
    assert set(saved["eval"]["fewshot"]["shape"]) == {"plain", "diht"}
    assert saved["train"]["steps"] == 3
    assert (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_3"]


def test_export_loads_with_plain_open_clip(run):
    out, _ = run
    teacher = out / "teacher"
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{teacher}")
    tok = open_clip.get_tokenizer(f"local-dir:{teacher}")
    ids = tok(["a red circle"])
    assert ids.shape == (1, 16)  # the declared context length travels with the export
    with torch.no_grad():
        emb = model.encode_text(ids, normalize=True)
    assert emb.shape == (1, 32)
    state = load_file(str(teacher / "open_clip_model.safetensors"))
    assert not any(k.startswith("concept_head") for k in state)
    assert torch.equal(state["logit_scale"], model.logit_scale.detach())


def test_resume_continues_from_saved_state(run, corpus):
    out, _ = run
    # resume from step 2 of the same run, to step 3: the result equals the uninterrupted run
    ckpt = out / "checkpoints" / "step_2"
    out2 = out.parent / (out.name + "_resumed")
    main(_args(corpus, out2, f"train.resume={ckpt}", recipe="clip"))
    a = load_file(str(out / "teacher" / "open_clip_model.safetensors"))
    b = load_file(str(out2 / "teacher" / "open_clip_model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert json.loads((out2 / "metrics.json").read_text())["train"]["steps"] == 3


def test_resume_latest_picks_highest_step_by_run_state_not_folder_name(run, corpus, tmp_path):
    out, _ = run
    ckpts = tmp_path / "checkpoints"
    # step 2 of the run under a name with no number, beside a folder whose *name* says 99 but
    # whose run_state says step 1 (and another set-up: resuming from it would be an error)
    shutil.copytree(out / "checkpoints" / "step_2", ckpts / "resumable")
    (ckpts / "step_99").mkdir()
    (ckpts / "step_99" / "run_state.json").write_text(json.dumps({"step": 1, "signature": {"loss": "other"}}))
    metrics = main(_args(corpus, tmp_path, "train.resume=latest", recipe="clip"))
    assert metrics["train"]["steps"] == 3 and metrics["train"]["last_losses"] is not None  # one step trained
    a = load_file(str(out / "teacher" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "teacher" / "open_clip_model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert json.loads((ckpts / "step_3" / "run_state.json").read_text())["step"] == 3


def test_resume_latest_without_checkpoints_starts_fresh(corpus, tmp_path):
    metrics = main(_args(corpus, tmp_path, "train.resume=latest", "train.max_steps=1", "eval.enabled=false",
                        "image_init.steps=1"))  # the recipe's 2,000 image-init steps are beside the point
    assert metrics["train"]["steps"] == 1


def test_unknown_loss_name_names_key_and_choices(corpus, tmp_path):
    with pytest.raises(InputError, match=r"loss\.name='nope'.*expected one of: alip, hn_nce, infonce"):
        main(_args(corpus, tmp_path, "loss.name=nope"))


def test_resume_from_other_architecture_is_an_error(run, corpus, tmp_path):
    out, _ = run
    ckpt = out / "checkpoints" / "step_2"
    with pytest.raises(InputError, match=r"train\.resume: .*incompatible run.*model_cfg"):
        main(_args(corpus, tmp_path, f"train.resume={ckpt}", "model.model_cfg.vision_cfg.layers=2"))


def test_script_entry_point_reports_bad_key(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "pretrain_teacher.py"), f"output_dir={tmp_path}", "train.nope=1"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "train.nope" in r.stderr


def test_script_entry_point_reports_unknown_loss_in_one_line(tmp_path, monkeypatch, capsys):
    """The entry script's error path in-process (the subprocess test above covers the script itself)."""
    from clip_td.base.scripts import run_script

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANK", "0")
    assert run_script(main, [f"output_dir={tmp_path}", "loss.name=nope"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: loss.name='nope': unknown contrastive loss 'nope'; expected one of: alip, hn_nce, infonce"]


def test_diht_recipe_filters_distils_and_reports(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    main(_args(corpus, tmp_path / "run", "concept.teacher_steps=2", "eval.enabled=false", recipe="diht"))
    report = json.loads((tmp_path / "run" / "cat_report.json").read_text())
    # the tiny corpus marks every 6th training pair as a generic "a picture" caption
    assert report["total"] == 48 and report["kept"] == 40
    assert report["reasons"] == {"kept": 40, "low_complexity": 8}
    assert report["vs_truth"]["precision"] == 1.0 and report["vs_truth"]["recall"] == 1.0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["train"]["last_losses"]) == {"contrastive_loss", "concept_loss"}
    assert len(list((tmp_path / "cache" / "concept_teachers").glob("*.safetensors"))) == 1
    state = load_file(str(tmp_path / "run" / "teacher" / "open_clip_model.safetensors"))
    assert not any("concept" in k for k in state)


def test_alip_gates_are_restored_by_load_state(tmp_path):
    from accelerate import Accelerator

    from pretrain.alip_gates import ALIPGates

    acc = Accelerator(cpu=True)
    gates = ALIPGates()
    acc.register_for_checkpointing(gates)
    gates.m_T.fill_(0.25)
    gates.m_c.fill_(0.5)
    acc.save_state(str(tmp_path / "ckpt"))
    gates.m_T.fill_(1.0)
    gates.m_c.fill_(1.0)
    acc.load_state(str(tmp_path / "ckpt"))
    assert gates.m_T.item() == 0.25 and gates.m_c.item() == 0.5


def test_alip_recipe_runs_bipath(corpus, tmp_path):
    metrics = main(_args(corpus, tmp_path, "eval.enabled=false", recipe="alip"))
    assert metrics["recipe"]["loss"] == "alip" and metrics["train"]["steps"] == 3
    assert math.isfinite(metrics["train"]["last_losses"]["contrastive_loss"])


def test_start_from_exported_checkpoint_and_eval_any_captions_file(run, corpus, tmp_path, capsys):
    from pretrain.teacher_eval import main as eval_main

    out, _ = run
    teacher = out / "teacher"
    metrics = main(_args(corpus, tmp_path / "ft", f"model.name=local-dir:{teacher}", "train.max_steps=1", "train.lr=0",
                         "train.warmup_steps=0", "eval.enabled=false", "image_init.steps=0"))
    assert metrics["train"]["steps"] == 1
    a = load_file(str(teacher / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "ft" / "teacher" / "open_clip_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the pretrained weights come back unchanged
    res = eval_main(["--teacher", str(teacher), "--captions", str(corpus / "pretrain" / "val.tsv")])
    assert res["retrieval"] == json.loads((out / "metrics.json").read_text())["eval"]["retrieval"]
