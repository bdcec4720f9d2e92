"""Captions corpus (open_clip's CSV/TSV form) -> validated rows -> a torch Dataset.

A real corpus needs only `filepath` and `title`; `synthetic_caption`, `ocr_text`, `parse`,
`concepts`, `style` and `noise` are used when present (docs/internals.md). Every problem a
user can cause (missing column, empty caption, missing image) is an `InputError` naming the
file, line and column.
"""

from __future__ import annotations

import csv
import json
import random
import re
import string
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from clip_td.base.io import InputError, PathLike

REQUIRED = ("filepath", "title")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".txt") else ","


def read_captions(path: PathLike, required: Sequence[str] = REQUIRED, check_images: bool = True) -> List[Dict[str, str]]:
    """Rows of a captions file as dicts, with `image` set to the absolute image path.

    Image paths are relative to the file's folder. Raises InputError naming the file, line and
    column for a missing column, an empty value in a required column or a missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: captions file not found")
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8", newline="") as f:
        # default quoting reads both raw and quoted fields, as pandas (open_clip's reader) does
        reader = csv.DictReader(f, delimiter=_delimiter(path))
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; header has {header}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            for col in required:
                if not (row.get(col) or "").strip():
                    raise InputError(f"{path}:{lineno}: empty value in column {col!r}")
            image = (path.parent / row["filepath"]).resolve()
            if check_images and not image.is_file():
                raise InputError(f"{path}:{lineno}: column 'filepath': image not found: {image}")
            row = {k: (v if v is not None else "") for k, v in row.items()}
            row["image"] = str(image)
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def read_concepts(path: PathLike) -> List[str]:
    """The concept vocabulary of `concepts.json` ({"concepts": [names...]})."""
    from clip_td.base.io import read_json

    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("concepts"), list):
        raise InputError(f"{path}: expected {{\"concepts\": [names...]}}")
    return [str(c) for c in obj["concepts"]]


def concept_targets(rows: Sequence[Dict[str, str]], vocab: Sequence[str], source: str = "corpus") -> torch.Tensor:
    """Multi-hot (N, K) float tensor from each row's space-separated `concepts` column."""
    index = {c: i for i, c in enumerate(vocab)}
    out = torch.zeros(len(rows), len(vocab))
    for n, row in enumerate(rows):
        for name in (row.get("concepts") or "").split():
            if name not in index:
                raise InputError(f"{source}: row {n + 1}: concept {name!r} is not in the vocabulary")
            out[n, index[name]] = 1.0
    return out


# Relation words of the caption grammar ("to the left of": `left` is the NOUN; "above": an ADP)
# and their reversal.
RELATION_FLIPS = {("left", "NOUN"): "right", ("right", "NOUN"): "left", ("above", "ADP"): "below",
                  ("below", "ADP"): "above"}


