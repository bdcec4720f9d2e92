"""Region descriptions in student pretraining (pretrain/student/regions.py, config section
`regions`): the text of hand-placed scenes, the place-word masks, the scene stream, the
vocabulary, a run's metrics, the cache key and the errors."""

from __future__ import annotations

import random
import re

import pytest
import torch

from clip_td.base.io import InputError
from pretrain.student import load_student_config
from pretrain.student.objectives import IGNORE
from pretrain.student.regions import PLACE_WORDS, describe, descriptions, region_inputs
from pretrain.student.train import main
from test_pretrain_student import CAPTIONS_ONLY, TINY, write_corpus

REGIONS_ON = ["regions.weight=0.5", "regions.scenes=2", "regions.vocab_scenes=40", "image_init.max_objects=3",
              "image_init.eval_scenes=6"]


def _obj(shape, colour, size, x, y):
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y, "r": 0.1}


def test_a_description_says_where_each_object_is_and_one_clear_relation():
    one = {"objects": [_obj("circle", "red", "small", 0.1, 0.1)], "style": "source"}
    assert describe(one, random.Random(0)) in {"the red circle is near the top left.",
                                               "the small red circle is near the top left."}
    centre = {"objects": [_obj("star", "blue", "large", 0.5, 0.5)], "style": "source"}
    assert describe(centre, random.Random(1)).endswith("blue star is in the center.")
    # two objects side by side at mid height: a place each, then the one relation the pair has
    pair = {"objects": [_obj("square", "green", "large", 0.2, 0.5), _obj("ring", "black", "small", 0.8, 0.5)],
            "style": "source"}
    for seed in range(10):
        sentences = describe(pair, random.Random(seed)).split(". ")
        assert len(sentences) == 3
        assert sorted(s.split(" is ")[1] for s in sentences[:2]) == ["near the left", "near the right"]
        assert re.fullmatch(r"the (large )?green square is left of the (small )?black ring\.", sentences[2]) or \
            re.fullmatch(r"the (small )?black ring is right of the (large )?green square\.", sentences[2])
    # objects on a diagonal have no clear relation: places only
    diagonal = {"objects": [_obj("square", "green", "large", 0.2, 0.2), _obj("ring", "black", "small", 0.5, 0.5)],
                "style": "source"}
    assert describe(diagonal, random.Random(0)).count(".") == 2
    # at most two objects are placed
    crowd = {"objects": [_obj("star", c, "small", x, 0.15) for c, x in (("red", 0.15), ("blue", 0.5), ("pink", 0.85))],
             "style": "source"}
    assert sum(" is near " in s or " is in " in s for s in describe(crowd, random.Random(0)).split(". ")) == 2
    # a batch's texts depend on (seed, batch) alone
    assert descriptions(3, 5, [pair, one]) == descriptions(3, 5, [pair, one])
    assert {tuple(descriptions(3, b, [pair, pair, pair])) for b in range(6)} != {tuple(descriptions(3, 0, [pair] * 3))}


