"""Student tokenizers: WordPiece built from the corpus (offsets, save/reuse) and a checkpoint's own."""

from __future__ import annotations

import pytest

from clip_td.base.io import InputError
from clip_td.lib.tokenizer import build_wordpiece, student_tokenizer

CORPUS = ["what color is the red cube?", "how many spheres are there?", "is the ball left of the cube?"] * 5


def test_wordpiece_offsets_are_character_spans():
    tok = build_wordpiece(CORPUS, vocab_size=300)
    text = "what color is the cube?"
    enc = tok(text, return_offsets_mapping=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    spans = enc["offset_mapping"]
    assert spans[0] == (0, 0) and spans[-1] == (0, 0)  # special tokens span nothing
    pieces = [text[a:b] for a, b in spans[1:-1]]
    assert pieces == ["what", "color", "is", "the", "cube", "?"]


def test_unknown_word_splits_into_pieces_inside_its_span():
    tok = build_wordpiece(CORPUS, vocab_size=300)
    enc = tok("cubes", return_offsets_mapping=True)
    spans = enc["offset_mapping"][1:-1]
    assert spans[0][0] == 0 and spans[-1][1] == 5
    assert all(a < b for a, b in spans)


def test_pair_encoding_marks_both_segments():
    tok = build_wordpiece(CORPUS, vocab_size=300)
    enc = tok("is the cube red?", "yes", return_offsets_mapping=True)
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    assert toks.count("[SEP]") == 2 and toks[0] == "[CLS]"


def test_saved_beside_the_run_and_reused(tmp_path):
    first = student_tokenizer(None, tmp_path, CORPUS, vocab_size=300)
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    # a different corpus is ignored on resume: the saved vocabulary is reused
    again = student_tokenizer(None, tmp_path, ["completely different words only"], vocab_size=300)
    assert again.get_vocab() == first.get_vocab()
    assert again("red cube")["input_ids"] == first("red cube")["input_ids"]


def test_checkpoint_tokenizer_loaded_from_its_folder(tmp_path):
    tok = build_wordpiece(CORPUS, vocab_size=300)
    tok.save_pretrained(str(tmp_path / "ckpt"))
    loaded = student_tokenizer(str(tmp_path / "ckpt"), tmp_path / "run", [])
    assert loaded.is_fast and loaded("red cube")["input_ids"] == tok("red cube")["input_ids"]
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_missing_checkpoint_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="student.pretrained"):
        student_tokenizer(str(tmp_path / "nope"), tmp_path / "run", [])


def test_vocabulary_ignores_corpus_iteration_order():
    """The same words in any order give the same ids (tokenizers' trainer breaks ties by hash order)."""
    forward = build_wordpiece(CORPUS, vocab_size=40).get_vocab()
    backward = build_wordpiece(list(reversed(CORPUS)), vocab_size=40).get_vocab()
    assert forward == backward  # (characters are always kept, so it may exceed vocab_size)


def test_vocabulary_order_and_cut():
    from collections import Counter

    from clip_td.lib.tokenizer import wordpiece_vocab

    vocab = wordpiece_vocab(Counter({"ab": 3, "ba": 3, "abc": 5, "a": 9}), vocab_size=12)
    # 5 specials, chars a b c, ##a ##b ##c, then words by (-count, text) until 12 entries
    assert list(vocab) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##a", "##b", "##c", "abc"]