class TextNegatives:
    """NegCLIP-style hard negative texts (Yuksekgonul et al., ICLR 2023): the caption with one
    content word (a NOUN or an ADJ of its `parse`, relation words excepted) replaced by another word of the same part of
    speech seen in the corpus. A batch's in-batch negatives rarely differ from the positive in a
    single attribute, so contrastive training can ignore whatever a batch never needs (here:
    object shape, which colour combinations already tell apart); these negatives ask for it.

    Deterministic per (seed, row index), so a resumed run sees the same negatives."""

    def __init__(self, rows: Sequence[Dict[str, str]], seed: int = 0, tags: Sequence[str] = ("NOUN", "ADJ"),
                 source: str = "corpus", swap: float = 0.0, relation: float = 0.0) -> None:
        words: Dict[str, set] = {t: set() for t in tags}
        for n, row in enumerate(rows, start=2):
            for word, tag in self._tokens(row, source, n):
                if tag in words and (word.lower(), tag) not in RELATION_FLIPS:  # "left" is no shape
                    words[tag].add(word.lower())
        self.vocab = {t: sorted(w) for t, w in words.items() if len(w) >= 2}
        if not self.vocab:
            raise InputError(f"{source}: loss.text_negatives needs a `parse` column with at least two distinct "
                             f"words of one of {', '.join(tags)}; none found")
        for key, p in (("text_negative_swap", swap), ("text_negative_relation", relation)):
            if not 0.0 <= p <= 1.0:
                raise InputError(f"config key loss.{key}: a probability in [0, 1], got {p}")
        if swap + relation > 1.0:
            raise InputError(f"config keys loss.text_negative_swap + loss.text_negative_relation: shares of one "
                             f"negative, so at most 1 together; got {swap} + {relation}")
        self.seed = seed
        self.source = source
        self.swap = swap
        self.relation = relation

    @staticmethod
    def _tokens(row: Dict[str, str], source: str, line: int) -> List[tuple]:
        raw = row.get("parse") or ""
        if not raw:
            return []
        try:
            return [(str(t[0]), str(t[1])) for t in json.loads(raw)]
        except (ValueError, TypeError, IndexError):
            raise InputError(f"{source}:{line}: column 'parse': not a JSON list of [word, tag, ...] tokens") from None

    def __call__(self, row: Dict[str, str], index: int) -> Optional[str]:
        """The negative text of `row`, or None when it has no replaceable word. With `swap` > 0,
        that share of the negatives (where the caption allows) exchange two different words of
        one part of speech instead ("a red star and a blue circle" -> "a blue star and a red
        circle": NegCLIP's order swap, which only binding tells apart). With `relation` > 0, that
        share of the captions that state a spatial relation get it reversed instead ("a star sits
        to the left of a ring" -> "... to the right of a ring"): only the layout tells them apart."""
        tokens = self._tokens(row, self.source, index + 2)
        slots = [k for k, (w, t) in enumerate(tokens) if t in self.vocab and w.lower() in self.vocab[t]]
        rng = random.Random(f"text-negative|{self.seed}|{index}")
        if self.relation > 0:
            u = rng.random()
            flips = [k for k, (w, t) in enumerate(tokens) if (w.lower(), t) in RELATION_FLIPS]
            if u < self.relation and flips:
                k = rng.choice(flips)
                word = tokens[k][0]
                new = RELATION_FLIPS[(word.lower(), tokens[k][1])]
                return self._rewrite(row["title"], tokens, {k: new.capitalize() if word[:1].isupper() else new})
            u -= self.relation
        if not slots:
            return None
        if self.swap > 0 and (u if self.relation > 0 else rng.random()) < self.swap:
            pairs = [(j, k) for j in slots for k in slots
                     if j < k and tokens[j][1] == tokens[k][1] and tokens[j][0].lower() != tokens[k][0].lower()]
            if pairs:
                j, k = rng.choice(pairs)
                return self._rewrite(row["title"], tokens, {j: tokens[k][0], k: tokens[j][0]})
        k = rng.choice(slots)
        word, tag = tokens[k]
        new = rng.choice([w for w in self.vocab[tag] if w != word.lower()])
        return self._rewrite(row["title"], tokens, {k: new})

    @staticmethod
    def _rewrite(text: str, tokens: List[tuple], new: Dict[int, str]) -> str:
        """`text` with token k replaced by new[k], each found left to right in the caption as
        written (case and punctuation elsewhere kept); the tokens joined by spaces when a token
        cannot be found."""
        spans, cursor = [], 0
        for w, _ in tokens[: max(new) + 1]:
            m = re.compile(re.escape(w), re.IGNORECASE).search(text, cursor)
            if m is None:
                return " ".join(new.get(i, t) for i, (t, _) in enumerate(tokens))
            spans.append((m.start(), m.end()))
            cursor = m.end()
        for k in sorted(new, reverse=True):  # right to left: earlier spans stay valid
            start, end = spans[k]
            text = text[:start] + new[k] + text[end:]
        return text


RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
REVERSED = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def split_facts(facts: str, colours: Sequence[str] = (), sep: str = "|") -> Tuple[List[tuple], Dict[str, List[str]]]:
    """A `facts` value -> (relations [(a, rel, b)] between two different shapes, bound {shape: the
    attributes two-word facts give it}; with `colours`, only those attributes)."""
    relations: List[tuple] = []
    bound: Dict[str, List[str]] = {}
    for fact in (f for f in (facts or "").split(sep) if f):
        words = fact.split()
        for rel in RELATION_PHRASES:
            r = rel.split()
            if len(words) == 2 + len(r) and words[1:1 + len(r)] == r and words[0] != words[-1]:
                relations.append((words[0], rel, words[-1]))
        if len(words) == 2 and (not colours or words[0] in colours):
            bound.setdefault(words[1], []).append(words[0])
    return relations, bound


def split_places(places: str, sep: str = "|") -> Dict[str, List[str]]:
    """A `places` value ("circle at top left|square at center") -> {shape: the regions it is in}."""
    out: Dict[str, List[str]] = {}
    for fact in (f.strip() for f in (places or "").split(sep) if f.strip()):
        shape, at, where = fact.partition(" at ")
        if not at or not where:
            raise InputError(f"a `places` fact reads '<shape> at <region>', got {fact!r}")
        out.setdefault(shape, []).append(where)
    return out


def place_phrase(region: str) -> str:
    """"top left" -> "near the top left", "center" -> "in the center" (VCR's rationales' wording)."""
    from tasks.synthetic.vcr_gen import where

    return " ".join(where(region))


def count_places(places: str, sep: str = "|") -> int:
    """How many shapes a `places` value records: one entry per object ("circle at top|star at center" -> 2)."""
    return sum(1 for p in (places or "").split(sep) if p.strip())


def count_phrase(n: int) -> str:
    """3 -> "three shapes", 1 -> "one shape" (digits past ten)."""
    from tasks.synthetic.vocab import NUMBER_WORDS

    word = NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)
    return f"{word} shape" if n == 1 else f"{word} shapes"