def test_place_words_are_masked_with_their_own_probability(tmp_path):
    from pretrain.student.train import build

    setup = build(load_student_config(None, [f"data.root={write_corpus(tmp_path)}", *TINY, *REGIONS_ON,
                                             "model.max_text_len=40"]))
    tok = setup.tokenizer
    texts = ["the red circle is near the top left.", "the blue star is in the center."]
    # the place words are whole words of the vocabulary (its texts include the descriptions)
    assert [len(tok.tokenize(w)) for w in ("near", "top", "left", "center", "above")] == [1] * 5
    out = region_inputs(texts, tok, 40, mask_prob=0.0, place_prob=1.0, generator=torch.Generator().manual_seed(0))
    ids = tok(texts, padding="longest")["input_ids"]
    place_ids = {tok.convert_tokens_to_ids(w) for w in PLACE_WORDS}
    expected = torch.tensor([[t in place_ids for t in row] for row in ids])
    assert torch.equal(out["region_place"], expected) and int(expected.sum()) == 3  # top, left, center
    assert torch.equal(out["region_labels"] != IGNORE, expected)
    assert torch.equal(out["region_labels"][expected], torch.tensor(ids)[expected])
    none = region_inputs(texts, tok, 40, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert bool((none["region_labels"] == IGNORE).all()) and torch.equal(none["region_ids"], torch.tensor(ids))


def test_region_scenes_are_their_own_stream_and_come_back_with_their_images():
    from pretrain.student.data import image_transform
    from pretrain.student.image_init import scene_batch

    tf = image_transform(32)
    pixels, labels, scenes = scene_batch(1, 4, 3, 32, tf, 3, stream="regions", return_scenes=True)
    again, same = scene_batch(1, 4, 3, 32, tf, 3, stream="regions")
    assert torch.equal(pixels, again) and torch.equal(labels, same) and len(scenes) == 3
    assert 1 <= min(len(s["objects"]) for s in scenes) and max(len(s["objects"]) for s in scenes) <= 3
    assert not torch.equal(scene_batch(1, 4, 3, 32, tf, 3)[0], pixels)  # the image init's scenes differ


def test_a_run_with_region_descriptions_reports_them_and_refuses_another_weights_checkpoint(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=3", *TINY, *REGIONS_ON, "model.max_text_len=40"]
    metrics = main([*base, f"output_dir={tmp_path / 'a'}", "train.checkpoint_every=2"])
    assert 0 < metrics["train"]["region_loss"] < 20
    r = metrics["regions"]
    assert (r["weight"], r["scenes_per_step"], r["place_mask_prob"]) == (0.5, 2, 0.5)
    held = r["held_out"]
    # every place word of the 6 held-out descriptions is scored: count them independently
    from pretrain.student.data import image_transform
    from pretrain.student.image_init import HELD_OUT_SEED, scene_batch

    _, _, scenes = scene_batch(0, HELD_OUT_SEED, 6, 32, image_transform(32), 3, stream="regions", return_scenes=True)
    words = " ".join(descriptions(0, HELD_OUT_SEED, scenes)).replace(".", " ").split()
    assert held["scenes"] == 6 and held["place_tokens"] == sum(w in PLACE_WORDS for w in words)
    # by kind: a relation word follows "is"; a lone object's words come from one-object scenes
    texts = [t.replace(".", " ").split() for t in descriptions(0, HELD_OUT_SEED, scenes)]
    relation = sum(w in PLACE_WORDS and t[k - 1] == "is" for t in texts for k, w in enumerate(t))
    lone = sum(w in PLACE_WORDS and t[k - 1] != "is" for s, t in zip(scenes, texts) if len(s["objects"]) == 1
               for k, w in enumerate(t))
    kinds = held["by_kind"]
    assert (kinds["relation"]["tokens"], kinds["lone_object"]["tokens"]) == (relation, lone)
    assert kinds["region"]["tokens"] + relation == held["place_tokens"]
    for kind in kinds.values():
        assert 0 <= kind["accuracy"] <= 100
    assert 0 <= held["place_accuracy"] <= 100 and 0 < held["majority_place_token"] <= 100
    plain = main([f"data.root={root}", "train.max_steps=3", *TINY, "model.max_text_len=40",
                  f"output_dir={tmp_path / 'p'}"])
    assert "regions" not in plain and "region_loss" not in plain["train"]
    assert metrics["vocab_size"] > plain["vocab_size"]  # the place words joined the vocabulary
    with pytest.raises(InputError, match="incompatible run"):
        main([*base, "regions.weight=1", f"output_dir={tmp_path / 'a'}", "train.max_steps=4", "train.resume=latest"])


def test_region_options_at_weight_zero_keep_the_default_students_cache_key():
    from pretrain.student.default_student import recipe_hash

    off = [*CAPTIONS_ONLY]
    key = recipe_hash(off)
    assert recipe_hash([*off, "regions.scenes=7", "regions.place_mask_prob=0.9"]) == key
    assert recipe_hash([*off, "regions.weight=1"]) != key != recipe_hash([*off, "regions.weight=1", "regions.scenes=7"])


@pytest.mark.parametrize("bad, match", [
    (["regions.weight=-1"], r"regions.weight=-1.0, regions.scenes=32: expected weight 0"),
    (["regions.weight=1", "regions.scenes=0"], r"regions.scenes=0: expected weight 0 \(off\), or a positive"),
    (["regions.place_mask_prob=1.5"], r"regions.place_mask_prob=1.5: expected a probability in \[0, 1\]"),
])
def test_bad_region_settings_are_one_message_each(tmp_path, bad, match):
    from pretrain.student.train import build

    with pytest.raises(InputError, match=match):
        build(load_student_config(None, [f"data.root={write_corpus(tmp_path)}", *TINY, *bad]))


def test_the_curriculum_grows_the_described_scenes_from_one_object(tmp_path):
    from pretrain.student.data import image_transform
    from pretrain.student.image_init import scene_batch
    from pretrain.student.train import build, region_batch, region_objects

    cfg = load_student_config(None, ["image_init.max_objects=6", "regions.curriculum_steps=1000"])
    # 1 + 5 * step // 1000 objects at most: one object until step 200, six from step 1000
    assert [region_objects(cfg, s) for s in (0, 199, 200, 999, 1000, 5000)] == [1, 1, 2, 5, 6, 6]
    assert region_objects(load_student_config(None, ["image_init.max_objects=6", "regions.curriculum_steps=0"]), 0) == 6
    assert region_objects(load_student_config(None), 0) == 1  # the default recipe's curriculum
    assert region_objects(load_student_config(None, ["image_init.max_objects=0"]), 0) == 1
    cfg = load_student_config(None, [f"data.root={write_corpus(tmp_path)}", *TINY, *REGIONS_ON,
                                     "regions.curriculum_steps=10", "regions.scenes=6"])
    tokenizer, transform = build(cfg).tokenizer, image_transform(32)
    early = region_batch(cfg, 0, transform, tokenizer, torch.Generator().manual_seed(0), step=0)
    lone, _, scenes = scene_batch(0, 0, 6, 32, transform, 1, stream="regions", return_scenes=True)
    assert all(len(s["objects"]) == 1 for s in scenes)
    torch.testing.assert_close(early["region_pixels"], lone)  # step 0: the one-object scenes of that stream
    late = region_batch(cfg, 0, transform, tokenizer, torch.Generator().manual_seed(0), step=10)
    full = region_batch(cfg, 0, transform, tokenizer, torch.Generator().manual_seed(0))
    torch.testing.assert_close(late["region_pixels"], full["region_pixels"])  # the ramp is over: up to 3 objects


def test_the_curriculum_at_zero_keeps_the_region_recipes_cache_key(tmp_path):
    from pretrain.student.default_student import recipe_hash
    from pretrain.student.train import build

    on = [*CAPTIONS_ONLY, "regions.weight=1"]
    assert recipe_hash([*on, "regions.curriculum_steps=0"]) == recipe_hash(on) != recipe_hash([*on, "regions.curriculum_steps=9"])
    with pytest.raises(InputError, match=r"regions.curriculum_steps=-1: expected 0 \(off\) or the number of steps"):
        build(load_student_config(None, [f"data.root={write_corpus(tmp_path)}", *TINY, "regions.curriculum_steps=-1"]))
