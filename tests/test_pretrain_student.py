"""Student pretraining (pretrain_student.py): BERT masking, ITM negatives, a 3-step run on a tiny
corpus whose export loads through fine-tuning's path, and the errors a user can cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from clip_td.base.io import InputError
from pretrain.student import itm_negatives, load_student_config, mask_tokens
from pretrain.student.train import main, objective_inputs

REPO = Path(__file__).resolve().parent.parent
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SHAPES = ("circle", "square")
SHIFT_ONLY_WORD = "hexagon"  # appears only in the shift-style row: it must stay out of the vocabulary
# the image initialisation off (the default recipe's two stages are switched on where a test
# says so): the schema's values
NO_IMAGE_INIT = ["image_init.steps=0", "image_init.max_objects=1", "image_init.dense=false", "image_init.rehearsal=0"]
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "pretrain_student"
# the recipe before the region descriptions (configs/pretrain_student/captions_only.yaml): zero patch
# positions, no descriptions; region tests turn them on themselves
CAPTIONS_ONLY = ["model.patch_positions=zeros", "regions.weight=0", "regions.place_mask_prob=0.5",
                 "regions.curriculum_steps=0"]
TINY = [*CAPTIONS_ONLY, "data.image_size=32", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
        "model.intermediate_size=64", "model.max_text_len=16", "train.batch_size=4", "eval.batch_size=4",
        *NO_IMAGE_INIT]


# ---- a tiny corpus -------------------------------------------------------------------------------


def _image(path: Path, colour: str, shape: str) -> None:
    im = Image.new("RGB", (32, 32), (240, 240, 240))
    d = ImageDraw.Draw(im)
    (d.ellipse if shape == "circle" else d.rectangle)((6, 6, 26, 26), fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_corpus(root: Path, n_train: int = 10, n_val: int = 6, styles: str = "source") -> Path:
    """<root>/pretrain/{train,val}.tsv (+ images): `n` rows of `styles` and one shift-style row each."""
    pre = root / "pretrain"
    for split, n in (("train", n_train), ("val", n_val)):
        lines = ["filepath\ttitle\tsynthetic_caption\tstyle\tnoise"]
        for i in range(n):
            colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 2]
            rel = f"images/{split}/{i:03d}.png"
            _image(pre / rel, colour, shape)
            lines.append(f"{rel}\ta {colour} {shape}\ta {colour} {shape}\t{styles}\tclean")
        rel = f"images/{split}/shift.png"
        _image(pre / rel, "red", "square")
        lines.append(f"{rel}\ta striped {SHIFT_ONLY_WORD}\ta striped {SHIFT_ONLY_WORD}\tshift\tclean")
        (pre / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("run")
    metrics = main([f"data.root={root}", f"output_dir={out}", "train.max_steps=3", "train.checkpoint_every=2", *TINY])
    return root, out, metrics


# ---- masking ------------------------------------------------------------------------------------

CLS, SEP, PAD, MASK = 2, 3, 0, 4


def _special(ids: torch.Tensor) -> torch.Tensor:
    return (ids == CLS) | (ids == SEP) | (ids == PAD)


def test_masked_positions_are_the_first_draw_below_prob_outside_specials():
    ids = torch.tensor([[CLS, 10, 11, 12, SEP, PAD], [CLS, 13, 14, SEP, PAD, PAD]])
    out, labels = mask_tokens(ids, _special(ids), 50, 0.5, torch.Generator().manual_seed(0), MASK)
    # the first draw of seed 0 is u = [[.496 .768 .089 .132 .307 .634], [.490 .896 .456 .632 .349 .402]]:
    # u < .5 at (0,0) (0,2) (0,3) (0,4) (1,0) (1,2) (1,4) (1,5); of these only (0,2) (0,3) (1,2) are
    # content tokens; the second draw there (.294 .519 .682) is < .8: all three become [MASK]
    u = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0))
    chosen = (u < 0.5) & ~_special(ids)
    assert chosen.nonzero().tolist() == [[0, 2], [0, 3], [1, 2]]
    assert labels.tolist() == [[-100, -100, 11, 12, -100, -100], [-100, -100, 14, -100, -100, -100]]
    assert out.tolist() == [[CLS, 10, MASK, MASK, SEP, PAD], [CLS, 13, MASK, SEP, PAD, PAD]]
    assert ids.tolist()[0] == [CLS, 10, 11, 12, SEP, PAD]  # the input is left alone


def test_mask_random_and_kept_tokens_by_hand():
    ids = torch.arange(10, 18).unsqueeze(0)  # eight content tokens, prob 1: all chosen
    out, labels = mask_tokens(ids, torch.zeros_like(ids, dtype=torch.bool), 50, 1.0,
                              torch.Generator().manual_seed(19), MASK)
    # seed 19: second draw v = [.850 .962 .248 .295 .026 .089 .488 .086], third draw r[0] = 24:
    # position 0 (.8 <= v < .9) takes the random id 24, position 1 (v >= .9) keeps 11, the rest [MASK]
    assert out.tolist() == [[24, 11, MASK, MASK, MASK, MASK, MASK, MASK]]
    assert torch.equal(labels, ids)


def test_specials_and_padding_are_never_masked():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (64, 20), generator=g)
    ids[:, 0], ids[:, -1] = CLS, PAD
    ids[torch.rand(ids.shape, generator=g) < 0.3] = PAD
    out, labels = mask_tokens(ids, _special(ids), 100, 1.0, torch.Generator().manual_seed(2), MASK)
    sp = _special(ids)
    assert torch.equal(out[sp], ids[sp]) and (labels[sp] == -100).all()
    assert torch.equal(labels[~sp], ids[~sp])  # prob 1: every content token is a target


def test_mask_split_is_15_percent_then_80_10_10():
    """100,000 content tokens: chosen ~ Binomial(1e5, .15), sd .0011 of the share, so +-.006 is
    over 5 sd; among the ~15,000 chosen the [MASK] share has sd sqrt(.8*.2/15000) = .0033 and the
    random / kept shares .0025, so +-.02 and +-.015 are 6 sd. A random id equal to the original
    (counted as kept) has chance 1/2000 per random draw: negligible at this tolerance."""
    vocab = 2000
    ids = torch.randint(5, vocab, (400, 250), generator=torch.Generator().manual_seed(3))
    special = torch.zeros_like(ids, dtype=torch.bool)
    out, labels = mask_tokens(ids, special, vocab, 0.15, torch.Generator().manual_seed(4), MASK)
    chosen = labels != -100
    n = int(chosen.sum())
    assert abs(n / ids.numel() - 0.15) < 0.006
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(out[~chosen], ids[~chosen])
    masked = (out[chosen] == MASK).sum().item() / n
    kept = (out[chosen] == ids[chosen]).sum().item() / n
    random = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(random - 0.1) < 0.015 and abs(kept - 0.1) < 0.015


# ---- ITM negatives ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 3, 4, 7, 8, 32])
def test_itm_negatives_take_another_images_caption(batch_size):
    for seed in range(20):
        perm, is_match = itm_negatives(batch_size, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(batch_size))  # a permutation of the batch
        assert torch.equal(is_match, perm == torch.arange(batch_size))
        assert int((~is_match).sum()) == max(2, round(batch_size / 2))  # half (two at least) are negatives
        neg = (~is_match).nonzero().flatten()
        assert (perm[neg] != neg).all() and set(perm[neg].tolist()) == set(neg.tolist())  # deranged among themselves


def test_itm_negatives_by_hand_and_edge_cases():
    perm, is_match = itm_negatives(6, torch.Generator().manual_seed(0))
    # three negatives (2, 3, 5) pass their captions round one cycle: 2 <- 3 <- 5 <- 2
    assert perm.tolist() == [0, 1, 3, 5, 4, 2] and is_match.tolist() == [True, True, False, False, True, False]
    assert itm_negatives(1, torch.Generator())[1].tolist() == [True]  # one pair cannot swap
    assert itm_negatives(5, torch.Generator(), prob=0.0)[1].all()
    perm, is_match = itm_negatives(5, torch.Generator().manual_seed(1), prob=1.0)
    assert not is_match.any() and (perm != torch.arange(5)).all()


def test_a_caption_borrowed_from_the_same_image_file_is_a_match():
    """Real corpora hold several captions per image: a swap inside one image stays a positive."""
    ids = torch.tensor([[CLS, 10, SEP]] * 4)
    batch = {"pixel_values": torch.zeros(4, 3, 8, 8), "input_ids": ids, "attention_mask": torch.ones_like(ids),
             "special_mask": _special(ids), "image_id": torch.tensor([7, 7, 9, 9])}

    class Tok:
        mask_token_id = MASK

        def __len__(self):
            return 20

    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        inputs = objective_inputs(batch, g, Tok(), 0.15, 1.0)
        g = torch.Generator().manual_seed(seed)
        mask_tokens(ids, _special(ids), 20, 0.15, g, MASK)  # replay the masking draws
        perm, _ = itm_negatives(4, g, 1.0)
        same = batch["image_id"][perm] == batch["image_id"]
        assert inputs["itm_labels"].tolist() == same.long().tolist()
        assert torch.equal(inputs["itm_ids"], ids[perm])


# ---- a 3-step run and its export ----------------------------------------------------------------


def test_run_writes_the_folder_and_metrics(run):
    root, out, metrics = run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["train"]["steps"] == 3 and saved["train"]["rows"] == 10  # the shift-style row is left out
    for k in ("mlm_loss", "itm_loss"):
        assert 0 < saved["train"][k] < 20 and 0 < saved["eval"][k] < 20
    ev = saved["eval"]
    assert ev["rows"] == 6 and 0 <= ev["itm_accuracy"] <= 100 and 0 <= ev["mlm_accuracy"] <= 100
    names = {p.name for p in (out / "student").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= names
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_3"]
    assert (out / "config.yaml").is_file()


def test_folder_loads_through_finetunings_path(run):
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from clip_td.app.build import image_settings
    from clip_td.app.schema import FinetuneConfig, StudentConfig
    from clip_td.lib.students import create_student
    from clip_td.lib.tokenizer import load_pretrained_tokenizer

    _, out, metrics = run
    folder = str(out / "student")
    tok = load_pretrained_tokenizer(folder)
    assert len(tok) == metrics["vocab_size"] and tok.mask_token == "[MASK]"
    assert SHIFT_ONLY_WORD not in tok.get_vocab() and "circle" in tok.get_vocab()
    cfg = OmegaConf.structured(FinetuneConfig)
    cfg.student.pretrained = folder
    assert image_settings(cfg) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    student = create_student("vilt", StudentConfig(pretrained=folder), vocab_size=len(tok), image_size=32)
    saved = load_file(str(out / "student" / "model.safetensors"))
    state = student.model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    enc = tok(["a red circle", "a blue square"], padding=True, return_tensors="pt")
    with torch.no_grad():
        res = student(torch.zeros(2, 3, 32, 32), enc["input_ids"], enc["attention_mask"])
    assert res["pooled"].shape == (2, 32) and res["image_tokens"].shape == (2, 16, 32)


def test_resume_latest_matches_the_uninterrupted_run(run, tmp_path):
    import shutil

    from safetensors.torch import load_file

    root, out, _ = run
    out2 = tmp_path / "resumed"
    (out2 / "checkpoints").mkdir(parents=True)
    shutil.copytree(out / "checkpoints" / "step_2", out2 / "checkpoints" / "step_2")
    metrics = main([f"data.root={root}", f"output_dir={out2}", "train.max_steps=3", "train.resume=latest", *TINY])
    assert metrics["train"]["steps"] == 3
    a = load_file(str(out / "student" / "model.safetensors"))
    b = load_file(str(out2 / "student" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    with pytest.raises(InputError, match="incompatible run"):  # a different set-up is refused
        main([f"data.root={root}", f"output_dir={out2}", "train.max_steps=4", "train.resume=latest",
              *TINY, "train.batch_size=2"])


# ---- errors a user can cause --------------------------------------------------------------------


def test_a_corpus_without_source_rows_is_one_input_error(tmp_path, capsys):
    from clip_td.base.scripts import run_script

    root = write_corpus(tmp_path / "shift_only", n_train=3, n_val=2, styles="shift")
    train = root / "pretrain" / "train.tsv"
    args = [f"data.root={root}", f"output_dir={tmp_path / 'out'}", "train.max_steps=1", *TINY]
    with pytest.raises(InputError, match="no source-style rows") as e:
        main(args)
    assert str(train) in str(e.value)
    assert run_script(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(train) in err[0]


def test_a_folder_that_is_not_a_vilt_checkpoint_is_one_input_error(run, tmp_path):
    import shutil

    from clip_td.app.schema import StudentConfig
    from clip_td.lib.students import create_student
    from clip_td.lib.tokenizer import load_pretrained_tokenizer

    _, out, _ = run
    tok_only = tmp_path / "tokenizer_only"
    tok_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(out / "student" / name, tok_only / name)
    for folder in (out, tok_only):  # the run folder instead of its student/, a tokenizer without weights
        with pytest.raises(InputError, match=r"student\.pretrained=.*not a loadable ViLT checkpoint"):
            create_student("vilt", StudentConfig(pretrained=str(folder)), vocab_size=36, image_size=32)
    # a training checkpoint (weights, no config.json): fine-tuning reads the tokenizer first
    ckpt = str(out / "checkpoints" / "step_3")
    with pytest.raises(InputError, match=r"student\.pretrained=.*cannot load its tokenizer"):
        load_pretrained_tokenizer(ckpt)
    with pytest.raises(InputError, match=r"student\.pretrained="):  # today via the vocab check (30522 != 36)
        create_student("vilt", StudentConfig(pretrained=ckpt), vocab_size=36, image_size=32)


@pytest.mark.parametrize("kind", ["bert", "bare_weights"])
def test_a_folder_of_another_model_is_one_input_error(kind, run, tmp_path):
    import shutil

    from transformers import BertConfig, BertModel

    from clip_td.app.schema import StudentConfig
    from clip_td.lib.students import create_student

    folder = tmp_path / kind
    if kind == "bert":
        BertModel(BertConfig(vocab_size=36, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(folder)
        vocab = 36
    else:
        folder.mkdir()
        shutil.copy(run[1] / "checkpoints" / "step_3" / "model.safetensors", folder / "model.safetensors")
        vocab = 30522  # ViltConfig's default: what from_pretrained falls back to without config.json
    with pytest.raises(InputError, match=r"student\.pretrained="):
        create_student("vilt", StudentConfig(pretrained=str(folder)), vocab_size=vocab, image_size=32)


# ---- the config ---------------------------------------------------------------------------------


def test_the_shipped_recipe_loads_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--config configs/...` resolves to the installed `configs` package
    cfg = load_student_config("configs/pretrain_student/default.yaml", ["data.size=small"])
    assert cfg.train.max_steps == load_student_config().train.max_steps > 0
    assert (cfg.data.size, cfg.data.image_size, cfg.model.vocab_size, cfg.model.hidden_size) == ("small", 64, 2000, 128)
    assert (cfg.train.mask_prob, cfg.train.itm_prob) == (0.15, 0.5)
    with pytest.raises(InputError, match="train.mask_probability"):
        load_student_config(None, ["train.mask_probability=0.2"])


def test_model_defaults_match_finetunings_from_scratch_student():
    from clip_td.app.schema import StudentConfig
    from pretrain.student.config import ModelConfig

    schema, recipe, ft = ModelConfig(), load_student_config().model, StudentConfig()
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "patch_size", "max_text_len", "vocab_size"):
        assert getattr(schema, key) == getattr(ft, key), key
        # the shipped recipe is deeper (four layers), the rest as fine-tuning's from-scratch student
        assert recipe[key] == (4 if key == "num_layers" else getattr(ft, key)), key


def test_the_default_recipe_reads_the_synthetic_captions():
    cfg = load_student_config()
    assert (cfg.data.text_column, cfg.train.max_steps) == ("synthetic_caption", 3000)
    ii = cfg.image_init
    assert (ii.steps, ii.max_objects, ii.dense, ii.rehearsal, ii.weights) == (4000, 6, True, 1.0, None)


def test_the_default_recipe_teaches_place_and_its_ablations_resolve_to_the_recipes_before_it():
    from pretrain.student.default_student import recipe_hash

    cfg = load_student_config()
    r = cfg.regions
    assert (cfg.model.patch_positions, r.weight, r.place_mask_prob, r.curriculum_steps) == ("sincos", 1.0, 1.0, 1000)
    resolved = lambda path: OmegaConf.to_container(load_student_config(RECIPES / path), resolve=True)  # noqa: E731
    assert resolved("regions_place.yaml") == OmegaConf.to_container(cfg, resolve=True)
    # the recipes shipped before keep the cache keys their students were built under
    assert recipe_hash(CAPTIONS_ONLY) == "9cae16cce95a1e91"
    assert recipe_hash([*CAPTIONS_ONLY, "regions.weight=1"]) == "9d53d75ebdafb9a2"
    assert resolved("captions_only.yaml") == OmegaConf.to_container(load_student_config(None, CAPTIONS_ONLY), resolve=True)
    assert resolved("regions.yaml") == OmegaConf.to_container(
        load_student_config(None, [*CAPTIONS_ONLY, "regions.weight=1"]), resolve=True)


# ---- the default pretrained student (fine-tuning's student.pretrained=default) --------------------


def test_default_student_is_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from pretrain.student import default_student

    from pretrain.student import shipped

    monkeypatch.setattr(default_student, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(shipped, "shipped_student_dir", lambda: tmp_path / "no_shipped_copy")
    calls = []

    def fake_train(run_dir, overrides):
        calls.append((run_dir, tuple(overrides)))
        (run_dir / "student").mkdir(parents=True)
        (run_dir / "metrics.json").write_text("{}")

    monkeypatch.setattr(default_student, "_train", fake_train)
    first = default_student.ensure_default_student()
    assert first == tmp_path / "students" / default_student.recipe_hash() / "student"
    assert default_student.ensure_default_student() == first and len(calls) == 1
    # another recipe is another cache entry
    other = default_student.ensure_default_student(["train.max_steps=5"])
    assert other != first and len(calls) == 2 and calls[1][1] == ("train.max_steps=5",)
    assert default_student.recipe_hash() != default_student.recipe_hash(["train.max_steps=5"])


class _Acc:
    def main_process_first(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.parametrize("name,given,expected", [
    ("vilt", "default", "/cache/students/abc/student"),   # the default: the cached pretrained ViLT
    ("dual_stream", "default", None),                      # no dual-stream recipe: from scratch
    ("vilt", None, None),                                  # null: from scratch (the ablation)
    ("vilt", "some/folder", "some/folder"),                # an explicit folder or hub id is kept
])
def test_finetuning_resolves_student_pretrained_default(name, given, expected, monkeypatch):
    from omegaconf import OmegaConf

    from clip_td.app.build import resolve_student
    from clip_td.app.schema import FinetuneConfig
    from pretrain.student import default_student

    monkeypatch.setattr(default_student, "ensure_default_student", lambda: Path("/cache/students/abc/student"))
    cfg = OmegaConf.structured(FinetuneConfig)
    assert cfg.student.pretrained == "default"  # the schema default
    cfg.student.name, cfg.student.pretrained = name, given
    OmegaConf.set_readonly(cfg, True)
    resolve_student(cfg, _Acc())
    assert cfg.student.pretrained == expected
    # config.yaml records which default student was loaded: its recipe hash
    assert cfg.student.default_recipe == (default_student.recipe_hash() if expected and given == "default" else None)
    # train.lr=null (the schema default) follows the student: 3e-4 pretrained, 1e-3 from scratch
    assert cfg.train.lr == (3e-4 if expected is not None else 1e-3)


def test_the_default_recipe_key_is_filled_by_the_run_and_resolving_twice_keeps_it(monkeypatch):
    from omegaconf import OmegaConf

    from clip_td.app.build import resolve_student
    from clip_td.app.schema import FinetuneConfig
    from pretrain.student import default_student

    monkeypatch.setattr(default_student, "ensure_default_student", lambda: Path("/cache/students/abc/student"))
    cfg = OmegaConf.structured(FinetuneConfig)
    cfg.student.default_recipe = "abc"  # whatever it was told, the run records the student it loaded
    resolve_student(cfg, _Acc())
    resolved = OmegaConf.to_container(cfg)
    assert cfg.student.default_recipe == default_student.recipe_hash() != "abc"
    resolve_student(cfg, _Acc())  # the trainer and the data builder both resolve it
    assert OmegaConf.to_container(cfg) == resolved


@pytest.mark.parametrize("given", [None, "some/folder"])
def test_an_explicit_finetuning_lr_is_kept(given):
    from omegaconf import OmegaConf

    from clip_td.app.build import resolve_student
    from clip_td.app.schema import FinetuneConfig

    cfg = OmegaConf.structured(FinetuneConfig)
    cfg.student.pretrained, cfg.train.lr = given, 0.05
    resolve_student(cfg, _Acc())
    assert cfg.train.lr == 0.05


def test_the_vocabulary_covers_the_chosen_columns_and_every_digit_and_mark(tmp_path):
    from pretrain.student.data import ALPHABET, build_tokenizer

    rows = [{"title": "a star sits above a ring", "synthetic_caption": "a red star"},
            {"title": "shapes", "synthetic_caption": "a blue ring"}]
    tok = build_tokenizer(rows, ["title", "synthetic_caption"], vocab_size=500, source="train.tsv")
    vocab = tok.get_vocab()
    assert {"sits", "above", "red", "blue"} <= set(vocab)
    # a task text with words and characters the captions never showed has no [UNK]
    ids = tok("What color is circle0? It is red.")["input_ids"]
    assert tok.unk_token_id not in ids
    assert all(c in vocab or f"##{c}" in vocab for c in ALPHABET)
    only = build_tokenizer(rows, ["synthetic_caption"], vocab_size=500)
    assert "sits" not in only.get_vocab() and "red" in only.get_vocab()
    with pytest.raises(InputError, match=r"train.tsv: no column 'caption'.*data.vocab_columns"):
        build_tokenizer(rows, ["caption"], vocab_size=500, source="train.tsv")


def test_the_default_recipe_fits_its_vocabulary_on_both_caption_columns():
    assert list(load_student_config().data.vocab_columns) == ["title", "synthetic_caption"]
    assert list(load_student_config(None, ["data.vocab_columns=[]"]).data.vocab_columns) == []


# ---- concept masking ----------------------------------------------------------------------------


def test_concept_mask_marks_every_piece_of_the_images_concept_words():
    from pretrain.student.data import build_tokenizer, make_collate

    rows = [{"synthetic_caption": "a large red circle and a small blue square"}]
    tok = build_tokenizer(rows, ["synthetic_caption"], vocab_size=40)  # small: some words split into pieces
    items = [{"pixel_values": torch.zeros(3, 8, 8), "text": "a large red circle and a small blue square",
              "image_id": 0, "concepts": frozenset({"red", "circle", "square"})},
             {"pixel_values": torch.zeros(3, 8, 8), "text": "a Blue square", "image_id": 1,
              "concepts": frozenset({"blue"})},
             {"pixel_values": torch.zeros(3, 8, 8), "text": "a red circle", "image_id": 2, "concepts": frozenset()}]
    batch = make_collate(tok, 64)(items)
    assert batch["input_ids"].shape[1] < 64  # nothing cut
    for b, want in enumerate([{"red", "circle", "square"}, {"blue"}, set()]):
        pieces = tok.convert_ids_to_tokens(batch["input_ids"][b])
        # rebuild the words from the marked pieces: exactly the wanted words, every piece of them
        words = []
        for piece, marked in zip(pieces, batch["concept_mask"][b].tolist()):
            if marked and piece.startswith("##") and words and words[-1][1]:
                words[-1][0] += piece[2:]
            elif marked:
                words.append([piece, True])
            else:
                words.append([piece, False])
        assert sorted(w for w, m in words if m) == sorted(want), (b, pieces)
    assert not batch["concept_mask"][batch["special_mask"]].any()


def test_concept_masking_chooses_by_the_position_probability_with_the_same_draws():
    from pretrain.student.objectives import position_mask_prob

    ids = torch.tensor([[CLS, 10, 11, 12, 13, SEP], [CLS, 14, 15, SEP, PAD, PAD]])
    concept = torch.tensor([[False, True, False, True, False, False], [False, False, True, False, False, False]])
    # concept words always, nothing else: exactly the concept positions are labelled
    prob = position_mask_prob(concept, 0.0, 1.0)
    _, labels = mask_tokens(ids, _special(ids), 50, prob, torch.Generator().manual_seed(0), MASK)
    assert torch.equal(labels != -100, concept)
    # no concept probability: the float itself, and the same masks as plain BERT masking
    assert position_mask_prob(concept, 0.15, None) == 0.15
    a = mask_tokens(ids, _special(ids), 50, 0.4, torch.Generator().manual_seed(3), MASK)
    b = mask_tokens(ids, _special(ids), 50, position_mask_prob(concept, 0.4, 0.4), torch.Generator().manual_seed(3), MASK)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # by hand: position chosen iff its first draw u is below its own probability
    u = torch.rand(ids.shape, generator=torch.Generator().manual_seed(5))
    prob = position_mask_prob(concept, 0.2, 0.7)
    _, labels = mask_tokens(ids, _special(ids), 50, prob, torch.Generator().manual_seed(5), MASK)
    expected = (u < torch.where(concept, 0.7, 0.2)) & ~_special(ids)
    assert torch.equal(labels != -100, expected)


def test_concept_mask_prob_needs_the_concepts_column(tmp_path, capsys):
    from clip_td.base.scripts import run_script

    root = write_corpus(tmp_path / "corpus", n_train=3, n_val=2)  # no `concepts` column
    train = root / "pretrain" / "train.tsv"
    args = [f"data.root={root}", f"output_dir={tmp_path / 'out'}", "train.max_steps=1",
            "train.concept_mask_prob=0.5", *TINY]
    assert run_script(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(train) in err[0] and "'concepts'" in err[0] and "train.concept_mask_prob" in err[0]
    assert not (tmp_path / "out" / "student").exists()


# ---- image initialisation -----------------------------------------------------------------------


def test_scene_batches_are_a_function_of_seed_and_step_and_labelled_by_their_scene():
    import random

    from pretrain.student.data import image_transform
    from pretrain.student.image_init import ATTRIBUTES, scene_batch
    from tasks.synthetic.scene import sample_scene

    tf = image_transform(32)
    pixels, labels = scene_batch(3, 7, 4, 32, tf)
    again, same = scene_batch(3, 7, 4, 32, tf)
    other, _ = scene_batch(3, 8, 4, 32, tf)
    assert pixels.shape == (4, 3, 32, 32) and labels.shape == (4, 3)
    assert torch.equal(pixels, again) and torch.equal(labels, same) and not torch.equal(pixels, other)
    # the labels are the scenes' one object, replayed with the documented generator
    rng = random.Random("student-image-init/3/7")
    for row in labels.tolist():
        scene = sample_scene(rng, n_objects=1, style="source")
        rng.getrandbits(32)  # the render seed
        assert scene["style"] == "source" and len(scene["objects"]) == 1
        obj = scene["objects"][0]
        assert row == [ATTRIBUTES["colour"].index(obj["colour"]), ATTRIBUTES["shape"].index(obj["shape"]),
                       ATTRIBUTES["size"].index(obj["size"])]


def test_image_init_trains_the_vilt_before_mlm_and_reports_held_out_accuracy(tmp_path):
    from safetensors.torch import load_file

    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=1", "train.lr=0", *TINY]  # lr 0: MLM + ITM change nothing
    plain = main([*base, f"output_dir={tmp_path / 'plain'}"])
    init = main([*base, f"output_dir={tmp_path / 'init'}", "image_init.steps=3", "image_init.eval_every=2",
                 "image_init.batch_size=4", "image_init.eval_scenes=10"])
    assert "image_init" not in plain
    ii = init["image_init"]
    assert ii["steps"] == 3 and sorted(ii["accuracy_by_step"]) == ["2", "3"]
    assert ii["final"] == ii["accuracy_by_step"]["3"] and set(ii["final"]) == {"colour", "shape", "size"}
    assert all(0 <= v <= 100 for v in ii["final"].values()) and ii["chance"]["shape"] == 12.5
    saved = json.loads((tmp_path / "init" / "metrics.json").read_text())
    assert saved["image_init"]["final"] == ii["final"]
    # the checkpoint holds the MLM + ITM model alone (the classifier was released), as a resume expects
    step = tmp_path / "init" / "checkpoints" / "step_1"
    assert sorted(p.name for p in step.glob("*.safetensors")) == ["model.safetensors"]
    assert "mlm.mlm_score.transform.dense.weight" in load_file(str(step / "model.safetensors"))
    a = load_file(str(tmp_path / "plain" / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "init" / "student" / "model.safetensors"))
    assert a.keys() == b.keys()  # the heads are not exported: the same ViLT folder
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert any("patch_embeddings" in k for k in changed) and any("encoder.layer" in k for k in changed)


def test_options_at_their_neutral_value_keep_the_default_students_cache_key():
    from pretrain.student.default_student import recipe_hash

    # the recipe shipped before the image initialisation (two layers, MLM + ITM only) keeps the
    # cache key its students were built under
    base = ["model.num_layers=2", *NO_IMAGE_INIT, *CAPTIONS_ONLY]
    key = recipe_hash(base)
    assert key == "7ee05cdeaad19826"
    assert recipe_hash([*base, "train.concept_mask_prob=null", "image_init.lr=0.5", "image_init.rehearsal_scenes=7",
                        "image_init.eval_every=3"]) == key
    assert recipe_hash([*base, "image_init.steps=5", "image_init.rehearsal_scenes=7"]) == recipe_hash(
        [*base, "image_init.steps=5"])
    assert len({key, recipe_hash(), recipe_hash([*base, "image_init.steps=5"]),
                recipe_hash([*base, "image_init.steps=5", "image_init.lr=0.5"]),
                recipe_hash([*base, "train.concept_mask_prob=0.5"]), recipe_hash([*base, "image_init.weights=w.safetensors"]),
                recipe_hash([*base, "image_init.steps=5", "image_init.dense=true"]),
                recipe_hash([*base, "image_init.dense=true", "image_init.rehearsal=1"]),
                recipe_hash([*base, "image_init.dense=true", "image_init.rehearsal=1", "image_init.rehearsal_scenes=7"])}) == 9


def test_scenes_of_several_objects_are_labelled_with_every_attribute_and_bound_pair():
    import random

    from pretrain.student.data import image_transform
    from pretrain.student.image_init import LABELS, scene_batch
    from tasks.synthetic.scene import sample_scene

    _, labels = scene_batch(1, 2, 5, 32, image_transform(32), max_objects=3)
    assert labels.shape == (5, len(LABELS)) == (5, 10 + 8 + 3 + 80 + 24)
    rng = random.Random("student-image-init/1/2")
    sizes = []
    for row in labels:
        scene = sample_scene(rng, style="source", min_objects=1, max_objects=3)
        rng.getrandbits(32)
        want = set()
        for o in scene["objects"]:
            want |= {f"colour:{o['colour']}", f"shape:{o['shape']}", f"size:{o['size']}",
                     f"colour_shape:{o['colour']} {o['shape']}", f"size_shape:{o['size']} {o['shape']}"}
        assert {LABELS[i] for i in row.nonzero().flatten().tolist()} == want
        sizes.append(len(scene["objects"]))
    assert max(sizes) > 1


def test_held_out_accuracy_of_several_objects_is_the_exact_set_per_group():
    from pretrain.student.image_init import GROUPS, LABELS, held_out_accuracy, scene_labels

    y = torch.stack([scene_labels([{"colour": "red", "shape": "circle", "size": "large"}]),
                     scene_labels([{"colour": "blue", "shape": "square", "size": "small"},
                                   {"colour": "red", "shape": "ring", "size": "small"}])])
    guess = y.clone()
    guess[1, LABELS.index("colour_shape:red square")] = 1.0  # one wrong pair in the second scene

    class Fixed(torch.nn.Module):
        def forward(self, pixels):
            return [torch.where(guess.bool(), 5.0, -5.0)[: pixels.shape[0]]]

    acc = held_out_accuracy(Fixed(), torch.zeros(2, 3, 4, 4), y)
    assert list(acc) == list(GROUPS)
    assert acc == {"colour": 100.0, "shape": 100.0, "size": 100.0, "colour_shape": 50.0, "size_shape": 100.0}


def test_patch_labels_name_the_object_drawn_over_each_patch_by_hand():
    from pretrain.student.image_init import ATTRIBUTES, patch_labels

    bg = [10, 8, 3]
    # a large square in the middle of a 32-pixel image: half-side 0.82 * 0.165 * 32 = 4.33 pixels
    # each way from 16, so it spans pixels 11.67-20.33 and covers 4.33 x 4.33 = 29 % of each of
    # the four middle 8-pixel patches (>= 1/8) and nothing of the others
    square = {"shape": "square", "colour": "red", "size": "large", "x": 0.5, "y": 0.5, "r": 0.165}
    labels = patch_labels({"objects": [square], "style": "source"}, 32, 8)
    want = [ATTRIBUTES["colour"].index("red"), ATTRIBUTES["shape"].index("square"), ATTRIBUTES["size"].index("large")]
    assert labels.shape == (16, 3)
    assert [p for p in range(16) if labels[p].tolist() != bg] == [5, 6, 9, 10]
    assert all(labels[p].tolist() == want for p in (5, 6, 9, 10))
    # a small circle (radius 2.4 pixels) centred in the top-left patch, and a ring in the bottom-right one
    circle = {"shape": "circle", "colour": "blue", "size": "small", "x": 0.125, "y": 0.125, "r": 0.075}
    ring = {"shape": "ring", "colour": "green", "size": "small", "x": 0.875, "y": 0.875, "r": 0.075}
    labels = patch_labels({"objects": [circle, ring], "style": "source"}, 32, 8)
    assert [p for p in range(16) if labels[p].tolist() != bg] == [0, 15]
    assert labels[0, 1] == ATTRIBUTES["shape"].index("circle") and labels[15, 1] == ATTRIBUTES["shape"].index("ring")
    assert patch_labels({"objects": [], "style": "source"}, 32, 8).tolist() == [bg] * 16


def test_the_object_map_is_where_render_scene_paints_the_objects():
    import random

    import numpy as np

    from tasks.synthetic.render import object_map, render_scene
    from tasks.synthetic.scene import sample_scene

    scene = sample_scene(random.Random(5), n_objects=3, style="source")
    image = np.asarray(render_scene(scene, 64, 11), dtype=np.float32)
    drawn = object_map(scene, 64)
    inside = drawn.reshape(64, 2, 64, 2).min(axis=(1, 3)) > 0  # output pixels wholly inside an object
    outside = drawn.reshape(64, 2, 64, 2).max(axis=(1, 3)) == 0
    background = np.median(image[outside], axis=0)
    assert inside.sum() > 50 and set(np.unique(drawn)) == {0, 1, 2, 3}
    assert np.abs(image[outside] - background).max(axis=1).mean() < 10  # flat, slightly tinted
    assert np.abs(image[inside] - background).max(axis=1).min() > 30  # every object pixel is coloured


def test_dense_scene_batches_and_held_out_accuracy_by_hand():
    import random

    from pretrain.student.data import image_transform
    from pretrain.student.image_init import held_out_accuracy, patch_labels, scene_batch
    from tasks.synthetic.scene import sample_scene

    _, labels = scene_batch(2, 4, 3, 32, image_transform(32), max_objects=4, patch_size=8)
    assert labels.shape == (3, 16, 3) and labels.dtype == torch.long
    rng = random.Random("student-image-init/2/4")
    for row in labels:
        scene = sample_scene(rng, style="source", min_objects=1, max_objects=4)
        rng.getrandbits(32)
        assert torch.equal(row, patch_labels(scene, 32, 8))

    y = torch.tensor([[[1, 2, 0], [10, 8, 3], [10, 8, 3]],
                      [[4, 5, 1], [4, 5, 1], [10, 8, 3]]])  # 3 object patches, 3 background ones
    guess = y.clone()
    guess[0, 0, 1] = 3  # the first object patch's shape is wrong
    guess[1, 2, 0] = 2  # one background patch gets a colour

    class Fixed(torch.nn.Module):
        def forward(self, pixels):
            n = pixels.shape[0]
            return [torch.nn.functional.one_hot(guess[:n, :, k], [11, 9, 4][k]).float() for k in range(3)]

    acc = held_out_accuracy(Fixed(), torch.zeros(2, 3, 4, 4), y)
    assert acc == pytest.approx({"colour": 100.0, "shape": 200 / 3, "size": 100.0, "background": 200 / 3})


def test_dense_heads_read_patches_in_grid_order_and_give_the_vilt_back(tmp_path):
    from transformers import ViltConfig, ViltModel

    from pretrain.student.image_init import ImageClassifier

    vilt = ViltModel(ViltConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, image_size=32, patch_size=8, max_image_length=-1))
    model = ImageClassifier(vilt, 1, 2, dense=True).eval()
    pixels = torch.randn(2, 3, 32, 32)
    logits = model(pixels)
    assert [tuple(lg.shape) for lg in logits] == [(2, 16, 11), (2, 16, 9), (2, 16, 4)]
    # patch p of the grid is the same token whatever order ViLT drew the patches in
    assert torch.allclose(model(pixels)[1], logits[1], atol=1e-5)
    flipped = pixels.clone()
    flipped[:, :, :8, :8] = 0.0  # change only the top-left patch's pixels: its own logits move most
    moved = (model(flipped)[1] - logits[1]).abs().sum(-1)
    assert int(moved[0].argmax()) == 0
    assert "visual_embed" not in vilt.embeddings.__dict__  # ViLT's own embedding again after each call


def test_dense_image_init_runs_and_reports_patch_accuracy(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=1", *TINY]
    init = main([*base, f"output_dir={tmp_path / 'init'}", "image_init.steps=2", "image_init.eval_every=2",
                 "image_init.batch_size=4", "image_init.eval_scenes=6", "image_init.dense=true",
                 "image_init.max_objects=3"])
    ii = init["image_init"]
    assert ii["dense"] is True and set(ii["final"]) == {"colour", "shape", "size", "background"}
    assert all(0 <= v <= 100 for v in ii["final"].values()) and ii["chance"]["colour"] == 10.0


def test_a_saved_image_init_starts_another_run_exactly_where_the_stage_left_it(tmp_path):
    from safetensors.torch import load_file

    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=1", "train.lr=0", *TINY]  # lr 0: MLM + ITM change nothing
    first = main([*base, f"output_dir={tmp_path / 'a'}", "image_init.steps=2", "image_init.batch_size=4",
                  "image_init.eval_scenes=6"])
    weights = tmp_path / "a" / "image_init.safetensors"
    again = main([*base, f"output_dir={tmp_path / 'b'}", f"image_init.weights={weights}"])
    a = load_file(str(tmp_path / "a" / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["image_init"]["final"] == first["image_init"]["final"]
    assert again["image_init"]["weights"] == str(weights)
    saved = load_file(str(weights))  # the stage's ViltModel: with lr 0, the exported student itself
    assert saved.keys() == a.keys() and all(torch.equal(saved[k], a[k]) for k in a)


def test_image_init_weights_that_do_not_fit_are_one_input_error(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=1", *TINY]
    main([*base, f"output_dir={tmp_path / 'a'}", "image_init.steps=1", "image_init.batch_size=2",
          "image_init.eval_scenes=2"])
    weights = tmp_path / "a" / "image_init.safetensors"
    with pytest.raises(InputError, match=r"image_init.weights=.*other shape"):
        main([*base, "model.hidden_size=48", f"output_dir={tmp_path / 'b'}", f"image_init.weights={weights}"])
    with pytest.raises(InputError, match=r"image_init.weights=.* and image_init.steps=1"):
        main([*base, f"output_dir={tmp_path / 'c'}", f"image_init.weights={weights}", "image_init.steps=1"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"junk.safetensors: not a safetensors file"):
        main([*base, f"output_dir={tmp_path / 'd'}", f"image_init.weights={tmp_path / 'junk.safetensors'}"])
    assert not (tmp_path / "b" / "student").exists() and not (tmp_path / "d" / "student").exists()


# ---- rehearsal: the dense patch loss kept during MLM + ITM ----------------------------------------

REHEARSE = ["image_init.dense=true", "image_init.max_objects=3", "image_init.rehearsal=0.5",
            "image_init.rehearsal_scenes=2", "image_init.eval_scenes=4"]


def test_rehearsal_adds_the_weighted_patch_loss_of_its_own_scenes(tmp_path):
    from pretrain.student.data import image_transform, make_collate
    from pretrain.student.image_init import HELD_OUT_SEED, classification_loss, scene_batch
    from pretrain.student.train import build, rehearsal_batch, step_generator

    root = write_corpus(tmp_path / "corpus")
    cfg = load_student_config(None, [f"data.root={root}", *TINY, *REHEARSE])
    setup = build(cfg)
    transform = image_transform(32)
    pixels, labels = rehearsal_batch(cfg, 3, transform)
    again, same = scene_batch(cfg.seed, -5, 2, 32, transform, 3, 8)  # batch 3 is scene seed -2 - 3
    assert torch.equal(pixels, again) and torch.equal(labels, same) and labels.shape == (2, 16, 3)
    for other in (0, 1, HELD_OUT_SEED):  # never the image init stage's scenes or its held-out ones
        assert not torch.equal(scene_batch(cfg.seed, other, 2, 32, transform, 3, 8)[0], pixels)
    # the model's patch_loss is the dense objective of its heads on those scenes
    model = setup.model.eval()
    batch = next(iter(torch.utils.data.DataLoader(setup.dataset, batch_size=4,
                                                  collate_fn=make_collate(setup.tokenizer, 16))))
    inputs = objective_inputs(batch, step_generator(0, 3), setup.tokenizer, 0.15, 0.5)
    with torch.no_grad():
        out = model(**inputs, patch_pixels=pixels, patch_labels=labels)
        expected = classification_loss(model.patch_heads(model.mlm.vilt, pixels), labels)
        plain = model(**inputs)
    assert torch.allclose(out["patch_loss"], expected) and float(expected) > 0
    assert "patch_loss" not in plain and torch.allclose(plain["mlm_loss"], out["mlm_loss"])


def test_a_rehearsal_run_reports_its_heads_resumes_and_exports_the_same_folder(tmp_path):
    import shutil

    from safetensors.torch import load_file

    root = write_corpus(tmp_path / "corpus")
    base = [f"data.root={root}", "train.max_steps=3", *TINY, *REHEARSE]
    metrics = main([*base, f"output_dir={tmp_path / 'a'}", "train.checkpoint_every=2"])
    assert 0 < metrics["train"]["patch_loss"] < 10
    r = metrics["rehearsal"]
    assert r["weight"] == 0.5 and r["scenes_per_step"] == 2
    assert set(r["held_out"]) == {"colour", "shape", "size", "background"}
    assert all(0 <= v <= 100 for v in r["held_out"].values())
    ckpt = load_file(str(tmp_path / "a" / "checkpoints" / "step_2" / "model.safetensors"))
    assert "patch_heads.heads.0.weight" in ckpt  # the heads train on and resume with the model
    out2 = tmp_path / "b"
    (out2 / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_2", out2 / "checkpoints" / "step_2")
    resumed = main([*base, f"output_dir={out2}", "train.resume=latest"])
    a = load_file(str(tmp_path / "a" / "student" / "model.safetensors"))
    b = load_file(str(out2 / "student" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert resumed["rehearsal"]["held_out"] == pytest.approx(r["held_out"], abs=1e-6)
    assert not any("patch_heads" in k for k in a)  # the exported ViLT folder is the usual one
    with pytest.raises(InputError, match="incompatible run"):  # another rehearsal weight is another run
        main([*base, "image_init.rehearsal=1", f"output_dir={out2}", "train.max_steps=4", "train.resume=latest"])


@pytest.mark.parametrize("bad, match", [
    (["image_init.rehearsal=1"], r"image_init.rehearsal=1.0: expected 0 \(off\) or a positive weight .*dense=true"),
    (["image_init.dense=true", "image_init.rehearsal=-1"], r"image_init.rehearsal=-1.0: expected 0"),
    (["image_init.dense=true", "image_init.rehearsal=1", "image_init.rehearsal_scenes=0"],
     r"image_init.rehearsal_scenes=0: expected at least 1"),
])
def test_bad_rehearsal_keys_are_one_input_error(bad, match, tmp_path):
    root = write_corpus(tmp_path / "corpus")
    with pytest.raises(InputError, match=match):
        main([f"data.root={root}", f"output_dir={tmp_path / 'r'}", "train.max_steps=1", *TINY, *bad])
    assert not (tmp_path / "r" / "student").exists()
