"""Rows -> tensors: transforms, tokenisation with offsets, VCR expansion, VQA soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip_td.app.batches import Collator, TaskDataset, student_transform
from clip_td.app.schema import FinetuneConfig
from clip_td.base.config import load_config
from clip_td.lib.tokenizer import build_wordpiece


def _load(world, task_name, split="train"):
    from tasks import get_task

    task = get_task(task_name)
    return task, task.load(world / task_name, split)


def test_vqa_item_and_batch(small_world):
    from tasks.vqa.answers import AnswerVocab

    task, ds = _load(small_world, "vqa")
    ds = ds.select(range(6))
    vocab = AnswerVocab.build(ds)
    task.setup(ds, load_config(FinetuneConfig))
    assert task.answer_vocab.answers == vocab.answers
    tok = build_wordpiece(task.corpus_texts(ds), vocab_size=200)
    data = TaskDataset(task, ds, student_transform(32, (0.5,) * 3, (0.5,) * 3), source_index=[10, 11, 12, 13, 14, 15])
    item = data[0]
    assert item["pixel_values"].shape == (3, 32, 32)
    assert item["index"] == 10 and item["texts"] == [(ds[0]["text"], None)]
    # soft target = min(1, count / 3) over the 10 canonical answers
    expected = torch.zeros(len(vocab))
    for idx, score in vocab.soft_scores(ds[0]["answers"]).items():
        expected[idx] = score
    target = item["targets"]["targets"]  # the task's targets of the row
    assert torch.equal(target, expected) and target.max() == 1.0

    batch = Collator(tok, max_len=16)([data[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["offsets"].shape[:2]
    assert batch["input_ids"].shape[0] == 4 and batch["targets"].shape == (4, len(vocab))
    assert batch["index"].tolist() == [10, 11, 12, 13]
    # offsets point into the question text
    ids, offs = batch["input_ids"][0], batch["offsets"][0]
    text = ds[0]["text"].lower()
    first_word = tok.convert_ids_to_tokens([int(ids[1])])[0]
    assert text[int(offs[1, 0]):int(offs[1, 1])] == first_word


def test_image_normalisation_matches_hand_computation(small_world):
    _, ds = _load(small_world, "snli_ve")
    from PIL import Image

    img = Image.open(ds[0]["image"]).convert("RGB")
    x = student_transform(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(img)
    raw = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255
    assert torch.allclose(x, (raw - 0.5) / 0.25, atol=1e-5)


def test_vcr_expands_into_four_answers_and_four_rationales(small_world):
    task, ds = _load(small_world, "vcr")
    row = ds[0]
    pairs = task.student_texts(row)
    assert len(pairs) == 8
    assert [b for _, b in pairs[:4]] == row["answers"]
    assert all(a == row["text"] for a, _ in pairs[:4])
    gold = row["answers"][row["answer_label"]]
    assert all(a == f"{row['text']} {gold}" for a, _ in pairs[4:])
    assert [b for _, b in pairs[4:]] == row["rationales"]

    tok = build_wordpiece(task.corpus_texts(ds.select(range(20))), vocab_size=300)
    data = TaskDataset(task, ds.select(range(3)), student_transform(32, (0.5,) * 3, (0.5,) * 3))
    batch = Collator(tok, max_len=64)([data[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 * 8 and batch["pixel_values"].shape[0] == 3
    assert batch["answer_label"].tolist() == [ds[i]["answer_label"] for i in range(3)]
    # second-segment offsets live in the joined string "question answer"
    joined = f"{row['text']} {row['answers'][0]}".lower()
    ids, offs = batch["input_ids"][0], batch["offsets"][0]
    for t, (a, b) in zip(tok.convert_ids_to_tokens(ids.tolist()), offs.tolist()):
        if b > a:
            assert joined[a:b] == t.removeprefix("##")


def test_corpus_covers_every_student_text(small_world):
    task, ds = _load(small_world, "vcr")
    ds = ds.select(range(2))
    corpus = task.corpus_texts(ds)
    for row in ds:
        for a, b in task.student_texts(row):
            assert b in corpus
        assert row["text"] in corpus


def test_a_candidate_longer_than_max_len_cuts_both_segments_instead_of_failing():
    tok = build_wordpiece(["a b c d e f g h"], vocab_size=50)
    collate = Collator(tok, max_len=8)
    short = ("a b", "c d")  # fits: 2 + 2 + 3 specials = 7
    long = ("a b c", "d e f g h a b c d")  # the candidate alone (9 tokens) exceeds 8
    enc = collate.tokenize([short, long])
    assert enc["input_ids"].shape == (2, 8)
    ids = enc["input_ids"][1].tolist()
    words = tok.convert_ids_to_tokens(ids)
    # longest first: the 9-token candidate is cut down while the 3-token context keeps what fits
    assert words[0] == "[CLS]" and words[-1] == "[SEP]" and words.count("[SEP]") == 2
    assert sum(enc["attention_mask"][1].tolist()) == 8
    # a batch whose candidates all fit keeps the context-first rule (the candidate is kept whole)
    enc = collate.tokenize([("a b c d e f", "g h")])
    words = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    assert words[-3:] == ["g", "h", "[SEP]"]


def test_vcr_teacher_stages_texts_view_and_index(small_world):
    """method.rationales: the teacher's QA->R stage reads question + right answer + each
    rationale; distill_view returns, per instance, the gold answer's Q->A sequence then the gold
    rationale's QA->R sequence with their 4-way logits; `_staged_index` looks the teacher rows up
    in the same order (unlabelled rows: the first stage only)."""
    from types import SimpleNamespace

    from clip_td.app.teacher_setup import StagedRows, _staged_index

    task, ds = _load(small_world, "vcr")
    task.setup(ds, SimpleNamespace(method=SimpleNamespace(rationales=True)))
    assert task.teacher_stages == 2
    row = ds[0]
    q, a, r = row["text"], row["answers"][row["answer_label"]], row["rationales"][row["rationale_label"]]
    assert task.teacher_texts(row) == (f"{q} {a}", [f"{q} {x}" for x in row["answers"]], row["answer_label"])
    assert task.teacher_texts({**row, "_stage": 1}) == (
        f"{q} {a} {r}", [f"{q} {a} {x}" for x in row["rationales"]], row["rationale_label"])
    # the QA->R pair (question + gold answer, rationale) joined is the stage-1 task text
    assert " ".join(task.student_texts(row)[4 + row["rationale_label"]]) == f"{q} {a} {r}"
    staged = StagedRows(ds, 2)
    assert len(staged) == 2 * len(ds) and staged[3]["_stage"] == 1 and staged[3]["uid"] == ds[1]["uid"]
    assert [task.trust_group(staged[j]) for j in range(4)] == ["q2a", "qa2r", "q2a", "qa2r"]

    b = 2
    seq = torch.arange(b * 8).float().unsqueeze(-1)  # each student sequence tagged with its row number
    batch = {"pixel_values": torch.zeros(b, 3, 4, 4), "input_ids": seq.long().repeat(1, 3),
             "attention_mask": torch.ones(b * 8, 3), "offsets": torch.zeros(b * 8, 3, 2),
             "answer_label": torch.tensor([2, 0]), "rationale_label": torch.tensor([1, 3])}
    result = {"q2a_logits": torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]),
              "qa2r_logits": torch.tensor([[10.0, 11, 12, 13], [14, 15, 16, 17]])}
    view, view_batch, logits = task.distill_view({"pooled": seq}, batch, result)
    # instance 0: Q->A row 2, QA->R row 4 + 1; instance 1: Q->A row 8 + 0, QA->R row 8 + 4 + 3
    assert view["pooled"].squeeze(-1).tolist() == [2.0, 5.0, 8.0, 15.0]
    assert view_batch["input_ids"][:, 0].tolist() == [2, 5, 8, 15]
    assert logits[:, 0].tolist() == [0.0, 10.0, 4.0, 14.0]
    looked = []
    _staged_index(lambda bt: looked.append(bt["index"].tolist()), 2, {"index": torch.tensor([5, 1])})
    _staged_index(lambda bt: looked.append(bt["index"].tolist()), 2, {"index": torch.tensor([5, 1]), "label_free": True})
    assert looked == [[10, 11, 2, 3], [10, 2]]
    # the collator's host copy of the indices is what the lookups read, staged the same way
    from clip_td.app.teacher_setup import host_index

    hosted = []
    _staged_index(lambda bt: hosted.append(host_index(bt).tolist()), 2,
                  {"index": torch.tensor([0, 0]), "index_host": [5, 1]})
    assert hosted == [[10, 11, 2, 3]]
    assert host_index({"index": torch.tensor([7, 3])}).tolist() == [7, 3]  # no host copy: the tensor's
    task.setup(ds, SimpleNamespace(method=SimpleNamespace(rationales=False)))
    view, _, logits = task.distill_view({"pooled": seq}, batch, result)
    assert view["pooled"].squeeze(-1).tolist() == [2.0, 8.0] and logits[:, 0].tolist() == [0.0, 4.0]
    assert task.trust_group(row) is None


def test_augment_changes_only_the_students_copy_of_a_labelled_row(small_world):
    """TaskDataset(augment=f) on labelled rows (data.augment): the student's pixels are
    transform(f(image)), the live teacher's are its transform of the clean image."""
    from PIL import ImageOps

    from clip_td.app.batches import load_rgb

    task, ds = _load(small_world, "vqa")
    ds = ds.select(range(2))
    task.setup(ds, load_config(FinetuneConfig))
    transform = student_transform(32, (0.5,) * 3, (0.5,) * 3)
    teacher_transform = student_transform(24, (0.0,) * 3, (1.0,) * 3)
    data = TaskDataset(task, ds, transform, teacher_transform=teacher_transform, augment=ImageOps.invert)
    item, image = data[1], load_rgb(ds[1]["image"])
    assert torch.equal(item["pixel_values"], transform(ImageOps.invert(image)))
    assert not torch.equal(item["pixel_values"], transform(image))
    assert torch.equal(item["teacher_pixels"], teacher_transform(image))
    assert item["texts"] == [(ds[1]["text"], None)]  # the row's text and targets are untouched