class FactCaptions:
    """Captions written from the `facts` column (the scene graph; region descriptions of the Visual
    Genome kind), each with a hard negative that only the image can refute: for a share `share` of
    the rows (fixed per seed and row) the training text is one stated relation of the image with
    the colours of its two objects where they are unambiguous ("a red circle to the left of a blue
    square"; negative: the relation reversed), or, in an image without a clear relation, one bound
    attribute ("a red circle"; negative: another colour the image does not give that shape).
    Raw captions state a relation in about a quarter of the rows and never in this fixed form.

    `places` (data.place_captions): a further share of the rows reads where one object is in the
    picture, from the `places` column ("a red circle near the top left", "a square in the center";
    negative: the same object in a region where the image has no such shape). Raw captions and
    the facts never say where in the picture a thing is.

    `sizes` (data.caption_sizes): the size words; each object these captions name is then named
    with its size too where the facts give it exactly one ("a large red circle near the top
    left"), and its negative keeps that size, so the size words stay in the texts the place
    captions take from the raw captions.

    `counts` (data.count_captions): a further share of the rows reads how many shapes the picture
    holds, one per entry of its `places` column ("three shapes"; negative: one more or one fewer).
    The raw titles say it in about one row in seven (some wrongly: caption noise), never with a
    wrong count as a hard negative.

    `count_frames` (data.count_frames): the sentences a count caption is written in, each holding
    one "{n}" for the count phrase ("a picture of {n}" -> "a picture of three shapes"). With more
    than one, each count row draws one (fixed per seed and row) and its negative uses the same
    frame, so again only the count tells them apart. The default, "{n}", is the bare phrase.

    `count_prefix` (data.count_prefix): a share of the fact and place captions (its own draw, so
    which rows read facts or places and what they say is unchanged) begins with how many shapes
    the picture holds ("three shapes: a red circle to the left of a blue square"), and its hard
    negative is the same caption with one more or one fewer. Unlike `counts`, whose texts are a
    handful of strings that many images in a batch share (so the contrastive loss treats true
    matches as negatives), each such text is unique and only its count tells it from its negative."""

    def __init__(self, share: float, seed: int = 0, colours: Sequence[str] = (), source: str = "corpus",
                 places: float = 0.0, regions: Sequence[str] = (), sizes: Sequence[str] = (),
                 counts: float = 0.0, count_prefix: float = 0.0, count_frames: Sequence[str] = ("{n}",)) -> None:
        if not 0.0 <= share <= 1.0:
            raise InputError(f"config key data.fact_captions: a share in [0, 1], got {share}")
        if not 0.0 <= places <= 1.0 - share:
            raise InputError(f"config key data.place_captions: a share in [0, 1 - data.fact_captions] = "
                             f"[0, {1.0 - share:g}], got {places}")
        if not 0.0 <= counts <= 1.0 - share - places + 1e-12:
            raise InputError(f"config key data.count_captions: a share in [0, 1 - data.fact_captions - "
                             f"data.place_captions] = [0, {1.0 - share - places:g}], got {counts}")
        self.share, self.seed, self.colours, self.source, self.places = share, seed, list(colours), source, places
        if not 0.0 <= count_prefix <= 1.0:
            raise InputError(f"config key data.count_prefix: a share in [0, 1], got {count_prefix}")
        if count_prefix > 0.0 and share + places <= 0.0:
            raise InputError("config key data.count_prefix: prefixes the fact and place captions, but "
                             "data.fact_captions and data.place_captions are both 0")
        self.counts, self.count_prefix = counts, count_prefix
        self.count_frames = list(count_frames)
        if not self.count_frames:
            raise InputError('config key data.count_frames: a list of at least one sentence holding "{n}", got []')
        for i, frame in enumerate(self.count_frames):
            if not isinstance(frame, str) or frame.count("{n}") != 1 or any(b in frame.replace("{n}", "") for b in "{}"):
                raise InputError(f'config key data.count_frames[{i}]: a sentence holding "{{n}}" exactly once and '
                                 f'no other braces (e.g. "a picture of {{n}}"), got {frame!r}; on the command line, '
                                 f"quote it: data.count_frames=['{{n}}','a picture of {{n}}']")
        self.regions = list(regions)  # the negatives' regions (none given: place captions have no negative)
        self.sizes = list(sizes)  # size words named with each object (none given: colour only)

    def _draw(self, index: int) -> Tuple[random.Random, Optional[str]]:
        """Row `index`'s generator and what it reads: "facts", "places", "counts" or None (its own caption)."""
        rng = random.Random(f"fact-caption|{self.seed}|{index}")
        u = rng.random()
        if u < self.share:
            return rng, "facts"
        if u < self.share + self.places:
            return rng, "places"
        return rng, "counts" if u < self.share + self.places + self.counts else None

    def __call__(self, row: Dict[str, str], index: int) -> Optional[tuple]:
        """(text, negative or None) for `row`, or None when the row keeps its own caption."""
        rng, kind = self._draw(index)
        if kind == "counts":
            counted = self._count(row, rng)
            if counted is None:
                return None
            # one frame draws nothing, so the bare default reads exactly what it read before frames
            frame = self.count_frames[0] if len(self.count_frames) == 1 else rng.choice(self.count_frames)
            return tuple(frame.replace("{n}", c) for c in counted)
        if kind is None:
            return None
        out = self._place(row, rng) if kind == "places" else self._fact(row, rng)
        if out is None or self.count_prefix <= 0.0:
            return out
        prefix_rng = random.Random(f"count-prefix|{self.seed}|{index}")
        if prefix_rng.random() >= self.count_prefix:
            return out
        counted = self._count(row, prefix_rng, "data.count_prefix")
        if counted is None:
            return out
        return f"{counted[0]}: {out[0]}", f"{counted[1]}: {out[0]}"

    def _fact(self, row: Dict[str, str], rng: random.Random) -> Optional[tuple]:
        if "facts" not in row:
            raise InputError(f"{self.source}: data.fact_captions needs a `facts` column (facts separated by '|')")
        relations, bound = split_facts(row.get("facts") or "", self.colours)
        sized = self._sized(row)
        if relations:
            a, rel, b = rng.choice(relations)
            return (f"{self._np(a, bound, sized)} {RELATION_PHRASES[rel]} {self._np(b, bound, sized)}",
                    f"{self._np(a, bound, sized)} {RELATION_PHRASES[REVERSED[rel]]} {self._np(b, bound, sized)}")
        single = sorted(s for s, c in bound.items() if len(c) == 1)
        if not single:
            return None
        shape = rng.choice(single)
        others = [c for c in self.colours if c not in bound[shape]]
        size = self._size(shape, sized)
        negative = f"a {size}{rng.choice(others)} {shape}" if others else None
        return f"a {size}{bound[shape][0]} {shape}", negative

    def _sized(self, row: Dict[str, str]) -> Dict[str, List[str]]:
        """{shape: the sizes its facts give it} ({} without `sizes`)."""
        return split_facts(row.get("facts") or "", self.sizes)[1] if self.sizes else {}

    @staticmethod
    def _size(shape: str, sized: Dict[str, List[str]]) -> str:
        """"large " when the facts give the shape exactly one size, else ""."""
        sizes = sized.get(shape, [])
        return f"{sizes[0]} " if len(sizes) == 1 else ""

    @classmethod
    def _np(cls, shape: str, bound: Dict[str, List[str]], sized: Optional[Dict[str, List[str]]] = None) -> str:
        colours = bound.get(shape, [])
        colour = f"{colours[0]} " if len(colours) == 1 else ""
        return f"a {cls._size(shape, sized or {})}{colour}{shape}"

    def _place(self, row: Dict[str, str], rng: random.Random) -> Optional[tuple]:
        if "places" not in row:
            raise InputError(f"{self.source}: data.place_captions needs a `places` column (\"circle at top left\" "
                             f"facts separated by '|'); a synthetic world cached by an older generator is rebuilt "
                             f"on first use")
        where = split_places(row.get("places") or "")
        if not where:
            return None
        shape = rng.choice(sorted(where))
        _, bound = split_facts(row.get("facts") or "", self.colours)
        subject = self._np(shape, bound, self._sized(row))
        region = rng.choice(sorted(where[shape]))
        free = [r for r in self.regions if r not in where[shape]]
        text = f"{subject} {place_phrase(region)}"
        return text, (f"{subject} {place_phrase(rng.choice(free))}" if free else None)

    def _count(self, row: Dict[str, str], rng: random.Random, key: str = "data.count_captions") -> Optional[tuple]:
        if "places" not in row:
            raise InputError(f"{self.source}: {key} needs a `places` column (one \"circle at top "
                             f"left\" entry per object, separated by '|'); a synthetic world cached by an older "
                             f"generator is rebuilt on first use")
        n = count_places(row.get("places") or "")
        if n == 0:
            return None
        wrong = rng.choice([m for m in (n - 1, n + 1) if m >= 1])
        return count_phrase(n), count_phrase(wrong)

    def place_texts(self, rows: Sequence[Dict[str, str]]) -> List[str]:
        """The place captions the rows read (for fitting a vocabulary that spells the place words)."""
        out = []
        for i, row in enumerate(rows):
            rng, kind = self._draw(i)
            text = self._place(row, rng) if kind == "places" else None
            if text is not None:
                out.append(text[0])
        return out


