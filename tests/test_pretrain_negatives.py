"""NegCLIP hard negative texts: the swap on hand-made parses, and the loss on a hand case."""

import json
import math

import pytest
import torch

from clip_td.base.io import InputError
from pretrain.data import TextNegatives
from pretrain.losses import infonce_with_text_negatives


def _row(title, tokens):
    return {"title": title, "parse": json.dumps([[w, t, "dep", -1] for w, t in tokens])}


ROWS = [
    _row("a red circle", [("a", "DET"), ("red", "ADJ"), ("circle", "NOUN")]),
    _row("A Blue square, left", [("A", "DET"), ("Blue", "ADJ"), ("square", "NOUN"), (",", "PUNCT"), ("left", "ADV")]),
    _row("shapes", [("shapes", "X")]),
]


def test_one_content_word_is_swapped_for_another_of_its_part_of_speech():
    neg = TextNegatives(ROWS, seed=0)
    assert neg.vocab == {"NOUN": ["circle", "square"], "ADJ": ["blue", "red"]}
    seen = set()
    for i in range(40):  # the row is the same; the index seeds the choice
        out = neg(ROWS[0], i)
        assert out in {"a blue circle", "a red square"}
        seen.add(out)
        assert neg(ROWS[0], i) == out  # deterministic per (seed, index)
    assert seen == {"a blue circle", "a red square"}
    # the span is replaced in the caption as written (case, punctuation kept elsewhere)
    assert {neg(ROWS[1], i) for i in range(40)} == {"A red square, left", "A Blue circle, left"}
    assert neg(ROWS[2], 0) is None  # nothing to swap: no negative


def test_a_corpus_without_usable_parses_is_refused():
    with pytest.raises(InputError, match="loss.text_negatives needs a `parse` column"):
        TextNegatives([ROWS[2]], source="train.tsv")
    with pytest.raises(InputError, match=r"train.tsv:3: column 'parse'"):
        TextNegatives([ROWS[0], {"title": "x", "parse": "not json"}], source="train.tsv")


def test_loss_hand_case():
    # 2 images = e1, e2; texts t1 = e1, t2 = e2; negatives n1 = (e1 + e2)/sqrt2 (valid), n2 invalid
    s = torch.tensor(2.0)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img, txt = torch.stack([e1, e2]), torch.stack([e1, e2])
    neg = torch.stack([(e1 + e2) / math.sqrt(2), e2])
    valid = torch.tensor([True, False])
    loss = infonce_with_text_negatives(img, txt, neg, valid, s)
    c = 1 / math.sqrt(2)
    # image 1 ranks t1 (2), t2 (0), n1 (2c); image 2 ranks t1 (0), t2 (2), n1 (2c); n2 is masked
    i2t = (-2 + math.log(math.exp(2) + 1 + math.exp(2 * c)) - 2 + math.log(1 + math.exp(2) + math.exp(2 * c))) / 2
    t2i = -2 + math.log(math.exp(2) + 1)
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    # with no valid negative it is plain symmetric InfoNCE
    plain = infonce_with_text_negatives(img, txt, neg, torch.tensor([False, False]), s)
    assert plain.item() == pytest.approx(t2i, rel=1e-6)


def test_swap_negatives_exchange_two_words_of_one_part_of_speech():
    row = _row("a red star and a Blue circle", [("a", "DET"), ("red", "ADJ"), ("star", "NOUN"), ("and", "CCONJ"),
                                               ("a", "DET"), ("Blue", "ADJ"), ("circle", "NOUN")])
    neg = TextNegatives([row, ROWS[0]], seed=0, swap=1.0)
    outs = {neg(row, i) for i in range(60)}
    # every negative is an exchange (as written: the words keep their own case)
    assert outs == {"a Blue star and a red circle", "a red circle and a Blue star"}
    # a caption with no exchangeable pair falls back to a replacement
    assert {neg(ROWS[0], i) for i in range(40)} <= {"a blue circle", "a red square", "a red star", "a blue circle"}
    half = TextNegatives([row, ROWS[0]], seed=0, swap=0.5)
    kinds = [neg_text in outs for neg_text in (half(row, i) for i in range(400))]
    assert 0.4 < sum(kinds) / len(kinds) < 0.6
    with pytest.raises(InputError, match="loss.text_negative_swap"):
        TextNegatives([row], swap=1.5)


