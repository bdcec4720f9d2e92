"""bench/teacher_unread_pieces.py: which of the shipped teacher's tokens its corpus produces, and
the task texts with the others left out, checked on hand-tokenised cases."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture(scope="module")
def teacher():
    from clip_td.lib.teacher import FrozenTeacher
    from pretrain.shipped import shipped_dir

    return FrozenTeacher.from_name(f"local-dir:{shipped_dir('default_teacher')}")


def vocab_ids(teacher, *tokens):
    return {teacher.tokenizer.tokenizer.convert_tokens_to_ids(t) for t in tokens}


def test_corpus_token_ids_are_the_captions_tokens_with_start_end_and_padding(teacher, tmp_path):
    from teacher_unread_pieces import corpus_token_ids

    path = tmp_path / "train.tsv"
    path.write_text("filepath\ttitle\tsynthetic_caption\tfacts\tother\n"
                    "a.jpg\ta red circle\t\tcircle left of square|red circle\twhat\n")
    used = corpus_token_ids(teacher, path)
    assert used == vocab_ids(teacher, "[CLS]", "[SEP]", "[PAD]", "a", "red", "circle", "left", "of", "square")


def test_unread_tokens_are_left_out_and_the_rest_moved_up(teacher):
    from teacher_unread_pieces import embed, keep_read, unread_share

    used = vocab_ids(teacher, "is", "circle")
    # "what" -> w ##h ##a ##t and "?" are not in `used`: what is left is exactly "is circle"
    ids = teacher.tokenize(["What is circle?", "is circle"])
    kept = keep_read(teacher, ids, used)
    assert torch.equal(kept[0], ids[1]) and torch.equal(kept[1], ids[1])
    assert torch.allclose(embed(teacher, ["What is circle?"], used), embed(teacher, ["is circle"], None), atol=1e-6)
    assert not torch.allclose(embed(teacher, ["What is circle?"], None), embed(teacher, ["is circle"], None), atol=1e-3)
    # content tokens: w ##h ##a ##t is circle ? -> 5 of 7 unread
    assert unread_share(teacher, ["What is circle?"], used) == pytest.approx(500.0 / 7)
    assert unread_share(teacher, ["is circle"], used) == 0.0


def test_concepts_with_every_token_read_are_the_pretraining_zero_shot(small_world, tiny_teacher):
    from teacher_unread_pieces import score_concepts

    from clip_td.lib.teacher import FrozenTeacher
    from pretrain.data import read_zeroshot
    from pretrain.metrics import encode_images, zeroshot_accuracy, zeroshot_weights

    teacher = FrozenTeacher.from_name(f"local-dir:{tiny_teacher}")
    root = small_world / "pretrain"
    every = set(range(int(teacher.model.token_embedding.num_embeddings)))
    scores = score_concepts(teacher, root, every)
    for name, spec in read_zeroshot(root).items():
        assert list(scores[name]) == list(spec["templates"]) + ["ensemble"]
        img = encode_images(teacher.model, spec["images"], teacher.image_transform(), "cpu")
        w = zeroshot_weights(teacher.model, teacher.tokenizer, spec["classnames"], spec["templates"], "cpu")
        assert scores[name]["ensemble"]["as written"] == pytest.approx(zeroshot_accuracy(img, w, spec["labels"]))
        for v in scores[name].values():  # nothing left out when every token was read
            assert v["unread tokens left out"] == pytest.approx(v["as written"])