class JunkWords:
    """`data.junk_words`: for a share `share` of the rows (fixed per seed and row) the training text
    and its hard negative get one to three strings that are no word of the corpus (random letters,
    digits and punctuation: "xq", "7", "k-e"), at the same word positions in both, one in four glued
    to the end of the word before it ("circle7").

    Why: a fitted vocabulary holds the corpus's words and spells every other word piece by piece
    ("what" -> w ##h ##a ##t, "triangle1" -> triangle ##1). The corpus never uses those pieces, so a
    text tower trained on it meets them first in the task texts, as untrained embeddings that each
    move the text's embedding. Web captions carry such strings all the time (file names, numbers,
    typos); here they teach the tower that a spelt-out piece says nothing about the picture. No
    junk string shares a prefix with a corpus word (`words`), so the fitted vocabulary spells it
    piece by piece and it reads none of the corpus's words; gluing never makes a longer corpus word
    either.

    `replaces` (data.junk_replaces): a share of the strings take the place of a word instead (one
    the text and its negative share at the same place, so the negative still differs where it did;
    where they share none there, the string is inserted). A word the tower cannot read then stands
    where a known one would ("a red xq" for "a red circle"), as "object" does in "a photo of a red
    object": the tower learns that an unread word is still a word, not nothing."""

    CHARS = string.ascii_lowercase + string.digits + ".,?!-'"

    def __init__(self, share: float, seed: int = 0, words: Sequence[str] = (), replaces: float = 0.0) -> None:
        if not 0.0 <= share <= 1.0:
            raise InputError(f"config key data.junk_words: a share in [0, 1], got {share}")
        if not 0.0 <= replaces <= 1.0:
            raise InputError(f"config key data.junk_replaces: a share in [0, 1], got {replaces}")
        self.share, self.seed, self.replaces = share, seed, replaces
        self.words = {w.lower() for w in words}

    def _reads_a_word(self, text: str, start: int = 0) -> bool:
        """Does an alphanumeric run of `text` begin with a corpus word longer than `start` characters
        (`start`: the length of the word the junk is glued to, itself a word)?"""
        for k, run in enumerate(re.findall(r"[a-z0-9]+", text.lower())):
            first = start if k == 0 else 0
            if any(run[:n] in self.words for n in range(first + 1, len(run) + 1)):
                return True
        return False

    def plan(self, index: int) -> List[Tuple[float, str, bool, bool]]:
        """Row `index`'s junk: (where, as a fraction of the text's word count; the string; glued;
        replaces a word), or []."""
        rng = random.Random(f"junk-words|{self.seed}|{index}")
        if rng.random() >= self.share:
            return []
        out = []
        for _ in range(rng.randint(1, 3)):
            where, glued = rng.random(), rng.random() < 0.25
            for _ in range(100):  # redraw until it reads no corpus word (a handful of tries)
                junk = "".join(rng.choice(self.CHARS) for _ in range(rng.randint(1, 6)))
                if not self._reads_a_word(junk):
                    break
            else:
                continue
            replace = self.replaces > 0 and rng.random() < self.replaces  # no draw at 0: the plans stay as they were
            out.append((where, junk, glued, replace))
        return out

    def _insert(self, words: List[str], where: float, junk: str, glued: bool) -> None:
        at = min(int(where * (len(words) + 1)), len(words))
        if glued and at > 0 and not self._reads_a_word(words[at - 1] + junk, len(words[at - 1])):
            words[at - 1] += junk
        else:
            words.insert(at, junk)

    def apply_pair(self, text: str, negative: Optional[str], plan: Sequence[tuple]) -> Tuple[str, Optional[str]]:
        """`text` and its hard negative (or None) with `plan` applied to both: strings inserted (a
        glued one goes with a space instead where gluing would spell a longer corpus word), or in
        place of a word the two share at the same place (else inserted)."""
        words, neg = text.split(), (negative.split() if negative is not None else None)
        for where, junk, glued, *rest in plan:
            if rest and rest[0] and words:
                at = min(int(where * len(words)), len(words) - 1)
                if neg is None or (len(neg) == len(words) and neg[at] == words[at]):
                    words[at] = junk
                    if neg is not None:
                        neg[at] = junk
                    continue
            for ws in (words,) if neg is None else (words, neg):
                self._insert(ws, where, junk, glued)
        return " ".join(words), (" ".join(neg) if neg is not None else None)

    def apply(self, text: str, plan: Sequence[tuple]) -> str:
        """`text` alone with `plan` applied (`apply_pair` without a negative)."""
        return self.apply_pair(text, None, plan)[0]


