"""`model.fitted_vocab_size`: a teacher whose text tower reads a WordPiece vocabulary fitted on
the training captions, saved in its open_clip `local-dir:` folder."""

import json

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from clip_td.lib.teacher import FrozenTeacher
from pretrain.config import recipe_path
from pretrain.train import main
from test_pretrain_corpus import TINY_OVERRIDES, write_tiny_corpus


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = write_tiny_corpus(tmp_path_factory.mktemp("world"))
    out = tmp_path_factory.mktemp("run")
    main(["--config", str(recipe_path("clip")), f"data.root={root}", f"output_dir={out}", "train.batch_size=8",
          "train.max_steps=2", "eval.enabled=false", "model.fitted_vocab_size=200", *TINY_OVERRIDES])
    return out / "teacher"


def test_the_folder_holds_the_vocabulary_and_the_tower_is_sized_to_it(teacher_dir):
    cfg = json.loads((teacher_dir / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    # 5 specials + the corpus' characters (word-initial and ##) + its words, under the cap of 200
    words = {"a", "red", "blue", "green", "circle", "square", "picture"}
    assert words <= set(vocab) and len(vocab) < 200
    assert cfg["vocab_size"] == len(vocab) and cfg["pool_type"] == "eos"
    assert cfg["eos_id"] == vocab["[SEP]"] and cfg["pad_id"] == vocab["[PAD]"] == 0
    state = load_file(str(teacher_dir / "open_clip_model.safetensors"))
    assert state["token_embedding.weight"].shape[0] == len(vocab)


def test_open_clip_reads_it_and_the_teacher_encodes_with_it(teacher_dir):
    name = f"local-dir:{teacher_dir}"
    tok = open_clip.get_tokenizer(name)
    vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    ids = tok(["A red circle"])
    assert ids.shape == (1, 16)
    assert ids[0, :5].tolist() == [vocab[t] for t in ("[CLS]", "a", "red", "circle", "[SEP]")]
    assert ids[0, 5:].tolist() == [0] * 11
    model = open_clip.create_model(name).eval()
    teacher = FrozenTeacher.from_name(name)
    out = teacher.encode_texts(["A red circle", "a blue square"])
    with torch.no_grad():
        ref = model.encode_text(tok(["A red circle", "a blue square"]), normalize=True)
    assert torch.allclose(out["text_embed"], ref, atol=1e-5)
    assert out["token_mask"][0].tolist()[:5] == [False, True, True, True, False]
    assert out["offsets"][0] == [(0, 1), (2, 5), (6, 12)]


def test_a_named_architecture_keeps_its_own_vocabulary(caplog):
    from pretrain.config import load_pretrain_config
    from pretrain.train import fit_vocabulary

    rows = [{"title": "a red circle", "synthetic_caption": ""}]
    cfg = load_pretrain_config(recipe_path("clip"), ["model.fitted_vocab_size=100"])
    assert len(fit_vocabulary(cfg, rows)) > 5
    named = load_pretrain_config(recipe_path("clip"), ["model.name=RN50", "model.fitted_vocab_size=100"])
    with caplog.at_level("WARNING", logger="pretrain"):
        assert fit_vocabulary(named, rows) is None
    assert "model.fitted_vocab_size=100 ignored: model.name='RN50' keeps its own vocabulary" in caplog.text


def test_words_the_captions_never_show_are_spelt_not_unknown(teacher_dir):
    tok = open_clip.get_tokenizer(f"local-dir:{teacher_dir}")
    vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    ids = tok(["Is circle2 red?"])[0]
    pieces = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1])]
    words = [pieces[i] for i in ids.tolist() if i != vocab["[PAD]"]]
    # digits and '?' never occur in the tiny corpus' captions, yet nothing becomes [UNK]
    assert words == ["[CLS]", "i", "##s", "circle", "##2", "red", "?", "[SEP]"]