def test_relation_negatives_reverse_the_stated_relation():
    left = _row("A red star sits to the left of a ring", [
        ("A", "DET"), ("red", "ADJ"), ("star", "NOUN"), ("sits", "VERB"), ("to", "ADP"), ("the", "DET"),
        ("left", "NOUN"), ("of", "ADP"), ("a", "DET"), ("ring", "NOUN")])
    above = _row("a ring hovers above a blue star", [
        ("a", "DET"), ("ring", "NOUN"), ("hovers", "VERB"), ("above", "ADP"), ("a", "DET"), ("blue", "ADJ"),
        ("star", "NOUN")])
    rows = [left, above, ROWS[0]]
    neg = TextNegatives(rows, seed=0, relation=1.0)
    assert {neg(left, i) for i in range(30)} == {"A red star sits to the right of a ring"}
    assert {neg(above, i) for i in range(30)} == {"a ring hovers below a blue star"}
    # a caption without a relation falls back to a one-word replacement (vocab: circle/ring/star, blue/red)
    assert {neg(ROWS[0], i) for i in range(60)} == {"a blue circle", "a red ring", "a red star"}
    # shares: relation 0.5 of the captions that have one, the rest plain replacements
    half = TextNegatives(rows, seed=0, relation=0.5)
    flipped = [half(above, i) == "a ring hovers below a blue star" for i in range(400)]
    assert 0.4 < sum(flipped) / len(flipped) < 0.6
    # relation = 0 keeps the negatives of earlier runs (the random stream is unchanged)
    assert [TextNegatives(rows, seed=0)(above, i) for i in range(20)] == \
           [TextNegatives(rows, seed=0, relation=0.0)(above, i) for i in range(20)]
    with pytest.raises(InputError, match="loss.text_negative_relation"):
        TextNegatives(rows, relation=-0.1)
    with pytest.raises(InputError, match="at most 1 together"):
        TextNegatives(rows, swap=0.6, relation=0.6)


