"""The shipped default teacher: used only when its manifest matches the recipe and every file
hashes as recorded; otherwise one warning naming the file, and the recipe is trained instead."""

import json

import pytest

from clip_td.testing.tiny_checkpoints import save_tiny_teacher
from pretrain import default_teacher, shipped


@pytest.fixture()
def shipped_folder(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher")
    return shipped.write_shipped(teacher, "abc123", tmp_path / "shipped", "python -m pretrain.shipped")


def test_manifest_lists_every_file_with_its_sha256(shipped_folder):
    m = json.loads((shipped_folder / "manifest.json").read_text())
    names = sorted(p.name for p in shipped_folder.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == names and "open_clip_model.safetensors" in names
    for name, digest in m["files"].items():
        assert digest == shipped.sha256_file(shipped_folder / name) and len(digest) == 64
    assert m["recipe_hash"] == "abc123" and m["command"] == "python -m pretrain.shipped"
    assert shipped.verify(shipped_folder, "abc123") is None


def test_a_changed_file_is_named_with_both_hashes(shipped_folder):
    weights = shipped_folder / "open_clip_model.safetensors"
    expected = json.loads((shipped_folder / "manifest.json").read_text())["files"][weights.name]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor byte
    weights.write_bytes(bytes(data))
    problem = shipped.verify(shipped_folder, "abc123")
    assert problem == (f"{weights}: sha256 {shipped.sha256_file(weights)} does not match {expected} "
                       f"recorded in manifest.json")


def test_missing_file_stale_recipe_and_no_manifest(shipped_folder, tmp_path):
    assert shipped.verify(shipped_folder, "zzz") == (
        f"{shipped_folder / 'manifest.json'}: built from recipe hash abc123, but the recipe's hash is now zzz "
        f"(rerun `python -m pretrain.shipped` to ship the new one)")
    (shipped_folder / "open_clip_config.json").unlink()
    assert shipped.verify(shipped_folder, "abc123") == (
        f"{shipped_folder / 'open_clip_config.json'}: missing (listed in manifest.json)")
    assert shipped.verify(tmp_path, "abc123") == f"{tmp_path / 'manifest.json'}: not found"


def test_ensure_uses_a_verified_copy_and_trains_when_it_does_not_verify(shipped_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shipped, "shipped_dir", lambda: shipped_folder)
    monkeypatch.setattr(default_teacher, "recipe_hash", lambda overrides: "other" if overrides else "abc123")
    trained = []

    def fake_train(run_dir, overrides):  # stands for the subprocess build of the recipe
        trained.append(run_dir)
        save_tiny_teacher(run_dir / "teacher")
        (run_dir / "metrics.json").write_text("{}")

    monkeypatch.setattr(default_teacher, "_train", fake_train)
    assert default_teacher.ensure_default_teacher() == shipped_folder and not trained
    # an override is another recipe: never the shipped copy
    assert default_teacher.ensure_default_teacher(overrides=["train.max_steps=1"]) != shipped_folder
    assert len(trained) == 1
    (shipped_folder / "open_clip_model.safetensors").write_bytes(b"not the weights")
    got = default_teacher.ensure_default_teacher()
    assert got == tmp_path / "cache" / "teachers" / "abc123" / "teacher" and len(trained) == 2
    err = capsys.readouterr().err
    assert err.count("not using the shipped default teacher") == 1 and "open_clip_model.safetensors: sha256" in err


def test_a_shipped_recipe_teacher_is_used_without_overrides_and_rebuilt_when_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    key = default_teacher.recipe_hash((), "lit_scene_place")
    folder = shipped.write_shipped(save_tiny_teacher(tmp_path / "teacher"), key, tmp_path / "recipe_lit_scene_place",
                                   "python -m pretrain.shipped --recipe lit_scene_place")
    monkeypatch.setattr(shipped, "recipe_dir", lambda recipe: tmp_path / f"recipe_{recipe}")
    built = []

    def fake_build(run_dir, args):  # stands for the subprocess build of the recipe
        built.append((run_dir.name, args[2]))
        save_tiny_teacher(run_dir / "teacher")
        (run_dir / "metrics.json").write_text("{}")

    monkeypatch.setattr(default_teacher, "run_module_into", fake_build)
    assert default_teacher.ensure_recipe_teacher("lit_scene_place") == folder and not built
    assert default_teacher.default_teacher_name("recipe:lit_scene_place") == f"local-dir:{folder}"
    # where-to-write keys are not overrides; any other key is another recipe: never the shipped copy
    assert default_teacher.ensure_recipe_teacher("lit_scene_place", ["output_dir=x"]) == folder and not built
    other = default_teacher.ensure_recipe_teacher("lit_scene_place", ["train.max_steps=7"])
    assert other.parent.parent == tmp_path / "cache" / "teachers" and len(built) == 1
    # a recipe with no shipped folder trains quietly; a stale manifest warns once, names the command
    default_teacher.ensure_recipe_teacher("lit_facts_places")
    assert capsys.readouterr().err == ""
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "recipe_hash": "0" * 16}))
    got = default_teacher.ensure_recipe_teacher("lit_scene_place")
    assert got == tmp_path / "cache" / "teachers" / key / "teacher" and built[-1][0] == key
    err = capsys.readouterr().err
    assert err.count("not using the shipped lit_scene_place teacher") == 1
    assert "rerun `python -m pretrain.shipped --recipe lit_scene_place`" in err