@pytest.mark.parametrize("policy", [None, "photometric_noise", "photometric_safe"])
def test_data_augment_reaches_the_training_rows_only(small_world, tmp_path, monkeypatch, policy):
    """data.augment=true: every training item read (2 steps of 4, and at most one batch that
    accelerate's loader reads ahead) passes through the augmentation once, and none of the
    evaluation split's items does (they number far more than 4); off by default. The augmentation
    is data.augment_policy's (photometric when not set)."""
    from pathlib import Path

    from clip_td.app import build
    from clip_td.app.trainer import main
    from test_finetune_helpers import tiny_overrides

    assert load_config(FinetuneConfig).data.augment is False
    calls = []

    def counting_augment(given):
        assert given == (policy or "photometric")
        return lambda image: calls.append(1) or image

    monkeypatch.setattr(build, "photometric_augment", counting_augment)
    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "finetune" / "tiny.yaml")
    args = tiny_overrides(small_world, tmp_path / "unused_teacher", tmp_path / "run", **{
        "task.name": "vqa", "method.name": "none", "train.fraction": 0.5, "train.max_steps": 2,
        "train.batch_size": 4, "seed": 0, "data.augment": "true",
        **({"data.augment_policy": policy} if policy else {})})
    assert main(["--config", tiny, *args]) == 0
    assert len(calls) in (8, 12)


