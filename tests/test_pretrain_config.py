"""pretrain's config: recipes from the installed `configs` package, null defaults, the
deprecated `train.resume_from` alias, and pretrain's imports from clip_td (base only)."""

import ast
import inspect
import logging
from pathlib import Path

import pytest

import pretrain
import pretrain.config
from clip_td.base.config import packaged_configs
from clip_td.base.io import InputError
from pretrain.config import load_pretrain_config, recipe_path, recipes_dir

RECIPES = ("default", "clip", "diht", "alip", "rn_negclip", "lit", "alip_vit", "lit_facts", "lit_facts_captions",
           "lit_scene", "lit_facts_places", "lit_scene_place", "lit_facts_places_size", "lit_scene_place_size",
           "lit_scene_large", "lit_scene_large_image", "lit_scene_count", "lit_scene_count_prefix", "lit_scene_count_dedup", "lit_scene_count_image",
           "lit_scene_count_frames", "lit_scene_count_frames_text", "lit_scene_count_frames_after",
           "lit_scene_count_frames_seed1", "lit_scene_count_frames_junk",
           "lit_scene_count_frames_junk_replace")


def test_recipes_load_from_packaged_configs():
    assert recipes_dir() == packaged_configs() / "pretrain"
    assert sorted(p.stem for p in recipes_dir().glob("*.yaml")) == sorted(RECIPES)
    for name in RECIPES:
        assert recipe_path(name).parent == packaged_configs() / "pretrain"
        load_pretrain_config(recipe_path(name))
    default = load_pretrain_config()  # no --config: the shipped default recipe (the scene-graph LiT via _base_)
    assert default == load_pretrain_config(recipe_path("lit_scene"))
    # two stages: lit_facts_captions (3,000 init steps, 1,000 text steps), then standardised, 1,000 more
    assert default.init_from == "lit_facts_captions" and default.model.name is None
    assert default.loss.name == "infonce" and default.image_init.steps == 0 and default.image_init.lock
    assert default.model.model_cfg.vision_cfg.width == 32 and default.image_init.standardise
    assert default.data.fact_captions == 0.5 and default.train.max_steps == 1000
    assert default.loss.text_negative_relation == 0.4
    lit = load_pretrain_config(recipe_path("lit"))  # the previous default
    assert lit.image_init.steps == 2000 and lit.model.model_cfg.vision_cfg.width == 16 and not lit.image_init.facts
    old = load_pretrain_config(recipe_path("alip_vit"))  # the previous default
    assert old.loss.name == "alip" and old.train.max_steps == 220 and old.image_init.steps == 0
    facts = load_pretrain_config(recipe_path("lit_facts_captions"))  # lit_facts.yaml <- lit.yaml
    assert facts.image_init.facts and facts.image_init.steps == 3000 and facts.data.fact_captions == 0.5
    assert facts.model.model_cfg.vision_cfg.width == 32 and facts.loss.text_negative_relation == 0.4
    assert facts.model.fitted_vocab_size == 1000 and facts.image_init.lock and not facts.image_init.standardise
    place = load_pretrain_config(recipe_path("lit_scene_place"))  # lit_scene.yaml's stages on lit_facts_places
    assert place.init_from == "lit_facts_places" and place.image_init.steps == 0 and place.image_init.standardise
    assert place.image_init.places and place.data.place_captions == 0.25 and place.data.fact_captions == 0.5
    first = load_pretrain_config(recipe_path("lit_facts_places"))
    assert first.image_init.places and first.image_init.steps == 3000 and first.init_from is None
    assert first.data.place_captions == 0.25 and first.train.max_steps == 1000
    diht = load_pretrain_config(recipe_path("diht"))
    assert diht.loss.name == "hn_nce" and diht.cat.enabled and diht.concept.weight == 1.0
    rn = load_pretrain_config(recipe_path("rn_negclip"))  # the ResNet tower merged over the tiny ViT defaults
    assert rn.loss.name == "infonce" and rn.loss.text_negatives and rn.concept.weight == 1.0
    assert list(rn.model.model_cfg.vision_cfg.layers) == [1, 1, 1, 1] and rn.model.model_cfg.vision_cfg.width == 16
    # no path computed from the source tree: a non-editable install reads the same recipes
    assert "__file__" not in inspect.getsource(pretrain.config)