def test_fact_captions_state_one_relation_with_its_reversal_as_the_negative():
    from pretrain.data import FactCaptions

    row = {"facts": "blue square|circle left of square|large circle|red circle|red star|small square|"
                    "square right of circle|blue star"}
    every = FactCaptions(1.0, seed=0, colours=["red", "blue"])
    seen = {every(row, i) for i in range(40)}
    # the star has two colours: it is never named with one; the relations are the two stated
    assert seen == {("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
                    ("a blue square to the right of a red circle", "a blue square to the left of a red circle")}
    assert every(row, 3) == every(row, 3)  # fixed per (seed, row)
    # no clear relation: one bound colour, the negative another colour the shape does not have
    text, negative = every({"facts": "red circle|small circle|blue star|red star"}, 0)
    assert text == "a red circle" and negative == "a blue circle"
    assert every({"facts": "small circle"}, 0) is None  # nothing to state
    none = FactCaptions(0.0, colours=["red"])
    assert all(none(row, i) is None for i in range(20))
    half = FactCaptions(0.5, colours=["red", "blue"])
    assert 60 <= sum(half(row, i) is not None for i in range(200)) <= 140
    with pytest.raises(InputError, match="data.fact_captions: a share in"):
        FactCaptions(1.5)
    with pytest.raises(InputError, match="corpus.tsv: data.fact_captions needs a `facts` column"):
        FactCaptions(1.0, source="corpus.tsv")({"title": "x"}, 0)


def test_place_captions_say_where_one_object_is_with_a_free_region_as_the_negative():
    from pretrain.data import FactCaptions, split_places

    regions = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
    row = {"facts": "red circle|blue star|red star|circle left of square",
           "places": "circle at top left|star at center|star at bottom"}
    assert split_places(row["places"]) == {"circle": ["top left"], "star": ["center", "bottom"]}
    every = FactCaptions(0.0, seed=0, colours=["red", "blue"], places=1.0, regions=regions)
    seen = {every(row, i)[0] for i in range(60)}
    # the star has two colours (and two places): never named with one colour
    assert seen == {"a red circle near the top left", "a star in the center", "a star near the bottom"}
    for i in range(60):
        text, negative = every(row, i)
        subject = text.split(" near the ")[0].split(" in the ")[0]  # "a red circle", "a star"
        shape = subject.split()[-1]
        assert negative.startswith(subject + " ") and negative != text
        # the negative's region holds no object of that shape
        taken = split_places(row["places"])[shape]
        assert not any(negative.endswith(("near the " if r != "center" else "in the ") + r) for r in taken)
    # the draw that picks facts vs places is the facts' own: place captions take the rows the facts
    # leave, so data.place_captions=0 keeps every earlier run's captions
    facts_only = FactCaptions(0.5, seed=0, colours=["red", "blue"])
    both = FactCaptions(0.5, seed=0, colours=["red", "blue"], places=0.5, regions=regions)
    for i in range(100):
        if facts_only(row, i) is not None:
            assert both(row, i) == facts_only(row, i)
        else:
            assert both(row, i)[0] in seen
    assert both.place_texts([row] * 100) == [both(row, i)[0] for i in range(100) if facts_only(row, i) is None]
    assert FactCaptions(0.0, places=1.0)(row, 0)[1] is None  # no regions given: no negative
    assert every({"facts": "", "places": ""}, 0) is None
    with pytest.raises(InputError, match=r"data.place_captions: a share in \[0, 1 - data.fact_captions\]"):
        FactCaptions(0.6, places=0.5)
    with pytest.raises(InputError, match="corpus.tsv: data.place_captions needs a `places` column"):
        FactCaptions(0.0, source="corpus.tsv", places=1.0)({"facts": "red circle"}, 0)
    with pytest.raises(InputError, match="'<shape> at <region>', got 'circle top left'"):
        every({"facts": "", "places": "circle top left"}, 0)


def test_caption_sizes_name_each_objects_one_size_in_the_text_and_its_negative():
    from pretrain.data import FactCaptions

    regions = ["top left", "top", "center", "bottom"]
    row = {"facts": "red circle|large circle|blue square|small square|medium square|circle left of square|"
                    "red star|large star",
           "places": "circle at top left|star at center"}
    sized = FactCaptions(1.0, seed=0, colours=["red", "blue"], sizes=["small", "medium", "large"])
    plain = FactCaptions(1.0, seed=0, colours=["red", "blue"])
    # the square has two sizes in its facts: named with its colour only, as a two-colour shape is
    assert {sized(row, i) for i in range(40)} == {
        ("a large red circle to the left of a blue square", "a large red circle to the right of a blue square")}
    assert {plain(row, i) for i in range(40)} == {
        ("a red circle to the left of a blue square", "a red circle to the right of a blue square")}
    # one bound colour, no relation: the size stays in the negative, only the colour changes
    assert sized({"facts": "red circle|small circle"}, 0) == ("a small red circle", "a small blue circle")
    places = FactCaptions(0.0, seed=0, colours=["red", "blue"], places=1.0, regions=regions,
                          sizes=["small", "medium", "large"])
    seen = {places(row, i) for i in range(40)}
    assert {text for text, _ in seen} == {"a large red circle near the top left", "a large red star in the center"}
    assert all(neg.startswith(" ".join(text.split()[:4]) + " ") and neg != text for text, neg in seen)
    # same draws as without sizes: only the words differ
    unsized = FactCaptions(0.0, seed=0, colours=["red", "blue"], places=1.0, regions=regions)
    for i in range(40):
        assert places(row, i)[0].replace("large ", "") == unsized(row, i)[0]


def test_count_captions_say_how_many_places_the_picture_has_against_one_more_or_fewer():
    from pretrain.data import FactCaptions, count_phrase

    assert [count_phrase(n) for n in (1, 2, 6, 12)] == ["one shape", "two shapes", "six shapes", "12 shapes"]
    three = {"facts": "red circle", "places": "circle at top left|square at center|square at top right"}
    counts = FactCaptions(0.0, seed=0, counts=1.0)
    seen = {counts(three, i) for i in range(40)}
    assert seen == {("three shapes", "two shapes"), ("three shapes", "four shapes")}  # both sides drawn
    assert {counts({"places": "star at center"}, i) for i in range(20)} == {("one shape", "two shapes")}  # never zero
    assert counts({"places": ""}, 0) is None  # nothing to count: the row keeps its own caption
    with pytest.raises(InputError, match="corpus.tsv: data.count_captions needs a `places` column"):
        FactCaptions(0.0, source="corpus.tsv", counts=1.0)({"facts": "red circle"}, 0)
    with pytest.raises(InputError, match=r"data.count_captions: a share in \[0, 1 - data.fact_captions - "
                                         r"data.place_captions\] = \[0, 0.2\], got 0.3"):
        FactCaptions(0.5, places=0.3, counts=0.3)
    # the count share comes after the fact and place shares: rows outside it read what they read without it
    mixed, before = FactCaptions(0.5, seed=3, counts=0.2), FactCaptions(0.5, seed=3)
    rows = [{"facts": "red circle|circle left of square", "places": "circle at top|square at bottom"}] * 200
    kinds = [mixed._draw(i)[1] for i in range(200)]
    assert 20 <= kinds.count("counts") <= 60 and kinds.count("facts") == [before._draw(i)[1] for i in range(200)].count("facts")
    assert all(mixed(r, i) == before(r, i) for i, r in enumerate(rows) if kinds[i] != "counts")


def test_count_frames_write_the_count_and_its_negative_in_the_same_drawn_sentence():
    from pretrain.data import FactCaptions
    from pretrain.default_teacher import recipe_hash

    three = {"places": "circle at top|star at center|ring at left"}
    framed = FactCaptions(0.0, seed=0, counts=1.0, count_frames=["{n}", "a picture of {n}"])
    seen = {framed(three, i) for i in range(40)}
    assert seen == {("three shapes", "two shapes"), ("three shapes", "four shapes"),
                    ("a picture of three shapes", "a picture of two shapes"),
                    ("a picture of three shapes", "a picture of four shapes")}
    assert framed(three, 7) == framed(three, 7)  # fixed per seed and row
    # one frame draws nothing more: "{n}" alone reads exactly what the bare count captions read
    bare, default = FactCaptions(0.0, seed=0, counts=1.0, count_frames=["{n}"]), FactCaptions(0.0, seed=0, counts=1.0)
    assert [bare(three, i) for i in range(30)] == [default(three, i) for i in range(30)]
    assert FactCaptions(0.0, counts=1.0, count_frames=["an image of {n}"])({"places": "star at center"}, 0) == \
        ("an image of one shape", "an image of two shapes")
    for bad, where in ((["a picture"], 0), (["{n}", "{n} and {n}"], 1), (["{n}", "{m} of {n}"], 1)):
        with pytest.raises(InputError, match=rf'config key data.count_frames\[{where}\]: a sentence holding "{{n}}" exactly once'):
            FactCaptions(0.0, counts=1.0, count_frames=bad)
    with pytest.raises(InputError, match=r"data.count_frames\[0\]: .*got \{'n': None\}.*quote it"):
        FactCaptions(0.0, counts=1.0, count_frames=[{"n": None}])  # what an unquoted [{n}] parses to
    with pytest.raises(InputError, match=r"config key data.count_frames: a list of at least one sentence"):
        FactCaptions(0.0, counts=1.0, count_frames=[])
    # the default leaves every earlier recipe's hash (and so its cached teacher) as it was
    assert recipe_hash(["data.count_frames=['{n}']"], "lit_scene_count") == recipe_hash([], "lit_scene_count")
    assert recipe_hash(["data.count_frames=['{n}','a picture of {n}']"], "lit_scene_count") != recipe_hash([], "lit_scene_count")


def test_count_prefix_puts_the_count_before_a_fact_caption_and_changes_only_the_count_in_its_negative():
    from pretrain.data import FactCaptions

    row = {"facts": "red circle|blue square|circle left of square",
           "places": "circle at top left|square at center|square at top right"}
    prefixed = FactCaptions(1.0, seed=0, colours=("red", "blue"), count_prefix=1.0)
    seen = {prefixed(row, i) for i in range(40)}
    assert seen == {("three shapes: a red circle to the left of a blue square",
                     "two shapes: a red circle to the left of a blue square"),
                    ("three shapes: a red circle to the left of a blue square",
                     "four shapes: a red circle to the left of a blue square")}
    # its own draw: the rows outside the share read exactly what they read without the key, and
    # the rows inside it read the same caption behind the count
    mixed, before = FactCaptions(0.5, seed=3, count_prefix=0.4), FactCaptions(0.5, seed=3)
    rows = [{"facts": "red circle|circle left of square", "places": "circle at top|square at bottom"}] * 300
    outs = [(mixed(r, i), before(r, i)) for i, r in enumerate(rows)]
    changed = [(a, b) for a, b in outs if a != b]
    assert all((a is None) == (b is None) for a, b in outs)
    assert 40 <= len(changed) <= 80  # about 0.4 of the ~150 fact rows
    assert all(a[0] == "two shapes: " + b[0] and a[1] in ("one shape: " + b[0], "three shapes: " + b[0])
               for a, b in changed)
    with pytest.raises(InputError, match=r"config key data.count_prefix: a share in \[0, 1\], got 1.5"):
        FactCaptions(0.5, count_prefix=1.5)
    with pytest.raises(InputError, match="data.count_prefix: prefixes the fact and place captions, but "
                                         "data.fact_captions and data.place_captions are both 0"):
        FactCaptions(0.0, counts=0.2, count_prefix=0.5)
    with pytest.raises(InputError, match="corpus.tsv: data.count_prefix needs a `places` column"):
        FactCaptions(1.0, source="corpus.tsv", count_prefix=1.0)({"facts": "red circle"}, 0)
    from pretrain.default_teacher import recipe_hash
    assert recipe_hash(["data.count_prefix=0.0"], "lit_scene_place") == recipe_hash([], "lit_scene_place")
    assert recipe_hash(["data.count_prefix=0.1"], "lit_scene_place") != recipe_hash([], "lit_scene_place")


def test_caption_sizes_without_fact_or_place_captions_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.default_teacher import recipe_hash
    from pretrain.train import build

    cfg = load_pretrain_config(recipe_path("clip"), ["data.caption_sizes=true", f"output_dir={tmp_path}"])
    with pytest.raises(InputError, match="data.caption_sizes: .* needs data.fact_captions or data.place_captions"):
        build(cfg, None)
    # the key at its neutral value leaves every earlier recipe's hash (and its cached teacher) as it was
    assert recipe_hash(["data.caption_sizes=false"], "lit_scene_place") == recipe_hash([], "lit_scene_place")
    assert recipe_hash(["data.caption_sizes=true"], "lit_scene_place") != recipe_hash([], "lit_scene_place")
    assert OmegaConf.select(load_pretrain_config(recipe_path("lit_scene_place_size"), []), "data.caption_sizes")
    assert recipe_hash(["data.count_captions=0.0"], "lit_scene_place") == recipe_hash([], "lit_scene_place")
    assert recipe_hash(["data.count_captions=0.1"], "lit_scene_place") != recipe_hash([], "lit_scene_place")


def test_the_fitted_vocabulary_spells_place_words_whole_only_with_place_captions():
    from omegaconf import OmegaConf

    from pretrain.data import FactCaptions
    from pretrain.train import fit_vocabulary

    rows = [{"title": f"a {c} {s} and a {s}", "synthetic_caption": f"a {c} {s}", "facts": f"{c} {s}",
             "places": f"{s} at {r}"}
            for c in ("red", "blue", "green") for s in ("circle", "square", "star")
            for r in ("top left", "bottom", "center")]
    cfg = OmegaConf.create({"model": {"fitted_vocab_size": 200, "name": None}})
    places = FactCaptions(0.0, places=1.0)
    plain, fitted = fit_vocabulary(cfg, rows), fit_vocabulary(cfg, rows, places)
    assert places.place_texts(rows)[:2] == ["a red circle near the top left", "a red circle near the bottom"]

    def pieces(tok, word):
        return tok.tokenize(word) if hasattr(tok, "tokenize") else tok.tokenizer.tokenize(word)

    for word in ("top", "bottom", "center", "near"):
        assert pieces(fitted, word) == [word]
        assert len(pieces(plain, word)) > 1  # the captions alone never say it
    # facts-only captions leave the vocabulary as it was (the shipped teacher's stays the same)
    assert fit_vocabulary(cfg, rows, FactCaptions(1.0)).get_vocab() == plain.get_vocab()


def test_junk_words_insert_strings_that_read_no_corpus_word_at_the_same_places_in_text_and_negative():
    from clip_td.base.wordpiece import build_wordpiece
    from pretrain.data import JunkWords
    from pretrain.default_teacher import recipe_hash

    corpus = ["a red circle to the left of a blue square", "three shapes", "a blue ring sits above a red star"]
    words = {w for t in corpus for w in t.split()}
    junk = JunkWords(1.0, seed=0, words=words)
    # a string is junk only if none of its alphanumeric runs begins with a corpus word
    assert not junk._reads_a_word("rex") and junk._reads_a_word("redx") and junk._reads_a_word("x.red")
    assert junk._reads_a_word("ab") and not junk._reads_a_word("xb")  # "ab" would read as the article + ##b
    # glued to a word: only a longer corpus word counts ("circles" would be one if the corpus said it)
    assert not junk._reads_a_word("circle7", len("circle"))
    assert JunkWords(1.0, words=words | {"circles"})._reads_a_word("circles", len("circle"))
    assert JunkWords(1.0, words=words | {"circles"}).apply("a red circle", [(1.0, "s", True)]) == "a red circle s"
    assert junk.apply("a red circle", [(1.0, "7", True)]) == "a red circle7"
    assert junk.apply("a red circle", [(0.0, "xq", True), (0.5, "7", False)]) == "xq a 7 red circle"
    # fixed per seed and row; one to three strings per row at share 1, none at share 0, about half at 0.5
    plans = [junk.plan(i) for i in range(200)]
    assert plans == [junk.plan(i) for i in range(200)] and plans != [JunkWords(1.0, seed=1, words=words).plan(i)
                                                                       for i in range(200)]
    assert all(1 <= len(p) <= 3 for p in plans) and sum(g for p in plans for _, _, g, _ in p) > 0
    assert all(not JunkWords(0.0, words=words).plan(i) for i in range(200))
    assert 70 <= sum(bool(JunkWords(0.5, words=words).plan(i)) for i in range(200)) <= 130
    # what a fitted vocabulary reads: the text's own tokens, plus pieces that are no corpus word
    tok = build_wordpiece(corpus, vocab_size=200, alphabet="abcdefghijklmnopqrstuvwxyz0123456789.,?!-'")
    word_ids = {tok.convert_tokens_to_ids(w) for w in words}
    text, negative = "a red circle to the left of a blue square", "a red circle to the right of a blue square"
    for i, plan in enumerate(plans[:100]):
        with_junk, neg_junk = junk.apply(text, plan), junk.apply(negative, plan)
        assert with_junk != text
        assert [t for t in tok(with_junk)["input_ids"] if t in word_ids] == \
            [t for t in tok(text)["input_ids"] if t in word_ids], (i, with_junk)
        # the negative carries the same strings at the same places: only "left" / "right" differ
        # (a string glued to the changed word goes with it: "leftki" / "rightki")
        diff = [(a, b) for a, b in zip(with_junk.split(), neg_junk.split()) if a != b]
        assert len(diff) == 1 and diff[0][0][4:] == diff[0][1][5:], (i, with_junk, neg_junk)
        assert diff[0][0].startswith("left") and diff[0][1].startswith("right")
    with pytest.raises(InputError, match=r"config key data.junk_words: a share in \[0, 1\], got 1.5"):
        JunkWords(1.5)
    # the neutral value leaves every earlier recipe's hash (and so its cached teacher) as it was
    assert recipe_hash(["data.junk_words=0.0"], "lit_scene_count") == recipe_hash([], "lit_scene_count")
    assert recipe_hash(["data.junk_words=0.5"], "lit_scene_count") != recipe_hash([], "lit_scene_count")


def test_junk_replaces_take_a_word_the_text_and_its_negative_share_and_leave_insertion_plans_as_they_were():
    from pretrain.data import JunkWords
    from pretrain.default_teacher import recipe_hash

    words = {"a", "red", "circle", "to", "the", "left", "right", "of", "blue", "square"}
    text, negative = "a red circle to the left of a blue square", "a red circle to the right of a blue square"
    junk = JunkWords(1.0, words=words, replaces=1.0)
    # by hand: word 1 of 10 ("red") is shared, word 5 ("left" / "right") is not, so that string is inserted
    assert junk.apply_pair(text, negative, [(0.15, "xq", False, True)]) == (
        "a xq circle to the left of a blue square", "a xq circle to the right of a blue square")
    assert junk.apply_pair(text, negative, [(0.55, "xq", False, True)]) == (
        "a red circle to the left xq of a blue square", "a red circle to the right xq of a blue square")
    assert junk.apply_pair(text, None, [(0.55, "xq", False, True)]) == ("a red circle to the xq of a blue square", None)
    assert junk.apply_pair("a red circle", "a red circle left", [(0.5, "xq", False, True)])[0] == "a red xq circle"
    # every drawn plan keeps the negative different from the text in exactly the word it differed in
    plans = [junk.plan(i) for i in range(100)]
    assert all(p and all(r for *_, r in p) for p in plans)
    replaced = 0
    for plan in plans:
        t, n = junk.apply_pair(text, negative, plan)
        diff = [(a, b) for a, b in zip(t.split(), n.split()) if a != b]
        assert len(diff) == 1 and diff[0][0].startswith("left") and diff[0][1].startswith("right"), (plan, t, n)
        assert len(t.split()) == len(n.split()) <= 10 + len(plan)
        replaced += 10 + len(plan) - len(t.split())
    # a string lands on the one word they do not share ("left") a tenth of the time and is inserted there
    assert 0.8 * sum(map(len, plans)) <= replaced < sum(map(len, plans))
    # no replacement draws at 0: the strings, places and glue of data.junk_words alone are unchanged
    inserting = JunkWords(0.5, seed=3, words=words)
    mixed = JunkWords(0.5, seed=3, words=words, replaces=0.0)
    assert [inserting.plan(i) for i in range(50)] == [mixed.plan(i) for i in range(50)]
    assert all(not r for i in range(50) for *_, r in inserting.plan(i))
    with pytest.raises(InputError, match=r"config key data.junk_replaces: a share in \[0, 1\], got -0.1"):
        JunkWords(0.5, replaces=-0.1)
    assert recipe_hash(["data.junk_replaces=0.0"], "lit_scene_count") == recipe_hash([], "lit_scene_count")
    # a share of data.junk_words' strings: refused, before any data is read, without them
    from pretrain.config import load_pretrain_config, recipe_path
    from pretrain.train import check_names

    with pytest.raises(InputError, match=r"config key data.junk_replaces=0.5: a share of the junk strings of "
                                         r"data.junk_words, but data.junk_words is 0"):
        check_names(load_pretrain_config(recipe_path("lit_scene_count"), ["data.junk_replaces=0.5"]))
    check_names(load_pretrain_config(recipe_path("lit_scene_count_frames_junk_replace")))


def test_caption_dataset_puts_the_same_junk_in_a_row_s_text_and_its_negative(tmp_path):
    from PIL import Image

    from pretrain.data import CaptionDataset, FactCaptions, JunkWords

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    row = {"image": str(tmp_path / "x.png"), "title": "shapes", "facts": "red circle|blue square|circle left of square"}
    facts = FactCaptions(1.0, seed=0, colours=("red", "blue"))
    junk = JunkWords(1.0, seed=0, words={"a", "red", "circle", "to", "the", "left", "right", "of", "blue", "square"})
    plain = CaptionDataset([row], lambda im: im, negatives=object(), fact_captions=facts)[0]
    item = CaptionDataset([row], lambda im: im, negatives=object(), fact_captions=facts, junk=junk)[0]
    assert (plain["text"], plain["negative"]) == ("a red circle to the left of a blue square",
                                                  "a red circle to the right of a blue square")
    assert item["text"] == junk.apply(plain["text"], junk.plan(0)) != plain["text"]
    assert item["negative"] == junk.apply(plain["negative"], junk.plan(0)) and item["negative_valid"]
    assert item["caption"] == plain["caption"] == "shapes"  # the second path (ALIP's) keeps its caption