def test_augment_policies_keep_geometry_and_add_noise_to_half_the_images():
    """photometric_noise = photometric, then torchvision's Gaussian noise (sigma 0.1 of the range)
    on half of the images. A flat grey picture stays flat under photometric (jitter and blur of a
    constant are constant); under photometric_noise about half of the draws carry noise of std
    about 0.1 * 255 (128 +- 3 sigma never reaches the clip). Neither moves a dark square."""
    from PIL import Image, ImageDraw

    from clip_td.app.batches import AUGMENT_POLICIES, photometric_augment
    from clip_td.base.io import InputError

    assert AUGMENT_POLICIES == ("photometric", "photometric_noise", "photometric_safe", "photometric_augmix",
                                "photometric_randconv")
    with pytest.raises(InputError, match="data.augment_policy: one of photometric, photometric_noise, "
                                         "photometric_safe, photometric_augmix, photometric_randconv, got 'strong'"):
        photometric_augment("strong")
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    torch.manual_seed(0)
    augment = {policy: photometric_augment(policy) for policy in AUGMENT_POLICIES}
    plain = [np.asarray(augment["photometric"](grey), dtype=np.float64) for _ in range(50)]
    assert max(float(a.std()) for a in plain) == 0.0
    noisy = [np.asarray(augment["photometric_noise"](grey), dtype=np.float64) for _ in range(200)]
    stds = np.array([a.std() for a in noisy])
    with_noise = stds[stds > 0]
    assert 0.38 < len(with_noise) / 200 < 0.62  # p = 0.5; 200 draws: 3.4 sigma either side
    assert np.all(np.abs(with_noise - 25.5) < 2.0), with_noise.min()  # 1,024 pixels x 3 channels

    square = Image.new("RGB", (32, 32), (255, 255, 255))
    ImageDraw.Draw(square).rectangle([4, 20, 11, 27], fill=(0, 0, 0))
    for policy in ("photometric", "photometric_noise", "photometric_safe"):  # augmix, randconv: below
        for _ in range(20):
            dark = 255.0 - np.asarray(augment[policy](square), dtype=np.float64).mean(axis=2)
            dark = np.clip(dark - np.median(dark), 0, None)  # background (and its noise level) off
            ys, xs = np.nonzero(dark > 0.5 * dark.max())
            assert abs(xs.mean() - 7.5) < 1.0 and abs(ys.mean() - 23.5) < 1.0, (policy, xs.mean(), ys.mean())