def test_shipped_recipe_by_relative_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_pretrain_config("configs/pretrain/alip.yaml").loss.name == "alip"


def test_unknown_recipe_lists_choices():
    with pytest.raises(InputError, match="expected one of: alip, alip_vit, clip, default, diht, lit"):
        recipe_path("siglip")


def test_unset_paths_are_null():
    cfg = load_pretrain_config(recipe_path("clip"))
    for key in ("root", "train", "val", "zeroshot", "concepts"):
        assert cfg.data[key] is None, key
    assert cfg.model.name is None and cfg.model.pretrained is None
    assert cfg.concept.teacher_weights is None
    assert cfg.train.resume is None and cfg.train.tracker is None


def test_unknown_key_is_still_an_error():
    with pytest.raises(InputError, match="train.nope"):
        load_pretrain_config(recipe_path("clip"), ["train.nope=1"])


def test_resume_from_is_an_alias_of_resume_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        cfg = load_pretrain_config(recipe_path("clip"), ["train.resume_from=latest"])
    assert cfg.train.resume == "latest"
    assert "resume_from" not in cfg.train  # never reaches the resolved config (config.yaml)
    lines = [r.getMessage() for r in caplog.records if "resume_from" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "train.resume" in lines[0].replace("train.resume_from", "")
    # the same value under both names is fine; different values are an error naming both keys
    assert load_pretrain_config(None, ["train.resume_from=a", "train.resume=a"]).train.resume == "a"
    with pytest.raises(InputError, match=r"train\.resume_from .*train\.resume"):
        load_pretrain_config(None, ["train.resume_from=a", "train.resume=b"])


def test_resume_from_in_a_yaml_file(tmp_path, caplog):
    f = tmp_path / "old.yaml"
    f.write_text(f"_base_: {recipe_path('clip')}\ntrain:\n  resume_from: /some/ckpt\n")
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        assert load_pretrain_config(f).train.resume == "/some/ckpt"
    assert any("train.resume_from" in r.getMessage() for r in caplog.records)


def _clip_td_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_pretrain_imports_only_clip_td_base():
    root = Path(pretrain.__file__).parent
    bad = {f"{p.name}: {m}" for p in root.glob("*.py") for m in _clip_td_imports(p)
           if m.split(".")[0] == "clip_td" and not (m == "clip_td.base" or m.startswith("clip_td.base."))}
    assert not bad, sorted(bad)


def test_lit_scene_large_continues_the_default_on_the_large_corpus():
    cfg = load_pretrain_config(recipe_path("lit_scene_large"))
    assert cfg.init_from == "lit_scene" and cfg.model.name is None
    assert cfg.data.world_size == "large" and cfg.data.caption_sizes and cfg.data.fact_captions == 0.5
    assert cfg.image_init.steps == 0 and cfg.image_init.lock and not cfg.image_init.standardise
    assert cfg.train.max_steps == 1000 and cfg.loss.text_negative_relation == 0.4


def test_lit_scene_large_image_trains_the_locked_tower_further_first():
    cfg = load_pretrain_config(recipe_path("lit_scene_large_image"))
    assert cfg.init_from == "lit_scene" and cfg.data.world_size == "large" and cfg.data.caption_sizes
    # the image tower: 2,000 more scene-graph steps at half the first stage's rate, standardised, then locked
    assert cfg.image_init.steps == 2000 and cfg.image_init.lr == 1e-3 and cfg.image_init.facts
    assert cfg.image_init.standardise and cfg.image_init.lock and not cfg.image_init.places
    assert cfg.train.max_steps == 1000 and cfg.data.fact_captions == 0.5


def test_lit_scene_count_adds_count_captions_to_a_text_stage_on_top():
    cfg = load_pretrain_config(recipe_path("lit_scene_count"))
    assert cfg.init_from == "lit_scene_large_image" and cfg.image_init.steps == 0 and cfg.image_init.lock
    assert cfg.data.count_captions == 0.15 and cfg.data.fact_captions == 0.5 and cfg.data.place_captions == 0.0
    assert cfg.data.world_size == "large" and cfg.data.caption_sizes and cfg.train.max_steps == 1000


def test_lit_scene_count_dedup_and_count_image_change_one_thing_each_against_lit_scene_count():
    count = load_pretrain_config(recipe_path("lit_scene_count"))
    dedup = load_pretrain_config(recipe_path("lit_scene_count_dedup"))
    assert dedup.loss.mask_duplicate_texts and not count.loss.mask_duplicate_texts
    assert load_pretrain_config(recipe_path("lit_scene_count_dedup"), ["loss.mask_duplicate_texts=false"]) == count
    image = load_pretrain_config(recipe_path("lit_scene_count_image"))
    large = load_pretrain_config(recipe_path("lit_scene_large_image"))
    assert image.image_init.counts and image.image_init.steps == 2000 and image.init_from == "lit_scene"
    assert image.data.count_captions == 0.15 and not large.image_init.counts
    assert load_pretrain_config(recipe_path("lit_scene_count_image"),
                                ["image_init.counts=false", "data.count_captions=0.0"]) == large


def test_lit_scene_count_frames_changes_only_the_count_frames_against_lit_scene_count_image():
    frames = load_pretrain_config(recipe_path("lit_scene_count_frames"))
    assert list(frames.data.count_frames) == ["{n}", "a picture of {n}", "an image of {n}", "a photo of {n}",
                                              "a drawing of {n}"]
    assert load_pretrain_config(recipe_path("lit_scene_count_frames"), ["data.count_frames=['{n}']"]) == \
        load_pretrain_config(recipe_path("lit_scene_count_image"))
    # the same frames on lit_scene_count's text stage (no count image init): only the frames differ
    text = load_pretrain_config(recipe_path("lit_scene_count_frames_text"))
    assert text.init_from == "lit_scene_large_image" and not text.image_init.counts
    assert text.data.count_frames == frames.data.count_frames
    assert load_pretrain_config(recipe_path("lit_scene_count_frames_text"), ["data.count_frames=['{n}']"]) == \
        load_pretrain_config(recipe_path("lit_scene_count"))
    # no frame is one of SNLI-VE's count templates: what the teacher reads there is carried over, not seen
    assert not any(f.startswith(("there", "the image shows")) for f in frames.data.count_frames)
    # the five frames mirrored with words after the count; nothing else changes
    after = load_pretrain_config(recipe_path("lit_scene_count_frames_after"))
    assert list(after.data.count_frames) == list(frames.data.count_frames) + [
        "{n} on a picture", "{n} on an image", "{n} on a photo", "{n} on a drawing"]
    assert load_pretrain_config(recipe_path("lit_scene_count_frames_after"),
                                ["data.count_frames=['{n}','a picture of {n}','an image of {n}','a photo of {n}',"
                                 "'a drawing of {n}']"]) == frames
    assert not any(f.startswith(("there", "the image shows")) or "in the picture" in f for f in after.data.count_frames)
    # a second draw of the recipe: its own stages at seed 1, the shipped lit_scene below either way
    seed1 = load_pretrain_config(recipe_path("lit_scene_count_frames_seed1"))
    assert seed1.seed == 1 and frames.seed == 0 and seed1.init_from == frames.init_from == "lit_scene"
    assert seed1 == load_pretrain_config(recipe_path("lit_scene_count_frames"), ["seed=1"])
    # strings that are no corpus word in half of the texts; nothing else changes
    junk = load_pretrain_config(recipe_path("lit_scene_count_frames_junk"))
    assert junk.data.junk_words == 0.5 and frames.data.junk_words == 0.0
    assert load_pretrain_config(recipe_path("lit_scene_count_frames_junk"), ["data.junk_words=0.0"]) == frames
    # half of those strings in place of a word instead
    replace = load_pretrain_config(recipe_path("lit_scene_count_frames_junk_replace"))
    assert replace.data.junk_replaces == 0.5 and junk.data.junk_replaces == 0.0
    assert load_pretrain_config(recipe_path("lit_scene_count_frames_junk_replace"), ["data.junk_replaces=0.0"]) == junk


def test_lit_scene_count_prefix_puts_counts_before_fact_captions_in_a_text_stage_on_top():
    cfg = load_pretrain_config(recipe_path("lit_scene_count_prefix"))
    assert cfg.init_from == "lit_scene_large_image" and cfg.image_init.steps == 0 and cfg.image_init.lock
    assert cfg.data.count_prefix == 0.3 and cfg.data.count_captions == 0.0 and cfg.data.fact_captions == 0.5
    assert cfg.data.world_size == "large" and cfg.data.caption_sizes and cfg.train.max_steps == 1000