class CaptionDataset(Dataset):
    """Items: {"image": (3, H, W), "text": str, "caption": str, "index": int}, plus "negative"
    (str, or "" with "negative_valid" False) when built with `TextNegatives`.

    `caption` is the synthetic caption (ALIP's second path) or the raw text when absent.
    """

    def __init__(self, rows: Sequence[Dict[str, str]], transform: Callable,
                 negatives: Optional[TextNegatives] = None, fact_captions: Optional[FactCaptions] = None,
                 junk: Optional[JunkWords] = None) -> None:
        self.rows = list(rows)
        self.transform = transform
        self.negatives = negatives
        self.fact_captions = fact_captions  # data.fact_captions: some rows read a caption written from their facts
        self.junk = junk  # data.junk_words: some texts (and their negatives) carry strings that are no corpus word

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Dict:
        row = self.rows[i]
        with Image.open(row["image"]) as im:
            image = self.transform(im.convert("RGB"))
        item = {"image": image, "text": row["title"], "caption": row.get("synthetic_caption") or row["title"], "index": i}
        fact = self.fact_captions(row, i) if self.fact_captions is not None else None
        if fact is not None:
            item["text"] = fact[0]
        if self.negatives is not None:
            neg = fact[1] if fact is not None else self.negatives(row, i)
            item.update(negative=neg or "", negative_valid=neg is not None)
        plan = self.junk.plan(i) if self.junk is not None else []
        if plan:
            item["text"], negative = self.junk.apply_pair(item["text"], item.get("negative") or None, plan)
            if negative is not None:
                item["negative"] = negative
        return item


