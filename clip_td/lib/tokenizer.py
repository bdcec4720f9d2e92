"""The student's tokenizer: a real checkpoint's own, or a WordPiece vocabulary built from the
task's training text for the synthetic world (saved beside the run and reused on resume).

Both are `transformers` fast tokenizers, so `return_offsets_mapping=True` gives the character
span of every sub-word: the distiller aligns student and teacher text tokens by those spans.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, Optional

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from clip_td.base.io import InputError, PathLike, atomic_path

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def wordpiece_vocab(words: Counter, vocab_size: int, min_frequency: int = 1) -> Dict[str, int]:
    """Special tokens, every character (word-initial and `##` continuation), then whole words by
    frequency (ties alphabetical) up to `vocab_size`.

    Chosen here rather than by `tokenizers.trainers.WordPieceTrainer`, whose merge ties follow a
    per-process hash order: the same corpus must give the same vocabulary in every process and
    run (multi-process training, resume, sweeps).
    """
    chars = sorted({c for w in words for c in w})
    tokens = list(SPECIAL_TOKENS.values()) + chars + [f"##{c}" for c in chars]
    ranked = sorted((w for w, n in words.items() if n >= min_frequency and len(w) > 1), key=lambda w: (-words[w], w))
    tokens += ranked[: max(vocab_size - len(tokens), 0)]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_wordpiece(texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A lower-cased BERT-style WordPiece tokenizer whose vocabulary comes from `texts` (deterministic)."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    tok = Tokenizer(models.WordPiece(vocab=wordpiece_vocab(words, vocab_size, min_frequency),
                                     unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A checkpoint's own tokenizer (a local folder or a hub id such as `dandelin/vilt-b32-mlm`)."""
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except (OSError, ValueError) as e:
        raise InputError(f"student.pretrained={name_or_path!r}: cannot load its tokenizer ({e})") from None
    if not tok.is_fast:
        raise InputError(f"student.pretrained={name_or_path!r}: needs a fast tokenizer (character offsets)")
    return tok


def student_tokenizer(
    pretrained: Optional[str],
    run_dir: PathLike,
    corpus: Iterable[str],
    vocab_size: int = 4000,
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, else `<run_dir>/tokenizer/` if present (resume), else build it.

    `corpus` is only read when a new vocabulary has to be built.
    """
    if pretrained:
        return load_pretrained_tokenizer(pretrained)
    saved = Path(run_dir) / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(saved))
    tok = build_wordpiece(corpus, vocab_size=vocab_size)
    with atomic_path(saved) as tmp:
        tok.save_pretrained(str(tmp))
    return tok
