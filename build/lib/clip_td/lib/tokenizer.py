"""The student's tokenizer: a real checkpoint's own, or a WordPiece vocabulary built from the
task's training text for the synthetic world (saved beside the run and reused on resume).

Both are `transformers` fast tokenizers, so `return_offsets_mapping=True` gives the character
span of every sub-word: the distiller aligns student and teacher text tokens by those spans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from clip_td.base.io import InputError, PathLike, atomic_path
from clip_td.base.wordpiece import SPECIAL_TOKENS, build_wordpiece, wordpiece_vocab  # noqa: F401  (moved to clip_td.base)


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