def test_photometric_augmix_is_photometric_then_augmix_without_geometric_ops():
    """photometric_augmix appends torchvision's AugMix with its defaults, restricted to the pixel
    operations (the exact set below: no shear, translation or rotation). Every one of them keeps
    the order of grey levels (solarize's thresholds at severity 3 are 204-255, above both levels),
    so a light square on a dark ground stays where it was: its bright pixels' centroid within half
    a pixel in 50 draws. torchvision's own AugMix with the same seed moves it in some draw."""
    from PIL import Image, ImageDraw
    from torchvision import transforms as T

    from clip_td.app.batches import PixelAugMix, photometric_augment

    augment = photometric_augment("photometric_augmix")
    assert [type(op) for op in augment.transforms] == [T.ColorJitter, T.RandomApply, PixelAugMix]
    mix = augment.transforms[-1]
    assert (mix.severity, mix.mixture_width, mix.chain_depth, mix.alpha, mix.all_ops) == (3, 3, -1, 1.0, True)
    assert list(mix._augmentation_space(11, (32, 32))) == [
        "Posterize", "Solarize", "AutoContrast", "Equalize", "Brightness", "Color", "Contrast", "Sharpness"]

    square = Image.new("RGB", (32, 32), (30, 30, 30))
    ImageDraw.Draw(square).rectangle([4, 20, 11, 27], fill=(100, 100, 100))

    def centroid(fn) -> tuple:
        grey = np.asarray(fn(square), dtype=np.float64).mean(axis=2)
        ys, xs = np.nonzero(grey > 0.5 * (grey.max() + np.median(grey)))
        return xs.mean(), ys.mean()

    torch.manual_seed(0)
    for _ in range(50):
        x, y = centroid(augment)
        assert abs(x - 7.5) < 0.5 and abs(y - 23.5) < 0.5, (x, y)
    torch.manual_seed(0)
    moved = [centroid(T.AugMix()) for _ in range(50)]
    assert max(abs(x - 7.5) + abs(y - 23.5) for x, y in moved) >= 0.5