def make_collate(tokenizer: Callable) -> Callable:
    """Batch items and tokenise both text paths: image (B,3,H,W), text/caption (B, L), index (B,)."""

    def collate(items: List[Dict]) -> Dict[str, torch.Tensor]:
        batch = {
            "image": torch.stack([it["image"] for it in items]),
            "text": tokenizer([it["text"] for it in items]),
            "caption": tokenizer([it["caption"] for it in items]),
            "index": torch.tensor([it["index"] for it in items]),
        }
        if "negative" in items[0]:  # TextNegatives: (B, L) ids and (B,) bool
            batch["negative"] = tokenizer([it["negative"] for it in items])
            batch["negative_valid"] = torch.tensor([it["negative_valid"] for it in items], dtype=torch.bool)
        return batch

    return collate


def read_zeroshot(root: PathLike) -> Dict[str, Dict]:
    """Label sets of `<root>/zeroshot.json`: name -> {"classnames", "templates", "images", "labels",
    "styles"} (a row's `style` column, "" when the file has none)."""
    from clip_td.base.io import read_json

    root = Path(root)
    spec = read_json(root / "zeroshot.json")
    sets = {}
    for name, entry in spec.items():
        for key in ("classnames", "templates", "file"):
            if key not in entry:
                raise InputError(f"{root / 'zeroshot.json'}: label set {name!r} lacks key {key!r}")
        rows = read_captions(root / entry["file"], required=("filepath", "label"))
        classes = list(entry["classnames"])
        labels = []
        for n, r in enumerate(rows, start=2):
            lab = r["label"].strip()
            if lab.lstrip("-").isdigit() and 0 <= int(lab) < len(classes):
                labels.append(int(lab))
            elif lab in classes:
                labels.append(classes.index(lab))
            else:
                raise InputError(f"{root / entry['file']}:{n}: column 'label': {lab!r} is neither a class index nor a class name")
        sets[name] = {"classnames": classes, "templates": list(entry["templates"]), "images": [r["image"] for r in rows],
                      "labels": labels, "styles": [r.get("style") or "" for r in rows]}
    return sets
