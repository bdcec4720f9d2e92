"""The LiT-style supervised image init (`image_init.*`) of teacher pretraining, and its lock."""

import json

import pytest
import torch
from safetensors.torch import load_file

from clip_td.base.io import InputError
from pretrain.clip_factory import build_model
from pretrain.config import recipe_path
from pretrain.data import CaptionDataset, concept_targets, read_captions, read_concepts
from pretrain.image_init import concept_bce_steps
from pretrain.train import main
from test_pretrain_corpus import TINY_OVERRIDES, write_tiny_corpus

# a tiny ModifiedResNet image tower (conv trunk with batch norm + attention pool) on 32-px images
RN_OVERRIDES = [o for o in TINY_OVERRIDES if "vision_cfg" not in o] + [
    "model.model_cfg.vision_cfg.image_size=32", "model.model_cfg.vision_cfg.layers=[1,1,1,1]",
    "model.model_cfg.vision_cfg.width=8"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("world"))


def _args(root, out, *extra):
    return ["--config", str(recipe_path("clip")), f"data.root={root}", f"output_dir={out}", "train.batch_size=8",
            "train.max_steps=3", "eval.enabled=false", *RN_OVERRIDES, *extra]


def _tiny_rn():
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    return build_model(model_cfg=cfg, preprocess_cfg={"size": 32})


def test_the_stage_learns_the_concepts_and_touches_only_the_image_tower(corpus):
    torch.manual_seed(0)
    built = _tiny_rn()
    pre = corpus / "pretrain"
    rows = read_captions(pre / "train.tsv")
    targets = concept_targets(rows, read_concepts(pre / "concepts.json"))
    before = {k: v.clone() for k, v in built.model.state_dict().items()}
    stats = concept_bce_steps(built.model.visual, CaptionDataset(rows, built.preprocess_val), targets, steps=40,
                              lr=3e-3, batch_size=16, seed=0, image_size=32, show_progress=False)
    after = built.model.state_dict()
    # the head starts at zero: the first BCE is log 2 on every logit
    assert stats["first_loss"] < 0.70 and stats["last_loss"] < 0.5 * stats["first_loss"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed)
    assert "visual.attnpool.c_proj.weight" in changed and "visual.bn1.running_mean" in changed


