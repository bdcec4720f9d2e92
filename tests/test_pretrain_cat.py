"""CAT rules on hand-built parses, backend errors and the report against the generator truth."""

import importlib.util
import json

import pytest

from clip_td.base.io import InputError
from pretrain.cat_filter import CATRules, actions, cat_decision, cat_filter, complexity, make_backends, ocr_jaccard, truth_scores

# "a dog chases a red ball": chases is root; dog (nsubj) and ball (dobj) hang off it
DOG = [("a", "DET", "det", 1), ("dog", "NOUN", "nsubj", 2), ("chases", "VERB", "ROOT", -1),
       ("a", "DET", "det", 5), ("red", "ADJ", "amod", 5), ("ball", "NOUN", "dobj", 2)]
PICTURE = [("a", "DET", "det", 1), ("picture", "NOUN", "ROOT", -1)]


def test_complexity_and_actions_hand_built():
    assert complexity(DOG) == 2  # chases: {dog, ball}; ball: {a, red}
    assert actions(DOG) == 1
    assert complexity(PICTURE) == 1 and actions(PICTURE) == 0
    # a noun heading an nsubj is not an action
    assert actions([("x", "NOUN", "nsubj", 1), ("y", "NOUN", "ROOT", -1)]) == 0
    assert complexity([]) == 0


def test_ocr_jaccard_words():
    assert ocr_jaccard("RED BALL", "a dog chases a red ball") == pytest.approx(2 / 5)
    assert ocr_jaccard("", "anything") == 0.0


def test_decisions_follow_thresholds():
    rules = CATRules(min_complexity=2, min_actions=1, max_ocr_jaccard=0.3)
    assert cat_decision(DOG, "", "a dog chases a red ball", rules) == (True, "kept")
    assert cat_decision(PICTURE, "", "a picture", rules) == (False, "low_complexity")
    assert cat_decision(DOG, "", "x", CATRules(2, 2, 0.3)) == (False, "no_action")
    assert cat_decision(DOG, "red ball", "a dog chases a red ball", rules) == (False, "text_spotting")
    assert cat_decision(DOG, "red ball", "a dog chases a red ball", CATRules(2, 1, 0.5)) == (True, "kept")


def test_filter_report_against_truth():
    rows = [
        {"title": "a dog chases a red ball", "parse": json.dumps(DOG), "ocr_text": "", "noise": "clean"},
        {"title": "a picture", "parse": json.dumps(PICTURE), "ocr_text": "", "noise": "low_complexity"},
        {"title": "a dog chases a red ball", "parse": json.dumps(DOG), "ocr_text": "red ball", "noise": "text_spotting"},
        {"title": "a dog chases a red ball", "parse": json.dumps(DOG), "ocr_text": "", "noise": "mismatch"},
        {"title": "a picture", "parse": json.dumps(PICTURE), "ocr_text": "", "noise": "clean"},
    ]
    parse_fn, ocr_fn = make_backends("column", "column")
    kept, report = cat_filter(rows, CATRules(2, 0, 0.2), parse_fn, ocr_fn)
    assert [r["noise"] for r in kept] == ["clean", "mismatch"]
    assert report["reasons"] == {"kept": 2, "low_complexity": 2, "text_spotting": 1}
    truth = report["vs_truth"]
    assert truth["precision"] == pytest.approx(2 / 3)  # 3 dropped, 2 of them noisy
    assert truth["recall"] == pytest.approx(2 / 3)  # 3 noisy, 2 dropped
    assert truth["recall_per_kind"] == {"low_complexity": 1.0, "mismatch": 0.0, "text_spotting": 1.0}
    assert truth["clean_dropped"] == pytest.approx(0.5)


def test_truth_scores_no_drops():
    assert truth_scores(["clean", "mismatch"], [False, False])["precision"] == 0.0


@pytest.mark.skipif(importlib.util.find_spec("spacy") is not None, reason="spaCy is installed here")
def test_missing_backend_names_the_key():
    with pytest.raises(InputError, match="cat.parse_backend.*spacy"):
        make_backends("spacy", "column")


@pytest.mark.skipif(importlib.util.find_spec("pytesseract") is not None, reason="pytesseract is installed here")
def test_missing_ocr_backend_names_the_key():
    with pytest.raises(InputError, match="cat.ocr_backend.*tesseract"):
        make_backends("column", "tesseract")


def test_unknown_backend_lists_choices():
    # the Registry's message: `<config key>=<name>: unknown <kind> <name>; expected one of: ...`
    with pytest.raises(InputError, match=r"cat.ocr_backend='easyocr': unknown ocr backend 'easyocr'; expected one of: column, none, tesseract"):
        make_backends("column", "easyocr")
    with pytest.raises(InputError, match=r"cat.parse_backend='udpipe': .*expected one of: column, spacy"):
        make_backends("udpipe", "column")
