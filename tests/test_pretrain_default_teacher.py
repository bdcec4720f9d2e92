"""ensure_default_teacher: trains once in a subprocess, caches, and makes concurrent callers wait."""

import json
import subprocess
import threading

import open_clip
import pytest

from clip_td.base.io import InputError

from pretrain import default_teacher, shipped
from test_pretrain_corpus import TINY_OVERRIDES, write_tiny_corpus


def test_trains_once_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RANK", "1")  # as inside an accelerate job: the child must not see it
    monkeypatch.setenv("WORLD_SIZE", "2")
    root = write_tiny_corpus(tmp_path / "world", n_train=16, n_val=4, facts=True)  # the default recipe reads facts
    calls, real_run = [], subprocess.run

    def counting_run(cmd, **kw):
        calls.append(cmd)
        assert "RANK" not in kw["env"] and "WORLD_SIZE" not in kw["env"]
        return real_run(cmd, **kw)

    monkeypatch.setattr(default_teacher.subprocess, "run", counting_run)
    extra = [*TINY_OVERRIDES, "train.max_steps=1", "train.batch_size=8", "eval.enabled=false", "image_init.steps=1",
             "image_init.batch_size=8", "image_init.fact_min_count=1", "image_init.standardise=false"]  # a tiny ViT tower
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_teacher.ensure_default_teacher(root, extra))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] == results[1]
    teacher = results[0]
    assert teacher.parent.parent == tmp_path / "cache" / "teachers"
    assert json.loads((teacher.parent / "metrics.json").read_text())["train"]["steps"] == 1
    assert not (teacher.parent / "checkpoints").exists()
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{teacher}")
    assert model.visual.image_size == (32, 32)
    assert default_teacher.ensure_default_teacher(root, extra) == teacher and len(calls) == 1
    # a different recipe is a different cache entry
    assert default_teacher.recipe_hash(extra) != default_teacher.recipe_hash(extra + ["train.lr=0.5"])


def test_the_teacher_build_does_not_inherit_a_callers_thread_settings(monkeypatch):
    """A sweep cell runs with OMP/MKL_NUM_THREADS=1; the default teacher it builds on first use must
    get the machine's default threads like any other first run (MKL's reductions depend on them)."""
    from pretrain.default_teacher import clean_env

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("CLIP_TD_SOMETHING", "kept")
    env = clean_env()
    assert "OMP_NUM_THREADS" not in env and "MKL_NUM_THREADS" not in env and "RANK" not in env
    assert env["CLIP_TD_SOMETHING"] == "kept"


def test_a_two_stage_recipe_trains_its_first_stage_once_and_continues_from_it(tmp_path, monkeypatch):
    """`init_from: <recipe>`: the first stage is that recipe with the run's overrides (not its
    output_dir), trained once into the teacher cache; the run starts from its teacher folder, and
    the recipe hash follows the first stage's."""
    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.train import main

    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    root = write_tiny_corpus(tmp_path / "world", n_train=16, n_val=4)
    recipe = tmp_path / "two_stage.yaml"
    recipe.write_text(f"_base_: {recipe_path('clip')}\ninit_from: clip\n")
    tiny = [*TINY_OVERRIDES, f"data.root={root}", "train.max_steps=1", "train.batch_size=8", "eval.enabled=false"]
    main(["--config", str(recipe), *tiny, f"output_dir={tmp_path / 'run'}"])
    first = tmp_path / "cache" / "teachers" / default_teacher.recipe_hash(tiny, "clip") / "teacher"
    assert (first / "open_clip_model.safetensors").is_file()
    resolved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"name: local-dir:{first}" in resolved and "init_from: clip" in resolved
    # the same first stage is reused, not retrained
    mtime = (first / "open_clip_model.safetensors").stat().st_mtime_ns
    main(["--config", str(recipe), *tiny, f"output_dir={tmp_path / 'run2'}"])
    assert (first / "open_clip_model.safetensors").stat().st_mtime_ns == mtime
    # the default recipe is two-stage: its hash changes with its first stage's recipe
    assert default_teacher.stage_overrides(["output_dir=x", "train.lr=1", "train.resume=latest"]) == ["train.lr=1"]
    assert default_teacher.recipe_hash(()) != default_teacher.recipe_hash(("image_init.fact_min_count=6",))
    assert load_pretrain_config().init_from == "lit_facts_captions"
    with pytest.raises(InputError, match="init_from='clip' sets the starting teacher"):
        main(["--config", str(recipe), *tiny, "model.name=ViT-B-32", f"output_dir={tmp_path / 'run3'}"])


def test_teacher_names_resolve_recipes_into_the_cache_and_pass_others_through(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    built = []

    def fake_train(run_dir, train):  # what train_once would build, without training
        built.append(run_dir)

    monkeypatch.setattr(default_teacher, "train_once", fake_train)
    key = default_teacher.recipe_hash((), "lit_scene_place")
    # the package ships this recipe's teacher: without overrides that verified copy is used
    assert default_teacher.default_teacher_name("recipe:lit_scene_place") == f"local-dir:{shipped.recipe_dir('lit_scene_place')}"
    assert built == []
    # without a shipped copy, the recipe is built once into the cache
    monkeypatch.setattr(shipped, "shipped_recipe_teacher", lambda recipe, key: None)
    name = default_teacher.default_teacher_name("recipe:lit_scene_place")
    assert name == f"local-dir:{tmp_path / 'cache' / 'teachers' / key / 'teacher'}"
    assert built == [tmp_path / "cache" / "teachers" / key]
    assert key != default_teacher.recipe_hash((), "lit_scene")  # the places change the recipe
    assert default_teacher.default_teacher_name("local-dir:/x") == "local-dir:/x"
    assert default_teacher.default_teacher_name("ViT-B-32") == "ViT-B-32" and len(built) == 1
    with pytest.raises(InputError, match="pretraining recipe 'no_such' not found; expected one of: .*lit_scene_place"):
        default_teacher.default_teacher_name("recipe:no_such")
    assert len(built) == 1


def test_finetune_reads_a_recipe_teacher_name_from_teacher_model(monkeypatch):
    from omegaconf import OmegaConf

    from clip_td.app import teacher_setup

    class Main:
        def main_process_first(self):
            import contextlib
            return contextlib.nullcontext()

    monkeypatch.setattr(default_teacher, "ensure_recipe_teacher", lambda recipe: f"/cache/{recipe}/teacher")
    cfg = OmegaConf.create({"teacher": {"model": "recipe:lit_scene_place"}})
    assert teacher_setup.teacher_name(cfg, Main()) == "local-dir:/cache/lit_scene_place/teacher"
    cfg.teacher.model = "hf-hub:org/clip"
    assert teacher_setup.teacher_name(cfg, Main()) == "hf-hub:org/clip"
