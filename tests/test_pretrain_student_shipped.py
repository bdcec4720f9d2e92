"""The shipped default student: used only when its manifest matches today's recipe and every file
hashes as recorded; otherwise one warning naming the file, and the recipe is trained instead."""

import json

import pytest

from pretrain.shipped import sha256_file, verify
from pretrain.student import default_student
from pretrain.student import shipped as student_shipped


def _tiny_student(out):
    from transformers import ViltConfig, ViltModel

    from pretrain.student.data import build_tokenizer
    from pretrain.student.export import export_student

    tok = build_tokenizer([{"c": "a red circle"}], ["c"], vocab_size=60)
    vilt = ViltModel(ViltConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, image_size=16, patch_size=8, max_position_embeddings=16))
    return export_student(vilt, tok, 16, out)


@pytest.fixture()
def shipped_student(tmp_path):
    return student_shipped.ship(_tiny_student(tmp_path / "student"), "abc123", tmp_path / "shipped")


def test_the_manifest_lists_every_file_of_the_vilt_folder(shipped_student):
    m = json.loads((shipped_student / "manifest.json").read_text())
    names = sorted(p.name for p in shipped_student.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == names
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= set(names)
    assert all(m["files"][n] == sha256_file(shipped_student / n) for n in names)
    assert m["recipe_hash"] == "abc123" and m["command"] == "python -m pretrain.student.shipped"
    assert verify(shipped_student, "abc123") is None


def test_a_folder_that_is_not_a_student_is_refused(tmp_path):
    from clip_td.base.io import InputError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"x: not a ViLT student folder of pretrain_student.py \(no preprocessor_config.json\)"):
        student_shipped.ship(tmp_path / "x", "abc123", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ensure_uses_a_verified_copy_and_trains_when_it_does_not(shipped_student, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_TD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(student_shipped, "shipped_student_dir", lambda: shipped_student)
    monkeypatch.setattr(default_student, "recipe_hash", lambda overrides=(): "other" if overrides else "abc123")
    trained = []

    def fake_train(run_dir, overrides):  # stands for the subprocess build of the recipe
        trained.append(run_dir)
        _tiny_student(run_dir / "student")
        (run_dir / "metrics.json").write_text("{}")

    monkeypatch.setattr(default_student, "_train", fake_train)
    assert default_student.ensure_default_student() == shipped_student and not trained
    # an override is another recipe: never the shipped copy
    assert default_student.ensure_default_student(["train.max_steps=1"]) == tmp_path / "cache" / "students" / "other" / "student"
    weights = shipped_student / "model.safetensors"
    weights.write_bytes(b"not the weights")
    got = default_student.ensure_default_student()
    assert got == tmp_path / "cache" / "students" / "abc123" / "student" and len(trained) == 2
    err = capsys.readouterr().err
    assert err.count("not using the shipped default student") == 1 and f"{weights}: sha256" in err
    assert default_student.ensure_default_student(use_shipped=False) == got and len(trained) == 2  # cached now


def test_the_ship_command_writes_the_recipes_student_and_its_report(tmp_path, monkeypatch):
    from pretrain import default_teacher

    calls = []

    def fake_run(run_dir, args):  # stands for `python -m pretrain.student` into a fresh folder
        calls.append(list(args))
        _tiny_student(run_dir / "student")
        (run_dir / "metrics.json").write_text('{"mlm_accuracy": 0.5}')

    monkeypatch.setattr(default_teacher, "run_module_into", fake_run)
    monkeypatch.setattr(default_student, "recipe_hash", lambda overrides=(): "k" + str(len(overrides)))
    dest = student_shipped.main(["--dest", str(tmp_path / "out")])
    assert dest == tmp_path / "out" and calls == [["pretrain.student"]]
    assert json.loads((dest / "pretrain_metrics.json").read_text()) == {"mlm_accuracy": 0.5}
    m = json.loads((dest / "manifest.json").read_text())
    assert m["recipe_hash"] == "k0" and "pretrain_metrics.json" in m["files"]
    assert verify(dest, "k0") is None