def test_the_first_step_bce_is_log_two(corpus):
    built = _tiny_rn()
    pre = corpus / "pretrain"
    rows = read_captions(pre / "train.tsv")
    targets = concept_targets(rows, read_concepts(pre / "concepts.json"))
    stats = concept_bce_steps(built.model.visual, CaptionDataset(rows, built.preprocess_val), targets, steps=1,
                              lr=1e-3, batch_size=8, seed=0, image_size=32, show_progress=False)
    assert stats["first_loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)


def test_locked_tower_stays_bitwise_fixed_through_contrastive_training(corpus, tmp_path):
    out = tmp_path / "run"
    main(_args(corpus, out, "image_init.steps=4", "image_init.batch_size=8", "image_init.lock=true"))
    init_only = tmp_path / "init_only"  # same seed, same init stage, no contrastive step
    main(_args(corpus, init_only, "image_init.steps=4", "image_init.batch_size=8", "image_init.lock=true",
               "train.max_steps=0"))
    a = load_file(str(out / "teacher" / "open_clip_model.safetensors"))
    b = load_file(str(init_only / "teacher" / "open_clip_model.safetensors"))
    vis = [k for k in a if k.startswith("visual.")]
    assert vis and all(torch.equal(a[k], b[k]) for k in vis)  # weights and batch-norm statistics
    assert not torch.equal(a["token_embedding.weight"], b["token_embedding.weight"])  # the text tower learned
    m = json.loads((out / "metrics.json").read_text())
    assert m["recipe"]["image_init_steps"] == 4 and m["recipe"]["image_lock"] is True
    assert set(m["train"]["image_init"]) == {"first_loss", "last_loss"}


def test_unlocked_tower_moves_and_a_resumed_run_skips_the_stage(corpus, tmp_path):
    out = tmp_path / "run"
    main(_args(corpus, out, "image_init.steps=4", "image_init.batch_size=8", "train.checkpoint_every=2"))
    base = tmp_path / "no_init"
    main(_args(corpus, base))
    a = load_file(str(out / "teacher" / "open_clip_model.safetensors"))
    b = load_file(str(base / "teacher" / "open_clip_model.safetensors"))
    assert not torch.equal(a["visual.attnpool.c_proj.weight"], b["visual.attnpool.c_proj.weight"])
    resumed = tmp_path / "resumed"
    main(_args(corpus, resumed, "image_init.steps=4", "image_init.batch_size=8",
               f"train.resume={out / 'checkpoints' / 'step_2'}"))
    m = json.loads((resumed / "metrics.json").read_text())
    assert m["train"]["image_init"] == {}  # the checkpoint holds the weights: no second init
    c = load_file(str(resumed / "teacher" / "open_clip_model.safetensors"))
    assert all(torch.allclose(a[k], c[k], atol=1e-5) for k in a)


def test_no_concepts_file_is_one_error_naming_the_key(corpus, tmp_path):
    (tmp_path / "pretrain").mkdir()
    for name in ("train.tsv", "val.tsv"):
        (tmp_path / "pretrain" / name).write_text((corpus / "pretrain" / name).read_text())
    (tmp_path / "pretrain" / "images").symlink_to(corpus / "pretrain" / "images")
    with pytest.raises(InputError, match="image_init.steps"):
        main(_args(tmp_path, tmp_path / "run", "image_init.steps=2"))


def test_caption_phrases_bind_each_adjective_to_its_noun():
    from pretrain.image_init import caption_phrases, phrase_targets

    parse = [["a", "DET", "det", 3], ["large", "ADJ", "amod", 3], ["Red", "ADJ", "amod", 3], ["star", "NOUN", "ROOT", -1],
             ["and", "CCONJ", "cc", 3], ["a", "DET", "det", 7], ["blue", "ADJ", "amod", 7], ["circle", "NOUN", "conj", 3]]
    row = {"title": "a large Red star and a blue circle", "parse": json.dumps(parse)}
    assert caption_phrases(row) == ["blue circle", "large star", "red star"]
    assert caption_phrases({"title": "x", "parse": ""}) == []
    other = {"parse": json.dumps([["red", "ADJ", "amod", 1], ["star", "NOUN", "ROOT", -1]])}
    vocab, t = phrase_targets([row, other, other], min_count=2)
    assert vocab == ["red star"] and t.tolist() == [[1.0], [1.0], [1.0]]
    vocab, t = phrase_targets([row, other], min_count=1)
    assert vocab == ["blue circle", "large star", "red star"] and t.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_phrases_add_their_labels_to_the_stage(corpus, tmp_path):
    out = tmp_path / "run"
    main(_args(corpus, out, "image_init.steps=2", "image_init.batch_size=8", "image_init.phrases=true",
               "image_init.phrase_min_count=1"))
    assert json.loads((out / "metrics.json").read_text())["recipe"]["image_init_steps"] == 2
    with pytest.raises(InputError, match="image_init.phrases"):
        main(_args(corpus, tmp_path / "r2", "image_init.steps=2", "image_init.phrases=true",
                   "image_init.phrase_min_count=100000"))


def test_facts_of_a_hand_made_scene_bind_attributes_and_state_clear_relations():
    from tasks.synthetic.pretrain_corpus import FACT_SEP, facts_of

    scene = {"style": "source", "objects": [
        {"shape": "circle", "colour": "red", "size": "large", "x": 0.2, "y": 0.5, "r": 0.15},
        {"shape": "square", "colour": "blue", "size": "small", "x": 0.8, "y": 0.55, "r": 0.08},
        # below the circle, but diagonal to the square (dx 0.45 vs dy 0.35): no clear relation
        {"shape": "star", "colour": "red", "size": "small", "x": 0.35, "y": 0.9, "r": 0.08}]}
    assert facts_of(scene) == ["blue square", "circle above star", "circle left of square", "large circle",
                               "red circle", "red star", "small square", "small star", "square right of circle",
                               "star below circle"]
    assert FACT_SEP not in "".join(facts_of(scene))


def test_fact_targets_count_rows_not_mentions_and_name_a_missing_column():
    from pretrain.image_init import fact_targets

    rows = [{"facts": "red circle|circle left of square"}, {"facts": "red circle|red circle"}, {"facts": ""}]
    vocab, t = fact_targets(rows, min_count=1)
    assert vocab == ["circle left of square", "red circle"]
    assert t.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    vocab, t = fact_targets(rows, min_count=2)  # "red circle" twice in one row counts once; in two rows, twice
    assert vocab == ["red circle"] and t.tolist() == [[1.0], [1.0], [0.0]]
    with pytest.raises(InputError, match=r"corpus.tsv: no fact .* image_init.fact_min_count=3"):
        fact_targets(rows, min_count=3, source="corpus.tsv")
    with pytest.raises(InputError, match=r"corpus.tsv: image_init.facts=true needs a `facts` column"):
        fact_targets([{"title": "a red circle"}], source="corpus.tsv")


def _stage_reads_the_column(tmp_path, column: str, key: str, value, *overrides: str) -> None:
    """The tiny corpus with a `column` of `value(shape, colour)` per row (read off its concepts):
    image_init.<key> runs 2 steps and learns; without the column it is one error naming it."""
    root = write_tiny_corpus(tmp_path / "world")
    train = root / "pretrain" / "train.tsv"
    lines = train.read_text().splitlines()
    out_lines = [lines[0] + f"\t{column}"]
    for line in lines[1:]:
        shape, colour = line.split("\t")[5].split()
        out_lines.append(f"{line}\t{value(shape, colour)}")
    train.write_text("\n".join(out_lines) + "\n")
    out = tmp_path / "run"
    main(_args(root, out, "image_init.steps=2", "image_init.batch_size=8", f"image_init.{key}=true", *overrides))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["image_init_steps"] == 2 and metrics["train"]["image_init"]["last_loss"] < 0.7
    with pytest.raises(InputError, match=rf"train.tsv: image_init.{key}=true needs a `{column}` column"):
        main(_args(write_tiny_corpus(tmp_path / "plain"), tmp_path / "r2", "image_init.steps=2",
                   f"image_init.{key}=true"))


def test_facts_add_their_labels_to_the_stage(tmp_path):
    # a `facts` column: each row's bound attribute ("<colour> <shape>")
    _stage_reads_the_column(tmp_path, "facts", "facts", lambda shape, colour: f"{colour} {shape}",
                            "image_init.fact_min_count=1")


def test_teacher_relations_bench_reads_relations_and_single_colour_bindings():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("teacher_relations", Path(__file__).resolve().parents[1] / "bench" / "teacher_relations.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"facts": "blue circle|circle left of square|large circle|red circle|red square|square right of circle|"
                    "square below square|star above circle"}
    rels, bound, count = bench.parse_facts(row, ["circle", "square", "star"], ["red", "blue"])
    assert count is None  # no `places` column: no count question
    # "square below square" names one shape twice: no 4-way question can tell its objects apart
    assert rels == [("circle", "left of", "square"), ("square", "right of", "circle"), ("star", "above", "circle")]
    assert bound == {"square": "red"}  # the circle is bound to two colours: left out
    scores = bench.score(lambda n, texts, keys: torch.tensor([1.0 if k[-1] == "square" and k[0] == "red" or
                                                             k[1:] == ("left of", "square") else 0.0 for k in keys]),
                         [(rels, bound, count)], ["red", "blue"])
    # relation: argmax picks index 0 ("left of") every time: right for the first fact only
    assert scores == {"relation": pytest.approx(100.0 / 3), "relation_n": 3, "binding": 100.0, "binding_n": 1}
    # the count: one per `places` entry; a reader that always says "two shapes" is right on one of three
    facts = [bench.parse_facts({"facts": "", "places": p}, ["circle"], ["red"])
             for p in ("circle at top|star at center", "circle at top", "circle at top|star at left|ring at center")]
    assert [f[2] for f in facts] == [2, 1, 3]
    texts_seen = []

    def always_two(n, texts, keys):
        texts_seen.append(texts)
        return torch.tensor([1.0 if k == ("count", "2") else 0.0 for k in keys])

    got = bench.score(always_two, facts, ["red"], counts=[1, 2, 3])
    assert got["count"] == pytest.approx(100.0 / 3) and got["count_n"] == 3 and got["count_chance"] == pytest.approx(100.0 / 3)
    assert texts_seen[0] == ["one shape", "two shapes", "three shapes"]


def test_standardise_output_gives_every_output_dimension_mean_zero_and_unit_variance(corpus):
    from pretrain.image_init import standardise_output

    torch.manual_seed(0)
    built = _tiny_rn()
    visual = built.model.visual.eval()
    rows = read_captions(corpus / "pretrain" / "train.tsv")
    ds = CaptionDataset(rows, built.preprocess_val)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        before = visual(images)
    stats = standardise_output(visual, ds, rows=len(ds), batch_size=16)
    with torch.no_grad():
        after = visual(images)
    assert stats["rows"] == len(ds) and stats["std_min"] <= stats["std_max"]
    torch.testing.assert_close(after.mean(0), torch.zeros(after.shape[1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(after.std(0), torch.ones(after.shape[1]), atol=1e-3, rtol=0)
    # an affine map of the old output, dimension by dimension (float32 folding: W / std and
    # (b - mean) / std round differently from the reference on other CPUs' kernels, up to ~2e-3 on
    # unit-variance outputs; a wrong map is off by O(1))
    ref = ((before.double() - before.double().mean(0)) / before.double().std(0)).float()
    torch.testing.assert_close(after, ref, atol=5e-3, rtol=1e-3)
    vit = build_model(model_cfg={"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                                                 "patch_size": 8},
                                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                              "layers": 1}}, preprocess_cfg={"size": 32})
    with pytest.raises(InputError, match="image_init.standardise: needs an image tower whose output layer"):
        standardise_output(vit.model.visual, ds)


def test_places_of_a_hand_made_scene_give_each_shape_its_grid_cell():
    from tasks.synthetic.pretrain_corpus import FACT_SEP, places_of

    scene = {"style": "source", "objects": [
        {"shape": "circle", "colour": "red", "size": "large", "x": 0.2, "y": 0.5, "r": 0.15},  # column 0, row 1
        {"shape": "square", "colour": "blue", "size": "small", "x": 0.8, "y": 0.1, "r": 0.08},  # column 2, row 0
        {"shape": "circle", "colour": "red", "size": "small", "x": 0.5, "y": 0.5, "r": 0.08},  # the middle cell
        {"shape": "star", "colour": "red", "size": "small", "x": 0.35, "y": 0.9, "r": 0.08}]}  # column 1, row 2
    assert places_of(scene) == ["circle at center", "circle at left", "square at top right", "star at bottom"]
    assert FACT_SEP not in "".join(places_of(scene))


def test_place_targets_are_the_places_column_and_name_it_when_missing():
    from pretrain.image_init import fact_targets

    rows = [{"places": "circle at top left|star at center"}, {"places": "circle at top left"}, {"places": ""}]
    vocab, targets = fact_targets(rows, min_count=1, column="places")
    assert vocab == ["circle at top left", "star at center"]
    assert targets.tolist() == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert fact_targets(rows, min_count=2, column="places")[0] == ["circle at top left"]
    with pytest.raises(InputError, match=r"c.tsv: image_init.places=true needs a `places` column"):
        fact_targets([{"facts": "red circle"}], column="places", source="c.tsv")


def test_count_targets_are_ordinal_at_least_k_labels_from_the_places_column():
    from pretrain.image_init import count_targets

    rows = [{"places": "circle at top left|star at center|ring at left"}, {"places": "circle at top"},
            {"places": ""}]
    labels, targets = count_targets(rows)
    assert labels == ["at least 1 shapes", "at least 2 shapes", "at least 3 shapes"]
    assert targets.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(InputError, match=r"c.tsv: image_init.counts=true needs a `places` column"):
        count_targets([{"facts": "red circle"}], source="c.tsv")
    with pytest.raises(InputError, match=r"c.tsv: image_init.counts=true, but no row's `places` column names an object"):
        count_targets([{"places": ""}], source="c.tsv")


def test_counts_add_their_labels_to_the_stage_and_keep_earlier_hashes(tmp_path):
    from pretrain.default_teacher import recipe_hash

    _stage_reads_the_column(tmp_path, "places", "counts", lambda shape, colour: f"{shape} at center")
    assert recipe_hash(["image_init.counts=false"], "lit_scene") == recipe_hash([], "lit_scene")
    assert recipe_hash([], "lit_scene_count_image") != recipe_hash([], "lit_scene_large_image")