def test_randconv_mixes_a_centred_random_convolution_and_keeps_places(monkeypatch):
    """RandConv.mix against a hand computation: a 1 x 1 kernel is a linear map of the channels at
    each pixel, mixed with the pixel and clipped to [-1, 1]; a 3 x 3 kernel on a constant image
    gives the constant times the kernel's sum per output channel (reflect padding: no border).
    The draws: kernel sides from {1, 3, 5, 7}, weights of std 1 / sqrt(3 k^2) (Kaiming-normal).
    photometric_randconv is photometric then RandConv: a light square on a dark ground (the centroid
    of the pixels that differ most from the ground) moves within the largest kernel's radius in a
    draw, since a drawn kernel is not symmetric, and by less than 0.2 pixel on average over 200."""
    from PIL import Image, ImageDraw
    from torchvision import transforms as T

    from clip_td.app.batches import RandConv, photometric_augment

    x = torch.tensor([[[0.5]], [[-0.5]], [[1.0]]])  # (3, 1, 1)
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, -1.0], [0.5, 0.5, 0.5]]).reshape(3, 3, 1, 1)
    # conv: (0.5 - 1.0, -1.0, 0.5 * (0.5 - 0.5 + 1.0)) = (-0.5, -1.0, 0.5)
    out = RandConv.mix(x, w, alpha=0.25)  # 0.25 x + 0.75 conv
    assert torch.allclose(out.flatten(), torch.tensor([0.125 - 0.375, -0.125 - 0.75, 0.25 + 0.375]))
    assert torch.allclose(RandConv.mix(x, 4 * w, alpha=0.0).flatten(), torch.tensor([-1.0, -1.0, 1.0]))
    flat = torch.full((3, 5, 5), 0.2)
    w3 = torch.randn(3, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    expected = (0.2 * w3.sum(dim=(1, 2, 3))).clamp(-1, 1)
    assert torch.allclose(RandConv.mix(flat, w3, alpha=0.0), expected[:, None, None].expand(3, 5, 5), atol=1e-6)

    with pytest.raises(ValueError, match="odd and positive"):
        RandConv((1, 2))
    drawn = {k: [] for k in (1, 3, 5, 7)}
    real_mix = RandConv.mix

    def spy(x, weight, alpha):
        drawn[weight.shape[-1]].append(weight)
        assert 0.0 <= alpha < 1.0
        return real_mix(x, weight, alpha)

    monkeypatch.setattr(RandConv, "mix", staticmethod(spy))
    torch.manual_seed(0)
    grey = Image.new("RGB", (8, 8), (128, 128, 128))
    conv = RandConv()
    for _ in range(400):
        conv(grey)
    monkeypatch.undo()
    assert all(len(weights) > 50 for weights in drawn.values())  # 400 draws over four sides
    for k, weights in drawn.items():
        std = float(torch.cat([w.flatten() for w in weights]).std())
        assert abs(std - 1 / (3 * k * k) ** 0.5) < 0.1 / (3 * k * k) ** 0.5, (k, std)

    augment = photometric_augment("photometric_randconv")
    assert [type(op) for op in augment.transforms] == [T.ColorJitter, T.RandomApply, RandConv]
    square = Image.new("RGB", (32, 32), (30, 30, 30))
    ImageDraw.Draw(square).rectangle([4, 20, 11, 27], fill=(200, 200, 200))
    torch.manual_seed(0)
    shifts = []
    for _ in range(200):
        img = np.asarray(augment(square), dtype=np.float64)
        diff = np.abs(img - np.median(img.reshape(-1, 3), axis=0)).sum(axis=2)
        if diff.max() < 10:  # the draw mapped ground and square to one colour (both clipped)
            continue
        ys, xs = np.nonzero(diff > 0.5 * diff.max())
        shifts.append((xs.mean() - 7.5, ys.mean() - 23.5))
    shifts = np.array(shifts)
    assert len(shifts) >= 150
    assert np.abs(shifts).max() <= 3.0  # within the largest kernel's radius in every draw
    assert np.all(np.abs(shifts.mean(axis=0)) < 0.2), shifts.mean(axis=0)  # none on average
    assert np.abs(shifts).max() >= 0.5  # an uncentred draw does move its edges


def test_photometric_safe_keeps_every_palette_colour_nearest_its_name():
    """An object of each colour of the world's palette on a light background like the source
    style's, an inner pixel (out of the blur's reach of the edge) read back after augmentation:
    under photometric_safe the colour stays nearest (RGB distance) to its own palette entry in all
    of 60 draws per colour; the default photometric policy turns at least one colour into another's
    nearest (orange at brightness 0.6 is nearest brown) within the same draws. Hand check of that
    case: 0.6 * (245, 140, 25) = (147, 84, 15), 31.1 from brown (125, 75, 35), 113.3 from orange."""
    from PIL import Image, ImageDraw

    from clip_td.app.batches import photometric_augment
    from tasks.synthetic.vocab import COLOURS, nearest_colour

    assert nearest_colour((147, 84, 15)) == "brown" and nearest_colour(COLOURS["orange"]) == "orange"
    torch.manual_seed(0)
    augment = {policy: photometric_augment(policy) for policy in ("photometric_safe", "photometric")}
    renamed = {"photometric_safe": 0, "photometric": 0}
    for name in COLOURS:
        image = Image.new("RGB", (16, 16), (234, 234, 234))
        ImageDraw.Draw(image).rectangle([6, 6, 9, 9], fill=COLOURS[name])
        for policy, fn in augment.items():
            for _ in range(60):
                renamed[policy] += nearest_colour(np.asarray(fn(image))[7, 7]) != name
    assert renamed["photometric_safe"] == 0
    assert renamed["photometric"] > 10, renamed


def test_photometric_safe_range_keeps_palette_names_at_every_corner():
    """The corners of photometric_safe's range (brightness, contrast, saturation each 0.9 or 1.1,
    applied in each of the 6 orders ColorJitter may draw) keep every palette colour nearest its own
    name on a light background; brightness 0.6 alone (a corner of the default range) does not."""
    import itertools

    import torchvision.transforms.functional as F
    from PIL import Image, ImageDraw

    from clip_td.app.batches import photometric_augment
    from tasks.synthetic.vocab import COLOURS, nearest_colour

    jitter = photometric_augment("photometric_safe").transforms[0]  # the policy's own range
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.9, 1.1),) * 3 + (None,)
    ops = {"b": F.adjust_brightness, "c": F.adjust_contrast, "s": F.adjust_saturation}
    moved = []
    for name in COLOURS:
        image = Image.new("RGB", (10, 10), (234, 234, 234))
        ImageDraw.Draw(image).rectangle([3, 3, 6, 6], fill=COLOURS[name])
        for factors in itertools.product(jitter.brightness, jitter.contrast, jitter.saturation):
            for order in itertools.permutations("bcs"):
                out = image
                for op in order:
                    out = ops[op](out, factors["bcs".index(op)])
                if nearest_colour(out.getpixel((4, 4))) != name:
                    moved.append((name, factors, order))
    assert moved == []
    dark = F.adjust_brightness(Image.new("RGB", (2, 2), COLOURS["orange"]), 0.6)
    assert nearest_colour(dark.getpixel((0, 0))) == "brown"