def test_shipping_a_recipe_teacher_copies_its_cached_build_with_the_command(tmp_path, monkeypatch):
    cached = save_tiny_teacher(tmp_path / "cache_build")
    monkeypatch.setattr(default_teacher, "ensure_recipe_teacher", lambda recipe: cached)
    dest = shipped.main(["--recipe", "lit_scene_place", "--dest", str(tmp_path / "out")])
    m = json.loads((dest / "manifest.json").read_text())
    assert m["command"] == "python -m pretrain.shipped --recipe lit_scene_place"
    assert m["recipe_hash"] == default_teacher.recipe_hash((), "lit_scene_place")
    assert {n: shipped.sha256_file(cached / n) for n in m["files"]} == m["files"]
    assert shipped.verify(dest, m["recipe_hash"]) is None
    # rewriting the folder from itself (the shipped copy is what ensure_recipe_teacher returns)
    monkeypatch.setattr(default_teacher, "ensure_recipe_teacher", lambda recipe: dest)
    assert shipped.main(["--recipe", "lit_scene_place", "--dest", str(dest)]) == dest
    assert shipped.verify(dest, m["recipe_hash"]) is None
    from clip_td.base.io import InputError
    with pytest.raises(InputError, match="pretraining recipe 'nope' not found"):
        shipped.main(["--recipe", "nope", "--dest", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_the_package_ships_a_teacher_that_verifies_against_todays_recipe():
    folder = shipped.shipped_dir()
    if not folder.exists():
        pytest.skip("no shipped default teacher in this checkout")
    assert shipped.verify(folder, default_teacher.recipe_hash(())) is None


def test_every_shipped_recipe_teacher_verifies_against_its_recipe_today():
    folders = sorted(shipped.shipped_dir("").glob("recipe_*"))
    if not folders:
        pytest.skip("no shipped recipe teacher in this checkout")
    for folder in folders:
        recipe = folder.name[len("recipe_"):]
        assert shipped.recipe_dir(recipe) == folder
        assert shipped.verify(folder, default_teacher.recipe_hash((), recipe)) is None
        assert json.loads((folder / "manifest.json").read_text())["command"] == (
            f"python -m pretrain.shipped --recipe {recipe}")


def test_the_recipe_path_rebuilds_bit_for_bit(tmp_path):
    """What `python -m pretrain.shipped` relies on: the same recipe on the same machine gives
    the same bytes (image init, fitted vocabulary and exchange negatives included)."""
    from pretrain.config import recipe_path
    from pretrain.train import main
    from test_pretrain_corpus import TINY_OVERRIDES, write_tiny_corpus

    root = write_tiny_corpus(tmp_path / "world", n_train=24, n_val=4)
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        main(["--config", str(recipe_path("clip")), f"data.root={root}", f"output_dir={out}", "train.batch_size=8",
              "train.max_steps=3", "eval.enabled=false", "image_init.steps=3", "image_init.batch_size=8",
              "model.fitted_vocab_size=100", "loss.text_negatives=true", "loss.text_negative_swap=0.5",
              *TINY_OVERRIDES])
        digests.append({p.name: shipped.sha256_file(p) for p in sorted((out / "teacher").iterdir())})
    assert digests[0] == digests[1] and "open_clip_model.safetensors" in digests[0]


def test_an_option_added_later_changes_the_hash_only_away_from_its_neutral_value():
    # lit.yaml (the default teacher before the scene-graph one) predates every NEUTRAL_AT key:
    # its hash is still the one its shipped teacher was built under
    base = default_teacher.recipe_hash((), "lit")
    assert base == "28f7805193433ee6"
    for (section, key), neutral in default_teacher.NEUTRAL_AT.items():
        assert default_teacher.recipe_hash((f"{section}.{key}={neutral}",), "lit") == base
        other = ((not neutral) if isinstance(neutral, bool) else neutral + 1 if isinstance(neutral, int)
                 else neutral + ["a picture of {n}"] if isinstance(neutral, list) else 0.25)
        assert default_teacher.recipe_hash((f"{section}.{key}={other}",), "lit") != base


def test_the_default_recipe_by_its_own_name_is_the_shipped_default_teacher(tmp_path, monkeypatch):
    """`lit_scene` resolves to the default recipe's hash, so it (and a later stage's
    `init_from: lit_scene`, as lit_scene_large.yaml has) takes the shipped default teacher."""
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    key = default_teacher.recipe_hash(())
    assert default_teacher.recipe_hash((), "lit_scene") == key
    assert default_teacher.recipe_hash((), "lit_scene_large") != key
    folder = shipped.write_shipped(save_tiny_teacher(tmp_path / "teacher"), key, tmp_path / "default_teacher",
                                   "python -m pretrain.shipped")
    monkeypatch.setattr(shipped, "shipped_dir", lambda name="default_teacher": folder)
    monkeypatch.setattr(shipped, "recipe_dir", lambda recipe: tmp_path / f"recipe_{recipe}")  # none shipped
    built = []

    def fake_build(run_dir, args):  # stands for the subprocess build of the recipe
        built.append(run_dir.name)
        save_tiny_teacher(run_dir / "teacher")
        (run_dir / "metrics.json").write_text("{}")

    monkeypatch.setattr(default_teacher, "run_module_into", fake_build)
    assert default_teacher.ensure_recipe_teacher("lit_scene") == folder and not built
    # another recipe with the default's first stage still trains into the cache
    got = default_teacher.ensure_recipe_teacher("lit_facts_captions")
    assert got.parent.parent == tmp_path / "cache" / "teachers" and len(built) == 1
    # an override makes it another recipe: trained, never the shipped copy
    assert default_teacher.ensure_recipe_teacher("lit_scene", ["train.max_steps=7"]) != folder and len(built) == 2
