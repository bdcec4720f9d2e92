"""bench/student_concepts.py: masked concept-word accuracy per kind, on hand-checkable cases."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from clip_td.base.io import InputError
from pretrain.student.data import build_tokenizer

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("student_concepts", REPO / "bench" / "student_concepts.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)

CAPTIONS = ["a large red circle", "a small red square", "a big blue ring"]


class Constant(nn.Module):
    """Predicts token `answer` at every position; records the token batches it was given."""

    def __init__(self, answer: int, vocab: int) -> None:
        super().__init__()
        self.answer, self.vocab, self.seen = answer, vocab, []
        self.mlm = nn.Module()
        self.mlm.mlm_score = self.score

    def encode(self, pixel_values, input_ids, attention_mask):
        assert pixel_values.shape[0] == input_ids.shape[0] == attention_mask.shape[0]
        self.seen.append(input_ids.clone())
        return torch.zeros(*input_ids.shape, 4), None

    def score(self, text):
        logits = torch.zeros(*text.shape[:2], self.vocab)
        logits[..., self.answer] = 1.0
        return logits


def _items(concepts):
    return [{"pixel_values": torch.zeros(3, 8, 8), "text": t, "concepts": frozenset(c)} for t, c in zip(CAPTIONS, concepts)]


def test_accuracy_per_kind_counts_only_the_images_concepts():
    tok = build_tokenizer([{"c": t} for t in CAPTIONS], ["c"], vocab_size=300)
    red = tok.convert_tokens_to_ids("red")
    model = Constant(red, len(tok))
    # "big" is no concept kind, "square" not among the second image's concepts: neither counts
    got = sc.concept_word_accuracy(model, tok, _items([{"large", "red", "circle"}, {"small", "red"},
                                                        {"big", "blue", "ring"}]))
    assert got == {"colour": {"accuracy": pytest.approx(200 / 3), "words": 3},
                   "shape": {"accuracy": 0.0, "words": 2}, "size": {"accuracy": 0.0, "words": 2}}


def test_every_piece_of_the_word_and_nothing_else_is_masked():
    tok = build_tokenizer([{"c": t} for t in CAPTIONS], ["c"], vocab_size=40)  # words split into pieces
    model = Constant(0, len(tok))
    sc.concept_word_accuracy(model, tok, _items([{"circle"}, set(), set()]))
    (batch,) = model.seen
    ids = tok(CAPTIONS[0], return_tensors="pt")["input_ids"][0]
    masked = (batch[0] == tok.mask_token_id).nonzero().flatten().tolist()
    pieces = tok.convert_ids_to_tokens(ids[masked])
    assert len(pieces) > 1 and pieces[0] != "##" and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "circle"
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[masked] = False
    assert torch.equal(batch[0][keep], ids[keep])


def test_a_run_without_checkpoints_is_one_input_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(InputError, match=r"checkpoints: no step_<n>/model.safetensors"):
        sc.last_checkpoint(tmp_path)
